/* bench_run.c - the initiator's measurement: an optional verification round
 * trip, then threads looping allocate/submit/wait/free until the duration
 * ends; throughput, op rate and latency percentiles as text or JSON. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "te_bench.h"

typedef struct bench_cfg {
    uint64_t block;
    size_t batch; /* effective: at most region / block */
    int threads;
    int opcode;
    bool scatter;
    uint64_t region; /* bytes of each buffer a thread owns */
} bench_cfg;

struct run;

typedef struct worker {
    pthread_t tid;
    struct run *run;
    te_request *reqs;
    int64_t *lat; /* batch completion times, ns */
    size_t nlat, cap;
    atomic_uint_fast64_t ops;
    int error;
} worker;

typedef struct run {
    const bench_target *t;
    const bench_cfg *cfg;
    atomic_bool stop;
    pthread_barrier_t start;
    worker *w;
} run;

typedef struct result {
    double seconds;
    uint64_t ops, batches;
    double gbps, ops_per_sec;
    double p50, p99, p999;       /* per op, us */
    double bp50, bp99, bp999;    /* per batch, us */
    int verified;                /* 1 ok, 0 failed, -1 not run */
    int error;
} result;

/* ---- helpers --------------------------------------------------------------- */

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void *bench_alloc(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void bench_free(void *p, size_t len)
{
    if (p)
        munmap(p, len);
}

static const char *human_size(uint64_t n, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB"};
    int u = 0;
    while (u < 3 && n >= 1024 && n % 1024 == 0) {
        n /= 1024;
        u++;
    }
    snprintf(buf, len, "%" PRIu64 " %s", n, units[u]);
    return buf;
}

/* ---- verification: a write and a read of one batch, checked ---------------- */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 32);
}

/* Byte `pos` of the pattern is byte pos%8 of mix(pos/8 + seed). */
static void pattern(uint8_t *p, uint64_t len, uint64_t seed, uint64_t pos)
{
    for (uint64_t i = 0; i < len;) {
        uint64_t w = mix(((pos + i) >> 3) + seed);
        if (((pos + i) & 7) == 0 && len - i >= 8) {
            memcpy(p + i, &w, 8);
            i += 8;
        } else {
            p[i] = (uint8_t)(w >> (8 * ((pos + i) & 7)));
            i++;
        }
    }
}

static int pattern_ok(const uint8_t *p, uint64_t len, uint64_t seed, uint64_t pos)
{
    uint8_t tmp[65536];
    for (uint64_t off = 0; off < len; off += sizeof tmp) {
        uint64_t n = len - off < sizeof tmp ? len - off : sizeof tmp;
        pattern(tmp, n, seed, pos + off);
        if (memcmp(tmp, p + off, n))
            return 0;
    }
    return 1;
}

static int verify_pass(const bench_target *t, const te_request *reqs, size_t n)
{
    te_request *rw = malloc(n * sizeof *rw);
    if (!rw)
        return 0;
    uint64_t seed = (uint64_t)now_ns();
    for (size_t i = 0; i < n; i++) {
        rw[i] = reqs[i];
        rw[i].opcode = TE_OP_WRITE;
        pattern(rw[i].local, rw[i].length, seed, rw[i].remote - t->remote);
    }
    int ok = te_transfer_sync(t->eng, rw, n, NULL, NULL) == 0;
    for (size_t i = 0; i < n; i++) {
        memset(rw[i].local, 0, rw[i].length);
        rw[i].opcode = TE_OP_READ;
    }
    ok = ok && te_transfer_sync(t->eng, rw, n, NULL, NULL) == 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = pattern_ok(rw[i].local, rw[i].length, seed, rw[i].remote - t->remote);
    free(rw);
    return ok;
}

/* ---- the loop -------------------------------------------------------------- */

static int one_batch(te_engine *e, const te_request *reqs, size_t n)
{
    te_batch_id id;
    int rc = te_batch_allocate(e, n, &id);
    if (rc)
        return rc;
    rc = te_submit(e, id, reqs, n);
    if (rc == 0) {
        int st = TE_TRANSFER_FAILED;
        te_batch_wait(e, id, -1, &st);
        rc = st == TE_TRANSFER_COMPLETED ? 0 : st == TE_TRANSFER_TIMEOUT ? TE_ERR_TIMEOUT
                                                                          : TE_ERR_REMOTE;
    }
    te_batch_free(e, id);
    return rc;
}

static void record(worker *w, int64_t ns)
{
    if (w->nlat == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 4096;
        int64_t *n = cap <= (64u << 20) ? realloc(w->lat, cap * sizeof *n) : NULL;
        if (!n)
            return; /* keep measuring; the percentiles use what fits */
        w->lat = n;
        w->cap = cap;
    }
    w->lat[w->nlat++] = ns;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    run *r = w->run;
    size_t n = r->cfg->batch;
    int rc = one_batch(r->t->eng, w->reqs, n); /* warm-up, not counted */
    pthread_barrier_wait(&r->start);
    while (!rc && !atomic_load(&r->stop)) {
        int64_t t0 = now_ns();
        rc = one_batch(r->t->eng, w->reqs, n);
        if (rc)
            break;
        record(w, now_ns() - t0);
        atomic_fetch_add(&w->ops, n);
    }
    if (rc) {
        w->error = rc;
        atomic_store(&r->stop, true);
    }
    return NULL;
}

/* Thread i owns [i*region, (i+1)*region) of both buffers; block j of a
 * batch sits at offset j*block inside it, so no two requests overlap. */
static te_request *make_requests(const bench_target *t, const bench_cfg *c, int i)
{
    te_request *reqs = calloc(c->batch, sizeof *reqs);
    if (!reqs)
        return NULL;
    uint64_t base = (uint64_t)i * c->region;
    for (size_t j = 0; j < c->batch; j++) {
        size_t to = c->scatter ? c->batch - 1 - j : j;
        reqs[j] = (te_request){c->opcode, t->local + base + j * c->block, t->seg,
                               t->remote + base + to * c->block, c->block};
    }
    return reqs;
}

static void progress(const run *r, double start, const char *what)
{
    uint64_t ops = 0;
    for (int i = 0; i < r->cfg->threads; i++)
        ops += atomic_load(&r->w[i].ops);
    double s = bench_now() - start;
    if (s <= 0)
        return;
    fprintf(stderr, "\r\033[K  %s: %5.1f s  %8.3f GB/s  %10.0f ops/s", what, s,
            (double)ops * (double)r->cfg->block / s / 1e9, (double)ops / s);
}

/* The progress line: on a terminal only (stderr), never with --json (whose
 * reader wants clean output), rewritten in place once a second. */
static void wait_duration(const run *r, double start, double duration, const char *what,
                          bool show)
{
    bool tty = show && isatty(STDERR_FILENO);
    double next_print = start + 1.0;
    while (!atomic_load(&r->stop)) {
        double left = start + duration - bench_now();
        if (left <= 0)
            break;
        struct timespec ts = {0, (long)((left < 0.25 ? left : 0.25) * 1e9)};
        nanosleep(&ts, NULL);
        if (tty && bench_now() >= next_print) {
            progress(r, start, what);
            next_print += 1.0;
        }
    }
    if (tty)
        fprintf(stderr, "\r\033[K");
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
static double pct(const int64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(q * (double)n);
    return (double)v[k ? k - 1 : 0] / 1e3;
}

static void summarize(run *r, double seconds, result *res)
{
    size_t total = 0;
    for (int i = 0; i < r->cfg->threads; i++) {
        total += r->w[i].nlat;
        res->ops += atomic_load(&r->w[i].ops);
        if (r->w[i].error && !res->error)
            res->error = r->w[i].error;
    }
    int64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; all && i < r->cfg->threads; i++)
        for (size_t j = 0; j < r->w[i].nlat; j++)
            all[k++] = r->w[i].lat[j];
    qsort(all, k, sizeof *all, cmp_i64);
    double per_op = 1.0 / (double)r->cfg->batch;
    res->seconds = seconds;
    res->batches = total;
    res->gbps = (double)res->ops * (double)r->cfg->block / seconds / 1e9;
    res->ops_per_sec = (double)res->ops / seconds;
    res->bp50 = pct(all, k, 0.50);
    res->bp99 = pct(all, k, 0.99);
    res->bp999 = pct(all, k, 0.999);
    res->p50 = res->bp50 * per_op;
    res->p99 = res->bp99 * per_op;
    res->p999 = res->bp999 * per_op;
    free(all);
}

static int measure(const bench_opts *o, const bench_target *t, const bench_cfg *c, result *res)
{
    run r = {.t = t, .cfg = c};
    r.w = calloc((size_t)c->threads, sizeof *r.w);
    if (!r.w)
        return TE_ERR_MEMORY;
    atomic_init(&r.stop, false);
    pthread_barrier_init(&r.start, NULL, (unsigned)c->threads + 1);
    int started = 0;
    for (int i = 0; i < c->threads; i++) {
        r.w[i].run = &r;
        r.w[i].reqs = make_requests(t, c, i);
        if (!r.w[i].reqs || pthread_create(&r.w[i].tid, NULL, worker_main, &r.w[i]))
            break;
        started++;
    }
    if (started < c->threads) { /* cannot happen short of memory; fail cleanly */
        fprintf(stderr, "te-bench: cannot start %d threads\n", c->threads);
        exit(1);
    }
    pthread_barrier_wait(&r.start);
    double start = bench_now();
    char what[64], sz[32];
    snprintf(what, sizeof what, "%s %s x%zu", o->operation, human_size(c->block, sz, sizeof sz),
             c->batch);
    wait_duration(&r, start, o->duration, what, !o->json);
    atomic_store(&r.stop, true);
    for (int i = 0; i < c->threads; i++)
        pthread_join(r.w[i].tid, NULL);
    summarize(&r, bench_now() - start, res);
    for (int i = 0; i < c->threads; i++) {
        free(r.w[i].reqs);
        free(r.w[i].lat);
    }
    free(r.w);
    pthread_barrier_destroy(&r.start);
    return res->error;
}

/* ---- reporting ------------------------------------------------------------- */

static const char *same_host_mode(const char *proto)
{
    int on = 1; /* read as the engine reads it */
    if (strcmp(proto, "tcp") != 0)
        return "n/a";
    te_config_bool("MC_TE_SAME_HOST_TRANSPORT", &on);
    return on ? "auto" : "off";
}

/* The transport that actually carried the requests: with --protocol tcp a
 * same-host target is served by shm unless MC_TE_SAME_HOST_TRANSPORT=0. */
static const char *segment_transport(const bench_target *t)
{
    const char *name = NULL;
    return te_segment_transport(t->eng, t->seg, &name) == 0 ? name : "?";
}

static void print_json(const bench_opts *o, const bench_target *t, const bench_cfg *c,
                       const result *r)
{
    const char *proto = te_engine_protocol(t->eng);
    printf("{\"block_size\":%" PRIu64 ",\"batch_size\":%zu,\"threads\":%d,"
           "\"operation\":\"%s\",\"protocol\":\"%s\",\"transport\":\"%s\","
           "\"same_host\":\"%s\",\"segment\":\"%s\","
           "\"duration_s\":%.3f,\"ops\":%" PRIu64 ",\"batches\":%" PRIu64 ","
           "\"throughput_gbps\":%.4f,\"ops_per_sec\":%.1f,"
           "\"p50_us\":%.3f,\"p99_us\":%.3f,\"p999_us\":%.3f,"
           "\"batch_p50_us\":%.2f,\"batch_p99_us\":%.2f,\"batch_p999_us\":%.2f,"
           "\"latency\":\"per_op=batch_time/batch_size\",\"scatter\":%s,\"verified\":%s,"
           "\"error\":%d}\n",
           c->block, c->batch, c->threads, o->operation, proto, segment_transport(t),
           same_host_mode(proto), t->segment,
           r->seconds, r->ops, r->batches, r->gbps, r->ops_per_sec, r->p50, r->p99, r->p999,
           r->bp50, r->bp99, r->bp999, c->scatter ? "true" : "false",
           r->verified < 0 ? "null" : r->verified ? "true" : "false", r->error);
    fflush(stdout);
}

static void print_text(const bench_opts *o, const bench_target *t, const bench_cfg *c,
                       const result *r)
{
    char sz[32];
    const char *proto = te_engine_protocol(t->eng), *used = segment_transport(t);
    char via[96];
    if (strcmp(used, proto))
        snprintf(via, sizeof via, "%s (same-host transport, protocol %s)", used, proto);
    else
        snprintf(via, sizeof via, "%s", used);
    printf("%s over %s to %s: block %s, batch %zu, %d thread%s, %.2f s\n", o->operation, via,
           t->segment, human_size(c->block, sz, sizeof sz), c->batch, c->threads,
           c->threads > 1 ? "s" : "", r->seconds);
    if (r->error)
        printf("  FAILED: a batch ended with %s (%d)\n", te_strerror(r->error), r->error);
    printf("  throughput %.3f GB/s (%.3f GiB/s), %.0f ops/s, %" PRIu64 " batches\n", r->gbps,
           r->gbps * 1e9 / (1u << 30), r->ops_per_sec, r->batches);
    printf("  latency per op (us): p50 %.2f  p99 %.2f  p99.9 %.2f;  per batch (us): p50 %.1f  "
           "p99 %.1f  p99.9 %.1f\n",
           r->p50, r->p99, r->p999, r->bp50, r->bp99, r->bp999);
    if (r->verified >= 0)
        printf("  verify: %s\n", r->verified ? "ok" : "FAILED (data differs)");
    fflush(stdout);
}

/* ---- configurations --------------------------------------------------------- */

static int plan(const bench_opts *o, const bench_target *t, uint64_t block, bench_cfg *c)
{
    uint64_t span = t->local_len < t->remote_len ? t->local_len : t->remote_len;
    c->block = block;
    c->threads = o->threads;
    c->opcode = o->opcode;
    c->scatter = o->scatter;
    c->region = span / (uint64_t)o->threads;
    if (c->region < block) {
        fprintf(stderr, "te-bench: block_size %" PRIu64 " does not fit buffer_size/threads "
                        "(%" PRIu64 " bytes)\n", block, c->region);
        return -1;
    }
    uint64_t fit = c->region / block;
    c->batch = (size_t)(o->batch_size < fit ? o->batch_size : fit);
    if (c->batch < o->batch_size)
        fprintf(stderr, "te-bench: block %" PRIu64 ": batch reduced to %zu so that its blocks "
                        "fit the buffer without overlapping (raise --buffer_size)\n",
                block, c->batch);
    return 0;
}

int bench_run_all(const bench_opts *o, const bench_target *t)
{
    uint64_t sizes[16];
    int n = 0, failed = 0;
    if (o->sweep)
        for (uint64_t s = 4096; s <= (64ull << 20); s *= 4)
            sizes[n++] = s;
    else
        sizes[n++] = o->block_size;
    for (int i = 0; i < n; i++) {
        bench_cfg c;
        if (plan(o, t, sizes[i], &c)) {
            failed = 1;
            continue;
        }
        result r = {.verified = -1};
        if (o->verify) {
            te_request *reqs = make_requests(t, &c, 0);
            r.verified = reqs && verify_pass(t, reqs, c.batch);
            free(reqs);
        }
        measure(o, t, &c, &r);
        if (o->json)
            print_json(o, t, &c, &r);
        else
            print_text(o, t, &c, &r);
        failed |= r.error != 0 || r.verified == 0;
    }
    return failed;
}
