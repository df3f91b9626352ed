/* route.h - which transports may carry one request, best first: the choice
 * the core makes per request from where the local and remote memory live,
 * which transports reached the peer, each path's health and the caller's
 * transport hint (docs/transports.md). */
#ifndef TE_CORE_ROUTE_H
#define TE_CORE_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "memreg.h"

/* No hint: the core chooses.  A known transport name that this engine has
 * not loaded pins to nothing: requests then fail, saying why. */
#define TE_HINT_AUTO (-1)
#define TE_HINT_NOT_LOADED (-2)

typedef struct te_route {
    int8_t order[TE_MAX_TRANSPORTS]; /* transport indexes, best first */
    int count;
} te_route;

/* What the choice depends on, for one request (pure input, unit tested). */
typedef struct te_route_in {
    int count;                          /* loaded transports */
    uint32_t caps[TE_MAX_TRANSPORTS];   /* TE_TRANSPORT_CAP_* of each */
    bool reached[TE_MAX_TRANSPORTS];    /* peer_open succeeded */
    bool usable[TE_MAX_TRANSPORTS];     /* not set aside (cool-down) */
    bool local_registered;              /* the local range is registered */
    bool local_device, remote_device;   /* GPU memory on either side */
} te_route_in;

/* Why transport t cannot carry the request, or NULL when it can. */
const char *te_route_refusal(const te_route_in *in, int t);
/* Every transport that can carry the request: same-host transports before
 * remote ones (shm for host memory, a GPU-capable one when the target is
 * device memory), load order within each; paths set aside go last. */
void te_route_order(const te_route_in *in, te_route *out);

struct te_engine;
struct te_segment;

/* Whether local memory is on a device: the registered region's location,
 * else (only once CUDA is in the process) the driver's answer. */
bool te_route_local_device(const te_region *pin, const void *addr);

/* The candidates for one request toward seg (hint: TE_HINT_AUTO or a
 * transport index).  0, or TE_ERR_NOT_SUPPORTED_TRANSPORT with a message
 * when no transport can carry it. */
int te_route_for(struct te_engine *e, const struct te_segment *seg, const te_region *pin,
                 const void *local, bool remote_device, int hint, te_route *out);

/* A transport hint by name: "" or NULL = TE_HINT_AUTO; a loaded transport's
 * index; TE_HINT_NOT_LOADED for a known name (tcp, rdma, shm, nvlink) that
 * is not loaded.  TE_ERR_INVALID_ARGUMENT for an unknown name. */
int te_route_hint(struct te_engine *e, const char *name, int *hint);

#endif
