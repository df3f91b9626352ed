/* bench_opts.c - te-bench's command line, with the flags and defaults of the
 * original transfer_engine_bench (gflags style: --flag=value, --flag value,
 * -flag value; booleans as --flag or --flag=false). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "te_bench.h"

enum kind { K_STR, K_SIZE, K_INT, K_DOUBLE, K_BOOL };

typedef struct flag_def {
    const char *name;
    enum kind kind;
    size_t offset;
    size_t cap; /* K_STR: buffer size */
    const char *help;
} flag_def;

#define STRN(n, f, h) {n, K_STR, offsetof(bench_opts, f), sizeof(((bench_opts *)0)->f), h}
#define STR(f, h) STRN(#f, f, h)
#define NUM(f, k, h) {#f, k, offsetof(bench_opts, f), 0, h}

static const flag_def flags[] = {
    STRN("mode", mode_name, "target | initiator | loopback (default initiator)"),
    STR(operation, "read | write (default read)"),
    STR(protocol, "transport: tcp (default), shm, rdma, ..."),
    STR(metadata_server, "P2PHANDSHAKE (default), etcd://host:port, http://..."),
    STR(local_server_name, "this engine's host[:port] (default 127.0.0.1)"),
    STR(segment_id, "initiator: the target's segment name (it prints it)"),
    STR(device_name, "NICs to use: rdma devices, or tcp interfaces (rails) (default: all / one route)"),
    NUM(block_size, K_SIZE, "bytes per request (default 65536; K/M/G suffixes)"),
    NUM(batch_size, K_SIZE, "requests per batch (default 128)"),
    NUM(buffer_size, K_SIZE, "registered buffer per process (default 256M)"),
    NUM(threads, K_INT, "initiator threads (default 1)"),
    NUM(duration, K_DOUBLE, "seconds per configuration (default 5)"),
    NUM(verify, K_BOOL, "check data with a write+read round trip before measuring"),
    NUM(json, K_BOOL, "one JSON object per configuration on stdout"),
    NUM(sweep, K_BOOL, "block sizes 4K,16K,...,64M (powers of 4)"),
    NUM(metrics, K_BOOL, "print the engine's own counters (te_get_metrics) at the end"),
    NUM(scatter, K_BOOL, "a batch's blocks land on the target in reverse order: no two requests "
                         "are adjacent on both sides, so no transport can merge them"),
    NUM(load_cuda, K_BOOL, "initiator: load the CUDA runtime first, as a GPU worker has"),
    STR(register_only, "SIZE[,COUNT]: only time registering COUNT (default 1) untouched regions "
                       "of SIZE (e.g. 64G or 1G,64), no transfers"),
    NUM(control_fd, K_INT, NULL), /* internal: loopback's target */
    NUM(help, K_BOOL, "this text"),
    {"help-env", K_BOOL, offsetof(bench_opts, help_env), 0,
     "the engine's environment variables: type, default, range, owner, help"},
};

void bench_usage(FILE *out)
{
    fprintf(out, "usage: te-bench [--flag=value | --flag value]...\n"
                 "  one command, no servers:  te-bench --mode loopback [--operation write]\n"
                 "  two processes:            te-bench --mode target   (prints its segment)\n"
                 "                            te-bench --segment_id HOST:PORT\n"
                 "flags:\n");
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (flags[i].help)
            fprintf(out, "  --%-18s %s\n", flags[i].name, flags[i].help);
    fprintf(out, "latency: p50/p99/p999_us are per operation (a batch's completion time from\n"
                 "te_submit to te_batch_wait divided by its size; with --batch_size 1 the\n"
                 "round trip of one request); batch_*_us are whole-batch completion times.\n");
}

static void default_text(const te_config_var *v, char *out, size_t len)
{
    if (v->type == TE_CONFIG_STRING)
        snprintf(out, len, "%s", v->default_string ? v->default_string : "(unset)");
    else if (v->type == TE_CONFIG_BOOL)
        snprintf(out, len, "%s", v->default_int ? "1" : "0");
    else
        snprintf(out, len, "%lld", (long long)v->default_int);
}

/* Columns: name, type, default, range, owner, then the help text (the
 * first five never hold spaces: scripts/configuration_md.sh relies on it). */
void bench_help_env(FILE *out)
{
    static const char *const types[] = {"bool", "int", "string"};
    fprintf(out, "%-31s %-6s %-9s %-22s %-14s %s\n", "variable", "type", "default", "range",
            "owner", "help");
    const te_config_var *v;
    for (size_t i = 0; (v = te_config_describe(i)) != NULL; i++) {
        char def[64], range[48] = "-";
        default_text(v, def, sizeof def);
        if (v->type == TE_CONFIG_INT)
            snprintf(range, sizeof range, "%lld..%lld", (long long)v->min, (long long)v->max);
        fprintf(out, "%-31s %-6s %-9s %-22s %-14s %s%s%s%s\n", v->name,
                types[v->type < 3 ? v->type : 2], def, range, v->owner, v->help,
                v->aliases ? " (alias: " : "", v->aliases ? v->aliases : "",
                v->aliases ? ")" : "");
    }
}

static void defaults(bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = BENCH_INITIATOR;
    o->opcode = TE_OP_READ;
    snprintf(o->protocol, sizeof o->protocol, "tcp");
    snprintf(o->metadata_server, sizeof o->metadata_server, "P2PHANDSHAKE");
    snprintf(o->local_server_name, sizeof o->local_server_name, "127.0.0.1");
    o->block_size = 65536;
    o->batch_size = 128;
    o->buffer_size = 256ull << 20;
    o->threads = 1;
    o->duration = 5;
    o->control_fd = -1;
    snprintf(o->mode_name, sizeof o->mode_name, "initiator");
    snprintf(o->operation, sizeof o->operation, "read");
}

static int parse_size(const char *s, uint64_t *out)
{
    errno = 0;
    char *end;
    if (!*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    if (*end == 'k' || *end == 'K')
        shift = 10;
    else if (*end == 'm' || *end == 'M')
        shift = 20;
    else if (*end == 'g' || *end == 'G')
        shift = 30;
    if (shift)
        end++;
    if (*end == 'i' && shift)
        end++;
    if ((*end == 'b' || *end == 'B') && shift)
        end++;
    if (errno || *end || v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    if (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "yes"))
        *out = true;
    else if (!strcasecmp(s, "false") || !strcmp(s, "0") || !strcasecmp(s, "no"))
        *out = false;
    else
        return -1;
    return 0;
}

static int set_value(bench_opts *o, const flag_def *f, const char *v)
{
    char *dst = (char *)o + f->offset;
    char *end;
    switch (f->kind) {
    case K_STR:
        if (strlen(v) >= f->cap)
            return -1;
        memcpy(dst, v, strlen(v) + 1);
        return 0;
    case K_SIZE:
        return parse_size(v, (uint64_t *)(void *)dst);
    case K_INT: {
        long n = strtol(v, &end, 10);
        if (!*v || *end || n < -1 || n > 1 << 20)
            return -1;
        *(int *)(void *)dst = (int)n;
        return 0;
    }
    case K_DOUBLE:
        *(double *)(void *)dst = strtod(v, &end);
        return !*v || *end ? -1 : 0;
    case K_BOOL:
        return parse_bool(v, (bool *)(void *)dst);
    }
    return -1;
}

static const flag_def *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (strlen(flags[i].name) == len && !strncmp(flags[i].name, name, len))
            return &flags[i];
    return NULL;
}

/* --register_only SIZE[,COUNT] into register_size and register_count. */
static int parse_register_only(bench_opts *o)
{
    char size[64];
    const char *comma = strchr(o->register_only, ',');
    size_t n = comma ? (size_t)(comma - o->register_only) : strlen(o->register_only);
    memcpy(size, o->register_only, n);
    size[n] = '\0';
    o->register_count = 1;
    if (parse_size(size, &o->register_size) || o->register_size == 0 ||
        (comma && (parse_size(comma + 1, &o->register_count) || o->register_count == 0 ||
                   o->register_count > (1u << 20))) ||
        o->register_size > UINT64_MAX / o->register_count)
        return fprintf(stderr, "te-bench: --register_only wants SIZE[,COUNT] (SIZE > 0, "
                               "1 <= COUNT <= 1M), e.g. 64G or 1G,64\n"), 2;
    return 0;
}

/* Turns mode/operation text into enums and checks ranges. */
static int finish(bench_opts *o)
{
    if (!strcmp(o->mode_name, "initiator"))
        o->mode = BENCH_INITIATOR;
    else if (!strcmp(o->mode_name, "target"))
        o->mode = BENCH_TARGET;
    else if (!strcmp(o->mode_name, "loopback"))
        o->mode = BENCH_LOOPBACK;
    else
        return fprintf(stderr, "te-bench: --mode must be target, initiator or loopback\n"), 2;
    if (!strcmp(o->operation, "read") || !strcmp(o->operation, "write"))
        o->opcode = o->operation[0] == 'r' ? TE_OP_READ : TE_OP_WRITE;
    else
        return fprintf(stderr, "te-bench: --operation must be read or write\n"), 2;
    if (o->block_size == 0 || o->batch_size == 0 || o->batch_size > (1u << 20) ||
        o->threads < 1 || o->threads > 256 || !(o->duration > 0 && o->duration < 1e6) ||
        o->buffer_size < 4096)
        return fprintf(stderr, "te-bench: block_size, batch_size (<= 1M), threads (1..256), "
                               "duration and buffer_size (>= 4096) must be positive\n"), 2;
    if (o->register_only[0])
        return parse_register_only(o);
    if (o->mode == BENCH_INITIATOR && !o->segment_id[0] && !o->help && !o->help_env)
        return fprintf(stderr, "te-bench: the initiator needs --segment_id (the target "
                               "prints it), or use --mode loopback\n"), 2;
    return 0;
}

int bench_parse(int argc, char **argv, bench_opts *o)
{
    defaults(o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-')
            return fprintf(stderr, "te-bench: unexpected argument '%s'\n", a), 2;
        a += a[1] == '-' ? 2 : 1;
        const char *eq = strchr(a, '=');
        const flag_def *f = find_flag(a, eq ? (size_t)(eq - a) : strlen(a));
        if (!f)
            return fprintf(stderr, "te-bench: unknown flag '%s' (try --help)\n", argv[i]), 2;
        const char *v = eq ? eq + 1 : NULL;
        if (!v && f->kind == K_BOOL)
            v = "true";
        if (!v && i + 1 < argc)
            v = argv[++i];
        if (!v || set_value(o, f, v))
            return fprintf(stderr, "te-bench: bad value for --%s\n", f->name), 2;
    }
    return finish(o);
}
