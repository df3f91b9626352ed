/* metrics_http.c - a minimal HTTP/1.x endpoint for Prometheus: GET /metrics
 * and nothing else.  One connection at a time, requests capped at 8 KiB and
 * 2 s, so a stuck or hostile client cannot hold resources for long. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"
#include "net.h"

#define MAX_REQUEST 8192
#define REQUEST_TIMEOUT_NS 2000000000LL

static void respond(int fd, const char *status, const char *type, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", status, type, len);
    int64_t deadline = te_now_ns() + REQUEST_TIMEOUT_NS;
    if (te_net_write_full(fd, head, (size_t)n, deadline) == 0 && len)
        te_net_write_full(fd, body, len, deadline);
}

/* Reads the request head; 0 with the request line in buf, or an HTTP status. */
static const char *read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    int64_t deadline = te_now_ns() + REQUEST_TIMEOUT_NS;
    while (!memmem(buf, len, "\r\n\r\n", 4) && !memmem(buf, len, "\n\n", 2)) {
        if (len + 1 >= cap)
            return "431 Request Header Fields Too Large";
        if (te_net_wait(fd, POLLIN, deadline))
            return "408 Request Timeout";
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            return "400 Bad Request";
        len += (size_t)n;
        buf[len] = '\0';
    }
    return NULL;
}

static void serve(te_engine *e, int fd)
{
    char *buf = malloc(MAX_REQUEST);
    if (!buf)
        return;
    buf[0] = '\0';
    const char *err = read_request(fd, buf, MAX_REQUEST);
    char method[16] = "", path[256] = "";
    if (!err && sscanf(buf, "%15s %255s HTTP/1.%*c", method, path) != 2)
        err = "400 Bad Request";
    if (!err && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        err = "405 Method Not Allowed";
    if (!err && strcmp(path, "/metrics") != 0 && strncmp(path, "/metrics?", 9) != 0)
        err = "404 Not Found";
    if (err) {
        te_log(TE_LOG_DEBUG, "metrics", "metrics endpoint: %s", err);
        respond(fd, err, "text/plain", err, strlen(err));
    } else {
        char *text = NULL;
        if (te_metrics_prometheus(e, &text) == 0)
            respond(fd, "200 OK", "text/plain; version=0.0.4", text,
                    strcmp(method, "HEAD") ? strlen(text) : 0);
        else
            respond(fd, "500 Internal Server Error", "text/plain", "", 0);
        free(text);
    }
    free(buf);
}

static void *http_main(void *arg)
{
    te_engine *e = arg;
    te_metrics *m = &e->metrics;
    for (;;) {
        struct pollfd p = {.fd = m->http_fd, .events = POLLIN};
        int n = poll(&p, 1, 200); /* wakes to notice a stop request */
        pthread_mutex_lock(&m->lock);
        bool stop = m->stop;
        pthread_mutex_unlock(&m->lock);
        if (stop)
            break;
        if (n <= 0)
            continue;
        int fd = accept4(m->http_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        serve(e, fd);
        close(fd);
    }
    return NULL;
}

int te_metrics_http_start(te_engine *e, const char *listen_on)
{
    te_metrics *m = &e->metrics;
    char host[256];
    uint16_t port;
    /* A bare port listens on loopback only: exposing counters is opt-in. */
    bool bare = strspn(listen_on, "0123456789") == strlen(listen_on);
    int rc;
    if (bare) {
        uint64_t p = 0;
        snprintf(host, sizeof host, "127.0.0.1");
        rc = te_parse_u64(listen_on, 1, 65535, &p);
        port = (uint16_t)p;
    } else {
        rc = te_parse_host_port(listen_on, host, sizeof host, &port, 0);
    }
    if (rc || port == 0)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "MC_TE_METRIC_LISTEN=%s: expected [host:]port",
                       listen_on);
    int fd = te_net_listen(host, port, 16, NULL);
    if (fd < 0)
        return te_fail(TE_ERR_SOCKET, "MC_TE_METRIC_LISTEN=%s: cannot listen: %s", listen_on,
                       strerror(errno));
    m->http_fd = fd;
    if (pthread_create(&m->http, NULL, http_main, e) != 0) {
        close(fd);
        m->http_fd = -1;
        return te_fail(TE_ERR_MEMORY, "cannot start the metrics endpoint");
    }
    m->http_running = true;
    te_log(TE_LOG_INFO, "metrics", "serving Prometheus metrics on http://%s:%u/metrics", host, port);
    return 0;
}

void te_metrics_http_stop(te_engine *e)
{
    te_metrics *m = &e->metrics;
    if (!m->http_running)
        return;
    pthread_mutex_lock(&m->lock);
    m->stop = true;
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->http, NULL);
    close(m->http_fd);
    m->http_fd = -1;
    m->http_running = false;
}
