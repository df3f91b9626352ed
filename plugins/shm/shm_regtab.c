/* shm_regtab.c - the registration table: a sequence-locked, copy-on-write
 * array a target keeps in its own memory, and the initiator's cached copy of
 * it, whose counter is read around every run of copies (a load from the
 * shared header of shm_tabmap.c when the target offers it, else with
 * process_vm_readv). */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"

/* ---- target side ---------------------------------------------------------- */

static uint64_t random_token(void)
{
    uint64_t t = 0;
    if (getrandom(&t, sizeof t, GRND_NONBLOCK) != (ssize_t)sizeof t) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
            (uint64_t)(uintptr_t)&t;
    }
    return t ? t : 0x9e3779b97f4a7c15ull;
}

int shm_regtab_create(shm_inst *in)
{
    in->tab_fd = -1;
    in->tab = shm_tabmap_create(&in->tab_fd, &in->tab_len); /* zeroed */
    if (!in->tab)
        in->tab = calloc(1, sizeof *in->tab); /* peers read it by pid only */
    if (!in->tab)
        return TE_ERR_MEMORY;
    in->tab->token = random_token();
    in->tab->seq = 0;
    __atomic_store_n(&in->tab->magic, SHM_REGTAB_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

void shm_regtab_destroy(shm_inst *in)
{
    if (!in->tab)
        return;
    /* Readers that still hold our address see a dead table. */
    __atomic_store_n(&in->tab->seq, in->tab->seq | 1, __ATOMIC_RELEASE);
    __atomic_store_n(&in->tab->magic, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&in->tab->token, 0, __ATOMIC_RELEASE);
    if (in->tab_fd >= 0)
        shm_tabmap_release(in->tab, in->tab_fd, in->tab_len);
    else
        free(in->tab);
    in->tab_fd = -1;
    free(in->ranges);
    in->tab = NULL;
    in->ranges = NULL;
    in->nranges = 0;
}

/* Points the table at a new array (caller holds reg_lock) and frees the old
 * one; a reader that raced with it sees seq change and reads again. */
static void publish(shm_inst *in, shm_range *ranges, size_t n)
{
    shm_regtab *t = in->tab;
    uint64_t seq = t->seq;
    /* Release stores keep the odd seq ahead of the data, the data ahead of
     * the even seq (readers are other processes: only store order counts). */
    __atomic_store_n(&t->seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&t->entries, (uint64_t)(uintptr_t)ranges, __ATOMIC_RELEASE);
    __atomic_store_n(&t->count, (uint64_t)n, __ATOMIC_RELEASE);
    __atomic_store_n(&t->seq, seq + 2, __ATOMIC_RELEASE);
    free(in->ranges);
    in->ranges = ranges;
    in->nranges = n;
}

int shm_regtab_add(shm_inst *in, uint64_t addr, uint64_t len)
{
    pthread_mutex_lock(&in->reg_lock);
    size_t n = in->nranges;
    if (n >= SHM_MAX_RANGES) {
        pthread_mutex_unlock(&in->reg_lock);
        te_host_table->set_error("shm: more than %u registered buffers", SHM_MAX_RANGES);
        return TE_ERR_TOO_MANY_REQUESTS;
    }
    shm_range *r = malloc((n + 1) * sizeof *r);
    if (!r) {
        pthread_mutex_unlock(&in->reg_lock);
        return TE_ERR_MEMORY;
    }
    size_t at = 0;
    while (at < n && in->ranges[at].addr < addr)
        at++;
    if (at)
        memcpy(r, in->ranges, at * sizeof *r);
    r[at] = (shm_range){addr, len};
    if (n > at)
        memcpy(r + at + 1, in->ranges + at, (n - at) * sizeof *r);
    publish(in, r, n + 1);
    pthread_mutex_unlock(&in->reg_lock);
    return 0;
}

/* Without memory for a new array: shrink the current one in place. */
static void remove_in_place(shm_inst *in, size_t at)
{
    shm_regtab *t = in->tab;
    size_t n = in->nranges;
    __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&t->count, (uint64_t)(n - 1), __ATOMIC_RELEASE); /* shrink first */
    memmove(in->ranges + at, in->ranges + at + 1, (n - at - 1) * sizeof *in->ranges);
    in->nranges = n - 1;
    __atomic_store_n(&t->seq, t->seq + 1, __ATOMIC_RELEASE);
}

void shm_regtab_remove(shm_inst *in, uint64_t addr)
{
    pthread_mutex_lock(&in->reg_lock);
    size_t n = in->nranges, at = 0;
    while (at < n && in->ranges[at].addr != addr)
        at++;
    if (at < n) {
        shm_range *r = n > 1 ? malloc((n - 1) * sizeof *r) : NULL;
        if (n > 1 && !r) {
            remove_in_place(in, at);
        } else {
            if (r) {
                memcpy(r, in->ranges, at * sizeof *r);
                memcpy(r + at, in->ranges + at + 1, (n - at - 1) * sizeof *r);
            }
            publish(in, r, n - 1);
        }
    }
    pthread_mutex_unlock(&in->reg_lock);
}

/* ---- initiator side -------------------------------------------------------- */

int shm_errno_status(int err)
{
    switch (err) {
    case ESRCH:
    case EPERM:
    case EACCES:
        return TE_ERR_PEER_CLOSED; /* the segment is refetched and re-probed */
    case EFAULT:
        return TE_ERR_ADDRESS_NOT_REGISTERED;
    case ENOMEM:
        return TE_ERR_MEMORY;
    case EINVAL:
        return TE_ERR_INVALID_ARGUMENT;
    default:
        return TE_ERR_REMOTE;
    }
}

int shm_peer_read(pid_t pid, void *dst, uint64_t addr, size_t len)
{
    struct iovec l = {dst, len}, r = {(void *)(uintptr_t)addr, len};
    ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 0 : -EFAULT;
}

/* The peer's table header by pid, checked: 0, -errno from the read, or
 * -ESTALE when it is not our table (another process now, or not a te engine). */
static int read_header(const shm_peer *p, shm_regtab *t)
{
    int rc = shm_peer_read(p->pid, t, p->tab_addr, sizeof *t);
    if (rc)
        return rc;
    return t->magic == SHM_REGTAB_MAGIC && t->token == p->token ? 0 : -ESTALE;
}

/* read_header's failure as a status for the core. */
static int header_status(int rc)
{
    return rc == -ESTALE ? TE_ERR_PEER_CLOSED : shm_errno_status(-rc);
}

int shm_peer_probe(shm_peer *p, bool force_eperm)
{
    if (force_eperm)
        return -EPERM;
    shm_regtab t;
    return read_header(p, &t);
}

static void short_pause(void)
{
    struct timespec ts = {0, 20000}; /* a writer holds the odd seq for microseconds */
    nanosleep(&ts, NULL);
}

/* The whole header by pid: the process there still holds our table. */
static int verify_by_pid(shm_peer *p, uint64_t *seq)
{
    int64_t now = te_host_table->now_ns();
    shm_regtab t;
    int rc = read_header(p, &t);
    if (rc)
        return header_status(rc);
    *seq = t.seq;
    atomic_store(&p->verified_ns, now);
    return 0;
}

int shm_peer_seq(shm_peer *p, uint64_t *seq)
{
    int mapped = shm_tabmap_seq(p, seq);
    if (mapped <= 0)
        return mapped;
    if (p->map)
        return verify_by_pid(p, seq);
    int rc = shm_peer_read(p->pid, seq, p->tab_addr + offsetof(shm_regtab, seq), sizeof *seq);
#ifndef __SANITIZE_THREAD__ /* gcc's tsan does not model fences */
    __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the next read comes after this one */
#endif
    return rc ? shm_errno_status(-rc) : 0;
}

static bool ranges_valid(const shm_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].len == 0 || r[i].addr + r[i].len < r[i].addr)
            return false;
        if (i && r[i].addr < r[i - 1].addr + r[i - 1].len)
            return false;
    }
    return true;
}

/* One consistent read of the table; 1 = raced with the target, try again. */
static int read_table(shm_peer *p, uint64_t s1)
{
    shm_regtab t;
    int rc = read_header(p, &t);
    if (rc)
        return header_status(rc);
    if (t.seq != s1 || t.count > SHM_MAX_RANGES)
        return 1;
    shm_range *r = t.count ? malloc(t.count * sizeof *r) : NULL;
    if (t.count && !r)
        return TE_ERR_MEMORY;
    int rd = t.count ? shm_peer_read(p->pid, r, t.entries, t.count * sizeof *r) : 0;
    uint64_t s2;
    rc = shm_peer_seq(p, &s2);
    if (rc || s2 != s1 || rd || !ranges_valid(r, t.count)) {
        free(r);
        if (rc)
            return rc;
        return s2 != s1 ? 1 : rd ? shm_errno_status(-rd) : TE_ERR_MALFORMED_FRAME;
    }
    free(p->ranges);
    p->ranges = r;
    p->count = t.count;
    p->seq = s1;
    return 0;
}

int shm_peer_refresh(shm_peer *p, uint64_t *seq)
{
    for (int tries = 0; tries < 200; tries++) {
        uint64_t s1;
        int rc = shm_peer_seq(p, &s1);
        if (rc)
            return rc;
        if (s1 & 1) {
            short_pause();
            continue;
        }
        if (s1 != p->seq)
            rc = read_table(p, s1);
        if (rc == 0)
            *seq = s1;
        if (rc <= 0)
            return rc;
    }
    return TE_ERR_TIMEOUT;
}

bool shm_peer_allows(const shm_peer *p, uint64_t addr, uint64_t len)
{
    size_t lo = 0, hi = p->count;
    while (lo < hi) { /* first range that starts after addr */
        size_t mid = lo + (hi - lo) / 2;
        if (p->ranges[mid].addr <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return false;
    const shm_range *r = &p->ranges[lo - 1];
    return addr + len >= addr && addr + len <= r->addr + r->len;
}
