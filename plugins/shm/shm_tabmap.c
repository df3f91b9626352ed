/* shm_tabmap.c - the registration table's header in shared memory, so that an
 * initiator reads the table's sequence counter with a load instead of a
 * process_vm_readv (two syscalls less per copy).  The target keeps the header
 * in a sealed memfd page (its address is still shm_regtab, so peers that read
 * it by pid see the same bytes) and names the descriptor in shm_seq_fd; the
 * initiator maps that page read-only through /proc/<pid>/fd.  Anything that
 * does not check out leaves the initiator on process_vm_readv. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm.h"

/* ---- target side ---------------------------------------------------------- */

shm_regtab *shm_tabmap_create(int *fd_out, size_t *len_out)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t len = page > 0 ? (size_t)page : 4096;
    int fd = memfd_create("te-shm-regtab", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return NULL;
    void *m = MAP_FAILED;
    /* Sealed size: a reader's mapping can never fault (SIGBUS) on a shrink. */
    if (ftruncate(fd, (off_t)len) == 0 &&
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0)
        m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    *fd_out = fd;
    *len_out = len;
    return m;
}

void shm_tabmap_release(shm_regtab *t, int fd, size_t len)
{
    munmap(t, len);
    close(fd);
}

/* ---- initiator side -------------------------------------------------------- */

/* Maps the target's header read-only when fd names a sealed memfd page that
 * holds our peer's table (magic and token); otherwise leaves p->map NULL. */
void shm_tabmap_open(shm_peer *p, long fd)
{
    p->map = NULL;
    if (fd < 0 || fd > INT32_MAX)
        return;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%ld", (int)p->pid, fd);
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (f < 0)
        return;
    struct stat st;
    int seals = fcntl(f, F_GET_SEALS);
    size_t len = sizeof(shm_regtab);
    void *m = MAP_FAILED;
    if (fstat(f, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= (off_t)len && seals >= 0 &&
        (seals & F_SEAL_SHRINK))
        m = mmap(NULL, len, PROT_READ, MAP_SHARED, f, 0);
    close(f);
    if (m == MAP_FAILED)
        return;
    const shm_regtab *t = m;
    if (__atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != SHM_REGTAB_MAGIC ||
        __atomic_load_n(&t->token, __ATOMIC_ACQUIRE) != p->token) {
        munmap(m, len);
        return;
    }
    p->map = t;
    p->map_len = len;
}

void shm_tabmap_close(shm_peer *p)
{
    if (p->map)
        munmap((void *)p->map, p->map_len);
    p->map = NULL;
}

/* The counter through the mapping: 0, TE_ERR_PEER_CLOSED when the target
 * destroyed its table, or 1 when a check by pid is due (SHM_VERIFY_NS): the
 * mapping outlives the process, so that often the pid is confirmed to still
 * be the target (a new process under the pid would need every pid in between
 * to be taken first). */
int shm_tabmap_seq(shm_peer *p, uint64_t *seq)
{
    const shm_regtab *t = p->map;
    if (!t)
        return 1;
    uint64_t s = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&t->magic, __ATOMIC_ACQUIRE) != SHM_REGTAB_MAGIC ||
        __atomic_load_n(&t->token, __ATOMIC_ACQUIRE) != p->token)
        return TE_ERR_PEER_CLOSED;
    if (te_host_table->now_ns() - atomic_load(&p->verified_ns) >= p->verify_ns)
        return 1;
    *seq = s;
    return 0;
}
