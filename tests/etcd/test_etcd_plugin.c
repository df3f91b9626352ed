/* test_etcd_plugin.c - the etcd metadata plugin driven directly through the
 * core's loader against a real etcd: put/get/remove, large and binary-safe
 * values, leases (revoked on destroy, kept alive, expiring after a crash),
 * re-publishing after a lost lease or a wiped etcd, endpoint failover, and
 * bad inputs (connection strings, keys, malformed replies). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "etcd_base64.h"
#include "etcd_server.h"
#include "kv_server.h"
#include "loader.h"
#include "test_util.h"

#define TTL 2

static etcd_test_cluster etcd;
static te_engine *host_engine; /* only lends its te_host to the plugin */
static const te_metadata_ops *ops;
static char url[64];

static void setup(void)
{
    ck_assert_int_eq(etcd_test_start(&etcd, 1), 0);
    etcd_test_url(&etcd, 0, url, sizeof url);
    host_engine = te_engine_create();
    const te_plugin *p;
    ck_assert_msg(te_plugin_load("metadata_etcd", TE_PLUGIN_METADATA, &p) == 0, "%s",
                  te_last_error());
    ops = &p->metadata;
}

/* For tests that need no etcd. */
static void setup_offline(void)
{
    host_engine = te_engine_create();
    const te_plugin *p;
    ck_assert_int_eq(te_plugin_load("metadata_etcd", TE_PLUGIN_METADATA, &p), 0);
    ops = &p->metadata;
}

static void teardown(void)
{
    etcd_test_stop(&etcd);
    te_engine_destroy(host_engine);
}

static void *open_store(const char *conn)
{
    void *s = NULL;
    int rc = ops->create(&host_engine->host, conn, &s);
    ck_assert_msg(rc == 0, "create(%s): %d %s", conn, rc, te_last_error());
    return s;
}

static void expect_value(void *s, const char *key, const char *want)
{
    char *v = NULL;
    int rc = ops->get(s, key, &v);
    ck_assert_msg(rc == 0, "get %s: %d %s", key, rc, te_last_error());
    ck_assert_str_eq(v, want);
    free(v);
}

static void expect_absent(void *s, const char *key)
{
    char *v = NULL;
    ck_assert_int_eq(ops->get(s, key, &v), TE_ERR_NOT_FOUND);
    ck_assert_ptr_null(v);
}

START_TEST(put_get_overwrite_remove)
{
    void *s = open_store(etcd.endpoints);
    expect_absent(s, "mooncake/ram/none");
    ck_assert_int_eq(ops->put(s, "mooncake/ram/a", "{\"v\":1}"), 0);
    expect_value(s, "mooncake/ram/a", "{\"v\":1}");
    ck_assert_int_eq(ops->put(s, "mooncake/ram/a", "{\"v\":2}"), 0);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/a", "{\"v\":2}"), 0); /* idempotent */
    expect_value(s, "mooncake/ram/a", "{\"v\":2}");
    ck_assert_int_eq(ops->put(s, "mooncake/rpc_meta/a", ""), 0);
    expect_value(s, "mooncake/rpc_meta/a", "");
    ck_assert_int_eq(ops->remove(s, "mooncake/ram/a"), 0);
    expect_absent(s, "mooncake/ram/a");
    ck_assert_int_eq(ops->remove(s, "mooncake/ram/a"), 0); /* absent: fine */
    ops->destroy(s);
}
END_TEST

START_TEST(large_and_binary_values)
{
    void *s = open_store(etcd.endpoints);
    size_t n = 3u << 20;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(1 + (i * 131) % 255); /* every byte value but NUL */
    big[n] = '\0';
    ck_assert_int_eq(ops->put(s, "mooncake/ram/big", big), 0);
    char *v = NULL;
    ck_assert_int_eq(ops->get(s, "mooncake/ram/big", &v), 0);
    ck_assert_uint_eq(strlen(v), n);
    ck_assert(memcmp(v, big, n) == 0);
    free(v);
    /* Keys with odd characters are fine too. */
    ck_assert_int_eq(ops->put(s, "mooncake/ram/a b?c&d=e/\xc3\xa9", "x"), 0);
    expect_value(s, "mooncake/ram/a b?c&d=e/\xc3\xa9", "x");
    free(big);
    ops->destroy(s);
}
END_TEST

START_TEST(destroy_revokes_keys_at_once)
{
    void *a = open_store(etcd.endpoints), *b = open_store(etcd.endpoints);
    ck_assert_int_eq(ops->put(a, "mooncake/ram/A", "a"), 0);
    ck_assert_int_eq(ops->put(b, "mooncake/ram/B", "b"), 0);
    expect_value(b, "mooncake/ram/A", "a"); /* instances see each other's keys */
    ops->destroy(a);
    expect_absent(b, "mooncake/ram/A"); /* no waiting for the TTL */
    expect_value(b, "mooncake/ram/B", "b");
    ops->destroy(b);
    char *v = NULL;
    ck_assert_int_eq(etcd_test_get(url, "mooncake/ram/B", &v), 1);
}
END_TEST

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

START_TEST(keepalive_holds_keys_without_spinning)
{
    void *s = open_store(etcd.endpoints);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/k", "v"), 0);
    double cpu0 = cpu_seconds();
    sleep(3 * TTL);
    ck_assert_double_lt(cpu_seconds() - cpu0, 0.3); /* the thread sleeps between renewals */
    expect_value(s, "mooncake/ram/k", "v");
    ops->destroy(s);
}
END_TEST

START_TEST(lost_lease_republishes_latest_values)
{
    void *s = open_store(etcd.endpoints);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/k", "old"), 0);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/k", "new"), 0);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/gone", "x"), 0);
    ck_assert_int_eq(ops->remove(s, "mooncake/ram/gone"), 0);
    ck_assert_int_ge(etcd_test_revoke_all(url), 1);
    char *v = NULL;
    ck_assert_int_eq(etcd_test_get(url, "mooncake/ram/k", &v), 1);
    double t = etcd_test_wait_key(url, "mooncake/ram/k", true, TTL + 3);
    ck_assert_msg(t >= 0, "key not re-published within %d s", TTL + 3);
    expect_value(s, "mooncake/ram/k", "new");
    expect_absent(s, "mooncake/ram/gone"); /* removed keys stay removed */
    ops->destroy(s);
}
END_TEST

START_TEST(wiped_etcd_is_refilled)
{
    void *s = open_store(etcd.endpoints);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/k", "v"), 0);
    ck_assert_int_eq(ops->put(s, "mooncake/rpc_meta/k", "r"), 0);
    ck_assert_int_eq(etcd_test_restart(&etcd, 0, true), 0);
    double t = etcd_test_wait_key(url, "mooncake/rpc_meta/k", true, TTL + 5);
    ck_assert_msg(t >= 0, "keys not re-published after the wipe");
    expect_value(s, "mooncake/ram/k", "v");
    ops->destroy(s);
    s = open_store(etcd.endpoints);
    expect_absent(s, "mooncake/ram/k");
    ops->destroy(s);
}
END_TEST

START_TEST(puts_while_etcd_is_down_land_later)
{
    void *s = open_store(etcd.endpoints);
    etcd_test_kill(&etcd, 0, SIGKILL);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/late", "v"), TE_ERR_METADATA);
    char *v = NULL;
    ck_assert_int_eq(ops->get(s, "mooncake/ram/late", &v), TE_ERR_METADATA);
    ck_assert_int_eq(etcd_test_restart(&etcd, 0, false), 0);
    ck_assert_msg(etcd_test_wait_key(url, "mooncake/ram/late", true, TTL + 5) >= 0,
                  "a put that failed was not retried");
    ops->destroy(s);
}
END_TEST

START_TEST(crashed_owner_keys_expire)
{
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t pid = fork();
    if (pid == 0) {
        void *s = NULL;
        if (ops->create(&host_engine->host, etcd.endpoints, &s) ||
            ops->put(s, "mooncake/ram/crash", "v"))
            _exit(1);
        ck_assert_int_eq(write(ready[1], "r", 1), 1);
        pause();
        _exit(0);
    }
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    ck_assert(etcd_test_wait_key(url, "mooncake/ram/crash", true, 1) >= 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    double t = etcd_test_wait_key(url, "mooncake/ram/crash", false, TTL + 3);
    ck_assert_msg(t >= 0, "a crashed owner's key outlived TTL + 3 s");
}
END_TEST

START_TEST(dead_endpoints_are_skipped)
{
    char conn[512];
    uint16_t dead = etcd_test_free_port();
    snprintf(conn, sizeof conn, "127.0.0.1:%u;%s", dead, etcd.endpoints);
    void *s = open_store(conn);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/f", "v"), 0);
    expect_value(s, "mooncake/ram/f", "v");
    ops->destroy(s);
    snprintf(conn, sizeof conn, " http://%s/ , 127.0.0.1:%u", etcd.endpoints, dead);
    s = open_store(conn);
    expect_absent(s, "mooncake/ram/f");
    ops->destroy(s);
}
END_TEST

START_TEST(unreachable_fails_within_timeout)
{
    char conn[128];
    snprintf(conn, sizeof conn, "127.0.0.1:%u,127.0.0.1:%u", etcd_test_free_port(),
             etcd_test_free_port());
    void *s = NULL;
    double t0 = etcd_test_now();
    ck_assert_int_eq(ops->create(&host_engine->host, conn, &s), TE_ERR_METADATA);
    ck_assert_ptr_null(s);
    ck_assert(strstr(te_last_error(), "no endpoint answered"));
    /* A black-holed address: bounded by the connect timeout. */
    t0 = etcd_test_now();
    ck_assert_int_lt(ops->create(&host_engine->host, "192.0.2.1:2379", &s), 0);
    ck_assert_double_lt(etcd_test_now() - t0, 4.5);
}
END_TEST

START_TEST(garbage_connection_strings)
{
    static const char *bad[] = {"", ":::", ",;,", "127.0.0.1:notaport", "127.0.0.1:99999",
                                "http://", ":2379", "[::1", NULL};
    for (int i = 0; bad[i]; i++) {
        void *s = NULL;
        int rc = ops->create(&host_engine->host, bad[i], &s);
        ck_assert_msg(rc == TE_ERR_INVALID_ARGUMENT, "'%s' gave %d", bad[i], rc);
        ck_assert_ptr_null(s);
    }
    char many[1024] = "";
    for (int i = 0; i < 20; i++)
        strcat(many, "127.0.0.1:1,");
    void *s = NULL;
    ck_assert_int_eq(ops->create(&host_engine->host, many, &s), TE_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(bad_keys)
{
    void *s = open_store(etcd.endpoints);
    char *huge = malloc(10000);
    memset(huge, 'k', 9999);
    huge[9999] = '\0';
    char *v = NULL;
    ck_assert_int_eq(ops->put(s, huge, "v"), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ops->get(s, huge, &v), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ops->remove(s, huge), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ops->put(s, "", "v"), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ops->put(s, NULL, "v"), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ops->put(s, "k", NULL), TE_ERR_INVALID_ARGUMENT);
    /* A value beyond etcd's request limit: refused cleanly. */
    size_t n = 12u << 20;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    ck_assert_int_eq(ops->put(s, "mooncake/ram/huge", big), TE_ERR_METADATA);
    free(big);
    free(huge);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/ok", "still works"), 0);
    expect_value(s, "mooncake/ram/ok", "still works");
    ops->destroy(s);
}
END_TEST

START_TEST(destroy_is_prompt_when_etcd_is_gone)
{
    void *s = open_store(etcd.endpoints);
    ck_assert_int_eq(ops->put(s, "mooncake/ram/k", "v"), 0);
    etcd_test_kill(&etcd, 0, SIGKILL);
    usleep(1500 * 1000); /* let the thread hit the dead endpoint */
    double t0 = etcd_test_now();
    ops->destroy(s);
    ck_assert_double_lt(etcd_test_now() - t0, 2.0);
}
END_TEST

/* ---- against a fake etcd that answers nonsense ---------------------------- */

static void *fake_store(kv_server *fake, const char *grant_reply, int *rc)
{
    char conn[64];
    snprintf(conn, sizeof conn, "127.0.0.1:%u", fake->port);
    kv_server_can(fake, "/v3/lease/grant", 200, grant_reply);
    void *s = NULL;
    *rc = ops->create(&host_engine->host, conn, &s);
    return s;
}

START_TEST(malformed_replies_are_rejected)
{
    static const char *bad_grants[] = {"not json", "[1,2]", "{\"ID\":\"abc\",\"TTL\":\"5\"}",
                                       "{\"ID\":\"7\"}", "{\"ID\":{},\"TTL\":\"5\"}", "{}", NULL};
    for (int i = 0; bad_grants[i]; i++) {
        kv_server fake;
        ck_assert_int_eq(kv_server_start(&fake), 0);
        int rc;
        void *s = fake_store(&fake, bad_grants[i], &rc);
        ck_assert_msg(rc == TE_ERR_METADATA && !s, "grant reply '%s' gave %d", bad_grants[i], rc);
        kv_server_stop(&fake);
    }
    static const char *bad_ranges[] = {
        "{\"kvs\":{}}", "{\"kvs\":[1]}", "{\"kvs\":[{\"key\":\"b3RoZXI=\",\"value\":\"eA==\"}]}",
        "{\"kvs\":[{\"key\":\"aw==\",\"value\":\"!!!!\"}]}",
        "{\"kvs\":[{\"key\":\"aw==\",\"value\":\"eA\"}]}",
        "{\"kvs\":[{\"key\":\"aw==\",\"value\":\"AA==\"}]}", /* a NUL byte */
        "{\"kvs\":[{\"key\":\"aw==\",\"value\":5}]}", NULL};
    for (int i = 0; bad_ranges[i]; i++) {
        kv_server fake;
        ck_assert_int_eq(kv_server_start(&fake), 0);
        kv_server_can(&fake, "/v3/kv/range", 200, bad_ranges[i]);
        kv_server_can(&fake, "/v3/lease/keepalive", 200, "{\"result\":{\"TTL\":\"5\"}}");
        int rc;
        void *s = fake_store(&fake, "{\"ID\":\"7\",\"TTL\":\"5\"}", &rc);
        ck_assert_int_eq(rc, 0);
        char *v = NULL;
        rc = ops->get(s, "k", &v);
        ck_assert_msg(rc == TE_ERR_METADATA && !v, "range reply '%s' gave %d", bad_ranges[i], rc);
        ops->destroy(s);
        kv_server_stop(&fake);
    }
}
END_TEST

START_TEST(base64_round_trips_and_rejects)
{
    unsigned char data[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 77 + 3);
    for (size_t n = 0; n <= sizeof data; n++) {
        char *e = etcd_b64_encode(data, n), *d;
        size_t len;
        ck_assert_int_eq(etcd_b64_decode(e, &d, &len), 0);
        ck_assert_uint_eq(len, n);
        ck_assert(memcmp(d, data, n) == 0);
        free(e);
        free(d);
    }
    char *e = etcd_b64_encode("foobar", 6);
    ck_assert_str_eq(e, "Zm9vYmFy");
    free(e);
    static const char *bad[] = {"abc", "ab=c", "a===", "Zm9v!A==", "Zh==", "Zm9=", "=AAA",
                                "AA==AA==", NULL};
    for (int i = 0; bad[i]; i++) {
        char *d = NULL;
        size_t len;
        ck_assert_msg(etcd_b64_decode(bad[i], &d, &len) == -1, "accepted '%s'", bad[i]);
    }
}
END_TEST

int main(void)
{
    etcd_test_require();
    setenv("MC_METADATA_LEASE_TTL", "2", 1);
    Suite *s = suite_create("etcd_plugin");
    TCase *tc = tcase_create("etcd");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, put_get_overwrite_remove);
    tcase_add_test(tc, large_and_binary_values);
    tcase_add_test(tc, destroy_revokes_keys_at_once);
    tcase_add_test(tc, keepalive_holds_keys_without_spinning);
    tcase_add_test(tc, lost_lease_republishes_latest_values);
    tcase_add_test(tc, wiped_etcd_is_refilled);
    tcase_add_test(tc, puts_while_etcd_is_down_land_later);
    tcase_add_test(tc, crashed_owner_keys_expire);
    tcase_add_test(tc, dead_endpoints_are_skipped);
    tcase_add_test(tc, unreachable_fails_within_timeout);
    tcase_add_test(tc, garbage_connection_strings);
    tcase_add_test(tc, bad_keys);
    tcase_add_test(tc, destroy_is_prompt_when_etcd_is_gone);
    suite_add_tcase(s, tc);
    TCase *offline = tcase_create("offline");
    tcase_add_checked_fixture(offline, setup_offline, teardown);
    tcase_add_test(offline, malformed_replies_are_rejected);
    tcase_add_test(offline, base64_round_trips_and_rejects);
    suite_add_tcase(s, offline);
    return te_test_run(s);
}
