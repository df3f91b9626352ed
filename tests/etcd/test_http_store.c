/* test_http_store.c - the HTTP metadata plugin against an in-test server that
 * speaks Mooncake's protocol: put/get/remove with escaped keys, a 404 GET as
 * "not found", a refused PUT, unreachable servers and bad URLs; then two
 * engines (this process and te-test-peer) that meet through it and move data. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "etcd_peers.h"
#include "etcd_server.h"
#include "kv_server.h"
#include "loader.h"
#include "test_util.h"

static kv_server server;
static te_engine *host_engine;
static const te_metadata_ops *ops;
static char base[128];

static void setup(void)
{
    ck_assert_int_eq(kv_server_start(&server), 0);
    snprintf(base, sizeof base, "http://127.0.0.1:%u/metadata", server.port);
    host_engine = te_engine_create();
    const te_plugin *p;
    ck_assert_msg(te_plugin_load("metadata_http", TE_PLUGIN_METADATA, &p) == 0, "%s",
                  te_last_error());
    ops = &p->metadata;
}

static void teardown(void)
{
    te_engine_destroy(host_engine);
    kv_server_stop(&server);
}

static void *open_store(const char *conn)
{
    void *s = NULL;
    ck_assert_msg(ops->create(&host_engine->host, conn, &s) == 0, "%s", te_last_error());
    return s;
}

START_TEST(put_get_remove)
{
    void *s = open_store(base);
    const char *key = "mooncake/ram/host a&b=c?d%e+f";
    ck_assert_int_eq(ops->put(s, key, "{\"x\":1}"), 0);
    char *stored = kv_server_value(&server, key); /* the key arrived unescaped, intact */
    ck_assert_ptr_nonnull(stored);
    ck_assert_str_eq(stored, "{\"x\":1}");
    free(stored);
    char *v = NULL;
    ck_assert_int_eq(ops->get(s, key, &v), 0);
    ck_assert_str_eq(v, "{\"x\":1}");
    free(v);
    ck_assert_int_eq(ops->remove(s, key), 0);
    ck_assert_int_eq(ops->get(s, key, &v), TE_ERR_NOT_FOUND);
    ck_assert_ptr_null(v);
    ops->destroy(s);
}
END_TEST

START_TEST(url_with_query_and_large_value)
{
    char conn[192];
    snprintf(conn, sizeof conn, "%s?cluster=x", base);
    void *s = open_store(conn);
    size_t n = 2u << 20;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    big[n] = '\0';
    ck_assert_int_eq(ops->put(s, "k", big), 0);
    char *v = NULL;
    ck_assert_int_eq(ops->get(s, "k", &v), 0);
    ck_assert_uint_eq(strlen(v), n);
    ck_assert(strcmp(v, big) == 0);
    free(v);
    free(big);
    ops->destroy(s);
}
END_TEST

START_TEST(non_200_is_failure)
{
    void *s = open_store(base);
    kv_server_fail_puts(&server, 400); /* like the Python server's duplicate rpc_meta */
    ck_assert_int_eq(ops->put(s, "mooncake/rpc_meta/x", "{}"), TE_ERR_METADATA);
    ck_assert(strstr(te_last_error(), "HTTP 400"));
    kv_server_fail_puts(&server, 500);
    ck_assert_int_eq(ops->put(s, "k", "{}"), TE_ERR_METADATA);
    kv_server_fail_puts(&server, 0);
    kv_server_can(&server, "/broken", 500, "oops");
    char conn[160];
    snprintf(conn, sizeof conn, "http://127.0.0.1:%u/broken", server.port);
    void *b = open_store(conn);
    char *v = NULL;
    ck_assert_int_eq(ops->get(b, "k", &v), TE_ERR_METADATA); /* not "not found" */
    ck_assert_int_eq(ops->remove(b, "k"), TE_ERR_METADATA);
    ops->destroy(b);
    ops->destroy(s);
}
END_TEST

START_TEST(unreachable_and_bad_urls)
{
    char conn[128];
    snprintf(conn, sizeof conn, "http://127.0.0.1:%u/metadata", etcd_test_free_port());
    void *s = open_store(conn);
    char *v = NULL;
    double t0 = etcd_test_now();
    ck_assert_int_eq(ops->get(s, "k", &v), TE_ERR_METADATA);
    ck_assert_int_eq(ops->put(s, "k", "v"), TE_ERR_METADATA);
    ck_assert_double_lt(etcd_test_now() - t0, 3.5);
    ops->destroy(s);
    s = open_store("http://192.0.2.1:8080/metadata"); /* black hole: connect timeout */
    t0 = etcd_test_now();
    ck_assert_int_lt(ops->get(s, "k", &v), 0);
    ck_assert_double_lt(etcd_test_now() - t0, 3.5);
    ops->destroy(s);
    static const char *bad[] = {"", "http://", "ftp://x/y", "127.0.0.1:8080", NULL};
    for (int i = 0; bad[i]; i++) {
        void *x = NULL;
        ck_assert_int_eq(ops->create(&host_engine->host, bad[i], &x), TE_ERR_INVALID_ARGUMENT);
        ck_assert_ptr_null(x);
    }
    s = open_store(base);
    ck_assert_int_eq(ops->put(s, "", "v"), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ops->put(s, "k", NULL), TE_ERR_INVALID_ARGUMENT);
    ops->destroy(s);
}
END_TEST

START_TEST(engines_meet_through_http)
{
    if (!etcd_have_tcp()) {
        printf("no tcp transport built: skipping the engine part\n");
        return;
    }
    const char *args[] = {"--metadata", base, "--name", "http-peer", NULL};
    te_test_peer peer;
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
    char *desc = kv_server_value(&server, "mooncake/ram/http-peer");
    char *rpc = kv_server_value(&server, "mooncake/rpc_meta/http-peer");
    ck_assert_ptr_nonnull(desc);
    ck_assert_ptr_nonnull(rpc);
    free(desc);
    free(rpc);
    te_engine *e = te_engine_create();
    ck_assert_msg(te_engine_initialize(e, "http-local", base, "tcp", "", NULL) == 0, "%s",
                  te_last_error());
    size_t len = 256 << 10;
    char *buf = aligned_alloc(4096, len);
    te_test_fill(buf, len, 42, 0);
    ck_assert_int_eq(te_register_memory(e, buf, len, "cpu:0"), 0);
    te_segment_id id;
    ck_assert_msg(te_segment_open(e, "http-peer", &id) == 0, "%s", te_last_error());
    te_request w = {TE_OP_WRITE, buf, id, peer.addr + 4096, len};
    ck_assert_msg(te_transfer_sync(e, &w, 1, NULL, NULL) == 0, "%s", te_last_error());
    char reply[128], cmd[128];
    snprintf(cmd, sizeof cmd, "check 4096 %zu 42", len);
    ck_assert_int_eq(te_test_peer_cmd(&peer, cmd, reply, sizeof reply), 0);
    ck_assert_str_eq(reply, "OK");
    te_test_peer_stop(&peer);
    ck_assert_ptr_null(kv_server_value(&server, "mooncake/ram/http-peer")); /* removed on exit */
    te_engine_destroy(e);
    ck_assert_ptr_null(kv_server_value(&server, "mooncake/ram/http-local"));
    free(buf);
}
END_TEST

int main(void)
{
    setenv("NO_PROXY", "127.0.0.1", 1);
    setenv("no_proxy", "127.0.0.1", 1);
    Suite *s = suite_create("http_store");
    TCase *tc = tcase_create("http");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, put_get_remove);
    tcase_add_test(tc, url_with_query_and_large_value);
    tcase_add_test(tc, non_200_is_failure);
    tcase_add_test(tc, unreachable_and_bad_urls);
    tcase_add_test(tc, engines_meet_through_http);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
