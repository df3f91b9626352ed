/* engine_methods.c - TransferEngine methods other than transfers:
 * initialization, engine information, managed buffers, bytes I/O, memory
 * registration, topology, notifications and probes. */
#include "pyte.h"
#include "engine_methods.h"

#include <string.h>

#define CORE(self) (((pyte_engine_object *)(self))->core)
#define ENGINE(self) (CORE(self)->engine)
#define KW(...) static char *kwlist[] = {__VA_ARGS__, NULL}

/* Copies above this size run without the GIL. */
#define COPY_WITHOUT_GIL (64u << 10)

/* ---- initialization ------------------------------------------------------------ */

static int do_initialize(PyObject *self, const char *host, const char *server, const char *proto,
                         const char *device, const char *mtype)
{
    if (proto && !strcmp(proto, "xgmi"))
        return -1; /* the original refuses it too ("use 'hip'") */
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = te_engine_initialize(ENGINE(self), host, server, proto, device, mtype);
    Py_END_ALLOW_THREADS
    return rc ? -1 : 0;
}

PyObject *pyte_m_initialize(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("local_hostname", "metadata_server", "protocol", "device_name");
    const char *host, *server, *proto, *device = "";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ssz|z:initialize", kwlist, &host, &server, &proto,
                                     &device))
        return NULL;
    return PyLong_FromLong(do_initialize(self, host, server, proto, device, NULL));
}

PyObject *pyte_m_initialize_ext(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("local_hostname", "metadata_server", "protocol", "device_name", "metadata_type");
    const char *host, *server, *proto, *device, *mtype;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sszzz:initialize_ext", kwlist, &host, &server,
                                     &proto, &device, &mtype))
        return NULL;
    return PyLong_FromLong(do_initialize(self, host, server, proto, device, mtype ? mtype : ""));
}

/* ---- engine information -------------------------------------------------------- */

PyObject *pyte_m_get_rpc_port(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(te_engine_rpc_port(ENGINE(self)));
}

PyObject *pyte_m_get_engine(PyObject *self, PyObject *unused)
{
    pyte_state *st = pyte_state_of(Py_TYPE(self));
    return st ? pyte_inner_new(st, CORE(self)) : NULL;
}

PyObject *pyte_m_get_engine_ptr(PyObject *self, PyObject *unused)
{
    return PyLong_FromVoidPtr(ENGINE(self));
}

static uint64_t first_buffer(te_engine *e, const char *name)
{
    te_segment_id id;
    uint64_t addr = 0;
    if (te_segment_open(e, name, &id))
        return 0;
    if (te_segment_buffer(e, id, 0, &addr, NULL) == 0)
        return addr;
    /* A cached descriptor may predate the peer's registration: refetch once. */
    addr = 0;
    if (id != 0 && te_segment_close(e, id) == 0 && te_segment_buffer(e, id, 0, &addr, NULL))
        addr = 0;
    return addr;
}

PyObject *pyte_m_get_first_buffer_address(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("segment_name");
    const char *name;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s:get_first_buffer_address", kwlist, &name))
        return NULL;
    uint64_t addr;
    Py_BEGIN_ALLOW_THREADS
    addr = first_buffer(ENGINE(self), name);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(addr);
}

/* ---- managed buffers ------------------------------------------------------------ */

PyObject *pyte_m_allocate_managed_buffer(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("length");
    uint64_t length, addr;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&:allocate_managed_buffer", kwlist,
                                     pyte_conv_u64, &length))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    addr = pyte_managed_alloc(CORE(self), length);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(addr);
}

PyObject *pyte_m_free_managed_buffer(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("buffer_addr", "length");
    uint64_t addr, length;
    int rc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&O&:free_managed_buffer", kwlist, pyte_conv_u64,
                                     &addr, pyte_conv_u64, &length))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = pyte_managed_release(CORE(self), addr, length);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

/* ---- bytes I/O ------------------------------------------------------------------- */

static int check_range(PyObject *self, uint64_t addr, uint64_t len)
{
    if (len == 0 || pyte_ranges_contains(CORE(self)->ranges, addr, len))
        return 0;
    /* PyErr_Format knows no %llx before Python 3.12: format here. */
    char msg[160];
    snprintf(msg, sizeof msg,
             "[0x%llx, +%llu) is not inside memory registered or allocated through this "
             "TransferEngine", (unsigned long long)addr, (unsigned long long)len);
    PyErr_SetString(PyExc_ValueError, msg);
    return -1;
}

static void copy_bytes(void *dst, const void *src, size_t len)
{
    if (len < COPY_WITHOUT_GIL) {
        memcpy(dst, src, len);
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    memcpy(dst, src, len);
    Py_END_ALLOW_THREADS
}

PyObject *pyte_m_write_bytes_to_buffer(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("dest_address", "src_ptr", "length");
    uint64_t dest, length;
    Py_buffer src;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&s*O&:write_bytes_to_buffer", kwlist,
                                     pyte_conv_u64, &dest, &src, pyte_conv_u64, &length))
        return NULL;
    PyObject *result = NULL;
    if (length > (uint64_t)src.len)
        PyErr_Format(PyExc_ValueError, "length %llu exceeds the %zd bytes of src_ptr",
                     (unsigned long long)length, src.len);
    else if (check_range(self, dest, length) == 0) {
        copy_bytes((void *)(uintptr_t)dest, src.buf, (size_t)length);
        result = PyLong_FromLong(0);
    }
    PyBuffer_Release(&src);
    return result;
}

PyObject *pyte_m_read_bytes_from_buffer(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("source_address", "length");
    uint64_t src, length;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&O&:read_bytes_from_buffer", kwlist,
                                     pyte_conv_u64, &src, pyte_conv_u64, &length))
        return NULL;
    if (length > PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "length is too large");
        return NULL;
    }
    if (check_range(self, src, length) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
    if (out)
        copy_bytes(PyBytes_AS_STRING(out), (const void *)(uintptr_t)src, (size_t)length);
    return out;
}

/* ---- registration ---------------------------------------------------------------- */

PyObject *pyte_m_register_memory(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("buffer_addr", "capacity", "location");
    uint64_t addr, len;
    const char *location = "*";
    int rc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&O&|s:register_memory", kwlist, pyte_conv_u64,
                                     &addr, pyte_conv_u64, &len, &location))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = pyte_register(CORE(self), addr, len, location);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

PyObject *pyte_m_unregister_memory(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("buffer_addr");
    uint64_t addr;
    int rc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&:unregister_memory", kwlist, pyte_conv_u64,
                                     &addr))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = pyte_unregister(CORE(self), addr);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

PyObject *pyte_m_batch_register_memory(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("buffer_addresses", "capacities", "location");
    PyObject *a, *c;
    const char *location = "*";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|s:batch_register_memory", kwlist, &a, &c,
                                     &location))
        return NULL;
    uint64_t *addrs = NULL, *lens = NULL;
    size_t na, nc;
    if (pyte_u64_list(a, "buffer_addresses", &addrs, &na) ||
        pyte_u64_list(c, "capacities", &lens, &nc)) {
        PyMem_RawFree(addrs);
        return NULL;
    }
    int rc = TE_ERR_INVALID_ARGUMENT;
    if (na == nc) {
        Py_BEGIN_ALLOW_THREADS
        rc = pyte_register_batch(CORE(self), addrs, lens, na, location);
        Py_END_ALLOW_THREADS
    }
    PyMem_RawFree(addrs);
    PyMem_RawFree(lens);
    return PyLong_FromLong(rc);
}

PyObject *pyte_m_batch_unregister_memory(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("buffer_addresses");
    PyObject *a;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:batch_unregister_memory", kwlist, &a))
        return NULL;
    uint64_t *addrs;
    size_t n;
    int rc;
    if (pyte_u64_list(a, "buffer_addresses", &addrs, &n))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = pyte_unregister_batch(CORE(self), addrs, n);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(addrs);
    return PyLong_FromLong(rc);
}

/* ---- topology, notifications, probes ----------------------------------------------- */

PyObject *pyte_m_get_local_topology(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("device_name");
    const char *filter = NULL;
    char *json = NULL;
    int rc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|z:get_local_topology", kwlist, &filter))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = te_get_local_topology(filter, &json);
    Py_END_ALLOW_THREADS
    PyObject *out = PyUnicode_FromString(rc == 0 && json ? json : "{}");
    te_free(json);
    return out;
}

PyObject *pyte_m_get_notifies(PyObject *self, PyObject *unused)
{
    te_notify *v = NULL;
    size_t n = 0;
    pyte_state *st = pyte_state_of(Py_TYPE(self));
    PyObject *list = st ? PyList_New(0) : NULL;
    if (!list || te_notifies_drain(ENGINE(self), &v, &n))
        return list; /* like the original: an empty list when draining fails */
    for (size_t i = 0; i < n; i++) {
        PyObject *o = pyte_notify_new(st, v[i].name, v[i].msg);
        if (!o || PyList_Append(list, o) < 0) {
            Py_XDECREF(o);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(o);
    }
    te_notifies_free(v, n);
    return list;
}

/* An addition beyond the original API: the engine's counters (docs/metrics.md). */
PyObject *pyte_m_get_metrics(PyObject *self, PyObject *unused)
{
    char *text = NULL;
    int rc = te_get_metrics(ENGINE(self), &text);
    if (rc) {
        PyErr_Format(PyExc_RuntimeError, "get_metrics failed: %s (%d)", te_last_error(), rc);
        return NULL;
    }
    PyObject *json = PyImport_ImportModule("json");
    PyObject *out = json ? PyObject_CallMethod(json, "loads", "s", text) : NULL;
    Py_XDECREF(json);
    te_free(text);
    return out;
}

/* An addition beyond the original API: which transport serves a target. */
PyObject *pyte_m_get_segment_transport(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("segment_name");
    const char *name, *transport = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s:get_segment_transport", kwlist, &name))
        return NULL;
    int rc;
    te_segment_id id;
    Py_BEGIN_ALLOW_THREADS
    rc = te_segment_open(ENGINE(self), name, &id);
    if (!rc)
        rc = te_segment_transport(ENGINE(self), id, &transport);
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_Format(PyExc_RuntimeError, "get_segment_transport(%s) failed: %s (%d)", name,
                     te_last_error(), rc);
        return NULL;
    }
    return PyUnicode_FromString(transport);
}

PyObject *pyte_m_send_probe(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("peer_server_name");
    const char *peer;
    int rc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s:send_probe", kwlist, &peer))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = te_probe(ENGINE(self), peer);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

PyObject *pyte_m_warmup_efa_segment(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("segment_name");
    const char *name;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s:warmup_efa_segment", kwlist, &name))
        return NULL;
    return PyLong_FromLong(0);
}
