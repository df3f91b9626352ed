/* test_metrics.c - counters match a known set of transfers exactly, the
 * MC_TE_METRIC report appears only when asked (and its thread only exists
 * then), /metrics serves valid Prometheus text while refusing junk, and one
 * endpoint per process serves every live engine (labelled engine="<name>"),
 * comes and goes with them, survives engines leaving mid-scrape and only
 * warns when another socket holds its port. */
#include <check.h>
#include <dirent.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "te/te.h"
#include "test_util.h"

/* Forking while engine threads run: ThreadSanitizer cannot run threads in
 * such a child, and GCC 12's AddressSanitizer runtime takes no allocator lock
 * around fork(), so a child forked while a parent thread allocates deadlocks
 * in its first malloc (seen in CI; glibc's malloc has fork handlers). */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define FORK_WITH_THREADS_UNSAFE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define FORK_WITH_THREADS_UNSAFE 1
#endif
#endif

static te_engine *eng;
static char bufa[100000], bufb[100000], bufc[100000];

/* An initialized engine with `target` registered; NULL if initialize failed. */
static te_engine *new_engine(char *target, size_t len)
{
    te_engine *e = te_engine_create();
    if (te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "testgood", "", NULL) != 0) {
        te_engine_destroy(e);
        return NULL;
    }
    ck_assert_int_eq(te_register_memory(e, target, len, "cpu:0"), 0);
    return e;
}

static void start(void)
{
    eng = new_engine(bufb, sizeof bufb);
    ck_assert_ptr_nonnull(eng);
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

/* Moves len bytes between bufa and e's target at off (segment 0: itself). */
static int xfer_on(te_engine *e, char *target, int op, uint64_t off, uint64_t len)
{
    te_request r = {op, bufa, 0, (uint64_t)(uintptr_t)target + off, len};
    return te_transfer_sync(e, &r, 1, NULL, NULL);
}

static int xfer(int op, uint64_t off, uint64_t len)
{
    return xfer_on(eng, bufb, op, off, len);
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

/* A connected socket to the loopback port, or -1. */
static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
        return fd;
    close(fd);
    return -1;
}

static char *http(int port, const char *request)
{
    int fd = dial(port);
    ck_assert_int_ge(fd, 0);
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

/* GET /metrics; the body of a 200 answer (free it), or fails the test. */
static char *scrape(int port)
{
    char *r = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    ck_assert_msg(!strncmp(r, "HTTP/1.1 200 OK", 15), "scrape answered: %.80s", r);
    char *body = strstr(r, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    memmove(r, body + 4, strlen(body + 4) + 1);
    return r;
}

/* The value of the sample line that starts with `series` and a space, or -1. */
static long long sample(const char *body, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = body; (p = strstr(p, series)); p += n)
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            return atoll(p + n + 1);
    return -1;
}

/* name{engine="<e's name>",<rest>} */
static const char *series(const char *name, te_engine *e, const char *rest)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s{engine=\"%s\"%s%s}", name, te_engine_segment_name(e),
             *rest ? "," : "", rest);
    return buf;
}

/* Whether a sample line belongs to the family declared by the last # TYPE. */
static int in_family(const char *name, const char *family)
{
    size_t tl = strlen(family);
    return !strncmp(name, family, tl) &&
           (!name[tl] || !strcmp(name + tl, "_bucket") || !strcmp(name + tl, "_sum") ||
            !strcmp(name + tl, "_count"));
}

/* Checks one sample line: name{label="value",...} number, engine label first.
 * Returns the length of the name, 0 if malformed. */
static size_t sample_line_valid(const char *line)
{
    size_t n = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:0123456789");
    const char *p = line + n;
    if (n == 0 || strncmp(p, "{engine=\"", 9) != 0)
        return 0;
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
        else if (*p != '}')
            return 0;
    }
    char *end;
    if (p[1] != ' ')
        return 0;
    strtod(p + 2, &end);
    return *end ? 0 : n;
}

/* A small checker of the Prometheus text format: every sample line is valid
 * and follows the # TYPE of its family, each family declared once, so that a
 * family's samples (of every engine) are one group. */
static int prometheus_valid(const char *body)
{
    char types[64][96], family[96] = "";
    int ntypes = 0, samples = 0, ok = 1;
    char *copy = strdup(body);
    for (char *save, *line = strtok_r(copy, "\n", &save); ok && line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# TYPE ", 7)) {
            char type[32];
            ok = sscanf(line + 7, "%95s %31s", family, type) == 2 && ntypes < 64;
            for (int i = 0; ok && i < ntypes; i++)
                ok = strcmp(types[i], family) != 0;
            if (ok)
                strcpy(types[ntypes++], family);
            continue;
        }
        if (line[0] == '#')
            continue;
        size_t n = sample_line_valid(line);
        char name[96];
        snprintf(name, sizeof name, "%.*s", (int)n, line);
        ok = n > 0 && in_family(name, family);
        samples++;
    }
    free(copy);
    return ok && samples > 10;
}

static int listen_on_free_port(void)
{
    int port = free_port();
    char listen_on[32];
    snprintf(listen_on, sizeof listen_on, "%d", port); /* a bare port: loopback */
    setenv("MC_TE_METRIC_LISTEN", listen_on, 1);
    return port;
}

START_TEST(prometheus_endpoint)
{
    int port = listen_on_free_port();
    start();
    char *body = scrape(port);
    ck_assert_msg(prometheus_valid(body), "invalid exposition:\n%s", body);
    const char *wb = series("te_transport_bytes_total", eng, "transport=\"testgood\",op=\"write\"");
    ck_assert_int_eq(sample(body, wb), 0);
    free(body);
    ck_assert_int_eq(xfer(TE_OP_WRITE, 0, 4321), 0);
    char *r = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 200 OK"));
    ck_assert(prometheus_valid(strstr(r, "\r\n\r\n") + 4));
    ck_assert_int_eq(sample(strstr(r, "\r\n\r\n") + 4, wb), 4321);
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

START_TEST(one_endpoint_serves_every_engine)
{
    int port = listen_on_free_port();
    te_engine *a = new_engine(bufb, sizeof bufb), *b = new_engine(bufc, sizeof bufc);
    ck_assert_msg(a && b, "the second engine's initialize failed: %s", te_last_error());
    ck_assert_str_ne(te_engine_segment_name(a), te_engine_segment_name(b));
    ck_assert_int_eq(xfer_on(a, bufb, TE_OP_WRITE, 0, 1111), 0);
    ck_assert_int_eq(xfer_on(b, bufc, TE_OP_WRITE, 0, 2222), 0);
    ck_assert_int_eq(xfer_on(b, bufc, TE_OP_READ, 0, 333), 0);
    ck_assert_int_eq(xfer_on(b, bufc, TE_OP_READ, 0, 444), 0);
    char *body = scrape(port);
    ck_assert_msg(prometheus_valid(body), "invalid exposition:\n%s", body);
    const char *w = "transport=\"testgood\",op=\"write\"", *rd = "transport=\"testgood\",op=\"read\"";
    ck_assert_int_eq(sample(body, series("te_transport_bytes_total", a, w)), 1111);
    ck_assert_int_eq(sample(body, series("te_transport_bytes_total", b, w)), 2222);
    ck_assert_int_eq(sample(body, series("te_transport_bytes_total", a, rd)), 0);
    ck_assert_int_eq(sample(body, series("te_transport_bytes_total", b, rd)), 777);
    ck_assert_int_eq(sample(body, series("te_transport_requests_total", b, rd)), 2);
    ck_assert_int_eq(sample(body, series("te_registered_bytes", a, "")), (long long)sizeof bufb);
    ck_assert_int_eq(sample(body, series("te_request_latency_seconds_count", a, "")), 1);
    ck_assert_int_eq(sample(body, series("te_request_latency_seconds_count", b, "")), 3);
    free(body);
    char name_b[512];
    snprintf(name_b, sizeof name_b, "engine=\"%s\"", te_engine_segment_name(b));
    te_engine_destroy(b);
    body = scrape(port);
    ck_assert(prometheus_valid(body));
    ck_assert_ptr_null(strstr(body, name_b));
    ck_assert_int_eq(sample(body, series("te_transport_bytes_total", a, w)), 1111);
    free(body);
    te_engine_destroy(a);
    ck_assert_int_eq(dial(port), -1); /* the last one closed the port */
    /* A new engine opens it again. */
    a = new_engine(bufb, sizeof bufb);
    ck_assert_ptr_nonnull(a);
    body = scrape(port);
    ck_assert_int_eq(sample(body, series("te_transport_bytes_total", a, w)), 0);
    free(body);
    te_engine_destroy(a);
    ck_assert_int_eq(dial(port), -1);
    unsetenv("MC_TE_METRIC_LISTEN");
}
END_TEST

static atomic_int scrapes, scrapers_stop;

static void *scraper(void *arg)
{
    int port = *(int *)arg;
    while (!atomic_load(&scrapers_stop)) {
        char *body = scrape(port);
        ck_assert_msg(prometheus_valid(body), "invalid exposition:\n%s", body);
        free(body);
        atomic_fetch_add(&scrapes, 1);
    }
    return NULL;
}

START_TEST(engines_leave_while_scraped)
{
    int port = listen_on_free_port();
    te_engine *keeper = new_engine(bufb, sizeof bufb); /* keeps the endpoint up */
    ck_assert_ptr_nonnull(keeper);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, scraper, &port), 0);
    for (int round = 0; round < 8; round++) {
        te_engine *e = new_engine(bufc, sizeof bufc);
        ck_assert_ptr_nonnull(e);
        for (int i = 0; i < 20; i++)
            ck_assert_int_eq(xfer_on(e, bufc, TE_OP_WRITE, 0, 4096), 0);
        te_engine_destroy(e);
    }
    atomic_store(&scrapers_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_gt(atomic_load(&scrapes), 2);
    te_engine_destroy(keeper);
    ck_assert_int_eq(dial(port), -1);
    unsetenv("MC_TE_METRIC_LISTEN");
}
END_TEST

/* In a child, its stderr captured: two engines initialize, transfer and go.
 * Returns the child's stderr. */
static char *busy_port_child(int *status)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        /* A hang fails the test as "killed by SIGALRM": Check's own SIGALRM
         * handler, inherited, would kill the whole test with SIGKILL. */
        signal(SIGALRM, SIG_DFL);
        alarm(30);
        te_engine *a = new_engine(bufb, sizeof bufb), *b = new_engine(bufc, sizeof bufc);
        int ok = a && b && xfer_on(a, bufb, TE_OP_WRITE, 0, 100) == 0;
        te_engine_destroy(b);
        te_engine_destroy(a);
        _exit(ok ? 0 : 3);
    }
    close(fds[1]);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while ((n = read(fds[0], buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fds[0]);
    waitpid(pid, status, 0);
    return buf;
}

START_TEST(busy_port_only_warns)
{
    int port = listen_on_free_port();
    int holder = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(holder, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(holder, 4), 0);
    int status = -1;
    char *err = busy_port_child(&status);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "initialize failed with the port held; stderr:\n%s", err);
    int warnings = 0;
    for (char *p = err; (p = strstr(p, "port in use")); p++)
        warnings++;
    ck_assert_msg(warnings == 1, "%d warnings; stderr:\n%s", warnings, err);
    ck_assert_ptr_null(strstr(err, "cannot listen"));
    free(err);
    close(holder);
    unsetenv("MC_TE_METRIC_LISTEN");
}
END_TEST

#ifndef FORK_WITH_THREADS_UNSAFE
/* A child forked while the parent serves starts without the parent's engines
 * or endpoint: its engines find the port busy (the parent's) and go on. */
START_TEST(forked_child_starts_without_the_endpoint)
{
    int port = listen_on_free_port();
    start();
    int status = -1;
    char *err = busy_port_child(&status);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed:\n%s", err);
    ck_assert_ptr_nonnull(strstr(err, "port in use"));
    free(err);
    ck_assert_int_eq(xfer(TE_OP_WRITE, 0, 77), 0);
    char *body = scrape(port); /* the parent's endpoint is untouched */
    ck_assert_int_eq(sample(body, series("te_transport_bytes_total", eng,
                                         "transport=\"testgood\",op=\"write\"")), 77);
    free(body);
    te_engine_destroy(eng);
    ck_assert_int_eq(dial(port), -1);
    unsetenv("MC_TE_METRIC_LISTEN");
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, counters_match_known_transfers);
    tcase_add_test(tc, periodic_report_only_when_asked);
    tcase_add_test(tc, prometheus_endpoint);
    tcase_add_test(tc, one_endpoint_serves_every_engine);
    tcase_add_test(tc, engines_leave_while_scraped);
    tcase_add_test(tc, busy_port_only_warns);
#ifndef FORK_WITH_THREADS_UNSAFE
    tcase_add_test(tc, forked_child_starts_without_the_endpoint);
#endif
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
