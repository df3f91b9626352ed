/* segdesc.c - decode and validate peers' segment descriptors, build the keys
 * and rpc_meta values the original writes.  Everything from a peer or a store
 * is untrusted: types, ranges and sizes are checked before use. */
#include "segdesc.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"
#include "te/plugin.h"

#define MAX_BUFFERS (1u << 20)

void te_segdesc_free(te_segdesc *d)
{
    if (!d)
        return;
    free(d->name);
    free(d->protocol);
    free(d->json);
    free(d->buffers);
    free(d->buffers_in_order);
    free(d);
}

static int by_addr(const void *a, const void *b)
{
    const te_seg_buffer *x = a, *y = b;
    return x->addr < y->addr ? -1 : x->addr > y->addr;
}

static int get_u64(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return -1;
    /* jansson integers are signed 64-bit; addresses above 2^63 arrive as
     * negative numbers from writers that use unsigned (reinterpret them). */
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int te_location_is_device(const char *loc)
{
    static const char *const prefixes[] = {"cuda", "npu", "musa", "hip"};
    for (size_t i = 0; loc && i < sizeof prefixes / sizeof *prefixes; i++)
        if (!strncmp(loc, prefixes[i], strlen(prefixes[i])) && loc[strlen(prefixes[i])] == ':')
            return 1;
    return 0;
}

/* A buffer's memory kind: our "location" member, else Mooncake's RDMA and
 * NVLink descriptors, which put the location in "name" (tcp puts the
 * segment name there, which is no location). */
static int buffer_is_device(json_t *b)
{
    json_t *loc = json_object_get(b, "location");
    if (json_is_string(loc))
        return te_location_is_device(json_string_value(loc));
    json_t *name = json_object_get(b, "name");
    return json_is_string(name) && te_location_is_device(json_string_value(name));
}

int te_segdesc_decode(const char *json, size_t len, te_segdesc **out)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return te_fail(TE_ERR_MALFORMED_JSON, "segment descriptor: %s at %d", jerr.text,
                       jerr.position);
    int rc = TE_ERR_MALFORMED_JSON;
    te_segdesc *d = calloc(1, sizeof *d);
    if (!d) {
        json_decref(root);
        return TE_ERR_MEMORY;
    }
    json_t *name = json_object_get(root, "name");
    json_t *proto = json_object_get(root, "protocol");
    json_t *bufs = json_object_get(root, "buffers");
    if (!json_is_object(root) || !json_is_string(name) || !json_is_string(proto)) {
        te_fail(rc, "segment descriptor: needs string members name and protocol");
        goto fail;
    }
    if (bufs && !json_is_array(bufs)) {
        te_fail(rc, "segment descriptor: buffers is not an array");
        goto fail;
    }
    size_t n = bufs ? json_array_size(bufs) : 0;
    if (n > MAX_BUFFERS) {
        te_fail(rc, "segment descriptor: %zu buffers is too many", n);
        goto fail;
    }
    d->name = strdup(json_string_value(name));
    d->protocol = strdup(json_string_value(proto));
    d->json = malloc(len + 1);
    d->buffers = calloc(n ? n : 1, sizeof *d->buffers);
    d->buffers_in_order = calloc(n ? n : 1, sizeof *d->buffers_in_order);
    if (!d->name || !d->protocol || !d->json || !d->buffers || !d->buffers_in_order) {
        rc = TE_ERR_MEMORY;
        goto fail;
    }
    memcpy(d->json, json, len);
    d->json[len] = '\0';
    for (size_t i = 0; i < n; i++) {
        json_t *b = json_array_get(bufs, i);
        te_seg_buffer sb;
        if (!json_is_object(b) || get_u64(b, "addr", &sb.addr) ||
            get_u64(b, "length", &sb.length) || sb.addr == 0 || sb.length == 0 ||
            sb.addr + sb.length < sb.addr) {
            te_fail(rc, "segment descriptor of %s: buffer %zu has no valid addr/length",
                    d->name, i);
            goto fail;
        }
        sb.device = buffer_is_device(b);
        d->buffers[i] = sb;
        d->buffers_in_order[i] = sb;
    }
    d->buffer_count = n;
    qsort(d->buffers, n, sizeof *d->buffers, by_addr);
    json_decref(root);
    *out = d;
    return 0;
fail:
    json_decref(root);
    te_segdesc_free(d);
    return rc;
}

int te_segdesc_find(const te_segdesc *d, uint64_t addr, uint64_t len)
{
    if (len == 0 || addr + len < addr)
        return -1;
    /* Buffers may overlap in a peer's (buggy) descriptor, so scan in
     * registration order; descriptors are small. */
    for (size_t i = 0; i < d->buffer_count; i++) {
        const te_seg_buffer *b = &d->buffers_in_order[i];
        if (b->addr <= addr && addr + len <= b->addr + b->length)
            return (int)i;
    }
    return -1;
}

static int key_prefix(const char *cluster, char *out, size_t out_len)
{
    int n = cluster && *cluster ? snprintf(out, out_len, "mooncake/%s/", cluster)
                                : snprintf(out, out_len, "mooncake/");
    return n < 0 || (size_t)n >= out_len ? -1 : n;
}

int te_meta_segment_key(const char *cluster, const char *name, char *out, size_t out_len)
{
    int n = key_prefix(cluster, out, out_len);
    if (n < 0)
        return TE_ERR_INVALID_ARGUMENT;
    int m = snprintf(out + n, out_len - (size_t)n, "%s%s", strchr(name, '/') ? "" : "ram/", name);
    return m < 0 || (size_t)m >= out_len - (size_t)n ? TE_ERR_INVALID_ARGUMENT : 0;
}

int te_meta_rpc_key(const char *cluster, const char *name, char *out, size_t out_len)
{
    int n = key_prefix(cluster, out, out_len);
    if (n < 0)
        return TE_ERR_INVALID_ARGUMENT;
    int m = snprintf(out + n, out_len - (size_t)n, "rpc_meta/%s", name);
    return m < 0 || (size_t)m >= out_len - (size_t)n ? TE_ERR_INVALID_ARGUMENT : 0;
}

int te_meta_parse_key(const char *cluster, const char *key, const char **name)
{
    char prefix[256];
    int n = key_prefix(cluster, prefix, sizeof prefix);
    *name = key;
    if (n < 0 || strncmp(key, prefix, (size_t)n) != 0)
        return TE_META_KEY_OTHER;
    const char *rest = key + n;
    if (!strncmp(rest, "ram/", 4)) {
        *name = rest + 4;
        return TE_META_KEY_SEGMENT;
    }
    if (!strncmp(rest, "rpc_meta/", 9)) {
        *name = rest + 9;
        return TE_META_KEY_RPC;
    }
    *name = rest;
    return strchr(rest, '/') ? TE_META_KEY_SEGMENT : TE_META_KEY_OTHER;
}

int te_rpc_meta_encode(const char *host, uint16_t port, char **json)
{
    json_t *o = json_pack("{s:s, s:i}", "ip_or_host_name", host, "rpc_port", (int)port);
    if (!o)
        return TE_ERR_MEMORY;
    *json = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return *json ? 0 : TE_ERR_MEMORY;
}

int te_rpc_meta_decode(const char *json, char *host, size_t host_len, uint16_t *port)
{
    json_error_t jerr;
    json_t *o = json_loads(json, 0, &jerr);
    int rc = TE_ERR_MALFORMED_JSON;
    json_t *h = json_object_get(o, "ip_or_host_name");
    json_t *p = json_object_get(o, "rpc_port");
    if (json_is_string(h) && json_is_integer(p) && json_integer_value(p) > 0 &&
        json_integer_value(p) <= 65535 && json_string_length(h) > 0 &&
        json_string_length(h) < host_len) {
        strcpy(host, json_string_value(h));
        *port = (uint16_t)json_integer_value(p);
        rc = 0;
    } else {
        te_fail(rc, "rpc_meta: needs ip_or_host_name and rpc_port");
    }
    json_decref(o);
    return rc;
}

void te_segdesc_timestamp(char *out, size_t out_len)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, out_len, "%s.%06ld", base, (long)tv.tv_usec);
}
