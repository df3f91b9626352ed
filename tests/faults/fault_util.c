/* fault_util.c - time scale and fake misbehaving peers (see fault_util.h). */
#include "fault_util.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

double fault_scale(void)
{
    const char *v = getenv("TE_TEST_TIME_SCALE");
    double s = v ? atof(v) : 1.0;
    return s >= 1.0 ? s : 1.0;
}

int fault_secs(double s)
{
    double v = s * fault_scale();
    return v < 1 ? 1 : (int)(v + 0.5);
}

void fault_setenv_secs(const char *name, double s)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%d", fault_secs(s));
    setenv(name, buf, 1);
}

double fault_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- sockets ------------------------------------------------------------ */

static int listen_local(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 128) ||
        getsockname(fd, (struct sockaddr *)&a, &alen)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Waits for fd or the stop pipe; 1 when fd is ready, 0 on stop or error. */
static int wait_in(fake_peer *f, int fd, short events)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = f->wake[0], .events = POLLIN}};
        int n = poll(p, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || p[1].revents || atomic_load(&f->stop))
            return 0;
        return 1;
    }
}

/* Reads exactly len bytes (buf NULL: discard); 0, or -1 on close/stop. */
static int read_n(fake_peer *f, int fd, void *buf, uint64_t len)
{
    char sink[65536];
    while (len > 0) {
        if (!wait_in(f, fd, POLLIN))
            return -1;
        size_t want = len < sizeof sink ? (size_t)len : sizeof sink;
        ssize_t n = recv(fd, buf ? buf : sink, want, 0);
        if (n <= 0)
            return -1;
        atomic_fetch_add(&f->bytes_in, (int)n);
        if (buf)
            buf = (char *)buf + n;
        len -= (uint64_t)n;
    }
    return 0;
}

static int write_n(int fd, const void *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        buf = (const char *)buf + n;
        len -= (size_t)n;
    }
    return 0;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void hold(fake_peer *f, int fd)
{
    wait_in(f, fd, 0); /* only the stop pipe (or an error) ends it */
}

/* ---- the RPC port --------------------------------------------------------- */

static void serve_rpc(fake_peer *f, int fd)
{
    atomic_fetch_add(&f->rpc_conns, 1);
    if (f->rpc_mode == FAKE_RPC_SILENT) {
        hold(f, fd);
        return;
    }
    uint8_t hdr[9];
    if (read_n(f, fd, hdr, 9))
        return;
    uint64_t len = le64(hdr);
    if (len == 0 || len > (1u << 20) || read_n(f, fd, NULL, len - 1))
        return;
    if (f->rpc_mode == FAKE_RPC_SHORT) {
        put_le64(hdr, 1001);
        write_n(fd, hdr, 9);
        write_n(fd, "{\"name\":\"x", 10);
        return; /* the caller closes: fewer bytes than claimed, then EOF */
    }
    char body[1024];
    int n = hdr[8] == 1
                ? snprintf(body, sizeof body,
                           "{\"name\":\"%s\",\"protocol\":\"tcp\",\"tcp_data_port\":%u,"
                           "\"tcp_proto_version\":2,\"buffers\":[{\"name\":\"%s\",\"addr\":%llu,"
                           "\"length\":%llu}]}",
                           f->name, f->data_port, f->name, (unsigned long long)f->buf_addr,
                           (unsigned long long)f->buf_len)
                : snprintf(body, sizeof body, "{\"name\":\"\",\"notify_msg\":\"success\"}");
    put_le64(hdr, (uint64_t)n + 1);
    if (write_n(fd, hdr, 9) == 0 && write_n(fd, body, (size_t)n) == 0) {
        shutdown(fd, SHUT_WR);
        read_n(f, fd, NULL, UINT64_MAX); /* until the client closes */
    }
}

/* ---- the data port --------------------------------------------------------- */

static void serve_data(fake_peer *f, int fd)
{
    atomic_fetch_add(&f->data_conns, 1);
    if (f->data_mode == FAKE_DATA_NO_READ) {
        hold(f, fd);
        return;
    }
    for (;;) {
        uint8_t h[24];
        if (read_n(f, fd, h, 24))
            return;
        uint64_t size = le64(h);
        int write = (h[16] & 0x7f) == 1;
        if (size > (1ull << 32))
            return;
        switch (f->data_mode) {
        case FAKE_DATA_SILENT:
            if (write && read_n(f, fd, NULL, size))
                return;
            break;
        case FAKE_DATA_RESET_PAYLOAD: {
            if (write && read_n(f, fd, NULL, size / 2))
                return;
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            return; /* close() now sends a reset */
        }
        case FAKE_DATA_SHORT_READ: {
            uint8_t st[8];
            put_le64(st, 0x4D43545600000000ull);
            if (write) {
                if (read_n(f, fd, NULL, size) || write_n(fd, st, 8))
                    return;
                break;
            }
            write_n(fd, st, 8);
            char *half = calloc(1, (size_t)(size / 2) + 1);
            memset(half, 0x5a, (size_t)(size / 2));
            write_n(fd, half, (size_t)(size / 2));
            free(half);
            return; /* claims `size` bytes, sent half, closes */
        }
        case FAKE_DATA_SHORT_STATUS: {
            if (write && read_n(f, fd, NULL, size))
                return;
            uint8_t st[8];
            put_le64(st, 0x4D43545600000000ull);
            write_n(fd, st, 4);
            return;
        }
        }
    }
}

/* ---- threads ---------------------------------------------------------------- */

typedef struct conn_arg {
    fake_peer *f;
    int fd;
    int rpc;
} conn_arg;

static void *conn_main(void *p)
{
    conn_arg *a = p;
    if (a->rpc)
        serve_rpc(a->f, a->fd);
    else
        serve_data(a->f, a->fd);
    /* The fd is closed by fake_peer_stop, so a reset (SO_LINGER 0) or a
     * FIN goes out now only where the mode wants one. */
    if (!(a->rpc ? a->f->rpc_mode == FAKE_RPC_SILENT
                 : a->f->data_mode == FAKE_DATA_NO_READ || a->f->data_mode == FAKE_DATA_SILENT))
        shutdown(a->fd, SHUT_RDWR);
    if (!a->rpc && a->f->data_mode == FAKE_DATA_RESET_PAYLOAD) {
        /* close() with SO_LINGER 0 is what sends the RST: do it now. */
        pthread_mutex_lock(&a->f->lock);
        for (int i = 0; i < a->f->nconns; i++)
            if (a->f->conn_fd[i] == a->fd)
                a->f->conn_fd[i] = -1;
        pthread_mutex_unlock(&a->f->lock);
        close(a->fd);
    }
    free(a);
    return NULL;
}

static void accept_loop(fake_peer *f, int lfd, int rpc)
{
    while (wait_in(f, lfd, POLLIN)) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        conn_arg *a = malloc(sizeof *a);
        *a = (conn_arg){f, fd, rpc};
        pthread_mutex_lock(&f->lock);
        if (f->nconns == FAKE_MAX_CONNS ||
            pthread_create(&f->conn_thread[f->nconns], NULL, conn_main, a) != 0) {
            pthread_mutex_unlock(&f->lock);
            close(fd);
            free(a);
            continue;
        }
        f->conn_fd[f->nconns++] = fd;
        pthread_mutex_unlock(&f->lock);
    }
}

static void *rpc_main(void *p)
{
    fake_peer *f = p;
    accept_loop(f, f->rpc_fd, 1);
    return NULL;
}

static void *data_main(void *p)
{
    fake_peer *f = p;
    accept_loop(f, f->data_fd, 0);
    return NULL;
}

int fake_peer_start(fake_peer *f, int rpc_mode, int data_mode)
{
    memset(f, 0, sizeof *f);
    f->rpc_mode = rpc_mode;
    f->data_mode = data_mode;
    f->buf_addr = 1ull << 40;
    f->buf_len = 256ull << 20;
    pthread_mutex_init(&f->lock, NULL);
    if (pipe2(f->wake, O_CLOEXEC))
        return -1;
    f->rpc_fd = listen_local(&f->rpc_port);
    f->data_fd = listen_local(&f->data_port);
    if (f->rpc_fd < 0 || f->data_fd < 0)
        return -1;
    snprintf(f->name, sizeof f->name, "127.0.0.1:%u", f->rpc_port);
    if (pthread_create(&f->rpc_thread, NULL, rpc_main, f))
        return -1;
    if (pthread_create(&f->data_thread, NULL, data_main, f))
        return -1;
    return 0;
}

void fake_peer_stop(fake_peer *f)
{
    atomic_store(&f->stop, true);
    ssize_t w = write(f->wake[1], "x", 1);
    (void)w;
    pthread_join(f->rpc_thread, NULL);
    pthread_join(f->data_thread, NULL);
    pthread_mutex_lock(&f->lock);
    int n = f->nconns;
    for (int i = 0; i < n; i++)
        if (f->conn_fd[i] >= 0)
            shutdown(f->conn_fd[i], SHUT_RDWR);
    pthread_mutex_unlock(&f->lock);
    for (int i = 0; i < n; i++)
        pthread_join(f->conn_thread[i], NULL);
    for (int i = 0; i < n; i++)
        if (f->conn_fd[i] >= 0)
            close(f->conn_fd[i]);
    close(f->rpc_fd);
    close(f->data_fd);
    close(f->wake[0]);
    close(f->wake[1]);
    pthread_mutex_destroy(&f->lock);
}
