/* cuda.c - the *_on_cuda methods: the transfer runs in a CUDA host function
 * (cudaLaunchHostFunc) once the stream reaches it.  libcudart is the
 * engine's (te_cuda_runtime_symbol), opened on demand, never linked.  A failed transfer is
 * recorded on the engine (get_cuda_transfer_errors) instead of killing the
 * process. */
#include "pyte.h"
#include "cuda_methods.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CORE(self) (((pyte_engine_object *)(self))->core)

typedef int cuda_error;
typedef void (*cuda_host_fn)(void *);

static cuda_error (*launch_host_func)(void *stream, cuda_host_fn fn, void *arg);
static const char *(*error_string)(cuda_error err);
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_why[256]; /* why launch_host_func is NULL */

/* MC_CUDART_LIBRARY set to anything that cannot load disables CUDA. */
static void load_cudart(void)
{
    if (te_cuda_runtime_symbol("cudaLaunchHostFunc", &launch_host_func, load_why,
                               sizeof load_why) ||
        te_cuda_runtime_symbol("cudaGetErrorString", &error_string, load_why, sizeof load_why))
        launch_host_func = NULL;
}

int pyte_cuda_available(void)
{
    pthread_once(&load_once, load_cudart);
    return launch_host_func != NULL;
}

/* ---- the host function ----------------------------------------------------------- */

typedef struct cuda_job {
    pyte_core *core;
    size_t n;
    char *target;
    char hint[64]; /* transport_hint, "" for none */
    te_request reqs[];
} cuda_job;

static void run_on_stream(void *arg)
{
    cuda_job *job = arg;
    int rc = te_transfer_sync_hint(job->core->engine, job->reqs, job->n, NULL, NULL, job->hint);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg,
                 "transfer on a CUDA stream (%s of %zu request(s) with %s) failed: %d (%s): %s; "
                 "the destination is unmodified or partially written",
                 job->reqs[0].opcode == TE_OP_WRITE ? "write" : "read", job->n, job->target, rc,
                 te_strerror(rc), te_last_error());
        pyte_core_cuda_failed(job->core, msg);
        pyte_segment_forget(job->core, job->target);
    }
    pyte_core_unref(job->core);
    free(job->target);
    free(job);
}

/* ---- enqueueing ------------------------------------------------------------------ */

static int raise_pending(pyte_core *c)
{
    pthread_mutex_lock(&c->cuda_lock);
    size_t total = c->cuda_error_total;
    PyObject *last = NULL;
    if (total && c->cuda_error_count)
        last = PyUnicode_DecodeUTF8(c->cuda_errors[c->cuda_error_count - 1],
                                    (Py_ssize_t)strlen(c->cuda_errors[c->cuda_error_count - 1]),
                                    "replace");
    pthread_mutex_unlock(&c->cuda_lock);
    if (!total)
        return 0;
    PyErr_Format(PyExc_RuntimeError,
                 "%zu earlier transfer(s) on a CUDA stream failed (last: %S); read them with "
                 "get_cuda_transfer_errors() before enqueueing more",
                 total, last ? last : Py_None);
    Py_XDECREF(last);
    return -1;
}

static int enqueue(pyte_core *c, const char *target, const char *hint, const te_request *reqs,
                   size_t n, uint64_t stream, char *why, size_t why_len)
{
    te_segment_id id;
    if (pyte_segment(c, target, &id)) {
        snprintf(why, why_len, "Failed to open segment %s: %s", target, te_last_error());
        return -1;
    }
    cuda_job *job = malloc(sizeof *job + n * sizeof job->reqs[0]);
    char *t = strdup(target);
    if (!job || !t) {
        free(job);
        free(t);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    job->core = c;
    job->n = n;
    job->target = t;
    snprintf(job->hint, sizeof job->hint, "%s", hint ? hint : "");
    for (size_t i = 0; i < n; i++) {
        job->reqs[i] = reqs[i];
        job->reqs[i].target = id;
    }
    pyte_core_ref(c);
    cuda_error err = launch_host_func((void *)(uintptr_t)stream, run_on_stream, job);
    if (err) { /* the job never runs */
        snprintf(why, why_len, "cudaLaunchHostFunc failed: %s", error_string(err));
        pyte_core_unref(c);
        free(t);
        free(job);
        return -1;
    }
    return 0;
}

static PyObject *on_cuda(PyObject *self, const char *fname, const char *target, const char *hint,
                         te_request *reqs, size_t n, uint64_t stream)
{
    pyte_core *c = CORE(self);
    char why[1024];
    int rc;
    if (raise_pending(c) || pyte_check_hint(c, hint))
        return NULL;
    if (hint && strlen(hint) >= 64) { /* longer than any transport name */
        PyErr_Format(PyExc_ValueError, "%s: transport_hint too long", fname);
        return NULL;
    }
    if (!pyte_cuda_available()) {
        PyErr_Format(PyExc_RuntimeError, "%s: CUDA runtime not available: %s", fname, load_why);
        return NULL;
    }
    if (n == 0)
        Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS
    rc = enqueue(c, target, hint, reqs, n, stream, why, sizeof why);
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_Format(PyExc_RuntimeError, "%s: %s", fname, why);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *single(PyObject *self, PyObject *args, PyObject *kw, int opcode,
                        const char *fname)
{
    static char *kwlist[] = {"target_hostname", "buffer", "peer_buffer_address", "length",
                             "stream_ptr", "transport_hint", NULL};
    const char *target, *hint = NULL;
    uint64_t buf, peer, len, stream = 0;
    char fmt[80];
    snprintf(fmt, sizeof fmt, "sO&O&O&|O&z:%s", fname);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &target, pyte_conv_u64, &buf,
                                     pyte_conv_u64, &peer, pyte_conv_u64, &len, pyte_conv_u64,
                                     &stream, &hint))
        return NULL;
    te_request r = {.opcode = opcode, .local = (void *)(uintptr_t)buf, .remote = peer,
                    .length = len};
    return on_cuda(self, fname, target, hint, &r, 1, stream);
}

static PyObject *batch(PyObject *self, PyObject *args, PyObject *kw, int opcode, const char *fname)
{
    static char *kwlist[] = {"target_hostname", "buffers", "peer_buffer_addresses", "lengths",
                             "stream_ptr", "transport_hint", NULL};
    const char *target, *hint = NULL;
    PyObject *ob, *op, *ol, *out = NULL;
    uint64_t stream = 0, *b = NULL, *p = NULL, *l = NULL;
    te_request *reqs = NULL;
    size_t nb = 0, np = 0, nl = 0;
    char fmt[80];
    snprintf(fmt, sizeof fmt, "sOOO|O&z:%s", fname);
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &target, &ob, &op, &ol, pyte_conv_u64,
                                     &stream, &hint))
        return NULL;
    if (pyte_u64_list(ob, "buffers", &b, &nb) ||
        pyte_u64_list(op, "peer_buffer_addresses", &p, &np) ||
        pyte_u64_list(ol, "lengths", &l, &nl))
        goto out;
    if (nb != np || nb != nl) {
        PyErr_SetString(PyExc_RuntimeError,
                        "buffers, peer_buffer_addresses and lengths have different size");
        goto out;
    }
    reqs = PyMem_RawCalloc(nb ? nb : 1, sizeof *reqs);
    if (!reqs) {
        PyErr_NoMemory();
        goto out;
    }
    for (size_t i = 0; i < nb; i++)
        reqs[i] = (te_request){.opcode = opcode, .local = (void *)(uintptr_t)b[i],
                               .remote = p[i], .length = l[i]};
    out = on_cuda(self, fname, target, hint, reqs, nb, stream);
out:
    PyMem_RawFree(reqs);
    PyMem_RawFree(b);
    PyMem_RawFree(p);
    PyMem_RawFree(l);
    return out;
}

#define ARGS PyObject *self, PyObject *args, PyObject *kw

PyObject *pyte_m_transfer_write_on_cuda(ARGS)
{
    return single(self, args, kw, TE_OP_WRITE, "transfer_write_on_cuda");
}
PyObject *pyte_m_transfer_read_on_cuda(ARGS)
{
    return single(self, args, kw, TE_OP_READ, "transfer_read_on_cuda");
}
PyObject *pyte_m_batch_transfer_write_on_cuda(ARGS)
{
    return batch(self, args, kw, TE_OP_WRITE, "batch_transfer_write_on_cuda");
}
PyObject *pyte_m_batch_transfer_read_on_cuda(ARGS)
{
    return batch(self, args, kw, TE_OP_READ, "batch_transfer_read_on_cuda");
}

PyObject *pyte_m_get_cuda_transfer_errors(PyObject *self, PyObject *unused)
{
    pyte_core *c = CORE(self);
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    pthread_mutex_lock(&c->cuda_lock);
    size_t kept = c->cuda_error_count, total = c->cuda_error_total;
    char **msgs = c->cuda_errors;
    c->cuda_errors = NULL;
    c->cuda_error_count = c->cuda_error_total = 0;
    pthread_mutex_unlock(&c->cuda_lock);
    for (size_t i = 0; i < kept; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(msgs[i], (Py_ssize_t)strlen(msgs[i]), "replace");
        if (list && (!s || PyList_Append(list, s) < 0))
            Py_CLEAR(list);
        Py_XDECREF(s);
        free(msgs[i]);
    }
    free(msgs);
    if (list && total > kept) {
        PyObject *s = PyUnicode_FromFormat("... and %zu more failure(s) not recorded", total - kept);
        if (!s || PyList_Append(list, s) < 0)
            Py_CLEAR(list);
        Py_XDECREF(s);
    }
    return list;
}
