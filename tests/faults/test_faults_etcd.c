/* test_faults_etcd.c - an etcd member killed, and etcd killed and restarted,
 * under verified traffic (tests/etcd's real servers): transfers between known
 * peers never fail, etcd-bound calls stay bounded, and what was registered
 * meanwhile is published once etcd is back. */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_peers.h"
#include "etcd_server.h"
#include "fault_util.h"

#define MIB (1u << 20)

static etcd_test_cluster etcd;
static char meta[300];
static te_test_peer a, b;
static etcd_local l;
static atomic_bool stop_flag;

typedef struct worker {
    pthread_t th;
    te_test_peer *peer;
    uint8_t *mem; /* source | destination, 2 MiB each, in the upper half of l's buffer
                   * (the etcd_peers helpers use its start) */
    uint64_t ok, errors;
} worker;

static worker workers[2];

static void start(int members)
{
    ck_assert_int_eq(etcd_test_start(&etcd, members), 0);
    snprintf(meta, sizeof meta, "etcd://%s", etcd.endpoints);
    ck_assert_int_eq(etcd_peer_start(&a, meta, "fe-a", 8 * MIB), 0);
    ck_assert_int_eq(etcd_peer_start(&b, meta, "fe-b", 8 * MIB), 0);
    ck_assert_int_eq(etcd_local_start(&l, meta, "fe-local", 16 * MIB), 0);
    atomic_store(&stop_flag, false);
}

static void teardown(void)
{
    te_test_peer_stop(&a);
    te_test_peer_stop(&b);
    etcd_local_stop(&l);
    etcd_test_stop(&etcd);
}

/* Writes a pattern to the upper half of the peer's buffer (the lower half
 * is what its "write" command sends from), reads it back elsewhere,
 * compares. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    te_segment_id id;
    if (te_segment_open(l.engine, w->peer->segment, &id)) {
        w->errors++;
        return NULL;
    }
    for (unsigned i = 0; !atomic_load(&stop_flag); i++) {
        size_t len = 4096 + (i * 40503u) % (2 * MIB - 4096);
        te_test_fill(w->mem, len, 300 + i, 0);
        te_request wr = {TE_OP_WRITE, w->mem, id, w->peer->addr + 4 * MIB, len};
        te_request rd = {TE_OP_READ, w->mem + 2 * MIB, id, w->peer->addr + 4 * MIB, len};
        int rc = te_transfer_sync(l.engine, &wr, 1, NULL, NULL);
        if (!rc)
            rc = te_transfer_sync(l.engine, &rd, 1, NULL, NULL);
        if (!rc && te_test_check(w->mem + 2 * MIB, len, 300 + i, 0) != -1)
            rc = -1;
        if (rc) {
            fprintf(stderr, "transfer %u with %s failed: %d %s\n", i, w->peer->segment, rc,
                    te_last_error());
            w->errors++;
        } else {
            w->ok++;
        }
    }
    return NULL;
}

static void start_traffic(void)
{
    te_test_peer *peers[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        workers[i] = (worker){.peer = peers[i], .mem = (uint8_t *)l.buf + (size_t)(2 + i) * 4 * MIB};
        ck_assert_int_eq(pthread_create(&workers[i].th, NULL, worker_main, &workers[i]), 0);
    }
    usleep(300000);
}

static void stop_traffic(void)
{
    atomic_store(&stop_flag, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(workers[i].th, NULL);
        printf("  traffic with %s: %llu verified round trips, %llu errors\n",
               workers[i].peer->segment, (unsigned long long)workers[i].ok,
               (unsigned long long)workers[i].errors);
        ck_assert_uint_gt(workers[i].ok, 0);
        ck_assert_uint_eq(workers[i].errors, 0);
    }
}

/* A buffer registered by the local engine now is reached by peer a. */
static void new_registration_is_reachable(unsigned seed)
{
    char *extra = aligned_alloc(4096, MIB);
    memset(extra, 0, MIB);
    ck_assert_int_eq(te_register_memory(l.engine, extra, MIB, "cpu:0"), 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "write fe-local 0 %u %llx %u", MIB,
             (unsigned long long)(uintptr_t)extra, seed);
    ck_assert_int_eq(etcd_peer_ok(&a, cmd), 0);
    ck_assert_int_eq(te_test_check(extra, MIB, seed, 0), -1);
    ck_assert_int_eq(te_unregister_memory(l.engine, extra), 0);
    free(extra);
}

/* Starts a newcomer; while the survivors elect a leader it may be refused
 * (bounded), but not for long. */
static void start_newcomer(te_test_peer *p, const char *name)
{
    double end = fault_now() + 15.0 * fault_scale();
    int rc;
    while ((rc = etcd_peer_start(p, meta, name, 2 * MIB)) != 0 && fault_now() < end)
        usleep(200000);
    ck_assert_int_eq(rc, 0);
}

START_TEST(member_killed_under_traffic)
{
    start(3);
    start_traffic();
    etcd_test_kill(&etcd, 0, SIGKILL); /* the first endpoint of everyone's list */
    te_test_peer c; /* publishes, and is found, through the two survivors */
    start_newcomer(&c, "fe-c");
    ck_assert_int_eq(etcd_write_verified(&l, &c, 0, MIB, 21), 0);
    new_registration_is_reachable(22);
    te_test_peer_stop(&c);
    stop_traffic();
}
END_TEST

START_TEST(etcd_killed_and_restarted_under_traffic)
{
    start(1);
    start_traffic();
    etcd_test_kill(&etcd, 0, SIGKILL);
    /* Lookups of unknown peers fail, bounded; registering memory returns,
     * bounded (its publication waits for etcd). */
    te_segment_id id;
    double t0 = fault_now();
    ck_assert_int_lt(te_segment_open(l.engine, "fe-nobody", &id), 0);
    ck_assert_double_lt(fault_now() - t0, 10.0 * fault_scale());
    char *extra = aligned_alloc(4096, MIB);
    memset(extra, 0, MIB);
    t0 = fault_now();
    int rc = te_register_memory(l.engine, extra, MIB, "cpu:0");
    ck_assert_double_lt(fault_now() - t0, 10.0 * fault_scale());
    usleep(1000000); /* traffic goes on without etcd */
    ck_assert_int_eq(etcd_test_restart(&etcd, 0, false), 0);
    if (rc == 0) {
        /* Registered while etcd was down: published once it is back. */
        char cmd[256];
        snprintf(cmd, sizeof cmd, "write fe-local 0 %u %llx 31", MIB,
                 (unsigned long long)(uintptr_t)extra);
        double end = fault_now() + 10.0 * fault_scale();
        while (etcd_peer_ok(&a, cmd) != 0 && fault_now() < end)
            usleep(200000);
        ck_assert_int_eq(te_test_check(extra, MIB, 31, 0), -1);
        ck_assert_int_eq(te_unregister_memory(l.engine, extra), 0);
    }
    free(extra);
    te_test_peer d; /* a newcomer after the restart */
    start_newcomer(&d, "fe-d");
    ck_assert_int_eq(etcd_write_verified(&l, &d, 0, MIB, 32), 0);
    te_test_peer_stop(&d);
    new_registration_is_reachable(33);
    stop_traffic();
}
END_TEST

int main(void)
{
    etcd_engine_test_require(2);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    setenv("MC_LOG_LEVEL", "ERROR", 0);
    fault_setenv_secs("MC_TRANSFER_TIMEOUT", 5);
    Suite *s = suite_create("faults_etcd");
    TCase *tc = tcase_create("etcd");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 120 * fault_scale());
    tcase_add_test(tc, member_killed_under_traffic);
    tcase_add_test(tc, etcd_killed_and_restarted_under_traffic);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
