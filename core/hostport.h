/* hostport.h - parsing and formatting "host:port" strings (hostport.c). */
#ifndef TE_CORE_HOSTPORT_H
#define TE_CORE_HOSTPORT_H

#include <stddef.h>
#include <stdint.h>

/* "host:port", "[v6]:port", "v6%scope" or "host" (then default_port).  The
 * port is split on the last ':' unless the host is a bare IPv6 address.
 * TE_ERR_INVALID_ARGUMENT for an empty host, a bad port or a host that does
 * not fit. */
int te_parse_host_port(const char *s, char *host, size_t host_len, uint16_t *port,
                       uint16_t default_port);

/* "host:port" with brackets around IPv6 hosts. */
void te_format_host_port(const char *host, uint16_t port, char *out, size_t out_len);

#endif
