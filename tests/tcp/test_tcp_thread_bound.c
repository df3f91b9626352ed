/* test_tcp_thread_bound.c - MC_TCP_MAX_LANE_THREADS bounds an engine's lane
 * threads however many peers are busy: engine A, allowed one or two lane
 * threads, writes and reads large batches to and from 12 peer engines (two
 * lanes each, so 24 lanes want a thread) in this process; every request
 * completes with the right data, lanes take turns, and the process never
 * holds more threads than before the transfers plus the bound.  And a lane
 * that always has work gives its thread up after its turn: with one thread,
 * a write to a second peer completes while a stream to the first goes on. */
#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "te/te.h"
#include "test_util.h"

#define PEERS 12
#define PER_PEER (2u << 20) /* over 2 x MC_TCP_LANE_MIN_BYTES: both lanes carry it */

static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static atomic_int g_max_threads;
static atomic_bool g_sampling;

/* Samples the thread count every 200 us while the transfers run. */
static void *sampler(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 200000};
    while (atomic_load(&g_sampling)) {
        int n = thread_count();
        if (n > atomic_load(&g_max_threads))
            atomic_store(&g_max_threads, n);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static te_engine *engine(void)
{
    te_engine *e = te_engine_create();
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL), 0);
    return e;
}

/* One batch of a request per peer (opcode), waited for; all must succeed. */
static void batch_to_all(te_engine *a, te_segment_id *segs, char *abuf, char **pbuf, int opcode)
{
    te_request req[PEERS];
    for (int i = 0; i < PEERS; i++)
        req[i] = (te_request){(uint32_t)opcode, abuf + (size_t)i * PER_PEER, segs[i],
                              (uint64_t)(uintptr_t)pbuf[i], PER_PEER};
    te_batch_id id;
    ck_assert_int_eq(te_batch_allocate(a, PEERS, &id), 0);
    ck_assert_int_eq(te_submit(a, id, req, PEERS), 0);
    int status = -1;
    ck_assert_int_eq(te_batch_wait(a, id, 60000, &status), 0);
    for (size_t i = 0; i < PEERS; i++) {
        int st = -1;
        ck_assert_int_eq(te_task_status(a, id, i, &st, NULL), 0);
        ck_assert_msg(st == TE_TRANSFER_COMPLETED, "task %zu: status %d (%s)", i, st,
                      te_last_error());
    }
    te_batch_free(a, id);
}

static void run_bounded(const char *bound, int limit)
{
    setenv("MC_TCP_MAX_LANE_THREADS", bound, 1);
    te_engine *a = engine();
    unsetenv("MC_TCP_MAX_LANE_THREADS");
    te_engine *peers[PEERS];
    char *pbuf[PEERS];
    te_segment_id segs[PEERS];
    char *abuf = aligned_alloc(4096, (size_t)PEERS * PER_PEER);
    ck_assert_int_eq(te_register_memory(a, abuf, (size_t)PEERS * PER_PEER, "cpu:0"), 0);
    for (int i = 0; i < PEERS; i++) {
        peers[i] = engine();
        pbuf[i] = aligned_alloc(4096, PER_PEER);
        ck_assert_int_eq(te_register_memory(peers[i], pbuf[i], PER_PEER, "cpu:0"), 0);
        ck_assert_int_eq(te_segment_open(a, te_engine_segment_name(peers[i]), &segs[i]), 0);
    }
    pthread_t th;
    atomic_store(&g_sampling, true);
    ck_assert_int_eq(pthread_create(&th, NULL, sampler, NULL), 0);
    int before = thread_count(); /* the sampler included, no lane thread yet */
    atomic_store(&g_max_threads, before);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < PEERS; i++)
            te_test_fill(abuf + (size_t)i * PER_PEER, PER_PEER, 100 + (uint64_t)(round * PEERS + i), 0);
        batch_to_all(a, segs, abuf, pbuf, TE_OP_WRITE);
        for (int i = 0; i < PEERS; i++)
            ck_assert_int_lt(te_test_check(pbuf[i], PER_PEER, 100 + (uint64_t)(round * PEERS + i), 0), 0);
        memset(abuf, 0, (size_t)PEERS * PER_PEER);
        batch_to_all(a, segs, abuf, pbuf, TE_OP_READ);
        for (int i = 0; i < PEERS; i++)
            ck_assert_int_lt(te_test_check(abuf + (size_t)i * PER_PEER, PER_PEER,
                                           100 + (uint64_t)(round * PEERS + i), 0), 0);
    }
    atomic_store(&g_sampling, false);
    pthread_join(th, NULL);
    int most = atomic_load(&g_max_threads);
    ck_assert_msg(most <= before + limit, "%d threads at most, %d before, bound %d", most, before,
                  limit);
    for (int i = 0; i < PEERS; i++) {
        te_engine_destroy(peers[i]);
        free(pbuf[i]);
    }
    te_engine_destroy(a);
    free(abuf);
}

/* ---- a busy lane gives way ------------------------------------------------- */

#define STREAM_BATCHES 8  /* kept in flight, so the lane always has queued work */
#define STREAM_SLICES 32
#define STREAM_BLOCK (1u << 20)

typedef struct stream {
    te_engine *a;
    te_segment_id seg;
    char *src;
    uint64_t dst;
    atomic_bool stop, running;
    int failures;
} stream;

/* Keeps STREAM_BATCHES batches of writes to one peer in flight until told
 * to stop: as one completes the next is submitted. */
static void *stream_main(void *arg)
{
    stream *st = arg;
    te_request req[STREAM_SLICES];
    for (int i = 0; i < STREAM_SLICES; i++)
        req[i] = (te_request){TE_OP_WRITE, st->src + (size_t)i * STREAM_BLOCK, st->seg,
                              st->dst + (uint64_t)i * STREAM_BLOCK, STREAM_BLOCK};
    te_batch_id ids[STREAM_BATCHES];
    for (int b = 0; b < STREAM_BATCHES; b++)
        if (te_batch_allocate(st->a, STREAM_SLICES, &ids[b]) || te_submit(st->a, ids[b], req, STREAM_SLICES))
            st->failures++;
    atomic_store(&st->running, true);
    for (int b = 0; !atomic_load(&st->stop); b = (b + 1) % STREAM_BATCHES) {
        int status = -1;
        if (te_batch_wait(st->a, ids[b], 60000, &status) || status != TE_TRANSFER_COMPLETED)
            st->failures++;
        te_batch_free(st->a, ids[b]);
        if (te_batch_allocate(st->a, STREAM_SLICES, &ids[b]) || te_submit(st->a, ids[b], req, STREAM_SLICES))
            st->failures++;
    }
    for (int b = 0; b < STREAM_BATCHES; b++) {
        int status = -1;
        te_batch_wait(st->a, ids[b], 60000, &status);
        te_batch_free(st->a, ids[b]);
    }
    atomic_store(&st->running, false);
    return NULL;
}

START_TEST(a_busy_lane_gives_its_thread_to_a_waiting_one)
{
    setenv("MC_TCP_MAX_LANE_THREADS", "1", 1);
    setenv("MC_TCP_LANES_PER_PEER", "1", 1);
    te_engine *a = engine();
    unsetenv("MC_TCP_MAX_LANE_THREADS");
    setenv("MC_TCP_LANES_PER_PEER", "2", 1);
    te_engine *p0 = engine(), *p1 = engine();
    size_t big = (size_t)STREAM_SLICES * STREAM_BLOCK;
    char *abuf = aligned_alloc(4096, big + 4096), *b0 = aligned_alloc(4096, big);
    char *b1 = aligned_alloc(4096, 4096);
    ck_assert_int_eq(te_register_memory(a, abuf, big + 4096, "cpu:0"), 0);
    ck_assert_int_eq(te_register_memory(p0, b0, big, "cpu:0"), 0);
    ck_assert_int_eq(te_register_memory(p1, b1, 4096, "cpu:0"), 0);
    stream st = {.a = a, .src = abuf, .dst = (uint64_t)(uintptr_t)b0};
    te_segment_id s1;
    ck_assert_int_eq(te_segment_open(a, te_engine_segment_name(p0), &st.seg), 0);
    ck_assert_int_eq(te_segment_open(a, te_engine_segment_name(p1), &s1), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, stream_main, &st), 0);
    while (!atomic_load(&st.running))
        sched_yield();
    te_test_fill(abuf + big, 4096, 7, 0);
    te_request w = {TE_OP_WRITE, abuf + big, s1, (uint64_t)(uintptr_t)b1, 4096};
    ck_assert_int_eq(te_transfer_sync(a, &w, 1, NULL, NULL), 0);
    bool streaming = atomic_load(&st.running); /* the stream had not stopped for it */
    atomic_store(&st.stop, true);
    pthread_join(th, NULL);
    ck_assert_msg(streaming, "the write to the second peer waited for the stream to end");
    ck_assert_int_lt(te_test_check(b1, 4096, 7, 0), 0);
    ck_assert_int_eq(st.failures, 0);
    te_engine_destroy(p0);
    te_engine_destroy(p1);
    te_engine_destroy(a);
    free(abuf);
    free(b0);
    free(b1);
}
END_TEST

START_TEST(one_lane_thread_serves_every_peer)
{
    run_bounded("1", 1);
}
END_TEST

START_TEST(two_lane_threads_serve_every_peer)
{
    run_bounded("2", 2);
}
END_TEST

int main(void)
{
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1); /* tcp, not shm, between these engines */
    setenv("MC_TCP_LANES_PER_PEER", "2", 1);
    Suite *s = suite_create("tcp_thread_bound");
    TCase *tc = tcase_create("bound");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, one_lane_thread_serves_every_peer);
    tcase_add_test(tc, two_lane_threads_serve_every_peer);
    tcase_add_test(tc, a_busy_lane_gives_its_thread_to_a_waiting_one);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
