/* net.h - sockets with deadlines (on the te_now_ns() clock), local addresses. */
#ifndef TE_CORE_NET_H
#define TE_CORE_NET_H

#include <stddef.h>
#include <stdint.h>

#include "clock.h"

/* Connects with a timeout; returns a blocking fd with TCP_NODELAY, or a
 * negative status (TE_ERR_DNS, TE_ERR_SOCKET, TE_ERR_TIMEOUT). */
int te_net_connect(const char *host, uint16_t port, int timeout_ms);

/* Binds and listens on host (NULL: every address, dual-stack) and port
 * (0: any).  *port_out gets the bound port.  Returns the fd or a status. */
int te_net_listen(const char *host, uint16_t port, int backlog, uint16_t *port_out);

/* Listens on a random free port of [lo, hi] (net_listen.c): the fd, its port
 * in *port_out, or a negative status. */
int te_net_listen_in_range(uint16_t lo, uint16_t hi, int backlog, uint16_t *port_out);

/* Moves exactly len bytes, waiting at most until deadline_ns (0 = forever).
 * 0, TE_ERR_TIMEOUT, TE_ERR_PEER_CLOSED or TE_ERR_SOCKET. */
int te_net_write_full(int fd, const void *buf, size_t len, int64_t deadline_ns);
int te_net_read_full(int fd, void *buf, size_t len, int64_t deadline_ns);

/* Waits until fd is readable (events POLLIN) or writable; 0, TE_ERR_TIMEOUT,
 * TE_ERR_SOCKET. */
int te_net_wait(int fd, short events, int64_t deadline_ns);

/* The numeric address of a peer (no port), for logs and per-peer limits. */
struct sockaddr_storage;
void te_net_peer_name(const struct sockaddr_storage *ss, char *out, size_t out_len);

/* The first UP, RUNNING, non-loopback IPv4 (or IPv6) address. */
int te_net_first_lan_address(int ipv6, char *out, size_t out_len);

#endif
