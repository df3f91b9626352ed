"""Transfers against a peer in another process: sync, batch, async, status,
notifications, first buffer addresses, probes; bytes are always verified."""
import time

import numpy as np
import pytest

from conftest import new_engine, pattern
from mooncake.engine import TransferNotify, TransferOpcode


def test_sync_write_then_peer_sees_bytes(engine, peer, local):
    loc = local()
    loc.buf[:65536] = pattern(65536, 1)
    assert engine.transfer_sync_write(peer.segment, loc.addr, peer.addr + 4096, 65536) == 0
    assert peer.check(4096, 65536, 1)


def test_sync_read_gets_peer_bytes(engine, peer, local):
    loc = local()
    peer.fill(100000, 300000, 2)
    assert engine.transfer_sync_read(peer.segment, loc.addr + 7, peer.addr + 100000, 300000) == 0
    assert np.array_equal(loc.buf[7:300007], pattern(300000, 2))


def test_transfer_sync_with_opcode_and_keywords(engine, peer, local):
    loc = local()
    loc.buf[:5000] = pattern(5000, 3)
    rc = engine.transfer_sync(target_hostname=peer.segment, buffer=loc.addr,
                              peer_buffer_address=peer.addr, length=5000,
                              opcode=TransferOpcode.WRITE, notify=None, transport_hint="")
    assert rc == 0 and peer.check(0, 5000, 3)
    loc.buf[:] = 0
    assert engine.transfer_sync(peer.segment, loc.addr, peer.addr, 5000, TransferOpcode.Read) == 0
    assert np.array_equal(loc.buf[:5000], pattern(5000, 3))
    # plain ints are accepted for the opcode, as IntEnum values
    assert engine.transfer_sync(peer.segment, loc.addr, peer.addr, 5000, 0) == 0


def test_large_sync_transfer(engine, peer, local):
    loc = local(4 << 20)
    loc.buf[:] = pattern(4 << 20, 4)
    assert engine.transfer_sync_write(peer.segment, loc.addr, peer.addr, 4 << 20) == 0
    assert peer.check(0, 4 << 20, 4)


def test_batch_sync_write_and_read(engine, peer, local):
    loc = local()
    n, size = 32, 1000
    for i in range(n):
        loc.buf[i * 4096:i * 4096 + size] = pattern(size, 100 + i)
    bufs = [loc.addr + i * 4096 for i in range(n)]
    remote = [peer.addr + 8192 + i * 2048 for i in range(n)]
    assert engine.batch_transfer_sync_write(peer.segment, bufs, remote, [size] * n) == 0
    for i in range(n):
        assert peer.check(8192 + i * 2048, size, 100 + i)
    loc.buf[:] = 0
    assert engine.batch_transfer_sync_read(peer.segment, bufs, remote, [size] * n) == 0
    for i in range(n):
        assert np.array_equal(loc.buf[i * 4096:i * 4096 + size], pattern(size, 100 + i))
    loc.buf[:] = 0
    assert engine.batch_transfer_sync(peer.segment, bufs, remote, [size] * n,
                                      TransferOpcode.Read) == 0
    assert np.array_equal(loc.buf[:size], pattern(size, 100))


def test_batch_list_size_mismatch(engine, peer, local):
    loc = local()
    assert engine.batch_transfer_sync_write(peer.segment, [loc.addr], [peer.addr, peer.addr],
                                            [8]) == -1
    assert engine.batch_transfer_async_write(peer.segment, [loc.addr], [peer.addr], [8, 8]) == 0


def test_submit_write_and_poll(engine, peer, local):
    loc = local()
    loc.buf[:200000] = pattern(200000, 5)
    batch = engine.transfer_submit_write(peer.segment, loc.addr, peer.addr + 1000, 200000)
    assert batch > 0
    deadline = time.monotonic() + 30
    while True:
        st = engine.transfer_check_status(batch)
        if st != 0:
            break
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert st == 1
    assert peer.check(1000, 200000, 5)
    # the id was freed on completion: asking again reports a failure, never a crash
    assert engine.transfer_check_status(batch) == -1


def test_batch_async_and_get_batch_transfer_status(engine, peer, local):
    loc = local()
    ids = []
    for k in range(4):
        for i in range(8):
            off = (k * 8 + i) * 8192
            loc.buf[off:off + 4000] = pattern(4000, 200 + k * 8 + i)
        bufs = [loc.addr + (k * 8 + i) * 8192 for i in range(8)]
        remote = [peer.addr + (k * 8 + i) * 8192 for i in range(8)]
        if k % 2:
            ids.append(engine.batch_transfer_async(peer.segment, bufs, remote, [4000] * 8,
                                                   TransferOpcode.Write))
        else:
            ids.append(engine.batch_transfer_async_write(peer.segment, bufs, remote, [4000] * 8))
    assert all(i > 0 for i in ids) and len(set(ids)) == 4
    assert engine.get_batch_transfer_status(ids) == 0
    for j in range(32):
        assert peer.check(j * 8192, 4000, 200 + j)
    # all freed: a second wait on the same ids fails instead of double-freeing
    assert engine.get_batch_transfer_status(ids) == -1
    loc.buf[:] = 0
    bid = engine.batch_transfer_async_read(peer.segment, [loc.addr], [peer.addr], [4000])
    assert bid > 0
    assert engine.get_batch_transfer_status([bid, bid]) == 0  # duplicates are waited once
    assert np.array_equal(loc.buf[:4000], pattern(4000, 200))
    assert engine.get_batch_transfer_status([]) == 0


def test_batch_status_failure_frees_everything(engine, peer, local):
    loc = local()
    good = engine.batch_transfer_async_write(peer.segment, [loc.addr], [peer.addr], [100])
    bad = engine.batch_transfer_async_write(peer.segment, [loc.addr],
                                            [peer.addr + peer.size + 4096], [100])
    assert good > 0
    ids = [good] + ([bad] if bad else []) + [123456789]
    assert engine.get_batch_transfer_status(ids) == -1
    assert engine.transfer_check_status(good) == -1  # freed


def test_notifications_both_ways(engine, peer, local):
    loc = local()
    loc.buf[:64] = pattern(64, 6)
    note = TransferNotify("transfer_complete", "chunk_1_done")
    assert engine.transfer_sync(peer.segment, loc.addr, peer.addr, 64, TransferOpcode.WRITE,
                                note) == 0
    assert engine.batch_transfer_sync(peer.segment, [loc.addr], [peer.addr + 64], [64],
                                      TransferOpcode.WRITE, notify=TransferNotify("b", "é")) == 0
    assert peer.notifies() == [["transfer_complete", "chunk_1_done"], ["b", "é"]]
    assert peer.notifies() == []  # drained
    # the peer writes to us: we get its bytes
    port = engine.get_rpc_port()
    assert peer.call(op="write", target=f"127.0.0.1:{port}", remote=loc.addr + 1024,
                     len=3000, seed=7)["rc"] == 0
    assert np.array_equal(loc.buf[1024:4024], pattern(3000, 7))
    assert engine.get_notifies() == []


def test_get_first_buffer_address(engine, peer):
    assert engine.get_first_buffer_address(peer.segment) == peer.addr
    assert engine.get_first_buffer_address(segment_name=peer.segment) == peer.addr
    fresh = new_engine()
    own = f"127.0.0.1:{fresh.get_rpc_port()}"
    assert fresh.get_first_buffer_address(own) == 0  # nothing registered yet
    buf = np.zeros(8192, dtype=np.uint8)
    assert fresh.register_memory(buf.ctypes.data, 8192) == 0
    assert fresh.get_first_buffer_address(own) == buf.ctypes.data
    # a peer that registered after we first looked is seen too
    assert engine.get_first_buffer_address(own) == buf.ctypes.data
    assert fresh.unregister_memory(buf.ctypes.data) == 0
    assert engine.get_first_buffer_address("127.0.0.1:1") == 0


def test_first_buffer_is_the_first_registered():
    eng = new_engine()
    buf = np.zeros(8192, dtype=np.uint8)
    low, high = buf.ctypes.data, buf.ctypes.data + 4096
    assert eng.register_memory(high, 4096) == 0
    assert eng.register_memory(low, 4096) == 0
    assert eng.get_first_buffer_address(f"127.0.0.1:{eng.get_rpc_port()}") == high


def test_send_probe(engine, peer):
    assert engine.send_probe(peer.segment) == 0
    assert engine.send_probe(peer_server_name="127.0.0.1:1") != 0


def test_managed_peer_buffer(engine, make_peer, local):
    p = make_peer("--managed", "--size", str(1 << 20))
    assert engine.get_first_buffer_address(p.segment) == p.addr
    loc = local()
    loc.buf[:4096] = pattern(4096, 8)
    assert engine.transfer_sync_write(p.segment, loc.addr, p.addr, 4096) == 0
    assert p.check(0, 4096, 8)


def test_write_to_unregistered_remote_range_fails(engine, peer, local):
    loc = local()
    assert engine.transfer_sync_write(peer.segment, loc.addr, peer.addr + peer.size, 16) < 0
    assert engine.transfer_sync_read(peer.segment, loc.addr, 0x1000, 16) < 0
    # and the engine still works afterwards
    assert engine.transfer_sync_write(peer.segment, loc.addr, peer.addr, 16) == 0
