"""get_metrics(), an addition beyond the original API: counters after a known
set of transfers, as seen from Python."""
import pytest

from conftest import new_engine, pattern
from mooncake.engine import TransferEngine


def test_counters_match_known_transfers(make_peer, local):
    p = make_peer("--size", str(1 << 20))
    eng = new_engine()
    loc = local(eng=eng)
    loc.buf[:8192] = pattern(8192, 3)
    for _ in range(3):
        assert eng.transfer_sync_write(p.segment, loc.addr, p.addr, 4096) == 0
    assert eng.transfer_sync_read(p.segment, loc.addr, p.addr, 1000) == 0
    assert eng.transfer_sync_write(p.segment, loc.addr, p.addr + (1 << 20) - 10, 100) < 0
    m = eng.get_metrics()
    tcp = m["transports"]["tcp"]
    assert (tcp["writes"], tcp["write_bytes"]) == (3, 3 * 4096)
    assert (tcp["reads"], tcp["read_bytes"]) == (1, 1000)
    assert m["segments"][p.segment]["writes"] == 3
    assert m["failures"]["address_not_registered"] == 1
    assert m["completed_requests"] == 4
    assert m["inflight_requests"] == 0
    assert m["registered_bytes"] == loc.buf.nbytes
    assert sum(count for _, count in m["latency_us"]["buckets"]) == 4


def test_metrics_before_initialize_raise():
    with pytest.raises(RuntimeError):
        TransferEngine().get_metrics()


def test_segment_transport_names_the_path(make_peer, monkeypatch):
    """get_segment_transport(), an addition: tcp here (conftest switches the
    same-host transport off), shm when both sides allow it."""
    p = make_peer("--size", str(1 << 20), env={"MC_TE_SAME_HOST_TRANSPORT": "1"})
    eng = new_engine()
    assert eng.get_segment_transport(p.segment) == "tcp"
    monkeypatch.setenv("MC_TE_SAME_HOST_TRANSPORT", "1")
    eng2 = new_engine()
    assert eng2.get_segment_transport(p.segment) == "shm"
    with pytest.raises(RuntimeError):
        eng.get_segment_transport("127.0.0.1:1")
    with pytest.raises(RuntimeError):
        TransferEngine().get_segment_transport(p.segment)
