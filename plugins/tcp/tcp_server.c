/* tcp_server.c - the data port of the TCP transport (the target side):
 * binds it, accepts connections on one thread, keeps the registry of open
 * connections and its caps, and hands each connection to an epoll loop
 * (tcp_srv_loop.c; after an MC_AUTH_TOKEN handshake, tcp_srv_auth.c).  At a
 * cap the oldest idle connection is closed to make room, so a peer opening a
 * connection per request (Mooncake's classic initiator) is never refused
 * while connections it no longer uses linger. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp_srv.h"

/* ---- the registry and its caps (under s->lock) ------------------------------- */

/* Closed connections' structs are kept for the next ones: a peer opening a
 * connection per request would otherwise grow and shrink the heap for each
 * (page faults, TLB shootdowns measured in the accept path). */
#define SPARE_MAX 256

tcp_srv_conn *tcp_srv_conn_alloc(tcp_server *s)
{
    pthread_mutex_lock(&s->lock);
    tcp_srv_conn *c = s->spare;
    if (c) {
        s->spare = c->qnext;
        s->nspare--;
    }
    pthread_mutex_unlock(&s->lock);
    if (!c)
        c = malloc(sizeof *c);
    if (c)
        memset(c, 0, sizeof *c);
    return c;
}

/* Under s->lock. */
static void conn_recycle(tcp_server *s, tcp_srv_conn *c)
{
    if (s->nspare >= SPARE_MAX) {
        free(c);
        return;
    }
    c->qnext = s->spare;
    s->spare = c;
    s->nspare++;
}

static void free_spares(tcp_server *s)
{
    while (s->spare) {
        tcp_srv_conn *c = s->spare;
        s->spare = c->qnext;
        free(c);
    }
    s->nspare = 0;
}

static void link_conn(tcp_server *s, tcp_srv_conn *c)
{
    c->rprev = NULL;
    c->rnext = s->conns;
    if (s->conns)
        s->conns->rprev = c;
    s->conns = c;
    s->active++;
}

void tcp_srv_forget(tcp_server *s, tcp_srv_conn *c)
{
    pthread_mutex_lock(&s->lock);
    if (c->rprev)
        c->rprev->rnext = c->rnext;
    else
        s->conns = c->rnext;
    if (c->rnext)
        c->rnext->rprev = c->rprev;
    if (c->evicting)
        s->evicting--;
    close(c->fd); /* under the lock: eviction shuts down registered fds */
    if (--s->active == 0)
        pthread_cond_broadcast(&s->idle);
    conn_recycle(s, c);
    pthread_mutex_unlock(&s->lock);
}

/* Claims an idle connection and cuts it; its loop closes it.  false if it
 * left idleness meanwhile. */
static bool evict(tcp_server *s, tcp_srv_conn *v, const char *why)
{
    int64_t since = atomic_load(&v->idle_since);
    if (since <= 0 || !atomic_compare_exchange_strong(&v->idle_since, &since, -1))
        return false;
    v->evicting = true;
    s->evicting++;
    shutdown(v->fd, SHUT_RDWR);
    TCP_LOG(v->t, TE_LOG_INFO, "closing the oldest idle data connection (from %s, idle %.1f s) "
            "to make room: %s", v->peer, (double)(te_host_table->now_ns() - since) / 1e9, why);
    return true;
}

typedef struct census {
    int from_peer;
    tcp_srv_conn *oldest_idle, *oldest_idle_of_peer;
} census;

static census count_conns(tcp_server *s, const char *peer)
{
    census n = {0, NULL, NULL};
    int64_t oldest = INT64_MAX, oldest_peer = INT64_MAX;
    for (tcp_srv_conn *c = s->conns; c; c = c->rnext) {
        if (c->evicting)
            continue;
        bool same = peer && !strcmp(c->peer, peer);
        n.from_peer += same;
        int64_t since = atomic_load(&c->idle_since);
        if (since <= 0)
            continue;
        if (since < oldest) {
            oldest = since;
            n.oldest_idle = c;
        }
        if (same && since < oldest_peer) {
            oldest_peer = since;
            n.oldest_idle_of_peer = c;
        }
    }
    return n;
}

/* Room for one more connection from `peer`, evicting the oldest idle one
 * when a cap is reached.  false: every connection is busy, refuse. */
static bool make_room(tcp_server *s, const char *peer)
{
    for (int tries = 0; tries < 3; tries++) {
        int live = s->active - s->evicting;
        if (live < s->max_connections && live < s->max_per_peer)
            return true; /* below both caps without counting */
        census n = count_conns(s, peer);
        bool peer_full = n.from_peer >= s->max_per_peer;
        if (live < s->max_connections && !peer_full)
            return true;
        tcp_srv_conn *v = peer_full ? n.oldest_idle_of_peer : n.oldest_idle;
        if (!v)
            return false;
        if (evict(s, v, peer_full ? "MC_TE_MAX_CONNECTIONS_PER_PEER reached"
                                  : "MC_TCP_MAX_CONNECTIONS reached"))
            return true;
    }
    return false;
}

/* Out of file descriptors: the oldest idle connection goes.  false if none. */
static bool evict_for_fds(tcp_server *s)
{
    pthread_mutex_lock(&s->lock);
    census n = count_conns(s, NULL);
    bool ok = n.oldest_idle && evict(s, n.oldest_idle, "out of file descriptors");
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* ---- accepting ------------------------------------------------------------- */

static void admit(tcp_transport *t, int fd, const char *peer)
{
    tcp_server *s = &t->server;
    tcp_srv_conn *c = tcp_srv_conn_new(t, fd, peer);
    pthread_mutex_lock(&s->lock);
    bool ok = c && make_room(s, peer);
    if (ok)
        link_conn(s, c);
    int active = s->active;
    pthread_mutex_unlock(&s->lock);
    if (!ok) {
        TCP_LOG(t, TE_LOG_WARN, "refusing a data connection from %s: %d open and none idle "
                "(MC_TCP_MAX_CONNECTIONS, MC_TE_MAX_CONNECTIONS_PER_PEER)", peer, active);
        close(fd);
        if (c) {
            pthread_mutex_lock(&s->lock);
            conn_recycle(s, c);
            pthread_mutex_unlock(&s->lock);
        }
        return;
    }
    if (s->auth)
        tcp_srv_auth_submit(s, c);
    else
        tcp_srv_loop_adopt(s, c);
}

/* Accepts every pending connection. */
static void accept_burst(tcp_transport *t)
{
    tcp_server *s = &t->server;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                usleep(evict_for_fds(s) ? 1000 : 10000); /* let a loop close it, or back off */
            return;
        }
        char peer[64];
        const void *src = ss.ss_family == AF_INET6 ? (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                                   : (void *)&((struct sockaddr_in *)&ss)->sin_addr;
        if (!inet_ntop(ss.ss_family, src, peer, sizeof peer))
            snprintf(peer, sizeof peer, "?");
        tcp_tune_socket(t, fd);
        admit(t, fd, peer);
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
        accept_burst(t);
    }
    return NULL;
}

/* Listens on a random free port of [MC_MIN_RPC_PORT, MC_MAX_RPC_PORT] like
 * the original's data port: the core's listener (host listen_in_range),
 * the one its RPC port uses, with the range read as the core reads it. */
static int bind_data_port(tcp_transport *t, tcp_server *s)
{
    long lo = (long)tcp_config(t->host, "MC_MIN_RPC_PORT");
    long hi = (long)tcp_config(t->host, "MC_MAX_RPC_PORT");
    if (lo > hi)
        lo = 15000, hi = 17000;
    uint16_t port = 0;
    int fd = te_host_table->listen_in_range((uint16_t)lo, (uint16_t)hi, 4096, &port);
    if (fd < 0) {
        te_host_table->set_error("tcp: no free data port in %ld..%ld", lo, hi);
        return TE_ERR_SOCKET;
    }
    s->listen_fd = fd;
    s->port = port;
    return 0;
}

/* Limits from the environment; see the README's table and docs/reliability.md. */
static void read_limits(tcp_transport *t, tcp_server *s)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    long loops = ncpu < 1 ? 1 : ncpu > 4 ? 4 : ncpu;
    s->nloops = (int)tcp_config(t->host, "MC_TCP_SERVER_THREADS"); /* 0: automatic */
    if (s->nloops == 0)
        s->nloops = (int)loops;
    s->max_connections = (int)tcp_config(t->host, "MC_TCP_MAX_CONNECTIONS");
    s->max_per_peer = te_host_table->max_connections_per_peer(t->host);
    s->io_timeout_ns = tcp_config(t->host, "MC_TCP_STATUS_TIMEOUT_SEC") * 1000000000LL;
    s->header_timeout_ns = tcp_config(t->host, "MC_TCP_HEADER_TIMEOUT_MS") * 1000000LL;
    s->idle_timeout_ns = tcp_config(t->host, "MC_TCP_IDLE_TIMEOUT_MS") * 1000000LL;
}

static void close_pipes(tcp_server *s)
{
    close(s->wake[0]);
    close(s->wake[1]);
}

int tcp_server_start(tcp_transport *t, tcp_server *s)
{
    memset(s, 0, sizeof *s);
    read_limits(t, s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    int rc = bind_data_port(t, s);
    if (rc)
        return rc;
    if (pipe2(s->wake, O_CLOEXEC) < 0 || fcntl(s->listen_fd, F_SETFL, O_NONBLOCK) < 0) {
        close(s->listen_fd);
        return TE_ERR_SOCKET;
    }
    rc = tcp_srv_loops_start(s, t);
    /* The host authenticates only where a token is configured; without one
     * no handshake is run at all. */
    if (!rc && te_host_table->config(t->host, "MC_AUTH_TOKEN"))
        rc = tcp_srv_auth_start(s, t);
    if (!rc && pthread_create(&s->accept_thread, NULL, accept_main, t) != 0)
        rc = TE_ERR_MEMORY;
    if (rc) {
        tcp_srv_auth_stop(s);
        tcp_srv_loops_stop(s);
        close(s->listen_fd);
        close_pipes(s);
        return rc;
    }
    s->running = true;
    return 0;
}

void tcp_server_stop(tcp_server *s)
{
    if (!s->running)
        return;
    char b = 1;
    ssize_t w = write(s->wake[1], &b, 1); /* never drained: wakes every blocking wait */
    (void)w;
    pthread_join(s->accept_thread, NULL);
    close(s->listen_fd);
    pthread_mutex_lock(&s->lock);
    for (tcp_srv_conn *c = s->conns; c; c = c->rnext)
        shutdown(c->fd, SHUT_RDWR); /* ends handshakes and transfers under way */
    pthread_mutex_unlock(&s->lock);
    tcp_srv_auth_stop(s); /* first: it hands connections to the loops */
    tcp_srv_loops_stop(s);
    pthread_mutex_lock(&s->lock);
    while (s->active > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    free_spares(s);
    pthread_mutex_unlock(&s->lock);
    close_pipes(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    s->running = false;
}
