/* test_rdma_vm.c - two engines in two processes over real RDMA (soft-RoCE,
 * run inside the rdma-vm by run_in_vm.sh): verified writes and reads from
 * 1 B to 64 MiB, a scattered batch of 256, notifications, rejected ranges,
 * the peer writing back, a loopback transfer, two peers in turn with room for
 * one endpoint's QPs (MC_MAX_EP_PER_CTX=1), a peer killed mid-transfer and
 * a peer that restarts.  `test_rdma_vm bench` prints a throughput figure. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

#define PEER_SIZE (80ull << 20)
#define PEER_SIZE_ARG "83886080"
#define FIXED_PORT "16999"

static te_test_peer peer;
static te_engine *eng;
static uint8_t *local;
static te_segment_id seg;

/* The peer: te-test-peer over rdma; with a fixed RPC port its segment name
 * survives a restart. */
static int start_peer(bool fixed_port)
{
    const char *args[] = {"--protocol", "rdma", "--size", PEER_SIZE_ARG, NULL};
    if (fixed_port) {
        setenv("MC_MIN_RPC_PORT", FIXED_PORT, 1);
        setenv("MC_MAX_RPC_PORT", FIXED_PORT, 1);
    }
    int rc = te_test_peer_start(&peer, args);
    unsetenv("MC_MIN_RPC_PORT");
    unsetenv("MC_MAX_RPC_PORT");
    return rc;
}

static void start_engine(const char *timeout_s)
{
    setenv("MC_TRANSFER_TIMEOUT", timeout_s, 1);
    eng = te_engine_create();
    ck_assert_ptr_nonnull(eng);
    ck_assert_int_eq(te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", "rdma", "", NULL), 0);
    ck_assert_str_eq(te_engine_protocol(eng), "rdma");
    te_test_local_to_peer(eng, &peer, PEER_SIZE, &local, &seg);
}

static void setup(void)
{
    ck_assert_int_eq(start_peer(false), 0);
    start_engine("30");
}

/* Failure cases: MC_TRANSFER_TIMEOUT=3 and a peer on a fixed port. */
static void setup_short(void)
{
    ck_assert_int_eq(start_peer(true), 0);
    start_engine("3");
}

static void teardown(void)
{
    te_test_peer_teardown(&peer, eng, local);
}

#define ULL(x) ((unsigned long long)(x))

static void write_verified(uint64_t off, uint64_t len, uint64_t seed)
{
    te_test_fill(local, len, seed, 0);
    te_request w = {TE_OP_WRITE, local, seg, peer.addr + off, len};
    double t0 = te_test_now_s();
    ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
    double dt = te_test_now_s() - t0;
    te_test_peer_expectf(&peer, "OK", "check %llu %llu %llu", ULL(off), ULL(len), ULL(seed));
    if (len >= (1 << 20))
        printf("rdma write %llu bytes: %.3f s, %.1f MB/s\n", (unsigned long long)len, dt,
               len / dt / 1e6);
}

static void read_verified(uint64_t off, uint64_t len, uint64_t seed)
{
    te_test_peer_expectf(&peer, "OK", "fill %llu %llu %llu", ULL(off), ULL(len), ULL(seed));
    memset(local, 0, len + 64);
    te_request r = {TE_OP_READ, local, seg, peer.addr + off, len};
    ck_assert_int_eq(te_transfer_sync(eng, &r, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(local, len, seed, 0), -1);
    for (int i = 0; i < 64; i++) /* nothing past the end */
        ck_assert_int_eq(local[len + (uint64_t)i], 0);
}

START_TEST(writes_and_reads_from_1_byte_to_8_mib)
{
    static const uint64_t sizes[] = {1, 4095, 65536, 65537, (1 << 20) + 13, 8ull << 20};
    for (int i = 0; i < 6; i++) {
        write_verified((uint64_t)i * 7 + 1, sizes[i], 100 + (uint64_t)i);
        read_verified((uint64_t)i * 13 + 3, sizes[i], 200 + (uint64_t)i);
    }
}
END_TEST

START_TEST(write_64_mib_once)
{
    write_verified(4096, 64ull << 20, 64);
}
END_TEST

START_TEST(scattered_batch_of_256_writes_then_reads)
{
    enum { N = 256 };
    te_request reqs[N];
    for (int i = 0; i < N; i++) {
        uint64_t len = 1000 + (uint64_t)i * 37;
        uint64_t roff = (uint64_t)((i * 7919) % N) * 200000 + (uint64_t)i; /* scattered */
        te_test_fill(local + (uint64_t)i * 20000, len, 5000 + (uint64_t)i, 0);
        reqs[i] = (te_request){TE_OP_WRITE, local + (uint64_t)i * 20000, seg, peer.addr + roff,
                               len};
    }
    te_batch_id b;
    int st;
    ck_assert_int_eq(te_batch_allocate(eng, N, &b), 0);
    ck_assert_int_eq(te_submit(eng, b, reqs, N), 0);
    ck_assert_int_eq(te_batch_wait(eng, b, -1, &st), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    for (int i = 0; i < N; i++)
        te_test_peer_expectf(&peer, "OK", "check %llu %llu %llu", ULL(reqs[i].remote - peer.addr),
                 ULL(reqs[i].length), ULL(5000 + i));
    ck_assert_int_eq(te_batch_free(eng, b), 0);
    /* Read all of them back into another area, in one batch. */
    uint8_t *back = local + (40ull << 20);
    for (int i = 0; i < N; i++) {
        reqs[i].opcode = TE_OP_READ;
        reqs[i].local = back + (uint64_t)i * 20000;
    }
    ck_assert_int_eq(te_batch_allocate(eng, N, &b), 0);
    ck_assert_int_eq(te_submit(eng, b, reqs, N), 0);
    ck_assert_int_eq(te_batch_wait(eng, b, -1, &st), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(te_test_check(back + (uint64_t)i * 20000, reqs[i].length,
                                       5000 + (uint64_t)i, 0),
                         -1);
    ck_assert_int_eq(te_batch_free(eng, b), 0);
}
END_TEST

START_TEST(notification_arrives_after_its_data)
{
    te_test_notify_after_data(eng, seg, &peer, local);
}
END_TEST

START_TEST(range_outside_registered_memory_fails_untouched)
{
    te_test_peer_expect(&peer, "fill 0 " PEER_SIZE_ARG " 9", "OK");
    te_test_outside_rejected(eng, seg, &peer, local);
    uint8_t *unregistered = malloc(4096);
    te_request u = {TE_OP_WRITE, unregistered, seg, peer.addr, 4096};
    ck_assert_int_eq(te_transfer_sync(eng, &u, 1, NULL, NULL), TE_ERR_ADDRESS_NOT_REGISTERED);
    free(unregistered);
    te_test_peer_expect(&peer, "check 0 " PEER_SIZE_ARG " 9", "OK"); /* nothing changed */
    write_verified(0, 4096, 10); /* and the connection still works */
}
END_TEST

START_TEST(peer_writes_back_over_the_same_nic_pair)
{
    write_verified(0, 4096, 3); /* we connect first: the peer's side is passive */
    char cmd[768], reply[256];
    snprintf(cmd, sizeof cmd, "write %s 0 %d %llx 55", te_engine_segment_name(eng), 3 << 20,
             (unsigned long long)(uintptr_t)(local + 1000));
    ck_assert_int_eq(te_test_peer_cmd(&peer, cmd, reply, sizeof reply), 0);
    ck_assert_str_eq(reply, "OK");
    ck_assert_int_eq(te_test_check(local + 1000, 3 << 20, 55, 0), -1);
}
END_TEST

START_TEST(loopback_to_own_segment)
{
    te_segment_id self;
    ck_assert_int_eq(te_segment_open(eng, te_engine_segment_name(eng), &self), 0);
    te_test_fill(local, 300000, 42, 0);
    te_request w = {TE_OP_WRITE, local, self, (uint64_t)(uintptr_t)(local + (1 << 20)), 300000};
    ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(local + (1 << 20), 300000, 42, 0), -1);
}
END_TEST

typedef struct writer {
    int id;
    int rc;
} writer;

/* 16 writes of 256 KiB to this writer's own area, then 16 reads back. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    uint64_t base = (uint64_t)w->id * (8ull << 20);
    for (int i = 0; i < 16 && !w->rc; i++) {
        uint64_t off = base + (uint64_t)i * (256 << 10);
        te_test_fill(local + off, 256 << 10, 900 + (uint64_t)w->id * 100 + (uint64_t)i, 0);
        te_request r = {TE_OP_WRITE, local + off, seg, peer.addr + off, 256 << 10};
        w->rc = te_transfer_sync(eng, &r, 1, NULL, NULL);
    }
    for (int i = 0; i < 16 && !w->rc; i++) {
        uint64_t off = base + (uint64_t)i * (256 << 10);
        te_request r = {TE_OP_READ, local + (40ull << 20) + off, seg, peer.addr + off, 256 << 10};
        w->rc = te_transfer_sync(eng, &r, 1, NULL, NULL);
        if (!w->rc && te_test_check(local + (40ull << 20) + off, 256 << 10,
                                    900 + (uint64_t)w->id * 100 + (uint64_t)i, 0) >= 0)
            w->rc = -1000;
    }
    return NULL;
}

START_TEST(concurrent_submitters)
{
    enum { T = 4 };
    pthread_t th[T];
    writer w[T];
    for (int i = 0; i < T; i++) {
        w[i] = (writer){.id = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(w[i].rc == 0, "writer %d: %d", i, w[i].rc);
    }
}
END_TEST

START_TEST(rejected_handshake_fails_the_transfer)
{
    te_test_peer odd;
    const char *args[] = {"--protocol", "rdma", "--size", "1048576", NULL};
    setenv("MC_NUM_QP_PER_EP", "1", 1); /* we use 2: the peer must refuse */
    ck_assert_int_eq(te_test_peer_start(&odd, args), 0);
    unsetenv("MC_NUM_QP_PER_EP");
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(eng, odd.segment, &id), 0);
    te_request w = {TE_OP_WRITE, local, id, odd.addr, 4096};
    double t0 = te_test_now_s();
    ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), TE_ERR_REJECT_HANDSHAKE);
    ck_assert_msg(te_test_now_s() - t0 < 5, "took %.1f s", te_test_now_s() - t0);
    te_test_peer_stop(&odd);
    write_verified(0, 4096, 8); /* the good peer is unaffected */
}
END_TEST

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

START_TEST(idle_engine_does_not_spin)
{
    write_verified(0, 1 << 20, 5); /* endpoints up, workers have seen traffic */
    /* The least of up to three windows: a spinning thread burns every one,
     * a loaded host's stray wake-up only one. */
    double used = 1e9;
    for (int w = 0; w < 3 && used >= 0.2; w++) {
        double c0 = cpu_s();
        sleep(2);
        double u = cpu_s() - c0;
        printf("idle engine: %.3f s CPU in 2 s\n", u);
        used = u < used ? u : used;
    }
    ck_assert_msg(used < 0.2, "an idle engine used %.3f s of CPU in 2 s", used);
}
END_TEST

/* Submits n writes of len bytes, kills the peer after delay_ms (or after a
 * quarter of the batch's expected time, timed with one write first, where the
 * device is fast enough to finish before delay_ms), and checks the batch
 * fails no later than a second after its deadline. */
static void kill_mid_transfer(int n, uint64_t len, int delay_ms)
{
    te_request reqs[16];
    for (int i = 0; i < n; i++)
        reqs[i] = (te_request){TE_OP_WRITE, local, seg, peer.addr + (uint64_t)i * len, len};
    double t1 = te_test_now_s();
    ck_assert_int_eq(te_transfer_sync(eng, &reqs[0], 1, NULL, NULL), 0);
    int quarter_ms = (int)((te_test_now_s() - t1) * n * 1000 / 4);
    if (quarter_ms < delay_ms)
        delay_ms = quarter_ms > 1 ? quarter_ms : 1;
    te_batch_id b;
    int st;
    ck_assert_int_eq(te_batch_allocate(eng, (size_t)n, &b), 0);
    double t0 = te_test_now_s();
    ck_assert_int_eq(te_submit(eng, b, reqs, (size_t)n), 0);
    double submit_s = te_test_now_s() - t0;
    struct timespec d = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
    te_test_peer_kill(&peer, SIGKILL);
    te_batch_wait(eng, b, -1, &st);
    double dt = te_test_now_s() - t0, limit = 3.0 + n * len / 1e9 + 1.0;
    printf("peer killed %d ms after a %.3f s submit: batch state %d after %.2f s (limit %.2f s)\n",
           delay_ms, submit_s, st, dt, limit);
    ck_assert_int_ne(st, TE_TRANSFER_COMPLETED);
    ck_assert_int_ne(st, TE_TRANSFER_WAITING);
    ck_assert_msg(dt < limit, "took %.2f s", dt);
    ck_assert_int_eq(te_batch_free(eng, b), 0);
}

START_TEST(killed_peer_fails_within_the_deadline)
{
    write_verified(0, 1 << 20, 1); /* endpoints up */
    kill_mid_transfer(8, 8ull << 20, 300);
}
END_TEST

/* Restarts the peer on the same port; returns the attempts a verified
 * write needed (the first may meet stale keys if nothing failed before). */
static int restart_and_write(uint64_t seed)
{
    ck_assert_int_eq(start_peer(true), 0);
    for (int attempt = 1; attempt <= 3; attempt++) {
        te_test_fill(local, 2 << 20, seed, 0);
        te_request w = {TE_OP_WRITE, local, seg, peer.addr + 8192, 2 << 20};
        int rc = te_transfer_sync(eng, &w, 1, NULL, NULL);
        printf("after restart: write attempt %d -> %d\n", attempt, rc);
        if (rc == 0) {
            te_test_peer_expectf(&peer, "OK", "check %llu %llu %llu", ULL(8192), ULL(2 << 20), ULL(seed));
            return attempt;
        }
    }
    ck_abort_msg("the restarted peer was never reached");
    return 0;
}

START_TEST(restarted_peer_is_reached_again)
{
    write_verified(0, 1 << 20, 1);
    kill_mid_transfer(8, 8ull << 20, 200);
    ck_assert_int_eq(restart_and_write(31), 1); /* the failure already dropped stale state */
    te_test_peer_kill(&peer, SIGKILL);           /* now while idle */
    ck_assert_int_le(restart_and_write(32), 2);
}
END_TEST

/* MC_MAX_EP_PER_CTX=1 in this engine only (the peers keep the default). */
static void setup_cap(void)
{
    ck_assert_int_eq(start_peer(false), 0);
    setenv("MC_MAX_EP_PER_CTX", "1", 1);
    start_engine("30");
    unsetenv("MC_MAX_EP_PER_CTX");
}

/* Writes len bytes of `seed` to p at off, reads them back into another area,
 * and has p check them too. */
static void round_trip(te_test_peer *p, te_segment_id id, uint64_t off, uint64_t len,
                       uint64_t seed)
{
    te_test_fill(local, len, seed, 0);
    te_request w = {TE_OP_WRITE, local, id, p->addr + off, len};
    ck_assert_int_eq(te_transfer_sync(eng, &w, 1, NULL, NULL), 0);
    uint8_t *back = local + (40ull << 20);
    memset(back, 0, len);
    te_request r = {TE_OP_READ, back, id, p->addr + off, len};
    ck_assert_int_eq(te_transfer_sync(eng, &r, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(back, len, seed, 0), -1);
    te_test_peer_expectf(p, "OK", "check %llu %llu %llu", ULL(off), ULL(len), ULL(seed));
}

/* One NIC, room for one endpoint with QPs: each switch of target retires
 * the idle endpoint's QPs and re-handshakes, instead of refusing the peer. */
START_TEST(endpoint_cap_of_one_alternates_between_two_peers)
{
    te_test_peer second;
    const char *args[] = {"--protocol", "rdma", "--size", "4194304", NULL};
    ck_assert_int_eq(te_test_peer_start(&second, args), 0);
    te_segment_id id2;
    ck_assert_int_eq(te_segment_open(eng, second.segment, &id2), 0);
    double t0 = te_test_now_s();
    for (int i = 0; i < 4; i++) {
        round_trip(&peer, seg, (uint64_t)i * 4096, 300000, 700 + (uint64_t)i);
        round_trip(&second, id2, (uint64_t)i * 8192, 300000, 800 + (uint64_t)i);
    }
    printf("MC_MAX_EP_PER_CTX=1: 8 switches between two peers in %.2f s\n", te_test_now_s() - t0);
    te_test_peer_stop(&second);
}
END_TEST

/* ---- bench ---------------------------------------------------------------------------------- */

static int bench(int mib)
{
    uint64_t chunk = 4ull << 20;
    int n = mib / 4 > 0 ? (mib / 4 < 64 ? mib / 4 : 64) : 1;
    if (start_peer(false)) {
        printf("TE_BENCH: cannot start the peer\n");
        return 1;
    }
    setenv("MC_TRANSFER_TIMEOUT", "60", 1);
    eng = te_engine_create();
    local = aligned_alloc(4096, 64ull << 20);
    te_request reqs[64];
    int rc = te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", "rdma", "", NULL);
    if (!rc)
        rc = te_register_memory(eng, local, 64ull << 20, "cpu:0");
    if (!rc)
        rc = te_segment_open(eng, peer.segment, &seg);
    te_request warm = {TE_OP_WRITE, local, seg, peer.addr, 1 << 20}; /* endpoints up */
    if (!rc)
        rc = te_transfer_sync(eng, &warm, 1, NULL, NULL);
    for (int i = 0; i < n; i++)
        reqs[i] = (te_request){TE_OP_WRITE, local + (uint64_t)(i % 16) * chunk, seg,
                               peer.addr + (uint64_t)(i % 16) * chunk, chunk};
    double t0 = te_test_now_s();
    if (!rc)
        rc = te_transfer_sync(eng, reqs, (size_t)n, NULL, NULL);
    double dt = te_test_now_s() - t0;
    printf("TE_BENCH rdma write %d x 4 MiB (64 KiB slices): rc %d, %.2f s, %.3f Gb/s\n", n, rc,
           dt, n * chunk * 8 / dt / 1e9);
    te_test_peer_stop(&peer);
    te_engine_destroy(eng);
    free(local);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "bench")) {
        setenv("MC_TE_TRANSPORTS", "rdma", 1); /* the figure is rdma's, not shm's */
        return bench(argc > 2 ? atoi(argv[2]) : 64);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Exactly rdma, here and in the peers: one VM is one host, where the
     * engine would otherwise pick shm (and fail over to tcp); those mixes
     * are test_rdma_mixed_vm's. */
    setenv("MC_TE_TRANSPORTS", "rdma", 1);
    Suite *s = suite_create("rdma_vm");
    TCase *tc = tcase_create("transfers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, writes_and_reads_from_1_byte_to_8_mib);
    tcase_add_test(tc, write_64_mib_once);
    tcase_add_test(tc, scattered_batch_of_256_writes_then_reads);
    tcase_add_test(tc, notification_arrives_after_its_data);
    tcase_add_test(tc, range_outside_registered_memory_fails_untouched);
    tcase_add_test(tc, peer_writes_back_over_the_same_nic_pair);
    tcase_add_test(tc, loopback_to_own_segment);
    tcase_add_test(tc, idle_engine_does_not_spin);
    tcase_add_test(tc, concurrent_submitters);
    tcase_add_test(tc, rejected_handshake_fails_the_transfer);
    suite_add_tcase(s, tc);
    tc = tcase_create("endpoint_cap");
    tcase_add_checked_fixture(tc, setup_cap, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, endpoint_cap_of_one_alternates_between_two_peers);
    suite_add_tcase(s, tc);
    tc = tcase_create("failures");
    tcase_add_checked_fixture(tc, setup_short, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, killed_peer_fails_within_the_deadline);
    tcase_add_test(tc, restarted_peer_is_reached_again);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_VERBOSE);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
