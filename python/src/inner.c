/* inner.c - InnerTransferEngine, what get_engine() returns: the C engine
 * (te_engine *) as an int for C code built on te.h, kept alive by a
 * reference to the shared pyte_core.  A heap type (pyte_inner_spec) created
 * per module by module.c; only get_engine() makes one. */
#include "pyte.h"

typedef struct {
    PyObject_HEAD
    pyte_core *core;
} inner_object;

static void inner_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    pyte_core *c = ((inner_object *)self)->core;
    Py_BEGIN_ALLOW_THREADS
    pyte_core_unref(c);
    Py_END_ALLOW_THREADS
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *inner_int(PyObject *self)
{
    return PyLong_FromVoidPtr(((inner_object *)self)->core->engine);
}

static PyObject *inner_address(PyObject *self, void *unused)
{
    return inner_int(self);
}

static PyObject *inner_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<mooncake.engine.InnerTransferEngine at %p>",
                                (void *)((inner_object *)self)->core->engine);
}

static PyGetSetDef inner_getset[] = {
    {"address", inner_address, NULL, "The C te_engine pointer as an int.", NULL}, {0}};

static PyType_Slot inner_slots[] = {
    {Py_tp_doc, "The C engine (te_engine *) behind a TransferEngine; keeps it alive.\n"
                "int(x) and x.address give the pointer, for C code built on te.h."},
    {Py_tp_dealloc, inner_dealloc},
    {Py_tp_repr, inner_repr},
    {Py_nb_int, inner_int},
    {Py_nb_index, inner_int},
    {Py_tp_getset, inner_getset},
    {0, NULL}};

/* Not instantiable from Python: an instance without a core would crash. */
PyType_Spec pyte_inner_spec = {
    .name = "mooncake.engine.InnerTransferEngine",
    .basicsize = sizeof(inner_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = inner_slots,
};

PyObject *pyte_inner_new(pyte_state *st, pyte_core *core)
{
    inner_object *o = PyObject_New(inner_object, st->inner_type);
    if (!o)
        return NULL;
    pyte_core_ref(core);
    o->core = core;
    return (PyObject *)o;
}
