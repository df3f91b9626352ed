/* test_transport_choice.c - the core's choice per request in a process that
 * has CUDA loaded (the fake CUDA of fake_cuda.c, or a real GPU): same-host
 * host memory still goes over shm (shm no longer declines CUDA processes),
 * and one batch of a host and a device buffer uses two transports, as the
 * per-transport counters show.  Exits 77 without a (fake) GPU. */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"
#include "te/te.h"
#include "test_util.h"

#define LEN (1u << 20)

static te_engine *src, *dst;
static char *host_remote, *host_local;
static te_segment_id seg;

static te_engine *engine(void)
{
    te_engine *e = te_engine_create();
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL);
    ck_assert_msg(rc == 0, "initialize: %d %s", rc, te_last_error());
    return e;
}

static void setup(void)
{
    ck_assert_int_eq(gpu_load(), 0); /* CUDA is in the process from here on */
    dst = engine();
    src = engine();
    host_remote = aligned_alloc(4096, 4 * LEN);
    host_local = aligned_alloc(4096, 4 * LEN);
    memset(host_remote, 0, 4 * LEN);
    ck_assert_int_eq(te_register_memory(dst, host_remote, 4 * LEN, "*"), 0);
    ck_assert_int_eq(te_segment_open(src, te_engine_segment_name(dst), &seg), 0);
}

static void teardown(void)
{
    te_engine_destroy(src);
    te_engine_destroy(dst);
    free(host_remote);
    free(host_local);
}

static long long carried(const char *transport)
{
    char *text = NULL;
    ck_assert_int_eq(te_get_metrics(src, &text), 0);
    json_t *root = json_loads(text, 0, NULL);
    te_free(text);
    json_t *v = json_object_get(json_object_get(json_object_get(root, "transports"), transport),
                                "write_bytes");
    long long n = json_is_integer(v) ? (long long)json_integer_value(v) : 0;
    json_decref(root);
    return n;
}

static te_request write_to(void *local, uint64_t off)
{
    return (te_request){.opcode = TE_OP_WRITE, .local = local, .target = seg,
                        .remote = (uint64_t)(uintptr_t)host_remote + off, .length = LEN};
}

START_TEST(host_memory_goes_over_shm_in_a_cuda_process)
{
    const char *name = NULL;
    ck_assert_int_eq(te_segment_transport(src, seg, &name), 0);
    ck_assert_str_eq(name, "shm");
    te_test_fill(host_local, LEN, 3, 0);
    te_request w = write_to(host_local, 0);
    ck_assert_int_eq(te_transfer_sync(src, &w, 1, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(host_remote, LEN, 3, 0), -1);
    ck_assert_int_eq(carried("shm"), LEN);
    ck_assert_int_eq(carried("tcp"), 0);
}
END_TEST

START_TEST(a_batch_of_host_and_device_memory_uses_two_transports)
{
    void *dev = gpu_alloc(LEN);
    ck_assert_ptr_nonnull(dev);
    te_test_fill(host_local, LEN, 5, 0);
    ck_assert_int_eq(gpu_put(dev, host_local, LEN), 0);
    te_test_fill(host_local + LEN, LEN, 6, 0);
    te_request two[2] = {write_to(dev, 0), write_to(host_local + LEN, LEN)};
    ck_assert_int_eq(te_transfer_sync(src, two, 2, NULL, NULL), 0);
    ck_assert_int_eq(te_test_check(host_remote, LEN, 5, 0), -1);
    ck_assert_int_eq(te_test_check(host_remote + LEN, LEN, 6, 0), -1);
    ck_assert_int_eq(carried("shm"), LEN); /* the host buffer */
    ck_assert_int_eq(carried("tcp"), LEN); /* the device buffer, staged */
    /* shm pinned to device memory: refused with the reason, nothing moves. */
    te_request one = write_to(dev, 2 * LEN);
    ck_assert_int_eq(te_transfer_sync_hint(src, &one, 1, NULL, NULL, "shm"),
                     TE_ERR_NOT_SUPPORTED_TRANSPORT);
    ck_assert_msg(strstr(te_last_error(), "host memory only"), "error: %s", te_last_error());
    gpu_free(dev);
}
END_TEST

int main(void)
{
    gpu_require();
    Suite *s = suite_create("transport_choice");
    TCase *tc = tcase_create("cuda_process");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, host_memory_goes_over_shm_in_a_cuda_process);
    tcase_add_test(tc, a_batch_of_host_and_device_memory_uses_two_transports);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
