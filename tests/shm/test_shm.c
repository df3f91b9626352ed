/* test_shm.c - shm between this process and te-test-peer: chosen on one host,
 * verified data, rejected ranges leave memory alone; tcp when the kernel
 * forbids the copy, the peer is on another host, or it is switched off. */
#include <check.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "te/te.h"
#include "test_util.h"

#define PEER_SIZE (16ull << 20)

static te_test_peer peer;
static te_engine *eng;
static uint8_t *local;
static te_segment_id seg;

/* Which transport the engine picked for a segment (the public view). */
static const char *transport_of(te_segment_id id)
{
    const char *name = NULL;
    ck_assert_int_eq(te_segment_transport(eng, id, &name), 0);
    ck_assert_ptr_nonnull(name);
    return name;
}

/* Starts the peer (with peer_env set in its environment only) and our engine. */
static void start_pair(const char *peer_env, const char *value)
{
    const char *args[] = {"--size", "16777216", NULL};
    if (peer_env)
        setenv(peer_env, value, 1);
    int rc = te_test_peer_start(&peer, args);
    if (peer_env)
        unsetenv(peer_env);
    ck_assert_int_eq(rc, 0);
    te_test_engine_to_peer(&peer, PEER_SIZE, &eng, &local, &seg);
}

static void teardown(void)
{
    if (peer.pid > 0)
        te_test_peer_stop(&peer);
    te_engine_destroy(eng);
    eng = NULL;
    free(local);
    local = NULL;
}

/* Over tcp the sizes stay small: ThreadSanitizer builds check every byte a
 * socket wrote, which is slow (over shm it sees no writes). */
static void verified_sizes(bool large)
{
    static const uint64_t sizes[] = {1, 4096, 65537, (1 << 20) + 1, (8ull << 20) + 3};
    for (int i = 0; i < (large ? 5 : 3); i++)
        te_test_write_then_read(eng, seg, &peer, local, (uint64_t)i * 13, sizes[i],
                                200 + (uint64_t)i);
}

START_TEST(same_host_peer_uses_shm_with_verified_data)
{
    start_pair(NULL, NULL);
    ck_assert_str_eq(transport_of(seg), "shm");
    verified_sizes(true);
}
END_TEST

/* 256 small requests in one batch: batched into few process_vm calls. */
START_TEST(scattered_batch_is_verified)
{
    enum { N = 256, LEN = 1000, STRIDE = 4096 };
    start_pair(NULL, NULL);
    te_request reqs[N];
    for (int i = 0; i < N; i++) {
        te_test_fill(local + i * STRIDE, LEN, 500 + (uint64_t)i, 0);
        reqs[i] = (te_request){TE_OP_WRITE, local + i * STRIDE, seg, peer.addr + i * STRIDE, LEN};
    }
    ck_assert_int_eq(te_transfer_sync(eng, reqs, N, NULL, NULL), 0);
    char cmd[128];
    for (int i = 0; i < N; i++) {
        snprintf(cmd, sizeof cmd, "check %d %d %d", i * STRIDE, LEN, 500 + i);
        te_test_peer_expect(&peer, cmd, "OK");
    }
    te_test_peer_expect(&peer, "fill 0 1048576 77", "OK");
    memset(local, 0, 1 << 20);
    for (int i = 0; i < N; i++)
        reqs[i] = (te_request){TE_OP_READ, local + i * STRIDE, seg, peer.addr + i * STRIDE + 7,
                               LEN};
    ck_assert_int_eq(te_transfer_sync(eng, reqs, N, NULL, NULL), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(te_test_check(local + i * STRIDE, LEN, 77, (uint64_t)i * STRIDE + 7), -1);
}
END_TEST

/* A batch of 128 4 KiB writes (copied by few process_vm_writev calls) into
 * the peer's buffer, a few of whose pages the peer made inaccessible: the
 * requests on those pages fail alone (TE_ERR_ADDRESS_NOT_REGISTERED, final:
 * no other transport is tried), every other one lands. */
START_TEST(batch_with_bad_pages_fails_only_those_requests)
{
    enum { N = 128, SZ = 4096 };
    static const int bad[] = {0, 1, 37, 64, 127};
    start_pair(NULL, NULL);
    ck_assert_str_eq(transport_of(seg), "shm");
    char cmd[128];
    for (size_t b = 0; b < sizeof bad / sizeof *bad; b++) {
        snprintf(cmd, sizeof cmd, "protect %d %d 0", bad[b] * SZ, SZ);
        te_test_peer_expect(&peer, cmd, "OK");
    }
    te_request reqs[N];
    for (int i = 0; i < N; i++) {
        te_test_fill(local + i * SZ, SZ, 900 + (uint64_t)i, 0);
        reqs[i] = (te_request){TE_OP_WRITE, local + i * SZ, seg, peer.addr + i * SZ, SZ};
    }
    te_batch_id b;
    ck_assert_int_eq(te_batch_allocate(eng, N, &b), 0);
    ck_assert_int_eq(te_submit(eng, b, reqs, N), 0);
    int st;
    ck_assert_int_eq(te_batch_wait(eng, b, 10000, &st), 0);
    for (int i = 0, k = 0; i < N; i++) {
        bool is_bad = k < (int)(sizeof bad / sizeof *bad) && bad[k] == i;
        k += is_bad;
        int ts = TE_TRANSFER_WAITING;
        for (int tries = 0; tries < 1000 && ts == TE_TRANSFER_WAITING; tries++) {
            ck_assert_int_eq(te_task_status(eng, b, (size_t)i, &ts, NULL), 0);
            if (ts == TE_TRANSFER_WAITING)
                nanosleep(&(struct timespec){0, 1000000}, NULL);
        }
        ck_assert_msg(ts == (is_bad ? TE_TRANSFER_FAILED : TE_TRANSFER_COMPLETED),
                      "request %d: state %d", i, ts);
        if (!is_bad) {
            snprintf(cmd, sizeof cmd, "check %d %d %d", i * SZ, SZ, 900 + i);
            te_test_peer_expect(&peer, cmd, "OK");
        }
    }
    te_batch_free(eng, b);
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        snprintf(cmd, sizeof cmd, "protect %d %d 1", bad[k] * SZ, SZ);
        te_test_peer_expect(&peer, cmd, "OK");
    }
    te_test_write_then_read(eng, seg, &peer, local, 0, 2 * SZ, 5); /* usable again */
}
END_TEST

START_TEST(range_outside_registered_memory_is_rejected)
{
    start_pair(NULL, NULL);
    ck_assert_str_eq(transport_of(seg), "shm");
    te_test_peer_expect(&peer, "fill 0 16777216 9", "OK");
    te_test_fill(local, 4096, 1, 0);
    te_request w = {TE_OP_WRITE, local, seg, peer.addr + PEER_SIZE - 100, 4096};
    ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), TE_ERR_ADDRESS_NOT_REGISTERED);
    te_request w2 = {TE_OP_WRITE, local, seg, peer.addr - 100, 200};
    ck_assert_int_eq(te_transfer_sync(eng, &w2, 1, NULL, NULL), TE_ERR_ADDRESS_NOT_REGISTERED);
    te_request r = {TE_OP_READ, local, seg, peer.addr - 4096, 100};
    ck_assert_int_eq(te_transfer_sync(eng, &r, 1, NULL, NULL), TE_ERR_ADDRESS_NOT_REGISTERED);
    te_test_peer_expect(&peer, "check 0 16777216 9", "OK"); /* nothing inside changed either */
    /* and the peer is still reachable */
    te_test_write_then_read(eng, seg, &peer, local, 0, 4096, 3);
}
END_TEST

START_TEST(kernel_refusal_falls_back_to_tcp)
{
    setenv("TE_SHM_TEST_FORCE_EPERM", "1", 1); /* our shm's probe acts as if EPERM */
    start_pair(NULL, NULL);
    ck_assert_str_eq(transport_of(seg), "tcp");
    verified_sizes(false);
}
END_TEST

START_TEST(peer_on_another_host_is_declined)
{
    start_pair("TE_SHM_TEST_HOST_ID", "another-host");
    ck_assert_str_eq(transport_of(seg), "tcp");
    verified_sizes(false);
}
END_TEST

START_TEST(disabled_by_environment)
{
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    start_pair(NULL, NULL);
    ck_assert_str_eq(transport_of(seg), "tcp");
    te_test_write_then_read(eng, seg, &peer, local, 5, 7000, 11);
}
END_TEST

/* Our own segment is reached through shm too (a copy within the process). */
START_TEST(own_segment_uses_shm)
{
    start_pair(NULL, NULL);
    te_segment_id self;
    ck_assert_int_eq(te_segment_open(eng, te_engine_segment_name(eng), &self), 0);
    ck_assert_int_eq(self, 0);
    ck_assert_str_eq(transport_of(self), "shm");
    uint8_t *dst = local + (8 << 20);
    te_test_fill(local, 1 << 20, 42, 0);
    te_request w = {TE_OP_WRITE, local, self, (uint64_t)(uintptr_t)dst, 1 << 20};
    ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(dst, 1 << 20, 42, 0), -1);
}
END_TEST

START_TEST(killed_peer_fails_fast)
{
    start_pair(NULL, NULL);
    te_test_peer_kill(&peer, SIGKILL);
    te_request w = {TE_OP_WRITE, local, seg, peer.addr, 4096};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_ne(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
    ck_assert_int_ne(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert_msg(t1.tv_sec - t0.tv_sec < 4, "took %ld s", (long)(t1.tv_sec - t0.tv_sec));
}
END_TEST

int main(void)
{
    setenv("MC_TRANSFER_TIMEOUT", "3", 1);
    Suite *s = suite_create("shm");
    TCase *tc = tcase_create("two_processes");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, same_host_peer_uses_shm_with_verified_data);
    tcase_add_test(tc, scattered_batch_is_verified);
    tcase_add_test(tc, batch_with_bad_pages_fails_only_those_requests);
    tcase_add_test(tc, range_outside_registered_memory_is_rejected);
    tcase_add_test(tc, kernel_refusal_falls_back_to_tcp);
    tcase_add_test(tc, peer_on_another_host_is_declined);
    tcase_add_test(tc, disabled_by_environment);
    tcase_add_test(tc, own_segment_uses_shm);
    tcase_add_test(tc, killed_peer_fails_fast);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
