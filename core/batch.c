/* batch.c - batch ids, tasks and their completion.  Requests are cut into
 * slices and handed to transports by submit.c; completions update atomic
 * counters here; waiters sleep on a condition variable.  A batch lives while
 * its id is held or any of its tasks is unfinished, so freeing an id early
 * never frees memory a transport still uses, and a stale or doubly freed id
 * is just "not found". */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "clock.h"
#include "log.h"

#define ID_INDEX_BITS 24

/* ---- lifetime ------------------------------------------------------------ */

void te_batch_unref(te_batch *b)
{
    if (atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    while (b->chunks) {
        slice_chunk *c = b->chunks;
        b->chunks = c->next;
        free(c);
    }
    if (b->notify_seg)
        te_segment_put(b->notify_seg);
    free(b->notify_name);
    free(b->notify_msg);
    free(b->tasks);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b);
}

void te_batch_settle_one(te_batch *b)
{
    if (atomic_fetch_sub(&b->settle_left, 1) == 1) {
        pthread_mutex_lock(&b->lock);
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
    }
}

static void all_tasks_done(te_batch *b)
{
    if (!b->notify_name)
        return;
    if (atomic_load(&b->any_failed)) {
        atomic_store(&b->notify_status, TE_ERR_STATE);
        te_batch_settle_one(b); /* no notification after a failure, like the original */
        return;
    }
    te_sender_enqueue(b->engine, b);
}

static int is_peer_failure(int st)
{
    return st == TE_ERR_PEER_CLOSED || st == TE_ERR_SOCKET || st == TE_ERR_TIMEOUT ||
           st == TE_ERR_DNS || st == TE_ERR_ADDRESS_NOT_REGISTERED || st == TE_ERR_REMOTE ||
           st == TE_ERR_ENDPOINT || st == TE_ERR_REJECT_HANDSHAKE;
}

static void task_finish(te_task *t)
{
    te_batch *b = t->batch;
    te_engine *e = b->engine;
    int err = atomic_load(&t->error);
    if (err) {
        atomic_store(&b->any_failed, true);
        if (t->seg && is_peer_failure(err))
            te_segment_mark_stale(e, t->seg_id, t->seg); /* refetch before next use */
    }
    atomic_store(&t->state, err ? TE_TRANSFER_FAILED : TE_TRANSFER_COMPLETED);
    te_metrics_request_done(&e->metrics, t->seg_io, atomic_load(&t->transport), t->opcode,
                            t->length, err, te_now_ns() - t->submit_ns);
    if (t->local_pin)
        te_memreg_unpin(&e->memreg, t->local_pin);
    t->local_pin = NULL;
    if (t->seg)
        te_segment_put(t->seg);
    t->seg = NULL;
    if (atomic_fetch_sub(&b->tasks_left, 1) == 1)
        all_tasks_done(b);
    te_batch_settle_one(b);
    te_batch_unref(b);
}

void te_slice_done(te_host *h, te_slice *slice, int status)
{
    core_slice *cs = (core_slice *)slice;
    te_task *t = cs->task;
    if (atomic_exchange_explicit(&cs->reported, true, memory_order_acq_rel)) {
        te_log(TE_LOG_ERROR, "core",
               "transport %s reported a slice twice (%s of %llu bytes at remote 0x%llx, status %d); "
               "the second report is ignored",
               t->batch->engine->transports[cs->transport].plugin->name,
               slice->opcode == TE_OP_WRITE ? "write" : "read",
               (unsigned long long)slice->length,
               (unsigned long long)slice->remote, status);
        return;
    }
    if (status && !cs->final && te_slice_failover(cs, status))
        return; /* counted when it lands on another transport */
    if (!status && t->seg && t->seg->health)
        te_path_succeeded(&t->seg->health[cs->transport]);
    if (status) {
        int zero = 0;
        atomic_compare_exchange_strong(&t->error, &zero, status < 0 ? status : TE_ERR_REMOTE);
    } else {
        atomic_fetch_add(&t->transferred, slice->length);
    }
    if (atomic_fetch_sub(&t->slices_left, 1) == 1)
        task_finish(t);
}

/* ---- ids ----------------------------------------------------------------- */

te_batch *te_batch_get(te_engine *e, te_batch_id id)
{
    if (id == 0)
        return NULL;
    uint64_t index = (id & ((1u << ID_INDEX_BITS) - 1)) - 1;
    uint32_t gen = (uint32_t)(id >> ID_INDEX_BITS);
    te_batch *b = NULL;
    pthread_mutex_lock(&e->batch_lock);
    if (index < e->batch_cap && e->batches[index] && e->batch_gen[index] == gen) {
        b = e->batches[index];
        atomic_fetch_add(&b->refs, 1);
    }
    pthread_mutex_unlock(&e->batch_lock);
    return b;
}

int te_batch_allocate(te_engine *e, size_t capacity, te_batch_id *id)
{
    if (!e || !id)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "batch allocate: NULL argument");
    if (capacity == 0 || capacity > e->cfg.max_batch_size)
        return te_fail(capacity ? TE_ERR_TOO_MANY_REQUESTS : TE_ERR_INVALID_ARGUMENT,
                       "batch capacity %zu is not in 1..%llu (MC_TE_MAX_BATCH_SIZE)", capacity,
                       (unsigned long long)e->cfg.max_batch_size);
    te_batch *b = calloc(1, sizeof *b);
    te_task *tasks = calloc(capacity, sizeof *tasks);
    if (!b || !tasks) {
        free(b);
        free(tasks);
        return te_fail(TE_ERR_MEMORY, "cannot allocate a batch of %zu", capacity);
    }
    b->engine = e;
    b->capacity = capacity;
    b->tasks = tasks;
    b->hint = TE_HINT_AUTO;
    atomic_init(&b->refs, 1);
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);

    pthread_mutex_lock(&e->batch_lock);
    size_t slot = e->batch_cap;
    for (size_t n = 0; n < e->batch_cap; n++) {
        size_t i = (e->batch_free_hint + n) % e->batch_cap;
        if (!e->batches[i]) {
            slot = i;
            break;
        }
    }
    if (slot == e->batch_cap) {
        size_t cap = e->batch_cap ? e->batch_cap * 2 : 64;
        te_batch **nb = cap < (1u << ID_INDEX_BITS) ? realloc(e->batches, cap * sizeof *nb) : NULL;
        uint32_t *ng = nb ? realloc(e->batch_gen, cap * sizeof *ng) : NULL;
        if (nb)
            e->batches = nb;
        if (!ng) {
            pthread_mutex_unlock(&e->batch_lock);
            te_batch_unref(b);
            return te_fail(TE_ERR_MEMORY, "too many batch ids in use");
        }
        e->batch_gen = ng;
        for (size_t i = e->batch_cap; i < cap; i++) {
            e->batches[i] = NULL;
            e->batch_gen[i] = 1;
        }
        e->batch_cap = cap;
    }
    e->batches[slot] = b;
    e->batch_free_hint = (uint32_t)(slot + 1);
    b->id = ((uint64_t)e->batch_gen[slot] << ID_INDEX_BITS) | (slot + 1);
    pthread_mutex_unlock(&e->batch_lock);
    *id = b->id;
    return 0;
}

int te_batch_free(te_engine *e, te_batch_id id)
{
    if (!e)
        return TE_ERR_INVALID_ARGUMENT;
    te_batch *b = NULL;
    pthread_mutex_lock(&e->batch_lock);
    uint64_t index = (id & ((1u << ID_INDEX_BITS) - 1)) - 1;
    if (id && index < e->batch_cap && e->batches[index] &&
        e->batch_gen[index] == (uint32_t)(id >> ID_INDEX_BITS)) {
        b = e->batches[index];
        e->batches[index] = NULL;
        if (++e->batch_gen[index] == 0) /* ids never reuse a live generation */
            e->batch_gen[index] = 1;
    }
    pthread_mutex_unlock(&e->batch_lock);
    if (!b)
        return te_fail(TE_ERR_NOT_FOUND, "batch id %llu is not allocated", (unsigned long long)id);
    te_batch_unref(b); /* the id's reference; in-flight tasks hold their own */
    return 0;
}

/* ---- submission failures --------------------------------------------------- */

void te_task_fail_now(te_task *t, int status)
{
    te_batch_note_why(t->batch, te_last_error());
    atomic_store(&t->error, status);
    atomic_store(&t->slices_left, 1);
    te_slice_done(NULL, &(core_slice){.task = t, .final = true}.pub, status);
}

/* ---- status and waiting -------------------------------------------------- */

static int batch_state(te_batch *b, uint64_t *transferred)
{
    pthread_mutex_lock(&b->lock);
    size_t n = b->ntasks;
    pthread_mutex_unlock(&b->lock);
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += atomic_load(&b->tasks[i].transferred);
    if (transferred)
        *transferred = bytes;
    if (atomic_load(&b->any_failed) || atomic_load(&b->notify_status))
        return TE_TRANSFER_FAILED;
    if (atomic_load(&b->settle_left) == 0)
        return TE_TRANSFER_COMPLETED;
    int64_t dl = atomic_load(&b->deadline_ns);
    if (dl && te_now_ns() > dl)
        return TE_TRANSFER_TIMEOUT;
    return TE_TRANSFER_WAITING;
}

int te_task_status(te_engine *e, te_batch_id id, size_t task, int *status, uint64_t *transferred)
{
    if (!e || !status)
        return TE_ERR_INVALID_ARGUMENT;
    te_batch *b = te_batch_get(e, id);
    if (!b)
        return te_fail(TE_ERR_NOT_FOUND, "batch id %llu is not allocated", (unsigned long long)id);
    pthread_mutex_lock(&b->lock);
    size_t n = b->ntasks;
    pthread_mutex_unlock(&b->lock);
    int rc = 0;
    if (task >= n) {
        rc = te_fail(TE_ERR_INVALID_ARGUMENT, "task %zu of a batch with %zu tasks", task, n);
    } else {
        te_task *t = &b->tasks[task];
        int st = atomic_load(&t->state);
        int64_t dl = atomic_load(&b->deadline_ns);
        if (st == TE_TRANSFER_COMPLETED && b->notify_name && atomic_load(&b->settle_left) > 0)
            st = TE_TRANSFER_WAITING; /* the notification is not sent yet */
        if (st == TE_TRANSFER_COMPLETED && atomic_load(&b->notify_status))
            st = TE_TRANSFER_FAILED;
        if (st == TE_TRANSFER_WAITING && dl && te_now_ns() > dl)
            st = TE_TRANSFER_TIMEOUT;
        *status = st;
        if (transferred)
            *transferred = atomic_load(&t->transferred);
    }
    te_batch_unref(b);
    return rc;
}

int te_batch_status(te_engine *e, te_batch_id id, int *status, uint64_t *transferred)
{
    if (!e || !status)
        return TE_ERR_INVALID_ARGUMENT;
    te_batch *b = te_batch_get(e, id);
    if (!b)
        return te_fail(TE_ERR_NOT_FOUND, "batch id %llu is not allocated", (unsigned long long)id);
    *status = batch_state(b, transferred);
    te_batch_unref(b);
    return 0;
}

static int wait_settled(te_batch *b, int64_t until_ns)
{
    int rc = 0;
    pthread_mutex_lock(&b->lock);
    while (atomic_load(&b->settle_left) > 0) {
        int64_t now = te_now_ns();
        if (until_ns && now >= until_ns) {
            rc = TE_ERR_TIMEOUT;
            break;
        }
        /* CLOCK_REALTIME for the condvar; re-check the monotonic deadline. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t step = until_ns ? until_ns - now : 1000000000;
        if (step > 1000000000)
            step = 1000000000;
        ts.tv_sec += step / 1000000000;
        ts.tv_nsec += step % 1000000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&b->cond, &b->lock, &ts);
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

int te_batch_wait(te_engine *e, te_batch_id id, int64_t timeout_ms, int *status)
{
    if (!e)
        return TE_ERR_INVALID_ARGUMENT;
    te_batch *b = te_batch_get(e, id);
    if (!b)
        return te_fail(TE_ERR_NOT_FOUND, "batch id %llu is not allocated", (unsigned long long)id);
    int64_t until = timeout_ms >= 0 ? te_now_ns() + timeout_ms * 1000000
                                    : atomic_load(&b->deadline_ns);
    if (timeout_ms < 0 && until == 0)
        until = te_now_ns(); /* nothing submitted: nothing to wait for */
    int rc = wait_settled(b, until);
    int st = batch_state(b, NULL);
    if (rc && st == TE_TRANSFER_WAITING && timeout_ms < 0)
        st = TE_TRANSFER_TIMEOUT;
    if (status)
        *status = st;
    te_batch_unref(b);
    return rc;
}

/* First failure of the batch, for te_transfer_sync's return value. */
static int batch_error(te_batch *b)
{
    for (size_t i = 0; i < b->ntasks; i++) {
        int err = atomic_load(&b->tasks[i].error);
        if (err)
            return err;
    }
    int ns = atomic_load(&b->notify_status);
    return ns ? ns : TE_ERR_REMOTE;
}

/* The failure of a finished batch, with the detail known at submit time. */
static int sync_failure(te_engine *e, te_batch_id id)
{
    te_batch *b = te_batch_get(e, id);
    if (!b)
        return te_fail(TE_ERR_REMOTE, "transfer failed");
    int rc = batch_error(b);
    pthread_mutex_lock(&b->lock);
    if (b->why[0])
        te_fail(rc, "transfer failed: %s (%s)", te_strerror(rc), b->why);
    else
        te_fail(rc, "transfer failed: %s", te_strerror(rc));
    pthread_mutex_unlock(&b->lock);
    te_batch_unref(b);
    return rc;
}

int te_transfer_sync_hint(te_engine *e, const te_request *reqs, size_t n, const char *notify_name,
                          const char *notify_msg, const char *transport)
{
    te_batch_id id;
    if (n == 0)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "transfer: no requests");
    int rc = te_batch_allocate(e, n, &id);
    if (rc)
        return rc;
    if (transport && *transport)
        rc = te_batch_set_transport_hint(e, id, transport);
    if (rc == 0)
        rc = notify_name ? te_submit_with_notify(e, id, reqs, n, notify_name, notify_msg)
                         : te_submit(e, id, reqs, n);
    if (rc == 0) {
        int st;
        rc = te_batch_wait(e, id, -1, &st);
        if (st == TE_TRANSFER_COMPLETED)
            rc = 0;
        else if (st == TE_TRANSFER_FAILED)
            rc = sync_failure(e, id);
        else
            rc = te_fail(TE_ERR_TIMEOUT, "transfer did not finish within its deadline");
    }
    te_batch_free(e, id);
    return rc;
}

int te_transfer_sync(te_engine *e, const te_request *reqs, size_t n, const char *notify_name,
                     const char *notify_msg)
{
    return te_transfer_sync_hint(e, reqs, n, notify_name, notify_msg, NULL);
}

/* ---- teardown ------------------------------------------------------------ */

/* Waits (bounded by each batch's deadline plus a grace second) for every
 * batch to settle, so transports can be destroyed with nothing in flight. */
void te_batches_quiesce(te_engine *e)
{
    pthread_mutex_lock(&e->batch_lock);
    size_t cap = e->batch_cap;
    pthread_mutex_unlock(&e->batch_lock);
    for (size_t i = 0; i < cap; i++) {
        pthread_mutex_lock(&e->batch_lock);
        te_batch *b = e->batches[i];
        if (b)
            atomic_fetch_add(&b->refs, 1);
        pthread_mutex_unlock(&e->batch_lock);
        if (!b)
            continue;
        int64_t dl = atomic_load(&b->deadline_ns);
        if (wait_settled(b, dl ? dl + 1000000000 : te_now_ns()))
            te_log(TE_LOG_ERROR, "core", "batch %llu still in flight at shutdown",
                   (unsigned long long)b->id);
        te_batch_unref(b);
    }
}

void te_batches_destroy(te_engine *e)
{
    for (size_t i = 0; i < e->batch_cap; i++)
        if (e->batches[i])
            te_batch_unref(e->batches[i]);
    free(e->batches);
    free(e->batch_gen);
    e->batches = NULL;
    e->batch_gen = NULL;
    e->batch_cap = 0;
}
