/* http_body.h - what the two HTTP metadata plugins (metadata-etcd and
 * metadata-http) share around libcurl, compiled into each of them (plugins
 * reach the core only through the host table): libcurl's one-time global
 * initialisation, the reply body a request collects, bounded in size, and
 * the options every request of theirs sets. */
#ifndef TE_PLUGINS_HTTP_BODY_H
#define TE_PLUGINS_HTTP_BODY_H

#include <curl/curl.h>
#include <stddef.h>

/* A reply body: data is NUL-terminated (NULL until something arrived), and
 * a reply longer than max bytes fails the transfer (CURLE_WRITE_ERROR). */
typedef struct http_body {
    char *data;
    size_t len, cap, max;
} http_body;

/* curl_global_init once per process: 0, or TE_ERR_METADATA when it failed. */
int http_curl_global_init(void);

/* Sets the URL, the timeouts (milliseconds), no signals, http/https only,
 * and the body as the reply's destination. */
void http_body_options(CURL *h, const char *url, long connect_ms, long total_ms, http_body *b);

/* Sends `text` (a NUL-terminated request body) with the headers `hdr`. */
void http_body_post(CURL *h, const char *text, struct curl_slist *hdr);

#endif
