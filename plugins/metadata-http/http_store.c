/* http_store.c - the HTTP metadata store plugin (libte_metadata_http.so),
 * speaking the original's protocol: GET|PUT|DELETE <url>?key=<escaped key>,
 * PUT bodies are the JSON value, only HTTP 200 is success, a GET 404 means
 * the key is absent.  No leases: the protocol has none. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "te/plugin.h"

#define PLUGIN_NAME "metadata_http"
#define TIMEOUT_MS 3000L
#define CONNECT_TIMEOUT_MS 1500L
#define MAX_REPLY (64u << 20)
#define MAX_KEY 4096


typedef struct http_store {
    te_host *host;
    char *url;
} http_store;

typedef struct reply_buf {
    char *data;
    size_t len, cap;
} reply_buf;

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    reply_buf *b = arg;
    size_t add = size * n;
    if (add > MAX_REPLY - b->len)
        return 0;
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + add + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, add);
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

/* "<url>?key=<escaped>" (or "&key=" when the URL already has a query). */
static char *key_url(http_store *s, CURL *h, const char *key)
{
    char *esc = curl_easy_escape(h, key, (int)strlen(key));
    if (!esc)
        return NULL;
    size_t n = strlen(s->url) + strlen(esc) + 8;
    char *u = malloc(n);
    if (u)
        snprintf(u, n, "%s%ckey=%s", s->url, strchr(s->url, '?') ? '&' : '?', esc);
    curl_free(esc);
    return u;
}

static void set_options(CURL *h, const char *url, const char *method, const char *body,
                        struct curl_slist *hdr, reply_buf *b)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    }
}

/* One request.  0 on HTTP 200 (*reply, when asked, gets the body);
 * TE_ERR_NOT_FOUND for a GET 404; TE_ERR_METADATA otherwise. */
static int exchange(http_store *s, const char *method, const char *key, const char *body,
                    char **reply)
{
    size_t klen = key ? strlen(key) : 0;
    if (klen == 0 || klen > MAX_KEY) {
        te_host_table->set_error("http store: key of %zu bytes (want 1..%d)", klen, MAX_KEY);
        return TE_ERR_INVALID_ARGUMENT;
    }
    CURL *h = curl_easy_init();
    char *url = h ? key_url(s, h, key) : NULL;
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    reply_buf b = {0};
    int rc = TE_ERR_MEMORY;
    if (url && hdr) {
        set_options(h, url, method, body, hdr, &b);
        CURLcode cc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        if (cc != CURLE_OK) {
            te_host_table->set_error("http store: %s %s: %s", method, s->url, curl_easy_strerror(cc));
            rc = TE_ERR_METADATA;
        } else if (code == 200 && b.data && strlen(b.data) != b.len) {
            te_host_table->set_error("http store: GET %s: the value holds a NUL byte", key);
            rc = TE_ERR_METADATA;
        } else if (code == 200) {
            rc = 0;
        } else {
            te_host_table->set_error("http store: %s %s (key %s): HTTP %ld %.200s", method, s->url, key,
                             code, b.data ? b.data : "");
            rc = code == 404 && !strcmp(method, "GET") ? TE_ERR_NOT_FOUND : TE_ERR_METADATA;
        }
    }
    if (!rc && reply) {
        *reply = b.data ? b.data : strdup("");
        b.data = NULL;
        rc = *reply ? 0 : TE_ERR_MEMORY;
    }
    free(b.data);
    free(url);
    curl_slist_free_all(hdr);
    if (h)
        curl_easy_cleanup(h);
    return rc;
}

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static int g_curl_rc;

static void curl_init_once(void)
{
    g_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : TE_ERR_METADATA;
}

static int http_create(te_host *host, const char *conn, void **inst)
{
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_rc) {
        te_host_table->set_error("http store: curl_global_init failed");
        return g_curl_rc;
    }
    if (!conn || (strncmp(conn, "http://", 7) && strncmp(conn, "https://", 8)) ||
        !conn[conn[4] == ':' ? 7 : 8]) {
        te_host_table->set_error("http store: '%s' is not an http:// or https:// URL",
                         conn ? conn : "(null)");
        return TE_ERR_INVALID_ARGUMENT;
    }
    http_store *s = calloc(1, sizeof *s);
    if (!s || !(s->url = strdup(conn))) {
        free(s);
        return TE_ERR_MEMORY;
    }
    s->host = host;
    *inst = s;
    return 0;
}

static void http_destroy(void *inst)
{
    http_store *s = inst;
    if (!s)
        return;
    free(s->url);
    free(s);
}

static int http_get(void *inst, const char *key, char **value)
{
    *value = NULL;
    return exchange(inst, "GET", key, NULL, value);
}

static int http_put(void *inst, const char *key, const char *value)
{
    if (!value) {
        te_host_table->set_error("http store: NULL value");
        return TE_ERR_INVALID_ARGUMENT;
    }
    return exchange(inst, "PUT", key, value, NULL);
}

static int http_remove(void *inst, const char *key)
{
    return exchange(inst, "DELETE", key, NULL, NULL);
}

static const te_metadata_ops g_ops = {
    .size = sizeof(te_metadata_ops),
    .caps = 0,
    .create = http_create,
    .destroy = http_destroy,
    .get = http_get,
    .put = http_put,
    .remove = http_remove,
    .ctrl = NULL,
};


TE_PLUGIN_DEFINE(TE_PLUGIN_METADATA, PLUGIN_NAME, "1.0", &g_ops, parse_meta_key)
