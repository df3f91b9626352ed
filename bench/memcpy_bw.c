/* memcpy_bw.c - te-memcpy-bw, bench/run.sh's baselines: single-thread memcpy
 * in te-bench's block pattern, (--vm_writev) the kernel's process_vm_writev
 * of one block per call into another process in the same pattern (what shm
 * is made of), and (--pingpong) a raw TCP ping-pong over 127.0.0.1 between
 * two processes. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct opts {
    uint64_t block, batch, buffer, size;
    double duration;
    bool json, pingpong, vm_writev;
} opts;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int parse(int argc, char **argv, opts *o)
{
    *o = (opts){.block = 65536, .batch = 128, .buffer = 256ull << 20, .size = 64, .duration = 5};
    for (int i = 1; i < argc; i++) {
        char name[32];
        const char *a = argv[i], *v = NULL, *eq = strchr(a, '=');
        if (strncmp(a, "--", 2))
            return -1;
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a - 2) : (int)strlen(a + 2), a + 2);
        if (!strcmp(name, "json") || !strcmp(name, "pingpong") || !strcmp(name, "vm_writev")) {
            *(!strcmp(name, "json") ? &o->json : !strcmp(name, "pingpong") ? &o->pingpong
                                                                            : &o->vm_writev) = true;
            continue;
        }
        v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!v)
            return -1;
        uint64_t n = strtoull(v, NULL, 0);
        if (!strcmp(name, "block_size"))
            o->block = n;
        else if (!strcmp(name, "batch_size"))
            o->batch = n;
        else if (!strcmp(name, "buffer_size"))
            o->buffer = n;
        else if (!strcmp(name, "size"))
            o->size = n;
        else if (!strcmp(name, "duration"))
            o->duration = strtod(v, NULL);
        else
            return -1;
    }
    return o->block && o->batch && o->size && o->size <= 65536 && o->duration > 0 ? 0 : -1;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- memcpy -------------------------------------------------------------- */

static void *populated(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 1, len);
    return p;
}

static int run_memcpy(const opts *o)
{
    uint64_t n = o->batch, region = o->block * n;
    if (region > o->buffer) { /* te-bench reduces its batch the same way */
        n = o->buffer / o->block ? o->buffer / o->block : 1;
        region = o->block * n;
    }
    char *src = populated(region), *dst = populated(region);
    if (!src || !dst)
        return fprintf(stderr, "te-memcpy-bw: cannot allocate 2 x %" PRIu64 " bytes\n", region), 1;
    uint64_t bytes = 0;
    int64_t start = now_ns(), end = start + (int64_t)(o->duration * 1e9), t = start;
    while (t < end) {
        for (uint64_t j = 0; j < n; j++)
            memcpy(dst + j * o->block, src + j * o->block, o->block);
        __asm__ __volatile__("" : : "r"(dst) : "memory"); /* keep the copies */
        bytes += region;
        t = now_ns();
    }
    double s = (double)(t - start) / 1e9, gbps = (double)bytes / s / 1e9;
    if (o->json)
        printf("{\"mode\":\"memcpy\",\"block_size\":%" PRIu64 ",\"batch_size\":%" PRIu64
               ",\"threads\":1,\"duration_s\":%.3f,\"throughput_gbps\":%.4f}\n",
               o->block, n, s, gbps);
    else
        printf("memcpy: block %" PRIu64 ", %" PRIu64 " blocks, 1 thread: %.3f GB/s\n", o->block,
               n, gbps);
    return 0;
}

/* ---- process_vm_writev ----------------------------------------------------- */

/* A child holds the destination (its own pages, touched before it says it
 * is ready); the parent writes one block per process_vm_writev call, one
 * iovec on each side, at the blocks' distinct offsets. */
static int run_vm_writev(const opts *o)
{
    uint64_t n = o->batch, region = o->block * n;
    if (region > o->buffer) {
        n = o->buffer / o->block ? o->buffer / o->block : 1;
        region = o->block * n;
    }
    char *src = populated(region);
    char *dst = mmap(NULL, region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int ready[2];
    if (!src || dst == MAP_FAILED || pipe(ready))
        return fprintf(stderr, "te-memcpy-bw: cannot allocate 2 x %" PRIu64 " bytes\n", region), 1;
    pid_t pid = fork();
    if (pid == 0) {
        memset(dst, 2, region);
        char c = 1;
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char c;
    if (pid < 0 || read(ready[0], &c, 1) != 1)
        return fprintf(stderr, "te-memcpy-bw: cannot start the target process\n"), 1;
    uint64_t bytes = 0, calls = 0;
    int64_t start = now_ns(), end = start + (int64_t)(o->duration * 1e9), t = start;
    int rc = 0;
    while (t < end && !rc) {
        for (uint64_t j = 0; j < n; j++) {
            struct iovec l = {src + j * o->block, o->block}, r = {dst + j * o->block, o->block};
            ssize_t got = process_vm_writev(pid, &l, 1, &r, 1, 0);
            if (got != (ssize_t)o->block) {
                perror("te-memcpy-bw: process_vm_writev");
                rc = 1;
                break;
            }
        }
        bytes += region;
        calls += n;
        t = now_ns();
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (rc)
        return rc;
    double s = (double)(t - start) / 1e9, gbps = (double)bytes / s / 1e9;
    if (o->json)
        printf("{\"mode\":\"vm_writev\",\"block_size\":%" PRIu64 ",\"batch_size\":%" PRIu64
               ",\"threads\":1,\"duration_s\":%.3f,\"throughput_gbps\":%.4f,"
               "\"calls_per_sec\":%.1f}\n",
               o->block, n, s, gbps, (double)calls / s);
    else
        printf("process_vm_writev: block %" PRIu64 " per call, %" PRIu64
               " blocks, 1 thread: %.3f GB/s, %.0f calls/s\n",
               o->block, n, gbps, (double)calls / s);
    return 0;
}

/* ---- TCP ping-pong ----------------------------------------------------------- */

static int full_io(int fd, char *buf, size_t len, bool send_it)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = send_it ? send(fd, buf + done, len - done, MSG_NOSIGNAL)
                            : recv(fd, buf + done, len - done, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void echo_server(int lfd, size_t size)
{
    int fd = accept(lfd, NULL, NULL);
    char buf[65536];
    if (fd < 0)
        _exit(1);
    nodelay(fd);
    while (full_io(fd, buf, size, false) == 0 && full_io(fd, buf, size, true) == 0)
        ;
    _exit(0);
}

static int listen_any(uint16_t *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 1) ||
        getsockname(fd, (struct sockaddr *)&a, &len))
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

static int run_pingpong(const opts *o)
{
    uint16_t port;
    int lfd = listen_any(&port);
    if (lfd < 0)
        return perror("te-memcpy-bw: listen"), 1;
    pid_t pid = fork();
    if (pid == 0)
        echo_server(lfd, o->size);
    close(lfd);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a))
        return perror("te-memcpy-bw: connect"), kill(pid, SIGKILL), 1;
    nodelay(fd);
    size_t cap = 1 << 16, n = 0;
    int64_t *rtt = malloc(cap * sizeof *rtt);
    char buf[65536] = {0};
    int64_t start = now_ns(), end = start + (int64_t)(o->duration * 1e9), t = start;
    while (rtt && t < end) {
        int64_t t0 = now_ns();
        if (full_io(fd, buf, o->size, true) || full_io(fd, buf, o->size, false))
            break;
        t = now_ns();
        if (n == cap) {
            int64_t *m = realloc(rtt, 2 * cap * sizeof *rtt);
            if (!m)
                break;
            rtt = m;
            cap *= 2;
        }
        rtt[n++] = t - t0;
    }
    close(fd);
    waitpid(pid, NULL, 0);
    if (!n)
        return fprintf(stderr, "te-memcpy-bw: no round trip completed\n"), 1;
    qsort(rtt, n, sizeof *rtt, cmp_i64);
    double p50 = (double)rtt[n / 2] / 1e3, p99 = (double)rtt[(size_t)((double)n * 0.99)] / 1e3;
    double s = (double)(t - start) / 1e9;
    if (o->json)
        printf("{\"mode\":\"pingpong\",\"size\":%" PRIu64 ",\"round_trips\":%zu,"
               "\"per_sec\":%.1f,\"p50_us\":%.3f,\"p99_us\":%.3f}\n",
               o->size, n, (double)n / s, p50, p99);
    else
        printf("tcp ping-pong %" PRIu64 " B: %zu round trips, p50 %.2f us, p99 %.2f us\n",
               o->size, n, p50, p99);
    free(rtt);
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse(argc, argv, &o)) {
        fprintf(stderr, "usage: te-memcpy-bw [--vm_writev] [--block_size N] [--batch_size N] "
                        "[--buffer_size N] [--duration S] [--json]\n"
                        "       te-memcpy-bw --pingpong [--size N<=65536] [--duration S] "
                        "[--json]\n");
        return 2;
    }
    return o.pingpong ? run_pingpong(&o) : o.vm_writev ? run_vm_writev(&o) : run_memcpy(&o);
}
