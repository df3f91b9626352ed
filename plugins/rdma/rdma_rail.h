/* rdma_rail.h - the health of one rail (a local NIC towards one peer NIC),
 * as the original keeps it: RDMA_RAIL_ERROR_THRESHOLD consecutive path
 * errors pause the rail for MC_RDMA_RAIL_PAUSE_SECONDS, during which path
 * selection avoids it while another rail to the peer is not paused.  Pure
 * (no verbs; time is passed in) and lock-free: errors and successes are
 * reported from the completion workers, checks come from every submitter. */
#ifndef TE_RDMA_RAIL_H
#define TE_RDMA_RAIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RDMA_RAIL_ERROR_THRESHOLD 5

typedef struct rdma_rail {
    atomic_int errors;                  /* consecutive path errors */
    _Atomic int_least64_t paused_until; /* now_ns clock; 0 = not paused */
} rdma_rail;

/* What rdma_rail_check found. */
enum rdma_rail_state {
    RDMA_RAIL_USABLE,
    RDMA_RAIL_PAUSED,
    RDMA_RAIL_RESUMED /* its pause just ended: usable, error count restarted */
};

/* Counts one path error at now_ns.  Returns true for the error that pauses
 * the rail (the RDMA_RAIL_ERROR_THRESHOLD-th in a row) until now_ns +
 * pause_ns; exactly one caller sees true per pause.  pause_ns <= 0 disables
 * pausing. */
bool rdma_rail_error(rdma_rail *r, int64_t now_ns, int64_t pause_ns);

/* A success: the error count restarts (a pause in force runs to its end). */
void rdma_rail_success(rdma_rail *r);

/* Whether the rail may be used at now_ns.  The first check after the pause
 * ends returns RDMA_RAIL_RESUMED (to exactly one caller), later ones
 * RDMA_RAIL_USABLE. */
enum rdma_rail_state rdma_rail_check(rdma_rail *r, int64_t now_ns);

#endif
