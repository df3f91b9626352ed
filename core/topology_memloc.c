/* topology_memloc.c - where a buffer lives: "cuda:N" for GPU memory (asked
 * of the CUDA driver the process already uses, never linked), "cpu:N" for
 * the NUMA node of its first page (move_pages), "*" when unknown. */
#include "topology.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
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
 * (libcuda.so.1, which the runtime loads on its first call), so we look for
 * it with RTLD_NOLOAD: a CPU-only process never loads or initialises CUDA
 * because of us.  The driver API is asked rather than libcudart's
 * cudaPointerGetAttributes, whose struct layout changed across versions and
 * which leaves a sticky "last error" the application would later see.  The
 * check runs on every call, because CUDA may be initialised after the first
 * registration; dlopen(RTLD_NOLOAD) is a lookup in the loaded-object list.
 */
static int cuda_location(const void *addr, char *out, size_t out_len)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    int found = 0;
    if (!lib)
        return 0;
    cu_pointer_get_attribute_fn get;
    *(void **)&get = dlsym(lib, "cuPointerGetAttribute");
    unsigned int type = 0, managed = 0;
    int ordinal = -1;
    unsigned long long p = (unsigned long long)(uintptr_t)addr;
    /* Host memory unknown to CUDA fails the first call: not device memory.
     * Managed memory reports as "device" but lives wherever it was last
     * touched; like the original, only plain device memory is "cuda:N". */
    if (get && get(&type, TE_CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p) == 0 &&
        type == TE_CU_MEMORYTYPE_DEVICE &&
        (get(&managed, TE_CU_POINTER_ATTRIBUTE_IS_MANAGED, p) != 0 || !managed) &&
        get(&ordinal, TE_CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p) == 0 && ordinal >= 0) {
        snprintf(out, out_len, "cuda:%d", ordinal);
        found = 1;
    }
    dlclose(lib);
    return found;
}

/* move_pages with nodes == NULL moves nothing and reports the node of each
 * page, or -ENOENT for a page never touched (then the location is unknown:
 * we never touch the caller's memory to find out). */
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
