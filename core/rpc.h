/* rpc.h - the RPC port: Mooncake's handshake frames (u64 LE length, u8 type,
 * JSON), served concurrently, and the client side of one exchange. */
#ifndef TE_CORE_RPC_H
#define TE_CORE_RPC_H

#include <pthread.h>
#include <stdint.h>

#include "te/plugin.h"

#define TE_RPC_TYPES 4

typedef struct te_rpc_server {
    int listen_fd;
    int wake_pipe[2];
    uint16_t port;
    uint64_t max_frame;
    int io_timeout_ms;
    int max_connections;
    int max_per_peer;
    const char *auth_token; /* "" = no authentication */
    pthread_t thread;
    int running;
    pthread_mutex_t lock; /* handlers, active count, connection fds */
    pthread_cond_t idle;
    int active;
    pthread_cond_t freed; /* broadcast whenever a connection slot frees */
    int *conn_fds; /* open connections, to cut them at shutdown */
    char (*conn_peer)[64]; /* their peer addresses, for the per-peer cap */
    /* > 0: idle since (waiting for its request or for the client to close:
     * evictable at a cap); 0: its handler runs; -1: being evicted. */
    int64_t *conn_since;
    te_rpc_handler handlers[TE_RPC_TYPES];
    void *handler_args[TE_RPC_TYPES];
} te_rpc_server;

/* Binds (fd from te_net_listen) and starts serving. */
int te_rpc_server_start(te_rpc_server *s, int listen_fd, uint16_t port, uint64_t max_frame,
                        int io_timeout_ms, int max_connections, int max_per_peer,
                        const char *auth_token);
/* Stops accepting, cuts open connections and waits for handler threads. */
void te_rpc_server_stop(te_rpc_server *s);
int te_rpc_server_set_handler(te_rpc_server *s, int type, te_rpc_handler fn, void *arg);

/* One request and its reply.  *reply is malloc()'d and NUL terminated. */
int te_rpc_call(const char *host, uint16_t port, int type, const char *req, size_t req_len,
                char **reply, size_t *reply_len, int timeout_ms, uint64_t max_frame,
                const char *auth_token);

/* Frame helpers, exposed for tests and fuzzing.  A header is 9 bytes. */
void te_rpc_encode_header(uint8_t hdr[9], uint64_t payload_len, int type);
/* Validates a header: 0 (filling payload_len and type), or TE_ERR_MALFORMED_FRAME
 * (zero or oversized length).  A first type byte > 3 is the legacy untyped
 * form: *type = CONNECTION and *legacy = 1 (that byte is payload). */
int te_rpc_decode_header(const uint8_t hdr[9], uint64_t max_frame, uint64_t *payload_len,
                         int *type, int *legacy);

#endif
