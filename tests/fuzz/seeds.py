#!/usr/bin/env python3
# seeds.py - writes the seed corpora in corpus/<target>/ (small, readable
# inputs that reach each parser's main paths).  Rerun after changing it:
#   python3 tests/fuzz/seeds.py
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame(ftype, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return struct.pack("<QB", len(payload) + 1, ftype) + payload


DESC = {"name": "127.0.0.1:15001", "protocol": "tcp", "tcp_data_port": 15002,
        "tcp_proto_version": 2, "timestamp": "2025-01-01 00:00:00.000000",
        "buffers": [{"name": "127.0.0.1:15001", "addr": 140000000000000, "length": 1048576}]}
DESC_TEXT = json.dumps(DESC, separators=(",", ":"))

# ---- RPC frames sent to our port ------------------------------------------
put("rpc_frame", "probe", frame(3, "{}"))
put("rpc_frame", "metadata", frame(1, DESC_TEXT))
put("rpc_frame", "notify", frame(2, '{"name":"kv_done","notify_msg":"layer-7"}'))
put("rpc_frame", "notify_bad_types", frame(2, '{"name":5,"notify_msg":[]}'))
put("rpc_frame", "notify_nul", frame(2, '{"name":"a\\u0000b","notify_msg":"m"}'))
put("rpc_frame", "notify_not_json", frame(2, "{\"name\":"))
put("rpc_frame", "connection_no_handler", frame(0, '{"local_nic_path":"x@mlx5_0"}'))
put("rpc_frame", "legacy_untyped", struct.pack("<Q", 7) + b'{"x":1}')
put("rpc_frame", "zero_length", bytes(9))
put("rpc_frame", "huge_length", struct.pack("<QB", 1 << 40, 1))
put("rpc_frame", "truncated", struct.pack("<QB", 100, 2) + b'{"name":')
put("rpc_frame", "trailing_junk", frame(3, "{}") + b"garbage after the frame")

# ---- replies to our Metadata request -------------------------------------
put("rpc_reply", "descriptor", frame(1, DESC_TEXT))
d = dict(DESC)
d["buffers"] = [{"addr": 4096, "length": 4096}, {"addr": 8192, "length": 1 << 20},
                {"addr": -4096, "length": 4096}]
put("rpc_reply", "three_buffers", frame(1, json.dumps(d)))
d = dict(DESC)
d["tcp_data_port"] = 70000
put("rpc_reply", "bad_data_port", frame(1, json.dumps(d)))
d = dict(DESC)
d["protocol"] = "rdma"
d.pop("tcp_data_port")
put("rpc_reply", "rdma_only", frame(1, json.dumps(d)))
put("rpc_reply", "wrong_type", frame(3, '{"status":"success"}'))
put("rpc_reply", "not_an_object", frame(1, "[1,2,3]"))
put("rpc_reply", "truncated", struct.pack("<QB", 1000, 1) + b'{"name":"x"')
put("rpc_reply", "huge_length", struct.pack("<QB", 1 << 50, 1))
put("rpc_reply", "empty", b"")
put("rpc_reply", "buffers_not_array", frame(1, '{"name":"n","protocol":"tcp","buffers":{}}'))

# ---- TCP data port (addresses relative to region A, one page) -------------
def hdr(size, rel, op):
    return struct.pack("<QQB7x", size, rel & (2**64 - 1), op)


W2, R2, W1, R1 = 0x81, 0x80, 0x01, 0x00
put("tcp_data", "v2_write", hdr(16, 0, W2) + bytes(range(16)))
put("tcp_data", "v2_read", hdr(96, 4000, R2))
put("tcp_data", "v2_read_past_end", hdr(16, 4090, R2) + hdr(8, 0, R2))
put("tcp_data", "v2_write_before_start", hdr(16, -8, W2) + b"x" * 16 + hdr(4, 8, W2) + b"abcd")
put("tcp_data", "v2_write_region_b", hdr(4096, 8192, W2) + b"B" * 4096)
put("tcp_data", "v2_write_across_gap", hdr(8192, 2048, W2) + b"G" * 64)
put("tcp_data", "v1_write_read", hdr(32, 128, W1) + b"y" * 32 + hdr(32, 128, R1))
put("tcp_data", "v1_rejected", hdr(32, 4096, R1))
put("tcp_data", "unknown_opcode", hdr(32, 0, 0x07))
put("tcp_data", "zero_size", hdr(0, 0, W2) + hdr(0, 0, R2))
put("tcp_data", "huge_size", hdr(1 << 62, 0, W2))
put("tcp_data", "short_header", b"\x10\x00\x00")
put("tcp_data", "many_small", b"".join(hdr(8, 8 * i, W2) + bytes([i]) * 8 for i in range(20)))

# ---- TCP status frames and READ data (initiator side) ---------------------
OK = struct.pack("<Q", 0x4D43545600000000)
REJ = struct.pack("<Q", 0x4D43545600000001)
BAD = struct.pack("<Q", 0x1122334400000000)


def slices(v2, specs):
    # specs: (is_write, length) pairs
    b = bytes([(1 if v2 else 0) | ((len(specs) - 1) << 1)])
    for w, n in specs:
        b += struct.pack("<H", (0x8000 if w else 0) | (n - 1))
    return b


put("tcp_status", "v2_read_ok", slices(True, [(False, 16)]) + OK + bytes(range(16)))
put("tcp_status", "v2_write_ok", slices(True, [(True, 64)]) + OK)
put("tcp_status", "v2_mixed", slices(True, [(False, 8), (True, 8), (False, 4)]) + OK + b"a" * 8 + OK + OK + b"bbbb")
put("tcp_status", "v2_rejected", slices(True, [(False, 16), (True, 16)]) + REJ + REJ)
put("tcp_status", "v2_bad_magic", slices(True, [(False, 16)]) + BAD + b"z" * 16)
put("tcp_status", "v2_short_data", slices(True, [(False, 4096)]) + OK + b"q" * 100)
put("tcp_status", "v2_extra_bytes", slices(True, [(True, 8)]) + OK + OK + OK)
put("tcp_status", "v1_read", slices(False, [(False, 32)]) + b"r" * 32)
put("tcp_status", "v1_write_unexpected", slices(False, [(True, 32)]) + b"?")
put("tcp_status", "v2_nothing", slices(True, [(False, 8), (False, 8), (False, 8), (True, 8)]))

# ---- segment descriptors ---------------------------------------------------
put("segdesc", "tcp", DESC_TEXT)
d = dict(DESC)
d["buffers"] = [{"addr": 8192, "length": 4096}, {"addr": 4096, "length": 8192},
                {"addr": 18446744073709547520, "length": 4096}]
put("segdesc", "overlapping", json.dumps(d))
put("segdesc", "with_probes", DESC_TEXT.encode() + b"\0" +
    struct.pack("<QQ", 140000000000000, 16) + struct.pack("<QQ", 140000001048570, 16) +
    struct.pack("<QQ", 2**64 - 8, 16))
put("segdesc", "negative_addr", '{"name":"n","protocol":"tcp","buffers":[{"addr":-1,"length":2}]}')
put("segdesc", "wrapping", '{"name":"n","protocol":"tcp","buffers":[{"addr":-4096,"length":8192}]}')
put("segdesc", "zero_length", '{"name":"n","protocol":"tcp","buffers":[{"addr":1,"length":0}]}')
put("segdesc", "duplicate_key", '{"name":"n","name":"m","protocol":"tcp"}')
put("segdesc", "no_buffers", '{"name":"n","protocol":"rdma","devices":[{"name":"mlx5_0","lid":1,"gid":"00"}]}')
put("segdesc", "buffers_object", '{"name":"n","protocol":"tcp","buffers":{"addr":1}}')
put("segdesc", "deep", "[" * 200 + "]" * 200)
put("segdesc", "string_numbers", '{"name":"n","protocol":"tcp","buffers":[{"addr":"4096","length":"1"}]}')

# ---- rpc_meta values --------------------------------------------------------
put("rpc_meta", "good", '{"ip_or_host_name":"192.168.1.7","rpc_port":15003}')
put("rpc_meta", "port_zero", '{"ip_or_host_name":"h","rpc_port":0}')
put("rpc_meta", "port_big", '{"ip_or_host_name":"h","rpc_port":65536}')
put("rpc_meta", "empty_host", '{"ip_or_host_name":"","rpc_port":1}')
put("rpc_meta", "long_host", '{"ip_or_host_name":"%s","rpc_port":80}' % ("h" * 300))
put("rpc_meta", "nul_host", '{"ip_or_host_name":"a\\u0000b","rpc_port":80}')
put("rpc_meta", "types", '{"ip_or_host_name":7,"rpc_port":"80"}')
put("rpc_meta", "array", "[]")

# ---- metadata keys ("cluster\nkey" or just a key) -------------------------
put("meta_key", "segment", "mooncake/ram/127.0.0.1:15001")
put("meta_key", "rpc", "mooncake/rpc_meta/host-a")
put("meta_key", "cluster", "prod\nmooncake/prod/ram/host-b")
put("meta_key", "slash_name", "mooncake/node/ib0")
put("meta_key", "other", "\nsomething/else")
put("meta_key", "prefix_only", "c\nmooncake/c/")

# ---- custom topology files ---------------------------------------------------
put("topology", "good", '{"cpu:0":[["mlx5_0"],["mlx5_1"]],"cuda:0":[["mlx5_1"],["mlx5_0"]]}')
put("topology", "empty_lists", '{"cpu:0":[[],[]],"cpu:1":[["eth0"],[]]}')
put("topology", "three_lists", '{"cpu:0":[[],[],[]]}')
put("topology", "not_strings", '{"cpu:0":[[1],["x"]]}')
put("topology", "not_object", '[["mlx5_0"],[]]')
put("topology", "empty", "{}")
put("topology", "broken", '{"cpu:0":[["mlx5_0"],')
put("topology", "duplicates", '{"cpu:0":[["a","a","b"],["b","c"]],"cpu:0x":[["c"],["a"]]}')

# ---- metadata connection strings ("server\ntype" or just a server) ---------
for i, s in enumerate(["P2PHANDSHAKE", "etcd://127.0.0.1:2379", "etcd://h1:2379,h2:2379",
                       "http://127.0.0.1:8080/metadata", "HTTPS://x/y", "127.0.0.1:2379\netcd",
                       "127.0.0.1:2379\nP2P", "redis://x:6379", "://x", "a://", "x" * 40 + "://y",
                       "host\n../../lib/x", "etcd://h\nrdma", "tcp://\ntcp"]):
    put("conn_string", "s%02d" % i, s)

# ---- host:port strings (2 bytes of default port first) ----------------------
for i, s in enumerate(["127.0.0.1:15001", "[::1]:80", "::1", "fe80::1%eth0", "fe80::1%eth0:99",
                       "host", ":80", "h:", "h:99999", "[::1", "[a]x", "[]:1", "a:b:c",
                       "h:00080", "h\t:1", "x" * 300 + ":1"]):
    put("host_port", "h%02d" % i, struct.pack("<H", 12001) + s.encode())
put("host_port", "default_zero", b"\x00\x00host")

# ---- MC_* values, one line per variable ------------------------------------
put("config", "defaults", "")
put("config", "good", "3\n15000\n17000\n12001\n1\nyes\n127.0.0.1\nprod\n4096\n5\n15000\non\n")
put("config", "garbage", "-1\n99999999999999999999\n0x10\n 5\nmaybe\n\n\n%s\n1e9\n0\n70000\n2\n" % ("c" * 200))
put("config", "min_above_max", "1\n17000\n15000\n0\n")

# ---- RDMA wire formats (first byte: 0 handshake, 1 descriptor, 2 matrix, 3 small) ----
GID = "00:00:00:00:00:00:00:00:00:00:ff:ff:c6:12:00:01"
HS = {"local_nic_path": "a:1@rxe0", "peer_nic_path": "b:2@rxe0", "local_lid": 0,
      "local_gid": GID, "qp_num": [17, 18], "ready_ack": False, "reply_msg": "", "payload": ""}
put("rdma_proto", "hs_good", b"\x00" + json.dumps(HS).encode())
put("rdma_proto", "hs_ack", b"\x00" + json.dumps(dict(HS, ready_ack=True)).encode())
put("rdma_proto", "hs_reject", b'\x00{"reply_msg":"no such device"}')
put("rdma_proto", "hs_bad_qps", b"\x00" + json.dumps(dict(HS, qp_num=[0, 16777216, "1"])).encode())
put("rdma_proto", "hs_many_qps", b"\x00" + json.dumps(dict(HS, qp_num=list(range(1, 70)))).encode())
put("rdma_proto", "hs_bad_path", b"\x00" + json.dumps(dict(HS, local_nic_path="nopath")).encode())
RDESC = {"name": "10.0.0.2:15000", "protocol": "rdma",
         "devices": [{"name": "mlx5_0", "lid": 0, "gid": GID}, {"name": "mlx5_1", "lid": 3, "gid": GID}],
         "priority_matrix": {"cpu:0": [["mlx5_1"], ["mlx5_0"]], "cpu:1": [["mlx5_0"], []]},
         "buffers": [{"name": "cpu:0", "addr": 4096, "length": 8192, "lkey": [1, 2], "rkey": [11, 12]},
                     {"name": "cuda:3", "addr": 65536, "length": 4096, "lkey": [3, 4], "rkey": [13, 14]}]}
put("rdma_proto", "desc_good", b"\x01" + json.dumps(RDESC).encode())
put("rdma_proto", "desc_short_rkey", b"\x01" + json.dumps(dict(RDESC, buffers=[
    {"name": "cpu:0", "addr": 4096, "length": 8192, "rkey": [11]}])).encode())
put("rdma_proto", "desc_tcp", b"\x01" + DESC_TEXT.encode())
put("rdma_proto", "desc_bad_device", b"\x01" + json.dumps(dict(RDESC, devices=[
    {"name": "../x", "lid": 70000, "gid": "zz"}])).encode())
put("rdma_proto", "matrix", b"\x02" + json.dumps(RDESC["priority_matrix"]).encode())
put("rdma_proto", "matrix_all", b'\x02{"cpu:0":[["mlx5_0","rxe0","nope"],["mlx5_0"]],"cuda:0":[[],["erdma_0"]],"*":[["x"],[]]}')
put("rdma_proto", "names", b'\x02["rxe0","mlx5_0","rxe0","zz"]')
put("rdma_proto", "gid", b"\x03" + GID.encode())
put("rdma_proto", "gid_short", b"\x03fe:80")
put("rdma_proto", "path", b"\x03seg:1@mlx5_0")
put("rdma_proto", "path_two_at", b"\x03a@b@c")

# ---- etcd: first byte the call (0 endpoints, 1 base64, 2-3 get, 4 grant,
# 5 keepalive, 6 put, 7 delete/revoke), second the HTTP status (200/400/404/500).
put("etcd", "endpoints", b"\x00\x00127.0.0.1:2379,http://h2:2380; https://[::1]:1/")
put("etcd", "endpoints_bad", b"\x00\x00h:99999,,;")
put("etcd", "endpoints_many", b"\x00\x00" + b",".join(b"h%d" % i for i in range(20)))
put("etcd", "b64", b"\x01\x00bW9vbmNha2UvcmFtL2g=")
put("etcd", "b64_bad", b"\x01\x00bW9v=mNh")
put("etcd", "get", b'\x02\x00{"header":{},"kvs":[{"key":"aw==","value":"eyJhIjoxfQ==","mod_revision":"3"}],"count":"1"}')
put("etcd", "get_missing", b'\x02\x00{"header":{"revision":"5"}}')
put("etcd", "get_wrong_key", b'\x02\x00{"kvs":[{"key":"eA==","value":"eA=="}]}')
put("etcd", "get_nul", b'\x03\x00{"kvs":[{"key":"aw==","value":"YQBi"}]}')
put("etcd", "get_error", b'\x02\x01{"error":"etcdserver: request is too large","code":3}')
put("etcd", "get_500", b'\x02\x03{"error":"leader changed"}')
put("etcd", "grant", b'\x04\x00{"header":{},"ID":"7587868234233139201","TTL":"10"}')
put("etcd", "grant_numbers", b'\x04\x00{"ID":7,"TTL":0}')
put("etcd", "keepalive", b'\x05\x00{"result":{"ID":"7","TTL":"10"}}')
put("etcd", "keepalive_lost", b'\x05\x00{"result":{"ID":"7"}}')
put("etcd", "keepalive_error", b'\x05\x01{"error":{"grpc_code":5,"message":"etcdserver: requested lease not found"}}')
put("etcd", "put", b'\x06\x00{"header":{"revision":"9"}}')
put("etcd", "put_lease_lost", b'\x06\x81{"error":"etcdserver: requested lease not found","code":5}')
put("etcd", "revoke", b"\x07\x00{}")
put("etcd", "not_json", b"\x07\x01<html>")
