/* module.c - the mooncake.engine module: its state (the heap types, one set
 * per module object), multi-phase init, the TransferEngine type (its
 * lifetime and its one method table; the methods live in *_methods.c and
 * cuda.c), TransferOpcode and the module-level names.  TransferNotify is in
 * notify.c, InnerTransferEngine in inner.c. */
#include "pyte.h"

#include <string.h>

#include "cuda_methods.h"
#include "engine_methods.h"
#include "transfer_methods.h"

static struct PyModuleDef module_def;

pyte_state *pyte_state_of(PyTypeObject *tp)
{
    /* By def, not PyType_GetModuleState: tp may be a Python subclass. */
    PyObject *m = PyType_GetModuleByDef(tp, &module_def);
    return m ? PyModule_GetState(m) : NULL;
}

/* ---- TransferEngine ------------------------------------------------------------ */

static PyObject *engine_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    pyte_engine_object *self = (pyte_engine_object *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->core = pyte_core_new();
    if (!self->core) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

/* Arguments are checked here, not in tp_new, so that subclasses may take some. */
static int engine_init(PyObject *self, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "TransferEngine() takes no arguments");
        return -1;
    }
    return 0;
}

static void engine_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    pyte_core *c = ((pyte_engine_object *)self)->core;
    if (c) {
        /* Destroying the engine waits for in-flight transfers. */
        Py_BEGIN_ALLOW_THREADS
        pyte_core_unref(c);
        Py_END_ALLOW_THREADS
    }
    tp->tp_free(self);
    Py_DECREF(tp); /* instances of heap types own a reference to it */
}

PyDoc_STRVAR(engine_doc,
    "TransferEngine()\n--\n\n"
    "A transfer engine: moves bytes between this process's registered memory and\n"
    "that of peers, over TCP or RDMA, like Mooncake's TransferEngine.  Call\n"
    "initialize() first.  Every method may be called from many threads; blocking\n"
    "calls release the GIL.  MC_TRANSFER_TIMEOUT is read when the object is created.");

/* Complete at compile time: each file's X-macro list, then the sentinel. */
static PyMethodDef engine_methods[] = {
    PYTE_ENGINE_METHODS(PYTE_DEF_KW, PYTE_DEF_NOA)
    PYTE_TRANSFER_METHODS(PYTE_DEF_KW, PYTE_DEF_NOA)
    PYTE_CUDA_METHODS(PYTE_DEF_KW, PYTE_DEF_NOA)
    {NULL, NULL, 0, NULL}};

static PyType_Slot engine_slots[] = {
    {Py_tp_doc, (void *)engine_doc},
    {Py_tp_new, engine_new},
    {Py_tp_init, engine_init},
    {Py_tp_dealloc, engine_dealloc},
    {Py_tp_methods, engine_methods},
    {0, NULL}};

/* No GC: the object holds no Python references (a subclass gets its own). */
static PyType_Spec engine_spec = {
    .name = "mooncake.engine.TransferEngine",
    .basicsize = sizeof(pyte_engine_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = engine_slots,
};

/* ---- module -------------------------------------------------------------------- */

static int set_str_attr(PyObject *o, const char *name, const char *value)
{
    PyObject *v = PyUnicode_FromString(value);
    int rc = v ? PyObject_SetAttrString(o, name, v) : -1;
    Py_XDECREF(v);
    return rc;
}

static PyObject *make_opcode_enum(void)
{
    PyObject *enum_mod = PyImport_ImportModule("enum");
    if (!enum_mod)
        return NULL;
    /* Read/Write as in the original binding, READ/WRITE as in its docs:
     * aliases of the same members. */
    PyObject *e = PyObject_CallMethod(enum_mod, "IntEnum", "s[(si)(si)(si)(si)]",
                                      "TransferOpcode", "Read", TE_OP_READ, "Write", TE_OP_WRITE,
                                      "READ", TE_OP_READ, "WRITE", TE_OP_WRITE);
    Py_DECREF(enum_mod);
    if (!e)
        return NULL;
    if (set_str_attr(e, "__module__", "mooncake.engine") < 0 ||
        set_str_attr(e, "__doc__", "Transfer direction: Read (== READ == 0) or Write "
                                   "(== WRITE == 1).") < 0) {
        Py_DECREF(e);
        return NULL;
    }
    return e;
}

static PyObject *mod_last_error(PyObject *self, PyObject *unused)
{
    return PyUnicode_DecodeUTF8(te_last_error(), (Py_ssize_t)strlen(te_last_error()), "replace");
}

static PyMethodDef module_methods[] = {
    {"last_error", mod_last_error, METH_NOARGS,
     "last_error()\n--\n\n"
     "Extension: the engine's detail message for the last failed call made by the\n"
     "calling thread ('' if none).  The original returns bare codes such as -1."},
    {0}};

/* Creates a heap type bound to m, keeps it in *slot and adds it as `name`. */
static int add_type(PyObject *m, PyType_Spec *spec, PyTypeObject **slot, const char *name)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(m, spec, NULL);
    if (!*slot)
        return -1;
    return PyModule_AddObjectRef(m, name, (PyObject *)*slot);
}

/* TransferOpcode as a module name, a TransferEngine attribute, and its
 * members Read / Write as module names. */
static int add_opcode(PyObject *m, PyTypeObject *engine_type)
{
    PyObject *e = make_opcode_enum();
    int rc = e ? PyModule_AddObjectRef(m, "TransferOpcode", e) : -1;
    /* TransferEngine is immutable to Python code: set its dict directly. */
    if (rc == 0)
        rc = PyDict_SetItemString(engine_type->tp_dict, "TransferOpcode", e);
    if (rc == 0)
        PyType_Modified(engine_type);
    const char *names[] = {"Read", "Write"};
    for (size_t i = 0; rc == 0 && i < 2; i++) {
        PyObject *v = PyObject_GetAttrString(e, names[i]);
        rc = v ? PyModule_AddObjectRef(m, names[i], v) : -1;
        Py_XDECREF(v);
    }
    Py_XDECREF(e);
    return rc;
}

static int add_constants(PyObject *m)
{
    const char *off[] = {"SUPPORT_EFA", "SUPPORT_HIP", "SUPPORT_MNNVL", "SUPPORT_MUSA",
                         "SUPPORT_INTRA_NVLINK"};
    for (size_t i = 0; i < sizeof off / sizeof *off; i++)
        if (PyModule_AddObjectRef(m, off[i], Py_False) < 0)
            return -1;
    if (PyModule_AddStringConstant(m, "__version__", "0.1.0") < 0)
        return -1;
    return PyModule_AddObjectRef(m, "SUPPORT_CUDA", pyte_cuda_available() ? Py_True : Py_False);
}

/* Py_mod_exec: runs once per module object (each import in a subinterpreter). */
static int module_exec(PyObject *m)
{
    pyte_state *st = PyModule_GetState(m);
    if (!st)
        return -1;
    if (add_type(m, &pyte_notify_spec, &st->notify_type, "TransferNotify") < 0 ||
        add_type(m, &pyte_inner_spec, &st->inner_type, "InnerTransferEngine") < 0 ||
        add_type(m, &engine_spec, &st->engine_type, "TransferEngine") < 0)
        return -1;
    return add_opcode(m, st->engine_type) < 0 || add_constants(m) < 0 ? -1 : 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    pyte_state *st = PyModule_GetState(m);
    if (st) {
        Py_VISIT(st->engine_type);
        Py_VISIT(st->inner_type);
        Py_VISIT(st->notify_type);
    }
    return 0;
}

static int module_clear(PyObject *m)
{
    pyte_state *st = PyModule_GetState(m);
    if (st) {
        Py_CLEAR(st->engine_type);
        Py_CLEAR(st->inner_type);
        Py_CLEAR(st->notify_type);
    }
    return 0;
}

static void module_free(void *m)
{
    module_clear(m);
}

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, module_exec}, {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mooncake.engine",
    .m_doc = "Mooncake Transfer Engine API over the C transfer engine (libte).",
    .m_size = sizeof(pyte_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit_engine(void)
{
    return PyModuleDef_Init(&module_def);
}
