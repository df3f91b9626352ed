/* managed.c - allocate_managed_buffer's allocator: 16 size classes of
 * 8 KiB << i (8 KiB .. 256 MiB) carved, buddy style, from large registered
 * regions (MC_MANAGED_REGION_MB, default 256 MiB, grown on demand); requests
 * above 256 MiB get a dedicated mapping and registration.  Live blocks are
 * tracked so that a wrong free is refused instead of corrupting the lists. */
#include "pyte.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>


#define NCLASS 16
#define CLASS0_SIZE (8ull << 10)
#define TOP_SIZE (CLASS0_SIZE << (NCLASS - 1)) /* 256 MiB */
#define LARGE (-1)

typedef struct u64_stack {
    uint64_t *v;
    size_t n, cap;
} u64_stack;

typedef struct live_ent {
    uint64_t addr; /* 0: empty slot */
    uint64_t len;  /* mapped length for LARGE blocks */
    int cls;
} live_ent;

typedef struct span {
    uint64_t addr, len;
} span;

struct pyte_managed {
    pthread_mutex_t lock;
    uint64_t region_size;
    u64_stack free_list[NCLASS];
    span *regions; /* class regions, unmapped at the end */
    size_t nregions, region_cap;
    live_ent *live; /* open addressing, linear probing */
    size_t live_cap, live_count;
};

static uint64_t region_size_from_env(void)
{
    int64_t mb = 256; /* 1..1048576, declared in the core (te_config_int) */
    te_config_int("MC_MANAGED_REGION_MB", &mb);
    uint64_t bytes = (uint64_t)mb << 20;
    return (bytes + TOP_SIZE - 1) / TOP_SIZE * TOP_SIZE; /* whole 256 MiB pieces */
}

pyte_managed *pyte_managed_new(void)
{
    pyte_managed *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->region_size = region_size_from_env();
    return m;
}

/* ---- small containers ------------------------------------------------------- */

static int push(u64_stack *s, uint64_t v)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        uint64_t *n = realloc(s->v, cap * sizeof *n);
        if (!n)
            return -1;
        s->v = n;
        s->cap = cap;
    }
    s->v[s->n++] = v;
    return 0;
}

static size_t slot_of(uint64_t addr, size_t mask)
{
    addr ^= addr >> 33;
    addr *= 0xff51afd7ed558ccdull;
    addr ^= addr >> 33;
    return (size_t)addr & mask;
}

static live_ent *live_find(pyte_managed *m, uint64_t addr)
{
    if (!m->live_cap || !addr)
        return NULL;
    size_t mask = m->live_cap - 1;
    for (size_t i = slot_of(addr, mask);; i = (i + 1) & mask) {
        if (m->live[i].addr == addr)
            return &m->live[i];
        if (!m->live[i].addr)
            return NULL;
    }
}

static void live_insert_nogrow(pyte_managed *m, live_ent e)
{
    size_t mask = m->live_cap - 1;
    size_t i = slot_of(e.addr, mask);
    while (m->live[i].addr)
        i = (i + 1) & mask;
    m->live[i] = e;
    m->live_count++;
}

static int live_put(pyte_managed *m, uint64_t addr, uint64_t len, int cls)
{
    if ((m->live_count + 1) * 2 > m->live_cap) {
        size_t cap = m->live_cap ? m->live_cap * 2 : 64;
        live_ent *old = m->live, *n = calloc(cap, sizeof *n);
        size_t old_cap = m->live_cap;
        if (!n)
            return -1;
        m->live = n;
        m->live_cap = cap;
        m->live_count = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].addr)
                live_insert_nogrow(m, old[i]);
        free(old);
    }
    live_insert_nogrow(m, (live_ent){addr, len, cls});
    return 0;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void live_delete(pyte_managed *m, live_ent *e)
{
    size_t mask = m->live_cap - 1;
    size_t i = (size_t)(e - m->live), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->live[j].addr)
            break;
        size_t k = slot_of(m->live[j].addr, mask);
        bool movable = (i <= j) ? (k <= i || k > j) : (k <= i && k > j);
        if (movable) {
            m->live[i] = m->live[j];
            i = j;
        }
    }
    m->live[i].addr = 0;
    m->live_count--;
}

/* ---- allocation ------------------------------------------------------------- */

static int class_of(uint64_t n)
{
    for (int i = 0; i < NCLASS; i++)
        if (n <= CLASS0_SIZE << i)
            return i;
    return LARGE;
}

static uint64_t map_and_register(pyte_core *c, uint64_t len)
{
    void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return 0;
    if (pyte_register(c, (uint64_t)(uintptr_t)p, len, "*")) {
        munmap(p, (size_t)len);
        return 0;
    }
    return (uint64_t)(uintptr_t)p;
}

static int new_region(pyte_core *c, pyte_managed *m)
{
    if (m->nregions == m->region_cap) {
        size_t cap = m->region_cap ? m->region_cap * 2 : 8;
        span *n = realloc(m->regions, cap * sizeof *n);
        if (!n)
            return -1;
        m->regions = n;
        m->region_cap = cap;
    }
    uint64_t base = map_and_register(c, m->region_size);
    if (!base)
        return -1;
    m->regions[m->nregions++] = (span){base, m->region_size};
    /* Pushed from the top so that blocks come out in address order. */
    for (uint64_t off = m->region_size; off > 0; off -= TOP_SIZE)
        if (push(&m->free_list[NCLASS - 1], base + off - TOP_SIZE))
            return -1;
    return 0;
}

/* Makes free_list[cls] non-empty by splitting a block of the class above. */
static int refill(pyte_core *c, pyte_managed *m, int cls)
{
    if (cls == NCLASS - 1)
        return new_region(c, m);
    u64_stack *up = &m->free_list[cls + 1];
    if (!up->n && refill(c, m, cls + 1))
        return -1;
    uint64_t b = up->v[--up->n];
    if (push(&m->free_list[cls], b + (CLASS0_SIZE << cls)) || push(&m->free_list[cls], b)) {
        up->n++; /* cannot fail: the slot is still there */
        return -1;
    }
    return 0;
}

static uint64_t alloc_large(pyte_core *c, pyte_managed *m, uint64_t length)
{
    long page = sysconf(_SC_PAGESIZE);
    uint64_t pg = page > 0 ? (uint64_t)page : 4096;
    if (length > SIZE_MAX - pg)
        return 0;
    uint64_t len = (length + pg - 1) / pg * pg;
    uint64_t addr = map_and_register(c, len);
    if (addr && live_put(m, addr, len, LARGE)) {
        pyte_unregister(c, addr);
        munmap((void *)(uintptr_t)addr, (size_t)len);
        addr = 0;
    }
    return addr;
}

uint64_t pyte_managed_alloc(pyte_core *c, uint64_t length)
{
    pyte_managed *m = c->managed;
    int cls = class_of(length);
    uint64_t addr = 0;
    pthread_mutex_lock(&m->lock);
    if (cls == LARGE) {
        addr = alloc_large(c, m, length);
    } else if (m->free_list[cls].n || !refill(c, m, cls)) {
        u64_stack *s = &m->free_list[cls];
        addr = s->v[--s->n];
        if (live_put(m, addr, CLASS0_SIZE << cls, cls)) {
            s->n++;
            addr = 0;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return addr;
}

int pyte_managed_release(pyte_core *c, uint64_t addr, uint64_t length)
{
    pyte_managed *m = c->managed;
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    live_ent *e = live_find(m, addr);
    if (!e) {
        rc = TE_ERR_ADDRESS_NOT_REGISTERED;
    } else if (e->cls != class_of(length) || (e->cls == LARGE && length > e->len)) {
        rc = TE_ERR_INVALID_ARGUMENT; /* not the length it was allocated with */
    } else if (e->cls == LARGE) {
        uint64_t len = e->len;
        live_delete(m, e);
        pyte_unregister(c, addr);
        munmap((void *)(uintptr_t)addr, (size_t)len);
    } else {
        int cls = e->cls;
        live_delete(m, e);
        if (push(&m->free_list[cls], addr))
            rc = TE_ERR_MEMORY; /* the block leaks; nothing breaks */
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void pyte_managed_free_all(pyte_managed *m)
{
    for (size_t i = 0; i < m->live_cap; i++)
        if (m->live[i].addr && m->live[i].cls == LARGE)
            munmap((void *)(uintptr_t)m->live[i].addr, (size_t)m->live[i].len);
    for (size_t i = 0; i < m->nregions; i++)
        munmap((void *)(uintptr_t)m->regions[i].addr, (size_t)m->regions[i].len);
    for (int i = 0; i < NCLASS; i++)
        free(m->free_list[i].v);
    free(m->live);
    free(m->regions);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
