/* fake_cuda.c - a stand-in CUDA driver and runtime (libcuda.so.1; the fake
 * libcudart.so.13 only depends on it) so the GPU suites run on CPU-only
 * machines.  "Device memory" is a shared-memory object mapped twice: the
 * address the application gets is PROT_NONE, so a CPU access or a socket
 * call on it fails as on a real GPU, and a private read-write view is what
 * the fake copies through.  Streams are threads that run their operations
 * in order, so events really complete later; IPC handles name the object. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define OK 0
#define ERR_INVALID_VALUE 1
#define ERR_MEMORY 2
#define ERR_INVALID_DEVICE 101
#define ERR_NOT_READY 600
#define IPC_MAGIC 0x46414b45u /* "FAKE" */

/* ---- memory ------------------------------------------------------------------ */

typedef struct region {
    struct region *next;
    char *dev;    /* the application's (PROT_NONE) address */
    char *view;   /* read-write view for the fake's copies */
    size_t size;
    int device;
    int refs;     /* IPC opens of the same object share one region */
    bool host;    /* cudaHostRegister'ed host memory, not device memory */
    bool imported;
    char name[40];
} region;

typedef struct ipc_handle {
    char name[40];
    uint64_t size;
    int32_t device;
    uint32_t magic;
    char pad[8];
} ipc_handle;

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static region *regions;
static atomic_int name_seq;
static __thread int current_device, last_error;

static int fail(int err)
{
    last_error = err;
    return err;
}

static region *find(const void *p)
{
    for (region *r = regions; r; r = r->next)
        if ((const char *)p >= r->dev && (const char *)p < r->dev + r->size)
            return r;
    return NULL;
}

/* The address the fake copies through: the view for device memory. */
static char *through(const void *p)
{
    pthread_mutex_lock(&mem_lock);
    region *r = find(p);
    char *q = r && !r->host ? r->view + ((const char *)p - r->dev) : (char *)p;
    pthread_mutex_unlock(&mem_lock);
    return q;
}

static region *map_object(const char *name, size_t size, int device, bool create)
{
    int fd = shm_open(name, O_RDWR | (create ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0)
        return NULL;
    region *r = calloc(1, sizeof *r);
    if (!r || (create && ftruncate(fd, (off_t)size) != 0)) {
        close(fd);
        free(r);
        return NULL;
    }
    r->dev = mmap(NULL, size, PROT_NONE, MAP_SHARED, fd, 0);
    r->view = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (r->dev == MAP_FAILED || r->view == MAP_FAILED) {
        free(r);
        return NULL;
    }
    r->size = size;
    r->device = device;
    r->refs = 1;
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

/* Names of objects still allocated at exit (a failed test) go away too. */
static void unlink_all(void)
{
    for (region *r = regions; r; r = r->next)
        if (!r->host && !r->imported)
            shm_unlink(r->name);
}

static void register_cleanup(void)
{
    atexit(unlink_all);
}

int cudaMalloc(void **p, size_t size)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_cleanup);
    char name[40];
    snprintf(name, sizeof name, "/te-fake-cuda-%d-%d", (int)getpid(), atomic_fetch_add(&name_seq, 1));
    size_t rounded = (size + 4095) & ~(size_t)4095;
    region *r = map_object(name, rounded ? rounded : 4096, current_device, true);
    if (!r)
        return fail(ERR_MEMORY);
    r->size = size ? size : 1;
    pthread_mutex_lock(&mem_lock);
    r->next = regions;
    regions = r;
    pthread_mutex_unlock(&mem_lock);
    *p = r->dev;
    return OK;
}

static void unlink_region(region *r)
{
    for (region **pp = &regions; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

static void drop(region *r)
{
    size_t mapped = (r->size + 4095) & ~(size_t)4095;
    munmap(r->dev, mapped);
    munmap(r->view, mapped);
    if (!r->imported)
        shm_unlink(r->name);
    free(r);
}

int cudaFree(void *p)
{
    if (!p)
        return OK;
    pthread_mutex_lock(&mem_lock);
    region *r = find(p);
    bool ok = r && r->dev == p && !r->host && !r->imported;
    if (ok)
        unlink_region(r);
    pthread_mutex_unlock(&mem_lock);
    if (!ok)
        return fail(ERR_INVALID_VALUE);
    drop(r);
    return OK;
}

int cudaIpcGetMemHandle(ipc_handle *h, void *p)
{
    pthread_mutex_lock(&mem_lock);
    region *r = find(p);
    bool ok = r && r->dev == p && !r->host;
    if (ok) {
        memset(h, 0, sizeof *h);
        snprintf(h->name, sizeof h->name, "%s", r->name);
        h->size = r->size;
        h->device = r->device;
        h->magic = IPC_MAGIC;
    }
    pthread_mutex_unlock(&mem_lock);
    return ok ? OK : fail(ERR_INVALID_VALUE);
}

/* Opening the same handle again returns the same address (counted). */
int cudaIpcOpenMemHandle(void **p, ipc_handle h, unsigned flags)
{
    if (h.magic != IPC_MAGIC)
        return fail(ERR_INVALID_VALUE);
    pthread_mutex_lock(&mem_lock);
    for (region *r = regions; r; r = r->next)
        if (r->imported && !strcmp(r->name, h.name)) {
            r->refs++;
            *p = r->dev;
            pthread_mutex_unlock(&mem_lock);
            return OK;
        }
    region *r = map_object(h.name, (h.size + 4095) & ~(uint64_t)4095, h.device, false);
    if (r) {
        r->size = h.size;
        r->imported = true;
        r->next = regions;
        regions = r;
        *p = r->dev;
    }
    pthread_mutex_unlock(&mem_lock);
    return r ? OK : fail(ERR_INVALID_VALUE);
}

int cudaIpcCloseMemHandle(void *p)
{
    pthread_mutex_lock(&mem_lock);
    region *r = find(p);
    bool ok = r && r->imported && r->dev == p;
    if (ok && --r->refs == 0)
        unlink_region(r);
    else
        r = NULL;
    pthread_mutex_unlock(&mem_lock);
    if (r)
        drop(r);
    return ok ? OK : fail(ERR_INVALID_VALUE);
}

int cudaHostRegister(void *p, size_t size, unsigned flags)
{
    region *r = calloc(1, sizeof *r);
    if (!r)
        return fail(ERR_MEMORY);
    r->dev = r->view = p;
    r->size = size;
    r->host = true;
    pthread_mutex_lock(&mem_lock);
    r->next = regions;
    regions = r;
    pthread_mutex_unlock(&mem_lock);
    return OK;
}

int cudaHostUnregister(void *p)
{
    pthread_mutex_lock(&mem_lock);
    region *r = find(p);
    bool ok = r && r->host && r->dev == p;
    if (ok)
        unlink_region(r);
    pthread_mutex_unlock(&mem_lock);
    free(ok ? r : NULL);
    return ok ? OK : fail(ERR_INVALID_VALUE);
}

/* ---- driver API ---------------------------------------------------------------- */

int cuPointerGetAttribute(void *data, int attr, unsigned long long ptr)
{
    pthread_mutex_lock(&mem_lock);
    region *r = find((void *)(uintptr_t)ptr);
    unsigned type = r ? (r->host ? 1 : 2) : 0;
    int device = r ? r->device : -1;
    pthread_mutex_unlock(&mem_lock);
    if (!r)
        return ERR_INVALID_VALUE; /* memory CUDA does not know */
    if (attr == 2)
        *(unsigned *)data = type;
    else if (attr == 8)
        *(unsigned *)data = 0;
    else if (attr == 9)
        *(int *)data = device;
    else
        return ERR_INVALID_VALUE;
    return OK;
}

int cuMemGetAddressRange_v2(unsigned long long *base, size_t *size, unsigned long long ptr)
{
    pthread_mutex_lock(&mem_lock);
    region *r = find((void *)(uintptr_t)ptr);
    if (r && !r->host) {
        *base = (unsigned long long)(uintptr_t)r->dev;
        *size = r->size;
    }
    pthread_mutex_unlock(&mem_lock);
    return r && !r->host ? OK : ERR_INVALID_VALUE;
}

/* ---- devices and errors ----------------------------------------------------------- */

static int device_count(void)
{
    const char *v = getenv("TE_FAKE_CUDA_DEVICES");
    int n = v ? atoi(v) : 1;
    return n >= 0 && n <= 8 ? n : 1;
}

int cudaGetDeviceCount(int *n)
{
    *n = device_count();
    return OK;
}

int cudaGetDevice(int *d)
{
    *d = current_device;
    return OK;
}

int cudaSetDevice(int d)
{
    if (d < 0 || d >= device_count())
        return fail(ERR_INVALID_DEVICE);
    current_device = d;
    return OK;
}

int cudaGetLastError(void)
{
    int e = last_error;
    last_error = OK;
    return e;
}

const char *cudaGetErrorString(int err)
{
    switch (err) {
    case OK: return "no error";
    case ERR_INVALID_VALUE: return "invalid argument (fake)";
    case ERR_MEMORY: return "out of memory (fake)";
    case ERR_INVALID_DEVICE: return "invalid device ordinal (fake)";
    case ERR_NOT_READY: return "device not ready (fake)";
    default: return "unknown error (fake)";
    }
}

int cudaDeviceGetPCIBusId(char *id, int len, int dev)
{
    if (dev < 0 || dev >= device_count())
        return fail(ERR_INVALID_DEVICE);
    snprintf(id, (size_t)len, "0000:%02X:00.0", 0x10 + dev);
    return OK;
}

int cudaDeviceGetByPCIBusId(int *dev, const char *id)
{
    unsigned bus;
    if (sscanf(id, "0000:%x:00.0", &bus) != 1 || bus < 0x10 || (int)bus - 0x10 >= device_count())
        return fail(ERR_INVALID_DEVICE);
    *dev = (int)bus - 0x10;
    return OK;
}

/* ---- streams and events ----------------------------------------------------------- */

typedef struct fevent {
    atomic_ullong recorded, done;
} fevent;

enum { OP_COPY, OP_SET, OP_MARK, OP_HOST };

typedef struct op {
    struct op *next;
    int kind, value;
    void (*fn)(void *);
    void *arg;
    char *dst;
    const char *src;
    size_t n;
    fevent *ev;
    unsigned long long seq;
} op;

typedef struct fstream {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    op *head, *tail;
    bool stop;
    pthread_t thread;
} fstream;

/* The copy engine.  Like real DMA it is invisible to ThreadSanitizer (the
 * ordering it gives is the events', which TSan sees as atomics), and it is
 * kept from becoming a memcpy call, which TSan would intercept. */
#if defined(__clang__)
#define DMA __attribute__((no_sanitize("thread"), noinline))
#else
#define DMA __attribute__((no_sanitize_thread, noinline, optimize("no-tree-loop-distribute-patterns")))
#endif

static DMA void dma_copy(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    if (((uintptr_t)dst | (uintptr_t)src) % 8 == 0)
        for (; i + 8 <= n; i += 8)
            *(uint64_t *)(void *)(dst + i) = *(const uint64_t *)(const void *)(src + i);
    for (; i < n; i++)
        dst[i] = src[i];
}

static DMA void dma_set(char *dst, int value, size_t n)
{
    uint64_t w = 0x0101010101010101ull * (uint8_t)value;
    size_t i = 0;
    if ((uintptr_t)dst % 8 == 0)
        for (; i + 8 <= n; i += 8)
            *(uint64_t *)(void *)(dst + i) = w;
    for (; i < n; i++)
        dst[i] = (char)value;
}

static void *stream_main(void *arg)
{
    fstream *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        op *o = s->head;
        if (!o)
            break;
        pthread_mutex_unlock(&s->lock);
        if (o->kind == OP_COPY)
            dma_copy(o->dst, o->src, o->n);
        else if (o->kind == OP_SET)
            dma_set(o->dst, o->value, o->n);
        else if (o->kind == OP_HOST)
            o->fn(o->arg);
        else
            atomic_store(&o->ev->done, o->seq);
        pthread_mutex_lock(&s->lock);
        s->head = o->next; /* off the queue only once done: idle means empty */
        if (!s->head)
            s->tail = NULL;
        pthread_cond_broadcast(&s->cond);
        free(o);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static fstream *stream_new(void)
{
    fstream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

static pthread_once_t legacy_once = PTHREAD_ONCE_INIT;
static fstream *legacy;

static void legacy_init(void)
{
    legacy = stream_new();
}

/* NULL, cudaStreamLegacy (1) and cudaStreamPerThread (2) are the default stream. */
static fstream *stream_of(void *handle)
{
    if ((uintptr_t)handle <= 2) {
        pthread_once(&legacy_once, legacy_init);
        return legacy;
    }
    return handle;
}

static int enqueue(void *stream, op *o)
{
    fstream *s = stream_of(stream);
    if (!o || !s) {
        free(o);
        return fail(ERR_MEMORY);
    }
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = o;
    else
        s->head = o;
    s->tail = o;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return OK;
}

static void wait_idle(fstream *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->head)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

int cudaStreamCreateWithFlags(void **stream, unsigned flags)
{
    *stream = stream_new();
    return *stream ? OK : fail(ERR_MEMORY);
}

int cudaStreamSynchronize(void *stream)
{
    wait_idle(stream_of(stream));
    return OK;
}

int cudaStreamDestroy(void *stream)
{
    fstream *s = stream_of(stream);
    if (s == legacy)
        return fail(ERR_INVALID_VALUE);
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    free(s);
    return OK;
}

int cudaDeviceSynchronize(void)
{
    wait_idle(stream_of(NULL));
    return OK;
}

int cudaEventCreateWithFlags(void **ev, unsigned flags)
{
    *ev = calloc(1, sizeof(fevent));
    return *ev ? OK : fail(ERR_MEMORY);
}

int cudaEventDestroy(void *ev)
{
    free(ev); /* callers destroy events only when no record is pending */
    return OK;
}

int cudaEventRecord(void *ev, void *stream)
{
    fevent *e = ev;
    op *o = calloc(1, sizeof *o);
    if (o) {
        o->kind = OP_MARK;
        o->ev = e;
        o->seq = atomic_fetch_add(&e->recorded, 1) + 1;
    }
    return enqueue(stream, o);
}

int cudaEventQuery(void *ev)
{
    fevent *e = ev;
    return atomic_load(&e->done) >= atomic_load(&e->recorded) ? OK : ERR_NOT_READY;
}

int cudaEventSynchronize(void *ev)
{
    struct timespec ts = {0, 20000};
    while (cudaEventQuery(ev) == ERR_NOT_READY)
        nanosleep(&ts, NULL);
    return OK;
}

/* ---- copies --------------------------------------------------------------------- */

int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *stream)
{
    op *o = calloc(1, sizeof *o);
    if (o) {
        o->kind = OP_COPY;
        o->dst = through(dst);
        o->src = through(src);
        o->n = n;
    }
    return enqueue(stream, o);
}

int cudaMemsetAsync(void *dst, int value, size_t n, void *stream)
{
    op *o = calloc(1, sizeof *o);
    if (o) {
        o->kind = OP_SET;
        o->dst = through(dst);
        o->value = value;
        o->n = n;
    }
    return enqueue(stream, o);
}

/* Synchronous copies use the default stream, so they wait for its work. */
int cudaMemcpy(void *dst, const void *src, size_t n, int kind)
{
    int rc = cudaMemcpyAsync(dst, src, n, kind, NULL);
    if (rc == OK)
        wait_idle(stream_of(NULL));
    return rc;
}

/* The host function runs on the stream's thread and holds the stream. */
int cudaLaunchHostFunc(void *stream, void (*fn)(void *), void *arg)
{
    op *o = calloc(1, sizeof *o);
    if (o) {
        o->kind = OP_HOST;
        o->fn = fn;
        o->arg = arg;
    }
    return enqueue(stream, o);
}
