/* clock.c - the engine's one clock: monotonic nanoseconds, for deadlines,
 * latencies and timeouts in the core (and plugins, through the host table's
 * now_ns). */
#include "clock.h"

#include <time.h>

int64_t te_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
