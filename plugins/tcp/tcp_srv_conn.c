/* tcp_srv_conn.c - one data-port connection as a non-blocking state machine:
 * read a header, check the range against registered memory (pinning it),
 * receive a WRITE payload straight into that memory (or drain a rejected
 * one), queue the answers (v2 status frames, READ payloads from the still
 * pinned memory) and send a burst of them in one sendmsg, keeping partial
 * progress.  Sections: output, requests, input, the run step, GPU memory. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tcp_srv.h"

#define RUN_BUDGET (8u << 20) /* bytes read per run before other connections get a turn */

typedef struct srv_in { /* bytes read, being handed to the state machine */
    const uint8_t *p;
    size_t n, off;
    int64_t now; /* read once per buffer by its first request, 0 until then */
} srv_in;

static int serve_device(tcp_srv_conn *c, srv_in *in, int op, uint64_t addr, uint64_t size,
                        int dev, void *pin);

tcp_srv_conn *tcp_srv_conn_new(tcp_transport *t, int fd, const char *peer)
{
    tcp_srv_conn *c = tcp_srv_conn_alloc(&t->server);
    if (!c)
        return NULL;
    c->s = &t->server;
    c->t = t;
    c->fd = fd;
    c->accepted_ns = te_host_table->now_ns();
    atomic_init(&c->idle_since, c->accepted_ns);
    c->rd_ready = c->wr_ready = true; /* until the socket says otherwise */
    c->state = SRV_HEADER;
    strncpy(c->peer, peer, sizeof c->peer - 1);
    return c;
}

/* ---- output ---------------------------------------------------------------- */

static void release_pins(tcp_srv_conn *c)
{
    for (int i = 0; i < c->npins; i++)
        te_host_table->unpin_range(c->t->host, c->pins[i]);
    c->nout = c->ohead = c->nstatus = c->npins = 0;
    c->out_bytes = 0;
}

void tcp_srv_conn_release(tcp_srv_conn *c)
{
    release_pins(c);
    if (c->pin)
        te_host_table->unpin_range(c->t->host, c->pin);
    c->pin = NULL;
    free(c->stash);
    c->stash = NULL;
}

/* Sends queued answers.  0: all sent (the pins are let go); 1: the socket is
 * full (progress kept); -1: the connection failed. */
static int send_answers(tcp_srv_conn *c)
{
    while (c->ohead < c->nout) {
        int cnt = c->nout - c->ohead < IOV_MAX ? c->nout - c->ohead : IOV_MAX;
        struct msghdr m = {.msg_iov = c->out + c->ohead, .msg_iovlen = (size_t)cnt};
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            c->wr_ready = false;
            return 1;
        }
        while (c->ohead < c->nout && (size_t)n >= c->out[c->ohead].iov_len)
            n -= (ssize_t)c->out[c->ohead++].iov_len;
        if (c->ohead < c->nout) {
            c->out[c->ohead].iov_base = (char *)c->out[c->ohead].iov_base + n;
            c->out[c->ohead].iov_len -= (size_t)n;
            c->wr_ready = false; /* a short send: the buffer is full, an EPOLLOUT edge follows */
            return 1;
        }
    }
    release_pins(c);
    return 0;
}

static bool out_full(const tcp_srv_conn *c)
{
    return c->nstatus >= SRV_OUT_SLOTS || c->npins >= SRV_OUT_SLOTS ||
           c->out_bytes >= SRV_OUT_BYTES;
}

static void queue_status(tcp_srv_conn *c, uint64_t code)
{
    tcp_put_u64(c->status[c->nstatus], TCP_STATUS_MAGIC | code);
    c->out[c->nout++] = (struct iovec){c->status[c->nstatus++], 8};
}

/* A READ answer: the status (v2) and the data, sent from the still pinned
 * registered memory; the pin goes when the queue is sent. */
static void queue_read(tcp_srv_conn *c, uint64_t addr, uint64_t size, void *pin)
{
    if (c->v2)
        queue_status(c, TCP_STATUS_OK);
    c->out[c->nout++] = (struct iovec){(void *)(uintptr_t)addr, size};
    c->pins[c->npins++] = pin;
    c->out_bytes += size;
}

/* ---- requests -------------------------------------------------------------- */

static void begin_payload(tcp_srv_conn *c, uint8_t *dst, uint64_t len, void *pin)
{
    c->state = SRV_PAYLOAD;
    c->dst = dst;
    c->left = len;
    c->pin = pin;
}

static void end_payload(tcp_srv_conn *c)
{
    c->state = SRV_HEADER;
    if (!c->dst) {
        queue_status(c, TCP_STATUS_REJECTED);
        return;
    }
    te_host_table->unpin_range(c->t->host, c->pin);
    c->pin = NULL;
    if (c->v2)
        queue_status(c, TCP_STATUS_OK);
}

/* A whole header arrived: check it and start the request.  0, or -1 to close. */
static int start_request(tcp_srv_conn *c, srv_in *in)
{
    const uint8_t *h = c->hdr;
    uint64_t size = tcp_get_u64(h), addr = tcp_get_u64(h + 8);
    uint8_t opcode = h[16];
    int op = opcode & ~TCP_OP_V2;
    c->hlen = 0;
    c->served = true;
    c->v2 = (opcode & TCP_OP_V2) != 0;
    /* The requests of one buffer (up to SRV_RBUF bytes) share a clock read:
     * the io timeout is seconds, a read is tens of ns. */
    if (!in->now)
        in->now = te_host_table->now_ns();
    c->deadline = in->now + c->s->io_timeout_ns;
    if (op != TCP_OP_READ && op != TCP_OP_WRITE) {
        TCP_LOG(c->t, TE_LOG_WARN, "closing a data connection: unknown opcode 0x%x", opcode);
        return -1;
    }
    void *pin = NULL;
    if (size == 0 || te_host_table->pin_range(c->t->host, addr, size, &pin) != 0) {
        TCP_LOG(c->t, TE_LOG_WARN, "rejected %s of %llu bytes at 0x%llx: not inside one registered buffer",
                op == TCP_OP_WRITE ? "write" : "read", (unsigned long long)size,
                (unsigned long long)addr);
        if (!c->v2 || (op == TCP_OP_WRITE && size > SRV_MAX_DISCARD))
            return -1; /* v1 has no status frame: closing is the answer */
        if (op == TCP_OP_WRITE && size > 0)
            begin_payload(c, NULL, size, NULL); /* drained so the connection stays usable */
        else
            queue_status(c, TCP_STATUS_REJECTED);
        return 0;
    }
    int dev = tcp_cuda_device((void *)(uintptr_t)addr);
    if (dev >= 0)
        return serve_device(c, in, op, addr, size, dev, pin);
    if (op == TCP_OP_WRITE)
        begin_payload(c, (uint8_t *)(uintptr_t)addr, size, pin);
    else
        queue_read(c, addr, size, pin);
    return 0;
}

/* The first byte of a frame: the connection stops being idle, unless the
 * registry chose it for eviction first.  0, or -1 to close. */
static int leave_idle(tcp_srv_conn *c)
{
    int64_t since = atomic_load(&c->idle_since);
    if (since == 0)
        return 0;
    if (since < 0 || !atomic_compare_exchange_strong(&c->idle_since, &since, 0))
        return -1;
    c->deadline = c->served ? te_host_table->now_ns() + c->s->io_timeout_ns
                            : c->accepted_ns + c->s->header_timeout_ns;
    return 0;
}

/* ---- input ----------------------------------------------------------------- */

/* Payload bytes that came through the receive buffer go into place. */
static void take_payload(tcp_srv_conn *c, srv_in *in)
{
    size_t avail = in->n - in->off, take = c->left < avail ? (size_t)c->left : avail;
    if (c->dst) {
        memcpy(c->dst, in->p + in->off, take);
        c->dst += take;
    }
    in->off += take;
    c->left -= take;
    if (c->left == 0)
        end_payload(c);
}

/* Hands bytes to the state machine until they are used up or the answers
 * queue is full (then in->off < in->n).  0, or -1 to close. */
static int feed(tcp_srv_conn *c, srv_in *in)
{
    while (in->off < in->n) {
        if (c->state == SRV_PAYLOAD) {
            take_payload(c, in);
            continue;
        }
        if (c->hlen == 0) {
            if (out_full(c))
                return 0; /* the rest waits in the stash until the answers went out */
            if (leave_idle(c))
                return -1;
        }
        size_t avail = in->n - in->off;
        size_t take = TCP_HDR_LEN - c->hlen < avail ? TCP_HDR_LEN - c->hlen : avail;
        memcpy(c->hdr + c->hlen, in->p + in->off, take);
        c->hlen += take;
        in->off += take;
        if (c->hlen == TCP_HDR_LEN && start_request(c, in))
            return -1;
    }
    return 0;
}

/* Keeps the bytes feed() could not take yet. */
static int stash_rest(tcp_srv_conn *c, const srv_in *in)
{
    size_t rest = in->n - in->off;
    if (c->stash) { /* feeding from the stash itself */
        c->stash_pos = c->stash_len - rest;
        if (rest)
            return 0;
        free(c->stash);
        c->stash = NULL;
        return 0;
    }
    if (!rest)
        return 0;
    c->stash = malloc(rest);
    if (!c->stash)
        return -1;
    memcpy(c->stash, in->p + in->off, rest);
    c->stash_len = rest;
    c->stash_pos = 0;
    return 0;
}

/* A large part of a WRITE payload goes from the socket straight into place. */
static int receive_direct(tcp_srv_conn *c, size_t *budget)
{
    size_t want = c->left < *budget ? (size_t)c->left : *budget;
    ssize_t n = recv(c->fd, c->dst, want, MSG_DONTWAIT);
    if (n <= 0)
        return n;
    c->dst += n;
    c->left -= (uint64_t)n;
    *budget -= (size_t)n;
    if ((size_t)n < want && !c->rdhup)
        c->rd_ready = false; /* drained: the next bytes raise a new edge */
    if (c->left == 0)
        end_payload(c);
    return 1;
}

/* One read from the socket (or the stash) through the state machine.
 * 0, or -1 to close. */
static int input_step(tcp_srv_conn *c, uint8_t *buf, size_t cap, size_t *budget)
{
    if (c->stash) {
        srv_in in = {c->stash + c->stash_pos, c->stash_len - c->stash_pos, 0, 0};
        return feed(c, &in) || stash_rest(c, &in) ? -1 : 0;
    }
    ssize_t n;
    if (c->state == SRV_PAYLOAD && c->dst && c->left >= TCP_DIRECT_MIN)
        n = receive_direct(c, budget);
    else if ((n = recv(c->fd, buf, cap, MSG_DONTWAIT)) > 0) {
        *budget = (size_t)n < *budget ? *budget - (size_t)n : 0;
        if ((size_t)n < cap && !c->rdhup)
            c->rd_ready = false; /* drained: the next bytes raise a new edge */
        srv_in in = {buf, (size_t)n, 0, 0};
        return feed(c, &in) || stash_rest(c, &in) ? -1 : 0;
    }
    if (n > 0)
        return 0;
    if (n == 0) {
        c->eof = true;
        c->rd_ready = false;
        return 0;
    }
    if (errno == EINTR)
        return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
        return -1;
    c->rd_ready = false;
    return 0;
}

/* ---- the run step ---------------------------------------------------------- */

static bool has_input(const tcp_srv_conn *c)
{
    return c->stash || c->rd_ready;
}

/* Nothing buffered, nothing to send, between frames: idle (evictable) again. */
static void enter_idle(tcp_srv_conn *c)
{
    int64_t busy = 0;
    if (c->state == SRV_HEADER && c->hlen == 0 && c->nout == 0 && !c->stash)
        atomic_compare_exchange_strong(&c->idle_since, &busy, te_host_table->now_ns());
}

/* Answers go out when the input runs dry (one sendmsg per burst) or when the
 * queue is full; while a flush is under way no input is taken. */
static bool must_flush(const tcp_srv_conn *c)
{
    return c->nout > 0 && (c->sending || out_full(c) || !has_input(c));
}

int tcp_srv_conn_run(tcp_srv_conn *c, uint8_t *buf, size_t cap)
{
    size_t budget = RUN_BUDGET;
    for (;;) {
        if (must_flush(c)) {
            if (!c->wr_ready)
                return 0;
            if (!c->sending)
                c->deadline = te_host_table->now_ns() + c->s->io_timeout_ns;
            int rc = send_answers(c);
            if (rc < 0)
                return -1;
            c->sending = rc > 0;
            if (rc > 0)
                return 0;
            continue;
        }
        if (!has_input(c)) {
            if (c->eof) /* the peer is done and every answer went out */
                return -1;
            enter_idle(c);
            return 0;
        }
        if (budget == 0)
            return 1;
        if (input_step(c, buf, cap, &budget))
            return -1;
    }
}

/* The socket blocks in recv() from now on, for at most SRV_LINGER_US. */
static bool make_blocking(tcp_srv_conn *c)
{
    struct timeval tv = {0, SRV_LINGER_US};
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
        return false;
    c->blocking = true;
    return true;
}

int tcp_srv_conn_linger(tcp_srv_conn *c, uint8_t *buf, size_t cap)
{
    if (c->state != SRV_HEADER || c->hlen || c->nout || c->stash || c->eof || c->sending ||
        c->rd_ready || c->rdhup || !c->served || (!c->blocking && !make_blocking(c)))
        return 0;
    ssize_t n = recv(c->fd, buf, cap, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (n == 0) {
        c->eof = true; /* the next run closes it once every answer went out */
        return 1;
    }
    c->rd_ready = (size_t)n == cap; /* a full buffer: more may wait */
    srv_in in = {buf, (size_t)n, 0, 0};
    return feed(c, &in) || stash_rest(c, &in) ? -1 : 1;
}

int64_t tcp_srv_conn_deadline(const tcp_srv_conn *c)
{
    int64_t since = atomic_load(&c->idle_since);
    if (since < 0)
        return 1; /* being evicted: close at once */
    if (since > 0)
        return since + (c->served ? c->s->idle_timeout_ns : c->s->header_timeout_ns);
    return c->deadline;
}

/* ---- GPU memory -------------------------------------------------------------- */

/* GPU memory at the target moves through pinned buffers (tcp_cuda.c) one
 * chunk at a time, with blocking socket calls: this loop serves no other
 * connection meanwhile (GPU memory over TCP is a fallback path). */
typedef struct chunk_io {
    tcp_srv_conn *c;
    srv_in *in;
    int64_t deadline;
} chunk_io;

static int wait_sock(tcp_srv_conn *c, short events, int64_t deadline)
{
    int64_t left = deadline - te_host_table->now_ns();
    if (left <= 0)
        return -1;
    struct pollfd p[2] = {{.fd = c->fd, .events = events}, {.fd = c->s->wake[0], .events = POLLIN}};
    int n = poll(p, 2, (int)(left / 1000000) + 1);
    if (n < 0 && errno == EINTR)
        return 0;
    return n <= 0 || p[1].revents ? -1 : 0;
}

static int recv_chunk(void *arg, void *buf, size_t len)
{
    chunk_io *io = arg;
    size_t have = io->in->n - io->in->off, take = have < len ? have : len;
    memcpy(buf, io->in->p + io->in->off, take);
    io->in->off += take;
    for (size_t off = take; off < len;) {
        ssize_t n = recv(io->c->fd, (char *)buf + off, len - off, MSG_DONTWAIT);
        if (n > 0)
            off += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR) ||
                 wait_sock(io->c, POLLIN, io->deadline))
            return -1;
    }
    return 0;
}

static int send_chunk(void *arg, void *buf, size_t len)
{
    chunk_io *io = arg;
    for (size_t off = 0; off < len;) {
        ssize_t n = send(io->c->fd, (char *)buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
            off += (size_t)n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR) ||
                 wait_sock(io->c, POLLOUT, io->deadline))
            return -1;
    }
    return 0;
}

/* Sends every queued answer before a blocking GPU transfer (answers stay in order). */
static int flush_blocking(tcp_srv_conn *c, int64_t deadline)
{
    int rc;
    while ((rc = send_answers(c)) > 0)
        if (wait_sock(c, POLLOUT, deadline))
            return -1;
    return rc;
}

static int serve_device(tcp_srv_conn *c, srv_in *in, int op, uint64_t addr, uint64_t size,
                        int dev, void *pin)
{
    chunk_io io = {c, in, c->deadline};
    void *p = (void *)(uintptr_t)addr;
    int rc;
    if (op == TCP_OP_WRITE) {
        rc = tcp_cuda_to_device(c->t, p, size, dev, recv_chunk, &io, io.deadline);
        if (!rc && c->v2)
            queue_status(c, TCP_STATUS_OK);
    } else {
        if (c->v2)
            queue_status(c, TCP_STATUS_OK);
        rc = flush_blocking(c, io.deadline);
        if (!rc)
            rc = tcp_cuda_from_device(c->t, p, size, dev, send_chunk, &io, io.deadline);
    }
    te_host_table->unpin_range(c->t->host, pin);
    c->rd_ready = c->wr_ready = true; /* the blocking calls may have eaten an edge */
    in->now = 0;                       /* they took time: the next request reads the clock */
    return rc ? -1 : 0;
}
