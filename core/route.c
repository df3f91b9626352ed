/* route.c - the per-request choice of transports (docs/transports.md):
 * host memory on both sides of a same-host pair goes to a same-host copy
 * transport (shm), device memory to a same-host GPU transport (nvlink) when
 * the target is device memory, everything else to the remote transports in
 * the order the protocol named them, tcp last.  Hints pin one transport. */
#include "route.h"

#include <stdatomic.h>
#include <string.h>

#include "clock.h"
#include "cuda_loader.h"
#include "engine.h"
#include "log.h"

/* ---- the choice (pure) ----------------------------------------------------- */

static bool same_host(uint32_t caps)
{
    return !(caps & TE_TRANSPORT_CAP_REMOTE);
}

static const char needs_local_mr[] = "it needs registered local memory";

const char *te_route_refusal(const te_route_in *in, int t)
{
    uint32_t caps = in->caps[t];
    if (!in->reached[t])
        return "it cannot reach the peer (declined at peer_open)";
    if ((caps & TE_TRANSPORT_CAP_NEEDS_LOCAL_MR) && !in->local_registered)
        return needs_local_mr;
    bool device = in->local_device || in->remote_device;
    if (same_host(caps) && !(caps & TE_TRANSPORT_CAP_GPU) && device)
        return "it copies host memory only and the request involves device memory";
    if (same_host(caps) && (caps & TE_TRANSPORT_CAP_GPU) && !in->remote_device)
        return "it maps the peer's device memory and the target is host memory";
    return NULL;
}

static void add_pass(const te_route_in *in, te_route *out, bool want_same_host, bool want_usable)
{
    for (int t = 0; t < in->count; t++)
        if (same_host(in->caps[t]) == want_same_host && in->usable[t] == want_usable &&
            !te_route_refusal(in, t))
            out->order[out->count++] = (int8_t)t;
}

void te_route_order(const te_route_in *in, te_route *out)
{
    out->count = 0;
    for (int usable = 1; usable >= 0; usable--) {
        add_pass(in, out, true, usable);
        add_pass(in, out, false, usable);
    }
}

/* ---- where local memory lives ------------------------------------------------ */

/* The driver's pointer query once the process has loaded CUDA.  Until
 * then the answer is "host", looked for again at most every 100 ms, so a
 * CPU-only process pays one clock read per request. */
static cudl_pointer_attr_fn pointer_query(void)
{
    static _Atomic int64_t next_check_ns;
    static _Atomic bool found;
    if (atomic_load_explicit(&found, memory_order_acquire))
        return cudl_pointer_attr();
    int64_t now = te_now_ns();
    if (now < atomic_load_explicit(&next_check_ns, memory_order_relaxed))
        return NULL;
    atomic_store_explicit(&next_check_ns, now + 100000000, memory_order_relaxed);
    cudl_pointer_attr_fn get = cudl_pointer_attr();
    if (get)
        atomic_store_explicit(&found, true, memory_order_release);
    return get;
}

bool te_route_local_device(const te_region *pin, const void *addr)
{
    if (pin)
        return te_location_is_device(pin->location);
    return cudl_device_ordinal(pointer_query(), addr) >= 0;
}

/* ---- the engine's view ------------------------------------------------------- */

static void route_input(te_engine *e, const te_segment *seg, const te_region *pin,
                        const void *local, bool remote_device, te_route_in *in)
{
    int64_t now = 0; /* read only when a path was ever set aside */
    in->count = e->transport_count;
    in->local_registered = pin != NULL;
    in->local_device = te_route_local_device(pin, local);
    in->remote_device = remote_device;
    for (int t = 0; t < e->transport_count; t++) {
        in->caps[t] = e->transports[t].ops->caps;
        in->reached[t] = seg->peers[t] != NULL;
        bool aside = seg->health && te_path_was_set_aside(&seg->health[t]);
        if (aside && !now)
            now = te_now_ns();
        in->usable[t] = !aside || te_path_usable(&seg->health[t], now);
    }
}

/* Unregistered local memory that only an RDMA-like transport could carry is
 * TE_ERR_ADDRESS_NOT_REGISTERED, as in the original; other refusals say
 * that no transport fits. */
static int refusal_status(const char *why)
{
    return why == needs_local_mr ? TE_ERR_ADDRESS_NOT_REGISTERED : TE_ERR_NOT_SUPPORTED_TRANSPORT;
}

static int pinned(te_engine *e, const te_segment *seg, const te_route_in *in, int hint,
                  te_route *out)
{
    const char *name = e->transports[hint].plugin->name;
    const char *why = te_route_refusal(in, hint);
    if (why)
        return te_fail(refusal_status(why),
                       "transport hint '%s' cannot serve this request to %s: %s", name,
                       seg->desc->name, why);
    out->order[0] = (int8_t)hint;
    out->count = 1;
    return 0;
}

int te_route_for(te_engine *e, const te_segment *seg, const te_region *pin, const void *local,
                 bool remote_device, int hint, te_route *out)
{
    te_route_in in;
    out->count = 0;
    if (hint == TE_HINT_NOT_LOADED)
        return te_fail(TE_ERR_NOT_SUPPORTED_TRANSPORT,
                       "the hinted transport is not loaded in this engine");
    route_input(e, seg, pin, local, remote_device, &in);
    if (hint >= 0)
        return pinned(e, seg, &in, hint, out);
    te_route_order(&in, out);
    if (out->count)
        return 0;
    /* Why the transports that reached the peer refused (the first says it). */
    const char *why = "no transport reached the peer";
    for (int t = 0; t < in.count; t++)
        if (in.reached[t]) {
            why = te_route_refusal(&in, t);
            break;
        }
    return te_fail(refusal_status(why),
                   "no transport of this engine can carry a %s-to-%s request to %s: %s",
                   in.local_device ? "device" : "host", remote_device ? "device" : "host",
                   seg->desc->name, why);
}

/* ---- hints ------------------------------------------------------------------ */

static const char *const known_transports[] = {"tcp", "rdma", "shm", "nvlink"};

int te_route_hint(te_engine *e, const char *name, int *hint)
{
    *hint = TE_HINT_AUTO;
    if (!name || !*name)
        return 0;
    for (int t = 0; t < e->transport_count; t++)
        if (!strcmp(e->transports[t].plugin->name, name)) {
            *hint = t;
            return 0;
        }
    for (size_t i = 0; i < sizeof known_transports / sizeof *known_transports; i++)
        if (!strcmp(known_transports[i], name)) {
            *hint = TE_HINT_NOT_LOADED;
            return 0;
        }
    return te_fail(TE_ERR_INVALID_ARGUMENT,
                   "unknown transport hint '%s' (known: tcp, rdma, shm, nvlink, or a loaded "
                   "plugin's name)",
                   name);
}
