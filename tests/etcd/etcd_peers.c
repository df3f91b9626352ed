/* etcd_peers.c - helpers that start engines on an etcd store and move
 * pattern data between them, checking every byte on the receiving side; and
 * the skip checks at the start of the engine tests. */
#include "etcd_peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "etcd_server.h"

bool etcd_have_tcp(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/lib/te-plugins/libte_tcp.so", getenv("TE_BUILD_DIR"));
    struct stat st;
    return stat(path, &st) == 0;
}

void etcd_engine_test_require(int lease_ttl_s)
{
    etcd_test_require();
    if (!etcd_have_tcp()) {
        printf("SKIP: the tcp transport (libte_tcp.so) is not built\n");
        exit(ETCD_TEST_SKIP);
    }
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", lease_ttl_s);
    setenv("MC_METADATA_LEASE_TTL", ttl, 1);
}

int etcd_peer_start(te_test_peer *p, const char *metadata, const char *name, size_t size)
{
    char sz[32];
    snprintf(sz, sizeof sz, "%zu", size);
    const char *args[] = {"--metadata", metadata, "--name", name, "--size", sz, NULL};
    return te_test_peer_start(p, args);
}

int etcd_peer_ok(te_test_peer *p, const char *cmd)
{
    char reply[256];
    if (te_test_peer_cmd(p, cmd, reply, sizeof reply) != 0)
        return -1;
    if (strcmp(reply, "OK") != 0) {
        fprintf(stderr, "peer %s answered '%s' to '%s'\n", p->segment, reply, cmd);
        return -1;
    }
    return 0;
}

int etcd_local_start(etcd_local *l, const char *metadata, const char *name, size_t size)
{
    memset(l, 0, sizeof *l);
    l->engine = te_engine_create();
    l->size = size;
    l->buf = aligned_alloc(4096, size);
    if (!l->engine || !l->buf)
        return TE_ERR_MEMORY;
    memset(l->buf, 0, size);
    int rc = te_engine_initialize(l->engine, name, metadata, "tcp", "", NULL);
    if (!rc)
        rc = te_register_memory(l->engine, l->buf, size, "cpu:0");
    if (rc)
        fprintf(stderr, "local engine %s: %d %s\n", name, rc, te_last_error());
    return rc;
}

void etcd_local_stop(etcd_local *l)
{
    te_engine_destroy(l->engine);
    free(l->buf);
    memset(l, 0, sizeof *l);
}

static int transfer(etcd_local *l, te_test_peer *peer, int op, size_t off, size_t len)
{
    te_segment_id id;
    int rc = te_segment_open(l->engine, peer->segment, &id);
    te_request r = {op, l->buf, id, peer->addr + off, len};
    if (!rc)
        rc = te_transfer_sync(l->engine, &r, 1, NULL, NULL);
    if (rc)
        fprintf(stderr, "transfer to %s: %d %s\n", peer->segment, rc, te_last_error());
    return rc;
}

int etcd_write_verified(etcd_local *l, te_test_peer *peer, size_t off, size_t len,
                        unsigned seed)
{
    te_test_fill(l->buf, len, seed, 0);
    int rc = transfer(l, peer, TE_OP_WRITE, off, len);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "check %zu %zu %u", off, len, seed);
    return rc ? rc : etcd_peer_ok(peer, cmd);
}

int etcd_read_verified(etcd_local *l, te_test_peer *peer, size_t off, size_t len,
                       unsigned seed)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "fill %zu %zu %u", off, len, seed);
    int rc = etcd_peer_ok(peer, cmd);
    memset(l->buf, 0, len);
    if (!rc)
        rc = transfer(l, peer, TE_OP_READ, off, len);
    return rc ? rc : te_test_check(l->buf, len, seed, 0) == -1 ? 0 : -1;
}

int etcd_peer_to_peer(te_test_peer *from, te_test_peer *to, size_t off, size_t len,
                      unsigned seed)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "write %s %zu %zu %llx %u", to->segment, off, len,
             (unsigned long long)(to->addr + off), seed);
    if (etcd_peer_ok(from, cmd))
        return -1;
    snprintf(cmd, sizeof cmd, "check %zu %zu %u", off, len, seed);
    return etcd_peer_ok(to, cmd);
}
