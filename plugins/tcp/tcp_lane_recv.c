/* tcp_lane_recv.c - a lane's receive path: the in-order answers to its
 * in-flight requests, v2 status frames (checked for their magic) and READ
 * data, copied from the lane's receive buffer or, for large remainders,
 * received straight into user memory.  Bytes that answer nothing, or a
 * status frame without its magic, are TE_ERR_MALFORMED_FRAME. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "tcp_lane.h"

/* What a step of the receive loop asks for next (errors are negative). */
#define STEP_DRAINED 0 /* nothing more to read now: tcp_lane_recv returns 0 */
#define STEP_NEXT 1    /* bytes were used: go round again */
#define STEP_FILL 2    /* the receive buffer needs more bytes */

/* One recv(): 0 with *got bytes (0 when none are there now), or
 * TE_ERR_PEER_CLOSED when the connection ended or failed. */
static int recv_some(lane *l, void *buf, size_t len, bool wait, size_t *got)
{
    ssize_t n = recv(l->fd, buf, len, wait ? 0 : MSG_DONTWAIT);
    *got = n > 0 ? (size_t)n : 0;
    if (n > 0)
        return 0;
    if (n == 0)
        return TE_ERR_PEER_CLOSED;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : TE_ERR_PEER_CLOSED;
}

/* READ data of the first slice in flight: what the buffer holds, then big
 * payloads straight into user memory. */
static int recv_data(lane *l, te_slice *s, bool *wait)
{
    size_t avail = l->rlen - l->rpos;
    uint64_t want = s->length - l->data_off;
    size_t take = avail < want ? avail : (size_t)want;
    memcpy((char *)s->local + l->data_off, l->rbuf + l->rpos, take);
    l->rpos += take;
    l->data_off += take;
    want -= take;
    if (want == 0) {
        slist_pop(&l->flying);
        l->in_data = false;
        tcp_lane_complete(l, s, 0);
        return STEP_NEXT;
    }
    if (want < TCP_DIRECT_MIN)
        return STEP_FILL;
    size_t got;
    int rc = recv_some(l, (char *)s->local + l->data_off, want, *wait, &got);
    *wait = false;
    if (rc || !got)
        return rc;
    l->data_off += got;
    progress(l);
    l->last_io_ns = te_host_table->now_ns();
    return STEP_NEXT;
}

/* A v2 status frame (8 bytes in the buffer) answering the first slice in
 * flight: a WRITE or a refusal completes it, an accepted READ is followed by
 * its data. */
static int recv_status(lane *l, te_slice *s)
{
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
        tcp_lane_complete(l, s, code == TCP_STATUS_OK ? 0 : TE_ERR_ADDRESS_NOT_REGISTERED);
    } else {
        l->in_data = true;
        l->data_off = 0;
    }
    return STEP_NEXT;
}

/* More bytes into the receive buffer, unless nothing more is expected. */
static int fill_rbuf(lane *l, bool *wait)
{
    if (!l->flying.head && l->rpos == l->rlen)
        return STEP_DRAINED;
    if (l->rpos > 0) {
        memmove(l->rbuf, l->rbuf + l->rpos, l->rlen - l->rpos);
        l->rlen -= l->rpos;
        l->rpos = 0;
    }
    size_t got;
    int rc = recv_some(l, l->rbuf + l->rlen, LANE_RBUF - l->rlen, *wait, &got);
    *wait = false;
    if (rc || !got)
        return rc;
    if (!l->flying.head) {
        TCP_LOG(l->peer->t, TE_LOG_WARN, "unexpected bytes from %s:%u", l->peer->host,
                l->peer->port);
        return TE_ERR_MALFORMED_FRAME;
    }
    l->rlen += got;
    progress(l);
    l->last_io_ns = te_host_table->now_ns(); /* per receive, not per slice it completes */
    return STEP_NEXT;
}

/* v1, no status frames: a READ's answer is its data; a WRITE at the head
 * has landed once bytes of a later READ's answer are here (its fence's, see
 * tcp_lane.h). */
static int v1_step(lane *l, te_slice *s, bool *wait)
{
    if (s->opcode == TE_OP_READ) {
        l->in_data = true;
        l->data_off = 0;
        return recv_data(l, s, wait);
    }
    if (l->rpos == l->rlen)
        return STEP_FILL;
    slist_pop(&l->flying);
    tcp_lane_complete(l, s, 0);
    return STEP_NEXT;
}

int tcp_lane_recv(lane *l, bool wait)
{
    for (;;) {
        te_slice *s = l->flying.head;
        int rc = STEP_FILL;
        if (s && l->in_data)
            rc = recv_data(l, s, &wait);
        else if (s && !l->peer->v2)
            rc = v1_step(l, s, &wait);
        else if (s && l->rlen - l->rpos >= 8)
            rc = recv_status(l, s);
        if (rc == STEP_FILL)
            rc = fill_rbuf(l, &wait);
        if (rc != STEP_NEXT)
            return rc;
    }
}
