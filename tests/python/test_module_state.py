"""The module's structure: TransferEngine's method table is complete (every
method of the .pyi stub, nothing missing or extra), the types are heap types
that Python code cannot change, and each module object has its own types
(multi-phase init, module state) that the methods use."""
import gc
import importlib.util
import os
import re
import weakref

import pytest

import mooncake.engine as me
from mooncake.engine import TransferEngine, TransferNotify, TransferOpcode

Py_TPFLAGS_HEAPTYPE = 1 << 9


def stub_methods(cls):
    """The `def`s of class `cls` in engine.pyi, __init__ aside."""
    text = open(os.path.join(os.path.dirname(me.__file__), "engine.pyi")).read()
    body = re.search(rf"^class {cls}\b.*?:\n((?:[ \t]+.*\n|\n)*)", text, re.M).group(1)
    return {n for n in re.findall(r"^\s+def (\w+)\(", body, re.M) if n != "__init__"}


def test_method_table_matches_the_stub():
    # One list per implementing file goes into one static table: a list left
    # out, or an entry lost, shows here as a missing name.
    have = {n for n, v in vars(TransferEngine).items()
            if not n.startswith("_") and callable(v) and n != "TransferOpcode"}
    want = stub_methods("TransferEngine")
    assert len(want) >= 36
    assert have == want, (sorted(want - have), sorted(have - want))


@pytest.mark.parametrize("name", ["TransferEngine", "TransferNotify", "InnerTransferEngine"])
def test_types_are_immutable_heap_types(name):
    tp = getattr(me, name)
    assert tp.__flags__ & Py_TPFLAGS_HEAPTYPE
    assert tp.__module__ == "mooncake.engine" and tp.__qualname__ == name
    with pytest.raises(TypeError):
        tp.extra = 1
    assert tp.__doc__ and len(tp.__doc__) > 20


def test_subclasses_reach_the_module_state():
    class Engine(TransferEngine):
        pass

    class Notify(TransferNotify):
        pass

    e = Engine()
    assert isinstance(e.get_engine(), me.InnerTransferEngine)
    assert e.get_notifies() == []
    assert Notify("a", "b") == TransferNotify("a", "b")
    # a subclass's notification passes the type check (the call then fails
    # on the unknown target, not with TypeError)
    assert e.transfer_sync("127.0.0.1:1", 1, 2, 3, TransferOpcode.Write, Notify("a", "b")) == -1
    ref = weakref.ref(e)
    del e
    gc.collect()
    assert ref() is None


def fresh_module():
    """A second mooncake.engine module object, executed from the same spec."""
    m = importlib.util.module_from_spec(me.__spec__)
    me.__spec__.loader.exec_module(m)
    return m


def test_each_module_object_has_its_own_types():
    m2 = fresh_module()
    for name in ("TransferEngine", "TransferNotify", "InnerTransferEngine"):
        assert getattr(m2, name) is not getattr(me, name), name
    e2 = m2.TransferEngine()
    inner = e2.get_engine()
    assert type(inner) is m2.InnerTransferEngine and int(inner) != 0
    # the method checks against its own module's TransferNotify
    with pytest.raises(TypeError):
        e2.transfer_sync("127.0.0.1:1", 1, 2, 3, TransferOpcode.Write, TransferNotify("a", "b"))
    assert e2.transfer_sync("127.0.0.1:1", 1, 2, 3, m2.Write, m2.TransferNotify("a", "b")) == -1
    assert m2.TransferEngine.TransferOpcode is m2.TransferOpcode
    ref = weakref.ref(m2.TransferEngine)
    del m2, e2
    assert int(inner) != 0  # the inner object keeps the engine alive
    del inner
    gc.collect()
    assert ref() is None  # the module state's references are released
