/* rail.c - consecutive-error counting and pausing of rails (see rdma_rail.h).
 * The hot paths are one relaxed load: rdma_rail_check of a rail that is not
 * paused, rdma_rail_success of a rail without errors. */
#include "rdma_rail.h"

bool rdma_rail_error(rdma_rail *r, int64_t now_ns, int64_t pause_ns)
{
    int n = atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed) + 1;
    if (pause_ns <= 0 || n != RDMA_RAIL_ERROR_THRESHOLD)
        return false;
    int64_t until = now_ns + pause_ns;
    atomic_store_explicit(&r->paused_until, until ? until : 1, memory_order_release);
    return true;
}

void rdma_rail_success(rdma_rail *r)
{
    if (atomic_load_explicit(&r->errors, memory_order_relaxed))
        atomic_store_explicit(&r->errors, 0, memory_order_relaxed);
}

enum rdma_rail_state rdma_rail_check(rdma_rail *r, int64_t now_ns)
{
    int_least64_t until = atomic_load_explicit(&r->paused_until, memory_order_acquire);
    if (!until)
        return RDMA_RAIL_USABLE;
    if (now_ns < until)
        return RDMA_RAIL_PAUSED;
    if (!atomic_compare_exchange_strong(&r->paused_until, &until, 0)) /* raced: re-read */
        return until && now_ns < until ? RDMA_RAIL_PAUSED : RDMA_RAIL_USABLE;
    atomic_store_explicit(&r->errors, 0, memory_order_relaxed);
    return RDMA_RAIL_RESUMED;
}
