/* engine.c - the engine's public lifetime and memory calls: create,
 * initialize (metadata store, RPC port, transports, first publish),
 * register/unregister, destroy. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "connstr.h"
#include "hostport.h"
#include "log.h"
#include "net.h"
#include "topology.h"

#define RPC_BACKLOG 128 /* pending connections on the RPC port */

te_engine *te_engine_create(void)
{
    te_log_init();
    te_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->host.engine = e;
    te_config_load(&e->cfg);
    pthread_mutex_init(&e->init_lock, NULL);
    pthread_mutex_init(&e->seg_lock, NULL);
    pthread_mutex_init(&e->batch_lock, NULL);
    pthread_mutex_init(&e->notify_lock, NULL);
    pthread_mutex_init(&e->sender_lock, NULL);
    pthread_cond_init(&e->sender_cond, NULL);
    te_memreg_init(&e->memreg);
    te_metrics_init(&e->metrics);
    return e;
}

/* ---- initialize ------------------------------------------------------------ */

/* Picks the metadata plugin and its connection string from the arguments of
 * initialize()/initialize_ext() (see te.h and the reference, section 1.1). */
int te_choose_metadata(const char *server, const char *type, char *plugin, size_t plen,
                       const char **conn)
{
    if (!server || !*server)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "metadata server is empty");
    const char *sep = strstr(server, "://");
    if (!strcmp(server, "P2PHANDSHAKE") || (type && !strcasecmp(type, "p2p") && !sep)) {
        snprintf(plugin, plen, "metadata_p2p");
        *conn = server;
        return 0;
    }
    char scheme[32];
    if (sep) {
        size_t n = (size_t)(sep - server);
        if (n == 0 || n >= sizeof scheme)
            return te_fail(TE_ERR_INVALID_ARGUMENT, "metadata server '%s' has a bad scheme",
                           server);
        memcpy(scheme, server, n);
        scheme[n] = '\0';
        *conn = sep + 3;
    } else {
        snprintf(scheme, sizeof scheme, "%s", type && *type ? type : "etcd");
        *conn = server;
    }
    for (char *c = scheme; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    if (!strcmp(scheme, "https"))
        snprintf(scheme, sizeof scheme, "http");
    if (!strcmp(scheme, "http"))
        *conn = server; /* the HTTP store wants the whole URL */
    snprintf(plugin, plen, "metadata_%s", scheme);
    return 0;
}

static int start_rpc(te_engine *e, const char *host, uint16_t port_hint)
{
    int fd = -1;
    uint16_t port = 0;
    if (!e->p2p && e->cfg.legacy_rpc_binding) {
        fd = te_net_listen(NULL, port_hint, RPC_BACKLOG, &port);
        if (fd < 0)
            return te_fail(TE_ERR_SOCKET, "cannot bind the RPC port %u (MC_LEGACY_RPC_PORT_BINDING)",
                           port_hint);
    } else {
        fd = te_net_listen_in_range(e->cfg.min_rpc_port, e->cfg.max_rpc_port, RPC_BACKLOG, &port);
        if (fd < 0)
            return te_fail(TE_ERR_SOCKET, "no free RPC port in %u..%u", e->cfg.min_rpc_port,
                           e->cfg.max_rpc_port);
    }
    e->rpc_port = port;
    int rc = te_rpc_server_start(&e->rpc, fd, port, e->cfg.max_frame, e->cfg.rpc_io_timeout_ms,
                                 e->cfg.rpc_max_connections, e->cfg.max_connections_per_peer,
                                 e->cfg.auth_token);
    if (rc)
        close(fd);
    /* The built-in handlers are installed once initialization is complete:
     * until then frames are refused, never served from half-built state. */
    return rc;
}

static void stop_everything(te_engine *e);

/* Where peers reach us: the host part in P2P, else MC_TCP_BIND_ADDRESS or
 * the first LAN address (like the original). */
static int choose_advertised_host(te_engine *e, const char *host)
{
    if (e->p2p)
        snprintf(e->advertised_host, sizeof e->advertised_host, "%s", host);
    else if (e->cfg.bind_address[0])
        snprintf(e->advertised_host, sizeof e->advertised_host, "%s", e->cfg.bind_address);
    else if (te_net_first_lan_address(e->cfg.use_ipv6, e->advertised_host,
                                      sizeof e->advertised_host))
        return te_fail(TE_ERR_SOCKET, "initialize: no LAN address to advertise; set "
                                      "MC_TCP_BIND_ADDRESS (e.g. 127.0.0.1 on a loopback-only host)");
    return 0;
}

/* Steps 1-2: the metadata plugin (loaded, not started) and, from it, whether
 * we are peer-to-peer; then the address we advertise and the RPC listener,
 * which decide our segment name. */
static int load_metadata_and_listen(te_engine *e, const char *local_hostname, const char *plugin)
{
    char host[256];
    uint16_t port;
    if (te_parse_host_port(local_hostname, host, sizeof host, &port, e->cfg.handshake_port))
        return te_fail(TE_ERR_INVALID_ARGUMENT, "initialize: local_hostname '%s' is not host[:port]",
                       local_hostname);
    int rc = te_plugin_load(plugin, TE_PLUGIN_METADATA, &e->metadata_plugin);
    if (rc)
        return rc;
    e->p2p = (e->metadata_plugin->metadata.caps & TE_METADATA_CAP_PEER_TO_PEER) != 0;
    rc = choose_advertised_host(e, host);
    if (!rc)
        rc = start_rpc(e, host, port);
    if (rc)
        return rc;
    if (e->p2p)
        te_format_host_port(host, e->rpc_port, e->segment_name, sizeof e->segment_name);
    else
        snprintf(e->segment_name, sizeof e->segment_name, "%s", local_hostname);
    return 0;
}

/* Step 3: the metadata store, then failover (before any transport can
 * report a slice), the transports and the notification sender. */
static int start_store_and_transports(te_engine *e, const char *plugin, const char *conn,
                                      const char *protocol, const char *device_name)
{
    int rc = e->metadata_plugin->metadata.create(&e->host, conn, &e->metadata);
    if (rc)
        return te_fail(rc, "metadata store %s (%s) failed to start: %s", plugin, conn,
                       te_last_error());
    snprintf(e->device_filter, sizeof e->device_filter, "%s", device_name ? device_name : "");
    rc = te_failover_start(e);
    if (!rc)
        rc = te_transports_start(e, protocol, device_name);
    if (!rc)
        rc = te_sender_start(e);
    return rc;
}

/* Step 4: our own segment, always id 0. */
static int add_own_segment(te_engine *e)
{
    pthread_mutex_lock(&e->seg_lock);
    e->segments = calloc(16, sizeof *e->segments);
    e->segment_cap = e->segments ? 16 : 0;
    if (e->segments && (e->segments[0].name = strdup(e->segment_name)) &&
        (e->segments[0].io = calloc(1, sizeof *e->segments[0].io)))
        e->segment_count = 1;
    pthread_mutex_unlock(&e->seg_lock);
    return e->segment_count ? 0 : TE_ERR_MEMORY;
}

/* Step 5: our descriptor and, with a central store, where our RPC port is. */
static int publish_self(te_engine *e)
{
    int rc = te_engine_publish(e);
    if (rc || e->p2p)
        return rc;
    char key[TE_META_KEY_MAX], *json = NULL;
    rc = te_meta_rpc_key(e->cfg.cluster_id, e->segment_name, key, sizeof key);
    if (!rc)
        rc = te_rpc_meta_encode(e->advertised_host, e->rpc_port, &json);
    if (!rc)
        rc = e->metadata_plugin->metadata.put(e->metadata, key, json);
    free(json);
    if (rc)
        rc = te_fail(rc, "publishing rpc_meta of %s failed: %s", e->segment_name,
                     te_last_error());
    return rc;
}

/* The steps in order, under init_lock; the caller undoes whatever a failed
 * step left started (stop_everything copes with any prefix of them). */
static int initialize_steps(te_engine *e, const char *local_hostname, const char *metadata_server,
                            const char *protocol, const char *device_name,
                            const char *metadata_type, char *plugin, size_t plen)
{
    const char *conn = NULL;
    int rc = te_choose_metadata(metadata_server, metadata_type, plugin, plen, &conn);
    if (!rc)
        rc = load_metadata_and_listen(e, local_hostname, plugin);
    if (!rc)
        rc = start_store_and_transports(e, plugin, conn, protocol, device_name);
    if (!rc)
        rc = add_own_segment(e);
    if (!rc)
        rc = publish_self(e);
    if (!rc)
        rc = te_metrics_start(e);
    return rc;
}

int te_engine_initialize(te_engine *e, const char *local_hostname, const char *metadata_server,
                         const char *protocol, const char *device_name, const char *metadata_type)
{
    if (!e || !local_hostname || !*local_hostname)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "initialize: local_hostname is empty");
    pthread_mutex_lock(&e->init_lock);
    if (e->initialized) {
        pthread_mutex_unlock(&e->init_lock);
        return te_fail(TE_ERR_STATE, "initialize: engine already initialized");
    }
    char plugin[64];
    int rc = initialize_steps(e, local_hostname, metadata_server, protocol, device_name,
                              metadata_type, plugin, sizeof plugin);
    if (rc) {
        stop_everything(e);
        pthread_mutex_unlock(&e->init_lock);
        return rc;
    }
    te_rpc_install_builtin(e);
    e->initialized = true;
    pthread_mutex_unlock(&e->init_lock);
    te_log(TE_LOG_INFO, "core", "engine %s ready: transport %s, metadata %s, RPC port %u",
           e->segment_name, e->transports[e->preferred].plugin->name, plugin,
           e->rpc_port);
    te_clear_error();
    return 0;
}

int te_engine_rpc_port(const te_engine *e)
{
    if (!e || !e->initialized)
        return TE_ERR_STATE;
    return e->rpc_port;
}

const char *te_engine_segment_name(const te_engine *e)
{
    return e && e->initialized ? e->segment_name : NULL;
}

const char *te_engine_protocol(const te_engine *e)
{
    return e && e->initialized ? e->transports[e->preferred].plugin->name : NULL;
}

/* ---- memory ---------------------------------------------------------------- */

static void unregister_from_transports(te_engine *e, te_region *r, int upto)
{
    for (int i = 0; i < upto; i++)
        e->transports[i].ops->unregister_memory(e->transports[i].inst, r->mr[i]);
}

static int register_one(te_engine *e, void *addr, size_t length, const char *location,
                        te_region **out)
{
    if (!addr || length == 0 || (uintptr_t)addr + length < (uintptr_t)addr)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "register: bad range %p+%zu", addr, length);
    te_region *r = calloc(1, sizeof *r);
    if (!r)
        return TE_ERR_MEMORY;
    r->addr = (uint64_t)(uintptr_t)addr;
    r->length = length;
    /* "*" asks us to find out, as the original does: the RDMA transport
     * picks its NICs, and peers theirs, by the buffer's location. */
    if (!location || !*location || strcmp(location, "*") == 0)
        te_topology_memory_location(addr, length, r->location, sizeof r->location);
    else
        snprintf(r->location, sizeof r->location, "%s", location);
    if (te_memreg_overlaps(&e->memreg, r->addr, r->length)) {
        free(r);
        return te_fail(TE_ERR_ADDRESS_OVERLAPPED, "register: %p+%zu overlaps a registered range",
                       addr, length);
    }
    for (int i = 0; i < e->transport_count; i++) {
        int rc = e->transports[i].ops->register_memory(e->transports[i].inst, addr, length,
                                                       r->location, &r->mr[i]);
        if (rc) {
            unregister_from_transports(e, r, i);
            free(r);
            return te_fail(rc, "register: transport %s refused %p+%zu: %s",
                           e->transports[i].plugin->name, addr, length, te_last_error());
        }
    }
    int rc = te_memreg_insert(&e->memreg, r);
    if (rc) {
        unregister_from_transports(e, r, e->transport_count);
        free(r);
        return te_fail(rc, "register: %p+%zu overlaps a registered range", addr, length);
    }
    atomic_fetch_add(&e->metrics.registered_bytes, (int64_t)r->length);
    *out = r;
    return 0;
}

static void unregister_region(te_engine *e, uint64_t addr)
{
    te_region *r;
    if (te_memreg_remove(&e->memreg, addr, &r) == 0) {
        atomic_fetch_sub(&e->metrics.registered_bytes, (int64_t)r->length);
        unregister_from_transports(e, r, e->transport_count);
        free(r);
    }
}

int te_register_memory_batch(te_engine *e, const te_buffer_entry *entries, size_t count,
                             const char *location)
{
    if (!e || (!entries && count))
        return te_fail(TE_ERR_INVALID_ARGUMENT, "register: NULL argument");
    if (!e->initialized)
        return te_fail(TE_ERR_STATE, "register: engine not initialized");
    if (count == 0)
        return 0;
    size_t done = 0;
    int rc = 0;
    for (; done < count; done++) {
        te_region *r;
        rc = register_one(e, entries[done].addr, entries[done].length, location, &r);
        if (rc)
            break;
    }
    if (!rc)
        rc = te_engine_publish(e);
    if (rc) { /* all or nothing */
        for (size_t i = 0; i < done; i++)
            unregister_region(e, (uint64_t)(uintptr_t)entries[i].addr);
        if (done == count)
            te_engine_publish(e);
    }
    return rc;
}

int te_register_memory(te_engine *e, void *addr, size_t length, const char *location)
{
    te_buffer_entry one = {addr, length};
    return te_register_memory_batch(e, &one, 1, location);
}

int te_unregister_memory_batch(te_engine *e, void *const *addrs, size_t count)
{
    if (!e || (!addrs && count))
        return te_fail(TE_ERR_INVALID_ARGUMENT, "unregister: NULL argument");
    if (!e->initialized)
        return te_fail(TE_ERR_STATE, "unregister: engine not initialized");
    int rc = 0, removed = 0;
    for (size_t i = 0; i < count; i++) {
        te_region *r;
        int st = te_memreg_remove(&e->memreg, (uint64_t)(uintptr_t)addrs[i], &r);
        if (st) {
            rc = te_fail(st, "unregister: %p is not the start of a registered range", addrs[i]);
            continue;
        }
        atomic_fetch_sub(&e->metrics.registered_bytes, (int64_t)r->length);
        unregister_from_transports(e, r, e->transport_count);
        free(r);
        removed++;
    }
    if (removed) {
        int prc = te_engine_publish(e);
        if (!rc)
            rc = prc;
    }
    return rc;
}

int te_unregister_memory(te_engine *e, void *addr)
{
    return te_unregister_memory_batch(e, &addr, 1);
}

/* ---- teardown --------------------------------------------------------------- */

static void unregister_all(te_region *r, void *arg)
{
    te_engine *e = arg;
    unregister_from_transports(e, r, e->transport_count);
}

static void stop_everything(te_engine *e)
{
    te_metrics_stop(e);
    te_rpc_server_stop(&e->rpc);
    te_batches_quiesce(e);
    te_failover_stop(e);
    te_sender_stop(e);
    te_segments_destroy(e);
    te_memreg_foreach(&e->memreg, unregister_all, e);
    for (int i = e->transport_count - 1; i >= 0; i--)
        e->transports[i].ops->destroy(e->transports[i].inst);
    e->transport_count = 0;
    if (e->metadata) {
        /* Take our keys away (the P2P store has none). */
        char key[TE_META_KEY_MAX];
        if (e->segment_name[0] && !te_meta_segment_key(e->cfg.cluster_id, e->segment_name, key, sizeof key))
            e->metadata_plugin->metadata.remove(e->metadata, key);
        if (e->segment_name[0] && !e->p2p &&
            !te_meta_rpc_key(e->cfg.cluster_id, e->segment_name, key, sizeof key))
            e->metadata_plugin->metadata.remove(e->metadata, key);
        e->metadata_plugin->metadata.destroy(e->metadata);
        e->metadata = NULL;
    }
    e->segment_name[0] = '\0';
}

void te_engine_destroy(te_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->init_lock);
    if (e->initialized)
        stop_everything(e);
    e->initialized = false;
    pthread_mutex_unlock(&e->init_lock);
    te_batches_destroy(e);
    te_failover_destroy(e);
    te_notifies_clear(e);
    te_memreg_destroy(&e->memreg);
    pthread_mutex_destroy(&e->init_lock);
    pthread_mutex_destroy(&e->seg_lock);
    pthread_mutex_destroy(&e->batch_lock);
    pthread_mutex_destroy(&e->notify_lock);
    pthread_mutex_destroy(&e->sender_lock);
    pthread_cond_destroy(&e->sender_cond);
    free(e);
}
