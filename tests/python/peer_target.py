"""A target engine in its own process for the mooncake.engine tests.

Usage: peer_target.py [--protocol P] [--size N] [--buffers K] [--managed]
Registers K numpy buffers of N bytes (batch_register_memory when K > 1, or one
managed buffer with --managed), prints one JSON line
{"segment", "rpc_port", "addrs", "size"}, then answers one JSON line per JSON
command read on stdin:
  {"op": "fill", "buf": i, "off": o, "len": n, "seed": s}  -> {"ok": true}
  {"op": "check", "buf": i, "off": o, "len": n, "seed": s} -> {"ok": bool}
  {"op": "notifies"}                                       -> {"notifies": [[name, msg]...]}
  {"op": "write", "target": seg, "remote": a, "len": n, "seed": s} -> {"rc": rc}
  {"op": "quit"}
"""
import argparse
import ctypes
import json
import sys

import numpy as np

from mooncake.engine import TransferEngine


def pattern(n, seed):
    return ((np.arange(n, dtype=np.uint64) * 2654435761 + seed * 97 + 13) >> 7).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", default="tcp")
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--buffers", type=int, default=1)
    ap.add_argument("--managed", action="store_true")
    args = ap.parse_args()

    engine = TransferEngine()
    rc = engine.initialize("127.0.0.1", "P2PHANDSHAKE", args.protocol, "")
    if rc != 0:
        print(json.dumps({"error": f"initialize {rc}"}), flush=True)
        return 1
    views = []
    if args.managed:
        addr = engine.allocate_managed_buffer(args.size)
        views.append(np.frombuffer((ctypes.c_uint8 * args.size).from_address(addr), dtype=np.uint8))
        addrs = [addr]
    else:
        views = [np.zeros(args.size, dtype=np.uint8) for _ in range(args.buffers)]
        addrs = [v.ctypes.data for v in views]
        if len(addrs) == 1:
            rc = engine.register_memory(addrs[0], args.size)
        else:
            rc = engine.batch_register_memory(addrs, [args.size] * len(addrs))
        if rc != 0:
            print(json.dumps({"error": f"register {rc}"}), flush=True)
            return 1
    port = engine.get_rpc_port()
    print(json.dumps({"segment": f"127.0.0.1:{port}", "rpc_port": port, "addrs": addrs,
                      "size": args.size}), flush=True)

    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "fill":
            v = views[cmd.get("buf", 0)]
            v[cmd["off"]:cmd["off"] + cmd["len"]] = pattern(cmd["len"], cmd["seed"])
            out = {"ok": True}
        elif op == "check":
            v = views[cmd.get("buf", 0)]
            got = v[cmd["off"]:cmd["off"] + cmd["len"]]
            out = {"ok": bool(np.array_equal(got, pattern(cmd["len"], cmd["seed"])))}
        elif op == "notifies":
            out = {"notifies": [[n.name, n.msg] for n in engine.get_notifies()]}
        elif op == "write":
            src = pattern(cmd["len"], cmd["seed"])
            engine.register_memory(src.ctypes.data, src.nbytes)
            rc = engine.transfer_sync_write(cmd["target"], src.ctypes.data, cmd["remote"], cmd["len"])
            engine.unregister_memory(src.ctypes.data)
            out = {"rc": rc}
        elif op == "quit":
            break
        else:
            out = {"error": f"unknown op {op}"}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
