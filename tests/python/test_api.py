"""The module's surface: names, TransferOpcode aliases, TransferNotify,
signatures and keyword names of the original, docstrings, the .pyi stubs,
InnerTransferEngine, argument validation and the no-CUDA path."""
import inspect
import json
import os
import subprocess
import sys

import pytest

import mooncake
import mooncake.engine as me
from mooncake.engine import TransferEngine, TransferNotify, TransferOpcode

SPEC_METHODS = """initialize initialize_ext get_engine get_rpc_port allocate_managed_buffer
free_managed_buffer get_first_buffer_address transfer_sync_write transfer_sync_read
transfer_sync transfer_submit_write transfer_check_status transfer_write_on_cuda
transfer_read_on_cuda batch_transfer_write_on_cuda batch_transfer_read_on_cuda
batch_transfer_sync_write batch_transfer_sync_read batch_transfer_sync batch_transfer_async_write
batch_transfer_async_read batch_transfer_async get_batch_transfer_status write_bytes_to_buffer
read_bytes_from_buffer register_memory unregister_memory batch_register_memory
batch_unregister_memory get_local_topology get_notifies send_probe get_engine_ptr
get_cuda_transfer_errors warmup_efa_segment""".split()


def test_import_names():
    for name in ("TransferEngine", "TransferNotify", "TransferOpcode", "InnerTransferEngine",
                 "Read", "Write", "SUPPORT_CUDA", "SUPPORT_EFA", "last_error"):
        assert hasattr(me, name), name
    assert me.__name__ == "mooncake.engine"
    assert mooncake.__version__


def test_opcode_aliases():
    assert TransferOpcode.Read == TransferOpcode.READ == 0
    assert TransferOpcode.Write == TransferOpcode.WRITE == 1
    assert TransferOpcode.READ is TransferOpcode.Read
    assert TransferOpcode.WRITE is TransferOpcode.Write
    assert me.Read is TransferOpcode.Read and me.Write is TransferOpcode.Write
    assert TransferEngine.TransferOpcode is TransferOpcode
    assert TransferOpcode(1) is TransferOpcode.Write
    assert int(TransferOpcode.Write) == 1


def test_transfer_notify():
    n = TransferNotify()
    assert (n.name, n.msg) == ("", "")
    n = TransferNotify("name", "msg")
    assert (n.name, n.msg) == ("name", "msg")
    n.name, n.msg = "a", "b"
    assert (n.name, n.msg) == ("a", "b")
    assert TransferNotify(name="x", msg="y") == TransferNotify("x", "y")
    assert "TransferNotify" in repr(n)
    with pytest.raises(TypeError):
        n.name = 3
    with pytest.raises(TypeError):
        TransferNotify(1, 2)


def test_every_method_exists_and_is_documented():
    for name in SPEC_METHODS:
        method = getattr(TransferEngine, name)
        assert method.__doc__ and len(method.__doc__) > 20, name
        inspect.signature(method)  # a text signature is present and parses


def test_stub_lists_every_method():
    stub = os.path.join(os.path.dirname(me.__file__), "engine.pyi")
    text = open(stub).read()
    for name in SPEC_METHODS:
        assert f"def {name}(" in text, name
    assert os.path.exists(os.path.join(os.path.dirname(me.__file__), "py.typed"))


@pytest.mark.parametrize("method,params", [
    ("transfer_sync_write", "target_hostname buffer peer_buffer_address length transport_hint"),
    ("transfer_sync", "target_hostname buffer peer_buffer_address length opcode notify transport_hint"),
    ("batch_transfer_sync", "target_hostname buffers peer_buffer_addresses lengths opcode notify "
                            "transport_hint"),
    ("batch_transfer_async", "target_hostname buffers peer_buffer_addresses lengths opcode "
                             "transport_hint"),
    ("transfer_write_on_cuda", "target_hostname buffer peer_buffer_address length stream_ptr "
                               "transport_hint"),
    ("register_memory", "buffer_addr capacity location"),
    ("batch_register_memory", "buffer_addresses capacities location"),
    ("get_local_topology", "device_name"),
    ("send_probe", "peer_server_name"),
])
def test_parameter_names(method, params):
    sig = inspect.signature(getattr(TransferEngine, method))
    assert list(sig.parameters)[1:] == params.split()


def test_keyword_arguments_are_checked():
    e = TransferEngine()
    with pytest.raises(TypeError):
        e.transfer_sync_write(target_hostname="x", buffer=1, peer_buffer_address=2, lenght=3)
    with pytest.raises(TypeError):
        e.transfer_sync_write("x", 1, 2)
    with pytest.raises(TypeError):
        TransferEngine(1)
    # the optional trailing transport_hint is accepted and ignored
    assert e.transfer_sync_write("127.0.0.1:1", 1, 2, 3, "rdma") == -1


def test_argument_validation_never_crashes():
    e = TransferEngine()
    with pytest.raises(ValueError):
        e.transfer_sync_write("x", -1, 0, 8)
    with pytest.raises(ValueError):
        e.transfer_sync_write("x", 1, 0, 1 << 64)
    with pytest.raises(TypeError):
        e.transfer_sync_write(None, 1, 0, 8)
    with pytest.raises(TypeError):
        e.transfer_sync_write("x", None, 0, 8)
    with pytest.raises(TypeError):
        e.transfer_sync_write("x", 1.0, 0, 8)
    with pytest.raises(ValueError):
        e.transfer_sync("x", 1, 2, 3, 7)
    with pytest.raises(TypeError):
        e.transfer_sync("x", 1, 2, 3, "write")
    with pytest.raises(TypeError):
        e.transfer_sync("x", 1, 2, 3, TransferOpcode.Write, notify="not a notify")
    with pytest.raises(TypeError):
        e.batch_transfer_sync_write("x", 5, [1], [1])
    with pytest.raises(TypeError):
        e.batch_transfer_sync_write("x", "abc", [1], [1])
    with pytest.raises(ValueError):
        e.batch_transfer_sync_write("x", [1], [1], [-1])
    with pytest.raises(TypeError):
        e.get_batch_transfer_status(None)
    with pytest.raises(ValueError):
        e.register_memory(1, -5)
    with pytest.raises(TypeError):
        e.batch_register_memory([1], None)


def test_inner_engine():
    e = TransferEngine()
    inner = e.get_engine()
    assert isinstance(inner, me.InnerTransferEngine)
    assert inner.address == int(inner) == e.get_engine_ptr() != 0
    del e  # the inner object keeps the engine alive
    assert inner.address != 0
    with pytest.raises(TypeError):
        me.InnerTransferEngine()


def test_local_topology_is_json():
    e = TransferEngine()
    assert isinstance(json.loads(e.get_local_topology()), dict)
    assert isinstance(json.loads(e.get_local_topology(device_name="mlx5_0")), dict)


def test_last_error_names_the_problem():
    e = TransferEngine()
    assert e.initialize("127.0.0.1", "nosuchscheme://x", "tcp", "") == -1
    assert me.last_error() != ""


def test_cuda_methods_without_cuda_runtime():
    code = """
import mooncake.engine as me
e = me.TransferEngine()
assert me.SUPPORT_CUDA is False
calls = [lambda: e.transfer_write_on_cuda("127.0.0.1:1", 1, 2, 3, 0),
         lambda: e.transfer_read_on_cuda("127.0.0.1:1", 1, 2, 3, stream_ptr=0),
         lambda: e.batch_transfer_write_on_cuda("127.0.0.1:1", [1], [2], [3]),
         lambda: e.batch_transfer_read_on_cuda("127.0.0.1:1", [1], [2], [3], 0, "")]
for call in calls:
    try:
        call()
    except RuntimeError as err:
        assert "CUDA runtime not available" in str(err), err
    else:
        raise SystemExit("no RuntimeError")
assert e.get_cuda_transfer_errors() == []
print("ok")
"""
    env = dict(os.environ, MC_CUDART_LIBRARY="/nonexistent/libcudart.so")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_cuda_list_mismatch_raises():
    e = TransferEngine()
    with pytest.raises(RuntimeError):
        e.batch_transfer_write_on_cuda("127.0.0.1:1", [1, 2], [2], [3])
