/* tcp_lane_conn.c - a lane's connection: connecting (from a rail's local
 * address, bounded by the connect timeout and the slices' deadline, then the
 * auth handshake), the vmsplice pipe, the socket's blocking mode for a lent
 * lane, dropping a connection the peer closed while idle, and the reset that
 * fails everything in flight after an error. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tcp_lane.h"

static void fail_list(lane *l, slist *list, int status)
{
    te_slice *s;
    while ((s = slist_pop(list)))
        tcp_lane_complete(l, s, status);
}

void tcp_lane_open_pipe(lane *l)
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

void tcp_lane_close_pipe(lane *l)
{
    if (l->pipe[0] >= 0) {
        close(l->pipe[0]);
        close(l->pipe[1]);
    }
    l->pipe[0] = l->pipe[1] = -1;
    l->pipe_bytes = 0;
}

/* Fails everything the lane holds and drops the connection: after an error
 * the byte stream's position is unknown. */
void tcp_lane_reset(lane *l, int status)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
    l->blocking = false;
    if (l->pipe_bytes) { /* bytes of the dead stream: start a clean pipe */
        tcp_lane_close_pipe(l);
        tcp_lane_open_pipe(l);
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

const char *tcp_lane_host(const lane *l)
{
    return l->peer->nrails ? l->peer->rails[l->rail].spec.remote : l->peer->host;
}

int tcp_lane_connect(lane *l, int64_t deadline)
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
    const char *host = tcp_lane_host(l), *local = p->nrails ? p->rails[l->rail].spec.local : "";
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

/* A connection that became readable while idle was closed (or sent junk)
 * by the peer: drop it so the next request reconnects instead of failing.
 * Checked only after the lane was idle for a while (STALE_CHECK_NS): a
 * syscall per request would cost more than the rare peer that closes right
 * between two back-to-back requests. */
#define STALE_CHECK_NS 1000000

void tcp_lane_drop_stale(lane *l)
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

/* A lent lane waits for its answer in a blocking recv (one syscall, where
 * ppoll and then recv are two), bounded by SO_RCVTIMEO = DRIVE_NS; the lane
 * thread switches the socket back before it drives it.  Every other socket
 * call of a lane passes MSG_DONTWAIT or polls first, except splice, which
 * only the lane thread does.  false if the mode could not be changed. */
bool tcp_lane_set_blocking(lane *l, bool on)
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
