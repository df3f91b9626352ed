/* fuzz_config.c - MC_* environment values (user input): te_parse_u64,
 * te_parse_i64, te_parse_bool and te_config_load, whose results must stay in range
 * whatever the values are. */
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_util.h"
#include "te/te.h"

static const char *const vars[] = {
    "MC_TRANSFER_TIMEOUT", "MC_MIN_RPC_PORT",        "MC_MAX_RPC_PORT",
    "MC_HANDSHAKE_PORT",   "MC_LEGACY_RPC_PORT_BINDING", "MC_FORCE_TCP",
    "MC_TCP_BIND_ADDRESS", "MC_METADATA_CLUSTER_ID", "MC_HANDSHAKE_MAX_LENGTH",
    "MC_HANDSHAKE_CONNECT_TIMEOUT", "MC_MIN_PRC_PORT", "MC_USE_IPV6",
};
#define NVARS (sizeof vars / sizeof *vars)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_setup_env();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Lines are the values of vars[] in order; missing lines unset them. */
    char *all = fuzz_strndup(data, size);
    char *line = all;
    for (size_t i = 0; i < NVARS; i++) {
        char *nl = line ? strchr(line, '\n') : NULL;
        if (nl)
            *nl = '\0';
        if (line)
            setenv(vars[i], line, 1);
        else
            unsetenv(vars[i]);
        line = nl ? nl + 1 : NULL;
    }
    te_config cfg;
    te_config_load(&cfg);
    FUZZ_ASSERT(cfg.transfer_timeout_ms >= 1000 && cfg.transfer_timeout_ms <= 86400000LL,
                "timeout %lld", (long long)cfg.transfer_timeout_ms);
    FUZZ_ASSERT(cfg.min_rpc_port >= 1024 && cfg.min_rpc_port <= cfg.max_rpc_port,
                "ports %u..%u", cfg.min_rpc_port, cfg.max_rpc_port);
    FUZZ_ASSERT(cfg.handshake_port >= 1, "handshake port 0");
    FUZZ_ASSERT(cfg.max_frame >= 4096 && cfg.max_frame <= (128u << 20), "max frame %llu",
                (unsigned long long)cfg.max_frame);
    FUZZ_ASSERT(cfg.connect_timeout_ms >= 1000 && cfg.connect_timeout_ms <= 600000,
                "connect timeout %d", cfg.connect_timeout_ms);
    FUZZ_ASSERT(strlen(cfg.bind_address) < sizeof cfg.bind_address &&
                    strlen(cfg.cluster_id) < sizeof cfg.cluster_id,
                "strings overflow");

    /* The whole input as one value for the two parsers. */
    uint64_t v;
    const char *s = all;
    if (te_parse_u64(s, 5, 1000, &v) == 0)
        FUZZ_ASSERT(v >= 5 && v <= 1000, "u64 %llu out of [5, 1000]", (unsigned long long)v);
    int64_t sv;
    if (te_parse_i64(s, -7, 7, &sv) == 0)
        FUZZ_ASSERT(sv >= -7 && sv <= 7, "i64 %lld out of [-7, 7]", (long long)sv);
    bool b;
    int rc = te_parse_bool(s, &b);
    FUZZ_ASSERT(rc == 0 || rc == TE_ERR_INVALID_ARGUMENT, "bool status %d", rc);
    free(all);
    for (size_t i = 0; i < NVARS; i++)
        unsetenv(vars[i]);
    return 0;
}
