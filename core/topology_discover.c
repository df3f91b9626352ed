/* topology_discover.c - fills a te_topo_model: with hwloc from this host or
 * an hwloc XML file (NUMA nodes, OpenFabrics devices, NVIDIA GPUs and their
 * PCI-tree distances), or, without hwloc, the NUMA nodes alone. */
#include "topology_model.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

#ifdef TE_HAVE_HWLOC
#include <hwloc.h>
#endif

int te_topo_model_alloc(te_topo_model *m, int numa_count, int nic_count, int gpu_count)
{
    memset(m, 0, sizeof *m);
    /* +1 keeps every calloc non-zero sized, so NULL always means no memory. */
    m->numa_ids = calloc((size_t)numa_count + 1, sizeof *m->numa_ids);
    m->nic_names = calloc((size_t)nic_count + 1, sizeof *m->nic_names);
    m->nic_near = calloc((size_t)nic_count * numa_count + 1, 1);
    m->gpu_near = calloc((size_t)gpu_count * numa_count + 1, 1);
    m->gpu_dist = calloc((size_t)gpu_count * nic_count + 1, sizeof *m->gpu_dist);
    if (!m->numa_ids || !m->nic_names || !m->nic_near || !m->gpu_near || !m->gpu_dist) {
        te_topo_model_free(m);
        return te_fail(TE_ERR_MEMORY, "topology: out of memory");
    }
    for (int i = 0; i < gpu_count * nic_count; i++)
        m->gpu_dist[i] = -1;
    m->numa_count = numa_count;
    m->nic_count = nic_count;
    m->gpu_count = gpu_count;
    return 0;
}

void te_topo_model_free(te_topo_model *m)
{
    if (!m)
        return;
    free(m->numa_ids);
    free(m->nic_names);
    free(m->nic_near);
    free(m->gpu_near);
    free(m->gpu_dist);
    memset(m, 0, sizeof *m);
}

/* ---- without hwloc ------------------------------------------------------- */

/* Straight from the kernel, so that neither libnuma nor sysfs is needed:
 * the nodes this process may allocate on. */
#define TE_MPOL_F_MEMS_ALLOWED (1 << 2)

static int allowed_nodes(unsigned long *mask, size_t words)
{
    int mode = 0;
    size_t maxnode = words * sizeof(unsigned long) * CHAR_BIT;
    memset(mask, 0, words * sizeof *mask);
    return (int)syscall(SYS_get_mempolicy, &mode, mask, maxnode, NULL, TE_MPOL_F_MEMS_ALLOWED);
}

int te_topo_model_fallback(te_topo_model *m)
{
    enum { WORDS = 64 }; /* 4096 nodes: MAX_NUMNODES of any kernel config */
    unsigned long mask[WORDS];
    const size_t bits = sizeof(unsigned long) * CHAR_BIT;
    int count = 0;
    if (allowed_nodes(mask, WORDS) != 0) {
        memset(mask, 0, sizeof mask);
        mask[0] = 1; /* no NUMA support: everything is node 0 */
    }
    for (size_t i = 0; i < WORDS * bits; i++)
        count += (mask[i / bits] >> (i % bits)) & 1;
    if (count == 0) {
        mask[0] = 1;
        count = 1;
    }
    int rc = te_topo_model_alloc(m, count, 0, 0);
    if (rc)
        return rc;
    for (size_t i = 0, n = 0; i < WORDS * bits; i++)
        if ((mask[i / bits] >> (i % bits)) & 1)
            m->numa_ids[n++] = (int)i;
    return 0;
}

#ifndef TE_HAVE_HWLOC

int te_topo_model_hwloc(const char *xml_path, te_topo_model *m)
{
    return te_fail(TE_ERR_NOT_IMPLEMENTED, "topology: built without hwloc");
}

#else

/* A device found in the tree: the object to measure distances from, its
 * name (NICs) or CUDA index when hwloc's CUDA plugin named it (GPUs). */
typedef struct found_dev {
    hwloc_obj_t obj;
    const char *name;
    int cuda_index;
} found_dev;

typedef struct found_set {
    found_dev *nics, *gpus;
    int nic_count, gpu_count;
} found_set;

static int load_topology(const char *xml_path, hwloc_topology_t *out)
{
    /* These components would initialise OpenCL, CUDA, NVML or X11 inside the
     * caller's process, which is slow and changes how it behaves after a fork;
     * the PCI view is all we need.  On Linux the "linux" component reads PCI
     * from sysfs itself; the libpciaccess one ("pci") adds nothing but a leak
     * that LeakSanitizer reports in every engine. */
    static const char *const skip[] = {"opencl", "cuda", "nvml", "gl", "levelzero", "rsmi", "pci"};
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0)
        return te_fail(TE_ERR_MEMORY, "topology: hwloc_topology_init failed");
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        hwloc_topology_set_components(t, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, skip[i]);
    /* PCI devices and the bridges above them give the distances; every OS
     * device is kept because hwloc reports virtual ones (soft-RoCE's rxe0)
     * only then.  Like the original, every NUMA node of the host is listed,
     * not only those of our cpuset. */
    hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    hwloc_topology_set_type_filter(t, HWLOC_OBJ_OS_DEVICE, HWLOC_TYPE_FILTER_KEEP_ALL);
    hwloc_topology_set_flags(t, HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED);
    if (xml_path && hwloc_topology_set_xml(t, xml_path) != 0) {
        int err = errno;
        hwloc_topology_destroy(t);
        return te_fail(TE_ERR_INVALID_ARGUMENT, "topology: cannot use hwloc XML %s: %s",
                       xml_path, strerror(err));
    }
    if (hwloc_topology_load(t) != 0) {
        int err = errno;
        hwloc_topology_destroy(t);
        return te_fail(xml_path ? TE_ERR_INVALID_ARGUMENT : TE_ERR_DEVICE_NOT_FOUND,
                       "topology: hwloc cannot load %s: %s", xml_path ? xml_path : "this host",
                       strerror(err));
    }
    *out = t;
    return 0;
}

/* "mlx5_2" before "mlx5_10": digit runs compare as numbers. */
static int natural_cmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            char *ea, *eb;
            unsigned long long na = strtoull(a, &ea, 10), nb = strtoull(b, &eb, 10);
            if (na != nb)
                return na < nb ? -1 : 1;
            a = ea;
            b = eb;
            continue;
        }
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

static int nic_cmp(const void *x, const void *y)
{
    return natural_cmp(((const found_dev *)x)->name, ((const found_dev *)y)->name);
}

static unsigned long pci_key(hwloc_obj_t o)
{
    const struct hwloc_pcidev_attr_s *p = &o->attr->pcidev;
    return ((unsigned long)p->domain << 24) | ((unsigned long)p->bus << 16) |
           ((unsigned long)p->dev << 8) | p->func;
}

/* CUDA's index when every GPU has one, else PCI bus order (CUDA's order
 * with CUDA_DEVICE_ORDER=PCI_BUS_ID, and in practice on uniform GPU hosts). */
static int gpu_cmp(const void *x, const void *y)
{
    const found_dev *a = x, *b = y;
    if (a->cuda_index != b->cuda_index)
        return a->cuda_index < b->cuda_index ? -1 : 1;
    unsigned long ka = pci_key(a->obj), kb = pci_key(b->obj);
    return ka < kb ? -1 : ka > kb;
}

/* The N of a "cudaN" OS device (named by hwloc's CUDA plugin after the
 * runtime's index, e.g. in an XML exported on a GPU host), else -1.  A
 * GPU/co-processor OS device named cuda* or nvml* also marks a GPU. */
static int cuda_osdev_index(hwloc_obj_t pci, int *is_gpu)
{
    for (hwloc_obj_t c = pci->io_first_child; c; c = c->next_sibling) {
        if (c->type != HWLOC_OBJ_OS_DEVICE || !c->name)
            continue;
        if (c->attr->osdev.type != HWLOC_OBJ_OSDEV_GPU &&
            c->attr->osdev.type != HWLOC_OBJ_OSDEV_COPROC)
            continue;
        if (strncmp(c->name, "nvml", 4) == 0)
            *is_gpu = 1;
        if (strncmp(c->name, "cuda", 4) == 0 && isdigit((unsigned char)c->name[4])) {
            *is_gpu = 1;
            return atoi(c->name + 4);
        }
    }
    return -1;
}

static int is_nvidia_gpu(hwloc_obj_t pci)
{
    unsigned cls = pci->attr->pcidev.class_id;
    return pci->attr->pcidev.vendor_id == 0x10de && (cls == 0x0302 || cls == 0x0300);
}

static int find_gpus(hwloc_topology_t t, found_set *f)
{
    int n = 0, all_indexed = 1;
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_pcidev(t, o));)
        n++;
    f->gpus = calloc((size_t)n + 1, sizeof *f->gpus);
    if (!f->gpus)
        return te_fail(TE_ERR_MEMORY, "topology: out of memory");
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_pcidev(t, o));) {
        int is_gpu = is_nvidia_gpu(o);
        int index = cuda_osdev_index(o, &is_gpu);
        if (!is_gpu)
            continue;
        all_indexed &= index >= 0;
        f->gpus[f->gpu_count++] = (found_dev){.obj = o, .cuda_index = index};
    }
    for (int i = 0; !all_indexed && i < f->gpu_count; i++)
        f->gpus[i].cuda_index = -1;
    qsort(f->gpus, (size_t)f->gpu_count, sizeof *f->gpus, gpu_cmp);
    return 0;
}

static int find_nics(hwloc_topology_t t, found_set *f)
{
    int n = 0;
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_osdev(t, o));)
        n++;
    f->nics = calloc((size_t)n + 1, sizeof *f->nics);
    if (!f->nics)
        return te_fail(TE_ERR_MEMORY, "topology: out of memory");
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_osdev(t, o));) {
        if (o->attr->osdev.type != HWLOC_OBJ_OSDEV_OPENFABRICS || !o->name)
            continue;
        if (strlen(o->name) >= TE_TOPO_NAME_MAX) {
            TE_WARN("topology: ignoring RDMA device with a %zu byte name", strlen(o->name));
            continue;
        }
        /* Distances are measured from the device's PCI function (or from
         * the machine for a virtual device such as rxe0). */
        f->nics[f->nic_count++] = (found_dev){.obj = o->parent, .name = o->name};
    }
    qsort(f->nics, (size_t)f->nic_count, sizeof *f->nics, nic_cmp);
    return 0;
}

/* The next index listed in CUDA_VISIBLE_DEVICES at *s, or -1 at the end of
 * the usable list; *uuid is set for GPU-/MIG- entries we cannot resolve. */
static int next_visible(const char **s, int *uuid)
{
    const char *p = *s;
    while (*p == ' ' || *p == ',')
        p++;
    if (!*p)
        return -1;
    if (!isdigit((unsigned char)*p)) {
        *uuid = strncmp(p, "GPU-", 4) == 0 || strncmp(p, "MIG-", 4) == 0;
        return -1;
    }
    char *end;
    long v = strtol(p, &end, 10);
    *s = end;
    if (*end && *end != ',' && *end != ' ')
        return -1;
    return v > INT_MAX ? -1 : (int)v;
}

/* CUDA numbers only the devices CUDA_VISIBLE_DEVICES lists, in its order,
 * up to the first invalid entry; "cuda:N" must name what cudaSetDevice(N)
 * would.  UUID entries need NVML to resolve: then the list is ignored. */
static int apply_cuda_visible(found_set *f)
{
    const char *env = te_cfg_str("CUDA_VISIBLE_DEVICES");
    if (!env)
        return 0;
    found_dev *keep = calloc((size_t)f->gpu_count + 1, sizeof *keep);
    unsigned char *used = calloc((size_t)f->gpu_count + 1, 1);
    int n = 0, uuid = 0, rc = 0;
    if (!keep || !used) {
        rc = te_fail(TE_ERR_MEMORY, "topology: out of memory");
        goto out;
    }
    for (const char *s = env;;) {
        int v = next_visible(&s, &uuid);
        if (v < 0 || v >= f->gpu_count || used[v])
            break;
        used[v] = 1;
        keep[n++] = f->gpus[v];
    }
    if (uuid) {
        TE_WARN("topology: CUDA_VISIBLE_DEVICES=%s names GPUs by UUID; cuda:N follow PCI order",
                env);
        goto out;
    }
    memcpy(f->gpus, keep, (size_t)n * sizeof *keep);
    f->gpu_count = n;
out:
    free(keep);
    free(used);
    return rc;
}

/* Hops between two objects through their closest common ancestor: the
 * hwloc counterpart of the original's sysfs path comparison.  (hwloc's own
 * common-ancestor helper does not handle I/O objects.) */
static int tree_distance(hwloc_obj_t a, hwloc_obj_t b)
{
    int da = 0;
    for (hwloc_obj_t x = a; x; x = x->parent, da++) {
        int db = 0;
        for (hwloc_obj_t y = b; y; y = y->parent, db++)
            if (x == y)
                return da + db;
    }
    return -1;
}

/* row[i] = 1 for the NUMA nodes an I/O object is attached to.  One attached
 * to the whole machine (the kernel says numa_node -1) is local to none,
 * unless the machine has a single node. */
static void fill_near(hwloc_topology_t t, hwloc_obj_t io, const te_topo_model *m,
                      unsigned char *row)
{
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, io);
    hwloc_obj_t root = hwloc_get_root_obj(t);
    if (!anc || !anc->complete_nodeset)
        return;
    if (m->numa_count > 1 && hwloc_bitmap_isincluded(root->complete_nodeset, anc->complete_nodeset))
        return;
    for (int i = 0; i < m->numa_count; i++)
        row[i] = (unsigned char)hwloc_bitmap_isset(anc->complete_nodeset, (unsigned)m->numa_ids[i]);
}

static int int_cmp(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    return a < b ? -1 : a > b;
}

static int fill_model(hwloc_topology_t t, const found_set *f, te_topo_model *m)
{
    int numa = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    int rc = te_topo_model_alloc(m, numa > 0 ? numa : 0, f->nic_count, f->gpu_count);
    if (rc)
        return rc;
    for (int i = 0; i < m->numa_count; i++)
        m->numa_ids[i] = (int)hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)i)->os_index;
    qsort(m->numa_ids, (size_t)m->numa_count, sizeof *m->numa_ids, int_cmp);
    for (int n = 0; n < f->nic_count; n++) {
        memcpy(m->nic_names[n], f->nics[n].name, strlen(f->nics[n].name) + 1);
        fill_near(t, f->nics[n].obj, m, m->nic_near + (size_t)n * m->numa_count);
    }
    for (int g = 0; g < f->gpu_count; g++) {
        fill_near(t, f->gpus[g].obj, m, m->gpu_near + (size_t)g * m->numa_count);
        for (int n = 0; n < f->nic_count; n++)
            m->gpu_dist[(size_t)g * m->nic_count + n] = tree_distance(f->gpus[g].obj, f->nics[n].obj);
    }
    return 0;
}

int te_topo_model_hwloc(const char *xml_path, te_topo_model *m)
{
    hwloc_topology_t t = NULL;
    found_set f = {0};
    int rc = load_topology(xml_path, &t);
    if (rc)
        return rc;
    if (hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE) <= 0) {
        rc = te_fail(TE_ERR_DEVICE_NOT_FOUND, "topology: hwloc found no NUMA node in %s",
                     xml_path ? xml_path : "this host");
        goto out;
    }
    rc = find_nics(t, &f);
    if (!rc)
        rc = find_gpus(t, &f);
    if (!rc)
        rc = apply_cuda_visible(&f);
    if (!rc)
        rc = fill_model(t, &f, m);
out:
    free(f.nics);
    free(f.gpus);
    hwloc_topology_destroy(t);
    return rc;
}

#endif /* TE_HAVE_HWLOC */
