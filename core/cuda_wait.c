/* cuda_wait.c - the progress wait of a CUDA pipeline (tcp's GPU staging and
 * nvlink's copies), offered to plugins as host service cuda_progress_wait:
 * sleep in the driver on an event while only copies are in the air (they end
 * on their own), else a condition-variable wait bounded by a backoff and the
 * earliest deadline. */
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "clock.h"
#include "cuda_loader.h"

typedef int (*event_sync_fn)(void *event);

static event_sync_fn sync_fn;
static pthread_once_t sync_once = PTHREAD_ONCE_INIT;

static void find_event_synchronize(void)
{
    void *rt = cudl_open_runtime(NULL, 0);
    if (rt && !cudl_sym(rt, "cudaEventSynchronize", &sync_fn, NULL, 0))
        sync_fn = NULL;
}

void te_cuda_progress_wait(void *event, pthread_mutex_t *lock, pthread_cond_t *cond,
                           int64_t backoff_ns, int64_t deadline_ns)
{
    if (event) {
        pthread_once(&sync_once, find_event_synchronize);
        if (sync_fn) {
            pthread_mutex_unlock(lock);
            sync_fn(event);
            pthread_mutex_lock(lock);
            return;
        }
    }
    int64_t now = te_now_ns(), step = backoff_ns > 0 ? backoff_ns : 1000000;
    if (deadline_ns && deadline_ns - now < step)
        step = deadline_ns > now ? deadline_ns - now : 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + step;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(cond, lock, &ts);
}
