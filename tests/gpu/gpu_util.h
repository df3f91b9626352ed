/* gpu_util.h - what the GPU tests share: the skip rule (exit 77 with the
 * reason where no GPU is usable), the CUDA runtime opened with dlopen (the
 * tests build without the toolkit), and a target engine in another process
 * (te-gpu-peer) whose buffer is GPU or host memory. */
#ifndef TE_GPU_UTIL_H
#define TE_GPU_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "test_util.h"

#define GPU_SKIP 77 /* ctest's SKIP_RETURN_CODE for these tests */

/* Returns NULL when a CUDA GPU is usable here, else why not.  The probe
 * runs in a child process, so the caller has not initialised CUDA. */
const char *gpu_unavailable(void);
/* Exits GPU_SKIP, printing the reason, unless a GPU is usable. */
void gpu_require(void);

/* The runtime, for test code (0 = cudaSuccess).  gpu_load() once first. */
int gpu_load(void);
void *gpu_alloc(size_t n);
void gpu_free(void *p);
int gpu_put(void *dev_dst, const void *host_src, size_t n);
int gpu_get(void *host_dst, const void *dev_src, size_t n);
/* cudaMemsetAsync on the legacy default stream: returns before it runs. */
int gpu_memset_async(void *dev, int value, size_t n);
int gpu_sync(void);
/* Holds the legacy default stream for ms milliseconds with a host function
 * (cudaLaunchHostFunc), as a transfer issued from one would. */
int gpu_block_default_stream(int ms);

/* te-gpu-peer, driven as tests/common drives te-test-peer. */
typedef te_test_peer gpu_peer;

/* Starts te-gpu-peer with args (NULL-terminated) and waits for READY. */
int gpu_peer_start(gpu_peer *p, const char *const *args);
/* One command line, one reply line; 0 if the reply is "OK". */
int gpu_peer_cmd(gpu_peer *p, const char *cmd, char *reply, size_t reply_len);
void gpu_peer_stop(gpu_peer *p);

#endif
