/* te-test-peer - a target engine in its own process for integration tests.
 * Usage: te-test-peer [--metadata S] [--protocol P] [--name H] [--size N]
 *                     [--metadata-type T]
 * Prints "READY <segment> <addr hex> <size> <rpc port>", then answers one
 * line per command on stdin:
 *   fill OFF LEN SEED | check OFF LEN SEED | zero OFF LEN
 *   wrong OFF LEN SEED OLD -> "WRONG n first F last L zero Z old O older P": the
 *                        bytes unlike SEED's fill, how many of them are 0 and
 *                        how many hold OLD's or OLD-1's fill (what a failed
 *                        check found)
 *   protect OFF LEN 0|1 -> pages of the buffer made inaccessible (0) or usable again (1)
 *   notifies          -> "NOTIFIES n" then n lines "name<TAB>msg"
 *   write SEG OFF LEN REMOTE SEED -> writes own [OFF,+LEN) filled with SEED to SEG
 *   quit */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

/* Answers "wrong": which bytes of buf differ from seed's fill, and what they hold. */
static void describe_wrong(const uint8_t *buf, size_t len, uint64_t seed, uint64_t old)
{
    uint8_t *want = malloc(len), *was = malloc(len), *before = malloc(len);
    if (!want || !was || !before) {
        printf("ERR out of memory\n");
        free(want);
        free(was);
        free(before);
        return;
    }
    te_test_fill(want, len, seed, 0);
    te_test_fill(was, len, old, 0);
    te_test_fill(before, len, old - 1, 0);
    size_t n = 0, zero = 0, olds = 0, olders = 0, first = 0, last = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] != want[i]) {
            if (!n++)
                first = i;
            last = i;
            zero += buf[i] == 0;
            olds += buf[i] == was[i];
            olders += buf[i] == before[i];
        }
    printf("WRONG %zu first %zu last %zu zero %zu old %zu older %zu\n", n, first, last, zero, olds,
           olders);
    free(want);
    free(was);
    free(before);
}

int main(int argc, char **argv)
{
    const char *metadata = "P2PHANDSHAKE", *protocol = "tcp", *name = "127.0.0.1";
    const char *mtype = NULL;
    size_t size = 1 << 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--metadata"))
            metadata = argv[i + 1];
        else if (!strcmp(argv[i], "--protocol"))
            protocol = argv[i + 1];
        else if (!strcmp(argv[i], "--name"))
            name = argv[i + 1];
        else if (!strcmp(argv[i], "--size"))
            size = strtoull(argv[i + 1], NULL, 0);
        else if (!strcmp(argv[i], "--metadata-type"))
            mtype = argv[i + 1];
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    te_engine *e = te_engine_create();
    int rc = te_engine_initialize(e, name, metadata, protocol, "", mtype);
    if (rc) {
        printf("FAIL init %d %s\n", rc, te_last_error());
        return 1;
    }
    char *buf = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    memset(buf, 0, size);
    rc = te_register_memory(e, buf, size, "cpu:0");
    if (rc) {
        printf("FAIL register %d %s\n", rc, te_last_error());
        return 1;
    }
    printf("READY %s %llx %zu %d\n", te_engine_segment_name(e), (unsigned long long)(uintptr_t)buf,
           size, te_engine_rpc_port(e));
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long long off, len, seed, remote, old;
        char seg[512];
        if (sscanf(line, "fill %llu %llu %llu", &off, &len, &seed) == 3 && off + len <= size) {
            te_test_fill(buf + off, len, seed, 0);
            printf("OK\n");
        } else if (sscanf(line, "check %llu %llu %llu", &off, &len, &seed) == 3 &&
                   off + len <= size) {
            long long bad = te_test_check(buf + off, len, seed, 0);
            if (bad < 0)
                printf("OK\n");
            else
                printf("BAD %lld\n", bad);
        } else if (sscanf(line, "wrong %llu %llu %llu %llu", &off, &len, &seed, &old) == 4 &&
                   off + len <= size) {
            describe_wrong((const uint8_t *)buf + off, len, seed, old);
        } else if (sscanf(line, "zero %llu %llu", &off, &len) == 2 && off + len <= size) {
            memset(buf + off, 0, len);
            printf("OK\n");
        } else if (sscanf(line, "protect %llu %llu %llu", &off, &len, &seed) == 3 &&
                   off + len <= size && off % (unsigned long long)sysconf(_SC_PAGESIZE) == 0) {
            int prot = seed ? PROT_READ | PROT_WRITE : PROT_NONE;
            printf(mprotect(buf + off, len, prot) ? "ERR mprotect\n" : "OK\n");
        } else if (!strncmp(line, "notifies", 8)) {
            te_notify *n;
            size_t count;
            te_notifies_drain(e, &n, &count);
            printf("NOTIFIES %zu\n", count);
            for (size_t i = 0; i < count; i++)
                printf("%s\t%s\n", n[i].name, n[i].msg);
            te_notifies_free(n, count);
        } else if (sscanf(line, "write %511s %llu %llu %llx %llu", seg, &off, &len, &remote,
                          &seed) == 5 && off + len <= size) {
            te_segment_id id;
            te_test_fill(buf + off, len, seed, 0);
            rc = te_segment_open(e, seg, &id);
            te_request r = {TE_OP_WRITE, buf + off, id, remote, len};
            if (!rc)
                rc = te_transfer_sync(e, &r, 1, NULL, NULL);
            printf(rc ? "ERR %d\n" : "OK\n", rc);
        } else if (!strncmp(line, "quit", 4)) {
            break;
        } else {
            printf("ERR bad command\n");
        }
    }
    te_engine_destroy(e);
    free(buf);
    return 0;
}
