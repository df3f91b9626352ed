/* http_store.c - the HTTP metadata store plugin (libte_metadata_http.so),
 * speaking the original's protocol: GET|PUT|DELETE <url>?key=<escaped key>,
 * PUT bodies are the JSON value, only HTTP 200 is success, a GET 404 means
 * the key is absent.  No leases: the protocol has none. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_body.h"
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
                        struct curl_slist *hdr, http_body *b)
{
    http_body_options(h, url, CONNECT_TIMEOUT_MS, TIMEOUT_MS, b);
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        http_body_post(h, body, hdr);
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
    http_body b = {.max = MAX_REPLY};
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

static int http_create(te_host *host, const char *conn, void **inst)
{
    int rc = http_curl_global_init();
    if (rc) {
        te_host_table->set_error("http store: curl_global_init failed");
        return rc;
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
