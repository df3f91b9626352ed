/* segdesc.h - Mooncake-compatible segment descriptors (JSON) and metadata keys. */
#ifndef TE_CORE_SEGDESC_H
#define TE_CORE_SEGDESC_H

#include <stddef.h>
#include <stdint.h>

typedef struct te_seg_buffer {
    uint64_t addr;
    uint64_t length;
    int device; /* device memory: "location" (ours) or "name" (Mooncake RDMA) says cuda:N, ... */
} te_seg_buffer;

/* The parts of a peer's descriptor the core needs; transports parse the
 * rest from `json` themselves. */
typedef struct te_segdesc {
    char *name;
    char *protocol;
    char *json;            /* the descriptor as received */
    te_seg_buffer *buffers; /* sorted by addr for lookups */
    size_t buffer_count;
    te_seg_buffer *buffers_in_order; /* registration order, for te_segment_buffer */
} te_segdesc;

/* Parses and validates a descriptor: an object with string "name" and
 * "protocol", and "buffers" an array of objects with addr > 0, length > 0,
 * addr + length not wrapping.  Returns TE_ERR_MALFORMED_JSON with a detail. */
int te_segdesc_decode(const char *json, size_t len, te_segdesc **out);
void te_segdesc_free(te_segdesc *d);

/* Whether a location ("cuda:0", "cpu:1", "*", a segment name) is device memory. */
int te_location_is_device(const char *location);

/* Index (in registration order) of the buffer holding [addr, addr+len), or -1. */
int te_segdesc_find(const te_segdesc *d, uint64_t addr, uint64_t len);

/* Keys: "mooncake/[cluster/]ram/<name>" (or "mooncake/[cluster/]<name>" when
 * the name holds a '/') and "mooncake/[cluster/]rpc_meta/<name>". */
#define TE_META_KEY_MAX 1024 /* a key's buffer, its NUL included */
int te_meta_segment_key(const char *cluster, const char *name, char *out, size_t out_len);
int te_meta_rpc_key(const char *cluster, const char *name, char *out, size_t out_len);
/* enum te_meta_key_kind of a key; *name points into key. */
int te_meta_parse_key(const char *cluster, const char *key, const char **name);

/* rpc_meta value {"ip_or_host_name":..., "rpc_port":...}. */
int te_rpc_meta_encode(const char *host, uint16_t port, char **json);
int te_rpc_meta_decode(const char *json, char *host, size_t host_len, uint16_t *port);

/* Local time as "YYYY-mm-dd HH:MM:SS.uuuuuu", the original's timestamp. */
void te_segdesc_timestamp(char *out, size_t out_len);

#endif
