/* test_shm_plugin.c - libte_shm.so (its test build, tests/shm/CMakeLists.txt)
 * through its ABI with a stand-in host:
 * descriptor validation, the live registration table (stale ranges refused),
 * partial faults, deadlines, exactly-once reports, idle workers, and who
 * copies (the submitting thread, the workers, or both) with mixed batches. */
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "te/plugin.h"
#include "test_host.h"
#include "test_util.h"

/* ---- a stand-in host ---------------------------------------------------------- */

#define MAX_SLICES 4096

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static te_slice *slice_base;
static int done_count[MAX_SLICES];
static int done_status[MAX_SLICES];
static size_t done_total;

static void h_slice_done(te_host *h, te_slice *s, int status)
{
    pthread_mutex_lock(&done_lock);
    size_t i = (size_t)(s - slice_base);
    if (i < MAX_SLICES) {
        done_count[i]++;
        done_status[i] = status;
    }
    done_total++;
    pthread_cond_broadcast(&done_cond);
    pthread_mutex_unlock(&done_lock);
}

/* Memory the test calls "device memory" (PROT_NONE, as a GPU pointer is to
 * the CPU), answered "cuda:0"; everything else is CPU memory. */
static const char *fake_dev;
static size_t fake_dev_len;

static int h_memory_location(const void *addr, size_t len, char *out, size_t out_len)
{
    const char *p = addr;
    bool dev = fake_dev && p >= fake_dev && p < fake_dev + fake_dev_len;
    snprintf(out, out_len, "%s", dev ? "cuda:0" : "cpu:0");
    return 0;
}

/* Both instances live in this process: one identity, as the core would give. */
static int h_host_identity(int with_pid_namespace, char *out, size_t len)
{
    snprintf(out, len, "test-boot/%s/test-host", with_pid_namespace ? "pid:[1]" : "");
    return 0;
}

static te_host_api host_api; /* host_api_init() */

static void host_api_init(void)
{
    te_test_host_init(&host_api);
    host_api.slice_done = h_slice_done;
    host_api.memory_location = h_memory_location;
    host_api.host_identity = h_host_identity;
}

/* ---- fixture: two instances in this process (a target and an initiator) ------ */

static const te_transport_ops *ops;
static void *target, *initiator;
static te_slice slices[MAX_SLICES];

/* The test build of the plugin (with shm_testing.c's seams), or with
 * shipped, the one that is installed. */
static const te_transport_ops *load_from(bool shipped)
{
    char path[4096];
    const char *dir = getenv(shipped ? "TE_BUILD_DIR" : "TE_SHM_TESTING_DIR");
    snprintf(path, sizeof path, "%s%s/libte_shm.so", dir ? dir : ".",
             shipped ? "/lib/te-plugins" : "");
    te_plugin_init_fn init = te_test_plugin_init(path, NULL);
    const te_plugin_desc *d;
    ck_assert_int_eq(init(&host_api, &d), 0);
    ck_assert_str_eq(d->name, "shm");
    ck_assert_int_eq(d->kind, TE_PLUGIN_TRANSPORT);
    const te_transport_ops *t = d->ops;
    ck_assert_int_eq(t->caps & TE_TRANSPORT_CAP_REMOTE, 0);
    return t;
}

static void load_plugin(void)
{
    ops = load_from(false);
}

static void *create(void)
{
    te_transport_params p = {.size = sizeof p, .segment_name = "test", .device_filter = ""};
    void *inst = NULL;
    ck_assert_int_eq(ops->create((te_host *)&host_api, &p, &inst), 0);
    return inst;
}

static void setup(void)
{
    load_plugin();
    target = create();
    initiator = create();
    memset(done_count, 0, sizeof done_count);
    done_total = 0;
    slice_base = slices;
}

static void teardown(void)
{
    if (initiator)
        ops->destroy(initiator);
    if (target)
        ops->destroy(target);
    initiator = target = NULL;
}

/* The target's descriptor as a peer would receive it. */
static char *descriptor_of(void *inst)
{
    char *extra = NULL;
    ck_assert_int_eq(ops->describe(inst, &extra), 0);
    json_t *o = json_loads(extra, 0, NULL);
    ck_assert_ptr_nonnull(o);
    json_object_set_new(o, "name", json_string("target"));
    json_object_set_new(o, "protocol", json_string("tcp"));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    free(extra);
    return text;
}

static int open_with(const char *desc, void **peer)
{
    te_peer_info info = {.size = sizeof info, .segment_name = "target", .descriptor = desc,
                         .rpc_host = "127.0.0.1", .rpc_port = 1};
    *peer = NULL;
    return ops->peer_open(initiator, &info, peer);
}

static void *open_target(void)
{
    char *d = descriptor_of(target);
    void *peer;
    ck_assert_int_eq(open_with(d, &peer), 0);
    free(d);
    return peer;
}

/* Opens the target as its descriptor stands now, expecting `want`; closes
 * the peer again when it opened. */
static void expect_open(int want)
{
    char *d = descriptor_of(target);
    void *peer;
    ck_assert_int_eq(open_with(d, &peer), want);
    if (!want)
        ops->peer_close(initiator, peer);
    free(d);
}

/* Submits n prepared slices and waits until each is reported. */
static void run_slices(size_t first, size_t n)
{
    te_slice *ptrs[MAX_SLICES];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &slices[first + i];
    size_t want;
    pthread_mutex_lock(&done_lock);
    want = done_total + n;
    pthread_mutex_unlock(&done_lock);
    ck_assert_int_eq(ops->submit(initiator, ptrs, n), 0);
    pthread_mutex_lock(&done_lock);
    while (done_total < want)
        pthread_cond_wait(&done_cond, &done_lock);
    pthread_mutex_unlock(&done_lock);
}

static void prep(size_t i, void *peer, int op, void *local, void *remote, uint64_t len)
{
    slices[i] = (te_slice){.opcode = (uint32_t)op, .local = local,
                           .remote = (uint64_t)(uintptr_t)remote, .length = len, .peer = peer,
                           .remote_buffer = 0, .deadline_ns = te_test_now_ns() + 10000000000ll};
}

/* ---- tests ----------------------------------------------------------------- */

START_TEST(describe_publishes_typed_members)
{
    char *extra = NULL;
    ck_assert_int_eq(ops->describe(target, &extra), 0);
    json_t *o = json_loads(extra, 0, NULL);
    ck_assert(json_is_string(json_object_get(o, "shm_host_id")));
    ck_assert_int_eq(json_integer_value(json_object_get(o, "shm_pid")), getpid());
    ck_assert(json_integer_value(json_object_get(o, "shm_regtab")) != 0);
    ck_assert_int_eq(strlen(json_string_value(json_object_get(o, "shm_token"))), 16);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "shm_version")), 1);
    ck_assert(json_is_true(json_object_get(o, "shm_cpu_only")));
    json_decref(o);
    free(extra);
}
END_TEST

/* The target's descriptor with one member replaced by `value` (JSON text),
 * or removed (NULL). */
static char *descriptor_with(const char *member, const char *value)
{
    char *d = descriptor_of(target);
    json_t *o = json_loads(d, 0, NULL);
    free(d);
    if (value)
        json_object_set_new(o, member, json_loads(value, JSON_DECODE_ANY, NULL));
    else
        json_object_del(o, member);
    d = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return d;
}

/* Replaces one member of the target's descriptor with `value` (JSON text,
 * or NULL to remove it) and expects the initiator to decline. */
static void expect_declined(const char *member, const char *value)
{
    char *d = descriptor_with(member, value);
    void *peer;
    ck_assert_msg(open_with(d, &peer) == TE_ERR_NOT_SUPPORTED_TRANSPORT, "accepted %s=%s",
                  member, value ? value : "(none)");
    free(d);
}

START_TEST(malformed_or_foreign_descriptors_are_declined)
{
    void *peer;
    ck_assert_int_eq(open_with("not json", &peer), TE_ERR_NOT_SUPPORTED_TRANSPORT);
    ck_assert_int_eq(open_with("[1,2]", &peer), TE_ERR_NOT_SUPPORTED_TRANSPORT);
    ck_assert_int_eq(open_with("{\"name\":\"x\",\"protocol\":\"tcp\"}", &peer),
                     TE_ERR_NOT_SUPPORTED_TRANSPORT);
    expect_declined("shm_host_id", "\"another-host\"");
    expect_declined("shm_host_id", "42");
    expect_declined("shm_host_id", NULL);
    expect_declined("shm_pid", "\"1\"");
    expect_declined("shm_pid", "-1");
    expect_declined("shm_pid", "0");
    expect_declined("shm_pid", "1099511627776");
    expect_declined("shm_pid", NULL);
    expect_declined("shm_regtab", "0");
    expect_declined("shm_regtab", "4097");
    expect_declined("shm_regtab", "\"0x1000\"");
    expect_declined("shm_regtab", "4096"); /* readable? no: not our table */
    expect_declined("shm_token", "\"xyz\"");
    expect_declined("shm_token", "\"0123456789abcdeg\"");
    expect_declined("shm_token", "\"0000000000000000\""); /* right place, wrong token */
    expect_declined("shm_token", "12");
    expect_declined("shm_version", "2");
    expect_declined("shm_version", NULL);
    expect_declined("shm_cpu_only", "\"yes\"");
    expect_declined("shm_cpu_only", NULL);
}
END_TEST

/* The core chooses per request and sends shm host-to-host requests only, so
 * GPU memory registered on either side, or CUDA in the process, no longer
 * makes shm decline a peer; shm_cpu_only is still reported (and checked to
 * be a boolean). */
START_TEST(gpu_memory_on_either_side_is_accepted)
{
    static char fake_gpu[4096], cpu[4096];
    void *gpu_mr, *cpu_mr, *peer;
    ck_assert_int_eq(ops->register_memory(target, cpu, sizeof cpu, "cpu:0", &cpu_mr), 0);
    ck_assert_int_eq(ops->register_memory(target, fake_gpu, sizeof fake_gpu, "cuda:0", &gpu_mr),
                     0);
    char *d = descriptor_of(target);
    ck_assert_ptr_nonnull(strstr(d, "\"shm_cpu_only\":false"));
    ck_assert_int_eq(open_with(d, &peer), 0);
    ops->peer_close(initiator, peer);
    free(d);
    ck_assert_int_eq(ops->unregister_memory(target, gpu_mr), 0);
    ck_assert_int_eq(ops->register_memory(initiator, fake_gpu, sizeof fake_gpu, "cuda:1", &gpu_mr),
                     0);
    d = descriptor_of(target);
    ck_assert_int_eq(open_with(d, &peer), 0);
    ops->peer_close(initiator, peer);
    free(d);
    ops->unregister_memory(initiator, gpu_mr);
    ops->unregister_memory(target, cpu_mr);
}
END_TEST

/* A process that loaded the CUDA driver still reaches same-host peers. */
START_TEST(cuda_process_is_accepted)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/fake-cuda/libcuda.so.1", getenv("TE_TEST_BIN_DIR"));
    if (access(path, R_OK) != 0)
        return; /* no stand-in driver in this build */
    ck_assert_ptr_nonnull(dlopen(path, RTLD_NOW | RTLD_LOCAL));
    expect_open(0);
}
END_TEST

START_TEST(dead_pid_is_declined)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    waitpid(pid, NULL, 0);
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "%d", (int)pid);
    expect_declined("shm_pid", pidtext);
}
END_TEST

START_TEST(forced_kernel_refusal_is_declined)
{
    setenv("TE_SHM_TEST_FORCE_EPERM", "1", 1);
    ops->destroy(initiator);
    initiator = create();
    expect_open(TE_ERR_NOT_SUPPORTED_TRANSPORT);
    unsetenv("TE_SHM_TEST_FORCE_EPERM");
}
END_TEST

/* The shipped plugin has no test seam: the switch that makes the test
 * build decline (above) changes nothing there. */
START_TEST(shipped_plugin_ignores_test_switches)
{
    ops->destroy(initiator);
    ops->destroy(target);
    initiator = target = NULL;
    ops = load_from(true);
    setenv("TE_SHM_TEST_HOST_ID", "another-host", 1);
    target = create();
    unsetenv("TE_SHM_TEST_HOST_ID");
    setenv("TE_SHM_TEST_FORCE_EPERM", "1", 1);
    initiator = create();
    unsetenv("TE_SHM_TEST_FORCE_EPERM");
    expect_open(0);
}
END_TEST

START_TEST(copies_inside_registered_memory)
{
    enum { LEN = 3 << 20 };
    char *tbuf = calloc(1, LEN), *lbuf = malloc(LEN);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, tbuf, LEN, "cpu:0", &mr), 0);
    void *peer = open_target();
    for (size_t i = 0; i < LEN; i++)
        lbuf[i] = (char)(i * 7 + 1);
    prep(0, peer, TE_OP_WRITE, lbuf, tbuf, LEN);
    run_slices(0, 1);
    ck_assert_int_eq(done_status[0], 0);
    ck_assert_int_eq(memcmp(lbuf, tbuf, LEN), 0);
    memset(lbuf, 0, LEN);
    prep(1, peer, TE_OP_READ, lbuf + 5, tbuf + 5, LEN - 10);
    run_slices(1, 1);
    ck_assert_int_eq(done_status[1], 0);
    ck_assert_int_eq(memcmp(lbuf + 5, tbuf + 5, LEN - 10), 0);
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
    free(tbuf);
    free(lbuf);
}
END_TEST

/* A slice the core let through (its descriptor may be stale) is still
 * refused when the target has not registered the range now. */
START_TEST(ranges_outside_the_live_table_are_refused)
{
    enum { PAGE = 4096 };
    unsigned char *all = malloc(4 * PAGE), *reg = all + PAGE, local[2 * PAGE];
    memset(all, 0xAB, 4 * PAGE);
    memset(local, 0x11, sizeof local);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, reg, 2 * PAGE, NULL, &mr), 0);
    void *peer = open_target();
    prep(0, peer, TE_OP_WRITE, local, reg + 2 * PAGE - 10, 20);   /* runs past the end */
    prep(1, peer, TE_OP_WRITE, local, reg - 10, 20);              /* starts before it */
    prep(2, peer, TE_OP_WRITE, local, reg + 3 * PAGE, 8);         /* wholly outside */
    prep(3, peer, TE_OP_READ, local, reg + 2 * PAGE - 1, 2);
    run_slices(0, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(done_status[i], TE_ERR_ADDRESS_NOT_REGISTERED);
    for (int i = 0; i < 4 * PAGE; i++)
        ck_assert_int_eq(all[i], 0xAB);
    ck_assert_int_eq(ops->unregister_memory(target, mr), 0); /* the peer unregisters... */
    prep(4, peer, TE_OP_WRITE, local, reg, 100);              /* ...our view is stale */
    run_slices(4, 1);
    ck_assert_int_eq(done_status[4], TE_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(all[PAGE], 0xAB);
    ck_assert_int_eq(ops->register_memory(target, reg, 2 * PAGE, NULL, &mr), 0);
    prep(5, peer, TE_OP_WRITE, local, reg, 100); /* registered again: allowed */
    run_slices(5, 1);
    ck_assert_int_eq(done_status[5], 0);
    ck_assert_int_eq(all[PAGE], 0x11);
    ck_assert_int_eq(all[PAGE - 1], 0xAB);
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
    free(all);
}
END_TEST

/* A registered range with a hole: the slices around the fault succeed, the
 * one that hits it fails, each reported once. */
/* The target's table header is a sealed memfd page (shm_seq_fd) that the
 * initiator maps: a table change is seen through it, and a bad shm_seq_fd
 * only leaves the peer on reads by pid, with the same guarantees. */
static void *open_with_seq_fd(const char *value)
{
    char *text = descriptor_with("shm_seq_fd", value);
    void *peer;
    ck_assert_int_eq(open_with(text, &peer), 0);
    free(text);
    return peer;
}

static void stale_view_is_refused(void *peer, size_t first)
{
    enum { PAGE = 4096 };
    unsigned char *reg = malloc(2 * PAGE), local[100];
    memset(reg, 0xAB, 2 * PAGE);
    memset(local, 0x22, sizeof local);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, reg, 2 * PAGE, NULL, &mr), 0);
    prep(first, peer, TE_OP_WRITE, local, reg, 100);
    run_slices(first, 1);
    ck_assert_int_eq(done_status[first], 0);
    ck_assert_int_eq(reg[0], 0x22);
    memset(reg, 0xAB, 2 * PAGE);
    ck_assert_int_eq(ops->unregister_memory(target, mr), 0);
    prep(first + 1, peer, TE_OP_WRITE, local, reg, 100);
    run_slices(first + 1, 1);
    ck_assert_int_eq(done_status[first + 1], TE_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(reg[0], 0xAB);
    free(reg);
}

START_TEST(table_counter_is_mapped_and_sees_changes)
{
    char *extra = NULL;
    ck_assert_int_eq(ops->describe(target, &extra), 0);
    json_t *o = json_loads(extra, 0, NULL);
    ck_assert(json_is_integer(json_object_get(o, "shm_seq_fd")));
    json_decref(o);
    free(extra);
    void *peer = open_target();
    char line[512];
    ck_assert_msg(te_test_host_log_has("table counter mapped", line, sizeof line), "%s", line);
    stale_view_is_refused(peer, 0);
    ops->peer_close(initiator, peer);
}
END_TEST

START_TEST(bad_seq_fd_falls_back_to_reads_by_pid)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    char pipe_fd[16];
    snprintf(pipe_fd, sizeof pipe_fd, "%d", pfd[0]);
    const char *bad[] = {NULL, "-1", "\"3\"", "99999", "2147483648", "1.5", pipe_fd, "0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        void *peer = open_with_seq_fd(bad[i]);
        char line[512];
        ck_assert_msg(te_test_host_log_has("table counter read by pid", line, sizeof line), "%s: %s",
                      bad[i] ? bad[i] : "absent", line);
        stale_view_is_refused(peer, 2 * i);
        ops->peer_close(initiator, peer);
    }
    close(pfd[0]);
    close(pfd[1]);
}
END_TEST

/* The target destroys its instance while a peer holds the mapping: the next
 * copy fails as a closed peer and touches nothing, seen through the mapping
 * alone (no confirmation by pid within the test: TE_SHM_TEST_VERIFY_MS). */
START_TEST(destroyed_target_fails_mapped_copies)
{
    setenv("TE_SHM_TEST_VERIFY_MS", "600000", 1);
    ops->destroy(initiator);
    initiator = create();
    unsetenv("TE_SHM_TEST_VERIFY_MS");
    unsigned char reg[256], local[64];
    memset(reg, 0xAB, sizeof reg);
    memset(local, 0x33, sizeof local);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, reg, sizeof reg, NULL, &mr), 0);
    void *peer = open_target();
    char line[512];
    ck_assert_msg(te_test_host_log_has("table counter mapped", line, sizeof line), "%s", line);
    prep(0, peer, TE_OP_WRITE, local, reg + 128, sizeof local); /* the cache is current */
    run_slices(0, 1);
    ck_assert_int_eq(done_status[0], 0);
    ops->destroy(target); /* with the buffer still registered */
    target = NULL;
    free(mr);             /* the destroyed instance's handle (plain calloc) */
    prep(1, peer, TE_OP_WRITE, local, reg, sizeof local);
    run_slices(1, 1);
    ck_assert_int_eq(done_status[1], TE_ERR_PEER_CLOSED);
    ck_assert_int_eq(reg[0], 0xAB);
    ops->peer_close(initiator, peer);
}
END_TEST

START_TEST(fault_inside_a_run_fails_only_its_slice)
{
    long page = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 3 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    ck_assert(m != MAP_FAILED);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, m, 3 * (size_t)page, NULL, &mr), 0);
    munmap(m + page, (size_t)page);
    void *peer = open_target();
    char local[64];
    memset(local, 0x5A, sizeof local);
    prep(0, peer, TE_OP_WRITE, local, m, 64);
    prep(1, peer, TE_OP_WRITE, local, m + page - 32, 64); /* crosses into the hole */
    prep(2, peer, TE_OP_WRITE, local, m + 2 * page, 64);
    run_slices(0, 3);
    ck_assert_int_eq(done_status[0], 0);
    ck_assert_int_eq(done_status[1], TE_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(done_status[2], 0);
    ck_assert_int_eq(m[2 * page + 63], 0x5A);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(done_count[i], 1);
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
    munmap(m, (size_t)page);
    munmap(m + 2 * page, (size_t)page);
}
END_TEST

/* Adjacent slices (on both sides) go to the kernel as one iovec; a hole in
 * the target's middle page still fails exactly the slices over it, each
 * slice is reported once, and the others' bytes land (writes and reads). */
START_TEST(adjacent_slices_merged_with_a_hole_fail_only_theirs)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t len = 3 * (size_t)page, piece = (size_t)page / 4;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(m != MAP_FAILED);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, m, len, NULL, &mr), 0);
    mprotect(m + page, (size_t)page, PROT_NONE); /* unmapped, its address could be reused */
    void *peer = open_target();
    char *local = malloc(len);
    for (size_t i = 0; i < len; i++)
        local[i] = (char)(i % 251 + 1);
    for (int op = 0; op < 2; op++) {
        int opcode = op ? TE_OP_READ : TE_OP_WRITE;
        if (opcode == TE_OP_READ)
            memset(local, 0, len);
        pthread_mutex_lock(&done_lock);
        memset(done_count, 0, sizeof done_count);
        pthread_mutex_unlock(&done_lock);
        for (size_t i = 0; i < 12; i++)
            prep(i, peer, opcode, local + i * piece, m + i * piece, piece);
        run_slices(0, 12);
        for (size_t i = 0; i < 12; i++) {
            bool hole = i >= 4 && i < 8;
            ck_assert_int_eq(done_count[i], 1);
            ck_assert_msg(done_status[i] == (hole ? TE_ERR_ADDRESS_NOT_REGISTERED : 0),
                          "%s slice %zu: status %d", op ? "read" : "write", i, done_status[i]);
            for (size_t b = i * piece; !hole && b < (i + 1) * piece; b++)
                ck_assert_int_eq(opcode == TE_OP_WRITE ? m[b] : local[b], (char)(b % 251 + 1));
        }
    }
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
    munmap(m, len);
    free(local);
}
END_TEST

/* The core never hands shm device memory, but if it gets some anyway (a
 * pinned hint, a bug) the kernel refuses the copy (EFAULT): that slice fails
 * as "not this transport" (the core may move it), the others land, nothing
 * crashes and the target is untouched where the copy failed. */
START_TEST(device_memory_fails_its_slice_as_not_this_transport)
{
    long page = sysconf(_SC_PAGESIZE);
    char *dev = mmap(NULL, (size_t)page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(dev != MAP_FAILED);
    fake_dev = dev;
    fake_dev_len = (size_t)page;
    char *tbuf = calloc(1, 4096), local[64];
    memset(local, 0x77, sizeof local);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, tbuf, 4096, "cpu:0", &mr), 0);
    void *peer = open_target();
    prep(0, peer, TE_OP_WRITE, dev, tbuf, 64);
    prep(1, peer, TE_OP_WRITE, local, tbuf + 64, 64);
    prep(2, peer, TE_OP_READ, dev, tbuf, 64);
    run_slices(0, 3);
    ck_assert_int_eq(done_status[0], TE_ERR_NOT_SUPPORTED_TRANSPORT);
    ck_assert_int_eq(done_status[1], 0);
    ck_assert_int_eq(done_status[2], TE_ERR_NOT_SUPPORTED_TRANSPORT);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(done_count[i], 1);
    ck_assert_int_eq(tbuf[0], 0);
    ck_assert_int_eq(tbuf[64], 0x77);
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
    fake_dev = NULL;
    munmap(dev, (size_t)page);
    free(tbuf);
}
END_TEST

START_TEST(many_small_slices_each_reported_once)
{
    enum { N = 3000, SZ = 100 };
    char *tbuf = calloc(N, 128), *lbuf = malloc(N * 128);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, tbuf, N * 128, NULL, &mr), 0);
    void *peer = open_target();
    for (int i = 0; i < N * 128; i++)
        lbuf[i] = (char)(i % 251);
    for (int i = 0; i < N; i++)
        prep((size_t)i, peer, TE_OP_WRITE, lbuf + i * 128, tbuf + i * 128, SZ);
    run_slices(0, N);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(done_count[i], 1);
        ck_assert_int_eq(done_status[i], 0);
        ck_assert_int_eq(memcmp(tbuf + i * 128, lbuf + i * 128, SZ), 0);
        ck_assert_int_eq(tbuf[i * 128 + SZ], 0);
    }
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
    free(tbuf);
    free(lbuf);
}
END_TEST

START_TEST(passed_deadline_fails_without_copying)
{
    char tbuf[64] = {0}, local[64];
    memset(local, 1, sizeof local);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, tbuf, sizeof tbuf, NULL, &mr), 0);
    void *peer = open_target();
    prep(0, peer, TE_OP_WRITE, local, tbuf, 64);
    slices[0].deadline_ns = 1;
    run_slices(0, 1);
    ck_assert_int_eq(done_status[0], TE_ERR_TIMEOUT);
    ck_assert_int_eq(tbuf[0], 0);
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
}
END_TEST

START_TEST(destroy_reports_every_queued_slice_once)
{
    enum { N = 2000, SZ = 1 << 16 };
    char *tbuf = calloc(1, SZ), *lbuf = calloc(1, SZ);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, tbuf, SZ, NULL, &mr), 0);
    void *peer = open_target();
    te_slice *ptrs[N];
    for (int i = 0; i < N; i++) {
        prep((size_t)i, peer, TE_OP_WRITE, lbuf, tbuf, SZ);
        ptrs[i] = &slices[i];
    }
    ck_assert_int_eq(ops->submit(initiator, ptrs, N), 0);
    ops->destroy(initiator); /* returns once every slice is reported */
    initiator = NULL;
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(done_count[i], 1);
        ck_assert(done_status[i] == 0 || done_status[i] == TE_ERR_STATE);
    }
    ops->peer_close(NULL, peer);
    ops->unregister_memory(target, mr);
    free(tbuf);
    free(lbuf);
}
END_TEST

/* A fresh initiator whose submit() copies `inline_bytes` itself ("" = default). */
static void recreate_initiator(const char *inline_bytes)
{
    ops->destroy(initiator);
    if (*inline_bytes)
        setenv("MC_TE_SHM_INLINE_BYTES", inline_bytes, 1);
    initiator = create();
    unsetenv("MC_TE_SHM_INLINE_BYTES");
}

enum { MIX_N = 256, MIX_SZ = 4096 };

/* What slice i of the mixed batch hits: 0 good, 1 a hole in the registered
 * range (EFAULT in the middle of a run), 2 a range the target never
 * registered (refused before the copy).  The first and the last are bad, and
 * some bad ones come in a row. */
static int mix_kind(size_t i)
{
    if (i == 0 || i % 7 == 3 || i == 100 || i == 101)
        return 1;
    if (i == MIX_N - 1 || i % 11 == 5)
        return 2;
    return 0;
}

static void expect_mixed(size_t first)
{
    for (size_t i = 0; i < MIX_N; i++) {
        ck_assert_int_eq(done_count[first + i], 1);
        ck_assert_msg(done_status[first + i] == (mix_kind(i) ? TE_ERR_ADDRESS_NOT_REGISTERED : 0),
                      "slice %zu (kind %d): status %d", i, mix_kind(i), done_status[first + i]);
    }
}

/* A batch of 4 KiB writes, then reads, mixing good and bad remote ranges:
 * each bad slice fails alone, every good one lands and reads back, nothing
 * outside the registered memory changes; the same whether the submitting
 * thread copies the batch, the workers do, or both share it. */
static void mixed_batch_fails_only_bad_slices(const char *inline_bytes)
{
    recreate_initiator(inline_bytes);
    size_t len = (size_t)MIX_N * MIX_SZ;
    char *reg = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *unreg = malloc(len), *lbuf = malloc(len), *back = malloc(len);
    ck_assert(reg != MAP_FAILED && unreg && lbuf && back);
    memset(unreg, 0xEE, len);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, reg, len, "cpu:0", &mr), 0);
    /* PROT_NONE, not munmap: a later one-page mapping (a thread's guard,
     * a worker's ring) may land in an unmapped hole and make it writable. */
    for (size_t i = 0; i < MIX_N; i++)
        if (mix_kind(i) == 1)
            ck_assert_int_eq(mprotect(reg + i * MIX_SZ, MIX_SZ, PROT_NONE), 0);
    void *peer = open_target();
    for (size_t i = 0; i < len; i++)
        lbuf[i] = (char)(i * 13 + i / MIX_SZ);
    for (size_t i = 0; i < MIX_N; i++) {
        char *remote = (mix_kind(i) == 2 ? unreg : reg) + i * MIX_SZ;
        prep(i, peer, TE_OP_WRITE, lbuf + i * MIX_SZ, remote, MIX_SZ);
        prep(MIX_N + i, peer, TE_OP_READ, back + i * MIX_SZ, remote, MIX_SZ);
    }
    run_slices(0, MIX_N);
    expect_mixed(0);
    memset(back, 0, len);
    run_slices(MIX_N, MIX_N);
    expect_mixed(MIX_N);
    for (size_t i = 0; i < MIX_N; i++) {
        if (mix_kind(i) == 0) {
            ck_assert_int_eq(memcmp(reg + i * MIX_SZ, lbuf + i * MIX_SZ, MIX_SZ), 0);
            ck_assert_int_eq(memcmp(back + i * MIX_SZ, lbuf + i * MIX_SZ, MIX_SZ), 0);
        } else {
            ck_assert_int_eq(back[i * MIX_SZ], 0);
        }
    }
    memset(lbuf, 0xEE, len);
    ck_assert_int_eq(memcmp(unreg, lbuf, len), 0); /* never registered: untouched */
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
    munmap(reg, len);
    free(unreg);
    free(lbuf);
    free(back);
}

START_TEST(mixed_batch_copied_by_submitter)
{
    mixed_batch_fails_only_bad_slices("");
}
END_TEST

START_TEST(mixed_batch_copied_by_workers)
{
    mixed_batch_fails_only_bad_slices("0");
}
END_TEST

START_TEST(mixed_batch_shared_by_submitter_and_workers)
{
    mixed_batch_fails_only_bad_slices("65536");
}
END_TEST

/* A batch within MC_TE_SHM_INLINE_BYTES (1 MiB by default) is copied by the
 * thread that submits it: every slice is reported before submit() returns,
 * with no hand-over to a worker. */
START_TEST(small_batch_is_done_when_submit_returns)
{
    enum { N = 128, SZ = 4096 };
    char *tbuf = calloc(N, SZ), *lbuf = malloc((size_t)N * SZ);
    void *mr;
    ck_assert_int_eq(ops->register_memory(target, tbuf, (size_t)N * SZ, NULL, &mr), 0);
    void *peer = open_target();
    memset(lbuf, 0x3C, (size_t)N * SZ);
    te_slice *ptrs[N];
    for (int i = 0; i < N; i++) {
        prep((size_t)i, peer, TE_OP_WRITE, lbuf + i * SZ, tbuf + i * SZ, SZ);
        ptrs[i] = &slices[i];
    }
    ck_assert_int_eq(ops->submit(initiator, ptrs, N), 0);
    pthread_mutex_lock(&done_lock);
    size_t reported = done_total;
    pthread_mutex_unlock(&done_lock);
    ck_assert_uint_eq(reported, N);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(done_status[i], 0);
    ck_assert_int_eq(memcmp(tbuf, lbuf, (size_t)N * SZ), 0);
    ops->peer_close(initiator, peer);
    ops->unregister_memory(target, mr);
    free(tbuf);
    free(lbuf);
}
END_TEST

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(idle_workers_use_no_cpu)
{
    struct timespec pause = {0, 100000000};
    nanosleep(&pause, NULL);
    double c0 = cpu_seconds();
    pause.tv_nsec = 500000000;
    nanosleep(&pause, NULL);
    double used = cpu_seconds() - c0;
    ck_assert_msg(used < 0.02, "two idle instances used %.3f s of CPU in 0.5 s", used);
}
END_TEST

int main(void)
{
    host_api_init();
    Suite *s = suite_create("shm_plugin");
    TCase *tc = tcase_create("abi");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, describe_publishes_typed_members);
    tcase_add_test(tc, malformed_or_foreign_descriptors_are_declined);
    tcase_add_test(tc, dead_pid_is_declined);
    tcase_add_test(tc, forced_kernel_refusal_is_declined);
    tcase_add_test(tc, shipped_plugin_ignores_test_switches);
    tcase_add_test(tc, gpu_memory_on_either_side_is_accepted);
    tcase_add_test(tc, cuda_process_is_accepted);
    tcase_add_test(tc, copies_inside_registered_memory);
    tcase_add_test(tc, ranges_outside_the_live_table_are_refused);
    tcase_add_test(tc, table_counter_is_mapped_and_sees_changes);
    tcase_add_test(tc, bad_seq_fd_falls_back_to_reads_by_pid);
    tcase_add_test(tc, destroyed_target_fails_mapped_copies);
    tcase_add_test(tc, fault_inside_a_run_fails_only_its_slice);
    tcase_add_test(tc, adjacent_slices_merged_with_a_hole_fail_only_theirs);
    tcase_add_test(tc, device_memory_fails_its_slice_as_not_this_transport);
    tcase_add_test(tc, many_small_slices_each_reported_once);
    tcase_add_test(tc, passed_deadline_fails_without_copying);
    tcase_add_test(tc, destroy_reports_every_queued_slice_once);
    tcase_add_test(tc, mixed_batch_copied_by_submitter);
    tcase_add_test(tc, mixed_batch_copied_by_workers);
    tcase_add_test(tc, mixed_batch_shared_by_submitter_and_workers);
    tcase_add_test(tc, small_batch_is_done_when_submit_returns);
    tcase_add_test(tc, idle_workers_use_no_cpu);
    suite_add_tcase(s, tc);
    return te_test_run(s);
}
