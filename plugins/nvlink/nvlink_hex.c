/* nvlink_hex.c - hex text of IPC handles for the descriptor's `shm_name`.
 * Peers' text is untrusted: length and every digit are checked. */
#include "nvlink_hex.h"

#include <string.h>

bool nvl_hex_encode(const void *bytes, size_t len, char *out, size_t out_len)
{
    static const char digits[] = "0123456789ABCDEF";
    const unsigned char *b = bytes;
    if (!out || out_len == 0 || len > (out_len - 1) / 2)
        return false;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * len] = '\0';
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool nvl_hex_decode(const char *text, void *bytes, size_t len)
{
    unsigned char *b = bytes;
    if (!text || strlen(text) != 2 * len)
        return false;
    for (size_t i = 0; i < len; i++) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}
