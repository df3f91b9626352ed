"""Registration return codes, managed buffers and the bounds checks of
write_bytes_to_buffer / read_bytes_from_buffer."""
import ctypes

import numpy as np
import pytest

from conftest import new_engine


@pytest.fixture
def eng():
    return new_engine()


def test_register_errors(eng):
    buf = np.zeros(1 << 16, dtype=np.uint8)
    a = buf.ctypes.data
    assert eng.register_memory(a, 0) == -1            # zero length
    assert eng.register_memory(0, 4096) == -1         # NULL
    assert eng.register_memory(a, 4096) == 0
    assert eng.register_memory(a, 4096) == -7         # same range twice
    assert eng.register_memory(a + 100, 10, "cpu:0") == -7  # overlap
    assert eng.register_memory(buffer_addr=a + 4096, capacity=4096, location="*") == 0
    assert eng.unregister_memory(a + 1) == -3         # not the start of a range
    assert eng.unregister_memory(a) == 0
    assert eng.unregister_memory(a) == -3             # already gone
    assert eng.unregister_memory(buffer_addr=a + 4096) == 0


def test_batch_register_errors(eng):
    bufs = [np.zeros(8192, dtype=np.uint8) for _ in range(4)]
    addrs = [b.ctypes.data for b in bufs]
    assert eng.batch_register_memory(addrs, [8192] * 3) == -1      # list sizes differ
    assert eng.batch_register_memory(addrs, [8192, 0, 8192, 8192]) == -1
    assert eng.batch_register_memory([addrs[0], addrs[0]], [8192, 8192]) == -7
    # all or nothing: nothing of the failed batches stayed registered
    assert eng.batch_register_memory(addrs, [8192] * 4) == 0
    assert eng.batch_register_memory(addrs[:1], [100]) == -7
    assert eng.batch_unregister_memory(addrs) == 0
    assert eng.batch_unregister_memory(addrs[:2]) == -3
    assert eng.batch_register_memory([], []) == 0
    assert eng.batch_unregister_memory(buffer_addresses=[]) == 0


def test_registration_before_initialize_is_an_error():
    from mooncake.engine import TransferEngine
    e = TransferEngine()
    buf = np.zeros(4096, dtype=np.uint8)
    assert e.register_memory(buf.ctypes.data, 4096) < 0
    assert e.allocate_managed_buffer(4096) == 0
    assert e.transfer_sync_write("127.0.0.1:1", buf.ctypes.data, 0, 16) == -1
    assert e.get_rpc_port() < 0


def test_managed_buffers(eng):
    a = eng.allocate_managed_buffer(1 << 20)
    assert a != 0 and a % 4096 == 0
    data = b"Test data for managed buffer"
    assert eng.write_bytes_to_buffer(a, data, len(data)) == 0
    assert eng.read_bytes_from_buffer(a, len(data)) == data
    # a few sizes, distinct and non-overlapping blocks
    sizes = [1, 8192, 8193, 65536, 3 << 20, 16 << 20]
    blocks = [(eng.allocate_managed_buffer(s), s) for s in sizes]
    assert all(b for b, _ in blocks)
    spans = sorted((b, b + max(s, 8192)) for b, s in blocks + [(a, 1 << 20)])
    assert all(x[1] <= y[0] for x, y in zip(spans, spans[1:]))
    for i, (b, s) in enumerate(blocks):
        payload = bytes([i + 1]) * min(s, 4096)
        assert eng.write_bytes_to_buffer(b, payload, len(payload)) == 0
        assert eng.read_bytes_from_buffer(b, len(payload)) == payload
    for b, s in blocks:
        assert eng.free_managed_buffer(b, s) == 0
    # freed blocks are reused
    assert eng.allocate_managed_buffer(16 << 20) == blocks[-1][0]
    assert eng.free_managed_buffer(a, 1 << 20) == 0


def test_managed_free_errors(eng):
    a = eng.allocate_managed_buffer(100000)
    assert eng.free_managed_buffer(a + 8, 100000) == -3      # not a block start
    assert eng.free_managed_buffer(a, 1 << 22) == -1         # other size class
    assert eng.free_managed_buffer(buffer_addr=a, length=100000) == 0
    assert eng.free_managed_buffer(a, 100000) == -3          # double free refused
    assert eng.free_managed_buffer(0, 0) == -3


def test_large_managed_buffer(eng):
    n = (256 << 20) + 4096            # above the largest class: its own registration
    a = eng.allocate_managed_buffer(n)
    assert a != 0
    assert eng.write_bytes_to_buffer(a + n - 5, b"tail!", 5) == 0
    assert eng.read_bytes_from_buffer(a + n - 5, 5) == b"tail!"
    assert eng.get_first_buffer_address(f"127.0.0.1:{eng.get_rpc_port()}") != 0
    assert eng.free_managed_buffer(a, n) == 0
    with pytest.raises(ValueError):
        eng.read_bytes_from_buffer(a, 5)  # gone with its registration


def test_bytes_io_bounds(eng):
    buf = np.zeros(4096, dtype=np.uint8)
    a = buf.ctypes.data
    with pytest.raises(ValueError):
        eng.write_bytes_to_buffer(a, b"x", 1)       # not registered yet
    with pytest.raises(ValueError):
        eng.read_bytes_from_buffer(0x10, 16)         # would segfault in the original
    assert eng.register_memory(a, 4096) == 0
    assert eng.write_bytes_to_buffer(a + 4090, b"123456", 6) == 0
    assert bytes(buf[4090:]) == b"123456"
    with pytest.raises(ValueError):
        eng.write_bytes_to_buffer(a + 4091, b"123456", 6)    # one past the end
    with pytest.raises(ValueError):
        eng.read_bytes_from_buffer(a + 4000, 97)
    with pytest.raises(ValueError):
        eng.write_bytes_to_buffer(a, b"abc", 4)              # longer than src
    with pytest.raises(ValueError):
        eng.write_bytes_to_buffer(a, b"abc", -1)
    with pytest.raises(ValueError):
        eng.read_bytes_from_buffer(a, -1)
    with pytest.raises(ValueError):
        eng.read_bytes_from_buffer(a, 1 << 64)
    with pytest.raises(TypeError):
        eng.write_bytes_to_buffer(a, None, 1)
    with pytest.raises(TypeError):
        eng.read_bytes_from_buffer(None, 1)
    # any buffer-protocol object works as the source; a shorter length copies a prefix
    assert eng.write_bytes_to_buffer(a, bytearray(b"ba"), 2) == 0
    assert eng.write_bytes_to_buffer(a + 2, memoryview(b"mvXX"), 2) == 0
    assert eng.write_bytes_to_buffer(a + 4, np.frombuffer(b"np", dtype=np.uint8), 2) == 0
    assert eng.write_bytes_to_buffer(dest_address=a + 6, src_ptr=(ctypes.c_char * 2)(*b"ct"),
                                     length=2) == 0
    assert eng.read_bytes_from_buffer(source_address=a, length=8) == b"bamvnpct"
    assert eng.read_bytes_from_buffer(a, 0) == b""
    big = bytes(range(256)) * 16
    assert eng.write_bytes_to_buffer(a, big, 4096) == 0     # large copies drop the GIL
    assert eng.read_bytes_from_buffer(a, 4096) == big
    assert eng.unregister_memory(a) == 0
    with pytest.raises(ValueError):
        eng.read_bytes_from_buffer(a, 1)


def test_big_copy_without_gil(eng):
    a = eng.allocate_managed_buffer(8 << 20)
    blob = np.random.default_rng(1).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    assert eng.write_bytes_to_buffer(a, blob, len(blob)) == 0
    assert eng.read_bytes_from_buffer(a, len(blob)) == blob
    assert eng.free_managed_buffer(a, 8 << 20) == 0


def test_index_objects_are_accepted(eng):
    a = eng.allocate_managed_buffer(np.int64(8192))
    assert eng.write_bytes_to_buffer(np.uint64(a), b"hi", np.int32(2)) == 0
    assert eng.free_managed_buffer(np.uint64(a), 8192) == 0
    with pytest.raises(TypeError):
        eng.allocate_managed_buffer(1.5)
    with pytest.raises(ValueError):
        eng.allocate_managed_buffer(-1)


def test_bytes_io_error_message_names_the_range(eng):
    buf = np.zeros(4096, dtype=np.uint8)
    a = buf.ctypes.data
    with pytest.raises(ValueError) as w:
        eng.write_bytes_to_buffer(a, b"abcdef", 6)
    assert str(w.value).startswith(f"[{a:#x}, +6) is not inside memory registered")
    assert "%" not in str(w.value)
    with pytest.raises(ValueError) as r:
        eng.read_bytes_from_buffer(0xdeadbeef000, 123456789)
    assert str(r.value).startswith("[0xdeadbeef000, +123456789) is not inside")
    with pytest.raises(ValueError) as r:
        eng.read_bytes_from_buffer(2**64 - 16, 16)
    assert str(r.value).startswith("[0xfffffffffffffff0, +16) ")


def test_write_bytes_accepts_str_as_utf8(eng):
    buf = np.zeros(4096, dtype=np.uint8)
    a = buf.ctypes.data
    assert eng.register_memory(a, 4096) == 0
    text = "h\u00e9llo \u4e16\u754c\0!"  # non-ASCII and an embedded NUL
    data = text.encode("utf-8")
    assert eng.write_bytes_to_buffer(a, text, len(data)) == 0
    assert bytes(buf[:len(data)]) == data
    assert eng.read_bytes_from_buffer(a, len(data)) == data
    # length counts UTF-8 bytes, not characters; a prefix is fine
    assert eng.write_bytes_to_buffer(dest_address=a + 100, src_ptr="\u00e9\u00e9", length=3) == 0
    assert bytes(buf[100:103]) == "\u00e9\u00e9".encode()[:3]
    with pytest.raises(ValueError):
        eng.write_bytes_to_buffer(a, "\u00e9", 3)   # two bytes only
    # the bytes-like objects of before still work
    for src in (b"bytes", bytearray(b"array"), memoryview(b"mview"), np.frombuffer(b"numpy", np.uint8)):
        assert eng.write_bytes_to_buffer(a + 200, src, 5) == 0
        assert bytes(buf[200:205]) == bytes(src)
    with pytest.raises(TypeError):
        eng.write_bytes_to_buffer(a, 12345, 1)
    with pytest.raises(UnicodeEncodeError):
        eng.write_bytes_to_buffer(a, "\ud800", 1)    # a lone surrogate has no UTF-8
    assert eng.unregister_memory(a) == 0
