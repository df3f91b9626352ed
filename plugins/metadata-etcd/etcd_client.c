/* etcd_client.c - POSTs JSON to etcd's v3 gateway (/v3/kv/..., /v3/lease/...)
 * with connect and total timeouts, moving to the next endpoint when one does
 * not answer, and validates every reply before use (JSON types, base64). */
#include "etcd_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_base64.h"
#include "http_body.h"

#define LOG(c, lvl, ...) (c)->api->log((c)->host, lvl, "metadata_etcd", __VA_ARGS__)

/* ---- endpoints ------------------------------------------------------------- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '/'))
        *--end = '\0';
    return s;
}

static int add_endpoint(etcd_client *c, char *item)
{
    const char *scheme = "http";
    if (!strncmp(item, "http://", 7)) {
        item += 7;
    } else if (!strncmp(item, "https://", 8)) {
        scheme = "https";
        item += 8;
    }
    char host[256], url[320];
    uint16_t port;
    if (c->api->parse_host_port(item, host, sizeof host, &port, 2379) || !host[0] || !port) {
        c->api->set_error("etcd endpoint '%s' is not host[:port]", item);
        return TE_ERR_INVALID_ARGUMENT;
    }
    if (c->count == ETCD_MAX_ENDPOINTS) {
        c->api->set_error("more than %d etcd endpoints", ETCD_MAX_ENDPOINTS);
        return TE_ERR_INVALID_ARGUMENT;
    }
    int v6 = strchr(host, ':') != NULL;
    snprintf(url, sizeof url, "%s://%s%s%s:%u", scheme, v6 ? "[" : "", host, v6 ? "]" : "",
             port);
    c->urls[c->count] = strdup(url);
    if (!c->urls[c->count])
        return TE_ERR_MEMORY;
    c->count++;
    return 0;
}

int etcd_client_init(etcd_client *c, const te_host_api *api, te_host *host, const char *conn)
{
    memset(c, 0, sizeof *c);
    c->api = api;
    c->host = host;
    atomic_init(&c->good, 0);
    pthread_mutex_init(&c->pool_lock, NULL);
    char *copy = strdup(conn ? conn : "");
    if (!copy)
        return TE_ERR_MEMORY;
    int rc = 0;
    char *save = NULL;
    for (char *t = strtok_r(copy, ",;", &save); t && !rc; t = strtok_r(NULL, ",;", &save)) {
        char *item = trim(t);
        if (*item)
            rc = add_endpoint(c, item);
    }
    free(copy);
    if (!rc && c->count == 0) {
        api->set_error("etcd connection string '%s' names no endpoint (want host:port[,host:port])",
                       conn ? conn : "");
        rc = TE_ERR_INVALID_ARGUMENT;
    }
    if (rc)
        etcd_client_fini(c);
    return rc;
}

void etcd_client_fini(etcd_client *c)
{
    for (size_t i = 0; i < c->count; i++)
        free(c->urls[i]);
    for (size_t i = 0; i < c->pooled; i++)
        curl_easy_cleanup(c->pool[i]);
    c->count = c->pooled = 0;
    pthread_mutex_destroy(&c->pool_lock);
}

/* ---- one HTTP exchange ------------------------------------------------------ */

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    const atomic_bool *cancel = arg;
    return cancel && atomic_load(cancel);
}

static CURL *take_handle(etcd_client *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->pool_lock);
    if (c->pooled)
        h = c->pool[--c->pooled];
    pthread_mutex_unlock(&c->pool_lock);
    return h ? h : curl_easy_init();
}

static void give_handle(etcd_client *c, CURL *h)
{
    pthread_mutex_lock(&c->pool_lock);
    if (c->pooled < ETCD_POOL) {
        c->pool[c->pooled++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->pool_lock);
    if (h)
        curl_easy_cleanup(h);
}

static void set_options(CURL *h, const char *url, const char *body, struct curl_slist *hdr,
                        http_body *b, const atomic_bool *cancel)
{
    http_body_options(h, url, ETCD_CONNECT_TIMEOUT_MS, ETCD_TOTAL_TIMEOUT_MS, b);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    http_body_post(h, body, hdr);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)cancel);
    curl_easy_setopt(h, CURLOPT_PROXY, ""); /* etcd is reached directly, never via a proxy */
}

/* POSTs body to one URL.  0 when the endpoint answered below HTTP 500 with a
 * JSON object (*http and *reply set); -1 otherwise, with the reason in why. */
static int post_one(etcd_client *c, const char *url, const char *body,
                    const atomic_bool *cancel, long *http, json_t **reply, char *why,
                    size_t why_len)
{
    CURL *h = take_handle(c);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *hdr2 = hdr ? curl_slist_append(hdr, "Expect:") : NULL;
    if (!h || !hdr2) {
        snprintf(why, why_len, "out of memory");
        curl_slist_free_all(hdr);
        if (h)
            curl_easy_cleanup(h);
        return -1;
    }
    http_body b = {.max = ETCD_MAX_REPLY}; /* too big: curl fails the transfer */
    set_options(h, url, body, hdr2, &b, cancel);
    CURLcode cc = curl_easy_perform(h);
    *http = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, http);
    curl_slist_free_all(hdr2);
    give_handle(c, h);
    int rc = -1;
    json_error_t jerr;
    if (cc != CURLE_OK) {
        snprintf(why, why_len, "%.300s: %s", url,
                 cc == CURLE_WRITE_ERROR ? "reply too large" : curl_easy_strerror(cc));
    } else if (*http >= 500) {
        snprintf(why, why_len, "%.300s: HTTP %ld %.200s", url, *http, b.data ? b.data : "");
    } else if (!b.data || !(*reply = json_loadb(b.data, b.len, JSON_DISABLE_EOF_CHECK, &jerr))) {
        snprintf(why, why_len, "%.300s: HTTP %ld with a reply that is not JSON", url, *http);
    } else if (!json_is_object(*reply)) {
        snprintf(why, why_len, "%.300s: reply is not a JSON object", url);
        json_decref(*reply);
        *reply = NULL;
    } else {
        rc = 0;
    }
    free(b.data);
    return rc;
}

/* POSTs body to path on the endpoints in turn, starting with the one that
 * answered last.  0 with *reply and *http once one answered. */
static int call(etcd_client *c, const char *path, json_t *body, const atomic_bool *cancel,
                json_t **reply, long *http)
{
    char *text = json_dumps(body, JSON_COMPACT);
    if (!text)
        return TE_ERR_MEMORY;
    char why[512] = "no endpoint", url[512];
    size_t first = atomic_load(&c->good);
    int rc = TE_ERR_METADATA;
    for (size_t k = 0; k < c->count && !(cancel && atomic_load(cancel)); k++) {
        size_t i = (first + k) % c->count;
        snprintf(url, sizeof url, "%s%s", c->urls[i], path);
        if (post_one(c, url, text, cancel, http, reply, why, sizeof why) == 0) {
            if (i != first)
                LOG(c, TE_LOG_INFO, "etcd endpoint %s answers; using it from now on", c->urls[i]);
            atomic_store(&c->good, i);
            rc = 0;
            break;
        }
        LOG(c, TE_LOG_DEBUG, "etcd request failed: %s", why);
    }
    free(text);
    if (rc)
        c->api->set_error("etcd: no endpoint answered %s (last: %s)", path, why);
    return rc;
}

/* ---- reply checks ---------------------------------------------------------- */

static const char *error_text(json_t *reply)
{
    json_t *e = json_object_get(reply, "error");
    if (json_is_object(e)) /* streamed replies nest the error */
        e = json_object_get(e, "message");
    if (!json_is_string(e))
        e = json_object_get(reply, "message");
    return json_is_string(e) ? json_string_value(e) : "(no message)";
}

/* Maps an answered request to a status: 0 for HTTP 200, ETCD_LEASE_LOST when
 * etcd says the lease is gone, else ETCD_REFUSED with etcd's message. */
static int check_reply(etcd_client *c, const char *what, long http, json_t *reply)
{
    if (http == 200 && !json_object_get(reply, "error"))
        return 0;
    const char *msg = error_text(reply);
    if (strstr(msg, "lease not found"))
        return ETCD_LEASE_LOST;
    c->api->set_error("etcd %s refused: HTTP %ld: %s", what, http, msg);
    return ETCD_REFUSED;
}

/* The public status of a call that neither puts nor names a lease. */
static int plain(int rc)
{
    return rc == ETCD_LEASE_LOST || rc == ETCD_REFUSED ? TE_ERR_METADATA : rc;
}

/* Calls path and checks the reply; *reply is kept only on success. */
static int request(etcd_client *c, const char *path, json_t *body, const atomic_bool *cancel,
                   json_t **reply)
{
    long http = 0;
    json_t *r = NULL;
    int rc = body ? call(c, path, body, cancel, &r, &http) : TE_ERR_MEMORY;
    json_decref(body);
    if (rc)
        return rc;
    rc = check_reply(c, path, http, r);
    if (rc || !reply)
        json_decref(r);
    else
        *reply = r;
    return rc;
}

/* proto3 JSON writes int64 as a string; accept a number too. */
static int get_i64(json_t *o, const char *name, int64_t *out)
{
    json_t *v = json_object_get(o, name);
    if (!v) {
        *out = 0; /* proto3 omits zero values */
        return 0;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = x;
    return 0;
}

static json_t *lease_json(int64_t id)
{
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)id);
    return json_string(s);
}

static int check_key(etcd_client *c, const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > ETCD_MAX_KEY) {
        c->api->set_error("etcd: key of %zu bytes (want 1..%d)", n, ETCD_MAX_KEY);
        return TE_ERR_INVALID_ARGUMENT;
    }
    return 0;
}

/* ---- KV -------------------------------------------------------------------- */

/* Validates the first entry of a range reply and decodes its value. */
static int decode_kv(etcd_client *c, json_t *reply, const char *b64key, char **value)
{
    json_t *kvs = json_object_get(reply, "kvs");
    if (!kvs || (json_is_array(kvs) && json_array_size(kvs) == 0)) {
        c->api->set_error("etcd: key not found");
        return TE_ERR_NOT_FOUND;
    }
    json_t *kv = json_array_get(kvs, 0);
    json_t *k = json_object_get(kv, "key"), *v = json_object_get(kv, "value");
    if (!json_is_array(kvs) || !json_is_object(kv) || !json_is_string(k) ||
        strcmp(json_string_value(k), b64key) != 0 || (v && !json_is_string(v))) {
        c->api->set_error("etcd: malformed range reply");
        return TE_ERR_METADATA;
    }
    size_t len;
    if (etcd_b64_decode(v ? json_string_value(v) : "", value, &len)) {
        c->api->set_error("etcd: value is not valid base64");
        return TE_ERR_METADATA;
    }
    if (strlen(*value) != len) {
        free(*value);
        *value = NULL;
        c->api->set_error("etcd: value holds a NUL byte");
        return TE_ERR_METADATA;
    }
    return 0;
}

int etcd_kv_get(etcd_client *c, const char *key, char **value)
{
    *value = NULL;
    int rc = check_key(c, key);
    if (rc)
        return rc;
    char *k = etcd_b64_encode(key, strlen(key));
    if (!k)
        return TE_ERR_MEMORY;
    json_t *reply = NULL;
    rc = plain(request(c, "/v3/kv/range", json_pack("{s:s}", "key", k), NULL, &reply));
    if (!rc)
        rc = decode_kv(c, reply, k, value);
    json_decref(reply);
    free(k);
    return rc;
}

int etcd_kv_put(etcd_client *c, const char *key, const char *value, int64_t lease,
                const atomic_bool *cancel)
{
    int rc = check_key(c, key);
    if (rc)
        return rc;
    char *k = etcd_b64_encode(key, strlen(key));
    char *v = value ? etcd_b64_encode(value, strlen(value)) : NULL;
    json_t *body = k && v ? json_pack("{s:s, s:s}", "key", k, "value", v) : NULL;
    if (body && lease)
        json_object_set_new(body, "lease", lease_json(lease));
    rc = request(c, "/v3/kv/put", body, cancel, NULL);
    free(k);
    free(v);
    return rc;
}

int etcd_kv_delete(etcd_client *c, const char *key)
{
    int rc = check_key(c, key);
    if (rc)
        return rc;
    char *k = etcd_b64_encode(key, strlen(key));
    rc = request(c, "/v3/kv/deleterange", k ? json_pack("{s:s}", "key", k) : NULL, NULL, NULL);
    free(k);
    return plain(rc);
}

/* ---- leases ---------------------------------------------------------------- */

int etcd_lease_grant(etcd_client *c, int64_t want_ttl, int64_t *id, int64_t *ttl,
                     const atomic_bool *cancel)
{
    json_t *reply = NULL;
    int rc = plain(request(c, "/v3/lease/grant",
                           json_pack("{s:I}", "TTL", (json_int_t)want_ttl), cancel, &reply));
    if (!rc && (get_i64(reply, "ID", id) || get_i64(reply, "TTL", ttl) || *id == 0 ||
                *ttl <= 0)) {
        c->api->set_error("etcd: malformed lease grant reply");
        rc = TE_ERR_METADATA;
    }
    json_decref(reply);
    return rc;
}

int etcd_lease_keepalive(etcd_client *c, int64_t id, const atomic_bool *cancel)
{
    json_t *reply = NULL, *body = json_object();
    if (body)
        json_object_set_new(body, "ID", lease_json(id));
    int rc = request(c, "/v3/lease/keepalive", body, cancel, &reply);
    if (rc == ETCD_REFUSED)
        rc = TE_ERR_METADATA;
    if (rc) {
        json_decref(reply);
        return rc;
    }
    json_t *res = json_object_get(reply, "result");
    int64_t ttl = 0;
    if (!json_is_object(res) || get_i64(res, "TTL", &ttl)) {
        c->api->set_error("etcd: malformed lease keepalive reply");
        rc = TE_ERR_METADATA;
    } else if (ttl <= 0) {
        rc = ETCD_LEASE_LOST;
    }
    json_decref(reply);
    return rc;
}

int etcd_lease_revoke(etcd_client *c, int64_t id)
{
    json_t *body = json_object();
    if (body)
        json_object_set_new(body, "ID", lease_json(id));
    int rc = request(c, "/v3/lease/revoke", body, NULL, NULL);
    return rc == ETCD_LEASE_LOST ? 0 : plain(rc); /* already gone is fine */
}
