/* gpu_suite.h - Check steps that the GPU transfer suites (test_gpu_tcp,
 * test_gpu_nvlink) share: an engine on exactly one transport, device memory
 * holding a pattern and its check, the te-gpu-peer commands that must
 * succeed, the held-default-stream case, and the suite's start and run. */
#ifndef TE_GPU_SUITE_H
#define TE_GPU_SUITE_H

#include <stddef.h>
#include <stdint.h>

#include "gpu_util.h"
#include "te/te.h"

struct Suite;

/* Skips (exit GPU_SKIP, with the reason) without a GPU or its runtime. */
void gpu_suite_start(void);
/* Runs every test without fork (CUDA does not survive it): the exit code. */
int gpu_suite_run(struct Suite *s);

/* An engine on exactly `protocol` (MC_TE_TRANSPORTS as well, so that the
 * core picks no other transport for device memory). */
te_engine *gpu_engine(const char *protocol);
/* n bytes of device memory holding the pattern of seed; its check. */
void *gpu_pattern(size_t n, uint64_t seed);
void gpu_check(const void *dev, size_t n, uint64_t seed);
/* "<verb> <off> <len> <arg>" to the peer, which must answer OK.  With
 * MC_TCP_PROTO set (v1 framing: a write is complete once sent) a BAD
 * answer is asked again, for 5 s at most. */
void gpu_peer_ok(gpu_peer *p, const char *verb, size_t off, size_t len, uint64_t arg);
/* A write of len bytes of device memory to the peer's buffer (filled with
 * seed 71 first) while the default stream is held for 3 s, on an engine
 * whose transfers time out after 1 s: it fails with TE_ERR_TIMEOUT and the
 * peer's buffer stays as it was.  Returns how long the failure took (ms). */
long gpu_held_stream_write(const char *protocol, gpu_peer *p, size_t len);

#endif
