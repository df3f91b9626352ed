/* engine_methods.c - TransferEngine methods other than transfers:
 * initialization, engine information, managed buffers, bytes I/O, memory
 * registration, topology, notifications and probes. */
#include "pyte.h"

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

PyDoc_STRVAR(initialize_doc,
    "initialize($self, /, local_hostname, metadata_server, protocol, device_name='')\n--\n\n"
    "Initializes the engine.  local_hostname is 'host[:port]' (in P2P mode the port\n"
    "is ignored and the segment name becomes 'host:<rpc port>'); metadata_server is\n"
    "'P2PHANDSHAKE', 'etcd://h:p', 'http://url' or a bare 'h:p' (etcd); protocol\n"
    "names the transport ('tcp', 'rdma': without a usable RDMA device 'rdma' falls\n"
    "back to 'tcp'); device_name is a comma separated NIC filter.\n"
    "Returns 0 on success, -1 on failure (see mooncake.engine.last_error()).");

static PyObject *m_initialize(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("local_hostname", "metadata_server", "protocol", "device_name");
    const char *host, *server, *proto, *device = "";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ssz|z:initialize", kwlist, &host, &server, &proto,
                                     &device))
        return NULL;
    return PyLong_FromLong(do_initialize(self, host, server, proto, device, NULL));
}

PyDoc_STRVAR(initialize_ext_doc,
    "initialize_ext($self, /, local_hostname, metadata_server, protocol, device_name,\n"
    "               metadata_type)\n--\n\n"
    "Like initialize(), with the metadata store named explicitly: metadata_type is\n"
    "'etcd', 'http', 'p2p', ... and applies when metadata_server has no '://'.\n"
    "Returns 0 on success, -1 on failure.");

static PyObject *m_initialize_ext(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("local_hostname", "metadata_server", "protocol", "device_name", "metadata_type");
    const char *host, *server, *proto, *device, *mtype;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sszzz:initialize_ext", kwlist, &host, &server,
                                     &proto, &device, &mtype))
        return NULL;
    return PyLong_FromLong(do_initialize(self, host, server, proto, device, mtype ? mtype : ""));
}

/* ---- engine information -------------------------------------------------------- */

static PyObject *m_get_rpc_port(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(te_engine_rpc_port(ENGINE(self)));
}

static PyObject *m_get_engine(PyObject *self, PyObject *unused)
{
    return pyte_inner_new(CORE(self));
}

static PyObject *m_get_engine_ptr(PyObject *self, PyObject *unused)
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

static PyObject *m_get_first_buffer_address(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_allocate_managed_buffer(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_free_managed_buffer(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_write_bytes_to_buffer(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_read_bytes_from_buffer(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_register_memory(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_unregister_memory(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_batch_register_memory(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_batch_unregister_memory(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_get_local_topology(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_get_notifies(PyObject *self, PyObject *unused)
{
    te_notify *v = NULL;
    size_t n = 0;
    PyObject *list = PyList_New(0);
    if (!list || te_notifies_drain(ENGINE(self), &v, &n))
        return list; /* like the original: an empty list when draining fails */
    for (size_t i = 0; i < n; i++) {
        PyObject *o = pyte_notify_new(v[i].name, v[i].msg);
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
static PyObject *m_get_metrics(PyObject *self, PyObject *unused)
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
static PyObject *m_get_segment_transport(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_send_probe(PyObject *self, PyObject *args, PyObject *kw)
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

static PyObject *m_warmup_efa_segment(PyObject *self, PyObject *args, PyObject *kw)
{
    KW("segment_name");
    const char *name;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s:warmup_efa_segment", kwlist, &name))
        return NULL;
    return PyLong_FromLong(0);
}

#define KWM(name, fn, doc) {name, (PyCFunction)(void (*)(void))fn, METH_VARARGS | METH_KEYWORDS, doc}
#define NOA(name, fn, doc) {name, fn, METH_NOARGS, doc}

PyMethodDef pyte_engine_methods[] = {
    KWM("initialize", m_initialize, initialize_doc),
    KWM("initialize_ext", m_initialize_ext, initialize_ext_doc),
    NOA("get_rpc_port", m_get_rpc_port,
        "get_rpc_port($self, /)\n--\n\n"
        "The port of the engine's RPC (handshake/metadata/notify) listener; in P2P mode\n"
        "peers address this engine as 'host:<this port>'.  Negative before initialize()."),
    NOA("get_engine", m_get_engine,
        "get_engine($self, /)\n--\n\n"
        "The inner engine (InnerTransferEngine): int(x) / x.address is the C\n"
        "te_engine pointer, kept alive as long as the returned object lives."),
    NOA("get_engine_ptr", m_get_engine_ptr,
        "get_engine_ptr($self, /)\n--\n\nThe C te_engine pointer as an int."),
    KWM("get_first_buffer_address", m_get_first_buffer_address,
        "get_first_buffer_address($self, /, segment_name)\n--\n\n"
        "Address of the first buffer (registration order) of a segment, this engine's\n"
        "own name included; 0 if the segment is unknown or has no buffer."),
    KWM("allocate_managed_buffer", m_allocate_managed_buffer,
        "allocate_managed_buffer($self, /, length)\n--\n\n"
        "Allocates registered memory from size classes 8 KiB << i (up to 256 MiB),\n"
        "carved from registered regions of MC_MANAGED_REGION_MB MiB (default 256);\n"
        "larger requests get their own registration.  Returns the address, or 0."),
    KWM("free_managed_buffer", m_free_managed_buffer,
        "free_managed_buffer($self, /, buffer_addr, length)\n--\n\n"
        "Returns a managed buffer; length must be the allocated length (same size class).\n"
        "Returns 0, -3 for an address that is not a live managed buffer, -1 for a length\n"
        "of another size class."),
    KWM("write_bytes_to_buffer", m_write_bytes_to_buffer,
        "write_bytes_to_buffer($self, /, dest_address, src_ptr, length)\n--\n\n"
        "Copies the first `length` bytes of src_ptr (a str, written as UTF-8, or any\n"
        "bytes-like object) to\n"
        "dest_address.  Returns 0.  Raises ValueError if length exceeds src_ptr or the\n"
        "destination is not inside memory registered or allocated through this engine."),
    KWM("read_bytes_from_buffer", m_read_bytes_from_buffer,
        "read_bytes_from_buffer($self, /, source_address, length)\n--\n\n"
        "Returns `length` bytes read at source_address.  Raises ValueError if the range\n"
        "is not inside memory registered or allocated through this engine."),
    KWM("register_memory", m_register_memory,
        "register_memory($self, /, buffer_addr, capacity, location='*')\n--\n\n"
        "Registers [buffer_addr, +capacity) for transfers and publishes it.  location is\n"
        "'cpu:N', 'cuda:N' or '*' (detect).  Returns 0, -1 for a zero length or NULL\n"
        "address, -7 if it overlaps a registered range, another negative code otherwise."),
    KWM("unregister_memory", m_unregister_memory,
        "unregister_memory($self, /, buffer_addr)\n--\n\n"
        "Unregisters the range starting at buffer_addr after transfers using it end.\n"
        "Returns 0, or -3 if no registered range starts there."),
    KWM("batch_register_memory", m_batch_register_memory,
        "batch_register_memory($self, /, buffer_addresses, capacities, location='*')\n--\n\n"
        "Registers several ranges, all or nothing, with one metadata publish.  Returns 0,\n"
        "-1 if the lists differ in length, or register_memory's codes."),
    KWM("batch_unregister_memory", m_batch_unregister_memory,
        "batch_unregister_memory($self, /, buffer_addresses)\n--\n\n"
        "Unregisters several ranges with one metadata publish.  Returns 0, or the first\n"
        "failure (-3 for an address that is not registered; the others are still removed)."),
    KWM("get_local_topology", m_get_local_topology,
        "get_local_topology($self, /, device_name=None)\n--\n\n"
        "The local NIC topology (priority matrix) as JSON text, filtered by a comma\n"
        "separated device list; '{}' when nothing can be discovered."),
    NOA("get_notifies", m_get_notifies,
        "get_notifies($self, /)\n--\n\n"
        "Removes and returns every notification received so far, oldest first, as a\n"
        "list of TransferNotify."),
    NOA("get_metrics", m_get_metrics,
        "get_metrics($self, /)\n--\n\n"
        "The engine's counters as a dict (an addition beyond the original API): bytes and\n"
        "requests per transport and per peer segment, failures by cause, retries,\n"
        "in-flight requests, registered bytes and a latency histogram (docs/metrics.md).\n"
        "Raises RuntimeError before initialize()."),
    KWM("get_segment_transport", m_get_segment_transport,
        "get_segment_transport($self, /, segment_name)\n--\n\n"
        "The name of the transport that carries requests to a target ('tcp', 'shm',\n"
        "'rdma', 'nvlink'; an addition beyond the original API): 'shm' for a target on\n"
        "this host unless MC_TE_SAME_HOST_TRANSPORT=0.  Raises RuntimeError when the\n"
        "target cannot be resolved or before initialize()."),
    KWM("send_probe", m_send_probe,
        "send_probe($self, /, peer_server_name)\n--\n\n"
        "Checks that a peer's RPC port answers.  Returns 0, -102 (ERR_SOCKET) when it\n"
        "cannot be connected to, -200 when a metadata server does not know the peer,\n"
        "or another negative code."),
    KWM("warmup_efa_segment", m_warmup_efa_segment,
        "warmup_efa_segment($self, /, segment_name)\n--\n\nNo EFA here: returns 0."),
    {0}};
