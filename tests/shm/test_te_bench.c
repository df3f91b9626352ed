/* test_te_bench.c - smoke tests of te-bench: one loopback command verifies
 * data and prints one parseable JSON line per configuration (shm and tcp);
 * --register_only registers 64 GiB of untouched memory without touching it;
 * bad flags exit with status 2; --help-env lists every configuration
 * variable, as docs/configuration.md does. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "test_util.h"

#define MAX_LINES 16

static char lines[MAX_LINES][4096];

/* Runs te-bench with `args` (and an environment prefix); returns its exit
 * status and keeps the lines it printed on stdout. */
static int run_bench(const char *env, const char *args, int *nlines)
{
    const char *dir = getenv("TE_BUILD_DIR");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s/bin/te-bench %s", env ? env : "", dir ? dir : ".", args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    int n = 0;
    while (n < MAX_LINES && fgets(lines[n], sizeof lines[n], p))
        n++;
    int st = pclose(p);
    *nlines = n;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_t *parse_result(const char *line)
{
    json_error_t err;
    json_t *o = json_loads(line, 0, &err);
    ck_assert_msg(json_is_object(o), "not a JSON object: %s (%s)", line, err.text);
    static const char *const numbers[] = {"block_size", "batch_size", "threads",
                                          "throughput_gbps", "ops_per_sec", "p50_us", "p99_us",
                                          "p999_us", "batch_p50_us", "duration_s"};
    for (size_t i = 0; i < sizeof numbers / sizeof *numbers; i++)
        ck_assert_msg(json_is_number(json_object_get(o, numbers[i])), "no number %s in %s",
                      numbers[i], line);
    ck_assert(json_is_string(json_object_get(o, "operation")));
    ck_assert(json_is_string(json_object_get(o, "protocol")));
    ck_assert(json_number_value(json_object_get(o, "throughput_gbps")) > 0);
    ck_assert(json_number_value(json_object_get(o, "ops_per_sec")) > 0);
    ck_assert(json_number_value(json_object_get(o, "p50_us")) <=
              json_number_value(json_object_get(o, "p99_us")));
    ck_assert_int_eq(json_integer_value(json_object_get(o, "error")), 0);
    return o;
}

START_TEST(loopback_default_verifies_and_prints_json)
{
    int n;
    ck_assert_int_eq(run_bench(NULL, "--mode loopback --duration 1 --verify --json", &n), 0);
    ck_assert_int_eq(n, 1);
    json_t *o = parse_result(lines[0]);
    ck_assert(json_is_true(json_object_get(o, "verified")));
    ck_assert_int_eq(json_integer_value(json_object_get(o, "block_size")), 65536);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "batch_size")), 128);
    ck_assert_str_eq(json_string_value(json_object_get(o, "operation")), "read");
    ck_assert_str_eq(json_string_value(json_object_get(o, "protocol")), "tcp");
    json_decref(o);
}
END_TEST

START_TEST(loopback_over_shm_write)
{
    int n;
    ck_assert_int_eq(run_bench(NULL, "--mode=loopback --protocol=shm --operation=write "
                                     "--block_size=4K --batch_size 32 --duration=1 --verify "
                                     "--json --buffer_size 16M",
                               &n),
                     0);
    ck_assert_int_eq(n, 1);
    json_t *o = parse_result(lines[0]);
    ck_assert_str_eq(json_string_value(json_object_get(o, "protocol")), "shm");
    ck_assert_str_eq(json_string_value(json_object_get(o, "operation")), "write");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "block_size")), 4096);
    ck_assert(json_is_true(json_object_get(o, "verified")));
    json_decref(o);
}
END_TEST

/* --scatter reverses where a batch's blocks land: still verified (the data
 * check follows each block's remote offset), and said in the JSON. */
START_TEST(loopback_scattered_blocks_verify)
{
    int n;
    ck_assert_int_eq(run_bench(NULL, "--mode loopback --protocol shm --operation write "
                                     "--block_size 4K --batch_size 64 --duration 1 --verify "
                                     "--json --buffer_size 16M --scatter",
                               &n),
                     0);
    ck_assert_int_eq(n, 1);
    json_t *o = parse_result(lines[0]);
    ck_assert(json_is_true(json_object_get(o, "scatter")));
    ck_assert(json_is_true(json_object_get(o, "verified")));
    json_decref(o);
    ck_assert_int_eq(run_bench(NULL, "--mode loopback --duration 1 --json --buffer_size 16M", &n),
                     0);
    o = parse_result(lines[0]);
    ck_assert(json_is_false(json_object_get(o, "scatter")));
    json_decref(o);
}
END_TEST

START_TEST(loopback_over_tcp_only)
{
    int n;
    ck_assert_int_eq(run_bench("MC_TE_SAME_HOST_TRANSPORT=0",
                               "--mode loopback --duration 1 --verify --json --block_size 1M "
                               "--threads 2 --buffer_size 64M",
                               &n),
                     0);
    ck_assert_int_eq(n, 1);
    json_t *o = parse_result(lines[0]);
    ck_assert_str_eq(json_string_value(json_object_get(o, "same_host")), "off");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "threads")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "batch_size")), 32); /* 32M each */
    json_decref(o);
}
END_TEST

START_TEST(metrics_match_the_run)
{
    int n;
    ck_assert_int_eq(run_bench("MC_TE_SAME_HOST_TRANSPORT=0",
                               "--mode loopback --duration 0.5 --json --metrics --operation write "
                               "--block_size 4K --batch_size 8 --buffer_size 1M",
                               &n),
                     0);
    ck_assert_int_eq(n, 2);
    json_t *r = parse_result(lines[0]);
    json_error_t err;
    json_t *root = json_loads(lines[1], 0, &err);
    json_t *m = json_object_get(root, "metrics");
    ck_assert_msg(json_is_object(m), "no metrics line: %s", lines[1]);
    json_t *tcp = json_object_get(json_object_get(m, "transports"), "tcp");
    /* The engine counted at least what the run measured (plus its warm-up). */
    ck_assert_int_ge(json_integer_value(json_object_get(tcp, "writes")),
                     json_integer_value(json_object_get(r, "ops")));
    ck_assert_int_eq(json_integer_value(json_object_get(m, "inflight_requests")), 0);
    json_decref(root);
    json_decref(r);
}
END_TEST

START_TEST(sweep_prints_one_line_per_block_size)
{
    int n;
    ck_assert_int_eq(run_bench(NULL, "--mode loopback --protocol shm --sweep --duration 0.2 "
                                     "--json --buffer_size 64M --verify",
                               &n),
                     0);
    ck_assert_int_eq(n, 8); /* 4K, 16K, ..., 64M (the last one with batch 1) */
    uint64_t want = 4096;
    for (int i = 0; i < n; i++, want *= 4) {
        json_t *o = parse_result(lines[i]);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "block_size")), (json_int_t)want);
        json_decref(o);
    }
}
END_TEST

START_TEST(human_summary_without_json)
{
    int n;
    ck_assert_int_eq(run_bench(NULL, "--mode loopback --protocol shm --duration 0.5", &n), 0);
    ck_assert_int_ge(n, 3);
    ck_assert_ptr_nonnull(strstr(lines[1], "GB/s"));
    ck_assert_ptr_nonnull(strstr(lines[2], "p99.9"));
}
END_TEST

/* 64 GiB in 4 regions, never touched: registration must not touch, pin or
 * populate them (that would not even fit in a small box's memory). */
START_TEST(register_only_leaves_untouched_memory_untouched)
{
    const char *envs[] = {"MC_TE_TRANSPORTS=tcp", "MC_TE_TRANSPORTS=shm"};
    for (int i = 0; i < 2; i++) {
        int n;
        ck_assert_int_eq(run_bench(envs[i], "--register_only 16G,4 --json", &n), 0);
        ck_assert_int_eq(n, 1);
        json_t *o = json_loads(lines[0], 0, NULL);
        ck_assert_msg(json_is_object(o), "not JSON: %s", lines[0]);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "regions")), 4);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "total_bytes")), 64ll << 30);
        json_int_t before = json_integer_value(json_object_get(o, "rss_before_kib"));
        json_int_t after = json_integer_value(json_object_get(o, "rss_after_kib"));
        ck_assert_int_gt(before, 0);
        ck_assert_int_lt(after - before, 64 * 1024); /* KiB */
        ck_assert(json_is_number(json_object_get(o, "register_batch_s")));
        json_decref(o);
    }
}
END_TEST

START_TEST(bad_flags_exit_2)
{
    int n;
    ck_assert_int_eq(run_bench(NULL, "--no_such_flag 2>/dev/null", &n), 2);
    ck_assert_int_eq(run_bench(NULL, "--mode sideways 2>/dev/null", &n), 2);
    ck_assert_int_eq(run_bench(NULL, "--block_size=12Q 2>/dev/null", &n), 2);
    ck_assert_int_eq(run_bench(NULL, "--mode initiator 2>/dev/null", &n), 2); /* no segment */
    ck_assert_int_eq(run_bench(NULL, "--register_only 0 2>/dev/null", &n), 2);
    ck_assert_int_eq(run_bench(NULL, "--register_only 1G,0 2>/dev/null", &n), 2);
    ck_assert_int_eq(run_bench(NULL, "--register_only 1G,x 2>/dev/null", &n), 2);
    ck_assert_int_eq(run_bench(NULL, "--help", &n), 0);
}
END_TEST

/* Everything te-bench prints with `args`, in one malloc'd string. */
static char *bench_output(const char *args, int *status)
{
    const char *dir = getenv("TE_BUILD_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/bin/te-bench %s", dir ? dir : ".", args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t cap = 1 << 16, len = 0, n;
    char *out = malloc(cap);
    while ((n = fread(out + len, 1, cap - 1 - len, p)) > 0)
        if ((len += n) + 1 == cap)
            out = realloc(out, cap *= 2);
    out[len] = '\0';
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

/* The line of `name` (it starts the line), NULL if missing. */
static const char *env_line(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, name, n) && l[n] == ' ')
            return l;
    return NULL;
}

START_TEST(help_env_lists_every_variable)
{
    int st;
    char *out = bench_output("--help-env", &st);
    ck_assert_int_eq(st, 0);
    /* A core, a tcp and an rdma variable: type, default, range, owner, help. */
    static const char *const want[][2] = {
        {"MC_TRANSFER_TIMEOUT", "int    30        1..86400               core "},
        {"MC_TCP_SLICE_SIZE", "int    1048576   4096..1073741824       tcp "},
        {"MC_GID_INDEX", "int    -1        -1..65535              rdma "},
        {"MC_TE_CUDA_SYNC_DEFAULT_STREAM", "bool   1         -                      tcp,nvlink "},
        {"MC_MIN_RPC_PORT", "(alias: MC_MIN_PRC_PORT)"},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const char *l = env_line(out, want[i][0]);
        ck_assert_msg(l, "%s not listed", want[i][0]);
        const char *end = strchr(l, '\n');
        ck_assert_msg(strstr(l, want[i][1]) && strstr(l, want[i][1]) < end, "%.*s",
                      (int)(end - l), l);
    }
    /* docs/configuration.md (scripts/configuration_md.sh) lists the same variables. */
    FILE *f = fopen(TE_SOURCE_DIR "/docs/configuration.md", "r");
    ck_assert_ptr_nonnull(f);
    static char doc[1 << 17];
    doc[fread(doc, 1, sizeof doc - 1, f)] = '\0';
    fclose(f);
    int listed = 0;
    for (const char *l = strchr(out, '\n') + 1; *l; l = strchr(l, '\n') + 1, listed++) {
        char row[96];
        snprintf(row, sizeof row, "| `%.*s` |", (int)strcspn(l, " "), l);
        ck_assert_msg(strstr(doc, row), "docs/configuration.md lacks %s: "
                      "run scripts/configuration_md.sh", row);
    }
    ck_assert_int_ge(listed, 60);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("te_bench");
    TCase *tc = tcase_create("loopback");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, loopback_default_verifies_and_prints_json);
    tcase_add_test(tc, loopback_over_shm_write);
    tcase_add_test(tc, loopback_scattered_blocks_verify);
    tcase_add_test(tc, loopback_over_tcp_only);
    tcase_add_test(tc, metrics_match_the_run);
    tcase_add_test(tc, sweep_prints_one_line_per_block_size);
    tcase_add_test(tc, human_summary_without_json);
    tcase_add_test(tc, register_only_leaves_untouched_memory_untouched);
    tcase_add_test(tc, bad_flags_exit_2);
    tcase_add_test(tc, help_env_lists_every_variable);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
