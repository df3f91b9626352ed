/* etcd_client.h - a small client for etcd's v3 JSON gateway: a list of
 * endpoints tried in turn (starting from the last one that answered), a pool
 * of curl handles, and the KV and lease calls the store needs.  All state is
 * per client; nothing is shared between engines. */
#ifndef TE_ETCD_CLIENT_H
#define TE_ETCD_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "te/plugin.h"

#define ETCD_CONNECT_TIMEOUT_MS 1000
#define ETCD_TOTAL_TIMEOUT_MS 3000
#define ETCD_MAX_REPLY (64u << 20)  /* bytes of one reply, at most */
#define ETCD_MAX_KEY 4096           /* bytes of one key, at most */
#define ETCD_MAX_ENDPOINTS 16
#define ETCD_POOL 4                 /* idle curl handles kept */

/* Positive, internal: the lease named in a request does not exist (any more). */
#define ETCD_LEASE_LOST 1
/* Positive, internal: etcd answered and refused the request (too large, ...). */
#define ETCD_REFUSED 2

typedef struct etcd_client {
    const te_host_api *api;
    te_host *host;
    char *urls[ETCD_MAX_ENDPOINTS]; /* "http://host:port", no trailing '/' */
    size_t count;
    atomic_size_t good;             /* the endpoint that answered last */
    pthread_mutex_t pool_lock;
    void *pool[ETCD_POOL];          /* idle CURL handles */
    size_t pooled;
} etcd_client;

/* Parses "h1:p1,h2:p2" (',' or ';' between endpoints; an optional http:// or
 * https:// before each; port 2379 when missing).  TE_ERR_INVALID_ARGUMENT
 * with a message for garbage. */
int etcd_client_init(etcd_client *c, const te_host_api *api, te_host *host, const char *conn);
void etcd_client_fini(etcd_client *c);

/* Every call below: 0 on success; TE_ERR_METADATA when no endpoint answered
 * or etcd refused the request (put: ETCD_REFUSED); cancel, when not NULL, aborts the request
 * as soon as it becomes true. */

/* *value is malloc()'d and NUL-terminated; TE_ERR_NOT_FOUND if absent. */
int etcd_kv_get(etcd_client *c, const char *key, char **value);
/* lease 0: no lease.  ETCD_LEASE_LOST when the lease does not exist. */
int etcd_kv_put(etcd_client *c, const char *key, const char *value, int64_t lease,
                const atomic_bool *cancel);
int etcd_kv_delete(etcd_client *c, const char *key);
/* *ttl is what etcd granted (it may raise a TTL below its minimum). */
int etcd_lease_grant(etcd_client *c, int64_t want_ttl, int64_t *id, int64_t *ttl,
                     const atomic_bool *cancel);
/* ETCD_LEASE_LOST when etcd no longer knows the lease (TTL 0). */
int etcd_lease_keepalive(etcd_client *c, int64_t id, const atomic_bool *cancel);
int etcd_lease_revoke(etcd_client *c, int64_t id);

#endif
