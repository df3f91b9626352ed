/* shm.c - entry point of the same-host transport: the instance, the members
 * it adds to the segment descriptor, buffer registration (the table peers
 * read) and the choice, per peer, to reach it here or decline to tcp.  The
 * core, not shm, keeps device memory away (it chooses per request). */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm.h"


/* ---- configuration ------------------------------------------------------- */

/* Copy threads: 1..SHM_MAX_WORKERS, default 2 (declared in the core). */
static int worker_count(te_host *host)
{
    int64_t n = 2;
    te_host_table->config_int(host, "MC_TE_SHM_WORKERS", &n);
    return (int)n;
}

/* Bytes of each submit() the calling thread copies itself before the
 * workers take the rest: 0..64 MiB, default SHM_INLINE_BYTES. */
static uint64_t inline_bytes(te_host *host)
{
    int64_t n = SHM_INLINE_BYTES;
    te_host_table->config_int(host, "MC_TE_SHM_INLINE_BYTES", &n);
    return (uint64_t)n;
}

/* ---- lifetime ------------------------------------------------------------ */

static void shm_destroy(void *inst)
{
    shm_inst *in = inst;
    if (!in)
        return;
    shm_pool_stop(&in->pool);
    shm_regtab_destroy(in);
    pthread_mutex_destroy(&in->reg_lock);
    free(in);
}

static int shm_create(te_host *host, const te_transport_params *params, void **inst)
{
    shm_inst *in = calloc(1, sizeof *in);
    if (!in)
        return TE_ERR_MEMORY;
    in->host = host;
    in->pid = getpid();
    if (!TE_HOST_HAS(te_host_table, host_identity)) { /* a 1.0 core: stay out of the way */
        free(in);
        te_host_table->set_error("shm: needs plugin ABI 1.1 (host_identity)");
        return TE_ERR_DEVICE_NOT_FOUND;
    }
    /* Processes can copy each other's memory by pid only under one kernel
     * (boot id) and in one pid namespace: the core's host identity with the
     * namespace. */
    if (te_host_table->host_identity(1, in->host_id, sizeof in->host_id)) {
        free(in);
        te_host_table->set_error("shm: cannot read /proc/sys/kernel/random/boot_id");
        return TE_ERR_DEVICE_NOT_FOUND;
    }
    in->verify_ns = SHM_VERIFY_NS;
    shm_testing_apply(in); /* nothing outside the test build */
    pthread_mutex_init(&in->reg_lock, NULL);
    int rc = shm_regtab_create(in);
    if (rc) {
        pthread_mutex_destroy(&in->reg_lock);
        free(in);
        return rc;
    }
    rc = shm_pool_start(&in->pool, in, worker_count(host), inline_bytes(host));
    if (rc) {
        shm_regtab_destroy(in);
        pthread_mutex_destroy(&in->reg_lock);
        free(in);
        return rc;
    }
    *inst = in;
    return 0;
}

static int shm_describe(void *inst, char **json_object)
{
    shm_inst *in = inst;
    char token[17];
    snprintf(token, sizeof token, "%016" PRIx64, in->tab->token);
    pthread_mutex_lock(&in->reg_lock);
    bool cpu_only = in->device_regs == 0;
    pthread_mutex_unlock(&in->reg_lock);
    json_t *o = json_pack("{s:s, s:i, s:I, s:s, s:i, s:b}", "shm_host_id", in->host_id,
                          "shm_pid", (int)in->pid, "shm_regtab", (json_int_t)(uintptr_t)in->tab,
                          "shm_token", token, "shm_version", SHM_VERSION, "shm_cpu_only",
                          cpu_only);
    if (o && in->tab_fd >= 0) /* optional: peers that ignore it read the counter by pid */
        json_object_set_new(o, "shm_seq_fd", json_integer(in->tab_fd));
    *json_object = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return *json_object ? 0 : TE_ERR_MEMORY;
}

/* ---- registration -------------------------------------------------------- */

bool shm_is_cpu_location(const char *where)
{
    return strncmp(where, "cuda", 4) != 0 && strncmp(where, "npu", 3) != 0 &&
           strncmp(where, "musa", 4) != 0 && strncmp(where, "hip", 3) != 0;
}

static bool is_cpu_memory(void *addr, size_t len, const char *location)
{
    char where[64] = "*";
    if (location && strcmp(location, "*") != 0)
        snprintf(where, sizeof where, "%s", location);
    else if (te_host_table->memory_location(addr, len, where, sizeof where) != 0)
        snprintf(where, sizeof where, "*");
    return shm_is_cpu_location(where);
}

static int shm_register(void *inst, void *addr, size_t length, const char *location, void **mr)
{
    shm_inst *in = inst;
    shm_mr *m = calloc(1, sizeof *m);
    if (!m)
        return TE_ERR_MEMORY;
    m->addr = (uint64_t)(uintptr_t)addr;
    m->len = length;
    m->cpu = is_cpu_memory(addr, length, location);
    int rc = m->cpu ? shm_regtab_add(in, m->addr, m->len) : 0;
    if (rc) {
        free(m);
        return rc;
    }
    if (!m->cpu) {
        pthread_mutex_lock(&in->reg_lock);
        in->device_regs++;
        pthread_mutex_unlock(&in->reg_lock);
    }
    *mr = m;
    return 0;
}

static int shm_unregister(void *inst, void *mr)
{
    shm_inst *in = inst;
    shm_mr *m = mr;
    if (!m)
        return 0;
    if (m->cpu) {
        shm_regtab_remove(in, m->addr);
    } else {
        pthread_mutex_lock(&in->reg_lock);
        in->device_regs--;
        pthread_mutex_unlock(&in->reg_lock);
    }
    free(m);
    return 0;
}

/* ---- peers --------------------------------------------------------------- */

static bool parse_token(const char *s, uint64_t *out)
{
    if (strlen(s) != 16)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

/* Reads our members of a peer's descriptor; every one is checked. */
static const char *parse_peer(json_t *root, shm_peer *p, const char **host_id, long *seq_fd)
{
    json_t *h = json_object_get(root, "shm_host_id");
    json_t *ver = json_object_get(root, "shm_version");
    json_t *pid = json_object_get(root, "shm_pid");
    json_t *tab = json_object_get(root, "shm_regtab");
    json_t *tok = json_object_get(root, "shm_token");
    json_t *cpu_only = json_object_get(root, "shm_cpu_only");
    if (!h && !pid)
        return "no shm members (the peer has no shm transport)";
    if (!json_is_string(h) || json_string_length(h) == 0 || json_string_length(h) > 300)
        return "shm_host_id is not a string";
    if (!json_is_integer(ver) || json_integer_value(ver) != SHM_VERSION)
        return "shm_version is not 1";
    if (!json_is_integer(pid) || json_integer_value(pid) < 1 ||
        json_integer_value(pid) > INT32_MAX)
        return "shm_pid is not a pid";
    uint64_t t = json_is_integer(tab) ? (uint64_t)json_integer_value(tab) : 0;
    if (t == 0 || t % 8 || t + sizeof(shm_regtab) < t)
        return "shm_regtab is not an address";
    if (!json_is_string(tok) || !parse_token(json_string_value(tok), &p->token))
        return "shm_token is not 16 hex digits";
    /* false (GPU memory registered) no longer matters: the core sends only
     * host-to-host requests here, and GPU buffers never enter the table. */
    if (!json_is_boolean(cpu_only))
        return "shm_cpu_only is not a boolean";
    p->pid = (pid_t)json_integer_value(pid);
    p->tab_addr = t;
    /* Optional (absent in older peers): a bad value only costs the mapping. */
    json_t *fd = json_object_get(root, "shm_seq_fd");
    *seq_fd = json_is_integer(fd) && json_integer_value(fd) >= 0 &&
                      json_integer_value(fd) <= INT32_MAX
                  ? (long)json_integer_value(fd)
                  : -1;
    *host_id = json_string_value(h);
    return NULL;
}

static shm_peer *peer_new(const shm_peer *from, const char *name)
{
    shm_peer *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    *p = *from;
    snprintf(p->name, sizeof p->name, "%s", name ? name : "?");
    pthread_mutex_init(&p->lock, NULL);
    p->seq = 1; /* odd: nothing cached yet */
    return p;
}

static void shm_peer_close(void *inst, void *handle)
{
    shm_peer *p = handle;
    if (!p)
        return;
    shm_tabmap_close(p);
    pthread_mutex_destroy(&p->lock);
    free(p->ranges);
    free(p);
}

static int decline(shm_inst *in, int level, const te_peer_info *peer, const char *why)
{
    te_host_table->log(in->host, level, SHM_NAME, "not used for %s: %s",
                  peer->segment_name ? peer->segment_name : "?", why);
    return TE_ERR_NOT_SUPPORTED_TRANSPORT;
}

static int shm_peer_open(void *inst, const te_peer_info *peer, void **handle)
{
    shm_inst *in = inst;
    if (!peer || !peer->descriptor)
        return TE_ERR_NOT_SUPPORTED_TRANSPORT;
    json_error_t jerr;
    json_t *root = json_loads(peer->descriptor, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return decline(in, TE_LOG_DEBUG, peer, "descriptor is not a JSON object");
    }
    shm_peer tmp = {0};
    const char *host_id = NULL;
    long seq_fd = -1;
    const char *why = parse_peer(root, &tmp, &host_id, &seq_fd);
    if (!why && strcmp(host_id, in->host_id) != 0)
        why = "on another host (shm_host_id differs)";
    json_decref(root);
    if (why)
        return decline(in, TE_LOG_DEBUG, peer, why);
    int rc = shm_peer_probe(&tmp, in->force_eperm);
    if (rc) {
        char why_buf[256];
        snprintf(why_buf, sizeof why_buf,
                 "the kernel refuses process_vm_readv of pid %d (%s%s); falling back",
                 (int)tmp.pid, rc == -ESTALE ? "a different process now" : strerror(-rc),
                 rc == -EPERM ? ": ptrace restrictions such as YAMA ptrace_scope, or seccomp" : "");
        return decline(in, TE_LOG_INFO, peer, why_buf);
    }
    shm_peer *p = peer_new(&tmp, peer->segment_name);
    if (!p)
        return TE_ERR_MEMORY;
    shm_tabmap_open(p, seq_fd);
    p->verify_ns = in->verify_ns;
    atomic_store(&p->verified_ns, te_host_table->now_ns()); /* the probe just confirmed the pid */
    te_host_table->log(in->host, TE_LOG_DEBUG, SHM_NAME,
                  "reaching %s (pid %d) by process_vm_*, table counter %s", p->name,
                  (int)p->pid, p->map ? "mapped" : "read by pid");
    *handle = p;
    return 0;
}

static int shm_submit(void *inst, te_slice *const *slices, size_t count)
{
    shm_inst *in = inst;
    return shm_pool_submit(&in->pool, slices, count);
}

/* ---- the descriptor ------------------------------------------------------ */

static const te_transport_ops shm_ops = {
    .size = sizeof(te_transport_ops),
    .caps = 0, /* same host only; local memory need not be registered */
    .slice_size = SHM_SLICE_SIZE,
    .create = shm_create,
    .destroy = shm_destroy,
    .describe = shm_describe,
    .register_memory = shm_register,
    .unregister_memory = shm_unregister,
    .peer_open = shm_peer_open,
    .peer_close = shm_peer_close,
    .submit = shm_submit,
};


TE_PLUGIN_DEFINE(TE_PLUGIN_TRANSPORT, SHM_NAME, "0.1.0", &shm_ops, config_int)
