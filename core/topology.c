/* topology.c - placeholder until the hwloc topology module lands (issue 6). */
#include "topology.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"

int te_topology_local_json(const char *device_filter, char **json)
{
    if (!json)
        return TE_ERR_INVALID_ARGUMENT;
    *json = NULL;
    return te_fail(TE_ERR_NOT_IMPLEMENTED, "topology discovery is not built yet");
}

int te_topology_nics_json(const char *device_filter, const char *location, char **json_array)
{
    *json_array = NULL;
    return te_fail(TE_ERR_NOT_IMPLEMENTED, "topology discovery is not built yet");
}

int te_topology_memory_location(const void *addr, size_t len, char *out, size_t out_len)
{
    snprintf(out, out_len, "*");
    return 0;
}

int te_get_local_topology(const char *device_filter, char **json)
{
    return te_topology_local_json(device_filter, json);
}
