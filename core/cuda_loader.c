/* cuda_loader.c - opens the CUDA runtime and driver with dlopen, with one
 * search order for every part of the engine, so that all of them end up on
 * the same library in one process.  Handles stay open for the process. */
#include "cuda_loader.h"

#include "te/te.h"

#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const runtime_names[] = {"libcudart.so.13", "libcudart.so.12",
                                            "libcudart.so.11.0", "libcudart.so"};
#define NRUNTIMES (sizeof runtime_names / sizeof *runtime_names)

void *cudl_open_runtime(char *why, size_t why_len)
{
    const char *forced = NULL; /* the public getter: tests and the Python module link this file */
    te_config_string("MC_CUDART_LIBRARY", &forced);
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

/* The loaded object whose file name starts with "libcuda.so", if any. */
static int find_libcuda(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    const char *name = info->dlpi_name;
    const char *base = name ? strrchr(name, '/') : NULL;
    base = base ? base + 1 : name;
    if (!base || strncmp(base, "libcuda.so", strlen("libcuda.so")) != 0)
        return 0;
    snprintf(arg, PATH_MAX, "%s", name);
    return 1;
}

/*
 * Asked for every registration and every shm slice that needs a location, so
 * it must cost next to nothing.  dlopen("libcuda.so.1", RTLD_NOLOAD) by bare
 * name searches the library path (about 30 openat calls and 0.6 ms a call);
 * a walk of the loaded-object list (dl_iterate_phdr) makes no system call,
 * and by full path RTLD_NOLOAD matches the loaded object without a search.
 * CUDA may be loaded after the first call, so until it is found every call
 * looks again; once found, the handle is kept for the process (the driver is
 * never unloaded under a running CUDA application, and our reference makes
 * sure).
 */
void *cudl_loaded_driver(void)
{
    static _Atomic(void *) driver;
    void *h = atomic_load_explicit(&driver, memory_order_acquire);
    if (h)
        return h;
    char path[PATH_MAX];
    if (!dl_iterate_phdr(find_libcuda, path))
        return NULL;
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!h)
        return NULL;
    void *none = NULL;
    if (!atomic_compare_exchange_strong(&driver, &none, h)) {
        dlclose(h); /* another thread kept its reference first */
        return none;
    }
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

/* From cuda.h (stable driver ABI since CUDA 9.2). */
#define CU_POINTER_ATTRIBUTE_MEMORY_TYPE 2
#define CU_POINTER_ATTRIBUTE_IS_MANAGED 8
#define CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL 9
#define CU_MEMORYTYPE_DEVICE 2

/* The driver API rather than libcudart's cudaPointerGetAttributes, whose
 * struct layout changed across versions and which leaves a sticky "last
 * error" the application would see later. */
cudl_pointer_attr_fn cudl_pointer_attr(void)
{
    static _Atomic(cudl_pointer_attr_fn) cached;
    cudl_pointer_attr_fn get = atomic_load_explicit(&cached, memory_order_acquire);
    if (get)
        return get;
    void *lib = cudl_loaded_driver();
    if (!lib || !cudl_sym(lib, "cuPointerGetAttribute", &get, NULL, 0))
        return NULL;
    atomic_store_explicit(&cached, get, memory_order_release); /* every thread stores the same */
    return get;
}

int cudl_device_ordinal(cudl_pointer_attr_fn get, const void *addr)
{
    unsigned int type = 0, managed = 0;
    int ordinal = -1;
    unsigned long long p = (unsigned long long)(uintptr_t)addr;
    /* Host memory unknown to CUDA fails the first call. */
    if (!get || get(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p) != 0 ||
        type != CU_MEMORYTYPE_DEVICE)
        return -1;
    if (get(&managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, p) == 0 && managed)
        return -1;
    if (get(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p) != 0 || ordinal < 0)
        return -1;
    return ordinal;
}
