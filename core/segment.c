/* segment.c - the segment cache and this engine's own descriptor.  A segment
 * id names a slot; the slot points at the current resolution (descriptor,
 * RPC address, transport and its peer handle).  A failed transfer marks the
 * slot stale and the next use refetches, so a restarted peer is reached
 * again without restarting the caller. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "hostport.h"
#include "log.h"
#include "route.h"

void te_segment_put(te_segment *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    te_engine *e = s->engine;
    for (int i = 0; i < e->transport_count; i++)
        if (s->peers[i])
            e->transports[i].ops->peer_close(e->transports[i].inst, s->peers[i]);
    te_segdesc_free(s->desc);
    free(s);
}

/* ---- our own descriptor -------------------------------------------------- */

typedef struct build_ctx {
    te_engine *e;
    json_t *buffers;
    int rc;
} build_ctx;

static int merge_fields(json_t *into, char *text, const char *what)
{
    if (!text)
        return 0;
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    free(text);
    if (!json_is_object(o)) {
        json_decref(o);
        return te_fail(TE_ERR_MALFORMED_JSON, "%s returned a non-object", what);
    }
    json_object_update(into, o);
    json_decref(o);
    return 0;
}

static int by_seq(const void *a, const void *b)
{
    const te_region *x = *(te_region *const *)a, *y = *(te_region *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void add_buffer(te_region *r, build_ctx *c)
{
    if (c->rc)
        return;
    /* "location" (ours) tells peers whether this is device memory whatever
     * transports describe it: tcp keeps the segment name in "name". */
    json_t *b = json_pack("{s:s, s:I, s:I, s:s}", "name", c->e->segment_name, "addr",
                          (json_int_t)r->addr, "length", (json_int_t)r->length, "location",
                          r->location);
    for (int i = 0; b && i < c->e->transport_count; i++) {
        te_transport *tr = &c->e->transports[i];
        char *extra = NULL;
        int rc = tr->ops->describe_buffer(tr->inst, r->mr[i], &extra);
        if (!rc)
            rc = merge_fields(b, extra, "describe_buffer");
        if (rc)
            c->rc = rc;
    }
    if (!b)
        c->rc = TE_ERR_MEMORY;
    else
        json_array_append_new(c->buffers, b);
}

int te_local_descriptor_json(te_engine *e, char **json)
{
    char ts[64];
    te_segdesc_timestamp(ts, sizeof ts);
    const char *proto = e->transports[e->preferred].plugin->name;
    json_t *root = json_pack("{s:s, s:s, s:s}", "name", e->segment_name, "protocol", proto,
                             "timestamp", ts);
    build_ctx c = {.e = e, .buffers = json_array(), .rc = 0};
    if (!root || !c.buffers) {
        json_decref(root);
        json_decref(c.buffers);
        return TE_ERR_MEMORY;
    }
    for (int i = 0; i < e->transport_count && !c.rc; i++) {
        char *extra = NULL;
        te_transport *tr = &e->transports[i];
        c.rc = tr->ops->describe(tr->inst, &extra);
        if (!c.rc)
            c.rc = merge_fields(root, extra, "describe");
    }
    /* Buffers are listed in registration order, like the original (the first
     * one is what get_first_buffer_address returns); the table stays locked
     * while transports describe them so none can be unregistered meanwhile. */
    te_memreg_read_lock(&e->memreg);
    size_t n = e->memreg.count;
    te_region **order = malloc((n ? n : 1) * sizeof *order);
    if (order) {
        if (n) /* regions is NULL before the first registration */
            memcpy(order, e->memreg.regions, n * sizeof *order);
        qsort(order, n, sizeof *order, by_seq);
        for (size_t i = 0; i < n; i++)
            add_buffer(order[i], &c);
    } else {
        c.rc = TE_ERR_MEMORY;
    }
    te_memreg_read_unlock(&e->memreg);
    free(order);
    json_object_set_new(root, "buffers", c.buffers);
    /* The core's members win over anything a transport tried to set. */
    json_object_set_new(root, "name", json_string(e->segment_name));
    json_object_set_new(root, "protocol", json_string(proto));
    *json = c.rc ? NULL : json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (c.rc)
        return c.rc;
    return *json ? 0 : TE_ERR_MEMORY;
}

/* Rebuilds our descriptor, keeps it for local lookups and publishes it.
 * With P2P metadata nothing is stored anywhere: peers ask our RPC port,
 * which encodes the descriptor as it is then, and our own lookups do the
 * same (fetch_descriptor).  Encoding here too made each registration cost
 * time proportional to every region registered before it (49 s for 4096
 * regions registered one call each); now it only marks our slot stale. */
int te_engine_publish(te_engine *e)
{
    if (e->p2p) {
        pthread_mutex_lock(&e->seg_lock);
        if (e->segment_count > 0)
            e->segments[0].stale = true;
        pthread_mutex_unlock(&e->seg_lock);
        return 0;
    }
    char *json;
    int rc = te_local_descriptor_json(e, &json);
    if (rc)
        return rc;
    te_segdesc *d;
    rc = te_segdesc_decode(json, strlen(json), &d);
    if (rc) {
        free(json);
        return rc;
    }
    pthread_mutex_lock(&e->seg_lock);
    te_segdesc_free(e->local_desc);
    e->local_desc = d;
    if (e->segment_count > 0)
        e->segments[0].stale = true; /* our own slot sees the new buffers */
    pthread_mutex_unlock(&e->seg_lock);
    char key[TE_META_KEY_MAX];
    rc = te_meta_segment_key(e->cfg.cluster_id, e->segment_name, key, sizeof key);
    if (!rc)
        rc = e->metadata_plugin->metadata.put(e->metadata, key, json);
    free(json);
    if (rc)
        return te_fail(rc < 0 ? rc : TE_ERR_METADATA, "publishing segment %s failed: %s",
                       e->segment_name, te_last_error());
    return 0;
}

/* ---- resolution ---------------------------------------------------------- */

static int fetch_descriptor(te_engine *e, te_segment_id id, const char *name, te_segdesc **out)
{
    if (id == 0 && e->p2p) {
        char *mine = NULL;
        int rc = te_local_descriptor_json(e, &mine);
        if (!rc)
            rc = te_segdesc_decode(mine, strlen(mine), out);
        free(mine);
        return rc;
    }
    if (id == 0) {
        pthread_mutex_lock(&e->seg_lock);
        const char *j = e->local_desc ? e->local_desc->json : NULL;
        int rc = j ? te_segdesc_decode(j, strlen(j), out) : TE_ERR_STATE;
        pthread_mutex_unlock(&e->seg_lock);
        return rc;
    }
    char key[TE_META_KEY_MAX];
    int rc = te_meta_segment_key(e->cfg.cluster_id, name, key, sizeof key);
    if (rc)
        return te_fail(rc, "segment name too long: %s", name);
    char *json = NULL;
    rc = e->metadata_plugin->metadata.get(e->metadata, key, &json);
    if (rc || !json) {
        free(json);
        return te_fail(rc ? rc : TE_ERR_METADATA, "cannot get the descriptor of segment %s: %s",
                       name, te_last_error());
    }
    rc = te_segdesc_decode(json, strlen(json), out);
    free(json);
    return rc;
}

static int fetch_rpc_address(te_engine *e, te_segment_id id, const char *name, te_segment *s)
{
    if (id == 0) {
        snprintf(s->rpc_host, sizeof s->rpc_host, "%s", e->advertised_host);
        s->rpc_port = e->rpc_port;
        return 0;
    }
    if (e->p2p)
        return te_parse_host_port(name, s->rpc_host, sizeof s->rpc_host, &s->rpc_port,
                                  e->cfg.handshake_port)
                   ? te_fail(TE_ERR_INVALID_ARGUMENT, "P2P segment name '%s' is not host:port",
                             name)
                   : 0;
    char key[TE_META_KEY_MAX], *json = NULL;
    int rc = te_meta_rpc_key(e->cfg.cluster_id, name, key, sizeof key);
    if (!rc)
        rc = e->metadata_plugin->metadata.get(e->metadata, key, &json);
    if (rc || !json) {
        free(json);
        return te_fail(rc ? rc : TE_ERR_METADATA, "cannot get the RPC address of segment %s",
                       name);
    }
    rc = te_rpc_meta_decode(json, s->rpc_host, sizeof s->rpc_host, &s->rpc_port);
    free(json);
    return rc;
}

/* Asks every transport to reach the peer; those that decline get no handle.
 * The preferred one for host memory answers te_segment_transport. */
static int open_peers(te_engine *e, const char *name, te_segment *s)
{
    te_peer_info info = {.size = sizeof info, .segment_name = name, .descriptor = s->desc->json,
                         .rpc_host = s->rpc_host, .rpc_port = s->rpc_port};
    int first_rc = 0, opened = 0;
    char first_why[512] = "";
    for (int i = 0; i < e->transport_count; i++) {
        te_transport *tr = &e->transports[i];
        int rc = tr->ops->peer_open(tr->inst, &info, &s->peers[i]);
        if (rc == 0) {
            opened++;
            continue;
        }
        s->peers[i] = NULL;
        if (rc != TE_ERR_NOT_SUPPORTED_TRANSPORT && !first_rc) {
            first_rc = rc;
            snprintf(first_why, sizeof first_why, "%s: %s", tr->plugin->name, te_last_error());
        }
        te_log(TE_LOG_DEBUG, "core", "transport %s does not reach %s (%s)", tr->plugin->name,
               name, te_strerror(rc));
    }
    if (!opened) {
        for (int i = 0; i < e->transport_count; i++)
            if (s->peers[i])
                e->transports[i].ops->peer_close(e->transports[i].inst, s->peers[i]);
        if (first_rc)
            return te_fail(first_rc, "cannot reach segment %s: %s", name, first_why);
        return te_fail(TE_ERR_NOT_SUPPORTED_TRANSPORT,
                       "segment %s uses protocol '%s', which this engine (%s) cannot reach", name,
                       s->desc->protocol, e->transports[e->preferred].plugin->name);
    }
    te_route_in in = {.count = e->transport_count, .local_registered = true};
    for (int i = 0; i < e->transport_count; i++) {
        in.caps[i] = e->transports[i].ops->caps;
        in.reached[i] = s->peers[i] != NULL;
        in.usable[i] = true;
    }
    te_route r;
    te_route_order(&in, &r);
    s->transport = r.count ? r.order[0] : 0;
    for (int i = 0; !r.count && i < e->transport_count; i++)
        if (s->peers[i]) {
            s->transport = i;
            break;
        }
    te_clear_error();
    return 0;
}

static int resolve(te_engine *e, te_segment_id id, const char *name, te_segment **out)
{
    te_segment *s = calloc(1, sizeof *s);
    if (!s)
        return TE_ERR_MEMORY;
    s->engine = e;
    atomic_init(&s->refs, 1);
    int rc = fetch_descriptor(e, id, name, &s->desc);
    if (!rc)
        rc = fetch_rpc_address(e, id, name, s);
    if (rc) {
        te_segdesc_free(s->desc);
        free(s);
        return rc;
    }
    rc = open_peers(e, name, s);
    if (rc) {
        te_segdesc_free(s->desc);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int te_segment_get(te_engine *e, te_segment_id id, bool refresh, te_segment **out)
{
    pthread_mutex_lock(&e->seg_lock);
    if (id < 0 || (size_t)id >= e->segment_count || !e->segments[id].name) {
        pthread_mutex_unlock(&e->seg_lock);
        return te_fail(TE_ERR_NOT_FOUND, "segment id %lld is not open", (long long)id);
    }
    te_segment_slot *slot = &e->segments[id];
    if (slot->current && !slot->stale && !refresh) {
        *out = slot->current;
        atomic_fetch_add(&slot->current->refs, 1);
        pthread_mutex_unlock(&e->seg_lock);
        return 0;
    }
    char *name = strdup(slot->name);
    pthread_mutex_unlock(&e->seg_lock);
    if (!name)
        return TE_ERR_MEMORY;
    te_segment *s;
    int rc = resolve(e, id, name, &s);
    free(name);
    if (rc)
        return rc;
    pthread_mutex_lock(&e->seg_lock);
    te_segment *old = e->segments[id].current;
    if (!e->segments[id].health)
        e->segments[id].health = calloc(TE_MAX_TRANSPORTS, sizeof *e->segments[id].health);
    s->health = e->segments[id].health; /* NULL only out of memory: then always usable */
    s->io = e->segments[id].io;
    e->segments[id].current = s;
    e->segments[id].stale = false;
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&e->seg_lock);
    te_segment_put(old);
    *out = s;
    return 0;
}

void te_segment_mark_stale(te_engine *e, te_segment_id id, const te_segment *seen)
{
    pthread_mutex_lock(&e->seg_lock);
    if (id >= 0 && (size_t)id < e->segment_count && e->segments[id].current == seen)
        e->segments[id].stale = true;
    pthread_mutex_unlock(&e->seg_lock);
}

static int find_or_add_slot(te_engine *e, const char *name, te_segment_id *id)
{
    for (size_t i = 0; i < e->segment_count; i++)
        if (e->segments[i].name && !strcmp(e->segments[i].name, name)) {
            *id = (te_segment_id)i;
            return 0;
        }
    if (e->segment_count == e->segment_cap) {
        size_t cap = e->segment_cap ? e->segment_cap * 2 : 16;
        te_segment_slot *n = realloc(e->segments, cap * sizeof *n);
        if (!n)
            return TE_ERR_MEMORY;
        e->segments = n;
        e->segment_cap = cap;
    }
    te_segment_slot *slot = &e->segments[e->segment_count];
    memset(slot, 0, sizeof *slot);
    slot->name = strdup(name);
    slot->io = calloc(1, sizeof *slot->io);
    if (!slot->name || !slot->io) {
        free(slot->name);
        free(slot->io);
        return TE_ERR_MEMORY;
    }
    *id = (te_segment_id)e->segment_count++;
    return 0;
}

int te_segment_open(te_engine *e, const char *name, te_segment_id *id)
{
    if (!e || !name || !id)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "segment open: NULL argument");
    if (!e->initialized)
        return te_fail(TE_ERR_STATE, "segment open: engine not initialized");
    while (*name == '/')
        name++;
    if (!*name || strlen(name) > 900)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "segment open: bad name");
    pthread_mutex_lock(&e->seg_lock);
    te_segment_id sid;
    int rc = !strcmp(name, e->segment_name) ? (sid = 0, 0) : find_or_add_slot(e, name, &sid);
    pthread_mutex_unlock(&e->seg_lock);
    if (rc)
        return rc;
    te_segment *s;
    rc = te_segment_get(e, sid, false, &s);
    if (rc)
        return rc;
    te_segment_put(s);
    *id = sid;
    return 0;
}

int te_segment_close(te_engine *e, te_segment_id id)
{
    if (!e)
        return TE_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&e->seg_lock);
    if (id < 0 || (size_t)id >= e->segment_count || !e->segments[id].name) {
        pthread_mutex_unlock(&e->seg_lock);
        return te_fail(TE_ERR_NOT_FOUND, "segment id %lld is not open", (long long)id);
    }
    te_segment *old = e->segments[id].current;
    e->segments[id].current = NULL;
    pthread_mutex_unlock(&e->seg_lock);
    te_segment_put(old);
    return 0;
}

int te_segment_buffer(te_engine *e, te_segment_id id, size_t index, uint64_t *addr,
                      uint64_t *length)
{
    if (!e || !e->initialized)
        return TE_ERR_STATE;
    te_segment *s;
    int rc = te_segment_get(e, id, false, &s);
    if (rc)
        return rc;
    if (index >= s->desc->buffer_count) {
        rc = TE_ERR_NOT_FOUND;
    } else {
        if (addr)
            *addr = s->desc->buffers_in_order[index].addr;
        if (length)
            *length = s->desc->buffers_in_order[index].length;
    }
    te_segment_put(s);
    return rc;
}

int te_segment_transport(te_engine *e, te_segment_id id, const char **name)
{
    if (!e || !name)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "segment transport: NULL argument");
    if (!e->initialized)
        return te_fail(TE_ERR_STATE, "segment transport: engine not initialized");
    te_segment *s;
    int rc = te_segment_get(e, id, false, &s);
    if (rc)
        return rc;
    *name = e->transports[s->transport].plugin->name; /* plugins stay loaded */
    te_segment_put(s);
    return 0;
}

void te_segments_destroy(te_engine *e)
{
    for (size_t i = 0; i < e->segment_count; i++) {
        te_segment_put(e->segments[i].current);
        free(e->segments[i].name);
        free(e->segments[i].io);
        free(e->segments[i].health);
    }
    free(e->segments);
    e->segments = NULL;
    e->segment_count = e->segment_cap = 0;
    te_segdesc_free(e->local_desc);
    e->local_desc = NULL;
}
