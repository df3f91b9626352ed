/* test_tcp_lanes.c - how the initiator spreads a submit over a peer's lanes
 * (plugins/tcp linked in, the core's host table, a fake v2 target that
 * answers every request and counts them per connection): a small batch
 * stays on one lane, a large one stripes, MC_TCP_LANE_MIN_BYTES=0 stripes
 * every batch as before, and small batches submitted one after another take
 * turns over the lanes. */
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

/* Reads v2 frames, drops WRITE payloads, answers each request OK. */
static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg >> 8, idx = (int)(intptr_t)arg & 0xff;
    static char sink[1 << 16];
    uint8_t h[TCP_HDR_LEN], st[8];
    while (read_full(fd, h, sizeof h) == 0) {
        uint64_t size = tcp_get_u64(h);
        bool write = (h[16] & ~TCP_OP_V2) == TCP_OP_WRITE;
        for (uint64_t left = write ? size : 0; left > 0;) {
            size_t n = left < sizeof sink ? (size_t)left : sizeof sink;
            if (read_full(fd, sink, n))
                goto out;
            left -= n;
        }
        atomic_fetch_add(&g_requests[idx], 1);
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

static void on_slice_done(te_host *h, te_slice *s, int status)
{
    (void)h;
    (void)s;
    pthread_mutex_lock(&g_lock);
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
    g_peer = tcp_peer_new(g_inst, "127.0.0.1", g_port, true);
    ck_assert_ptr_nonnull(g_peer);
    g_local = calloc(1, 8u << 20);
    ck_assert_ptr_nonnull(g_local);
}

/* Submits n slices of len bytes (one call) and waits for every report. */
static void submit_and_wait(size_t n, uint64_t len)
{
    ck_assert(n <= MAX_SLICES && n * len <= (8u << 20));
    te_slice *ptrs[MAX_SLICES];
    pthread_mutex_lock(&g_lock);
    size_t want = g_done + n;
    pthread_mutex_unlock(&g_lock);
    for (size_t i = 0; i < n; i++) {
        g_slices[i] = (te_slice){.opcode = TE_OP_WRITE, .local = g_local + i * len,
                                 .remote = 0x100000 + i * len, .length = len, .peer = g_peer,
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

int main(void)
{
    Suite *s = suite_create("tcp_lanes");
    TCase *tc = tcase_create("spread");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, small_batch_stays_on_one_lane);
    tcase_add_test(tc, large_batch_stripes_over_the_lanes);
    tcase_add_test(tc, min_bytes_zero_stripes_every_batch);
    tcase_add_test(tc, small_batches_take_turns_over_the_lanes);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
