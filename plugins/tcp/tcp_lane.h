/* tcp_lane.h - the initiator side of the TCP transport, shared by its files.
 * A peer has several lanes; a lane is one persistent connection driven by
 * one thread that pipelines requests (many in flight, headers and payloads
 * gathered into one sendmsg straight from user memory) and matches the
 * in-order responses, receiving READ data straight into user memory.  Idle
 * lanes sleep in poll.  A lone small request goes to the first idle lane and
 * is driven by the submitting thread itself for a few hundred microseconds
 * (send, then a blocking receive of the answer), so a synchronous round trip
 * costs no thread hand-off and two syscalls; if the answer is slow the lane
 * thread takes over.
 *
 * A lane's thread, its eventfd and its connection exist only while it is in
 * use: a lane idle for MC_TCP_IDLE_TIMEOUT_MS, or whose idle connection the
 * peer closed, closes everything and its thread ends; the next slice starts
 * them again.  So an engine that talked to many peers holds threads and
 * descriptors only for the peers it talked to recently.  And never more lane
 * threads than MC_TCP_MAX_LANE_THREADS (tcp_lane_slots.h): past it a lane
 * waits for a thread, idle lanes give theirs up at once, busy ones after
 * their turn, and a thread goes straight on to the lane it hands over to.
 *
 * With several NICs (tcp_rail.h) each rail (local address, remote address)
 * has its own lanes; slices go to the rail whose queue drains first at its
 * measured rate, and the slices of a lane whose connection fails or stalls
 * move to the other rails while their deadline allows.
 *
 * The files: tcp_lane.c (peers, submit, spreading slices over lanes and
 * rails), tcp_lane_drive.c (a submitting thread driving a lent lane),
 * tcp_lane_thread.c (a lane's thread: start, work rounds, idle, retire),
 * tcp_lane_conn.c (a lane's connection), tcp_lane_send.c (the send path) and
 * tcp_lane_recv.c (the receive path). */
#ifndef TE_TCP_LANE_H
#define TE_TCP_LANE_H

#include <stdatomic.h>
#include <stddef.h>

#include "tcp.h"
#include "tcp_rail.h"

#define LANE_RBUF 65536

/* While lanes wait for a thread, a busy lane that has had its thread this
 * long takes no new slices, and gives the thread up once those in flight
 * are done. */
#define TCP_LANE_TURN_NS 50000000

/* How long a submitting thread waits for the answer to a request it sent
 * itself before leaving it to the lane thread. */
#define DRIVE_NS 200000

/* Slice scratch: [0] list link, [1..3] the 24-byte request header. */
#define NEXT(s) (*(te_slice **)&(s)->transport_data[0])
#define HDR(s) ((uint8_t *)&(s)->transport_data[1])

typedef struct slist {
    te_slice *head, *tail;
} slist;

typedef struct lane {
    tcp_peer *peer;
    pthread_mutex_t lock;
    slist queued; /* handed over by submit, under lock */
    bool stop, started; /* started: the thread, efd and rbuf exist */
    bool busy;    /* the lane thread is working the socket (under lock) */
    bool lent;    /* a submitting thread drives the lane (under lock) */
    int efd;      /* wakes the thread; -1 while none runs (written under lock) */
    /* Owned by the lane thread, or by the thread the idle lane is lent to. */
    int fd;
    int pipe[2];          /* for vmsplice of large payloads, -1 if unavailable */
    size_t pipe_bytes;    /* spliced into the pipe, not yet into the socket */
    slist sending, flying;
    uint64_t send_off;    /* bytes of sending.head already sent */
    bool in_data;         /* receiving READ data of flying.head */
    uint64_t data_off;
    uint8_t *rbuf;
    size_t rpos, rlen;
    int64_t last_io_ns;   /* when bytes of a response last arrived */
    int rail;             /* index in peer->rails */
    int64_t progress_ns;  /* when bytes last moved while the lane had work */
    bool blocking;        /* fd in blocking mode for a lent lane's receive (tcp_lane_drive.c) */
    bool waiting;         /* queued slices wait for a thread slot (under lock; holds a peer ref) */
    tcp_slot_node slot;   /* its place in the transport's slot lists */
    int64_t slot_since;   /* when its thread got its slot: busy lanes give way after TCP_LANE_TURN_NS */
} lane;

struct tcp_peer {
    tcp_transport *t;
    char host[256];
    uint16_t port;
    bool v2;
    int nlanes;
    atomic_uint next_lane;
    atomic_int refs; /* the core's handle + one per running lane thread */
    int nrails;      /* 0: one route to host; > 1: slices spread and moved */
    int lanes_per_rail;
    tcp_rail rails[TCP_MAX_RAILS];
    lane lanes[TCP_MAX_LANES];
};

static inline void slist_push(slist *l, te_slice *s)
{
    NEXT(s) = NULL;
    if (l->tail)
        NEXT(l->tail) = s;
    else
        l->head = s;
    l->tail = s;
}

static inline te_slice *slist_pop(slist *l)
{
    te_slice *s = l->head;
    if (s) {
        l->head = NEXT(s);
        if (!l->head)
            l->tail = NULL;
    }
    return s;
}

static inline void slist_append(slist *dst, slist *src)
{
    if (!src->head)
        return;
    if (dst->tail)
        NEXT(dst->tail) = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    src->head = src->tail = NULL;
}

static inline bool multi_rail(const tcp_peer *p)
{
    return p->nrails > 1;
}

static inline void rail_done(tcp_peer *p, int rail, te_slice *s, bool ok)
{
    if (multi_rail(p))
        tcp_rail_done(&p->rails[rail], s->length, ok, te_host_table->now_ns());
}

static inline void progress(lane *l)
{
    if (multi_rail(l->peer))
        l->progress_ns = te_host_table->now_ns();
}

static inline void tcp_lane_encode(const tcp_peer *p, te_slice *s)
{
    tcp_encode_header(HDR(s), s->length, s->remote,
                      (uint8_t)((s->opcode == TE_OP_WRITE ? TCP_OP_WRITE : TCP_OP_READ) |
                                (p->v2 ? TCP_OP_V2 : 0)));
}

/* v1 answers no WRITE: after a lane's last queued write goes out, a fence
 * follows, a 1-byte READ of the last byte written (a slice the lane allocates,
 * tagged through local_mr).  A connection is served in order, so the first
 * byte of a later READ's answer shows every write before it has landed:
 * only then are they reported done (tcp_lane_send.c, tcp_lane_recv.c). */
extern char tcp_fence_tag;
static inline bool tcp_is_fence(const te_slice *s)
{
    return s->local_mr == &tcp_fence_tag;
}

/* tcp_lane.c */
/* The slice leaves the transport: to tcp_cuda.c for a chunk of staged GPU
 * memory, otherwise to the core. */
void tcp_slice_finish(tcp_transport *t, te_slice *s, int status);
/* A lane's slice is done: the rail's rate and the lane's idle clock, then
 * tcp_slice_finish. */
void tcp_lane_complete(lane *l, te_slice *s, int status);
/* Drops a reference (the core's handle, a lane thread, a lender); the last
 * frees the peer. */
void tcp_peer_unref(tcp_peer *p);
/* Slices of a failed lane of rail `from` go to the other rails, unless their
 * deadline passed or no other rail is usable: then they fail with status. */
void tcp_peer_redistribute(tcp_peer *p, int from, slist *moved, int status);

/* tcp_lane_drive.c: a lone request driven on the first idle lane of
 * lanes[0..n) by this thread; false when none was free (queue it). */
bool tcp_lane_drive_first_idle(tcp_peer *p, lane *lanes, int n, te_slice *s);

/* tcp_lane_thread.c */
/* Starts the lane's thread, eventfd and buffers (caller holds l->lock), or
 * leaves the lane waiting for a thread slot (l->waiting; queued slices wait
 * with it).  On failure the caller passes the slot on with
 * tcp_lane_pass_slot once it has dropped l->lock. */
int tcp_lane_start(lane *l);
/* A thread slot is free (a lane thread ends, or a start failed; no lane
 * lock held): it goes to the longest waiting lane, else back to the pool. */
void tcp_lane_pass_slot(tcp_transport *t);
/* Wakes the lane's thread (caller holds l->lock). */
void tcp_lane_wake(lane *l);
/* The lane's connection failed or stalled: its slices move to other rails,
 * or fail with status. */
void tcp_lane_failed(lane *l, int status);

/* tcp_lane_conn.c */
void tcp_lane_open_pipe(lane *l);
void tcp_lane_close_pipe(lane *l);
/* Fails everything the lane holds and drops the connection. */
void tcp_lane_reset(lane *l, int status);
const char *tcp_lane_host(const lane *l); /* the remote address of the lane's rail */
/* Connects and authenticates the lane's socket.  0 or a status. */
int tcp_lane_connect(lane *l, int64_t deadline);
/* Closes an idle connection the peer closed (checked after STALE_CHECK_NS). */
void tcp_lane_drop_stale(lane *l);
/* The socket's blocking mode for a lent lane's receive; false on failure. */
bool tcp_lane_set_blocking(lane *l, bool on);

/* tcp_lane_send.c: sends as much of the queue as the socket takes.  0 or a
 * status. */
int tcp_lane_send(lane *l);

/* tcp_lane_recv.c: reads responses.  0 when the socket is drained, or a
 * status.  `wait`: the first read may sleep (a lent lane in blocking mode,
 * bounded by SO_RCVTIMEO). */
int tcp_lane_recv(lane *l, bool wait);

#endif
