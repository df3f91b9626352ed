/* nvlink.h - internal types of the NVLink transport (libte_nvlink.so): CUDA
 * IPC between processes of one host.  The CUDA runtime and driver are opened
 * with dlopen at create(), never linked, so the plugin loads anywhere and
 * reports TE_ERR_DEVICE_NOT_FOUND where there is no GPU.  See docs/gpu.md. */
#ifndef TE_NVLINK_H
#define TE_NVLINK_H

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "te/plugin.h"

#define NVL_NAME "nvlink"
#define NVL_VERSION 1
#define NVL_HANDLE_BYTES 64 /* sizeof(cudaIpcMemHandle_t) */
#define NVL_MAX_DEVICES 64
#define NVL_PCI_LEN 32


#define NVL_LOG(in, lvl, ...) te_host_table->log((in)->host, (lvl), NVL_NAME, __VA_ARGS__)

/* ---- the CUDA entry points (nvlink_cuda.c) ---------------------------------- */

typedef struct nvl_cuda {
    cudaError_t (*get_device_count)(int *count);
    cudaError_t (*get_device)(int *dev);
    cudaError_t (*set_device)(int dev);
    cudaError_t (*get_last_error)(void);
    const char *(*get_error_string)(cudaError_t err);
    cudaError_t (*ipc_get_mem_handle)(cudaIpcMemHandle_t *h, void *ptr);
    cudaError_t (*ipc_open_mem_handle)(void **ptr, cudaIpcMemHandle_t h, unsigned int flags);
    cudaError_t (*ipc_close_mem_handle)(void *ptr);
    cudaError_t (*stream_create_with_flags)(cudaStream_t *s, unsigned int flags);
    cudaError_t (*stream_destroy)(cudaStream_t s);
    cudaError_t (*stream_synchronize)(cudaStream_t s);
    cudaError_t (*event_create_with_flags)(cudaEvent_t *e, unsigned int flags);
    cudaError_t (*event_destroy)(cudaEvent_t e);
    cudaError_t (*event_record)(cudaEvent_t e, cudaStream_t s);
    cudaError_t (*event_query)(cudaEvent_t e);
    cudaError_t (*event_synchronize)(cudaEvent_t e);
    cudaError_t (*memcpy_async)(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                                cudaStream_t s);
    cudaError_t (*device_get_pci_bus_id)(char *id, int len, int dev);
    cudaError_t (*device_get_by_pci_bus_id)(int *dev, const char *id);
    /* Driver API (libcuda.so.1, loaded by the runtime). */
    CUresult (*cu_mem_get_address_range)(CUdeviceptr *base, size_t *size, CUdeviceptr p);
} nvl_cuda;

extern nvl_cuda nvl_cu;

/* Loads the runtime and asks it for devices: 0 and *ndev > 0, or
 * TE_ERR_DEVICE_NOT_FOUND with the reason in why. */
int nvl_cuda_init(int *ndev, char *why, size_t why_len);
/* Text of a runtime error; also clears the calling thread's sticky "last
 * error", which the application would otherwise see from its next check. */
const char *nvl_cuda_error(cudaError_t err);
/* Ordinal of the GPU holding plain device memory at p; -1 for host or
 * managed memory and for pointers CUDA does not know. */
int nvl_cuda_device_of(const void *p);
/* The cudaMalloc allocation that holds p. */
int nvl_cuda_alloc_range(const void *p, uint64_t *base, uint64_t *size);

/* ---- registration and peers ------------------------------------------------- */

/* Our handle of a registered buffer. */
typedef struct nvl_mr {
    uint64_t addr, len;
    char location[32];
    bool ipc; /* exported: peers can map [base, base+size) */
    uint64_t base, size;
    unsigned char handle[NVL_HANDLE_BYTES];
    char pci[NVL_PCI_LEN];
} nvl_mr;

/* A buffer of a peer's descriptor, and our mapping of it. */
typedef struct nvl_rbuf {
    uint64_t addr, len;  /* the registered range (what the core checks) */
    uint64_t base, size; /* the allocation the handle maps */
    bool ipc;
    unsigned char handle[NVL_HANDLE_BYTES];
    char pci[NVL_PCI_LEN];
    /* The progress thread's: */
    void *mapped; /* base as mapped here; NULL until first use */
    int map_dev;
    bool owner; /* this entry opened the mapping and closes it */
} nvl_rbuf;

typedef struct nvl_peer {
    struct nvl_peer *next_closing;
    char name[128];
    bool self; /* our own segment: addresses are used as they are */
    size_t nbufs;
    nvl_rbuf *bufs;
} nvl_peer;

/* ---- the instance ------------------------------------------------------------ */

typedef struct nvl_flight nvl_flight;

typedef struct nvl_dev {
    cudaStream_t stream; /* non-blocking, created on first use */
    bool has_stream;
    cudaEvent_t *events; /* idle events of this device */
    size_t nevents, cap;
} nvl_dev;

typedef struct nvl_inst {
    te_host *host;
    char host_id[320];
    pid_t pid;
    int ndev;
    bool order_default_stream; /* MC_TE_CUDA_SYNC_DEFAULT_STREAM */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    te_slice *qhead, *qtail; /* submitted, not yet taken by the progress thread */
    nvl_peer *closing;       /* peers to unmap and free */
    bool stop, running;
    pthread_t thread;
    /* The progress thread's: */
    nvl_flight *flights, *flights_tail;
    int64_t backoff_ns;
    nvl_dev dev[NVL_MAX_DEVICES];
} nvl_inst;

/* nvlink_peer.c */
int nvl_peer_open(void *inst, const te_peer_info *peer, void **handle);
void nvl_peer_close(void *inst, void *handle);
/* Progress thread: the peer buffer's address as mapped here (opened on first
 * use), and the device it is mapped on. */
int nvl_peer_map(nvl_inst *in, nvl_peer *p, nvl_rbuf *b, int prefer_dev);
void nvl_peer_release(nvl_inst *in, nvl_peer *p);

/* nvlink_copy.c */
int nvl_copy_start(nvl_inst *in);
void nvl_copy_stop(nvl_inst *in);
int nvl_submit(void *inst, te_slice *const *slices, size_t count);

#endif
