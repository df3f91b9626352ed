/* loader.c - plugin discovery and validation.  Search order: the directories
 * in MC_PLUGIN_PATH (ignored in setuid processes), the te-plugins folder next
 * to libte.so, then the installed plugin folder.  Each file is opened with
 * RTLD_NOW|RTLD_LOCAL|RTLD_NODELETE, its te_plugin_init checked for ABI
 * major, kind, name and table sizes; NULL ops become stubs. */
#include "loader.h"

#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#define MAX_PLUGINS 32

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static te_plugin *g_plugins[MAX_PLUGINS];
static int g_count;

/* ---- stubs for operations a plugin does not provide ---------------------- */

static int stub_create(te_host *h, const te_transport_params *p, void **inst)
{
    return TE_ERR_NOT_IMPLEMENTED;
}
static void stub_destroy(void *inst) {}
static int stub_describe(void *inst, char **json)
{
    *json = NULL;
    return 0; /* no extra members: not an error */
}
static int stub_describe_buffer(void *inst, void *mr, char **json)
{
    *json = NULL;
    return 0;
}
static int stub_register(void *inst, void *addr, size_t len, const char *loc, void **mr)
{
    *mr = NULL;
    return 0; /* a transport with nothing to register accepts every buffer */
}
static int stub_unregister(void *inst, void *mr) { return 0; }
static int stub_peer_open(void *inst, const te_peer_info *p, void **h)
{
    return TE_ERR_NOT_SUPPORTED_TRANSPORT;
}
static void stub_peer_close(void *inst, void *h) {}
static int stub_submit(void *inst, te_slice *const *s, size_t n) { return TE_ERR_NOT_IMPLEMENTED; }
static int stub_ctrl(void *inst, int op, void *arg) { return TE_ERR_NOT_IMPLEMENTED; }
static int stub_meta_create(te_host *h, const char *conn, void **inst)
{
    return TE_ERR_NOT_IMPLEMENTED;
}
static int stub_get(void *inst, const char *key, char **v) { return TE_ERR_NOT_IMPLEMENTED; }
static int stub_put(void *inst, const char *key, const char *v) { return TE_ERR_NOT_IMPLEMENTED; }
static int stub_remove(void *inst, const char *key) { return TE_ERR_NOT_IMPLEMENTED; }

/* Copies member `m` when the plugin's table is big enough to hold it and it
 * is not NULL; otherwise the stub already in `dst` stays. */
#define TAKE(dst, src, type, m)                                                   \
    do {                                                                          \
        if ((src)->size >= offsetof(type, m) + sizeof((src)->m) && (src)->m)      \
            (dst)->m = (src)->m;                                                  \
    } while (0)

/* The size of each table in ABI 1.0; anything smaller is refused. */
#define TRANSPORT_OPS_1_0 (offsetof(te_transport_ops, ctrl) + sizeof(void *))
#define METADATA_OPS_1_0 (offsetof(te_metadata_ops, ctrl) + sizeof(void *))
#define PLUGIN_DESC_1_0 (offsetof(te_plugin_desc, ops) + sizeof(void *))
_Static_assert(sizeof(te_transport_ops) == TRANSPORT_OPS_1_0, "ABI 1.0 te_transport_ops changed");
_Static_assert(sizeof(te_metadata_ops) == METADATA_OPS_1_0, "ABI 1.0 te_metadata_ops changed");
_Static_assert(sizeof(te_plugin_desc) == PLUGIN_DESC_1_0, "ABI 1.0 te_plugin_desc changed");
_Static_assert(sizeof(te_slice) == 96, "ABI 1.0 te_slice changed");
/* The host table of ABI 1.0 ends with max_connections_per_peer (22
 * services); 1.1 appended the three CUDA services and host_identity, 1.2
 * cuda_device_of, 1.3 config_int, config_bool, cuda_progress_wait and
 * listen_in_range.
 * Members only ever go at the end, with a minor bump. */
#define HOST_API_1_0 (offsetof(te_host_api, max_connections_per_peer) + sizeof(void *))
_Static_assert(HOST_API_1_0 == 8 + 22 * sizeof(void *), "ABI 1.0 te_host_api changed");
_Static_assert(offsetof(te_host_api, cuda_runtime) == HOST_API_1_0, "ABI 1.1 must extend 1.0");
#define HOST_API_1_1 (offsetof(te_host_api, host_identity) + sizeof(void *))
_Static_assert(HOST_API_1_1 == 8 + 26 * sizeof(void *), "ABI 1.1 te_host_api changed");
_Static_assert(offsetof(te_host_api, cuda_device_of) == HOST_API_1_1, "ABI 1.2 must extend 1.1");
#define HOST_API_1_2 (offsetof(te_host_api, cuda_device_of) + sizeof(void *))
_Static_assert(HOST_API_1_2 == 8 + 27 * sizeof(void *), "ABI 1.2 te_host_api changed");
_Static_assert(offsetof(te_host_api, config_int) == HOST_API_1_2, "ABI 1.3 must extend 1.2");
_Static_assert(sizeof(te_host_api) == 8 + 31 * sizeof(void *), "ABI 1.3 te_host_api changed");

static void fill_transport(te_transport_ops *dst, const te_transport_ops *src)
{
    *dst = (te_transport_ops){
        .size = sizeof *dst, .caps = src->caps, .slice_size = src->slice_size,
        .create = stub_create, .destroy = stub_destroy, .describe = stub_describe,
        .register_memory = stub_register, .unregister_memory = stub_unregister,
        .describe_buffer = stub_describe_buffer, .peer_open = stub_peer_open,
        .peer_close = stub_peer_close, .submit = stub_submit, .ctrl = stub_ctrl};
    TAKE(dst, src, te_transport_ops, create);
    TAKE(dst, src, te_transport_ops, destroy);
    TAKE(dst, src, te_transport_ops, describe);
    TAKE(dst, src, te_transport_ops, register_memory);
    TAKE(dst, src, te_transport_ops, unregister_memory);
    TAKE(dst, src, te_transport_ops, describe_buffer);
    TAKE(dst, src, te_transport_ops, peer_open);
    TAKE(dst, src, te_transport_ops, peer_close);
    TAKE(dst, src, te_transport_ops, submit);
    TAKE(dst, src, te_transport_ops, ctrl);
}

static void fill_metadata(te_metadata_ops *dst, const te_metadata_ops *src)
{
    *dst = (te_metadata_ops){.size = sizeof *dst, .caps = src->caps, .create = stub_meta_create,
                             .destroy = stub_destroy, .get = stub_get, .put = stub_put,
                             .remove = stub_remove, .ctrl = stub_ctrl};
    TAKE(dst, src, te_metadata_ops, create);
    TAKE(dst, src, te_metadata_ops, destroy);
    TAKE(dst, src, te_metadata_ops, get);
    TAKE(dst, src, te_metadata_ops, put);
    TAKE(dst, src, te_metadata_ops, remove);
    TAKE(dst, src, te_metadata_ops, ctrl);
}

static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 48)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static void dir_of_libte(char *out, size_t out_len)
{
    Dl_info info;
    out[0] = '\0';
    if (dladdr((void *)&te_plugin_load, &info) && info.dli_fname) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", info.dli_fname);
        snprintf(out, out_len, "%s/" TE_PLUGIN_SUBDIR, dirname(tmp));
    }
}

void te_plugin_search_path(char *out, size_t out_len)
{
    char here[4096];
    dir_of_libte(here, sizeof here);
    const char *env = getauxval(AT_SECURE) ? NULL : te_cfg_str("MC_PLUGIN_PATH");
    snprintf(out, out_len, "%s%s%s:" TE_PLUGIN_INSTALL_DIR, env && *env ? env : "",
             env && *env ? ":" : "", here);
}

static const char *kind_name(uint32_t kind)
{
    return kind == TE_PLUGIN_TRANSPORT ? "transport" : kind == TE_PLUGIN_METADATA ? "metadata" : "?";
}

/* Tries one file.  0 on success; otherwise appends why to `why`. */
static int try_file(const char *path, const char *name, uint32_t kind, te_plugin *p, char *why,
                    size_t why_len)
{
    size_t used = strlen(why);
#define WHY(...) snprintf(why + used, why_len - used, __VA_ARGS__)
    if (access(path, F_OK) != 0) {
        WHY("\n  %s: no such file", path);
        return -1;
    }
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!h) {
        WHY("\n  %s: dlopen failed: %s", path, dlerror());
        return -1;
    }
    te_plugin_init_fn init;
    *(void **)&init = dlsym(h, TE_PLUGIN_INIT_SYMBOL);
    if (!init) {
        WHY("\n  %s: no symbol " TE_PLUGIN_INIT_SYMBOL " (not a te plugin?)", path);
        return -1;
    }
    const te_plugin_desc *d = NULL;
    int rc = init(&te_host_api_table, &d);
    if (rc != 0 || !d) {
        WHY("\n  %s: " TE_PLUGIN_INIT_SYMBOL " failed: %s (%d)", path, te_strerror(rc), rc);
        return -1;
    }
    if (d->size < offsetof(te_plugin_desc, abi_minor) + sizeof d->abi_minor) {
        WHY("\n  %s: descriptor too small (%u bytes)", path, d->size);
        return -1;
    }
    if (d->abi_major != TE_PLUGIN_ABI_MAJOR) {
        WHY("\n  %s: plugin built for ABI %u.%u, core is %u.%u", path, d->abi_major,
            d->abi_minor, TE_PLUGIN_ABI_MAJOR, TE_PLUGIN_ABI_MINOR);
        return -1;
    }
    if (d->size < PLUGIN_DESC_1_0 || !d->ops || !d->name) {
        WHY("\n  %s: incomplete descriptor (size %u)", path, d->size);
        return -1;
    }
    if (d->kind != kind) {
        WHY("\n  %s: is a %s plugin, wanted %s", path, kind_name(d->kind), kind_name(kind));
        return -1;
    }
    if (strcmp(d->name, name) != 0) {
        WHY("\n  %s: calls itself '%s', wanted '%s'", path, d->name, name);
        return -1;
    }
    uint32_t ops_size = *(const uint32_t *)d->ops;
    size_t min = kind == TE_PLUGIN_TRANSPORT ? TRANSPORT_OPS_1_0 : METADATA_OPS_1_0;
    if (ops_size < min) {
        WHY("\n  %s: ops table of %u bytes, ABI %u.0 needs %zu", path, ops_size,
            TE_PLUGIN_ABI_MAJOR, min);
        return -1;
    }
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->path, sizeof p->path, "%s", path);
    p->kind = kind;
    p->abi_minor = d->abi_minor;
    p->desc = d;
    if (kind == TE_PLUGIN_TRANSPORT)
        fill_transport(&p->transport, d->ops);
    else
        fill_metadata(&p->metadata, d->ops);
    return 0;
#undef WHY
}

static int load(const char *name, uint32_t kind, int quiet, const te_plugin **out)
{
    if (!name || !valid_name(name))
        return te_fail(TE_ERR_INVALID_ARGUMENT,
                       "plugin name '%s' is not valid (letters a-z, digits, '_', '-')",
                       name ? name : "(null)");
    char file[96];
    snprintf(file, sizeof file, "libte_%s.so", name);
    for (char *c = file; *c; c++)
        if (*c == '-')
            *c = '_';

    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_count; i++)
        if (g_plugins[i]->kind == kind && !strcmp(g_plugins[i]->name, name)) {
            *out = g_plugins[i];
            pthread_mutex_unlock(&g_lock);
            return 0;
        }
    char search[8192], why[8192] = "";
    te_plugin_search_path(search, sizeof search);
    te_plugin *p = calloc(1, sizeof *p);
    int rc = TE_ERR_PLUGIN;
    char *save = NULL;
    for (char *dir = strtok_r(search, ":", &save); p && dir; dir = strtok_r(NULL, ":", &save)) {
        if (!*dir)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (try_file(path, name, kind, p, why, sizeof why) == 0) {
            if (g_count < MAX_PLUGINS)
                g_plugins[g_count++] = p;
            *out = p;
            rc = 0;
            te_log(TE_LOG_INFO, "loader", "loaded %s plugin %s from %s (ABI %u.%u)",
                   kind_name(kind), name, path, TE_PLUGIN_ABI_MAJOR, p->abi_minor);
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (rc) {
        free(p);
        if (quiet) {
            te_set_error("cannot load %s plugin '%s' (%s); tried:%s", kind_name(kind), name, file,
                         why);
            return TE_ERR_PLUGIN;
        }
        return te_fail(TE_ERR_PLUGIN, "cannot load %s plugin '%s' (%s); tried:%s", kind_name(kind),
                       name, file, why);
    }
    return 0;
}

int te_plugin_load(const char *name, uint32_t kind, const te_plugin **out)
{
    return load(name, kind, 0, out);
}

int te_plugin_load_quiet(const char *name, uint32_t kind, const te_plugin **out)
{
    return load(name, kind, 1, out);
}
