/* clock.h - the engine's monotonic clock (clock.c). */
#ifndef TE_CORE_CLOCK_H
#define TE_CORE_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds: every deadline_ns in the core is on it. */
int64_t te_now_ns(void);

#endif
