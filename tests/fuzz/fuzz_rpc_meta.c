/* fuzz_rpc_meta.c - the rpc_meta value a metadata store returns for a peer
 * ({"ip_or_host_name": ..., "rpc_port": ...}): te_rpc_meta_decode into
 * host buffers of several sizes, and encode/decode round trips. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "segdesc.h"
#include "te/te.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_setup_env();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = fuzz_strndup(data, size);
    static const size_t sizes[] = {1, 2, 16, 256};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t cap = sizes[i];
        char *host = malloc(cap); /* exact size: ASan sees any overflow */
        uint16_t port = 0;
        int rc = te_rpc_meta_decode(json, host, cap, &port);
        if (rc == 0) {
            size_t n = strnlen(host, cap);
            FUZZ_ASSERT(n > 0 && n < cap, "host of %zu bytes in a buffer of %zu", n, cap);
            FUZZ_ASSERT(port > 0, "port 0 accepted");
            /* What we decode, we can write back and read again identically. */
            char *again = NULL;
            if (te_rpc_meta_encode(host, port, &again) == 0) {
                char host2[256];
                uint16_t port2 = 0;
                FUZZ_ASSERT(te_rpc_meta_decode(again, host2, sizeof host2, &port2) == 0 &&
                                port2 == port && strlen(host2) == n && !memcmp(host2, host, n),
                            "round trip of %s", again);
                free(again);
            }
        } else {
            FUZZ_ASSERT(rc == TE_ERR_MALFORMED_JSON, "status %d", rc);
        }
        free(host);
    }
    free(json);
    return 0;
}
