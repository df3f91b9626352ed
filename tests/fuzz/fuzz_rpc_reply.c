/* fuzz_rpc_reply.c - a fake P2P peer answers our Metadata request with fuzz
 * bytes: te_rpc_call, te_segdesc_decode and the TCP transport's descriptor
 * parsing behind te_segment_open, which must return in time, never crash. */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "te/te.h"

static te_engine *g_engine;
static int g_listen = -1;
static uint16_t g_port;
static char g_name[64];

/* The reply for the connection being served, handed over under g_lock. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static const uint8_t *g_reply;
static size_t g_reply_len;
static atomic_int g_served; /* connections fully handled */

static void serve_one(int fd)
{
    /* Read the request (header + payload, small), then answer with the
     * current fuzz bytes and close. */
    uint8_t req[4096];
    size_t have = 0;
    for (;;) {
        if (fuzz_poll1(fd, POLLIN, 2000) != 1)
            break;
        ssize_t n = recv(fd, req + have, sizeof req - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
        if (have >= 9) {
            uint64_t len = 0;
            for (int i = 0; i < 8; i++)
                len |= (uint64_t)req[i] << (8 * i);
            if (have >= 8 + len || have == sizeof req)
                break;
        }
    }
    pthread_mutex_lock(&g_lock);
    const uint8_t *r = g_reply;
    size_t len = g_reply_len;
    pthread_mutex_unlock(&g_lock);
    size_t off = 0;
    while (r && off < len) {
        ssize_t n = send(fd, r + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    close(fd);
}

static void *server_main(void *arg)
{
    for (;;) {
        int fd = accept(g_listen, NULL, NULL);
        if (fd < 0)
            continue;
        serve_one(fd);
        atomic_fetch_add(&g_served, 1);
        pthread_mutex_lock(&g_lock);
        pthread_cond_broadcast(&g_cond);
        pthread_mutex_unlock(&g_lock);
    }
    return NULL;
}

static void setup(void)
{
    fuzz_setup_env();
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    setenv("MC_HANDSHAKE_CONNECT_TIMEOUT", "3", 1);
    g_engine = te_engine_create();
    if (!g_engine ||
        te_engine_initialize(g_engine, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL) != 0) {
        fprintf(stderr, "fuzz_rpc_reply: engine init failed: %s\n", te_last_error());
        abort();
    }
    g_port = fuzz_listen(&g_listen);
    snprintf(g_name, sizeof g_name, "127.0.0.1:%u", g_port);
    fuzz_thread(server_main);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_engine)
        setup();
    pthread_mutex_lock(&g_lock);
    g_reply = data;
    g_reply_len = size;
    pthread_mutex_unlock(&g_lock);
    int before = atomic_load(&g_served);
    te_segment_id id = -1;
    int rc = te_segment_open(g_engine, g_name, &id);
    /* Wait until the fake peer is done with the connection (it answered). */
    pthread_mutex_lock(&g_lock);
    while (atomic_load(&g_served) == before)
        pthread_cond_wait(&g_cond, &g_lock);
    g_reply = NULL;
    pthread_mutex_unlock(&g_lock);
    if (rc == 0) {
        FUZZ_ASSERT(id > 0, "segment id %lld", (long long)id);
        uint64_t addr, len;
        for (size_t i = 0; te_segment_buffer(g_engine, id, i, &addr, &len) == 0; i++)
            FUZZ_ASSERT(addr && len && addr + len > addr, "buffer %zu accepted", i);
        te_segment_close(g_engine, id); /* the next run fetches again */
    } else {
        FUZZ_ASSERT(rc < 0, "status %d", rc);
    }
    return 0;
}
