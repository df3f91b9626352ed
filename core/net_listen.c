/* net_listen.c - a listening socket on a free port of a range, the way the
 * original picks its RPC and data ports: random ports of [lo, hi] tried in
 * turn, wildcard address, dual-stack where IPv6 is on.  The core's RPC port
 * and the tcp plugin's data port (host service listen_in_range) share it. */
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "net.h"

#define LISTEN_TRIES 500

int te_net_listen_in_range(uint16_t lo, uint16_t hi, int backlog, uint16_t *port_out)
{
    if (lo == 0 || lo > hi)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "listen: bad port range %u..%u", lo, hi);
    unsigned seed = (unsigned)(te_now_ns() ^ ((unsigned)getpid() * 2654435761u));
    unsigned span = (unsigned)(hi - lo) + 1;
    for (int tries = 0; tries < LISTEN_TRIES; tries++) {
        uint16_t port = (uint16_t)(lo + rand_r(&seed) % span);
        int fd = te_net_listen(NULL, port, backlog, port_out);
        if (fd >= 0)
            return fd;
    }
    return te_fail(TE_ERR_SOCKET, "no free port in %u..%u", lo, hi);
}
