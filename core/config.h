/* config.h - engine settings read from the MC_* environment variables,
 * through the one typed configuration service (te_config_int/bool/string in
 * te.h) over the declarations of config_vars.c. */
#ifndef TE_CORE_CONFIG_H
#define TE_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "te/te.h"

typedef struct te_config {
    int64_t transfer_timeout_ms;   /* MC_TRANSFER_TIMEOUT (s), default 30, >= 1 */
    uint16_t min_rpc_port;         /* MC_MIN_RPC_PORT, default 15000 */
    uint16_t max_rpc_port;         /* MC_MAX_RPC_PORT, default 17000 */
    uint16_t handshake_port;       /* MC_HANDSHAKE_PORT, default 12001 */
    bool legacy_rpc_binding;       /* MC_LEGACY_RPC_PORT_BINDING */
    bool force_tcp;                /* MC_FORCE_TCP */
    bool use_ipv6;                 /* MC_USE_IPV6 */
    char bind_address[256];        /* MC_TCP_BIND_ADDRESS, "" if unset */
    char cluster_id[128];          /* MC_METADATA_CLUSTER_ID, "" if unset */
    uint64_t max_frame;            /* MC_HANDSHAKE_MAX_LENGTH, 1 MiB default, 4 KiB..128 MiB */
    int connect_timeout_ms;        /* MC_HANDSHAKE_CONNECT_TIMEOUT (s), default 5 */
    int rpc_io_timeout_ms;         /* per-connection RPC read/write limit, 5 s */
    int rpc_max_connections;       /* concurrent RPC connections served, 64 */
    int max_connections_per_peer;  /* MC_TE_MAX_CONNECTIONS_PER_PEER, per port, 4096 */
    uint64_t max_batch_size;       /* MC_TE_MAX_BATCH_SIZE, 1048576 */
    char auth_token[256];          /* MC_AUTH_TOKEN, "" = no authentication */
} te_config;

/* Fills *cfg from the environment; bad values are logged and replaced by the
 * default, never fatal. */
void te_config_load(te_config *cfg);

/* Parsers shared with tests: 0 on success, TE_ERR_INVALID_ARGUMENT otherwise. */
int te_parse_bool(const char *s, bool *out);
int te_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
int te_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* The declarations (config_vars.c) and a lookup by name (NULL: undeclared). */
extern const te_config_var te_config_vars[];
extern const size_t te_config_nvars;
const te_config_var *te_config_find(const char *name);

/* A declared variable's text (aliases applied, the default when unset), or
 * for an undeclared name the environment's raw text: the host's `config`. */
const char *te_config_text(const char *name);

/* Host services config_int and config_bool (see te_host_api). */
struct te_host;
int te_config_host_int(struct te_host *host, const char *name, int64_t *out);
int te_config_host_bool(struct te_host *host, const char *name, int *out);

/* The core's shorthands of te_config_int/bool/string for declared names:
 * the value, or 0 / false / NULL (and a log line) for an undeclared one. */
int64_t te_cfg_int(const char *name);
bool te_cfg_bool(const char *name);
const char *te_cfg_str(const char *name);

#endif
