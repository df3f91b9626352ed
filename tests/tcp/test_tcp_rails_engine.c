/* test_tcp_rails_engine.c - the TCP transport's interfaces as the device
 * filter names them, with engines in this process on loopback: an engine
 * whose filter names "lo" publishes tcp_addresses in its descriptor; one
 * whose filter names no interface (an RDMA device) or is empty publishes no
 * such member (the descriptor stays as before); data moves in every mix of
 * the two, in both directions. */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "te/te.h"
#include "test_util.h"

#define SIZE (4u << 20)

static te_engine *engine(const char *filter)
{
    te_engine *e = te_engine_create();
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "tcp", filter, NULL), 0);
    return e;
}

static json_t *tcp_addresses(te_engine *e)
{
    char *text = NULL;
    ck_assert_int_eq(te_local_descriptor_json(e, &text), 0);
    json_t *d = json_loads(text, 0, NULL);
    free(text);
    ck_assert_ptr_nonnull(d);
    json_t *a = json_incref(json_object_get(d, "tcp_addresses"));
    ck_assert_ptr_nonnull(json_object_get(d, "tcp_data_port"));
    json_decref(d);
    return a;
}

START_TEST(a_filter_naming_an_interface_publishes_its_address)
{
    te_engine *e = engine("lo");
    json_t *a = tcp_addresses(e);
    ck_assert(json_is_array(a));
    ck_assert_int_eq(json_array_size(a), 1);
    ck_assert_str_eq(json_string_value(json_array_get(a, 0)), "127.0.0.1");
    json_decref(a);
    te_engine_destroy(e);
}
END_TEST

START_TEST(no_interface_named_keeps_the_descriptor_as_before)
{
    const char *filters[] = {"", "mlx5_0,mlx5_1"};
    for (int i = 0; i < 2; i++) {
        te_engine *e = engine(filters[i]);
        ck_assert_ptr_null(tcp_addresses(e));
        te_engine_destroy(e);
    }
}
END_TEST

/* Writes a pattern from a to b's buffer and reads it back. */
static void round_trip(te_engine *a, te_engine *b, char *abuf, char *bbuf, uint64_t seed)
{
    te_segment_id seg;
    ck_assert_int_eq(te_segment_open(a, te_engine_segment_name(b), &seg), 0);
    te_test_fill(abuf, SIZE / 2, seed, 0);
    te_request w = {TE_OP_WRITE, abuf, seg, (uint64_t)(uintptr_t)bbuf, SIZE / 2};
    ck_assert_int_eq(te_transfer_sync(a, &w, 1, NULL, NULL), 0);
    ck_assert_int_lt(te_test_check(bbuf, SIZE / 2, seed, 0), 0);
    te_request r = {TE_OP_READ, abuf + SIZE / 2, seg, (uint64_t)(uintptr_t)bbuf, SIZE / 2};
    ck_assert_int_eq(te_transfer_sync(a, &r, 1, NULL, NULL), 0);
    ck_assert_int_lt(te_test_check(abuf + SIZE / 2, SIZE / 2, seed, 0), 0);
}

START_TEST(railed_and_plain_engines_move_data_both_ways)
{
    const char *filters[][2] = {{"lo", "lo"}, {"lo", ""}, {"", "lo"}};
    for (int i = 0; i < 3; i++) {
        te_engine *a = engine(filters[i][0]), *b = engine(filters[i][1]);
        char *abuf = aligned_alloc(4096, SIZE), *bbuf = aligned_alloc(4096, SIZE);
        ck_assert_int_eq(te_register_memory(a, abuf, SIZE, "cpu:0"), 0);
        ck_assert_int_eq(te_register_memory(b, bbuf, SIZE, "cpu:0"), 0);
        round_trip(a, b, abuf, bbuf, 11 + (uint64_t)i);
        round_trip(b, a, bbuf, abuf, 21 + (uint64_t)i);
        te_engine_destroy(a);
        te_engine_destroy(b);
        free(abuf);
        free(bbuf);
    }
}
END_TEST

int main(void)
{
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1); /* tcp, not shm, between these engines */
    Suite *s = suite_create("tcp_rails_engine");
    TCase *tc = tcase_create("engines");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_filter_naming_an_interface_publishes_its_address);
    tcase_add_test(tc, no_interface_named_keeps_the_descriptor_as_before);
    tcase_add_test(tc, railed_and_plain_engines_move_data_both_ways);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
