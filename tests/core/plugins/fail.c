/* fail.c - a test transport "testfail" for the core's failover: it
 * reaches every peer, claims to reach other hosts, and fails every slice it
 * is handed with TE_TESTFAIL_STATUS (default TE_ERR_SOCKET, a broken path),
 * so the core must move the slices to the next transport, or, for a
 * target's refusal such as TE_ERR_ADDRESS_NOT_REGISTERED (-3), must not.
 * TE_TESTFAIL_TWICE=1 makes it a buggy transport that reports every slice
 * twice, which the core must count once. */
#include <stdlib.h>

#include "te/plugin.h"

typedef struct inst {
    te_host *host;
} inst;

static int create(te_host *host, const te_transport_params *p, void **out)
{
    (void)p;
    inst *i = calloc(1, sizeof *i);
    if (!i)
        return TE_ERR_MEMORY;
    i->host = host;
    *out = i;
    return 0;
}

static void destroy(void *i)
{
    free(i);
}

static int peer_open(void *i, const te_peer_info *peer, void **handle)
{
    (void)peer;
    *handle = i;
    return 0;
}

static int submit(void *vi, te_slice *const *slices, size_t n)
{
    inst *i = vi;
    const char *v = te_host_table->config(i->host, "TE_TESTFAIL_STATUS");
    int status = v ? atoi(v) : TE_ERR_SOCKET;
    const char *twice = te_host_table->config(i->host, "TE_TESTFAIL_TWICE");
    int reports = twice && atoi(twice) ? 2 : 1;
    for (size_t k = 0; k < n; k++)
        for (int r = 0; r < reports; r++)
            te_host_table->slice_done(i->host, slices[k], status);
    return 0;
}

static const te_transport_ops ops = {
    .size = sizeof ops,
    .caps = TE_TRANSPORT_CAP_REMOTE,
    .slice_size = 65536,
    .create = create,
    .destroy = destroy,
    .peer_open = peer_open,
    .submit = submit,
};

TE_PLUGIN_DEFINE(TE_PLUGIN_TRANSPORT, "testfail", "test", &ops, slice_done)
