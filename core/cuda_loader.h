/* cuda_loader.h - the one way the engine opens CUDA: the runtime and the
 * driver with dlopen, never linked, so the same binaries run without a GPU.
 * libte.so uses it and offers it to plugins through the host table
 * (cuda_runtime, cuda_driver, cuda_symbol) and to embedders through
 * te_cuda_runtime_symbol (the Python module).  Its symbols stay hidden. */
#ifndef TE_CUDA_LOADER_H
#define TE_CUDA_LOADER_H

#include <stddef.h>

#pragma GCC visibility push(hidden)

/* The CUDA runtime: MC_CUDART_LIBRARY if set (and nothing else), else a
 * runtime already in the process (PyTorch brings its own), else the first of
 * libcudart.so.13, .12, .11.0, libcudart.so that loads.  NULL, and why in
 * `why`, if none. */
void *cudl_open_runtime(char *why, size_t why_len);

/* The driver, libcuda.so.1: the one in the process, else (load) loads it.
 * NULL, and why in `why` (may be NULL), if it is not there. */
void *cudl_open_driver(int load, char *why, size_t why_len);

/* The driver if the process has already loaded it (under any libcuda.so*
 * name), else NULL: never loads CUDA, makes no system call, and may be called
 * on every registration (see cuda_loader.c).  Thread-safe; the handle is kept
 * for the process once found. */
void *cudl_loaded_driver(void);

/* cuPointerGetAttribute of the driver the process has already loaded
 * (cudl_loaded_driver: never loads CUDA), NULL while none is.  Kept once found. */
typedef int (*cudl_pointer_attr_fn)(void *data, int attribute, unsigned long long ptr);
cudl_pointer_attr_fn cudl_pointer_attr(void);

/* The one answer to "is this GPU memory" for the whole engine: the ordinal
 * of plain device memory at addr, else -1 (host memory unknown to CUDA,
 * managed memory, which lives wherever it was last touched, or no driver). */
int cudl_device_ordinal(cudl_pointer_attr_fn get, const void *addr);

/* dlsym into the function pointer at fn_ptr; 0, and why in `why` (may be
 * NULL), if lib lacks it. */
int cudl_sym(void *lib, const char *name, void *fn_ptr, char *why, size_t why_len);

/* Host service cuda_progress_wait (cuda_wait.c); see te_host_api. */
#include <pthread.h>
#include <stdint.h>
void te_cuda_progress_wait(void *event, pthread_mutex_t *lock, pthread_cond_t *cond,
                           int64_t backoff_ns, int64_t deadline_ns);

#pragma GCC visibility pop

#endif
