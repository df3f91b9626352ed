/* rpc.c - the engine's RPC port.  One accept thread hands each connection to
 * a short-lived thread (bounded in number); each connection carries one
 * request frame and one reply, with every read and write bounded in time and
 * every frame bounded in size.  At a cap the oldest idle connection (still
 * waiting for its request, or for the client to close) is cut to make room;
 * a new connection is refused only when every one is busy in a handler. */
#include "rpc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "net.h"

void te_rpc_encode_header(uint8_t hdr[9], uint64_t payload_len, int type)
{
    uint64_t len = payload_len + 1;
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)(len >> (8 * i));
    hdr[8] = (uint8_t)type;
}

int te_rpc_decode_header(const uint8_t hdr[9], uint64_t max_frame, uint64_t *payload_len,
                         int *type, int *legacy)
{
    uint64_t len = 0;
    for (int i = 0; i < 8; i++)
        len |= (uint64_t)hdr[i] << (8 * i);
    if (len == 0 || len > max_frame)
        return TE_ERR_MALFORMED_FRAME;
    if (hdr[8] < TE_RPC_TYPES) {
        *type = hdr[8];
        *legacy = 0;
        *payload_len = len - 1;
    } else {
        *type = TE_RPC_CONNECTION;
        *legacy = 1;
        *payload_len = len;
    }
    return 0;
}

/* Reads one frame; *payload is NUL terminated. */
static int read_frame(int fd, uint64_t max_frame, int64_t deadline, int *type, char **payload,
                      size_t *len)
{
    uint8_t hdr[9];
    int rc = te_net_read_full(fd, hdr, sizeof hdr, deadline);
    if (rc)
        return rc;
    uint64_t plen;
    int legacy;
    rc = te_rpc_decode_header(hdr, max_frame, &plen, type, &legacy);
    if (rc)
        return rc;
    char *buf = malloc(plen + 1);
    if (!buf)
        return TE_ERR_MEMORY;
    size_t off = 0;
    if (legacy)
        buf[off++] = (char)hdr[8];
    rc = te_net_read_full(fd, buf + off, plen - off, deadline);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[plen] = '\0';
    *payload = buf;
    *len = plen;
    return 0;
}

static int write_frame(int fd, int type, const char *payload, size_t len, int64_t deadline)
{
    uint8_t hdr[9];
    te_rpc_encode_header(hdr, len, type);
    int rc = te_net_write_full(fd, hdr, sizeof hdr, deadline);
    return rc ? rc : te_net_write_full(fd, payload, len, deadline);
}

typedef struct conn_job {
    te_rpc_server *server;
    int fd;
    int slot;
} conn_job;

/* Marks a connection busy (its handler runs) or idle again.  false: it was
 * chosen for eviction meanwhile. */
static bool set_busy(te_rpc_server *s, int slot, bool busy)
{
    pthread_mutex_lock(&s->lock);
    bool ok = s->conn_since[slot] >= 0;
    if (ok)
        s->conn_since[slot] = busy ? 0 : te_now_ns();
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static void serve_connection(te_rpc_server *s, int fd, int slot)
{
    int64_t deadline = te_now_ns() + (int64_t)s->io_timeout_ms * 1000000;
    if (te_auth_accept(s->auth_token, fd, deadline) != 0)
        return;
    int type;
    char *req = NULL, *reply = NULL;
    size_t req_len = 0, reply_len = 0;
    int rc = read_frame(fd, s->max_frame, deadline, &type, &req, &req_len);
    if (rc) {
        if (rc != TE_ERR_PEER_CLOSED)
            te_log(TE_LOG_WARN, "rpc", "dropping RPC connection: bad or slow frame (%s)",
                   te_strerror(rc));
        return;
    }
    if (!set_busy(s, slot, true)) {
        free(req);
        return;
    }
    pthread_mutex_lock(&s->lock);
    te_rpc_handler fn = s->handlers[type];
    void *arg = s->handler_args[type];
    pthread_mutex_unlock(&s->lock);
    if (!fn) {
        te_log(TE_LOG_WARN, "rpc", "no handler for RPC frame type %d", type);
        free(req);
        return;
    }
    rc = fn(arg, req, req_len, &reply, &reply_len);
    free(req);
    if (rc == 0 && reply) {
        if (write_frame(fd, type, reply, reply_len, deadline) == 0 && set_busy(s, slot, false)) {
            /* Like the original: half-close, then wait for the client to close. */
            shutdown(fd, SHUT_WR);
            char sink[64];
            while (te_net_wait(fd, POLLIN, deadline) == 0 && recv(fd, sink, sizeof sink, 0) > 0)
                ;
        }
    }
    free(reply);
}

static void *conn_thread(void *p)
{
    conn_job *job = p;
    te_rpc_server *s = job->server;
    serve_connection(s, job->fd, job->slot);
    pthread_mutex_lock(&s->lock);
    s->conn_fds[job->slot] = -1;
    close(job->fd);
    pthread_cond_broadcast(&s->freed);
    if (--s->active == 0)
        pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    free(job);
    return NULL;
}

/* Under s->lock: the oldest idle connection (from `peer`, or any when NULL),
 * or -1; *pending counts those of them already being evicted. */
static int oldest_idle(const te_rpc_server *s, const char *peer, int *pending)
{
    int best = -1;
    *pending = 0;
    for (int i = 0; i < s->max_connections; i++) {
        if (s->conn_fds[i] < 0 || (peer && strcmp(s->conn_peer[i], peer)))
            continue;
        *pending += s->conn_since[i] < 0;
        if (s->conn_since[i] > 0 && (best < 0 || s->conn_since[i] < s->conn_since[best]))
            best = i;
    }
    return best;
}

/* Under s->lock: a free slot for a connection from `peer`.  At a cap the
 * oldest idle connection is cut and its thread given up to 500 ms to let go
 * of its slot.  -1: every connection is busy in a handler. */
static int claim_slot(te_rpc_server *s, const char *peer)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 500000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    for (;;) {
        int slot = -1, same_peer = 0, pending;
        for (int i = 0; i < s->max_connections; i++) {
            if (s->conn_fds[i] < 0 && slot < 0)
                slot = i;
            else if (s->conn_fds[i] >= 0 && !strcmp(s->conn_peer[i], peer))
                same_peer++;
        }
        bool peer_full = same_peer >= s->max_per_peer;
        if (slot >= 0 && !peer_full)
            return slot;
        int victim = oldest_idle(s, peer_full ? peer : NULL, &pending);
        if (victim >= 0 && pending == 0) {
            te_log(TE_LOG_INFO, "rpc", "closing the oldest idle RPC connection (from %s) to make "
                   "room", s->conn_peer[victim]);
            s->conn_since[victim] = -1;
            shutdown(s->conn_fds[victim], SHUT_RDWR);
        } else if (victim < 0 && pending == 0) {
            return -1;
        }
        if (pthread_cond_timedwait(&s->freed, &s->lock, &until) == ETIMEDOUT)
            return -1;
    }
}

static void *accept_thread(void *p)
{
    te_rpc_server *s = p;
    for (;;) {
        struct pollfd fds[2] = {{.fd = s->listen_fd, .events = POLLIN},
                                {.fd = s->wake_pipe[0], .events = POLLIN}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[1].revents)
            break;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                usleep(10000); /* out of fds: back off instead of spinning */
            continue;
        }
        char peer[64];
        te_net_peer_name(&ss, peer, sizeof peer);
        pthread_mutex_lock(&s->lock);
        int slot = claim_slot(s, peer);
        conn_job *job = slot >= 0 ? malloc(sizeof *job) : NULL;
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (job) {
            *job = (conn_job){.server = s, .fd = fd, .slot = slot};
            s->conn_fds[slot] = fd;
            s->conn_since[slot] = te_now_ns();
            snprintf(s->conn_peer[slot], sizeof s->conn_peer[slot], "%s", peer);
            s->active++;
            if (pthread_create(&t, &attr, conn_thread, job) != 0) {
                s->conn_fds[slot] = -1;
                s->active--;
                free(job);
                job = NULL;
            }
        }
        pthread_attr_destroy(&attr);
        pthread_mutex_unlock(&s->lock);
        if (!job) {
            te_log(TE_LOG_WARN, "rpc", "RPC port busy (%d connections, at most %d from %s, "
                   "none idle): refusing one", s->max_connections, s->max_per_peer, peer);
            close(fd);
        }
    }
    return NULL;
}

static void free_slots(te_rpc_server *s)
{
    free(s->conn_fds);
    free(s->conn_peer);
    free(s->conn_since);
}

int te_rpc_server_start(te_rpc_server *s, int listen_fd, uint16_t port, uint64_t max_frame,
                        int io_timeout_ms, int max_connections, int max_per_peer,
                        const char *auth_token)
{
    memset(s, 0, sizeof *s);
    s->listen_fd = listen_fd;
    s->port = port;
    s->max_frame = max_frame;
    s->io_timeout_ms = io_timeout_ms;
    s->max_connections = max_connections;
    s->max_per_peer = max_per_peer;
    s->auth_token = auth_token;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    pthread_cond_init(&s->freed, NULL);
    s->conn_fds = malloc(sizeof(int) * (size_t)max_connections);
    s->conn_peer = calloc((size_t)max_connections, sizeof *s->conn_peer);
    s->conn_since = calloc((size_t)max_connections, sizeof *s->conn_since);
    if (!s->conn_fds || !s->conn_peer || !s->conn_since) {
        free_slots(s);
        return TE_ERR_MEMORY;
    }
    for (int i = 0; i < max_connections; i++)
        s->conn_fds[i] = -1;
    if (pipe2(s->wake_pipe, O_CLOEXEC) < 0) {
        free_slots(s);
        return te_fail(TE_ERR_SOCKET, "pipe: %s", strerror(errno));
    }
    if (pthread_create(&s->thread, NULL, accept_thread, s) != 0) {
        close(s->wake_pipe[0]);
        close(s->wake_pipe[1]);
        free_slots(s);
        return te_fail(TE_ERR_MEMORY, "cannot start the RPC thread");
    }
    s->running = 1;
    return 0;
}

void te_rpc_server_stop(te_rpc_server *s)
{
    if (!s->running)
        return;
    char c = 1;
    ssize_t w = write(s->wake_pipe[1], &c, 1);
    (void)w;
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->max_connections; i++)
        if (s->conn_fds[i] >= 0)
            shutdown(s->conn_fds[i], SHUT_RDWR);
    while (s->active > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    close(s->wake_pipe[0]);
    close(s->wake_pipe[1]);
    free_slots(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    pthread_cond_destroy(&s->freed);
    s->running = 0;
}

int te_rpc_server_set_handler(te_rpc_server *s, int type, te_rpc_handler fn, void *arg)
{
    if (type < 0 || type >= TE_RPC_TYPES)
        return TE_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&s->lock);
    s->handlers[type] = fn;
    s->handler_args[type] = arg;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int te_rpc_call(const char *host, uint16_t port, int type, const char *req, size_t req_len,
                char **reply, size_t *reply_len, int timeout_ms, uint64_t max_frame,
                const char *auth_token)
{
    if (type < 0 || type >= TE_RPC_TYPES)
        return TE_ERR_INVALID_ARGUMENT;
    int64_t deadline = te_now_ns() + (int64_t)timeout_ms * 1000000;
    int fd = te_net_connect(host, port, timeout_ms);
    if (fd < 0)
        return fd;
    int rtype = -1;
    char *buf = NULL;
    size_t len = 0;
    int rc = te_auth_connect(auth_token, fd, deadline);
    if (!rc)
        rc = write_frame(fd, type, req, req_len, deadline);
    if (!rc)
        rc = read_frame(fd, max_frame, deadline, &rtype, &buf, &len);
    close(fd);
    if (rc)
        return te_fail(rc, "RPC to %s:%u failed: %s", host, port, te_strerror(rc));
    if (rtype != type) {
        free(buf);
        return te_fail(TE_ERR_MALFORMED_FRAME, "RPC to %s:%u: reply of type %d to type %d", host,
                       port, rtype, type);
    }
    *reply = buf;
    if (reply_len)
        *reply_len = len;
    return 0;
}
