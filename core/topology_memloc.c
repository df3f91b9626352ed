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

/* Device memory can only exist in a process that has loaded the CUDA
 * driver, so only a driver already loaded is asked (cudl_pointer_attr): a
 * CPU-only process never loads or initialises CUDA because of us. */
static int cuda_location(const void *addr, char *out, size_t out_len)
{
    int ordinal = cudl_device_ordinal(cudl_pointer_attr(), addr);
    if (ordinal < 0)
        return 0;
    snprintf(out, out_len, "cuda:%d", ordinal);
    return 1;
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
