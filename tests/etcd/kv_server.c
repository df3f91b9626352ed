/* kv_server.c - one HTTP/1.1 request per connection ("Connection: close"),
 * served one at a time by a thread; Content-Length bodies only, which is
 * what libcurl sends for PUT/POST with a known size. */
#include "kv_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REQUEST (16u << 20)

/* ---- store ----------------------------------------------------------------- */

static kv_entry *find(kv_server *s, const char *key)
{
    for (size_t i = 0; i < s->count; i++)
        if (!strcmp(s->entries[i].key, key))
            return &s->entries[i];
    return NULL;
}

static void set_locked(kv_server *s, const char *key, const char *value)
{
    kv_entry *e = find(s, key);
    if (!e && s->count < KV_MAX_ENTRIES) {
        e = &s->entries[s->count++];
        e->key = strdup(key);
        e->value = NULL;
    }
    if (e) {
        free(e->value);
        e->value = strdup(value);
    }
}

void kv_server_set(kv_server *s, const char *key, const char *value)
{
    pthread_mutex_lock(&s->lock);
    set_locked(s, key, value);
    pthread_mutex_unlock(&s->lock);
}

char *kv_server_value(kv_server *s, const char *key)
{
    pthread_mutex_lock(&s->lock);
    kv_entry *e = find(s, key);
    char *v = e ? strdup(e->value) : NULL;
    pthread_mutex_unlock(&s->lock);
    return v;
}

void kv_server_fail_puts(kv_server *s, int status)
{
    pthread_mutex_lock(&s->lock);
    s->put_status = status;
    pthread_mutex_unlock(&s->lock);
}

void kv_server_can(kv_server *s, const char *path, int status, const char *body)
{
    pthread_mutex_lock(&s->lock);
    if (s->canned_count < KV_MAX_CANNED) {
        kv_canned *c = &s->canned[s->canned_count++];
        snprintf(c->path, sizeof c->path, "%s", path);
        c->status = status;
        c->body = strdup(body);
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- HTTP ------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes %XX (and '+') in place. */
static void url_decode(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
            *o++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
        } else {
            *o++ = *s == '+' ? ' ' : *s;
        }
    }
    *o = '\0';
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void respond(int fd, int status, const char *body)
{
    char head[256];
    size_t n = body ? strlen(body) : 0;
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, n);
    send_all(fd, head, (size_t)h);
    send_all(fd, body ? body : "", n);
}

/* Reads the head (up to the blank line) and then Content-Length bytes. */
static char *read_request(int fd, char **body, size_t *body_len)
{
    size_t cap = 65536, len = 0, head = 0, need = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        if (len == cap) {
            if (cap >= MAX_REQUEST)
                break;
            char *n = realloc(buf, cap * 2 + 1);
            if (!n)
                break;
            buf = n;
            cap *= 2;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            break;
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        char *end = head ? NULL : strstr(buf, "\r\n\r\n");
        if (end) {
            head = (size_t)(end - buf) + 4;
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            need = head + (cl && cl < end ? strtoull(cl + 17, NULL, 10) : 0);
            if (strcasestr(buf, "\r\nExpect: 100-continue"))
                send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
        if (head && len >= need) {
            *body = buf + head;
            *body_len = len - head;
            return buf;
        }
    }
    free(buf);
    return NULL;
}

static void handle_kv(kv_server *s, int fd, const char *method, char *query, const char *body)
{
    char *key = query ? strstr(query, "key=") : NULL;
    if (!key) {
        respond(fd, 400, "missing key");
        return;
    }
    key += 4;
    char *amp = strchr(key, '&');
    if (amp)
        *amp = '\0';
    url_decode(key);
    pthread_mutex_lock(&s->lock);
    kv_entry *e = find(s, key);
    if (!strcmp(method, "GET")) {
        if (e)
            respond(fd, 200, e->value);
        else
            respond(fd, 404, "metadata not found");
    } else if (!strcmp(method, "PUT")) {
        if (s->put_status) {
            respond(fd, s->put_status, "put refused");
        } else {
            set_locked(s, key, body);
            respond(fd, 200, "metadata updated");
        }
    } else if (!strcmp(method, "DELETE")) {
        if (e) {
            free(e->key);
            free(e->value);
            *e = s->entries[--s->count];
        }
        respond(fd, e ? 200 : 404, e ? "metadata deleted" : "metadata not found");
    } else {
        respond(fd, 405, "bad method");
    }
    pthread_mutex_unlock(&s->lock);
}

static bool serve_canned(kv_server *s, int fd, const char *path)
{
    pthread_mutex_lock(&s->lock);
    kv_canned *hit = NULL;
    for (size_t i = 0; i < s->canned_count; i++)
        if (!strcmp(s->canned[i].path, path))
            hit = &s->canned[i];
    if (hit)
        respond(fd, hit->status, hit->body);
    pthread_mutex_unlock(&s->lock);
    return hit != NULL;
}

static void serve_one(kv_server *s, int fd)
{
    char *body = NULL;
    size_t body_len = 0;
    char *req = read_request(fd, &body, &body_len);
    if (!req)
        return;
    char method[16], target[8192];
    if (sscanf(req, "%15s %8191s", method, target) == 2) {
        body[body_len] = '\0';
        char *query = strchr(target, '?');
        if (query)
            *query++ = '\0';
        if (!serve_canned(s, fd, target))
            handle_kv(s, fd, method, query, body);
    }
    atomic_fetch_add(&s->requests, 1);
    free(req);
}

static void *server_main(void *arg)
{
    kv_server *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN},
                              {.fd = s->stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        serve_one(s, fd);
        close(fd);
    }
    return NULL;
}

int kv_server_start(kv_server *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&a, sizeof a) ||
        listen(s->listen_fd, 64) || getsockname(s->listen_fd, (struct sockaddr *)&a, &len) ||
        pipe(s->stop_pipe))
        return -1;
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->thread, NULL, server_main, s) ? -1 : 0;
}

void kv_server_stop(kv_server *s)
{
    if (write(s->stop_pipe[1], "x", 1) == 1)
        pthread_join(s->thread, NULL);
    close(s->listen_fd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    for (size_t i = 0; i < s->count; i++) {
        free(s->entries[i].key);
        free(s->entries[i].value);
    }
    for (size_t i = 0; i < s->canned_count; i++)
        free(s->canned[i].body);
    s->count = s->canned_count = 0;
    pthread_mutex_destroy(&s->lock);
}
