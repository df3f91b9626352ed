/* test_tcp_sync.c - small synchronous requests over tcp with one data-port
 * thread (MC_TCP_SERVER_THREADS=1), engines in this process on loopback.
 * While one caller keeps that thread busy with back-to-back 64-byte writes
 * (it waits for each next request in a blocking recv: tcp_srv_loop.c), a
 * second engine's first request, on a new connection, is still served
 * promptly, and every write of both lands. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

#define SIZE (1u << 20)
#define STREAM_S 3.0 /* how long the first caller writes back to back */

static te_engine *target;
static uint8_t *remote;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static te_engine *engine(void)
{
    te_engine *e = te_engine_create();
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL), 0);
    return e;
}

typedef struct caller {
    te_engine *e;
    uint8_t *local;
    uint64_t base;  /* its part of the target's buffer */
    double until;
    atomic_uint writes; /* read by the test while the stream runs */
    int error;
} caller;

/* Writes 64-byte blocks one at a time into [base, base + SIZE/2) of the target. */
static void *stream(void *arg)
{
    caller *c = arg;
    te_segment_id seg;
    c->error = te_segment_open(c->e, te_engine_segment_name(target), &seg);
    for (uint64_t off = 0; !c->error && now_s() < c->until; off = (off + 64) % (SIZE / 2)) {
        unsigned k = atomic_load(&c->writes);
        te_test_fill(c->local + off, 64, k, 0);
        te_request w = {TE_OP_WRITE, c->local + off, seg, (uint64_t)(uintptr_t)remote + c->base + off,
                        64};
        c->error = te_transfer_sync(c->e, &w, 1, NULL, NULL);
        if (!c->error && te_test_check(remote + c->base + off, 64, k, 0) >= 0)
            c->error = -1000; /* acknowledged but not in the target's memory */
        atomic_store(&c->writes, k + 1);
    }
    return NULL;
}

START_TEST(a_new_connection_is_served_while_a_sync_caller_streams)
{
    target = engine();
    remote = aligned_alloc(4096, SIZE);
    memset(remote, 0, SIZE);
    ck_assert_int_eq(te_register_memory(target, remote, SIZE, "cpu:0"), 0);
    caller a = {engine(), aligned_alloc(4096, SIZE), 0, now_s() + STREAM_S, 0, 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, stream, &a), 0);
    usleep(500000); /* the stream is under way */
    caller b = {engine(), aligned_alloc(4096, SIZE), SIZE / 2, 0, 0, 0};
    double t0 = now_s();
    b.until = t0 + 0.05; /* connect, then a few writes */
    stream(&b);
    double took = now_s() - t0;
    unsigned before = atomic_load(&a.writes);
    pthread_join(th, NULL);
    printf("  second caller: %u writes in %.3f s while the first streamed (%u writes in all)\n",
           atomic_load(&b.writes), took, atomic_load(&a.writes));
    ck_assert_int_eq(b.error, 0);
    ck_assert_int_eq(a.error, 0);
    ck_assert_uint_gt(atomic_load(&b.writes), 0);
    ck_assert_uint_gt(atomic_load(&a.writes) - before, 0); /* the first one went on meanwhile */
    /* A new connection waits at most one SRV_LINGER_US for the loop, not for
     * the stream's end (STREAM_S); loaded machines get slack. */
    ck_assert_double_lt(took, 1.0);
    te_engine_destroy(b.e);
    te_engine_destroy(a.e);
    te_engine_destroy(target);
    free(a.local);
    free(b.local);
    free(remote);
}
END_TEST

int main(void)
{
    setenv("MC_TCP_SERVER_THREADS", "1", 1);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    setenv("MC_LOG_LEVEL", "ERROR", 0);
    Suite *s = suite_create("tcp_sync");
    TCase *tc = tcase_create("one_loop");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_new_connection_is_served_while_a_sync_caller_streams);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
