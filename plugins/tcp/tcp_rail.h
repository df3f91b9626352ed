/* tcp_rail.h - several NICs as rails of the TCP transport.  A rail is one
 * (local address, remote address) pair; a peer's lanes are spread over its
 * rails.  tcp_rail.c keeps each rail's health (paused after a failure, with
 * a cool-down that grows while failures repeat, as plugins/rdma/rail.c) and
 * its measured throughput, and picks the rail for each slice; it is pure
 * (time is passed in).  tcp_nics.c finds the local interfaces the device
 * filters name, publishes their addresses and pairs them with a peer's. */
#ifndef TE_TCP_RAIL_H
#define TE_TCP_RAIL_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "tcp.h"

#define TCP_MAX_RAILS 8
#define TCP_ADDR_LEN 64

/* Where a rail goes: local is "" to let routing choose the source. */
typedef struct tcp_rail_spec {
    char local[TCP_ADDR_LEN];
    char remote[256];
} tcp_rail_spec;

typedef struct tcp_rail {
    tcp_rail_spec spec;
    pthread_mutex_t lock;  /* everything below */
    uint64_t outstanding;  /* bytes handed to the rail's lanes, not finished */
    int64_t busy_since;    /* when outstanding last became > 0 */
    uint64_t win_bytes;    /* moved in the current measuring window */
    int64_t win_busy_ns;   /* busy time of the window */
    double rate;           /* bytes per busy second, moving average; 0 = unmeasured */
    int failures;          /* consecutive failures (the cool-down doubles with each) */
    int64_t paused_until;  /* 0 = usable */
} tcp_rail;

void tcp_rail_init(tcp_rail *r, const tcp_rail_spec *spec);
void tcp_rail_destroy(tcp_rail *r);

/* Bytes handed to the rail, and bytes that left it (ok: they moved, and
 * the rail's failure count restarts). */
void tcp_rail_sent(tcp_rail *r, uint64_t bytes, int64_t now_ns);
void tcp_rail_done(tcp_rail *r, uint64_t bytes, bool ok, int64_t now_ns);

/* A connection of the rail failed at now_ns: the rail is set aside for
 * pause_ns << (consecutive failures - 1), at most 32 * pause_ns.  A failure
 * while paused (another lane of the same outage) does not grow the pause.
 * true when this call paused it. */
bool tcp_rail_failed(tcp_rail *r, int64_t now_ns, int64_t pause_ns);
bool tcp_rail_usable(tcp_rail *r, int64_t now_ns);

/* The rail for `bytes` more: the usable rail other than `exclude` (-1: none
 * excluded) whose queue drains first at its measured rate, a rail never
 * slower than PROBE_SHARE of the fastest (so a slow rail keeps being
 * measured).  A rail back from a pause takes one slice at a time until data
 * moves on it again.  With no usable rail: -1 when exclude >= 0 (nowhere to move
 * to), otherwise the same choice among all rails. */
int tcp_rail_pick(tcp_rail *rails, int n, uint64_t bytes, int64_t now_ns, int exclude);

/* A peer reached over these rails (tcp_lane.c); nrails 0: one route to host. */
tcp_peer *tcp_peer_new_rails(tcp_transport *t, const char *host, uint16_t port, bool v2,
                             const tcp_rail_spec *rails, int nrails);

/* ---- interfaces and addresses (tcp_nics.c) --------------------------------- */

typedef struct tcp_nics tcp_nics;

/* The interfaces named by the device filter of initialize and MC_TE_FILTERS
 * (both apply when both are set) with their addresses.  NULL when neither
 * names an interface of this host: one route to each peer, as before. */
tcp_nics *tcp_nics_open(te_host *h, const char *device_filter);
void tcp_nics_free(tcp_nics *n);
/* Adds "tcp_addresses":[...] to the descriptor object (nothing without nics). */
int tcp_nics_describe(const tcp_nics *n, json_t *obj);
/* The rails to a peer: each local address with the peer's advertised
 * addresses (tcp_addresses, else its RPC host) in the same subnet, else with
 * every one of them.  0 without local nics: the caller keeps one route. */
int tcp_nics_rails(const tcp_nics *n, json_t *descriptor, const char *rpc_host,
                   tcp_rail_spec *out, int max);

#endif
