/* tcp_srv.h - internals of the TCP data port (the target side): the
 * per-connection state machine (tcp_srv_conn.c), the epoll loops that drive
 * it (tcp_srv_loop.c), the bounded pool that runs MC_AUTH_TOKEN handshakes
 * (tcp_srv_auth.c), and the registry with its caps (tcp_server.c). */
#ifndef TE_TCP_SRV_H
#define TE_TCP_SRV_H

#include <stdatomic.h>
#include <sys/uio.h>

#include "tcp.h"

#define SRV_OUT_SLOTS 128           /* answers queued before a flush */
#define SRV_OUT_BYTES (1u << 20)    /* READ payload bytes queued before a flush */
#define SRV_MAX_DISCARD (1ull << 30) /* payload of a rejected write we still drain */
#define SRV_RBUF (256 * 1024)       /* a loop's receive buffer, shared by its connections */
#define SRV_LINGER_US 200           /* a lone connection's next request is awaited this long */

enum { SRV_HEADER, SRV_PAYLOAD };

/* One connection of the data port.  Owned by the loop that serves it (or by
 * an auth thread before that); the registry fields belong to s->lock, and
 * idle_since is the one field both sides touch, atomically. */
struct tcp_srv_conn {
    tcp_server *s;
    tcp_transport *t;
    tcp_srv_loop *loop;
    int fd;
    char peer[64];          /* numeric address, for the per-peer cap and logs */
    int64_t accepted_ns;
    /* > 0: idle since then (at a frame boundary, nothing to send: evictable);
     * 0: inside a frame or answering; -1: chosen for eviction, fd shut down. */
    _Atomic int64_t idle_since;
    bool evicting;          /* under s->lock */
    tcp_srv_conn *rnext, *rprev; /* registry (s->lock) */
    tcp_srv_conn *lnext, *lprev; /* the serving loop's list */
    tcp_srv_conn *qnext;    /* hand-over stack, auth queue, or ready list */
    bool in_ready;          /* on the loop's ready list (ran out of budget) */
    bool rd_ready, wr_ready, eof;
    bool rdhup;             /* the peer's FIN is queued: read on to the end, short reads or not */
    bool served;            /* a whole header arrived once: idle timeout, not header timeout */
    bool sending;           /* a flush is under way: no new input until it ends */
    bool blocking;          /* O_NONBLOCK cleared for tcp_srv_conn_linger (every other call
                             * passes MSG_DONTWAIT) */
    /* Input: where in the current frame we are. */
    int state;
    uint8_t hdr[TCP_HDR_LEN];
    size_t hlen;
    uint8_t *dst;           /* WRITE payload destination; NULL: drain a rejected write */
    uint64_t left;
    void *pin;              /* held while a WRITE payload arrives */
    bool v2;
    int64_t deadline;       /* inside a frame or answering: close when it passes */
    uint8_t *stash;         /* input read but not yet taken (output was full) */
    size_t stash_len, stash_pos;
    /* Output: iovecs over status frames and pinned READ data. */
    struct iovec out[2 * SRV_OUT_SLOTS];
    int nout, ohead;
    uint8_t status[SRV_OUT_SLOTS][8];
    int nstatus;
    void *pins[SRV_OUT_SLOTS]; /* released once every queued byte went out */
    int npins;
    uint64_t out_bytes;
};

/* ---- tcp_srv_conn.c ---- */
tcp_srv_conn *tcp_srv_conn_new(tcp_transport *t, int fd, const char *peer);
/* Moves the connection as far as its socket allows: reads and handles
 * requests (buf: the loop's receive buffer), sends answers.  0: waiting for
 * the socket; 1: out of budget with more to do (run again); -1: close. */
int tcp_srv_conn_run(tcp_srv_conn *c, uint8_t *buf, size_t cap);
/* Waits up to SRV_LINGER_US in one blocking recv for the next request of a
 * connection that is between frames with nothing to send, and hands what
 * came to the state machine.  1: bytes came (run it again), 0: none, -1: close. */
int tcp_srv_conn_linger(tcp_srv_conn *c, uint8_t *buf, size_t cap);
/* When the connection must be closed if nothing changes (ns, monotonic). */
int64_t tcp_srv_conn_deadline(const tcp_srv_conn *c);
/* Lets go of the pinned memory and buffers; the fd is the registry's. */
void tcp_srv_conn_release(tcp_srv_conn *c);

/* ---- tcp_srv_loop.c ---- */
int tcp_srv_loops_start(tcp_server *s, tcp_transport *t);
void tcp_srv_loops_stop(tcp_server *s);
/* Hands a registered connection to the least loaded loop. */
void tcp_srv_loop_adopt(tcp_server *s, tcp_srv_conn *c);

/* ---- tcp_srv_auth.c ---- */
int tcp_srv_auth_start(tcp_server *s, tcp_transport *t);
void tcp_srv_auth_stop(tcp_server *s);
/* Queues a connection for its handshake; it goes to a loop afterwards. */
void tcp_srv_auth_submit(tcp_server *s, tcp_srv_conn *c);

/* ---- tcp_server.c ---- */
/* A zeroed connection struct, reused from closed connections where possible. */
tcp_srv_conn *tcp_srv_conn_alloc(tcp_server *s);
/* Unregisters, closes the fd (under s->lock) and frees the connection. */
void tcp_srv_forget(tcp_server *s, tcp_srv_conn *c);

#endif
