/* etcd_base64.c - standard base64 with padding, both directions, written out
 * here so the plugin needs nothing beyond libcurl and jansson. */
#include "etcd_base64.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *etcd_b64_encode(const void *data, size_t len)
{
    const unsigned char *in = data;
    if (len > (SIZE_MAX / 4) * 3 - 3)
        return NULL;
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = ALPHABET[v >> 18 & 63];
        *o++ = ALPHABET[v >> 12 & 63];
        *o++ = ALPHABET[v >> 6 & 63];
        *o++ = ALPHABET[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = ALPHABET[v >> 18 & 63];
        *o++ = ALPHABET[v >> 12 & 63];
        *o++ = i + 1 < len ? ALPHABET[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

static int sextet(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes one group of four characters (the last may carry padding) into
 * 1-3 bytes; returns how many, or -1. */
static int decode_group(const char *g, int last, unsigned char *o)
{
    int a = sextet(g[0]), b = sextet(g[1]), c = sextet(g[2]), d = sextet(g[3]);
    if (a < 0 || b < 0)
        return -1;
    uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12;
    o[0] = (unsigned char)(v >> 16);
    if (last && g[2] == '=' && g[3] == '=')
        return (b & 15) ? -1 : 1; /* non-canonical trailing bits */
    if (c < 0)
        return -1;
    v |= (uint32_t)c << 6;
    o[1] = (unsigned char)(v >> 8);
    if (last && g[3] == '=')
        return (c & 3) ? -1 : 2;
    if (d < 0)
        return -1;
    o[2] = (unsigned char)(v | (uint32_t)d);
    return 3;
}

int etcd_b64_decode(const char *text, char **out, size_t *out_len)
{
    size_t n = strlen(text);
    if (n % 4)
        return -1;
    char *buf = malloc(n / 4 * 3 + 1);
    if (!buf)
        return -1;
    size_t len = 0;
    for (size_t i = 0; i < n; i += 4) {
        int got = decode_group(text + i, i + 4 == n, (unsigned char *)buf + len);
        if (got < 0) {
            free(buf);
            return -1;
        }
        len += (size_t)got;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}
