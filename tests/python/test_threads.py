"""Many Python threads sharing one engine: 8 threads x 200 verified
transfers, each thread on its own slice of the peer's buffer."""
import threading

import numpy as np

from conftest import Local, new_engine

THREADS = 8
ROUNDS = 200
SLOT = 64 << 10


def test_threads_share_one_engine(make_peer):
    eng = new_engine()
    p = make_peer("--size", str(THREADS * SLOT))
    loc = Local(eng, 2 * THREADS * SLOT)
    errors = []

    def worker(t):
        rng = np.random.default_rng(t)
        out = loc.buf[2 * t * SLOT:(2 * t + 1) * SLOT]
        back = loc.buf[(2 * t + 1) * SLOT:(2 * t + 2) * SLOT]
        try:
            for r in range(ROUNDS):
                n = int(rng.integers(1, SLOT))
                out[:n] = rng.integers(0, 256, n, dtype=np.uint8)
                remote = p.addr + t * SLOT
                rc = eng.transfer_sync_write(p.segment, out.ctypes.data, remote, n)
                if rc != 0:
                    raise AssertionError(f"thread {t} round {r}: write rc {rc}")
                back[:n] = 0
                if r % 2:
                    rc = eng.transfer_sync_read(p.segment, back.ctypes.data, remote, n)
                else:
                    bid = eng.batch_transfer_async_read(p.segment, [back.ctypes.data], [remote], [n])
                    rc = eng.get_batch_transfer_status([bid]) if bid else -1
                if rc != 0 or not np.array_equal(back[:n], out[:n]):
                    raise AssertionError(f"thread {t} round {r}: read rc {rc} or bytes differ")
        except AssertionError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    loc.close()
