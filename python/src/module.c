/* module.c - the mooncake.engine module: the TransferEngine type (its
 * lifetime; methods live in *_methods.c and cuda.c), TransferNotify,
 * TransferOpcode, InnerTransferEngine and the module-level names. */
#include "pyte.h"

#include <string.h>

#include "structmember.h"

PyObject *pyte_opcode_enum;

/* ---- TransferNotify ------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *name; /* str */
    PyObject *msg;  /* str */
} notify_object;

static int notify_init(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "msg", NULL};
    notify_object *n = (notify_object *)self;
    PyObject *name = NULL, *msg = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|UU:TransferNotify", kwlist, &name, &msg))
        return -1;
    PyObject *empty = PyUnicode_FromString("");
    if (!empty)
        return -1;
    Py_XSETREF(n->name, Py_NewRef(name ? name : empty));
    Py_XSETREF(n->msg, Py_NewRef(msg ? msg : empty));
    Py_DECREF(empty);
    return 0;
}

static void notify_dealloc(PyObject *self)
{
    notify_object *n = (notify_object *)self;
    Py_XDECREF(n->name);
    Py_XDECREF(n->msg);
    Py_TYPE(self)->tp_free(self);
}

static PyObject *notify_get(PyObject *self, void *which)
{
    notify_object *n = (notify_object *)self;
    PyObject *v = which ? n->msg : n->name;
    return v ? Py_NewRef(v) : PyUnicode_FromString("");
}

static int notify_set(PyObject *self, PyObject *value, void *which)
{
    notify_object *n = (notify_object *)self;
    if (!value || !PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "TransferNotify.%s must be a str", which ? "msg" : "name");
        return -1;
    }
    if (which)
        Py_XSETREF(n->msg, Py_NewRef(value));
    else
        Py_XSETREF(n->name, Py_NewRef(value));
    return 0;
}

static PyObject *notify_repr(PyObject *self)
{
    notify_object *n = (notify_object *)self;
    return PyUnicode_FromFormat("TransferNotify(name=%R, msg=%R)", n->name ? n->name : Py_None,
                                n->msg ? n->msg : Py_None);
}

static PyObject *notify_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, &pyte_notify_type))
        Py_RETURN_NOTIMPLEMENTED;
    notify_object *x = (notify_object *)a, *y = (notify_object *)b;
    int eq = PyObject_RichCompareBool(x->name, y->name, Py_EQ);
    if (eq == 1)
        eq = PyObject_RichCompareBool(x->msg, y->msg, Py_EQ);
    if (eq < 0)
        return NULL;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyGetSetDef notify_getset[] = {
    {"name", notify_get, notify_set, "The notification's name (str).", NULL},
    {"msg", notify_get, notify_set, "The notification's message (str).", (void *)1},
    {0}};

PyDoc_STRVAR(notify_doc,
    "TransferNotify(name='', msg='')\n--\n\n"
    "A notification: sent to the target after a transfer_sync / batch_transfer_sync\n"
    "completes, and returned by get_notifies() on the receiving side.\n"
    "`name` and `msg` are read/write str attributes.");

PyTypeObject pyte_notify_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mooncake.engine.TransferNotify",
    .tp_basicsize = sizeof(notify_object),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = notify_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = notify_init,
    .tp_dealloc = notify_dealloc,
    .tp_repr = notify_repr,
    .tp_richcompare = notify_richcompare,
    .tp_getset = notify_getset,
};

PyObject *pyte_notify_new(const char *name, const char *msg)
{
    notify_object *n = PyObject_New(notify_object, &pyte_notify_type);
    if (!n)
        return NULL;
    n->name = PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "replace");
    n->msg = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace");
    if (!n->name || !n->msg) {
        Py_DECREF(n);
        return NULL;
    }
    return (PyObject *)n;
}

static char *utf8_copy(PyObject *s, const char *what)
{
    Py_ssize_t len;
    const char *p = s ? PyUnicode_AsUTF8AndSize(s, &len) : "";
    if (!p)
        return NULL;
    if (s && (size_t)len != strlen(p)) {
        PyErr_Format(PyExc_ValueError, "TransferNotify.%s contains a NUL character", what);
        return NULL;
    }
    char *c = PyMem_RawMalloc(strlen(p) + 1);
    if (!c) {
        PyErr_NoMemory();
        return NULL;
    }
    strcpy(c, p);
    return c;
}

int pyte_notify_strings(PyObject *notify, char **name, char **msg)
{
    *name = *msg = NULL;
    if (!PyObject_TypeCheck(notify, &pyte_notify_type)) {
        PyErr_Format(PyExc_TypeError, "notify must be a TransferNotify or None, got %.100s",
                     Py_TYPE(notify)->tp_name);
        return -1;
    }
    notify_object *n = (notify_object *)notify;
    *name = utf8_copy(n->name, "name");
    *msg = *name ? utf8_copy(n->msg, "msg") : NULL;
    if (!*msg) {
        PyMem_RawFree(*name);
        *name = NULL;
        return -1;
    }
    return 0;
}

/* ---- InnerTransferEngine ------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    pyte_core *core;
} inner_object;

static void inner_dealloc(PyObject *self)
{
    pyte_core *c = ((inner_object *)self)->core;
    Py_BEGIN_ALLOW_THREADS
    pyte_core_unref(c);
    Py_END_ALLOW_THREADS
    Py_TYPE(self)->tp_free(self);
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

static PyNumberMethods inner_number = {.nb_int = inner_int, .nb_index = inner_int};

static PyGetSetDef inner_getset[] = {
    {"address", inner_address, NULL, "The C te_engine pointer as an int.", NULL}, {0}};

PyTypeObject pyte_inner_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mooncake.engine.InnerTransferEngine",
    .tp_basicsize = sizeof(inner_object),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The C engine (te_engine *) behind a TransferEngine; keeps it alive.\n"
              "int(x) and x.address give the pointer, for C code built on te.h.",
    .tp_dealloc = inner_dealloc,
    .tp_repr = inner_repr,
    .tp_as_number = &inner_number,
    .tp_getset = inner_getset,
};

PyObject *pyte_inner_new(pyte_core *core)
{
    inner_object *o = PyObject_New(inner_object, &pyte_inner_type);
    if (!o)
        return NULL;
    pyte_core_ref(core);
    o->core = core;
    return (PyObject *)o;
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
    pyte_core *c = ((pyte_engine_object *)self)->core;
    if (c) {
        /* Destroying the engine waits for in-flight transfers. */
        Py_BEGIN_ALLOW_THREADS
        pyte_core_unref(c);
        Py_END_ALLOW_THREADS
    }
    Py_TYPE(self)->tp_free(self);
}

PyDoc_STRVAR(engine_doc,
    "TransferEngine()\n--\n\n"
    "A transfer engine: moves bytes between this process's registered memory and\n"
    "that of peers, over TCP or RDMA, like Mooncake's TransferEngine.  Call\n"
    "initialize() first.  Every method may be called from many threads; blocking\n"
    "calls release the GIL.  MC_TRANSFER_TIMEOUT is read when the object is created.");

PyTypeObject pyte_engine_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mooncake.engine.TransferEngine",
    .tp_basicsize = sizeof(pyte_engine_object),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = engine_doc,
    .tp_new = engine_new,
    .tp_init = engine_init,
    .tp_dealloc = engine_dealloc,
};

/* ---- module -------------------------------------------------------------------- */

static PyMethodDef all_methods[64];

static int join_methods(void)
{
    PyMethodDef *tables[] = {pyte_engine_methods, pyte_transfer_methods, pyte_cuda_methods};
    size_t k = 0;
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++)
        for (PyMethodDef *m = tables[t]; m->ml_name; m++) {
            if (k + 1 >= sizeof all_methods / sizeof *all_methods)
                return -1;
            all_methods[k++] = *m;
        }
    pyte_engine_type.tp_methods = all_methods;
    return 0;
}

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

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mooncake.engine",
    .m_doc = "Mooncake Transfer Engine API over the C transfer engine (libte).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int add_types(PyObject *m)
{
    if (join_methods() < 0 || PyType_Ready(&pyte_notify_type) < 0 ||
        PyType_Ready(&pyte_inner_type) < 0 || PyType_Ready(&pyte_engine_type) < 0)
        return -1;
    if (PyModule_AddObjectRef(m, "TransferNotify", (PyObject *)&pyte_notify_type) < 0 ||
        PyModule_AddObjectRef(m, "InnerTransferEngine", (PyObject *)&pyte_inner_type) < 0 ||
        PyModule_AddObjectRef(m, "TransferEngine", (PyObject *)&pyte_engine_type) < 0)
        return -1;
    pyte_opcode_enum = make_opcode_enum();
    if (!pyte_opcode_enum || PyModule_AddObjectRef(m, "TransferOpcode", pyte_opcode_enum) < 0 ||
        PyDict_SetItemString(pyte_engine_type.tp_dict, "TransferOpcode", pyte_opcode_enum) < 0)
        return -1;
    PyType_Modified(&pyte_engine_type);
    const char *names[] = {"Read", "Write"};
    for (size_t i = 0; i < 2; i++) {
        PyObject *v = PyObject_GetAttrString(pyte_opcode_enum, names[i]);
        if (!v || PyModule_AddObject(m, names[i], v) < 0) {
            Py_XDECREF(v);
            return -1;
        }
    }
    return 0;
}

static int add_constants(PyObject *m)
{
    const char *off[] = {"SUPPORT_EFA", "SUPPORT_HIP", "SUPPORT_MNNVL", "SUPPORT_MUSA",
                         "SUPPORT_INTRA_NVLINK"};
    for (size_t i = 0; i < sizeof off / sizeof *off; i++)
        if (PyModule_AddObjectRef(m, off[i], Py_False) < 0)
            return -1;
    return PyModule_AddObjectRef(m, "SUPPORT_CUDA", pyte_cuda_available() ? Py_True : Py_False);
}

PyMODINIT_FUNC PyInit_engine(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    if (add_types(m) < 0 || add_constants(m) < 0 ||
        PyModule_AddStringConstant(m, "__version__", "0.1.0") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
