/* good.c - a test transport "testgood": copies within one process (local
 * peers only), implements only create/destroy/peer_open/submit so the core's
 * stubs cover the rest.  Built for the loader and batch tests. */
#include <stdlib.h>
#include <string.h>

#include "te/plugin.h"

static const te_host_api *host_api;

typedef struct inst {
    te_host *host;
} inst;

static int create(te_host *host, const te_transport_params *p, void **out)
{
    inst *i = calloc(1, sizeof *i);
    if (!i)
        return TE_ERR_MEMORY;
    i->host = host;
    *out = i;
    /* Counters a transport reports, and one the core does not know (ignored). */
    if (TE_HOST_HAS(host_api, metric_add)) {
        host_api->metric_add(host, TE_METRIC_RETRIES, 2);
        host_api->metric_add(host, TE_METRIC_RAIL_PAUSES, 3);
        host_api->metric_add(host, 999, 7);
    }
    return 0;
}

static void destroy(void *i)
{
    free(i);
}

static int peer_open(void *i, const te_peer_info *peer, void **handle)
{
    *handle = i;
    return 0;
}

static int submit(void *vi, te_slice *const *slices, size_t n)
{
    inst *i = vi;
    for (size_t k = 0; k < n; k++) {
        te_slice *s = slices[k];
        void *pin = NULL;
        int rc = host_api->pin_range(i->host, s->remote, s->length, &pin);
        if (!rc) {
            void *remote = (void *)(uintptr_t)s->remote;
            if (s->opcode == TE_OP_WRITE)
                memmove(remote, s->local, s->length);
            else
                memmove(s->local, remote, s->length);
            host_api->unpin_range(i->host, pin);
        }
        host_api->slice_done(i->host, s, rc);
    }
    return 0;
}

static const te_transport_ops ops = {
    .size = sizeof ops,
    .slice_size = 1000, /* odd on purpose: exercises the core's slicing */
    .create = create,
    .destroy = destroy,
    .peer_open = peer_open,
    .submit = submit,
};

static const te_plugin_desc desc = {
    .size = sizeof desc,
    .abi_major = TE_PLUGIN_ABI_MAJOR,
    .abi_minor = TE_PLUGIN_ABI_MINOR,
    .kind = TE_PLUGIN_TRANSPORT,
    .name = "testgood",
    .version = "test",
    .ops = &ops,
};

TE_PLUGIN_EXPORT int te_plugin_init(const te_host_api *host, const te_plugin_desc **out)
{
    host_api = host;
    *out = &desc;
    return 0;
}
