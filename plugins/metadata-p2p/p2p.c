/* p2p.c - the P2PHANDSHAKE metadata "store": nothing is stored; a peer's
 * segment name is "host:rpc_port" and its descriptor is asked from its RPC
 * port with a Metadata frame, as the original does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "te/plugin.h"


typedef struct p2p {
    te_host *host;
} p2p;

static int p2p_create(te_host *host, const char *conn, void **inst)
{
    p2p *p = calloc(1, sizeof *p);
    if (!p)
        return TE_ERR_MEMORY;
    p->host = host;
    *inst = p;
    return 0;
}

static void p2p_destroy(void *inst)
{
    free(inst);
}

static int fetch_descriptor(p2p *p, const char *name, char **value)
{
    char host[256];
    uint16_t port;
    if (te_host_table->parse_host_port(name, host, sizeof host, &port, 0) || port == 0) {
        te_host_table->set_error("P2P segment name '%s' is not host:port", name);
        return TE_ERR_INVALID_ARGUMENT;
    }
    /* The original sends its own descriptor; peers ignore it, but send it
     * for compatibility with peers that might read it. */
    char *mine = NULL;
    int rc = te_host_table->local_descriptor(p->host, &mine);
    if (rc)
        return rc;
    size_t len = 0;
    rc = te_host_table->rpc_call(p->host, host, port, TE_RPC_METADATA, mine, strlen(mine), value, &len, 0);
    free(mine);
    if (rc)
        te_host_table->log(p->host, TE_LOG_WARN, "metadata-p2p", "cannot fetch descriptor of %s", name);
    return rc == TE_ERR_SOCKET || rc == TE_ERR_DNS ? TE_ERR_METADATA : rc;
}

static int p2p_get(void *inst, const char *key, char **value)
{
    p2p *p = inst;
    const char *name;
    int kind = te_host_table->parse_meta_key(p->host, key, &name);
    *value = NULL;
    if (kind == TE_META_KEY_SEGMENT)
        return fetch_descriptor(p, name, value);
    if (kind == TE_META_KEY_RPC) {
        char host[256], buf[400];
        uint16_t port;
        if (te_host_table->parse_host_port(name, host, sizeof host, &port, 0) || port == 0)
            return TE_ERR_INVALID_ARGUMENT;
        snprintf(buf, sizeof buf, "{\"ip_or_host_name\":\"%s\",\"rpc_port\":%u}", host, port);
        *value = strdup(buf);
        return *value ? 0 : TE_ERR_MEMORY;
    }
    te_host_table->set_error("P2P metadata keeps no key %s", key);
    return TE_ERR_NOT_FOUND;
}

/* Nothing to publish: peers ask us directly. */
static int p2p_put(void *inst, const char *key, const char *value)
{
    return 0;
}

static int p2p_remove(void *inst, const char *key)
{
    return 0;
}

static const te_metadata_ops ops = {
    .size = sizeof ops,
    .caps = TE_METADATA_CAP_PEER_TO_PEER,
    .create = p2p_create,
    .destroy = p2p_destroy,
    .get = p2p_get,
    .put = p2p_put,
    .remove = p2p_remove,
};


TE_PLUGIN_DEFINE(TE_PLUGIN_METADATA, "metadata_p2p", "1.0", &ops, advertised_host)
