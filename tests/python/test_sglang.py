"""The flow SGLang's Mooncake connector uses: P2PHANDSHAKE with protocol
"rdma" (tcp where there is none), the session id "host:rpc_port", batch
registration of KV buffers and batch_transfer_sync_write between them."""
import numpy as np

from conftest import pattern
from mooncake.engine import TransferEngine

LAYERS = 4
LAYER_BYTES = 1 << 18
PAGE = 4096


def test_sglang_style_kv_transfer(make_peer):
    decode = make_peer("--protocol", "rdma", "--buffers", str(LAYERS), "--size", str(LAYER_BYTES))
    engine = TransferEngine()
    hostname = "127.0.0.1"
    assert engine.initialize(hostname, "P2PHANDSHAKE", "rdma", "") == 0
    session_id = f"{hostname}:{engine.get_rpc_port()}"
    assert engine.get_first_buffer_address(session_id) == 0
    kv = [np.zeros(LAYER_BYTES, dtype=np.uint8) for _ in range(LAYERS)]
    ptrs = [a.ctypes.data for a in kv]
    assert engine.batch_register_memory(ptrs, [LAYER_BYTES] * LAYERS) == 0
    assert engine.get_first_buffer_address(session_id) in ptrs  # order: see test_transfers

    # prefill wrote pages 3, 7, 8 of every layer; they go to pages 0, 1, 2 of the decoder
    src_pages, dst_pages = [3, 7, 8], [0, 1, 2]
    src, dst, lengths = [], [], []
    for layer in range(LAYERS):
        for s, d in zip(src_pages, dst_pages):
            kv[layer][s * PAGE:(s + 1) * PAGE] = pattern(PAGE, layer * 100 + s)
            src.append(ptrs[layer] + s * PAGE)
            dst.append(decode.addrs[layer] + d * PAGE)
            lengths.append(PAGE)
    assert engine.batch_transfer_sync_write(decode.segment, src, dst, lengths) == 0
    for layer in range(LAYERS):
        for s, d in zip(src_pages, dst_pages):
            assert decode.check(d * PAGE, PAGE, layer * 100 + s, buf=layer)
    assert engine.send_probe(decode.segment) == 0
    assert engine.batch_unregister_memory(ptrs) == 0
