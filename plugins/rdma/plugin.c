/* plugin.c - libte_rdma.so's entry point: settings (MC_* variables), the
 * per-engine instance (contexts, threads, the handshake handler), the
 * descriptor members ({"devices", "priority_matrix"}) and peer handles. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdma.h"


static _Thread_local char g_err[512];

int rdma_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    te_host_table->set_error("%s", g_err);
    return status;
}

const char *rdma_errmsg(void)
{
    return g_err[0] ? g_err : "unknown error";
}

/* ---- settings ------------------------------------------------------------------------ */

/* A declared setting (docs/configuration.md: range, default) through the
 * host's config_int; every range fits an int. */
static int cfg_int(te_host *h, const char *name)
{
    int64_t v = 0;
    te_host_table->config_int(h, name, &v);
    return (int)v;
}

static int mtu_enum(int bytes)
{
    switch (bytes) {
    case 256: return IBV_MTU_256;
    case 512: return IBV_MTU_512;
    case 1024: return IBV_MTU_1024;
    case 2048: return IBV_MTU_2048;
    default: return IBV_MTU_4096;
    }
}

static void load_config(te_host *h, rdma_config *c)
{
    c->ib_port = cfg_int(h, "MC_IB_PORT");
    c->gid_index = cfg_int(h, "MC_GID_INDEX"); /* or its alias NCCL_IB_GID_INDEX */
    c->mtu = mtu_enum(cfg_int(h, "MC_MTU"));
    c->max_cqe = cfg_int(h, "MC_MAX_CQE_PER_CTX");
    c->num_qp = cfg_int(h, "MC_NUM_QP_PER_EP"); /* <= RDMA_MAX_QP */
    c->workers = cfg_int(h, "MC_WORKERS_PER_CTX");
    c->max_wr = cfg_int(h, "MC_MAX_WR");
    c->max_sge = cfg_int(h, "MC_MAX_SGE");
    c->max_inline = cfg_int(h, "MC_MAX_INLINE");
    c->retry_cnt = cfg_int(h, "MC_RETRY_CNT");
    c->max_ep = cfg_int(h, "MC_MAX_EP_PER_CTX");
    c->traffic_class = cfg_int(h, "MC_IB_TC");
    c->service_level = cfg_int(h, "MC_IB_SL");
    c->pkey_index = cfg_int(h, "MC_PKEY_INDEX");
    /* MC_HANDSHAKE_CONNECT_TIMEOUT is the core's: rpc_call applies it. */
    c->handshake_ms = 0;
    c->ack_wait_ms = 1000;
    c->rail_pause_s = cfg_int(h, "MC_RDMA_RAIL_PAUSE_SECONDS");
    c->gid_max_retries = cfg_int(h, "MC_AUTO_GID_MAX_RETRIES");
    c->slice_size = (uint64_t)cfg_int(h, "MC_SLICE_SIZE");
}

/* ---- describe -------------------------------------------------------------------------- */

/* Built on every call: a GID re-probe may have switched a context's GID. */
static char *build_describe(rdma_inst *in)
{
    json_error_t jerr;
    char *out = NULL;
    json_t *o = json_object(), *devs = json_array();
    json_t *matrix = in->matrix ? json_loads(in->matrix, 0, &jerr) : NULL;
    for (int i = 0; devs && i < in->nctx; i++) {
        char gid[RDMA_GID_STR];
        rdma_gid_sel sel = rdma_ctx_gid(&in->ctxs[i]);
        rdma_gid_format(sel.gid, gid);
        json_array_append_new(devs, json_pack("{s:s, s:i, s:s}", "name", in->ctxs[i].name, "lid",
                                              (int)in->ctxs[i].lid, "gid", gid));
    }
    if (o && devs && matrix) {
        json_object_set(o, "devices", devs);
        json_object_set(o, "priority_matrix", matrix);
        out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    }
    json_decref(devs);
    json_decref(matrix);
    json_decref(o);
    return out;
}

static int rdma_describe(void *inst, char **json)
{
    *json = build_describe(inst);
    return *json ? 0 : TE_ERR_MEMORY;
}

/* ---- lifetime ---------------------------------------------------------------------------- */

static void inst_free(rdma_inst *in)
{
    rdma_mrs_release(in);
    rdma_eps_destroy(in);
    rdma_contexts_close(in);
    pthread_mutex_destroy(&in->mr_lock);
    pthread_mutex_destroy(&in->hs_lock);
    pthread_cond_destroy(&in->hs_cond);
    pthread_mutex_destroy(&in->wd_lock);
    pthread_cond_destroy(&in->wd_cond);
    free(in->matrix);
    free(in);
}

static void rdma_destroy(void *inst)
{
    rdma_inst *in = inst;
    if (!in)
        return;
    atomic_store(&in->stopping, true);
    rdma_watchdog_stop(in);
    rdma_handshake_stop(in);
    rdma_drain_all(in, 2000);
    inst_free(in);
}

static int start_threads(rdma_inst *in)
{
    int rc = rdma_workers_start(in);
    if (!rc)
        rc = rdma_handshake_start(in);
    if (!rc)
        rc = rdma_watchdog_start(in);
    return rc;
}

static int rdma_create(te_host *host, const te_transport_params *params, void **out)
{
    *out = NULL;
    rdma_inst *in = calloc(1, sizeof *in);
    if (!in)
        return TE_ERR_MEMORY;
    in->host = host;
    load_config(host, &in->cfg);
    snprintf(in->segment, sizeof in->segment, "%s",
             params->segment_name ? params->segment_name : te_host_table->segment_name(host));
    pthread_mutex_init(&in->mr_lock, NULL);
    pthread_mutex_init(&in->hs_lock, NULL);
    pthread_cond_init(&in->hs_cond, NULL);
    pthread_mutex_init(&in->wd_lock, NULL);
    pthread_cond_init(&in->wd_cond, NULL);
    int rc = rdma_contexts_open(in, params->device_filter);
    char *probe = rc ? NULL : build_describe(in); /* checks it can be built */
    if (!rc && !probe)
        rc = TE_ERR_MEMORY;
    free(probe);
    if (!rc)
        rc = start_threads(in);
    if (!rc) /* last: once installed, peers may call us */
        rc = rdma_passive_install(in);
    if (rc) {
        rdma_destroy(in);
        return rc;
    }
    for (int i = 0; i < in->nctx; i++) {
        char gid[RDMA_GID_STR];
        rdma_gid_sel sel = rdma_ctx_gid(&in->ctxs[i]);
        rdma_gid_format(sel.gid, gid);
        RLOG(in, TE_LOG_INFO, "%s: port %d, GID index %d (%s), lid %u, MTU %d", in->ctxs[i].name,
             in->ctxs[i].port, sel.index, gid, in->ctxs[i].lid,
             128 << in->ctxs[i].mtu);
    }
    *out = in;
    return 0;
}

/* ---- peers ------------------------------------------------------------------------------- */

static void peer_free(rdma_peer *p)
{
    if (!p)
        return;
    rdma_peer_desc_free(p->desc);
    free(p->paths);
    free(p->eps);
    free(p);
}

static int rdma_peer_open(void *inst, const te_peer_info *info, void **handle)
{
    char err[256] = "";
    *handle = NULL;
    if (!info->descriptor || !info->rpc_host)
        return rdma_fail(TE_ERR_INVALID_ARGUMENT, "rdma: peer without descriptor or address");
    rdma_peer *p = calloc(1, sizeof *p);
    if (!p)
        return TE_ERR_MEMORY;
    int rc = rdma_peer_desc_parse(info->descriptor, &p->desc, err, sizeof err);
    if (rc) {
        peer_free(p);
        return rdma_fail(rc, "rdma: descriptor of %s: %s", info->segment_name, err);
    }
    snprintf(p->rpc_host, sizeof p->rpc_host, "%s", info->rpc_host);
    p->rpc_port = info->rpc_port;
    p->paths = calloc((size_t)p->desc->ndev, sizeof *p->paths);
    p->nctx = ((rdma_inst *)inst)->nctx;
    p->eps = calloc((size_t)p->nctx * (size_t)p->desc->ndev, sizeof *p->eps);
    for (int i = 0; p->paths && i < p->desc->ndev; i++)
        if (snprintf(p->paths[i], sizeof p->paths[i], "%s@%s", p->desc->name,
                     p->desc->devs[i].name) >= (int)sizeof p->paths[i])
            rc = rdma_fail(TE_ERR_MALFORMED_JSON, "rdma: segment name of %s too long",
                           info->segment_name);
    if (!p->paths || !p->eps || rc) {
        peer_free(p);
        return rc ? rc : TE_ERR_MEMORY;
    }
    *handle = p;
    return 0;
}

static void rdma_peer_close(void *inst, void *handle)
{
    peer_free(handle);
}

/* ---- the descriptor ------------------------------------------------------------------------ */

/* The instance's slice size (MC_SLICE_SIZE), per engine. */
static int rdma_ctrl(void *inst, int op, void *arg)
{
    if (op != TE_TRANSPORT_CTRL_SLICE_SIZE)
        return TE_ERR_NOT_IMPLEMENTED;
    *(uint64_t *)arg = ((rdma_inst *)inst)->cfg.slice_size;
    return 0;
}

static const te_transport_ops g_ops = {
    .size = sizeof(te_transport_ops),
    .caps = TE_TRANSPORT_CAP_REMOTE | TE_TRANSPORT_CAP_NEEDS_LOCAL_MR,
    .slice_size = 64 * 1024,
    .create = rdma_create,
    .destroy = rdma_destroy,
    .describe = rdma_describe,
    .register_memory = rdma_register,
    .unregister_memory = rdma_unregister,
    .describe_buffer = rdma_describe_buffer,
    .peer_open = rdma_peer_open,
    .peer_close = rdma_peer_close,
    .submit = rdma_submit,
    .ctrl = rdma_ctrl,
};


TE_PLUGIN_DEFINE(TE_PLUGIN_TRANSPORT, RDMA_PLUGIN, "0.1.0", &g_ops, config_int)
