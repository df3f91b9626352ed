/* shm.h - internal types of the same-host transport (libte_shm.so), which
 * copies CPU memory once with process_vm_readv/process_vm_writev.  See
 * plugins/shm/README.md for the descriptor members and the safety model. */
#ifndef TE_SHM_H
#define TE_SHM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "te/plugin.h"

#define SHM_NAME "shm"
#define SHM_VERSION 1
/* "TESHMRT1": a registration table of same-host protocol version 1. */
#define SHM_REGTAB_MAGIC 0x3154524d48534554ull
#define SHM_MAX_RANGES 65536u
#define SHM_MAX_WORKERS 16
#define SHM_SLICE_SIZE (1u << 20)   /* the core cuts requests into 1 MiB slices */
#define SHM_CHUNK_BYTES (4u << 20)  /* a worker takes at most this much per pick */
#define SHM_IOV_MAX 1024            /* iovecs per process_vm_* call (UIO_MAXIOV) */
#define SHM_INLINE_BYTES (1u << 20) /* submit() copies this much itself (MC_TE_SHM_INLINE_BYTES) */
#define SHM_VERIFY_NS 1000000       /* a mapped table's pid is confirmed this often */


typedef struct shm_range {
    uint64_t addr;
    uint64_t len;
} shm_range;

/*
 * The registration table every engine keeps in its own memory and names in
 * its descriptor (shm_regtab).  Initiators on the same host read it with
 * process_vm_readv before and after each copy, so they only touch ranges the
 * target has registered *now*, not when its descriptor was fetched.  seq is
 * a sequence lock: odd while the target changes the table.  The layout is
 * part of the same-host protocol (its version is in the magic).
 */
typedef struct shm_regtab {
    uint64_t magic;
    uint64_t token;   /* random; also in the descriptor (shm_token) */
    uint64_t seq;
    uint64_t count;   /* ranges at `entries`, sorted by addr */
    uint64_t entries; /* address of shm_range[count] in the target */
    uint64_t reserved;
} shm_regtab;

/* Our handle of a registered buffer. */
typedef struct shm_mr {
    uint64_t addr;
    uint64_t len;
    bool cpu; /* only CPU memory enters the table */
} shm_mr;

/* A peer reached through this transport, with its table cached. */
typedef struct shm_peer {
    pid_t pid;
    uint64_t token;
    uint64_t tab_addr;
    char name[128];
    pthread_mutex_t lock; /* guards the cache below */
    uint64_t seq;         /* seq the cache was read at; odd = no cache */
    shm_range *ranges;
    size_t count;
    int64_t warned_ns;    /* last failure logged as a warning (rate limit) */
    const shm_regtab *map; /* the target's header mapped read-only, or NULL */
    size_t map_len;
    _Atomic int64_t verified_ns; /* when the pid was last confirmed to hold the table */
    int64_t verify_ns;           /* how often (SHM_VERIFY_NS) */
} shm_peer;

struct shm_inst;

struct shm_scratch;

/* The copy workers: a FIFO of slices linked through transport_data[0]. */
typedef struct shm_pool {
    struct shm_inst *inst;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    te_slice *head, *tail;
    size_t queued;
    bool stop;
    uint64_t inline_bytes;     /* what a submitting thread copies itself; 0: none */
    struct shm_scratch *spare; /* scratch for submitting threads, kept for reuse */
    int nthreads;
    pthread_t threads[SHM_MAX_WORKERS];
} shm_pool;

typedef struct shm_inst {
    te_host *host;
    char host_id[320];
    pid_t pid;
    bool force_eperm;  /* the probe acts as if EPERM: set by shm_testing.c only */
    int64_t verify_ns; /* SHM_VERIFY_NS; shm_testing.c may change it */
    /* Target side: the published table and the ranges it points at. */
    pthread_mutex_t reg_lock;
    shm_regtab *tab;
    int tab_fd;         /* memfd holding *tab (shm_seq_fd), or -1: tab is on the heap */
    size_t tab_len;
    shm_range *ranges;
    size_t nranges;
    size_t device_regs; /* registered buffers that are not CPU memory */
    shm_pool pool;
} shm_inst;

/* shm_tabmap.c: the table's header in shared memory */
shm_regtab *shm_tabmap_create(int *fd, size_t *len);
void shm_tabmap_release(shm_regtab *t, int fd, size_t len);
void shm_tabmap_open(shm_peer *p, long fd);
void shm_tabmap_close(shm_peer *p);
int shm_tabmap_seq(shm_peer *p, uint64_t *seq); /* 0, status, or 1: read by pid */

/* shm_regtab.c: target side */
int shm_regtab_create(shm_inst *in);
void shm_regtab_destroy(shm_inst *in);
int shm_regtab_add(shm_inst *in, uint64_t addr, uint64_t len);
void shm_regtab_remove(shm_inst *in, uint64_t addr);
/* initiator side */
int shm_peer_read(pid_t pid, void *dst, uint64_t addr, size_t len); /* 0 or -errno */
int shm_peer_probe(shm_peer *p, bool force_eperm);                  /* 0 or -errno */
int shm_peer_refresh(shm_peer *p, uint64_t *seq);                   /* 0 or te_status */
int shm_peer_seq(shm_peer *p, uint64_t *seq);                       /* 0 or te_status */
bool shm_peer_allows(const shm_peer *p, uint64_t addr, uint64_t len);
int shm_errno_status(int err);

/* shm.c: whether a location ("cpu:0", "cuda:1", "*") is CPU memory. */
bool shm_is_cpu_location(const char *where);

/* shm_testing.c, compiled only into the test build of the plugin
 * (tests/shm, TE_SHM_TESTING): the tests' overrides of a new instance.  The
 * shipped plugin has none. */
#ifdef TE_SHM_TESTING
void shm_testing_apply(shm_inst *in);
#else
static inline void shm_testing_apply(shm_inst *in)
{
    (void)in;
}
#endif

/* shm_pool.c */
int shm_pool_start(shm_pool *pool, struct shm_inst *inst, int nthreads, uint64_t inline_bytes);
void shm_pool_stop(shm_pool *pool);
int shm_pool_submit(shm_pool *pool, te_slice *const *slices, size_t count);

#endif
