/* args.c - argument conversion shared by the methods: unsigned 64-bit
 * integers through __index__ (addresses, lengths), opcodes, batch ids and
 * sequences of integers.  Bad values raise; nothing reaches the engine. */
#include "pyte.h"

#include <stdlib.h>

static int u64_of(PyObject *o, uint64_t *out)
{
    PyObject *i = PyNumber_Index(o);
    if (!i)
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(i); /* OverflowError if < 0 */
    Py_DECREF(i);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "expected an integer in [0, 2**64), got %R", o);
        return -1;
    }
    *out = v;
    return 0;
}

int pyte_conv_u64(PyObject *o, void *out)
{
    return u64_of(o, out) == 0;
}

int pyte_conv_opcode(PyObject *o, void *out)
{
    PyObject *i = PyNumber_Index(o);
    if (!i) {
        PyErr_Format(PyExc_TypeError, "opcode must be a TransferOpcode, got %R", o);
        return 0;
    }
    long v = PyLong_AsLong(i);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred())
        PyErr_Clear();
    if (v != TE_OP_READ && v != TE_OP_WRITE) {
        PyErr_Format(PyExc_ValueError, "opcode must be TransferOpcode.Read (0) or Write (1), got %R",
                     o);
        return 0;
    }
    *(int *)out = (int)v;
    return 1;
}

uint64_t pyte_batch_id_from(PyObject *o, int *ok)
{
    PyObject *i = PyNumber_Index(o);
    *ok = i != NULL;
    if (!i)
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(i);
    Py_DECREF(i);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative or huge: no batch has that id */
        v = 0;
    }
    return v;
}

int pyte_u64_list(PyObject *seq, const char *what, uint64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (PyUnicode_Check(seq) || PyBytes_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of integers", what);
        return -1;
    }
    PyObject *fast = PySequence_Fast(seq, "");
    if (!fast) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of integers, got %.100s", what,
                     Py_TYPE(seq)->tp_name);
        return -1;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    uint64_t *v = count ? PyMem_RawMalloc((size_t)count * sizeof *v) : NULL;
    if (count && !v) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t k = 0; k < count; k++) {
        if (u64_of(items[k], &v[k])) {
            PyMem_RawFree(v);
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    *out = v;
    *n = (size_t)count;
    return 0;
}
