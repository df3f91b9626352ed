/* bench_register.c - te-bench --register_only SIZE[,COUNT]: what registering
 * memory costs.  COUNT regions of SIZE bytes are mapped untouched
 * (MAP_NORESERVE, so 64 GiB costs nothing on a small box), registered one
 * call each, unregistered in one batch, then registered again in one batch
 * call; the times and the resident set before and after are printed, so a
 * transport that touches, pins or walks every page shows up. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "te_bench.h"

typedef struct reg_run {
    uint64_t size;
    uint64_t count;
    te_buffer_entry *regions;
    double *each_s;   /* time of each te_register_memory */
    double one_by_one_s, unregister_s, batch_s, batch_unregister_s;
    long rss_before_kib, rss_after_kib;
} reg_run;

/* Resident set of this process in KiB (VmRSS), or -1. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static int map_regions(reg_run *r)
{
    for (uint64_t i = 0; i < r->count; i++) {
        void *p = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "te-bench: cannot map region %" PRIu64 " of %" PRIu64 " bytes: %s\n",
                    i, r->size, strerror(errno));
            return -1;
        }
        r->regions[i] = (te_buffer_entry){p, (size_t)r->size};
    }
    return 0;
}

static void unmap_regions(reg_run *r)
{
    for (uint64_t i = 0; i < r->count; i++)
        if (r->regions[i].addr)
            munmap(r->regions[i].addr, r->regions[i].length);
}

static int failed(const char *what, int rc)
{
    fprintf(stderr, "te-bench: %s failed: %s: %s\n", what, te_strerror(rc), te_last_error());
    return 1;
}

static int unregister_all(te_engine *e, reg_run *r, double *seconds)
{
    void **addrs = malloc(r->count * sizeof *addrs);
    if (!addrs)
        return failed("unregister (out of memory)", TE_ERR_MEMORY);
    for (uint64_t i = 0; i < r->count; i++)
        addrs[i] = r->regions[i].addr;
    double t0 = bench_now();
    int rc = te_unregister_memory_batch(e, addrs, r->count);
    *seconds = bench_now() - t0;
    free(addrs);
    return rc ? failed("unregister_memory_batch", rc) : 0;
}

/* The three passes; stops at the first failure, leaving nothing registered
 * that it registered (the engine's destroy would release it anyway). */
static int measure(te_engine *e, reg_run *r)
{
    r->rss_before_kib = rss_kib();
    double start = bench_now();
    for (uint64_t i = 0; i < r->count; i++) {
        double t0 = bench_now();
        int rc = te_register_memory(e, r->regions[i].addr, r->regions[i].length, NULL);
        r->each_s[i] = bench_now() - t0;
        if (rc) {
            if (i) {
                void **a = malloc(i * sizeof *a);
                for (uint64_t j = 0; a && j < i; j++)
                    a[j] = r->regions[j].addr;
                if (a)
                    te_unregister_memory_batch(e, a, i);
                free(a);
            }
            return failed("register_memory", rc);
        }
    }
    r->one_by_one_s = bench_now() - start;
    r->rss_after_kib = rss_kib();
    if (unregister_all(e, r, &r->unregister_s))
        return 1;
    double t0 = bench_now();
    int rc = te_register_memory_batch(e, r->regions, r->count, NULL);
    r->batch_s = bench_now() - t0;
    if (rc)
        return failed("register_memory_batch", rc);
    return unregister_all(e, r, &r->batch_unregister_s);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const bench_opts *o, te_engine *e, const reg_run *r)
{
    double *sorted = malloc(r->count * sizeof *sorted);
    double p50 = 0, max = 0;
    if (sorted) {
        memcpy(sorted, r->each_s, r->count * sizeof *sorted);
        qsort(sorted, r->count, sizeof *sorted, cmp_double);
        p50 = sorted[(r->count - 1) / 2];
        max = sorted[r->count - 1];
        free(sorted);
    }
    double total_gib = (double)r->size * (double)r->count / (double)(1ull << 30);
    if (o->json) {
        printf("{\"register_only\":true,\"protocol\":\"%s\",\"region_bytes\":%" PRIu64
               ",\"regions\":%" PRIu64 ",\"total_bytes\":%" PRIu64 ",\"register_s\":%.6f,"
               "\"register_p50_us\":%.1f,\"register_max_us\":%.1f,\"unregister_batch_s\":%.6f,"
               "\"register_batch_s\":%.6f,\"unregister_batch_after_batch_s\":%.6f,"
               "\"rss_before_kib\":%ld,\"rss_after_kib\":%ld}\n",
               te_engine_protocol(e), r->size, r->count, r->size * r->count, r->one_by_one_s,
               p50 * 1e6, max * 1e6, r->unregister_s, r->batch_s, r->batch_unregister_s,
               r->rss_before_kib, r->rss_after_kib);
        return;
    }
    printf("register_only: %" PRIu64 " region(s) of %" PRIu64 " bytes (%.2f GiB untouched, "
           "MAP_NORESERVE), protocol %s\n",
           r->count, r->size, total_gib, te_engine_protocol(e));
    for (uint64_t i = 0; i < r->count && i < 16; i++)
        printf("  region %3" PRIu64 ": register_memory %10.1f us\n", i, r->each_s[i] * 1e6);
    if (r->count > 16)
        printf("  ... (%" PRIu64 " more)\n", r->count - 16);
    printf("register_memory, one call per region: total %.6f s, per region p50 %.1f us, "
           "max %.1f us\n", r->one_by_one_s, p50 * 1e6, max * 1e6);
    printf("unregister_memory_batch:                total %.6f s\n", r->unregister_s);
    printf("register_memory_batch, one call:        total %.6f s\n", r->batch_s);
    printf("unregister_memory_batch:                total %.6f s\n", r->batch_unregister_s);
    /* Growth near the registered size means a transport touched or pinned
     * every page (rdma: ibv_reg_mr faults the pages in to pin them). */
    long grown = r->rss_after_kib - r->rss_before_kib;
    double total_kib = (double)r->size * (double)r->count / 1024.0;
    printf("resident set: %ld KiB before, %ld KiB after registering (%s)\n", r->rss_before_kib,
           r->rss_after_kib, grown > total_kib / 2 ? "the pages were faulted in: pinned"
                                                   : "untouched memory stayed untouched");
}

int bench_register_only(const bench_opts *o, te_engine *e)
{
    reg_run r = {.size = o->register_size, .count = o->register_count};
    r.regions = calloc(r.count, sizeof *r.regions);
    r.each_s = calloc(r.count, sizeof *r.each_s);
    int rc = 1;
    if (!r.regions || !r.each_s)
        fprintf(stderr, "te-bench: out of memory for %" PRIu64 " regions\n", r.count);
    else if (map_regions(&r) == 0 && measure(e, &r) == 0) {
        report(o, e, &r);
        rc = 0;
    }
    if (r.regions)
        unmap_regions(&r);
    free(r.regions);
    free(r.each_s);
    return rc;
}
