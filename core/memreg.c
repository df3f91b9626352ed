/* memreg.c - registered local memory: a sorted array searched by binary
 * search, with pins so that a range in use by a transfer cannot be
 * unregistered (and freed by the caller) under it. */
#include "memreg.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

void te_memreg_init(te_memreg *m)
{
    memset(m, 0, sizeof *m);
    pthread_rwlock_init(&m->lock, NULL);
    pthread_mutex_init(&m->pin_lock, NULL);
    pthread_cond_init(&m->pin_cond, NULL);
}

void te_memreg_destroy(te_memreg *m)
{
    for (size_t i = 0; i < m->count; i++)
        free(m->regions[i]);
    free(m->regions);
    pthread_rwlock_destroy(&m->lock);
    pthread_mutex_destroy(&m->pin_lock);
    pthread_cond_destroy(&m->pin_cond);
}

/* Index of the first region whose end is above addr. */
static size_t lower_bound(const te_memreg *m, uint64_t addr)
{
    size_t lo = 0, hi = m->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const te_region *r = m->regions[mid];
        if (r->addr + r->length <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int overlaps_locked(const te_memreg *m, uint64_t addr, uint64_t len)
{
    size_t i = lower_bound(m, addr);
    return i < m->count && m->regions[i]->addr < addr + len;
}

int te_memreg_overlaps(te_memreg *m, uint64_t addr, uint64_t len)
{
    pthread_rwlock_rdlock(&m->lock);
    int rc = overlaps_locked(m, addr, len);
    pthread_rwlock_unlock(&m->lock);
    return rc;
}

int te_memreg_insert(te_memreg *m, te_region *r)
{
    if (r->length == 0 || r->addr + r->length < r->addr)
        return TE_ERR_INVALID_ARGUMENT;
    pthread_rwlock_wrlock(&m->lock);
    int rc = 0;
    if (overlaps_locked(m, r->addr, r->length)) {
        rc = TE_ERR_ADDRESS_OVERLAPPED;
        goto out;
    }
    if (m->count == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        te_region **n = realloc(m->regions, cap * sizeof *n);
        if (!n) {
            rc = TE_ERR_MEMORY;
            goto out;
        }
        m->regions = n;
        m->cap = cap;
    }
    size_t i = lower_bound(m, r->addr);
    memmove(&m->regions[i + 1], &m->regions[i], (m->count - i) * sizeof *m->regions);
    m->regions[i] = r;
    m->count++;
    r->seq = m->next_seq++;
out:
    pthread_rwlock_unlock(&m->lock);
    return rc;
}

int te_memreg_remove(te_memreg *m, uint64_t addr, te_region **out)
{
    pthread_rwlock_wrlock(&m->lock);
    size_t i = lower_bound(m, addr);
    if (i >= m->count || m->regions[i]->addr != addr) {
        pthread_rwlock_unlock(&m->lock);
        return TE_ERR_ADDRESS_NOT_REGISTERED;
    }
    te_region *r = m->regions[i];
    memmove(&m->regions[i], &m->regions[i + 1], (m->count - i - 1) * sizeof *m->regions);
    m->count--;
    pthread_rwlock_unlock(&m->lock);

    /* No pin can start now (the region left the array under the write lock);
     * wait for those held.  An unpin that drops the count to zero after the
     * mark broadcasts under pin_lock, which we hold until we sleep. */
    pthread_mutex_lock(&m->pin_lock);
    atomic_fetch_or(&r->pin_state, TE_REGION_DYING);
    while (atomic_load(&r->pin_state) != TE_REGION_DYING)
        pthread_cond_wait(&m->pin_cond, &m->pin_lock);
    pthread_mutex_unlock(&m->pin_lock);
    *out = r;
    return 0;
}

int te_memreg_pin(te_memreg *m, uint64_t addr, uint64_t len, te_region **out)
{
    if (len == 0 || addr + len < addr)
        return TE_ERR_INVALID_ARGUMENT;
    pthread_rwlock_rdlock(&m->lock);
    size_t i = lower_bound(m, addr);
    int rc = TE_ERR_ADDRESS_NOT_REGISTERED;
    if (i < m->count) {
        te_region *r = m->regions[i];
        if (r->addr <= addr && addr + len <= r->addr + r->length) {
            atomic_fetch_add(&r->pin_state, 1); /* lock-free: pins are per request */
            *out = r;
            rc = 0;
        }
    }
    pthread_rwlock_unlock(&m->lock);
    return rc;
}

/* Pins the local range of each request, one read lock for all of them and
 * one atomic add per run of requests in the same region (a batch of KV
 * blocks usually lies in one): out[i] is the region, or NULL when the range
 * is not inside one. */
void te_memreg_pin_many(te_memreg *m, const te_request *reqs, size_t n, te_region **out)
{
    te_region *run = NULL;
    unsigned count = 0;
    pthread_rwlock_rdlock(&m->lock);
    for (size_t i = 0; i < n; i++) {
        uint64_t addr = (uint64_t)(uintptr_t)reqs[i].local, len = reqs[i].length;
        te_region *r = run;
        if (!r || addr < r->addr || addr + len > r->addr + r->length || addr + len < addr) {
            size_t at = lower_bound(m, addr);
            r = at < m->count ? m->regions[at] : NULL;
            if (r && !(r->addr <= addr && addr + len <= r->addr + r->length && addr + len >= addr))
                r = NULL;
        }
        out[i] = r;
        if (r == run) {
            count += r != NULL;
            continue;
        }
        if (count)
            atomic_fetch_add(&run->pin_state, count);
        run = r;
        count = r != NULL;
    }
    if (count)
        atomic_fetch_add(&run->pin_state, count);
    pthread_rwlock_unlock(&m->lock);
}

void te_memreg_unpin(te_memreg *m, te_region *r)
{
    if (atomic_fetch_sub(&r->pin_state, 1) != (TE_REGION_DYING | 1))
        return;
    pthread_mutex_lock(&m->pin_lock); /* the last pin of a region being removed */
    pthread_cond_broadcast(&m->pin_cond);
    pthread_mutex_unlock(&m->pin_lock);
}

void te_memreg_foreach(te_memreg *m, void (*fn)(te_region *r, void *arg), void *arg)
{
    pthread_rwlock_rdlock(&m->lock);
    for (size_t i = 0; i < m->count; i++)
        fn(m->regions[i], arg);
    pthread_rwlock_unlock(&m->lock);
}

void te_memreg_read_lock(te_memreg *m)
{
    pthread_rwlock_rdlock(&m->lock);
}

void te_memreg_read_unlock(te_memreg *m)
{
    pthread_rwlock_unlock(&m->lock);
}
