/* datapath.c - slices on the wire: routing over local and peer NICs, chained
 * RDMA WRITE/READ posts within per-QP and per-CQ limits, completion workers
 * that sleep on their completion channel, retries on other paths, and a
 * watchdog that fails slices past their deadline and resets their endpoint. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rdma.h"

#define POST_BATCH 32
#define POLL_BATCH 32
#define MAX_GROUPS 16
#define MAX_SLICE_LEN (1ull << 31)

/* ---- slice lists ------------------------------------------------------------------ */

#define NEXT(s) ((te_slice *)(s)->transport_data[0])
#define PREV(s) ((te_slice *)(s)->transport_data[1])

void slice_list_push(slice_list *l, te_slice *s)
{
    s->transport_data[0] = NULL;
    s->transport_data[1] = l->tail;
    if (l->tail)
        l->tail->transport_data[0] = s;
    else
        l->head = s;
    l->tail = s;
    l->count++;
}

void slice_list_remove(slice_list *l, te_slice *s)
{
    if (PREV(s))
        PREV(s)->transport_data[0] = NEXT(s);
    else
        l->head = NEXT(s);
    if (NEXT(s))
        NEXT(s)->transport_data[1] = PREV(s);
    else
        l->tail = PREV(s);
    s->transport_data[0] = s->transport_data[1] = NULL;
    l->count--;
}

te_slice *slice_list_pop(slice_list *l)
{
    te_slice *s = l->head;
    if (s)
        slice_list_remove(l, s);
    return s;
}

void slice_list_append(slice_list *dst, slice_list *src)
{
    if (!src->head)
        return;
    if (dst->tail) {
        dst->tail->transport_data[0] = src->head;
        src->head->transport_data[1] = dst->tail;
    } else {
        dst->head = src->head;
    }
    dst->tail = src->tail;
    dst->count += src->count;
    *src = (slice_list){0};
}

/* ---- reporting and retries ---------------------------------------------------------- */

void rdma_slice_finish(rdma_inst *in, te_slice *s, int status)
{
    memset(s->transport_data, 0, sizeof s->transport_data);
    atomic_fetch_sub(&in->held, 1);
    te_host_table->slice_done(in->host, s, status);
}

static bool retryable(int status)
{
    return status == TE_ERR_ENDPOINT || status == TE_ERR_SOCKET ||
           status == TE_ERR_PEER_CLOSED || status == TE_ERR_TIMEOUT ||
           status == TE_ERR_REJECT_HANDSHAKE;
}

static void route_list(rdma_inst *in, slice_list *list);

void rdma_retry_or_fail(rdma_inst *in, slice_list *list, int status)
{
    if (!list->count)
        return;
    slice_list again = {0};
    int64_t now = te_host_table->now_ns();
    uint64_t retried = 0;
    te_slice *s;
    while ((s = slice_list_pop(list))) {
        unsigned a = slice_attempt(s);
        if (retryable(status) && a < (unsigned)in->cfg.retry_cnt && now < s->deadline_ns &&
            !atomic_load(&in->stopping)) {
            slice_set_attempt(s, a + 1); /* keeps the rail it failed on */
            slice_list_push(&again, s);
            retried++;
        } else {
            rdma_slice_finish(in, s, now >= s->deadline_ns ? TE_ERR_TIMEOUT : status);
        }
    }
    if (retried && TE_HOST_HAS(te_host_table, metric_add))
        te_host_table->metric_add(in->host, TE_METRIC_RETRIES, retried);
    route_list(in, &again);
}

/* ---- posting -------------------------------------------------------------------------- */

/* Reserves up to `want` entries of a CQ; returns how many it got. */
static int cq_reserve(rdma_cq *cq, int want)
{
    int cur = atomic_load(&cq->outstanding), n;
    do {
        n = cq->capacity - cur < want ? cq->capacity - cur : want;
        if (n <= 0)
            return 0;
    } while (!atomic_compare_exchange_weak(&cq->outstanding, &cur, cur + n));
    return n;
}

static void build_wr(rdma_ep *ep, const rdma_qp *q, te_slice *s, struct ibv_send_wr *wr,
                     struct ibv_sge *sge)
{
    rdma_ctx *c = ep->ctx;
    rdma_mr *m = s->local_mr;
    bool write = s->opcode == TE_OP_WRITE;
    *sge = (struct ibv_sge){.addr = (uintptr_t)s->local, .length = (uint32_t)s->length,
                            .lkey = m->mrs[c->index]->lkey};
    *wr = (struct ibv_send_wr){.wr_id = (uintptr_t)s, .sg_list = sge, .num_sge = 1,
                               .opcode = write ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ,
                               .send_flags = IBV_SEND_SIGNALED};
    if (write && q->max_inline > 0 && s->length <= (uint64_t)q->max_inline)
        wr->send_flags |= IBV_SEND_INLINE;
    wr->wr.rdma.remote_addr = s->remote;
    wr->wr.rdma.rkey = slice_rkey(s);
}

/* Posts up to n pending slices on q as one chain (ep->lock held, n entries
 * of q's CQ reserved).  Returns how many went out; the rest of a failed
 * post go to `failed` and the endpoint is reset. */
static int post_chain(rdma_ep *ep, rdma_qp *q, int n, slice_list *failed)
{
    struct ibv_send_wr wr[POST_BATCH], *bad = NULL;
    struct ibv_sge sge[POST_BATCH];
    int k = 0;
    for (; k < n && ep->pending.count; k++) {
        te_slice *s = slice_list_pop(&ep->pending);
        build_wr(ep, q, s, &wr[k], &sge[k]);
        wr[k].next = NULL;
        if (k)
            wr[k - 1].next = &wr[k];
        s->transport_data[2] = q;
        slice_list_push(&ep->posted, s);
    }
    if (k < n)
        atomic_fetch_sub(&q->cq->outstanding, n - k);
    if (!k)
        return 0;
    q->outstanding += k;
    int rc = ibv_post_send(q->qp, wr, &bad);
    if (!rc)
        return k;
    /* WRs before *bad are queued; with no *bad the provider queued them all
     * and failed after (rxe: its doorbell).  Either way the reset below
     * flushes what is queued back through the CQ, once per WR. */
    int sent = bad ? (int)(bad - wr) : k;
    for (int j = sent; j < k; j++) {
        te_slice *s = (te_slice *)(uintptr_t)wr[j].wr_id;
        slice_list_remove(&ep->posted, s);
        s->transport_data[2] = NULL;
        slice_list_push(failed, s);
    }
    q->outstanding -= k - sent;
    atomic_fetch_sub(&q->cq->outstanding, k - sent);
    char why[96];
    snprintf(why, sizeof why, "ibv_post_send failed: %s", strerror(rc));
    rdma_rail_failed(ep, why);
    rdma_ep_reset_locked(ep, why);
    return sent;
}

void rdma_ep_post_locked(rdma_ep *ep, slice_list *failed, int per_qp)
{
    for (int k = 0; k < ep->nqp && ep->qps && ep->state == EP_READY && ep->pending.count; k++) {
        rdma_qp *q = ep->qps[(ep->next_qp + (unsigned)k) % (unsigned)ep->nqp];
        int budget = per_qp;
        while (budget > 0 && ep->pending.count) {
            int room = ep->ctx->max_wr - q->outstanding;
            room = room < POST_BATCH ? room : POST_BATCH;
            room = room < budget ? room : budget;
            room = room < (int)ep->pending.count ? room : (int)ep->pending.count;
            int n = room > 0 ? cq_reserve(q->cq, room) : 0;
            if (n <= 0)
                break; /* full: completions post the rest */
            int sent = post_chain(ep, q, n, failed);
            if (sent < n || !ep->qps)
                return; /* the endpoint was reset */
            budget -= sent;
        }
    }
    ep->next_qp++;
}

/* ---- routing ---------------------------------------------------------------------------- */

typedef struct ep_group {
    rdma_ep *ep;
    const rdma_peer *peer;
    slice_list list;
} ep_group;

static void enqueue_group(rdma_inst *in, ep_group *g)
{
    slice_list failed = {0};
    rdma_ep *ep = g->ep;
    pthread_mutex_lock(&ep->lock);
    snprintf(ep->rpc_host, sizeof ep->rpc_host, "%s", g->peer->rpc_host);
    ep->rpc_port = g->peer->rpc_port;
    slice_list_append(&ep->pending, &g->list);
    rdma_ep_touch(ep);
    if (ep->state == EP_READY)
        rdma_ep_post_locked(ep, &failed, RDMA_POST_KICK);
    else
        rdma_ep_kick_locked(ep);
    pthread_mutex_unlock(&ep->lock);
    rdma_retry_or_fail(in, &failed, TE_ERR_ENDPOINT);
}

/* The endpoint of a rail through the peer's cache (endpoint structs live
 * until destroy, even when the QP cap retires their QPs); with create, made
 * when there is none. */
static rdma_ep *rail_ep(rdma_inst *in, rdma_peer *p, int local, int dev, bool create, int *err)
{
    _Atomic(rdma_ep *) *slot = &p->eps[local * p->desc->ndev + dev];
    rdma_ep *ep = atomic_load_explicit(slot, memory_order_acquire);
    if (ep)
        return ep;
    ep = create ? rdma_ep_get(&in->ctxs[local], p->paths[dev], err)
                : rdma_ep_find(&in->ctxs[local], p->paths[dev]);
    if (ep)
        atomic_store_explicit(slot, ep, memory_order_release);
    return ep;
}

typedef struct rail_query {
    rdma_inst *in;
    rdma_peer *peer;
    int64_t now;
} rail_query;

static bool rail_paused(void *arg, int local, int dev)
{
    rail_query *q = arg;
    rdma_ep *ep = rail_ep(q->in, q->peer, local, dev, false, NULL);
    if (!ep)
        return false; /* never used: no errors */
    enum rdma_rail_state st = rdma_rail_check(&ep->rail, q->now);
    if (st == RDMA_RAIL_RESUMED)
        RLOG(q->in, TE_LOG_INFO, "rail %s -> %s is used again after its pause", ep->ctx->name,
             ep->peer_path);
    return st == RDMA_RAIL_PAUSED;
}

/* Picks the endpoint of one slice for its current attempt. */
static rdma_ep *route_one(rdma_inst *in, te_slice *s, int64_t now, int *err)
{
    rdma_peer *p = s->peer;
    const rdma_mr *m = s->local_mr;
    const rdma_peer_buf *b = &p->desc->bufs[s->remote_buffer];
    unsigned attempt = slice_attempt(s);
    rdma_path path, failed;
    bool retry = attempt > 0 && slice_rail(s, &failed.local, &failed.peer);
    rail_query q = {.in = in, .peer = p, .now = now};
    uint64_t seq = atomic_fetch_add(&in->seq, 1);
    bool up[RDMA_MAX_CTX];
    const bool *usable = in->usable;
    if (atomic_load_explicit(&in->ports_down, memory_order_relaxed) > 0) {
        for (int c = 0; c < in->nctx; c++)
            up[c] = in->usable[c] && !atomic_load(&in->ctxs[c].port_down);
        usable = up;
    }
    if (rdma_sched_path_rails(m->nics, m->nnics, m->npref, usable, b->nics, b->nnics,
                              b->npref, seq, attempt, retry ? &failed : NULL,
                              in->cfg.rail_pause_s ? rail_paused : NULL, &q, &path) ||
        path.local >= p->nctx) {
        *err = rdma_fail(TE_ERR_DEVICE_NOT_FOUND, "no usable NIC pair for this slice%s",
                         usable == up ? " (a port is down)" : "");
        return NULL;
    }
    slice_set_route(s, b->rkey[path.peer], attempt, path.local, path.peer);
    s->transport_data[2] = NULL;
    return rail_ep(in, p, path.local, path.peer, true, err);
}

static void flush_groups(rdma_inst *in, ep_group *g, int *n)
{
    for (int i = 0; i < *n; i++)
        enqueue_group(in, &g[i]);
    *n = 0;
}

/* Routes each slice and hands them to their endpoints, one lock and one
 * chained post per endpoint. */
static void route_list(rdma_inst *in, slice_list *list)
{
    ep_group groups[MAX_GROUPS];
    int ng = 0;
    int64_t now = te_host_table->now_ns();
    te_slice *s;
    while ((s = slice_list_pop(list))) {
        int err = 0;
        rdma_ep *ep = route_one(in, s, now, &err);
        if (!ep) {
            rdma_slice_finish(in, s, err ? err : TE_ERR_ENDPOINT);
            continue;
        }
        int i = 0;
        while (i < ng && groups[i].ep != ep)
            i++;
        if (i == ng && ng == MAX_GROUPS) {
            flush_groups(in, groups, &ng);
            i = 0;
        }
        if (i == ng)
            groups[ng++] = (ep_group){.ep = ep, .peer = s->peer};
        groups[i].peer = s->peer;
        slice_list_push(&groups[i].list, s);
    }
    flush_groups(in, groups, &ng);
}

/* ---- submit ------------------------------------------------------------------------------ */

static int check_slice(const te_slice *s)
{
    const rdma_peer *p = s->peer;
    const rdma_mr *m = s->local_mr;
    uintptr_t l = (uintptr_t)s->local, ml = (uintptr_t)(m ? m->addr : NULL);
    if ((s->opcode != TE_OP_READ && s->opcode != TE_OP_WRITE) || !p || s->length == 0 ||
        s->length > MAX_SLICE_LEN)
        return rdma_fail(TE_ERR_INVALID_ARGUMENT, "rdma: malformed slice");
    if (!m || l < ml || l + s->length > ml + m->length || l + s->length < l)
        return rdma_fail(TE_ERR_ADDRESS_NOT_REGISTERED,
                         "rdma: local range %p+%llu is not registered", s->local,
                         (unsigned long long)s->length);
    if (s->remote_buffer < 0 || (size_t)s->remote_buffer >= p->desc->nbuf)
        return rdma_fail(TE_ERR_ADDRESS_NOT_REGISTERED, "rdma: no such peer buffer");
    const rdma_peer_buf *b = &p->desc->bufs[s->remote_buffer];
    if (s->remote < b->addr || s->remote + s->length > b->addr + b->length ||
        s->remote + s->length < s->remote)
        return rdma_fail(TE_ERR_ADDRESS_NOT_REGISTERED,
                         "rdma: remote range 0x%llx+%llu is outside the peer's buffer",
                         (unsigned long long)s->remote, (unsigned long long)s->length);
    return 0;
}

int rdma_submit(void *inst, te_slice *const *slices, size_t count)
{
    rdma_inst *in = inst;
    if (atomic_load(&in->stopping))
        return rdma_fail(TE_ERR_STATE, "rdma: transport is shutting down");
    slice_list list = {0};
    atomic_fetch_add(&in->held, (long)count);
    for (size_t i = 0; i < count; i++) {
        te_slice *s = slices[i];
        memset(s->transport_data, 0, sizeof s->transport_data);
        int rc = check_slice(s);
        if (rc)
            rdma_slice_finish(in, s, rc);
        else
            slice_list_push(&list, s);
    }
    route_list(in, &list);
    rdma_watchdog_kick(in);
    return 0;
}

/* ---- completions ----------------------------------------------------------------------------- */

static int wc_status(enum ibv_wc_status st)
{
    switch (st) {
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_LOC_PROT_ERR:
    case IBV_WC_LOC_ACCESS_ERR:
        return TE_ERR_ADDRESS_NOT_REGISTERED; /* stale keys: the core refetches */
    case IBV_WC_REM_OP_ERR:
        return TE_ERR_REMOTE;
    case IBV_WC_REM_INV_REQ_ERR:
        /* Slices are checked against the peer's descriptor before they are
         * posted; soft-RoCE answers a message whose packets were lost on the
         * way (a link cut, drops) with this NAK: a path error, retried. */
        return TE_ERR_ENDPOINT;
    default:
        return TE_ERR_ENDPOINT; /* flushed, retries exhausted, ...: try another path */
    }
}

/* Whether q is alive (not retired, not in the error state): the last word
 * on held successes when no probe can be posted (ep->lock held). */
static bool qp_alive(rdma_qp *q)
{
    if (q->retired)
        return false;
    struct ibv_qp_attr a;
    struct ibv_qp_init_attr ia;
    if (ibv_query_qp(q->qp, &a, IBV_QP_STATE, &ia))
        return false;
    return a.qp_state != IBV_QPS_ERR && a.qp_state != IBV_QPS_SQE;
}

/* A probe's wr_id: its QP with the low bit set (slices and QPs are
 * malloc'd, so their addresses are even). */
#define PROBE_TAG 1u

/* Posts a probe on q (ep->lock held): a zero-length RDMA WRITE, signaled,
 * which the peer acknowledges without touching memory (IB C9-88: a
 * zero-byte operation needs no valid address or key).  False when it could
 * not be queued (no room on the CQ, the post refused). */
static bool post_probe(rdma_ep *ep, rdma_qp *q)
{
    if (cq_reserve(q->cq, 1) != 1)
        return false;
    const te_slice *s = q->held.tail;
    struct ibv_send_wr wr = {.wr_id = (uintptr_t)q | PROBE_TAG, .opcode = IBV_WR_RDMA_WRITE,
                             .send_flags = IBV_SEND_SIGNALED},
                       *bad = NULL;
    wr.wr.rdma.remote_addr = s->remote;
    wr.wr.rdma.rkey = slice_rkey(s);
    int rc = ibv_post_send(q->qp, &wr, &bad);
    if (rc && bad) {
        atomic_fetch_sub(&q->cq->outstanding, 1);
        return false;
    }
    q->outstanding++;
    if (rc) { /* queued, then the doorbell failed (see post_chain): it flushes back */
        char why[96];
        snprintf(why, sizeof why, "ibv_post_send failed: %s", strerror(rc));
        rdma_rail_failed(ep, why);
        rdma_ep_reset_locked(ep, why);
    }
    return true;
}

/* On soft-RoCE a success is reported only once a later completion of the
 * same QP is a success too (ep->lock held; s is on no list).  rdma_rxe
 * (Linux 6.1) completes the WR at the head of a QP with success status when
 * its completer rejects a response packet on its error path (rxe_comp.c,
 * COMPST_ERROR: a read reported done whose data never came), and moves the
 * QP to ERR right after, before it completes anything else.  So a later
 * success proves the earlier ones, whether or not it is genuine itself; a
 * later error (a flush, also on a QP we reset) leaves them unproven, and
 * they are moved again, which for a genuine one is harmless.  A QP with
 * nothing else on the wire gets a probe to complete after them; where none
 * can be posted, the QP's state decides: `proven` or `unproven` gets them
 * now. */
static void hold_for_proof(rdma_ep *ep, rdma_qp *q, te_slice *s, slice_list *proven,
                           slice_list *unproven)
{
    slice_list_push(&q->held, s);
    if (q->outstanding == 0 && !post_probe(ep, q))
        slice_list_append(qp_alive(q) ? proven : unproven, &q->held);
}

static void retired_release_locked(rdma_ep *ep, rdma_qp *q)
{
    for (rdma_qp **pp = &ep->retired; *pp; pp = &(*pp)->next)
        if (*pp == q) {
            *pp = q->next;
            rdma_qp_destroy(q);
            return;
        }
}

/* What one completion means for its slice (NULL for a probe) on q (ep->lock
 * held): 0 or the status to retry it with.  *reset: the endpoint is to be
 * reset (the QP's first error), for the reason written to why. */
static int judge_locked(rdma_qp *q, te_slice *s, const struct ibv_wc *wc,
                        char *why, size_t why_len, bool *reset)
{
    rdma_ep *ep = q->ep;
    int status = wc->status == IBV_WC_SUCCESS ? 0 : wc_status(wc->status);
    *reset = false;
    if (!status) {
        rdma_rail_success(&ep->rail);
    } else if (!q->retired) { /* the first error of this QP; the rest flush */
        snprintf(why, why_len, "completion error%s: %s", s ? "" : " of a probe",
                 ibv_wc_status_str(wc->status));
        if (status == TE_ERR_ENDPOINT) /* not stale keys or a remote fault */
            rdma_rail_failed(ep, why);
        *reset = true;
    }
    return status;
}

/* Accounts one completion and reports (or retries) its slice and the
 * successes it proves; returns the endpoint, which the caller refills once
 * per polled batch (NULL for a completion it ignored). */
static rdma_ep *on_completion(rdma_inst *in, rdma_cq *cq, const struct ibv_wc *wc)
{
    bool probe = wc->wr_id & PROBE_TAG;
    te_slice *s = probe ? NULL : (te_slice *)(uintptr_t)wc->wr_id;
    rdma_qp *q = probe ? (rdma_qp *)(uintptr_t)(wc->wr_id & ~(uint64_t)PROBE_TAG)
                       : s->transport_data[2];
    if (!q || q->qp->qp_num != wc->qp_num) {
        /* Not the QP the slice is on: a second completion of one WR.  The
         * slice was reported or moved on by the first; touching it again
         * would report it twice. */
        RLOG(in, TE_LOG_ERROR, "%s: completion (%s) on QP %u for a slice not posted there; "
             "ignored", cq->ctx->name, ibv_wc_status_str(wc->status), wc->qp_num);
        atomic_fetch_sub(&cq->outstanding, 1);
        return NULL;
    }
    rdma_ep *ep = q->ep;
    slice_list one = {0}, proven = {0}, unproven = {0};
    char why[96];
    bool reset;
    pthread_mutex_lock(&ep->lock);
    /* Any success, genuine or not, proves what q completed before it. */
    slice_list_append(wc->status == IBV_WC_SUCCESS ? &proven : &unproven, &q->held);
    int status = judge_locked(q, s, wc, why, sizeof why, &reset);
    if (s) {
        slice_list_remove(&ep->posted, s);
        s->transport_data[2] = NULL;
    }
    q->outstanding--;
    atomic_fetch_sub(&cq->outstanding, 1);
    if (s && !status && ep->ctx->check_success) {
        rdma_testing_lose_read(in, q, s); /* nothing outside the test build */
        hold_for_proof(ep, q, s, &proven, &unproven);
        s = NULL;
    }
    if (reset)
        rdma_ep_reset_locked(ep, why); /* may free q */
    else if (q->retired && q->outstanding == 0)
        retired_release_locked(ep, q);
    pthread_mutex_unlock(&ep->lock);
    te_slice *p;
    while ((p = slice_list_pop(&proven)))
        rdma_slice_finish(in, p, 0);
    if (unproven.count)
        RLOG(in, TE_LOG_INFO, "endpoint %s -> %s: %zu successes on QP %u not followed by "
             "one: moved again", ep->ctx->nic_path, ep->peer_path, unproven.count, wc->qp_num);
    rdma_retry_or_fail(in, &unproven, TE_ERR_ENDPOINT);
    if (s && !status) {
        rdma_slice_finish(in, s, 0);
    } else if (s) {
        slice_list_push(&one, s);
        rdma_retry_or_fail(in, &one, status);
    }
    return ep;
}

static void refill(rdma_inst *in, rdma_ep *ep)
{
    slice_list failed = {0};
    pthread_mutex_lock(&ep->lock);
    rdma_ep_post_locked(ep, &failed, RDMA_POST_ALL);
    pthread_mutex_unlock(&ep->lock);
    rdma_retry_or_fail(in, &failed, TE_ERR_ENDPOINT);
}

/* Drains the CQ, refilling each endpoint once per polled batch; returns how
 * many completions it handled. */
static int poll_all(rdma_inst *in, rdma_cq *cq)
{
    struct ibv_wc wc[POLL_BATCH];
    int total = 0, n;
    while ((n = ibv_poll_cq(cq->cq, POLL_BATCH, wc)) > 0) {
        rdma_ep *touched[POLL_BATCH];
        int nt = 0;
        for (int i = 0; i < n; i++) {
            rdma_ep *ep = on_completion(in, cq, &wc[i]);
            if (!ep)
                continue;
            int j = 0;
            while (j < nt && touched[j] != ep)
                j++;
            if (j == nt)
                touched[nt++] = ep;
        }
        for (int j = 0; j < nt; j++)
            refill(in, touched[j]);
        total += n;
    }
    return total;
}

/* Sleeps on the completion channel (and the wake eventfd) for at most 1 s. */
static unsigned wait_event(rdma_cq *cq, unsigned unacked)
{
    struct pollfd pf[2] = {{.fd = cq->chan->fd, .events = POLLIN},
                           {.fd = cq->wake_fd, .events = POLLIN}};
    if (poll(pf, 2, 1000) <= 0)
        return unacked;
    struct ibv_cq *ev_cq;
    void *ev_ctx;
    while ((pf[0].revents & POLLIN) && ibv_get_cq_event(cq->chan, &ev_cq, &ev_ctx) == 0)
        unacked++;
    uint64_t v;
    if ((pf[1].revents & POLLIN) && read(cq->wake_fd, &v, sizeof v) < 0)
        (void)v;
    if (unacked >= 256) {
        ibv_ack_cq_events(cq->cq, unacked);
        unacked = 0;
    }
    return unacked;
}

static void *cq_main(void *arg)
{
    rdma_cq *cq = arg;
    rdma_inst *in = cq->ctx->inst;
    unsigned unacked = 0;
    while (!atomic_load(&cq->stop)) {
        if (poll_all(in, cq))
            continue;
        if (ibv_req_notify_cq(cq->cq, 0)) {
            RLOG(in, TE_LOG_ERROR, "ibv_req_notify_cq failed on %s", cq->ctx->name);
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (poll_all(in, cq)) /* completions that raced with arming */
            continue;
        unacked = wait_event(cq, unacked);
    }
    if (unacked)
        ibv_ack_cq_events(cq->cq, unacked);
    return NULL;
}

int rdma_workers_start(rdma_inst *in)
{
    for (int c = 0; c < in->nctx; c++)
        for (int i = 0; i < in->ctxs[c].ncq; i++) {
            rdma_cq *cq = &in->ctxs[c].cqs[i];
            atomic_store(&cq->stop, false);
            if (pthread_create(&cq->thread, NULL, cq_main, cq))
                return rdma_fail(TE_ERR_MEMORY, "cannot start a completion worker");
            cq->started = true;
        }
    return 0;
}

void rdma_workers_stop(rdma_inst *in)
{
    for (int c = 0; c < in->nctx; c++)
        for (int i = 0; i < in->ctxs[c].ncq; i++) {
            rdma_cq *cq = &in->ctxs[c].cqs[i];
            if (!cq->started)
                continue;
            atomic_store(&cq->stop, true);
            uint64_t one = 1;
            if (write(cq->wake_fd, &one, sizeof one) < 0)
                RLOG(in, TE_LOG_WARN, "cannot wake a completion worker: %s", strerror(errno));
            pthread_join(cq->thread, NULL);
            cq->started = false;
        }
}

/* ---- the watchdog ---------------------------------------------------------------------------- */

/* Whether a slice past its deadline sits on a live QP (slices on retired
 * QPs are already being flushed back). */
static bool live_expired(const slice_list *l, int64_t now)
{
    for (te_slice *s = l->head; s; s = NEXT(s)) {
        const rdma_qp *q = s->transport_data[2];
        if (now >= s->deadline_ns && q && !q->retired)
            return true;
    }
    return false;
}

/* One endpoint (ep->lock held): expired pending slices out, an endpoint
 * with expired slices on the wire reset (they flush back as errors), a
 * passive endpoint whose peer never acked made ready. */
static void check_ep_locked(rdma_ep *ep, int64_t now, slice_list *expired, slice_list *failed)
{
    rdma_inst *in = ep->ctx->inst;
    for (te_slice *s = ep->pending.head, *next; s; s = next) {
        next = NEXT(s);
        if (now >= s->deadline_ns) {
            slice_list_remove(&ep->pending, s);
            slice_list_push(expired, s);
        }
    }
    if (ep->posted.count && live_expired(&ep->posted, now))
        rdma_ep_reset_locked(ep, "slices passed their deadline");
    if (ep->state == EP_WAIT_ACK &&
        now - ep->wait_ack_since > (int64_t)in->cfg.ack_wait_ms * 1000000)
        ep->state = EP_READY; /* a peer that does not send ready_ack */
    /* Work that waits for room another endpoint held on a shared CQ. */
    if (ep->state == EP_READY && ep->pending.count)
        rdma_ep_post_locked(ep, failed, RDMA_POST_KICK);
}

/* The endpoints of a context (they live until destroy, so the list stays
 * valid after the table lock is dropped); NULL when there are none. */
static rdma_ep **snapshot_eps(rdma_ctx *ctx, int *n)
{
    pthread_mutex_lock(&ctx->ep_lock);
    rdma_ep **eps = ctx->ep_count ? malloc((size_t)ctx->ep_count * sizeof *eps) : NULL;
    *n = 0;
    for (int b = 0; eps && b < RDMA_EP_BUCKETS; b++)
        for (rdma_ep *ep = ctx->eps[b]; ep; ep = ep->hnext)
            eps[(*n)++] = ep;
    pthread_mutex_unlock(&ctx->ep_lock);
    return eps;
}

/* An endpoint on a port that is down (ep->lock held): slices on the wire
 * flush back as errors and waiting ones leave, so that both are routed
 * again (to another NIC, or back to the core to fail over). */
static void drain_ep_locked(rdma_ep *ep, slice_list *failed)
{
    if (ep->qps)
        rdma_ep_reset_locked(ep, "its port is down");
    slice_list_append(failed, &ep->pending);
}

static void scan(rdma_inst *in)
{
    int64_t now = te_host_table->now_ns();
    slice_list expired = {0}, failed = {0};
    for (int c = 0; c < in->nctx; c++) {
        int n;
        rdma_ctx_read_events(&in->ctxs[c]);
        bool down = atomic_load(&in->ctxs[c].port_down);
        rdma_ep **eps = snapshot_eps(&in->ctxs[c], &n);
        for (int i = 0; i < n; i++) {
            pthread_mutex_lock(&eps[i]->lock);
            if (down)
                drain_ep_locked(eps[i], &failed);
            check_ep_locked(eps[i], now, &expired, &failed);
            pthread_mutex_unlock(&eps[i]->lock);
        }
        free(eps);
    }
    te_slice *s;
    while ((s = slice_list_pop(&expired)))
        rdma_slice_finish(in, s, TE_ERR_TIMEOUT);
    rdma_retry_or_fail(in, &failed, TE_ERR_ENDPOINT);
}

static void *wd_main(void *arg)
{
    rdma_inst *in = arg;
    pthread_mutex_lock(&in->wd_lock);
    while (!atomic_load(&in->stopping)) {
        /* Idle: a slow tick for passive endpoints; busy: 20 ms granularity. */
        int64_t step_ms = atomic_load(&in->held) > 0 ? 20 : 1000;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(step_ms * 1000000);
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&in->wd_cond, &in->wd_lock, &ts);
        if (atomic_load(&in->stopping))
            break;
        pthread_mutex_unlock(&in->wd_lock);
        scan(in);
        pthread_mutex_lock(&in->wd_lock);
    }
    pthread_mutex_unlock(&in->wd_lock);
    return NULL;
}

int rdma_watchdog_start(rdma_inst *in)
{
    if (pthread_create(&in->wd_thread, NULL, wd_main, in))
        return rdma_fail(TE_ERR_MEMORY, "cannot start the RDMA watchdog");
    in->wd_started = true;
    return 0;
}

/* Moves an idle watchdog to its busy tick when work arrives. */
void rdma_watchdog_kick(rdma_inst *in)
{
    pthread_mutex_lock(&in->wd_lock);
    pthread_cond_signal(&in->wd_cond);
    pthread_mutex_unlock(&in->wd_lock);
}

void rdma_watchdog_stop(rdma_inst *in)
{
    if (!in->wd_started)
        return;
    pthread_mutex_lock(&in->wd_lock);
    pthread_cond_broadcast(&in->wd_cond);
    pthread_mutex_unlock(&in->wd_lock);
    pthread_join(in->wd_thread, NULL);
    in->wd_started = false;
}

/* ---- shutdown ---------------------------------------------------------------------------------- */

static void fail_everything(rdma_inst *in, bool posted_too)
{
    slice_list out = {0};
    for (int c = 0; c < in->nctx; c++) {
        int n;
        rdma_ep **eps = snapshot_eps(&in->ctxs[c], &n);
        for (int i = 0; i < n; i++) {
            rdma_ep *ep = eps[i];
            pthread_mutex_lock(&ep->lock);
            slice_list_append(&out, &ep->pending);
            if (posted_too) {
                slice_list_append(&out, &ep->posted);
                for (int k = 0; k < ep->nqp && ep->qps; k++)
                    if (ep->qps[k])
                        slice_list_append(&out, &ep->qps[k]->held);
                for (rdma_qp *q = ep->retired; q; q = q->next)
                    slice_list_append(&out, &q->held);
            } else if (ep->qps)
                rdma_ep_reset_locked(ep, "transport shutting down");
            pthread_mutex_unlock(&ep->lock);
        }
        free(eps);
    }
    te_slice *s;
    while ((s = slice_list_pop(&out)))
        rdma_slice_finish(in, s, TE_ERR_STATE);
}

/* destroy(): fails what waits, flushes what is on the wire and gives the
 * completion workers budget_ms to report it; anything left is failed after
 * the workers stop (its QPs are in ERR, so no NIC touches it any more). */
void rdma_drain_all(rdma_inst *in, int64_t budget_ms)
{
    fail_everything(in, false);
    int64_t until = te_host_table->now_ns() + budget_ms * 1000000;
    while (atomic_load(&in->held) > 0 && te_host_table->now_ns() < until) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    rdma_workers_stop(in);
    fail_everything(in, true);
}
