/* topology.h - NIC/CPU/GPU locality (hwloc) in the original's JSON format:
 * the NIC priority matrix {"cpu:0": [[preferred], [available]], "cuda:0": ...},
 * the NICs to use for a memory location, and where a buffer lives. */
#ifndef TE_CORE_TOPOLOGY_H
#define TE_CORE_TOPOLOGY_H

#include <stddef.h>

/* The priority matrix of this host as JSON text, NICs filtered by the comma
 * separated `device_filter` (NULL/"" = all) and by MC_TE_FILTERS; replaced by
 * the file named in MC_CUSTOM_TOPO_JSON when set.  *json is malloc()'d.
 * Compact JSON with sorted keys (the original's jsoncpp output is styled but
 * has the same key order). */
int te_topology_local_json(const char *device_filter, char **json);

/* The NICs for `location` in order of preference (preferred, then
 * available) as a JSON array text, from the matrix of te_topology_local_json.
 * "*", NULL, an unknown location or an entry without NICs give every NIC:
 * the preferred ones of all entries first, then the available ones. */
int te_topology_nics_json(const char *device_filter, const char *location, char **json_array);

/* "cpu:N" / "cuda:N" for the memory at addr, "*" when unknown.  0, or
 * TE_ERR_INVALID_ARGUMENT for a NULL addr/out or a zero out_len. */
int te_topology_memory_location(const void *addr, size_t len, char *out, size_t out_len);

/* For tests and tools: the priority matrix of the host described by an hwloc
 * XML file (lstopo --of xml), filtered like te_topology_local_json (but
 * MC_CUSTOM_TOPO_JSON is not consulted).  TE_ERR_NOT_IMPLEMENTED when built
 * without hwloc. */
int te_topology_json_from_xml(const char *xml_path, const char *device_filter, char **json);

#endif
