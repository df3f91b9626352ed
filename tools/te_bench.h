/* te_bench.h - shared types of te-bench, the transfer engine's benchmark:
 * its options (bench_opts.c), the initiator's measurement loop
 * (bench_run.c) and the modes (te-bench.c). */
#ifndef TE_BENCH_H
#define TE_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "te/te.h"

enum bench_mode { BENCH_INITIATOR, BENCH_TARGET, BENCH_LOOPBACK };

typedef struct bench_opts {
    int mode;   /* enum bench_mode */
    int opcode; /* TE_OP_READ / TE_OP_WRITE */
    char mode_name[16];
    char operation[16];
    char protocol[64];
    char metadata_server[512];
    char local_server_name[256];
    char segment_id[512];
    char device_name[256];
    uint64_t block_size;
    uint64_t batch_size;
    uint64_t buffer_size;
    int threads;
    double duration;
    bool verify, json, sweep, help, help_env, metrics;
    bool load_cuda; /* initiator: load the CUDA runtime first */
    bool scatter;   /* a batch's blocks land on the target in reverse order */
    char register_only[64]; /* "SIZE[,COUNT]": measure registration only */
    uint64_t register_size, register_count; /* parsed from register_only */
    int control_fd; /* loopback: the socket to the initiator, -1 otherwise */
} bench_opts;

/* Parses argv into *o (defaults first).  0, or 2 after printing why. */
int bench_parse(int argc, char **argv, bench_opts *o);
void bench_usage(FILE *out);
/* --help-env: every configuration variable (te_config_describe), one a line. */
void bench_help_env(FILE *out);

/* What the initiator measures against. */
typedef struct bench_target {
    te_engine *eng;
    te_segment_id seg;
    char *local;         /* registered local buffer */
    uint64_t local_len;
    uint64_t remote;     /* first buffer of the target segment */
    uint64_t remote_len;
    const char *segment; /* its name */
} bench_target;

/* Runs every configuration (one, or the sweep) and prints results.
 * Returns 0, or 1 when a transfer or the verification failed. */
int bench_run_all(const bench_opts *o, const bench_target *t);

/* --register_only: maps register_count untouched regions of register_size
 * bytes, times registering and unregistering them one by one and in one
 * batch, prints the figures.  0, or 1 when a call failed. */
int bench_register_only(const bench_opts *o, te_engine *e);

/* Anonymous memory, populated so page faults stay out of the figures. */
void *bench_alloc(size_t len);
void bench_free(void *p, size_t len);
double bench_now(void);

#endif
