/* nvlink_peer.c - reaching a peer.  peer_open only reads the descriptor (no
 * CUDA call: the caller may be a CUDA host function); each GPU buffer is
 * mapped with cudaIpcOpenMemHandle by the progress thread on first use and
 * unmapped there once the core lets the peer go. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvlink.h"
#include "nvlink_hex.h"

/* ---- the descriptor --------------------------------------------------------- */

static bool get_u64(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return false;
    *out = (uint64_t)json_integer_value(v); /* addresses above 2^63 arrive negative */
    return true;
}

static void parse_pci(json_t *v, char *out)
{
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    size_t n = strlen(s);
    if (n >= NVL_PCI_LEN || strspn(s, "0123456789abcdefABCDEF:.") != n)
        s = "";
    snprintf(out, NVL_PCI_LEN, "%s", s);
}

/* One buffers[] entry.  Without ipc_base/ipc_size (the original's
 * descriptors) the published range is the allocation itself. */
static void parse_buffer(json_t *b, nvl_rbuf *r)
{
    if (!get_u64(b, "addr", &r->addr) || !get_u64(b, "length", &r->len))
        return; /* never matched: the core refuses such descriptors anyway */
    r->base = r->addr;
    r->size = r->len;
    uint64_t base, size;
    if (get_u64(b, "ipc_base", &base) && get_u64(b, "ipc_size", &size) && base <= r->addr &&
        base + size >= base && r->addr + r->len <= base + size) {
        r->base = base;
        r->size = size;
    }
    json_t *shm = json_object_get(b, "shm_name");
    r->ipc = json_is_string(shm) &&
             nvl_hex_decode(json_string_value(shm), r->handle, NVL_HANDLE_BYTES);
    parse_pci(json_object_get(b, "gpu_pci"), r->pci);
}

static int decline(nvl_inst *in, const te_peer_info *peer, const char *why)
{
    NVL_LOG(in, TE_LOG_DEBUG, "not used for %s: %s", peer->segment_name ? peer->segment_name : "?",
            why);
    return TE_ERR_NOT_SUPPORTED_TRANSPORT;
}

/* Same host: our host id; a descriptor without one (the original's) is
 * taken on trust when it is an nvlink segment. */
static const char *check_host(nvl_inst *in, json_t *root, nvl_peer *p)
{
    json_t *id = json_object_get(root, "nvlink_host_id");
    json_t *proto = json_object_get(root, "protocol");
    json_t *pid = json_object_get(root, "nvlink_pid");
    if (!id)
        return json_is_string(proto) && !strcmp(json_string_value(proto), NVL_NAME)
                   ? NULL
                   : "no nvlink members (the peer has no nvlink transport)";
    if (!json_is_string(id) || strcmp(json_string_value(id), in->host_id) != 0)
        return "on another host (nvlink_host_id differs)";
    p->self = json_is_integer(pid) && json_integer_value(pid) == (json_int_t)in->pid;
    return NULL;
}

static const char *parse_peer(nvl_inst *in, json_t *root, nvl_peer *p)
{
    const char *why = check_host(in, root, p);
    if (why)
        return why;
    json_t *bufs = json_object_get(root, "buffers");
    size_t n = json_is_array(bufs) ? json_array_size(bufs) : 0;
    p->bufs = calloc(n ? n : 1, sizeof *p->bufs);
    if (!p->bufs)
        return "out of memory";
    p->nbufs = n;
    bool any_ipc = false;
    for (size_t i = 0; i < n; i++) {
        parse_buffer(json_array_get(bufs, i), &p->bufs[i]);
        any_ipc |= p->bufs[i].ipc;
    }
    json_t *proto = json_object_get(root, "protocol");
    bool nvlink_peer = json_is_string(proto) && !strcmp(json_string_value(proto), NVL_NAME);
    if (!p->self && !any_ipc && !nvlink_peer)
        return "no GPU buffers to map";
    return NULL;
}

int nvl_peer_open(void *inst, const te_peer_info *peer, void **handle)
{
    nvl_inst *in = inst;
    if (!peer || !peer->descriptor)
        return TE_ERR_NOT_SUPPORTED_TRANSPORT;
    json_error_t jerr;
    json_t *root = json_loads(peer->descriptor, 0, &jerr);
    nvl_peer *p = calloc(1, sizeof *p);
    const char *why = !p ? "out of memory"
                      : json_is_object(root) ? parse_peer(in, root, p)
                                             : "descriptor is not a JSON object";
    json_decref(root);
    if (why) {
        int rc = p ? decline(in, peer, why) : TE_ERR_MEMORY;
        if (p)
            free(p->bufs);
        free(p);
        return rc;
    }
    snprintf(p->name, sizeof p->name, "%s", peer->segment_name ? peer->segment_name : "?");
    NVL_LOG(in, TE_LOG_DEBUG, "reaching %s through CUDA IPC (%zu buffers%s)", p->name, p->nbufs,
            p->self ? ", our own segment" : "");
    *handle = p;
    return 0;
}

/* The core calls this from any thread, even a CUDA host function: the
 * progress thread unmaps, once no copy of ours can still use the mapping. */
void nvl_peer_close(void *inst, void *handle)
{
    nvl_inst *in = inst;
    nvl_peer *p = handle;
    if (!p)
        return;
    pthread_mutex_lock(&in->lock);
    p->next_closing = in->closing;
    in->closing = p;
    pthread_cond_signal(&in->cond);
    pthread_mutex_unlock(&in->lock);
}

/* ---- mappings (progress thread) --------------------------------------------- */

/* A mapping of the same allocation made for another entry (several
 * registrations inside one cudaMalloc share its handle). */
static bool reuse_mapping(nvl_peer *p, nvl_rbuf *b)
{
    for (size_t i = 0; i < p->nbufs; i++) {
        nvl_rbuf *o = &p->bufs[i];
        if (o != b && o->mapped && o->ipc && o->base == b->base &&
            !memcmp(o->handle, b->handle, NVL_HANDLE_BYTES)) {
            b->mapped = o->mapped;
            b->map_dev = o->map_dev;
            return true;
        }
    }
    return false;
}

/* Maps on the GPU that holds the memory when it is visible here (found by
 * PCI bus id), so a peer's handles are always opened in one context. */
static int mapping_device(nvl_rbuf *b, int prefer_dev)
{
    int dev = -1;
    if (b->pci[0] && nvl_cu.device_get_by_pci_bus_id(&dev, b->pci) != cudaSuccess) {
        nvl_cu.get_last_error();
        dev = -1;
    }
    if (dev < 0)
        dev = prefer_dev >= 0 ? prefer_dev : 0;
    return dev;
}

int nvl_peer_map(nvl_inst *in, nvl_peer *p, nvl_rbuf *b, int prefer_dev)
{
    if (b->mapped)
        return 0;
    if (p->self) {
        int dev = nvl_cuda_device_of((void *)(uintptr_t)b->base);
        b->mapped = (void *)(uintptr_t)b->base;
        b->map_dev = dev >= 0 ? dev : prefer_dev >= 0 ? prefer_dev : 0;
        return 0;
    }
    if (!b->ipc) {
        NVL_LOG(in, TE_LOG_WARN, "buffer %#llx of %s has no shm_name: nvlink reaches only GPU "
                "memory of other processes", (unsigned long long)b->addr, p->name);
        return TE_ERR_ADDRESS_NOT_REGISTERED;
    }
    if (reuse_mapping(p, b))
        return 0;
    int dev = mapping_device(b, prefer_dev);
    cudaIpcMemHandle_t h;
    memcpy(&h, b->handle, NVL_HANDLE_BYTES);
    void *ptr = NULL;
    cudaError_t err = nvl_cu.set_device(dev);
    if (err == cudaSuccess)
        err = nvl_cu.ipc_open_mem_handle(&ptr, h, cudaIpcMemLazyEnablePeerAccess);
    if (err != cudaSuccess) {
        NVL_LOG(in, TE_LOG_WARN, "cannot map buffer %#llx of %s on GPU %d: %s",
                (unsigned long long)b->addr, p->name, dev, nvl_cuda_error(err));
        return TE_ERR_REMOTE; /* the peer may have freed it: the core refetches */
    }
    b->mapped = ptr;
    b->map_dev = dev;
    b->owner = true;
    return 0;
}

void nvl_peer_release(nvl_inst *in, nvl_peer *p)
{
    for (size_t i = 0; i < p->nbufs; i++) {
        nvl_rbuf *b = &p->bufs[i];
        if (!b->owner)
            continue;
        cudaError_t err = nvl_cu.set_device(b->map_dev);
        if (err == cudaSuccess)
            err = nvl_cu.ipc_close_mem_handle(b->mapped);
        if (err != cudaSuccess)
            NVL_LOG(in, TE_LOG_WARN, "unmapping a buffer of %s: %s", p->name, nvl_cuda_error(err));
    }
    free(p->bufs);
    free(p);
}
