/* badmajor.c - a test transport built for a future ABI major: refused. */
#include "te/plugin.h"

static const te_transport_ops ops = {.size = sizeof ops};
static const te_plugin_desc desc = {
    .size = sizeof desc,
    .abi_major = TE_PLUGIN_ABI_MAJOR + 1,
    .abi_minor = 0,
    .kind = TE_PLUGIN_TRANSPORT,
    .name = "testbadmajor",
    .version = "test",
    .ops = &ops,
};

TE_PLUGIN_EXPORT int te_plugin_init(const te_host_api *host, const te_plugin_desc **out)
{
    *out = &desc;
    return 0;
}
