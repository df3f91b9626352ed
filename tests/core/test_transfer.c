/* test_transfer.c - two engines in two processes over TCP with P2P metadata:
 * verified writes and reads of several sizes, a scattered batch, a
 * notification after its data, rejected ranges, dead and missing peers. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

#define PEER_SIZE (80ull << 20)

static te_test_peer peer;
static te_engine *eng;
static uint8_t *local;
static te_segment_id seg;

static void setup(void)
{
    const char *args[] = {"--size", "83886080", NULL};
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
    te_test_engine_to_peer(&peer, PEER_SIZE, &eng, &local, &seg);
}

static void teardown(void)
{
    te_test_peer_teardown(&peer, eng, local);
}

START_TEST(write_read_sizes)
{
    static const uint64_t sizes[] = {1, 4096, (1 << 20) + 1, 64ull << 20};
    for (int i = 0; i < 4; i++)
        te_test_write_then_read(eng, seg, &peer, local, i * 7, sizes[i], 100 + i);
}
END_TEST

START_TEST(scattered_batch_of_256)
{
    enum { N = 256 };
    te_request reqs[N];
    for (int i = 0; i < N; i++) {
        uint64_t len = 1000 + (uint64_t)i * 37;
        uint64_t roff = (uint64_t)((i * 7919) % N) * 300000; /* scattered, non-overlapping */
        te_test_fill(local + (uint64_t)i * 20000, len, 5000 + (uint64_t)i, 0);
        reqs[i] = (te_request){TE_OP_WRITE, local + (uint64_t)i * 20000, seg, peer.addr + roff, len};
    }
    te_batch_id b;
    ck_assert_int_eq(te_batch_allocate(eng, N, &b), 0);
    ck_assert_int_eq(te_submit(eng, b, reqs, N), 0);
    int st;
    ck_assert_int_eq(te_batch_wait(eng, b, -1, &st), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(te_task_status(eng, b, (size_t)i, &st, NULL), 0);
        ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "check %llu %llu %d",
                 (unsigned long long)(reqs[i].remote - peer.addr),
                 (unsigned long long)reqs[i].length, 5000 + i);
        te_test_peer_expect(&peer, cmd, "OK");
    }
    ck_assert_int_eq(te_batch_free(eng, b), 0);
    ck_assert_int_eq(te_batch_free(eng, b), TE_ERR_NOT_FOUND); /* second free is harmless */
}
END_TEST

START_TEST(notification_after_data)
{
    te_test_notify_after_data(eng, seg, &peer, local);
}
END_TEST

START_TEST(range_outside_registered_memory_is_rejected)
{
    te_test_peer_expect(&peer, "fill 0 83886080 9", "OK");
    te_test_outside_rejected(eng, seg, &peer, local);
    te_test_peer_expect(&peer, "check 0 83886080 9", "OK"); /* nothing around it changed */
}
END_TEST

START_TEST(killed_peer_fails_within_deadline)
{
    te_batch_id b;
    enum { N = 8 };
    te_request reqs[N];
    for (int i = 0; i < N; i++)
        reqs[i] = (te_request){TE_OP_WRITE, local, seg, peer.addr, 64ull << 20};
    ck_assert_int_eq(te_batch_allocate(eng, N, &b), 0);
    ck_assert_int_eq(te_submit(eng, b, reqs, N), 0);
    te_test_peer_kill(&peer, SIGKILL);
    double t0 = te_test_now_s();
    int st;
    te_batch_wait(eng, b, -1, &st);
    ck_assert_int_ne(st, TE_TRANSFER_COMPLETED);
    ck_assert_msg(te_test_now_s() - t0 < 6.0, "took %.1f s", te_test_now_s() - t0);
    ck_assert_int_eq(te_batch_free(eng, b), 0);
}
END_TEST

START_TEST(stopped_peer_times_out)
{
    te_test_peer_kill(&peer, SIGSTOP);
    te_request w = {TE_OP_WRITE, local, seg, peer.addr, 64ull << 20};
    double t0 = te_test_now_s();
    int rc = te_transfer_sync(eng, &w, 1, NULL, NULL);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(te_test_now_s() - t0 < 6.0, "took %.1f s", te_test_now_s() - t0);
    te_test_peer_kill(&peer, SIGCONT);
}
END_TEST

START_TEST(missing_peer_fails_fast)
{
    te_segment_id id;
    double t0 = te_test_now_s();
    ck_assert_int_lt(te_segment_open(eng, "127.0.0.1:1", &id), 0);
    ck_assert_int_lt(te_segment_open(eng, "no-such-host.invalid:15000", &id), 0);
    ck_assert_msg(te_test_now_s() - t0 < 6.0, "took %.1f s", te_test_now_s() - t0);
}
END_TEST

int main(void)
{
    setenv("MC_TRANSFER_TIMEOUT", "3", 1);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1); /* this suite tests the TCP path */
    Suite *s = suite_create("transfer");
    TCase *tc = tcase_create("tcp_p2p");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, write_read_sizes);
    tcase_add_test(tc, scattered_batch_of_256);
    tcase_add_test(tc, notification_after_data);
    tcase_add_test(tc, range_outside_registered_memory_is_rejected);
    tcase_add_test(tc, killed_peer_fails_within_deadline);
    tcase_add_test(tc, stopped_peer_times_out);
    tcase_add_test(tc, missing_peer_fails_fast);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
