/* good.c - a test transport "testgood": copies within one process (local
 * peers only), implements only create/destroy/peer_open/submit so the core's
 * stubs cover the rest.  Built for the loader and batch tests. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "te/plugin.h"

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
    if (TE_HOST_HAS(te_host_table, metric_add)) {
        te_host_table->metric_add(host, TE_METRIC_RETRIES, 2);
        te_host_table->metric_add(host, TE_METRIC_RAIL_PAUSES, 3);
        te_host_table->metric_add(host, 999, 7);
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
        int rc = te_host_table->pin_range(i->host, s->remote, s->length, &pin);
        if (!rc) {
            void *remote = (void *)(uintptr_t)s->remote;
            bool write = s->opcode == TE_OP_WRITE;
            memmove(write ? remote : s->local, write ? s->local : remote, s->length);
            te_host_table->unpin_range(i->host, pin);
        }
        te_host_table->slice_done(i->host, s, rc);
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

TE_PLUGIN_DEFINE(TE_PLUGIN_TRANSPORT, "testgood", "test", &ops, unpin_range)
