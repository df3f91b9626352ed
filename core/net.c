/* net.c - blocking sockets bounded by deadlines (poll before every read and
 * write): connect, listen, full reads and writes, local and peer addresses.
 * Deadlines are te_now_ns() values (clock.c). */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

static int remaining_ms(int64_t deadline_ns)
{
    if (deadline_ns <= 0)
        return -1;
    int64_t left = deadline_ns - te_now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > 3600000 ? 3600000 : (int)ms;
}

int te_net_wait(int fd, short events, int64_t deadline_ns)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int ms = remaining_ms(deadline_ns);
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0; /* readable, writable, or an error the next call reports */
        if (n == 0)
            return TE_ERR_TIMEOUT;
        if (errno != EINTR)
            return TE_ERR_SOCKET;
    }
}

int te_net_write_full(int fd, const void *buf, size_t len, int64_t deadline_ns)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = te_net_wait(fd, POLLOUT, deadline_ns);
            if (rc)
                return rc;
            continue;
        }
        return (errno == EPIPE || errno == ECONNRESET) ? TE_ERR_PEER_CLOSED : TE_ERR_SOCKET;
    }
    return 0;
}

int te_net_read_full(int fd, void *buf, size_t len, int64_t deadline_ns)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0)
            return TE_ERR_PEER_CLOSED;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = te_net_wait(fd, POLLIN, deadline_ns);
            if (rc)
                return rc;
            continue;
        }
        return errno == ECONNRESET ? TE_ERR_PEER_CLOSED : TE_ERR_SOCKET;
    }
    return 0;
}

int te_net_connect(const char *host, uint16_t port, int timeout_ms)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai)
        return te_fail(TE_ERR_DNS, "cannot resolve %s: %s", host, gai_strerror(gai));
    int64_t deadline = te_now_ns() + (int64_t)timeout_ms * 1000000;
    int rc = TE_ERR_SOCKET, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                        ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            err = errno;
            close(fd);
            continue;
        }
        rc = te_net_wait(fd, POLLOUT, deadline);
        socklen_t sl = sizeof err;
        if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            freeaddrinfo(res);
            return fd;
        }
        if (rc == TE_ERR_TIMEOUT)
            err = ETIMEDOUT;
        close(fd);
        rc = TE_ERR_SOCKET;
    }
    freeaddrinfo(res);
    if (err == ETIMEDOUT)
        return te_fail(TE_ERR_TIMEOUT, "connect to %s:%u timed out after %d ms", host, port,
                       timeout_ms);
    return te_fail(rc, "connect to %s:%u failed: %s", host, port, strerror(err));
}

int te_net_listen(const char *host, uint16_t port, int backlog, uint16_t *port_out)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    int fd = -1, err = 0;
    if (!host) {
        /* Dual-stack wildcard first, plain IPv4 where IPv6 is off. */
        fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            int zero = 0, one = 1;
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port),
                                     .sin6_addr = in6addr_any};
            if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, backlog) == 0)
                goto bound;
            err = errno;
            close(fd);
        }
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return te_fail(TE_ERR_SOCKET, "socket: %s", strerror(errno));
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_ANY)};
        if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, backlog) == 0)
            goto bound;
        err = errno;
        close(fd);
        errno = err;
        return TE_ERR_SOCKET;
    }
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai)
        return te_fail(TE_ERR_DNS, "cannot resolve bind address %s: %s", host, gai_strerror(gai));
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) {
            freeaddrinfo(res);
            goto bound;
        }
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    errno = err;
    return TE_ERR_SOCKET;
bound:
    if (port_out) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

int te_net_first_lan_address(int ipv6, char *out, size_t out_len)
{
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) < 0)
        return TE_ERR_SOCKET;
    int rc = TE_ERR_NOT_FOUND;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP) ||
            !(i->ifa_flags & IFF_RUNNING))
            continue;
        int fam = i->ifa_addr->sa_family;
        if (fam != (ipv6 ? AF_INET6 : AF_INET))
            continue;
        const void *src = fam == AF_INET ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
                                         : (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
        if (inet_ntop(fam, src, out, (socklen_t)out_len)) {
            rc = 0;
            break;
        }
    }
    freeifaddrs(ifs);
    return rc;
}

void te_net_peer_name(const struct sockaddr_storage *ss, char *out, size_t out_len)
{
    const void *src = ss->ss_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    if (!inet_ntop(ss->ss_family, src, out, (socklen_t)out_len))
        snprintf(out, out_len, "?");
}
