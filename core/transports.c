/* transports.c - which transports an engine loads (docs/transports.md): the
 * protocol's first (or the list it names), shm for same-host peers, nvlink
 * where CUDA is in the process, tcp as the fallback every peer has; or
 * exactly MC_TE_TRANSPORTS.  The first of the protocol list that loaded is
 * the descriptor's `protocol`. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "cuda_loader.h"
#include "engine.h"
#include "log.h"

#define MAX_WANTED (2 * TE_MAX_TRANSPORTS)

typedef struct wanted {
    char names[MAX_WANTED][64];
    bool named[MAX_WANTED]; /* the user asked for it: failing to start is an error */
    int count;
} wanted;

static bool has(const wanted *w, const char *name)
{
    for (int i = 0; i < w->count; i++)
        if (!strcmp(w->names[i], name))
            return true;
    return false;
}

static void want(wanted *w, const char *name, size_t len, bool named)
{
    if (len == 0 || len >= sizeof w->names[0] || w->count == MAX_WANTED)
        return;
    char n[64];
    memcpy(n, name, len);
    n[len] = '\0';
    if (has(w, n))
        return;
    memcpy(w->names[w->count], n, len + 1);
    w->named[w->count++] = named;
}

/* "rdma,tcp" (spaces ignored) into w; returns how many names it held. */
static int want_list(wanted *w, const char *list)
{
    int before = w->count;
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        want(w, p, n, true);
        p += n;
    }
    return w->count - before;
}

static bool same_host_enabled(void)
{
    return te_cfg_bool("MC_TE_SAME_HOST_TRANSPORT");
}

/* The transports to start, in order; protocol holds the protocol list. */
static void choose(te_engine *e, const char *protocol, wanted *w, wanted *proto)
{
    const char *only = te_cfg_str("MC_TE_TRANSPORTS");
    want_list(proto, protocol && *protocol ? protocol : "tcp");
    if (e->cfg.force_tcp) {
        if (proto->count != 1 || strcmp(proto->names[0], "tcp"))
            te_log(TE_LOG_INFO, "core", "MC_FORCE_TCP is set: using tcp instead of %s",
                   protocol);
        proto->count = 0;
        want(proto, "tcp", 3, true);
        want(w, "tcp", 3, true);
    } else if (only) {
        want_list(w, only);
        return; /* exactly these */
    } else {
        for (int i = 0; i < proto->count; i++)
            want(w, proto->names[i], strlen(proto->names[i]), true);
        if (proto->count > 1)
            return; /* a list names exactly the transports to run */
    }
    if (same_host_enabled())
        want(w, "shm", 3, false);
    /* nvlink only where the process already uses CUDA: loading it elsewhere
     * would initialise CUDA in a process that never asked for it. */
    if (!e->cfg.force_tcp && cudl_open_driver(0, NULL, 0))
        want(w, "nvlink", 6, false);
    want(w, "tcp", 3, false);
}

static int add_transport(te_engine *e, const char *name, const char *device_filter, bool quiet)
{
    const te_plugin *p;
    int rc = quiet ? te_plugin_load_quiet(name, TE_PLUGIN_TRANSPORT, &p)
                   : te_plugin_load(name, TE_PLUGIN_TRANSPORT, &p);
    if (rc)
        return rc;
    if (e->transport_count == TE_MAX_TRANSPORTS)
        return te_fail(TE_ERR_TOO_MANY_REQUESTS, "transport %s: at most %d transports", name,
                       TE_MAX_TRANSPORTS);
    te_transport_params params = {.size = sizeof params, .segment_name = e->segment_name,
                                  .device_filter = device_filter ? device_filter : ""};
    te_transport *t = &e->transports[e->transport_count];
    t->plugin = p;
    t->ops = &p->transport;
    t->inst = NULL;
    rc = t->ops->create(&e->host, &params, &t->inst);
    if (rc)
        return te_fail(rc, "transport %s: create failed: %s", name, te_last_error());
    if (t->ops->ctrl(t->inst, TE_TRANSPORT_CTRL_SLICE_SIZE, &t->slice_size))
        t->slice_size = t->ops->slice_size;
    e->transport_count++;
    return 0;
}

/* Starts one wanted transport.  Optional ones fail quietly; "rdma" named
 * without a usable device falls back (SGLang and vLLM pass it by default). */
static int start_one(te_engine *e, wanted *w, int i, const char *device_filter)
{
    char saved[512];
    snprintf(saved, sizeof saved, "%s", te_last_error());
    int rc = add_transport(e, w->names[i], device_filter, !w->named[i]);
    if (!rc)
        return 0;
    if (!w->named[i]) {
        te_log(TE_LOG_DEBUG, "core", "transport %s not used: %s", w->names[i], te_last_error());
        te_set_error("%s", saved);
        return 0;
    }
    if (strcmp(w->names[i], "rdma"))
        return rc;
    te_log(TE_LOG_WARN, "core", "no usable RDMA transport (%s); falling back to tcp",
           te_last_error());
    if (!has(w, "tcp"))
        want(w, "tcp", 3, true);
    return 0;
}

int te_transports_start(te_engine *e, const char *protocol, const char *device_filter)
{
    wanted w = {0}, proto = {0};
    choose(e, protocol, &w, &proto);
    for (int i = 0; i < w.count; i++) {
        int rc = start_one(e, &w, i, device_filter);
        if (rc)
            return rc;
    }
    if (e->transport_count == 0)
        return te_fail(TE_ERR_NOT_SUPPORTED_TRANSPORT, "no transport could be started");
    /* The descriptor's protocol: the first of the protocol list that loaded,
     * else tcp (the fallback), else the first transport. */
    e->preferred = -1;
    for (int i = 0; i < proto.count && e->preferred < 0; i++)
        for (int t = 0; t < e->transport_count && e->preferred < 0; t++)
            if (!strcmp(e->transports[t].plugin->name, proto.names[i]))
                e->preferred = t;
    for (int t = 0; t < e->transport_count && e->preferred < 0; t++)
        if (!strcmp(e->transports[t].plugin->name, "tcp"))
            e->preferred = t;
    if (e->preferred < 0)
        e->preferred = 0;
    char list[256] = "";
    for (int t = 0; t < e->transport_count; t++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s%s", t ? ", " : "",
                 e->transports[t].plugin->name, t == e->preferred ? " (preferred)" : "");
    te_log(TE_LOG_INFO, "core", "transports: %s", list);
    return 0;
}
