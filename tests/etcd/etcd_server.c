/* etcd_server.c - fork/exec of Debian's etcd on loopback ports for tests,
 * health polling, cleanup (the members die with the test process through
 * PR_SET_PDEATHSIG and an atexit hook), and direct v3 gateway calls. */
#include "etcd_server.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "etcd_base64.h"

static etcd_test_cluster *g_live; /* for the atexit hook */

double etcd_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const char *etcd_binary(void)
{
    static char path[1024];
    const char *env = getenv("TE_ETCD_BIN");
    if (env && *env)
        return access(env, X_OK) == 0 ? env : NULL;
    const char *p = getenv("PATH");
    char copy[4096];
    snprintf(copy, sizeof copy, "%s:/usr/bin:/usr/local/bin", p ? p : "");
    char *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, sizeof path, "%s/etcd", d);
        if (access(path, X_OK) == 0)
            return path;
    }
    return NULL;
}

void etcd_test_require(void)
{
    if (etcd_binary())
        return;
    printf("SKIP: no etcd binary found (install Debian's etcd-server, or set TE_ETCD_BIN)\n");
    fflush(stdout);
    exit(ETCD_TEST_SKIP);
}

uint16_t etcd_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    uint16_t port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

const char *etcd_test_url(const etcd_test_cluster *c, int i, char *out, size_t len)
{
    snprintf(out, len, "http://127.0.0.1:%u", c->m[i].client_port);
    return out;
}

/* ---- processes ------------------------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}


static void initial_cluster(const etcd_test_cluster *c, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < c->count; i++)
        used += (size_t)snprintf(out + used, len - used, "%sm%d=http://127.0.0.1:%u",
                                 i ? "," : "", i, c->m[i].peer_port);
}

static void exec_member(const etcd_test_cluster *c, int i)
{
    char name[16], data[320], log[320], client[64], peer[64], cluster[512];
    snprintf(name, sizeof name, "m%d", i);
    snprintf(data, sizeof data, "%s/m%d.etcd", c->dir, i);
    snprintf(log, sizeof log, "%s/m%d.log", c->dir, i);
    snprintf(client, sizeof client, "http://127.0.0.1:%u", c->m[i].client_port);
    snprintf(peer, sizeof peer, "http://127.0.0.1:%u", c->m[i].peer_port);
    initial_cluster(c, cluster, sizeof cluster);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    const char *argv[] = {etcd_binary(), "--name", name, "--data-dir", data,
                          "--listen-client-urls", client, "--advertise-client-urls", client,
                          "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                          "--initial-cluster", cluster, "--initial-cluster-state", "new",
                          "--initial-cluster-token", c->token, "--max-request-bytes", "8388608",
                          NULL};
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

static int spawn(etcd_test_cluster *c, int i)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0)
        exec_member(c, i);
    c->m[i].pid = pid;
    return 0;
}

static void print_log(const etcd_test_cluster *c, int i)
{
    char path[320], line[1024];
    snprintf(path, sizeof path, "%s/m%d.log", c->dir, i);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fprintf(stderr, "---- etcd member %d log (%s) ----\n", i, path);
    long n = 0;
    while (fgets(line, sizeof line, f) && n++ < 200)
        fputs(line, stderr);
    fclose(f);
}

static size_t sink(char *p, size_t s, size_t n, void *arg)
{
    char *buf = arg;
    size_t have = strlen(buf), add = s * n;
    size_t take = add < 255 - have ? add : 255 - have;
    memcpy(buf + have, p, take);
    buf[have + take] = '\0';
    return add;
}

static bool healthy(const etcd_test_cluster *c, int i)
{
    char url[128], body[256] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%u/health", c->m[i].client_port);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)body); /* an array trips curl's type check */
    CURLcode cc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    return cc == CURLE_OK && strstr(body, "\"health\":\"true\"");
}

static int wait_healthy(etcd_test_cluster *c, int i)
{
    double end = etcd_test_now() + 20;
    while (etcd_test_now() < end) {
        if (healthy(c, i))
            return 0;
        if (waitpid(c->m[i].pid, NULL, WNOHANG) == c->m[i].pid) {
            fprintf(stderr, "etcd member %d exited at start\n", i);
            c->m[i].pid = 0;
            print_log(c, i);
            return -1;
        }
        sleep_ms(100);
    }
    fprintf(stderr, "etcd member %d not healthy after 20 s\n", i);
    print_log(c, i);
    return -1;
}

/* A process that removes the temp folder once the test process is gone,
 * even when it dies without cleaning up (Check's failure path _exit()s and
 * kills the process group; the members die through PR_SET_PDEATHSIG). */
static int start_janitor(etcd_test_cluster *c)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC))
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setpgid(0, 0); /* Check kills the test's process group when a test ends */
        close(fds[1]);
        char b;
        while (read(fds[0], &b, 1) < 0 && errno == EINTR)
            ;
        sleep_ms(500); /* let the members die first */
        rm_rf(c->dir);
        _exit(0);
    }
    close(fds[0]);
    c->janitor_fd = fds[1];
    c->janitor_pid = pid;
    return 0;
}

static void at_exit_stop(void)
{
    if (g_live)
        etcd_test_stop(g_live);
}

int etcd_test_start(etcd_test_cluster *c, int count)
{
    memset(c, 0, sizeof *c);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(c->dir, sizeof c->dir, "/tmp/te-etcd-XXXXXX");
    if (count < 1 || count > ETCD_TEST_MAX_MEMBERS || !mkdtemp(c->dir)) {
        c->dir[0] = '\0';
        return -1;
    }
    c->count = count;
    if (start_janitor(c)) {
        rm_rf(c->dir);
        c->dir[0] = '\0';
        return -1;
    }
    snprintf(c->token, sizeof c->token, "te-test-%d-%ld", (int)getpid(), (long)time(NULL));
    size_t used = 0;
    for (int i = 0; i < count; i++) {
        c->m[i].client_port = etcd_test_free_port();
        c->m[i].peer_port = etcd_test_free_port();
        used += (size_t)snprintf(c->endpoints + used, sizeof c->endpoints - used,
                                 "%s127.0.0.1:%u", i ? "," : "", c->m[i].client_port);
    }
    if (!g_live)
        atexit(at_exit_stop);
    g_live = c;
    for (int i = 0; i < count; i++)
        if (spawn(c, i)) {
            etcd_test_stop(c);
            return -1;
        }
    for (int i = 0; i < count; i++)
        if (wait_healthy(c, i)) {
            etcd_test_stop(c);
            return -1;
        }
    return 0;
}

void etcd_test_kill(etcd_test_cluster *c, int i, int sig)
{
    if (c->m[i].pid <= 0)
        return;
    kill(c->m[i].pid, sig);
    double end = etcd_test_now() + 10;
    while (waitpid(c->m[i].pid, NULL, WNOHANG) == 0) {
        if (etcd_test_now() > end) {
            kill(c->m[i].pid, SIGKILL);
            waitpid(c->m[i].pid, NULL, 0);
            break;
        }
        sleep_ms(20);
    }
    c->m[i].pid = 0;
}

int etcd_test_restart(etcd_test_cluster *c, int i, bool wipe)
{
    etcd_test_kill(c, i, SIGKILL);
    if (wipe) {
        char data[320];
        snprintf(data, sizeof data, "%s/m%d.etcd", c->dir, i);
        rm_rf(data);
        snprintf(c->token, sizeof c->token, "te-test-%d-%ld-w", (int)getpid(), (long)time(NULL));
    }
    if (spawn(c, i))
        return -1;
    return wait_healthy(c, i);
}

void etcd_test_stop(etcd_test_cluster *c)
{
    for (int i = 0; i < c->count; i++)
        etcd_test_kill(c, i, SIGTERM);
    if (c->dir[0])
        rm_rf(c->dir);
    c->dir[0] = '\0';
    if (c->janitor_pid > 0) { /* nothing left for it to do */
        kill(c->janitor_pid, SIGKILL);
        close(c->janitor_fd);
        waitpid(c->janitor_pid, NULL, 0);
        c->janitor_pid = 0;
    }
    c->count = 0;
    if (g_live == c)
        g_live = NULL;
}

/* ---- direct gateway calls -------------------------------------------------- */

typedef struct body_buf {
    char *data;
    size_t len;
} body_buf;

static size_t grow(char *p, size_t s, size_t n, void *arg)
{
    body_buf *b = arg;
    char *d = realloc(b->data, b->len + s * n + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, s * n);
    b->data = d;
    b->len += s * n;
    d[b->len] = '\0';
    return s * n;
}

/* POSTs a JSON object (consumed) and returns the parsed reply, or NULL. */
static json_t *post(const char *url, const char *path, json_t *body)
{
    char full[512], *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    snprintf(full, sizeof full, "%s%s", url, path);
    body_buf b = {0};
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, grow);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    long code = 0;
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    free(text);
    json_t *r = cc == CURLE_OK && code == 200 && b.data ? json_loads(b.data, 0, NULL) : NULL;
    free(b.data);
    return r;
}

int etcd_test_get(const char *url, const char *key, char **value)
{
    char *k = etcd_b64_encode(key, strlen(key));
    json_t *r = post(url, "/v3/kv/range", json_pack("{s:s}", "key", k));
    free(k);
    if (!r)
        return -1;
    json_t *kv = json_array_get(json_object_get(r, "kvs"), 0);
    int rc = 1;
    if (kv) {
        json_t *v = json_object_get(kv, "value");
        size_t len;
        rc = etcd_b64_decode(v ? json_string_value(v) : "", value, &len) ? -1 : 0;
    }
    json_decref(r);
    return rc;
}

int etcd_test_put(const char *url, const char *key, const char *value)
{
    char *k = etcd_b64_encode(key, strlen(key)), *v = etcd_b64_encode(value, strlen(value));
    json_t *r = post(url, "/v3/kv/put", json_pack("{s:s, s:s}", "key", k, "value", v));
    free(k);
    free(v);
    json_decref(r);
    return r ? 0 : -1;
}

int etcd_test_revoke_all(const char *url)
{
    json_t *r = post(url, "/v3/lease/leases", json_object());
    if (!r)
        return -1;
    json_t *leases = json_object_get(r, "leases"), *l;
    size_t i;
    int n = 0;
    json_array_foreach(leases, i, l)
    {
        json_t *id = json_object_get(l, "ID");
        json_t *rr = post(url, "/v3/lease/revoke", json_pack("{s:O}", "ID", id));
        n += rr != NULL;
        json_decref(rr);
    }
    json_decref(r);
    return n;
}

double etcd_test_wait_key(const char *url, const char *key, bool want_present, double timeout_s)
{
    double start = etcd_test_now();
    while (etcd_test_now() - start < timeout_s) {
        char *v = NULL;
        int rc = etcd_test_get(url, key, &v);
        free(v);
        if ((rc == 0) == want_present && rc >= 0)
            return etcd_test_now() - start;
        sleep_ms(100);
    }
    return -1;
}
