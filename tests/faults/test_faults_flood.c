/* test_faults_flood.c - RPC and data ports flooded with junk connections from
 * 127.0.0.2/.3 (garbage, bad frames, idle holds past the per-peer limit)
 * while verified transfers and notifications from 127.0.0.1 all succeed; a
 * port filled with idle connections by the caller's own address closes the
 * oldest of them and serves the caller at once. */
#include <check.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fault_util.h"
#include "rpc.h"
#include "te/te.h"
#include "test_util.h"

#define MIB (1u << 20)
#define WORKERS 2
#define FLOODERS 6
#define HELD 80 /* idle connections held open during the flood */

static te_test_peer peer;
static te_engine *eng;
static uint8_t *local;
static te_segment_id seg;
static atomic_bool stop_flag;
static uint16_t data_port;
static atomic_ulong junk_conns;

static void setup(void)
{
    const char *args[] = {"--size", "16777216", NULL};
    ck_assert_int_eq(te_test_peer_start(&peer, args), 0);
    te_test_engine_to_peer(&peer, 16 * MIB, &eng, &local, &seg);
    atomic_store(&stop_flag, false);
}

static void teardown(void)
{
    te_test_peer_stop(&peer);
    te_engine_destroy(eng);
    free(local);
}

/* Connects to 127.0.0.1:port from 127.0.0.<from>. */
static int connect_from(uint16_t port, int from)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000000u | from)};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && bind(fd, (struct sockaddr *)&src, sizeof src) == 0 &&
        connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

static void junk(int fd, unsigned kind, unsigned *seed)
{
    uint8_t buf[2048];
    size_t n = 0;
    switch (kind % 7) {
    case 0: /* random bytes */
        n = sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rand_r(seed);
        break;
    case 1: /* a header claiming 1 GiB, then a little */
        memcpy(buf, "\x01\x00\x00\x40\x00\x00\x00\x00\x02{\"name\":", 17);
        n = 17;
        break;
    case 2: /* zero length */
        memset(buf, 0, 9);
        n = 9;
        break;
    case 3: /* connect and close */
        break;
    case 4: /* half a header, then a short hold */
        memcpy(buf, "\x10\x00\x00", 3);
        n = 3;
        break;
    case 5: { /* a notify frame with a huge name (validated and refused) */
        size_t name = 1500;
        uint64_t len = name + 40;
        for (int i = 0; i < 8; i++)
            buf[i] = (uint8_t)(len >> (8 * i));
        buf[8] = 2;
        n = 9 + (size_t)snprintf((char *)buf + 9, sizeof buf - 9, "{\"name\":\"%0*d\"", (int)name, 0);
        break;
    }
    default: /* legacy untyped frame: no handler on a TCP engine */
        memcpy(buf, "\x08\x00\x00\x00\x00\x00\x00\x00{\"qp\":1}", 16);
        n = 16;
        break;
    }
    if (n)
        send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (kind % 7 == 4)
        usleep(20000);
}

static void *flooder_main(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    /* Flooder 0 hits the data port with junk headers; the rest the RPC port. */
    uint16_t port = (uintptr_t)arg == 0 ? data_port : (uint16_t)peer.rpc_port;
    for (unsigned k = (unsigned)(uintptr_t)arg; !atomic_load(&stop_flag); k++) {
        int fd = connect_from(port, (uintptr_t)arg % 2 ? 2 : 3);
        if (fd < 0) {
            usleep(1000);
            continue;
        }
        junk(fd, k, &seed);
        close(fd);
        atomic_fetch_add(&junk_conns, 1);
    }
    return NULL;
}

typedef struct worker {
    pthread_t th;
    int idx;
    uint64_t ok, errors, notifies;
} worker;

/* Write a pattern, read it back elsewhere, compare; every 8th write ends
 * with a notification. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    uint8_t *src = local + (size_t)w->idx * 4 * MIB, *dst = src + 2 * MIB;
    uint64_t remote = peer.addr + (uint64_t)w->idx * 4 * MIB;
    for (unsigned i = 0; !atomic_load(&stop_flag); i++) {
        size_t len = 4096 + (i * 65537u) % MIB;
        te_test_fill(src, len, 100 + i, 0);
        te_request wr = {TE_OP_WRITE, src, seg, remote, len};
        int rc = i % 8 == 0 ? te_transfer_sync(eng, &wr, 1, "flood", "m")
                            : te_transfer_sync(eng, &wr, 1, NULL, NULL);
        w->notifies += i % 8 == 0 && rc == 0;
        memset(dst, 0, len);
        te_request rd = {TE_OP_READ, dst, seg, remote, len};
        if (!rc)
            rc = te_transfer_sync(eng, &rd, 1, NULL, NULL);
        if (!rc && te_test_check(dst, len, 100 + i, 0) != -1)
            rc = -1;
        if (rc) {
            fprintf(stderr, "worker %d: transfer %u failed: %d %s\n", w->idx, i, rc,
                    te_last_error());
            w->errors++;
        } else {
            w->ok++;
        }
    }
    return NULL;
}

/* The peer's data port, from its descriptor (a Metadata frame). */
static uint16_t find_data_port(void)
{
    char *reply = NULL;
    ck_assert_int_eq(te_rpc_call("127.0.0.1", (uint16_t)peer.rpc_port, TE_RPC_METADATA, "{}", 2,
                                 &reply, NULL, 3000, 1 << 20, NULL),
                     0);
    json_error_t err;
    json_t *d = json_loads(reply, 0, &err);
    free(reply);
    int port = (int)json_integer_value(json_object_get(d, "tcp_data_port"));
    json_decref(d);
    ck_assert_int_gt(port, 0);
    return (uint16_t)port;
}

START_TEST(transfers_and_notifies_go_on_through_a_flood)
{
    data_port = find_data_port();
    int held[HELD];
    for (int i = 0; i < HELD; i++)
        held[i] = connect_from((uint16_t)peer.rpc_port, 2);
    pthread_t fl[FLOODERS];
    for (uintptr_t i = 0; i < FLOODERS; i++)
        ck_assert_int_eq(pthread_create(&fl[i], NULL, flooder_main, (void *)i), 0);
    worker w[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (worker){.idx = i};
        ck_assert_int_eq(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
    }
    /* Probes (RPC calls from 127.0.0.1) keep being answered.  A storm of
     * connects can overflow the listen backlog, and a dropped SYN is resent
     * after 1 s: slower, but within the RPC deadline. */
    int probes = 0;
    double end = fault_now() + 4.0, slowest = 0;
    while (fault_now() < end) {
        double t0 = fault_now();
        ck_assert_int_eq(te_probe(eng, peer.segment), 0);
        double dt = fault_now() - t0;
        ck_assert_msg(dt < fault_secs(5) + 0.5 * fault_scale(), "probe took %.2f s", dt);
        slowest = dt > slowest ? dt : slowest;
        probes++;
        usleep(50000);
    }
    atomic_store(&stop_flag, true);
    for (uintptr_t i = 0; i < FLOODERS; i++)
        pthread_join(fl[i], NULL);
    uint64_t ok = 0, errors = 0, notifies = 0;
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(w[i].th, NULL);
        ok += w[i].ok;
        errors += w[i].errors;
        notifies += w[i].notifies;
    }
    for (int i = 0; i < HELD; i++)
        if (held[i] >= 0)
            close(held[i]);
    printf("  under a flood of %lu junk connections: %llu verified write+read pairs, %llu errors, "
           "%llu notifications, %d probes (slowest %.2f s)\n",
           atomic_load(&junk_conns), (unsigned long long)ok, (unsigned long long)errors,
           (unsigned long long)notifies, probes, slowest);
    ck_assert_uint_eq(errors, 0);
    ck_assert_uint_gt(ok, 0);
    /* Every notification arrived, exactly once. */
    char reply[256];
    ck_assert_int_eq(te_test_peer_cmd(&peer, "notifies", reply, sizeof reply), 0);
    unsigned long long got = 0;
    ck_assert_int_eq(sscanf(reply, "NOTIFIES %llu", &got), 1);
    for (unsigned long long i = 0; i < got; i++)
        ck_assert_int_eq(te_test_peer_read(&peer, reply, sizeof reply), 0);
    ck_assert_uint_eq(got, notifies);
}
END_TEST

START_TEST(full_rpc_port_evicts_idle_connections_and_serves)
{
    /* More idle connections from this host than MC_TE_MAX_CONNECTIONS_PER_PEER
     * (8 here): each one over the cap closes the oldest idle one, and a real
     * call is served at once in the same way. */
    int held[16];
    for (int i = 0; i < 16; i++)
        held[i] = connect_from((uint16_t)peer.rpc_port, 1);
    usleep(200000);
    double t0 = fault_now();
    int rc = te_probe(eng, peer.segment);
    double dt = fault_now() - t0;
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(dt < 1.0 * fault_scale(), "probe on a full port took %.2f s", dt);
    /* The oldest held connections were closed to make room. */
    char b;
    struct pollfd p = {.fd = held[0], .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 2000 * (int)fault_scale()), 1);
    ck_assert_int_le(recv(held[0], &b, 1, 0), 0);
    /* Data transfers do not need the RPC port once the segment is open. */
    te_test_fill(local, MIB, 5, 0);
    te_request wr = {TE_OP_WRITE, local, seg, peer.addr, MIB};
    ck_assert_int_eq(te_transfer_sync(eng, &wr, 1, NULL, NULL), 0);
    for (int i = 0; i < 16; i++)
        if (held[i] >= 0)
            close(held[i]);
    ck_assert_int_eq(te_probe(eng, peer.segment), 0);
}
END_TEST

static void setup_full(void)
{
    setenv("MC_TE_MAX_CONNECTIONS_PER_PEER", "8", 1); /* the peer inherits it */
    setup();
}

static void teardown_full(void)
{
    teardown();
    unsetenv("MC_TE_MAX_CONNECTIONS_PER_PEER");
}

int main(void)
{
    fault_setenv_secs("MC_TRANSFER_TIMEOUT", 5);
    fault_setenv_secs("MC_HANDSHAKE_CONNECT_TIMEOUT", 5);
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    setenv("MC_LOG_LEVEL", "ERROR", 0);
    Suite *s = suite_create("faults_flood");
    TCase *tc = tcase_create("flood");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 40 * fault_scale());
    tcase_add_test(tc, transfers_and_notifies_go_on_through_a_flood);
    suite_add_tcase(s, tc);
    TCase *full = tcase_create("full_port");
    tcase_add_checked_fixture(full, setup_full, teardown_full);
    tcase_set_timeout(full, 40 * fault_scale());
    tcase_add_test(full, full_rpc_port_evicts_idle_connections_and_serves);
    suite_add_tcase(s, full);
    return te_test_run(s);
}
