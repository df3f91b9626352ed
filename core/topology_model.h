/* topology_model.h - the hardware facts the NIC priority matrix is built from
 * (NUMA nodes, RDMA NICs, GPUs, who is near whom), filled by the discovery
 * backends in topology_hwloc.c and turned into JSON by topology.c. */
#ifndef TE_CORE_TOPOLOGY_MODEL_H
#define TE_CORE_TOPOLOGY_MODEL_H

#define TE_TOPO_NAME_MAX 64

typedef struct te_topo_model {
    int numa_count;
    int nic_count;
    int gpu_count;
    int *numa_ids;                        /* OS indexes of the NUMA nodes, ascending */
    char (*nic_names)[TE_TOPO_NAME_MAX];  /* RDMA device names, in natural order */
    unsigned char *nic_near;              /* [nic][numa]: 1 if the NIC is local to the node */
    unsigned char *gpu_near;              /* [gpu][numa], GPUs in CUDA's numbering */
    int *gpu_dist;                        /* [gpu][nic]: hops in the PCI tree, -1 unknown */
} te_topo_model;

/* Allocates the arrays for the given counts (all zero, distances -1). */
int te_topo_model_alloc(te_topo_model *m, int numa_count, int nic_count, int gpu_count);
void te_topo_model_free(te_topo_model *m);

/* Without hwloc: the NUMA nodes this process may use (get_mempolicy), no
 * NICs, no GPUs; node 0 alone when even that is unknown.  Never fails but
 * for lack of memory. */
int te_topo_model_fallback(te_topo_model *m);

/* With hwloc: this host (xml_path NULL) or the host an hwloc XML file
 * describes.  TE_ERR_NOT_IMPLEMENTED when built without hwloc. */
int te_topo_model_hwloc(const char *xml_path, te_topo_model *m);

#endif
