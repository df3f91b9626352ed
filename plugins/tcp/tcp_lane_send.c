/* tcp_lane_send.c - a lane's send path: the queue's headers and WRITE
 * payloads gathered into one sendmsg straight from user memory (up to
 * MAX_IOV pieces, MAX_SEND_BYTES), large v2 payloads through vmsplice, and
 * the accounting that moves requests fully on the wire to the in-flight
 * list, where v1 writes wait for a fence (tcp_lane.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcp_lane.h"

#define MAX_IOV 512
#define MAX_SEND_BYTES (16u << 20)

static uint64_t wire_bytes(const te_slice *s)
{
    return TCP_HDR_LEN + (s->opcode == TE_OP_WRITE ? s->length : 0);
}

char tcp_fence_tag;

typedef struct fence {
    te_slice pub; /* first: freed as a te_slice by tcp_slice_finish */
    uint8_t byte;
} fence;

/* Queues the fence of the v1 write w, the last on the wire (tcp_lane.h). */
static int queue_fence(lane *l, const te_slice *w)
{
    fence *f = malloc(sizeof *f);
    if (!f)
        return TE_ERR_MEMORY; /* the lane fails: its writes are retried or fail */
    f->pub = (te_slice){.opcode = TE_OP_READ, .local = &f->byte,
                        .remote = w->remote + w->length - 1, .length = 1, .peer = w->peer,
                        .local_mr = &tcp_fence_tag, .remote_buffer = w->remote_buffer,
                        .deadline_ns = w->deadline_ns};
    tcp_lane_encode(l->peer, &f->pub);
    slist_push(&l->sending, &f->pub);
    return 0;
}

/* Counts `sent` more bytes of the queue as gone: requests fully on the wire
 * wait for their response, v1 writes for their fence's.  0 or a status. */
static int advance(lane *l, uint64_t sent)
{
    if (sent)
        progress(l);
    uint64_t left = sent + l->send_off;
    te_slice *last = NULL;
    while (l->sending.head && left >= wire_bytes(l->sending.head)) {
        last = slist_pop(&l->sending);
        left -= wire_bytes(last);
        slist_push(&l->flying, last);
    }
    l->send_off = left;
    if (last && !l->sending.head && !l->peer->v2 && last->opcode == TE_OP_WRITE)
        return queue_fence(l, last);
    return 0;
}

/* Large v2 write payloads go through a pipe with vmsplice+splice: the socket
 * then references the user pages instead of copying them, which saves one
 * of the two copies on loopback.  Only v2, whose acknowledgement arrives
 * after the target has read every byte, so completion still means the pages
 * are no longer in use. */
static bool spliced(const lane *l, const te_slice *s)
{
    return l->pipe[1] >= 0 && l->peer->v2 && s->opcode == TE_OP_WRITE &&
           s->length >= TCP_SPLICE_MIN;
}

/* Moves what sits in the pipe into the socket.  0 (maybe with bytes left
 * when the socket is full) or a status. */
static int flush_pipe(lane *l)
{
    while (l->pipe_bytes > 0) {
        ssize_t n = splice(l->pipe[0], NULL, l->fd, NULL, l->pipe_bytes,
                           SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
            l->pipe_bytes -= (size_t)n;
            progress(l);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        if (n < 0 && errno == EPIPE)
            tcp_take_sigpipe();
        return TE_ERR_PEER_CLOSED;
    }
    return 0;
}

static int send_spliced(lane *l, te_slice *s)
{
    uint64_t off = l->send_off - TCP_HDR_LEN, left = s->length - off;
    struct iovec v = {(char *)s->local + off, left < TCP_PIPE_SIZE ? left : TCP_PIPE_SIZE};
    ssize_t n = vmsplice(l->pipe[1], &v, 1, SPLICE_F_NONBLOCK);
    if (n <= 0) {
        /* No vmsplice here (seccomp, old kernel): copy from now on. */
        TCP_LOG(l->peer->t, TE_LOG_INFO, "vmsplice unavailable (%s): copying", strerror(errno));
        close(l->pipe[0]);
        close(l->pipe[1]);
        l->pipe[0] = l->pipe[1] = -1;
        return 0;
    }
    l->pipe_bytes += (size_t)n;
    return advance(l, (uint64_t)n);
}

/* Sends as much of the queue as the socket takes.  0 or a status. */
int tcp_lane_send(lane *l)
{
    for (;;) {
        int rc = flush_pipe(l);
        if (rc || l->pipe_bytes > 0)
            return rc;
        te_slice *head = l->sending.head;
        if (!head)
            return 0;
        if (spliced(l, head) && l->send_off >= TCP_HDR_LEN) {
            rc = send_spliced(l, head);
            if (rc)
                return rc;
            continue;
        }
        struct iovec iov[MAX_IOV];
        int n = 0;
        uint64_t skip = l->send_off, bytes = 0;
        for (te_slice *s = head; s && n + 2 <= MAX_IOV && bytes < MAX_SEND_BYTES; s = NEXT(s)) {
            uint64_t off = skip;
            skip = 0;
            if (off < TCP_HDR_LEN) {
                iov[n++] = (struct iovec){HDR(s) + off, TCP_HDR_LEN - off};
                bytes += TCP_HDR_LEN - off;
                off = 0;
            } else {
                off -= TCP_HDR_LEN;
            }
            if (spliced(l, s))
                break; /* its payload goes through the pipe next round */
            if (s->opcode == TE_OP_WRITE) {
                iov[n++] = (struct iovec){(char *)s->local + off, s->length - off};
                bytes += s->length - off;
            }
        }
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(l->fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0
                                                                             : TE_ERR_PEER_CLOSED;
        rc = advance(l, (uint64_t)sent);
        if (rc)
            return rc;
        if ((uint64_t)sent < bytes)
            return 0; /* the socket is full: wait for POLLOUT */
    }
}
