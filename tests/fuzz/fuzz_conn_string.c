/* fuzz_conn_string.c - the metadata server and protocol strings given to
 * initialize(): which store plugin they name (te_choose_metadata) and how
 * the loader treats any name (it must refuse path tricks and never find a
 * plugin outside its search folders). */
#include <stdlib.h>
#include <string.h>

#include "connstr.h"
#include "fuzz_util.h"
#include "loader.h"
#include "te/te.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_setup_env();
    /* An empty search folder: every lookup fails after checking the name. */
    setenv("MC_PLUGIN_PATH", "/nonexistent-te-fuzz-plugins", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* server "\n" metadata_type; no newline: no type (initialize()). */
    char *all = fuzz_strndup(data, size);
    char *nl = strchr(all, '\n');
    const char *type = NULL;
    if (nl) {
        *nl = '\0';
        type = nl + 1;
    }
    static const size_t caps[] = {1, 12, 64};
    for (size_t i = 0; i < sizeof caps / sizeof *caps; i++) {
        char *plugin = malloc(caps[i]);
        const char *conn = NULL;
        int rc = te_choose_metadata(all, type, plugin, caps[i], &conn);
        if (rc) {
            FUZZ_ASSERT(rc == TE_ERR_INVALID_ARGUMENT, "status %d", rc);
            free(plugin);
            continue;
        }
        FUZZ_ASSERT(strnlen(plugin, caps[i]) < caps[i], "plugin name not terminated");
        FUZZ_ASSERT(conn && conn >= all && conn <= all + strlen(all),
                    "connection string outside the server string");
        if (caps[i] == 64) {
            FUZZ_ASSERT(!strncmp(plugin, "metadata_", 9), "plugin '%s'", plugin);
            const te_plugin *p = NULL;
            rc = te_plugin_load(plugin, TE_PLUGIN_METADATA, &p);
            FUZZ_ASSERT(rc == TE_ERR_PLUGIN || rc == TE_ERR_INVALID_ARGUMENT ||
                            (rc == 0 && !strcmp(p->name, plugin)), /* an installed one */
                        "plugin '%s' from '%s' gave %d", plugin, all, rc);
        }
        free(plugin);
    }
    /* The type string doubles as a protocol (transport plugin) name. */
    if (type) {
        const te_plugin *p = NULL;
        int rc = te_plugin_load(type, TE_PLUGIN_TRANSPORT, &p);
        FUZZ_ASSERT(rc == TE_ERR_PLUGIN || rc == TE_ERR_INVALID_ARGUMENT ||
                        (rc == 0 && !strcmp(p->name, type)),
                    "protocol '%s' gave %d", type, rc);
    }
    free(all);
    return 0;
}
