/* gpu_suite.c - the Check steps shared by the GPU transfer suites (see
 * gpu_suite.h). */
#include "gpu_suite.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_host.h"
#include "test_util.h"

void gpu_suite_start(void)
{
    gpu_require();
    if (gpu_load()) {
        printf("SKIP: the CUDA runtime vanished after the probe\n");
        exit(GPU_SKIP);
    }
}

int gpu_suite_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* CUDA does not survive fork() */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

te_engine *gpu_engine(const char *protocol)
{
    setenv("MC_TE_TRANSPORTS", protocol, 1);
    te_engine *e = te_engine_create();
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", protocol, "", NULL);
    ck_assert_msg(rc == 0, "initialize %s: %d %s", protocol, rc, te_last_error());
    return e;
}

void *gpu_pattern(size_t n, uint64_t seed)
{
    char *host = malloc(n);
    void *d = gpu_alloc(n);
    ck_assert(host && d);
    te_test_fill(host, n, seed, 0);
    ck_assert_int_eq(gpu_put(d, host, n), 0);
    free(host);
    return d;
}

void gpu_check(const void *dev, size_t n, uint64_t seed)
{
    char *host = malloc(n);
    ck_assert_int_eq(gpu_get(host, dev, n), 0);
    long long bad = te_test_check(host, n, seed, 0);
    free(host);
    ck_assert_msg(bad < 0, "first wrong byte at %lld", bad);
}

void gpu_peer_ok(gpu_peer *p, const char *verb, size_t off, size_t len, uint64_t arg)
{
    char cmd[128], reply[128];
    snprintf(cmd, sizeof cmd, "%s %zu %zu %llu", verb, off, len, (unsigned long long)arg);
    int rc = -1;
    for (int tries = 0; tries < 100 && rc; tries++) {
        rc = gpu_peer_cmd(p, cmd, reply, sizeof reply);
        if (rc && (!getenv("MC_TCP_PROTO") || strncmp(reply, "BAD", 3)))
            break;
        if (rc)
            usleep(50000);
    }
    ck_assert_msg(rc == 0, "%s -> %s", cmd, reply);
}

long gpu_held_stream_write(const char *protocol, gpu_peer *p, size_t len)
{
    gpu_peer_ok(p, "fill", 0, len, 71);
    setenv("MC_TRANSFER_TIMEOUT", "1", 1);
    te_engine *e = gpu_engine(protocol);
    unsetenv("MC_TRANSFER_TIMEOUT");
    te_segment_id id;
    ck_assert_int_eq(te_segment_open(e, p->segment, &id), 0);
    void *src = gpu_pattern(len, 72);
    ck_assert_int_eq(gpu_block_default_stream(3000), 0);
    te_request w = {TE_OP_WRITE, src, id, p->addr, len};
    int64_t t0 = te_test_now_ns();
    int rc = te_transfer_sync(e, &w, 1, NULL, NULL);
    long ms = (long)((te_test_now_ns() - t0) / 1000000);
    ck_assert_msg(rc == TE_ERR_TIMEOUT, "rc %d", rc);
    ck_assert_int_eq(gpu_sync(), 0); /* the stream moves again */
    usleep(300000);
    gpu_peer_ok(p, "check", 0, len, 71);
    gpu_free(src);
    te_engine_destroy(e);
    return ms;
}
