/* tcp_lane_thread.c - a lane's thread and its life: started with the lane's
 * eventfd and receive buffer on first use, it runs work rounds (deadlines,
 * stalls, connect, send, poll, receive) while the lane has work, sleeps while
 * it is idle or lent to a submitting thread, and retires after the idle
 * timeout or when the peer closes the idle connection. */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tcp_lane.h"

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

/* Caller holds l->lock: the thread cannot close the eventfd meanwhile. */
void tcp_lane_wake(lane *l)
{
    if (l->efd < 0)
        return;
    uint64_t one = 1;
    ssize_t w = write(l->efd, &one, sizeof one);
    (void)w;
}

/* The lane's connection failed (status) or stalled: with other rails, its
 * rail is set aside and its slices move to them; otherwise they fail. */
void tcp_lane_failed(lane *l, int status)
{
    tcp_peer *p = l->peer;
    if (!multi_rail(p) || status == TE_ERR_MALFORMED_FRAME) {
        tcp_lane_reset(l, status);
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
    tcp_lane_reset(l, status);
    tcp_peer_redistribute(p, l->rail, &moved, status);
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
    tcp_peer_redistribute(p, l->rail, &moved, TE_ERR_SOCKET);
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
        TCP_LOG(p->t, TE_LOG_WARN, "transfers to %s:%u passed their deadline", tcp_lane_host(l),
                p->port);
        tcp_lane_reset(l, TE_ERR_TIMEOUT);
        return;
    }
    if (stalled(l, now)) {
        TCP_LOG(p->t, TE_LOG_WARN, "no progress to %s:%u for %lld ms", tcp_lane_host(l), p->port,
                (long long)(p->t->rail_stall_ns / 1000000));
        tcp_lane_failed(l, TE_ERR_TIMEOUT);
        return;
    }
    tcp_lane_drop_stale(l);
    if (l->fd >= 0 && !tcp_lane_set_blocking(l, false)) { /* it never sleeps in a socket call */
        tcp_lane_failed(l, TE_ERR_SOCKET);
        return;
    }
    if (l->sending.head && l->fd < 0 && leave_paused_rail(l, now))
        return;
    if (l->sending.head && l->fd < 0) {
        int rc = tcp_lane_connect(l, deadline);
        if (rc) {
            tcp_lane_failed(l, rc);
            return;
        }
    }
    int rc = 0;
    if (l->sending.head || l->pipe_bytes)
        rc = tcp_lane_send(l); /* the socket is usually writable: try before polling */
    if (rc) {
        tcp_lane_failed(l, rc);
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
        rc = tcp_lane_recv(l, false);
        if (!rc && !l->flying.head && !l->sending.head && (pf[1].revents & (POLLHUP | POLLERR)))
            rc = TE_ERR_PEER_CLOSED; /* the connection went away: reconnect later */
    }
    if (!rc && nfds == 2 && (pf[1].revents & POLLOUT) && (l->sending.head || l->pipe_bytes))
        rc = tcp_lane_send(l);
    if (rc)
        tcp_lane_failed(l, rc);
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
    tcp_lane_close_pipe(l);
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
        TCP_LOG(l->peer->t, TE_LOG_DEBUG, "lane to %s:%u ends (%s)", tcp_lane_host(l), l->peer->port,
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
            tcp_lane_reset(l, TE_ERR_STATE); /* outside the lock: completions may free the peer */
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
    tcp_peer_unref(p);
    tcp_lane_exited(t);
    return NULL;
}

int tcp_lane_start(lane *l)
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
        tcp_lane_open_pipe(l);
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
        tcp_lane_close_pipe(l);
        free(l->rbuf);
        l->rbuf = NULL;
        close(l->efd);
        l->efd = -1;
        return TE_ERR_MEMORY;
    }
    l->started = true;
    return 0;
}
