/* tcp_srv_loop.c - the epoll loops of the data port: a fixed set of threads
 * (MC_TCP_SERVER_THREADS, default min(4, CPUs)), each serving its share of
 * the connections edge-triggered, with a receive buffer shared by them, a
 * ready list so one busy connection cannot starve the others, and a tick that
 * closes connections whose header, idle or io deadline passed.  A thread with
 * a single connection awaits its next request in a blocking recv (linger). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tcp_srv.h"

#define TICK_NS 100000000LL /* deadlines are checked this often */
#define MAX_EVENTS 128

struct tcp_srv_loop {
    tcp_server *s;
    int epfd, efd;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_int nconns;                 /* handed to this loop and not yet closed */
    _Atomic(tcp_srv_conn *) incoming;  /* hand-over stack from the acceptor and auth threads */
    tcp_srv_conn *list;                /* connections served here (this thread only) */
    tcp_srv_conn *ready;               /* ran out of budget with more to do */
    uint8_t *buf;
    int64_t next_tick;
};

/* Closes a connection this loop serves. */
static void drop(tcp_srv_loop *L, tcp_srv_conn *c)
{
    if (c->lprev)
        c->lprev->lnext = c->lnext;
    else
        L->list = c->lnext;
    if (c->lnext)
        c->lnext->lprev = c->lprev;
    if (c->in_ready)
        for (tcp_srv_conn **p = &L->ready; *p; p = &(*p)->qnext)
            if (*p == c) {
                *p = c->qnext;
                break;
            }
    tcp_srv_conn_release(c);
    atomic_fetch_sub(&L->nconns, 1);
    tcp_srv_forget(L->s, c);
}

static void run_conn(tcp_srv_loop *L, tcp_srv_conn *c)
{
    int rc = tcp_srv_conn_run(c, L->buf, SRV_RBUF);
    if (rc < 0) {
        drop(L, c);
    } else if (rc > 0 && !c->in_ready) {
        c->in_ready = true;
        c->qnext = L->ready;
        L->ready = c;
    }
}

/* Takes the connections handed over since the last call. */
static void adopt_incoming(tcp_srv_loop *L)
{
    tcp_srv_conn *c = atomic_exchange(&L->incoming, NULL);
    while (c) {
        tcp_srv_conn *next = c->qnext;
        c->qnext = NULL;
        c->lprev = NULL;
        c->lnext = L->list;
        if (L->list)
            L->list->lprev = c;
        L->list = c;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            drop(L, c);
        else
            run_conn(L, c); /* a new connection's first request is usually there already */
        c = next;
    }
}

static void run_ready(tcp_srv_loop *L)
{
    tcp_srv_conn *c = L->ready;
    L->ready = NULL;
    while (c) {
        tcp_srv_conn *next = c->qnext;
        c->in_ready = false;
        run_conn(L, c);
        c = next;
    }
}

static void check_deadlines(tcp_srv_loop *L)
{
    int64_t now = te_host_table->now_ns();
    if (now < L->next_tick)
        return;
    L->next_tick = now + TICK_NS;
    for (tcp_srv_conn *c = L->list, *next; c; c = next) {
        next = c->lnext;
        int64_t due = tcp_srv_conn_deadline(c);
        if (due == 0 || due > now)
            continue;
        int64_t since = atomic_load(&c->idle_since);
        TCP_LOG(c->t, since > 0 ? TE_LOG_INFO : TE_LOG_WARN,
                "closing a data connection from %s: %s", c->peer,
                since < 0 ? "evicted" : since == 0 ? "stalled inside a frame (MC_TCP_STATUS_TIMEOUT_SEC)"
                : c->served ? "idle (MC_TCP_IDLE_TIMEOUT_MS)" : "no request header (MC_TCP_HEADER_TIMEOUT_MS)");
        drop(L, c);
    }
}

static void handle_event(tcp_srv_loop *L, const struct epoll_event *ev)
{
    tcp_srv_conn *c = ev->data.ptr;
    if (!c) {
        uint64_t v;
        ssize_t r = read(L->efd, &v, sizeof v);
        (void)r;
        adopt_incoming(L);
        return;
    }
    if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rd_ready = true;
    if (ev->events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->rdhup = true; /* no further edge will tell of the end: read until recv says so */
    if (ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->wr_ready = true;
    run_conn(L, c);
}

/* A loop that serves one connection, whose client works synchronously: the
 * next request follows the answer within microseconds, so the loop waits for
 * it in a blocking recv (tcp_srv_conn_linger) instead of epoll_wait and then
 * recv.  Left as soon as anything else could need the loop: a second
 * connection, one handed over, a stop, or SRV_LINGER_US without a request
 * (what arrives meanwhile waits at most that long). */
static void linger(tcp_srv_loop *L)
{
    for (;;) {
        tcp_srv_conn *c = L->list;
        if (!c || c->lnext || L->ready || atomic_load(&L->incoming) || atomic_load(&L->stop))
            return;
        int rc = tcp_srv_conn_linger(c, L->buf, SRV_RBUF);
        if (rc == 0)
            return;
        if (rc < 0) {
            drop(L, c);
            return;
        }
        run_conn(L, c);
        check_deadlines(L);
    }
}

static void *loop_main(void *arg)
{
    tcp_srv_loop *L = arg;
    struct epoll_event ev[MAX_EVENTS];
    while (!atomic_load(&L->stop)) {
        int timeout = L->ready ? 0 : L->list ? (int)(TICK_NS / 1000000) : -1;
        int n = epoll_wait(L->epfd, ev, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++)
            handle_event(L, &ev[i]);
        run_ready(L);
        check_deadlines(L);
        if (n > 0)
            linger(L);
    }
    adopt_incoming(L); /* so that they are closed below */
    while (L->list)
        drop(L, L->list);
    return NULL;
}

void tcp_srv_loop_adopt(tcp_server *s, tcp_srv_conn *c)
{
    tcp_srv_loop *L = &s->loops[0];
    for (int i = 1; i < s->nloops; i++)
        if (atomic_load(&s->loops[i].nconns) < atomic_load(&L->nconns))
            L = &s->loops[i];
    c->loop = L;
    atomic_fetch_add(&L->nconns, 1);
    tcp_srv_conn *head = atomic_load(&L->incoming);
    do
        c->qnext = head;
    while (!atomic_compare_exchange_weak(&L->incoming, &head, c));
    uint64_t one = 1;
    ssize_t w = write(L->efd, &one, sizeof one);
    (void)w;
}

static int loop_init(tcp_server *s, tcp_srv_loop *L)
{
    L->s = s;
    L->epfd = epoll_create1(EPOLL_CLOEXEC);
    L->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    L->buf = malloc(SRV_RBUF);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (L->epfd < 0 || L->efd < 0 || !L->buf || epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->efd, &ev))
        return TE_ERR_SOCKET;
    if (pthread_create(&L->thread, NULL, loop_main, L) != 0)
        return TE_ERR_MEMORY;
    L->started = true;
    return 0;
}

int tcp_srv_loops_start(tcp_server *s, tcp_transport *t)
{
    (void)t;
    s->loops = calloc((size_t)s->nloops, sizeof *s->loops);
    if (!s->loops)
        return TE_ERR_MEMORY;
    for (int i = 0; i < s->nloops; i++) {
        s->loops[i].epfd = s->loops[i].efd = -1;
        int rc = loop_init(s, &s->loops[i]);
        if (rc) {
            tcp_srv_loops_stop(s);
            return rc;
        }
    }
    return 0;
}

/* After the acceptor and the auth threads: nothing is handed over any more. */
void tcp_srv_loops_stop(tcp_server *s)
{
    for (int i = 0; s->loops && i < s->nloops; i++) {
        tcp_srv_loop *L = &s->loops[i];
        if (L->started) {
            atomic_store(&L->stop, true);
            uint64_t one = 1;
            ssize_t w = write(L->efd, &one, sizeof one);
            (void)w;
            pthread_join(L->thread, NULL);
        }
        if (L->epfd >= 0)
            close(L->epfd);
        if (L->efd >= 0)
            close(L->efd);
        free(L->buf);
    }
    free(s->loops);
    s->loops = NULL;
}
