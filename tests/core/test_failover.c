/* test_failover.c - transports chosen per request and failover: the
 * cool-down of a failing path (pure, time passed in); the order of
 * candidate transports by memory kinds, reach and health (pure); slices that a test
 * transport ("testfail") fails with TE_ERR_SOCKET finish over tcp, bytes
 * verified and counted as failovers; a target's refusal is never retried;
 * transport hints pin the transport both ways and for batches, and an
 * unknown hint is refused.  Two engines in this process, on 127.0.0.1. */
#include <check.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "failover.h"
#include "metrics.h"
#include "route.h"
#include "te/te.h"
#include "test_util.h"

#define SIZE (1u << 20)
#define SLICES (SIZE / 65536) /* testfail's slice size */

static te_engine *src, *dst;
static uint8_t *local, *remote;
static te_segment_id seg;

/* ---- cool-down (pure) ------------------------------------------------------- */

START_TEST(cooldown_doubles_up_to_the_cap)
{
    te_cooldown c = {.base_ns = 30, .max_ns = 300};
    ck_assert_int_eq(te_cooldown_ns(&c, 0), 0);
    ck_assert_int_eq(te_cooldown_ns(&c, 1), 30);
    ck_assert_int_eq(te_cooldown_ns(&c, 2), 60);
    ck_assert_int_eq(te_cooldown_ns(&c, 4), 240);
    ck_assert_int_eq(te_cooldown_ns(&c, 5), 300);
    ck_assert_int_eq(te_cooldown_ns(&c, 60), 300);
}
END_TEST

START_TEST(a_failing_path_is_set_aside_once_per_episode)
{
    te_cooldown c = {.base_ns = 100, .max_ns = 1000};
    te_path_health h = {0};
    ck_assert(te_path_usable(&h, 0));
    ck_assert(!te_path_was_set_aside(&h));     /* routes skip the clock read */
    ck_assert(te_path_failed(&h, &c, 1000));   /* strike 1: aside until 1100 */
    ck_assert(te_path_was_set_aside(&h));
    ck_assert(!te_path_failed(&h, &c, 1050));  /* in-flight slices add nothing */
    ck_assert(!te_path_usable(&h, 1099));
    ck_assert(te_path_usable(&h, 1100));       /* tried again later */
    ck_assert(te_path_failed(&h, &c, 1100));   /* strike 2: 200 */
    ck_assert(!te_path_usable(&h, 1299));
    ck_assert(te_path_usable(&h, 1300));
    te_path_succeeded(&h);                     /* healthy again: back to 100 */
    ck_assert(te_path_failed(&h, &c, 2000));
    ck_assert(te_path_usable(&h, 2100));
    ck_assert(te_failover_status(TE_ERR_SOCKET) && te_failover_breaks_path(TE_ERR_SOCKET));
    ck_assert(te_failover_status(TE_ERR_NOT_SUPPORTED_TRANSPORT));
    ck_assert(!te_failover_breaks_path(TE_ERR_NOT_SUPPORTED_TRANSPORT));
    ck_assert(!te_failover_status(TE_ERR_ADDRESS_NOT_REGISTERED));
    ck_assert(!te_failover_status(TE_ERR_INVALID_ARGUMENT));
}
END_TEST

/* ---- the choice (pure) ------------------------------------------------------ */

enum { RDMA, SHM, NVLINK, TCP }; /* in start order, as "rdma" starts them */

static te_route_in four(void)
{
    te_route_in in = {.count = 4, .local_registered = true};
    in.caps[RDMA] = TE_TRANSPORT_CAP_REMOTE | TE_TRANSPORT_CAP_NEEDS_LOCAL_MR;
    in.caps[SHM] = 0;
    in.caps[NVLINK] = TE_TRANSPORT_CAP_GPU;
    in.caps[TCP] = TE_TRANSPORT_CAP_REMOTE;
    for (int i = 0; i < 4; i++)
        in.reached[i] = in.usable[i] = true;
    return in;
}

static void expect_order(const te_route_in *in, int n, ...)
{
    te_route r;
    te_route_order(in, &r);
    ck_assert_int_eq(r.count, n);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(r.order[i], va_arg(ap, int));
    va_end(ap);
}

START_TEST(route_follows_memory_kinds_reach_and_health)
{
    te_route_in in = four();
    expect_order(&in, 3, SHM, RDMA, TCP); /* host to host on one host */
    in.reached[SHM] = in.reached[NVLINK] = false;
    expect_order(&in, 2, RDMA, TCP);      /* another host */
    in = four();
    in.local_device = true;               /* device to host: no shm, no nvlink */
    expect_order(&in, 2, RDMA, TCP);
    ck_assert_ptr_nonnull(te_route_refusal(&in, SHM));
    ck_assert_ptr_nonnull(te_route_refusal(&in, NVLINK));
    in.remote_device = true;              /* to device memory: nvlink first */
    expect_order(&in, 3, NVLINK, RDMA, TCP);
    in = four();
    in.local_registered = false;          /* rdma needs registered local memory */
    expect_order(&in, 2, SHM, TCP);
    ck_assert_ptr_nonnull(strstr(te_route_refusal(&in, RDMA), "registered"));
    in = four();
    in.usable[SHM] = false;               /* set aside: last, not gone */
    expect_order(&in, 3, RDMA, TCP, SHM);
}
END_TEST

/* ---- two engines ------------------------------------------------------------ */

static void setup(void)
{
    setenv("MC_TE_FAILOVER_COOLDOWN_MS", "300", 1);
    dst = te_engine_create();
    ck_assert_int_eq(te_engine_initialize(dst, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL), 0);
    remote = aligned_alloc(4096, SIZE);
    memset(remote, 0, SIZE);
    ck_assert_int_eq(te_register_memory(dst, remote, SIZE, "cpu:0"), 0);
    src = te_engine_create();
    int rc = te_engine_initialize(src, "127.0.0.1", "P2PHANDSHAKE", "testfail,tcp", "", NULL);
    ck_assert_msg(rc == 0, "initialize: %s", te_last_error());
    ck_assert_str_eq(te_engine_protocol(src), "testfail");
    local = aligned_alloc(4096, SIZE);
    ck_assert_int_eq(te_segment_open(src, te_engine_segment_name(dst), &seg), 0);
}

static void teardown(void)
{
    te_engine_destroy(src);
    te_engine_destroy(dst);
    free(local);
    free(remote);
}

/* A counter of te_get_metrics: failovers[from][to], or transports[t][member]. */
static long long metric(const char *group, const char *a, const char *b)
{
    char *text = NULL;
    ck_assert_int_eq(te_get_metrics(src, &text), 0);
    json_t *root = json_loads(text, 0, NULL);
    te_free(text);
    json_t *v = json_object_get(json_object_get(json_object_get(root, group), a), b);
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : 0;
    json_decref(root);
    return n;
}

static te_request req(int op, uint64_t off, uint64_t len)
{
    return (te_request){.opcode = op, .local = local + off, .target = seg,
                        .remote = (uint64_t)(uintptr_t)remote + off, .length = len};
}

START_TEST(socket_failures_finish_over_tcp)
{
    te_test_fill(local, SIZE, 7, 0);
    te_request w = req(TE_OP_WRITE, 0, SIZE);
    ck_assert_int_eq(te_transfer_sync(src, &w, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(remote, SIZE, 7, 0), -1);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), SLICES);
    ck_assert_int_eq(metric("failovers", "tcp", "testfail"), 0);
    ck_assert_int_eq(metric("transports", "tcp", "write_bytes"), SIZE);
    char *text = NULL, want[256];
    ck_assert_int_eq(te_metrics_prometheus(&src, 1, &text), 0);
    snprintf(want, sizeof want,
             "te_failovers_total{engine=\"%s\",from=\"testfail\",to=\"tcp\"} %u\n",
             te_engine_segment_name(src), SLICES);
    ck_assert_msg(strstr(text, want), "no '%s' in the exposition", want);
    free(text);
    /* testfail is set aside now: the next request starts on tcp. */
    memset(local, 0, SIZE);
    te_request r = req(TE_OP_READ, 0, SIZE);
    ck_assert_int_eq(te_transfer_sync(src, &r, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(local, SIZE, 7, 0), -1);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), SLICES);
    /* After its cool-down it is tried again (and fails over again). */
    usleep(400000);
    ck_assert_int_eq(te_transfer_sync(src, &r, 1, NULL, NULL), 0);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 2 * SLICES);
}
END_TEST

/* Small synchronous requests, which tcp drives from the calling thread (or
 * the failover thread): the first fails over and lands, the next ones start
 * on tcp while testfail is set aside, each verified. */
START_TEST(small_sync_requests_fail_over_and_land)
{
    te_test_fill(local, 4096, 21, 0);
    te_request w = req(TE_OP_WRITE, 0, 64);
    ck_assert_int_eq(te_transfer_sync(src, &w, 1, NULL, NULL), 0);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 1);
    ck_assert_int_eq(te_test_check(remote, 64, 21, 0), -1);
    for (uint64_t off = 64; off < 4096; off += 64) {
        w = req(TE_OP_WRITE, off, 64);
        ck_assert_int_eq(te_transfer_sync(src, &w, 1, NULL, NULL), 0);
    }
    ck_assert_int_eq(te_test_check(remote, 4096, 21, 0), -1);
    memset(local, 0, 4096);
    for (uint64_t off = 0; off < 4096; off += 64) {
        te_request r = req(TE_OP_READ, off, 64);
        ck_assert_int_eq(te_transfer_sync(src, &r, 1, NULL, NULL), 0);
    }
    ck_assert_int_eq(te_test_check(local, 4096, 21, 0), -1);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 1);
    ck_assert_int_eq(metric("transports", "tcp", "write_bytes"), 4096);
}
END_TEST

/* A notification after failed-over slices is sent once, after they landed. */
START_TEST(notification_follows_failed_over_slices_once)
{
    te_test_fill(local, SIZE, 13, 0);
    te_request w = req(TE_OP_WRITE, 0, SIZE);
    ck_assert_int_eq(te_transfer_sync(src, &w, 1, "done", "13"), 0);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), SLICES);
    ck_assert_int_eq(te_test_check(remote, SIZE, 13, 0), -1);
    te_notify *n = NULL;
    size_t count = 0;
    for (int i = 0; i < 100 && count == 0; i++) {
        ck_assert_int_eq(te_notifies_drain(dst, &n, &count), 0);
        if (!count)
            usleep(10000);
    }
    ck_assert_uint_eq(count, 1);
    ck_assert_str_eq(n[0].name, "done");
    te_notifies_free(n, count);
    usleep(100000);
    ck_assert_int_eq(te_notifies_drain(dst, &n, &count), 0);
    ck_assert_uint_eq(count, 0);
}
END_TEST

/* tcp with 16 KiB slices: each 64 KiB slice that moves there is cut in four. */
static void setup_small_tcp_slices(void)
{
    setenv("MC_TCP_SLICE_SIZE", "16384", 1);
    setup();
}

START_TEST(moved_slices_are_cut_to_the_new_transport_size)
{
    te_test_fill(local, SIZE, 17, 0);
    te_request w = req(TE_OP_WRITE, 0, SIZE);
    ck_assert_int_eq(te_transfer_sync(src, &w, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(remote, SIZE, 17, 0), -1);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), SLICES);
    usleep(400000); /* testfail is tried again: reads move and are cut too */
    memset(local, 0, SIZE);
    te_request r = req(TE_OP_READ, 0, SIZE);
    ck_assert_int_eq(te_transfer_sync(src, &r, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(local, SIZE, 17, 0), -1);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 2 * SLICES);
}
END_TEST

START_TEST(a_refused_range_is_not_retried)
{
    setenv("TE_TESTFAIL_STATUS", "-3", 1); /* TE_ERR_ADDRESS_NOT_REGISTERED */
    te_test_fill(local, SIZE, 9, 0);
    te_request w = req(TE_OP_WRITE, 0, SIZE);
    ck_assert_int_eq(te_transfer_sync(src, &w, 1, NULL, NULL), TE_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 0);
    ck_assert_int_eq(metric("transports", "tcp", "write_bytes"), 0);
    for (size_t i = 0; i < SIZE; i++)
        ck_assert_uint_eq(remote[i], 0);
}
END_TEST

/* A transport that reports each slice done twice (testfail moves no
 * bytes): the second report is ignored, so the request is done once every
 * slice was reported and its bytes are counted once.  (Not with failures:
 * a failed slice may be handed over again before the duplicate comes.) */
START_TEST(a_slice_reported_twice_counts_once)
{
    setenv("TE_TESTFAIL_TWICE", "1", 1);
    setenv("TE_TESTFAIL_STATUS", "0", 1);
    te_request w = req(TE_OP_WRITE, 0, SIZE);
    te_batch_id id;
    int st;
    uint64_t bytes = 0;
    ck_assert_int_eq(te_batch_allocate(src, 1, &id), 0);
    ck_assert_int_eq(te_submit(src, id, &w, 1), 0);
    ck_assert_int_eq(te_batch_wait(src, id, -1, &st), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    ck_assert_int_eq(te_task_status(src, id, 0, &st, &bytes), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    ck_assert_uint_eq(bytes, SIZE);
    ck_assert_int_eq(te_batch_free(src, id), 0);
    ck_assert_int_eq(metric("transports", "testfail", "write_bytes"), SIZE);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 0);
}
END_TEST

START_TEST(hints_pin_the_transport)
{
    te_test_fill(local, SIZE, 11, 0);
    te_request w = req(TE_OP_WRITE, 0, SIZE), r = req(TE_OP_READ, 0, SIZE);
    ck_assert_int_eq(te_transfer_sync_hint(src, &w, 1, NULL, NULL, "tcp"), 0);
    ck_assert_int_eq(te_test_check(remote, SIZE, 11, 0), -1);
    memset(local, 0, SIZE);
    ck_assert_int_eq(te_transfer_sync_hint(src, &r, 1, NULL, NULL, "tcp"), 0);
    ck_assert_int_eq(te_test_check(local, SIZE, 11, 0), -1);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 0);
    /* Pinned to the failing transport: fails, never moves, either way. */
    ck_assert_int_eq(te_transfer_sync_hint(src, &w, 1, NULL, NULL, "testfail"), TE_ERR_SOCKET);
    ck_assert_int_eq(te_transfer_sync_hint(src, &r, 1, NULL, NULL, "testfail"), TE_ERR_SOCKET);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 0);
    /* A batch with a hint. */
    te_batch_id id;
    te_request two[2] = {req(TE_OP_WRITE, 0, SIZE / 2), req(TE_OP_WRITE, SIZE / 2, SIZE / 2)};
    ck_assert_int_eq(te_batch_allocate(src, 2, &id), 0);
    ck_assert_int_eq(te_batch_set_transport_hint(src, id, "tcp"), 0);
    ck_assert_int_eq(te_submit(src, id, two, 2), 0);
    int st;
    ck_assert_int_eq(te_batch_wait(src, id, -1, &st), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    ck_assert_int_eq(te_batch_free(src, id), 0);
    ck_assert_int_eq(metric("failovers", "testfail", "tcp"), 0);
}
END_TEST

START_TEST(bad_hints_are_refused_with_a_reason)
{
    te_request w = req(TE_OP_WRITE, 0, 4096);
    ck_assert_int_eq(te_transport_hint_check(src, "bogus"), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_transfer_sync_hint(src, &w, 1, NULL, NULL, "bogus"),
                     TE_ERR_INVALID_ARGUMENT);
    te_batch_id id;
    ck_assert_int_eq(te_batch_allocate(src, 1, &id), 0);
    ck_assert_int_eq(te_batch_set_transport_hint(src, id, "bogus"), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_batch_free(src, id), 0);
    /* Known, but this engine runs testfail and tcp only. */
    ck_assert_int_eq(te_transport_hint_check(src, "rdma"), 0);
    ck_assert_int_eq(te_transfer_sync_hint(src, &w, 1, NULL, NULL, "rdma"),
                     TE_ERR_NOT_SUPPORTED_TRANSPORT);
    ck_assert_msg(strstr(te_last_error(), "not loaded"), "error: %s", te_last_error());
    ck_assert_int_eq(te_transfer_sync_hint(src, &w, 1, NULL, NULL, "shm"),
                     TE_ERR_NOT_SUPPORTED_TRANSPORT);
    ck_assert_int_eq(te_transfer_sync_hint(src, &w, 1, NULL, NULL, ""), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("failover");
    TCase *pure = tcase_create("cooldown");
    tcase_add_test(pure, cooldown_doubles_up_to_the_cap);
    tcase_add_test(pure, a_failing_path_is_set_aside_once_per_episode);
    tcase_add_test(pure, route_follows_memory_kinds_reach_and_health);
    suite_add_tcase(s, pure);
    TCase *tc = tcase_create("engines");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, socket_failures_finish_over_tcp);
    tcase_add_test(tc, small_sync_requests_fail_over_and_land);
    tcase_add_test(tc, notification_follows_failed_over_slices_once);
    tcase_add_test(tc, a_refused_range_is_not_retried);
    tcase_add_test(tc, a_slice_reported_twice_counts_once);
    tcase_add_test(tc, hints_pin_the_transport);
    tcase_add_test(tc, bad_hints_are_refused_with_a_reason);
    suite_add_tcase(s, tc);
    tc = tcase_create("recut");
    tcase_add_checked_fixture(tc, setup_small_tcp_slices, teardown);
    tcase_add_test(tc, moved_slices_are_cut_to_the_new_transport_size);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
