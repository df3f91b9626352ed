/* test_faults_peer.c - the target process SIGKILLed or SIGSTOPped under many
 * batches from several threads: every batch settles by its deadline, completed
 * READs hold the target's data, completed WRITEs are in its memory, and the
 * engine works with the resumed or a new peer. */
#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault_util.h"
#include "te/te.h"
#include "test_util.h"

#define KIB 1024u
#define MIB (1024u * KIB)
#define THREADS 4
#define INFLIGHT 4      /* batches in flight per thread */
#define REQ 2           /* writes and reads per batch (2 + 2 requests) */
/* bytes per request, and per thread on the peer (writes below half, reads
 * above): small under TSan, where cross-process bytes are costly */
#define LEN (FAULT_TSAN ? 4 * KIB : 32 * KIB)
#define REGION (FAULT_TSAN ? 256 * KIB : 8 * MIB)
#define SLOTS (8 * MIB / 2 / (32 * KIB)) /* the most REGION / 2 / LEN can be */
#define NSLOTS (REGION / 2 / LEN)
#define READ_SEED(t) (5000 + (t))
#define TIMEOUT_S 2

static te_test_peer peer;
static te_engine *eng;
static uint8_t *local; /* per thread: INFLIGHT * 2 * REQ * LEN */
static te_segment_id seg;
static atomic_bool stop_flag;

typedef struct worker {
    int t;
    pthread_t th;
    uint64_t batches, completed, failed, submit_errors, corrupt_reads;
    atomic_uint completed_now; /* completed, readable while the thread runs */
    double worst_overrun; /* seconds past deadline a batch needed to settle */
    double worst_submit;  /* seconds one te_submit took (it may look the peer up) */
    uint64_t slot_seed[SLOTS];
    bool slot_done[SLOTS];
    unsigned next_slot, next_read;
} worker;

static worker workers[THREADS];

typedef struct pending {
    te_batch_id id;
    double deadline;
    unsigned slot[REQ], read_off[REQ];
    uint64_t seed[REQ];
    uint8_t *rbuf;
} pending;

static uint8_t *thread_mem(int t)
{
    return local + (size_t)t * INFLIGHT * 2 * REQ * LEN;
}

static void setup(void)
{
    char size[32];
    snprintf(size, sizeof size, "%u", THREADS * REGION);
    const char *args[] = {"--size", size, NULL};
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
    for (int t = 0; t < THREADS; t++) {
        char cmd[128], reply[64];
        snprintf(cmd, sizeof cmd, "fill %u %u %d", t * REGION + REGION / 2, REGION / 2,
                 READ_SEED(t));
        ck_assert_int_eq(te_test_peer_cmd(&peer, cmd, reply, sizeof reply), 0);
        ck_assert_str_eq(reply, "OK");
    }
    te_test_engine_to_peer(&peer, (size_t)THREADS * INFLIGHT * 2 * REQ * LEN, &eng, &local, &seg);
    memset(workers, 0, sizeof workers);
    atomic_store(&stop_flag, false);
}

static void teardown(void)
{
    if (peer.pid > 0) {
        te_test_peer_kill(&peer, SIGCONT);
        te_test_peer_stop(&peer);
    }
    te_engine_destroy(eng);
    free(local);
}

static bool submit_one(worker *w, pending *p, int k)
{
    uint8_t *mem = thread_mem(w->t) + (size_t)k * 2 * REQ * LEN;
    p->rbuf = mem + REQ * LEN;
    te_request reqs[2 * REQ];
    uint64_t base = peer.addr + (uint64_t)w->t * REGION;
    for (int i = 0; i < REQ; i++) {
        unsigned slot = w->next_slot++ % NSLOTS;
        uint64_t seed = ((uint64_t)w->t << 40) | (w->batches << 8) | (uint64_t)i;
        te_test_fill(mem + (size_t)i * LEN, LEN, seed, 0);
        reqs[i] = (te_request){TE_OP_WRITE, mem + (size_t)i * LEN, seg, base + (uint64_t)slot * LEN,
                               LEN};
        p->slot[i] = slot;
        p->seed[i] = seed;
        unsigned roff = (w->next_read++ * 7919u * 64u) % (REGION / 2 - LEN);
        memset(p->rbuf + (size_t)i * LEN, 0, LEN);
        reqs[REQ + i] = (te_request){TE_OP_READ, p->rbuf + (size_t)i * LEN, seg,
                                     base + REGION / 2 + roff, LEN};
        p->read_off[i] = roff;
    }
    ck_assert_int_eq(te_batch_allocate(eng, 2 * REQ, &p->id), 0);
    double t0 = fault_now();
    p->deadline = t0 + fault_secs(TIMEOUT_S);
    int rc = te_submit(eng, p->id, reqs, 2 * REQ);
    double dt = fault_now() - t0;
    if (dt > w->worst_submit)
        w->worst_submit = dt;
    /* A stale segment is looked up again inside submit: bounded by the
     * handshake timeout. */
    ck_assert_msg(dt < fault_secs(TIMEOUT_S) + 1.5 * fault_scale(), "submit took %.2f s", dt);
    if (rc) {
        /* The peer is gone and cannot be resolved again: refused whole. */
        w->submit_errors++;
        ck_assert_int_eq(te_batch_free(eng, p->id), 0);
        return false;
    }
    for (int i = 0; i < REQ; i++) {
        w->slot_seed[p->slot[i]] = p->seed[i];
        w->slot_done[p->slot[i]] = false;
    }
    w->batches++;
    return true;
}

/* Waits until the batch has settled and every task is final. */
static void settle(worker *w, pending *p)
{
    /* This thread may come late (it was inside a slow submit): measure from
     * the later of the deadline and now. */
    double from = fault_now() > p->deadline ? fault_now() : p->deadline;
    int st = -1;
    te_batch_wait(eng, p->id, -1, &st);
    ck_assert_msg(st != TE_TRANSFER_WAITING, "batch still waiting after its wait");
    /* A TIMEOUT status comes at the deadline; the tasks themselves must
     * end (FAILED) soon after, before their memory is reused. */
    int task_st[2 * REQ];
    for (;;) {
        bool final = true;
        for (int i = 0; i < 2 * REQ; i++) {
            ck_assert_int_eq(te_task_status(eng, p->id, (size_t)i, &task_st[i], NULL), 0);
            final &= task_st[i] == TE_TRANSFER_COMPLETED || task_st[i] == TE_TRANSFER_FAILED;
        }
        if (final)
            break;
        ck_assert_msg(fault_now() < from + 1.0 * fault_scale(),
                      "batch not settled %.1f s after its deadline", fault_now() - from);
        usleep(2000);
    }
    double over = fault_now() - from;
    if (over > w->worst_overrun)
        w->worst_overrun = over;
    bool all = true;
    for (int i = 0; i < REQ; i++) {
        if (task_st[i] == TE_TRANSFER_COMPLETED && w->slot_seed[p->slot[i]] == p->seed[i])
            w->slot_done[p->slot[i]] = true;
        all &= task_st[i] == TE_TRANSFER_COMPLETED;
        if (task_st[REQ + i] == TE_TRANSFER_COMPLETED &&
            te_test_check(p->rbuf + (size_t)i * LEN, LEN, READ_SEED(w->t), p->read_off[i]) != -1)
            w->corrupt_reads++;
        all &= task_st[REQ + i] == TE_TRANSFER_COMPLETED;
    }
    if (all) {
        w->completed++;
        atomic_fetch_add(&w->completed_now, 1);
    }
    else
        w->failed++;
    ck_assert_int_eq(te_batch_free(eng, p->id), 0);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pending ring[INFLIGHT];
    bool used[INFLIGHT] = {false};
    for (unsigned k = 0; !atomic_load(&stop_flag); k = (k + 1) % INFLIGHT) {
        if (used[k])
            settle(w, &ring[k]);
        used[k] = submit_one(w, &ring[k], (int)k);
        if (!used[k])
            usleep(5000);
    }
    for (int k = 0; k < INFLIGHT; k++)
        if (used[k])
            settle(w, &ring[k]);
    return NULL;
}

static void run_workers_with(void (*fault)(void))
{
    for (int t = 0; t < THREADS; t++) {
        workers[t].t = t;
        ck_assert_int_eq(pthread_create(&workers[t].th, NULL, worker_main, &workers[t]), 0);
    }
    /* Traffic flowing: every thread has completed batches. */
    double until = fault_now() + 10.0 * fault_scale();
    for (int t = 0; t < THREADS; t++)
        while (atomic_load(&workers[t].completed_now) < 2 && fault_now() < until)
            usleep(10000);
    fault();
    usleep((useconds_t)(fault_secs(TIMEOUT_S) * 1e6) + 500000); /* through a deadline */
    atomic_store(&stop_flag, true);
    uint64_t batches = 0, completed = 0, failed = 0, serr = 0;
    double worst = 0, worst_submit = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(workers[t].th, NULL);
        worker *w = &workers[t];
        ck_assert_msg(w->corrupt_reads == 0, "thread %d: %llu completed reads hold wrong data", t,
                      (unsigned long long)w->corrupt_reads);
        ck_assert_uint_eq(w->completed + w->failed, w->batches);
        batches += w->batches;
        completed += w->completed;
        failed += w->failed;
        serr += w->submit_errors;
        if (w->worst_overrun > worst)
            worst = w->worst_overrun;
        if (w->worst_submit > worst_submit)
            worst_submit = w->worst_submit;
    }
    printf("  %llu batches: %llu completed, %llu failed, %llu refused at submit; "
           "worst settle %.2f s after the deadline, slowest submit %.2f s\n",
           (unsigned long long)batches, (unsigned long long)completed,
           (unsigned long long)failed, (unsigned long long)serr, worst, worst_submit);
    ck_assert_uint_gt(completed, 0); /* traffic did flow before the fault */
    ck_assert_uint_gt(failed + serr, 0); /* and the fault was felt */
}

/* Every write whose batch completed, and that no later write to the same
 * slot could overwrite, is in the peer's memory. */
static void check_completed_writes(void)
{
    int checked = 0;
    for (int t = 0; t < THREADS; t++)
        for (unsigned s = 0; s < NSLOTS; s++) {
            if (!workers[t].slot_done[s])
                continue;
            char cmd[128], reply[64];
            snprintf(cmd, sizeof cmd, "check %u %u %llu", t * REGION + s * LEN, LEN,
                     (unsigned long long)workers[t].slot_seed[s]);
            ck_assert_int_eq(te_test_peer_cmd(&peer, cmd, reply, sizeof reply), 0);
            ck_assert_msg(!strcmp(reply, "OK"), "thread %d slot %u: %s", t, s, reply);
            checked++;
        }
    printf("  %d completed writes verified in the peer\n", checked);
    ck_assert_int_gt(checked, 0);
}

/* Verified WRITE then READ (1 MiB, 64 KiB under TSan) with segment `id` of
 * peer `p`. */
static void transfer_works(te_test_peer *p, te_segment_id id, uint64_t off)
{
    te_test_write_then_read(eng, id, p, thread_mem(0), off, FAULT_TSAN ? 64 * KIB : MIB, 77);
}

static void kill_peer(void)
{
    te_test_peer_kill(&peer, SIGKILL);
}

static void stop_peer(void)
{
    te_test_peer_kill(&peer, SIGSTOP);
}

START_TEST(sigkill_mid_batches_from_many_threads)
{
    run_workers_with(kill_peer);
    /* The dead segment fails at once; a new peer works. */
    te_request w = {TE_OP_WRITE, thread_mem(0), seg, peer.addr, LEN};
    double t0 = fault_now();
    ck_assert_int_ne(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
    ck_assert_double_lt(fault_now() - t0, 1.0 * fault_scale());
    te_test_peer fresh;
    const char *args[] = {"--size", "4194304", NULL};
    ck_assert_int_eq(te_test_peer_start(&fresh, args), 0);
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(eng, fresh.segment, &id), 0);
    transfer_works(&fresh, id, 0);
    te_test_peer_stop(&fresh);
}
END_TEST

START_TEST(sigstop_mid_batches_from_many_threads)
{
    run_workers_with(stop_peer);
    te_test_peer_kill(&peer, SIGCONT);
    /* Let the resumed peer drain what its sockets still held. */
    usleep((useconds_t)(500000 * fault_scale()));
    check_completed_writes();
    transfer_works(&peer, seg, REGION / 4); /* the same peer, after it resumed */
}
END_TEST

/* Small synchronous writes are driven by the calling thread (a blocking
 * receive bounded by the lane's hand-over time, tcp_lane_drive.c): to a stopped
 * peer one still fails by its deadline, not later; to a killed one at once;
 * the resumed peer serves them again. */
static void small_sync_writes_land(uint64_t off, uint64_t seed, int n)
{
    for (int i = 0; i < n; i++) {
        char cmd[128];
        te_test_fill(thread_mem(0), 64, seed + (uint64_t)i, 0);
        te_request w = {TE_OP_WRITE, thread_mem(0), seg, peer.addr + off + (uint64_t)i * 64, 64};
        ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
        snprintf(cmd, sizeof cmd, "check %llu 64 %llu", (unsigned long long)(off + i * 64u),
                 (unsigned long long)(seed + (uint64_t)i));
        te_test_peer_expect(&peer, cmd, "OK");
    }
}

/* SIGSTOP is asynchronous: until the thread that takes it runs, the peer's
 * other threads (its data port) still serve.  Waits until every one shows T. */
static void wait_stopped(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    for (int tries = 0; tries < 5000; tries++) {
        DIR *d = opendir(dir);
        ck_assert_ptr_nonnull(d);
        bool all = true, any = false;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            char path[400], buf[512];
            snprintf(path, sizeof path, "%s/%s/stat", dir, de->d_name);
            FILE *f = fopen(path, "r");
            size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
            if (f)
                fclose(f);
            buf[n] = 0;
            char *paren = strrchr(buf, ')');
            if (!paren || paren[1] != ' ')
                continue;
            any = true;
            all = all && (paren[2] == 'T' || paren[2] == 't');
        }
        closedir(d);
        if (any && all)
            return;
        usleep(1000);
    }
    ck_abort_msg("peer %d did not stop", (int)pid);
}

START_TEST(small_sync_writes_to_a_stopped_or_killed_peer)
{
    small_sync_writes_land(0, 900, 20);
    te_test_peer_kill(&peer, SIGSTOP);
    wait_stopped(peer.pid);
    te_request w = {TE_OP_WRITE, thread_mem(0), seg, peer.addr, 64};
    double t0 = fault_now();
    ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), TE_ERR_TIMEOUT);
    double took = fault_now() - t0;
    printf("  a small sync write to a stopped peer failed after %.2f s (deadline %d s)\n", took,
           fault_secs(TIMEOUT_S));
    ck_assert_double_gt(took, 0.9 * fault_secs(TIMEOUT_S));
    ck_assert_double_lt(took, fault_secs(TIMEOUT_S) + 1.0 * fault_scale());
    te_test_peer_kill(&peer, SIGCONT);
    usleep((useconds_t)(200000 * fault_scale()));
    small_sync_writes_land(4096, 950, 20);
    te_test_peer_kill(&peer, SIGKILL);
    t0 = fault_now();
    ck_assert_int_ne(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
    ck_assert_double_lt(fault_now() - t0, 1.0 * fault_scale());
}
END_TEST

int main(void)
{
    fault_setenv_secs("MC_TRANSFER_TIMEOUT", TIMEOUT_S);
    fault_setenv_secs("MC_HANDSHAKE_CONNECT_TIMEOUT", TIMEOUT_S);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    setenv("MC_LOG_LEVEL", "ERROR", 0);
    Suite *s = suite_create("faults_peer");
    TCase *tc = tcase_create("peer_process");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 40 * fault_scale());
    tcase_add_test(tc, sigkill_mid_batches_from_many_threads);
    tcase_add_test(tc, sigstop_mid_batches_from_many_threads);
    tcase_add_test(tc, small_sync_writes_to_a_stopped_or_killed_peer);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
