/* test_host.c - the stand-in host table of tests that load a plugin
 * themselves (see test_host.h): the members every such test fills alike,
 * and the plugin's te_plugin_init found with dlopen. */
#include "test_host.h"

#include "te/te.h"

#include <check.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char te_test_host_error[1024];

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_log[512]; /* under log_lock */

static void h_log(te_host *h, int level, const char *plugin, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void h_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void h_log(te_host *h, int level, const char *plugin, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&log_lock);
    vsnprintf(last_log, sizeof last_log, fmt, ap);
    pthread_mutex_unlock(&log_lock);
    va_end(ap);
    if (!getenv("TE_TEST_VERBOSE"))
        return;
    va_start(ap, fmt);
    fprintf(stderr, "[%s %d] ", plugin, level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void h_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(te_test_host_error, sizeof te_test_host_error, fmt, ap);
    va_end(ap);
}

static const char *h_config(te_host *h, const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* As core/host.c wires them (ABI 1.3): the engine's one configuration
 * service, so plugins under test read their settings as in an engine. */
static int h_config_int(te_host *h, const char *name, int64_t *out)
{
    return te_config_int(name, out);
}

static int h_config_bool(te_host *h, const char *name, int *out)
{
    return te_config_bool(name, out);
}

static void h_slice_done(te_host *h, te_slice *s, int status) {}

int64_t te_test_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void te_test_host_init(te_host_api *api)
{
    *api = (te_host_api){
        .size = sizeof(te_host_api),
        .abi_major = TE_PLUGIN_ABI_MAJOR,
        .abi_minor = TE_PLUGIN_ABI_MINOR,
        .log = h_log,
        .set_error = h_set_error,
        .config = h_config,
        .slice_done = h_slice_done,
        .now_ns = te_test_now_ns,
        .config_int = h_config_int,
        .config_bool = h_config_bool,
    };
}

bool te_test_host_log_has(const char *what, char *line, size_t len)
{
    pthread_mutex_lock(&log_lock);
    snprintf(line, len, "%s", last_log);
    pthread_mutex_unlock(&log_lock);
    return strstr(line, what) != NULL;
}

te_plugin_init_fn te_test_plugin_init(const char *path, void **handle)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(h != NULL, "dlopen %s: %s", path, dlerror());
    te_plugin_init_fn init;
    *(void **)&init = dlsym(h, TE_PLUGIN_INIT_SYMBOL);
    ck_assert_ptr_nonnull(init);
    if (handle)
        *handle = h;
    return init;
}
