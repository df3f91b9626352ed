/* topology.h - NIC/CPU/GPU locality (hwloc) in the original's JSON format. */
#ifndef TE_CORE_TOPOLOGY_H
#define TE_CORE_TOPOLOGY_H

#include <stddef.h>

/* The priority matrix of this host as JSON text, NICs filtered by the comma
 * separated `device_filter` (NULL/"" = all) and by MC_TE_FILTERS; replaced by
 * the file named in MC_CUSTOM_TOPO_JSON when set.  *json is malloc()'d. */
int te_topology_local_json(const char *device_filter, char **json);

/* The NICs for `location` in order of preference (preferred, then
 * available) as a JSON array text, from the matrix of te_topology_local_json. */
int te_topology_nics_json(const char *device_filter, const char *location, char **json_array);

/* "cpu:N" / "cuda:N" for the memory at addr, "*" when unknown. */
int te_topology_memory_location(const void *addr, size_t len, char *out, size_t out_len);

#endif
