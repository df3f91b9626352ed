/* te-gpu-peer - a target engine in its own process for the GPU tests, its
 * buffer in GPU or host memory.
 * Usage: te-gpu-peer [--protocol P] [--mem gpu|cpu] [--size N]
 * Prints "READY <segment> <addr hex> <size>", then answers one line per
 * command on stdin:  fill OFF LEN SEED | check OFF LEN SEED | byte OFF LEN V
 * (check that every byte is V) | quit */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"
#include "te/te.h"
#include "test_util.h"

typedef struct peer_buf {
    char *mem;   /* GPU or host: the registered buffer */
    char *host;  /* where fill and check work */
    bool gpu;
    size_t size;
} peer_buf;

/* Registered host memory is written by the engine's threads for requests
 * that crossed a socket from another process, an order ThreadSanitizer
 * cannot see (tests/tsan.supp): bytes move in and out of it uninstrumented,
 * and its per-access race reports do not slow the peer to a crawl. */
#if defined(__clang__)
#define UNTRACKED __attribute__((no_sanitize("thread"), noinline))
#else
#define UNTRACKED \
    __attribute__((no_sanitize_thread, noinline, optimize("no-tree-loop-distribute-patterns")))
#endif

static UNTRACKED void plain_copy(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i];
}

static int do_fill(peer_buf *b, size_t off, size_t len, uint64_t seed)
{
    te_test_fill(b->host + off, len, seed, 0);
    if (b->gpu)
        return gpu_put(b->mem + off, b->host + off, len);
    plain_copy(b->mem + off, b->host + off, len);
    return 0;
}

static const char *do_check(peer_buf *b, size_t off, size_t len, uint64_t seed, int byte)
{
    static char why[64];
    if (b->gpu && gpu_get(b->host + off, b->mem + off, len))
        return "ERR cudaMemcpy";
    if (!b->gpu)
        plain_copy(b->host + off, b->mem + off, len);
    for (size_t i = 0; byte >= 0 && i < len; i++)
        if ((unsigned char)b->host[off + i] != byte) {
            snprintf(why, sizeof why, "BAD %zu", i);
            return why;
        }
    long long bad = byte >= 0 ? -1 : te_test_check(b->host + off, len, seed, 0);
    if (bad >= 0) {
        snprintf(why, sizeof why, "BAD %lld", bad);
        return why;
    }
    return "OK";
}

static void serve(peer_buf *b)
{
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long long off, len, seed;
        int v;
        if (sscanf(line, "fill %llu %llu %llu", &off, &len, &seed) == 3 && off + len <= b->size)
            printf("%s\n", do_fill(b, off, len, seed) ? "ERR cudaMemcpy" : "OK");
        else if (sscanf(line, "check %llu %llu %llu", &off, &len, &seed) == 3 &&
                 off + len <= b->size)
            printf("%s\n", do_check(b, off, len, seed, -1));
        else if (sscanf(line, "byte %llu %llu %d", &off, &len, &v) == 3 && off + len <= b->size)
            printf("%s\n", do_check(b, off, len, 0, v & 255));
        else if (!strncmp(line, "quit", 4))
            return;
        else
            printf("ERR bad command\n");
    }
}

int main(int argc, char **argv)
{
    const char *protocol = "nvlink", *mem = "gpu";
    size_t size = 64u << 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--protocol"))
            protocol = argv[i + 1];
        else if (!strcmp(argv[i], "--mem"))
            mem = argv[i + 1];
        else if (!strcmp(argv[i], "--size"))
            size = strtoull(argv[i + 1], NULL, 0);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    peer_buf b = {.gpu = !strcmp(mem, "gpu"), .size = size, .host = calloc(1, size)};
    if (b.gpu && gpu_load()) {
        printf("FAIL no CUDA runtime\n");
        return 1;
    }
    b.mem = b.gpu ? gpu_alloc(size) : calloc(1, size);
    if (!b.mem || !b.host || (b.gpu && gpu_put(b.mem, b.host, size))) {
        printf("FAIL cannot allocate %zu bytes of %s memory\n", size, mem);
        return 1;
    }
    te_engine *e = te_engine_create();
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", protocol, "", NULL);
    if (!rc)
        rc = te_register_memory(e, b.mem, size, "*");
    if (rc) {
        printf("FAIL %d %s\n", rc, te_last_error());
        return 1;
    }
    printf("READY %s %llx %zu\n", te_engine_segment_name(e),
           (unsigned long long)(uintptr_t)b.mem, size);
    serve(&b);
    te_engine_destroy(e);
    if (b.gpu)
        gpu_free(b.mem);
    else
        free(b.mem);
    free(b.host);
    return 0;
}
