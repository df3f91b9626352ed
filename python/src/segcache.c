/* segcache.c - target name -> segment id, per engine object, like the
 * original binding's handle map; an entry is dropped after a failed
 * transfer so that the next call re-opens the segment. */
#include "pyte.h"

#include <stdlib.h>
#include <string.h>


#define NBUCKETS 256

typedef struct seg_entry {
    struct seg_entry *next;
    te_segment_id id;
    char name[];
} seg_entry;

struct pyte_segcache {
    pthread_mutex_t lock;
    seg_entry *buckets[NBUCKETS];
};

pyte_segcache *pyte_segcache_new(void)
{
    pyte_segcache *s = calloc(1, sizeof *s);
    if (s)
        pthread_mutex_init(&s->lock, NULL);
    return s;
}

void pyte_segcache_free(pyte_segcache *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        while (s->buckets[i]) {
            seg_entry *e = s->buckets[i];
            s->buckets[i] = e->next;
            free(e);
        }
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static size_t bucket_of(const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h % NBUCKETS);
}

static seg_entry *find_locked(pyte_segcache *s, const char *name, size_t b)
{
    for (seg_entry *e = s->buckets[b]; e; e = e->next)
        if (!strcmp(e->name, name))
            return e;
    return NULL;
}

int pyte_segment(pyte_core *c, const char *name, te_segment_id *id)
{
    pyte_segcache *s = c->segs;
    size_t b = bucket_of(name);
    pthread_mutex_lock(&s->lock);
    seg_entry *e = find_locked(s, name, b);
    if (e)
        *id = e->id;
    pthread_mutex_unlock(&s->lock);
    if (e)
        return 0;
    /* Resolve without the lock: it may fetch a descriptor over the network. */
    int rc = te_segment_open(c->engine, name, id);
    if (rc)
        return rc;
    size_t len = strlen(name);
    seg_entry *n = malloc(sizeof *n + len + 1);
    if (!n)
        return 0; /* still usable, just not cached */
    n->id = *id;
    memcpy(n->name, name, len + 1);
    pthread_mutex_lock(&s->lock);
    if (find_locked(s, name, b)) {
        free(n); /* another thread cached it meanwhile; ids of a name never change */
    } else {
        n->next = s->buckets[b];
        s->buckets[b] = n;
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void pyte_segment_forget(pyte_core *c, const char *name)
{
    pyte_segcache *s = c->segs;
    size_t b = bucket_of(name);
    pthread_mutex_lock(&s->lock);
    for (seg_entry **p = &s->buckets[b]; *p; p = &(*p)->next) {
        if (!strcmp((*p)->name, name)) {
            seg_entry *e = *p;
            *p = e->next;
            free(e);
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
}
