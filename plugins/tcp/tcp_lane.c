/* tcp_lane.c - the initiator side of the TCP transport.  A peer has several
 * lanes; a lane is one persistent connection driven by one thread that
 * pipelines requests (many in flight, headers and payloads gathered into one
 * sendmsg straight from user memory) and matches the in-order responses,
 * receiving READ data straight into user memory.  Idle lanes sleep in poll.
 * A lone small request goes to the first idle lane and is driven by the
 * submitting thread itself for a few hundred microseconds (send, then a
 * blocking receive of the answer), so a synchronous round trip costs no
 * thread hand-off and two syscalls; if the answer is slow the lane thread
 * takes over.
 *
 * A lane's thread, its eventfd and its connection exist only while it is in
 * use: a lane idle for MC_TCP_IDLE_TIMEOUT_MS, or whose idle connection the
 * peer closed, closes everything and its thread ends; the next slice starts
 * them again.  So an engine that talked to many peers holds threads and
 * descriptors only for the peers it talked to recently.
 *
 * With several NICs (tcp_rail.h) each rail (local address, remote address)
 * has its own lanes; slices go to the rail whose queue drains first at its
 * measured rate, and the slices of a lane whose connection fails or stalls
 * move to the other rails while their deadline allows. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcp.h"
#include "tcp_rail.h"

#define LANE_RBUF 65536
#define MAX_IOV 512
#define MAX_SEND_BYTES (16u << 20)

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
    int64_t last_io_ns;   /* when a response last arrived */
    int rail;             /* index in peer->rails */
    int64_t progress_ns;  /* when bytes last moved while the lane had work */
    bool blocking;        /* fd in blocking mode for a lent lane's receive (inline_wait) */
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

static void slist_push(slist *l, te_slice *s)
{
    NEXT(s) = NULL;
    if (l->tail)
        NEXT(l->tail) = s;
    else
        l->head = s;
    l->tail = s;
}

static te_slice *slist_pop(slist *l)
{
    te_slice *s = l->head;
    if (s) {
        l->head = NEXT(s);
        if (!l->head)
            l->tail = NULL;
    }
    return s;
}

static void slist_append(slist *dst, slist *src)
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

static void peer_unref(tcp_peer *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    for (int i = 0; i < p->nlanes; i++)
        pthread_mutex_destroy(&p->lanes[i].lock); /* threads closed their efds */
    for (int i = 0; i < p->nrails; i++)
        tcp_rail_destroy(&p->rails[i]);
    free(p);
}

static bool multi_rail(const tcp_peer *p)
{
    return p->nrails > 1;
}

static void rail_done(tcp_peer *p, int rail, te_slice *s, bool ok)
{
    if (multi_rail(p))
        tcp_rail_done(&p->rails[rail], s->length, ok, te_host_table->now_ns());
}

/* Chunks of staged GPU memory go back to tcp_cuda.c, the rest to the core. */
static void finish(tcp_transport *t, te_slice *s, int status)
{
    if (tcp_cuda_is_shadow(s))
        tcp_cuda_shadow_done(s, status);
    else
        te_host_table->slice_done(t->host, s, status);
}

static void complete(lane *l, te_slice *s, int status)
{
    l->last_io_ns = te_host_table->now_ns();
    rail_done(l->peer, l->rail, s, status == 0);
    finish(l->peer->t, s, status);
}

static void progress(lane *l)
{
    if (multi_rail(l->peer))
        l->progress_ns = te_host_table->now_ns();
}

static void fail_list(lane *l, slist *list, int status)
{
    te_slice *s;
    while ((s = slist_pop(list)))
        complete(l, s, status);
}

/* Fails everything the lane holds and drops the connection: after an error
 * the byte stream's position is unknown. */
static void open_pipe(lane *l)
{
    l->pipe[0] = l->pipe[1] = -1;
    if (pipe2(l->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        l->pipe[0] = l->pipe[1] = -1;
        return;
    }
    if (fcntl(l->pipe[1], F_SETPIPE_SZ, TCP_PIPE_SIZE) < TCP_PIPE_SIZE) {
        close(l->pipe[0]);
        close(l->pipe[1]);
        l->pipe[0] = l->pipe[1] = -1;
    }
}

static void close_pipe(lane *l)
{
    if (l->pipe[0] >= 0) {
        close(l->pipe[0]);
        close(l->pipe[1]);
    }
    l->pipe[0] = l->pipe[1] = -1;
    l->pipe_bytes = 0;
}

static void reset_lane(lane *l, int status)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    l->blocking = false;
    if (l->pipe_bytes) { /* bytes of the dead stream: start a clean pipe */
        close_pipe(l);
        open_pipe(l);
    }
    l->send_off = 0;
    l->in_data = false;
    l->rpos = l->rlen = 0;
    fail_list(l, &l->flying, status);
    fail_list(l, &l->sending, status);
}

/* A rail's lane leaves from its local address, so that routing sends it over
 * that NIC.  0 when bound or when the address is of another family than
 * the peer's (routing chooses then). */
static int bind_local(int fd, const char *local, int family)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len = 0;
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        len = inet_pton(AF_INET, local, &a->sin_addr) == 1 ? sizeof *a : 0;
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        len = inet_pton(AF_INET6, local, &a->sin6_addr) == 1 ? sizeof *a : 0;
    }
    return len ? bind(fd, (struct sockaddr *)&ss, len) : 0;
}

static const char *lane_host(const lane *l)
{
    return l->peer->nrails ? l->peer->rails[l->rail].spec.remote : l->peer->host;
}

static int lane_connect(lane *l, int64_t deadline)
{
    tcp_peer *p = l->peer;
    int64_t now = te_host_table->now_ns();
    int64_t limit = now + p->t->connect_timeout_ms * 1000000;
    /* A LAN connects in far less: leave time to move to another rail, if
     * there is one to move to. */
    if (multi_rail(p) && now + p->t->rail_stall_ns / 4 < limit &&
        tcp_rail_pick(p->rails, p->nrails, 0, now, l->rail) >= 0)
        limit = now + p->t->rail_stall_ns / 4;
    if (deadline && deadline < limit)
        limit = deadline;
    const char *host = lane_host(l), *local = p->nrails ? p->rails[l->rail].spec.local : "";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char service[8];
    snprintf(service, sizeof service, "%u", p->port);
    if (getaddrinfo(host, service, &hints, &res) != 0) {
        te_host_table->set_error("tcp: cannot resolve %s", host);
        return TE_ERR_DNS;
    }
    int rc = TE_ERR_SOCKET, why = 0;
    for (struct addrinfo *ai = res; ai && rc; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        tcp_tune_socket(p->t, fd);
        if ((*local && bind_local(fd, local, ai->ai_family) < 0) ||
            (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)) {
            why = errno;
            close(fd);
            continue;
        }
        int64_t left = limit - te_host_table->now_ns();
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int err = 0, ready;
        socklen_t sl = sizeof err;
        /* A signal to this thread is no reason to give up on the connect. */
        while ((ready = poll(&pf, 1, left > 0 ? (int)(left / 1000000) + 1 : 0)) < 0 &&
               errno == EINTR)
            left = limit - te_host_table->now_ns();
        if (ready == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 &&
            err == 0) {
            rc = te_host_table->auth_connect(p->t->host, fd, limit);
            if (rc) {
                close(fd);
                break;
            }
            l->fd = fd;
            progress(l);
        } else {
            rc = left > 0 && err ? TE_ERR_SOCKET : TE_ERR_TIMEOUT;
            why = err;
            close(fd);
            if (rc == TE_ERR_TIMEOUT)
                break;
        }
    }
    freeaddrinfo(res);
    if (rc)
        TCP_LOG(p->t, TE_LOG_WARN, "cannot connect to %s:%u%s%s (%s)", host, p->port,
                *local ? " from " : "", local, rc == TE_ERR_TIMEOUT ? "timed out" : strerror(why));
    return rc;
}

static uint64_t wire_bytes(const te_slice *s)
{
    return TCP_HDR_LEN + (s->opcode == TE_OP_WRITE ? s->length : 0);
}

/* Counts `sent` more bytes of the queue as gone: requests fully on the wire
 * wait for their response (v1 writes get none and complete now). */
static void advance(lane *l, uint64_t sent)
{
    if (sent)
        progress(l);
    uint64_t left = sent + l->send_off;
    while (l->sending.head && left >= wire_bytes(l->sending.head)) {
        te_slice *s = slist_pop(&l->sending);
        left -= wire_bytes(s);
        if (!l->peer->v2 && s->opcode == TE_OP_WRITE)
            complete(l, s, 0);
        else
            slist_push(&l->flying, s);
    }
    l->send_off = left;
}

/* Large v2 write payloads go through a pipe with vmsplice+splice: the socket
 * then references the user pages instead of copying them, which saves one
 * of the two copies on loopback.  Only v2, whose acknowledgement arrives
 * after the target has read every byte, so completion still means the pages
 * are no longer in use. */
static bool spliced(const lane *l, const te_slice *s)
{
    return l->pipe[1] >= 0 && l->peer->v2 && s->opcode == TE_OP_WRITE &&
           s->length >= TCP_SPLICE_MIN;
}

/* Moves what sits in the pipe into the socket.  0 (maybe with bytes left
 * when the socket is full) or a status. */
static int flush_pipe(lane *l)
{
    while (l->pipe_bytes > 0) {
        ssize_t n = splice(l->pipe[0], NULL, l->fd, NULL, l->pipe_bytes,
                           SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
            l->pipe_bytes -= (size_t)n;
            progress(l);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        if (n < 0 && errno == EPIPE)
            tcp_take_sigpipe();
        return TE_ERR_PEER_CLOSED;
    }
    return 0;
}

static int send_spliced(lane *l, te_slice *s)
{
    uint64_t off = l->send_off - TCP_HDR_LEN, left = s->length - off;
    struct iovec v = {(char *)s->local + off, left < TCP_PIPE_SIZE ? left : TCP_PIPE_SIZE};
    ssize_t n = vmsplice(l->pipe[1], &v, 1, SPLICE_F_NONBLOCK);
    if (n <= 0) {
        /* No vmsplice here (seccomp, old kernel): copy from now on. */
        TCP_LOG(l->peer->t, TE_LOG_INFO, "vmsplice unavailable (%s): copying", strerror(errno));
        close(l->pipe[0]);
        close(l->pipe[1]);
        l->pipe[0] = l->pipe[1] = -1;
        return 0;
    }
    l->pipe_bytes += (size_t)n;
    advance(l, (uint64_t)n);
    return 0;
}

/* Sends as much of the queue as the socket takes.  0 or a status. */
static int do_send(lane *l)
{
    for (;;) {
        int rc = flush_pipe(l);
        if (rc || l->pipe_bytes > 0)
            return rc;
        te_slice *head = l->sending.head;
        if (!head)
            return 0;
        if (spliced(l, head) && l->send_off >= TCP_HDR_LEN) {
            send_spliced(l, head);
            continue;
        }
        struct iovec iov[MAX_IOV];
        int n = 0;
        uint64_t skip = l->send_off, bytes = 0;
        for (te_slice *s = head; s && n + 2 <= MAX_IOV && bytes < MAX_SEND_BYTES; s = NEXT(s)) {
            uint64_t off = skip;
            skip = 0;
            if (off < TCP_HDR_LEN) {
                iov[n++] = (struct iovec){HDR(s) + off, TCP_HDR_LEN - off};
                bytes += TCP_HDR_LEN - off;
                off = 0;
            } else {
                off -= TCP_HDR_LEN;
            }
            if (spliced(l, s))
                break; /* its payload goes through the pipe next round */
            if (s->opcode == TE_OP_WRITE) {
                iov[n++] = (struct iovec){(char *)s->local + off, s->length - off};
                bytes += s->length - off;
            }
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(l->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0
                                                                             : TE_ERR_PEER_CLOSED;
        advance(l, (uint64_t)sent);
        if ((uint64_t)sent < bytes)
            return 0; /* the socket is full: wait for POLLOUT */
    }
}

/* Reads responses.  0 when the socket is drained, or a status.  `wait`: the
 * first read may sleep (a lent lane in blocking mode, bounded by SO_RCVTIMEO). */
static int do_recv(lane *l, bool wait)
{
    bool v2 = l->peer->v2;
    for (;;) {
        te_slice *s = l->flying.head;
        size_t avail = l->rlen - l->rpos;
        if (s && !l->in_data && !v2) { /* v1: only READs wait, and get no status */
            l->in_data = true;
            l->data_off = 0;
        }
        if (s && l->in_data) {
            uint64_t want = s->length - l->data_off;
            size_t take = avail < want ? avail : (size_t)want;
            memcpy((char *)s->local + l->data_off, l->rbuf + l->rpos, take);
            l->rpos += take;
            l->data_off += take;
            want -= take;
            if (want == 0) {
                slist_pop(&l->flying);
                l->in_data = false;
                complete(l, s, 0);
                continue;
            }
            if (want >= 16384) { /* big payloads land straight in user memory */
                ssize_t n = recv(l->fd, (char *)s->local + l->data_off, want,
                                 wait ? 0 : MSG_DONTWAIT);
                wait = false;
                if (n > 0) {
                    l->data_off += (uint64_t)n;
                    progress(l);
                    continue;
                }
                if (n == 0)
                    return TE_ERR_PEER_CLOSED;
                return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : TE_ERR_PEER_CLOSED;
            }
        } else if (s && avail >= 8) {
            uint64_t st = tcp_get_u64(l->rbuf + l->rpos);
            l->rpos += 8;
            if ((st & 0xFFFFFFFF00000000ull) != TCP_STATUS_MAGIC) {
                TCP_LOG(l->peer->t, TE_LOG_WARN, "bad status frame from %s:%u", l->peer->host,
                        l->peer->port);
                return TE_ERR_MALFORMED_FRAME;
            }
            uint32_t code = (uint32_t)st;
            if (code != TCP_STATUS_OK || s->opcode == TE_OP_WRITE) {
                slist_pop(&l->flying);
                complete(l, s, code == TCP_STATUS_OK ? 0 : TE_ERR_ADDRESS_NOT_REGISTERED);
            } else {
                l->in_data = true;
                l->data_off = 0;
            }
            continue;
        }
        /* Need more bytes in rbuf, unless nothing more is expected. */
        if (!l->flying.head && l->rpos == l->rlen)
            return 0;
        if (l->rpos > 0) {
            memmove(l->rbuf, l->rbuf + l->rpos, l->rlen - l->rpos);
            l->rlen -= l->rpos;
            l->rpos = 0;
        }
        ssize_t n = recv(l->fd, l->rbuf + l->rlen, LANE_RBUF - l->rlen, wait ? 0 : MSG_DONTWAIT);
        wait = false;
        if (n > 0) {
            if (!l->flying.head) {
                TCP_LOG(l->peer->t, TE_LOG_WARN, "unexpected bytes from %s:%u", l->peer->host,
                        l->peer->port);
                return TE_ERR_MALFORMED_FRAME;
            }
            l->rlen += (size_t)n;
            progress(l);
            continue;
        }
        if (n == 0)
            return TE_ERR_PEER_CLOSED;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : TE_ERR_PEER_CLOSED;
    }
}

static int64_t earliest_deadline(const lane *l)
{
    int64_t d = 0;
    const te_slice *c[2] = {l->flying.head, l->sending.head};
    for (int i = 0; i < 2; i++)
        if (c[i] && c[i]->deadline_ns && (!d || c[i]->deadline_ns < d))
            d = c[i]->deadline_ns;
    return d;
}

static void drain_efd(lane *l)
{
    uint64_t v;
    ssize_t r = read(l->efd, &v, sizeof v);
    (void)r;
}

/* A connection that became readable while idle was closed (or sent junk)
 * by the peer: drop it so the next request reconnects instead of failing.
 * Checked only after the lane was idle for a while (STALE_CHECK_NS): a
 * syscall per request would cost more than the rare peer that closes right
 * between two back-to-back requests. */
#define STALE_CHECK_NS 1000000

static void drop_stale_fd(lane *l)
{
    if (l->fd < 0 || l->flying.head || te_host_table->now_ns() - l->last_io_ns < STALE_CHECK_NS)
        return;
    struct pollfd pf = {.fd = l->fd, .events = POLLIN | POLLRDHUP};
    if (poll(&pf, 1, 0) > 0) {
        close(l->fd);
        l->fd = -1;
        l->blocking = false;
    }
}

/* How long a submitting thread waits for the answer to a request it sent
 * itself before leaving it to the lane thread. */
#define DRIVE_NS 200000

/* A lent lane waits for its answer in a blocking recv (one syscall, where
 * ppoll and then recv are two), bounded by SO_RCVTIMEO = DRIVE_NS; the lane
 * thread switches the socket back before it drives it.  Every other socket
 * call of a lane passes MSG_DONTWAIT or polls first, except splice, which
 * only the lane thread does.  false if the mode could not be changed. */
static bool set_blocking(lane *l, bool on)
{
    if (l->fd < 0 || l->blocking == on)
        return l->fd >= 0;
    if (on) {
        struct timeval tv = {0, DRIVE_NS / 1000};
        if (setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
            return false;
    }
    int fl = fcntl(l->fd, F_GETFL);
    if (fl < 0 || fcntl(l->fd, F_SETFL, on ? fl & ~O_NONBLOCK : fl | O_NONBLOCK) != 0)
        return false;
    l->blocking = on;
    return true;
}

/* Caller holds l->lock: the thread cannot close the eventfd meanwhile. */
static void wake(lane *l)
{
    if (l->efd < 0)
        return;
    uint64_t one = 1;
    ssize_t w = write(l->efd, &one, sizeof one);
    (void)w;
}

static void redistribute(tcp_peer *p, int from, slist *moved, int status);

/* The lane's connection failed (status) or stalled: with other rails, its
 * rail is set aside and its slices move to them; otherwise they fail. */
static void lane_failed(lane *l, int status)
{
    tcp_peer *p = l->peer;
    if (!multi_rail(p) || status == TE_ERR_MALFORMED_FRAME) {
        reset_lane(l, status);
        return;
    }
    tcp_rail *r = &p->rails[l->rail];
    if (tcp_rail_failed(r, te_host_table->now_ns(), p->t->rail_pause_ns)) {
        TCP_LOG(p->t, TE_LOG_WARN, "rail %s -> %s failed (status %d): set aside", r->spec.local,
                r->spec.remote, status);
        te_host_table->metric_add(p->t->host, TE_METRIC_RAIL_PAUSES, 1);
    }
    slist moved = {0};
    slist_append(&moved, &l->flying);
    slist_append(&moved, &l->sending);
    reset_lane(l, status);
    redistribute(p, l->rail, &moved, status);
}

/* A lane of a multi-rail peer whose bytes stopped moving for MC_TCP_RAIL_STALL_MS:
 * its link is likely down, and TCP would retransmit for minutes. */
static bool stalled(const lane *l, int64_t now)
{
    return multi_rail(l->peer) && l->fd >= 0 && (l->flying.head || l->sending.head) &&
           now - l->progress_ns > l->peer->t->rail_stall_ns;
}

/* Slices queued on a lane of a rail set aside meanwhile (nothing of them
 * sent yet) go to a usable rail instead of waiting for a connect that is
 * likely to fail.  true when they were moved. */
static bool leave_paused_rail(lane *l, int64_t now)
{
    tcp_peer *p = l->peer;
    if (!multi_rail(p) || l->flying.head || l->send_off || l->pipe_bytes ||
        tcp_rail_usable(&p->rails[l->rail], now) ||
        tcp_rail_pick(p->rails, p->nrails, 0, now, l->rail) < 0)
        return false;
    slist moved = {0};
    slist_append(&moved, &l->sending);
    redistribute(p, l->rail, &moved, TE_ERR_SOCKET);
    return true;
}

static int poll_ms(const lane *l, int64_t deadline)
{
    int64_t now = te_host_table->now_ns(), until = deadline;
    if (multi_rail(l->peer) && l->fd >= 0) {
        int64_t stall = l->progress_ns + l->peer->t->rail_stall_ns;
        if (!until || stall < until)
            until = stall;
    }
    if (!until)
        return -1;
    return until <= now ? 0 : (int)((until - now) / 1000000) + 1;
}

/* One round of a busy lane: deadlines, connect, send, wait, receive. */
static void lane_work(lane *l)
{
    tcp_peer *p = l->peer;
    int64_t deadline = earliest_deadline(l), now = te_host_table->now_ns();
    if (deadline && now >= deadline) {
        TCP_LOG(p->t, TE_LOG_WARN, "transfers to %s:%u passed their deadline", lane_host(l),
                p->port);
        reset_lane(l, TE_ERR_TIMEOUT);
        return;
    }
    if (stalled(l, now)) {
        TCP_LOG(p->t, TE_LOG_WARN, "no progress to %s:%u for %lld ms", lane_host(l), p->port,
                (long long)(p->t->rail_stall_ns / 1000000));
        lane_failed(l, TE_ERR_TIMEOUT);
        return;
    }
    drop_stale_fd(l);
    if (l->fd >= 0 && !set_blocking(l, false)) { /* it never sleeps in a socket call */
        lane_failed(l, TE_ERR_SOCKET);
        return;
    }
    if (l->sending.head && l->fd < 0 && leave_paused_rail(l, now))
        return;
    if (l->sending.head && l->fd < 0) {
        int rc = lane_connect(l, deadline);
        if (rc) {
            lane_failed(l, rc);
            return;
        }
    }
    int rc = 0;
    if (l->sending.head || l->pipe_bytes)
        rc = do_send(l); /* the socket is usually writable: try before polling */
    if (rc) {
        lane_failed(l, rc);
        return;
    }
    struct pollfd pf[2] = {{.fd = l->efd, .events = POLLIN}, {.fd = l->fd, .events = POLLIN}};
    if (l->sending.head || l->pipe_bytes)
        pf[1].events |= POLLOUT;
    int ms = poll_ms(l, deadline);
    int nfds = l->fd >= 0 ? 2 : 1;
    if (poll(pf, (nfds_t)nfds, ms) < 0)
        return;
    if (pf[0].revents)
        drain_efd(l);
    if (nfds == 2 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
        rc = do_recv(l, false);
        if (!rc && !l->flying.head && !l->sending.head && (pf[1].revents & (POLLHUP | POLLERR)))
            rc = TE_ERR_PEER_CLOSED; /* the connection went away: reconnect later */
    }
    if (!rc && nfds == 2 && (pf[1].revents & POLLOUT) && (l->sending.head || l->pipe_bytes))
        rc = do_send(l);
    if (rc)
        lane_failed(l, rc);
}

/* Releases what a running lane holds (caller holds l->lock, nothing is
 * queued, sending or flying): the next queue_run starts it afresh. */
static void lane_release(lane *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    l->blocking = false;
    if (l->efd >= 0)
        close(l->efd);
    l->efd = -1;
    free(l->rbuf);
    l->rbuf = NULL;
    close_pipe(l);
    l->send_off = 0;
    l->in_data = false;
    l->rpos = l->rlen = 0;
    l->started = false;
}

/* Whether an idle lane should end: its connection is gone (closed by us
 * after an error, or readable while nothing is in flight: the peer closed
 * it or sent junk) or unused for the idle timeout.  Under l->lock, so no
 * submitter can lend or feed the lane meanwhile; then it is released. */
static bool lane_retire(lane *l, int64_t idle_ns)
{
    pthread_mutex_lock(&l->lock);
    bool idle = !l->lent && !l->stop && !l->queued.head && !l->sending.head &&
                !l->flying.head && !l->pipe_bytes;
    bool done = idle && l->fd < 0;
    const char *why = "no connection";
    if (idle && !done) {
        struct pollfd pf = {.fd = l->fd, .events = POLLIN | POLLRDHUP};
        done = te_host_table->now_ns() - l->last_io_ns >= idle_ns;
        why = "idle";
        if (!done && poll(&pf, 1, 0) > 0) {
            done = true;
            why = "connection closed by the peer";
        }
    }
    if (done) {
        TCP_LOG(l->peer->t, TE_LOG_DEBUG, "lane to %s:%u ends (%s)", lane_host(l), l->peer->port,
                why);
        lane_release(l);
    }
    pthread_mutex_unlock(&l->lock);
    return done;
}

/* An idle lane sleeps until woken, until the peer closes its connection or
 * until the idle timeout.  true when the lane retired: its thread ends. */
static bool idle_wait(lane *l, int fd, int64_t last_io_ns)
{
    int64_t idle_ns = l->peer->t->server.idle_timeout_ns;
    int64_t left = last_io_ns + idle_ns - te_host_table->now_ns();
    if (fd >= 0 && left > 0) {
        /* POLLRDHUP alone: the peer's FIN (or an error) wakes us, an answer
         * to a lender's request does not (a wake-up per sync round trip). */
        struct pollfd pe[2] = {{.fd = l->efd, .events = POLLIN}, {.fd = fd, .events = POLLRDHUP}};
        int r = poll(pe, 2, (int)(left / 1000000) + 1);
        if (r > 0 && pe[0].revents)
            drain_efd(l);
        if (r > 0 && !pe[1].revents)
            return false; /* woken: work, or a submitter lent the lane */
    }
    return lane_retire(l, idle_ns);
}

static void *lane_main(void *arg)
{
    lane *l = arg;
    tcp_block_sigpipe();
    tcp_peer *p = l->peer;
    for (;;) {
        pthread_mutex_lock(&l->lock);
        bool lent = l->lent, stop = l->stop && !lent, was_busy = l->busy;
        if (!lent)
            slist_append(&l->sending, &l->queued);
        l->busy = !lent && (l->sending.head || l->flying.head || l->pipe_bytes);
        bool busy = l->busy;
        /* A lender owns the socket (and its clock) until it gives it back. */
        int fd = lent ? -1 : l->fd;
        int64_t last_io_ns = lent ? 0 : l->last_io_ns;
        pthread_mutex_unlock(&l->lock);
        if (busy && !was_busy)
            progress(l); /* the stall clock starts with the work */
        if (stop) {
            reset_lane(l, TE_ERR_STATE); /* outside the lock: completions may free the peer */
            pthread_mutex_lock(&l->lock);
            lane_release(l);
            pthread_mutex_unlock(&l->lock);
            break;
        }
        if (busy) {
            lane_work(l);
            continue;
        }
        if (!lent) {
            if (idle_wait(l, fd, last_io_ns))
                break;
            continue;
        }
        /* Lent: only the eventfd wakes us, the socket is the lender's; a
         * lender that leaves the lane idle does not wake us, so the idle
         * timeout is checked again after one timeout's sleep at most. */
        struct pollfd pe = {.fd = l->efd, .events = POLLIN};
        if (poll(&pe, 1, (int)(l->peer->t->server.idle_timeout_ns / 1000000)) > 0)
            drain_efd(l);
    }
    tcp_transport *t = p->t;
    peer_unref(p);
    tcp_lane_exited(t);
    return NULL;
}

static int lane_start(lane *l)
{
    l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->rbuf = malloc(LANE_RBUF);
    if (l->efd < 0 || !l->rbuf) {
        if (l->efd >= 0)
            close(l->efd);
        l->efd = -1;
        free(l->rbuf);
        l->rbuf = NULL;
        return TE_ERR_MEMORY;
    }
    if (l->peer->t->use_splice)
        open_pipe(l);
    else
        l->pipe[0] = l->pipe[1] = -1;
    l->last_io_ns = te_host_table->now_ns(); /* the idle timeout counts from here */
    atomic_fetch_add(&l->peer->refs, 1);
    tcp_lane_started(l->peer->t);
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, lane_main, l);
    pthread_attr_destroy(&attr);
    if (rc) {
        atomic_fetch_sub(&l->peer->refs, 1);
        tcp_lane_exited(l->peer->t);
        close_pipe(l);
        free(l->rbuf);
        l->rbuf = NULL;
        close(l->efd);
        l->efd = -1;
        return TE_ERR_MEMORY;
    }
    l->started = true;
    return 0;
}

/* Lanes per rail: MC_TCP_LANES_PER_PEER each, fewer when the rails would
 * need more than TCP_MAX_LANES. */
static void plan_rails(tcp_peer *p, const tcp_rail_spec *rails, int nrails)
{
    p->nrails = nrails < TCP_MAX_RAILS ? nrails : TCP_MAX_RAILS;
    int per = p->t->lanes_per_peer;
    if (p->nrails > 0 && per * p->nrails > TCP_MAX_LANES)
        per = TCP_MAX_LANES / p->nrails > 0 ? TCP_MAX_LANES / p->nrails : 1;
    p->lanes_per_rail = per;
    p->nlanes = p->nrails > 0 ? per * p->nrails : per;
    for (int i = 0; i < p->nrails; i++)
        tcp_rail_init(&p->rails[i], &rails[i]);
}

tcp_peer *tcp_peer_new(tcp_transport *t, const char *host, uint16_t port, bool v2)
{
    return tcp_peer_new_rails(t, host, port, v2, NULL, 0);
}

tcp_peer *tcp_peer_new_rails(tcp_transport *t, const char *host, uint16_t port, bool v2,
                             const tcp_rail_spec *rails, int nrails)
{
    tcp_peer *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->t = t;
    snprintf(p->host, sizeof p->host, "%s", host);
    p->port = port;
    p->v2 = v2;
    plan_rails(p, rails, nrails);
    atomic_init(&p->refs, 1);
    for (int i = 0; i < p->nlanes; i++) {
        lane *l = &p->lanes[i];
        l->peer = p;
        l->rail = p->nrails > 0 ? i / p->lanes_per_rail : 0;
        l->fd = -1;
        l->efd = -1; /* made with the thread, on first use */
        l->pipe[0] = l->pipe[1] = -1;
        pthread_mutex_init(&l->lock, NULL);
    }
    return p;
}

/* Called by the core once no slice uses the peer (possibly from one of its
 * own lane threads, inside slice_done): lanes stop on their own. */
void tcp_peer_free(tcp_peer *p)
{
    for (int i = 0; i < p->nlanes; i++) {
        lane *l = &p->lanes[i];
        pthread_mutex_lock(&l->lock);
        l->stop = true;
        wake(l);
        pthread_mutex_unlock(&l->lock);
    }
    peer_unref(p);
}

static void encode(const tcp_peer *p, te_slice *s)
{
    tcp_encode_header(HDR(s), s->length, s->remote,
                      (uint8_t)((s->opcode == TE_OP_WRITE ? TCP_OP_WRITE : TCP_OP_READ) |
                                (p->v2 ? TCP_OP_V2 : 0)));
}

/* Sends one small request on an idle, connected lane from this thread and
 * waits briefly for its answer.  false when the lane is not available (the
 * caller queues the slice as usual). */
static bool drive_inline(tcp_peer *p, lane *l, te_slice *s)
{
    if (!p->v2 || s->length >= TCP_SPLICE_MIN)
        return false;
    pthread_mutex_lock(&l->lock);
    bool ok = l->started && !l->busy && !l->lent && !l->queued.head && !l->stop && l->fd >= 0;
    if (ok) {
        l->lent = true;
        atomic_fetch_add(&p->refs, 1); /* completions may close the peer meanwhile */
    }
    pthread_mutex_unlock(&l->lock);
    if (!ok)
        return false;
    encode(p, s);
    drop_stale_fd(l);
    int rc = 0;
    if (l->fd < 0) {
        slist_push(&l->sending, s); /* the lane thread reconnects */
    } else {
        slist_push(&l->sending, s);
        rc = do_send(l);
        int64_t until = te_host_table->now_ns() + DRIVE_NS;
        if (s->deadline_ns && s->deadline_ns < until)
            until = s->deadline_ns;
        /* A blocking receive may end up to DRIVE_NS after `until`: only with
         * the deadline further away than that. */
        bool may_block = !s->deadline_ns || s->deadline_ns > until + DRIVE_NS;
        while (!rc && (l->flying.head || l->sending.head)) {
            int64_t left = until - te_host_table->now_ns();
            if (left <= 0)
                break;
            if (may_block && !l->sending.head && set_blocking(l, true)) {
                rc = do_recv(l, true); /* sleeps at most SO_RCVTIMEO */
                continue;
            }
            if (!set_blocking(l, false)) {
                rc = TE_ERR_SOCKET;
                break;
            }
            struct pollfd pf = {.fd = l->fd, .events = POLLIN | (l->sending.head ? POLLOUT : 0)};
            struct timespec ts = {left / 1000000000, left % 1000000000};
            if (ppoll(&pf, 1, &ts, NULL) <= 0)
                continue;
            if (pf.revents & (POLLIN | POLLHUP | POLLERR))
                rc = do_recv(l, false);
            if (!rc && (pf.revents & POLLOUT))
                rc = do_send(l);
        }
        if (rc)
            lane_failed(l, rc);
    }
    pthread_mutex_lock(&l->lock);
    l->lent = false;
    if (l->sending.head || l->flying.head || l->queued.head || l->pipe_bytes || l->stop)
        wake(l); /* under the lock: the lane thread cannot exit before this */
    pthread_mutex_unlock(&l->lock);
    peer_unref(p);
    return true;
}

/* A lone request goes to the first idle lane: a caller alone keeps using one
 * connection (and so one warm thread of the target's data port) instead of
 * rotating; concurrent callers find the first lanes lent and take the next. */
static bool drive_first_idle(tcp_peer *p, lane *lanes, int n, te_slice *s)
{
    for (int i = 0; i < n; i++)
        if (drive_inline(p, &lanes[i], s))
            return true;
    return false;
}

/* Hands a run of encoded slices to a lane (starting its thread on first
 * use); if the thread cannot start they fail. */
static void queue_run(tcp_peer *p, lane *l, slist *run)
{
    pthread_mutex_lock(&l->lock);
    int rc = l->started ? 0 : lane_start(l);
    if (!rc) {
        bool was_empty = !l->queued.head;
        slist_append(&l->queued, run);
        if (was_empty)
            wake(l); /* under the lock: the thread cannot retire meanwhile */
    }
    pthread_mutex_unlock(&l->lock);
    if (rc) {
        te_slice *s;
        while ((s = slist_pop(run))) {
            rail_done(p, l->rail, s, false);
            finish(p->t, s, rc);
        }
        return;
    }
}

/* How many lanes a submit's slices stripe over: all n, but each run at least
 * MC_TCP_LANE_MIN_BYTES.  A run costs about four thread wake-ups whatever
 * its size (the lane, the target's loop, the lane again, the waiter), so a
 * small batch moves faster on one lane; submits from several threads still
 * spread, since each starts at the next lane. */
static size_t lanes_for(const tcp_peer *p, int n, const slist *list)
{
    uint64_t min = p->t->lane_min_bytes, bytes = 0;
    for (const te_slice *s = list->head; min && s && bytes < min * (uint64_t)n; s = NEXT(s))
        bytes += s->length;
    uint64_t runs = min ? bytes / min : (uint64_t)n;
    return runs < 1 ? 1 : runs < (uint64_t)n ? (size_t)runs : (size_t)n;
}

/* Consecutive slices go to one lane in runs, so small requests batch and
 * large requests (many slices) stripe over the lanes of lanes[0..n). */
static void spread(tcp_peer *p, lane *lanes, int n, slist *list, size_t count, unsigned first)
{
    size_t runs = lanes_for(p, n, list);
    size_t per_lane = (count + runs - 1) / runs;
    for (unsigned k = 0; list->head; k++) {
        slist run = {0};
        for (size_t i = 0; i < per_lane && list->head; i++)
            slist_push(&run, slist_pop(list));
        queue_run(p, &lanes[(first + k) % (unsigned)n], &run);
    }
}

static lane *rail_lanes(tcp_peer *p, int rail)
{
    return &p->lanes[rail * p->lanes_per_rail];
}

/* Slices of a failed lane of rail `from` go to the other rails, unless their
 * deadline passed or no other rail is usable: then they fail with status. */
static void redistribute(tcp_peer *p, int from, slist *moved, int status)
{
    slist per[TCP_MAX_RAILS] = {{0}};
    size_t n[TCP_MAX_RAILS] = {0};
    int64_t now = te_host_table->now_ns();
    te_slice *s;
    while ((s = slist_pop(moved))) {
        rail_done(p, from, s, false);
        int r = s->deadline_ns && now >= s->deadline_ns
                    ? -1
                    : tcp_rail_pick(p->rails, p->nrails, s->length, now, from);
        if (r < 0) {
            finish(p->t, s, status);
            continue;
        }
        tcp_rail_sent(&p->rails[r], s->length, now);
        te_host_table->metric_add(p->t->host, TE_METRIC_RETRIES, 1);
        slist_push(&per[r], s);
        n[r]++;
    }
    for (int r = 0; r < p->nrails; r++)
        if (n[r])
            spread(p, rail_lanes(p, r), p->lanes_per_rail, &per[r], n[r],
                   atomic_fetch_add(&p->next_lane, 1));
}

/* Several rails: each slice to the rail whose queue drains first. */
static void submit_rails(tcp_peer *p, te_slice *const *slices, size_t count)
{
    slist per[TCP_MAX_RAILS] = {{0}};
    size_t n[TCP_MAX_RAILS] = {0};
    int64_t now = te_host_table->now_ns();
    for (size_t i = 0; i < count; i++) {
        te_slice *s = slices[i];
        int r = tcp_rail_pick(p->rails, p->nrails, s->length, now, -1);
        tcp_rail_sent(&p->rails[r], s->length, now);
        if (count == 1 && drive_first_idle(p, rail_lanes(p, r), p->lanes_per_rail, s))
            return;
        encode(p, s);
        slist_push(&per[r], s);
        n[r]++;
    }
    for (int r = 0; r < p->nrails; r++)
        if (n[r])
            spread(p, rail_lanes(p, r), p->lanes_per_rail, &per[r], n[r],
                   atomic_fetch_add(&p->next_lane, 1));
}

int tcp_peer_submit_host(tcp_peer *p, te_slice *const *slices, size_t count)
{
    if (multi_rail(p)) {
        submit_rails(p, slices, count);
        return 0;
    }
    if (count == 1 && drive_first_idle(p, p->lanes, p->nlanes, slices[0]))
        return 0;
    unsigned first = atomic_fetch_add(&p->next_lane, 1);
    slist all = {0};
    for (size_t i = 0; i < count; i++) {
        encode(p, slices[i]);
        slist_push(&all, slices[i]);
    }
    spread(p, p->lanes, p->nlanes, &all, count, first);
    return 0;
}

/* Slices of GPU memory are staged through pinned host buffers (tcp_cuda.c);
 * a process without CUDA costs one check per call. */
int tcp_peer_submit(tcp_peer *p, te_slice *const *slices, size_t count)
{
    if (!tcp_cuda_possible())
        return tcp_peer_submit_host(p, slices, count);
    size_t start = 0;
    for (size_t i = 0; i < count; i++) {
        int dev = tcp_cuda_device(slices[i]->local);
        if (dev < 0)
            continue;
        if (i > start)
            tcp_peer_submit_host(p, slices + start, i - start);
        tcp_cuda_stage(p->t, p, slices[i], dev);
        start = i + 1;
    }
    return start < count ? tcp_peer_submit_host(p, slices + start, count - start) : 0;
}
