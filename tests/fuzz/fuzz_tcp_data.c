/* fuzz_tcp_data.c - bytes sent to the TCP data port of a real target
 * (plugins/tcp linked in, bare engine) whose two registered pages sit between
 * PROT_NONE guard pages; header addresses are rebased on the first page so the
 * fuzzer can aim at edges, and any access outside registered memory faults. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine.h"
#include "fuzz_util.h"
#include "memreg.h"
#include "tcp.h"
#include "te/plugin.h"

#define PAGE 4096

static te_engine *g_engine;
static tcp_transport *g_tcp;
static uint8_t *g_map; /* guard | A | guard | B | guard */

static void add_region(uint8_t *addr)
{
    te_region *r = calloc(1, sizeof *r);
    r->addr = (uint64_t)(uintptr_t)addr;
    r->length = PAGE;
    snprintf(r->location, sizeof r->location, "cpu:0");
    if (te_memreg_insert(&g_engine->memreg, r))
        abort();
}

static void setup(void)
{
    fuzz_setup_env();
    g_engine = te_engine_create();
    g_map = mmap(NULL, 5 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!g_engine || g_map == MAP_FAILED || mprotect(g_map + PAGE, PAGE, PROT_READ | PROT_WRITE) ||
        mprotect(g_map + 3 * PAGE, PAGE, PROT_READ | PROT_WRITE))
        abort();
    add_region(g_map + PAGE);
    add_region(g_map + 3 * PAGE);
    g_tcp = fuzz_transport(te_plugin_init, &te_host_api_table, &g_engine->host);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setup();
    return 0;
}

static int server_idle(void *arg)
{
    tcp_server *s = arg;
    pthread_mutex_lock(&s->lock);
    int idle = s->active == 0;
    pthread_mutex_unlock(&s->lock);
    return idle;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_engine)
        setup();
    /* Walk the stream as the target would if it accepted everything and
     * rebase each header's address on region A. */
    uint8_t *wire = malloc(size ? size : 1);
    memcpy(wire, data, size);
    uint64_t base = (uint64_t)(uintptr_t)(g_map + PAGE);
    for (size_t off = 0; off + TCP_HDR_LEN <= size;) {
        uint8_t *h = wire + off;
        uint64_t len = tcp_get_u64(h);
        tcp_put_u64(h + 8, base + tcp_get_u64(h + 8));
        off += TCP_HDR_LEN;
        if ((h[16] & ~TCP_OP_V2) == TCP_OP_WRITE)
            off += len < size - off ? (size_t)len : size - off;
    }
    int fd = fuzz_connect(g_tcp->server.port);
    FUZZ_ASSERT(fd >= 0, "cannot connect to the data port");
    fuzz_exchange(fd, wire, size, 20000, NULL, 0);
    fuzz_close(fd);
    free(wire);
    fuzz_wait_until(server_idle, &g_tcp->server, 10000, "data connection threads");
    return 0;
}
