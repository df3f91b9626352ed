/*
 * embed.c - a program that embeds the transfer engine through its C API and
 * nothing else: it re-executes itself as a target process, and the two move
 * a buffer each way over loopback (P2PHANDSHAKE) and verify every byte.
 *
 *   embed [-p PROTOCOL] [-n BYTES]   two processes (default protocol tcp)
 *   embed -s [-p PROTOCOL]           one process, to its own segment (for
 *                                    transports such as the loopcopy example)
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <te/te.h>

enum { SEED_TARGET = 1, SEED_INITIATOR = 2 };

typedef struct options {
    const char *protocol;
    size_t bytes;
    int self;   /* -s: one process */
    int target; /* -t: the re-executed target (internal) */
} options;

/* ---- helpers ------------------------------------------------------------- */

static int fail(const char *what, int rc)
{
    fprintf(stderr, "embed[%d]: %s: %s (%d): %s\n", (int)getpid(), what, te_strerror(rc), rc,
            te_last_error());
    return 1;
}

/* A reproducible pattern, so each side can check what the other wrote. */
static void fill(unsigned char *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)x;
    }
}

static int verify(const unsigned char *buf, size_t len, uint64_t seed, const char *what)
{
    unsigned char *want = malloc(len);
    if (!want)
        return 1;
    fill(want, len, seed);
    int bad = memcmp(buf, want, len) != 0;
    free(want);
    fprintf(stderr, "embed[%d]: %s: %zu bytes %s\n", (int)getpid(), what, len,
            bad ? "DIFFER" : "verified");
    return bad;
}

static te_engine *start_engine(const char *protocol)
{
    te_engine *e = te_engine_create();
    if (!e)
        return NULL;
    int rc = te_engine_initialize(e, "127.0.0.1", "P2PHANDSHAKE", protocol, "", NULL);
    if (rc) {
        fail("te_engine_initialize", rc);
        te_engine_destroy(e);
        return NULL;
    }
    return e;
}

/* One request through the batch API: allocate, submit, wait, free. */
static int move(te_engine *e, int opcode, void *local, te_segment_id seg, uint64_t remote,
                size_t len)
{
    te_request req = {.opcode = opcode, .local = local, .target = seg, .remote = remote,
                      .length = len};
    te_batch_id batch;
    int rc = te_batch_allocate(e, 1, &batch);
    if (rc)
        return fail("te_batch_allocate", rc);
    int status = TE_TRANSFER_FAILED;
    rc = te_submit(e, batch, &req, 1);
    if (!rc)
        rc = te_batch_wait(e, batch, -1, &status); /* until the batch deadline */
    te_batch_free(e, batch);
    if (rc)
        return fail(opcode == TE_OP_READ ? "read" : "write", rc);
    if (status != TE_TRANSFER_COMPLETED) {
        fprintf(stderr, "embed: transfer ended in state %d: %s\n", status, te_last_error());
        return 1;
    }
    return 0;
}

/* ---- the target: serves one buffer until the initiator says "check" ------ */

static int run_target(const options *o)
{
    te_engine *e = start_engine(o->protocol);
    unsigned char *buf = malloc(o->bytes);
    int bad = 1;
    if (!e || !buf)
        goto out;
    fill(buf, o->bytes, SEED_TARGET);
    int rc = te_register_memory(e, buf, o->bytes, NULL);
    if (rc) {
        fail("te_register_memory", rc);
        goto out;
    }
    /* Tell the initiator where to find us, then wait for its word. */
    printf("%s %" PRIu64 " %zu\n", te_engine_segment_name(e), (uint64_t)(uintptr_t)buf, o->bytes);
    fflush(stdout);
    char line[64];
    if (fgets(line, sizeof line, stdin) && !strcmp(line, "check\n"))
        bad = verify(buf, o->bytes, SEED_INITIATOR, "target: what the initiator wrote");
    else
        fprintf(stderr, "embed: target: the initiator went away\n");
    te_unregister_memory(e, buf);
out:
    te_engine_destroy(e);
    free(buf);
    return bad;
}

/* ---- the initiator ------------------------------------------------------- */

/* Starts this program again as the target; its stdin/stdout become pipes. */
static pid_t spawn_target(const options *o, FILE **to, FILE **from)
{
    int down[2], up[2] = {-1, -1};
    if (pipe(down))
        return -1;
    pid_t pid = pipe(up) ? -1 : fork();
    if (pid == 0) {
        dup2(down[0], 0);
        dup2(up[1], 1);
        for (int i = 0; i < 2; i++) {
            close(down[i]);
            close(up[i]);
        }
        char bytes[32];
        snprintf(bytes, sizeof bytes, "%zu", o->bytes);
        char *argv[] = {"embed", "-t", "-p", (char *)o->protocol, "-n", bytes, NULL};
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(down[0]);
    close(up[1]);
    if (pid < 0) {
        close(down[1]);
        close(up[0]);
        return -1;
    }
    *to = fdopen(down[1], "w");
    *from = fdopen(up[0], "r");
    return pid;
}

static int exchange(te_engine *e, const char *name, uint64_t remote, size_t len)
{
    unsigned char *buf = malloc(len);
    if (!buf)
        return 1;
    te_segment_id seg;
    int bad = 1, rc = te_register_memory(e, buf, len, NULL);
    if (rc) {
        fail("te_register_memory", rc);
        goto out;
    }
    rc = te_segment_open(e, name, &seg);
    if (rc) {
        fail("te_segment_open", rc);
        goto unreg;
    }
    memset(buf, 0, len);
    bad = move(e, TE_OP_READ, buf, seg, remote, len) ||
          verify(buf, len, SEED_TARGET, "initiator: read from the target");
    fill(buf, len, SEED_INITIATOR);
    if (!bad)
        bad = move(e, TE_OP_WRITE, buf, seg, remote, len);
unreg:
    te_unregister_memory(e, buf);
out:
    free(buf);
    return bad;
}

static int run_initiator(const options *o)
{
    FILE *to = NULL, *from = NULL;
    signal(SIGPIPE, SIG_IGN); /* a target that died is reported, not fatal */
    pid_t pid = spawn_target(o, &to, &from);
    if (pid < 0 || !to || !from) {
        perror("embed: cannot start the target");
        return 1;
    }
    char name[256];
    uint64_t remote = 0;
    size_t len = 0;
    int bad = 1;
    if (fscanf(from, "%255s %" SCNu64 " %zu", name, &remote, &len) != 3) {
        fprintf(stderr, "embed: the target did not start\n");
    } else {
        te_engine *e = start_engine(o->protocol);
        bad = !e || exchange(e, name, remote, len);
        te_engine_destroy(e);
    }
    fputs(bad ? "stop\n" : "check\n", to);
    fclose(to); /* EOF also stops a target that is still waiting */
    int status = 0;
    waitpid(pid, &status, 0);
    fclose(from);
    return bad || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

/* ---- one process: two buffers of our own segment ------------------------- */

static int run_self(const options *o)
{
    te_engine *e = start_engine(o->protocol);
    unsigned char *src = malloc(o->bytes), *dst = calloc(1, o->bytes);
    int bad = 1;
    if (!e || !src || !dst)
        goto out;
    te_buffer_entry bufs[2] = {{src, o->bytes}, {dst, o->bytes}};
    int rc = te_register_memory_batch(e, bufs, 2, NULL);
    if (rc) {
        fail("te_register_memory_batch", rc);
        goto out;
    }
    te_segment_id self;
    rc = te_segment_open(e, te_engine_segment_name(e), &self);
    if (rc) {
        fail("te_segment_open", rc);
        goto out;
    }
    fill(src, o->bytes, SEED_INITIATOR);
    te_request req = {TE_OP_WRITE, src, self, (uint64_t)(uintptr_t)dst, o->bytes};
    rc = te_transfer_sync(e, &req, 1, NULL, NULL);
    if (rc)
        fail("te_transfer_sync", rc);
    else
        bad = verify(dst, o->bytes, SEED_INITIATOR, "self: written to our own segment");
out:
    te_engine_destroy(e); /* registrations end with the engine */
    free(src);
    free(dst);
    return bad;
}

int main(int argc, char **argv)
{
    options o = {.protocol = "tcp", .bytes = 8u << 20};
    int c;
    while ((c = getopt(argc, argv, "p:n:st")) != -1) {
        if (c == 'p')
            o.protocol = optarg;
        else if (c == 'n')
            o.bytes = strtoull(optarg, NULL, 0);
        else if (c == 's')
            o.self = 1;
        else if (c == 't')
            o.target = 1;
        else
            return 2;
    }
    if (o.bytes == 0) {
        fprintf(stderr, "embed: -n needs a positive size\n");
        return 2;
    }
    int bad = o.target ? run_target(&o) : o.self ? run_self(&o) : run_initiator(&o);
    if (!o.target)
        printf("embed (%s%s): %s\n", o.protocol, o.self ? ", one process" : "",
               bad ? "FAILED" : "OK");
    return bad;
}
