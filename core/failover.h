/* failover.h - moving a slice that failed for a transport reason to the next
 * eligible transport: which statuses qualify, the growing cool-down of a
 * path that keeps failing (a pure function of the time passed in), and the
 * core thread that resubmits, so no transport's completion callback ever
 * calls another transport. */
#ifndef TE_CORE_FAILOVER_H
#define TE_CORE_FAILOVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "memreg.h"
#include "te/plugin.h"

/* The health of one transport toward one peer (kept per segment slot, so a
 * refetched descriptor does not forget it). */
typedef struct te_path_health {
    _Atomic int64_t until_ns; /* set aside until then (CLOCK_MONOTONIC) */
    atomic_int strikes;       /* failures in a row; 0 = healthy */
} te_path_health;

typedef struct te_cooldown {
    int64_t base_ns; /* MC_TE_FAILOVER_COOLDOWN (s), default 30 */
    int64_t max_ns;  /* MC_TE_FAILOVER_COOLDOWN_MAX (s), default 300 */
} te_cooldown;

/* Per-engine state: settings, the resubmission queue and the counters. */
typedef struct te_failover {
    te_cooldown cooldown;
    int max_attempts; /* MC_TE_FAILOVER_ATTEMPTS, default 3; 0 disables failover */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    te_slice *head, *tail; /* linked through transport_data[3] */
    pthread_t thread;
    bool inited;          /* lock and cond exist (from the first start to destroy) */
    bool running, stop;   /* under lock */
    /* failovers[from][to]: slices moved from one transport to another. */
    atomic_uint_fast64_t moved[TE_MAX_TRANSPORTS][TE_MAX_TRANSPORTS];
} te_failover;

/* How long a path is set aside after its n-th failure in a row (n >= 1):
 * base doubling per strike, at most max. */
int64_t te_cooldown_ns(const te_cooldown *c, int strikes);
/* Whether a path may be chosen at time now. */
bool te_path_usable(const te_path_health *h, int64_t now_ns);
/* Whether the path was ever set aside (else it is usable without a clock read). */
bool te_path_was_set_aside(const te_path_health *h);
/* A failure seen at now: a path in use gets one more strike and is set aside
 * (true: newly set aside); failures while it is already set aside (slices
 * that were in flight) add none. */
bool te_path_failed(te_path_health *h, const te_cooldown *c, int64_t now_ns);
/* A slice landed over the path: it is healthy again. */
void te_path_succeeded(te_path_health *h);

/* Whether a slice that failed with this status may be moved to another
 * transport (the path failed), and whether the failure says the path is
 * broken (NOT_SUPPORTED_TRANSPORT only says "not this memory here"). */
bool te_failover_status(int status);
bool te_failover_breaks_path(int status);

struct te_engine;

/* Reads the settings (MC_TE_FAILOVER_*) and starts the resubmission thread. */
int te_failover_start(struct te_engine *e);
/* Stops it; slices still queued are resubmitted first. */
void te_failover_stop(struct te_engine *e);
/* Frees the lock (te_engine_destroy). */
void te_failover_destroy(struct te_engine *e);
/* Queues a failed slice for te_batch_resubmit on the core thread.  False
 * when the thread is not running (the caller then finishes the slice). */
bool te_failover_enqueue(struct te_engine *e, te_slice *slice);

/* submit.c: moves a queued slice to its next transport, or finishes it with
 * the status it failed with. */
void te_batch_resubmit(struct te_engine *e, te_slice *slice);

#endif
