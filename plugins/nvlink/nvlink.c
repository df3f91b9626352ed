/* nvlink.c - entry point of the NVLink transport: the instance, the members
 * it adds to the descriptor (host identity; per GPU buffer the IPC handle of
 * its allocation as the original's `shm_name`), registration and the ops. */
#include <inttypes.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nvlink.h"
#include "nvlink_hex.h"


/* ---- lifetime ------------------------------------------------------------ */

static int nvl_create(te_host *host, const te_transport_params *params, void **inst)
{
    char why[512] = "";
    int ndev = 0;
    int rc = nvl_cuda_init(&ndev, why, sizeof why);
    if (rc) {
        te_host_table->set_error("nvlink: %s", why);
        te_host_table->log(host, TE_LOG_DEBUG, NVL_NAME, "not available: %s", why);
        return TE_ERR_DEVICE_NOT_FOUND;
    }
    nvl_inst *in = calloc(1, sizeof *in);
    if (!in)
        return TE_ERR_MEMORY;
    in->host = host;
    in->pid = getpid();
    in->ndev = ndev;
    int order = 1;
    te_host_table->config_bool(host, "MC_TE_CUDA_SYNC_DEFAULT_STREAM", &order);
    in->order_default_stream = order;
    /* CUDA IPC handles open only under the kernel (and driver) that made
     * them: the boot id says which. */
    if (te_host_table->host_identity(0, in->host_id, sizeof in->host_id)) {
        free(in);
        te_host_table->set_error("nvlink: cannot read /proc/sys/kernel/random/boot_id");
        return TE_ERR_DEVICE_NOT_FOUND;
    }
    rc = nvl_copy_start(in);
    if (rc) {
        free(in);
        return rc;
    }
    te_host_table->log(host, TE_LOG_INFO, NVL_NAME, "%d CUDA device(s); %s", ndev,
                  in->order_default_stream ? "copies wait for the default stream"
                                           : "copies do not wait for the default stream");
    *inst = in;
    return 0;
}

static void nvl_destroy(void *inst)
{
    nvl_inst *in = inst;
    if (!in)
        return;
    nvl_copy_stop(in);
    free(in);
}

static int nvl_describe(void *inst, char **json_object)
{
    nvl_inst *in = inst;
    json_t *o = json_pack("{s:s, s:i, s:i}", "nvlink_host_id", in->host_id, "nvlink_pid",
                          (int)in->pid, "nvlink_version", NVL_VERSION);
    *json_object = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return *json_object ? 0 : TE_ERR_MEMORY;
}

/* ---- registration -------------------------------------------------------- */

/* Exports the allocation holding m (on GPU dev) so peers can map it.  Runs
 * in the caller's thread: its current device is put back and no CUDA error
 * is left behind for the application to trip over. */
static bool export_buffer(nvl_inst *in, nvl_mr *m, int dev)
{
    int old = 0;
    const char *why = NULL;
    cudaError_t err = nvl_cu.get_device(&old);
    if (err == cudaSuccess)
        err = nvl_cu.set_device(dev);
    cudaIpcMemHandle_t h;
    if (err != cudaSuccess) {
        why = nvl_cuda_error(err);
    } else if (nvl_cuda_alloc_range((void *)(uintptr_t)m->addr, &m->base, &m->size) != 0) {
        why = "cuMemGetAddressRange failed";
    } else if (m->addr + m->len > m->base + m->size) {
        why = "the range spans more than one cudaMalloc allocation";
    } else if ((err = nvl_cu.ipc_get_mem_handle(&h, (void *)(uintptr_t)m->base)) != cudaSuccess) {
        why = nvl_cuda_error(err); /* e.g. cuMemCreate or cudaMallocAsync memory */
    } else {
        memcpy(m->handle, &h, NVL_HANDLE_BYTES);
        if (nvl_cu.device_get_pci_bus_id(m->pci, (int)sizeof m->pci, dev) != cudaSuccess) {
            nvl_cu.get_last_error();
            m->pci[0] = '\0';
        }
        m->ipc = true;
    }
    nvl_cu.set_device(old);
    if (why)
        NVL_LOG(in, TE_LOG_WARN,
                "GPU buffer %#" PRIx64 "+%" PRIu64 " is registered for local use only: "
                "cannot export a CUDA IPC handle (%s)",
                m->addr, m->len, why);
    return m->ipc;
}

/* Host memory is accepted silently as local-only, as by the original: it
 * can be the local side of a copy but peers cannot map it. */
static int nvl_register(void *inst, void *addr, size_t length, const char *location, void **mr)
{
    nvl_inst *in = inst;
    nvl_mr *m = calloc(1, sizeof *m);
    if (!m)
        return TE_ERR_MEMORY;
    m->addr = (uint64_t)(uintptr_t)addr;
    m->len = length;
    snprintf(m->location, sizeof m->location, "%s", location && *location ? location : "*");
    int dev = nvl_cuda_device_of(addr);
    if (dev >= 0)
        export_buffer(in, m, dev);
    *mr = m;
    return 0;
}

static int nvl_unregister(void *inst, void *mr)
{
    free(mr); /* an exported handle needs no release on the exporting side */
    return 0;
}

/* {"name": location} like the original, and for exported GPU memory the
 * handle plus the allocation it maps (the core publishes the registered
 * range as addr/length; peers relocate by ipc_base). */
static int nvl_describe_buffer(void *inst, void *mr, char **json_object)
{
    nvl_mr *m = mr;
    json_t *o = json_pack("{s:s}", "name", m->location);
    if (o && m->ipc) {
        char hex[2 * NVL_HANDLE_BYTES + 1];
        nvl_hex_encode(m->handle, NVL_HANDLE_BYTES, hex, sizeof hex);
        json_object_set_new(o, "shm_name", json_string(hex));
        json_object_set_new(o, "ipc_base", json_integer((json_int_t)m->base));
        json_object_set_new(o, "ipc_size", json_integer((json_int_t)m->size));
        if (m->pci[0])
            json_object_set_new(o, "gpu_pci", json_string(m->pci));
    }
    *json_object = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return *json_object ? 0 : TE_ERR_MEMORY;
}

/* ---- the descriptor ------------------------------------------------------ */

static const te_transport_ops nvl_ops = {
    .size = sizeof(te_transport_ops),
    .caps = TE_TRANSPORT_CAP_GPU, /* same host only; local memory need not be registered */
    .slice_size = 0,              /* one copy per request, as the original */
    .create = nvl_create,
    .destroy = nvl_destroy,
    .describe = nvl_describe,
    .register_memory = nvl_register,
    .unregister_memory = nvl_unregister,
    .describe_buffer = nvl_describe_buffer,
    .peer_open = nvl_peer_open,
    .peer_close = nvl_peer_close,
    .submit = nvl_submit,
};


TE_PLUGIN_DEFINE(TE_PLUGIN_TRANSPORT, NVL_NAME, "0.1.0", &nvl_ops, cuda_progress_wait)
