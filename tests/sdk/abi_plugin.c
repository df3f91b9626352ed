/*
 * abi_plugin.c - one test transport built several ways by sdk_test.sh against
 * the installed headers (or the frozen ABI 1.0 header) to pin the loader's
 * versioning rules.  -DPLUGIN_NAME="..." and one -DVARIANT_*:
 *   VARIANT_CURRENT     built for the installed header's ABI; checks at init
 *                       that the host table has that ABI's members (1.2:
 *                       cuda_device_of)
 *   VARIANT_FROZEN_1_0  built against tests/sdk/abi/plugin_abi_1_0.h
 *   VARIANT_NEWER       claims the next minor; its desc and ops tables are
 *                       bigger, with a trailing member the core does not know
 *   VARIANT_SHORT_OPS   an ops table smaller than ABI 1.0's (refused)
 *   VARIANT_SHORT_DESC  a descriptor smaller than ABI 1.0's (refused)
 *   VARIANT_MAJOR       built for the next ABI major (refused)
 */
#include <stddef.h>
#include <string.h>

#ifdef VARIANT_FROZEN_1_0
#include "plugin_abi_1_0.h"
#else
#include <te/plugin.h>
#endif

static const te_host_api *g_host;

static int create(te_host *host, const te_transport_params *p, void **inst)
{
    *inst = host;
    return 0;
}

static int peer_open(void *inst, const te_peer_info *peer, void **handle)
{
    *handle = inst;
    return 0;
}

/* Copies synchronously: slice_done may be called from inside submit. */
static int submit(void *inst, te_slice *const *slices, size_t n)
{
    te_host *host = inst;
    for (size_t k = 0; k < n; k++) {
        te_slice *s = slices[k];
        void *pin;
        int rc = g_host->pin_range(host, s->remote, s->length, &pin);
        if (!rc) {
            void *remote = (void *)(uintptr_t)s->remote;
            if (s->opcode == TE_OP_WRITE)
                memmove(remote, s->local, s->length);
            else
                memmove(s->local, remote, s->length);
            g_host->unpin_range(host, pin);
        }
        g_host->slice_done(host, s, rc);
    }
    return 0;
}

#define OPS_MEMBERS .caps = 0, .slice_size = 4096, .create = create, .peer_open = peer_open, \
                    .submit = submit

#ifdef VARIANT_NEWER
/* What a plugin built against a future 1.(N+1) header looks like to this core. */
static int future_op(void *inst) { return 0; }
static const struct {
    te_transport_ops base;
    int (*future_op)(void *inst);
} ops_next = {.base = {.size = sizeof ops_next, OPS_MEMBERS}, .future_op = future_op};
static const struct {
    te_plugin_desc base;
    const char *future_member;
} desc_next = {
    .base = {.size = sizeof desc_next, .abi_major = TE_PLUGIN_ABI_MAJOR,
             .abi_minor = TE_PLUGIN_ABI_MINOR + 1, .kind = TE_PLUGIN_TRANSPORT,
             .name = PLUGIN_NAME, .version = "test", .ops = &ops_next},
    .future_member = "ignored by older cores",
};
#define DESC (&desc_next.base)
#else
static const te_transport_ops ops = {
#ifdef VARIANT_SHORT_OPS
    .size = offsetof(te_transport_ops, ctrl), /* as if built before ctrl existed */
#else
    .size = sizeof ops,
#endif
    OPS_MEMBERS};
static const te_plugin_desc desc = {
#ifdef VARIANT_SHORT_DESC
    .size = offsetof(te_plugin_desc, ops),
#else
    .size = sizeof desc,
#endif
#ifdef VARIANT_MAJOR
    .abi_major = TE_PLUGIN_ABI_MAJOR + 1,
#else
    .abi_major = TE_PLUGIN_ABI_MAJOR,
#endif
    .abi_minor = TE_PLUGIN_ABI_MINOR,
    .kind = TE_PLUGIN_TRANSPORT,
    .name = PLUGIN_NAME,
    .version = "test",
    .ops = &ops,
};
#define DESC (&desc)
#endif

#ifdef VARIANT_CURRENT
/* Built for this header, so the core's table has every member it names:
 * the 1.2 cuda_device_of is there, at its place, and calls CUDA host memory
 * (a process without the CUDA driver holds no device memory). */
static int host_table_complete(const te_host_api *host)
{
    static int host_memory;
    return host->abi_minor >= TE_PLUGIN_ABI_MINOR && host->size >= sizeof(te_host_api) &&
           TE_HOST_HAS(host, host_identity) && TE_HOST_HAS(host, cuda_device_of) &&
           offsetof(te_host_api, cuda_device_of) ==
               offsetof(te_host_api, host_identity) + sizeof(void *) &&
           host->cuda_device_of && host->cuda_device_of(&host_memory) == -1 &&
           host->cuda_device_of(NULL) == -1;
}
#endif

TE_PLUGIN_EXPORT int te_plugin_init(const te_host_api *host, const te_plugin_desc **out)
{
#ifdef VARIANT_CURRENT
    if (!host_table_complete(host))
        return TE_ERR_PLUGIN; /* abi_check then reports sdkcurrent not loading */
#endif
    g_host = host;
    *out = DESC;
    return 0;
}
