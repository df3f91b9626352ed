/* core.c - the per-engine state behind a TransferEngine object: created with
 * the object, reference counted (CUDA callbacks and InnerTransferEngine hold
 * references), destroyed by the last holder, with or without the GIL. */
#include "pyte.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


pyte_core *pyte_core_new(void)
{
    pyte_core *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->cuda_lock, NULL);
    c->engine = te_engine_create();
    c->segs = pyte_segcache_new();
    c->ranges = pyte_ranges_new();
    c->managed = pyte_managed_new();
    if (!c->engine || !c->segs || !c->ranges || !c->managed) {
        pyte_core_unref(c);
        return NULL;
    }
    return c;
}

void pyte_core_ref(pyte_core *c)
{
    atomic_fetch_add(&c->refs, 1);
}

static void clear_cuda_errors(pyte_core *c)
{
    for (size_t i = 0; i < c->cuda_error_count; i++)
        free(c->cuda_errors[i]);
    free(c->cuda_errors);
    c->cuda_errors = NULL;
    c->cuda_error_count = c->cuda_error_total = 0;
}

void pyte_core_unref(pyte_core *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    /* The engine unregisters everything; only then is managed memory unmapped. */
    te_engine_destroy(c->engine);
    if (c->managed)
        pyte_managed_free_all(c->managed);
    pyte_segcache_free(c->segs);
    pyte_ranges_free(c->ranges);
    clear_cuda_errors(c);
    pthread_mutex_destroy(&c->cuda_lock);
    free(c);
}

void pyte_core_cuda_failed(pyte_core *c, const char *msg)
{
    fprintf(stderr, "mooncake.engine: ERROR: %s\n", msg);
    pthread_mutex_lock(&c->cuda_lock);
    c->cuda_error_total++;
    if (c->cuda_error_count < PYTE_MAX_CUDA_ERRORS) {
        char **v = realloc(c->cuda_errors, (c->cuda_error_count + 1) * sizeof *v);
        if (v) {
            c->cuda_errors = v;
            v[c->cuda_error_count] = strdup(msg);
            if (v[c->cuda_error_count])
                c->cuda_error_count++;
        }
    }
    pthread_mutex_unlock(&c->cuda_lock);
}

/* ---- registration, mirrored in the range table ------------------------------ */

int pyte_register(pyte_core *c, uint64_t addr, uint64_t len, const char *location)
{
    return pyte_register_batch(c, &addr, &len, 1, location);
}

int pyte_unregister(pyte_core *c, uint64_t addr)
{
    return pyte_unregister_batch(c, &addr, 1);
}

int pyte_register_batch(pyte_core *c, const uint64_t *addrs, const uint64_t *lens, size_t n,
                        const char *location)
{
    te_buffer_entry *e = calloc(n ? n : 1, sizeof *e);
    if (!e)
        return TE_ERR_MEMORY;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > SIZE_MAX) {
            free(e);
            return TE_ERR_INVALID_ARGUMENT;
        }
        e[i].addr = (void *)(uintptr_t)addrs[i];
        e[i].length = (size_t)lens[i];
    }
    int rc = te_register_memory_batch(c->engine, e, n, location);
    free(e);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        pyte_ranges_add(c->ranges, addrs[i], lens[i]);
    return 0;
}

int pyte_unregister_batch(pyte_core *c, const uint64_t *addrs, size_t n)
{
    void **v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        return TE_ERR_MEMORY;
    for (size_t i = 0; i < n; i++)
        v[i] = (void *)(uintptr_t)addrs[i];
    /* Drop the ranges first: bytes I/O must not touch memory being released. */
    for (size_t i = 0; i < n; i++)
        pyte_ranges_remove(c->ranges, addrs[i]);
    int rc = te_unregister_memory_batch(c->engine, v, n);
    free(v);
    return rc;
}
