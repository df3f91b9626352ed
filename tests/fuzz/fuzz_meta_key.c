/* fuzz_meta_key.c - metadata keys as a store lists them
 * ("mooncake/[cluster/]ram/<name>", ".../rpc_meta/<name>"): parsing with
 * any cluster id, and build/parse round trips for any segment name. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "segdesc.h"
#include "te/plugin.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_setup_env();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* cluster "\n" key: the first line is the cluster id (possibly empty). */
    char *all = fuzz_strndup(data, size);
    char *nl = strchr(all, '\n');
    const char *cluster = "", *key = all;
    if (nl) {
        *nl = '\0';
        cluster = all;
        key = nl + 1;
    }
    /* MC_METADATA_CLUSTER_ID holds at most 127 characters (config.h). */
    int sane_cluster = strlen(cluster) < 128;
    const char *name = NULL;
    int kind = te_meta_parse_key(cluster, key, &name);
    FUZZ_ASSERT(kind == TE_META_KEY_OTHER || kind == TE_META_KEY_SEGMENT ||
                    kind == TE_META_KEY_RPC,
                "kind %d", kind);
    FUZZ_ASSERT(name >= key && name <= key + strlen(key), "name points outside the key");

    /* The rest of the input as a segment name: keys we build parse back. */
    static const size_t caps[] = {8, 64, 1024};
    for (size_t i = 0; i < sizeof caps / sizeof *caps; i++) {
        char *out = malloc(caps[i]);
        if (te_meta_rpc_key(cluster, key, out, caps[i]) == 0) {
            FUZZ_ASSERT(strlen(out) < caps[i], "key overflows");
            if (sane_cluster) {
                const char *back;
                FUZZ_ASSERT(te_meta_parse_key(cluster, out, &back) == TE_META_KEY_RPC &&
                                !strcmp(back, key),
                            "rpc key '%s' does not parse back to '%s'", out, key);
            }
        }
        /* Names beginning "ram/" or "rpc_meta/" are ambiguous in Mooncake's key
         * scheme itself; every other name must come back unchanged. */
        if (te_meta_segment_key(cluster, key, out, caps[i]) == 0 && *key &&
            sane_cluster && strncmp(key, "ram/", 4) && strncmp(key, "rpc_meta/", 9)) {
            const char *back;
            FUZZ_ASSERT(te_meta_parse_key(cluster, out, &back) == TE_META_KEY_SEGMENT &&
                            !strcmp(back, key),
                        "segment key '%s' does not parse back to '%s'", out, key);
        }
        free(out);
    }
    free(all);
    return 0;
}
