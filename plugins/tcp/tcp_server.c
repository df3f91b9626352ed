/* tcp_server.c - the target side of the TCP transport.  One thread per
 * incoming connection reads request headers through a buffer (so a burst of
 * small requests costs few syscalls), checks each range against registered
 * memory (pinning it), receives WRITE payloads straight into that memory,
 * and queues responses (v2 status frames and READ payloads straight from
 * registered memory, still pinned) so a burst goes out in one sendmsg. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcp.h"

#define RBUF_SIZE (256 * 1024)
#define OUT_SLOTS 256         /* responses queued before a flush */
#define OUT_BYTES (1u << 20)  /* READ payload bytes queued before a flush */
#define MAX_DISCARD (1ull << 30) /* payload of a rejected write we still drain */

typedef struct conn {
    tcp_transport *t;
    int fd;
    char peer[64]; /* numeric address, for the per-peer cap */
    uint8_t *rbuf;
    size_t rpos, rlen;
    /* The response queue: iovecs over status frames and pinned READ data. */
    struct iovec out[2 * OUT_SLOTS];
    uint8_t status[OUT_SLOTS][8];
    void *pins[OUT_SLOTS];
    int nout, nstatus, npins;
    uint64_t out_bytes;
    struct conn *next; /* the server's list of open connections */
    int pipe[2];       /* for vmsplice of large READ payloads, -1 if unavailable */
} conn;

/* Waits for fd (or shutdown).  deadline 0 = no limit.  0, or -1 to close. */
static int wait_fd(conn *c, short events, int64_t deadline)
{
    tcp_server *s = &c->t->server;
    for (;;) {
        struct pollfd p[2] = {{.fd = c->fd, .events = events}, {.fd = s->wake[0], .events = POLLIN}};
        int ms = -1;
        if (deadline) {
            int64_t left = deadline - tcp_host_api->now_ns();
            if (left <= 0)
                return -1;
            ms = (int)(left / 1000000) + 1;
        }
        int n = poll(p, 2, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || p[1].revents)
            return -1;
        return 0;
    }
}

static int send_all(conn *c, struct iovec *iov, int iovcnt, int64_t deadline)
{
    while (iovcnt > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(c, POLLOUT, deadline) == 0)
                continue;
            return -1;
        }
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Sends every queued response, then lets go of the memory they came from. */
static int flush_out(conn *c)
{
    int rc = 0;
    if (c->nout)
        rc = send_all(c, c->out, c->nout, tcp_host_api->now_ns() + c->t->server.io_timeout_ns);
    for (int i = 0; i < c->npins; i++)
        tcp_host_api->unpin_range(c->t->host, c->pins[i]);
    c->nout = c->nstatus = c->npins = 0;
    c->out_bytes = 0;
    return rc;
}

static int queue_status(conn *c, uint64_t code)
{
    tcp_put_u64(c->status[c->nstatus], TCP_STATUS_MAGIC | code);
    c->out[c->nout++] = (struct iovec){c->status[c->nstatus++], 8};
    return c->nstatus == OUT_SLOTS ? flush_out(c) : 0;
}

/* A READ answer: the status (v2) and the data, sent from the still pinned
 * registered memory at the next flush. */
static int queue_read(conn *c, bool v2, uint64_t addr, uint64_t size, void *pin)
{
    if (v2) {
        tcp_put_u64(c->status[c->nstatus], TCP_STATUS_MAGIC | TCP_STATUS_OK);
        c->out[c->nout++] = (struct iovec){c->status[c->nstatus++], 8};
    }
    c->out[c->nout++] = (struct iovec){(void *)(uintptr_t)addr, size};
    c->pins[c->npins++] = pin;
    c->out_bytes += size;
    if (c->nstatus == OUT_SLOTS || c->npins == OUT_SLOTS || c->out_bytes >= OUT_BYTES)
        return flush_out(c);
    return 0;
}

/* Makes at least `need` bytes available in rbuf.  Sends queued answers
 * before blocking so the initiator is never kept waiting on us. */
static int fill(conn *c, size_t need, int64_t deadline)
{
    if (c->rlen - c->rpos >= need)
        return 0;
    /* Everything buffered is handled: answer it before reading on, so a
     * lone request's answer leaves at once. */
    if (flush_out(c))
        return -1;
    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    /* Nothing buffered and no deadline: between requests.  One blocking
     * recv waits and reads in a single syscall (a lone request's round trip
     * costs no poll); tcp_server_stop shuts the socket down to end it. */
    if (c->rlen == 0 && deadline == 0) {
        ssize_t n;
        do
            n = recv(c->fd, c->rbuf, RBUF_SIZE, 0);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            return -1;
        c->rlen = (size_t)n;
    }
    while (c->rlen < need) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen, MSG_DONTWAIT);
        if (n > 0) {
            c->rlen += (size_t)n;
            continue;
        }
        if (n == 0)
            return -1;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (wait_fd(c, POLLIN, deadline))
            return -1;
    }
    return 0;
}

/* Moves `len` payload bytes into dst (NULL: discard), buffered bytes first. */
static int receive_payload(conn *c, uint8_t *dst, uint64_t len, int64_t deadline)
{
    size_t have = c->rlen - c->rpos;
    size_t take = have < len ? have : (size_t)len;
    if (dst)
        memcpy(dst, c->rbuf + c->rpos, take);
    c->rpos += take;
    len -= take;
    uint64_t off = take;
    while (len > 0) {
        if (!dst || len < 16384) { /* small tails and discards go through rbuf */
            if (fill(c, 1, deadline))
                return -1;
            have = c->rlen - c->rpos;
            take = have < len ? have : (size_t)len;
            if (dst)
                memcpy(dst + off, c->rbuf + c->rpos, take);
            c->rpos += take;
            off += take;
            len -= take;
            continue;
        }
        ssize_t n = recv(c->fd, dst + off, len, MSG_DONTWAIT);
        if (n > 0) {
            off += (uint64_t)n;
            len -= (uint64_t)n;
        } else if (n == 0) {
            return -1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (flush_out(c) || wait_fd(c, POLLIN, deadline))
                return -1;
        } else if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}

/* Sends `len` bytes of registered memory through the pipe (vmsplice, then
 * splice into the socket): the socket references the pages instead of
 * copying them.  The reader completes only after it received every byte. */
static int send_spliced(conn *c, const char *data, uint64_t len, int64_t deadline)
{
    while (len > 0) {
        struct iovec v = {(void *)data, len < TCP_PIPE_SIZE ? len : TCP_PIPE_SIZE};
        ssize_t in = vmsplice(c->pipe[1], &v, 1, SPLICE_F_NONBLOCK);
        if (in <= 0)
            return -1;
        data += in;
        len -= (uint64_t)in;
        while (in > 0) {
            ssize_t out = splice(c->pipe[0], NULL, c->fd, NULL, (size_t)in,
                                 SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (out > 0) {
                in -= out;
            } else if (out < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_fd(c, POLLOUT, deadline))
                    return -1;
            } else {
                if (out < 0 && errno == EPIPE)
                    tcp_take_sigpipe();
                return -1;
            }
        }
    }
    return 0;
}

/* GPU memory at the target moves through pinned buffers (tcp_cuda.c), one
 * chunk at a time through these two. */
typedef struct chunk_io {
    conn *c;
    int64_t deadline;
} chunk_io;

static int recv_chunk(void *arg, void *buf, size_t len)
{
    chunk_io *io = arg;
    return receive_payload(io->c, buf, len, io->deadline);
}

static int send_chunk(void *arg, void *buf, size_t len)
{
    chunk_io *io = arg;
    struct iovec iov = {buf, len};
    return send_all(io->c, &iov, 1, io->deadline);
}

static int serve_device(conn *c, int op, bool v2, uint64_t addr, uint64_t size, int dev,
                        int64_t deadline)
{
    chunk_io io = {c, deadline};
    void *p = (void *)(uintptr_t)addr;
    if (op == TCP_OP_WRITE) {
        int rc = tcp_cuda_to_device(c->t, p, size, dev, recv_chunk, &io, deadline);
        return !rc && v2 ? queue_status(c, TCP_STATUS_OK) : rc;
    }
    if ((v2 && queue_status(c, TCP_STATUS_OK)) || flush_out(c)) /* answers stay in order */
        return -1;
    return tcp_cuda_from_device(c->t, p, size, dev, send_chunk, &io, deadline);
}

/* Handles one request; -1 closes the connection. */
static int handle_request(conn *c)
{
    if (fill(c, TCP_HDR_LEN, 0))
        return -1;
    const uint8_t *h = c->rbuf + c->rpos;
    uint64_t size = tcp_get_u64(h), addr = tcp_get_u64(h + 8);
    uint8_t opcode = h[16];
    c->rpos += TCP_HDR_LEN;
    bool v2 = (opcode & TCP_OP_V2) != 0;
    int op = opcode & ~TCP_OP_V2;
    int64_t deadline = tcp_host_api->now_ns() + c->t->server.io_timeout_ns;
    if (op != TCP_OP_READ && op != TCP_OP_WRITE) {
        TCP_LOG(c->t, TE_LOG_WARN, "closing a data connection: unknown opcode 0x%x", opcode);
        return -1;
    }
    void *pin = NULL;
    if (size == 0 || tcp_host_api->pin_range(c->t->host, addr, size, &pin) != 0) {
        TCP_LOG(c->t, TE_LOG_WARN, "rejected %s of %llu bytes at 0x%llx: not inside one registered buffer",
                op == TCP_OP_WRITE ? "write" : "read", (unsigned long long)size,
                (unsigned long long)addr);
        if (!v2)
            return -1; /* v1 has no status frame: closing is the answer */
        if (op == TCP_OP_WRITE) {
            /* Drain the payload so the connection stays usable; never store it. */
            if (size > MAX_DISCARD || receive_payload(c, NULL, size, deadline))
                return -1;
        }
        return queue_status(c, TCP_STATUS_REJECTED);
    }
    int rc;
    int dev = tcp_cuda_device((void *)(uintptr_t)addr);
    if (dev >= 0) {
        rc = serve_device(c, op, v2, addr, size, dev, deadline);
    } else if (op == TCP_OP_WRITE) {
        rc = receive_payload(c, (uint8_t *)(uintptr_t)addr, size, deadline);
        if (!rc && v2)
            rc = queue_status(c, TCP_STATUS_OK);
    } else if (c->pipe[1] >= 0 && size >= TCP_SPLICE_MIN) {
        rc = (v2 && queue_status(c, TCP_STATUS_OK)) || flush_out(c) ? -1 : 0;
        if (!rc)
            rc = send_spliced(c, (const char *)(uintptr_t)addr, size, deadline);
    } else {
        return queue_read(c, v2, addr, size, pin); /* the queue unpins after sending */
    }
    tcp_host_api->unpin_range(c->t->host, pin);
    return rc;
}

static void *conn_main(void *arg)
{
    conn *c = arg;
    tcp_server *s = &c->t->server;
    tcp_block_sigpipe();
    int64_t deadline = tcp_host_api->now_ns() + s->io_timeout_ns;
    if (tcp_host_api->auth_accept(c->t->host, c->fd, deadline) == 0)
        while (handle_request(c) == 0)
            ;
    c->nout = 0; /* nothing more is sent, but pinned memory is let go */
    flush_out(c);
    if (c->pipe[0] >= 0) {
        close(c->pipe[0]);
        close(c->pipe[1]);
    }
    free(c->rbuf);
    pthread_mutex_lock(&s->lock);
    for (conn **p = &s->conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    close(c->fd); /* under the lock: tcp_server_stop shuts down listed fds */
    if (--s->active == 0)
        pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    free(c);
    return NULL;
}

/* How many connections from this address are open (under s->lock). */
static int connections_from(tcp_server *s, const char *peer)
{
    int n = 0;
    for (conn *c = s->conns; c; c = c->next)
        n += !strcmp(c->peer, peer);
    return n;
}

static void start_connection(tcp_transport *t, int fd, const char *peer)
{
    tcp_server *s = &t->server;
    conn *c = calloc(1, sizeof *c);
    uint8_t *rbuf = malloc(RBUF_SIZE);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&s->lock);
    int from_peer = connections_from(s, peer);
    bool ok = c && rbuf && s->active < s->max_connections && from_peer < s->max_per_peer;
    if (ok) {
        *c = (conn){.t = t, .fd = fd, .rbuf = rbuf, .next = s->conns, .pipe = {-1, -1}};
        if (t->use_splice && pipe2(c->pipe, O_CLOEXEC | O_NONBLOCK) == 0 &&
            fcntl(c->pipe[1], F_SETPIPE_SZ, TCP_PIPE_SIZE) < TCP_PIPE_SIZE) {
            close(c->pipe[0]);
            close(c->pipe[1]);
            c->pipe[0] = c->pipe[1] = -1;
        }
        snprintf(c->peer, sizeof c->peer, "%s", peer);
        s->conns = c;
        s->active++;
        pthread_t th;
        if (pthread_create(&th, &attr, conn_main, c) != 0) {
            s->conns = c->next;
            s->active--;
            ok = false;
        }
    }
    pthread_mutex_unlock(&s->lock);
    pthread_attr_destroy(&attr);
    if (!ok) {
        TCP_LOG(t, TE_LOG_WARN, "refusing a data connection from %s (%d open from it, %d in all; "
                "MC_TE_MAX_CONNECTIONS_PER_PEER)", peer, from_peer, s->active);
        close(fd);
        free(c);
        free(rbuf);
    }
}

static void *accept_main(void *arg)
{
    tcp_transport *t = arg;
    tcp_server *s = &t->server;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN},
                              {.fd = s->wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                usleep(10000);
            continue;
        }
        char peer[64];
        const void *src = ss.ss_family == AF_INET6 ? (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                                   : (void *)&((struct sockaddr_in *)&ss)->sin_addr;
        if (!inet_ntop(ss.ss_family, src, peer, sizeof peer))
            snprintf(peer, sizeof peer, "?");
        tcp_tune_socket(t, fd);
        start_connection(t, fd, peer);
    }
    return NULL;
}

/* Binds a random port in [MC_MIN_RPC_PORT, MC_MAX_RPC_PORT] like the original's
 * data port, dual-stack where IPv6 is available. */
static int bind_data_port(tcp_transport *t, tcp_server *s)
{
    const char *lo_s = tcp_host_api->config(t->host, "MC_MIN_RPC_PORT");
    const char *hi_s = tcp_host_api->config(t->host, "MC_MAX_RPC_PORT");
    long lo = lo_s ? strtol(lo_s, NULL, 10) : 15000, hi = hi_s ? strtol(hi_s, NULL, 10) : 17000;
    if (lo < 1024 || hi > 65535 || lo > hi)
        lo = 15000, hi = 17000;
    unsigned seed = (unsigned)tcp_host_api->now_ns() ^ (unsigned)getpid();
    for (int tries = 0; tries < 500; tries++) {
        uint16_t port = (uint16_t)(lo + rand_r(&seed) % (hi - lo + 1));
        int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port),
                                  .sin6_addr = in6addr_any};
        struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port),
                                 .sin_addr.s_addr = htonl(INADDR_ANY)};
        struct sockaddr *a = (struct sockaddr *)&a6;
        socklen_t alen = sizeof a6;
        if (fd < 0) {
            fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            a = (struct sockaddr *)&a4;
            alen = sizeof a4;
        } else {
            int zero = 0;
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        }
        if (fd < 0)
            return TE_ERR_SOCKET;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a, alen) == 0 && listen(fd, 512) == 0) {
            s->listen_fd = fd;
            s->port = port;
            return 0;
        }
        close(fd);
    }
    tcp_host_api->set_error("tcp: no free data port in %ld..%ld", lo, hi);
    return TE_ERR_SOCKET;
}

int tcp_server_start(tcp_transport *t, tcp_server *s)
{
    memset(s, 0, sizeof *s);
    s->max_connections = 1024;
    s->max_per_peer = tcp_host_api->max_connections_per_peer(t->host);
    const char *to = tcp_host_api->config(t->host, "MC_TCP_STATUS_TIMEOUT_SEC");
    long secs = to ? strtol(to, NULL, 10) : 30;
    s->io_timeout_ns = (secs > 0 && secs < 3600 ? secs : 30) * 1000000000LL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    int rc = bind_data_port(t, s);
    if (rc)
        return rc;
    if (pipe2(s->wake, O_CLOEXEC) < 0) {
        close(s->listen_fd);
        return TE_ERR_SOCKET;
    }
    if (pthread_create(&s->accept_thread, NULL, accept_main, t) != 0) {
        close(s->listen_fd);
        close(s->wake[0]);
        close(s->wake[1]);
        return TE_ERR_MEMORY;
    }
    s->running = true;
    return 0;
}

void tcp_server_stop(tcp_server *s)
{
    if (!s->running)
        return;
    char b = 1;
    ssize_t w = write(s->wake[1], &b, 1); /* never drained: wakes every poller */
    (void)w;
    pthread_join(s->accept_thread, NULL);
    close(s->listen_fd);
    pthread_mutex_lock(&s->lock);
    for (conn *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR); /* ends a blocking recv between requests */
    while (s->active > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    close(s->wake[0]);
    close(s->wake[1]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    s->running = false;
}
