/* config.c - settings from MC_* environment variables, validated with
 * defaults.  Read per engine so tests can vary them between engines. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

const char *te_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int te_parse_bool(const char *s, bool *out)
{
    if (!s)
        return TE_ERR_INVALID_ARGUMENT;
    static const char *const yes[] = {"1", "true", "yes", "on", "y"};
    static const char *const no[] = {"0", "false", "no", "off", "n"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return TE_ERR_INVALID_ARGUMENT;
}

int te_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return TE_ERR_INVALID_ARGUMENT;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno || *end || v < min || v > max)
        return TE_ERR_INVALID_ARGUMENT;
    *out = v;
    return 0;
}

static uint64_t env_u64(const char *name, uint64_t def, uint64_t min, uint64_t max)
{
    const char *v = te_env(name);
    uint64_t out;
    if (!v)
        return def;
    if (te_parse_u64(v, min, max, &out)) {
        TE_WARN("ignoring %s=%s: expected an integer in [%llu, %llu], using %llu", name, v,
                (unsigned long long)min, (unsigned long long)max, (unsigned long long)def);
        return def;
    }
    return out;
}

static bool env_bool(const char *name)
{
    const char *v = te_env(name);
    bool out = false;
    if (v && te_parse_bool(v, &out)) {
        TE_WARN("ignoring %s=%s: expected 1/0, true/false, yes/no or on/off", name, v);
        return false;
    }
    return out;
}

static void env_str(const char *name, char *dst, size_t cap)
{
    const char *v = te_env(name);
    dst[0] = '\0';
    if (!v)
        return;
    if (strlen(v) >= cap) {
        TE_WARN("ignoring %s: longer than %zu characters", name, cap - 1);
        return;
    }
    strcpy(dst, v);
}

void te_config_load(te_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->transfer_timeout_ms = (int64_t)env_u64("MC_TRANSFER_TIMEOUT", 30, 1, 86400) * 1000;
    /* The original also reads the misspelt MC_*_PRC_PORT names. */
    const char *min_name = te_env("MC_MIN_RPC_PORT") ? "MC_MIN_RPC_PORT" : "MC_MIN_PRC_PORT";
    const char *max_name = te_env("MC_MAX_RPC_PORT") ? "MC_MAX_RPC_PORT" : "MC_MAX_PRC_PORT";
    uint64_t lo = env_u64(min_name, 15000, 1024, 65535);
    uint64_t hi = env_u64(max_name, 17000, 1024, 65535);
    if (lo > hi) {
        TE_WARN("ignoring RPC port range %llu..%llu: min > max, using 15000..17000",
                (unsigned long long)lo, (unsigned long long)hi);
        lo = 15000;
        hi = 17000;
    }
    cfg->min_rpc_port = (uint16_t)lo;
    cfg->max_rpc_port = (uint16_t)hi;
    cfg->handshake_port = (uint16_t)env_u64("MC_HANDSHAKE_PORT", 12001, 1, 65535);
    cfg->legacy_rpc_binding = env_bool("MC_LEGACY_RPC_PORT_BINDING");
    cfg->force_tcp = env_bool("MC_FORCE_TCP");
    cfg->use_ipv6 = env_bool("MC_USE_IPV6");
    env_str("MC_TCP_BIND_ADDRESS", cfg->bind_address, sizeof cfg->bind_address);
    env_str("MC_METADATA_CLUSTER_ID", cfg->cluster_id, sizeof cfg->cluster_id);
    cfg->max_frame = env_u64("MC_HANDSHAKE_MAX_LENGTH", 1u << 20, 4096, 128u << 20);
    cfg->connect_timeout_ms = (int)env_u64("MC_HANDSHAKE_CONNECT_TIMEOUT", 5, 1, 600) * 1000;
    cfg->rpc_io_timeout_ms = 5000;
    cfg->rpc_max_connections = 256;
    /* Mooncake's classic initiator opens a connection per slice, up to a
     * whole batch (often 1024) at once: the default stays above that. */
    cfg->max_connections_per_peer =
        (int)env_u64("MC_TE_MAX_CONNECTIONS_PER_PEER", 4096, 1, 1u << 20);
    cfg->max_batch_size = env_u64("MC_TE_MAX_BATCH_SIZE", 1u << 20, 1, 1u << 24);
    env_str("MC_AUTH_TOKEN", cfg->auth_token, sizeof cfg->auth_token);
}

/* PLACEHOLDER until the typed configuration service lands: no name is declared yet. */
int te_config_host_int(struct te_host *host, const char *name, int64_t *out)
{
    (void)host;
    (void)name;
    (void)out;
    return TE_ERR_INVALID_ARGUMENT;
}

int te_config_host_bool(struct te_host *host, const char *name, int *out)
{
    (void)host;
    (void)name;
    (void)out;
    return TE_ERR_INVALID_ARGUMENT;
}
