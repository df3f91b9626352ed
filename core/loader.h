/* loader.h - finds, loads and validates plugins. */
#ifndef TE_CORE_LOADER_H
#define TE_CORE_LOADER_H

#include "te/plugin.h"

/* A loaded plugin with its ops copied into full-size tables in which every
 * operation the plugin left NULL (or is too old to have) is a core stub. */
typedef struct te_plugin {
    char name[64];
    char path[4096];
    uint32_t kind;
    uint16_t abi_minor;
    const te_plugin_desc *desc;
    te_transport_ops transport; /* valid when kind == TE_PLUGIN_TRANSPORT */
    te_metadata_ops metadata;   /* valid when kind == TE_PLUGIN_METADATA */
} te_plugin;

/* Loads plugin `name` of `kind` (file libte_<name>.so; metadata stores are
 * named "metadata_<type>").  Plugins are loaded once per process and kept.
 * On failure returns TE_ERR_PLUGIN (TE_ERR_INVALID_ARGUMENT for a bad name)
 * with te_last_error() naming every file tried and why. */
int te_plugin_load(const char *name, uint32_t kind, const te_plugin **out);
/* The same, setting te_last_error() without logging a warning (optional plugins). */
int te_plugin_load_quiet(const char *name, uint32_t kind, const te_plugin **out);

/* The directories searched, in order, separated by ':' (for messages). */
void te_plugin_search_path(char *out, size_t out_len);

extern const te_host_api te_host_api_table;

#endif
