"""The *_on_cuda methods against a fake CUDA runtime (built here with cc,
loaded through MC_CUDART_LIBRARY) whose cudaLaunchHostFunc runs the host
function at once: transfers happen, a failing one is recorded instead of
killing the process, the next call raises until the errors are read."""
import os
import shutil
import subprocess
import sys

import pytest

FAKE_CUDART = r"""
typedef void (*host_fn)(void *);
int cudaLaunchHostFunc(void *stream, host_fn fn, void *arg)
{
    if ((unsigned long)stream == 0xbad)
        return 700;
    fn(arg);
    return 0;
}
const char *cudaGetErrorString(int err)
{
    return err == 700 ? "fake launch failure" : "no error";
}
"""

CLIENT = r"""
import sys
import numpy as np
import mooncake.engine as me

seg, addr = sys.argv[1], int(sys.argv[2])
e = me.TransferEngine()
assert me.SUPPORT_CUDA is True
assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
src = ((np.arange(8192, dtype=np.uint64) * 2654435761 + 21 * 97 + 13) >> 7).astype(np.uint8)  # conftest.pattern(8192, 21)
dst = np.zeros(8192, dtype=np.uint8)
assert e.batch_register_memory([src.ctypes.data, dst.ctypes.data], [8192, 8192]) == 0

assert e.transfer_write_on_cuda(seg, src.ctypes.data, addr, 4096, 0) is None
assert e.transfer_read_on_cuda(seg, dst.ctypes.data, addr, 4096, stream_ptr=0) is None
assert np.array_equal(dst[:4096], src[:4096])
assert e.batch_transfer_write_on_cuda(seg, [src.ctypes.data + 4096], [addr + 4096], [4096]) is None
assert e.batch_transfer_read_on_cuda(seg, [dst.ctypes.data + 4096], [addr + 4096], [4096], 0) is None
assert np.array_equal(dst, src)
assert e.get_cuda_transfer_errors() == []

# a transfer failing inside the stream callback: recorded, not fatal
assert e.transfer_write_on_cuda(seg, src.ctypes.data, addr + (1 << 40), 16, 0) is None
try:
    e.transfer_write_on_cuda(seg, src.ctypes.data, addr, 16, 0)
except RuntimeError as err:
    assert "get_cuda_transfer_errors" in str(err), err
else:
    raise SystemExit("a pending failure did not raise")
errors = e.get_cuda_transfer_errors()
assert len(errors) == 1 and "unmodified or partially written" in errors[0], errors
assert e.get_cuda_transfer_errors() == []
assert e.transfer_write_on_cuda(seg, src.ctypes.data, addr, 16, 0) is None

# a launch failure raises at once and leaves nothing pending
try:
    e.transfer_write_on_cuda(seg, src.ctypes.data, addr, 16, 0xbad)
except RuntimeError as err:
    assert "fake launch failure" in str(err), err
else:
    raise SystemExit("a failed launch did not raise")
assert e.get_cuda_transfer_errors() == []
print("ok")
"""


def test_on_cuda_with_fake_runtime(tmp_path, peer):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler to build the fake CUDA runtime")
    lib = tmp_path / "libcudart.so"
    src = tmp_path / "fake_cudart.c"
    src.write_text(FAKE_CUDART)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    env = dict(os.environ, MC_CUDART_LIBRARY=str(lib))
    out = subprocess.run([sys.executable, "-c", CLIENT, peer.segment, str(peer.addr)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
    assert "transfer on a CUDA stream" in out.stderr  # the failure was logged
    assert peer.check(0, 8192, 21)  # every successful write landed, in order
