/* proto.c - RDMA wire formats: GID text, NIC paths, the handshake JSON and
 * the peer descriptor.  Everything a peer sends is validated here (types,
 * ranges, counts) before the verbs code sees it. */
#include "rdma_proto.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "te/te.h"

static int fail(char *err, size_t err_len, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_len, int rc, const char *fmt, ...)
{
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- GIDs and NIC paths --------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int rdma_gid_parse(const char *s, uint8_t gid[16])
{
    if (!s || strlen(s) != 47)
        return -1;
    for (int i = 0; i < 16; i++) {
        int hi = hexval((unsigned char)s[3 * i]), lo = hexval((unsigned char)s[3 * i + 1]);
        if (hi < 0 || lo < 0 || (i < 15 && s[3 * i + 2] != ':'))
            return -1;
        gid[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void rdma_gid_format(const uint8_t gid[16], char out[RDMA_GID_STR])
{
    for (int i = 0; i < 16; i++)
        snprintf(out + 3 * i, RDMA_GID_STR - 3 * (size_t)i, i < 15 ? "%02x:" : "%02x", gid[i]);
}

int rdma_nic_path_split(const char *path, char *seg, size_t seg_len, char *nic, size_t nic_len)
{
    const char *at = path ? strrchr(path, '@') : NULL;
    if (!at || at == path || !at[1])
        return -1;
    size_t n = (size_t)(at - path);
    if (n >= seg_len || strlen(at + 1) >= nic_len)
        return -1;
    memcpy(seg, path, n);
    seg[n] = '\0';
    strcpy(nic, at + 1);
    return 0;
}

bool rdma_valid_nic_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= RDMA_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '_' && c != '-' && c != '.' && c != ':')
            return false;
    }
    return true;
}

static bool valid_nic_path(const char *path)
{
    char seg[RDMA_PATH_MAX], nic[RDMA_NAME_MAX];
    return rdma_nic_path_split(path, seg, sizeof seg, nic, sizeof nic) == 0 &&
           rdma_valid_nic_name(nic);
}

/* ---- the handshake message ------------------------------------------------ */

int rdma_hs_encode(const rdma_hs_msg *m, char **json)
{
    char gid[RDMA_GID_STR];
    rdma_gid_format(m->local_gid, gid);
    json_t *qps = json_array();
    for (int i = 0; qps && i < m->nqp; i++)
        json_array_append_new(qps, json_integer(m->qp_num[i]));
    json_t *o = qps ? json_pack("{s:s, s:s, s:i, s:s, s:s, s:o, s:b, s:s}", "payload", "",
                                "local_nic_path", m->local_nic_path, "local_lid",
                                (int)m->local_lid, "local_gid", gid, "peer_nic_path",
                                m->peer_nic_path, "qp_num", qps, "ready_ack", (int)m->ready_ack,
                                "reply_msg", m->reply_msg)
                    : NULL;
    *json = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return *json ? 0 : TE_ERR_MEMORY;
}

static int get_string(json_t *o, const char *key, char *out, size_t out_len, char *err,
                      size_t err_len)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return fail(err, err_len, TE_ERR_MALFORMED_JSON, "\"%s\" is missing or not a string",
                    key);
    if (json_string_length(v) >= out_len || strlen(json_string_value(v)) != json_string_length(v))
        return fail(err, err_len, TE_ERR_MALFORMED_JSON, "\"%s\" is too long or holds NUL", key);
    strcpy(out, json_string_value(v));
    return 0;
}

static int get_uint(json_t *o, const char *key, uint64_t max, uint64_t *out, char *err,
                    size_t err_len)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max)
        return fail(err, err_len, TE_ERR_MALFORMED_JSON,
                    "\"%s\" is missing or not an integer in 0..%llu", key,
                    (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int hs_decode_qps(json_t *o, rdma_hs_msg *m, char *err, size_t err_len)
{
    json_t *qps = json_object_get(o, "qp_num");
    if (!json_is_array(qps) || json_array_size(qps) == 0 || json_array_size(qps) > RDMA_MAX_QP)
        return fail(err, err_len, TE_ERR_MALFORMED_JSON,
                    "\"qp_num\" must be an array of 1..%d QP numbers", RDMA_MAX_QP);
    m->nqp = (int)json_array_size(qps);
    for (int i = 0; i < m->nqp; i++) {
        json_t *q = json_array_get(qps, (size_t)i);
        if (!json_is_integer(q) || json_integer_value(q) <= 0 ||
            json_integer_value(q) > 0xffffff)
            return fail(err, err_len, TE_ERR_MALFORMED_JSON, "qp_num[%d] is not a QP number", i);
        m->qp_num[i] = (uint32_t)json_integer_value(q);
    }
    return 0;
}

static int hs_decode_fields(json_t *o, rdma_hs_msg *m, char *err, size_t err_len)
{
    char gid[RDMA_GID_STR + 1];
    uint64_t lid = 0;
    int rc = get_string(o, "local_nic_path", m->local_nic_path, sizeof m->local_nic_path, err,
                        err_len);
    if (!rc)
        rc = get_string(o, "peer_nic_path", m->peer_nic_path, sizeof m->peer_nic_path, err,
                        err_len);
    if (!rc && (!valid_nic_path(m->local_nic_path) || !valid_nic_path(m->peer_nic_path)))
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "NIC paths must be \"<segment>@<nic>\"");
    if (!rc)
        rc = get_uint(o, "local_lid", 0xffff, &lid, err, err_len);
    if (!rc)
        rc = get_string(o, "local_gid", gid, sizeof gid, err, err_len);
    if (!rc && rdma_gid_parse(gid, m->local_gid))
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "\"local_gid\" is not a GID: %s", gid);
    if (!rc)
        rc = hs_decode_qps(o, m, err, err_len);
    m->local_lid = (uint16_t)lid;
    return rc;
}

int rdma_hs_decode(const char *json, size_t len, rdma_hs_msg *m, char *err, size_t err_len)
{
    memset(m, 0, sizeof *m);
    json_error_t jerr;
    json_t *o = json ? json_loadb(json, len, 0, &jerr) : NULL;
    int rc = 0;
    if (!json_is_object(o)) {
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "handshake is not a JSON object");
        goto out;
    }
    json_t *reply = json_object_get(o, "reply_msg");
    if (reply && !json_is_string(reply)) {
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "\"reply_msg\" is not a string");
        goto out;
    }
    if (reply && json_string_length(reply) > 0) { /* a rejection: nothing else matters */
        snprintf(m->reply_msg, sizeof m->reply_msg, "%s", json_string_value(reply));
        goto out;
    }
    json_t *ack = json_object_get(o, "ready_ack");
    if (ack && !json_is_boolean(ack)) {
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "\"ready_ack\" is not a boolean");
        goto out;
    }
    m->ready_ack = ack && json_is_true(ack);
    rc = hs_decode_fields(o, m, err, err_len);
out:
    json_decref(o);
    return rc;
}

/* ---- priority matrices ----------------------------------------------------- */

/* An entry is [[names...],[names...]]: exactly two arrays of strings. */
static bool matrix_entry_valid(json_t *e)
{
    if (!json_is_array(e) || json_array_size(e) != 2)
        return false;
    for (size_t k = 0; k < 2; k++) {
        json_t *list = json_array_get(e, k), *name;
        size_t i;
        if (!json_is_array(list))
            return false;
        json_array_foreach(list, i, name) {
            if (!json_is_string(name))
                return false;
        }
    }
    return true;
}

static int name_index(const char *const *names, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

static int map_entry(json_t *entry, const char *const *names, int n, int *out, int *npref)
{
    int count = 0;
    for (size_t k = 0; k < 2; k++) {
        json_t *list = json_array_get(entry, k), *name;
        size_t i;
        json_array_foreach(list, i, name) {
            int idx = name_index(names, n, json_string_value(name));
            bool seen = false;
            for (int j = 0; j < count && !seen; j++)
                seen = out[j] == idx;
            if (idx >= 0 && !seen && count < n)
                out[count++] = idx;
        }
        if (k == 0)
            *npref = count;
    }
    return count;
}

static int matrix_nics_obj(json_t *m, const char *location, const char *const *names, int n,
                           int *out, int *npref)
{
    json_t *entry = json_is_object(m) && location ? json_object_get(m, location) : NULL;
    if (!entry || !matrix_entry_valid(entry))
        return -1;
    int count = map_entry(entry, names, n, out, npref);
    return count > 0 ? count : -1;
}

int rdma_matrix_nics(const char *matrix_json, const char *location, const char *const *names,
                     int n, int *out, int *npref)
{
    json_error_t jerr;
    json_t *m = matrix_json ? json_loads(matrix_json, 0, &jerr) : NULL;
    int rc = matrix_nics_obj(m, location, names, n, out, npref);
    json_decref(m);
    return rc;
}

int rdma_matrix_rank(const char *matrix_json, const char *const *names, int n, int *rank)
{
    for (int i = 0; i < n; i++)
        rank[i] = -1;
    json_error_t jerr;
    json_t *m = matrix_json ? json_loads(matrix_json, 0, &jerr) : NULL;
    int next = 0, rc = json_is_object(m) ? 0 : -1;
    const char **keys = calloc(json_is_object(m) ? json_object_size(m) + 1 : 1, sizeof *keys);
    size_t nkeys = 0;
    const char *key;
    json_t *entry;
    if (keys && !rc) {
        json_object_foreach(m, key, entry) {
            keys[nkeys++] = key;
        }
    }
    for (size_t a = 1; a < nkeys; a++) /* insertion sort: matrices are tiny */
        for (size_t b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
            const char *t = keys[b];
            keys[b] = keys[b - 1];
            keys[b - 1] = t;
        }
    for (size_t k = 0; k < nkeys; k++) {
        entry = json_object_get(m, keys[k]);
        int *idx = calloc((size_t)(n ? n : 1), sizeof *idx), np = 0;
        int cnt = idx && matrix_entry_valid(entry) ? map_entry(entry, names, n, idx, &np) : 0;
        for (int j = 0; j < cnt; j++)
            if (rank[idx[j]] < 0)
                rank[idx[j]] = next++;
        free(idx);
    }
    for (int i = 0; i < n; i++)
        if (rank[i] < 0)
            rank[i] = next++;
    free(keys);
    json_decref(m);
    return rc;
}

int rdma_names_to_indices(const char *array_json, const char *const *names, int n, int *out)
{
    json_error_t jerr;
    json_t *a = array_json ? json_loads(array_json, JSON_DECODE_ANY, &jerr) : NULL, *name;
    int count = json_is_array(a) ? 0 : -1;
    size_t i;
    json_array_foreach(a, i, name) {
        if (!json_is_string(name)) {
            count = -1;
            break;
        }
        int idx = name_index(names, n, json_string_value(name));
        bool seen = idx < 0;
        for (int j = 0; j < count && !seen; j++)
            seen = out[j] == idx;
        if (!seen && count < n)
            out[count++] = idx;
    }
    json_decref(a);
    return count;
}

static json_t *filter_list(json_t *list, const char *const *names, int n)
{
    json_t *out = json_array(), *name;
    size_t i;
    json_array_foreach(list, i, name) {
        if (out && name_index(names, n, json_string_value(name)) >= 0)
            json_array_append(out, name);
    }
    return out;
}

char *rdma_matrix_filter(const char *matrix_json, const char *const *names, int n)
{
    json_error_t jerr;
    json_t *m = matrix_json ? json_loads(matrix_json, 0, &jerr) : NULL;
    json_t *out = json_is_object(m) ? json_object() : NULL, *entry;
    const char *key;
    size_t names_kept = 0;
    if (out) {
        json_object_foreach(m, key, entry) {
            if (!matrix_entry_valid(entry))
                continue;
            json_t *pref = filter_list(json_array_get(entry, 0), names, n);
            json_t *avail = filter_list(json_array_get(entry, 1), names, n);
            names_kept += json_array_size(pref) + json_array_size(avail);
            json_object_set_new(out, key, json_pack("[o,o]", pref, avail));
        }
    }
    char *s = out && names_kept ? json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS)
                                           : NULL;
    json_decref(out);
    json_decref(m);
    return s;
}

char *rdma_matrix_fallback(const char *const *names, int n, int numa_nodes)
{
    json_t *m = json_object();
    for (int node = 0; m && node < (numa_nodes > 0 ? numa_nodes : 1); node++) {
        json_t *pref = json_array();
        for (int i = 0; pref && i < n; i++)
            json_array_append_new(pref, json_string(names[i]));
        char key[32];
        snprintf(key, sizeof key, "cpu:%d", node);
        json_object_set_new(m, key, json_pack("[o,[]]", pref));
    }
    char *s = m ? json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(m);
    return s;
}

/* ---- the peer's segment descriptor ---------------------------------------- */

void rdma_peer_desc_free(rdma_peer_desc *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nbuf; i++) {
        free(d->bufs[i].rkey);
        free(d->bufs[i].nics);
    }
    free(d->bufs);
    free(d->devs);
    free(d);
}

static int parse_device(json_t *v, int i, rdma_peer_dev *dev, char *err, size_t err_len)
{
    char gid[RDMA_GID_STR + 1];
    uint64_t lid = 0;
    if (!json_is_object(v))
        return fail(err, err_len, TE_ERR_MALFORMED_JSON, "devices[%d] is not an object", i);
    int rc = get_string(v, "name", dev->name, sizeof dev->name, err, err_len);
    if (!rc && !rdma_valid_nic_name(dev->name))
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "devices[%d] has a bad name", i);
    if (!rc)
        rc = get_uint(v, "lid", 0xffff, &lid, err, err_len);
    if (!rc)
        rc = get_string(v, "gid", gid, sizeof gid, err, err_len);
    if (!rc && rdma_gid_parse(gid, dev->gid))
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "devices[%d] gid is not a GID", i);
    dev->lid = (uint16_t)lid;
    return rc;
}

static int parse_devices(json_t *root, rdma_peer_desc *d, char *err, size_t err_len)
{
    json_t *devs = json_object_get(root, "devices");
    if (!json_is_array(devs) || json_array_size(devs) == 0)
        return fail(err, err_len, TE_ERR_NOT_SUPPORTED_TRANSPORT, "the peer has no RDMA devices");
    if (json_array_size(devs) > RDMA_MAX_DEVICES)
        return fail(err, err_len, TE_ERR_MALFORMED_JSON, "more than %d devices",
                    RDMA_MAX_DEVICES);
    d->ndev = (int)json_array_size(devs);
    d->devs = calloc((size_t)d->ndev, sizeof *d->devs);
    if (!d->devs)
        return TE_ERR_MEMORY;
    for (int i = 0; i < d->ndev; i++) {
        int rc = parse_device(json_array_get(devs, (size_t)i), i, &d->devs[i], err, err_len);
        if (rc)
            return rc;
        for (int j = 0; j < i; j++)
            if (!strcmp(d->devs[j].name, d->devs[i].name))
                return fail(err, err_len, TE_ERR_MALFORMED_JSON, "device %s listed twice",
                            d->devs[i].name);
    }
    return 0;
}

static int parse_keys(json_t *b, const char *key, size_t i, int ndev, uint32_t *out, char *err,
                      size_t err_len)
{
    json_t *arr = json_object_get(b, key);
    if (!json_is_array(arr) || json_array_size(arr) != (size_t)ndev)
        return fail(err, err_len, TE_ERR_MALFORMED_JSON,
                    "buffers[%zu].%s must hold one key per device (%d)", i, key, ndev);
    for (int k = 0; k < ndev; k++) {
        json_t *v = json_array_get(arr, (size_t)k);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > 0xffffffffll)
            return fail(err, err_len, TE_ERR_MALFORMED_JSON, "buffers[%zu].%s[%d] is not a key",
                        i, key, k);
        if (out)
            out[k] = (uint32_t)json_integer_value(v);
    }
    return 0;
}

static int parse_buffer(json_t *b, size_t i, rdma_peer_desc *d, json_t *matrix, char *err,
                        size_t err_len)
{
    rdma_peer_buf *pb = &d->bufs[i];
    uint64_t addr = 0, len = 0;
    if (!json_is_object(b))
        return fail(err, err_len, TE_ERR_MALFORMED_JSON, "buffers[%zu] is not an object", i);
    int rc = get_uint(b, "addr", UINT64_MAX >> 1, &addr, err, err_len);
    if (!rc)
        rc = get_uint(b, "length", UINT64_MAX >> 1, &len, err, err_len);
    if (!rc && (addr == 0 || len == 0 || addr + len < addr))
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "buffers[%zu] has a bad range", i);
    pb->addr = addr;
    pb->length = len;
    pb->rkey = calloc((size_t)d->ndev, sizeof *pb->rkey);
    pb->nics = calloc((size_t)d->ndev, sizeof *pb->nics);
    if (!rc && (!pb->rkey || !pb->nics))
        rc = TE_ERR_MEMORY;
    if (!rc)
        rc = parse_keys(b, "rkey", i, d->ndev, pb->rkey, err, err_len);
    if (!rc && json_object_get(b, "lkey"))
        rc = parse_keys(b, "lkey", i, d->ndev, NULL, err, err_len);
    if (rc)
        return rc;
    json_t *loc = json_object_get(b, "name");
    const char *names[RDMA_MAX_DEVICES];
    for (int k = 0; k < d->ndev; k++)
        names[k] = d->devs[k].name;
    pb->nnics = matrix_nics_obj(matrix, json_is_string(loc) ? json_string_value(loc) : NULL,
                                names, d->ndev, pb->nics, &pb->npref);
    if (pb->nnics <= 0) { /* unknown location: every device, all preferred */
        for (int k = 0; k < d->ndev; k++)
            pb->nics[k] = k;
        pb->nnics = pb->npref = d->ndev;
    }
    return 0;
}

static int check_matrix(json_t *matrix, char *err, size_t err_len)
{
    if (!matrix)
        return 0;
    if (!json_is_object(matrix))
        return fail(err, err_len, TE_ERR_MALFORMED_JSON, "priority_matrix is not an object");
    const char *key;
    json_t *entry;
    json_object_foreach(matrix, key, entry) {
        if (!matrix_entry_valid(entry))
            return fail(err, err_len, TE_ERR_MALFORMED_JSON,
                        "priority_matrix[\"%s\"] is not [[preferred],[available]]", key);
    }
    return 0;
}

static int parse_root(json_t *root, rdma_peer_desc *d, char *err, size_t err_len)
{
    json_t *proto = json_object_get(root, "protocol");
    if (!json_is_string(proto) || strcmp(json_string_value(proto), "rdma") != 0)
        return fail(err, err_len, TE_ERR_NOT_SUPPORTED_TRANSPORT, "the peer's protocol is %s",
                    json_is_string(proto) ? json_string_value(proto) : "missing");
    int rc = get_string(root, "name", d->name, sizeof d->name, err, err_len);
    if (!rc)
        rc = parse_devices(root, d, err, err_len);
    json_t *matrix = json_object_get(root, "priority_matrix");
    if (!rc)
        rc = check_matrix(matrix, err, err_len);
    json_t *bufs = json_object_get(root, "buffers");
    if (!rc && !json_is_array(bufs))
        rc = fail(err, err_len, TE_ERR_MALFORMED_JSON, "\"buffers\" is not an array");
    if (rc)
        return rc;
    d->bufs = calloc(json_array_size(bufs) + 1, sizeof *d->bufs);
    if (!d->bufs)
        return TE_ERR_MEMORY;
    for (size_t i = 0; i < json_array_size(bufs); i++) {
        d->nbuf = i + 1;
        rc = parse_buffer(json_array_get(bufs, i), i, d, matrix, err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

int rdma_peer_desc_parse(const char *json, rdma_peer_desc **out, char *err, size_t err_len)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json ? json_loads(json, 0, &jerr) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(err, err_len, TE_ERR_MALFORMED_JSON, "descriptor is not a JSON object");
    }
    rdma_peer_desc *d = calloc(1, sizeof *d);
    int rc = d ? parse_root(root, d, err, err_len) : TE_ERR_MEMORY;
    json_decref(root);
    if (rc) {
        rdma_peer_desc_free(d);
        return rc;
    }
    *out = d;
    return 0;
}
