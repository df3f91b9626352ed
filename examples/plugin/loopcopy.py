"""loopcopy.py - selects the out-of-tree loopcopy transport by name from
Python: one engine, two registered buffers, a write to its own segment and a
read back, verified.  Run with MC_PLUGIN_PATH naming the plugin's folder."""
import ctypes
import os
import sys

from mooncake.engine import TransferEngine


def main() -> int:
    engine = TransferEngine()
    rc = engine.initialize("127.0.0.1", "P2PHANDSHAKE", "loopcopy", "")
    if rc != 0:
        print(f"initialize failed: {rc}", file=sys.stderr)
        return 1
    size = 3 << 20
    src = ctypes.create_string_buffer(os.urandom(size), size)
    dst = ctypes.create_string_buffer(size)
    back = ctypes.create_string_buffer(size)
    for buf in (src, dst, back):
        if engine.register_memory(ctypes.addressof(buf), size) != 0:
            print("register_memory failed", file=sys.stderr)
            return 1
    own = f"127.0.0.1:{engine.get_rpc_port()}"  # P2P segment name: host:rpc_port
    rc = engine.transfer_sync_write(own, ctypes.addressof(src), ctypes.addressof(dst), size)
    rc = rc or engine.transfer_sync_read(own, ctypes.addressof(back), ctypes.addressof(dst), size)
    ok = rc == 0 and dst.raw == src.raw and back.raw == src.raw
    print(f"loopcopy from Python: {'OK' if ok else 'FAILED'} (rc {rc}, {size} bytes)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
