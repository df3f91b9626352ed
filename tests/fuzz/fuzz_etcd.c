/* fuzz_etcd.c - the etcd store's parsers (plugins/metadata-etcd linked in):
 * endpoint lists, base64, and every gateway reply, served by a fake gateway
 * with fuzz bytes as the body; byte 0 picks the call, byte 1 the HTTP status. */
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "etcd_base64.h"
#include "etcd_client.h"
#include "fuzz_util.h"
#include "te/te.h"

static te_engine *g_engine;
static etcd_client g_client;
static int g_listen = -1;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static const uint8_t *g_body;
static size_t g_body_len;
static int g_status = 200;

/* Reads one HTTP request (headers, then Content-Length bytes) and answers. */
static void serve_one(int fd)
{
    char req[16384];
    size_t have = 0, need = 0;
    for (;;) {
        if (fuzz_poll1(fd, POLLIN, 3000) != 1)
            break;
        ssize_t n = recv(fd, req + have, sizeof req - 1 - have, 0);
        if (n <= 0)
            break;
        have += (size_t)n;
        req[have] = '\0';
        char *end = strstr(req, "\r\n\r\n");
        if (end && !need) {
            char *cl = strcasestr(req, "Content-Length:");
            need = (size_t)(end + 4 - req) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
        }
        if ((need && have >= need) || have == sizeof req - 1)
            break;
    }
    pthread_mutex_lock(&g_lock);
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      g_status, g_body_len);
    send(fd, head, (size_t)hn, MSG_NOSIGNAL);
    for (size_t off = 0; g_body && off < g_body_len;) {
        ssize_t n = send(fd, g_body + off, g_body_len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    pthread_mutex_unlock(&g_lock);
    close(fd);
}

static void *server_main(void *arg)
{
    for (;;) {
        int fd = accept4(g_listen, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            serve_one(fd);
    }
    return NULL;
}

static void setup(void)
{
    fuzz_setup_env();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    g_engine = te_engine_create();
    if (!g_engine)
        abort();
    char conn[64];
    snprintf(conn, sizeof conn, "127.0.0.1:%u", fuzz_listen(&g_listen));
    if (etcd_client_init(&g_client, &te_host_api_table, &g_engine->host, conn))
        abort();
    fuzz_thread(server_main);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setup();
    return 0;
}

static void endpoints(const char *conn)
{
    etcd_client c;
    int rc = etcd_client_init(&c, &te_host_api_table, &g_engine->host, conn);
    if (rc) {
        FUZZ_ASSERT(rc == TE_ERR_INVALID_ARGUMENT || rc == TE_ERR_MEMORY, "status %d", rc);
        return;
    }
    FUZZ_ASSERT(c.count >= 1 && c.count <= ETCD_MAX_ENDPOINTS, "%zu endpoints", c.count);
    for (size_t i = 0; i < c.count; i++)
        FUZZ_ASSERT(!strncmp(c.urls[i], "http://", 7) || !strncmp(c.urls[i], "https://", 8),
                    "url '%s'", c.urls[i]);
    etcd_client_fini(&c);
}

static void base64(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size), *out = NULL;
    size_t len = 0;
    if (etcd_b64_decode(text, &out, &len) == 0) {
        FUZZ_ASSERT(out[len] == '\0', "decoded value not terminated");
        char *again = etcd_b64_encode(out, len);
        FUZZ_ASSERT(again && !strcmp(again, text), "'%s' decodes, re-encodes as '%s'", text,
                    again ? again : "(null)");
        free(again);
        free(out);
    }
    /* Any bytes encode to something the decoder takes back unchanged. */
    char *enc = etcd_b64_encode(data, size);
    FUZZ_ASSERT(enc, "encode");
    FUZZ_ASSERT(etcd_b64_decode(enc, &out, &len) == 0 && len == size &&
                    (size == 0 || !memcmp(out, data, size)),
                "round trip of %zu bytes", size);
    free(out);
    free(enc);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_engine)
        setup();
    if (size < 2)
        return 0;
    static const int statuses[] = {200, 400, 404, 500};
    int op = data[0] % 8;
    if (op == 0) {
        char *conn = fuzz_strndup(data + 2, size - 2);
        endpoints(conn);
        free(conn);
        return 0;
    }
    if (op == 1) {
        base64(data + 2, size - 2);
        return 0;
    }
    pthread_mutex_lock(&g_lock);
    g_body = data + 2;
    g_body_len = size - 2;
    g_status = statuses[data[1] % 4];
    pthread_mutex_unlock(&g_lock);
    int rc;
    char *value = NULL;
    int64_t id = 0, ttl = 0;
    switch (op) {
    case 2:
    case 3: /* "k" is "aw==" on the wire */
        rc = etcd_kv_get(&g_client, "k", &value);
        if (rc == 0)
            FUZZ_ASSERT(value && strlen(value) < size, "value longer than the reply");
        free(value);
        break;
    case 4:
        rc = etcd_lease_grant(&g_client, 10, &id, &ttl, NULL);
        if (rc == 0)
            FUZZ_ASSERT(id != 0 && ttl > 0, "lease %lld ttl %lld", (long long)id, (long long)ttl);
        break;
    case 5:
        rc = etcd_lease_keepalive(&g_client, 7, NULL);
        break;
    case 6:
        rc = etcd_kv_put(&g_client, "k", "v", data[1] & 0x80 ? 7 : 0, NULL);
        break;
    default:
        rc = data[1] & 1 ? etcd_kv_delete(&g_client, "k") : etcd_lease_revoke(&g_client, 7);
        break;
    }
    FUZZ_ASSERT(rc <= ETCD_REFUSED, "status %d", rc);
    pthread_mutex_lock(&g_lock);
    g_body = NULL;
    g_body_len = 0;
    pthread_mutex_unlock(&g_lock);
    return 0;
}
