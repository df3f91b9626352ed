/* test_rdma_mixed_vm.c - inside the soft-RoCE VM (guest_checks.sh): an
 * engine running rdma and tcp reaches a tcp-only peer, a tcp-only engine
 * reaches an rdma peer (writes and reads, verified); RDMA paths that break,
 * a refused QP handshake and the device's link taken down mid-run, finish
 * over tcp and te_get_metrics counts the failovers.  shm is left out
 * (MC_TE_TRANSPORTS) so that one VM stands for two hosts. */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

#define SIZE (16ull << 20)

static te_test_peer peer;
static te_engine *eng;
static uint8_t *local;
static te_segment_id seg;

/* A peer running exactly `transports` (its protocol the first of them). */
static void start_peer(const char *protocol, const char *transports)
{
    const char *args[] = {"--protocol", protocol, "--size", "16777216", NULL};
    setenv("MC_TE_TRANSPORTS", transports, 1);
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
}

static void start_engine(const char *protocol, const char *transports)
{
    setenv("MC_TE_TRANSPORTS", transports, 1);
    setenv("MC_TRANSFER_TIMEOUT", "60", 1);
    setenv("MC_TE_FAILOVER_COOLDOWN", "2", 1);
    eng = te_engine_create();
    int rc = te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", protocol, "", NULL);
    ck_assert_msg(rc == 0, "initialize %s: %s", protocol, te_last_error());
    te_test_local_to_peer(eng, &peer, SIZE, &local, &seg);
}

static void teardown(void)
{
    te_test_peer_teardown(&peer, eng, local);
    unsetenv("MC_TE_TRANSPORTS");
}

/* counters["transports"][t][key] or counters["failovers"][t][key]. */
static long long counter(const char *group, const char *t, const char *key)
{
    char *text = NULL;
    ck_assert_int_eq(te_get_metrics(eng, &text), 0);
    json_t *root = json_loads(text, 0, NULL);
    te_free(text);
    json_t *v = json_object_get(json_object_get(json_object_get(root, group), t), key);
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : 0;
    json_decref(root);
    return n;
}

static void round_trip(uint64_t off, uint64_t len, uint64_t seed)
{
    te_test_write_then_read(eng, seg, &peer, local, off, len, seed);
}

START_TEST(rdma_engine_reaches_a_tcp_only_peer)
{
    start_peer("tcp", "tcp");
    start_engine("rdma", "rdma,tcp");
    ck_assert_str_eq(te_engine_protocol(eng), "rdma");
    const char *via = NULL;
    ck_assert_int_eq(te_segment_transport(eng, seg, &via), 0);
    ck_assert_str_eq(via, "tcp");
    round_trip(0, 4 << 20, 3);
    ck_assert_int_eq(counter("transports", "tcp", "write_bytes"), 4 << 20);
    ck_assert_int_eq(counter("transports", "rdma", "write_bytes"), 0);
}
END_TEST

START_TEST(tcp_only_engine_reaches_an_rdma_peer)
{
    start_peer("rdma", "rdma,tcp");
    start_engine("tcp", "tcp");
    round_trip(0, 4 << 20, 5);
    ck_assert_int_eq(counter("transports", "tcp", "read_bytes"), 4 << 20);
}
END_TEST

START_TEST(refused_rdma_handshake_finishes_over_tcp)
{
    setenv("MC_NUM_QP_PER_EP", "1", 1); /* we use 2: the peer refuses our QPs */
    start_peer("rdma", "rdma,tcp");
    unsetenv("MC_NUM_QP_PER_EP");
    start_engine("rdma", "rdma,tcp");
    const char *via = NULL;
    ck_assert_int_eq(te_segment_transport(eng, seg, &via), 0);
    ck_assert_str_eq(via, "rdma");
    round_trip(0, 1 << 20, 7);
    long long moved = counter("failovers", "rdma", "tcp");
    printf("refused handshake: %lld slice(s) moved from rdma to tcp\n", moved);
    ck_assert_int_eq(moved, (1 << 20) / 65536); /* every 64 KiB slice of the write */
}
END_TEST

typedef struct writer {
    atomic_bool stop;
    int failures, rounds;
    double longest; /* seconds, of one write */
} writer;

/* Writes 1 MiB at a time, checking each, until told to stop. */
static void *write_loop(void *arg)
{
    writer *w = arg;
    for (uint64_t i = 0; !atomic_load(&w->stop); i++) {
        uint64_t off = (i % 8) << 20;
        te_test_fill(local + off, 1 << 20, 100 + i, 0);
        te_request r = {TE_OP_WRITE, local + off, seg, peer.addr + off, 1 << 20};
        double t0 = te_test_now_s();
        if (te_transfer_sync(eng, &r, 1, NULL, NULL))
            w->failures++;
        if (te_test_now_s() - t0 > w->longest)
            w->longest = te_test_now_s() - t0;
        w->rounds++;
    }
    return NULL;
}

/* The netdev under the first rxe device (RDMA_NETDEVS from run-in-vm.sh). */
static void link_set(const char *state)
{
    char dev[64] = "te0", cmd[128];
    const char *list = getenv("RDMA_NETDEVS");
    if (list && *list)
        snprintf(dev, sizeof dev, "%.*s", (int)strcspn(list, ","), list);
    snprintf(cmd, sizeof cmd, "ip link set %s %s", dev, state);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(rdma_link_down_mid_run_finishes_over_tcp)
{
    start_peer("rdma", "rdma,tcp");
    start_engine("rdma", "rdma,tcp");
    round_trip(0, 1 << 20, 9); /* endpoints up */
    writer w = {.failures = 0};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, write_loop, &w), 0);
    sleep(1);
    link_set("down");
    sleep(8);
    atomic_store(&w.stop, true);
    pthread_join(th, NULL);
    link_set("up");
    long long moved = counter("failovers", "rdma", "tcp");
    printf("link down mid-run: %d writes, %d failed, %lld slice(s) moved from rdma to tcp, "
           "tcp carried %lld bytes, longest write %.2f s\n",
           w.rounds, w.failures, moved, counter("transports", "tcp", "write_bytes"), w.longest);
    ck_assert_int_eq(w.failures, 0);
    ck_assert_int_gt(moved, 0);
    /* The port's PORT_ACTIVE event makes the NIC usable again: once the
     * core's cooldown (2 s, doubling per strike) ends, rdma carries writes. */
    long long rdma_before = counter("transports", "rdma", "write_bytes");
    double t0 = te_test_now_s(), waited = 0;
    while (counter("transports", "rdma", "write_bytes") == rdma_before && waited < 60) {
        te_request r = {TE_OP_WRITE, local, seg, peer.addr, 1 << 20};
        ck_assert_int_eq(te_transfer_sync(eng, &r, 1, NULL, NULL), 0);
        usleep(100000);
        waited = te_test_now_s() - t0;
    }
    printf("link up again: rdma carries writes after %.1f s\n", waited);
    ck_assert_int_gt(counter("transports", "rdma", "write_bytes"), rdma_before);
    round_trip(8 << 20, 1 << 20, 11); /* and the data is right */
}
END_TEST

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    Suite *s = suite_create("rdma_mixed_vm");
    TCase *tc = tcase_create("mixed");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, rdma_engine_reaches_a_tcp_only_peer);
    tcase_add_test(tc, tcp_only_engine_reaches_an_rdma_peer);
    tcase_add_test(tc, refused_rdma_handshake_finishes_over_tcp);
    tcase_add_test(tc, rdma_link_down_mid_run_finishes_over_tcp);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
