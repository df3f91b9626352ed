/* tcp.h - the TCP transport's shared declarations: Mooncake's data framing
 * (24-byte header, v2 "MCTV" status frames), the target side (server) and
 * the initiator side (per-peer lanes). */
#ifndef TE_TCP_H
#define TE_TCP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "te/plugin.h"
#include "tcp_lane_slots.h"

#define TCP_HDR_LEN 24
#define TCP_OP_READ 0
#define TCP_OP_WRITE 1
#define TCP_OP_V2 0x80
#define TCP_STATUS_MAGIC 0x4D43545600000000ull
#define TCP_STATUS_OK 0
#define TCP_STATUS_REJECTED 1
#define TCP_MAX_LANES 16
#define TCP_SPLICE_MIN (64 * 1024)  /* payloads this big are sent with vmsplice */
#define TCP_PIPE_SIZE (1024 * 1024)
/* A payload with at least this much left is received straight into place
 * (READ data at the initiator, WRITE data at the target), not through the
 * receive buffer. */
#define TCP_DIRECT_MIN 16384


#define TCP_LOG(t, lvl, ...) te_host_table->log((t)->host, (lvl), "tcp", __VA_ARGS__)

typedef struct tcp_transport tcp_transport;
typedef struct tcp_peer tcp_peer;

/* ---- wire ---------------------------------------------------------------- */

static inline void tcp_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t tcp_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void tcp_encode_header(uint8_t h[TCP_HDR_LEN], uint64_t size, uint64_t addr,
                                     uint8_t opcode)
{
    tcp_put_u64(h, size);
    tcp_put_u64(h + 8, addr);
    h[16] = opcode;
    for (int i = 17; i < TCP_HDR_LEN; i++)
        h[i] = 0;
}

/* ---- target side (tcp_server.c, tcp_srv_*.c) ------------------------------ */

typedef struct tcp_srv_conn tcp_srv_conn;
typedef struct tcp_srv_loop tcp_srv_loop;
typedef struct tcp_srv_auth tcp_srv_auth;

/* The data port: one acceptor thread, a few epoll loops that serve every
 * connection (no thread per connection), and a registry of the open
 * connections under `lock` that enforces the caps by closing the oldest idle
 * connection instead of refusing a new one. */
typedef struct tcp_server {
    int listen_fd;
    uint16_t port;
    int wake[2];           /* written once at shutdown; blocking waits poll it */
    pthread_t accept_thread;
    bool running;
    pthread_mutex_t lock;  /* the registry: conns, active, evicting */
    pthread_cond_t idle;   /* broadcast when active drops to 0 */
    int active;            /* open connections, those being evicted included */
    int evicting;          /* of those, shut down to make room, not yet closed */
    tcp_srv_conn *conns;   /* registry of open connections */
    int max_connections;   /* MC_TCP_MAX_CONNECTIONS */
    int max_per_peer;      /* MC_TE_MAX_CONNECTIONS_PER_PEER */
    int64_t io_timeout_ns;     /* a started frame must keep moving (MC_TCP_STATUS_TIMEOUT_SEC) */
    int64_t header_timeout_ns; /* first header after accept (MC_TCP_HEADER_TIMEOUT_MS) */
    int64_t idle_timeout_ns;   /* between requests (MC_TCP_IDLE_TIMEOUT_MS) */
    int nloops;            /* MC_TCP_SERVER_THREADS */
    tcp_srv_loop *loops;
    tcp_srv_auth *auth;    /* handshakes of MC_AUTH_TOKEN, NULL without a token */
    tcp_srv_conn *spare;   /* closed connections' structs kept for reuse (lock) */
    int nspare;
} tcp_server;

int tcp_server_start(tcp_transport *t, tcp_server *s);
void tcp_server_stop(tcp_server *s);

/* ---- initiator side (tcp_lane.h, tcp_lane*.c) -------------------------------- */

tcp_peer *tcp_peer_new(tcp_transport *t, const char *host, uint16_t port, bool v2);
void tcp_peer_free(tcp_peer *p);
int tcp_peer_submit(tcp_peer *p, te_slice *const *slices, size_t count);
/* Straight to the lanes: the slices' local memory is host memory. */
int tcp_peer_submit_host(tcp_peer *p, te_slice *const *slices, size_t count);

struct tcp_transport {
    te_host *host;
    tcp_server server;
    int lanes_per_peer;
    uint64_t lane_min_bytes; /* MC_TCP_LANE_MIN_BYTES: a submit's smallest run per lane */
    uint64_t slice_size;     /* MC_TCP_SLICE_SIZE: requests are cut into slices this big */
    bool force_v1;
    int64_t connect_timeout_ms;
    int sock_buf; /* SO_SNDBUF/SO_RCVBUF, 0 = kernel autotuning */
    bool use_splice; /* MC_TCP_SPLICE=1: the lanes' large WRITE payloads through vmsplice */
    tcp_lane_slots slots; /* MC_TCP_MAX_LANE_THREADS; destroy waits until all are free */
    struct tcp_cuda *_Atomic cuda; /* GPU memory staging (tcp_cuda.c), made on first need */
    struct tcp_nics *nics;  /* rails: the device filters' interfaces (tcp_rail.h), or NULL */
    int64_t rail_pause_ns;  /* MC_TCP_RAIL_PAUSE_MS: first cool-down of a failed rail */
    int64_t rail_stall_ns;  /* MC_TCP_RAIL_STALL_MS: a lane without progress has failed */
};

/* Wakes an idle lane whose thread should end (tcp_lane_slots.kick). */
void tcp_lane_kick(void *lane);

/* A declared integer setting (docs/configuration.md) through the host's
 * config_int: its default when unset, or (logged once) when invalid. */
int64_t tcp_config(te_host *h, const char *name);
void tcp_tune_socket(const tcp_transport *t, int fd);
void tcp_block_sigpipe(void);
void tcp_take_sigpipe(void);

/* ---- GPU memory through pinned host buffers (tcp_cuda.c) ---------------------- */

/* The GPU holding device memory at p, or -1 (host memory; always -1, in
 * tens of nanoseconds, while the process has not loaded the CUDA driver). */
int tcp_cuda_device(const void *p);
bool tcp_cuda_possible(void);
/* Initiator: moves a slice of GPU memory through staging; it is reported once. */
void tcp_cuda_stage(tcp_transport *t, tcp_peer *p, te_slice *s, int dev);
/* The lanes' chunks of staged slices carry this tag as local_mr. */
extern char tcp_cuda_shadow_tag;
static inline bool tcp_cuda_is_shadow(const te_slice *s)
{
    return s->local_mr == &tcp_cuda_shadow_tag;
}
void tcp_cuda_shadow_done(te_slice *s, int status);
/* Target: moves a payload between the socket and GPU memory, io() receiving
 * or sending one chunk of a pinned buffer.  0, or -1 to close. */
typedef int (*tcp_cuda_io)(void *arg, void *buf, size_t len);
int tcp_cuda_to_device(tcp_transport *t, void *dst, uint64_t len, int dev, tcp_cuda_io recv_chunk,
                       void *arg, int64_t deadline);
int tcp_cuda_from_device(tcp_transport *t, const void *src, uint64_t len, int dev,
                         tcp_cuda_io send_chunk, void *arg, int64_t deadline);
void tcp_cuda_destroy(tcp_transport *t);

#endif
