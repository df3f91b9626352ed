/* cuda_loader.c - opens the CUDA runtime and driver with dlopen, with one
 * search order for every part of the engine, so that all of them end up on
 * the same library in one process.  Handles stay open for the process. */
#include "cuda_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const runtime_names[] = {"libcudart.so.13", "libcudart.so.12",
                                            "libcudart.so.11.0", "libcudart.so"};
#define NRUNTIMES (sizeof runtime_names / sizeof *runtime_names)

void *cudl_open_runtime(char *why, size_t why_len)
{
    const char *forced = getenv("MC_CUDART_LIBRARY");
    if (forced && *forced) { /* no fallback: an unloadable name disables CUDA */
        void *h = dlopen(forced, RTLD_NOW | RTLD_LOCAL);
        if (!h)
            snprintf(why, why_len, "CUDA runtime %s (MC_CUDART_LIBRARY) cannot be loaded: %s",
                     forced, dlerror());
        return h;
    }
    /* The first pass takes one already loaded: the application's, not a second copy. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < NRUNTIMES; i++) {
            void *h = dlopen(runtime_names[i], RTLD_NOW | RTLD_LOCAL | (pass ? 0 : RTLD_NOLOAD));
            if (h)
                return h;
        }
    snprintf(why, why_len, "CUDA runtime not found (tried libcudart.so.13, .12, .11.0, .so)");
    return NULL;
}

void *cudl_open_driver(int load, char *why, size_t why_len)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!h && load)
        h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h && why)
        snprintf(why, why_len, "CUDA driver libcuda.so.1 %s: %s",
                 load ? "cannot be loaded" : "is not loaded", dlerror());
    return h;
}

int cudl_sym(void *lib, const char *name, void *fn_ptr, char *why, size_t why_len)
{
    void *f = dlsym(lib, name);
    if (!f) {
        if (why)
            snprintf(why, why_len, "symbol %s missing from the CUDA library", name);
        return 0;
    }
    memcpy(fn_ptr, &f, sizeof f); /* ISO C has no cast from void * to a function pointer */
    return 1;
}
