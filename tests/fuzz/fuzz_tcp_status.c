/* fuzz_tcp_status.c - v2 status frames and READ data a target sends back,
 * parsed by the initiator's lanes (plugins/tcp linked in) against a fake
 * target answering with fuzz bytes: every slice is reported exactly once and
 * promptly, and READ data lands only in its own exactly sized buffer. */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "fuzz_util.h"
#include "tcp.h"
#include "te/plugin.h"

#define MAX_SLICES 4

static te_engine *g_engine;
static tcp_transport *g_tcp;
static te_host_api g_api; /* the core's table with our slice_done */
static int g_listen = -1;
static uint16_t g_port;

static te_slice g_slices[MAX_SLICES];
static atomic_int g_done[MAX_SLICES];
static atomic_int g_status[MAX_SLICES];
static atomic_int g_left;

static void on_slice_done(te_host *h, te_slice *s, int status)
{
    ptrdiff_t i = s - g_slices;
    FUZZ_ASSERT(i >= 0 && i < MAX_SLICES, "unknown slice %p", (void *)s);
    FUZZ_ASSERT(atomic_fetch_add(&g_done[i], 1) == 0, "slice %td reported twice", i);
    atomic_store(&g_status[i], status);
    atomic_fetch_sub(&g_left, 1);
}

static void setup(void)
{
    fuzz_setup_env();
    setenv("MC_TCP_LANES_PER_PEER", "1", 1);
    g_engine = te_engine_create();
    g_api = te_host_api_table;
    g_api.slice_done = on_slice_done;
    if (!g_engine)
        abort();
    g_tcp = fuzz_transport(te_plugin_init, &g_api, &g_engine->host);
    g_port = fuzz_listen(&g_listen);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setup();
    return 0;
}

static int all_done(void *arg)
{
    return atomic_load(&g_left) == 0;
}

static int lanes_gone(void *arg)
{
    tcp_transport *t = arg;
    pthread_mutex_lock(&t->slots.lock);
    int gone = t->slots.live == 0;
    pthread_mutex_unlock(&t->slots.lock);
    return gone;
}

/* Reads exactly n request bytes (or until the lane closes), 5 s at most. */
static void drain_requests(int fd, size_t n)
{
    char buf[65536];
    while (n > 0) {
        if (fuzz_poll1(fd, POLLIN, 5000) != 1)
            break;
        ssize_t r = recv(fd, buf, n < sizeof buf ? n : sizeof buf, 0);
        if (r <= 0)
            break;
        n -= (size_t)r;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_engine)
        setup();
    /* flags (bit 0: v2, bits 1-2: slices - 1), 2 bytes per slice (bit 15:
     * write, low 13 bits: length - 1), then the target's answer. */
    if (size < 1)
        return 0;
    bool v2 = data[0] & 1;
    int n = ((data[0] >> 1) & 3) + 1;
    if (size < 1 + 2 * (size_t)n)
        return 0;
    const uint8_t *answer = data + 1 + 2 * n;
    size_t answer_len = size - 1 - 2 * (size_t)n;

    tcp_peer *peer = tcp_peer_new(g_tcp, "127.0.0.1", g_port, v2);
    FUZZ_ASSERT(peer, "tcp_peer_new");
    te_slice *ptrs[MAX_SLICES];
    size_t request_bytes = 0;
    int64_t deadline = g_api.now_ns() + 10000000000LL;
    atomic_store(&g_left, n);
    for (int i = 0; i < n; i++) {
        unsigned v = data[1 + 2 * i] | data[2 + 2 * i] << 8;
        uint64_t len = (v & 0x1fff) + 1;
        memset(&g_slices[i], 0, sizeof g_slices[i]);
        g_slices[i].opcode = v & 0x8000 ? TE_OP_WRITE : TE_OP_READ;
        g_slices[i].local = calloc(1, len);
        g_slices[i].remote = 0x10000 + 0x4000 * (uint64_t)i;
        g_slices[i].length = len;
        g_slices[i].peer = peer;
        g_slices[i].remote_buffer = 0;
        g_slices[i].deadline_ns = deadline;
        atomic_store(&g_done[i], 0);
        atomic_store(&g_status[i], 1);
        ptrs[i] = &g_slices[i];
        request_bytes += TCP_HDR_LEN + (g_slices[i].opcode == TE_OP_WRITE ? len : 0);
    }
    FUZZ_ASSERT(tcp_peer_submit(peer, ptrs, (size_t)n) == 0, "submit refused");

    FUZZ_ASSERT(fuzz_poll1(g_listen, POLLIN, 5000) == 1, "the lane did not connect");
    int fd = accept4(g_listen, NULL, NULL, SOCK_CLOEXEC);
    FUZZ_ASSERT(fd >= 0, "accept");
    drain_requests(fd, request_bytes);
    for (size_t off = 0; off < answer_len;) {
        ssize_t w = send(fd, answer + off, answer_len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the lane gave up on us: fine */
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    /* Everything settles well before the slices' own deadline. */
    fuzz_wait_until(all_done, NULL, 5000, "slices after the target closed");
    fuzz_close(fd);
    tcp_peer_free(peer);
    fuzz_wait_until(lanes_gone, g_tcp, 5000, "lane threads after peer_free");
    for (int i = 0; i < n; i++) {
        int st = atomic_load(&g_status[i]);
        FUZZ_ASSERT(st <= 0 && st != TE_ERR_MALFORMED_JSON, "slice %d status %d", i, st);
        free(g_slices[i].local);
    }
    return 0;
}
