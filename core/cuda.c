/* cuda.c - te_alloc_device/te_free_device: GPU memory that nvlink peers can
 * map (cudaMalloc memory exports a CUDA IPC handle).  The CUDA runtime is
 * opened on first use by cuda_loader.c, like everywhere else. */
#include <pthread.h>
#include <stdbool.h>

#include "cuda_loader.h"
#include "log.h"
#include "te/te.h"

#define CUDA_ERROR_MEMORY_ALLOCATION 2

static struct {
    int (*malloc_fn)(void **ptr, size_t size);
    int (*free_fn)(void *ptr);
    int (*get_last_error)(void);
    const char *(*error_string)(int err);
} rt;
static pthread_once_t rt_once = PTHREAD_ONCE_INIT;
static char rt_why[256]; /* why there is no runtime */

static void rt_load(void)
{
    char *w = rt_why;
    size_t n = sizeof rt_why;
    void *h = cudl_open_runtime(w, n);
    if (h && !(cudl_sym(h, "cudaMalloc", &rt.malloc_fn, w, n) &&
               cudl_sym(h, "cudaFree", &rt.free_fn, w, n) &&
               cudl_sym(h, "cudaGetLastError", &rt.get_last_error, w, n) &&
               cudl_sym(h, "cudaGetErrorString", &rt.error_string, w, n)))
        rt.malloc_fn = NULL;
}

static int rt_fail(int err, const char *what)
{
    rt.get_last_error(); /* leave no sticky error for the application */
    const char *text = rt.error_string(err);
    return te_fail(err == CUDA_ERROR_MEMORY_ALLOCATION ? TE_ERR_MEMORY : TE_ERR_DEVICE_NOT_FOUND,
                   "%s: %s", what, text ? text : "CUDA error");
}

int te_alloc_device(size_t size, void **ptr)
{
    if (!ptr || size == 0)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "te_alloc_device: NULL pointer or zero size");
    *ptr = NULL;
    pthread_once(&rt_once, rt_load);
    if (!rt.malloc_fn)
        return te_fail(TE_ERR_DEVICE_NOT_FOUND, "te_alloc_device: no CUDA runtime: %s", rt_why);
    int err = rt.malloc_fn(ptr, size);
    if (err) {
        *ptr = NULL;
        return rt_fail(err, "te_alloc_device: cudaMalloc");
    }
    return 0;
}

int te_free_device(void *ptr)
{
    if (!ptr)
        return 0;
    pthread_once(&rt_once, rt_load);
    if (!rt.malloc_fn)
        return te_fail(TE_ERR_DEVICE_NOT_FOUND, "te_free_device: no CUDA runtime: %s", rt_why);
    int err = rt.free_fn(ptr);
    return err ? rt_fail(err, "te_free_device: cudaFree") : 0;
}

int te_cuda_runtime_symbol(const char *name, void *fn_ptr, char *why, size_t why_len)
{
    if (!name || !fn_ptr)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "te_cuda_runtime_symbol: NULL argument");
    void *h = cudl_open_runtime(why, why_len);
    if (!h || !cudl_sym(h, name, fn_ptr, why, why_len))
        return TE_ERR_DEVICE_NOT_FOUND;
    return 0;
}
