/* notify.c - notifications and the built-in RPC handlers (Metadata, Notify,
 * Probe).  Received notifications queue until te_notifies_drain(). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"
#include "net.h"

#define MAX_NOTIFY_FIELD (64u << 10)
#define MAX_QUEUED_NOTIFIES 100000

void te_notify_deliver(te_host *h, const char *name, const char *msg)
{
    te_engine *e = te_engine_of(h);
    te_notify_node *n = calloc(1, sizeof *n);
    if (!n || !(n->name = strdup(name)) || !(n->msg = strdup(msg))) {
        if (n)
            free(n->name);
        free(n);
        te_log(TE_LOG_ERROR, "notify", "out of memory: notification dropped");
        return;
    }
    pthread_mutex_lock(&e->notify_lock);
    if (e->notify_count >= MAX_QUEUED_NOTIFIES) {
        pthread_mutex_unlock(&e->notify_lock);
        te_log(TE_LOG_WARN, "notify", "%d notifications not drained: dropping one from a peer",
               MAX_QUEUED_NOTIFIES);
        free(n->name);
        free(n->msg);
        free(n);
        return;
    }
    if (e->notify_tail)
        e->notify_tail->next = n;
    else
        e->notify_head = n;
    e->notify_tail = n;
    e->notify_count++;
    pthread_mutex_unlock(&e->notify_lock);
}

int te_notifies_drain(te_engine *e, te_notify **out, size_t *count)
{
    if (!e || !out || !count)
        return TE_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&e->notify_lock);
    te_notify_node *head = e->notify_head;
    e->notify_head = e->notify_tail = NULL;
    size_t taken = e->notify_count;
    e->notify_count = 0;
    pthread_mutex_unlock(&e->notify_lock);
    size_t n = 0;
    for (te_notify_node *p = head; p; p = p->next)
        n++;
    *out = NULL;
    *count = 0;
    te_notify *arr = n ? calloc(n, sizeof *arr) : NULL;
    if (n && !arr) {
        /* Put them back rather than lose them. */
        pthread_mutex_lock(&e->notify_lock);
        te_notify_node *tail = head;
        while (tail->next)
            tail = tail->next;
        tail->next = e->notify_head;
        e->notify_head = head;
        if (!e->notify_tail)
            e->notify_tail = tail;
        e->notify_count += taken;
        pthread_mutex_unlock(&e->notify_lock);
        return TE_ERR_MEMORY;
    }
    size_t i = 0;
    while (head) {
        te_notify_node *next = head->next;
        arr[i].name = head->name;
        arr[i].msg = head->msg;
        i++;
        free(head);
        head = next;
    }
    *out = arr;
    *count = n;
    return 0;
}

void te_notifies_free(te_notify *notifies, size_t count)
{
    for (size_t i = 0; notifies && i < count; i++) {
        free(notifies[i].name);
        free(notifies[i].msg);
    }
    free(notifies);
}

void te_notifies_clear(te_engine *e)
{
    te_notify *arr;
    size_t n;
    if (te_notifies_drain(e, &arr, &n) == 0)
        te_notifies_free(arr, n);
}

int te_notify_send(te_engine *e, te_segment *seg, const char *name, const char *msg)
{
    json_t *o = json_pack("{s:s, s:s}", "name", name, "notify_msg", msg);
    char *req = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!req)
        return TE_ERR_MEMORY;
    char *reply = NULL;
    int rc = te_rpc_call(seg->rpc_host, seg->rpc_port, TE_RPC_NOTIFY, req, strlen(req), &reply,
                         NULL, e->cfg.connect_timeout_ms, e->cfg.max_frame, e->cfg.auth_token);
    free(req);
    free(reply);
    if (rc)
        return te_fail(rc, "notification to %s failed", seg->desc->name);
    return 0;
}

int te_send_notify(te_engine *e, te_segment_id target, const char *name, const char *msg)
{
    if (!e || !name || !msg)
        return TE_ERR_INVALID_ARGUMENT;
    if (!e->initialized)
        return TE_ERR_STATE;
    te_segment *s;
    int rc = te_segment_get(e, target, false, &s);
    if (rc)
        return rc;
    rc = te_notify_send(e, s, name, msg);
    te_segment_put(s);
    return rc;
}

/* ---- built-in RPC handlers ------------------------------------------------ */

static int reply_json(json_t *o, char **reply, size_t *len)
{
    *reply = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!*reply)
        return TE_ERR_MEMORY;
    *len = strlen(*reply);
    return 0;
}

static int on_metadata(void *arg, const char *req, size_t req_len, char **reply, size_t *len)
{
    te_engine *e = arg;
    int rc = te_local_descriptor_json(e, reply);
    if (rc)
        return rc;
    *len = strlen(*reply);
    return 0;
}

static int on_notify(void *arg, const char *req, size_t req_len, char **reply, size_t *len)
{
    te_engine *e = arg;
    json_error_t jerr;
    json_t *o = json_loadb(req, req_len, 0, &jerr);
    json_t *name = json_object_get(o, "name");
    json_t *msg = json_object_get(o, "notify_msg");
    if (!json_is_string(name) || !json_is_string(msg) ||
        json_string_length(name) > MAX_NOTIFY_FIELD || json_string_length(msg) > MAX_NOTIFY_FIELD ||
        strlen(json_string_value(name)) != json_string_length(name) ||
        strlen(json_string_value(msg)) != json_string_length(msg)) {
        json_decref(o);
        te_log(TE_LOG_WARN, "rpc", "malformed notification frame ignored");
        return reply_json(json_pack("{s:s, s:s}", "name", "", "notify_msg", "malformed"), reply,
                          len);
    }
    te_notify_deliver(&e->host, json_string_value(name), json_string_value(msg));
    json_decref(o);
    return reply_json(json_pack("{s:s, s:s}", "name", "", "notify_msg", "success"), reply, len);
}

static int on_probe(void *arg, const char *req, size_t req_len, char **reply, size_t *len)
{
    return reply_json(json_pack("{s:s}", "status", "success"), reply, len);
}

int te_rpc_install_builtin(te_engine *e)
{
    te_rpc_server_set_handler(&e->rpc, TE_RPC_METADATA, on_metadata, e);
    te_rpc_server_set_handler(&e->rpc, TE_RPC_NOTIFY, on_notify, e);
    te_rpc_server_set_handler(&e->rpc, TE_RPC_PROBE, on_probe, e);
    return 0;
}

/* The RPC address a probe goes to, found as the original does it: our own
 * name locally, a P2P name by parsing host:port, otherwise the peer's
 * rpc_meta entry (missing: TE_ERR_METADATA).  No descriptor is fetched. */
static int probe_address(te_engine *e, const char *name, char *host, size_t cap, uint16_t *port)
{
    if (!strcmp(name, e->segment_name)) {
        snprintf(host, cap, "%s", e->advertised_host);
        *port = e->rpc_port;
        return 0;
    }
    if (e->p2p)
        return te_parse_host_port(name, host, cap, port, e->cfg.handshake_port)
                   ? te_fail(TE_ERR_INVALID_ARGUMENT, "probe: P2P name '%s' is not host:port",
                             name)
                   : 0;
    char key[1024], *json = NULL;
    int rc = te_meta_rpc_key(e->cfg.cluster_id, name, key, sizeof key);
    if (rc)
        return te_fail(rc, "probe: segment name too long: %s", name);
    rc = e->metadata_plugin->metadata.get(e->metadata, key, &json);
    if (rc || !json) {
        free(json);
        return te_fail(TE_ERR_METADATA, "probe: no RPC address of segment %s", name);
    }
    rc = te_rpc_meta_decode(json, host, cap, port);
    free(json);
    return rc ? te_fail(TE_ERR_METADATA, "probe: bad rpc_meta of segment %s", name) : 0;
}

int te_probe(te_engine *e, const char *peer_name)
{
    if (!e || !peer_name)
        return TE_ERR_INVALID_ARGUMENT;
    if (!e->initialized)
        return TE_ERR_STATE;
    while (*peer_name == '/')
        peer_name++;
    if (!*peer_name || strlen(peer_name) > 900)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "probe: bad name");
    char host[256], *reply = NULL;
    uint16_t port;
    int rc = probe_address(e, peer_name, host, sizeof host, &port);
    if (rc)
        return rc;
    rc = te_rpc_call(host, port, TE_RPC_PROBE, "{}", 2, &reply, NULL, e->cfg.connect_timeout_ms,
                     e->cfg.max_frame, e->cfg.auth_token);
    free(reply);
    /* As the original's socket handshake: a peer that cannot be connected to,
     * or that drops the exchange, is ERR_SOCKET whatever the errno was. */
    if (rc == TE_ERR_TIMEOUT || rc == TE_ERR_PEER_CLOSED)
        rc = TE_ERR_SOCKET;
    return rc;
}
