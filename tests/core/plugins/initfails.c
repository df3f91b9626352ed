/* initfails.c - a test transport whose te_plugin_init fails: refused. */
#include "te/plugin.h"

TE_PLUGIN_EXPORT int te_plugin_init(const te_host_api *host, const te_plugin_desc **out)
{
    return TE_ERR_DEVICE_NOT_FOUND;
}
