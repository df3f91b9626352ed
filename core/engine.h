/* engine.h - the engine's state, shared by the core's files. */
#ifndef TE_CORE_ENGINE_H
#define TE_CORE_ENGINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "failover.h"
#include "loader.h"
#include "memreg.h"
#include "metrics.h"
#include "rpc.h"
#include "segdesc.h"
#include "te/plugin.h"

struct te_host {
    struct te_engine *engine;
};

/* One loaded transport of this engine. */
typedef struct te_transport {
    const te_plugin *plugin;
    const te_transport_ops *ops;
    void *inst;
    uint64_t slice_size; /* this instance's (TE_TRANSPORT_CTRL_SLICE_SIZE), else ops->slice_size */
} te_transport;

/* A resolved peer segment.  Replaced (not mutated) when refreshed; slices
 * hold references so a replaced entry lives until its transfers end. */
typedef struct te_segment {
    atomic_int refs;
    te_segdesc *desc;
    char rpc_host[256];
    uint16_t rpc_port;
    int transport;       /* preferred transport for host memory (te_segment_transport) */
    void *peers[TE_MAX_TRANSPORTS]; /* each transport's peer handle, NULL if it declined */
    te_io_counters *io;  /* the slot's counters (live as long as the engine) */
    te_path_health *health; /* the slot's paths, one per transport */
    struct te_engine *engine;
} te_segment;

typedef struct te_segment_slot {
    char *name;
    te_segment *current; /* NULL until resolved, or after close/refresh */
    bool stale;          /* refetch before the next use */
    te_io_counters *io;  /* per-peer metrics, never moved by realloc */
    te_path_health *health; /* [TE_MAX_TRANSPORTS], allocated on first resolution */
} te_segment_slot;

typedef struct te_notify_node {
    struct te_notify_node *next;
    char *name;
    char *msg;
} te_notify_node;

struct te_batch;

typedef struct te_engine {
    struct te_host host;
    te_config cfg;
    pthread_mutex_t init_lock;
    atomic_bool initialized; /* read without init_lock by every call */
    bool p2p;
    char segment_name[512];
    char advertised_host[256];
    char device_filter[512]; /* device_name of initialize */
    uint16_t rpc_port;
    te_rpc_server rpc;

    const te_plugin *metadata_plugin;
    void *metadata;

    te_transport transports[TE_MAX_TRANSPORTS];
    int transport_count;
    int preferred; /* the descriptor's protocol: the first of the protocol list that loaded */
    te_failover failover;

    te_memreg memreg;
    te_metrics metrics;

    pthread_mutex_t seg_lock;
    te_segment_slot *segments;
    size_t segment_count, segment_cap;
    te_segdesc *local_desc; /* what we serve and publish; under seg_lock */

    pthread_mutex_t batch_lock;
    struct te_batch **batches;
    uint32_t *batch_gen;
    size_t batch_cap;
    uint32_t batch_free_hint;

    pthread_mutex_t notify_lock;
    te_notify_node *notify_head, *notify_tail;
    size_t notify_count;

    /* Batches whose notification must be sent, handed to the sender thread. */
    pthread_mutex_t sender_lock;
    pthread_cond_t sender_cond;
    struct te_batch *sender_head;
    pthread_t sender_thread;
    bool sender_running, sender_stop;
} te_engine;

static inline te_engine *te_engine_of(te_host *h)
{
    return h->engine;
}

/* transports.c: loads the engine's transports (docs/transports.md). */
int te_transports_start(te_engine *e, const char *protocol, const char *device_filter);

/* segment.c */
int te_segment_get(te_engine *e, te_segment_id id, bool refresh, te_segment **out);
void te_segment_put(te_segment *s);
void te_segment_mark_stale(te_engine *e, te_segment_id id, const te_segment *seen);
int te_engine_publish(te_engine *e);
int te_local_descriptor_json(te_engine *e, char **json);
void te_segments_destroy(te_engine *e);

/* batch.c */
void te_batches_quiesce(te_engine *e);
void te_batches_destroy(te_engine *e);
void te_slice_done(te_host *h, te_slice *slice, int status);

/* notify_sender.c: the thread sending notifications after batches. */
int te_sender_start(te_engine *e);
void te_sender_stop(te_engine *e);

/* notify.c */
void te_notify_deliver(te_host *h, const char *name, const char *msg);
int te_notify_send(te_engine *e, te_segment *seg, const char *name, const char *msg);
void te_notifies_clear(te_engine *e);

/* rpc_builtin.c: the Metadata, Notify and Probe handlers on e->rpc. */
int te_rpc_install_builtin(te_engine *e);

#endif
