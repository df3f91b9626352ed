/* test_loader.c - the plugin loader (good plugin, other ABI major, missing
 * init symbol, failing init, missing file, bad names) and the core's batch
 * accounting through an in-process test transport with odd slice sizes. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "te/plugin.h"
#include "te/te.h"
#include "test_util.h"

static te_engine *eng;

static void teardown(void)
{
    te_engine_destroy(eng);
    eng = NULL;
}

/* A top-level integer of te_get_metrics' JSON, -1 if absent. */
static long metric(const char *key)
{
    char *json = NULL, quoted[64];
    ck_assert_int_eq(te_get_metrics(eng, &json), 0);
    snprintf(quoted, sizeof quoted, "\"%s\":", key);
    const char *at = strstr(json, quoted);
    long v = at ? strtol(at + strlen(quoted), NULL, 10) : -1;
    te_free(json);
    return v;
}

static int init_with(const char *protocol)
{
    eng = te_engine_create();
    return te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", protocol, "", NULL);
}

START_TEST(good_plugin_loads)
{
    ck_assert_int_eq(init_with("testgood"), 0);
    ck_assert_str_eq(te_engine_protocol(eng), "testgood");
    const char *name = NULL;
    ck_assert_int_eq(te_segment_transport(eng, 0, &name), 0); /* our own segment */
    ck_assert_str_eq(name, "testgood");
    ck_assert_int_eq(te_segment_transport(eng, 7, &name), TE_ERR_NOT_FOUND);
    ck_assert_int_eq(te_segment_transport(eng, -1, &name), TE_ERR_NOT_FOUND);
    ck_assert_int_eq(te_segment_transport(eng, 0, NULL), TE_ERR_INVALID_ARGUMENT);
    /* What the plugin reported through metric_add at create. */
    ck_assert_int_eq(metric("retries"), 2);
    ck_assert_int_eq(metric("rail_pauses"), 3);
}
END_TEST

START_TEST(other_abi_major_is_refused)
{
    ck_assert_int_eq(init_with("testbadmajor"), TE_ERR_PLUGIN);
    ck_assert_ptr_nonnull(strstr(te_last_error(), "libte_testbadmajor.so"));
    char want[64];
    snprintf(want, sizeof want, "built for ABI 2.0, core is 1.%d", TE_PLUGIN_ABI_MINOR);
    ck_assert_msg(strstr(te_last_error(), want), "error: %s", te_last_error());
}
END_TEST

START_TEST(missing_init_symbol_is_refused)
{
    ck_assert_int_eq(init_with("testnosymbol"), TE_ERR_PLUGIN);
    ck_assert_ptr_nonnull(strstr(te_last_error(), "no symbol te_plugin_init"));
}
END_TEST

START_TEST(failing_init_is_refused)
{
    ck_assert_int_eq(init_with("testinitfails"), TE_ERR_PLUGIN);
    ck_assert_ptr_nonnull(strstr(te_last_error(), "te_plugin_init failed: device not found"));
}
END_TEST

START_TEST(missing_plugin_names_the_paths_tried)
{
    ck_assert_int_eq(init_with("nosuchtransport"), TE_ERR_PLUGIN);
    ck_assert_ptr_nonnull(strstr(te_last_error(), "libte_nosuchtransport.so: no such file"));
    ck_assert_ptr_nonnull(strstr(te_last_error(), getenv("MC_PLUGIN_PATH")));
}
END_TEST

START_TEST(bad_names_and_schemes_are_errors_not_aborts)
{
    ck_assert_int_eq(init_with("../../etc/passwd"), TE_ERR_INVALID_ARGUMENT);
    te_engine_destroy(eng);
    eng = te_engine_create();
    ck_assert_int_eq(te_engine_initialize(eng, "127.0.0.1", "redis://127.0.0.1:1", "tcp", "", NULL),
                     TE_ERR_PLUGIN);
    ck_assert_ptr_nonnull(strstr(te_last_error(), "metadata_redis"));
    ck_assert_int_eq(te_engine_initialize(eng, "", "P2PHANDSHAKE", "tcp", "", NULL),
                     TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_engine_initialize(eng, "127.0.0.1", "://x", "tcp", "", NULL),
                     TE_ERR_INVALID_ARGUMENT);
    /* A failed initialize leaves the engine usable for another try. */
    ck_assert_int_eq(te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", "testgood", "", NULL), 0);
    ck_assert_int_eq(te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", "testgood", "", NULL),
                     TE_ERR_STATE);
}
END_TEST

START_TEST(calls_before_initialize_fail_cleanly)
{
    eng = te_engine_create();
    char buf[16];
    te_batch_id b;
    te_segment_id s;
    ck_assert_int_eq(te_register_memory(eng, buf, sizeof buf, NULL), TE_ERR_STATE);
    ck_assert_int_eq(te_segment_open(eng, "x:1", &s), TE_ERR_STATE);
    ck_assert_int_eq(te_engine_rpc_port(eng), TE_ERR_STATE);
    const char *name;
    ck_assert_int_eq(te_segment_transport(eng, 0, &name), TE_ERR_STATE);
    ck_assert_int_eq(te_batch_allocate(eng, 1, &b), 0);
    te_request r = {TE_OP_WRITE, buf, 0, 1, 1};
    ck_assert_int_eq(te_submit(eng, b, &r, 1), TE_ERR_STATE);
    ck_assert_int_eq(te_batch_free(eng, b), 0);
}
END_TEST

/* ---- batch accounting over the in-process transport ----------------------- */

START_TEST(self_transfer_is_sliced_and_counted)
{
    ck_assert_int_eq(init_with("testgood"), 0);
    enum { LEN = 10007 };
    char *a = malloc(LEN), *b = malloc(LEN);
    for (int i = 0; i < LEN; i++)
        a[i] = (char)(i * 7);
    memset(b, 0, LEN);
    ck_assert_int_eq(te_register_memory(eng, b, LEN, "cpu:0"), 0);
    te_segment_id self;
    ck_assert_int_eq(te_segment_open(eng, te_engine_segment_name(eng), &self), 0);
    ck_assert_int_eq(self, 0);
    te_batch_id id;
    ck_assert_int_eq(te_batch_allocate(eng, 2, &id), 0);
    te_request r = {TE_OP_WRITE, a, self, (uint64_t)(uintptr_t)b, LEN};
    ck_assert_int_eq(te_submit(eng, id, &r, 1), 0);
    int st;
    uint64_t bytes;
    ck_assert_int_eq(te_batch_wait(eng, id, 1000, &st), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    ck_assert_int_eq(te_task_status(eng, id, 0, &st, &bytes), 0);
    ck_assert_uint_eq(bytes, LEN);
    ck_assert_int_eq(memcmp(a, b, LEN), 0);
    /* A range past the end of b fails the task and only that task. */
    te_request bad = {TE_OP_WRITE, a, self, (uint64_t)(uintptr_t)b + 1, LEN};
    ck_assert_int_eq(te_submit(eng, id, &bad, 1), 0);
    ck_assert_int_eq(te_task_status(eng, id, 1, &st, NULL), 0);
    ck_assert_int_eq(st, TE_TRANSFER_FAILED);
    ck_assert_int_eq(te_task_status(eng, id, 0, &st, NULL), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    ck_assert_int_eq(te_batch_status(eng, id, &st, NULL), 0);
    ck_assert_int_eq(st, TE_TRANSFER_FAILED);
    /* Capacity is enforced and nothing is taken. */
    ck_assert_int_eq(te_submit(eng, id, &r, 1), TE_ERR_TOO_MANY_REQUESTS);
    ck_assert_int_eq(te_task_status(eng, id, 2, &st, NULL), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_batch_free(eng, id), 0);
    ck_assert_int_eq(te_batch_free(eng, id), TE_ERR_NOT_FOUND);
    ck_assert_int_eq(te_batch_status(eng, id, &st, NULL), TE_ERR_NOT_FOUND);
    ck_assert_int_eq(te_batch_free(eng, 0), TE_ERR_NOT_FOUND);
    ck_assert_int_eq(te_batch_free(eng, 0xdeadbeefcafeull), TE_ERR_NOT_FOUND);
    ck_assert_int_eq(te_unregister_memory(eng, b), 0);
    free(a);
    free(b);
}
END_TEST

START_TEST(invalid_requests_take_nothing)
{
    ck_assert_int_eq(init_with("testgood"), 0);
    char buf[64];
    ck_assert_int_eq(te_register_memory(eng, buf, sizeof buf, NULL), 0);
    te_batch_id id;
    ck_assert_int_eq(te_batch_allocate(eng, 2, &id), 0);
    te_request ok = {TE_OP_READ, buf, 0, (uint64_t)(uintptr_t)buf, 8};
    te_request reqs[2] = {ok, ok};
    reqs[1].opcode = 7;
    ck_assert_int_eq(te_submit(eng, id, reqs, 2), TE_ERR_INVALID_ARGUMENT);
    reqs[1] = ok;
    reqs[1].length = 0;
    ck_assert_int_eq(te_submit(eng, id, reqs, 2), TE_ERR_INVALID_ARGUMENT);
    reqs[1] = ok;
    reqs[1].target = 99;
    ck_assert_int_eq(te_submit(eng, id, reqs, 2), TE_ERR_NOT_FOUND);
    reqs[1] = ok;
    ck_assert_int_eq(te_submit(eng, id, reqs, 2), 0); /* capacity still free */
    int st;
    ck_assert_int_eq(te_batch_wait(eng, id, 1000, &st), 0);
    ck_assert_int_eq(st, TE_TRANSFER_COMPLETED);
    te_batch_free(eng, id);
    ck_assert_int_eq(te_batch_allocate(eng, 0, &id), TE_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(registration_rules)
{
    ck_assert_int_eq(init_with("testgood"), 0);
    static char buf[4096];
    ck_assert_int_eq(te_register_memory(eng, buf, 0, NULL), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_register_memory(eng, NULL, 10, NULL), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_register_memory(eng, buf + 100, 100, NULL), 0);
    ck_assert_int_eq(te_register_memory(eng, buf + 150, 100, NULL), TE_ERR_ADDRESS_OVERLAPPED);
    ck_assert_int_eq(te_register_memory(eng, buf + 100, 100, NULL), TE_ERR_ADDRESS_OVERLAPPED);
    ck_assert_int_eq(te_register_memory(eng, buf, 101, NULL), TE_ERR_ADDRESS_OVERLAPPED);
    ck_assert_int_eq(te_register_memory(eng, buf, 100, NULL), 0);
    te_buffer_entry batch[2] = {{buf + 1000, 10}, {buf + 1005, 10}};
    ck_assert_int_eq(te_register_memory_batch(eng, batch, 2, NULL), TE_ERR_ADDRESS_OVERLAPPED);
    /* All or nothing: the first entry was rolled back. */
    ck_assert_int_eq(te_register_memory(eng, buf + 1000, 10, NULL), 0);
    ck_assert_int_eq(te_unregister_memory(eng, buf + 101), TE_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(te_unregister_memory(eng, buf + 100), 0);
    ck_assert_int_eq(te_unregister_memory(eng, buf + 100), TE_ERR_ADDRESS_NOT_REGISTERED);
    uint64_t addr, len;
    ck_assert_int_eq(te_segment_buffer(eng, 0, 0, &addr, &len), 0);
    ck_assert_int_eq(te_segment_buffer(eng, 0, 2, &addr, &len), TE_ERR_NOT_FOUND);
}
END_TEST

START_TEST(batch_size_limit)
{
    setenv("MC_TE_MAX_BATCH_SIZE", "4", 1);
    ck_assert_int_eq(init_with("testgood"), 0);
    te_batch_id id;
    ck_assert_int_eq(te_batch_allocate(eng, 5, &id), TE_ERR_TOO_MANY_REQUESTS);
    ck_assert_ptr_nonnull(strstr(te_last_error(), "MC_TE_MAX_BATCH_SIZE"));
    ck_assert_int_eq(te_batch_allocate(eng, 4, &id), 0);
    ck_assert_int_eq(te_batch_free(eng, id), 0);
    unsetenv("MC_TE_MAX_BATCH_SIZE");
}
END_TEST

START_TEST(notify_to_self)
{
    ck_assert_int_eq(init_with("testgood"), 0);
    char a[32] = "hello", b[32];
    ck_assert_int_eq(te_register_memory(eng, b, sizeof b, NULL), 0);
    te_request r = {TE_OP_WRITE, a, 0, (uint64_t)(uintptr_t)b, sizeof a};
    ck_assert_int_eq(te_transfer_sync(eng, &r, 1, "name-1", "msg \"quoted\" 1"), 0);
    te_notify *n;
    size_t count;
    ck_assert_int_eq(te_notifies_drain(eng, &n, &count), 0);
    ck_assert_uint_eq(count, 1);
    ck_assert_str_eq(n[0].name, "name-1");
    ck_assert_str_eq(n[0].msg, "msg \"quoted\" 1");
    te_notifies_free(n, count);
    ck_assert_int_eq(te_notifies_drain(eng, &n, &count), 0);
    ck_assert_uint_eq(count, 0);
    /* No notification after a failed transfer. */
    r.remote += 1;
    ck_assert_int_ne(te_transfer_sync(eng, &r, 1, "name-2", "x"), 0);
    ck_assert_int_eq(te_notifies_drain(eng, &n, &count), 0);
    ck_assert_uint_eq(count, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("loader");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, good_plugin_loads);
    tcase_add_test(tc, other_abi_major_is_refused);
    tcase_add_test(tc, missing_init_symbol_is_refused);
    tcase_add_test(tc, failing_init_is_refused);
    tcase_add_test(tc, missing_plugin_names_the_paths_tried);
    tcase_add_test(tc, bad_names_and_schemes_are_errors_not_aborts);
    tcase_add_test(tc, calls_before_initialize_fail_cleanly);
    tcase_add_test(tc, self_transfer_is_sliced_and_counted);
    tcase_add_test(tc, invalid_requests_take_nothing);
    tcase_add_test(tc, registration_rules);
    tcase_add_test(tc, notify_to_self);
    tcase_add_test(tc, batch_size_limit);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
