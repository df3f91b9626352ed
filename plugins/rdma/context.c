/* context.c - one context per usable NIC: device list filtered by the
 * engine's device filter and MC_TE_FILTERS, an ACTIVE port, the GID
 * (MC_GID_INDEX or automatic, re-probed after failed handshakes), MTU, protection domain and completion queues
 * each with its own completion channel. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "rdma.h"

#define RXE_VENDOR_ID 0xffffff /* what rdma_rxe reports as vendor_id */
#define MAX_NUMA_NODES 1024    /* node<N> directories looked for in sysfs */

/* ---- filters ---------------------------------------------------------------- */

/* Whether `name` is in the comma separated list (NULL/"" = everything). */
static bool in_list(const char *list, const char *name)
{
    if (!list || !*list)
        return true;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *last = end;
        while (last > p && (last[-1] == ' ' || last[-1] == '\t'))
            last--;
        if ((size_t)(last - p) == n && !strncmp(p, name, n))
            return true;
        p = end;
    }
    return false;
}

/* ---- GID selection ------------------------------------------------------------ */

/* GID type from sysfs, for libraries without ibv_query_gid_ex. */
static int sysfs_gid_type(const char *dev, int port, int index)
{
    char path[256], buf[64] = "";
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%d/gid_attrs/types/%d", dev, port,
             index);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    if (!fgets(buf, sizeof buf, f))
        buf[0] = '\0';
    fclose(f);
    if (strstr(buf, "RoCE v2"))
        return RDMA_GID_TYPE_ROCE_V2;
    return strstr(buf, "RoCE") ? RDMA_GID_TYPE_ROCE_V1 : RDMA_GID_TYPE_IB;
}

/* Reads entry i: 0, or -1 when the entry is empty or unreadable. */
static int read_gid(rdma_ctx *c, int i, uint8_t gid[16], int *type, bool *netdev)
{
    struct ibv_gid_entry e;
    if (ibv_query_gid_ex(c->verbs, c->port, (uint32_t)i, &e, 0) == 0) {
        memcpy(gid, e.gid.raw, 16);
        *type = (int)e.gid_type;
        *netdev = e.ndev_ifindex != 0;
        return 0;
    }
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return -1;
    union ibv_gid g;
    if (ibv_query_gid(c->verbs, c->port, i, &g))
        return -1;
    memcpy(gid, g.raw, 16);
    *type = sysfs_gid_type(c->name, c->port, i);
    *netdev = true;
    return *type < 0 ? -1 : 0;
}

/* The port's whole GID table (c->gid_tbl_len entries; unreadable ones not
 * present), or NULL when out of memory.  The only place that reads it. */
static rdma_gid_entry *read_table(rdma_ctx *c)
{
    int n = c->gid_tbl_len > 0 ? c->gid_tbl_len : 1;
    rdma_gid_entry *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; t && i < c->gid_tbl_len; i++)
        t[i].present = read_gid(c, i, t[i].gid, &t[i].type, &t[i].netdev) == 0;
    return t;
}

static int pick_gid(rdma_ctx *c, int forced, char *why, size_t why_len)
{
    static const uint8_t zero[16];
    rdma_gid_entry *t = read_table(c);
    if (!t) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    int pick = forced >= 0 ? forced : rdma_gid_best(t, c->gid_tbl_len, c->link_is_ib);
    if (forced >= 0 && (forced >= c->gid_tbl_len || !t[forced].present ||
                        !memcmp(t[forced].gid, zero, 16))) {
        snprintf(why, why_len, "GID index %d (MC_GID_INDEX) is empty or invalid", forced);
        pick = -1;
    } else if (pick < 0) {
        snprintf(why, why_len, "no routable GID on port %d (set MC_GID_INDEX)", c->port);
    } else {
        c->gid_index = pick;
        memcpy(c->gid, t[pick].gid, 16);
    }
    free(t);
    return pick < 0 ? -1 : 0;
}

rdma_gid_sel rdma_ctx_gid(rdma_ctx *c)
{
    rdma_gid_sel sel;
    pthread_mutex_lock(&c->gid_lock);
    sel.index = c->gid_index;
    memcpy(sel.gid, c->gid, 16);
    pthread_mutex_unlock(&c->gid_lock);
    return sel;
}

void rdma_ctx_gid_reprobe(rdma_ctx *c)
{
    rdma_inst *in = c->inst;
    int64_t now = te_host_table->now_ns();
    pthread_mutex_lock(&c->gid_lock);
    bool due = rdma_gid_reprobe_due(in->cfg.gid_index >= 0, c->gid_probes,
                                    in->cfg.gid_max_retries, c->gid_probe_ns, now);
    if (due)
        c->gid_probe_ns = now; /* the rate limit counts every scan */
    pthread_mutex_unlock(&c->gid_lock);
    if (!due || atomic_load(&in->stopping))
        return;
    rdma_gid_entry *t = read_table(c); /* verbs calls: outside the lock */
    if (!t)
        return;
    pthread_mutex_lock(&c->gid_lock);
    int old = c->gid_index;
    uint8_t old_gid[16];
    memcpy(old_gid, c->gid, 16);
    int pick = rdma_gid_reprobe_pick(old, t, c->gid_tbl_len, c->link_is_ib);
    /* The budget counts switches only: a peer that is down fails handshakes
     * without using up the switches a later GID change will need. */
    if (pick != old && c->gid_probes >= in->cfg.gid_max_retries)
        pick = old;
    if (pick != old) {
        c->gid_index = pick;
        memcpy(c->gid, t[pick].gid, 16);
        c->gid_probes++;
    }
    int probe = c->gid_probes;
    pthread_mutex_unlock(&c->gid_lock);
    if (pick != old) {
        char was[RDMA_GID_STR], now_gid[RDMA_GID_STR];
        rdma_gid_format(old_gid, was);
        rdma_gid_format(t[pick].gid, now_gid);
        RLOG(in, TE_LOG_WARN,
             "%s: GID index %d (%s) -> %d (%s) after a failed handshake (switch %d of %d); "
             "new handshakes use it",
             c->name, old, was, pick, now_gid, probe, in->cfg.gid_max_retries);
    } else {
        RLOG(in, TE_LOG_DEBUG, "%s: GID table re-read after a failed handshake: index %d kept",
             c->name, old);
    }
    free(t);
}

/* ---- one context ------------------------------------------------------------- */

static int open_cq(rdma_ctx *c, rdma_cq *q, int cqe)
{
    q->ctx = c;
    q->wake_fd = -1;
    atomic_init(&q->outstanding, 0);
    q->chan = ibv_create_comp_channel(c->verbs);
    if (!q->chan)
        return -1;
    int fl = fcntl(q->chan->fd, F_GETFL);
    if (fl < 0 || fcntl(q->chan->fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    q->cq = ibv_create_cq(c->verbs, cqe, q, q->chan, 0);
    if (!q->cq)
        return -1;
    q->capacity = q->cq->cqe < cqe ? q->cq->cqe : cqe;
    q->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return q->wake_fd < 0 ? -1 : 0;
}

static void close_cq(rdma_cq *q)
{
    if (q->cq)
        ibv_destroy_cq(q->cq);
    if (q->chan)
        ibv_destroy_comp_channel(q->chan);
    if (q->wake_fd >= 0)
        close(q->wake_fd);
    q->cq = NULL;
    q->chan = NULL;
    q->wake_fd = -1;
}

static void clamp_caps(rdma_ctx *c, const struct ibv_device_attr *da, const rdma_config *cfg)
{
    c->max_wr = cfg->max_wr < da->max_qp_wr ? cfg->max_wr : da->max_qp_wr;
    c->max_sge = cfg->max_sge < da->max_sge ? cfg->max_sge : da->max_sge;
    c->max_inline = cfg->max_inline;
    int rd = da->max_qp_rd_atom < da->max_qp_init_rd_atom ? da->max_qp_rd_atom
                                                          : da->max_qp_init_rd_atom;
    c->max_rd_atomic = rd < 16 ? (rd > 0 ? rd : 1) : 16;
    /* rdma_rxe retries forever when retry_cnt is 7, so a dead peer would
     * only be noticed at the deadline: give it the largest finite count. */
    bool soft_roce = da->vendor_id == RXE_VENDOR_ID || !strncmp(c->name, "rxe", 3);
    c->qp_retry_cnt = soft_roce ? 6 : 7;
    c->check_success = soft_roce;
}

static int setup_port(rdma_ctx *c, const rdma_config *cfg, char *why, size_t why_len)
{
    struct ibv_port_attr pa;
    if (ibv_query_port(c->verbs, c->port, &pa)) {
        snprintf(why, why_len, "cannot query port %d", c->port);
        return -1;
    }
    if (pa.state != IBV_PORT_ACTIVE) {
        snprintf(why, why_len, "port %d is not ACTIVE (state %d)", c->port, (int)pa.state);
        return -1;
    }
    c->link_is_ib = pa.link_layer == IBV_LINK_LAYER_INFINIBAND;
    c->lid = pa.lid;
    c->mtu = pa.active_mtu < (enum ibv_mtu)cfg->mtu ? pa.active_mtu : (enum ibv_mtu)cfg->mtu;
    c->gid_tbl_len = pa.gid_tbl_len;
    return pick_gid(c, cfg->gid_index, why, why_len);
}

static int open_ctx(rdma_inst *in, struct ibv_device *dev, rdma_ctx *c, char *why, size_t why_len)
{
    snprintf(c->name, sizeof c->name, "%s", ibv_get_device_name(dev));
    snprintf(c->nic_path, sizeof c->nic_path, "%s@%s", in->segment, c->name);
    c->inst = in;
    c->port = (uint8_t)in->cfg.ib_port;
    c->verbs = ibv_open_device(dev);
    if (!c->verbs) {
        snprintf(why, why_len, "cannot open the device: %s", strerror(errno));
        return -1;
    }
    /* The watchdog polls the device's events; it must never block on them. */
    int fl = fcntl(c->verbs->async_fd, F_GETFL);
    if (fl < 0 || fcntl(c->verbs->async_fd, F_SETFL, fl | O_NONBLOCK)) {
        snprintf(why, why_len, "cannot make the event channel non-blocking: %s", strerror(errno));
        return -1;
    }
    struct ibv_device_attr da;
    if (ibv_query_device(c->verbs, &da)) {
        snprintf(why, why_len, "cannot query the device");
        return -1;
    }
    if (setup_port(c, &in->cfg, why, why_len))
        return -1;
    clamp_caps(c, &da, &in->cfg);
    c->pd = ibv_alloc_pd(c->verbs);
    if (!c->pd) {
        snprintf(why, why_len, "cannot allocate a protection domain");
        return -1;
    }
    int cqe = in->cfg.max_cqe < da.max_cqe ? in->cfg.max_cqe : da.max_cqe;
    c->ncq = in->cfg.workers;
    c->cqs = calloc((size_t)c->ncq, sizeof *c->cqs);
    for (int i = 0; c->cqs && i < c->ncq; i++)
        if (open_cq(c, &c->cqs[i], cqe)) {
            snprintf(why, why_len, "cannot create completion queue %d: %s", i, strerror(errno));
            return -1;
        }
    if (!c->cqs) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    return 0;
}

static void set_port_down(rdma_ctx *c, bool down, const char *event)
{
    rdma_inst *in = c->inst;
    if (atomic_exchange(&c->port_down, down) == down)
        return;
    atomic_fetch_add(&in->ports_down, down ? 1 : -1);
    if (down)
        RLOG(in, TE_LOG_WARN,
             "%s port %d: %s; its endpoints are reset and its work moves to other NICs or "
             "transports until the port is active again",
             c->name, c->port, event);
    else
        RLOG(in, TE_LOG_INFO, "%s port %d: %s; the NIC is used again", c->name, c->port, event);
}

void rdma_ctx_read_events(rdma_ctx *c)
{
    struct ibv_async_event ev;
    while (c->verbs && !ibv_get_async_event(c->verbs, &ev)) {
        enum ibv_event_type type = ev.event_type;
        bool ours = (type != IBV_EVENT_PORT_ERR && type != IBV_EVENT_PORT_ACTIVE) ||
                    ev.element.port_num == c->port;
        ibv_ack_async_event(&ev);
        if (!ours)
            continue;
        if (type == IBV_EVENT_PORT_ERR || type == IBV_EVENT_DEVICE_FATAL)
            set_port_down(c, true, ibv_event_type_str(type));
        else if (type == IBV_EVENT_PORT_ACTIVE)
            set_port_down(c, false, ibv_event_type_str(type));
        else
            RLOG(c->inst, TE_LOG_DEBUG, "%s: event %s", c->name, ibv_event_type_str(type));
    }
}

static void close_ctx(rdma_ctx *c)
{
    for (int i = 0; c->cqs && i < c->ncq; i++)
        close_cq(&c->cqs[i]);
    free(c->cqs);
    c->cqs = NULL;
    if (c->pd)
        ibv_dealloc_pd(c->pd);
    if (c->verbs)
        ibv_close_device(c->verbs);
    c->pd = NULL;
    c->verbs = NULL;
}

/* ---- all contexts ------------------------------------------------------------ */

/* Orders contexts the way Mooncake numbers a peer's devices (by first
 * appearance in the priority matrix), so that our devices/lkey/rkey arrays
 * read the same on both sides. */
static void order_like_matrix(rdma_inst *in)
{
    const char *names[RDMA_MAX_CTX];
    int rank[RDMA_MAX_CTX];
    for (int i = 0; i < in->nctx; i++)
        names[i] = in->ctxs[i].name;
    rdma_matrix_rank(in->matrix, names, in->nctx, rank);
    for (int a = 1; a < in->nctx; a++)
        for (int b = a; b > 0 && rank[b - 1] > rank[b]; b--) {
            rdma_ctx t = in->ctxs[b];
            in->ctxs[b] = in->ctxs[b - 1];
            in->ctxs[b - 1] = t;
            int r = rank[b];
            rank[b] = rank[b - 1];
            rank[b - 1] = r;
        }
    for (int i = 0; i < in->nctx; i++) { /* contexts moved: fix what points at them */
        rdma_ctx *c = &in->ctxs[i];
        c->index = i;
        in->usable[i] = true;
        for (int k = 0; k < c->ncq; k++)
            c->cqs[k].ctx = c;
        pthread_mutex_init(&c->ep_lock, NULL);
        pthread_mutex_init(&c->gid_lock, NULL);
    }
}

static int numa_nodes(void)
{
    int n = 0;
    char path[64];
    for (; n < MAX_NUMA_NODES; n++) {
        snprintf(path, sizeof path, "/sys/devices/system/node/node%d", n);
        if (access(path, F_OK))
            break;
    }
    return n > 0 ? n : 1;
}

/* Our priority matrix: the core's topology restricted to the NICs we opened
 * (a Mooncake peer numbers devices by the names in it), else one of our own. */
static int build_matrix(rdma_inst *in)
{
    const char *names[RDMA_MAX_CTX];
    for (int i = 0; i < in->nctx; i++)
        names[i] = in->ctxs[i].name;
    char *topo = NULL;
    if (te_host_table->topology(in->host, &topo) == 0 && topo)
        in->matrix = rdma_matrix_filter(topo, names, in->nctx);
    free(topo);
    if (!in->matrix)
        in->matrix = rdma_matrix_fallback(names, in->nctx, numa_nodes());
    return in->matrix ? 0 : TE_ERR_MEMORY;
}

static int report_none(int ndev, const char *reasons)
{
    te_host_table->set_error("no usable RDMA device (%d found%s%s)", ndev, *reasons ? ": " : "",
                             reasons);
    return TE_ERR_DEVICE_NOT_FOUND;
}

int rdma_contexts_open(rdma_inst *in, const char *device_filter)
{
    int ndev = 0;
    struct ibv_device **list = ibv_get_device_list(&ndev);
    const char *env_filter = te_host_table->config(in->host, "MC_TE_FILTERS");
    char reasons[1024] = "";
    size_t rlen = 0;
    in->ctxs = calloc(RDMA_MAX_CTX, sizeof *in->ctxs);
    if (!in->ctxs) {
        if (list)
            ibv_free_device_list(list);
        return TE_ERR_MEMORY;
    }
    for (int i = 0; list && i < ndev && in->nctx < RDMA_MAX_CTX; i++) {
        const char *name = ibv_get_device_name(list[i]);
        char why[256] = "";
        if (!in_list(device_filter, name) || !in_list(env_filter, name))
            snprintf(why, sizeof why, "excluded by the device filter");
        else if (open_ctx(in, list[i], &in->ctxs[in->nctx], why, sizeof why) == 0) {
            in->nctx++;
            continue;
        } else
            close_ctx(&in->ctxs[in->nctx]);
        memset(&in->ctxs[in->nctx], 0, sizeof in->ctxs[in->nctx]);
        if (rlen < sizeof reasons)
            rlen += (size_t)snprintf(reasons + rlen, sizeof reasons - rlen, "%s%s: %s",
                                     rlen ? "; " : "", name, why);
    }
    if (list)
        ibv_free_device_list(list);
    if (in->nctx == 0)
        return report_none(ndev, ndev ? reasons : "libibverbs lists no device");
    if (*reasons)
        RLOG(in, TE_LOG_INFO, "skipped devices: %s", reasons);
    int rc = build_matrix(in);
    order_like_matrix(in);
    return rc;
}

void rdma_contexts_close(rdma_inst *in)
{
    for (int i = 0; in->ctxs && i < in->nctx; i++) {
        close_ctx(&in->ctxs[i]);
        pthread_mutex_destroy(&in->ctxs[i].ep_lock);
        pthread_mutex_destroy(&in->ctxs[i].gid_lock);
    }
    free(in->ctxs);
    in->ctxs = NULL;
    in->nctx = 0;
}

int rdma_ctx_find(rdma_inst *in, const char *name)
{
    for (int i = 0; i < in->nctx; i++)
        if (!strcmp(in->ctxs[i].name, name))
            return i;
    return -1;
}
