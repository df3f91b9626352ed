/* fuzz_topology.c - the file named by MC_CUSTOM_TOPO_JSON (user input that
 * replaces hardware discovery): validation, the priority matrix output and
 * the NIC list for memory locations. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "te/te.h"
#include "topology.h"

static int g_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_setup_env();
    g_fd = memfd_create("te-fuzz-topo", MFD_CLOEXEC);
    if (g_fd < 0)
        abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", g_fd);
    setenv("MC_CUSTOM_TOPO_JSON", path, 1);
    return 0;
}

static void check_array_of_strings(const char *text)
{
    json_error_t err;
    json_t *a = json_loads(text, 0, &err);
    FUZZ_ASSERT(json_is_array(a), "NIC list '%s' is not an array", text);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) FUZZ_ASSERT(json_is_string(v), "NIC list item %zu", i);
    json_decref(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_fd < 0 && LLVMFuzzerInitialize(NULL, NULL))
        return 0;
    if (ftruncate(g_fd, 0) || (size && pwrite(g_fd, data, size, 0) != (ssize_t)size))
        abort();
    char *json = NULL;
    int rc = te_topology_local_json(NULL, &json);
    if (rc) {
        FUZZ_ASSERT(rc == TE_ERR_MALFORMED_JSON || rc == TE_ERR_INVALID_ARGUMENT,
                    "status %d", rc);
        FUZZ_ASSERT(json == NULL, "output on failure");
        return 0;
    }
    json_error_t err;
    json_t *m = json_loads(json, 0, &err);
    FUZZ_ASSERT(json_is_object(m), "matrix output is not an object: %s", json);
    /* Each key of the accepted matrix, plus "*" and an unknown location. */
    const char *key;
    json_t *v;
    int n = 0;
    json_object_foreach(m, key, v) {
        if (n++ >= 4)
            break;
        char *nics = NULL;
        FUZZ_ASSERT(te_topology_nics_json(NULL, key, &nics) == 0, "nics for '%s'", key);
        check_array_of_strings(nics);
        free(nics);
    }
    static const char *const extra[] = {"*", "cuda:99", NULL};
    for (int i = 0; i < 3; i++) {
        char *nics = NULL;
        FUZZ_ASSERT(te_topology_nics_json("", extra[i], &nics) == 0, "nics for %s",
                    extra[i] ? extra[i] : "NULL");
        check_array_of_strings(nics);
        free(nics);
    }
    json_decref(m);
    free(json);
    return 0;
}
