/*
 * loopcopy.c - an example transport plugin built outside the engine's source
 * tree: it moves bytes between buffers of one engine (it reaches only the
 * engine's own segment) on a worker thread, the way a NIC driver completes
 * work asynchronously.  See docs/plugin-abi.md for the contract it follows.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <te/plugin.h>

typedef struct loopcopy {
    te_host *host; /* this engine's context, passed back on every host call */
    pthread_t worker;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    te_slice *head, *tail; /* queued slices, linked through transport_data[0] */
    int stop;
} loopcopy;

#define NEXT(s) ((s)->transport_data[0])

/* ---- the data path ------------------------------------------------------- */

/* Copies one slice.  The target range is pinned so that it cannot be
 * unregistered while we copy into or out of it. */
static int copy_slice(loopcopy *lc, te_slice *s)
{
    if (te_host_table->now_ns() > s->deadline_ns)
        return TE_ERR_TIMEOUT;
    void *pin;
    int rc = te_host_table->pin_range(lc->host, s->remote, s->length, &pin);
    if (rc)
        return rc;
    void *remote = (void *)(uintptr_t)s->remote;
    if (s->opcode == TE_OP_WRITE)
        memmove(remote, s->local, s->length);
    else
        memmove(s->local, remote, s->length);
    te_host_table->unpin_range(lc->host, pin);
    return 0;
}

/* Takes the whole queue, or NULL once stopped and drained. */
static te_slice *take_queue(loopcopy *lc)
{
    pthread_mutex_lock(&lc->lock);
    while (!lc->head && !lc->stop)
        pthread_cond_wait(&lc->wake, &lc->lock);
    te_slice *list = lc->head;
    lc->head = lc->tail = NULL;
    pthread_mutex_unlock(&lc->lock);
    return list;
}

/* Reports slices done without holding our lock: slice_done may call back
 * into the plugin (peer_close) on this thread.  A reported slice belongs to
 * the core again, so its successor is read first. */
static void finish_list(loopcopy *lc, te_slice *s, int forced_status)
{
    while (s) {
        te_slice *next = NEXT(s);
        int rc = forced_status ? forced_status : copy_slice(lc, s);
        te_host_table->slice_done(lc->host, s, rc);
        s = next;
    }
}

static void *worker_main(void *arg)
{
    loopcopy *lc = arg;
    te_slice *list;
    while ((list = take_queue(lc)) != NULL)
        finish_list(lc, list, 0);
    return NULL;
}

/* ---- operations ---------------------------------------------------------- */

static int lc_create(te_host *host, const te_transport_params *params, void **inst)
{
    loopcopy *lc = calloc(1, sizeof *lc);
    if (!lc)
        return TE_ERR_MEMORY;
    lc->host = host;
    pthread_mutex_init(&lc->lock, NULL);
    pthread_cond_init(&lc->wake, NULL);
    if (pthread_create(&lc->worker, NULL, worker_main, lc) != 0) {
        te_host_table->set_error("loopcopy: cannot start the worker thread");
        pthread_mutex_destroy(&lc->lock);
        pthread_cond_destroy(&lc->wake);
        free(lc);
        return TE_ERR_MEMORY;
    }
    te_host_table->log(host, TE_LOG_INFO, "loopcopy", "ready for segment %s", params->segment_name);
    *inst = lc;
    return 0;
}

/* Stops the worker; anything still queued fails (the core normally drains
 * transfers before it destroys a transport). */
static void lc_destroy(void *inst)
{
    loopcopy *lc = inst;
    pthread_mutex_lock(&lc->lock);
    lc->stop = 1;
    te_slice *left = lc->head;
    lc->head = lc->tail = NULL;
    pthread_cond_signal(&lc->wake);
    pthread_mutex_unlock(&lc->lock);
    pthread_join(lc->worker, NULL);
    finish_list(lc, left, TE_ERR_PEER_CLOSED);
    pthread_mutex_destroy(&lc->lock);
    pthread_cond_destroy(&lc->wake);
    free(lc);
}

/* Only the engine's own segment is reachable; declining any other lets the
 * core try its next transport. */
static int lc_peer_open(void *inst, const te_peer_info *peer, void **handle)
{
    loopcopy *lc = inst;
    if (!peer->segment_name || strcmp(peer->segment_name, te_host_table->segment_name(lc->host)) != 0)
        return TE_ERR_NOT_SUPPORTED_TRANSPORT;
    *handle = lc; /* no per-peer state: the handle is only round-tripped */
    return 0;
}

/* Queues the slices and returns at once; the worker reports each one. */
static int lc_submit(void *inst, te_slice *const *slices, size_t count)
{
    loopcopy *lc = inst;
    if (count == 0)
        return 0;
    for (size_t i = 0; i + 1 < count; i++)
        NEXT(slices[i]) = slices[i + 1];
    NEXT(slices[count - 1]) = NULL;
    pthread_mutex_lock(&lc->lock);
    if (lc->tail)
        NEXT(lc->tail) = slices[0];
    else
        lc->head = slices[0];
    lc->tail = slices[count - 1];
    pthread_cond_signal(&lc->wake);
    pthread_mutex_unlock(&lc->lock);
    return 0;
}

/* Operations left NULL (describe, register_memory, peer_close, ctrl, ...)
 * are filled in by the core with stubs that do nothing or say "not
 * implemented". */
static const te_transport_ops ops = {
    .size = sizeof ops,
    .caps = 0,               /* local only: no TE_TRANSPORT_CAP_REMOTE */
    .slice_size = 1u << 20, /* the core cuts requests into 1 MiB slices */
    .create = lc_create,
    .destroy = lc_destroy,
    .peer_open = lc_peer_open,
    .submit = lc_submit,
};

/* The descriptor, te_plugin_init and te_host_table (the core's host table,
 * the same for every engine of the process).  now_ns is the newest host
 * service this plugin calls: a core whose table ends before it is refused,
 * with a log line that names it.  The file is libte_loopcopy.so; users pick
 * it as protocol "loopcopy". */
TE_PLUGIN_DEFINE(TE_PLUGIN_TRANSPORT, "loopcopy", "1.0.0", &ops, now_ns)
