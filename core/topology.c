/* topology.c - the NIC priority matrix in the original's JSON format, built
 * from the discovered hardware (topology_discover.c) or read from
 * MC_CUSTOM_TOPO_JSON, and the ordered NIC list for a memory location. */
#include "topology.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "topology_model.h"

/* ---- this host's hardware, discovered once ------------------------------- */

/* Hardware does not change under a running process, and an hwloc scan with
 * I/O takes tens of milliseconds, while the RDMA transport asks for NICs on
 * every registration: the model is discovered once per process and never
 * freed (it stays reachable, so leak checkers do not report it). */
static te_topo_model g_model;
static int g_model_rc;
static pthread_once_t g_model_once = PTHREAD_ONCE_INIT;

static void discover_once(void)
{
    int rc = te_topo_model_hwloc(NULL, &g_model);
    if (rc == 0)
        return;
    if (rc != TE_ERR_NOT_IMPLEMENTED)
        TE_WARN("topology: hwloc discovery failed (%s); listing NUMA nodes only", te_last_error());
    g_model_rc = te_topo_model_fallback(&g_model);
}

static int local_model(const te_topo_model **m)
{
    pthread_once(&g_model_once, discover_once);
    *m = &g_model;
    return g_model_rc;
}

/* ---- filters ------------------------------------------------------------- */

/* Calls fn on each non-blank item of a comma separated list, trimmed; stops
 * and returns true as soon as fn does. */
static bool list_any(const char *list, bool (*fn)(const char *item, size_t len, const void *arg),
                     const void *arg)
{
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        size_t n = len;
        while (n && (*s == ' ' || *s == '\t'))
            s++, n--;
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n && fn(s, n, arg))
            return true;
        p = end ? end + 1 : p + len;
    }
    return false;
}

static bool item_nonblank(const char *item, size_t len, const void *arg)
{
    return true;
}

static bool item_equals(const char *item, size_t len, const void *name)
{
    return strlen(name) == len && memcmp(item, name, len) == 0;
}

/* An empty or blank filter keeps every NIC; names must match exactly. */
static bool filter_accepts(const char *filter, const char *name)
{
    if (!list_any(filter, item_nonblank, NULL))
        return true;
    return list_any(filter, item_equals, name);
}

/* ---- the matrix from a model --------------------------------------------- */

/* Appends "key": [[preferred], [available]] with the accepted NICs. */
static int add_entry(json_t *matrix, const char *key, const te_topo_model *m,
                     const unsigned char *ok, const unsigned char *pref)
{
    json_t *lists[2] = {json_array(), json_array()};
    json_t *entry = json_array();
    int rc = lists[0] && lists[1] && entry ? 0 : -1;
    for (int i = 0; rc == 0 && i < m->nic_count; i++)
        if (ok[i])
            rc = json_array_append_new(lists[pref[i] ? 0 : 1], json_string(m->nic_names[i]));
    if (rc == 0)
        rc = json_array_append(entry, lists[0]) || json_array_append(entry, lists[1]) ||
             json_object_set(matrix, key, entry);
    json_decref(lists[0]);
    json_decref(lists[1]);
    json_decref(entry);
    return rc ? te_fail(TE_ERR_MEMORY, "topology: out of memory") : 0;
}

static bool gpu_shares_numa(const te_topo_model *m, int g, int nic)
{
    for (int i = 0; i < m->numa_count; i++)
        if (m->gpu_near[(size_t)g * m->numa_count + i] && m->nic_near[(size_t)nic * m->numa_count + i])
            return true;
    return false;
}

/* As the original: the candidates are the NICs on the GPU's NUMA node (all
 * NICs when it has none); the preferred ones are the candidates closest in
 * the PCI tree, i.e. behind the same switch when there is one. */
static void gpu_preferred(const te_topo_model *m, int g, const unsigned char *ok,
                          unsigned char *pref)
{
    const int *dist = m->gpu_dist + (size_t)g * m->nic_count;
    bool local = false;
    int best = -1;
    for (int i = 0; i < m->nic_count; i++)
        local |= ok[i] && gpu_shares_numa(m, g, i);
    for (int i = 0; i < m->nic_count; i++) {
        bool cand = ok[i] && (!local || gpu_shares_numa(m, g, i));
        pref[i] = cand && dist[i] >= 0;
        if (pref[i] && (best < 0 || dist[i] < best))
            best = dist[i];
    }
    for (int i = 0; i < m->nic_count; i++)
        pref[i] = pref[i] && dist[i] == best;
}

static int add_entries(json_t *matrix, const te_topo_model *m, const unsigned char *ok,
                       unsigned char *pref)
{
    char key[32];
    int rc = 0;
    for (int n = 0; rc == 0 && n < m->numa_count; n++) {
        for (int i = 0; i < m->nic_count; i++)
            pref[i] = m->nic_near[(size_t)i * m->numa_count + n];
        snprintf(key, sizeof key, "cpu:%d", m->numa_ids[n]);
        rc = add_entry(matrix, key, m, ok, pref);
    }
    for (int g = 0; rc == 0 && g < m->gpu_count; g++) {
        gpu_preferred(m, g, ok, pref);
        snprintf(key, sizeof key, "cuda:%d", g);
        rc = add_entry(matrix, key, m, ok, pref);
    }
    return rc;
}

/* The NICs are filtered before the entries are built, as in the original, so
 * a GPU whose nearest NIC is filtered out prefers the next nearest. */
static int build_matrix(const te_topo_model *m, const char *device_filter, json_t **out)
{
    const char *env = te_cfg_str("MC_TE_FILTERS");
    unsigned char *ok = calloc((size_t)m->nic_count + 1, 1);
    unsigned char *pref = calloc((size_t)m->nic_count + 1, 1);
    json_t *matrix = json_object();
    int rc = 0;
    if (!ok || !pref || !matrix) {
        rc = te_fail(TE_ERR_MEMORY, "topology: out of memory");
        goto out;
    }
    for (int i = 0; i < m->nic_count; i++)
        ok[i] = filter_accepts(device_filter, m->nic_names[i]) &&
                filter_accepts(env, m->nic_names[i]);
    rc = add_entries(matrix, m, ok, pref);
out:
    free(ok);
    free(pref);
    if (rc)
        json_decref(matrix);
    else
        *out = matrix;
    return rc;
}

/* ---- MC_CUSTOM_TOPO_JSON ------------------------------------------------- */

/* NULL when `v` is [[names...], [names...]], else what is wrong with it. */
static const char *entry_problem(json_t *v, char *buf, size_t len)
{
    if (!json_is_array(v))
        return "is not an array";
    if (json_array_size(v) != 2) {
        snprintf(buf, len, "holds %zu lists instead of 2", json_array_size(v));
        return buf;
    }
    for (size_t l = 0; l < 2; l++) {
        json_t *list = json_array_get(v, l);
        size_t i;
        json_t *item;
        if (!json_is_array(list)) {
            snprintf(buf, len, "list %zu is not an array", l);
            return buf;
        }
        json_array_foreach(list, i, item) {
            if (!json_is_string(item)) {
                snprintf(buf, len, "item %zu of list %zu is not a string", i, l);
                return buf;
            }
        }
    }
    return NULL;
}

static int check_custom(json_t *root, const char *path)
{
    const char *key;
    json_t *v;
    char buf[96];
    if (!json_is_object(root))
        return te_fail(TE_ERR_MALFORMED_JSON,
                       "MC_CUSTOM_TOPO_JSON=%s: expected an object {\"cpu:0\": [[...], [...]], ...}",
                       path);
    json_object_foreach(root, key, v) {
        const char *problem = entry_problem(v, buf, sizeof buf);
        if (problem)
            return te_fail(TE_ERR_MALFORMED_JSON,
                           "MC_CUSTOM_TOPO_JSON=%s: entry \"%s\" %s; each entry must be "
                           "[[preferred NICs], [available NICs]]",
                           path, key, problem);
    }
    return 0;
}

/* The file replaces discovery as it is: the device filters do not apply,
 * like in the original, since the user wrote the lists on purpose. */
static int load_custom(const char *path, json_t **out)
{
    json_error_t err;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!root && json_error_code(&err) == json_error_cannot_open_file)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "MC_CUSTOM_TOPO_JSON=%s: %s", path, err.text);
    if (!root)
        return te_fail(TE_ERR_MALFORMED_JSON, "MC_CUSTOM_TOPO_JSON=%s: line %d column %d: %s",
                       path, err.line, err.column, err.text);
    int rc = check_custom(root, path);
    if (rc)
        json_decref(root);
    else
        *out = root;
    return rc;
}

static int local_matrix(const char *device_filter, json_t **out)
{
    const char *custom = te_cfg_str("MC_CUSTOM_TOPO_JSON");
    const te_topo_model *m;
    if (custom)
        return load_custom(custom, out);
    int rc = local_model(&m);
    return rc ? rc : build_matrix(m, device_filter, out);
}

/* Compact with sorted keys: the key order of the original's styled output
 * (jsoncpp sorts object members too), without its whitespace. */
static int dump_json(json_t *v, char **out)
{
    *out = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    return *out ? 0 : te_fail(TE_ERR_MEMORY, "topology: out of memory");
}

int te_topology_local_json(const char *device_filter, char **json)
{
    json_t *matrix = NULL;
    if (!json)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "topology: NULL output");
    *json = NULL;
    int rc = local_matrix(device_filter, &matrix);
    if (!rc)
        rc = dump_json(matrix, json);
    json_decref(matrix);
    return rc;
}

int te_get_local_topology(const char *device_filter, char **json)
{
    return te_topology_local_json(device_filter, json);
}

int te_topology_json_from_xml(const char *xml_path, const char *device_filter, char **json)
{
    te_topo_model m;
    json_t *matrix = NULL;
    if (!xml_path || !json)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "topology: NULL argument");
    *json = NULL;
    int rc = te_topo_model_hwloc(xml_path, &m);
    if (rc)
        return rc;
    rc = build_matrix(&m, device_filter, &matrix);
    if (!rc)
        rc = dump_json(matrix, json);
    json_decref(matrix);
    te_topo_model_free(&m);
    return rc;
}

/* ---- NICs for a location ------------------------------------------------- */

static bool list_has(json_t *list, json_t *name)
{
    size_t i;
    json_t *have;
    json_array_foreach(list, i, have) {
        if (json_equal(have, name))
            return true;
    }
    return false;
}

static int append_unique(json_t *list, json_t *names)
{
    size_t i;
    json_t *name;
    json_array_foreach(names, i, name) {
        if (!list_has(list, name) && json_array_append(list, name))
            return te_fail(TE_ERR_MEMORY, "topology: out of memory");
    }
    return 0;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every NIC of the matrix: the preferred lists of all entries (in key
 * order, so the result does not depend on the file's order), then the
 * available ones. */
static int all_nics(json_t *matrix, json_t *list)
{
    size_t n = json_object_size(matrix), k = 0;
    const char **keys = calloc(n + 1, sizeof *keys);
    const char *key;
    json_t *v;
    int rc = 0;
    if (!keys)
        return te_fail(TE_ERR_MEMORY, "topology: out of memory");
    json_object_foreach(matrix, key, v) {
        keys[k++] = key;
    }
    qsort(keys, n, sizeof *keys, str_cmp);
    for (int l = 0; rc == 0 && l < 2; l++)
        for (k = 0; rc == 0 && k < n; k++)
            rc = append_unique(list, json_array_get(json_object_get(matrix, keys[k]), (size_t)l));
    free(keys);
    return rc;
}

static int nics_for(json_t *matrix, const char *location, json_t *list)
{
    json_t *entry = location && strcmp(location, "*") ? json_object_get(matrix, location) : NULL;
    int rc = 0;
    if (entry) {
        rc = append_unique(list, json_array_get(entry, 0));
        if (!rc)
            rc = append_unique(list, json_array_get(entry, 1));
    }
    /* An entry that names no NIC is no reason to leave the memory unreachable. */
    if (!rc && json_array_size(list) == 0)
        rc = all_nics(matrix, list);
    return rc;
}

int te_topology_nics_json(const char *device_filter, const char *location, char **out)
{
    json_t *matrix = NULL, *list = NULL;
    if (!out)
        return te_fail(TE_ERR_INVALID_ARGUMENT, "topology: NULL output");
    *out = NULL;
    int rc = local_matrix(device_filter, &matrix);
    if (!rc && !(list = json_array()))
        rc = te_fail(TE_ERR_MEMORY, "topology: out of memory");
    if (!rc)
        rc = nics_for(matrix, location, list);
    if (!rc)
        rc = dump_json(list, out);
    json_decref(list);
    json_decref(matrix);
    return rc;
}
