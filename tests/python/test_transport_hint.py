"""transport_hint on every transfer method: '' lets the engine choose per
request, a transport name pins it (both directions, single and batch calls,
sync and async), an unknown name raises ValueError, a known transport this
engine does not run fails the transfer (docs/transports.md)."""
import pytest

from conftest import Local, new_engine


def carried(eng, transport):
    t = eng.get_metrics()["transports"].get(transport, {})
    return t.get("read_bytes", 0) + t.get("write_bytes", 0)


def test_hints_pin_shm_and_tcp_both_ways(make_peer, monkeypatch):
    monkeypatch.setenv("MC_TE_SAME_HOST_TRANSPORT", "1")
    p = make_peer("--size", str(1 << 20), env={"MC_TE_SAME_HOST_TRANSPORT": "1"})
    eng = new_engine()
    loc = Local(eng, 65536)
    a = loc.addr
    assert eng.transfer_sync_write(p.segment, a, p.addr, 4096, transport_hint="tcp") == 0
    assert carried(eng, "tcp") == 4096 and carried(eng, "shm") == 0
    assert eng.transfer_sync_read(p.segment, a, p.addr, 4096, "shm") == 0
    assert carried(eng, "shm") == 4096
    assert eng.batch_transfer_sync_write(p.segment, [a, a + 4096], [p.addr, p.addr + 4096],
                                         [4096, 4096], transport_hint="tcp") == 0
    assert carried(eng, "tcp") == 3 * 4096
    bid = eng.batch_transfer_async_read(p.segment, [a], [p.addr], [8192], transport_hint="shm")
    assert bid != 0 and eng.get_batch_transfer_status([bid]) == 0
    assert carried(eng, "shm") == 4096 + 8192
    assert eng.transfer_sync_write(p.segment, a, p.addr, 1024, transport_hint="") == 0
    assert carried(eng, "shm") == 4096 + 8192 + 1024  # the engine's own choice: same host
    assert eng.get_metrics()["failovers"] == {"shm": {"tcp": 0}, "tcp": {"shm": 0}}
    loc.close()


def test_unknown_hint_raises_and_unloaded_one_fails(peer, local, engine):
    a = local().addr
    with pytest.raises(ValueError):
        engine.transfer_sync_write(peer.segment, a, peer.addr, 16, transport_hint="bogus")
    with pytest.raises(ValueError):
        engine.batch_transfer_async_write(peer.segment, [a], [peer.addr], [16], "bogus")
    with pytest.raises(ValueError):
        engine.transfer_submit_write(peer.segment, a, peer.addr, 16, transport_hint="x")
    with pytest.raises(ValueError):
        engine.transfer_write_on_cuda(peer.segment, a, peer.addr, 16, 0, "bogus")
    # Known, but this engine runs no rdma: the transfer fails, nothing raises.
    assert engine.transfer_sync_write(peer.segment, a, peer.addr, 16, transport_hint="rdma") < 0
    bid = engine.batch_transfer_async_write(peer.segment, [a], [peer.addr], [16], "rdma")
    assert bid != 0 and engine.get_batch_transfer_status([bid]) == -1
    assert engine.transfer_sync_write(peer.segment, a, peer.addr, 16, transport_hint="tcp") == 0
