/* transfer_methods.c - the transfer methods of TransferEngine: synchronous
 * (te_transfer_sync), asynchronous (batch ids) and status queries, with the
 * original binding's return codes.  The GIL is released while they run. */
#include "pyte.h"
#include "transfer_methods.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CORE(self) (((pyte_engine_object *)(self))->core)

/* Argument shapes: a fixed opcode, an opcode argument, opcode and notify. */
enum shape { FIXED, OPCODE, NOTIFY };

typedef struct call {
    const char *target;
    te_request one;
    te_request *reqs; /* &one, or PyMem_Raw memory */
    size_t n;
    int opcode;
    char *nname, *nmsg; /* notification, or NULL */
    const char *hint;   /* transport_hint, NULL or "" for none (borrowed from args) */
} call;

static void call_free(call *c)
{
    if (c->reqs != &c->one)
        PyMem_RawFree(c->reqs);
    PyMem_RawFree(c->nname);
    PyMem_RawFree(c->nmsg);
}

static int parse_notify(PyObject *self, PyObject *notify, call *c)
{
    if (!notify || notify == Py_None)
        return 0;
    pyte_state *st = pyte_state_of(Py_TYPE(self)); /* whose TransferNotify to accept */
    return st ? pyte_notify_strings(st, notify, &c->nname, &c->nmsg) : -1;
}

static int parse_single(PyObject *self, PyObject *args, PyObject *kw, enum shape shape,
                        const char *fname, call *c)
{
    static char *kw_fixed[] = {"target_hostname", "buffer", "peer_buffer_address", "length",
                               "transport_hint", NULL};
    static char *kw_notify[] = {"target_hostname", "buffer", "peer_buffer_address", "length",
                                "opcode", "notify", "transport_hint", NULL};
    char fmt[96];
    const char *hint = NULL;
    PyObject *notify = NULL;
    uint64_t buf, peer, len;
    int ok;
    memset(c, 0, sizeof *c);
    if (shape == FIXED) {
        snprintf(fmt, sizeof fmt, "sO&O&O&|z:%s", fname);
        ok = PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_fixed, &c->target, pyte_conv_u64, &buf,
                                         pyte_conv_u64, &peer, pyte_conv_u64, &len, &hint);
    } else {
        snprintf(fmt, sizeof fmt, "sO&O&O&O&|Oz:%s", fname);
        ok = PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_notify, &c->target, pyte_conv_u64,
                                         &buf, pyte_conv_u64, &peer, pyte_conv_u64, &len,
                                         pyte_conv_opcode, &c->opcode, &notify, &hint);
    }
    if (!ok || parse_notify(self, notify, c))
        return -1;
    c->hint = hint;
    c->one = (te_request){.opcode = c->opcode, .local = (void *)(uintptr_t)buf,
                          .remote = peer, .length = len};
    c->reqs = &c->one;
    c->n = 1;
    return 0;
}

static int build_requests(call *c, PyObject *bufs, PyObject *peers, PyObject *lens, int *mismatch)
{
    uint64_t *b = NULL, *p = NULL, *l = NULL;
    size_t nb = 0, np = 0, nl = 0;
    int rc = -1;
    if (pyte_u64_list(bufs, "buffers", &b, &nb) ||
        pyte_u64_list(peers, "peer_buffer_addresses", &p, &np) ||
        pyte_u64_list(lens, "lengths", &l, &nl))
        goto out;
    rc = 0;
    *mismatch = nb != np || nb != nl;
    if (*mismatch || nb == 0)
        goto out;
    c->reqs = PyMem_RawCalloc(nb, sizeof *c->reqs);
    if (!c->reqs) {
        c->reqs = &c->one;
        PyErr_NoMemory();
        rc = -1;
        goto out;
    }
    for (size_t i = 0; i < nb; i++)
        c->reqs[i] = (te_request){.opcode = c->opcode, .local = (void *)(uintptr_t)b[i],
                                  .remote = p[i], .length = l[i]};
    c->n = nb;
out:
    PyMem_RawFree(b);
    PyMem_RawFree(p);
    PyMem_RawFree(l);
    return rc;
}

/* Returns -1 with an exception, else 0 with *mismatch set when the lists
 * differ in length (the caller returns its failure code then). */
static int parse_batch(PyObject *self, PyObject *args, PyObject *kw, enum shape shape,
                       const char *fname, call *c, int *mismatch)
{
    static char *kw_fixed[] = {"target_hostname", "buffers", "peer_buffer_addresses", "lengths",
                               "transport_hint", NULL};
    static char *kw_opcode[] = {"target_hostname", "buffers", "peer_buffer_addresses", "lengths",
                                "opcode", "transport_hint", NULL};
    static char *kw_notify[] = {"target_hostname", "buffers", "peer_buffer_addresses", "lengths",
                                "opcode", "notify", "transport_hint", NULL};
    char fmt[96];
    const char *hint = NULL;
    PyObject *notify = NULL, *bufs, *peers, *lens;
    int ok;
    memset(c, 0, sizeof *c);
    c->reqs = &c->one;
    if (shape == FIXED) {
        snprintf(fmt, sizeof fmt, "sOOO|z:%s", fname);
        ok = PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_fixed, &c->target, &bufs, &peers, &lens,
                                         &hint);
    } else if (shape == OPCODE) {
        snprintf(fmt, sizeof fmt, "sOOOO&|z:%s", fname);
        ok = PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_opcode, &c->target, &bufs, &peers,
                                         &lens, pyte_conv_opcode, &c->opcode, &hint);
    } else {
        snprintf(fmt, sizeof fmt, "sOOOO&|Oz:%s", fname);
        ok = PyArg_ParseTupleAndKeywords(args, kw, fmt, kw_notify, &c->target, &bufs, &peers,
                                         &lens, pyte_conv_opcode, &c->opcode, &notify, &hint);
    }
    if (!ok || parse_notify(self, notify, c))
        return -1;
    c->hint = hint;
    return build_requests(c, bufs, peers, lens, mismatch);
}

int pyte_check_hint(pyte_core *core, const char *hint)
{
    if (!hint || !*hint || te_transport_hint_check(core->engine, hint) != TE_ERR_INVALID_ARGUMENT)
        return 0; /* an engine not initialized fails the transfer itself */
    PyErr_Format(PyExc_ValueError, "unknown transport_hint '%s': expected '', a loaded transport "
                 "or one of tcp, rdma, shm, nvlink", hint);
    return -1;
}

/* ---- running them (no GIL) -------------------------------------------------------- */

static int run_sync(pyte_core *core, call *c)
{
    te_segment_id id;
    if (pyte_segment(core, c->target, &id))
        return -1;
    if (c->n == 0)
        return 0;
    for (size_t i = 0; i < c->n; i++)
        c->reqs[i].target = id;
    if (te_transfer_sync_hint(core->engine, c->reqs, c->n, c->nname, c->nmsg, c->hint) == 0)
        return 0;
    pyte_segment_forget(core, c->target); /* re-open next time */
    return -1;
}

static uint64_t run_async(pyte_core *core, call *c)
{
    te_segment_id id;
    te_batch_id b;
    if (pyte_segment(core, c->target, &id) || c->n == 0 ||
        te_batch_allocate(core->engine, c->n, &b))
        return 0;
    for (size_t i = 0; i < c->n; i++)
        c->reqs[i].target = id;
    if ((!c->hint || !*c->hint || te_batch_set_transport_hint(core->engine, b, c->hint) == 0) &&
        te_submit(core->engine, b, c->reqs, c->n) == 0)
        return b;
    te_batch_free(core->engine, b);
    pyte_segment_forget(core, c->target);
    return 0;
}

/* parse_single or parse_batch, then the transport hint; on failure the call
 * is freed and an exception set. */
static int parse_checked(PyObject *self, PyObject *args, PyObject *kw, enum shape shape,
                         const char *fname, call *c, int *mismatch)
{
    int rc = mismatch ? parse_batch(self, args, kw, shape, fname, c, mismatch)
                      : parse_single(self, args, kw, shape, fname, c);
    if (rc || pyte_check_hint(CORE(self), c->hint)) {
        call_free(c);
        return -1;
    }
    return 0;
}

static PyObject *sync_single(PyObject *self, PyObject *args, PyObject *kw, enum shape shape,
                             int opcode, const char *fname)
{
    call c;
    int rc;
    if (parse_checked(self, args, kw, shape, fname, &c, NULL))
        return NULL;
    if (shape == FIXED)
        c.one.opcode = opcode;
    Py_BEGIN_ALLOW_THREADS
    rc = run_sync(CORE(self), &c);
    Py_END_ALLOW_THREADS
    call_free(&c);
    return PyLong_FromLong(rc);
}

/* A batch, synchronous (returns 0 or -1) or not (returns a batch id, 0 on
 * failure); lists of different lengths fail without an exception. */
static PyObject *run_batch(PyObject *self, PyObject *args, PyObject *kw, enum shape shape,
                           int opcode, const char *fname, bool async)
{
    call c;
    int mismatch = 0, rc = -1;
    uint64_t id = 0;
    if (parse_checked(self, args, kw, shape, fname, &c, &mismatch))
        return NULL;
    for (size_t i = 0; shape == FIXED && i < c.n; i++)
        c.reqs[i].opcode = opcode;
    if (!mismatch) {
        Py_BEGIN_ALLOW_THREADS
        if (async)
            id = run_async(CORE(self), &c);
        else
            rc = run_sync(CORE(self), &c);
        Py_END_ALLOW_THREADS
    }
    call_free(&c);
    return async ? PyLong_FromUnsignedLongLong(id) : PyLong_FromLong(rc);
}

/* ---- the methods ------------------------------------------------------------------- */

#define ARGS PyObject *self, PyObject *args, PyObject *kw

PyObject *pyte_m_transfer_sync_write(ARGS)
{
    return sync_single(self, args, kw, FIXED, TE_OP_WRITE, "transfer_sync_write");
}
PyObject *pyte_m_transfer_sync_read(ARGS)
{
    return sync_single(self, args, kw, FIXED, TE_OP_READ, "transfer_sync_read");
}
PyObject *pyte_m_transfer_sync(ARGS)
{
    return sync_single(self, args, kw, NOTIFY, 0, "transfer_sync");
}
PyObject *pyte_m_batch_transfer_sync_write(ARGS)
{
    return run_batch(self, args, kw, FIXED, TE_OP_WRITE, "batch_transfer_sync_write", false);
}
PyObject *pyte_m_batch_transfer_sync_read(ARGS)
{
    return run_batch(self, args, kw, FIXED, TE_OP_READ, "batch_transfer_sync_read", false);
}
PyObject *pyte_m_batch_transfer_sync(ARGS)
{
    return run_batch(self, args, kw, NOTIFY, 0, "batch_transfer_sync", false);
}
PyObject *pyte_m_batch_transfer_async_write(ARGS)
{
    return run_batch(self, args, kw, FIXED, TE_OP_WRITE, "batch_transfer_async_write", true);
}
PyObject *pyte_m_batch_transfer_async_read(ARGS)
{
    return run_batch(self, args, kw, FIXED, TE_OP_READ, "batch_transfer_async_read", true);
}
PyObject *pyte_m_batch_transfer_async(ARGS)
{
    return run_batch(self, args, kw, OPCODE, 0, "batch_transfer_async", true);
}

PyObject *pyte_m_transfer_submit_write(ARGS)
{
    call c;
    uint64_t id;
    if (parse_checked(self, args, kw, FIXED, "transfer_submit_write", &c, NULL))
        return NULL;
    c.one.opcode = TE_OP_WRITE;
    Py_BEGIN_ALLOW_THREADS
    id = run_async(CORE(self), &c);
    Py_END_ALLOW_THREADS
    call_free(&c);
    /* The documented failure value is negative (the original's -1 as int). */
    return id ? PyLong_FromUnsignedLongLong(id) : PyLong_FromLong(-1);
}

static int check_status(te_engine *e, uint64_t id)
{
    int st;
    if (te_task_status(e, id, 0, &st, NULL))
        return -1; /* unknown or already freed id */
    switch (st) {
    case TE_TRANSFER_COMPLETED:
        te_batch_free(e, id);
        return 1;
    case TE_TRANSFER_TIMEOUT:
        return -2; /* not freed, like the original: poll again or give up */
    case TE_TRANSFER_FAILED:
    case TE_TRANSFER_CANCELED:
    case TE_TRANSFER_INVALID:
        te_batch_free(e, id);
        return -1;
    default:
        return 0;
    }
}

PyObject *pyte_m_transfer_check_status(ARGS)
{
    static char *kwlist[] = {"batch_id", NULL};
    PyObject *o;
    int ok, rc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:transfer_check_status", kwlist, &o))
        return NULL;
    uint64_t id = pyte_batch_id_from(o, &ok);
    if (!ok)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = check_status(CORE(self)->engine, id);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Waits for each batch until it settles or its deadline passes and frees
 * them all, each once; -1 as soon as one fails (the rest are freed). */
static int wait_all(te_engine *e, uint64_t *ids, size_t n)
{
    qsort(ids, n, sizeof *ids, cmp_u64);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && ids[i] == ids[i - 1])
            continue;
        int st = TE_TRANSFER_FAILED;
        if (!failed && te_batch_wait(e, ids[i], -1, &st) != TE_ERR_NOT_FOUND &&
            st == TE_TRANSFER_COMPLETED) {
            te_batch_free(e, ids[i]);
            continue;
        }
        failed = 1;
        te_batch_free(e, ids[i]); /* unknown ids: TE_ERR_NOT_FOUND, harmless */
    }
    return failed ? -1 : 0;
}

PyObject *pyte_m_get_batch_transfer_status(ARGS)
{
    static char *kwlist[] = {"batch_ids", NULL};
    PyObject *o;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:get_batch_transfer_status", kwlist, &o))
        return NULL;
    PyObject *fast = PySequence_Fast(o, "batch_ids must be a list of batch ids");
    if (!fast)
        return NULL;
    size_t n = (size_t)PySequence_Fast_GET_SIZE(fast);
    uint64_t *ids = PyMem_RawMalloc((n ? n : 1) * sizeof *ids);
    int ok = ids != NULL, rc;
    for (size_t i = 0; ok && i < n; i++)
        ids[i] = pyte_batch_id_from(PySequence_Fast_GET_ITEM(fast, i), &ok);
    Py_DECREF(fast);
    if (!ok) {
        PyMem_RawFree(ids);
        return ids ? NULL : PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    rc = wait_all(CORE(self)->engine, ids, n);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(ids);
    return PyLong_FromLong(rc);
}
