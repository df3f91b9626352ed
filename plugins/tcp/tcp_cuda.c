/* tcp_cuda.c - GPU memory over TCP.  A socket cannot read or write device
 * memory, so it moves through pinned host buffers, 1 MiB at a time, with the
 * copies of some chunks overlapping the network I/O of others.  CUDA is
 * opened with dlopen on first need and never linked: a process that has not
 * loaded the CUDA driver holds no device pointers, which keeps host memory
 * at one cheap check per submit.  See docs/gpu.md. */
#include <link.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>

#include "tcp.h"

/* The few CUDA definitions used (stable since CUDA 10; no headers needed). */
typedef int cuda_err;
typedef void *cuda_stream;
typedef void *cuda_event;
#define CUDA_OK 0
#define CUDA_NOT_READY 600
#define CUDA_H2D 1
#define CUDA_D2H 2
#define CUDA_STREAM_NON_BLOCKING 0x1
#define CUDA_EVENT_FLAGS 0x3 /* BlockingSync | DisableTiming */
#define CUDA_HOST_REGISTER_PORTABLE 0x1
#define CUDA_STREAM_LEGACY ((cuda_stream)0x1)

#define CHUNK (1u << 20)
#define MAX_DEV 64
#define STAGE_BUFFERS 8 /* initiator: chunks in copy or on the wire */
#define SERVE_BUFFERS 8 /* target: shared by connections, 2 each at most */
#define BACKOFF_MIN_NS 4000
#define BACKOFF_MAX_NS 1000000

char tcp_cuda_shadow_tag;

/* ---- the CUDA libraries (process-wide) ------------------------------------------ */

static struct {
    cuda_err (*set_device)(int dev);
    cuda_err (*get_last_error)(void);
    const char *(*error_string)(cuda_err err);
    cuda_err (*host_register)(void *p, size_t n, unsigned flags);
    cuda_err (*host_unregister)(void *p);
    cuda_err (*stream_create)(cuda_stream *s, unsigned flags);
    cuda_err (*stream_destroy)(cuda_stream s);
    cuda_err (*event_create)(cuda_event *e, unsigned flags);
    cuda_err (*event_destroy)(cuda_event e);
    cuda_err (*event_record)(cuda_event e, cuda_stream s);
    cuda_err (*event_query)(cuda_event e);
    cuda_err (*event_synchronize)(cuda_event e);
    cuda_err (*memcpy_async)(void *dst, const void *src, size_t n, int kind, cuda_stream s);
} cu;

static pthread_mutex_t cu_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool driver_seen;                  /* libcuda.so.1 is in the process */
static atomic_ullong absent_at;                  /* dlpi_adds when it was last absent */
static pthread_once_t runtime_once = PTHREAD_ONCE_INIT;
static bool runtime_ok;
static char runtime_why[256]; /* why runtime_ok is false */

static int first_adds(struct dl_phdr_info *info, size_t size, void *data)
{
    *(unsigned long long *)data = info->dlpi_adds;
    return 1;
}

static bool probe_driver(unsigned long long adds)
{
    pthread_mutex_lock(&cu_lock);
    if (!atomic_load(&driver_seen)) {
        /* Only if loaded: never load it here.  A core older than ABI 1.3
         * lacks cuda_progress_wait (and before 1.2 cannot say which memory
         * is the GPU's, cuda_device_of): GPU memory then stays unsupported,
         * as on a 1.0 core without CUDA services. */
        void *h = TE_HOST_HAS(te_host_table, cuda_progress_wait)
                      ? te_host_table->cuda_driver(0, NULL, 0)
                      : NULL;
        if (h)
            atomic_store(&driver_seen, true); /* the handle stays open */
        else
            atomic_store(&absent_at, adds);
    }
    pthread_mutex_unlock(&cu_lock);
    return atomic_load(&driver_seen);
}

/* Device memory exists only in a process that has loaded the CUDA driver.
 * dl_iterate_phdr's dlpi_adds counts objects ever loaded: while it has not
 * moved since the driver was found absent, nothing needs looking up
 * (tens of nanoseconds, against microseconds for a dlopen probe). */
bool tcp_cuda_possible(void)
{
    if (atomic_load_explicit(&driver_seen, memory_order_acquire))
        return true;
    unsigned long long adds = 0;
    dl_iterate_phdr(first_adds, &adds);
    if (adds == atomic_load_explicit(&absent_at, memory_order_relaxed))
        return false;
    return probe_driver(adds);
}

/* The core answers (cuda_device_of, the same answer the topology
 * and the route use); tcp_cuda_possible() first keeps host memory in a
 * process without the driver at one cheap check. */
int tcp_cuda_device(const void *p)
{
    if (!p || !tcp_cuda_possible())
        return -1;
    int ordinal = te_host_table->cuda_device_of(p);
    return ordinal >= 0 && ordinal < MAX_DEV ? ordinal : -1;
}

static void load_runtime(void)
{
    char *w = runtime_why;
    size_t n = sizeof runtime_why;
    int (*sym)(void *, const char *, void *, char *, size_t) = te_host_table->cuda_symbol;
    void *h = te_host_table->cuda_runtime(w, n); /* tcp_cuda_possible() checked the ABI */
    runtime_ok = h && sym(h, "cudaSetDevice", &cu.set_device, w, n) &&
                 sym(h, "cudaGetLastError", &cu.get_last_error, w, n) &&
                 sym(h, "cudaGetErrorString", &cu.error_string, w, n) &&
                 sym(h, "cudaHostRegister", &cu.host_register, w, n) &&
                 sym(h, "cudaHostUnregister", &cu.host_unregister, w, n) &&
                 sym(h, "cudaStreamCreateWithFlags", &cu.stream_create, w, n) &&
                 sym(h, "cudaStreamDestroy", &cu.stream_destroy, w, n) &&
                 sym(h, "cudaEventCreateWithFlags", &cu.event_create, w, n) &&
                 sym(h, "cudaEventDestroy", &cu.event_destroy, w, n) &&
                 sym(h, "cudaEventRecord", &cu.event_record, w, n) &&
                 sym(h, "cudaEventQuery", &cu.event_query, w, n) &&
                 sym(h, "cudaEventSynchronize", &cu.event_synchronize, w, n) &&
                 sym(h, "cudaMemcpyAsync", &cu.memcpy_async, w, n);
}

static const char *cuda_text(cuda_err err)
{
    cu.get_last_error(); /* our failures are not the application's */
    const char *s = cu.error_string(err);
    return s ? s : "unknown CUDA error";
}

/* ---- pinned buffers ---------------------------------------------------------------- */

/* Plain pages registered with cudaHostRegister rather than cudaHostAlloc:
 * the lanes may vmsplice payloads, which needs ordinary user pages. */
typedef struct cbuf {
    struct cbuf *next;
    void *host;
    bool ready[MAX_DEV]; /* stream and event made on that GPU */
    cuda_stream stream[MAX_DEV];
    cuda_event event[MAX_DEV];
} cbuf;

typedef struct pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    cbuf *free;
    int made, max;
} pool;

typedef struct shadow shadow;
typedef struct job job;
typedef struct tcp_cuda tcp_cuda;

struct tcp_cuda {
    tcp_transport *t;
    bool order_default_stream; /* MC_TE_CUDA_SYNC_DEFAULT_STREAM */
    pool stage, serve;
    cbuf *made[STAGE_BUFFERS + SERVE_BUFFERS];
    int nmade;
    pthread_mutex_t lock; /* guards intake, returned, stop (and the stage pool's waits) */
    pthread_cond_t cond;
    job *intake;
    shadow *returned; /* READ chunks that arrived, for their copy to the GPU */
    bool stop;
    pthread_t thread;
    /* The worker's: */
    job *jobs;
    shadow *copies;
    int64_t backoff_ns;
    cuda_event *events[MAX_DEV]; /* idle order events per GPU */
    size_t nevents[MAX_DEV], cap[MAX_DEV];
};

static cbuf *buf_new(tcp_cuda *c, int dev)
{
    cbuf *b = calloc(1, sizeof *b);
    void *m = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cuda_err err = m == MAP_FAILED ? CUDA_OK : cu.set_device(dev);
    if (b && m != MAP_FAILED && err == CUDA_OK)
        err = cu.host_register(m, CHUNK, CUDA_HOST_REGISTER_PORTABLE);
    if (!b || m == MAP_FAILED || err != CUDA_OK) {
        TCP_LOG(c->t, TE_LOG_WARN, "cannot pin a staging buffer for GPU memory: %s",
                m == MAP_FAILED || !b ? "out of memory" : cuda_text(err));
        if (m != MAP_FAILED)
            munmap(m, CHUNK);
        free(b);
        return NULL;
    }
    b->host = m;
    pthread_mutex_lock(&c->lock);
    c->made[c->nmade++] = b;
    pthread_mutex_unlock(&c->lock);
    return b;
}

static void buf_free(cbuf *b)
{
    for (int d = 0; d < MAX_DEV; d++) {
        if (!b->ready[d])
            continue;
        cu.set_device(d);
        cu.event_destroy(b->event[d]);
        cu.stream_destroy(b->stream[d]);
    }
    cu.host_unregister(b->host);
    munmap(b->host, CHUNK);
    free(b);
}

/* A free buffer, or a new one while fewer than max exist; NULL if none
 * (wait: until one is released or the deadline passes). */
static cbuf *pool_get(tcp_cuda *c, pool *p, int dev, bool wait, int64_t deadline)
{
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->free) {
            cbuf *b = p->free;
            p->free = b->next;
            pthread_mutex_unlock(&p->lock);
            return b;
        }
        if (p->made < p->max) {
            p->made++;
            pthread_mutex_unlock(&p->lock);
            cbuf *b = buf_new(c, dev);
            if (!b) {
                pthread_mutex_lock(&p->lock);
                p->made--;
                pthread_mutex_unlock(&p->lock);
            }
            return b;
        }
        int64_t now = te_host_table->now_ns();
        if (!wait || (deadline && now >= deadline))
            break;
        te_host_table->cuda_progress_wait(NULL, &p->lock, &p->cond, 1000000000, deadline);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void pool_put(pool *p, cbuf *b)
{
    pthread_mutex_lock(&p->lock);
    b->next = p->free;
    p->free = b;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* Queues a copy between GPU dev and the buffer, then its event. */
static cuda_err buf_copy(cbuf *b, int dev, void *dst, const void *src, size_t n, int kind)
{
    cuda_err err = cu.set_device(dev);
    if (err == CUDA_OK && !b->ready[dev]) {
        err = cu.stream_create(&b->stream[dev], CUDA_STREAM_NON_BLOCKING);
        if (err == CUDA_OK && (err = cu.event_create(&b->event[dev], CUDA_EVENT_FLAGS)) != CUDA_OK)
            cu.stream_destroy(b->stream[dev]);
        b->ready[dev] = err == CUDA_OK;
    }
    if (err == CUDA_OK)
        err = cu.memcpy_async(dst, src, n, kind, b->stream[dev]);
    if (err == CUDA_OK)
        err = cu.event_record(b->event[dev], b->stream[dev]);
    return err;
}

/* ---- the per-transport state ---------------------------------------------------- */

static void *stage_main(void *arg);

/* A lock and a condition variable on CLOCK_MONOTONIC (cuda_progress_wait's
 * clock). */
static void lock_init(pthread_mutex_t *lock, pthread_cond_t *cond)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(lock, NULL);
    pthread_cond_init(cond, &ca);
    pthread_condattr_destroy(&ca);
}

static void pool_init(pool *p, int max)
{
    lock_init(&p->lock, &p->cond);
    p->max = max;
}

static tcp_cuda *state_new(tcp_transport *t)
{
    tcp_cuda *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->t = t;
    int order = 1;
    te_host_table->config_bool(t->host, "MC_TE_CUDA_SYNC_DEFAULT_STREAM", &order);
    c->order_default_stream = order;
    pool_init(&c->stage, STAGE_BUFFERS);
    pool_init(&c->serve, SERVE_BUFFERS);
    lock_init(&c->lock, &c->cond);
    if (pthread_create(&c->thread, NULL, stage_main, c) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

static void state_free(tcp_cuda *c);

/* The transport's staging state, made on first use; NULL (and why in the
 * log) when the CUDA runtime is missing. */
static tcp_cuda *state_get(tcp_transport *t)
{
    tcp_cuda *c = atomic_load(&t->cuda);
    if (c)
        return c;
    pthread_once(&runtime_once, load_runtime);
    if (!runtime_ok) {
        static atomic_bool said;
        if (!atomic_exchange(&said, true))
            TCP_LOG(t, TE_LOG_ERROR, "GPU memory over TCP needs the CUDA runtime: %s",
                    runtime_why);
        return NULL;
    }
    tcp_cuda *mine = state_new(t), *none = NULL;
    if (mine && !atomic_compare_exchange_strong(&t->cuda, &none, mine)) {
        state_free(mine); /* another thread was first */
        return none;
    }
    return mine;
}

/* ---- target side: synchronous, chunk by chunk ------------------------------------ */

/* One target-side transfer: up to two buffers, the first waited for until
 * the deadline, the second taken only if free, so busy connections still
 * make progress one chunk at a time.  pending[i]: a copy of b[i] is queued. */
typedef struct serve_run {
    tcp_cuda *c;
    int dev, nb;
    cbuf *b[2];
    bool pending[2];
} serve_run;

static bool serve_begin(serve_run *r, tcp_transport *t, int dev, int64_t deadline)
{
    *r = (serve_run){.c = state_get(t), .dev = dev};
    if (!r->c || !(r->b[0] = pool_get(r->c, &r->c->serve, dev, true, deadline)))
        return false;
    r->b[1] = pool_get(r->c, &r->c->serve, dev, false, 0);
    r->nb = r->b[1] ? 2 : 1;
    return true;
}

/* Waits for buffer i's queued copy, if any. */
static int serve_wait(serve_run *r, int i)
{
    if (!r->pending[i])
        return 0;
    r->pending[i] = false;
    return cu.event_synchronize(r->b[i]->event[r->dev]) == CUDA_OK ? 0 : -1;
}

/* Queues a copy through buffer i: to the GPU (dst) or out of it (src). */
static int serve_copy(serve_run *r, int i, void *dst, const void *src, size_t n, int kind)
{
    int rc = buf_copy(r->b[i], r->dev, dst, src, n, kind) == CUDA_OK ? 0 : -1;
    r->pending[i] = !rc;
    return rc;
}

static int serve_end(serve_run *r, int rc)
{
    for (int i = 0; i < r->nb; i++) {
        if (serve_wait(r, i))
            rc = -1;
        pool_put(&r->c->serve, r->b[i]);
    }
    if (rc)
        cu.get_last_error();
    return rc;
}

/* The bytes of the chunk at off. */
static size_t chunk_at(uint64_t len, uint64_t off)
{
    return len - off < CHUNK ? (size_t)(len - off) : CHUNK;
}

int tcp_cuda_to_device(tcp_transport *t, void *dst, uint64_t len, int dev, tcp_cuda_io recv_chunk,
                       void *arg, int64_t deadline)
{
    serve_run r;
    if (!serve_begin(&r, t, dev, deadline))
        return -1;
    int rc = 0;
    for (uint64_t off = 0, k = 0; off < len && !rc; k++) {
        int i = (int)(k % (uint64_t)r.nb);
        size_t n = chunk_at(len, off);
        rc = serve_wait(&r, i); /* its last chunk reached the GPU */
        if (!rc)
            rc = recv_chunk(arg, r.b[i]->host, n);
        if (!rc)
            rc = serve_copy(&r, i, (char *)dst + off, r.b[i]->host, n, CUDA_H2D);
        off += n;
    }
    return serve_end(&r, rc);
}

int tcp_cuda_from_device(tcp_transport *t, const void *src, uint64_t len, int dev,
                         tcp_cuda_io send_chunk, void *arg, int64_t deadline)
{
    serve_run r;
    if (!serve_begin(&r, t, dev, deadline))
        return -1;
    int rc = 0;
    uint64_t issued = 0; /* bytes whose copy to a buffer is queued */
    for (int i = 0; i < r.nb && issued < len && !rc; i++) {
        size_t n = chunk_at(len, issued);
        rc = serve_copy(&r, i, r.b[i]->host, (const char *)src + issued, n, CUDA_D2H);
        issued += n;
    }
    for (uint64_t off = 0, k = 0; off < len && !rc; k++) {
        int i = (int)(k % (uint64_t)r.nb);
        size_t n = chunk_at(len, off);
        rc = serve_wait(&r, i);
        if (!rc)
            rc = send_chunk(arg, r.b[i]->host, n); /* a copying send: the buffer is ours again */
        off += n;
        if (!rc && issued < len) {
            size_t m = chunk_at(len, issued);
            rc = serve_copy(&r, i, r.b[i]->host, (const char *)src + issued, m, CUDA_D2H);
            issued += m;
        }
    }
    return serve_end(&r, rc);
}

/* ---- initiator side: slices staged by a worker ---------------------------------- */

enum { J_ORDER, J_READY };

/* One slice of GPU memory.  refs: the worker while it still cuts chunks,
 * plus one per chunk in flight; the last reference reports the slice. */
struct job {
    job *next;
    tcp_cuda *c;
    te_slice *orig;
    tcp_peer *peer;
    int dev, state;
    uint64_t next_off; /* first byte not yet given a chunk */
    atomic_int refs;
    atomic_int error;
    cuda_event order;
    bool has_order;
};

/* One chunk: what the lanes see is `pub`, with the pinned buffer as local
 * memory and the tag as local_mr (TCP registers nothing, so its own slices
 * always carry NULL there). */
struct shadow {
    te_slice pub;
    shadow *next;
    job *job;
    cbuf *buf;
    uint64_t off;
};

static void job_fail(job *j, int status)
{
    int zero = 0;
    atomic_compare_exchange_strong(&j->error, &zero, status);
}

static void job_put(job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    te_host_table->slice_done(j->c->t->host, j->orig, atomic_load(&j->error));
    free(j);
}

static void shadow_end(shadow *sh, int status)
{
    job *j = sh->job;
    tcp_cuda *c = j->c;
    if (status)
        job_fail(j, status);
    pool_put(&c->stage, sh->buf);
    pthread_mutex_lock(&c->lock); /* the worker may wait for that buffer */
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    free(sh);
    job_put(j);
}

void tcp_cuda_stage(tcp_transport *t, tcp_peer *p, te_slice *s, int dev)
{
    tcp_cuda *c = state_get(t);
    job *j = c ? calloc(1, sizeof *j) : NULL;
    if (!j) {
        te_host_table->slice_done(t->host, s, c ? TE_ERR_MEMORY : TE_ERR_DEVICE_NOT_FOUND);
        return;
    }
    *j = (job){.c = c, .orig = s, .peer = p, .dev = dev, .state = J_READY};
    atomic_init(&j->refs, 1);
    atomic_init(&j->error, 0);
    pthread_mutex_lock(&c->lock);
    j->next = c->intake;
    c->intake = j;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* A lane finished a chunk: a READ chunk still has to reach the GPU. */
void tcp_cuda_shadow_done(te_slice *s, int status)
{
    shadow *sh = (shadow *)s;
    tcp_cuda *c = sh->job->c;
    if (status || sh->job->orig->opcode != TE_OP_READ) {
        shadow_end(sh, status);
        return;
    }
    pthread_mutex_lock(&c->lock);
    sh->next = c->returned;
    c->returned = sh;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* Order events, one per job, reused per GPU (current device set). */
static bool order_event(tcp_cuda *c, int dev, cuda_event *ev)
{
    if (c->nevents[dev]) {
        *ev = c->events[dev][--c->nevents[dev]];
        return true;
    }
    return cu.event_create(ev, CUDA_EVENT_FLAGS) == CUDA_OK;
}

static void order_event_put(tcp_cuda *c, int dev, cuda_event ev)
{
    if (c->nevents[dev] == c->cap[dev]) {
        size_t cap = c->cap[dev] ? c->cap[dev] * 2 : 8;
        cuda_event *n = realloc(c->events[dev], cap * sizeof *n);
        if (!n) {
            cu.event_destroy(ev);
            return;
        }
        c->events[dev] = n;
        c->cap[dev] = cap;
    }
    c->events[dev][c->nevents[dev]++] = ev;
}

/* New jobs wait for work already queued on the default stream (as the
 * nvlink transport does; docs/gpu.md): an event, polled, never waited on
 * blindly, so a job that misses its deadline never leaves a copy behind. */
static void admit(tcp_cuda *c, job *list)
{
    while (list) {
        job *j = list;
        list = j->next;
        if (c->order_default_stream) {
            cuda_err err = cu.set_device(j->dev);
            if (err == CUDA_OK && !(j->has_order = order_event(c, j->dev, &j->order)))
                err = -1;
            if (err == CUDA_OK)
                err = cu.event_record(j->order, CUDA_STREAM_LEGACY);
            if (err != CUDA_OK) {
                TCP_LOG(c->t, TE_LOG_WARN, "cannot order a GPU transfer after the default stream");
                cu.get_last_error();
                job_fail(j, TE_ERR_CONTEXT);
            }
            j->state = J_ORDER;
        }
        j->next = c->jobs;
        c->jobs = j;
    }
}

static shadow *shadow_new(job *j, cbuf *b)
{
    shadow *sh = calloc(1, sizeof *sh);
    if (!sh)
        return NULL;
    const te_slice *o = j->orig;
    uint64_t n = chunk_at(o->length, j->next_off);
    sh->pub = (te_slice){.opcode = o->opcode, .local = b->host, .remote = o->remote + j->next_off,
                         .length = n, .peer = o->peer, .local_mr = &tcp_cuda_shadow_tag,
                         .remote_buffer = o->remote_buffer, .deadline_ns = o->deadline_ns};
    sh->job = j;
    sh->buf = b;
    sh->off = j->next_off;
    j->next_off += n;
    atomic_fetch_add(&j->refs, 1);
    return sh;
}

/* Cuts chunks while buffers are free: writes start with the copy out of
 * the GPU, reads go to the lanes at once.  True if the job is finished. */
static bool cut_chunks(tcp_cuda *c, job *j, shadow **to_send)
{
    te_slice *o = j->orig;
    while (j->next_off < o->length && !atomic_load(&j->error)) {
        cbuf *b = pool_get(c, &c->stage, j->dev, false, 0);
        if (!b)
            return false;
        shadow *sh = shadow_new(j, b);
        if (!sh) {
            pool_put(&c->stage, b);
            job_fail(j, TE_ERR_MEMORY);
            break;
        }
        if (o->opcode == TE_OP_READ) {
            sh->next = *to_send;
            *to_send = sh;
            continue;
        }
        cuda_err err = buf_copy(b, j->dev, b->host, (char *)o->local + sh->off, sh->pub.length,
                                CUDA_D2H);
        if (err != CUDA_OK) {
            TCP_LOG(c->t, TE_LOG_WARN, "copy out of GPU %d failed: %s", j->dev, cuda_text(err));
            shadow_end(sh, TE_ERR_CONTEXT);
            break;
        }
        sh->next = c->copies;
        c->copies = sh;
    }
    return true;
}

/* One pass over the jobs; true if one moved. */
static bool advance_jobs(tcp_cuda *c, shadow **to_send)
{
    bool moved = false;
    int64_t now = te_host_table->now_ns();
    for (job **pp = &c->jobs; *pp;) {
        job *j = *pp;
        if (j->state == J_ORDER && !atomic_load(&j->error)) {
            cuda_err err = cu.event_query(j->order);
            if (err == CUDA_OK)
                j->state = J_READY;
            else if (err != CUDA_NOT_READY)
                job_fail(j, TE_ERR_CONTEXT);
        }
        if (!atomic_load(&j->error) && j->orig->deadline_ns && now >= j->orig->deadline_ns) {
            TCP_LOG(c->t, TE_LOG_WARN, "GPU transfer passed its deadline %s",
                    j->state == J_ORDER ? "waiting for the default stream (docs/gpu.md)"
                                        : "waiting for a staging buffer");
            job_fail(j, TE_ERR_TIMEOUT);
        }
        bool done = atomic_load(&j->error) || (j->state == J_READY && cut_chunks(c, j, to_send));
        if (!done) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (j->has_order)
            order_event_put(c, j->dev, j->order);
        job_put(j); /* the worker's reference */
        moved = true;
    }
    return moved;
}

/* READ chunks that arrived: copy them into the GPU. */
static void start_h2d(tcp_cuda *c, shadow *list)
{
    while (list) {
        shadow *sh = list;
        list = sh->next;
        job *j = sh->job;
        cuda_err err = buf_copy(sh->buf, j->dev, (char *)j->orig->local + sh->off, sh->buf->host,
                                sh->pub.length, CUDA_H2D);
        if (err != CUDA_OK) {
            TCP_LOG(c->t, TE_LOG_WARN, "copy into GPU %d failed: %s", j->dev, cuda_text(err));
            shadow_end(sh, TE_ERR_CONTEXT);
            continue;
        }
        sh->next = c->copies;
        c->copies = sh;
    }
}

/* Copies that finished: written chunks go to the lanes, read ones are done. */
static bool poll_copies(tcp_cuda *c, shadow **to_send)
{
    bool moved = false;
    for (shadow **pp = &c->copies; *pp;) {
        shadow *sh = *pp;
        cuda_err err = cu.event_query(sh->buf->event[sh->job->dev]);
        if (err == CUDA_NOT_READY) {
            pp = &sh->next;
            continue;
        }
        *pp = sh->next;
        moved = true;
        if (err != CUDA_OK) {
            TCP_LOG(c->t, TE_LOG_WARN, "GPU staging copy failed: %s", cuda_text(err));
            shadow_end(sh, TE_ERR_CONTEXT);
        } else if (sh->job->orig->opcode == TE_OP_WRITE) {
            sh->next = *to_send;
            *to_send = sh;
        } else {
            shadow_end(sh, 0);
        }
    }
    return moved;
}

static void send_shadows(shadow *list)
{
    while (list) {
        shadow *sh = list;
        list = sh->next;
        te_slice *s = &sh->pub;
        tcp_peer_submit_host(sh->job->peer, &s, 1);
    }
}

static int64_t earliest_deadline(tcp_cuda *c)
{
    int64_t d = 0;
    for (job *j = c->jobs; j; j = j->next)
        if (j->orig->deadline_ns && (!d || j->orig->deadline_ns < d))
            d = j->orig->deadline_ns;
    return d;
}

/* Sleeps until work arrives: with only copies in flight in the driver on
 * one's blocking-sync event (copies end on their own); with jobs waiting
 * for the default stream or a buffer, a poll with a backoff bounded by the
 * earliest deadline (the core's cuda_progress_wait does either). */
static void stage_wait(tcp_cuda *c)
{
    if (c->intake || c->returned || c->stop)
        return;
    if (!c->jobs && !c->copies) {
        pthread_cond_wait(&c->cond, &c->lock);
        return;
    }
    cuda_event ev = c->jobs ? NULL : c->copies->buf->event[c->copies->job->dev];
    te_host_table->cuda_progress_wait(ev, &c->lock, &c->cond, c->backoff_ns, earliest_deadline(c));
}

/* Shutdown (the lanes are gone): copies in the air are waited for. */
static void stage_drain(tcp_cuda *c, job *intake, shadow *returned)
{
    while (intake) {
        job *j = intake;
        intake = j->next;
        job_fail(j, TE_ERR_STATE);
        job_put(j);
    }
    for (shadow *sh = returned; sh;) {
        shadow *next = sh->next;
        shadow_end(sh, TE_ERR_STATE);
        sh = next;
    }
    while (c->copies) {
        shadow *sh = c->copies;
        c->copies = sh->next;
        cu.event_synchronize(sh->buf->event[sh->job->dev]);
        shadow_end(sh, TE_ERR_STATE);
    }
    for (job *j = c->jobs; j; j = c->jobs) {
        c->jobs = j->next;
        job_fail(j, TE_ERR_STATE);
        if (j->has_order)
            order_event_put(c, j->dev, j->order);
        job_put(j);
    }
}

static void *stage_main(void *arg)
{
    tcp_cuda *c = arg;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL); /* short sleeps mean short */
    c->backoff_ns = BACKOFF_MIN_NS;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        stage_wait(c);
        job *intake = c->intake;
        shadow *returned = c->returned;
        c->intake = NULL;
        c->returned = NULL;
        bool stop = c->stop;
        pthread_mutex_unlock(&c->lock);
        if (stop) {
            stage_drain(c, intake, returned);
            return NULL;
        }
        shadow *to_send = NULL;
        admit(c, intake);
        start_h2d(c, returned);
        bool moved = poll_copies(c, &to_send);
        moved |= advance_jobs(c, &to_send);
        moved |= intake || returned;
        send_shadows(to_send);
        c->backoff_ns = moved ? BACKOFF_MIN_NS
                              : c->backoff_ns * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS
                                                                   : c->backoff_ns * 2;
        pthread_mutex_lock(&c->lock);
    }
}

static void state_free(tcp_cuda *c)
{
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    for (int i = 0; i < c->nmade; i++)
        buf_free(c->made[i]);
    for (int d = 0; d < MAX_DEV; d++) {
        if (c->nevents[d])
            cu.set_device(d);
        for (size_t i = 0; i < c->nevents[d]; i++)
            cu.event_destroy(c->events[d][i]);
        free(c->events[d]);
    }
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->stage.lock);
    pthread_cond_destroy(&c->stage.cond);
    pthread_mutex_destroy(&c->serve.lock);
    pthread_cond_destroy(&c->serve.cond);
    free(c);
}

void tcp_cuda_destroy(tcp_transport *t)
{
    tcp_cuda *c = atomic_exchange(&t->cuda, NULL);
    if (c)
        state_free(c);
}
