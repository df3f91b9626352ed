/* submit.c - from requests to slices in flight: validate, resolve targets,
 * plan each request (remote buffer, local pin, the transports that may carry
 * it), cut slices for the first of them, hand runs of slices to each
 * transport; and failover, which moves a slice that failed for a transport
 * reason to the next candidate from the core's failover thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "clock.h"
#include "log.h"

/* What one request needs before its task exists. */
typedef struct plan {
    te_segment *seg;
    te_region *pin;
    int buf;
    int status; /* non-zero: the task fails at once, why in `why` */
    char why[256];
    te_route route;
    size_t slices;
} plan;

enum { SMALL = 8 }; /* the common synchronous case uses the stack */

/* ---- steps ------------------------------------------------------------------ */

static int validate(te_engine *e, const te_request *reqs, size_t n)
{
    if (!e || (!reqs && n))
        return te_fail(TE_ERR_INVALID_ARGUMENT, "submit: NULL argument");
    if (!e->initialized)
        return te_fail(TE_ERR_STATE, "submit: engine not initialized");
    for (size_t i = 0; i < n; i++) {
        const te_request *r = &reqs[i];
        if ((r->opcode != TE_OP_READ && r->opcode != TE_OP_WRITE) || !r->local ||
            r->length == 0 || r->target < 0 ||
            (uintptr_t)r->local + r->length < (uintptr_t)r->local ||
            r->remote + r->length < r->remote)
            return te_fail(TE_ERR_INVALID_ARGUMENT,
                           "submit: request %zu is invalid (opcode %d, local %p, length %llu)",
                           i, r->opcode, r->local, (unsigned long long)r->length);
    }
    return 0;
}

/* Every target first, so that a failure takes nothing; a run of requests
 * to one target takes its references in one atomic add. */
static int resolve_targets(te_engine *e, const te_request *reqs, size_t n, plan *p)
{
    for (size_t i = 0; i < n;) {
        int rc = te_segment_get(e, reqs[i].target, false, &p[i].seg);
        if (rc)
            return rc;
        size_t j = i + 1;
        for (; j < n && reqs[j].target == reqs[i].target; j++)
            p[j].seg = p[i].seg;
        if (j > i + 1)
            atomic_fetch_add(&p[i].seg->refs, (int)(j - i - 1));
        i = j;
    }
    return 0;
}

static void plan_fail(plan *p, int status)
{
    p->status = status;
    snprintf(p->why, sizeof p->why, "%s", te_last_error());
}

/* The remote buffer (refetching a descriptor that may predate a
 * registration once), the local pin and the candidate transports. */
static void plan_one(te_engine *e, const te_request *r, int hint, const char *hint_name,
                     plan *p)
{
    p->buf = te_segdesc_find(p->seg->desc, r->remote, r->length);
    te_segment *fresh;
    if (p->buf < 0 && te_segment_get(e, r->target, true, &fresh) == 0) {
        te_segment_put(p->seg);
        p->seg = fresh;
        p->buf = te_segdesc_find(p->seg->desc, r->remote, r->length);
    }
    if (p->buf < 0)
        return plan_fail(p, te_fail(TE_ERR_ADDRESS_NOT_REGISTERED,
                                    "remote range 0x%llx+%llu is not inside a buffer of segment %s",
                                    (unsigned long long)r->remote, (unsigned long long)r->length,
                                    p->seg->desc->name));
    if (hint == TE_HINT_NOT_LOADED)
        return plan_fail(p, te_fail(TE_ERR_NOT_SUPPORTED_TRANSPORT,
                                    "transport hint '%s': this engine has not loaded it",
                                    hint_name));
    bool remote_device = p->seg->desc->buffers_in_order[p->buf].device != 0;
    int rc = te_route_for(e, p->seg, p->pin, r->local, remote_device, hint, &p->route);
    if (rc)
        return plan_fail(p, rc);
    const te_transport *tr = &e->transports[p->route.order[0]];
    uint64_t ss = tr->slice_size;
    p->slices = ss ? (r->length + ss - 1) / ss : 1;
}

static void plans_release(te_engine *e, plan *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i].pin)
            te_memreg_unpin(&e->memreg, p[i].pin);
        if (p[i].seg)
            te_segment_put(p[i].seg);
        p[i].pin = NULL;
        p[i].seg = NULL;
    }
}

/* Takes n task slots of the batch (and its notification), or nothing. */
static int reserve(te_batch *b, size_t n, const char *nname, const char *nmsg, te_segment *nseg,
                   slice_chunk *chunk, int64_t deadline, size_t *base)
{
    pthread_mutex_lock(&b->lock);
    int rc = 0;
    if (b->ntasks + n > b->capacity)
        rc = te_fail(TE_ERR_TOO_MANY_REQUESTS, "submit: %zu + %zu requests exceed capacity %zu",
                     b->ntasks, n, b->capacity);
    else if (b->notify_name)
        rc = te_fail(TE_ERR_INVALID_ARGUMENT, "submit: batch already ends with a notification");
    if (rc) {
        pthread_mutex_unlock(&b->lock);
        return rc;
    }
    if (deadline > atomic_load(&b->deadline_ns))
        atomic_store(&b->deadline_ns, deadline);
    if (nname) {
        b->notify_name = strdup(nname);
        b->notify_msg = strdup(nmsg ? nmsg : "");
        b->notify_seg = nseg;
        atomic_fetch_add(&nseg->refs, 1);
        atomic_fetch_add(&b->settle_left, 1);
    }
    *base = b->ntasks;
    b->ntasks += n;
    atomic_fetch_add_explicit(&b->engine->metrics.inflight, (int64_t)n, memory_order_relaxed);
    atomic_fetch_add(&b->tasks_left, (int)n);
    atomic_fetch_add(&b->settle_left, (int)n);
    atomic_fetch_add(&b->refs, (int)n);
    chunk->next = b->chunks;
    b->chunks = chunk;
    pthread_mutex_unlock(&b->lock);
    return 0;
}

/* now: when the submit began, one clock read for all its requests (a read
 * costs tens of nanoseconds in a VM, a sizeable part of a small request). */
static void task_init(te_task *t, te_batch *b, const te_request *r, plan *p, int hint,
                      int64_t now)
{
    t->batch = b;
    t->seg = p->seg;
    t->seg_id = r->target;
    t->seg_io = p->seg->io;
    t->submit_ns = now;
    t->length = r->length;
    t->opcode = r->opcode;
    t->hint = hint;
    t->route = p->route;
    t->local_pin = p->pin;
    /* Relaxed: the task is published by handing its slices over (a lock or
     * a system call in every transport), not by these stores. */
    atomic_store_explicit(&t->transport, p->route.count ? p->route.order[0] : p->seg->transport,
                          memory_order_relaxed);
    atomic_store_explicit(&t->state, TE_TRANSFER_WAITING, memory_order_relaxed);
    p->seg = NULL; /* the task holds them now */
    p->pin = NULL;
}

/* Cuts a planned request into slices for its first transport. */
static size_t cut(te_engine *e, te_task *t, const te_request *r, int buf, core_slice *cs,
                  te_slice **ptrs, int64_t deadline)
{
    int ti = t->route.order[0];
    const te_transport *tr = &e->transports[ti];
    uint64_t ss = tr->slice_size ? tr->slice_size : r->length;
    size_t count = 0;
    for (uint64_t off = 0; off < r->length; off += ss, count++) {
        core_slice *c = &cs[count];
        c->task = t;
        c->transport = ti;
        c->pub.opcode = (uint32_t)r->opcode;
        c->pub.local = (char *)r->local + off;
        c->pub.remote = r->remote + off;
        c->pub.length = r->length - off < ss ? r->length - off : ss;
        c->pub.peer = t->seg->peers[ti];
        c->pub.local_mr = t->local_pin ? t->local_pin->mr[ti] : NULL;
        c->pub.remote_buffer = buf;
        c->pub.deadline_ns = deadline;
        ptrs[count] = &c->pub;
    }
    atomic_store_explicit(&t->slices_left, (unsigned)count, memory_order_relaxed);
    return count;
}

/* Hands runs of slices with the same transport over in one call each. */
static void dispatch(te_engine *e, te_slice **ptrs, size_t k)
{
    for (size_t start = 0; start < k;) {
        int ti = ((core_slice *)ptrs[start])->transport;
        size_t end = start + 1;
        while (end < k && ((core_slice *)ptrs[end])->transport == ti)
            end++;
        te_transport *tr = &e->transports[ti];
        int src = tr->ops->submit(tr->inst, ptrs + start, end - start);
        if (src) {
            te_log(TE_LOG_WARN, "core", "transport %s refused %zu slices: %s",
                   tr->plugin->name, end - start, te_strerror(src));
            for (size_t j = start; j < end; j++)
                te_slice_done(&e->host, ptrs[j], src);
        }
        start = end;
    }
}

/* ---- submit ----------------------------------------------------------------- */

static void fail_planned(te_batch *b, size_t base, plan *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i].status) {
            te_set_error("%s", p[i].why);
            te_task_fail_now(&b->tasks[base + i], p[i].status);
        }
}

/* Plans every request, takes the batch's slots, builds and hands out the
 * slices; requests that cannot start fail as tasks, after the others left. */
static int launch(te_engine *e, te_batch *b, const te_request *reqs, size_t n,
                  const char *nname, const char *nmsg, plan *p)
{
    char hint_name[64];
    pthread_mutex_lock(&b->lock);
    int hint = b->hint;
    memcpy(hint_name, b->hint_name, sizeof hint_name);
    pthread_mutex_unlock(&b->lock);
    size_t total = 0, base = 0;
    uint64_t bytes = 0;
    te_region *pins_small[SMALL], **pins = n <= SMALL ? pins_small : malloc(n * sizeof *pins);
    if (!pins)
        return te_fail(TE_ERR_MEMORY, "submit: cannot allocate %zu requests", n);
    te_memreg_pin_many(&e->memreg, reqs, n, pins);
    for (size_t i = 0; i < n; i++)
        p[i].pin = pins[i];
    if (pins != pins_small)
        free(pins);
    for (size_t i = 0; i < n; i++) {
        plan_one(e, &reqs[i], hint, hint_name, &p[i]);
        total += p[i].slices;
        bytes += reqs[i].length;
    }
    te_slice *ptrs_small[4 * SMALL];
    slice_chunk *chunk = calloc(1, sizeof *chunk + total * sizeof(core_slice));
    te_slice **ptrs = total <= 4 * SMALL ? ptrs_small : malloc(total * sizeof *ptrs);
    int64_t now = te_now_ns();
    int64_t deadline = now + e->cfg.transfer_timeout_ms * 1000000 + (int64_t)bytes;
    int rc = chunk && ptrs ? 0
                           : te_fail(TE_ERR_MEMORY, "submit: cannot allocate %zu slices", total);
    if (!rc)
        rc = reserve(b, n, nname, nmsg, p[0].seg, chunk, deadline, &base);
    if (rc) {
        free(chunk);
    } else {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            te_task *t = &b->tasks[base + i];
            int status = p[i].status, buf = p[i].buf;
            task_init(t, b, &reqs[i], &p[i], hint, now);
            if (!status)
                k += cut(e, t, &reqs[i], buf, &chunk->slices[k], ptrs + k, deadline);
        }
        dispatch(e, ptrs, k);
        fail_planned(b, base, p, n);
    }
    if (ptrs != ptrs_small)
        free(ptrs);
    return rc;
}

static int submit(te_engine *e, te_batch_id id, const te_request *reqs, size_t n,
                  const char *nname, const char *nmsg)
{
    int rc = validate(e, reqs, n);
    if (rc)
        return rc;
    te_batch *b = te_batch_get(e, id);
    if (!b)
        return te_fail(TE_ERR_NOT_FOUND, "submit: batch id %llu is not allocated",
                       (unsigned long long)id);
    plan small[SMALL];
    plan *p = n <= SMALL ? small : calloc(n, sizeof *p);
    if (p == small)
        memset(small, 0, sizeof small);
    if (!p)
        rc = te_fail(TE_ERR_MEMORY, "submit: cannot allocate %zu requests", n);
    if (!rc && n)
        rc = resolve_targets(e, reqs, n, p);
    if (!rc && n)
        rc = launch(e, b, reqs, n, nname, nmsg, p);
    if (p)
        plans_release(e, p, n); /* what no task took */
    if (p != small)
        free(p);
    te_batch_unref(b);
    return rc;
}

int te_submit(te_engine *e, te_batch_id id, const te_request *reqs, size_t n)
{
    return submit(e, id, reqs, n, NULL, NULL);
}

int te_submit_with_notify(te_engine *e, te_batch_id id, const te_request *reqs, size_t n,
                          const char *name, const char *msg)
{
    if (!name || n == 0)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "submit with notify: needs a name and requests");
    return submit(e, id, reqs, n, name, msg);
}

/* ---- hints ------------------------------------------------------------------ */

int te_transport_hint_check(te_engine *e, const char *transport)
{
    if (!e || !e->initialized)
        return te_fail(TE_ERR_STATE, "transport hint: engine not initialized");
    int hint;
    return te_route_hint(e, transport, &hint);
}

int te_batch_set_transport_hint(te_engine *e, te_batch_id id, const char *transport)
{
    int rc = te_transport_hint_check(e, transport);
    if (rc)
        return rc;
    int hint;
    te_route_hint(e, transport, &hint);
    te_batch *b = te_batch_get(e, id);
    if (!b)
        return te_fail(TE_ERR_NOT_FOUND, "batch id %llu is not allocated", (unsigned long long)id);
    pthread_mutex_lock(&b->lock);
    b->hint = hint;
    snprintf(b->hint_name, sizeof b->hint_name, "%s", transport ? transport : "");
    pthread_mutex_unlock(&b->lock);
    te_batch_unref(b);
    return 0;
}

void te_batch_note_why(te_batch *b, const char *why)
{
    pthread_mutex_lock(&b->lock);
    if (!b->why[0] && why)
        snprintf(b->why, sizeof b->why, "%s", why);
    pthread_mutex_unlock(&b->lock);
}

/* ---- failover --------------------------------------------------------------- */

bool te_slice_failover(core_slice *cs, int status)
{
    te_task *t = cs->task;
    te_engine *e = t->batch->engine;
    int64_t now = te_now_ns();
    if (!te_failover_status(status))
        return false;
    if (te_failover_breaks_path(status) && t->seg && t->seg->health &&
        te_path_failed(&t->seg->health[cs->transport], &e->failover.cooldown, now))
        te_log(TE_LOG_WARN, "core", "transport %s failed toward %s (%s): set aside",
               e->transports[cs->transport].plugin->name, t->seg->desc->name,
               te_strerror(status));
    if (t->hint != TE_HINT_AUTO || (int)cs->pub.retry >= e->failover.max_attempts ||
        cs->route_pos + 1 >= t->route.count || now >= cs->pub.deadline_ns)
        return false;
    cs->failed_status = status;
    return te_failover_enqueue(e, &cs->pub);
}

/* The next candidate after position `pos`: a usable one first. */
static int next_position(const te_task *t, int pos, int64_t now)
{
    for (int i = pos + 1; i < t->route.count; i++)
        if (!t->seg->health || te_path_usable(&t->seg->health[t->route.order[i]], now))
            return i;
    return pos + 1 < t->route.count ? pos + 1 : -1;
}

/* Cuts a slice bigger than its new transport's slice_size into pieces that
 * replace it (the task waits for each piece instead); NULL out of memory. */
static slice_chunk *recut(core_slice *cs, uint64_t ss, size_t k)
{
    te_task *t = cs->task;
    slice_chunk *c = calloc(1, sizeof *c + k * sizeof(core_slice));
    if (!c)
        return NULL;
    for (size_t i = 0; i < k; i++) {
        core_slice *p = &c->slices[i];
        uint64_t off = i * ss;
        *p = *cs;
        p->pub.local = (char *)cs->pub.local + off;
        p->pub.remote = cs->pub.remote + off;
        p->pub.length = cs->pub.length - off < ss ? cs->pub.length - off : ss;
    }
    pthread_mutex_lock(&t->batch->lock);
    c->next = t->batch->chunks; /* freed with the batch */
    t->batch->chunks = c;
    pthread_mutex_unlock(&t->batch->lock);
    atomic_fetch_add(&t->slices_left, (unsigned)(k - 1));
    return c;
}

/* Submits a moved slice to its (new) transport, in pieces of its slice size. */
static void hand_over(te_engine *e, core_slice *cs)
{
    te_transport *tr = &e->transports[cs->transport];
    uint64_t ss = tr->slice_size;
    size_t k = ss && cs->pub.length > ss ? (size_t)((cs->pub.length + ss - 1) / ss) : 1;
    te_slice *one = &cs->pub, **ptrs = k > 1 ? malloc(k * sizeof *ptrs) : &one;
    slice_chunk *c = ptrs && k > 1 ? recut(cs, ss, k) : NULL;
    if (!ptrs || (k > 1 && !c)) { /* nothing was recut: the slice fails whole */
        if (ptrs != &one)
            free(ptrs);
        cs->final = true;
        te_slice_done(&e->host, &cs->pub, te_fail(TE_ERR_MEMORY, "failover: out of memory"));
        return;
    }
    for (size_t i = 0; c && i < k; i++)
        ptrs[i] = &c->slices[i].pub;
    size_t n = c ? k : 1;
    int rc = tr->ops->submit(tr->inst, ptrs, n);
    for (size_t i = 0; rc && i < n; i++)
        te_slice_done(&e->host, ptrs[i], rc);
    if (ptrs != &one)
        free(ptrs);
}

void te_batch_resubmit(te_engine *e, te_slice *s)
{
    core_slice *cs = (core_slice *)s;
    te_task *t = cs->task;
    int64_t now = te_now_ns();
    int from = cs->transport, pos = next_position(t, cs->route_pos, now);
    atomic_store(&cs->reported, false); /* reported once more: here or by its next transport */
    if (te_failover_breaks_path(cs->failed_status))
        te_segment_mark_stale(e, t->seg_id, t->seg); /* the peer may have restarted */
    if (pos < 0 || now >= s->deadline_ns) {
        cs->final = true;
        te_slice_done(&e->host, s, cs->failed_status);
        return;
    }
    int to = t->route.order[pos];
    cs->route_pos = pos;
    cs->transport = to;
    s->retry++;
    s->peer = t->seg->peers[to];
    s->local_mr = t->local_pin ? t->local_pin->mr[to] : NULL;
    memset(s->transport_data, 0, sizeof s->transport_data);
    atomic_store(&t->transport, to);
    atomic_fetch_add_explicit(&e->failover.moved[from][to], 1, memory_order_relaxed);
    te_log(TE_LOG_DEBUG, "core", "slice of %llu bytes moves from %s to %s (%s)",
           (unsigned long long)s->length, e->transports[from].plugin->name,
           e->transports[to].plugin->name, te_strerror(cs->failed_status));
    hand_over(e, cs);
}
