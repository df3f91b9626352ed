/* fuzz_util.c - helpers shared by the fuzz targets (see fuzz_util.h). */
#include "fuzz_util.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "\n%s:%d: property broken: %s\n  ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    __builtin_trap();
}

void fuzz_setup_env(void)
{
    const char *lvl = getenv("FUZZ_LOG_LEVEL");
    setenv("MC_LOG_LEVEL", lvl && *lvl ? lvl : "ERROR", 1);
    te_log_init(); /* engines do this at create; most targets make none */
#ifdef TE_FUZZ_PLUGIN_DIR
    setenv("MC_PLUGIN_PATH", TE_FUZZ_PLUGIN_DIR, 0);
#endif
}

char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int fuzz_poll1(int fd, short events, int ms)
{
    int64_t deadline = now_ms() + ms;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int64_t left = deadline - now_ms();
        int n = poll(&p, 1, left > 0 ? (int)left : 0);
        if (n < 0 && errno == EINTR)
            continue;
        return n;
    }
}

int fuzz_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1, err = 0;
    socklen_t len = sizeof err;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 &&
        (errno != EINPROGRESS || fuzz_poll1(fd, POLLOUT, 5000) != 1 ||
         getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err)) {
        fprintf(stderr, "fuzz: connect to 127.0.0.1:%u: %s\n", port, strerror(err ? err : errno));
        close(fd);
        return -1;
    }
    /* Blocking from here on (fuzz_exchange uses MSG_DONTWAIT and poll). */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

size_t fuzz_exchange(int fd, const uint8_t *data, size_t size, int limit_ms, uint8_t *sink,
                     size_t sink_len)
{
    int64_t deadline = now_ms() + limit_ms;
    size_t sent = 0, got = 0;
    int wr_open = 1;
    char buf[65536];
    for (;;) {
        if (wr_open && sent == size) {
            shutdown(fd, SHUT_WR);
            wr_open = 0;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN | (wr_open ? POLLOUT : 0)};
        int64_t left = deadline - now_ms();
        if (left <= 0)
            fuzz_fail(__FILE__, __LINE__, "target closes in time",
                      "no close from the target after %d ms (%zu of %zu bytes sent, %zu received)",
                      limit_ms, sent, size, got);
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                break; /* closed or reset: the target is done with us */
            if (r > 0) {
                if (sink && got < sink_len)
                    memcpy(sink + got, buf, (size_t)r < sink_len - got ? (size_t)r : sink_len - got);
                got += (size_t)r;
            }
        }
        if (wr_open && (p.revents & POLLOUT)) {
            ssize_t w = send(fd, data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                wr_open = 0; /* the target closed its side early: read what is left */
        }
    }
    return got;
}

void fuzz_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

void fuzz_wait_until(int (*cond)(void *arg), void *arg, int limit_ms, const char *what)
{
    int64_t deadline = now_ms() + limit_ms;
    while (!cond(arg)) {
        if (now_ms() > deadline)
            fuzz_fail(__FILE__, __LINE__, "bounded wait", "%s: not done after %d ms", what,
                      limit_ms);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

uint16_t fuzz_listen(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (*fd < 0 || bind(*fd, (struct sockaddr *)&a, sizeof a) || listen(*fd, 16) ||
        getsockname(*fd, (struct sockaddr *)&a, &alen))
        abort();
    return ntohs(a.sin_port);
}

void fuzz_thread(void *(*fn)(void *))
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, NULL))
        abort();
    pthread_detach(t);
}

void *fuzz_transport(te_plugin_init_fn init, const te_host_api *api, te_host *host)
{
    const te_plugin_desc *desc;
    if (init(api, &desc))
        abort();
    const te_transport_ops *ops = desc->ops;
    te_transport_params params = {.size = sizeof params, .segment_name = "fuzz", .device_filter = ""};
    void *inst;
    if (ops->create(host, &params, &inst))
        abort();
    return inst;
}
