/* tcp_lane_drive.c - a lone small request driven by the submitting thread:
 * it borrows an idle, connected lane, sends, and waits a few hundred
 * microseconds (DRIVE_NS) for the answer in a blocking receive, so a
 * synchronous round trip costs no thread hand-off; a slower answer is left
 * to the lane's thread. */
#include <poll.h>
#include <pthread.h>
#include <time.h>

#include "tcp_lane.h"

/* Sends one small request on an idle, connected lane from this thread and
 * waits briefly for its answer.  false when the lane is not available (the
 * caller queues the slice as usual). */
static bool drive_inline(tcp_peer *p, lane *l, te_slice *s)
{
    if (s->length >= TCP_SPLICE_MIN)
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
    tcp_lane_encode(p, s);
    tcp_lane_drop_stale(l);
    int rc = 0;
    if (l->fd < 0) {
        slist_push(&l->sending, s); /* the lane thread reconnects */
    } else {
        slist_push(&l->sending, s);
        rc = tcp_lane_send(l);
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
            if (may_block && !l->sending.head && tcp_lane_set_blocking(l, true)) {
                rc = tcp_lane_recv(l, true); /* sleeps at most SO_RCVTIMEO */
                continue;
            }
            if (!tcp_lane_set_blocking(l, false)) {
                rc = TE_ERR_SOCKET;
                break;
            }
            struct pollfd pf = {.fd = l->fd, .events = POLLIN | (l->sending.head ? POLLOUT : 0)};
            struct timespec ts = {left / 1000000000, left % 1000000000};
            if (ppoll(&pf, 1, &ts, NULL) <= 0)
                continue;
            if (pf.revents & (POLLIN | POLLHUP | POLLERR))
                rc = tcp_lane_recv(l, false);
            if (!rc && (pf.revents & POLLOUT))
                rc = tcp_lane_send(l);
        }
        if (rc)
            tcp_lane_failed(l, rc);
    }
    pthread_mutex_lock(&l->lock);
    l->lent = false;
    if (l->sending.head || l->flying.head || l->queued.head || l->pipe_bytes || l->stop)
        tcp_lane_wake(l); /* under the lock: the lane thread cannot exit before this */
    pthread_mutex_unlock(&l->lock);
    tcp_peer_unref(p);
    return true;
}

/* A lone request goes to the first idle lane: a caller alone keeps using one
 * connection (and so one warm thread of the target's data port) instead of
 * rotating; concurrent callers find the first lanes lent and take the next. */
bool tcp_lane_drive_first_idle(tcp_peer *p, lane *lanes, int n, te_slice *s)
{
    for (int i = 0; i < n; i++)
        if (drive_inline(p, &lanes[i], s))
            return true;
    return false;
}
