/* test_rdma_plugin.c - libte_rdma.so on a host without a usable RDMA NIC:
 * its descriptor (name, caps, MC_SLICE_SIZE), create() failing with
 * TE_ERR_DEVICE_NOT_FOUND and a clear message, MC_RDMA_RAIL_PAUSE_SECONDS
 * and MC_AUTO_GID_MAX_RETRIES validation, and an engine asked for
 * "rdma" falling back to tcp. */
#include <check.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "te/plugin.h"
#include "te/te.h"
#include "test_util.h"

static char last_error[1024];
static char warnings[4096]; /* TE_LOG_WARN lines, newline separated */

static void fake_log(te_host *h, int level, const char *plugin, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
    size_t used = strlen(warnings);
    if (level == TE_LOG_WARN && used + strlen(line) + 2 < sizeof warnings)
        snprintf(warnings + used, sizeof warnings - used, "%s\n", line);
}

static void fake_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

static const char *fake_config(te_host *h, const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* As core/host.c wires them (ABI 1.3): the engine's one configuration service. */
static int fake_config_int(te_host *h, const char *name, int64_t *out)
{
    return te_config_int(name, out);
}

static int fake_config_bool(te_host *h, const char *name, int *out)
{
    return te_config_bool(name, out);
}

static int fake_topology(te_host *h, char **json)
{
    *json = NULL;
    return TE_ERR_NOT_IMPLEMENTED;
}

static int64_t fake_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static const te_host_api fake_host = {
    .size = sizeof(te_host_api),
    .abi_major = TE_PLUGIN_ABI_MAJOR,
    .abi_minor = TE_PLUGIN_ABI_MINOR,
    .log = fake_log,
    .set_error = fake_set_error,
    .config = fake_config,
    .topology = fake_topology,
    .now_ns = fake_now,
    .config_int = fake_config_int,
    .config_bool = fake_config_bool,
};

static const te_plugin_desc *load(void **handle)
{
    char path[4096];
    const char *dir = getenv("TE_BUILD_DIR");
    snprintf(path, sizeof path, "%s/lib/te-plugins/libte_rdma.so", dir ? dir : ".");
    *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    ck_assert_msg(*handle, "dlopen %s: %s", path, dlerror());
    te_plugin_init_fn init = (te_plugin_init_fn)dlsym(*handle, TE_PLUGIN_INIT_SYMBOL);
    ck_assert_ptr_nonnull(init);
    const te_plugin_desc *d = NULL;
    ck_assert_int_eq(init(&fake_host, &d), 0);
    return d;
}

START_TEST(descriptor_names_rdma_and_reads_slice_size)
{
    setenv("MC_SLICE_SIZE", "131072", 1);
    void *h;
    const te_plugin_desc *d = load(&h);
    const te_transport_ops *ops = d->ops;
    ck_assert_str_eq(d->name, "rdma");
    ck_assert_int_eq(d->kind, TE_PLUGIN_TRANSPORT);
    ck_assert_int_eq(d->abi_major, TE_PLUGIN_ABI_MAJOR);
    ck_assert_uint_eq(ops->caps, TE_TRANSPORT_CAP_REMOTE | TE_TRANSPORT_CAP_NEEDS_LOCAL_MR);
    /* MC_SLICE_SIZE is per engine (TE_TRANSPORT_CTRL_SLICE_SIZE after
     * create); the table keeps the default. */
    ck_assert_uint_eq(ops->slice_size, 65536);
    ck_assert_ptr_nonnull(ops->ctrl);
    ck_assert_ptr_null(dlsym(h, "rdma_submit")); /* only te_plugin_init is exported */
    ck_assert_ptr_null(dlsym(h, "te_host_table"));
    dlclose(h);
}
END_TEST

START_TEST(create_without_usable_device_fails_clearly)
{
    void *h;
    const te_plugin_desc *d = load(&h);
    const te_transport_ops *ops = d->ops;
    te_transport_params p = {.size = sizeof p, .segment_name = "127.0.0.1:1",
                             .device_filter = "no_such_nic0"};
    void *inst = (void *)1;
    last_error[0] = '\0';
    ck_assert_int_eq(ops->create(NULL, &p, &inst), TE_ERR_DEVICE_NOT_FOUND);
    ck_assert_ptr_null(inst);
    ck_assert_msg(strstr(last_error, "no usable RDMA device"), "message: %s", last_error);
    dlclose(h);
}
END_TEST

/* create() reads the settings before it looks for devices.  A bad value is
 * logged by the engine's configuration service (config_int, ABI 1.3), on
 * stderr: what create() writes there joins `warnings`. */
static void create_with_setting(const te_transport_ops *ops, const char *name, const char *value)
{
    te_transport_params p = {.size = sizeof p, .segment_name = "127.0.0.1:1",
                             .device_filter = "no_such_nic0"};
    void *inst = NULL;
    setenv(name, value, 1);
    warnings[0] = '\0';
    FILE *log = tmpfile();
    ck_assert_ptr_nonnull(log);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(log), STDERR_FILENO);
    int rc = ops->create(NULL, &p, &inst);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(log);
    size_t used = strlen(warnings);
    warnings[used + fread(warnings + used, 1, sizeof warnings - used - 1, log)] = '\0';
    fclose(log);
    fputs(warnings, stderr);
    ck_assert_int_eq(rc, TE_ERR_DEVICE_NOT_FOUND);
    unsetenv(name);
}

/* Bad values warn "NAME=value ... using <def>", good ones do not warn. */
static void check_setting(const char *name, const char *def, const char *const *bad, size_t nbad,
                          const char *const *good, size_t ngood)
{
    void *h;
    const te_plugin_desc *d = load(&h);
    char eq[128], using[64];
    snprintf(eq, sizeof eq, "%s=", name);
    snprintf(using, sizeof using, "using %s", def);
    for (size_t i = 0; i < nbad; i++) {
        create_with_setting(d->ops, name, bad[i]);
        ck_assert_msg(strstr(warnings, eq) && strstr(warnings, using), "no warning for %s=%s: %s",
                      name, bad[i], warnings);
    }
    for (size_t i = 0; i < ngood; i++) {
        create_with_setting(d->ops, name, good[i]);
        ck_assert_msg(!strstr(warnings, name), "warning for %s=%s: %s", name, good[i], warnings);
    }
    dlclose(h);
}

START_TEST(rail_pause_setting_is_validated)
{
    const char *bad[] = {"abc", "-1", "86401", "30s", "1e3"};
    const char *good[] = {"0", "1", "30", "86400"};
    check_setting("MC_RDMA_RAIL_PAUSE_SECONDS", "30", bad, 5, good, 4);
}
END_TEST

START_TEST(gid_retries_setting_is_validated)
{
    const char *bad[] = {"abc", "-1", "1001", "2x", "1e2"};
    const char *good[] = {"0", "1", "2", "1000"};
    check_setting("MC_AUTO_GID_MAX_RETRIES", "2", bad, 5, good, 4);
}
END_TEST

START_TEST(engine_asked_for_rdma_falls_back_to_tcp)
{
    setenv("MC_TE_FILTERS", "no_such_nic0", 1);
    te_engine *e = te_engine_create();
    ck_assert_int_eq(te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "rdma", "", NULL), 0);
    ck_assert_str_eq(te_engine_protocol(e), "tcp");
    te_engine_destroy(e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rdma_plugin");
    TCase *tc = tcase_create("no_device");
    tcase_add_test(tc, descriptor_names_rdma_and_reads_slice_size);
    tcase_add_test(tc, create_without_usable_device_fails_clearly);
    tcase_add_test(tc, rail_pause_setting_is_validated);
    tcase_add_test(tc, gid_retries_setting_is_validated);
    tcase_add_test(tc, engine_asked_for_rdma_falls_back_to_tcp);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
