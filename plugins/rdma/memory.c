/* memory.c - registrations: every buffer on every context (in parallel when
 * there are several), the NICs its location prefers, and the descriptor
 * members a peer needs ({"name": location, "lkey": [...], "rkey": [...]}). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdma.h"

#define MR_ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ)

typedef struct reg_job {
    rdma_ctx *ctx;
    void *addr;
    size_t length;
    struct ibv_mr *mr;
    int err;
} reg_job;

static void *reg_one(void *arg)
{
    reg_job *j = arg;
    j->mr = ibv_reg_mr(j->ctx->pd, j->addr, j->length, MR_ACCESS);
    j->err = j->mr ? 0 : errno;
    return NULL;
}

/* Registers on every context; threads when there are several NICs, since
 * pinning dominates and each NIC pins on its own. */
static int reg_all(rdma_inst *in, rdma_mr *m)
{
    reg_job jobs[RDMA_MAX_CTX];
    pthread_t th[RDMA_MAX_CTX];
    bool started[RDMA_MAX_CTX] = {false};
    for (int i = 0; i < in->nctx; i++) {
        jobs[i] = (reg_job){.ctx = &in->ctxs[i], .addr = m->addr, .length = m->length};
        if (in->nctx > 1 && i > 0)
            started[i] = pthread_create(&th[i], NULL, reg_one, &jobs[i]) == 0;
        if (!started[i])
            reg_one(&jobs[i]);
    }
    int rc = 0;
    for (int i = 0; i < in->nctx; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        m->mrs[i] = jobs[i].mr;
        if (!jobs[i].mr && !rc) {
            te_host_table->set_error("ibv_reg_mr(%p, %zu) on %s failed: %s", m->addr, m->length,
                                     in->ctxs[i].name, strerror(jobs[i].err));
            rc = TE_ERR_CONTEXT;
        }
    }
    return rc;
}

static void dereg_all(rdma_mr *m)
{
    for (int i = 0; i < m->nctx; i++)
        if (m->mrs[i])
            ibv_dereg_mr(m->mrs[i]);
}

static bool in_first(const int *v, int n, int x)
{
    for (int i = 0; i < n; i++)
        if (v[i] == x)
            return true;
    return false;
}

/* The contexts to use for memory at m->location: the core's order of
 * preference (topology_nics), the preferred count from our matrix, and
 * every other context appended so that retries can still reach them. */
static int local_nics(rdma_inst *in, rdma_mr *m)
{
    const char *names[RDMA_MAX_CTX];
    int tmp[RDMA_MAX_CTX], np = 0, n = 0;
    for (int i = 0; i < in->nctx; i++)
        names[i] = in->ctxs[i].name;
    m->nics = calloc((size_t)in->nctx, sizeof *m->nics);
    if (!m->nics)
        return TE_ERR_MEMORY;
    char *arr = NULL;
    if (te_host_table->topology_nics(in->host, m->location, &arr) == 0 && arr)
        n = rdma_names_to_indices(arr, names, in->nctx, m->nics);
    free(arr);
    int nm = rdma_matrix_nics(in->matrix, m->location, names, in->nctx, tmp, &np);
    if (n <= 0 && nm > 0) { /* no answer from the core: the matrix order */
        memcpy(m->nics, tmp, (size_t)nm * sizeof *tmp);
        n = nm;
    }
    /* Preferred: the leading NICs of that order that the matrix prefers. */
    int k = 0;
    while (nm > 0 && k < n && in_first(tmp, np, m->nics[k]))
        k++;
    m->npref = k > 0 ? k : n;
    for (int c = 0; c < in->nctx; c++) {
        bool have = false;
        for (int i = 0; i < n && !have; i++)
            have = m->nics[i] == c;
        if (!have)
            m->nics[n++] = c;
    }
    if (m->npref <= 0)
        m->npref = n;
    m->nnics = n;
    return 0;
}

int rdma_register(void *inst, void *addr, size_t length, const char *location, void **out)
{
    rdma_inst *in = inst;
    *out = NULL;
    rdma_mr *m = calloc(1, sizeof *m + (size_t)in->nctx * sizeof(struct ibv_mr *));
    if (!m)
        return TE_ERR_MEMORY;
    m->addr = addr;
    m->length = length;
    m->nctx = in->nctx;
    if (!location || !*location || !strcmp(location, "*"))
        te_host_table->memory_location(addr, length, m->location, sizeof m->location);
    else
        snprintf(m->location, sizeof m->location, "%s", location);
    int rc = local_nics(in, m);
    if (!rc)
        rc = reg_all(in, m);
    if (rc) {
        dereg_all(m);
        free(m->nics);
        free(m);
        return rc;
    }
    pthread_mutex_lock(&in->mr_lock);
    m->next = in->mrs;
    if (in->mrs)
        in->mrs->prev = m;
    in->mrs = m;
    pthread_mutex_unlock(&in->mr_lock);
    *out = m;
    return 0;
}

static void mr_free(rdma_mr *m)
{
    dereg_all(m);
    free(m->nics);
    free(m);
}

int rdma_unregister(void *inst, void *mr)
{
    rdma_inst *in = inst;
    rdma_mr *m = mr;
    if (!m)
        return 0;
    pthread_mutex_lock(&in->mr_lock);
    if (m->prev)
        m->prev->next = m->next;
    else
        in->mrs = m->next;
    if (m->next)
        m->next->prev = m->prev;
    pthread_mutex_unlock(&in->mr_lock);
    mr_free(m);
    return 0;
}

int rdma_describe_buffer(void *inst, void *mr, char **json)
{
    rdma_mr *m = mr;
    *json = NULL;
    if (!m)
        return 0;
    json_t *o = json_object(), *lk = json_array(), *rk = json_array();
    for (int i = 0; lk && rk && i < m->nctx; i++) {
        json_array_append_new(lk, json_integer(m->mrs[i]->lkey));
        json_array_append_new(rk, json_integer(m->mrs[i]->rkey));
    }
    if (o) {
        json_object_set_new(o, "name", json_string(m->location));
        json_object_set(o, "lkey", lk);
        json_object_set(o, "rkey", rk);
    }
    json_decref(lk);
    json_decref(rk);
    *json = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return *json ? 0 : TE_ERR_MEMORY;
}

/* destroy(): whatever the core did not unregister. */
void rdma_mrs_release(rdma_inst *in)
{
    pthread_mutex_lock(&in->mr_lock);
    rdma_mr *m = in->mrs;
    in->mrs = NULL;
    pthread_mutex_unlock(&in->mr_lock);
    while (m) {
        rdma_mr *next = m->next;
        mr_free(m);
        m = next;
    }
}
