/* memreg.h - the engine's table of registered local memory. */
#ifndef TE_CORE_MEMREG_H
#define TE_CORE_MEMREG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "te/te.h"

#define TE_MAX_TRANSPORTS 6 /* e.g. rdma, shm, nvlink, tcp, and room for plugins */

typedef struct te_region {
    uint64_t addr;
    uint64_t length;
    char location[64];
    void *mr[TE_MAX_TRANSPORTS]; /* each transport's handle */
    uint64_t seq;                /* registration order, for the descriptor */
    /* Pins in the low bits, TE_REGION_DYING once it is being removed: one
     * atomic word, so that unpin touches the region only in its own RMW
     * (the remover may free it right after). */
    _Atomic unsigned pin_state;
} te_region;

#define TE_REGION_DYING 0x80000000u

typedef struct te_memreg {
    pthread_rwlock_t lock;  /* the sorted array */
    te_region **regions;    /* sorted by addr, never overlapping */
    size_t count, cap;
    uint64_t next_seq;
    pthread_mutex_t pin_lock;
    pthread_cond_t pin_cond;
} te_memreg;

void te_memreg_init(te_memreg *m);
void te_memreg_destroy(te_memreg *m); /* frees remaining regions */

/* Inserts a region; TE_ERR_ADDRESS_OVERLAPPED if it overlaps one. */
int te_memreg_insert(te_memreg *m, te_region *r);
/* Removes the region starting at addr and waits until no pin holds it.
 * TE_ERR_ADDRESS_NOT_REGISTERED if none starts there. */
int te_memreg_remove(te_memreg *m, uint64_t addr, te_region **out);
/* Pins the region that wholly contains [addr, addr+len). */
int te_memreg_pin(te_memreg *m, uint64_t addr, uint64_t len, te_region **out);
void te_memreg_unpin(te_memreg *m, te_region *r);
/* te_memreg_pin for every request's local range (NULL where it is not
 * registered), under one lock. */
void te_memreg_pin_many(te_memreg *m, const te_request *reqs, size_t n, te_region **out);
/* Calls fn on every region in address order under the read lock. */
void te_memreg_foreach(te_memreg *m, void (*fn)(te_region *r, void *arg), void *arg);
/* Holds the table still (regions can neither appear nor go away) while a
 * caller walks m->regions[0..count). */
void te_memreg_read_lock(te_memreg *m);
void te_memreg_read_unlock(te_memreg *m);
/* Whether [addr, addr+len) overlaps a registered region. */
int te_memreg_overlaps(te_memreg *m, uint64_t addr, uint64_t len);

#endif
