/* tcp_lane_thread.c - a lane's thread and its life: started with the lane's
 * eventfd and receive buffer on first use, it runs work rounds (deadlines,
 * stalls, connect, send, poll, receive) while the lane has work, sleeps while
 * it is idle or lent to a submitting thread, and retires after the idle
 * timeout or when the peer closes the idle connection.  Threads are bounded
 * (tcp_lane_slots.h): while lanes wait for one, idle lanes retire at once and
 * busy ones give theirs up after their turn. */
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

/* Under the slots' lock, the lane in their idle list: its eventfd is open. */
void tcp_lane_kick(void *lane_ptr)
{
    lane *l = lane_ptr;
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
    tcp_lane_slots *slots = &l->peer->t->slots;
    int64_t idle_ns = l->peer->t->server.idle_timeout_ns;
    int64_t left = last_io_ns + idle_ns - te_host_table->now_ns();
    /* In the idle list first: a lane that starts waiting for a thread from
     * now on kicks us, and one already waiting is seen below. */
    tcp_slots_idle_enter(slots, &l->slot);
    if (fd >= 0 && left > 0 && !tcp_slots_contended(slots)) {
        /* POLLRDHUP alone: the peer's FIN (or an error) wakes us, an answer
         * to a lender's request does not (a wake-up per sync round trip). */
        struct pollfd pe[2] = {{.fd = l->efd, .events = POLLIN}, {.fd = fd, .events = POLLRDHUP}};
        int r = poll(pe, 2, (int)(left / 1000000) + 1);
        if (r > 0 && pe[0].revents)
            drain_efd(l);
        if (r > 0 && !pe[1].revents && !tcp_slots_contended(slots)) {
            tcp_slots_idle_leave(slots, &l->slot);
            return false; /* woken: work, or a submitter lent the lane */
        }
    }
    tcp_slots_idle_leave(slots, &l->slot); /* before the eventfd can close */
    /* Lanes wait for a thread: an idle one gives its thread up now. */
    return lane_retire(l, tcp_slots_contended(slots) ? 0 : idle_ns);
}

/* Whether a busy lane has had its thread long enough while others wait for
 * one: it then takes no new slices (caller holds l->lock). */
static bool turn_over(const lane *l)
{
    return tcp_slots_contended(&l->peer->t->slots) &&
           te_host_table->now_ns() - l->slot_since > TCP_LANE_TURN_NS;
}

/* Gives the thread up (caller holds l->lock, nothing in flight, slices
 * queued): the lane waits for a slot again, keeping its queue and, as a
 * waiter, this thread's reference to the peer. */
static void give_way(lane *l)
{
    TCP_LOG(l->peer->t, TE_LOG_DEBUG, "lane to %s:%u gives its thread to a waiting lane",
            tcp_lane_host(l), l->peer->port);
    lane_release(l);
    l->waiting = true;
}

/* One pass of the loop on the lane's state: 1 to go on working, 0 to sleep,
 * -1 when the thread ends (stop), -2 when it gave way. */
static int lane_step(lane *l, bool *lent_out, int *fd_out, int64_t *last_io_out)
{
    pthread_mutex_lock(&l->lock);
    bool lent = l->lent, stop = l->stop && !lent, was_busy = l->busy;
    bool turn = !lent && !stop && l->queued.head && turn_over(l);
    if (!lent && !turn)
        slist_append(&l->sending, &l->queued);
    l->busy = !lent && (l->sending.head || l->flying.head || l->pipe_bytes);
    if (turn && !l->busy) {
        give_way(l);
        pthread_mutex_unlock(&l->lock);
        return -2;
    }
    bool busy = l->busy;
    /* A lender owns the socket (and its clock) until it gives it back. */
    *lent_out = lent;
    *fd_out = lent ? -1 : l->fd;
    *last_io_out = lent ? 0 : l->last_io_ns;
    pthread_mutex_unlock(&l->lock);
    if (busy && !was_busy)
        progress(l); /* the stall clock starts with the work */
    if (stop) {
        tcp_lane_reset(l, TE_ERR_STATE); /* outside the lock: completions may free the peer */
        pthread_mutex_lock(&l->lock);
        lane_release(l);
        pthread_mutex_unlock(&l->lock);
        return -1;
    }
    return busy ? 1 : 0;
}

static lane *adopt(tcp_transport *t, lane *heir);

/* Runs the lane until it ends or gives way; then the lane this thread
 * serves next (a waiter handed the slot, prepared), or NULL. */
static lane *lane_run(lane *l)
{
    tcp_peer *p = l->peer;
    tcp_transport *t = p->t;
    bool lent;
    int fd, step;
    int64_t last_io_ns;
    while ((step = lane_step(l, &lent, &fd, &last_io_ns)) >= 0) {
        if (step) {
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
         * timeout is checked again after one timeout's sleep at most (10 ms
         * while lanes wait for a thread). */
        int64_t ms = tcp_slots_contended(&t->slots) ? 10 : t->server.idle_timeout_ns / 1000000;
        struct pollfd pe = {.fd = l->efd, .events = POLLIN};
        if (poll(&pe, 1, (int)ms) > 0)
            drain_efd(l);
    }
    if (step == -2) /* the lane waits again, keeping our peer reference */
        return adopt(t, tcp_slots_yield(&t->slots, &l->slot));
    tcp_peer_unref(p);
    return adopt(t, tcp_slots_give(&t->slots));
}

/* A thread serves lanes one after another: the slot it holds goes with it
 * from a lane that ended to the next waiter, so a hand-over creates no
 * thread and the count never exceeds the bound. */
static void *lane_main(void *arg)
{
    tcp_block_sigpipe();
    for (lane *l = arg; l;)
        l = lane_run(l);
    return NULL;
}

/* Gets a lane that holds a slot ready to run (caller holds l->lock): its
 * eventfd, receive buffer, pipe and a peer reference for its thread. */
static int lane_prepare(lane *l)
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
    l->last_io_ns = l->slot_since = te_host_table->now_ns(); /* the idle timeout counts from here */
    atomic_fetch_add(&l->peer->refs, 1);
    l->started = true;
    return 0;
}

/* lane_prepare, then a thread for it (caller holds l->lock). */
static int lane_launch(lane *l)
{
    int rc = lane_prepare(l);
    if (rc)
        return rc;
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&th, &attr, lane_main, l);
    pthread_attr_destroy(&attr);
    if (rc) {
        atomic_fetch_sub(&l->peer->refs, 1);
        lane_release(l);
        return TE_ERR_MEMORY;
    }
    return 0;
}

int tcp_lane_start(lane *l)
{
    l->slot.lane = l;
    if (!tcp_slots_take(&l->peer->t->slots, &l->slot)) {
        l->waiting = true;
        atomic_fetch_add(&l->peer->refs, 1); /* the peer stays while the lane waits */
        return 0;
    }
    return lane_launch(l);
}

/* A waiting lane handed a slot (no lane lock held): prepared to run on this
 * thread (own_thread) or started on a new one.  A lane whose peer was closed
 * meanwhile, or that cannot start, fails its queue.  true when it runs. */
static bool take_over(lane *h, bool own_thread)
{
    pthread_mutex_lock(&h->lock);
    h->waiting = false;
    int rc = h->stop ? TE_ERR_STATE : own_thread ? lane_prepare(h) : lane_launch(h);
    slist failed = {0};
    if (rc)
        slist_append(&failed, &h->queued);
    pthread_mutex_unlock(&h->lock);
    te_slice *s;
    while ((s = slist_pop(&failed))) {
        rail_done(h->peer, h->rail, s, false);
        tcp_slice_finish(h->peer->t, s, rc);
    }
    tcp_peer_unref(h->peer); /* the waiter's reference; a running lane took its own */
    return rc == 0;
}

/* The next lane for this thread: heir, or the waiters after it when it
 * cannot run; NULL when the slot went back to the pool. */
static lane *adopt(tcp_transport *t, lane *heir)
{
    while (heir && !take_over(heir, true))
        heir = tcp_slots_give(&t->slots);
    return heir;
}

void tcp_lane_pass_slot(tcp_transport *t)
{
    lane *heir;
    while ((heir = tcp_slots_give(&t->slots)) != NULL)
        if (take_over(heir, false))
            return;
}
