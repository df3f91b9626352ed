/* test_metrics.c - counters match a known set of transfers exactly, the
 * MC_TE_METRIC report appears only when asked (and its thread only exists
 * then), and /metrics serves valid Prometheus text while refusing junk. */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "te/te.h"

static te_engine *eng;
static char bufa[100000], bufb[100000];

static void start(void)
{
    eng = te_engine_create();
    ck_assert_int_eq(te_engine_initialize(eng, "127.0.0.1", "P2PHANDSHAKE", "testgood", "", NULL), 0);
    ck_assert_int_eq(te_register_memory(eng, bufb, sizeof bufb, "cpu:0"), 0);
}

static json_t *metrics(void)
{
    char *text;
    ck_assert_int_eq(te_get_metrics(eng, &text), 0);
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    ck_assert_msg(j != NULL, "bad JSON: %s", text);
    te_free(text);
    return j;
}

static long long at(json_t *j, const char *path)
{
    char copy[256];
    snprintf(copy, sizeof copy, "%s", path);
    json_t *cur = j;
    for (char *save, *k = strtok_r(copy, "/", &save); k; k = strtok_r(NULL, "/", &save))
        cur = json_object_get(cur, k);
    ck_assert_msg(json_is_integer(cur), "no integer at %s", path);
    return json_integer_value(cur);
}

static int xfer(int op, uint64_t off, uint64_t len)
{
    te_request r = {op, bufa, 0, (uint64_t)(uintptr_t)bufb + off, len};
    return te_transfer_sync(eng, &r, 1, NULL, NULL);
}

START_TEST(counters_match_known_transfers)
{
    start();
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(xfer(TE_OP_WRITE, 0, 1000), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(xfer(TE_OP_READ, 5000, 500), 0);
    ck_assert_int_ne(xfer(TE_OP_WRITE, sizeof bufb - 10, 100), 0); /* past the end */
    json_t *j = metrics();
    ck_assert_int_eq(at(j, "transports/testgood/write_bytes"), 3000);
    ck_assert_int_eq(at(j, "transports/testgood/writes"), 3);
    ck_assert_int_eq(at(j, "transports/testgood/read_bytes"), 1000);
    ck_assert_int_eq(at(j, "transports/testgood/reads"), 2);
    char path[300];
    snprintf(path, sizeof path, "segments/%s/writes", te_engine_segment_name(eng));
    ck_assert_int_eq(at(j, path), 3);
    ck_assert_int_eq(at(j, "failures/address_not_registered"), 1);
    ck_assert_int_eq(at(j, "failures/timeout"), 0);
    ck_assert_int_eq(at(j, "completed_requests"), 5);
    ck_assert_int_eq(at(j, "latency_us/count"), 5);
    ck_assert_int_eq(at(j, "inflight_requests"), 0);
    ck_assert_int_eq(at(j, "registered_bytes"), (long long)sizeof bufb);
    json_decref(j);
    ck_assert_int_eq(te_unregister_memory(eng, bufb), 0);
    j = metrics();
    ck_assert_int_eq(at(j, "registered_bytes"), 0);
    json_decref(j);
    te_engine_destroy(eng);
}
END_TEST

static int thread_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *de; d && (de = readdir(d));)
        n += de->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* Runs an engine in a child for ~2.5 s with MC_TE_METRIC=value; returns how
 * many report lines it logged and the threads it had. */
static int report_lines(const char *value, int *threads)
{
    int fds[2], tfd[2];
    ck_assert_int_eq(pipe(fds), 0);
    ck_assert_int_eq(pipe(tfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        if (value)
            setenv("MC_TE_METRIC", value, 1);
        setenv("MC_TE_METRIC_INTERVAL_SECONDS", "1", 1);
        start();
        int t = thread_count();
        ssize_t w = write(tfd[1], &t, sizeof t);
        (void)w;
        xfer(TE_OP_WRITE, 0, 100);
        usleep(2500000);
        te_engine_destroy(eng);
        _exit(0);
    }
    close(fds[1]);
    close(tfd[1]);
    ck_assert_int_eq(read(tfd[0], threads, sizeof *threads), (ssize_t)sizeof *threads);
    char buf[16384];
    size_t len = 0;
    ssize_t n;
    while ((n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    waitpid(pid, NULL, 0);
    close(fds[0]);
    close(tfd[0]);
    int lines = 0;
    for (char *p = buf; (p = strstr(p, "te/metrics]")); p++)
        lines++;
    return lines;
}

START_TEST(periodic_report_only_when_asked)
{
    int on_threads, off_threads;
    int on = report_lines("on", &on_threads);
    int off = report_lines(NULL, &off_threads);
    ck_assert_int_ge(on, 2);
    ck_assert_int_le(on, 3);
    ck_assert_int_eq(off, 0);
    ck_assert_int_eq(on_threads, off_threads + 1); /* no reporter thread when off */
}
END_TEST

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static char *http(int port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    if (request)
        ck_assert_int_eq(send(fd, request, strlen(request), 0), (ssize_t)strlen(request));
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, 5000) == 1) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* A small checker of the Prometheus text format: every sample line is
 * name{label="value",...} number, and every name was declared by # TYPE. */
static int prometheus_valid(const char *body, long long *write_bytes)
{
    char types[64][96];
    int ntypes = 0, samples = 0;
    *write_bytes = -1;
    char *copy = strdup(body);
    for (char *save, *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# TYPE ", 7)) {
            char name[96], type[32];
            if (sscanf(line + 7, "%95s %31s", name, type) != 2 || ntypes == 64)
                return 0;
            strcpy(types[ntypes++], name);
            continue;
        }
        if (line[0] == '#')
            continue;
        size_t n = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:0123456789");
        if (n == 0)
            return 0;
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)n, line);
        const char *p = line + n;
        if (*p == '{') {
            p++;
            while (*p != '}') {
                size_t k = strspn(p, "abcdefghijklmnopqrstuvwxyz_");
                if (!k || p[k] != '=' || p[k + 1] != '"')
                    return 0;
                p += k + 2;
                while (*p && *p != '"')
                    p += *p == '\\' ? 2 : 1;
                if (*p != '"')
                    return 0;
                p++;
                if (*p == ',')
                    p++;
            }
            p++;
        }
        if (*p != ' ')
            return 0;
        char *end;
        double v = strtod(p + 1, &end);
        if (*end)
            return 0;
        int declared = 0;
        for (int i = 0; i < ntypes; i++) {
            size_t tl = strlen(types[i]);
            if (!strncmp(name, types[i], tl) &&
                (!name[tl] || !strcmp(name + tl, "_bucket") || !strcmp(name + tl, "_sum") ||
                 !strcmp(name + tl, "_count")))
                declared = 1;
        }
        if (!declared)
            return 0;
        if (strstr(line, "te_transport_bytes_total{transport=\"testgood\",op=\"write\"}"))
            *write_bytes = (long long)v;
        samples++;
    }
    free(copy);
    return samples > 10;
}

START_TEST(prometheus_endpoint)
{
    int port = free_port();
    char listen_on[32];
    snprintf(listen_on, sizeof listen_on, "%d", port); /* a bare port: loopback */
    setenv("MC_TE_METRIC_LISTEN", listen_on, 1);
    start();
    char *r = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 200 OK"));
    long long before, after;
    ck_assert(prometheus_valid(strstr(r, "\r\n\r\n") + 4, &before));
    free(r);
    ck_assert_int_eq(before, 0);
    ck_assert_int_eq(xfer(TE_OP_WRITE, 0, 4321), 0);
    r = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
    ck_assert(prometheus_valid(strstr(r, "\r\n\r\n") + 4, &after));
    ck_assert_int_eq(after, 4321);
    free(r);
    /* Junk gets an error and transfers go on. */
    r = http(port, "BREW /pot HTTP/1.1\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(r, "405"));
    free(r);
    r = http(port, "GET /secrets HTTP/1.1\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(r, "404"));
    free(r);
    r = http(port, "garbage\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(r, "400"));
    free(r);
    char *big = malloc(20000);
    memset(big, 'a', 19999);
    memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
    big[19999] = '\0';
    r = http(port, big);
    ck_assert_ptr_nonnull(strstr(r, "431"));
    free(r);
    free(big);
    r = http(port, NULL); /* says nothing: cut after 2 s */
    ck_assert_ptr_nonnull(strstr(r, "408"));
    free(r);
    ck_assert_int_eq(xfer(TE_OP_WRITE, 0, 10), 0);
    te_engine_destroy(eng);
    unsetenv("MC_TE_METRIC_LISTEN");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, counters_match_known_transfers);
    tcase_add_test(tc, periodic_report_only_when_asked);
    tcase_add_test(tc, prometheus_endpoint);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
