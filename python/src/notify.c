/* notify.c - TransferNotify, a (name, msg) pair of str: sent with
 * transfer_sync / batch_transfer_sync and returned by get_notifies().  A heap
 * type (pyte_notify_spec) created per module by module.c; GC-tracked since
 * it holds Python objects and may be subclassed. */
#include "pyte.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *name; /* str, NULL until __init__ ran */
    PyObject *msg;  /* str, NULL until __init__ ran */
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

static int notify_traverse(PyObject *self, visitproc visit, void *arg)
{
    notify_object *n = (notify_object *)self;
    Py_VISIT(Py_TYPE(self)); /* instances of heap types own a reference to it */
    Py_VISIT(n->name);
    Py_VISIT(n->msg);
    return 0;
}

static int notify_clear(PyObject *self)
{
    notify_object *n = (notify_object *)self;
    Py_CLEAR(n->name);
    Py_CLEAR(n->msg);
    return 0;
}

static void notify_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    notify_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* A field as a new reference, "" while unset. */
static PyObject *field(notify_object *n, int which)
{
    PyObject *v = which ? n->msg : n->name;
    return v ? Py_NewRef(v) : PyUnicode_FromString("");
}

static PyObject *notify_get(PyObject *self, void *which)
{
    return field((notify_object *)self, which != NULL);
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

/* 1 when both fields are equal, 0 when not, -1 with an exception. */
static int fields_equal(notify_object *x, notify_object *y)
{
    int eq = 1;
    for (int which = 0; which < 2 && eq == 1; which++) {
        PyObject *a = field(x, which), *b = a ? field(y, which) : NULL;
        eq = b ? PyObject_RichCompareBool(a, b, Py_EQ) : -1;
        Py_XDECREF(a);
        Py_XDECREF(b);
    }
    return eq;
}

static PyObject *notify_richcompare(PyObject *a, PyObject *b, int op)
{
    pyte_state *st = pyte_state_of(Py_TYPE(a));
    if (!st)
        return NULL;
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, st->notify_type))
        Py_RETURN_NOTIMPLEMENTED;
    int eq = fields_equal((notify_object *)a, (notify_object *)b);
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

static PyType_Slot notify_slots[] = {
    {Py_tp_doc, (void *)notify_doc},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, notify_init},
    {Py_tp_traverse, notify_traverse},
    {Py_tp_clear, notify_clear},
    {Py_tp_dealloc, notify_dealloc},
    {Py_tp_repr, notify_repr},
    {Py_tp_richcompare, notify_richcompare},
    {Py_tp_getset, notify_getset},
    {0, NULL}};

PyType_Spec pyte_notify_spec = {
    .name = "mooncake.engine.TransferNotify",
    .basicsize = sizeof(notify_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = notify_slots,
};

static PyObject *decode(const char *s)
{
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "replace");
}

PyObject *pyte_notify_new(pyte_state *st, const char *name, const char *msg)
{
    PyTypeObject *tp = st->notify_type;
    notify_object *n = (notify_object *)tp->tp_alloc(tp, 0);
    if (!n)
        return NULL;
    n->name = decode(name);
    n->msg = n->name ? decode(msg) : NULL;
    if (!n->msg) {
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

int pyte_notify_strings(pyte_state *st, PyObject *notify, char **name, char **msg)
{
    *name = *msg = NULL;
    if (!PyObject_TypeCheck(notify, st->notify_type)) {
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
