/* rdma_sched.h - pure decisions of the RDMA transport, testable without a
 * NIC: which local/peer NIC a slice uses on each attempt, how good a GID
 * table entry is for RoCE, when a context re-probes its GID, and which
 * endpoint's QPs are retired when a context is at MC_MAX_EP_PER_CTX. */
#ifndef TE_RDMA_SCHED_H
#define TE_RDMA_SCHED_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Picks an entry of a preference list list[0..n) whose first npref entries
 * are preferred.  usable (indexed by the entry's value, NULL = all usable)
 * removes NICs that are down.
 *  - attempt 0 stripes slices over the usable preferred entries by seq
 *    (over all usable entries when no preferred one is usable);
 *  - attempt k > 0 walks deterministically over every usable entry,
 *    preferred first, starting one step past attempt 0's choice, so a
 *    retry moves to another NIC whenever there is one.
 * Returns the chosen entry's value, or -1 when none is usable.
 */
int rdma_sched_pick(const int *list, int n, int npref, uint64_t seq, unsigned attempt,
                    const bool *usable);

typedef struct rdma_path {
    int local; /* local context index */
    int peer;  /* peer device index */
} rdma_path;

/* Both ends of a slice's path: the local NIC from the local buffer's
 * preference list, the peer NIC from the peer buffer's; the same seq on
 * both sides keeps rails aligned when the lists are of equal length.
 * 0, or -1 when either side has no usable NIC. */
int rdma_sched_path(const int *local, int nlocal, int nlocal_pref, const bool *local_usable,
                    const int *peer, int npeer, int npeer_pref, uint64_t seq, unsigned attempt,
                    rdma_path *out);

/* Whether the rail from local context `local` to peer device `peer` is
 * paused (arg is the caller's). */
typedef bool (*rdma_rail_paused_fn)(void *arg, int local, int peer);

/*
 * rdma_sched_path, avoiding paused rails and, on a retry, the rail the
 * slice just failed on.
 *  - failed (the rail of the previous attempt; NULL or attempt 0: none):
 *    a retry starts one step from it instead of from seq's pick, moving
 *    the peer NIC on odd attempts and the local NIC on even ones (the other
 *    side when one side has a single usable NIC), so successive attempts
 *    walk away from the failed rail whatever other slices did meanwhile;
 *  - when that choice is the failed rail or paused, the first rail that is
 *    neither, walking the peer NICs (in the order retries visit them) for
 *    each local NIC in turn, starting from the choice.
 * Every rail avoided: the choice itself, so a request never fails only
 * because of pauses.  paused == NULL and failed == NULL: rdma_sched_path.
 */
int rdma_sched_path_rails(const int *local, int nlocal, int nlocal_pref, const bool *local_usable,
                          const int *peer, int npeer, int npeer_pref, uint64_t seq,
                          unsigned attempt, const rdma_path *failed, rdma_rail_paused_fn paused,
                          void *arg, rdma_path *out);

/* GID types as libibverbs numbers them (enum ibv_gid_type). */
#define RDMA_GID_TYPE_IB 0
#define RDMA_GID_TYPE_ROCE_V1 1
#define RDMA_GID_TYPE_ROCE_V2 2

/*
 * Ranks a GID table entry for an Ethernet (RoCE) port: < 0 unusable (zero,
 * IPv6 link-local, IPv4 link-local), otherwise higher is better: RoCE v2
 * over v1, IPv4-mapped over IPv6, with a netdev over without, public over
 * private IPv4 (10/8, 172.16/12, 192.168/16, 100.64/10).  On an InfiniBand
 * port every non-zero GID is usable and the first one wins.
 */
int rdma_gid_score(const uint8_t gid[16], int gid_type, bool has_netdev, bool link_is_ib);

/* One GID table entry as read from the port (present = it could be read). */
typedef struct rdma_gid_entry {
    uint8_t gid[16];
    int type; /* RDMA_GID_TYPE_* */
    bool netdev;
    bool present;
} rdma_gid_entry;

/* The best entry of a table by rdma_gid_score (the first of equals), or -1
 * when none is usable.  Used at create and by every re-probe. */
int rdma_gid_best(const rdma_gid_entry *table, int n, bool link_is_ib);

/*
 * Whether a context may re-read its GID table now, after a failed
 * handshake: never with MC_GID_INDEX (forced), only while fewer than
 * max_probes switches were made (probes_done; MC_AUTO_GID_MAX_RETRIES,
 * 0 = never) and not within one second of the previous read (last_ns,
 * 0 = never read).
 */
#define RDMA_GID_PROBE_INTERVAL_NS 1000000000LL
bool rdma_gid_reprobe_due(bool forced, int probes_done, int max_probes, int64_t last_ns,
                          int64_t now_ns);

/*
 * The index a context uses after re-reading its table: the best entry when
 * it scores higher than the one in use (an address appeared, or the current
 * entry became zero / link-local / unreadable), else old_index.  Nothing
 * usable at all: old_index (a guess is better than no GID).
 */
int rdma_gid_reprobe_pick(int old_index, const rdma_gid_entry *table, int n, bool link_is_ib);

/* One endpoint as the QP cap's eviction sees it. */
typedef struct rdma_evict_ep {
    bool has_qps; /* holds QPs (connected or connecting): counts against the cap */
    bool idle;    /* nothing pending, nothing on the wire, no handshake */
    bool visited; /* used since the hand last passed it */
} rdma_evict_ep;

/*
 * Which endpoint gives its QPs up when a context is at MC_MAX_EP_PER_CTX
 * (CLOCK / SIEVE second chance).  From *hand, walks eps[0..n) round, at most
 * twice: entries without QPs and busy ones are passed untouched; an idle one
 * with visited set loses the bit (eps[i].visited = false; the caller writes
 * it back) and is passed; the first idle one without it is the victim.
 * Returns its index and sets *hand just past it; -1 (nothing cleared, *hand
 * kept) when no entry with QPs is idle.
 */
int rdma_evict_pick(rdma_evict_ep *eps, int n, int *hand);

#endif
