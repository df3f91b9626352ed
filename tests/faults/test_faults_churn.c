/* test_faults_churn.c - Mooncake's classic initiator, without Mooncake: a raw
 * v2 client opens one data connection per request, keeps a whole batch (128,
 * then 1024) in flight, waits for each ack and closes; every write lands,
 * every read returns it, nothing is refused, and the target's thread count
 * does not grow with the number of connections.  Also the limits: a silent
 * connection is closed at the header deadline while an idle one that was
 * served stays, one stalled inside a payload at the io deadline, and at the
 * per-peer or the global cap the oldest idle connection makes room for a new
 * one (a new one is refused only when none is idle). */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fault_util.h"
#include "net.h"
#include "rpc.h"
#include "test_util.h"

/* Under TSan every payload byte crossing the peer's threads costs a report. */
#define BLK (FAULT_TSAN ? 1024u : 16384u)
#define STATUS_OK 0x4D43545600000000ull
#define HEADER_MS 500 /* the peer's MC_TCP_HEADER_TIMEOUT_MS in the limits cases, scaled */
/* Connections in flight at once: a typical batch, then the large batch that
 * Mooncake's classic initiator opens a connection per request for. */
#define SMALL_BATCH 128
#define LARGE_BATCH 1024

static te_test_peer peer;
static uint16_t data_port;

/* LARGE_BATCH connections need more than the usual 1024 descriptors on both ends
 * (the peer inherits the limit). */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void start_peer(void)
{
    raise_nofile();
    const char *args[] = {"--size", "16777216", NULL};
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
    char *reply = NULL;
    ck_assert_int_eq(te_rpc_call("127.0.0.1", (uint16_t)peer.rpc_port, TE_RPC_METADATA, "{}", 2,
                                 &reply, NULL, 5000, 1 << 20, NULL),
                     0);
    json_error_t err;
    json_t *d = json_loads(reply, 0, &err);
    free(reply);
    data_port = (uint16_t)json_integer_value(json_object_get(d, "tcp_data_port"));
    json_decref(d);
    ck_assert_uint_gt(data_port, 0);
}

static void stop_peer(void)
{
    te_test_peer_stop(&peer);
}

static int peer_threads(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)peer.pid);
    DIR *d = opendir(path);
    ck_assert_msg(d != NULL, "cannot open %s", path);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int open_conn(void)
{
    int fd = te_net_connect("127.0.0.1", data_port, fault_secs(5) * 1000);
    ck_assert_msg(fd >= 0, "connect to the data port: %s", te_last_error());
    return fd;
}

/* A connection from 127.0.0.<from>, another address on loopback. */
static int open_conn_from(int from)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000000u | from)};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(data_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&src, sizeof src), 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static int64_t deadline_in(double secs)
{
    return te_now_ns() + (int64_t)(secs * fault_scale() * 1e9);
}

/* Sends a v2 request: 24-byte header, then a WRITE's payload. */
static void send_request(int fd, uint8_t op, uint64_t off, const uint8_t *payload, size_t len)
{
    uint8_t h[24] = {0};
    uint64_t addr = peer.addr + off;
    for (int i = 0; i < 8; i++) {
        h[i] = (uint8_t)((uint64_t)len >> (8 * i));
        h[8 + i] = (uint8_t)(addr >> (8 * i));
    }
    h[16] = (uint8_t)(0x80 | op);
    ck_assert_int_eq(te_net_write_full(fd, h, 24, deadline_in(10)), 0);
    if (payload)
        ck_assert_int_eq(te_net_write_full(fd, payload, len, deadline_in(10)), 0);
}

static uint64_t read_status(int fd)
{
    uint8_t s[8];
    int rc = te_net_read_full(fd, s, 8, deadline_in(10));
    ck_assert_msg(rc == 0, "no status frame: %d (connection refused or closed?)", rc);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)s[i] << (8 * i);
    return v;
}

/* A small write and its ack on an open connection. */
static void write_ok(int fd, uint64_t off)
{
    uint8_t b[16] = "churn-test-bytes";
    send_request(fd, 1, off, b, sizeof b);
    ck_assert_uint_eq(read_status(fd), STATUS_OK);
}

/* The peer closes fd within `secs` (scaled): seconds it took. */
static double expect_closed(int fd, double secs)
{
    double t0 = fault_now();
    char buf[64];
    for (;;) {
        ck_assert_msg(te_net_wait(fd, POLLIN, deadline_in(secs)) == 0,
                      "connection still open after %.1f s", secs * fault_scale());
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
    }
    close(fd);
    return fault_now() - t0;
}

/* One connection per request, `batch` in flight: writes, then reads back. */
static void churn(int batch, uint64_t seed, int threads_before)
{
    int *fds = malloc(sizeof(int) * (size_t)batch);
    uint8_t *src = malloc((size_t)batch * BLK), *back = malloc(BLK);
    te_test_fill(src, (size_t)batch * BLK, seed, 0);
    double t0 = fault_now();
    for (int i = 0; i < batch; i++) {
        fds[i] = open_conn();
        send_request(fds[i], 1, (uint64_t)i * BLK, src + (size_t)i * BLK, BLK);
    }
    int threads = peer_threads();
    for (int i = 0; i < batch; i++) {
        ck_assert_msg(read_status(fds[i]) == STATUS_OK, "write %d not acknowledged", i);
        close(fds[i]);
    }
    double t_write = fault_now() - t0;
    printf("target threads after %d connections: %d (before any: %d)\n", batch, threads,
           threads_before);
    fflush(stdout);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "check 0 %llu %llu", (unsigned long long)batch * BLK,
             (unsigned long long)seed);
    te_test_peer_expect(&peer, cmd, "OK");
    t0 = fault_now();
    for (int i = 0; i < batch; i++) {
        fds[i] = open_conn();
        send_request(fds[i], 0, (uint64_t)i * BLK, NULL, BLK);
    }
    for (int i = 0; i < batch; i++) {
        ck_assert_uint_eq(read_status(fds[i]), STATUS_OK);
        ck_assert_int_eq(te_net_read_full(fds[i], back, BLK, deadline_in(10)), 0);
        ck_assert_msg(!memcmp(back, src + (size_t)i * BLK, BLK), "read %d returned other bytes", i);
        close(fds[i]);
    }
    /* Figures for the log, not asserted: connect, request, ack, close. */
    printf("  %d connection-per-request writes of %u bytes: %.1f ms; reads: %.1f ms\n", batch,
           BLK, t_write * 1e3, (fault_now() - t0) * 1e3);
    fflush(stdout);
    /* The connections are served by a fixed set of loops: a thread per
     * connection would show here as hundreds. */
    ck_assert_int_le(threads, threads_before + 2);
    free(fds);
    free(src);
    free(back);
}

START_TEST(connection_per_request_batches_are_served_by_a_fixed_set_of_threads)
{
    int before = peer_threads();
    churn(SMALL_BATCH, 11, before);
    churn(LARGE_BATCH, 12, before);
}
END_TEST

START_TEST(silent_connection_is_closed_at_the_header_deadline_idle_one_stays)
{
    double limit = HEADER_MS / 1000.0 * fault_scale();
    int idle = open_conn();
    write_ok(idle, 0); /* served once: from now on only the idle timeout applies */
    int silent = open_conn();
    double dt = expect_closed(silent, HEADER_MS / 1000.0 + 3);
    printf("a silent connection was closed after %.2f s (header deadline %.2f s)\n", dt, limit);
    fflush(stdout);
    ck_assert_msg(dt >= limit - 0.05, "closed after %.2f s, before the deadline", dt);
    usleep((useconds_t)(limit * 1e6)); /* the idle one is now well past the header deadline */
    write_ok(idle, 64);
    close(idle);
}
END_TEST

START_TEST(oldest_idle_connection_is_evicted_at_the_per_peer_cap)
{
    enum { CAP = 8 };
    int fd[CAP + 1];
    for (int i = 0; i < CAP; i++) {
        fd[i] = open_conn();
        write_ok(fd[i], (uint64_t)i * 64);
        usleep(10000); /* distinct idle times: fd[0] is the oldest */
    }
    fd[CAP] = open_conn(); /* over the cap: served, the oldest idle one goes */
    write_ok(fd[CAP], CAP * 64);
    expect_closed(fd[0], 3);
    for (int i = 1; i <= CAP; i++)
        write_ok(fd[i], (uint64_t)i * 64);
    /* Every connection busy inside a frame (half a header): none can make
     * room, so a new one is refused. */
    uint8_t half[10] = {16};
    for (int i = 1; i <= CAP; i++)
        ck_assert_int_eq(te_net_write_full(fd[i], half, sizeof half, deadline_in(5)), 0);
    usleep((useconds_t)(300000 * fault_scale()));
    expect_closed(open_conn(), 3);
    for (int i = 1; i <= CAP; i++)
        close(fd[i]);
}
END_TEST

START_TEST(connection_stalled_inside_a_payload_is_closed_at_the_io_deadline)
{
    uint8_t half[BLK / 2];
    memset(half, 7, sizeof half);
    int fd = open_conn();
    uint8_t h[24] = {0};
    uint64_t addr = peer.addr, len = BLK;
    for (int i = 0; i < 8; i++) {
        h[i] = (uint8_t)(len >> (8 * i));
        h[8 + i] = (uint8_t)(addr >> (8 * i));
    }
    h[16] = 0x81;
    ck_assert_int_eq(te_net_write_full(fd, h, 24, deadline_in(5)), 0);
    ck_assert_int_eq(te_net_write_full(fd, half, sizeof half, deadline_in(5)), 0);
    double dt = expect_closed(fd, 1 + 3); /* MC_TCP_STATUS_TIMEOUT_SEC is 1, scaled */
    printf("a write stalled mid-payload was closed after %.2f s\n", dt);
    fflush(stdout);
    ck_assert_msg(dt >= fault_secs(1) - 0.05, "closed after %.2f s, before the io deadline", dt);
    int ok = open_conn(); /* and the port serves on */
    write_ok(ok, 0);
    close(ok);
}
END_TEST

START_TEST(oldest_idle_connection_of_any_address_is_evicted_at_the_global_cap)
{
    enum { CAP = 16 }; /* MC_TCP_MAX_CONNECTIONS */
    int fd[CAP];
    for (int i = 0; i < CAP; i++) { /* from 127.0.0.2, under its per-peer cap */
        fd[i] = open_conn_from(2);
        write_ok(fd[i], (uint64_t)i * 64);
        usleep(5000);
    }
    int mine = open_conn(); /* from 127.0.0.1: served; the oldest of .2 goes */
    write_ok(mine, CAP * 64);
    expect_closed(fd[0], 3);
    for (int i = 1; i < CAP; i++) {
        write_ok(fd[i], (uint64_t)i * 64);
        close(fd[i]);
    }
    close(mine);
}
END_TEST

static void setup_global_cap(void)
{
    setenv("MC_TCP_MAX_CONNECTIONS", "16", 1);
    fault_setenv_secs("MC_TCP_STATUS_TIMEOUT_SEC", 1);
    start_peer();
}

static void teardown_global_cap(void)
{
    stop_peer();
    unsetenv("MC_TCP_MAX_CONNECTIONS");
    unsetenv("MC_TCP_STATUS_TIMEOUT_SEC");
}

static void setup_limits(void)
{
    char v[32];
    snprintf(v, sizeof v, "%d", (int)(HEADER_MS * fault_scale()));
    setenv("MC_TCP_HEADER_TIMEOUT_MS", v, 1); /* the peer inherits these */
    setenv("MC_TCP_IDLE_TIMEOUT_MS", "600000", 1);
    setenv("MC_TE_MAX_CONNECTIONS_PER_PEER", "8", 1);
    start_peer();
}

static void teardown_limits(void)
{
    stop_peer();
    unsetenv("MC_TCP_HEADER_TIMEOUT_MS");
    unsetenv("MC_TCP_IDLE_TIMEOUT_MS");
    unsetenv("MC_TE_MAX_CONNECTIONS_PER_PEER");
}

int main(void)
{
    setenv("MC_LOG_LEVEL", "ERROR", 0);
    Suite *s = suite_create("faults_churn");
    TCase *tc = tcase_create("churn");
    tcase_add_checked_fixture(tc, start_peer, stop_peer);
    tcase_set_timeout(tc, 120 * fault_scale());
    tcase_add_test(tc, connection_per_request_batches_are_served_by_a_fixed_set_of_threads);
    suite_add_tcase(s, tc);
    TCase *lim = tcase_create("limits");
    tcase_add_checked_fixture(lim, setup_limits, teardown_limits);
    tcase_set_timeout(lim, 60 * fault_scale());
    tcase_add_test(lim, silent_connection_is_closed_at_the_header_deadline_idle_one_stays);
    tcase_add_test(lim, oldest_idle_connection_is_evicted_at_the_per_peer_cap);
    suite_add_tcase(s, lim);
    TCase *cap = tcase_create("global_cap");
    tcase_add_checked_fixture(cap, setup_global_cap, teardown_global_cap);
    tcase_set_timeout(cap, 60 * fault_scale());
    tcase_add_test(cap, connection_stalled_inside_a_payload_is_closed_at_the_io_deadline);
    tcase_add_test(cap, oldest_idle_connection_of_any_address_is_evicted_at_the_global_cap);
    suite_add_tcase(s, cap);
    return te_test_run(s);
}
