/* ranges.c - the local ranges registered through one engine object (its own
 * registrations and managed regions), so that write_bytes_to_buffer and
 * read_bytes_from_buffer refuse addresses outside them instead of crashing. */
#include "pyte.h"

#include <stdlib.h>


typedef struct range {
    uint64_t addr, len;
} range;

struct pyte_ranges {
    pthread_mutex_t lock;
    range *v; /* sorted by addr; the engine refuses overlaps */
    size_t n, cap;
};

pyte_ranges *pyte_ranges_new(void)
{
    pyte_ranges *r = calloc(1, sizeof *r);
    if (r)
        pthread_mutex_init(&r->lock, NULL);
    return r;
}

void pyte_ranges_free(pyte_ranges *r)
{
    if (!r)
        return;
    free(r->v);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Index of the first range whose start is > addr. */
static size_t upper_bound(const pyte_ranges *r, uint64_t addr)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->v[mid].addr <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int pyte_ranges_add(pyte_ranges *r, uint64_t addr, uint64_t len)
{
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        range *v = realloc(r->v, cap * sizeof *v);
        if (!v) {
            rc = TE_ERR_MEMORY;
            goto out;
        }
        r->v = v;
        r->cap = cap;
    }
    size_t i = upper_bound(r, addr);
    for (size_t j = r->n; j > i; j--)
        r->v[j] = r->v[j - 1];
    r->v[i] = (range){addr, len};
    r->n++;
out:
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void pyte_ranges_remove(pyte_ranges *r, uint64_t addr)
{
    pthread_mutex_lock(&r->lock);
    size_t i = upper_bound(r, addr);
    if (i > 0 && r->v[i - 1].addr == addr) {
        for (size_t j = i - 1; j + 1 < r->n; j++)
            r->v[j] = r->v[j + 1];
        r->n--;
    }
    pthread_mutex_unlock(&r->lock);
}

int pyte_ranges_contains(pyte_ranges *r, uint64_t addr, uint64_t len)
{
    if (addr + len < addr)
        return 0;
    pthread_mutex_lock(&r->lock);
    size_t i = upper_bound(r, addr);
    int ok = i > 0 && addr + len <= r->v[i - 1].addr + r->v[i - 1].len;
    pthread_mutex_unlock(&r->lock);
    return ok;
}
