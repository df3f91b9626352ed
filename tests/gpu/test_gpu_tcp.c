/* test_gpu_tcp.c - GPU memory over the TCP transport (label gpu; exits 77
 * where there is no GPU): writes from device memory and reads into device
 * memory, staged through pinned buffers on the initiator, the target or
 * both, checked by copying back; v1 framing; many requests in a batch; a
 * write held behind the default stream fails without a late copy. */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpu_suite.h"
#include "te/te.h"
#include "test_util.h"

#define LEN ((8u << 20) + 4097) /* several slices and chunks, odd tails */
#define OFF 12345

/* Local memory of either kind, filled with the pattern of seed. */
static void *local_buf(bool gpu, size_t n, uint64_t seed)
{
    if (gpu)
        return gpu_pattern(n, seed);
    char *host = malloc(n);
    ck_assert_ptr_nonnull(host);
    te_test_fill(host, n, seed, 0);
    return host;
}

static void local_free(bool gpu, void *p)
{
    if (gpu)
        gpu_free(p);
    else
        free(p);
}

static void check_local(bool gpu, const void *p, size_t n, uint64_t seed)
{
    if (gpu) {
        gpu_check(p, n, seed);
        return;
    }
    long long bad = te_test_check(p, n, seed, 0);
    ck_assert_msg(bad < 0, "first wrong byte at %lld", bad);
}

/* Exactly tcp: this suite is about tcp's staging, and in a CUDA process the
 * engine would otherwise take nvlink for same-host device memory. */
static te_engine *engine(void)
{
    return gpu_engine("tcp");
}

/* Writes local memory to the peer and reads it back into fresh memory. */
static void round_trip(const char *peer_mem, bool local_gpu)
{
    gpu_peer p;
    const char *args[] = {"--protocol", "tcp", "--mem", peer_mem, "--size", "33554432", NULL};
    ck_assert_int_eq(gpu_peer_start(&p, args), 0);
    te_engine *e = engine();
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(e, p.segment, &id), 0);
    void *src = local_buf(local_gpu, LEN, 51);
    te_request w = {TE_OP_WRITE, src, id, p.addr + OFF, LEN};
    ck_assert_int_eq(te_transfer_sync(e, &w, 1, NULL, NULL), 0);
    gpu_peer_ok(&p, "check", OFF, LEN, 51);
    gpu_peer_ok(&p, "fill", OFF, LEN, 52);
    void *dst = local_buf(local_gpu, LEN, 0);
    te_request r = {TE_OP_READ, dst, id, p.addr + OFF, LEN};
    ck_assert_int_eq(te_transfer_sync(e, &r, 1, NULL, NULL), 0);
    check_local(local_gpu, dst, LEN, 52);
    local_free(local_gpu, src);
    local_free(local_gpu, dst);
    te_engine_destroy(e);
    gpu_peer_stop(&p);
}

START_TEST(gpu_to_gpu)
{
    round_trip("gpu", true);
}
END_TEST

START_TEST(gpu_initiator_host_target)
{
    round_trip("cpu", true);
}
END_TEST

START_TEST(host_initiator_gpu_target)
{
    round_trip("gpu", false);
}
END_TEST

START_TEST(gpu_to_gpu_v1_framing)
{
    setenv("MC_TCP_PROTO", "1", 1);
    round_trip("gpu", true);
    unsetenv("MC_TCP_PROTO");
}
END_TEST

START_TEST(many_gpu_requests_in_one_batch)
{
    gpu_peer p;
    const char *args[] = {"--protocol", "tcp", "--mem", "gpu", "--size", "33554432", NULL};
    ck_assert_int_eq(gpu_peer_start(&p, args), 0);
    te_engine *e = engine();
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(e, p.segment, &id), 0);
    enum { N = 48, PIECE = (256 << 10) + 3 };
    char *src = local_buf(true, (size_t)N * PIECE, 61);
    te_request r[N];
    for (int i = 0; i < N; i++)
        r[i] = (te_request){TE_OP_WRITE, src + (size_t)i * PIECE, id,
                            p.addr + (uint64_t)i * PIECE, PIECE};
    ck_assert_int_eq(te_transfer_sync(e, r, N, NULL, NULL), 0);
    gpu_peer_ok(&p, "check", 0, (size_t)N * PIECE, 61);
    char *back = gpu_alloc((size_t)N * PIECE);
    for (int i = 0; i < N; i++)
        r[i] = (te_request){TE_OP_READ, back + (size_t)i * PIECE, id,
                            p.addr + (uint64_t)i * PIECE, PIECE};
    ck_assert_int_eq(te_transfer_sync(e, r, N, NULL, NULL), 0);
    check_local(true, back, (size_t)N * PIECE, 61);
    gpu_free(src);
    gpu_free(back);
    te_engine_destroy(e);
    gpu_peer_stop(&p);
}
END_TEST

/* As for nvlink: a write held behind the default stream fails at its
 * deadline and leaves the target as it was. */
START_TEST(held_default_stream_times_out_without_late_write)
{
    gpu_peer p;
    const char *args[] = {"--protocol", "tcp", "--mem", "gpu", "--size", "33554432", NULL};
    ck_assert_int_eq(gpu_peer_start(&p, args), 0);
    gpu_held_stream_write("tcp", &p, LEN);
    gpu_peer_stop(&p);
}
END_TEST

int main(void)
{
    gpu_suite_start();
    Suite *s = suite_create("gpu_tcp");
    TCase *tc = tcase_create("staging");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, gpu_to_gpu);
    tcase_add_test(tc, gpu_initiator_host_target);
    tcase_add_test(tc, host_initiator_gpu_target);
    tcase_add_test(tc, gpu_to_gpu_v1_framing);
    tcase_add_test(tc, many_gpu_requests_in_one_batch);
    tcase_add_test(tc, held_default_stream_times_out_without_late_write);
    suite_add_tcase(s, tc);
    return gpu_suite_run(s);
}
