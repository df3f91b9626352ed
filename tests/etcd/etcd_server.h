/* etcd_server.h - real etcd servers for the tests: one or three members on
 * free 127.0.0.1 ports with a temporary data folder, started, killed,
 * restarted (optionally wiped) and removed by the test; plus direct gateway
 * calls to look at what the plugin stored. */
#ifndef TE_TEST_ETCD_SERVER_H
#define TE_TEST_ETCD_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define ETCD_TEST_MAX_MEMBERS 3
#define ETCD_TEST_SKIP 77 /* ctest SKIP_RETURN_CODE */

typedef struct etcd_test_member {
    pid_t pid;
    uint16_t client_port, peer_port;
} etcd_test_member;

typedef struct etcd_test_cluster {
    int count;
    etcd_test_member m[ETCD_TEST_MAX_MEMBERS];
    char dir[256];       /* temp root: <dir>/m<i>.etcd, <dir>/m<i>.log */
    char endpoints[256]; /* "127.0.0.1:p0,127.0.0.1:p1,..." */
    char token[64];
    int janitor_fd;      /* write end; when it closes, the janitor removes dir */
    pid_t janitor_pid;
} etcd_test_cluster;

/* Exits the process with ETCD_TEST_SKIP and a message when there is no etcd
 * binary (PATH or $TE_ETCD_BIN).  Call at the top of main(). */
void etcd_test_require(void);

/* Starts `count` members and waits (20 s at most) until each one is healthy.
 * 0, or -1 with a message on stderr (and everything cleaned up). */
int etcd_test_start(etcd_test_cluster *c, int count);
/* Kills member i with sig and reaps it. */
void etcd_test_kill(etcd_test_cluster *c, int i, int sig);
/* Starts member i again on its ports; wipe removes its data first (only for
 * a one-member cluster).  Waits until it is healthy. */
int etcd_test_restart(etcd_test_cluster *c, int i, bool wipe);
/* Kills every member and removes the temp folder.  Safe to call twice. */
void etcd_test_stop(etcd_test_cluster *c);

/* "http://127.0.0.1:<client port of member i>" */
const char *etcd_test_url(const etcd_test_cluster *c, int i, char *out, size_t len);

/* Direct gateway calls on one endpoint URL.  get: 0 with *value (malloc'd),
 * 1 when absent, -1 on error. */
int etcd_test_get(const char *url, const char *key, char **value);
int etcd_test_put(const char *url, const char *key, const char *value);
/* Revokes every lease the cluster holds; returns how many, or -1. */
int etcd_test_revoke_all(const char *url);

/* Polls get until the key is present (want_present) or absent; returns the
 * seconds it took, or -1 after timeout_s. */
double etcd_test_wait_key(const char *url, const char *key, bool want_present, double timeout_s);

double etcd_test_now(void);
/* A free TCP port on 127.0.0.1 (bound then released). */
uint16_t etcd_test_free_port(void);

#endif
