/* rpc_builtin.c - the RPC port's built-in handlers: Metadata (our segment
 * descriptor), Notify (a peer's notification, queued by notify.c) and Probe
 * (an answer that the port is alive), and te_probe(), which finds a peer's
 * RPC address and sends it a Probe. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"
#include "hostport.h"

#define MAX_NOTIFY_FIELD (64u << 10)
/* A probed name longer than this cannot fit a metadata key with its prefix. */
#define PROBE_NAME_MAX 900

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
    char key[TE_META_KEY_MAX], *json = NULL;
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
    if (!*peer_name || strlen(peer_name) > PROBE_NAME_MAX)
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
