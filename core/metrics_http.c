/* metrics_http.c - the process's one Prometheus endpoint (MC_TE_METRIC_LISTEN):
 * a minimal HTTP/1.x server for GET /metrics and nothing else, serving every
 * live engine that asked for it.  The first engine to register starts it, the
 * last one to leave stops it.  One connection at a time, requests capped at
 * 8 KiB and 2 s, so a stuck or hostile client cannot hold resources for long.
 * A port another process holds is a warning, never a failed initialize. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "hostport.h"
#include "log.h"
#include "net.h"

#define MAX_REQUEST 8192
#define REQUEST_TIMEOUT_NS 2000000000LL

/* life serialises start and stop and is held across the join; lock guards
 * engines[] and stop, and a scrape renders under it, so an engine that has
 * left the list is never read again.  Order: life, lock, an engine's seg_lock. */
static struct {
    pthread_mutex_t life, lock;
    te_engine **engines;
    size_t count, cap;
    bool stop;    /* under lock */
    bool running; /* under life, as are the fields below */
    bool warned_busy;
    pthread_t thread;
    int fd;
    char listen[256];
} ep = {.life = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

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

/* Reads the request head; NULL with the request line in buf, or an HTTP status. */
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

/* Renders every registered engine; the text is written after the lock is gone. */
static int render(char **text)
{
    pthread_mutex_lock(&ep.lock);
    int rc = te_metrics_prometheus(ep.engines, ep.count, text);
    pthread_mutex_unlock(&ep.lock);
    return rc;
}

static void serve(int fd)
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
        if (render(&text) == 0)
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
    int listen_fd = (int)(intptr_t)arg;
    for (;;) {
        struct pollfd p = {.fd = listen_fd, .events = POLLIN};
        int n = poll(&p, 1, 200); /* wakes to notice a stop request */
        pthread_mutex_lock(&ep.lock);
        bool stop = ep.stop;
        pthread_mutex_unlock(&ep.lock);
        if (stop)
            break;
        if (n <= 0)
            continue;
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        serve(fd);
        close(fd);
    }
    return NULL;
}

/* "[host:]port"; a bare port means loopback only: exposing counters is opt-in. */
static int parse_listen(const char *listen_on, char *host, size_t cap, uint16_t *port)
{
    int rc;
    if (strspn(listen_on, "0123456789") == strlen(listen_on)) {
        uint64_t p = 0;
        snprintf(host, cap, "127.0.0.1");
        rc = te_parse_u64(listen_on, 1, 65535, &p);
        *port = (uint16_t)p;
    } else {
        rc = te_parse_host_port(listen_on, host, cap, port, 0);
    }
    if (rc || *port == 0 || strlen(listen_on) >= sizeof ep.listen)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "MC_TE_METRIC_LISTEN=%s: expected [host:]port",
                       listen_on);
    return 0;
}

/* Under ep.life.  0 also when the port is busy (a warning, once per episode). */
static int open_endpoint(const char *listen_on, const char *host, uint16_t port)
{
    int fd = te_net_listen(host, port, 16, NULL);
    if (fd < 0 && errno == EADDRINUSE) {
        te_log(ep.warned_busy ? TE_LOG_DEBUG : TE_LOG_WARN, "metrics",
               "MC_TE_METRIC_LISTEN=%s: port in use by someone else; going on without the "
               "Prometheus endpoint", listen_on);
        ep.warned_busy = true;
        return 0;
    }
    if (fd < 0)
        return te_fail(TE_ERR_SOCKET, "MC_TE_METRIC_LISTEN=%s: cannot listen: %s", listen_on,
                       strerror(errno));
    ep.fd = fd;
    ep.stop = false; /* the thread is not running: nobody else reads it */
    if (pthread_create(&ep.thread, NULL, http_main, (void *)(intptr_t)fd) != 0) {
        close(fd);
        ep.fd = -1;
        return te_fail(TE_ERR_MEMORY, "cannot start the metrics endpoint");
    }
    ep.running = true;
    ep.warned_busy = false;
    snprintf(ep.listen, sizeof ep.listen, "%s", listen_on);
    te_log(TE_LOG_INFO, "metrics", "serving Prometheus metrics on http://%s:%u/metrics", host, port);
    return 0;
}

static int add_engine(te_engine *e)
{
    pthread_mutex_lock(&ep.lock);
    if (ep.count == ep.cap) {
        size_t cap = ep.cap ? ep.cap * 2 : 8;
        te_engine **n = realloc(ep.engines, cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&ep.lock);
            return TE_ERR_MEMORY;
        }
        ep.engines = n;
        ep.cap = cap;
    }
    ep.engines[ep.count++] = e;
    pthread_mutex_unlock(&ep.lock);
    return 0;
}

/* Takes e out of the list; true when it was the last one and the thread must go. */
static bool remove_engine(te_engine *e)
{
    pthread_mutex_lock(&ep.lock);
    for (size_t i = 0; i < ep.count; i++)
        if (ep.engines[i] == e) {
            ep.engines[i] = ep.engines[--ep.count];
            break;
        }
    bool last = ep.count == 0;
    if (last) {
        free(ep.engines);
        ep.engines = NULL;
        ep.cap = 0;
        ep.stop = true;
    }
    pthread_mutex_unlock(&ep.lock);
    return last;
}

/* fork(): the child has no endpoint thread and none of the parent's engines
 * in it; it starts empty, with locks no thread of the parent holds. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&ep.life);
    pthread_mutex_lock(&ep.lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&ep.lock);
    pthread_mutex_unlock(&ep.life);
}

static void fork_child(void)
{
    if (ep.fd >= 0)
        close(ep.fd);
    free(ep.engines);
    ep.engines = NULL;
    ep.count = ep.cap = 0;
    ep.fd = -1;
    ep.running = ep.stop = false;
    pthread_mutex_init(&ep.lock, NULL);
    pthread_mutex_init(&ep.life, NULL);
}

static void install_fork_handlers(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int te_metrics_http_start(te_engine *e, const char *listen_on)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    char host[256];
    uint16_t port;
    int rc = parse_listen(listen_on, host, sizeof host, &port);
    if (rc)
        return rc;
    pthread_once(&once, install_fork_handlers);
    pthread_mutex_lock(&ep.life);
    rc = add_engine(e);
    if (!rc && !ep.running)
        rc = open_endpoint(listen_on, host, port);
    else if (!rc && strcmp(ep.listen, listen_on) != 0)
        te_log(TE_LOG_WARN, "metrics", "MC_TE_METRIC_LISTEN=%s ignored: this process already "
               "serves every engine's metrics on %s", listen_on, ep.listen);
    if (rc)
        remove_engine(e);
    else
        e->metrics.http_registered = true;
    pthread_mutex_unlock(&ep.life);
    return rc;
}

void te_metrics_http_stop(te_engine *e)
{
    if (!e->metrics.http_registered)
        return;
    pthread_mutex_lock(&ep.life);
    if (remove_engine(e) && ep.running) {
        pthread_join(ep.thread, NULL); /* a scrape in progress finishes first */
        close(ep.fd);
        ep.fd = -1;
        ep.running = false;
    }
    e->metrics.http_registered = false;
    pthread_mutex_unlock(&ep.life);
}
