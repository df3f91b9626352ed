/* test_etcd_engines.c - engines in separate processes that find each other
 * through a real etcd: verified transfers, keys gone after SIGKILL within the
 * lease TTL, re-publishing after etcd restarts wiped, a peer restarting under
 * the same name with new buffers, and bad metadata (malformed values, garbage
 * or unreachable connection strings) failing cleanly. */
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
static char url[64], meta[300];

static void setup(void)
{
    ck_assert_int_eq(etcd_test_start(&etcd, 1), 0);
    etcd_test_url(&etcd, 0, url, sizeof url);
    snprintf(meta, sizeof meta, "etcd://%s", etcd.endpoints);
}

static void teardown(void)
{
    etcd_test_stop(&etcd);
}

static void expect_key(const char *key, const char *needle)
{
    char *v = NULL;
    ck_assert_msg(etcd_test_get(url, key, &v) == 0, "key %s missing", key);
    ck_assert_msg(strstr(v, needle), "key %s = %s, wanted %s in it", key, v, needle);
    free(v);
}

START_TEST(two_engines_meet_and_move_data)
{
    te_test_peer a, b;
    ck_assert_int_eq(etcd_peer_start(&a, meta, "node-a", 4 * MIB), 0);
    ck_assert_int_eq(etcd_peer_start(&b, etcd.endpoints, "node-b", 4 * MIB), 0); /* bare host:port */
    expect_key("mooncake/ram/node-a", "\"protocol\":\"tcp\"");
    expect_key("mooncake/rpc_meta/node-a", "\"ip_or_host_name\":\"127.0.0.1\"");
    ck_assert_int_eq(etcd_peer_to_peer(&b, &a, 4096, MIB + 7, 11), 0);
    ck_assert_int_eq(etcd_peer_to_peer(&a, &b, 0, 3 * MIB, 12), 0);
    etcd_local l;
    ck_assert_int_eq(etcd_local_start(&l, meta, "node-local", 4 * MIB), 0);
    ck_assert_int_eq(etcd_write_verified(&l, &a, 100, 2 * MIB, 13), 0);
    ck_assert_int_eq(etcd_read_verified(&l, &b, 0, 4 * MIB, 14), 0);
    te_test_peer_stop(&a);
    char *v = NULL;
    ck_assert_int_eq(etcd_test_get(url, "mooncake/ram/node-a", &v), 1); /* clean exit removes */
    ck_assert_int_eq(etcd_test_get(url, "mooncake/rpc_meta/node-a", &v), 1);
    te_test_peer_stop(&b);
    etcd_local_stop(&l);
    ck_assert_int_eq(etcd_test_get(url, "mooncake/ram/node-local", &v), 1);
}
END_TEST

START_TEST(killed_engine_keys_vanish)
{
    te_test_peer a;
    ck_assert_int_eq(etcd_peer_start(&a, meta, "doomed", MIB), 0);
    expect_key("mooncake/ram/doomed", "doomed");
    te_test_peer_kill(&a, SIGKILL);
    double t1 = etcd_test_wait_key(url, "mooncake/ram/doomed", false, TTL + 3);
    double t2 = etcd_test_wait_key(url, "mooncake/rpc_meta/doomed", false, TTL + 3);
    ck_assert_msg(t1 >= 0 && t2 >= 0, "keys of a SIGKILLed engine outlived TTL + 3 s");
    etcd_local l;
    ck_assert_int_eq(etcd_local_start(&l, meta, "survivor", MIB), 0);
    te_segment_id id;
    ck_assert_int_lt(te_segment_open(l.engine, "doomed", &id), 0);
    etcd_local_stop(&l);
}
END_TEST

START_TEST(wiped_etcd_is_refilled_by_live_engines)
{
    te_test_peer a;
    ck_assert_int_eq(etcd_peer_start(&a, meta, "steady", 2 * MIB), 0);
    etcd_local l;
    ck_assert_int_eq(etcd_local_start(&l, meta, "steady-local", 2 * MIB), 0);
    ck_assert_int_eq(etcd_write_verified(&l, &a, 0, MIB, 21), 0);
    ck_assert_int_eq(etcd_test_restart(&etcd, 0, true), 0);
    double t = etcd_test_wait_key(url, "mooncake/rpc_meta/steady", true, TTL + 5);
    ck_assert_msg(t >= 0, "the live engine did not re-publish within TTL + 5 s");
    ck_assert(etcd_test_wait_key(url, "mooncake/ram/steady", true, 2) >= 0);
    ck_assert(etcd_test_wait_key(url, "mooncake/ram/steady-local", true, 2) >= 0);
    te_test_peer c; /* a newcomer finds both old engines */
    ck_assert_int_eq(etcd_peer_start(&c, meta, "newcomer", 2 * MIB), 0);
    ck_assert_int_eq(etcd_peer_to_peer(&c, &a, 512, MIB, 22), 0);
    ck_assert_int_eq(etcd_peer_to_peer(&a, &c, 0, MIB, 23), 0);
    ck_assert_int_eq(etcd_write_verified(&l, &c, 0, MIB, 24), 0);
    te_test_peer_stop(&c);
    te_test_peer_stop(&a);
    etcd_local_stop(&l);
}
END_TEST

START_TEST(restarted_peer_with_new_buffers)
{
    te_test_peer a;
    ck_assert_int_eq(etcd_peer_start(&a, meta, "phoenix", MIB), 0);
    etcd_local l;
    ck_assert_int_eq(etcd_local_start(&l, meta, "phoenix-user", 8 * MIB), 0);
    ck_assert_int_eq(etcd_write_verified(&l, &a, 0, MIB, 31), 0); /* caches a's descriptor */
    te_test_peer_stop(&a);
    ck_assert_int_eq(etcd_peer_start(&a, meta, "phoenix", 8 * MIB), 0);
    ck_assert_int_eq(etcd_write_verified(&l, &a, 5 * MIB, 2 * MIB, 32), 0);
    ck_assert_int_eq(etcd_write_verified(&l, &a, 0, MIB, 33), 0);
    ck_assert_int_eq(etcd_read_verified(&l, &a, 0, 8 * MIB, 34), 0);
    te_test_peer_stop(&a);
    etcd_local_stop(&l);
}
END_TEST

START_TEST(malformed_metadata_fails_cleanly)
{
    etcd_local l;
    ck_assert_int_eq(etcd_local_start(&l, meta, "reader", MIB), 0);
    static const char *bad_desc[] = {"{not json", "[]", "{\"name\":5,\"protocol\":\"tcp\"}",
                                     "{\"name\":\"x\",\"protocol\":\"tcp\",\"buffers\":7}", "",
                                     NULL};
    for (int i = 0; bad_desc[i]; i++) {
        char name[32], key[64];
        snprintf(name, sizeof name, "bad%d", i);
        snprintf(key, sizeof key, "mooncake/ram/%s", name);
        ck_assert_int_eq(etcd_test_put(url, key, bad_desc[i]), 0);
        snprintf(key, sizeof key, "mooncake/rpc_meta/%s", name);
        ck_assert_int_eq(etcd_test_put(url, key, "{\"ip_or_host_name\":\"127.0.0.1\",\"rpc_port\":1}"), 0);
        te_segment_id id;
        ck_assert_msg(te_segment_open(l.engine, name, &id) < 0, "opened '%s'", bad_desc[i]);
    }
    /* A good descriptor with a garbage rpc_meta. */
    ck_assert_int_eq(etcd_test_put(url, "mooncake/ram/badrpc",
                                   "{\"name\":\"badrpc\",\"protocol\":\"tcp\",\"buffers\":[]}"), 0);
    ck_assert_int_eq(etcd_test_put(url, "mooncake/rpc_meta/badrpc", "{\"rpc_port\":\"x\"}"), 0);
    te_segment_id id;
    ck_assert_int_lt(te_segment_open(l.engine, "badrpc", &id), 0);
    ck_assert_int_lt(te_segment_open(l.engine, "never-published", &id), 0);
    etcd_local_stop(&l);
}
END_TEST

START_TEST(bad_connection_strings_fail_cleanly)
{
    char dead[128];
    snprintf(dead, sizeof dead, "etcd://127.0.0.1:%u", etcd_test_free_port());
    const char *bad[] = {"etcd://", "etcd://:::", "etcd://,,,", "etcd://a:b:c:d", dead, NULL};
    for (int i = 0; bad[i]; i++) {
        te_engine *e = te_engine_create();
        double t0 = etcd_test_now();
        int rc = te_engine_initialize(e, "nobody", bad[i], "tcp", "", NULL);
        ck_assert_msg(rc < 0, "'%s' initialized", bad[i]);
        ck_assert_double_lt(etcd_test_now() - t0, 4.0);
        te_engine_destroy(e);
    }
}
END_TEST

int main(void)
{
    etcd_engine_test_require(TTL);
    Suite *s = suite_create("etcd_engines");
    TCase *tc = tcase_create("engines");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, two_engines_meet_and_move_data);
    tcase_add_test(tc, killed_engine_keys_vanish);
    tcase_add_test(tc, wiped_etcd_is_refilled_by_live_engines);
    tcase_add_test(tc, restarted_peer_with_new_buffers);
    tcase_add_test(tc, malformed_metadata_fails_cleanly);
    tcase_add_test(tc, bad_connection_strings_fail_cleanly);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
