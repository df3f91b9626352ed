/* tcp.c - the TCP transport plugin: configuration, the descriptor members it
 * publishes (tcp_data_port, tcp_proto_version), peers, and the ops table.
 * Wire compatible with Mooncake's TCP transport (v1 and v2 framing). */
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp.h"
#include "tcp_rail.h"


int64_t tcp_config(te_host *h, const char *name)
{
    int64_t v = 0;
    te_host_table->config_int(h, name, &v);
    return v;
}

void tcp_tune_socket(const tcp_transport *t, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (t->sock_buf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &t->sock_buf, sizeof t->sock_buf);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &t->sock_buf, sizeof t->sock_buf);
    }
}

/* splice() has no MSG_NOSIGNAL: into a socket the peer has reset it raises
 * SIGPIPE, which would kill the host process.  Threads that splice block
 * SIGPIPE, and one that splice raised is taken back at once. */
void tcp_block_sigpipe(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

void tcp_take_sigpipe(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) > 0)
        ;
}

static int tcp_create(te_host *host, const te_transport_params *params, void **inst)
{
    tcp_transport *t = calloc(1, sizeof *t);
    if (!t)
        return TE_ERR_MEMORY;
    t->host = host;
    t->lanes_per_peer = (int)tcp_config(host, "MC_TCP_LANES_PER_PEER"); /* <= TCP_MAX_LANES */
    t->lane_min_bytes = (uint64_t)tcp_config(host, "MC_TCP_LANE_MIN_BYTES");
    t->connect_timeout_ms = tcp_config(host, "MC_HANDSHAKE_CONNECT_TIMEOUT") * 1000;
    t->sock_buf = (int)tcp_config(host, "MC_TCP_SOCKET_BUFFER");
    t->force_v1 = tcp_config(host, "MC_TCP_PROTO") == 1;
    /* Splicing saves the sender's copy (CPU), not memory bandwidth; on
     * loopback with large buffers it measured no faster, so it is opt-in. */
    t->use_splice = tcp_config(host, "MC_TCP_SPLICE") == 1;
    /* Rails: a link that moves nothing for the stall time is taken as down
     * (TCP alone would retransmit for minutes). */
    t->rail_pause_ns = tcp_config(host, "MC_TCP_RAIL_PAUSE_MS") * 1000000LL;
    t->rail_stall_ns = tcp_config(host, "MC_TCP_RAIL_STALL_MS") * 1000000LL;
    /* Slices of 1 MiB let large requests stripe over the lanes while
     * keeping per-slice overhead small. */
    t->slice_size = (uint64_t)tcp_config(host, "MC_TCP_SLICE_SIZE");
    t->nics = tcp_nics_open(host, params->device_filter);
    /* A bound on lane threads however many peers are busy: with all taken,
     * lanes wait their turn (see tcp_lane_slots.h). */
    tcp_slots_init(&t->slots, (int)tcp_config(host, "MC_TCP_MAX_LANE_THREADS"), tcp_lane_kick);
    int rc = tcp_server_start(t, &t->server);
    if (rc) {
        tcp_nics_free(t->nics);
        free(t);
        return rc;
    }
    *inst = t;
    return 0;
}

static void tcp_destroy(void *inst)
{
    tcp_transport *t = inst;
    tcp_server_stop(&t->server);
    /* Peers were closed by the core; their lane threads end on their own. */
    tcp_slots_wait_drained(&t->slots);
    tcp_cuda_destroy(t); /* after the lanes: they hand staged chunks back */
    tcp_slots_destroy(&t->slots);
    tcp_nics_free(t->nics);
    free(t);
}

static int tcp_describe(void *inst, char **json)
{
    tcp_transport *t = inst;
    json_t *o = json_pack("{s:i,s:i}", "tcp_data_port", (int)t->server.port,
                          "tcp_proto_version", 2);
    int rc = o ? tcp_nics_describe(t->nics, o) : TE_ERR_MEMORY;
    *json = rc ? NULL : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return *json ? 0 : TE_ERR_MEMORY;
}

static int tcp_peer_open(void *inst, const te_peer_info *info, void **handle)
{
    tcp_transport *t = inst;
    json_error_t jerr;
    json_t *d = json_loads(info->descriptor, 0, &jerr);
    json_t *port = json_object_get(d, "tcp_data_port");
    json_t *ver = json_object_get(d, "tcp_proto_version");
    if (!json_is_integer(port) || json_integer_value(port) <= 0 ||
        json_integer_value(port) > 65535) {
        json_decref(d);
        return TE_ERR_NOT_SUPPORTED_TRANSPORT; /* not a TCP peer */
    }
    bool v2 = !t->force_v1 && json_is_integer(ver) && json_integer_value(ver) >= 2;
    tcp_rail_spec rails[TCP_MAX_RAILS];
    int nrails = tcp_nics_rails(t->nics, d, info->rpc_host, rails, TCP_MAX_RAILS);
    tcp_peer *p = tcp_peer_new_rails(t, info->rpc_host, (uint16_t)json_integer_value(port), v2,
                                     rails, nrails);
    json_decref(d);
    if (!p)
        return TE_ERR_MEMORY;
    *handle = p;
    return 0;
}

static void tcp_peer_close(void *inst, void *handle)
{
    tcp_peer_free(handle);
}

static int tcp_submit(void *inst, te_slice *const *slices, size_t count)
{
    if (count == 0)
        return 0;
    /* The core groups runs by transport, not by peer: split by peer here. */
    size_t start = 0;
    while (start < count) {
        size_t end = start + 1;
        while (end < count && slices[end]->peer == slices[start]->peer)
            end++;
        tcp_peer_submit(slices[start]->peer, slices + start, end - start);
        start = end;
    }
    return 0;
}

/* The instance's slice size (MC_TCP_SLICE_SIZE), per engine. */
static int tcp_ctrl(void *inst, int op, void *arg)
{
    if (op != TE_TRANSPORT_CTRL_SLICE_SIZE)
        return TE_ERR_NOT_IMPLEMENTED;
    *(uint64_t *)arg = ((tcp_transport *)inst)->slice_size;
    return 0;
}

static const te_transport_ops ops = {
    .size = sizeof ops,
    .caps = TE_TRANSPORT_CAP_REMOTE,
    .slice_size = 1u << 20,
    .create = tcp_create,
    .destroy = tcp_destroy,
    .describe = tcp_describe,
    .peer_open = tcp_peer_open,
    .peer_close = tcp_peer_close,
    .submit = tcp_submit,
    .ctrl = tcp_ctrl,
};


TE_PLUGIN_DEFINE(TE_PLUGIN_TRANSPORT, "tcp", "1.0", &ops, listen_in_range)
