/* sched.c - where slices go (local and peer NIC per attempt, retries
 * stepping away from the rail that failed, paused rails avoided), which GID
 * a RoCE port uses and which idle endpoint gives its QPs up at the cap.
 * Pure functions: the unit tests pin every case; test_rdma_rails_vm runs
 * striping and link cuts over four soft-RoCE devices. */
#include "rdma_sched.h"

#include <string.h>

static bool is_usable(const bool *usable, int v)
{
    return v >= 0 && (!usable || usable[v]);
}

static int count_usable(const int *list, int n, const bool *usable)
{
    int count = 0;
    for (int i = 0; i < n; i++)
        count += is_usable(usable, list[i]);
    return count;
}

/* The k-th usable entry among list[from..to), counting modulo their number. */
static int nth_usable(const int *list, int from, int to, uint64_t k, const bool *usable)
{
    int count = count_usable(list + from, to - from, usable);
    if (count == 0)
        return -1;
    uint64_t want = k % (uint64_t)count;
    for (int i = from; i < to; i++)
        if (is_usable(usable, list[i]) && want-- == 0)
            return list[i];
    return -1;
}

int rdma_sched_pick(const int *list, int n, int npref, uint64_t seq, unsigned attempt,
                    const bool *usable)
{
    if (!list || n <= 0)
        return -1;
    if (npref < 0 || npref > n)
        npref = n;
    if (attempt == 0) {
        int v = nth_usable(list, 0, npref, seq, usable);
        return v >= 0 ? v : nth_usable(list, 0, n, seq, usable);
    }
    /* Retries: position of attempt 0's choice among all usable entries,
     * then `attempt` steps further. */
    int first = rdma_sched_pick(list, n, npref, seq, 0, usable);
    int count = 0, pos = 0;
    for (int i = 0; i < n; i++) {
        if (!is_usable(usable, list[i]))
            continue;
        if (list[i] == first)
            pos = count;
        count++;
    }
    if (count == 0)
        return -1;
    return nth_usable(list, 0, n, (uint64_t)pos + attempt, usable);
}

int rdma_sched_path(const int *local, int nlocal, int nlocal_pref, const bool *local_usable,
                    const int *peer, int npeer, int npeer_pref, uint64_t seq, unsigned attempt,
                    rdma_path *out)
{
    /* A retry changes one side at a time: odd attempts move the peer NIC,
     * even ones the local NIC, so both get tried when only one is bad. */
    unsigned peer_attempt = (attempt + 1) / 2, local_attempt = attempt / 2;
    out->local = rdma_sched_pick(local, nlocal, nlocal_pref, seq, local_attempt, local_usable);
    out->peer = rdma_sched_pick(peer, npeer, npeer_pref, seq, peer_attempt, NULL);
    return out->local >= 0 && out->peer >= 0 ? 0 : -1;
}

/* The k-th usable entry after v in list (v itself for k = 0, wrapping);
 * -1 when v is not a usable entry of list. */
static int step_from(const int *list, int n, int v, unsigned k, const bool *usable)
{
    int count = 0, pos = -1;
    for (int i = 0; i < n; i++) {
        if (!is_usable(usable, list[i]))
            continue;
        if (list[i] == v && pos < 0)
            pos = count;
        count++;
    }
    return pos < 0 ? -1 : nth_usable(list, 0, n, (uint64_t)pos + k, usable);
}

/* Whether a slice avoids a rail: the one it just failed on, or a paused one. */
static bool avoided(const rdma_path *failed, rdma_rail_paused_fn paused, void *arg, int l, int p)
{
    if (failed && failed->local == l && failed->peer == p)
        return true;
    return paused && paused(arg, l, p);
}

/* A retry's first choice: one step from the failed rail, on the peer side
 * for odd attempts and the local side for even ones (the other side when
 * this one has a single usable NIC).  False when the failed rail's NICs are
 * no longer usable entries of the lists. */
static bool step_from_failed(const int *local, int nlocal, const bool *local_usable,
                             const int *peer, int npeer, unsigned attempt,
                             const rdma_path *failed, rdma_path *out)
{
    int nl = count_usable(local, nlocal, local_usable), np = count_usable(peer, npeer, NULL);
    bool move_peer = (attempt % 2 == 1 && np > 1) || nl < 2;
    int l = step_from(local, nlocal, failed->local, move_peer ? 0 : 1, local_usable);
    int p = step_from(peer, npeer, failed->peer, move_peer ? 1 : 0, NULL);
    if (l < 0 || p < 0)
        return false;
    *out = (rdma_path){.local = l, .peer = p};
    return true;
}

/* From *out: steps 0..count-1 visit every usable rail once, the other
 * peer NICs of the same local NIC first, then the next local NIC's.  Sets
 * *out to the first rail not avoided; false when there is none. */
static bool walk_rails(const int *local, int nlocal, const bool *local_usable, const int *peer,
                       int npeer, const rdma_path *failed, rdma_rail_paused_fn paused, void *arg,
                       rdma_path *out)
{
    rdma_path base = *out;
    int nl = count_usable(local, nlocal, local_usable), np = count_usable(peer, npeer, NULL);
    for (int i = 0; i < nl * np; i++) {
        int l = step_from(local, nlocal, base.local, (unsigned)(i / np), local_usable);
        int p = step_from(peer, npeer, base.peer, (unsigned)(i % np), NULL);
        if (!avoided(failed, paused, arg, l, p)) {
            *out = (rdma_path){.local = l, .peer = p};
            return true;
        }
    }
    return false;
}

int rdma_sched_path_rails(const int *local, int nlocal, int nlocal_pref, const bool *local_usable,
                          const int *peer, int npeer, int npeer_pref, uint64_t seq,
                          unsigned attempt, const rdma_path *failed, rdma_rail_paused_fn paused,
                          void *arg, rdma_path *out)
{
    if (rdma_sched_path(local, nlocal, nlocal_pref, local_usable, peer, npeer, npeer_pref, seq,
                        attempt, out))
        return -1;
    if (attempt == 0)
        failed = NULL;
    if (failed)
        step_from_failed(local, nlocal, local_usable, peer, npeer, attempt, failed, out);
    rdma_path base = *out;
    if (walk_rails(local, nlocal, local_usable, peer, npeer, failed, paused, arg, out))
        return 0;
    /* Every other rail paused: the failed rail (one error) before a paused one. */
    if (failed && walk_rails(local, nlocal, local_usable, peer, npeer, NULL, paused, arg, out))
        return 0;
    *out = base; /* every rail is avoided: use the choice anyway */
    return 0;
}

/* ---- GIDs ------------------------------------------------------------------ */

static bool all_zero(const uint8_t *p, int n)
{
    for (int i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static bool is_v4_mapped(const uint8_t g[16])
{
    return all_zero(g, 10) && g[10] == 0xff && g[11] == 0xff;
}

static bool is_private_v4(const uint8_t a[4])
{
    return a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
           (a[0] == 100 && (a[1] & 0xc0) == 64);
}

int rdma_gid_score(const uint8_t gid[16], int gid_type, bool has_netdev, bool link_is_ib)
{
    if (all_zero(gid, 16))
        return -1;
    if (link_is_ib)
        return gid_type == RDMA_GID_TYPE_IB ? 100 : 50;
    if (gid[0] == 0xfe && (gid[1] & 0xc0) == 0x80)
        return -1; /* IPv6 link-local: not routable */
    int score;
    if (gid_type == RDMA_GID_TYPE_ROCE_V2)
        score = 100;
    else if (gid_type == RDMA_GID_TYPE_ROCE_V1)
        score = 40;
    else
        return -1;
    if (is_v4_mapped(gid)) {
        const uint8_t *a = gid + 12;
        if (a[0] == 169 && a[1] == 254)
            return -1; /* IPv4 link-local */
        if (a[0] == 0)
            return -1;
        if (a[0] == 127)
            return 5; /* loopback: usable for tests on one host, never preferred */
        score += 20;
        if (is_private_v4(a))
            score -= 5;
    }
    if (has_netdev)
        score += 10;
    return score;
}

static int entry_score(const rdma_gid_entry *e, bool link_is_ib)
{
    return e->present ? rdma_gid_score(e->gid, e->type, e->netdev, link_is_ib) : -1;
}

int rdma_gid_best(const rdma_gid_entry *table, int n, bool link_is_ib)
{
    int best = -1, best_score = -1;
    for (int i = 0; table && i < n; i++) {
        int score = entry_score(&table[i], link_is_ib);
        if (score > best_score) {
            best_score = score;
            best = i;
        }
    }
    return best;
}

bool rdma_gid_reprobe_due(bool forced, int probes_done, int max_probes, int64_t last_ns,
                          int64_t now_ns)
{
    if (forced || probes_done >= max_probes)
        return false;
    return last_ns == 0 || now_ns - last_ns >= RDMA_GID_PROBE_INTERVAL_NS;
}

int rdma_gid_reprobe_pick(int old_index, const rdma_gid_entry *table, int n, bool link_is_ib)
{
    int best = rdma_gid_best(table, n, link_is_ib);
    if (best < 0 || best == old_index)
        return old_index;
    int old_score = old_index >= 0 && old_index < n ? entry_score(&table[old_index], link_is_ib)
                                                    : -1;
    /* An equal score is no reason to move (and to make peers reconnect). */
    return entry_score(&table[best], link_is_ib) > old_score ? best : old_index;
}

int rdma_evict_pick(rdma_evict_ep *eps, int n, int *hand)
{
    bool any = false;
    for (int i = 0; i < n && !any; i++)
        any = eps[i].has_qps && eps[i].idle;
    if (!any)
        return -1;
    int h = *hand >= 0 && *hand < n ? *hand : 0;
    for (int step = 0; step < 2 * n; step++, h = (h + 1) % n) {
        rdma_evict_ep *e = &eps[h];
        if (!e->has_qps || !e->idle)
            continue;
        if (e->visited) {
            e->visited = false; /* second chance */
            continue;
        }
        *hand = (h + 1) % n;
        return h;
    }
    return -1; /* not reached: an idle entry is unvisited on the second round */
}
