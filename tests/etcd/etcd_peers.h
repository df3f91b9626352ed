/* etcd_peers.h - engines for the etcd integration tests: te-test-peer
 * processes named through etcd, and an engine in the test process with one
 * registered buffer, plus verified transfers between them; and the checks at
 * the start of such a test's main(). */
#ifndef TE_TEST_ETCD_PEERS_H
#define TE_TEST_ETCD_PEERS_H

#include <stdbool.h>
#include <stddef.h>

#include "te/te.h"
#include "test_util.h"

/* Starts te-test-peer --metadata <metadata> --name <name> --size <size>. */
int etcd_peer_start(te_test_peer *p, const char *metadata, const char *name, size_t size);
/* Sends cmd and checks the reply is "OK"; 0 or -1 (the reply on stderr). */
int etcd_peer_ok(te_test_peer *p, const char *cmd);

typedef struct etcd_local {
    te_engine *engine;
    char *buf;
    size_t size;
} etcd_local;

/* Creates and initializes an engine named `name` with a registered buffer. */
int etcd_local_start(etcd_local *l, const char *metadata, const char *name, size_t size);
void etcd_local_stop(etcd_local *l);
/* Writes len bytes (pattern seed) from the local buffer to peer's buffer at
 * off, and has the peer check them.  0, or the failing status. */
int etcd_write_verified(etcd_local *l, te_test_peer *peer, size_t off, size_t len,
                        unsigned seed);
/* The peer fills, the local engine reads and checks.  0 or the status. */
int etcd_read_verified(etcd_local *l, te_test_peer *peer, size_t off, size_t len,
                       unsigned seed);
/* Has peer `from` write to segment `to` at off and `to` check it. */
int etcd_peer_to_peer(te_test_peer *from, te_test_peer *to, size_t off, size_t len,
                      unsigned seed);

/* Whether the tcp transport ($TE_BUILD_DIR/lib/te-plugins/libte_tcp.so) is built. */
bool etcd_have_tcp(void);
/* For the top of main() in tests whose engines move data over tcp through
 * etcd: exits the process with ETCD_TEST_SKIP and a message when there is no
 * etcd binary (etcd_test_require) or no tcp transport; then sets
 * MC_METADATA_LEASE_TTL to lease_ttl_s. */
void etcd_engine_test_require(int lease_ttl_s);

#endif
