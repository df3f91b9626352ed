/* lab_node.c - one engine of the lab's scale scenario.  It registers a
 * buffer of one slot per node, prints "READY <segment>", waits for the file
 * that starts with "END <wall clock ms>" and lists every node's segment (one
 * per line, its own line number is its slot), then until that time writes a fresh pattern into its slot
 * of each other node in turn, reads it back and compares.  Each operation's
 * outcome goes to stdout as "<peer> <ok|fail|bad> <start ms> <ms taken> <status>"
 * (wall clock, so the test can set it against when it killed a host); a
 * peer that failed is skipped for 200 ms.  All nodes stop at the same time
 * and keep their engine a few seconds more, so none sees another leave. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

#define MAX_NODES 64
#define RETRY_AFTER_MS 200
#define LINGER_S 3

typedef struct node {
    te_engine *e;
    char *buf; /* slots of peers' writes, then our source and read-back areas */
    size_t block;
    int id, n;
    long long end_ms;
    char names[MAX_NODES][128];
    te_segment_id seg[MAX_NODES];
    int64_t skip_until[MAX_NODES];
} node;

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int read_peers(node *nd, const char *path, const char *self, int wait_s)
{
    FILE *f = NULL;
    for (int i = 0; i < wait_s * 10 && !(f = fopen(path, "r")); i++)
        usleep(100000);
    if (!f)
        return -1;
    nd->id = -1;
    if (fscanf(f, "END %lld\n", &nd->end_ms) != 1) {
        fclose(f);
        return -1;
    }
    while (nd->n < MAX_NODES && fgets(nd->names[nd->n], sizeof nd->names[0], f)) {
        nd->names[nd->n][strcspn(nd->names[nd->n], "\n")] = 0;
        if (!strcmp(nd->names[nd->n], self))
            nd->id = nd->n;
        nd->n++;
    }
    fclose(f);
    return nd->id;
}

/* Writes a pattern to our slot at peer j and reads it back: 0 ok, 1 data
 * differs, or a negative status. */
static int round_trip(node *nd, int j, uint64_t seed)
{
    char *src = nd->buf + (size_t)MAX_NODES * nd->block, *back = src + nd->block;
    int rc = nd->seg[j] ? 0 : te_segment_open(nd->e, nd->names[j], &nd->seg[j]);
    uint64_t base, len;
    if (!rc)
        rc = te_segment_buffer(nd->e, nd->seg[j], 0, &base, &len);
    if (rc)
        return rc;
    te_test_fill(src, nd->block, seed, 0);
    memset(back, 0, nd->block);
    uint64_t at = base + (uint64_t)nd->id * nd->block;
    te_request w = {TE_OP_WRITE, src, nd->seg[j], at, nd->block};
    te_request r = {TE_OP_READ, back, nd->seg[j], at, nd->block};
    rc = te_transfer_sync(nd->e, &w, 1, NULL, NULL);
    if (!rc)
        rc = te_transfer_sync(nd->e, &r, 1, NULL, NULL);
    if (rc)
        return rc;
    return te_test_check(back, nd->block, seed, 0) < 0 ? 0 : 1;
}

static void run(node *nd)
{
    int64_t end = nd->end_ms;
    for (uint64_t iter = 1; wall_ms() < end; iter++) {
        for (int j = 0; j < nd->n && wall_ms() < end; j++) {
            int64_t t0 = wall_ms();
            if (j == nd->id || t0 < nd->skip_until[j])
                continue;
            int rc = round_trip(nd, j, iter << 16 | (uint64_t)nd->id << 8 | (uint64_t)j);
            int64_t t1 = wall_ms();
            printf("%s %s %lld %lld %d\n", nd->names[j], rc == 0 ? "ok" : rc == 1 ? "bad" : "fail",
                   (long long)t0, (long long)(t1 - t0), rc);
            if (rc)
                nd->skip_until[j] = t1 + RETRY_AFTER_MS;
        }
        usleep(20000); /* keep the 2-core lab responsive */
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: lab-node NAME METADATA PEERS_FILE BLOCK\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    node *nd = calloc(1, sizeof *nd);
    nd->block = strtoull(argv[4], NULL, 0);
    nd->e = te_engine_create();
    size_t size = (MAX_NODES + 2) * nd->block;
    nd->buf = aligned_alloc(4096, (size + 4095) & ~(size_t)4095);
    if (!nd->e || !nd->buf || te_engine_initialize(nd->e, argv[1], argv[2], "tcp", "", NULL) ||
        te_register_memory(nd->e, nd->buf, size, "cpu:0")) {
        printf("FAIL %s\n", te_last_error());
        return 1;
    }
    printf("READY %s\n", te_engine_segment_name(nd->e));
    if (read_peers(nd, argv[3], te_engine_segment_name(nd->e), 60) < 0) {
        printf("FAIL not in the peers file\n");
        return 1;
    }
    run(nd);
    printf("DONE\n");
    sleep(LINGER_S);
    te_engine_destroy(nd->e);
    free(nd->buf);
    free(nd);
    return 0;
}
