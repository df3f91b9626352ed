/* rdma.h - state shared by the RDMA transport's files: the instance, its
 * per-NIC contexts and completion queues, endpoints (one per local NIC and
 * peer NIC path), registrations and peer handles. */
#ifndef TE_RDMA_H
#define TE_RDMA_H

#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "rdma_proto.h"
#include "rdma_rail.h"
#include "rdma_sched.h"
#include "te/plugin.h"

#define RDMA_PLUGIN "rdma"
#define RDMA_EP_BUCKETS 64
#define RDMA_MAX_CTX 32
#define RDMA_MAX_HS_THREADS 4

/* The process-wide host table handed to te_plugin_init. */

/* Sets the thread's error detail (ours and the core's) and returns status. */
int rdma_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *rdma_errmsg(void);

#define RLOG(in, level, ...) te_host_table->log((in)->host, level, RDMA_PLUGIN, __VA_ARGS__)

typedef struct rdma_config {
    int ib_port;          /* MC_IB_PORT, 1 */
    int gid_index;        /* MC_GID_INDEX / NCCL_IB_GID_INDEX, -1 = auto */
    int mtu;              /* MC_MTU as enum ibv_mtu */
    int max_cqe;          /* MC_MAX_CQE_PER_CTX, 4096 */
    int num_qp;           /* MC_NUM_QP_PER_EP, 2 */
    int workers;          /* MC_WORKERS_PER_CTX, 2: one CQ + channel + thread each */
    int max_wr;           /* MC_MAX_WR, 256 */
    int max_sge;          /* MC_MAX_SGE, 4 */
    int max_inline;       /* MC_MAX_INLINE, 64 */
    int retry_cnt;        /* MC_RETRY_CNT, 9 */
    int max_ep;           /* MC_MAX_EP_PER_CTX, 65536: endpoints holding QPs per context */
    int traffic_class;    /* MC_IB_TC, 0 */
    int service_level;    /* MC_IB_SL, 0 */
    int pkey_index;       /* MC_PKEY_INDEX, 0 */
    int handshake_ms;     /* MC_HANDSHAKE_CONNECT_TIMEOUT (s) as ms, 0 = the core's */
    int ack_wait_ms;      /* how long a passive endpoint waits for ready_ack, 1000 */
    int rail_pause_s;     /* MC_RDMA_RAIL_PAUSE_SECONDS, 30, 0 = never pause a rail */
    int gid_max_retries;  /* MC_AUTO_GID_MAX_RETRIES, 2: GID re-probes per context, 0 = none */
    uint64_t slice_size;  /* MC_SLICE_SIZE, 64 KiB */
} rdma_config;

struct rdma_inst;
struct rdma_ep;

/* A completion queue with its own channel and worker thread. */
typedef struct rdma_cq {
    struct rdma_ctx *ctx;
    struct ibv_comp_channel *chan;
    struct ibv_cq *cq;
    int wake_fd; /* eventfd: wakes the worker to stop */
    int capacity;
    atomic_int outstanding; /* WRs posted on QPs of this CQ, <= capacity */
    atomic_bool stop;
    pthread_t thread;
    bool started;
} rdma_cq;

/* One NIC. */
typedef struct rdma_ctx {
    struct rdma_inst *inst;
    int index;
    char name[RDMA_NAME_MAX];
    char nic_path[RDMA_PATH_MAX]; /* "<our segment>@<name>" */
    struct ibv_context *verbs;
    struct ibv_pd *pd;
    uint8_t port;
    bool link_is_ib;
    int gid_tbl_len;
    /* The GID in use: set at create, switched by a re-probe (rdma_ctx_gid_reprobe)
     * under gid_lock; read it with rdma_ctx_gid so index and GID match. */
    pthread_mutex_t gid_lock;
    int gid_index;
    uint8_t gid[16];
    int gid_probes;       /* GID switches made by re-probes (under gid_lock) */
    int64_t gid_probe_ns; /* when the table was last re-read, 0 = never */
    uint16_t lid;
    enum ibv_mtu mtu;
    int max_wr, max_sge, max_inline, max_rd_atomic;
    int qp_retry_cnt; /* transport retries of a QP (7; 6 on soft-RoCE, where 7 is endless) */
    /* Soft-RoCE: a success counts only from a QP not in the error state
     * (rdma_rxe can complete a WR with success on its error path). */
    bool check_success;
    int ncq;
    rdma_cq *cqs;
    atomic_uint next_cq;
    pthread_mutex_t ep_lock; /* the endpoint table, the ring and the hand */
    struct rdma_ep *eps[RDMA_EP_BUCKETS];
    int ep_count;
    /* Every endpoint in creation order (structs live until destroy), the
     * eviction hand into it, and how many endpoints hold QPs (at most
     * cfg.max_ep: taken under ep_lock, given back by qps_retire_locked). */
    struct rdma_ep **ring;
    int ring_cap;
    int ep_hand;
    atomic_int qp_eps;
    /* Set by IBV_EVENT_PORT_ERR (or DEVICE_FATAL), cleared by PORT_ACTIVE:
     * routing skips the context meanwhile (rdma_ctx_read_events). */
    atomic_bool port_down;
} rdma_ctx;

/* A snapshot of a context's GID: what one handshake sends and connects with. */
typedef struct rdma_gid_sel {
    int index;
    uint8_t gid[16];
} rdma_gid_sel;

/* A FIFO of slices linked through transport_data[0] (next) and [1] (prev). */
typedef struct slice_list {
    te_slice *head, *tail;
    size_t count;
} slice_list;

/* A QP.  It outlives its endpoint's use of it while WRs are outstanding. */
typedef struct rdma_qp {
    struct ibv_qp *qp;
    struct rdma_ep *ep;
    rdma_cq *cq;
    int max_inline;  /* what the provider granted */
    int outstanding; /* WRs on the wire, probes included (under ep->lock) */
    slice_list held; /* soft-RoCE: successes waiting for a later one (under ep->lock) */
    bool retired;
    struct rdma_qp *next; /* in ep->retired */
} rdma_qp;

enum rdma_ep_state {
    EP_IDLE,       /* no connected QPs */
    EP_CONNECTING, /* a handshake is queued or running */
    EP_WAIT_ACK,   /* passive side connected, waiting for the peer's ready_ack */
    EP_READY
};

/* The connection from one local NIC to one peer NIC path: a rail. */
typedef struct rdma_ep {
    struct rdma_ep *hnext; /* bucket chain in ctx->eps */
    rdma_ctx *ctx;
    char peer_path[RDMA_PATH_MAX];
    rdma_rail rail; /* consecutive errors, pause (atomics, no lock) */
    bool loopback; /* the peer path is this very NIC: QPs connect to themselves */
    pthread_mutex_t lock;
    enum rdma_ep_state state;
    rdma_qp **qps; /* current QPs or NULL */
    int nqp;
    bool connected; /* qps are RTS towards peer_qpn */
    uint32_t peer_qpn[RDMA_MAX_QP];
    uint32_t gen;   /* bumped whenever qps are replaced */
    unsigned next_qp;
    int64_t wait_ack_since;
    bool hs_queued;
    bool hs_acking; /* the active handshake connected; its ready_ack round runs */
    char rpc_host[256];
    uint16_t rpc_port;
    slice_list pending; /* waiting for a connection or for room */
    slice_list posted;  /* on the wire */
    rdma_qp *retired;   /* replaced QPs that still have WRs outstanding */
    struct rdma_ep *hs_next;
    /* The QP cap: has_qps (written under lock) = counted in ctx->qp_eps;
     * visited is set by each batch of slices, cleared by the eviction hand;
     * cap_refused = the last QP creation found the cap full, nothing idle. */
    atomic_bool has_qps;
    atomic_bool visited;
    bool cap_refused;
} rdma_ep;

/* A registration: one MR per context. */
typedef struct rdma_mr {
    struct rdma_mr *next, *prev;
    void *addr;
    size_t length;
    char location[64];
    int *nics; /* context indices for this location, preferred first */
    int nnics, npref;
    int nctx;
    struct ibv_mr *mrs[];
} rdma_mr;

/* What peer_open returns. */
typedef struct rdma_peer {
    rdma_peer_desc *desc;
    char rpc_host[256];
    uint16_t rpc_port;
    char (*paths)[RDMA_PATH_MAX]; /* "<peer name>@<device>" per device */
    int nctx;                     /* of the instance that opened it */
    _Atomic(rdma_ep *) *eps;      /* [local ctx * ndev + device], filled on first use */
} rdma_peer;

typedef struct rdma_inst {
    te_host *host;
    rdma_config cfg;
    char segment[512];
    int nctx;
    rdma_ctx *ctxs;
    bool usable[RDMA_MAX_CTX];
    atomic_int ports_down; /* contexts with port_down set */
    char *matrix;     /* our priority matrix, JSON text */
    atomic_uint_fast64_t seq;
    atomic_long held; /* slices taken and not yet reported */
    atomic_bool stopping;

    pthread_mutex_t mr_lock;
    rdma_mr *mrs;

    pthread_mutex_t hs_lock; /* the handshake queue */
    pthread_cond_t hs_cond;
    rdma_ep *hs_head, *hs_tail;
    pthread_t hs_threads[RDMA_MAX_HS_THREADS];
    int nhs;

    pthread_mutex_t wd_lock; /* the watchdog */
    pthread_cond_t wd_cond;
    pthread_t wd_thread;
    bool wd_started;
} rdma_inst;

/* ---- slice scratch: [0]/[1] list links, [2] rdma_qp when posted,
 *      [3] rkey << 32 | attempt ---------------------------------------------- */
/* transport_data[3]: the rkey of the routed peer NIC (bits 32..63), the
 * rail the slice was last routed on (bit 31: set; local context in bits
 * 16..21, peer device in 22..30) and its attempt number (bits 0..15). */
#define SLICE_RAIL_SET (1ull << 31)
_Static_assert(RDMA_MAX_CTX <= 64 && RDMA_MAX_DEVICES <= 512, "a rail fits transport_data[3]");
static inline unsigned slice_attempt(const te_slice *s)
{
    return (unsigned)((uintptr_t)s->transport_data[3] & 0xffff);
}
static inline uint32_t slice_rkey(const te_slice *s)
{
    return (uint32_t)((uint64_t)(uintptr_t)s->transport_data[3] >> 32);
}
/* The rail of the last routing; false when the slice was never routed. */
static inline bool slice_rail(const te_slice *s, int *local, int *peer)
{
    uint64_t v = (uint64_t)(uintptr_t)s->transport_data[3];
    *local = (int)(v >> 16 & 0x3f);
    *peer = (int)(v >> 22 & 0x1ff);
    return v & SLICE_RAIL_SET;
}
static inline void slice_set_route(te_slice *s, uint32_t rkey, unsigned attempt, int local,
                                   int peer)
{
    uint64_t rail =
        SLICE_RAIL_SET | (uint64_t)(local & 0x3f) << 16 | (uint64_t)(peer & 0x1ff) << 22;
    s->transport_data[3] = (void *)(uintptr_t)((uint64_t)rkey << 32 | rail | (attempt & 0xffff));
}
/* The next attempt, keeping the rail it failed on. */
static inline void slice_set_attempt(te_slice *s, unsigned attempt)
{
    uint64_t v = (uint64_t)(uintptr_t)s->transport_data[3];
    s->transport_data[3] = (void *)(uintptr_t)((v & ~0xffffull) | (attempt & 0xffff));
}

void slice_list_push(slice_list *l, te_slice *s);
void slice_list_remove(slice_list *l, te_slice *s);
te_slice *slice_list_pop(slice_list *l);
void slice_list_append(slice_list *dst, slice_list *src);

/* context.c */
int rdma_contexts_open(rdma_inst *in, const char *device_filter);
void rdma_contexts_close(rdma_inst *in);
int rdma_ctx_find(rdma_inst *in, const char *name);
/* The context's current GID index and GID, read together. */
rdma_gid_sel rdma_ctx_gid(rdma_ctx *c);
/* After a failed handshake from c: when the GID was chosen automatically and
 * rdma_gid_reprobe_due allows it, re-reads the table and switches to a better
 * entry (logged).  Connected QPs keep theirs; new handshakes use the new one. */
void rdma_ctx_gid_reprobe(rdma_ctx *c);
/* Reads the device's pending asynchronous events without blocking and
 * keeps c->port_down (and in->ports_down) in step with the port's state;
 * logs each change.  Called from the watchdog only. */
void rdma_ctx_read_events(rdma_ctx *c);

/* memory.c */
int rdma_register(void *inst, void *addr, size_t length, const char *location, void **mr);
int rdma_unregister(void *inst, void *mr);
int rdma_describe_buffer(void *inst, void *mr, char **json);
void rdma_mrs_release(rdma_inst *in);

/* endpoint.c */
rdma_ep *rdma_ep_get(rdma_ctx *ctx, const char *peer_path, int *err);
/* Marks ep used (the eviction's second chance): one relaxed load, and a
 * store only when the bit was clear; once per batch of slices. */
static inline void rdma_ep_touch(rdma_ep *ep)
{
    if (!atomic_load_explicit(&ep->visited, memory_order_relaxed))
        atomic_store_explicit(&ep->visited, true, memory_order_relaxed);
}
/* The endpoint of a rail, or NULL when there is none yet (none is created). */
rdma_ep *rdma_ep_find(rdma_ctx *ctx, const char *peer_path);
/* Counts a path error on ep's rail (QP error, failed post or handshake);
 * logs the pause it may start. */
void rdma_rail_failed(rdma_ep *ep, const char *why);
void rdma_ep_kick_locked(rdma_ep *ep);
void rdma_ep_reset_locked(rdma_ep *ep, const char *why);
int rdma_handshake_start(rdma_inst *in);
int rdma_passive_install(rdma_inst *in);
void rdma_handshake_stop(rdma_inst *in);
void rdma_eps_destroy(rdma_inst *in);
void rdma_qp_destroy(rdma_qp *q);

/* datapath.c */
int rdma_submit(void *inst, te_slice *const *slices, size_t count);
/* Posts pending slices, at most `per_qp` WRs per QP in this call: a small
 * budget where the caller must not linger (submitters, handshakes; soft-RoCE
 * does its protocol work inside ibv_post_send), RDMA_POST_ALL from the
 * completion workers, which refill the QPs as room frees up. */
#define RDMA_POST_KICK 16
#define RDMA_POST_ALL (1 << 30)
void rdma_ep_post_locked(rdma_ep *ep, slice_list *failed, int per_qp);
void rdma_retry_or_fail(rdma_inst *in, slice_list *list, int status);
void rdma_slice_finish(rdma_inst *in, te_slice *s, int status);
int rdma_workers_start(rdma_inst *in);
void rdma_workers_stop(rdma_inst *in);
int rdma_watchdog_start(rdma_inst *in);
void rdma_watchdog_stop(rdma_inst *in);
void rdma_watchdog_kick(rdma_inst *in);
void rdma_drain_all(rdma_inst *in, int64_t budget_ms);

/* rdma_testing.c, compiled only into the test build of the plugin
 * (tests/rdma, TE_RDMA_TESTING): makes a successful read completion, the last
 * of its QP (ep->lock held, q->outstanding counted down), one that soft-RoCE
 * reported without its bytes.  The shipped plugin has none. */
#ifdef TE_RDMA_TESTING
bool rdma_testing_lose_read(rdma_inst *in, rdma_qp *q, te_slice *s);
#else
static inline bool rdma_testing_lose_read(rdma_inst *in, rdma_qp *q, te_slice *s)
{
    (void)in;
    (void)q;
    (void)s;
    return false;
}
#endif

#endif
