/* batch.h - the core's private batch, task and slice types, shared by
 * batch.c (ids, completion accounting, status, waiting), submit.c
 * (cutting requests into slices, choosing transports, failover) and
 * notify_sender.c (the notification sent after a batch). */
#ifndef TE_CORE_BATCH_H
#define TE_CORE_BATCH_H

#include "engine.h"
#include "route.h"

typedef struct te_batch te_batch;

typedef struct te_task {
    te_batch *batch;
    atomic_uint slices_left;
    atomic_int error;          /* first failure, 0 if none */
    atomic_int state;          /* TE_TRANSFER_WAITING / COMPLETED / FAILED */
    atomic_uint_fast64_t transferred;
    te_segment *seg;           /* reference held until the task finishes */
    te_segment_id seg_id;
    te_region *local_pin;      /* pinned local region or NULL */
    te_io_counters *seg_io;    /* the peer's counters */
    int64_t submit_ns;
    uint64_t length;
    int opcode;
    atomic_int transport;      /* the transport that carried it (the last, after failover) */
    int hint;                  /* TE_HINT_AUTO, or the pinned transport: never fails over */
    te_route route;            /* candidates, best first */
} te_task;

typedef struct core_slice {
    te_slice pub; /* first: transports see only this */
    te_task *task;
    int transport;     /* index in engine->transports */
    int route_pos;     /* its transport's position in task->route */
    int failed_status; /* why it was queued for failover */
    bool final;        /* report as is: no failover */
    /* Set by the slice's report (te_slice_done), cleared when failover hands
     * it to a transport again: a second report of one hand-over is a
     * transport's bug, logged and ignored, so it cannot finish a task whose
     * other slices are still on the wire. */
    atomic_bool reported;
} core_slice;

typedef struct slice_chunk {
    struct slice_chunk *next;
    core_slice slices[];
} slice_chunk;

struct te_batch {
    te_engine *engine;
    te_batch_id id;
    size_t capacity;
    size_t ntasks; /* under lock */
    te_task *tasks;
    atomic_int tasks_left;   /* unfinished tasks */
    atomic_int settle_left;  /* unfinished tasks + an unsent notification */
    atomic_int refs;         /* the id + one per unfinished task + lookups */
    atomic_bool any_failed;
    atomic_int notify_status; /* 0 none/ok, <0 failed */
    _Atomic int64_t deadline_ns;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char *notify_name, *notify_msg;
    te_segment *notify_seg;
    struct te_batch *sender_next;
    slice_chunk *chunks;
    int hint;            /* te_batch_set_transport_hint; under lock */
    char hint_name[64];
    char why[512];       /* first failure detail known at submit; under lock */
};

/* batch.c */
te_batch *te_batch_get(te_engine *e, te_batch_id id); /* a reference, or NULL */
void te_batch_unref(te_batch *b);
/* One unfinished task or unsent notification less; the last wakes waiters. */
void te_batch_settle_one(te_batch *b);
/* Fails a task that never got a slice, keeping te_last_error() as the
 * batch's failure detail. */
void te_task_fail_now(te_task *t, int status);

/* notify_sender.c: queues a batch whose tasks all succeeded for its
 * notification (takes a reference; the sender settles it once sent). */
void te_sender_enqueue(te_engine *e, te_batch *b);

/* submit.c: a failed slice is queued for the next transport; false when it
 * is final (the caller counts it). */
bool te_slice_failover(core_slice *cs, int status);
/* The detail of the batch's first failure for te_transfer_sync's message. */
void te_batch_note_why(te_batch *b, const char *why);

#endif
