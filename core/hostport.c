/* hostport.c - "host:port" strings: parsing (IPv6 in brackets, bare IPv6,
 * scoped addresses, a default port) and formatting, shared with plugins
 * through the host table. */
#include "hostport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "te/te.h"

static int parse_port(const char *s, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5)
        return TE_ERR_INVALID_ARGUMENT;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return TE_ERR_INVALID_ARGUMENT;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return TE_ERR_INVALID_ARGUMENT;
    *port = (uint16_t)v;
    return 0;
}

static int copy_host(const char *s, size_t n, char *host, size_t host_len)
{
    if (n == 0 || n >= host_len)
        return TE_ERR_INVALID_ARGUMENT;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == '/' || s[i] == '[' || s[i] == ']')
            return TE_ERR_INVALID_ARGUMENT;
    memcpy(host, s, n);
    host[n] = '\0';
    return 0;
}

int te_parse_host_port(const char *s, char *host, size_t host_len, uint16_t *port,
                       uint16_t default_port)
{
    if (!s || !host || !port || host_len == 0)
        return TE_ERR_INVALID_ARGUMENT;
    size_t len = strlen(s);
    if (s[0] == '[') { /* [v6]:port or [v6] */
        const char *close = strchr(s, ']');
        if (!close)
            return TE_ERR_INVALID_ARGUMENT;
        int rc = copy_host(s + 1, (size_t)(close - s - 1), host, host_len);
        if (rc)
            return rc;
        if (close[1] == '\0') {
            *port = default_port;
            return 0;
        }
        if (close[1] != ':')
            return TE_ERR_INVALID_ARGUMENT;
        return parse_port(close + 2, strlen(close + 2), port);
    }
    const char *colon = strrchr(s, ':');
    if (!colon)
        return copy_host(s, len, host, host_len) ? TE_ERR_INVALID_ARGUMENT
                                                 : (*port = default_port, 0);
    const char *pct = strchr(s, '%');
    if (strchr(s, ':') != colon && !(pct && colon > pct)) {
        /* Several colons and no "%scope:port": a bare IPv6 address. */
        char tmp[INET6_ADDRSTRLEN + 64];
        struct in6_addr a6;
        if (len < sizeof tmp) {
            memcpy(tmp, s, len + 1);
            char *scope = strchr(tmp, '%');
            if (scope)
                *scope = '\0';
            if (inet_pton(AF_INET6, tmp, &a6) == 1)
                return copy_host(s, len, host, host_len) ? TE_ERR_INVALID_ARGUMENT
                                                         : (*port = default_port, 0);
        }
    }
    int rc = copy_host(s, (size_t)(colon - s), host, host_len);
    if (rc)
        return rc;
    return parse_port(colon + 1, strlen(colon + 1), port);
}

void te_format_host_port(const char *host, uint16_t port, char *out, size_t out_len)
{
    if (strchr(host, ':'))
        snprintf(out, out_len, "[%s]:%u", host, port);
    else
        snprintf(out, out_len, "%s:%u", host, port);
}
