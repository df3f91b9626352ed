/* test_faults_wire.c - fake peers that misbehave on the wire (silent or short
 * RPC port; data port silent, unread, reset mid-payload, short payload or
 * status): every call returns by its deadline, or at once when the peer
 * closes, nothing outside a READ's buffer changes, a real peer still works. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault_util.h"
#include "te/te.h"
#include "test_util.h"

#define MIB (1u << 20)
#define LOCAL (16 * MIB)
#define GUARD (1 * MIB)
#define TIMEOUT_S 2 /* MC_TRANSFER_TIMEOUT and MC_HANDSHAKE_CONNECT_TIMEOUT, scaled */

static te_engine *eng;
static uint8_t *mem;   /* GUARD | LOCAL (registered) | GUARD */
static uint8_t *local; /* mem + GUARD */
static fake_peer fake;
static bool fake_on;

static void setup(void)
{
    eng = te_engine_create();
    ck_assert_ptr_nonnull(eng);
    ck_assert_int_eq(te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL), 0);
    mem = aligned_alloc(4096, LOCAL + 2 * GUARD);
    ck_assert_ptr_nonnull(mem);
    te_test_fill(mem, LOCAL + 2 * GUARD, 99, 0);
    local = mem + GUARD;
    ck_assert_int_eq(te_register_memory(eng, local, LOCAL, "cpu:0"), 0);
    fake_on = false;
}

static void teardown(void)
{
    if (eng)
        te_engine_destroy(eng);
    eng = NULL;
    if (fake_on)
        fake_peer_stop(&fake);
    /* Nothing around the registered buffer was ever written. */
    ck_assert_int_eq(te_test_check(mem, GUARD, 99, 0), -1);
    ck_assert_int_eq(te_test_check(mem + GUARD + LOCAL, GUARD, 99, GUARD + LOCAL), -1);
    free(mem);
}

static void start_fake(int rpc_mode, int data_mode)
{
    ck_assert_int_eq(fake_peer_start(&fake, rpc_mode, data_mode), 0);
    fake_on = true;
}

static te_segment_id open_fake(void)
{
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(eng, fake.name, &id), 0);
    return id;
}

/* Upper bound for a call that must wait for its deadline: the deadline plus
 * a margin for scheduling (all scaled). */
static double deadline_bound(void)
{
    return fault_secs(TIMEOUT_S) + 1.5 * fault_scale();
}

/* A failure the peer announced by closing must not wait for the deadline. */
static double fast_bound(void)
{
    return 1.0 * fault_scale();
}

/* The engine still moves verified data to and from a healthy peer. */
static void real_peer_works(void)
{
    const unsigned len = FAULT_TSAN ? 256 * 1024 : 4 * MIB;
    char arg[32];
    snprintf(arg, sizeof arg, "%u", len);
    te_test_peer peer;
    const char *args[] = {"--size", arg, NULL};
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(eng, peer.segment, &id), 0);
    te_test_write_then_read(eng, id, &peer, local, 0, len, 7); /* the peer then fills seed 8 */
    te_test_peer_stop(&peer);
    te_test_fill(mem, LOCAL + 2 * GUARD, 99, 0); /* restore for the guard check */
}

START_TEST(silent_rpc_port_fails_lookups_in_time)
{
    start_fake(FAKE_RPC_SILENT, FAKE_DATA_SILENT);
    te_segment_id id;
    double t0 = fault_now();
    ck_assert_int_lt(te_segment_open(eng, fake.name, &id), 0);
    double dt = fault_now() - t0;
    ck_assert_msg(dt < deadline_bound(), "segment open took %.2f s", dt);
    t0 = fault_now();
    ck_assert_int_lt(te_probe(eng, fake.name), 0);
    dt = fault_now() - t0;
    ck_assert_msg(dt < deadline_bound(), "probe took %.2f s", dt);
    ck_assert_int_ge(atomic_load(&fake.rpc_conns), 1);
    real_peer_works();
}
END_TEST

START_TEST(short_rpc_reply_fails_fast)
{
    start_fake(FAKE_RPC_SHORT, FAKE_DATA_SILENT);
    te_segment_id id;
    double t0 = fault_now();
    ck_assert_int_lt(te_segment_open(eng, fake.name, &id), 0);
    double dt = fault_now() - t0;
    ck_assert_msg(dt < fast_bound(), "segment open took %.2f s", dt);
    real_peer_works();
}
END_TEST

/* Submits n requests of len bytes each (alternating WRITE and READ, or only
 * READs; READs into the second half of the local buffer) as one batch and
 * waits for it with no timeout of its own; returns the batch status, checks
 * the wait ended within `bound` and that no task claims success. */
static int batch_against_fake(te_segment_id id, int n, uint64_t len, double bound, bool reads)
{
    te_request reqs[16];
    ck_assert_int_le(n, 16);
    for (int i = 0; i < n; i++) {
        int op = reads || i % 2 ? TE_OP_READ : TE_OP_WRITE;
        uint8_t *l = local + (op == TE_OP_READ ? LOCAL / 2 : 0) + (uint64_t)(i / 2) * len;
        ck_assert(l + len <= local + LOCAL);
        reqs[i] = (te_request){op, l, id, fake.buf_addr + (uint64_t)i * len, len};
    }
    te_batch_id b;
    ck_assert_int_eq(te_batch_allocate(eng, (size_t)n, &b), 0);
    ck_assert_int_eq(te_submit(eng, b, reqs, (size_t)n), 0);
    int st = -1;
    double t0 = fault_now();
    te_batch_wait(eng, b, -1, &st);
    double dt = fault_now() - t0;
    ck_assert_msg(dt < bound, "batch wait took %.2f s (bound %.2f)", dt, bound);
    ck_assert_msg(st == TE_TRANSFER_FAILED || st == TE_TRANSFER_TIMEOUT, "batch status %d", st);
    for (int i = 0; i < n; i++) {
        int ts;
        ck_assert_int_eq(te_task_status(eng, b, (size_t)i, &ts, NULL), 0);
        ck_assert_int_ne(ts, TE_TRANSFER_COMPLETED);
    }
    ck_assert_int_eq(te_batch_free(eng, b), 0);
    return st;
}

START_TEST(silent_data_port_times_out_at_the_deadline)
{
    start_fake(FAKE_RPC_SERVE, FAKE_DATA_SILENT);
    te_segment_id id = open_fake();
    /* The READ destinations hold the guard pattern: nothing may land there. */
    batch_against_fake(id, 8, MIB, deadline_bound(), false);
    ck_assert_int_eq(te_test_check(local + LOCAL / 2, LOCAL / 2, 99, GUARD + LOCAL / 2), -1);
    double t0 = fault_now();
    te_request w = {TE_OP_WRITE, local, id, fake.buf_addr, 4096};
    ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), TE_ERR_TIMEOUT);
    ck_assert_double_lt(fault_now() - t0, deadline_bound());
    ck_assert_int_ge(atomic_load(&fake.data_conns), 1);
    real_peer_works();
}
END_TEST

START_TEST(unread_data_port_times_out_at_the_deadline)
{
    start_fake(FAKE_RPC_SERVE, FAKE_DATA_NO_READ);
    te_segment_id id = open_fake();
    double t0 = fault_now();
    te_request w = {TE_OP_WRITE, local, id, fake.buf_addr, LOCAL}; /* fills the socket buffers */
    int rc = te_transfer_sync(eng, &w, 1, NULL, NULL);
    double dt = fault_now() - t0;
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(dt < deadline_bound(), "write took %.2f s", dt);
    real_peer_works();
}
END_TEST

START_TEST(reset_mid_payload_fails_fast)
{
    start_fake(FAKE_RPC_SERVE, FAKE_DATA_RESET_PAYLOAD);
    te_segment_id id = open_fake();
    for (int i = 0; i < 5; i++) { /* each try reconnects and is reset again */
        double t0 = fault_now();
        te_request w = {TE_OP_WRITE, local, id, fake.buf_addr, 4 * MIB};
        int rc = te_transfer_sync(eng, &w, 1, NULL, NULL);
        double dt = fault_now() - t0;
        ck_assert_msg(rc != 0 && rc != TE_ERR_TIMEOUT, "write gave %d", rc);
        ck_assert_msg(dt < fast_bound(), "write took %.2f s", dt);
    }
    ck_assert_int_ge(atomic_load(&fake.data_conns), 2);
    real_peer_works();
}
END_TEST

START_TEST(short_read_payload_fails_fast_and_stays_in_its_buffer)
{
    start_fake(FAKE_RPC_SERVE, FAKE_DATA_SHORT_READ);
    te_segment_id id = open_fake();
    uint64_t off = 3 * MIB, len = 256 * 1024;
    double t0 = fault_now();
    te_request r = {TE_OP_READ, local + off, id, fake.buf_addr, len};
    int rc = te_transfer_sync(eng, &r, 1, NULL, NULL);
    double dt = fault_now() - t0;
    ck_assert_msg(rc != 0 && rc != TE_ERR_TIMEOUT, "read gave %d", rc);
    ck_assert_msg(dt < fast_bound(), "read took %.2f s", dt);
    /* Only the destination may have changed. */
    ck_assert_int_eq(te_test_check(local, off, 99, GUARD), -1);
    ck_assert_int_eq(te_test_check(local + off + len, LOCAL - off - len, 99, GUARD + off + len), -1);
    /* A batch of several READs: all fail, none is lost. */
    batch_against_fake(id, 6, 64 * 1024, fast_bound() + 0.5, true);
    real_peer_works();
}
END_TEST

START_TEST(short_status_frame_fails_fast)
{
    start_fake(FAKE_RPC_SERVE, FAKE_DATA_SHORT_STATUS);
    te_segment_id id = open_fake();
    double t0 = fault_now();
    te_request w = {TE_OP_WRITE, local, id, fake.buf_addr, MIB};
    int rc = te_transfer_sync(eng, &w, 1, NULL, NULL);
    ck_assert_msg(rc != 0 && rc != TE_ERR_TIMEOUT, "write gave %d", rc);
    ck_assert_double_lt(fault_now() - t0, fast_bound());
    real_peer_works();
}
END_TEST

START_TEST(destroy_with_transfers_stuck_on_a_silent_peer_is_bounded)
{
    start_fake(FAKE_RPC_SERVE, FAKE_DATA_SILENT);
    te_segment_id id = open_fake();
    te_batch_id b[4];
    for (int i = 0; i < 4; i++) {
        te_request w = {TE_OP_WRITE, local + (uint64_t)i * MIB, id, fake.buf_addr, MIB};
        ck_assert_int_eq(te_batch_allocate(eng, 1, &b[i]), 0);
        ck_assert_int_eq(te_submit(eng, b[i], &w, 1), 0);
    }
    te_batch_free(eng, b[0]); /* one freed early, three still held */
    double t0 = fault_now();
    te_engine_destroy(eng); /* waits for the deadline (plus a grace second), no more */
    eng = NULL;
    double dt = fault_now() - t0;
    ck_assert_msg(dt < deadline_bound() + 1.0 * fault_scale(), "destroy took %.2f s", dt);
}
END_TEST

int main(void)
{
    fault_setenv_secs("MC_TRANSFER_TIMEOUT", TIMEOUT_S);
    fault_setenv_secs("MC_HANDSHAKE_CONNECT_TIMEOUT", TIMEOUT_S);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1); /* the TCP path is under test */
    setenv("MC_LOG_LEVEL", "ERROR", 0);
    Suite *s = suite_create("faults_wire");
    TCase *tc = tcase_create("fake_peers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30 * fault_scale());
    tcase_add_test(tc, silent_rpc_port_fails_lookups_in_time);
    tcase_add_test(tc, short_rpc_reply_fails_fast);
    tcase_add_test(tc, silent_data_port_times_out_at_the_deadline);
    tcase_add_test(tc, unread_data_port_times_out_at_the_deadline);
    tcase_add_test(tc, reset_mid_payload_fails_fast);
    tcase_add_test(tc, short_read_payload_fails_fast_and_stays_in_its_buffer);
    tcase_add_test(tc, short_status_frame_fails_fast);
    tcase_add_test(tc, destroy_with_transfers_stuck_on_a_silent_peer_is_bounded);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
