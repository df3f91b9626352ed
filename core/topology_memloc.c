/* topology_memloc.c - where a buffer lives: "cuda:N" for GPU memory (asked
 * of the CUDA driver the process already uses, never linked), "cpu:N" for
 * the NUMA node of its first page (move_pages), "*" when unknown. */
#include "topology.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cuda_loader.h"
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
 * a driver that is already loaded (cudl_loaded_driver): a CPU-only process
 * never loads or initialises CUDA because of us, and the look costs no
 * system call.  The driver API is asked rather than libcudart's
 * cudaPointerGetAttributes, whose struct layout changed across versions and
 * which leaves a sticky "last error" the application would later see.
 */
static cu_pointer_get_attribute_fn cuda_driver(void)
{
    static _Atomic(cu_pointer_get_attribute_fn) cu_get_attr;
    cu_pointer_get_attribute_fn get = atomic_load_explicit(&cu_get_attr, memory_order_acquire);
    if (get)
        return get;
    void *lib = cudl_loaded_driver();
    if (!lib || !cudl_sym(lib, "cuPointerGetAttribute", &get, NULL, 0))
        return NULL;
    /* Every thread that gets here stores the same function. */
    atomic_store_explicit(&cu_get_attr, get, memory_order_release);
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
