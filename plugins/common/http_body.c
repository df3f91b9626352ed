/* http_body.c - libcurl helpers of the HTTP metadata plugins (see
 * http_body.h): global initialisation once, the growing reply buffer that
 * curl writes into, and the request options both plugins set alike. */
#include "http_body.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "te/te.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_rc;

static void curl_init_once(void)
{
    curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : TE_ERR_METADATA;
}

int http_curl_global_init(void)
{
    pthread_once(&curl_once, curl_init_once);
    return curl_rc;
}

/* CURLOPT_WRITEFUNCTION: appends, keeping a NUL after the data; returning
 * less than it was given (too big, out of memory) makes curl fail. */
static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    http_body *b = arg;
    size_t add = size * n;
    if (add > b->max - b->len)
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

void http_body_options(CURL *h, const char *url, long connect_ms, long total_ms, http_body *b)
{
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
}

void http_body_post(CURL *h, const char *text, struct curl_slist *hdr)
{
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(text));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
}
