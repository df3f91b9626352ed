/* gpu_util.c - the GPU tests' skip rule, their CUDA runtime (dlopen) and
 * the te-gpu-peer driver. */
#include "gpu_util.h"

#include <dlfcn.h>
#include <errno.h>
#include <glob.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

static struct {
    int (*get_device_count)(int *n);
    const char *(*error_string)(int err);
    int (*malloc_fn)(void **p, size_t n);
    int (*free_fn)(void *p);
    int (*memcpy_fn)(void *dst, const void *src, size_t n, int kind);
    int (*memset_async)(void *p, int v, size_t n, void *stream);
    int (*device_synchronize)(void);
    int (*launch_host_func)(void *stream, void (*fn)(void *), void *arg);
} rt;

static bool sym(void *h, const char *name, void *fn)
{
    void *f = dlsym(h, name);
    if (f)
        memcpy(fn, &f, sizeof f);
    return f != NULL;
}

int gpu_load(void)
{
    if (rt.malloc_fn)
        return 0;
    const char *names[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so"};
    void *h = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names && !h; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h || !sym(h, "cudaGetDeviceCount", &rt.get_device_count) ||
        !sym(h, "cudaGetErrorString", &rt.error_string) || !sym(h, "cudaMalloc", &rt.malloc_fn) ||
        !sym(h, "cudaFree", &rt.free_fn) || !sym(h, "cudaMemcpy", &rt.memcpy_fn) ||
        !sym(h, "cudaMemsetAsync", &rt.memset_async) ||
        !sym(h, "cudaDeviceSynchronize", &rt.device_synchronize) ||
        !sym(h, "cudaLaunchHostFunc", &rt.launch_host_func)) {
        rt.malloc_fn = NULL;
        return -1;
    }
    return 0;
}

/* Child side of the probe: exit 0 if a device is usable, else print why. */
static void probe_child(int fd)
{
    int n = 0, err;
    char why[256] = "";
    if (gpu_load())
        snprintf(why, sizeof why, "no CUDA runtime (libcudart.so.13/.12) can be loaded");
    else if ((err = rt.get_device_count(&n)) != 0)
        snprintf(why, sizeof why, "cudaGetDeviceCount failed: %s", rt.error_string(err));
    else if (n == 0)
        snprintf(why, sizeof why, "cudaGetDeviceCount reports no device");
    ssize_t w = write(fd, why, strlen(why));
    (void)w;
    _exit(why[0] ? 1 : 0);
}

const char *gpu_unavailable(void)
{
    static char why[300];
    glob_t g;
    bool nodes = glob("/dev/nvidia[0-9]*", 0, NULL, &g) == 0 && g.gl_pathc > 0;
    globfree(&g);
    if (getenv("TE_TEST_FAKE_CUDA")) /* the fake CUDA of tests/gpu (fake_cuda.c) */
        nodes = true;
    if (!nodes)
        return "no NVIDIA GPU here (no /dev/nvidia* device nodes)";
    int fds[2];
    if (pipe(fds))
        return "cannot probe for a GPU (pipe failed)";
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        probe_child(fds[1]);
    }
    close(fds[1]);
    ssize_t n = pid > 0 ? read(fds[0], why, sizeof why - 1) : -1;
    close(fds[0]);
    int status = -1;
    if (pid > 0)
        waitpid(pid, &status, 0);
    if (pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return NULL;
    why[n > 0 ? n : 0] = '\0';
    return why[0] ? why : "the GPU probe crashed";
}

void gpu_require(void)
{
    const char *why = gpu_unavailable();
    if (why) {
        printf("SKIP: %s\n", why);
        fflush(stdout);
        exit(GPU_SKIP);
    }
}

void *gpu_alloc(size_t n)
{
    void *p = NULL;
    return rt.malloc_fn(&p, n) == 0 ? p : NULL;
}

void gpu_free(void *p)
{
    if (p)
        rt.free_fn(p);
}

int gpu_put(void *dev_dst, const void *host_src, size_t n)
{
    return rt.memcpy_fn(dev_dst, host_src, n, 1 /* cudaMemcpyHostToDevice */);
}

int gpu_get(void *host_dst, const void *dev_src, size_t n)
{
    return rt.memcpy_fn(host_dst, dev_src, n, 2 /* cudaMemcpyDeviceToHost */);
}

int gpu_memset_async(void *dev, int value, size_t n)
{
    return rt.memset_async(dev, value, n, NULL);
}

int gpu_sync(void)
{
    return rt.device_synchronize();
}

static void sleep_ms(void *arg)
{
    int ms = (int)(intptr_t)arg;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int gpu_block_default_stream(int ms)
{
    return rt.launch_host_func(NULL, sleep_ms, (void *)(intptr_t)ms);
}

/* ---- te-gpu-peer ------------------------------------------------------------- */

int gpu_peer_start(gpu_peer *p, const char *const *args)
{
    return te_test_child_start(p, "te-gpu-peer", args, 60000, 3);
}

int gpu_peer_cmd(gpu_peer *p, const char *cmd, char *reply, size_t reply_len)
{
    char tmp[1024];
    if (!reply) {
        reply = tmp;
        reply_len = sizeof tmp;
    }
    return te_test_peer_cmd(p, cmd, reply, reply_len) || strcmp(reply, "OK") ? -1 : 0;
}

void gpu_peer_stop(gpu_peer *p)
{
    te_test_peer_stop(p);
}
