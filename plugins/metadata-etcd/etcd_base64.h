/* etcd_base64.h - standard base64 (RFC 4648, padded), as etcd's JSON gateway
 * encodes keys and values.  The decoder is strict: it rejects anything the
 * gateway would not produce, since replies are untrusted. */
#ifndef TE_ETCD_BASE64_H
#define TE_ETCD_BASE64_H

#include <stddef.h>

/* A malloc()'d, NUL-terminated encoding of len bytes; NULL when out of memory. */
char *etcd_b64_encode(const void *data, size_t len);

/* Decodes a NUL-terminated string into a malloc()'d buffer with a NUL after
 * the *out_len bytes.  0, or -1 when the text is not valid padded base64 or
 * memory runs out. */
int etcd_b64_decode(const char *text, char **out, size_t *out_len);

#endif
