/* test_units_config.c - the typed configuration service (core/config.c over
 * core/config_vars.c): a bad value is logged once and read as the default,
 * alike through the core's getters, the host table a plugin calls and a
 * running tcp plugin; booleans read the same everywhere; the original's
 * misspelt MC_*_PRC_PORT aliases reach tcp's data port too; undeclared
 * names are refused; the declarations are consistent. */
#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "loader.h"
#include "test_util.h"

/* ---- stderr capture: the log's lines ------------------------------------------ */

static int saved_stderr = -1;
static char capture_path[] = "/tmp/te_config_log_XXXXXX";

static void capture_start(void)
{
    int fd = mkstemp(capture_path);
    ck_assert_int_ge(fd, 0);
    saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Stops capturing; returns what was logged (malloc'd). */
static char *capture_stop(void)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    FILE *f = fopen(capture_path, "r");
    ck_assert_ptr_nonnull(f);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(capture_path);
    fputs(text, stderr); /* still shown with the test's output */
    return strdup(text);
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static int64_t host_int(const char *name)
{
    int64_t v = -12345;
    ck_assert_int_eq(te_host_api_table.config_int(NULL, name, &v), 0);
    return v;
}

static int host_bool(const char *name)
{
    int v = -1;
    ck_assert_int_eq(te_host_api_table.config_bool(NULL, name, &v), 0);
    return v;
}

static te_engine *tcp_engine(void)
{
    te_engine *e = te_engine_create();
    ck_assert_ptr_nonnull(e);
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", "tcp", "", NULL);
    ck_assert_msg(rc == 0, "initialize: %s", te_last_error());
    return e;
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(bad_value_warns_once_for_core_and_plugin)
{
    setenv("MC_TRANSFER_TIMEOUT", "soon", 1);
    setenv("MC_TCP_LANES_PER_PEER", "many", 1);
    capture_start();
    te_config cfg;
    te_config_load(&cfg);
    te_config_load(&cfg);
    int64_t v = 0;
    ck_assert_int_eq(te_config_int("MC_TRANSFER_TIMEOUT", &v), 0);
    int64_t core_timeout = v, plugin_timeout = host_int("MC_TRANSFER_TIMEOUT");
    int64_t lanes = host_int("MC_TCP_LANES_PER_PEER"), lanes2 = host_int("MC_TCP_LANES_PER_PEER");
    ck_assert_int_eq(te_config_int("MC_TCP_LANES_PER_PEER", &v), 0);
    int64_t core_lanes = v;
    /* The tcp plugin reads the same variable at create: no new line. */
    te_engine *e = tcp_engine();
    te_engine_destroy(e);
    setenv("MC_TCP_LANES_PER_PEER", "99", 1); /* another bad value: one more line */
    int64_t lanes99 = host_int("MC_TCP_LANES_PER_PEER");
    host_int("MC_TCP_LANES_PER_PEER");
    char *log = capture_stop();
    ck_assert_int_eq(cfg.transfer_timeout_ms, 30000);
    ck_assert_int_eq(core_timeout, 30);
    ck_assert_int_eq(plugin_timeout, 30);
    ck_assert_int_eq(lanes, 2);
    ck_assert_int_eq(lanes2, 2);
    ck_assert_int_eq(core_lanes, 2);
    ck_assert_int_eq(lanes99, 2);
    ck_assert_int_eq(count(log, "ignoring MC_TRANSFER_TIMEOUT=soon: expected an integer in "
                                "[1, 86400], using 30"),
                     1);
    ck_assert_int_eq(count(log, "ignoring MC_TCP_LANES_PER_PEER=many: expected an integer in "
                                "[1, 16], using 2"),
                     1);
    ck_assert_int_eq(count(log, "ignoring MC_TCP_LANES_PER_PEER=99:"), 1);
    free(log);
    unsetenv("MC_TRANSFER_TIMEOUT");
    unsetenv("MC_TCP_LANES_PER_PEER");
}
END_TEST

START_TEST(booleans_read_alike)
{
    unsetenv("MC_TE_CUDA_SYNC_DEFAULT_STREAM");
    ck_assert_int_eq(host_bool("MC_TE_CUDA_SYNC_DEFAULT_STREAM"), 1); /* the default */
    setenv("MC_TE_CUDA_SYNC_DEFAULT_STREAM", "n", 1);
    ck_assert_int_eq(host_bool("MC_TE_CUDA_SYNC_DEFAULT_STREAM"), 0);
    int b = -1;
    ck_assert_int_eq(te_config_bool("MC_TE_CUDA_SYNC_DEFAULT_STREAM", &b), 0);
    ck_assert_int_eq(b, 0);
    static const char *const yes[] = {"1", "true", "YES", "on", "y", "Y"};
    static const char *const no[] = {"0", "False", "no", "OFF", "n", "N"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        setenv("MC_FORCE_TCP", yes[i], 1);
        ck_assert_msg(host_bool("MC_FORCE_TCP") == 1, "%s", yes[i]);
        setenv("MC_TE_SAME_HOST_TRANSPORT", no[i], 1);
        ck_assert_msg(host_bool("MC_TE_SAME_HOST_TRANSPORT") == 0, "%s", no[i]);
    }
    setenv("MC_TE_SAME_HOST_TRANSPORT", "maybe", 1); /* bad: the default, on */
    ck_assert_int_eq(host_bool("MC_TE_SAME_HOST_TRANSPORT"), 1);
    unsetenv("MC_TE_CUDA_SYNC_DEFAULT_STREAM");
    unsetenv("MC_FORCE_TCP");
    unsetenv("MC_TE_SAME_HOST_TRANSPORT");
}
END_TEST

static long descriptor_int(te_engine *e, const char *member)
{
    char *text = NULL;
    ck_assert_int_eq(te_local_descriptor_json(e, &text), 0);
    json_t *o = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(o);
    json_t *m = json_object_get(o, member);
    ck_assert_msg(json_is_integer(m), "no %s in %s", member, text);
    long v = (long)json_integer_value(m);
    json_decref(o);
    free(text);
    return v;
}

START_TEST(misspelt_port_aliases_reach_tcp)
{
    unsetenv("MC_MIN_RPC_PORT");
    unsetenv("MC_MAX_RPC_PORT");
    setenv("MC_MIN_PRC_PORT", "16100", 1);
    setenv("MC_MAX_PRC_PORT", "16199", 1);
    ck_assert_int_eq(host_int("MC_MIN_RPC_PORT"), 16100);
    ck_assert_int_eq(host_int("MC_MAX_RPC_PORT"), 16199);
    ck_assert_str_eq(te_host_api_table.config(NULL, "MC_MIN_RPC_PORT"), "16100");
    te_engine *e = tcp_engine();
    int rpc = te_engine_rpc_port(e);
    long data = descriptor_int(e, "tcp_data_port");
    te_engine_destroy(e);
    ck_assert_msg(rpc >= 16100 && rpc <= 16199, "rpc port %d", rpc);
    ck_assert_msg(data >= 16100 && data <= 16199, "tcp data port %ld", data);
    setenv("MC_MIN_RPC_PORT", "16150", 1); /* the right name wins */
    ck_assert_int_eq(host_int("MC_MIN_RPC_PORT"), 16150);
    unsetenv("MC_MIN_RPC_PORT");
    unsetenv("MC_MIN_PRC_PORT");
    unsetenv("MC_MAX_PRC_PORT");
}
END_TEST

START_TEST(undeclared_names_are_refused)
{
    setenv("MC_NO_SUCH_SETTING", "5", 1);
    capture_start();
    int64_t v = 77;
    int b = 77;
    const char *s = "untouched";
    int rc_int = te_config_int("MC_NO_SUCH_SETTING", &v);
    int rc_host = te_host_api_table.config_int(NULL, "MC_NO_SUCH_SETTING", &v);
    int rc_bool = te_host_api_table.config_bool(NULL, "MC_NO_SUCH_SETTING", &b);
    int rc_type = te_config_bool("MC_TRANSFER_TIMEOUT", &b); /* an int, not a bool */
    int rc_str = te_config_string("MC_TCP_SLICE_SIZE", &s);
    int rc_null = te_config_int(NULL, &v);
    char *log = capture_stop();
    ck_assert_int_eq(rc_int, TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(rc_host, TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(rc_bool, TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(rc_type, TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(rc_str, TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(rc_null, TE_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(v, 77);
    ck_assert_int_eq(b, 77);
    ck_assert_str_eq(s, "untouched");
    ck_assert_int_ge(count(log, "MC_NO_SUCH_SETTING is not a declared variable"), 3);
    ck_assert_int_eq(count(log, "MC_TRANSFER_TIMEOUT is declared as int, not bool"), 1);
    free(log);
    /* A plugin's own variable still reads as text through `config`. */
    ck_assert_str_eq(te_host_api_table.config(NULL, "MC_NO_SUCH_SETTING"), "5");
    unsetenv("MC_NO_SUCH_SETTING");
}
END_TEST

START_TEST(declarations_are_consistent)
{
    size_t n = 0;
    for (const te_config_var *v; (v = te_config_describe(n)) != NULL; n++) {
        ck_assert_msg(v->owner && *v->owner && v->help && *v->help, "%s", v->name);
        ck_assert_msg(v->type >= TE_CONFIG_BOOL && v->type <= TE_CONFIG_STRING, "%s", v->name);
        ck_assert_msg(!strchr(v->name, ' ') && !strchr(v->owner, ' '), "%s", v->name);
        if (v->type == TE_CONFIG_INT)
            ck_assert_msg(v->min <= v->default_int && v->default_int <= v->max, "%s", v->name);
        if (v->type == TE_CONFIG_BOOL)
            ck_assert_msg(v->default_int == 0 || v->default_int == 1, "%s", v->name);
        ck_assert_msg(te_config_find(v->name) == v, "%s declared twice", v->name);
        ck_assert_msg(!v->aliases || !te_config_find(v->aliases), "%s's alias is declared",
                      v->name);
    }
    ck_assert_uint_eq(n, te_config_nvars);
    ck_assert_uint_ge(n, 60);
    ck_assert_ptr_null(te_config_describe((size_t)-1));
    /* Every value is read the same through the host table and te_config_*. */
    int64_t a, b;
    ck_assert_int_eq(te_config_int("MC_SLICE_SIZE", &a), 0);
    ck_assert_int_eq(te_host_api_table.config_int(NULL, "MC_SLICE_SIZE", &b), 0);
    ck_assert_int_eq(a, 65536);
    ck_assert_int_eq(b, 65536);
    const char *level = NULL;
    ck_assert_int_eq(te_config_string("MC_LOG_LEVEL", &level), 0);
    ck_assert_ptr_nonnull(level);
}
END_TEST

START_TEST(signed_ints_and_cuda_visible_devices)
{
    setenv("NCCL_IB_GID_INDEX", "3", 1);
    ck_assert_int_eq(host_int("MC_GID_INDEX"), 3);
    setenv("MC_GID_INDEX", "-1", 1);
    ck_assert_int_eq(host_int("MC_GID_INDEX"), -1);
    setenv("MC_GID_INDEX", "+2", 1); /* bad: the default */
    ck_assert_int_eq(host_int("MC_GID_INDEX"), -1);
    unsetenv("MC_GID_INDEX");
    unsetenv("NCCL_IB_GID_INDEX");
    /* CUDA's own variable keeps its meaning of empty: no GPU visible. */
    setenv("CUDA_VISIBLE_DEVICES", "", 1);
    const char *s = NULL;
    ck_assert_int_eq(te_config_string("CUDA_VISIBLE_DEVICES", &s), 0);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    setenv("MC_TE_TRANSPORTS", "", 1); /* MC_*: empty is unset */
    ck_assert_int_eq(te_config_string("MC_TE_TRANSPORTS", &s), 0);
    ck_assert_ptr_null(s);
    unsetenv("CUDA_VISIBLE_DEVICES");
    unsetenv("MC_TE_TRANSPORTS");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bad_value_warns_once_for_core_and_plugin);
    tcase_add_test(tc, booleans_read_alike);
    tcase_add_test(tc, misspelt_port_aliases_reach_tcp);
    tcase_add_test(tc, undeclared_names_are_refused);
    tcase_add_test(tc, declarations_are_consistent);
    tcase_add_test(tc, signed_ints_and_cuda_visible_devices);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
