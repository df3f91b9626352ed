/* tcp_lane.c - the initiator's peers (tcp_lane.h has the design): a peer is
 * made with its lanes (and rails) and freed by the core; a submit's slices
 * are encoded and spread in runs over the lanes, or, with several rails, over
 * the rail whose queue drains first; the slices of a failed lane move to the
 * other rails; every slice leaves the transport through here. */
#include <stdio.h>
#include <stdlib.h>

#include "tcp_lane.h"

/* Chunks of staged GPU memory go back to tcp_cuda.c, the rest to the core. */
void tcp_slice_finish(tcp_transport *t, te_slice *s, int status)
{
    if (tcp_is_fence(s))
        free(s); /* the writes it fenced are reported on their own */
    else if (tcp_cuda_is_shadow(s))
        tcp_cuda_shadow_done(s, status);
    else
        te_host_table->slice_done(t->host, s, status);
}

void tcp_lane_complete(lane *l, te_slice *s, int status)
{
    if (!tcp_is_fence(s)) /* no rail counted it as sent */
        rail_done(l->peer, l->rail, s, status == 0);
    tcp_slice_finish(l->peer->t, s, status);
}

void tcp_peer_unref(tcp_peer *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    for (int i = 0; i < p->nlanes; i++)
        pthread_mutex_destroy(&p->lanes[i].lock); /* threads closed their efds */
    for (int i = 0; i < p->nrails; i++)
        tcp_rail_destroy(&p->rails[i]);
    free(p);
}

/* Lanes per rail: MC_TCP_LANES_PER_PEER each, fewer when the rails would
 * need more than TCP_MAX_LANES. */
static void plan_rails(tcp_peer *p, const tcp_rail_spec *rails, int nrails)
{
    p->nrails = nrails < TCP_MAX_RAILS ? nrails : TCP_MAX_RAILS;
    int per = p->t->lanes_per_peer;
    if (p->nrails > 0 && per * p->nrails > TCP_MAX_LANES)
        per = TCP_MAX_LANES / p->nrails > 0 ? TCP_MAX_LANES / p->nrails : 1;
    p->lanes_per_rail = per;
    p->nlanes = p->nrails > 0 ? per * p->nrails : per;
    for (int i = 0; i < p->nrails; i++)
        tcp_rail_init(&p->rails[i], &rails[i]);
}

tcp_peer *tcp_peer_new(tcp_transport *t, const char *host, uint16_t port, bool v2)
{
    return tcp_peer_new_rails(t, host, port, v2, NULL, 0);
}

tcp_peer *tcp_peer_new_rails(tcp_transport *t, const char *host, uint16_t port, bool v2,
                             const tcp_rail_spec *rails, int nrails)
{
    tcp_peer *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->t = t;
    snprintf(p->host, sizeof p->host, "%s", host);
    p->port = port;
    p->v2 = v2;
    plan_rails(p, rails, nrails);
    atomic_init(&p->refs, 1);
    for (int i = 0; i < p->nlanes; i++) {
        lane *l = &p->lanes[i];
        l->peer = p;
        l->rail = p->nrails > 0 ? i / p->lanes_per_rail : 0;
        l->fd = -1;
        l->efd = -1; /* made with the thread, on first use */
        l->pipe[0] = l->pipe[1] = -1;
        pthread_mutex_init(&l->lock, NULL);
    }
    return p;
}

/* Called by the core once no slice uses the peer (possibly from one of its
 * own lane threads, inside slice_done): lanes stop on their own. */
void tcp_peer_free(tcp_peer *p)
{
    for (int i = 0; i < p->nlanes; i++) {
        lane *l = &p->lanes[i];
        pthread_mutex_lock(&l->lock);
        l->stop = true;
        tcp_lane_wake(l);
        pthread_mutex_unlock(&l->lock);
    }
    tcp_peer_unref(p);
}

/* Hands a run of encoded slices to a lane (starting its thread on first
 * use); if the thread cannot start they fail. */
static void queue_run(tcp_peer *p, lane *l, slist *run)
{
    pthread_mutex_lock(&l->lock);
    int rc = l->started || l->waiting ? 0 : tcp_lane_start(l);
    if (!rc) {
        bool was_empty = !l->queued.head;
        slist_append(&l->queued, run);
        if (was_empty)
            tcp_lane_wake(l); /* under the lock: the thread cannot retire meanwhile */
    }
    pthread_mutex_unlock(&l->lock);
    if (rc) {
        tcp_lane_pass_slot(p->t);
        te_slice *s;
        while ((s = slist_pop(run))) {
            rail_done(p, l->rail, s, false);
            tcp_slice_finish(p->t, s, rc);
        }
        return;
    }
}

/* How many lanes a submit's slices stripe over: all n, but each run at least
 * MC_TCP_LANE_MIN_BYTES.  A run costs about four thread wake-ups whatever
 * its size (the lane, the target's loop, the lane again, the waiter), so a
 * small batch moves faster on one lane; submits from several threads still
 * spread, since each starts at the next lane. */
static size_t lanes_for(const tcp_peer *p, int n, const slist *list)
{
    uint64_t min = p->t->lane_min_bytes, bytes = 0;
    for (const te_slice *s = list->head; min && s && bytes < min * (uint64_t)n; s = NEXT(s))
        bytes += s->length;
    uint64_t runs = min ? bytes / min : (uint64_t)n;
    return runs < 1 ? 1 : runs < (uint64_t)n ? (size_t)runs : (size_t)n;
}

/* Consecutive slices go to one lane in runs, so small requests batch and
 * large requests (many slices) stripe over the lanes of lanes[0..n). */
static void spread(tcp_peer *p, lane *lanes, int n, slist *list, size_t count, unsigned first)
{
    size_t runs = lanes_for(p, n, list);
    size_t per_lane = (count + runs - 1) / runs;
    for (unsigned k = 0; list->head; k++) {
        slist run = {0};
        for (size_t i = 0; i < per_lane && list->head; i++)
            slist_push(&run, slist_pop(list));
        queue_run(p, &lanes[(first + k) % (unsigned)n], &run);
    }
}

static lane *rail_lanes(tcp_peer *p, int rail)
{
    return &p->lanes[rail * p->lanes_per_rail];
}

/* Each rail's share of slices, spread over that rail's lanes. */
static void spread_rails(tcp_peer *p, slist *per, const size_t *n)
{
    for (int r = 0; r < p->nrails; r++)
        if (n[r])
            spread(p, rail_lanes(p, r), p->lanes_per_rail, &per[r], n[r],
                   atomic_fetch_add(&p->next_lane, 1));
}

/* Slices of a failed lane of rail `from` go to the other rails, unless their
 * deadline passed or no other rail is usable: then they fail with status. */
void tcp_peer_redistribute(tcp_peer *p, int from, slist *moved, int status)
{
    slist per[TCP_MAX_RAILS] = {{0}};
    size_t n[TCP_MAX_RAILS] = {0};
    int64_t now = te_host_table->now_ns();
    te_slice *s;
    while ((s = slist_pop(moved))) {
        if (tcp_is_fence(s)) { /* the writes it fenced get one where they go */
            free(s);
            continue;
        }
        rail_done(p, from, s, false);
        int r = s->deadline_ns && now >= s->deadline_ns
                    ? -1
                    : tcp_rail_pick(p->rails, p->nrails, s->length, now, from);
        if (r < 0) {
            tcp_slice_finish(p->t, s, status);
            continue;
        }
        tcp_rail_sent(&p->rails[r], s->length, now);
        te_host_table->metric_add(p->t->host, TE_METRIC_RETRIES, 1);
        slist_push(&per[r], s);
        n[r]++;
    }
    spread_rails(p, per, n);
}

/* Several rails: each slice to the rail whose queue drains first. */
static void submit_rails(tcp_peer *p, te_slice *const *slices, size_t count)
{
    slist per[TCP_MAX_RAILS] = {{0}};
    size_t n[TCP_MAX_RAILS] = {0};
    int64_t now = te_host_table->now_ns();
    for (size_t i = 0; i < count; i++) {
        te_slice *s = slices[i];
        int r = tcp_rail_pick(p->rails, p->nrails, s->length, now, -1);
        tcp_rail_sent(&p->rails[r], s->length, now);
        if (count == 1 && tcp_lane_drive_first_idle(p, rail_lanes(p, r), p->lanes_per_rail, s))
            return;
        tcp_lane_encode(p, s);
        slist_push(&per[r], s);
        n[r]++;
    }
    spread_rails(p, per, n);
}

int tcp_peer_submit_host(tcp_peer *p, te_slice *const *slices, size_t count)
{
    if (multi_rail(p)) {
        submit_rails(p, slices, count);
        return 0;
    }
    if (count == 1 && tcp_lane_drive_first_idle(p, p->lanes, p->nlanes, slices[0]))
        return 0;
    unsigned first = atomic_fetch_add(&p->next_lane, 1);
    slist all = {0};
    for (size_t i = 0; i < count; i++) {
        tcp_lane_encode(p, slices[i]);
        slist_push(&all, slices[i]);
    }
    spread(p, p->lanes, p->nlanes, &all, count, first);
    return 0;
}

/* Slices of GPU memory are staged through pinned host buffers (tcp_cuda.c);
 * a process without CUDA costs one check per call. */
int tcp_peer_submit(tcp_peer *p, te_slice *const *slices, size_t count)
{
    if (!tcp_cuda_possible())
        return tcp_peer_submit_host(p, slices, count);
    size_t start = 0;
    for (size_t i = 0; i < count; i++) {
        int dev = tcp_cuda_device(slices[i]->local);
        if (dev < 0)
            continue;
        if (i > start)
            tcp_peer_submit_host(p, slices + start, i - start);
        tcp_cuda_stage(p->t, p, slices[i], dev);
        start = i + 1;
    }
    return start < count ? tcp_peer_submit_host(p, slices + start, count - start) : 0;
}
