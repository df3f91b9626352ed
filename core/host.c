/* host.c - the services table handed to plugins (te_host_api). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "auth.h"
#include "clock.h"
#include "config.h"
#include "cuda_loader.h"
#include "hostport.h"
#include "log.h"
#include "net.h"
#include "topology.h"

static void host_log(te_host *h, int level, const char *plugin, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    te_vlog(level, plugin, fmt, ap);
    va_end(ap);
}

static void host_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    te_vset_error(fmt, ap);
    va_end(ap);
}

/* Text of a variable: declared ones with their aliases and defaults, any
 * other name (a plugin's own) straight from the environment. */
static const char *host_config(te_host *h, const char *name)
{
    return te_config_text(name);
}

static int host_rpc_set_handler(te_host *h, int type, te_rpc_handler fn, void *arg)
{
    te_engine *e = te_engine_of(h);
    if (type == TE_RPC_METADATA || type == TE_RPC_NOTIFY || type == TE_RPC_PROBE)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "RPC type %d belongs to the core", type);
    return te_rpc_server_set_handler(&e->rpc, type, fn, arg);
}

static int host_rpc_call(te_host *h, const char *peer_host, uint16_t port, int type,
                         const char *req, size_t req_len, char **reply, size_t *reply_len,
                         int timeout_ms)
{
    te_engine *e = te_engine_of(h);
    if (timeout_ms <= 0) /* a lookup should not outlast the transfer it serves */
        timeout_ms = (int)(e->cfg.connect_timeout_ms < e->cfg.transfer_timeout_ms
                               ? e->cfg.connect_timeout_ms
                               : e->cfg.transfer_timeout_ms);
    return te_rpc_call(peer_host, port, type, req, req_len, reply, reply_len, timeout_ms,
                       e->cfg.max_frame, e->cfg.auth_token);
}

static int host_pin_range(te_host *h, uint64_t addr, uint64_t len, void **pin)
{
    te_region *r;
    int rc = te_memreg_pin(&te_engine_of(h)->memreg, addr, len, &r);
    *pin = rc ? NULL : r;
    return rc;
}

static void host_unpin_range(te_host *h, void *pin)
{
    if (pin)
        te_memreg_unpin(&te_engine_of(h)->memreg, pin);
}

static const char *host_segment_name(te_host *h)
{
    return te_engine_of(h)->segment_name;
}

static int host_local_descriptor(te_host *h, char **json)
{
    return te_local_descriptor_json(te_engine_of(h), json);
}

static int host_parse_meta_key(te_host *h, const char *key, const char **name)
{
    return te_meta_parse_key(te_engine_of(h)->cfg.cluster_id, key, name);
}

static const char *host_advertised_host(te_host *h)
{
    return te_engine_of(h)->advertised_host;
}

static int host_topology(te_host *h, char **json)
{
    return te_topology_local_json(te_engine_of(h)->device_filter, json);
}

static int host_topology_nics(te_host *h, const char *location, char **json_array)
{
    return te_topology_nics_json(te_engine_of(h)->device_filter, location, json_array);
}

static void host_metric_add(te_host *h, int metric, uint64_t value)
{
    te_metrics *m = &te_engine_of(h)->metrics;
    if (metric == TE_METRIC_RETRIES)
        atomic_fetch_add_explicit(&m->retries, value, memory_order_relaxed);
    else if (metric == TE_METRIC_RAIL_PAUSES)
        atomic_fetch_add_explicit(&m->rail_pauses, value, memory_order_relaxed);
}

static int host_auth_accept(te_host *h, int fd, int64_t deadline)
{
    return te_auth_accept(te_engine_of(h)->cfg.auth_token, fd, deadline);
}

static int host_auth_connect(te_host *h, int fd, int64_t deadline)
{
    return te_auth_connect(te_engine_of(h)->cfg.auth_token, fd, deadline);
}

static int host_max_connections_per_peer(te_host *h)
{
    return te_engine_of(h)->cfg.max_connections_per_peer;
}

static int read_first_line(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char *ok = fgets(out, (int)len, f);
    fclose(f);
    if (!ok)
        return -1;
    out[strcspn(out, "\r\n")] = '\0';
    return out[0] ? 0 : -1;
}

/* ABI 1.2 cuda_device_of: the loader's answer, shared with the topology and
 * the route, so plugins no longer carry their own pointer-attribute code. */
static int host_cuda_device_of(const void *addr)
{
    return addr ? cudl_device_ordinal(cudl_pointer_attr(), addr) : -1;
}

/* One kernel has one boot id; processes copy each other's memory by pid only
 * in one pid namespace; the hostname is there for people reading it. */
static int host_identity(int with_pid_namespace, char *out, size_t len)
{
    char boot[64], pidns[64] = "pid:?", name[256] = "";
    if (read_first_line("/proc/sys/kernel/random/boot_id", boot, sizeof boot))
        return -1;
    ssize_t n = readlink("/proc/self/ns/pid", pidns, sizeof pidns - 1);
    if (n > 0)
        pidns[n] = '\0';
    if (gethostname(name, sizeof name - 1))
        name[0] = '\0';
    name[sizeof name - 1] = '\0';
    if (with_pid_namespace)
        snprintf(out, len, "%s/%s/%s", boot, pidns, name);
    else
        snprintf(out, len, "%s/%s", boot, name);
    return 0;
}

const te_host_api te_host_api_table = {
    .size = sizeof(te_host_api),
    .abi_major = TE_PLUGIN_ABI_MAJOR,
    .abi_minor = TE_PLUGIN_ABI_MINOR,
    .log = host_log,
    .set_error = host_set_error,
    .config = host_config,
    .slice_done = te_slice_done,
    .rpc_set_handler = host_rpc_set_handler,
    .rpc_call = host_rpc_call,
    .notify_deliver = te_notify_deliver,
    .pin_range = host_pin_range,
    .unpin_range = host_unpin_range,
    .segment_name = host_segment_name,
    .local_descriptor = host_local_descriptor,
    .parse_host_port = te_parse_host_port,
    .parse_meta_key = host_parse_meta_key,
    .now_ns = te_now_ns,
    .advertised_host = host_advertised_host,
    .topology = host_topology,
    .topology_nics = host_topology_nics,
    .memory_location = te_topology_memory_location,
    .metric_add = host_metric_add,
    .auth_accept = host_auth_accept,
    .auth_connect = host_auth_connect,
    .max_connections_per_peer = host_max_connections_per_peer,
    .cuda_runtime = cudl_open_runtime,
    .cuda_driver = cudl_open_driver,
    .cuda_symbol = cudl_sym,
    .host_identity = host_identity,
    .cuda_device_of = host_cuda_device_of,
    .config_int = te_config_host_int,
    .config_bool = te_config_host_bool,
    .cuda_progress_wait = te_cuda_progress_wait,
    .listen_in_range = te_net_listen_in_range,
};
