/* test_etcd_cluster.c - engines on a three-member etcd cluster on loopback:
 * with the member they all use killed mid-run, publishing, lookups, leases
 * and transfers carry on through the other two; with quorum lost, lookups
 * fail cleanly within a bound; once quorum returns, everything works again. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_peers.h"
#include "etcd_server.h"

#define TTL 2
#define MIB (1u << 20)

static etcd_test_cluster etcd;
static char meta[300];

static void setup(void)
{
    ck_assert_int_eq(etcd_test_start(&etcd, 3), 0);
    snprintf(meta, sizeof meta, "etcd://%s", etcd.endpoints);
}

static void teardown(void)
{
    etcd_test_stop(&etcd);
}

static bool key_on(int member, const char *key)
{
    char url[64], *v = NULL;
    etcd_test_url(&etcd, member, url, sizeof url);
    int rc = etcd_test_get(url, key, &v);
    free(v);
    return rc == 0;
}

/* Member 0, first in everyone's list, dies: the others carry on. */
static void survive_member_loss(te_test_peer *a, te_test_peer *b, etcd_local *l)
{
    etcd_test_kill(&etcd, 0, SIGKILL);
    te_test_peer c; /* publishing and lookups through members 1 and 2 */
    ck_assert_int_eq(etcd_peer_start(&c, meta, "cl-c", 2 * MIB), 0);
    ck_assert_int_eq(etcd_peer_to_peer(&c, a, 0, MIB, 3), 0);
    ck_assert_int_eq(etcd_write_verified(l, b, 0, MIB, 4), 0);
    /* A registration after the loss is published, and a peer reaches it. */
    char *extra = aligned_alloc(4096, MIB);
    memset(extra, 0, MIB);
    ck_assert_int_eq(te_register_memory(l->engine, extra, MIB, "cpu:0"), 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "write cl-local 0 %u %llx 5", MIB,
             (unsigned long long)(uintptr_t)extra);
    ck_assert_int_eq(etcd_peer_ok(&c, cmd), 0);
    ck_assert_int_eq(te_test_check(extra, MIB, 5, 0), -1);
    /* Leases are kept alive through the survivors. */
    sleep(2 * TTL);
    ck_assert(key_on(1, "mooncake/ram/cl-a") && key_on(2, "mooncake/rpc_meta/cl-c"));
    ck_assert_int_eq(te_unregister_memory(l->engine, extra), 0);
    free(extra);
    te_test_peer_stop(&c);
}

/* Two of three gone: no quorum, clean failures; one back: working again. */
static void survive_quorum_loss(te_test_peer *a, etcd_local *l)
{
    etcd_test_kill(&etcd, 1, SIGKILL);
    te_segment_id id;
    double t0 = etcd_test_now();
    ck_assert_int_lt(te_segment_open(l->engine, "cl-nobody", &id), 0);
    ck_assert_double_lt(etcd_test_now() - t0, 10.0);
    ck_assert_int_eq(etcd_test_restart(&etcd, 1, false), 0);
    char url[64];
    etcd_test_url(&etcd, 1, url, sizeof url);
    ck_assert(etcd_test_wait_key(url, "mooncake/rpc_meta/cl-a", true, TTL + 5) >= 0);
    te_test_peer d;
    ck_assert_int_eq(etcd_peer_start(&d, meta, "cl-d", MIB), 0);
    ck_assert_int_eq(etcd_peer_to_peer(&d, a, 0, MIB, 6), 0);
    ck_assert_int_eq(etcd_write_verified(l, &d, 0, MIB, 7), 0);
    te_test_peer_stop(&d);
}

START_TEST(member_loss_mid_run)
{
    te_test_peer a, b;
    ck_assert_int_eq(etcd_peer_start(&a, meta, "cl-a", 2 * MIB), 0);
    ck_assert_int_eq(etcd_peer_start(&b, meta, "cl-b", 2 * MIB), 0);
    etcd_local l;
    ck_assert_int_eq(etcd_local_start(&l, meta, "cl-local", 2 * MIB), 0);
    ck_assert_int_eq(etcd_peer_to_peer(&a, &b, 0, MIB, 1), 0);
    ck_assert_int_eq(etcd_read_verified(&l, &a, 0, 2 * MIB, 2), 0);
    survive_member_loss(&a, &b, &l);
    survive_quorum_loss(&a, &l);
    te_test_peer_stop(&a);
    te_test_peer_stop(&b);
    etcd_local_stop(&l);
    ck_assert(!key_on(2, "mooncake/ram/cl-a") && !key_on(2, "mooncake/ram/cl-local"));
}
END_TEST

int main(void)
{
    etcd_engine_test_require(TTL);
    Suite *s = suite_create("etcd_cluster");
    TCase *tc = tcase_create("cluster");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, member_loss_mid_run);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
