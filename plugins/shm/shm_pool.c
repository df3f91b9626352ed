/* shm_pool.c - who copies: the submitting thread its first inline_bytes,
 * then the copy workers; either way runs of slices for one peer and
 * direction, checked against the peer's live registration table, copied with
 * one process_vm_* call of many iovecs each, every slice reported once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "shm.h"

#define ST_PENDING 1

/* Scratch for one run of slices: every worker owns one; a submitting thread
 * borrows one from the pool's spares (made on first need, kept after). */
typedef struct shm_work {
    size_t cap;
    te_slice **s;
    int *st;
    size_t *idx;
    struct iovec *liov;
    struct iovec *riov;
} shm_work;

typedef struct shm_scratch {
    struct shm_scratch *next; /* on pool->spare */
    shm_pool *pool;
    shm_work w;
    te_slice *s[SHM_IOV_MAX];
    int st[SHM_IOV_MAX];
    size_t idx[SHM_IOV_MAX];
    struct iovec liov[SHM_IOV_MAX];
    struct iovec riov[SHM_IOV_MAX];
} shm_scratch;

static void run_chunk(shm_inst *in, shm_work *w, size_t n);

static te_slice *next_of(const te_slice *s)
{
    return s->transport_data[0];
}

static shm_scratch *scratch_new(shm_pool *pool)
{
    shm_scratch *sc = malloc(sizeof *sc);
    if (sc) {
        sc->next = NULL;
        sc->pool = pool;
        sc->w = (shm_work){SHM_IOV_MAX, sc->s, sc->st, sc->idx, sc->liov, sc->riov};
    }
    return sc;
}

/* Takes a run of slices with the same peer and opcode from the front of the
 * chain at *head into w: at most `limit` of them, and SHM_CHUNK_BYTES unless
 * the first alone is bigger.  Returns how many. */
static size_t take_run(te_slice **head, shm_work *w, size_t limit)
{
    if (limit > w->cap)
        limit = w->cap;
    te_slice *first = *head;
    size_t n = 0;
    uint64_t bytes = 0;
    while (*head && n < limit && (*head)->peer == first->peer &&
           (*head)->opcode == first->opcode &&
           (n == 0 || bytes + (*head)->length <= SHM_CHUNK_BYTES)) {
        w->s[n++] = *head;
        bytes += (*head)->length;
        *head = next_of(*head);
    }
    return n;
}

/* Unlinks the front of the queue while it fits in `budget` bytes and
 * SHM_IOV_MAX slices, whatever their peers; NULL when the first does not
 * fit.  Called with the lock held. */
static te_slice *detach(shm_pool *pool, uint64_t budget)
{
    te_slice *first = pool->head, *last = NULL;
    size_t n = 0;
    uint64_t bytes = 0;
    while (pool->head && n < SHM_IOV_MAX && bytes + pool->head->length <= budget) {
        bytes += pool->head->length;
        last = pool->head;
        pool->head = next_of(last);
        n++;
    }
    if (!last)
        return NULL;
    last->transport_data[0] = NULL;
    if (!pool->head)
        pool->tail = NULL;
    pool->queued -= n;
    return first;
}

static void wake_workers(shm_pool *pool)
{
    if (pool->queued > 1 && pool->nthreads > 1)
        pthread_cond_broadcast(&pool->cond);
    else
        pthread_cond_signal(&pool->cond);
}

/* The submitting thread copies the front of the queue itself, up to
 * inline_bytes (one run after another, each one process_vm_* call), and the
 * workers are woken only for what is left: for a batch of small requests a
 * hand-over (two wake-ups and a thread on another core) costs more than the
 * copy.  The caller's time in submit() is bounded by that one budget. */
static void copy_in_caller(shm_pool *pool, te_slice *mine, shm_scratch *sc)
{
    while (mine) {
        size_t n = take_run(&mine, &sc->w, SIZE_MAX);
        run_chunk(pool->inst, &sc->w, n);
    }
    pthread_mutex_lock(&pool->lock);
    sc->next = pool->spare;
    pool->spare = sc;
    pthread_mutex_unlock(&pool->lock);
}

int shm_pool_submit(shm_pool *pool, te_slice *const *slices, size_t count)
{
    if (count == 0)
        return 0;
    for (size_t i = 0; i < count; i++)
        slices[i]->transport_data[0] = i + 1 < count ? slices[i + 1] : NULL;
    pthread_mutex_lock(&pool->lock);
    if (pool->stop) {
        pthread_mutex_unlock(&pool->lock);
        return TE_ERR_STATE;
    }
    if (pool->tail)
        pool->tail->transport_data[0] = slices[0];
    else
        pool->head = slices[0];
    pool->tail = slices[count - 1];
    pool->queued += count;
    te_slice *mine = NULL;
    shm_scratch *sc = NULL;
    if (pool->inline_bytes && pool->head->length <= pool->inline_bytes) {
        sc = pool->spare ? pool->spare : scratch_new(pool);
        if (sc && sc == pool->spare)
            pool->spare = sc->next;
        mine = sc ? detach(pool, pool->inline_bytes) : NULL;
    }
    if (pool->head)
        wake_workers(pool);
    pthread_mutex_unlock(&pool->lock);
    if (mine)
        copy_in_caller(pool, mine, sc);
    return 0;
}

/* A worker's run: a fair share of the queue, so that every worker gets some.
 * Called with the lock held. */
static size_t take(shm_pool *pool, shm_work *w)
{
    size_t limit = (pool->queued + (size_t)pool->nthreads - 1) / (size_t)pool->nthreads;
    size_t n = take_run(&pool->head, w, limit);
    if (!pool->head)
        pool->tail = NULL;
    pool->queued -= n;
    return n;
}

static ssize_t vm_copy(pid_t pid, bool write, const struct iovec *l, const struct iovec *r,
                       size_t n)
{
    return write ? process_vm_writev(pid, l, n, r, n, 0) : process_vm_readv(pid, l, n, r, n, 0);
}

/* EFAULT on our side: the core never hands us device memory, but if a
 * caller pins shm to it, the slice fails as "not this transport" (the kernel
 * refused the copy; nothing was touched). */
static int fault_status(const te_slice *s)
{
    char where[64] = "*";
    if (te_host_table->memory_location(s->local, (size_t)s->length, where, sizeof where) == 0 &&
        !shm_is_cpu_location(where))
        return TE_ERR_NOT_SUPPORTED_TRANSPORT;
    return TE_ERR_ADDRESS_NOT_REGISTERED;
}

/* Finishes one slice alone from byte `done`; returns its status. */
static int finish_one(pid_t pid, bool write, const te_slice *s, uint64_t done)
{
    while (done < s->length) {
        struct iovec l = {(char *)s->local + done, s->length - done};
        struct iovec r = {(void *)(uintptr_t)(s->remote + done), s->length - done};
        ssize_t got = vm_copy(pid, write, &l, &r, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EFAULT)
            return fault_status(s);
        if (got <= 0)
            return got < 0 ? shm_errno_status(errno) : TE_ERR_ADDRESS_NOT_REGISTERED;
        done += (uint64_t)got;
    }
    return 0;
}

/* Builds the iovecs of the pending slices from index i: returns how many
 * slices (their indexes in w->idx), *niov how many iovecs.  A slice that
 * continues the previous one on both sides extends its iovecs: the kernel
 * looks up and pins pages per iovec, so a run of adjacent blocks (KV pages
 * laid out in order) costs what one block of their total size does. */
static size_t gather(shm_work *w, size_t i, size_t n, size_t *niov)
{
    size_t k = 0, v = 0;
    for (size_t j = i; j < n && k < w->cap; j++) {
        if (w->st[j] != ST_PENDING)
            continue;
        te_slice *s = w->s[j];
        w->idx[k++] = j;
        void *remote = (void *)(uintptr_t)s->remote;
        if (v && (char *)w->liov[v - 1].iov_base + w->liov[v - 1].iov_len == (char *)s->local &&
            (char *)w->riov[v - 1].iov_base + w->riov[v - 1].iov_len == (char *)remote) {
            w->liov[v - 1].iov_len += s->length;
            w->riov[v - 1].iov_len += s->length;
            continue;
        }
        w->liov[v] = (struct iovec){s->local, s->length};
        w->riov[v] = (struct iovec){remote, s->length};
        v++;
    }
    *niov = v;
    return k;
}

/* Copies every pending slice, as few calls as the kernel allows: a partial
 * result completes the slices it covers and finishes the next one alone
 * (which gives its error, if any). */
static void copy_pending(shm_peer *p, shm_work *w, size_t n, bool write)
{
    size_t i = 0;
    while (i < n) {
        size_t niov, k = gather(w, i, n, &niov);
        if (k == 0)
            return;
        ssize_t got = vm_copy(p->pid, write, w->liov, w->riov, niov);
        uint64_t done = got > 0 ? (uint64_t)got : 0;
        size_t m = 0;
        while (m < k && done >= w->s[w->idx[m]]->length) {
            done -= w->s[w->idx[m]]->length;
            w->st[w->idx[m++]] = 0;
        }
        if (m == k) {
            i = w->idx[k - 1] + 1;
            continue;
        }
        size_t f = w->idx[m];
        w->st[f] = finish_one(p->pid, write, w->s[f], done);
        if (w->st[f] == TE_ERR_PEER_CLOSED) { /* the peer is gone: the rest fails too */
            for (size_t j = f + 1; j < n; j++)
                if (w->st[j] == ST_PENDING)
                    w->st[j] = TE_ERR_PEER_CLOSED;
            return;
        }
        i = f + 1;
    }
}

/* Checks the pending slices against the peer's table as it is now. */
static int check_ranges(shm_peer *p, shm_work *w, size_t n, uint64_t *seq)
{
    pthread_mutex_lock(&p->lock);
    int rc = shm_peer_refresh(p, seq);
    for (size_t i = 0; i < n; i++) {
        if (w->st[i] != ST_PENDING)
            continue;
        if (rc)
            w->st[i] = rc;
        else if (!shm_peer_allows(p, w->s[i]->remote, w->s[i]->length))
            w->st[i] = TE_ERR_ADDRESS_NOT_REGISTERED;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* If the target changed its table while we copied, a slice whose range is
 * gone fails (its bytes may have reached memory the target released). */
static void recheck_after(shm_peer *p, shm_work *w, size_t n, uint64_t seq0)
{
    uint64_t seq;
    if (shm_peer_seq(p, &seq) || seq == seq0)
        return; /* unchanged, or the peer exited after the copy */
    pthread_mutex_lock(&p->lock);
    int rc = shm_peer_refresh(p, &seq);
    for (size_t i = 0; i < n && !rc; i++)
        if (w->st[i] == 0 && !shm_peer_allows(p, w->s[i]->remote, w->s[i]->length))
            w->st[i] = TE_ERR_ADDRESS_NOT_REGISTERED;
    pthread_mutex_unlock(&p->lock);
}

static const char *status_text(int st)
{
    switch (st) {
    case TE_ERR_TIMEOUT:
        return "deadline passed before the copy";
    case TE_ERR_ADDRESS_NOT_REGISTERED:
        return "range not registered by the peer (or not mapped)";
    case TE_ERR_PEER_CLOSED:
        return "peer exited or no longer readable";
    case TE_ERR_NOT_SUPPORTED_TRANSPORT:
        return "local memory is not CPU memory";
    case TE_ERR_MEMORY:
        return "out of memory";
    default:
        return "copy failed";
    }
}

/* One line per failed run, as a warning at most once a second per peer. */
static void log_failure(shm_inst *in, shm_peer *p, const shm_work *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (w->st[i] == 0)
            continue;
        const te_slice *s = w->s[i];
        int64_t now = te_host_table->now_ns();
        pthread_mutex_lock(&p->lock);
        bool warn = now - p->warned_ns >= 1000000000;
        if (warn)
            p->warned_ns = now;
        pthread_mutex_unlock(&p->lock);
        te_host_table->log(in->host, warn ? TE_LOG_WARN : TE_LOG_DEBUG, SHM_NAME,
                      "%s of %llu bytes at 0x%llx of %s (pid %d) failed: %s (%d)%s",
                      s->opcode == TE_OP_WRITE ? "write" : "read",
                      (unsigned long long)s->length, (unsigned long long)s->remote, p->name,
                      (int)p->pid, status_text(w->st[i]), w->st[i],
                      n > 1 ? " (first failure of its run)" : "");
        return;
    }
}

static void run_chunk(shm_inst *in, shm_work *w, size_t n)
{
    shm_peer *p = w->s[0]->peer;
    bool write = w->s[0]->opcode == TE_OP_WRITE;
    int64_t now = te_host_table->now_ns();
    for (size_t i = 0; i < n; i++) {
        const te_slice *s = w->s[i];
        const shm_mr *mr = s->local_mr;
        w->st[i] = s->deadline_ns && now > s->deadline_ns ? TE_ERR_TIMEOUT
                   : mr && !mr->cpu                       ? TE_ERR_NOT_SUPPORTED_TRANSPORT
                                                          : ST_PENDING;
    }
    uint64_t seq0;
    if (check_ranges(p, w, n, &seq0) == 0) {
        copy_pending(p, w, n, write);
        recheck_after(p, w, n, seq0);
    }
    log_failure(in, p, w, n);
    /* Last: once reported, a slice and maybe the peer handle may be freed. */
    for (size_t i = 0; i < n; i++)
        te_host_table->slice_done(in->host, w->s[i], w->st[i]);
}

static void *worker_main(void *arg)
{
    shm_scratch *sc = arg;
    shm_pool *pool = sc->pool;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->stop)
            pthread_cond_wait(&pool->cond, &pool->lock);
        if (pool->stop)
            break;
        size_t n = take(pool, &sc->w);
        pthread_mutex_unlock(&pool->lock);
        run_chunk(pool->inst, &sc->w, n);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    free(sc);
    return NULL;
}

int shm_pool_start(shm_pool *pool, shm_inst *inst, int nthreads, uint64_t inline_bytes)
{
    memset(pool, 0, sizeof *pool);
    pool->inst = inst;
    pool->inline_bytes = inline_bytes;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    for (int i = 0; i < nthreads && i < SHM_MAX_WORKERS; i++) {
        shm_scratch *sc = scratch_new(pool);
        if (!sc || pthread_create(&pool->threads[i], NULL, worker_main, sc) != 0) {
            free(sc);
            break;
        }
        char name[16];
        snprintf(name, sizeof name, "te-shm-%d", i);
        pthread_setname_np(pool->threads[i], name);
        pool->nthreads++;
    }
    if (pool->nthreads == 0) {
        shm_pool_stop(pool);
        te_host_table->set_error("shm: cannot start copy threads");
        return TE_ERR_MEMORY;
    }
    return 0;
}

/* The core calls this from destroy, when no submit() runs any more. */
void shm_pool_stop(shm_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->stop = true;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_mutex_lock(&pool->lock);
    te_slice *s = pool->head;
    pool->head = pool->tail = NULL;
    pool->queued = 0;
    shm_scratch *spare = pool->spare;
    pool->spare = NULL;
    pthread_mutex_unlock(&pool->lock);
    while (s) {
        te_slice *next = next_of(s);
        te_host_table->slice_done(pool->inst->host, s, TE_ERR_STATE);
        s = next;
    }
    while (spare) {
        shm_scratch *next = spare->next;
        free(spare);
        spare = next;
    }
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->cond);
}
