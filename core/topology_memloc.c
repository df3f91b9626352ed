/* topology_memloc.c - where a buffer lives: "cuda:N" for GPU memory (asked
 * of the CUDA driver the process already uses, never linked), "cpu:N" for
 * the NUMA node of its first page (move_pages), "*" when unknown. */
#include "topology.h"

#include <dlfcn.h>
#include <limits.h>
#include <link.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

/* From cuda.h (stable driver ABI since CUDA 9.2). */
#define TE_CU_POINTER_ATTRIBUTE_MEMORY_TYPE 2
#define TE_CU_POINTER_ATTRIBUTE_IS_MANAGED 8
#define TE_CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL 9
#define TE_CU_MEMORYTYPE_DEVICE 2

typedef int (*cu_pointer_get_attribute_fn)(void *data, int attribute, unsigned long long ptr);

/*
 * Device memory can only exist in a process that has loaded the CUDA driver
 * (libcuda.so.1, which the runtime loads on its first call), so we only use
 * a driver that is already loaded: a CPU-only process never loads or
 * initialises CUDA because of us.  The driver API is asked rather than
 * libcudart's cudaPointerGetAttributes, whose struct layout changed across
 * versions and which leaves a sticky "last error" the application would
 * later see.  CUDA may be loaded after the first registration, so until it
 * is found every call looks again.  That look is a walk of the loaded-object
 * list (dl_iterate_phdr: no system call): dlopen("libcuda.so.1",
 * RTLD_NOLOAD) by bare name searched the library path (about 30 openat calls
 * and 0.6 ms per call), which made registering many regions, and every shm
 * slice that asks for a location, cost far more than the memory needs.
 * Once found, the handle is kept for the process (the driver is never
 * unloaded under a running CUDA application, and our reference makes sure).
 */
static _Atomic(cu_pointer_get_attribute_fn) cu_get_attr;

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

static cu_pointer_get_attribute_fn cuda_driver(void)
{
    cu_pointer_get_attribute_fn get = atomic_load_explicit(&cu_get_attr, memory_order_acquire);
    if (get)
        return get;
    char path[PATH_MAX];
    if (!dl_iterate_phdr(find_libcuda, path))
        return NULL;
    /* By full path, RTLD_NOLOAD matches the loaded object without a search. */
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!lib)
        return NULL;
    *(void **)&get = dlsym(lib, "cuPointerGetAttribute");
    if (!get) {
        dlclose(lib);
        return NULL;
    }
    cu_pointer_get_attribute_fn none = NULL;
    if (!atomic_compare_exchange_strong(&cu_get_attr, &none, get))
        dlclose(lib); /* another thread kept its reference first */
    return get;
}

static int cuda_location(const void *addr, char *out, size_t out_len)
{
    cu_pointer_get_attribute_fn get = cuda_driver();
    if (!get)
        return 0;
    unsigned int type = 0, managed = 0;
    int ordinal = -1;
    unsigned long long p = (unsigned long long)(uintptr_t)addr;
    /* Host memory unknown to CUDA fails the first call: not device memory.
     * Managed memory reports as "device" but lives wherever it was last
     * touched; like the original, only plain device memory is "cuda:N". */
    if (get(&type, TE_CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p) == 0 &&
        type == TE_CU_MEMORYTYPE_DEVICE &&
        (get(&managed, TE_CU_POINTER_ATTRIBUTE_IS_MANAGED, p) != 0 || !managed) &&
        get(&ordinal, TE_CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p) == 0 && ordinal >= 0) {
        snprintf(out, out_len, "cuda:%d", ordinal);
        return 1;
    }
    return 0;
}

/* move_pages with nodes == NULL moves nothing and reports the node of each
 * page, or -ENOENT for a page never touched (then the location is unknown:
 * we never touch the caller's memory to find out).  One page, the first,
 * whatever the length: a registration costs the same for 4 KiB and 64 GiB. */
static int numa_location(const void *addr, char *out, size_t out_len)
{
    long page_size = sysconf(_SC_PAGESIZE);
    if (page_size <= 0)
        return 0;
    void *page = (void *)((uintptr_t)addr & ~((uintptr_t)page_size - 1));
    int status = -1;
    if (syscall(SYS_move_pages, 0, 1UL, &page, NULL, &status, 0) != 0 || status < 0)
        return 0;
    snprintf(out, out_len, "cpu:%d", status);
    return 1;
}

int te_topology_memory_location(const void *addr, size_t len, char *out, size_t out_len)
{
    if (!out || out_len == 0)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "memory location: no output buffer");
    snprintf(out, out_len, "*");
    if (!addr)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "memory location: NULL address");
    if (cuda_location(addr, out, out_len) || numa_location(addr, out, out_len))
        return 0;
    snprintf(out, out_len, "*");
    return 0;
}
