/* test_util.c - peer processes, data patterns, a Check suite runner, and
 * Check-asserting steps that drive a peer from an engine in the test process. */
#include "test_util.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The pattern is a keyed hash of each 8-byte word index, so any offset can
 * be checked and fills are fast even under sanitizers. */
static uint64_t pattern_word(uint64_t seed, uint64_t word)
{
    uint64_t x = word * 0x9E3779B97F4A7C15ull ^ seed * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return x;
}

static uint8_t pattern_byte(uint64_t seed, uint64_t i)
{
    return (uint8_t)(pattern_word(seed, i / 8) >> (8 * (i % 8)));
}

void te_test_fill(void *buf, size_t len, uint64_t seed, uint64_t offset)
{
    uint8_t *p = buf;
    size_t i = 0;
    for (; i < len && (offset + i) % 8; i++)
        p[i] = pattern_byte(seed, offset + i);
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(seed, (offset + i) / 8);
        memcpy(p + i, &w, 8); /* little-endian hosts only, like the wire */
    }
    for (; i < len; i++)
        p[i] = pattern_byte(seed, offset + i);
}

long long te_test_check(const void *buf, size_t len, uint64_t seed, uint64_t offset)
{
    const uint8_t *p = buf;
    size_t i = 0;
    for (; i < len && (offset + i) % 8; i++)
        if (p[i] != pattern_byte(seed, offset + i))
            return (long long)i;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(seed, (offset + i) / 8);
        if (memcmp(p + i, &w, 8) != 0)
            break;
    }
    for (; i < len; i++)
        if (p[i] != pattern_byte(seed, offset + i))
            return (long long)i;
    return -1;
}

double te_test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *te_test_bin(const char *name, char *out, size_t out_len)
{
    const char *dir = getenv("TE_TEST_BIN_DIR");
    snprintf(out, out_len, "%s/%s", dir ? dir : ".", name);
    return out;
}

static int read_line(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t n = 0;
    while (n + 1 < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, timeout_ms);
        if (r == 0)
            return -ETIMEDOUT;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        ssize_t got = read(fd, buf + n, 1);
        if (got <= 0)
            return -EPIPE;
        if (buf[n] == '\n') {
            buf[n] = '\0';
            return 0;
        }
        n++;
    }
    buf[n] = '\0';
    return 0;
}

int te_test_child_start(te_test_peer *p, const char *bin_name, const char *const *args,
                        int reply_ms, int fields)
{
    memset(p, 0, sizeof *p);
    p->reply_ms = reply_ms;
    int in[2], out[2];
    if (pipe(in) || pipe(out))
        return -1;
    char bin[1024];
    te_test_bin(bin_name, bin, sizeof bin);
    const char *argv[32] = {bin};
    int argc = 1;
    for (int i = 0; args && args[i] && argc < 31; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->pid = pid;
    p->to_child = in[1];
    p->from_child = out[0];
    char line[1024] = "";
    unsigned long long addr, size;
    if (read_line(p->from_child, line, sizeof line, reply_ms) != 0 ||
        sscanf(line, "READY %511s %llx %llu %d", p->segment, &addr, &size, &p->rpc_port) <
            fields) {
        fprintf(stderr, "%s did not start: %s\n", bin_name, line);
        te_test_peer_kill(p, SIGKILL);
        return -1;
    }
    p->addr = addr;
    p->size = size;
    return 0;
}

int te_test_peer_start(te_test_peer *p, const char *const *args)
{
    return te_test_child_start(p, "te-test-peer", args, 20000, 4);
}

int te_test_peer_cmd(te_test_peer *p, const char *cmd, char *reply, size_t reply_len)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%s\n", cmd);
    if (write(p->to_child, line, (size_t)n) != n)
        return -1;
    char tmp[1024];
    if (!reply) {
        reply = tmp;
        reply_len = sizeof tmp;
    }
    return read_line(p->from_child, reply, reply_len, p->reply_ms);
}

int te_test_peer_read(te_test_peer *p, char *reply, size_t reply_len)
{
    return read_line(p->from_child, reply, reply_len, p->reply_ms);
}

void te_test_peer_kill(te_test_peer *p, int sig)
{
    if (p->pid > 0) {
        kill(p->pid, sig);
        if (sig == SIGKILL) {
            waitpid(p->pid, NULL, 0);
            p->pid = 0;
        }
    }
    if (sig == SIGKILL) {
        if (p->to_child > 0)
            close(p->to_child);
        if (p->from_child > 0)
            close(p->from_child);
        p->to_child = p->from_child = -1;
    }
}

int te_test_peer_stop(te_test_peer *p)
{
    if (p->pid <= 0)
        return -1;
    ssize_t w = write(p->to_child, "quit\n", 5);
    (void)w;
    close(p->to_child);
    p->to_child = -1;
    int status = -1;
    for (int i = 0; i < 1000; i++) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid)
            break;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
        if (i == 999) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
        }
    }
    close(p->from_child);
    p->from_child = -1;
    p->pid = 0;
    return status;
}

int te_test_run(Suite *s)
{
    SRunner *runner = srunner_create(s);
    srunner_run_all(runner, CK_NORMAL);
    int failed = srunner_ntests_failed(runner);
    srunner_free(runner);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

void te_test_engine_to_peer(const te_test_peer *p, size_t size, te_engine **eng, uint8_t **local,
                            te_segment_id *seg)
{
    *eng = te_engine_create();
    ck_assert_ptr_nonnull(*eng);
    ck_assert_int_eq(te_engine_initialize(*eng, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL), 0);
    te_test_local_to_peer(*eng, p, size, local, seg);
}

void te_test_local_to_peer(te_engine *e, const te_test_peer *p, size_t size, uint8_t **local,
                           te_segment_id *seg)
{
    *local = aligned_alloc(4096, size);
    ck_assert_ptr_nonnull(*local);
    memset(*local, 0, size);
    ck_assert_int_eq(te_register_memory(e, *local, size, "cpu:0"), 0);
    ck_assert_int_eq(te_segment_open(e, p->segment, seg), 0);
}

void te_test_peer_teardown(te_test_peer *p, te_engine *e, void *local)
{
    if (p->pid > 0)
        te_test_peer_stop(p);
    te_engine_destroy(e);
    free(local);
}

void te_test_peer_expect(te_test_peer *p, const char *cmd, const char *want)
{
    char reply[256];
    ck_assert_int_eq(te_test_peer_cmd(p, cmd, reply, sizeof reply), 0);
    ck_assert_msg(!strcmp(reply, want), "peer answered '%s' to '%s'", reply, cmd);
}

void te_test_peer_expectf(te_test_peer *p, const char *want, const char *fmt, ...)
{
    char cmd[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    te_test_peer_expect(p, cmd, want);
}

void te_test_notify_after_data(te_engine *e, te_segment_id seg, te_test_peer *p, uint8_t *local)
{
    te_test_fill(local, 1 << 20, 77, 0);
    te_request w = {TE_OP_WRITE, local, seg, p->addr, 1 << 20};
    ck_assert_int_eq(te_transfer_sync(e, &w, 1, "kv_done", "layer-7"), 0);
    char reply[256];
    ck_assert_int_eq(te_test_peer_cmd(p, "notifies", reply, sizeof reply), 0);
    ck_assert_str_eq(reply, "NOTIFIES 1");
    ck_assert_int_eq(te_test_peer_read(p, reply, sizeof reply), 0);
    ck_assert_str_eq(reply, "kv_done\tlayer-7");
    te_test_peer_expect(p, "check 0 1048576 77", "OK"); /* the data was there when it arrived */
}

void te_test_outside_rejected(te_engine *e, te_segment_id seg, const te_test_peer *p,
                              uint8_t *local)
{
    te_test_fill(local, 4096, 1, 0);
    te_request w = {TE_OP_WRITE, local, seg, p->addr + p->size - 100, 4096};
    ck_assert_int_eq(te_transfer_sync(e, &w, 1, NULL, NULL), TE_ERR_ADDRESS_NOT_REGISTERED);
    te_request r = {TE_OP_READ, local, seg, p->addr - 4096, 100};
    ck_assert_int_eq(te_transfer_sync(e, &r, 1, NULL, NULL), TE_ERR_ADDRESS_NOT_REGISTERED);
}

void te_test_write_then_read(te_engine *e, te_segment_id seg, te_test_peer *p, uint8_t *local,
                             uint64_t off, uint64_t len, uint64_t seed)
{
    char cmd[128];
    te_test_fill(local, len, seed, 0);
    te_request w = {TE_OP_WRITE, local, seg, p->addr + off, len};
    ck_assert_msg(te_transfer_sync(e, &w, 1, NULL, NULL) == 0, "write: %s", te_last_error());
    snprintf(cmd, sizeof cmd, "check %llu %llu %llu", (unsigned long long)off,
             (unsigned long long)len, (unsigned long long)seed);
    te_test_peer_expect(p, cmd, "OK");
    snprintf(cmd, sizeof cmd, "fill %llu %llu %llu", (unsigned long long)off,
             (unsigned long long)len, (unsigned long long)seed + 1);
    te_test_peer_expect(p, cmd, "OK");
    memset(local, 0, len);
    te_request r = {TE_OP_READ, local, seg, p->addr + off, len};
    ck_assert_msg(te_transfer_sync(e, &r, 1, NULL, NULL) == 0, "read: %s", te_last_error());
    ck_assert_int_eq(te_test_check(local, len, seed + 1, 0), -1);
}
