/* test_tcp_idle.c - an initiator's TCP lanes hold threads and descriptors
 * only while they are used: idle for MC_TCP_IDLE_TIMEOUT_MS, a lane closes
 * its connection and eventfd and its thread ends, and the next transfer
 * opens them again; a lane whose peer went away ends without waiting for
 * the timeout.  Two engines in this process, tcp only, on loopback.  The
 * waits are generous bounds for "eventually", not speed targets. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

#define SIZE (4u << 20)

static int threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static int fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* Waits up to 10 s for this process to be back at (threads, fds) or below
 * (the baseline may include an RPC connection's short-lived thread). */
static int back_to(int t, int f)
{
    for (int i = 0; i < 1000; i++) {
        if (threads() <= t && fds() <= f)
            return 1;
        usleep(10000);
    }
    fprintf(stderr, "still %d threads (want %d), %d fds (want %d)\n", threads(), t, fds(), f);
    return 0;
}

typedef struct side {
    te_engine *e;
    char *buf;
} side;

static void open_side(side *s)
{
    s->e = te_engine_create();
    ck_assert_ptr_nonnull(s->e);
    ck_assert_int_eq(te_engine_initialize(s->e, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL), 0);
    s->buf = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(s->buf, MAP_FAILED);
    ck_assert_int_eq(te_register_memory(s->e, s->buf, SIZE, "cpu:0"), 0);
}

static void close_side(side *s)
{
    te_engine_destroy(s->e);
    munmap(s->buf, SIZE);
}

/* A writes a pattern into B in 4 requests (so several lanes carry them),
 * then reads it back; the data must match both ways. */
static void round_trip(side *a, side *b, te_segment_id seg, uint64_t seed)
{
    te_test_fill(a->buf, SIZE / 2, seed, 0);
    te_request w[4], r[4];
    for (int i = 0; i < 4; i++) {
        uint64_t off = (uint64_t)i * (SIZE / 8);
        w[i] = (te_request){TE_OP_WRITE, a->buf + off, seg, (uint64_t)(uintptr_t)b->buf + off,
                            SIZE / 8};
        r[i] = (te_request){TE_OP_READ, a->buf + SIZE / 2 + off, seg,
                            (uint64_t)(uintptr_t)b->buf + off, SIZE / 8};
    }
    ck_assert_int_eq(te_transfer_sync(a->e, w, 4, NULL, NULL), 0);
    ck_assert_int_lt(te_test_check(b->buf, SIZE / 2, seed, 0), 0);
    ck_assert_int_eq(te_transfer_sync(a->e, r, 4, NULL, NULL), 0);
    ck_assert_int_lt(te_test_check(a->buf + SIZE / 2, SIZE / 2, seed, 0), 0);
}

START_TEST(idle_lanes_end_and_the_next_transfer_reopens_them)
{
    setenv("MC_TCP_IDLE_TIMEOUT_MS", "300", 1);
    side a, b;
    open_side(&a);
    open_side(&b);
    te_segment_id seg;
    ck_assert_int_eq(te_segment_open(a.e, te_engine_segment_name(b.e), &seg), 0);
    int t0 = threads(), f0 = fds();
    round_trip(&a, &b, seg, 1);
    ck_assert_int_gt(threads(), t0); /* lane threads and connections while in use */
    ck_assert_int_gt(fds(), f0);
    ck_assert(back_to(t0, f0));
    round_trip(&a, &b, seg, 2); /* reopened on demand */
    ck_assert(back_to(t0, f0));
    close_side(&a);
    close_side(&b);
}
END_TEST

START_TEST(lanes_to_a_peer_that_went_away_end_before_the_timeout)
{
    setenv("MC_TCP_IDLE_TIMEOUT_MS", "600000", 1);
    side a, b;
    open_side(&a);
    int t0 = threads(), f0 = fds();
    open_side(&b);
    te_segment_id seg;
    ck_assert_int_eq(te_segment_open(a.e, te_engine_segment_name(b.e), &seg), 0);
    round_trip(&a, &b, seg, 3);
    close_side(&b); /* its data port closes A's idle connections */
    ck_assert(back_to(t0, f0));
    close_side(&a);
}
END_TEST

int main(void)
{
    setenv("MC_TE_TRANSPORTS", "tcp", 1);
    Suite *s = suite_create("tcp_idle");
    TCase *tc = tcase_create("idle");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, idle_lanes_end_and_the_next_transfer_reopens_them);
    tcase_add_test(tc, lanes_to_a_peer_that_went_away_end_before_the_timeout);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
