/* test_nvlink_cpu.c - what runs on every machine, GPU or not: the shm_name
 * hex codec; libte_nvlink.so (when built) loading through its ABI and
 * reporting TE_ERR_DEVICE_NOT_FOUND where there is no GPU or no CUDA
 * runtime; initialize(protocol="nvlink") failing with a clear message
 * instead of a crash; te_alloc_device without a GPU. */
#include <check.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_loader.h"
#include "gpu_util.h"
#include "nvlink_hex.h"
#include "test_host.h"
#include "te/plugin.h"
#include "te/te.h"
#include "test_util.h"

/* ---- the hex codec ---------------------------------------------------------- */

START_TEST(hex_round_trip_is_uppercase)
{
    unsigned char in[64], out[64];
    for (int i = 0; i < 64; i++)
        in[i] = (unsigned char)(i * 37 + 11);
    char text[129];
    ck_assert(nvl_hex_encode(in, sizeof in, text, sizeof text));
    ck_assert_uint_eq(strlen(text), 128);
    ck_assert_uint_eq(strspn(text, "0123456789ABCDEF"), 128);
    ck_assert(nvl_hex_decode(text, out, sizeof out));
    ck_assert_mem_eq(in, out, sizeof in);
    unsigned char two[2] = {0x0f, 0xa0};
    ck_assert(nvl_hex_encode(two, 2, text, sizeof text));
    ck_assert_str_eq(text, "0FA0");
}
END_TEST

START_TEST(hex_decode_takes_either_case)
{
    unsigned char b[4];
    ck_assert(nvl_hex_decode("deadBEEF", b, 4));
    ck_assert_uint_eq(b[0], 0xde);
    ck_assert_uint_eq(b[3], 0xef);
}
END_TEST

START_TEST(hex_rejects_bad_text)
{
    unsigned char b[4];
    char small[8];
    ck_assert(!nvl_hex_decode(NULL, b, 4));
    ck_assert(!nvl_hex_decode("", b, 4));
    ck_assert(!nvl_hex_decode("DEADBEE", b, 4));   /* short */
    ck_assert(!nvl_hex_decode("DEADBEEF0", b, 4)); /* long */
    ck_assert(!nvl_hex_decode("DEADBEEG", b, 4));  /* not hex */
    ck_assert(!nvl_hex_decode("DE ADBEE", b, 4));
    ck_assert(!nvl_hex_encode(b, 4, small, sizeof small)); /* 8 digits + NUL do not fit */
    ck_assert(!nvl_hex_encode(b, 4, small, 0));
}
END_TEST

/* ---- the plugin through its ABI (where it is built) -------------------------- */

/* cuda_wait.c's clock (core/clock.c is not linked here), built with
 * or without the nvlink plugin. */
int64_t te_now_ns(void)
{
    return te_test_now_ns();
}

#ifdef TE_NVLINK_BUILT

static int h_host_identity(int with_pid_namespace, char *out, size_t len)
{
    snprintf(out, len, "test-boot/test-host");
    return 0;
}

/* As core/host.c wires it: the loader's one answer. */
static int h_cuda_device_of(const void *addr)
{
    return cudl_device_ordinal(cudl_pointer_attr(), addr);
}

static te_host_api host_api; /* host_api_init() */

static void host_api_init(void)
{
    te_test_host_init(&host_api);
    host_api.cuda_runtime = cudl_open_runtime;
    host_api.cuda_driver = cudl_open_driver;
    host_api.cuda_symbol = cudl_sym;
    host_api.host_identity = h_host_identity;
    host_api.cuda_device_of = h_cuda_device_of;
    host_api.cuda_progress_wait = te_cuda_progress_wait;
}

/* The plugin's init function, from the build tree. */
static te_plugin_init_fn plugin_init_fn(void)
{
    char path[4096];
    const char *dir = getenv("TE_BUILD_DIR");
    snprintf(path, sizeof path, "%s/lib/te-plugins/libte_nvlink.so", dir ? dir : ".");
    void *h;
    te_plugin_init_fn init = te_test_plugin_init(path, &h);
    ck_assert_ptr_null(dlsym(h, "nvl_cu")); /* nothing else leaves the plugin */
    return init;
}

static const te_transport_ops *load_plugin(void)
{
    te_plugin_init_fn init = plugin_init_fn();
    const te_plugin_desc *d;
    ck_assert_int_eq(init(&host_api, &d), 0);
    ck_assert_str_eq(d->name, "nvlink");
    ck_assert_int_eq(d->kind, TE_PLUGIN_TRANSPORT);
    const te_transport_ops *ops = d->ops;
    ck_assert(ops->caps & TE_TRANSPORT_CAP_GPU);
    ck_assert_int_eq(ops->caps & TE_TRANSPORT_CAP_REMOTE, 0);
    return ops;
}

START_TEST(plugin_reports_no_device_without_gpu)
{
    const te_transport_ops *ops = load_plugin();
    te_transport_params params = {.size = sizeof params, .segment_name = "t", .device_filter = ""};
    void *inst = NULL;
    int rc = ops->create(NULL, &params, &inst);
    if (!gpu_unavailable()) { /* a GPU machine: it works */
        ck_assert_int_eq(rc, 0);
        ops->destroy(inst);
        return;
    }
    ck_assert_int_eq(rc, TE_ERR_DEVICE_NOT_FOUND);
    ck_assert_ptr_null(inst);
    ck_assert_msg(strstr(te_test_host_error, "nvlink: ") == te_test_host_error, "error: %s",
                  te_test_host_error);
}
END_TEST

/* nvlink needs the core's CUDA services: a 1.0 host table (without them)
 * is refused at init, never called through a missing member. */
START_TEST(plugin_refuses_host_without_cuda_services)
{
    te_plugin_init_fn init = plugin_init_fn();
    te_host_api old = host_api;
    old.size = (uint32_t)offsetof(te_host_api, cuda_runtime); /* the 1.0 table */
    old.abi_minor = 0;
    const te_plugin_desc *d = NULL;
    ck_assert_int_eq(init(&old, &d), TE_ERR_PLUGIN);
    ck_assert_int_eq(init(&host_api, &d), 0);
}
END_TEST

/* ... and 1.1 and 1.2 tables (without cuda_device_of, cuda_progress_wait)
 * too, with an error naming the newest service it needs and the core's ABI. */
static void expect_refused(te_plugin_init_fn init, size_t size, uint16_t minor, const char *abi)
{
    te_host_api old = host_api;
    old.size = (uint32_t)size;
    old.abi_minor = minor;
    const te_plugin_desc *d = NULL;
    te_test_host_error[0] = '\0';
    ck_assert_int_eq(init(&old, &d), TE_ERR_PLUGIN);
    ck_assert_msg(strstr(te_test_host_error, "cuda_progress_wait") &&
                      strstr(te_test_host_error, abi),
                  "error: %s", te_test_host_error);
}

START_TEST(plugin_refuses_host_without_cuda_device_of)
{
    te_plugin_init_fn init = plugin_init_fn();
    expect_refused(init, offsetof(te_host_api, cuda_device_of), 1, "ABI is 1.1");
    expect_refused(init, offsetof(te_host_api, config_int), 2, "ABI is 1.2");
    const te_plugin_desc *d = NULL;
    ck_assert_int_eq(init(&host_api, &d), 0);
}
END_TEST

START_TEST(plugin_without_cuda_runtime_reports_no_device)
{
    setenv("MC_CUDART_LIBRARY", "/nonexistent/libcudart.so.99", 1);
    const te_transport_ops *ops = load_plugin();
    te_transport_params params = {.size = sizeof params, .segment_name = "t", .device_filter = ""};
    void *inst = NULL;
    ck_assert_int_eq(ops->create(NULL, &params, &inst), TE_ERR_DEVICE_NOT_FOUND);
    ck_assert_ptr_null(inst);
    ck_assert_msg(strstr(te_test_host_error, "cannot be loaded"), "error: %s", te_test_host_error);
}
END_TEST

#endif /* TE_NVLINK_BUILT */

/* ---- the engine ------------------------------------------------------------------ */

START_TEST(initialize_nvlink_fails_cleanly_without_gpu)
{
    if (!gpu_unavailable())
        return; /* the GPU suite covers initialize with a device */
    te_engine *e = te_engine_create();
    ck_assert_ptr_nonnull(e);
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "nvlink", "", NULL);
    /* No device: the plugin says so.  Plugin not built: the loader says so. */
    ck_assert_msg(rc == TE_ERR_DEVICE_NOT_FOUND || rc == TE_ERR_PLUGIN, "rc %d", rc);
    ck_assert_msg(strstr(te_last_error(), "nvlink"), "error: %s", te_last_error());
    ck_assert_ptr_null(te_engine_protocol(e));
    te_engine_destroy(e);
}
END_TEST

START_TEST(alloc_device_without_gpu)
{
    void *p = (void *)1;
    ck_assert_int_eq(te_alloc_device(0, &p), TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(te_free_device(NULL), 0);
    if (!gpu_unavailable()) {
        ck_assert_int_eq(te_alloc_device(1 << 20, &p), 0);
        ck_assert_int_eq(te_free_device(p), 0);
        return;
    }
    ck_assert_int_eq(te_alloc_device(1 << 20, &p), TE_ERR_DEVICE_NOT_FOUND);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(te_last_error(), "te_alloc_device"), "error: %s", te_last_error());
}
END_TEST

START_TEST(alloc_device_without_runtime)
{
    setenv("MC_CUDART_LIBRARY", "/nonexistent/libcudart.so.99", 1);
    void *p = (void *)1;
    ck_assert_int_eq(te_alloc_device(4096, &p), TE_ERR_DEVICE_NOT_FOUND);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(te_last_error(), "no CUDA runtime"), "error: %s", te_last_error());
}
END_TEST

int main(void)
{
#ifdef TE_NVLINK_BUILT
    host_api_init();
#endif
    Suite *s = suite_create("nvlink_cpu");
    TCase *hex = tcase_create("hex");
    tcase_add_test(hex, hex_round_trip_is_uppercase);
    tcase_add_test(hex, hex_decode_takes_either_case);
    tcase_add_test(hex, hex_rejects_bad_text);
    suite_add_tcase(s, hex);
    TCase *plugin = tcase_create("plugin");
    tcase_set_timeout(plugin, 60);
#ifdef TE_NVLINK_BUILT
    tcase_add_test(plugin, plugin_reports_no_device_without_gpu);
    tcase_add_test(plugin, plugin_refuses_host_without_cuda_services);
    tcase_add_test(plugin, plugin_refuses_host_without_cuda_device_of);
    tcase_add_test(plugin, plugin_without_cuda_runtime_reports_no_device);
#else
    printf("note: libte_nvlink.so is not built here (no CUDA toolkit); plugin checks left out\n");
#endif
    tcase_add_test(plugin, initialize_nvlink_fails_cleanly_without_gpu);
    tcase_add_test(plugin, alloc_device_without_gpu);
    tcase_add_test(plugin, alloc_device_without_runtime);
    suite_add_tcase(s, plugin);
    return te_test_run(s);
}
