/* endpoint.c - endpoints (one per local NIC and peer NIC path) and their RC
 * QPs, set up by the original's handshake JSON on RPC type 0: the active
 * side runs in a small pool of handshake threads (never in a CQ poller, never
 * in a submitter), the passive side in the core's RPC handler. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rdma.h"

/* ---- the endpoint table -------------------------------------------------------- */

static unsigned path_hash(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % RDMA_EP_BUCKETS;
}

static rdma_ep *find_locked(rdma_ctx *ctx, unsigned b, const char *peer_path)
{
    rdma_ep *ep = ctx->eps[b];
    while (ep && strcmp(ep->peer_path, peer_path))
        ep = ep->hnext;
    return ep;
}

rdma_ep *rdma_ep_find(rdma_ctx *ctx, const char *peer_path)
{
    unsigned b = path_hash(peer_path);
    pthread_mutex_lock(&ctx->ep_lock);
    rdma_ep *ep = find_locked(ctx, b, peer_path);
    pthread_mutex_unlock(&ctx->ep_lock);
    return ep;
}

/* Room for one more endpoint in ctx->ring (ep_lock held). */
static bool ring_grow_locked(rdma_ctx *ctx)
{
    if (ctx->ep_count < ctx->ring_cap)
        return true;
    int cap = ctx->ring_cap ? ctx->ring_cap * 2 : 16;
    rdma_ep **ring = realloc(ctx->ring, (size_t)cap * sizeof *ring);
    if (!ring)
        return false;
    ctx->ring = ring;
    ctx->ring_cap = cap;
    return true;
}

/* The endpoint of a path, made on first use.  Structs are not capped (they
 * hold no NIC resources and live until destroy); MC_MAX_EP_PER_CTX bounds
 * the endpoints holding QPs (qp_slot_take_locked). */
rdma_ep *rdma_ep_get(rdma_ctx *ctx, const char *peer_path, int *err)
{
    unsigned b = path_hash(peer_path);
    pthread_mutex_lock(&ctx->ep_lock);
    rdma_ep *ep = find_locked(ctx, b, peer_path);
    if (!ep && strlen(peer_path) < RDMA_PATH_MAX && ring_grow_locked(ctx) &&
        (ep = calloc(1, sizeof *ep))) {
        ep->ctx = ctx;
        snprintf(ep->peer_path, sizeof ep->peer_path, "%s", peer_path);
        ep->loopback = !strcmp(peer_path, ctx->nic_path);
        pthread_mutex_init(&ep->lock, NULL);
        ep->hnext = ctx->eps[b];
        ctx->eps[b] = ep;
        ctx->ring[ctx->ep_count++] = ep;
    } else if (!ep) {
        *err = TE_ERR_MEMORY;
    }
    pthread_mutex_unlock(&ctx->ep_lock);
    return ep;
}

/* ---- QPs ------------------------------------------------------------------------ */

void rdma_qp_destroy(rdma_qp *q)
{
    if (q->qp)
        ibv_destroy_qp(q->qp);
    free(q);
}

static rdma_qp *qp_create(rdma_ep *ep)
{
    rdma_ctx *c = ep->ctx;
    rdma_qp *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->ep = ep;
    q->cq = &c->cqs[atomic_fetch_add(&c->next_cq, 1) % (unsigned)c->ncq];
    struct ibv_qp_init_attr ia = {
        .send_cq = q->cq->cq, .recv_cq = q->cq->cq, .qp_type = IBV_QPT_RC,
        .cap = {.max_send_wr = (uint32_t)c->max_wr, .max_recv_wr = 1,
                .max_send_sge = (uint32_t)c->max_sge, .max_recv_sge = 1,
                .max_inline_data = (uint32_t)c->max_inline}};
    q->qp = ibv_create_qp(c->pd, &ia);
    if (!q->qp && c->max_inline) { /* some providers refuse inline data */
        ia.cap.max_inline_data = 0;
        q->qp = ibv_create_qp(c->pd, &ia);
    }
    /* The provider reports what it granted; never inline more than asked. */
    q->max_inline = (int)ia.cap.max_inline_data < c->max_inline ? (int)ia.cap.max_inline_data
                                                                 : c->max_inline;
    if (!q->qp) {
        free(q);
        return NULL;
    }
    return q;
}

/* ---- the QP cap (MC_MAX_EP_PER_CTX) --------------------------------------------------- */

/* Whether ep's QPs can go without anyone noticing (ep->lock held): nothing
 * waits, nothing is on the wire (so no WR can complete on them), no
 * handshake is queued, running or waiting for the peer's ack.  Our own
 * ready_ack round may still be in flight: that ack names the old QPs, which
 * the peer accepts or rejects as stale, and hs_done re-kicks new work. */
static bool ep_idle_locked(const rdma_ep *ep)
{
    if (!ep->qps || ep->pending.count || ep->posted.count)
        return false;
    for (int i = 0; i < ep->nqp; i++)
        if (ep->qps[i] && ep->qps[i]->outstanding) /* a probe, with successes held */
            return false;
    if (ep->state == EP_READY)
        return !ep->hs_queued || ep->hs_acking;
    return ep->state == EP_IDLE && !ep->hs_queued;
}

static void qps_retire_locked(rdma_ep *ep);

/* Retires the QPs of one idle endpoint of ctx other than `self` (ctx->ep_lock
 * held, self->lock held).  Other endpoints are only try-locked, so the lock
 * order (an endpoint, then its context's table) cannot deadlock; one that is
 * locked right now counts as busy, and when nothing else is idle the table
 * is read again after 100 us (4 reads at most).  True when a slot was freed. */
static bool evict_one_locked(rdma_ctx *ctx, rdma_ep *self)
{
    int n = ctx->ep_count;
    rdma_evict_ep *st = malloc((size_t)n * (sizeof *st + 1));
    if (!st)
        return false;
    bool *was = (bool *)(st + n); /* visited as read, to write back only what the hand cleared */
    for (int round = 0; round < 4; round++) {
        bool contended = false; /* an endpoint with QPs was locked (a completion refill, ...) */
        for (int i = 0; i < n; i++) {
            rdma_ep *ep = ctx->ring[i];
            st[i] = (rdma_evict_ep){.has_qps = ep != self && atomic_load(&ep->has_qps),
                                    .visited = atomic_load(&ep->visited)};
            was[i] = st[i].visited;
            if (st[i].has_qps && !pthread_mutex_trylock(&ep->lock)) {
                st[i].idle = ep_idle_locked(ep);
                pthread_mutex_unlock(&ep->lock);
            } else if (st[i].has_qps) {
                contended = true;
            }
        }
        int hand = ctx->ep_hand, v = rdma_evict_pick(st, n, &hand);
        if (v < 0 && !contended)
            break;
        if (v < 0) { /* such locks are held briefly: look again shortly */
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
            continue;
        }
        ctx->ep_hand = hand;
        for (int i = 0; i < n; i++)
            if (was[i] && !st[i].visited)
                atomic_store(&ctx->ring[i]->visited, false);
        rdma_ep *victim = ctx->ring[v];
        if (pthread_mutex_trylock(&victim->lock))
            continue; /* became busy meanwhile: look again */
        bool idle = atomic_load(&victim->has_qps) && ep_idle_locked(victim);
        if (idle) {
            RLOG(ctx->inst, TE_LOG_INFO,
                 "endpoint %s -> %s: QPs retired (idle; MC_MAX_EP_PER_CTX=%d reached) to connect "
                 "%s; it re-handshakes on its next use",
                 ctx->nic_path, victim->peer_path, ctx->inst->cfg.max_ep, self->peer_path);
            qps_retire_locked(victim); /* nothing outstanding: destroyed now */
            victim->state = EP_IDLE;
        }
        pthread_mutex_unlock(&victim->lock);
        if (idle) {
            free(st);
            return true;
        }
    }
    free(st);
    return false;
}

/* Counts ep among the endpoints holding QPs (ep->lock held, ep holds none),
 * retiring an idle endpoint's QPs when the context is at the cap.
 * 0, or TE_ERR_ENDPOINT when every endpoint with QPs is busy. */
static int qp_slot_take_locked(rdma_ep *ep)
{
    rdma_ctx *ctx = ep->ctx;
    int cap = ctx->inst->cfg.max_ep, held;
    pthread_mutex_lock(&ctx->ep_lock); /* serializes takers: the cap is never passed */
    bool ok = (held = atomic_load(&ctx->qp_eps)) < cap || evict_one_locked(ctx, ep);
    if (ok) {
        atomic_fetch_add(&ctx->qp_eps, 1);
        atomic_store(&ep->has_qps, true);
        atomic_store(&ep->visited, true); /* a new connection gets its second chance */
    }
    pthread_mutex_unlock(&ctx->ep_lock);
    ep->cap_refused = !ok;
    if (!ok)
        return rdma_fail(TE_ERR_ENDPOINT,
                         "%s -> %s: %d endpoints of this NIC hold QPs (MC_MAX_EP_PER_CTX=%d) and "
                         "none is idle; not connecting",
                         ctx->nic_path, ep->peer_path, held, cap);
    return 0;
}

static void qp_slot_give_locked(rdma_ep *ep)
{
    if (atomic_load(&ep->has_qps)) {
        atomic_store(&ep->has_qps, false);
        atomic_fetch_sub(&ep->ctx->qp_eps, 1);
    }
}

/* Creates ep->nqp fresh QPs (ep->lock held).  0 or TE_ERR_ENDPOINT. */
static int qps_create_locked(rdma_ep *ep)
{
    int n = ep->ctx->inst->cfg.num_qp;
    int rc = qp_slot_take_locked(ep);
    if (rc)
        return rc;
    ep->qps = calloc((size_t)n, sizeof *ep->qps);
    if (!ep->qps) {
        qp_slot_give_locked(ep);
        return TE_ERR_MEMORY;
    }
    ep->nqp = n;
    ep->gen++;
    ep->connected = false;
    for (int i = 0; i < n; i++)
        if (!(ep->qps[i] = qp_create(ep))) {
            return rdma_fail(TE_ERR_ENDPOINT, "ibv_create_qp on %s failed: %s", ep->ctx->name,
                             strerror(errno));
        }
    return 0;
}

/* Moves the current QPs out: each goes to ERR (its WRs flush back through the
 * CQ) and is destroyed once nothing is outstanding on it. */
static void qps_retire_locked(rdma_ep *ep)
{
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR};
    for (int i = 0; i < ep->nqp; i++) {
        rdma_qp *q = ep->qps[i];
        if (!q)
            continue;
        q->retired = true;
        if (q->outstanding == 0) {
            rdma_qp_destroy(q);
            continue;
        }
        ibv_modify_qp(q->qp, &a, IBV_QP_STATE);
        q->next = ep->retired;
        ep->retired = q;
    }
    free(ep->qps);
    ep->qps = NULL;
    ep->nqp = 0;
    ep->connected = false;
    ep->gen++;
    qp_slot_give_locked(ep);
}

static int qp_to_init(rdma_ctx *c, struct ibv_qp *qp)
{
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT, .port_num = c->port,
                            .pkey_index = (uint16_t)c->inst->cfg.pkey_index,
                            .qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                               IBV_ACCESS_REMOTE_READ};
    return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                     IBV_QP_ACCESS_FLAGS);
}

static int qp_to_rtr(rdma_ctx *c, struct ibv_qp *qp, uint32_t dest, const uint8_t gid[16],
                     uint16_t lid, int sgid_index)
{
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_RTR, .path_mtu = c->mtu, .dest_qp_num = dest,
                            .rq_psn = 0, .max_dest_rd_atomic = (uint8_t)c->max_rd_atomic,
                            .min_rnr_timer = 12};
    a.ah_attr.is_global = 1;
    memcpy(a.ah_attr.grh.dgid.raw, gid, 16);
    a.ah_attr.grh.sgid_index = (uint8_t)sgid_index;
    a.ah_attr.grh.hop_limit = 16;
    a.ah_attr.grh.traffic_class = (uint8_t)c->inst->cfg.traffic_class;
    a.ah_attr.sl = (uint8_t)c->inst->cfg.service_level;
    a.ah_attr.dlid = lid;
    a.ah_attr.port_num = c->port;
    return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                     IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
                                     IBV_QP_MIN_RNR_TIMER);
}

static int qp_to_rts(rdma_ctx *c, struct ibv_qp *qp)
{
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_RTS, .timeout = 14,
                            .retry_cnt = (uint8_t)c->qp_retry_cnt,
                            .rnr_retry = 7, .sq_psn = 0,
                            .max_rd_atomic = (uint8_t)c->max_rd_atomic};
    return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                     IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

/* Connects the current QPs to the peer's (ep->lock held), from our GID
 * index sgid_index: the one whose GID the same handshake sends.  0 or
 * TE_ERR_ENDPOINT. */
static int qps_connect_locked(rdma_ep *ep, const uint32_t *peer_qpn, const uint8_t gid[16],
                              uint16_t lid, int sgid_index)
{
    rdma_ctx *c = ep->ctx;
    for (int i = 0; i < ep->nqp; i++) {
        struct ibv_qp *qp = ep->qps[i]->qp;
        int step = qp_to_init(c, qp) ? 1 : qp_to_rtr(c, qp, peer_qpn[i], gid, lid, sgid_index) ? 2
                                       : qp_to_rts(c, qp)                           ? 3
                                                                                    : 0;
        if (step)
            return rdma_fail(TE_ERR_ENDPOINT, "%s -> %s: modifying QP %u to %s failed: %s",
                             c->nic_path, ep->peer_path, qp->qp_num,
                             step == 1 ? "INIT" : step == 2 ? "RTR" : "RTS", strerror(errno));
    }
    memcpy(ep->peer_qpn, peer_qpn, (size_t)ep->nqp * sizeof *peer_qpn);
    ep->connected = true;
    return 0;
}

static bool same_qpns(const rdma_ep *ep, const uint32_t *qpn, int n)
{
    return ep->connected && n == ep->nqp &&
           !memcmp(ep->peer_qpn, qpn, (size_t)n * sizeof *qpn);
}

/* ---- state changes ---------------------------------------------------------------- */

void rdma_rail_failed(rdma_ep *ep, const char *why)
{
    rdma_inst *in = ep->ctx->inst;
    if (atomic_load(&in->stopping) ||
        !rdma_rail_error(&ep->rail, te_host_table->now_ns(),
                         (int64_t)in->cfg.rail_pause_s * 1000000000))
        return;
    RLOG(in, TE_LOG_WARN,
         "rail %s -> %s paused for %d s after %d consecutive errors (last: %s); other rails to "
         "the peer are used meanwhile",
         ep->ctx->name, ep->peer_path, in->cfg.rail_pause_s, RDMA_RAIL_ERROR_THRESHOLD, why);
    if (TE_HOST_HAS(te_host_table, metric_add)) /* a 1.0 core ignores the new counter */
        te_host_table->metric_add(in->host, TE_METRIC_RAIL_PAUSES, 1);
}

void rdma_ep_reset_locked(rdma_ep *ep, const char *why)
{
    rdma_inst *in = ep->ctx->inst;
    if (ep->qps || ep->state != EP_IDLE)
        RLOG(in, atomic_load(&in->stopping) ? TE_LOG_DEBUG : TE_LOG_WARN,
             "endpoint %s -> %s reset: %s", ep->ctx->nic_path, ep->peer_path, why);
    qps_retire_locked(ep);
    if (ep->state != EP_CONNECTING)
        ep->state = EP_IDLE;
    if (ep->pending.count)
        rdma_ep_kick_locked(ep);
}

/* Queues a handshake for an idle endpoint with work waiting (ep->lock held). */
void rdma_ep_kick_locked(rdma_ep *ep)
{
    rdma_inst *in = ep->ctx->inst;
    if (ep->state != EP_IDLE || ep->hs_queued || atomic_load(&in->stopping))
        return;
    ep->state = EP_CONNECTING;
    ep->hs_queued = true;
    pthread_mutex_lock(&in->hs_lock);
    ep->hs_next = NULL;
    if (in->hs_tail)
        in->hs_tail->hs_next = ep;
    else
        in->hs_head = ep;
    in->hs_tail = ep;
    pthread_cond_signal(&in->hs_cond);
    pthread_mutex_unlock(&in->hs_lock);
}

static void ep_set_ready_locked(rdma_ep *ep, slice_list *failed)
{
    ep->state = EP_READY;
    rdma_ep_post_locked(ep, failed, RDMA_POST_KICK);
}

/* ---- the active side ------------------------------------------------------------------ */

static void fill_msg(rdma_ep *ep, rdma_hs_msg *m, bool ack, const rdma_gid_sel *sel)
{
    memset(m, 0, sizeof *m);
    snprintf(m->local_nic_path, sizeof m->local_nic_path, "%s", ep->ctx->nic_path);
    snprintf(m->peer_nic_path, sizeof m->peer_nic_path, "%s", ep->peer_path);
    m->local_lid = ep->ctx->lid;
    memcpy(m->local_gid, sel->gid, 16);
    m->nqp = ep->nqp;
    for (int i = 0; i < ep->nqp; i++)
        m->qp_num[i] = ep->qps[i]->qp->qp_num;
    m->ready_ack = ack;
}

/* One exchange with the peer's RPC port; the reply is decoded into *r. */
static int hs_call(rdma_ep *ep, const rdma_hs_msg *m, const char *host, uint16_t port,
                   rdma_hs_msg *r)
{
    rdma_inst *in = ep->ctx->inst;
    char *req = NULL, *reply = NULL, err[256] = "";
    size_t reply_len = 0;
    int rc = rdma_hs_encode(m, &req);
    if (!rc)
        rc = te_host_table->rpc_call(in->host, host, port, TE_RPC_CONNECTION, req, strlen(req),
                                     &reply, &reply_len, in->cfg.handshake_ms);
    free(req);
    if (rc) {
        free(reply);
        return rdma_fail(rc, "handshake with %s at %s:%u failed (status %d)", ep->peer_path, host,
                         port, rc);
    }
    rc = rdma_hs_decode(reply, reply_len, r, err, sizeof err);
    free(reply);
    if (rc)
        return rdma_fail(rc, "handshake reply from %s:%u: %s", host, port, err);
    if (r->reply_msg[0])
        return rdma_fail(TE_ERR_REJECT_HANDSHAKE, "%s rejected the handshake: %s", ep->peer_path,
                         r->reply_msg);
    return 0;
}

static int check_reply(rdma_ep *ep, const rdma_hs_msg *r)
{
    if (strcmp(r->local_nic_path, ep->peer_path) || r->nqp != ep->nqp)
        return rdma_fail(TE_ERR_REJECT_HANDSHAKE,
                         "handshake reply names %s with %d QPs; expected %s with %d",
                         r->local_nic_path, r->nqp, ep->peer_path, ep->nqp);
    return 0;
}

/* After the reply: connect our QPs unless the passive path already did
 * (simultaneous connects from both sides), then mark ready. */
static int finish_active_locked(rdma_ep *ep, uint32_t gen, const rdma_hs_msg *r,
                                const rdma_gid_sel *sel, slice_list *failed)
{
    if (ep->gen != gen || !ep->qps)
        return rdma_fail(TE_ERR_ENDPOINT, "endpoint %s changed during the handshake",
                         ep->peer_path);
    int rc = 0;
    if (!ep->connected)
        rc = qps_connect_locked(ep, r->qp_num, r->local_gid, r->local_lid, sel->index);
    else if (!same_qpns(ep, r->qp_num, r->nqp))
        rc = rdma_fail(TE_ERR_ENDPOINT, "crossed handshakes with %s disagree", ep->peer_path);
    if (!rc) {
        ep_set_ready_locked(ep, failed);
        ep->hs_acking = true; /* only the ready_ack round is left */
    }
    return rc;
}

/* Prepares QPs (ep->lock held).  Returns 1 when nothing is left to do:
 * loopback endpoints connect to themselves, and an endpoint the passive side
 * connected meanwhile only waits for its ack. */
static int prepare_locked(rdma_ep *ep, int *rc, slice_list *failed)
{
    *rc = 0;
    if (ep->connected) {
        if (ep->state == EP_CONNECTING) {
            ep->state = EP_WAIT_ACK;
            ep->wait_ack_since = te_host_table->now_ns();
        }
        return 1;
    }
    if (!ep->qps)
        *rc = qps_create_locked(ep);
    if (!*rc && ep->loopback) {
        uint32_t self[RDMA_MAX_QP];
        for (int i = 0; i < ep->nqp; i++)
            self[i] = ep->qps[i]->qp->qp_num;
        rdma_gid_sel sel = rdma_ctx_gid(ep->ctx);
        *rc = qps_connect_locked(ep, self, sel.gid, ep->ctx->lid, sel.index);
        if (!*rc)
            ep_set_ready_locked(ep, failed);
        return 1;
    }
    return *rc ? 1 : 0;
}

/* Runs one active handshake; 0 when the endpoint is usable (or waits for
 * its ack).  On failure the caller fails or reroutes the pending slices. */
static int connect_active(rdma_ep *ep, slice_list *failed)
{
    rdma_hs_msg m, r;
    char host[256];
    int rc;
    pthread_mutex_lock(&ep->lock);
    if (prepare_locked(ep, &rc, failed)) {
        pthread_mutex_unlock(&ep->lock);
        return rc;
    }
    uint32_t gen = ep->gen;
    uint16_t port = ep->rpc_port;
    snprintf(host, sizeof host, "%s", ep->rpc_host);
    rdma_gid_sel sel = rdma_ctx_gid(ep->ctx); /* sent now, connected with below */
    fill_msg(ep, &m, false, &sel);
    pthread_mutex_unlock(&ep->lock);

    rc = hs_call(ep, &m, host, port, &r);
    if (!rc)
        rc = check_reply(ep, &r);
    pthread_mutex_lock(&ep->lock);
    if (!rc)
        rc = finish_active_locked(ep, gen, &r, &sel, failed);
    pthread_mutex_unlock(&ep->lock);
    if (rc)
        return rc;
    m.ready_ack = true; /* second round; older peers may not answer it */
    if (hs_call(ep, &m, host, port, &r))
        RLOG(ep->ctx->inst, TE_LOG_DEBUG, "ready_ack to %s not acknowledged", ep->peer_path);
    return 0;
}

/* ---- the handshake threads ---------------------------------------------------------------- */

static rdma_ep *hs_pop(rdma_inst *in)
{
    pthread_mutex_lock(&in->hs_lock);
    while (!in->hs_head && !atomic_load(&in->stopping)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&in->hs_cond, &in->hs_lock, &ts);
    }
    rdma_ep *ep = in->hs_head;
    if (ep && !atomic_load(&in->stopping)) {
        in->hs_head = ep->hs_next;
        if (!in->hs_head)
            in->hs_tail = NULL;
    } else {
        ep = NULL;
    }
    pthread_mutex_unlock(&in->hs_lock);
    return ep;
}

static void hs_done(rdma_ep *ep, int rc)
{
    rdma_inst *in = ep->ctx->inst;
    slice_list failed = {0};
    pthread_mutex_lock(&ep->lock);
    ep->hs_queued = false;
    ep->hs_acking = false;
    if (rc && ep->state == EP_READY)
        rc = 0; /* the peer's own handshake connected us meanwhile */
    bool path_error = rc && !ep->cap_refused; /* the cap is no fault of the rail or GID */
    if (rc) {
        RLOG(in, TE_LOG_WARN, "handshake %s -> %s failed: %s", ep->ctx->nic_path, ep->peer_path,
             rdma_errmsg());
        if (path_error)
            rdma_rail_failed(ep, "handshake failed");
        ep->state = EP_IDLE;
        qps_retire_locked(ep);
        slice_list_append(&failed, &ep->pending);
    } else if (ep->state == EP_IDLE && ep->pending.count) {
        rdma_ep_kick_locked(ep); /* reset while we were busy: go again */
    }
    pthread_mutex_unlock(&ep->lock);
    if (path_error) /* our GID may have gone stale; before the retries handshake again */
        rdma_ctx_gid_reprobe(ep->ctx);
    rdma_retry_or_fail(in, &failed, rc ? rc : TE_ERR_ENDPOINT);
}

static void *hs_main(void *arg)
{
    rdma_inst *in = arg;
    rdma_ep *ep;
    while ((ep = hs_pop(in))) {
        slice_list failed = {0};
        int rc = connect_active(ep, &failed);
        rdma_retry_or_fail(in, &failed, TE_ERR_ENDPOINT);
        hs_done(ep, rc);
    }
    return NULL;
}

int rdma_handshake_start(rdma_inst *in)
{
    for (in->nhs = 0; in->nhs < RDMA_MAX_HS_THREADS; in->nhs++)
        if (pthread_create(&in->hs_threads[in->nhs], NULL, hs_main, in))
            break;
    return in->nhs ? 0 : rdma_fail(TE_ERR_MEMORY, "cannot start the handshake threads");
}

void rdma_handshake_stop(rdma_inst *in)
{
    pthread_mutex_lock(&in->hs_lock);
    pthread_cond_broadcast(&in->hs_cond);
    pthread_mutex_unlock(&in->hs_lock);
    for (int i = 0; i < in->nhs; i++)
        pthread_join(in->hs_threads[i], NULL);
    in->nhs = 0;
    /* Endpoints still queued: drop them; their slices are failed by destroy. */
    pthread_mutex_lock(&in->hs_lock);
    rdma_ep *ep = in->hs_head;
    in->hs_head = in->hs_tail = NULL;
    pthread_mutex_unlock(&in->hs_lock);
    while (ep) {
        rdma_ep *next = ep->hs_next;
        pthread_mutex_lock(&ep->lock);
        ep->hs_queued = false;
        ep->state = EP_IDLE;
        pthread_mutex_unlock(&ep->lock);
        ep = next;
    }
}

/* ---- the passive side (the core's RPC thread) ---------------------------------------------- */

static int reply_with(const rdma_hs_msg *m, char **reply, size_t *reply_len)
{
    int rc = rdma_hs_encode(m, reply);
    *reply_len = rc ? 0 : strlen(*reply);
    return rc ? -1 : 0;
}

static int reject(const char *why, char **reply, size_t *reply_len)
{
    rdma_hs_msg m = {0};
    snprintf(m.reply_msg, sizeof m.reply_msg, "%s", why);
    m.nqp = 0;
    return reply_with(&m, reply, reply_len);
}

/* Accepts a connection request on ep (ep->lock held): reuses QPs already
 * connected to the same peer QPs, replaces them when the peer's QPs changed
 * (a restarted peer), else connects the QPs we have or new ones. */
static int passive_connect_locked(rdma_ep *ep, const rdma_hs_msg *q, const rdma_gid_sel *sel)
{
    if (same_qpns(ep, q->qp_num, q->nqp))
        return 0; /* a repeated request */
    if (ep->connected) {
        RLOG(ep->ctx->inst, TE_LOG_INFO, "endpoint %s -> %s: the peer's QPs changed",
             ep->ctx->nic_path, ep->peer_path);
        qps_retire_locked(ep);
    }
    int rc = ep->qps ? 0 : qps_create_locked(ep);
    if (!rc)
        rc = qps_connect_locked(ep, q->qp_num, q->local_gid, q->local_lid, sel->index);
    if (rc) {
        qps_retire_locked(ep);
        return rc;
    }
    if (ep->state != EP_CONNECTING) { /* our own handshake thread finishes otherwise */
        ep->state = EP_WAIT_ACK;
        ep->wait_ack_since = te_host_table->now_ns();
    }
    return 0;
}

static int passive_locked(rdma_ep *ep, const rdma_hs_msg *q, rdma_hs_msg *out,
                          slice_list *failed)
{
    int rc = 0;
    rdma_gid_sel sel = rdma_ctx_gid(ep->ctx); /* connected with and sent back */
    if (q->ready_ack) {
        if (!same_qpns(ep, q->qp_num, q->nqp))
            return rdma_fail(TE_ERR_REJECT_HANDSHAKE, "stale ready_ack");
        if (ep->state == EP_WAIT_ACK || ep->state == EP_CONNECTING)
            ep_set_ready_locked(ep, failed);
    } else {
        rc = passive_connect_locked(ep, q, &sel);
    }
    if (!rc) {
        fill_msg(ep, out, q->ready_ack, &sel);
        snprintf(out->peer_nic_path, sizeof out->peer_nic_path, "%s", q->local_nic_path);
    }
    return rc;
}

static int on_connection(void *arg, const char *req, size_t req_len, char **reply,
                         size_t *reply_len)
{
    rdma_inst *in = arg;
    rdma_hs_msg q, out;
    char err[256], seg[RDMA_PATH_MAX], nic[RDMA_NAME_MAX];
    if (rdma_hs_decode(req, req_len, &q, err, sizeof err))
        return reject(err, reply, reply_len);
    if (q.reply_msg[0])
        return reject("a handshake request must not carry reply_msg", reply, reply_len);
    rdma_nic_path_split(q.peer_nic_path, seg, sizeof seg, nic, sizeof nic);
    int ci = rdma_ctx_find(in, nic);
    if (ci < 0 || atomic_load(&in->stopping))
        return snprintf(err, sizeof err, "no usable device %s here", nic),
               reject(err, reply, reply_len);
    if (q.nqp != in->cfg.num_qp)
        return snprintf(err, sizeof err, "%d QPs offered, this endpoint uses %d", q.nqp,
                        in->cfg.num_qp),
               reject(err, reply, reply_len);
    int rc = 0;
    rdma_ep *ep = rdma_ep_get(&in->ctxs[ci], q.local_nic_path, &rc);
    if (!ep)
        return reject("out of memory for a new endpoint", reply, reply_len);
    slice_list failed = {0};
    pthread_mutex_lock(&ep->lock);
    rc = passive_locked(ep, &q, &out, &failed);
    pthread_mutex_unlock(&ep->lock);
    rdma_retry_or_fail(in, &failed, TE_ERR_ENDPOINT);
    if (rc) {
        snprintf(err, sizeof err, "%s", rdma_errmsg());
        RLOG(in, TE_LOG_WARN, "handshake from %s refused: %s", q.local_nic_path, err);
        return reject(err, reply, reply_len);
    }
    return reply_with(&out, reply, reply_len);
}

int rdma_passive_install(rdma_inst *in)
{
    return te_host_table->rpc_set_handler(in->host, TE_RPC_CONNECTION, on_connection, in);
}

/* ---- teardown ---------------------------------------------------------------------------------- */

void rdma_eps_destroy(rdma_inst *in)
{
    for (int c = 0; c < in->nctx; c++) {
        rdma_ctx *ctx = &in->ctxs[c];
        for (int b = 0; b < RDMA_EP_BUCKETS; b++) {
            rdma_ep *ep = ctx->eps[b];
            while (ep) {
                rdma_ep *next = ep->hnext;
                for (int i = 0; i < ep->nqp; i++)
                    if (ep->qps[i])
                        rdma_qp_destroy(ep->qps[i]);
                free(ep->qps);
                while (ep->retired) {
                    rdma_qp *q = ep->retired;
                    ep->retired = q->next;
                    rdma_qp_destroy(q);
                }
                pthread_mutex_destroy(&ep->lock);
                free(ep);
                ep = next;
            }
            ctx->eps[b] = NULL;
        }
        free(ctx->ring);
        ctx->ring = NULL;
        ctx->ring_cap = ctx->ep_count = ctx->ep_hand = 0;
        atomic_store(&ctx->qp_eps, 0);
    }
}
