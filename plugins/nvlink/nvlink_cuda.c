/* nvlink_cuda.c - the CUDA runtime and driver calls of the transport, looked
 * up once per process in the libraries the core opens for every plugin (the
 * host table's cuda_* services, ABI 1.1); which device holds a pointer is the
 * core's answer (cuda_device_of, ABI 1.2).  Nothing here is linked. */
#include <stdio.h>

#include "nvlink.h"

nvl_cuda nvl_cu;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static bool runtime_loaded, driver_loaded;

static bool load_runtime_symbols(void *rt, char *why, size_t n)
{
    nvl_cuda *c = &nvl_cu;
    int (*sym)(void *, const char *, void *, char *, size_t) = te_host_table->cuda_symbol;
    return sym(rt, "cudaGetDeviceCount", &c->get_device_count, why, n) &&
           sym(rt, "cudaGetDevice", &c->get_device, why, n) &&
           sym(rt, "cudaSetDevice", &c->set_device, why, n) &&
           sym(rt, "cudaGetLastError", &c->get_last_error, why, n) &&
           sym(rt, "cudaGetErrorString", &c->get_error_string, why, n) &&
           sym(rt, "cudaIpcGetMemHandle", &c->ipc_get_mem_handle, why, n) &&
           sym(rt, "cudaIpcOpenMemHandle", &c->ipc_open_mem_handle, why, n) &&
           sym(rt, "cudaIpcCloseMemHandle", &c->ipc_close_mem_handle, why, n) &&
           sym(rt, "cudaStreamCreateWithFlags", &c->stream_create_with_flags, why, n) &&
           sym(rt, "cudaStreamDestroy", &c->stream_destroy, why, n) &&
           sym(rt, "cudaStreamSynchronize", &c->stream_synchronize, why, n) &&
           sym(rt, "cudaEventCreateWithFlags", &c->event_create_with_flags, why, n) &&
           sym(rt, "cudaEventDestroy", &c->event_destroy, why, n) &&
           sym(rt, "cudaEventRecord", &c->event_record, why, n) &&
           sym(rt, "cudaEventQuery", &c->event_query, why, n) &&
           sym(rt, "cudaEventSynchronize", &c->event_synchronize, why, n) &&
           sym(rt, "cudaMemcpyAsync", &c->memcpy_async, why, n) &&
           sym(rt, "cudaDeviceGetPCIBusId", &c->device_get_pci_bus_id, why, n) &&
           sym(rt, "cudaDeviceGetByPCIBusId", &c->device_get_by_pci_bus_id, why, n);
}

/* The driver is in the process once the runtime has initialised. */
static bool load_driver_symbols(char *why, size_t n)
{
    int (*sym)(void *, const char *, void *, char *, size_t) = te_host_table->cuda_symbol;
    void *drv = te_host_table->cuda_driver(1, why, n);
    return drv && sym(drv, "cuMemGetAddressRange_v2", &nvl_cu.cu_mem_get_address_range, why, n);
}

static int count_devices(int *ndev, char *why, size_t why_len)
{
    int n = 0;
    cudaError_t err = nvl_cu.get_device_count(&n);
    if (err != cudaSuccess || n <= 0) {
        snprintf(why, why_len, "no CUDA device (cudaGetDeviceCount: %s)",
                 err != cudaSuccess ? nvl_cuda_error(err) : "0 devices");
        return TE_ERR_DEVICE_NOT_FOUND;
    }
    *ndev = n < NVL_MAX_DEVICES ? n : NVL_MAX_DEVICES;
    return 0;
}

int nvl_cuda_init(int *ndev, char *why, size_t why_len)
{
    int rc = 0;
    pthread_mutex_lock(&load_lock);
    if (!runtime_loaded) {
        void *rt = te_host_table->cuda_runtime(why, why_len);
        if (!rt || !load_runtime_symbols(rt, why, why_len))
            rc = TE_ERR_DEVICE_NOT_FOUND; /* a broken runtime stays mapped, unused */
        else
            runtime_loaded = true;
    }
    if (!rc)
        rc = count_devices(ndev, why, why_len);
    if (!rc && !driver_loaded) {
        if (load_driver_symbols(why, why_len))
            driver_loaded = true;
        else
            rc = TE_ERR_DEVICE_NOT_FOUND;
    }
    pthread_mutex_unlock(&load_lock);
    return rc;
}

const char *nvl_cuda_error(cudaError_t err)
{
    nvl_cu.get_last_error();
    const char *s = nvl_cu.get_error_string(err);
    return s ? s : "unknown CUDA error";
}

/* The core's answer (ABI 1.2 cuda_device_of, required at init): one
 * definition of device / managed / ordinal for the whole engine.  The driver
 * is in the process by now (nvl_cuda_init loaded it), so the core sees it. */
int nvl_cuda_device_of(const void *p)
{
    return te_host_table->cuda_device_of(p);
}

int nvl_cuda_alloc_range(const void *p, uint64_t *base, uint64_t *size)
{
    CUdeviceptr b = 0;
    size_t s = 0;
    if (nvl_cu.cu_mem_get_address_range(&b, &s, (CUdeviceptr)(uintptr_t)p) != CUDA_SUCCESS)
        return TE_ERR_INVALID_ARGUMENT;
    *base = (uint64_t)b;
    *size = (uint64_t)s;
    return 0;
}
