/* fuzz_rpc_frame.c - bytes sent to a real engine's RPC port (P2P, TCP) over
 * loopback: header decoding (legacy form too) and dispatch to the Metadata,
 * Notify and Probe handlers; a reply must be one valid frame of the same type. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "fuzz_util.h"
#include "rpc.h"
#include "te/te.h"

static te_engine *g_engine;
static void *g_buf;

static void setup(void)
{
    fuzz_setup_env();
    setenv("MC_TE_SAME_HOST_TRANSPORT", "0", 1);
    g_engine = te_engine_create();
    if (!g_engine ||
        te_engine_initialize(g_engine, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL) != 0) {
        fprintf(stderr, "fuzz_rpc_frame: engine init failed: %s\n", te_last_error());
        abort();
    }
    g_buf = calloc(1, 4096);
    if (te_register_memory(g_engine, g_buf, 4096, "cpu:0") != 0)
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setup();
    return 0;
}

static int rpc_idle(void *arg)
{
    te_rpc_server *s = arg;
    pthread_mutex_lock(&s->lock);
    int idle = s->active == 0;
    pthread_mutex_unlock(&s->lock);
    return idle;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_engine)
        setup();
    static uint8_t reply[1 << 16];
    int fd = fuzz_connect((uint16_t)te_engine_rpc_port(g_engine));
    FUZZ_ASSERT(fd >= 0, "cannot connect to the RPC port");
    size_t got = fuzz_exchange(fd, data, size, 20000, reply, sizeof reply);
    fuzz_close(fd);
    fuzz_wait_until(rpc_idle, &g_engine->rpc, 10000, "RPC connection threads");

    if (got > 0) {
        /* Only a complete, valid request earns a reply. */
        FUZZ_ASSERT(size >= 9 && got >= 9 && got <= sizeof reply, "reply of %zu bytes", got);
        uint64_t plen;
        int type, legacy;
        FUZZ_ASSERT(te_rpc_decode_header(reply, 1 << 20, &plen, &type, &legacy) == 0 && !legacy,
                    "reply header does not decode");
        FUZZ_ASSERT(plen == got - 9, "reply claims %llu payload bytes, sent %zu",
                    (unsigned long long)plen, got - 9);
        FUZZ_ASSERT(data[8] < TE_RPC_TYPES && type == data[8], "reply type %d to type %u", type,
                    data[8]);
        uint64_t len = le64(data);
        FUZZ_ASSERT(len >= 1 && len - 1 <= size - 9, "reply to an incomplete frame");
    }
    te_notify *n = NULL;
    size_t count = 0;
    if (te_notifies_drain(g_engine, &n, &count) == 0)
        te_notifies_free(n, count);
    return 0;
}
