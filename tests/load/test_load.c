/* test_load.c - load test: N initiator processes x M threads against one
 * target for a bounded time, each thread writing, reading back and checking
 * its own region; prints transfers, bytes, errors (must be 0), percentiles.
 * Knobs TE_LOAD_PROCS/THREADS/SECONDS; "--initiator ..." runs one initiator. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

#define KIB 1024u
#define MIB (1024u * KIB)
#define REGION (2 * MIB)   /* per thread on the target */
#define MAX_LEN (1 * MIB)  /* largest transfer */
#define BUCKETS 512        /* latency histogram: bucket i covers [1.05^i, 1.05^(i+1)) us */
#define MAX_PROCS 16

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int bucket_of(double us)
{
    int b = us <= 1 ? 0 : (int)(log(us) / log(1.05));
    return b < BUCKETS ? b : BUCKETS - 1;
}

static double bucket_top(int b)
{
    return pow(1.05, b + 1);
}

static long env_long(const char *name, long def, long min, long max)
{
    const char *v = getenv(name);
    long x = v ? strtol(v, NULL, 10) : def;
    return x < min ? min : x > max ? max : x;
}

/* ---- one initiator process ---------------------------------------------- */

typedef struct thread_stats {
    pthread_t th;
    int idx; /* global thread number: its region on the target */
    te_engine *eng;
    te_segment_id seg;
    uint64_t remote;
    double end;
    uint64_t transfers, bytes, errors;
    uint64_t hist[BUCKETS];
} thread_stats;

static int timed_transfer(thread_stats *t, int op, void *local, uint64_t len)
{
    te_request r = {op, local, t->seg, t->remote, len};
    double t0 = now_s();
    int rc = te_transfer_sync(t->eng, &r, 1, NULL, NULL);
    t->hist[bucket_of((now_s() - t0) * 1e6)]++;
    t->transfers++;
    if (rc) {
        fprintf(stderr, "thread %d: %s of %llu bytes failed: %d %s\n", t->idx,
                op == TE_OP_WRITE ? "write" : "read", (unsigned long long)len, rc, te_last_error());
        t->errors++;
    } else {
        t->bytes += len;
    }
    return rc;
}

static void *initiator_thread(void *arg)
{
    thread_stats *t = arg;
    uint8_t *src = aligned_alloc(4096, MAX_LEN), *dst = aligned_alloc(4096, MAX_LEN);
    te_buffer_entry bufs[2] = {{src, MAX_LEN}, {dst, MAX_LEN}};
    if (te_register_memory_batch(t->eng, bufs, 2, "cpu:0")) {
        t->errors++;
        return NULL;
    }
    for (uint64_t round = 0; now_s() < t->end; round++) {
        /* Sizes from 1 byte to 1 MiB, most of them small. */
        uint64_t len = round % 7 == 6 ? MAX_LEN : 1 + (round * 2654435761u) % (64 * KIB);
        uint64_t seed = ((uint64_t)t->idx << 40) | round;
        te_test_fill(src, len, seed, 0);
        memset(dst, 0, len);
        if (timed_transfer(t, TE_OP_WRITE, src, len) || timed_transfer(t, TE_OP_READ, dst, len))
            continue;
        long long bad = te_test_check(dst, len, seed, 0);
        if (bad >= 0) {
            fprintf(stderr, "thread %d: round %llu: byte %lld of %llu read back wrong\n", t->idx,
                    (unsigned long long)round, bad, (unsigned long long)len);
            t->errors++;
        }
    }
    te_unregister_memory_batch(t->eng, (void *const[]){src, dst}, 2);
    free(src);
    free(dst);
    return NULL;
}

/* argv: --initiator <segment> <target addr hex> <first thread> <threads> <seconds> */
static int initiator_main(char **argv)
{
    const char *segment = argv[2];
    uint64_t addr = strtoull(argv[3], NULL, 16);
    int first = atoi(argv[4]), nthreads = atoi(argv[5]);
    double secs = atof(argv[6]);
    te_engine *eng = te_engine_create();
    te_segment_id seg;
    int rc = te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL);
    if (!rc)
        rc = te_segment_open(eng, segment, &seg);
    if (rc) {
        fprintf(stderr, "initiator: %d %s\n", rc, te_last_error());
        return 2;
    }
    thread_stats *ts = calloc((size_t)nthreads, sizeof *ts);
    double end = now_s() + secs;
    for (int i = 0; i < nthreads; i++) {
        ts[i] = (thread_stats){.idx = first + i, .eng = eng, .seg = seg,
                               .remote = addr + (uint64_t)(first + i) * REGION, .end = end};
        pthread_create(&ts[i].th, NULL, initiator_thread, &ts[i]);
    }
    uint64_t transfers = 0, bytes = 0, errors = 0, hist[BUCKETS] = {0};
    for (int i = 0; i < nthreads; i++) {
        pthread_join(ts[i].th, NULL);
        transfers += ts[i].transfers;
        bytes += ts[i].bytes;
        errors += ts[i].errors;
        for (int b = 0; b < BUCKETS; b++)
            hist[b] += ts[i].hist[b];
    }
    te_engine_destroy(eng);
    printf("RESULT %llu %llu %llu", (unsigned long long)transfers, (unsigned long long)bytes,
           (unsigned long long)errors);
    for (int b = 0; b < BUCKETS; b++)
        if (hist[b])
            printf(" %d:%llu", b, (unsigned long long)hist[b]);
    printf("\n");
    free(ts);
    return 0;
}

/* ---- the coordinator ------------------------------------------------------ */

typedef struct child {
    pid_t pid;
    FILE *out;
} child;

static int spawn(child *c, const char *self, char *const args[])
{
    int fds[2];
    if (pipe(fds))
        return -1;
    c->pid = fork();
    if (c->pid < 0)
        return -1;
    if (c->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(self, args);
        _exit(127);
    }
    close(fds[1]);
    c->out = fdopen(fds[0], "r");
    return 0;
}

static double percentile(const uint64_t *hist, uint64_t total, double p)
{
    uint64_t want = (uint64_t)ceil(total * p), seen = 0;
    for (int b = 0; b < BUCKETS; b++) {
        seen += hist[b];
        if (seen >= want && hist[b])
            return bucket_top(b);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 7 && !strcmp(argv[1], "--initiator"))
        return initiator_main(argv);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1); /* load the network path */
    setenv("MC_LOG_LEVEL", "ERROR", 0);
    int procs = (int)env_long("TE_LOAD_PROCS", 3, 1, MAX_PROCS);
    int threads = (int)env_long("TE_LOAD_THREADS", 4, 1, 64);
    long secs = env_long("TE_LOAD_SECONDS", 20, 1, 3600);
    char size[32];
    snprintf(size, sizeof size, "%llu", (unsigned long long)procs * threads * REGION);
    te_test_peer target;
    const char *targs[] = {"--size", size, NULL};
#ifdef __SANITIZE_THREAD__
    /* A thread's write and read-back reach the target on two connections;
     * with two server loops the target's memcpy of the one and sendmsg of
     * the other race in TSan's eyes (their order is on the wire), and each
     * suppressed report of a 1 MiB payload can stall a loop past the 30 s
     * deadline.  One loop orders them. */
    setenv("MC_TCP_SERVER_THREADS", "1", 1);
#endif
    if (te_test_peer_start(&target, targs)) {
        fprintf(stderr, "cannot start the target\n");
        return 1;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    printf("load: %d initiator processes x %d threads against %s for %ld s\n", procs, threads,
           target.segment, secs);
    fflush(stdout);
    child kids[MAX_PROCS];
    char addr[32], secs_s[32], first[MAX_PROCS][16], nth[16];
    snprintf(addr, sizeof addr, "%llx", (unsigned long long)target.addr);
    snprintf(secs_s, sizeof secs_s, "%ld", secs);
    snprintf(nth, sizeof nth, "%d", threads);
    for (int p = 0; p < procs; p++) {
        snprintf(first[p], sizeof first[p], "%d", p * threads);
        char *const args[] = {self, "--initiator", target.segment, addr, first[p], nth, secs_s,
                              NULL};
        if (spawn(&kids[p], self, args)) {
            fprintf(stderr, "cannot start initiator %d\n", p);
            return 1;
        }
    }
    uint64_t transfers = 0, bytes = 0, errors = 0, hist[BUCKETS] = {0};
    int failed = 0;
    double deadline = now_s() + secs + 60;
    for (int p = 0; p < procs; p++) {
        /* Each initiator prints one RESULT line when done. */
        char *line = NULL;
        size_t cap = 0;
        struct pollfd pf = {.fd = fileno(kids[p].out), .events = POLLIN};
        int left = (int)((deadline - now_s()) * 1000);
        if (left <= 0 || poll(&pf, 1, left) != 1 || getline(&line, &cap, kids[p].out) <= 0 ||
            strncmp(line, "RESULT ", 7) != 0) {
            fprintf(stderr, "initiator %d gave no result in time\n", p);
            kill(kids[p].pid, SIGKILL);
            failed = 1;
            free(line);
            continue;
        }
        unsigned long long t, by, e;
        int off = 0;
        if (sscanf(line, "RESULT %llu %llu %llu%n", &t, &by, &e, &off) != 3) {
            failed = 1;
        } else {
            transfers += t;
            bytes += by;
            errors += e;
            int b;
            unsigned long long c;
            int used;
            for (char *s = line + off; sscanf(s, " %d:%llu%n", &b, &c, &used) == 2; s += used)
                if (b >= 0 && b < BUCKETS)
                    hist[b] += c;
        }
        free(line);
    }
    for (int p = 0; p < procs; p++) {
        int st = 0;
        waitpid(kids[p].pid, &st, 0);
        fclose(kids[p].out);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "initiator %d exited with status 0x%x\n", p, st);
            failed = 1;
        }
    }
    te_test_peer_stop(&target);
    printf("load: %llu transfers, %.1f MiB (%.1f MiB/s), %llu errors; latency p50 %.0f us, "
           "p99 %.0f us, p99.9 %.0f us\n",
           (unsigned long long)transfers, bytes / (double)MIB, bytes / (double)MIB / (double)secs,
           (unsigned long long)errors, percentile(hist, transfers, 0.50),
           percentile(hist, transfers, 0.99), percentile(hist, transfers, 0.999));
    if (errors || failed || transfers == 0) {
        printf("load: FAILED\n");
        return 1;
    }
    return 0;
}
