/* test_tcp_lanes.c - how the initiator spreads a submit over a peer's lanes
 * (plugins/tcp linked in, the core's host table, a fake v2 target that
 * answers every request and counts them per connection): a small batch
 * stays on one lane, a large one stripes, MC_TCP_LANE_MIN_BYTES=0 stripes
 * every batch as before, and small batches submitted one after another take
 * turns over the lanes.  And for a v1 peer (the original engine's framing,
 * no answer to a WRITE), a write is reported done only once the target has
 * read it: the lane's fence READ, or a READ of the batch, comes back after. */
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "loader.h"
#include "tcp.h"
#include "te/plugin.h"
#include "test_util.h"

#define MAX_SLICES 256
#define MAX_CONNS 4

/* ---- the fake target: one thread per connection, in accept order ---------- */

static int g_listen = -1;
static uint16_t g_port;
static pthread_t g_acceptor;
static atomic_int g_conns;
static atomic_int g_requests[MAX_CONNS];
static atomic_int g_hold_ms;  /* the next WRITE's payload is read after this pause */
static atomic_int g_landed;   /* WRITE payloads read in full */
static atomic_int g_reads;    /* READ requests answered */

static int read_full(int fd, void *buf, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = recv(fd, (char *)buf + off, len - off, 0);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

/* A READ's answer in v1: its bytes (zeros), no status. */
static int send_zeros(int fd, uint64_t size)
{
    static const char zeros[4096];
    for (uint64_t left = size; left > 0;) {
        size_t n = left < sizeof zeros ? (size_t)left : sizeof zeros;
        if (send(fd, zeros, n, MSG_NOSIGNAL) != (ssize_t)n)
            return -1;
        left -= n;
    }
    return 0;
}

/* Reads frames, drops WRITE payloads; answers each v2 request OK and each
 * v1 READ with its bytes (v1 WRITEs get no answer). */
static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg >> 8, idx = (int)(intptr_t)arg & 0xff;
    static char sink[1 << 16];
    uint8_t h[TCP_HDR_LEN], st[8];
    while (read_full(fd, h, sizeof h) == 0) {
        uint64_t size = tcp_get_u64(h);
        bool write = (h[16] & ~TCP_OP_V2) == TCP_OP_WRITE, v2 = h[16] & TCP_OP_V2;
        int hold = write ? atomic_exchange(&g_hold_ms, 0) : 0;
        if (hold)
            usleep((useconds_t)hold * 1000);
        for (uint64_t left = write ? size : 0; left > 0;) {
            size_t n = left < sizeof sink ? (size_t)left : sizeof sink;
            if (read_full(fd, sink, n))
                goto out;
            left -= n;
        }
        atomic_fetch_add(write ? &g_landed : &g_reads, 1);
        atomic_fetch_add(&g_requests[idx], 1);
        if (!v2) {
            if (!write && send_zeros(fd, size))
                break;
            continue;
        }
        tcp_put_u64(st, TCP_STATUS_MAGIC | TCP_STATUS_OK);
        if (send(fd, st, sizeof st, MSG_NOSIGNAL) != sizeof st)
            break;
    }
out:
    close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(g_listen, NULL, NULL);
        if (fd < 0)
            return NULL;
        int idx = atomic_fetch_add(&g_conns, 1);
        pthread_t th;
        if (idx >= MAX_CONNS ||
            pthread_create(&th, NULL, serve, (void *)(intptr_t)(fd << 8 | idx)) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(th);
    }
}

/* ---- the initiator: the plugin's own functions over the core's host table -- */

static te_engine *g_engine;
static te_host_api g_api;
static const te_transport_ops *g_ops;
static void *g_inst;
static tcp_peer *g_peer;
static te_slice g_slices[MAX_SLICES];
static char *g_local;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static size_t g_done;
static int g_failed;
static bool g_v2 = true;       /* the peer's framing */
static int g_writes_submitted; /* WRITEs handed to the plugin so far */
static int g_early;            /* WRITEs reported done before the target had them all */

static void on_slice_done(te_host *h, te_slice *s, int status)
{
    (void)h;
    pthread_mutex_lock(&g_lock);
    /* Writes before the batch's fence or READ are reported once all landed. */
    g_early += s->opcode == TE_OP_WRITE && atomic_load(&g_landed) < g_writes_submitted;
    g_done++;
    g_failed += status != 0;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

static void setup(void)
{
    g_listen = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    ck_assert(g_listen >= 0 && bind(g_listen, (struct sockaddr *)&a, sizeof a) == 0 &&
              listen(g_listen, 16) == 0 && getsockname(g_listen, (struct sockaddr *)&a, &alen) == 0);
    g_port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&g_acceptor, NULL, acceptor, NULL), 0);
    setenv("MC_TCP_LANES_PER_PEER", "2", 1);
    g_engine = te_engine_create();
    ck_assert_ptr_nonnull(g_engine);
    g_api = te_host_api_table;
    g_api.slice_done = on_slice_done;
    const te_plugin_desc *desc;
    ck_assert_int_eq(te_plugin_init(&g_api, &desc), 0);
    g_ops = desc->ops;
    te_transport_params params = {.size = sizeof params, .segment_name = "lanes", .device_filter = ""};
    ck_assert_int_eq(g_ops->create(&g_engine->host, &params, &g_inst), 0);
    g_peer = tcp_peer_new(g_inst, "127.0.0.1", g_port, g_v2);
    ck_assert_ptr_nonnull(g_peer);
    g_local = calloc(1, 8u << 20);
    ck_assert_ptr_nonnull(g_local);
}

/* Submits (one call) `writes` slices of len bytes, then `reads` of the same
 * ranges, and waits for every report. */
static void submit_mixed(size_t writes, size_t reads, uint64_t len)
{
    size_t n = writes + reads;
    ck_assert(n <= MAX_SLICES && writes * len <= (8u << 20) && reads <= writes);
    te_slice *ptrs[MAX_SLICES];
    pthread_mutex_lock(&g_lock);
    size_t want = g_done + n;
    g_writes_submitted += (int)writes;
    pthread_mutex_unlock(&g_lock);
    for (size_t i = 0; i < n; i++) {
        size_t at = i < writes ? i : i - writes;
        g_slices[i] = (te_slice){.opcode = i < writes ? TE_OP_WRITE : TE_OP_READ,
                                 .local = g_local + at * len, .remote = 0x100000 + at * len,
                                 .length = len, .peer = g_peer,
                                 .deadline_ns = g_api.now_ns() + 20000000000LL};
        ptrs[i] = &g_slices[i];
    }
    ck_assert_int_eq(tcp_peer_submit(g_peer, ptrs, n), 0);
    pthread_mutex_lock(&g_lock);
    while (g_done < want)
        pthread_cond_wait(&g_cond, &g_lock);
    pthread_mutex_unlock(&g_lock);
    ck_assert_int_eq(g_failed, 0);
}

static void submit_and_wait(size_t n, uint64_t len)
{
    submit_mixed(n, 0, len);
}

/* Requests the fake target saw on each connection, most first. */
static void per_connection(int out[2])
{
    int a = atomic_load(&g_requests[0]), b = atomic_load(&g_requests[1]);
    ck_assert_int_le(atomic_load(&g_conns), 2);
    out[0] = a > b ? a : b;
    out[1] = a > b ? b : a;
}

START_TEST(small_batch_stays_on_one_lane)
{
    setup();
    submit_and_wait(128, 4096); /* 512 KiB: under two runs of 512 KiB */
    int c[2];
    per_connection(c);
    ck_assert_int_eq(c[0], 128);
    ck_assert_int_eq(c[1], 0);
}
END_TEST

START_TEST(large_batch_stripes_over_the_lanes)
{
    setup();
    submit_and_wait(8, 1 << 20);
    int c[2];
    per_connection(c);
    ck_assert_int_eq(c[0], 4);
    ck_assert_int_eq(c[1], 4);
}
END_TEST

START_TEST(min_bytes_zero_stripes_every_batch)
{
    setenv("MC_TCP_LANE_MIN_BYTES", "0", 1);
    setup();
    submit_and_wait(128, 4096);
    int c[2];
    per_connection(c);
    ck_assert_int_eq(c[0], 64);
    ck_assert_int_eq(c[1], 64);
}
END_TEST

START_TEST(small_batches_take_turns_over_the_lanes)
{
    setup();
    submit_and_wait(128, 4096);
    submit_and_wait(128, 4096);
    int c[2];
    per_connection(c);
    ck_assert_int_eq(c[0], 128);
    ck_assert_int_eq(c[1], 128);
}
END_TEST

/* The target reads the first write's payload 300 ms late: without a fence
 * the 16 writes would be reported as soon as they left (they fit in the
 * socket buffers). */
START_TEST(v1_writes_are_done_once_the_target_has_them)
{
    g_v2 = false;
    setup();
    atomic_store(&g_hold_ms, 300);
    submit_and_wait(16, 4096);
    ck_assert_int_eq(g_early, 0);
    ck_assert_int_eq(atomic_load(&g_landed), 16);
    ck_assert_int_eq(atomic_load(&g_reads), 1); /* one fence for the run */
    submit_and_wait(16, 4096); /* a second run gets a fence of its own */
    ck_assert_int_eq(g_early, 0);
    ck_assert_int_eq(atomic_load(&g_reads), 2);
}
END_TEST

/* A READ queued after the writes answers for them: no fence is added. */
START_TEST(v1_read_after_writes_needs_no_fence)
{
    g_v2 = false;
    setup();
    atomic_store(&g_hold_ms, 300);
    submit_mixed(16, 4, 4096);
    ck_assert_int_eq(g_early, 0);
    ck_assert_int_eq(atomic_load(&g_landed), 16);
    ck_assert_int_eq(atomic_load(&g_reads), 4);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tcp_lanes");
    TCase *tc = tcase_create("spread");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, small_batch_stays_on_one_lane);
    tcase_add_test(tc, large_batch_stripes_over_the_lanes);
    tcase_add_test(tc, min_bytes_zero_stripes_every_batch);
    tcase_add_test(tc, small_batches_take_turns_over_the_lanes);
    tcase_add_test(tc, v1_writes_are_done_once_the_target_has_them);
    tcase_add_test(tc, v1_read_after_writes_needs_no_fence);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
