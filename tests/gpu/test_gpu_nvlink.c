/* test_gpu_nvlink.c - libte_nvlink.so on a GPU (label gpu; exits 77 where
 * there is none): two processes exchange verified data through CUDA IPC,
 * at offsets inside the exporting allocation; many requests in a batch,
 * written in reverse order and read back;
 * a transfer waits for work queued before it on the default stream, and
 * fails at its deadline without a late copy when that stream is held; a
 * peer's host buffer and a tcp peer are refused; our own segment and host
 * local memory. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu_suite.h"
#include "te/te.h"
#include "test_util.h"

#define PEER_SIZE "67108864"
#define LEN ((8u << 20) + 123)

/* Exactly nvlink: this suite is about the plugin; in a CUDA process the
 * engine would otherwise run shm and tcp beside it. */
static te_engine *engine(void)
{
    return gpu_engine("nvlink");
}

static void start_peer(gpu_peer *p, const char *mem)
{
    const char *args[] = {"--protocol", "nvlink", "--mem", mem, "--size", PEER_SIZE, NULL};
    ck_assert_int_eq(gpu_peer_start(p, args), 0);
}

static int transfer(te_engine *e, int op, void *local, te_segment_id id, uint64_t remote,
                    size_t len)
{
    te_request r = {op, local, id, remote, len};
    return te_transfer_sync(e, &r, 1, NULL, NULL);
}

START_TEST(write_and_read_between_processes)
{
    gpu_peer p;
    start_peer(&p, "gpu");
    te_engine *e = engine();
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(e, p.segment, &id), 0);
    size_t off = 4096 + 7; /* relocated inside the peer's allocation */
    void *src = gpu_pattern(LEN, 11);
    ck_assert_int_eq(transfer(e, TE_OP_WRITE, src, id, p.addr + off, LEN), 0);
    gpu_peer_ok(&p, "check", off, LEN, 11);
    gpu_peer_ok(&p, "fill", 0, LEN, 12);
    char *dst = gpu_alloc(LEN + 64);
    ck_assert_int_eq(transfer(e, TE_OP_READ, dst + 64, id, p.addr, LEN), 0);
    gpu_check(dst + 64, LEN, 12);
    gpu_free(src);
    gpu_free(dst);
    te_engine_destroy(e);
    gpu_peer_stop(&p);
}
END_TEST

START_TEST(many_requests_in_one_batch)
{
    gpu_peer p;
    start_peer(&p, "gpu");
    te_engine *e = engine();
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(e, p.segment, &id), 0);
    enum { N = 64, PIECE = (64 << 10) + 1 };
    char *src = gpu_pattern((size_t)N * PIECE, 21);
    te_request r[N];
    for (int i = 0; i < N; i++) /* in reverse order at the peer */
        r[i] = (te_request){TE_OP_WRITE, src + (size_t)i * PIECE, id,
                            p.addr + (uint64_t)(N - 1 - i) * PIECE, PIECE};
    ck_assert_int_eq(te_transfer_sync(e, r, N, NULL, NULL), 0);
    char *back = gpu_alloc((size_t)N * PIECE);
    for (int i = 0; i < N; i++)
        r[i] = (te_request){TE_OP_READ, back + (size_t)i * PIECE, id,
                            p.addr + (uint64_t)(N - 1 - i) * PIECE, PIECE};
    ck_assert_int_eq(te_transfer_sync(e, r, N, NULL, NULL), 0);
    gpu_check(back, (size_t)N * PIECE, 21);
    gpu_free(src);
    gpu_free(back);
    te_engine_destroy(e);
    gpu_peer_stop(&p);
}
END_TEST

/* The caller queues memsets on the default stream and transfers at once:
 * the copy must see the last one (issue #699 of the original). */
START_TEST(transfer_waits_for_the_default_stream)
{
    gpu_peer p;
    start_peer(&p, "gpu");
    te_engine *e = engine();
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(e, p.segment, &id), 0);
    size_t len = 32u << 20;
    char *src = gpu_alloc(len);
    ck_assert_ptr_nonnull(src);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 40; i++)
            ck_assert_int_eq(gpu_memset_async(src, 0x20 + i, len), 0);
        ck_assert_int_eq(gpu_memset_async(src, 0x5A + round, len), 0);
        ck_assert_int_eq(transfer(e, TE_OP_WRITE, src, id, p.addr, len), 0);
        gpu_peer_ok(&p, "byte", 0, len, (uint64_t)(0x5A + round));
    }
    gpu_free(src);
    te_engine_destroy(e);
    gpu_peer_stop(&p);
}
END_TEST

START_TEST(host_buffer_of_a_peer_is_refused)
{
    gpu_peer p;
    start_peer(&p, "cpu");
    te_engine *e = engine();
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(e, p.segment, &id), 0);
    void *src = gpu_pattern(1 << 20, 31);
    /* The peer's descriptor says host memory: the core does not even hand
     * it to nvlink (with tcp beside it, tcp would carry it). */
    int rc = transfer(e, TE_OP_WRITE, src, id, p.addr, 1 << 20);
    ck_assert_msg(rc == TE_ERR_NOT_SUPPORTED_TRANSPORT, "rc %d", rc);
    gpu_free(src);
    te_engine_destroy(e);
    gpu_peer_stop(&p);
}
END_TEST

/* A transfer issued while the default stream is held (as one issued from a
 * CUDA host function on it would be) cannot be ordered after that stream:
 * it fails at its deadline, and no copy lands later. */
START_TEST(held_default_stream_times_out_without_late_write)
{
    gpu_peer p;
    start_peer(&p, "gpu");
    long ms = gpu_held_stream_write("nvlink", &p, LEN);
    ck_assert_msg(ms < 2800, "the failure took %ld ms", ms);
    gpu_peer_stop(&p);
}
END_TEST

START_TEST(tcp_peer_is_declined)
{
    gpu_peer p;
    const char *args[] = {"--protocol", "tcp", "--mem", "gpu", "--size", "1048576", NULL};
    setenv("MC_TE_TRANSPORTS", "tcp", 1); /* the peer runs tcp only */
    ck_assert_int_eq(gpu_peer_start(&p, args), 0);
    te_engine *e = engine();
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(e, p.segment, &id), TE_ERR_NOT_SUPPORTED_TRANSPORT);
    te_engine_destroy(e);
    gpu_peer_stop(&p);
}
END_TEST

START_TEST(own_segment_and_host_local_memory)
{
    te_engine *e = engine();
    void *a = gpu_pattern(LEN, 41);
    char *b = gpu_alloc(LEN);
    ck_assert_int_eq(te_register_memory(e, b, LEN, "*"), 0);
    te_segment_id self;
    ck_assert_int_eq(te_segment_open(e, te_engine_segment_name(e), &self), 0);
    ck_assert_int_eq(transfer(e, TE_OP_WRITE, a, self, (uint64_t)(uintptr_t)b, LEN), 0);
    gpu_check(b, LEN, 41);
    char *host = malloc(LEN);
    te_test_fill(host, LEN, 42, 0);
    ck_assert_int_eq(transfer(e, TE_OP_WRITE, host, self, (uint64_t)(uintptr_t)b, LEN), 0);
    gpu_check(b, LEN, 42);
    memset(host, 0, LEN);
    ck_assert_int_eq(transfer(e, TE_OP_READ, host, self, (uint64_t)(uintptr_t)b, LEN), 0);
    ck_assert_int_lt(te_test_check(host, LEN, 42, 0), 0);
    ck_assert_int_eq(te_unregister_memory(e, b), 0);
    free(host);
    gpu_free(a);
    gpu_free(b);
    te_engine_destroy(e);
}
END_TEST

int main(void)
{
    gpu_require();
#ifndef TE_NVLINK_BUILT
    printf("SKIP: libte_nvlink.so is not built (no CUDA toolkit at configure time)\n");
    return GPU_SKIP;
#endif
    gpu_suite_start();
    Suite *s = suite_create("gpu_nvlink");
    TCase *tc = tcase_create("ipc");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, write_and_read_between_processes);
    tcase_add_test(tc, many_requests_in_one_batch);
    tcase_add_test(tc, transfer_waits_for_the_default_stream);
    tcase_add_test(tc, host_buffer_of_a_peer_is_refused);
    tcase_add_test(tc, held_default_stream_times_out_without_late_write);
    tcase_add_test(tc, tcp_peer_is_declined);
    tcase_add_test(tc, own_segment_and_host_local_memory);
    suite_add_tcase(s, tc);
    return gpu_suite_run(s);
}
