/* te-bench.c - the equivalent of Mooncake's transfer_engine_bench: a target
 * that registers a buffer and waits, an initiator that measures transfers to
 * it, and a loopback mode that runs both so one command needs no servers. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "te_bench.h"

static te_engine *start_engine(const bench_opts *o)
{
    te_engine *e = te_engine_create();
    if (!e) {
        fprintf(stderr, "te-bench: out of memory\n");
        return NULL;
    }
    int rc = te_engine_initialize(e, o->local_server_name, o->metadata_server, o->protocol,
                                  o->device_name, NULL);
    if (rc) {
        fprintf(stderr, "te-bench: initialize (%s, %s, %s) failed: %s: %s\n",
                o->local_server_name, o->metadata_server, o->protocol, te_strerror(rc),
                te_last_error());
        te_engine_destroy(e);
        return NULL;
    }
    return e;
}

static char *alloc_registered(te_engine *e, uint64_t len)
{
    char *buf = bench_alloc(len);
    if (!buf) {
        fprintf(stderr, "te-bench: cannot allocate %" PRIu64 " bytes (--buffer_size)\n", len);
        return NULL;
    }
    int rc = te_register_memory(e, buf, len, NULL);
    if (rc) {
        fprintf(stderr, "te-bench: register_memory failed: %s: %s\n", te_strerror(rc),
                te_last_error());
        bench_free(buf, len);
        return NULL;
    }
    return buf;
}

/* ---- target ---------------------------------------------------------------- */

/* Sleeps until SIGINT/SIGTERM, or until the loopback initiator closes the
 * control socket (or dies: the socket closes with it). */
static void wait_for_end(int sfd, int control_fd)
{
    struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = control_fd, .events = POLLIN}};
    for (;;) {
        int n = poll(p, control_fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || p[0].revents)
            return;
        if (control_fd >= 0 && p[1].revents) {
            char c;
            if (read(control_fd, &c, 1) <= 0)
                return;
        }
    }
}

static int run_target(const bench_opts *o)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* engine threads inherit the mask */
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    te_engine *e = start_engine(o);
    char *buf = e ? alloc_registered(e, o->buffer_size) : NULL;
    if (!buf) {
        if (o->control_fd >= 0)
            dprintf(o->control_fd, "FAIL %s\n", te_last_error());
        te_engine_destroy(e);
        return 1;
    }
    const char *name = te_engine_segment_name(e);
    if (o->control_fd >= 0)
        dprintf(o->control_fd, "READY %s\n", name);
    else
        printf("te-bench target: segment %s, %" PRIu64 " bytes registered, protocol %s\n"
               "run: te-bench --segment_id %s --protocol %s [--operation write]\n"
               "Ctrl-C to stop.\n",
               name, o->buffer_size, te_engine_protocol(e), name, o->protocol);
    fflush(stdout);
    wait_for_end(sfd, o->control_fd);
    te_unregister_memory(e, buf);
    te_engine_destroy(e);
    bench_free(buf, o->buffer_size);
    close(sfd);
    return 0;
}

/* ---- initiator --------------------------------------------------------------- */

/* --metrics: the engine's counters, as one JSON line ({"metrics": ...}) with
 * --json, else after a heading. */
static void print_metrics(const bench_opts *o, te_engine *e)
{
    char *json = NULL;
    int rc = te_get_metrics(e, &json);
    if (rc) {
        fprintf(stderr, "te-bench: no metrics: %s\n", te_strerror(rc));
        return;
    }
    if (o->json)
        printf("{\"metrics\":%s}\n", json);
    else
        printf("engine metrics: %s\n", json);
    te_free(json);
}

/* The bytes each transport carried (te_get_metrics' per-transport
 * counters): the engine chooses per request, so this is what was used.
 * Text output only: with --json, --metrics carries the same counters. */
static void print_carried(const bench_opts *o, te_engine *e)
{
    char *json = NULL;
    if (o->json || te_get_metrics(e, &json))
        return;
    const char *p = strstr(json, "\"transports\":{");
    p = p ? p + strlen("\"transports\":{") : NULL;
    printf("bytes carried per transport:");
    char name[64];
    unsigned long long rb, r, wb, w;
    int used, first = 1;
    while (p && sscanf(p, "\"%63[^\"]\":{\"read_bytes\":%llu,\"reads\":%llu,\"write_bytes\":"
                          "%llu,\"writes\":%llu}%n",
                       name, &rb, &r, &wb, &w, &used) == 5) {
        printf("%s %s %.3f GB", first ? "" : ",", name, (double)(rb + wb) / 1e9);
        first = 0;
        p += used;
        p += *p == ',';
    }
    printf("\n");
    te_free(json);
}

/* --load_cuda: the CUDA runtime in this process, as in an SGLang or vLLM
 * worker, so the figures show which transports such a process gets. */
static void load_cuda(void)
{
    void *p = NULL;
    int rc = te_alloc_device(4096, &p);
    if (rc)
        fprintf(stderr, "te-bench: --load_cuda: no CUDA here (%s): %s\n", te_strerror(rc),
                te_last_error());
    else
        te_free_device(p);
}

static int run_initiator(const bench_opts *o, const char *segment)
{
    bench_target t = {.segment = segment};
    if (o->load_cuda)
        load_cuda();
    t.eng = start_engine(o);
    if (!t.eng)
        return 1;
    int rc = te_segment_open(t.eng, segment, &t.seg);
    if (!rc)
        rc = te_segment_buffer(t.eng, t.seg, 0, &t.remote, &t.remote_len);
    if (rc) {
        fprintf(stderr, "te-bench: cannot use segment %s: %s: %s\n", segment, te_strerror(rc),
                te_last_error());
        te_engine_destroy(t.eng);
        return 1;
    }
    t.local_len = o->buffer_size;
    t.local = alloc_registered(t.eng, t.local_len);
    int failed = t.local ? bench_run_all(o, &t) : 1;
    if (t.local)
        print_carried(o, t.eng);
    if (o->metrics)
        print_metrics(o, t.eng);
    if (t.local)
        te_unregister_memory(t.eng, t.local);
    te_engine_destroy(t.eng);
    bench_free(t.local, t.local_len);
    return failed;
}

/* ---- loopback: our own target in a child process ------------------------------- */

typedef struct child {
    pid_t pid;
    int fd;
    char segment[512];
} child;

static int read_line(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t n = 0;
    while (n + 1 < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || read(fd, buf + n, 1) != 1)
            return -1;
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = '\0';
    return 0;
}

static void exec_target(const bench_opts *o, int fd)
{
    char exe[4096], size[32], fdtext[16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        _exit(127);
    exe[n] = '\0';
    snprintf(size, sizeof size, "%" PRIu64, o->buffer_size);
    snprintf(fdtext, sizeof fdtext, "%d", fd);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    char *argv[] = {exe, "--mode=target", "--protocol", (char *)o->protocol,
                    "--metadata_server", (char *)o->metadata_server, "--local_server_name",
                    (char *)o->local_server_name, "--device_name", (char *)o->device_name,
                    "--buffer_size", size, "--control_fd", fdtext, NULL};
    execv(exe, argv);
    _exit(127);
}

static int start_child(const bench_opts *o, child *c)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return -1;
    c->pid = fork();
    if (c->pid < 0)
        return -1;
    if (c->pid == 0) {
        fcntl(sv[1], F_SETFD, 0); /* the one descriptor the target keeps */
        exec_target(o, sv[1]);
    }
    close(sv[1]);
    c->fd = sv[0];
    char line[600];
    if (read_line(c->fd, line, sizeof line, 60000) || strncmp(line, "READY ", 6) ||
        strlen(line + 6) >= sizeof c->segment) {
        fprintf(stderr, "te-bench: the loopback target did not start (%s)\n",
                strncmp(line, "FAIL ", 5) ? "no answer" : line + 5);
        return -1;
    }
    snprintf(c->segment, sizeof c->segment, "%s", line + 6);
    return 0;
}

/* Closing the socket asks the target to exit; it is killed if it does not. */
static void stop_child(child *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->pid <= 0)
        return;
    for (int i = 0; i < 500; i++) {
        if (waitpid(c->pid, NULL, WNOHANG) == c->pid)
            return;
        usleep(10000);
    }
    kill(c->pid, SIGKILL);
    waitpid(c->pid, NULL, 0);
}

static int run_loopback(const bench_opts *o)
{
    child c = {.pid = -1, .fd = -1};
    int rc = 1;
    if (start_child(o, &c) == 0)
        rc = run_initiator(o, c.segment);
    stop_child(&c);
    return rc;
}

int main(int argc, char **argv)
{
    bench_opts o;
    int rc = bench_parse(argc, argv, &o);
    if (rc || o.help) {
        bench_usage(rc ? stderr : stdout);
        return rc;
    }
    if (o.help_env) {
        bench_help_env(stdout);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    if (o.register_only[0]) {
        te_engine *e = start_engine(&o);
        rc = e ? bench_register_only(&o, e) : 1;
        te_engine_destroy(e);
        return rc;
    }
    switch (o.mode) {
    case BENCH_TARGET:
        return run_target(&o);
    case BENCH_LOOPBACK:
        return run_loopback(&o);
    default:
        return run_initiator(&o, o.segment_id);
    }
}
