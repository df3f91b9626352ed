/* nvlink_copy.c - the progress thread, the only thread of ours that calls
 * CUDA for transfers.  Slices are grouped per GPU into flights; a flight is
 * first ordered after the default stream (an event on cudaStreamLegacy that
 * is waited for before any copy is queued, so a transfer that misses its
 * deadline is never queued late), then copied with cudaMemcpyAsync on a
 * non-blocking stream of that GPU and reported when its event completes.
 * The thread sleeps in the driver on a copy's event, or polls the order
 * events between sleeps that grow while nothing moves: it never spins. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "nvlink.h"

#define NEXT(s) (*(te_slice **)&(s)->transport_data[0])
#define RPTR(s) ((s)->transport_data[1]) /* the remote address as mapped here */
#define DEVNO(s) ((int)(intptr_t)(s)->transport_data[2])
#define BACKOFF_MIN_NS 4000
#define BACKOFF_MAX_NS 1000000

enum { FL_ORDER, FL_COPY, FL_DONE };

struct nvl_flight {
    nvl_flight *next;
    int dev, state;
    cudaEvent_t order, done;
    bool has_order, has_done, expired_logged;
    size_t n, left; /* left: slices not reported yet */
    te_slice *s[];  /* NULL once reported */
};

static void report(nvl_inst *in, nvl_flight *f, size_t i, int status)
{
    te_slice *s = f->s[i];
    if (!s)
        return;
    f->s[i] = NULL;
    f->left--;
    te_host_table->slice_done(in->host, s, status);
}

static void report_all(nvl_inst *in, nvl_flight *f, int status)
{
    for (size_t i = 0; i < f->n; i++)
        report(in, f, i, status);
}

/* ---- per-GPU streams and events (current device already set) ------------------ */

static int get_stream(nvl_inst *in, int dev, cudaStream_t *out)
{
    nvl_dev *d = &in->dev[dev];
    if (!d->has_stream) {
        cudaError_t err = nvl_cu.stream_create_with_flags(&d->stream, cudaStreamNonBlocking);
        if (err != cudaSuccess) {
            NVL_LOG(in, TE_LOG_ERROR, "cannot create a stream on GPU %d: %s", dev,
                    nvl_cuda_error(err));
            return TE_ERR_CONTEXT;
        }
        d->has_stream = true;
    }
    *out = d->stream;
    return 0;
}

static int get_event(nvl_inst *in, int dev, cudaEvent_t *ev)
{
    nvl_dev *d = &in->dev[dev];
    if (d->nevents) {
        *ev = d->events[--d->nevents];
        return 0;
    }
    cudaError_t err =
        nvl_cu.event_create_with_flags(ev, cudaEventBlockingSync | cudaEventDisableTiming);
    if (err != cudaSuccess) {
        NVL_LOG(in, TE_LOG_ERROR, "cannot create an event on GPU %d: %s", dev, nvl_cuda_error(err));
        return TE_ERR_CONTEXT;
    }
    return 0;
}

static void put_event(nvl_inst *in, int dev, cudaEvent_t ev)
{
    nvl_dev *d = &in->dev[dev];
    if (d->nevents == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        cudaEvent_t *n = realloc(d->events, cap * sizeof *n);
        if (!n) {
            nvl_cu.event_destroy(ev);
            return;
        }
        d->events = n;
        d->cap = cap;
    }
    d->events[d->nevents++] = ev;
}

static void free_flight(nvl_inst *in, nvl_flight *f)
{
    if (f->has_order)
        put_event(in, f->dev, f->order);
    if (f->has_done)
        put_event(in, f->dev, f->done);
    free(f);
}

/* ---- issuing -------------------------------------------------------------------- */

/* Checks the slice against the peer's buffer and maps it: 0, or a status. */
static int prepare(nvl_inst *in, te_slice *s)
{
    nvl_peer *p = s->peer;
    if (!p || s->remote_buffer < 0 || (size_t)s->remote_buffer >= p->nbufs)
        return TE_ERR_ADDRESS_NOT_REGISTERED;
    nvl_rbuf *b = &p->bufs[s->remote_buffer];
    uint64_t off = s->remote - b->base;
    if (s->remote < b->base || off > b->size || s->length > b->size - off)
        return TE_ERR_ADDRESS_NOT_REGISTERED;
    int local_dev = nvl_cuda_device_of(s->local);
    int rc = nvl_peer_map(in, p, b, local_dev);
    if (rc)
        return rc;
    int dev = local_dev >= 0 ? local_dev : b->map_dev;
    if (dev < 0 || dev >= NVL_MAX_DEVICES)
        return TE_ERR_DEVICE_NOT_FOUND;
    RPTR(s) = (char *)b->mapped + off;
    s->transport_data[2] = (void *)(intptr_t)dev;
    return 0;
}

/* Queues the flight's copies and the event that says they are done. */
static void issue(nvl_inst *in, nvl_flight *f)
{
    cudaStream_t st;
    cudaError_t err = nvl_cu.set_device(f->dev);
    if (err != cudaSuccess || get_stream(in, f->dev, &st) || get_event(in, f->dev, &f->done)) {
        report_all(in, f, TE_ERR_CONTEXT);
        f->state = FL_DONE;
        return;
    }
    f->has_done = true;
    for (size_t i = 0; i < f->n; i++) {
        te_slice *s = f->s[i];
        void *dst = s->opcode == TE_OP_WRITE ? RPTR(s) : s->local;
        const void *src = s->opcode == TE_OP_WRITE ? (const void *)s->local : RPTR(s);
        err = nvl_cu.memcpy_async(dst, src, s->length, cudaMemcpyDefault, st);
        if (err != cudaSuccess) {
            NVL_LOG(in, TE_LOG_WARN, "cudaMemcpyAsync of %llu bytes on GPU %d failed: %s",
                    (unsigned long long)s->length, f->dev, nvl_cuda_error(err));
            report(in, f, i, TE_ERR_CONTEXT);
        }
    }
    err = nvl_cu.event_record(f->done, st);
    if (err != cudaSuccess) { /* cannot watch them: wait, the copies are short */
        NVL_LOG(in, TE_LOG_WARN, "cudaEventRecord failed (%s): waiting for the stream",
                nvl_cuda_error(err));
        err = nvl_cu.stream_synchronize(st);
        report_all(in, f, err == cudaSuccess ? 0 : TE_ERR_CONTEXT);
        f->state = FL_DONE;
        return;
    }
    f->state = FL_COPY;
}

/* Orders the flight after work already queued on the default stream (and,
 * through it, on every blocking stream) of its GPU: see docs/gpu.md. */
static void start_flight(nvl_inst *in, nvl_flight *f)
{
    if (!in->order_default_stream) {
        issue(in, f);
        return;
    }
    cudaError_t err = nvl_cu.set_device(f->dev);
    if (err == cudaSuccess && get_event(in, f->dev, &f->order) == 0) {
        f->has_order = true;
        err = nvl_cu.event_record(f->order, cudaStreamLegacy);
    }
    if (err != cudaSuccess || !f->has_order) {
        NVL_LOG(in, TE_LOG_WARN, "cannot order a transfer after the default stream of GPU %d: %s",
                f->dev, err != cudaSuccess ? nvl_cuda_error(err) : "no event");
        report_all(in, f, TE_ERR_CONTEXT);
        f->state = FL_DONE;
        return;
    }
    f->state = FL_ORDER;
}

static void append_flight(nvl_inst *in, nvl_flight *f)
{
    f->next = NULL;
    if (in->flights_tail)
        in->flights_tail->next = f;
    else
        in->flights = f;
    in->flights_tail = f;
}

/* Turns newly submitted slices into one flight per GPU. */
static void intake(nvl_inst *in, te_slice *list)
{
    size_t count[NVL_MAX_DEVICES] = {0};
    te_slice *ok = NULL, **tail = &ok;
    while (list) {
        te_slice *s = list;
        list = NEXT(s);
        int rc = prepare(in, s);
        if (rc) {
            te_host_table->slice_done(in->host, s, rc);
            continue;
        }
        count[DEVNO(s)]++;
        NEXT(s) = NULL;
        *tail = s;
        tail = &NEXT(s);
    }
    for (int dev = 0; dev < NVL_MAX_DEVICES && ok; dev++) {
        if (!count[dev])
            continue;
        nvl_flight *f = calloc(1, sizeof *f + count[dev] * sizeof(te_slice *));
        te_slice **pp = &ok;
        while (*pp) {
            te_slice *s = *pp;
            if (DEVNO(s) != dev) {
                pp = &NEXT(s);
                continue;
            }
            *pp = NEXT(s);
            if (f)
                f->s[f->n++] = s;
            else
                te_host_table->slice_done(in->host, s, TE_ERR_MEMORY);
        }
        if (!f)
            continue;
        f->dev = dev;
        f->left = f->n;
        start_flight(in, f);
        if (f->state == FL_DONE)
            free_flight(in, f);
        else
            append_flight(in, f);
    }
}

/* ---- completion ----------------------------------------------------------------- */

/* Fails what is past its deadline.  Queued copies cannot be recalled: a
 * flight in FL_COPY stays until its event completes, only its slices go. */
static void expire(nvl_inst *in, nvl_flight *f, int64_t now)
{
    for (size_t i = 0; i < f->n; i++) {
        te_slice *s = f->s[i];
        if (!s || !s->deadline_ns || now < s->deadline_ns)
            continue;
        if (!f->expired_logged)
            NVL_LOG(in, TE_LOG_WARN, "%s", f->state == FL_ORDER
                        ? "transfer failed: the default stream did not reach it before its "
                          "deadline (a transfer issued from work ordered on a blocking stream "
                          "waits for itself; see MC_TE_CUDA_SYNC_DEFAULT_STREAM in docs/gpu.md)"
                        : "transfer failed: copies still running at the deadline");
        f->expired_logged = true;
        report(in, f, i, TE_ERR_TIMEOUT);
    }
}

/* Advances one flight; true if something completed or was issued. */
static bool poll_flight(nvl_inst *in, nvl_flight *f, int64_t now)
{
    if (f->state == FL_ORDER) {
        cudaError_t err = nvl_cu.event_query(f->order);
        if (err == cudaErrorNotReady) {
            expire(in, f, now);
            if (!f->left)
                f->state = FL_DONE; /* nothing was queued: nothing can land late */
            return false;
        }
        if (err != cudaSuccess) {
            NVL_LOG(in, TE_LOG_WARN, "waiting for the default stream: %s", nvl_cuda_error(err));
            report_all(in, f, TE_ERR_CONTEXT);
            f->state = FL_DONE;
            return true;
        }
        if (f->left)
            issue(in, f);
        else
            f->state = FL_DONE;
        return true;
    }
    if (f->state != FL_COPY)
        return false;
    cudaError_t err = nvl_cu.event_query(f->done);
    if (err == cudaErrorNotReady) {
        expire(in, f, now);
        return false;
    }
    if (err != cudaSuccess)
        NVL_LOG(in, TE_LOG_WARN, "copy on GPU %d failed: %s", f->dev, nvl_cuda_error(err));
    report_all(in, f, err == cudaSuccess ? 0 : TE_ERR_CONTEXT);
    f->state = FL_DONE;
    return true;
}

static bool poll_all(nvl_inst *in)
{
    bool moved = false;
    int64_t now = te_host_table->now_ns();
    nvl_flight **pp = &in->flights, *last = NULL;
    while (*pp) {
        nvl_flight *f = *pp;
        moved |= poll_flight(in, f, now);
        if (f->state == FL_DONE) {
            *pp = f->next;
            free_flight(in, f);
        } else {
            last = f;
            pp = &f->next;
        }
    }
    in->flights_tail = last;
    return moved;
}

static int64_t earliest_deadline(nvl_inst *in)
{
    int64_t d = 0;
    for (nvl_flight *f = in->flights; f; f = f->next)
        for (size_t i = 0; i < f->n; i++)
            if (f->s[i] && f->s[i]->deadline_ns && (!d || f->s[i]->deadline_ns < d))
                d = f->s[i]->deadline_ns;
    return d;
}

/* ---- the thread ----------------------------------------------------------------- */

static bool only_copies(const nvl_inst *in)
{
    for (const nvl_flight *f = in->flights; f; f = f->next)
        if (f->state != FL_COPY)
            return false;
    return true;
}

/* Sleeps until work arrives: with only copies in the air (they end on
 * their own) in the driver on the oldest one's blocking-sync event; while a
 * flight waits for the default stream, a poll with a backoff bounded by the
 * earliest deadline (the core's cuda_progress_wait does either). */
static void wait_for_work(nvl_inst *in)
{
    if (in->qhead || in->stop || (in->closing && !in->flights))
        return;
    if (!in->flights) {
        pthread_cond_wait(&in->cond, &in->lock);
        return;
    }
    void *ev = only_copies(in) ? (void *)in->flights->done : NULL;
    te_host_table->cuda_progress_wait(ev, &in->lock, &in->cond, in->backoff_ns,
                                      earliest_deadline(in));
}

static void release_peers(nvl_inst *in, nvl_peer *p)
{
    while (p) {
        nvl_peer *next = p->next_closing;
        nvl_peer_release(in, p);
        p = next;
    }
}

static void fail_list(nvl_inst *in, te_slice *s, int status)
{
    while (s) {
        te_slice *next = NEXT(s);
        te_host_table->slice_done(in->host, s, status);
        s = next;
    }
}

/* Shutdown: nothing new is queued; copies in the air are waited for. */
static void drain(nvl_inst *in)
{
    while (in->flights) {
        nvl_flight *f = in->flights;
        in->flights = f->next;
        if (f->state == FL_COPY) {
            cudaError_t err = nvl_cu.event_synchronize(f->done);
            report_all(in, f, err == cudaSuccess ? 0 : TE_ERR_CONTEXT);
        } else {
            report_all(in, f, TE_ERR_STATE);
        }
        free_flight(in, f);
    }
    in->flights_tail = NULL;
    for (int d = 0; d < NVL_MAX_DEVICES; d++) {
        nvl_dev *dv = &in->dev[d];
        if (dv->has_stream || dv->nevents)
            nvl_cu.set_device(d);
        for (size_t i = 0; i < dv->nevents; i++)
            nvl_cu.event_destroy(dv->events[i]);
        free(dv->events);
        if (dv->has_stream)
            nvl_cu.stream_destroy(dv->stream);
        memset(dv, 0, sizeof *dv);
    }
}

static void *progress_main(void *arg)
{
    nvl_inst *in = arg;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL); /* short sleeps mean short */
    in->backoff_ns = BACKOFF_MIN_NS;
    pthread_mutex_lock(&in->lock);
    for (;;) {
        wait_for_work(in);
        te_slice *list = in->qhead;
        in->qhead = in->qtail = NULL;
        nvl_peer *closing = in->flights ? NULL : in->closing; /* no copy may use them */
        if (closing)
            in->closing = NULL;
        bool stop = in->stop;
        pthread_mutex_unlock(&in->lock);
        release_peers(in, closing);
        if (stop) {
            fail_list(in, list, TE_ERR_STATE);
            drain(in);
            pthread_mutex_lock(&in->lock);
            closing = in->closing;
            in->closing = NULL;
            pthread_mutex_unlock(&in->lock);
            release_peers(in, closing);
            return NULL;
        }
        intake(in, list);
        bool moved = poll_all(in) || list;
        in->backoff_ns = moved ? BACKOFF_MIN_NS
                               : in->backoff_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS
                                                                     : in->backoff_ns * 2;
        pthread_mutex_lock(&in->lock);
    }
}

int nvl_copy_start(nvl_inst *in)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&in->lock, NULL);
    pthread_cond_init(&in->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&in->thread, NULL, progress_main, in) != 0) {
        pthread_mutex_destroy(&in->lock);
        pthread_cond_destroy(&in->cond);
        te_host_table->set_error("nvlink: cannot start the progress thread");
        return TE_ERR_MEMORY;
    }
    in->running = true;
    return 0;
}

void nvl_copy_stop(nvl_inst *in)
{
    if (!in->running)
        return;
    pthread_mutex_lock(&in->lock);
    in->stop = true;
    pthread_cond_signal(&in->cond);
    pthread_mutex_unlock(&in->lock);
    pthread_join(in->thread, NULL);
    in->running = false;
    pthread_mutex_destroy(&in->lock);
    pthread_cond_destroy(&in->cond);
}

int nvl_submit(void *inst, te_slice *const *slices, size_t count)
{
    nvl_inst *in = inst;
    if (count == 0)
        return 0;
    for (size_t i = 0; i + 1 < count; i++)
        NEXT(slices[i]) = slices[i + 1];
    NEXT(slices[count - 1]) = NULL;
    pthread_mutex_lock(&in->lock);
    if (in->stop) {
        pthread_mutex_unlock(&in->lock);
        return TE_ERR_STATE; /* none taken */
    }
    if (in->qtail)
        NEXT(in->qtail) = slices[0];
    else
        in->qhead = slices[0];
    in->qtail = slices[count - 1];
    pthread_cond_signal(&in->cond);
    pthread_mutex_unlock(&in->lock);
    return 0;
}
