/* config.c - the one typed configuration service: int, bool and string
 * values of the variables declared in config_vars.c, read from the
 * environment on every call (tests vary them between engines), aliases
 * applied, a bad value logged once per variable and value and read as the
 * default.  The core (te_config_load), the plugins (host config_int,
 * config_bool, config), the Python module and te-bench all read through it. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/* The one place that reads the environment: NULL when unset or empty. */
static const char *te_env(const char *name)
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

int te_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || *s == '+')
        return TE_ERR_INVALID_ARGUMENT;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s)
        return TE_ERR_INVALID_ARGUMENT;
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno || *end || v < min || v > max)
        return TE_ERR_INVALID_ARGUMENT;
    *out = v;
    return 0;
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

/* ---- declarations --------------------------------------------------------- */

const te_config_var *te_config_find(const char *name)
{
    for (size_t i = 0; name && i < te_config_nvars; i++)
        if (!strcmp(te_config_vars[i].name, name))
            return &te_config_vars[i];
    return NULL;
}

const te_config_var *te_config_describe(size_t index)
{
    return index < te_config_nvars ? &te_config_vars[index] : NULL;
}

static const char *const type_names[] = {"bool", "int", "string"};

/* The declaration of `name` if it has `type`; otherwise logged and NULL. */
static const te_config_var *declared(const char *name, int type)
{
    const te_config_var *v = te_config_find(name);
    if (!v) {
        te_fail(TE_ERR_INVALID_ARGUMENT,
                "configuration: %s is not a declared variable (see docs/configuration.md)",
                name ? name : "(null)");
        return NULL;
    }
    if (v->type != type) {
        te_fail(TE_ERR_INVALID_ARGUMENT, "configuration: %s is declared as %s, not %s", name,
                type_names[v->type], type_names[type]);
        return NULL;
    }
    return v;
}

/* Other software's variables keep their meaning of empty text:
 * CUDA_VISIBLE_DEVICES="" hides every GPU.  For MC_* empty is unset. */
static const char *own_value(const te_config_var *v)
{
    if (v->type == TE_CONFIG_STRING && strncmp(v->name, "MC_", 3) != 0)
        return getenv(v->name);
    return te_env(v->name);
}

/* The value set for v: its name's, else the first alias's that is set;
 * *used names the variable read. */
static const char *raw_value(const te_config_var *v, const char **used)
{
    static _Thread_local char alias[64];
    const char *val = own_value(v);
    *used = v->name;
    for (const char *p = v->aliases; !val && p && *p;) {
        size_t n = strcspn(p, ",");
        if (n < sizeof alias) {
            memcpy(alias, p, n);
            alias[n] = '\0';
            val = te_env(alias);
            *used = alias;
        }
        p += n + (p[n] == ',');
    }
    if (!val)
        *used = v->name;
    return val;
}

/* ---- warnings, once per variable and value --------------------------------- */

typedef struct warned {
    struct warned *next;
    const te_config_var *var;
    char value[];
} warned;

static pthread_mutex_t g_warned_lock = PTHREAD_MUTEX_INITIALIZER;
static warned *g_warned;
static int g_nwarned;

/* True the first time (v, value) is seen; the list is bounded, past that
 * every bad value is logged again rather than remembered. */
static bool first_warning(const te_config_var *v, const char *value)
{
    bool first = true;
    pthread_mutex_lock(&g_warned_lock);
    for (warned *w = g_warned; w && first; w = w->next)
        first = !(w->var == v && !strcmp(w->value, value));
    if (first && g_nwarned < 1024) {
        warned *w = malloc(sizeof *w + strlen(value) + 1);
        if (w) {
            w->var = v;
            strcpy(w->value, value);
            w->next = g_warned;
            g_warned = w;
            g_nwarned++;
        }
    }
    pthread_mutex_unlock(&g_warned_lock);
    return first;
}

/* ---- typed getters ---------------------------------------------------------- */

int te_config_int(const char *name, int64_t *out)
{
    const te_config_var *v = declared(name, TE_CONFIG_INT);
    if (!v || !out)
        return TE_ERR_INVALID_ARGUMENT;
    const char *used, *val = raw_value(v, &used);
    int64_t x = v->default_int;
    if (val && te_parse_i64(val, v->min, v->max, &x)) {
        x = v->default_int;
        if (first_warning(v, val))
            te_log(TE_LOG_WARN, "config",
                   "ignoring %s=%s: expected an integer in [%lld, %lld], using %lld", used, val,
                   (long long)v->min, (long long)v->max, (long long)x);
    }
    *out = x;
    return 0;
}

int te_config_bool(const char *name, int *out)
{
    const te_config_var *v = declared(name, TE_CONFIG_BOOL);
    if (!v || !out)
        return TE_ERR_INVALID_ARGUMENT;
    const char *used, *val = raw_value(v, &used);
    bool b = v->default_int != 0;
    if (val && te_parse_bool(val, &b)) {
        b = v->default_int != 0;
        if (first_warning(v, val))
            te_log(TE_LOG_WARN, "config",
                   "ignoring %s=%s: expected 1/0, true/false, yes/no, on/off or y/n, using %d",
                   used, val, (int)b);
    }
    *out = b;
    return 0;
}

int te_config_string(const char *name, const char **out)
{
    const te_config_var *v = declared(name, TE_CONFIG_STRING);
    if (!v || !out)
        return TE_ERR_INVALID_ARGUMENT;
    const char *used, *val = raw_value(v, &used);
    *out = val ? val : v->default_string;
    return 0;
}

int64_t te_cfg_int(const char *name)
{
    int64_t x = 0;
    te_config_int(name, &x);
    return x;
}

bool te_cfg_bool(const char *name)
{
    int b = 0;
    te_config_bool(name, &b);
    return b;
}

const char *te_cfg_str(const char *name)
{
    const char *s = NULL;
    te_config_string(name, &s);
    return s;
}

const char *te_config_text(const char *name)
{
    const te_config_var *v = te_config_find(name);
    if (!v)
        return te_env(name); /* a plugin's own, undeclared variable */
    if (v->type == TE_CONFIG_STRING)
        return te_cfg_str(name);
    const char *used;
    return raw_value(v, &used);
}

int te_config_host_int(struct te_host *host, const char *name, int64_t *out)
{
    (void)host;
    return te_config_int(name, out);
}

int te_config_host_bool(struct te_host *host, const char *name, int *out)
{
    (void)host;
    return te_config_bool(name, out);
}

/* ---- the core's settings ---------------------------------------------------- */

static void copy_str(const char *name, char *dst, size_t cap)
{
    const char *v = te_cfg_str(name);
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
    cfg->transfer_timeout_ms = te_cfg_int("MC_TRANSFER_TIMEOUT") * 1000;
    int64_t lo = te_cfg_int("MC_MIN_RPC_PORT"), hi = te_cfg_int("MC_MAX_RPC_PORT");
    if (lo > hi) {
        TE_WARN("ignoring RPC port range %lld..%lld: min > max, using 15000..17000",
                (long long)lo, (long long)hi);
        lo = 15000;
        hi = 17000;
    }
    cfg->min_rpc_port = (uint16_t)lo;
    cfg->max_rpc_port = (uint16_t)hi;
    cfg->handshake_port = (uint16_t)te_cfg_int("MC_HANDSHAKE_PORT");
    cfg->legacy_rpc_binding = te_cfg_bool("MC_LEGACY_RPC_PORT_BINDING");
    cfg->force_tcp = te_cfg_bool("MC_FORCE_TCP");
    cfg->use_ipv6 = te_cfg_bool("MC_USE_IPV6");
    copy_str("MC_TCP_BIND_ADDRESS", cfg->bind_address, sizeof cfg->bind_address);
    copy_str("MC_METADATA_CLUSTER_ID", cfg->cluster_id, sizeof cfg->cluster_id);
    cfg->max_frame = (uint64_t)te_cfg_int("MC_HANDSHAKE_MAX_LENGTH");
    cfg->connect_timeout_ms = (int)te_cfg_int("MC_HANDSHAKE_CONNECT_TIMEOUT") * 1000;
    cfg->rpc_io_timeout_ms = 5000;
    cfg->rpc_max_connections = 256;
    /* Mooncake's classic initiator opens a connection per slice, up to a
     * whole batch (often 1024) at once: the default stays above that. */
    cfg->max_connections_per_peer = (int)te_cfg_int("MC_TE_MAX_CONNECTIONS_PER_PEER");
    cfg->max_batch_size = (uint64_t)te_cfg_int("MC_TE_MAX_BATCH_SIZE");
    copy_str("MC_AUTH_TOKEN", cfg->auth_token, sizeof cfg->auth_token);
}
