/* kv_server.h - a tiny single-threaded HTTP server on 127.0.0.1 for tests,
 * run in a thread of the test.  It speaks Mooncake's HTTP metadata protocol
 * (GET|PUT|DELETE <path>?key=<escaped>, 404 for an absent key), and can
 * instead answer canned replies per path to play a misbehaving etcd. */
#ifndef TE_TEST_KV_SERVER_H
#define TE_TEST_KV_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define KV_MAX_ENTRIES 256
#define KV_MAX_CANNED 8

typedef struct kv_entry {
    char *key;
    char *value;
} kv_entry;

typedef struct kv_canned {
    char path[128]; /* exact request path, e.g. "/v3/lease/grant" */
    int status;
    char *body;
} kv_canned;

typedef struct kv_server {
    int listen_fd;
    int stop_pipe[2];
    uint16_t port;
    pthread_t thread;
    pthread_mutex_t lock;      /* guards everything below */
    kv_entry entries[KV_MAX_ENTRIES];
    size_t count;
    int put_status;            /* when not 0, every PUT answers this status */
    kv_canned canned[KV_MAX_CANNED];
    size_t canned_count;
    atomic_int requests;       /* served so far */
} kv_server;

/* Starts listening on a free 127.0.0.1 port.  0 or -1. */
int kv_server_start(kv_server *s);
void kv_server_stop(kv_server *s);
/* Any request to exactly `path` gets this status and body. */
void kv_server_can(kv_server *s, const char *path, int status, const char *body);
/* A copy of the stored value (malloc'd), or NULL. */
char *kv_server_value(kv_server *s, const char *key);
void kv_server_set(kv_server *s, const char *key, const char *value);
/* When not 0, every later PUT answers this status. */
void kv_server_fail_puts(kv_server *s, int status);

#endif
