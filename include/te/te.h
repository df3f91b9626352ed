/*
 * te.h - the C API of the transfer engine.
 *
 * A transfer engine moves bytes between memory registered by processes on one
 * or many hosts.  It speaks the wire and metadata formats of the Mooncake
 * transfer engine, loads its transports and metadata stores as plugins, and
 * never aborts the process on bad input or a failing peer: every call returns
 * a status (0 or a negative TE_ERR_* value) and leaves a human readable
 * detail in te_last_error().
 *
 * All functions are thread-safe unless stated otherwise.  Strings returned to
 * the caller through a char ** are allocated with malloc(); release them with
 * te_free().
 */
#ifndef TE_TE_H
#define TE_TE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TE_API __attribute__((visibility("default")))
#else
#define TE_API
#endif

#define TE_VERSION_MAJOR 0
#define TE_VERSION_MINOR 1
#define TE_VERSION_PATCH 0

/* Status codes.  Negative values match the Mooncake ERR_* numbers where the
 * original defines one, so return codes seen from Python are the same. */
enum te_status {
    TE_OK = 0,
    TE_ERR_INVALID_ARGUMENT = -1,
    TE_ERR_TOO_MANY_REQUESTS = -2,
    TE_ERR_ADDRESS_NOT_REGISTERED = -3,
    TE_ERR_BATCH_BUSY = -4,
    TE_ERR_DEVICE_NOT_FOUND = -6,
    TE_ERR_ADDRESS_OVERLAPPED = -7,
    TE_ERR_NOT_SUPPORTED_TRANSPORT = -8,
    /* Codes the original does not have (-10..-99 are ours). */
    TE_ERR_TIMEOUT = -10,        /* a deadline passed */
    TE_ERR_PLUGIN = -11,         /* a plugin could not be found or loaded */
    TE_ERR_STATE = -12,          /* call not valid in this state (e.g. not initialized) */
    TE_ERR_NOT_FOUND = -13,      /* unknown segment, batch id, key */
    TE_ERR_REMOTE = -14,         /* the peer rejected the request */
    TE_ERR_PEER_CLOSED = -15,    /* the peer closed or reset the connection */
    TE_ERR_MALFORMED_FRAME = -16, /* a peer's binary frame failed validation */
    TE_ERR_DNS = -101,
    TE_ERR_SOCKET = -102,
    TE_ERR_MALFORMED_JSON = -103,
    TE_ERR_REJECT_HANDSHAKE = -104,
    TE_ERR_METADATA = -200,
    TE_ERR_ENDPOINT = -201,
    TE_ERR_CONTEXT = -202,
    TE_ERR_NUMA = -300,
    TE_ERR_CLOCK = -301,
    TE_ERR_MEMORY = -302,
    TE_ERR_NOT_IMPLEMENTED = -999 /* the operation is not supported here */
};

/* Opcodes, same values as the original (READ=0, WRITE=1). */
enum te_opcode { TE_OP_READ = 0, TE_OP_WRITE = 1 };

/* Per-task and per-batch state, same values as the original. */
enum te_transfer_status {
    TE_TRANSFER_WAITING = 0,
    TE_TRANSFER_PENDING = 1,
    TE_TRANSFER_INVALID = 2,
    TE_TRANSFER_CANCELED = 3,
    TE_TRANSFER_COMPLETED = 4,
    TE_TRANSFER_TIMEOUT = 5,
    TE_TRANSFER_FAILED = 6
};

typedef struct te_engine te_engine;
typedef int64_t te_segment_id; /* >= 0; 0 is always the engine's own segment */
typedef uint64_t te_batch_id;  /* never 0 */

/* One transfer: move `length` bytes between local memory and the absolute
 * virtual address `remote` inside a buffer registered by segment `target`. */
typedef struct te_request {
    int opcode; /* enum te_opcode */
    void *local;
    te_segment_id target;
    uint64_t remote;
    uint64_t length;
} te_request;

typedef struct te_buffer_entry {
    void *addr;
    size_t length;
} te_buffer_entry;

typedef struct te_notify {
    char *name;
    char *msg;
} te_notify;

/* ---- lifetime ------------------------------------------------------------ */

/* A new engine, not yet initialized.  NULL only when out of memory. */
TE_API te_engine *te_engine_create(void);

/* Stops the engine: revokes what it published, closes its ports, waits for
 * in-flight transfers to finish or fail, unloads nothing (plugins stay
 * mapped).  Outstanding batch ids become invalid.  NULL is ignored. */
TE_API void te_engine_destroy(te_engine *engine);

/*
 * Initializes the engine once.
 *  local_hostname   "host[:port]"; in P2P mode the port is ignored and the
 *                   segment name becomes "host:<rpc port>".
 *  metadata_server  "P2PHANDSHAKE", "etcd://h1:p1,h2:p2", "http://url",
 *                   or a bare "host:port" (meaning metadata_type://host:port).
 *  protocol         transport plugin name ("tcp", "rdma", ...), started first
 *                   with shm, nvlink (in a CUDA process) and tcp beside it;
 *                   or a list ("rdma,tcp") of exactly the transports to run.
 *                   MC_TE_TRANSPORTS overrides the set; "rdma" with no usable
 *                   RDMA device falls back to "tcp" with a warning;
 *                   MC_FORCE_TCP forces "tcp" (and shm).  docs/transports.md.
 *  device_name      comma separated NIC filter, "" or NULL for all.
 *  metadata_type    NULL: parse metadata_server like the original's
 *                   initialize(); otherwise the store's name ("etcd", "http",
 *                   "p2p", ...) as in initialize_ext().
 * Returns 0, or a negative status (TE_ERR_STATE if already initialized,
 * TE_ERR_PLUGIN if a plugin cannot be loaded, ...).
 */
TE_API int te_engine_initialize(te_engine *engine, const char *local_hostname,
                                const char *metadata_server, const char *protocol,
                                const char *device_name, const char *metadata_type);

/* The RPC (handshake/notify/metadata) port, or a negative status. */
TE_API int te_engine_rpc_port(const te_engine *engine);

/* The engine's segment name as peers must address it; NULL before init. */
TE_API const char *te_engine_segment_name(const te_engine *engine);

/* The engine's preferred transport ("tcp", "rdma", ...), which its descriptor
 * names as `protocol`: the first of the protocol list that started.  The
 * engine runs others too (docs/transports.md).  NULL before init. */
TE_API const char *te_engine_protocol(const te_engine *engine);

/* ---- memory -------------------------------------------------------------- */

/* Registers [addr, addr+length) for remote access and publishes the updated
 * segment descriptor.  location: "cpu:N", "cuda:N" or "*" / NULL (detect).
 * TE_ERR_INVALID_ARGUMENT for NULL or zero length, TE_ERR_ADDRESS_OVERLAPPED
 * if it overlaps a registered range. */
TE_API int te_register_memory(te_engine *engine, void *addr, size_t length,
                              const char *location);

/* Unregisters the range that starts at addr, after transfers that use it as
 * a target have finished.  TE_ERR_ADDRESS_NOT_REGISTERED if none starts there. */
TE_API int te_unregister_memory(te_engine *engine, void *addr);

/* Batch forms: all or nothing, one metadata publish. */
TE_API int te_register_memory_batch(te_engine *engine, const te_buffer_entry *entries,
                                    size_t count, const char *location);
TE_API int te_unregister_memory_batch(te_engine *engine, void *const *addrs, size_t count);

/* GPU memory that nvlink peers can map (an addition beyond the original API,
 * for allocate_managed_buffer with protocol "nvlink"): cudaMalloc on the
 * calling thread's current device, the CUDA runtime loaded on demand, never
 * linked.  Works without an engine.  TE_ERR_DEVICE_NOT_FOUND without a CUDA
 * runtime or device, TE_ERR_MEMORY when the device is full.  Release with
 * te_free_device(); NULL is ignored. */
TE_API int te_alloc_device(size_t size, void **ptr);
TE_API int te_free_device(void *ptr);

/* A function of the CUDA runtime the engine uses (the one the whole process
 * shares: MC_CUDART_LIBRARY, else one already loaded, else the first of
 * libcudart.so.13, .12, .11.0, .so), for programs that embed the engine and
 * call CUDA through it without linking CUDA (the Python module's *_on_cuda
 * methods).  Stores the address at fn_ptr (a pointer to a function
 * pointer).  TE_ERR_DEVICE_NOT_FOUND, and the reason in `why` (may be
 * NULL), when no runtime loads or it lacks the function. */
TE_API int te_cuda_runtime_symbol(const char *name, void *fn_ptr, char *why, size_t why_len);

/* ---- segments ------------------------------------------------------------ */

/* Resolves a segment by name (fetching its descriptor) and returns its id.
 * A leading '/' is ignored.  The engine's own name gives id 0. */
TE_API int te_segment_open(te_engine *engine, const char *name, te_segment_id *id);

/* Forgets a cached segment; its id stays valid and is re-resolved on use. */
TE_API int te_segment_close(te_engine *engine, te_segment_id id);

/* Buffer `index` of the segment's descriptor (registration order).
 * TE_ERR_NOT_FOUND when index is past the last buffer. */
TE_API int te_segment_buffer(te_engine *engine, te_segment_id id, size_t index,
                             uint64_t *addr, uint64_t *length);

/* The name of the transport that carries host-memory requests to the
 * segment ("tcp", "shm", "rdma", ...) when its paths are healthy: a
 * same-host transport where both sides have one, else the engine's protocol
 * where the peer has it, else tcp.  The core still chooses per request
 * (device memory, failover, hints: docs/transports.md).  The string lives as
 * long as the engine.  Resolves the segment if needed. */
TE_API int te_segment_transport(te_engine *engine, te_segment_id id, const char **name);

/* ---- transfers ----------------------------------------------------------- */

/* A batch holds up to `capacity` requests (tasks), submitted in one or more
 * calls.  Ids are checked: a freed or unknown id gives TE_ERR_NOT_FOUND,
 * never a crash. */
TE_API int te_batch_allocate(te_engine *engine, size_t capacity, te_batch_id *id);

/* Frees a batch id.  Safe at any time: if transfers are still in flight the
 * memory is released when they end; the id is invalid at once. */
TE_API int te_batch_free(te_engine *engine, te_batch_id id);

/* Submits requests to a batch.  Each request becomes a task numbered in
 * submission order.  The batch deadline is now + MC_TRANSFER_TIMEOUT plus
 * one nanosecond per byte.  TE_ERR_TOO_MANY_REQUESTS past capacity. */
TE_API int te_submit(te_engine *engine, te_batch_id id, const te_request *requests,
                     size_t count);

/* Like te_submit; when every task of the batch has completed, the engine
 * sends {name, msg} to the target of requests[0] and only then reports the
 * batch COMPLETED.  No notification is sent if any task fails. */
TE_API int te_submit_with_notify(te_engine *engine, te_batch_id id,
                                 const te_request *requests, size_t count,
                                 const char *name, const char *msg);

/* State of one task: *status is an enum te_transfer_status. */
TE_API int te_task_status(te_engine *engine, te_batch_id id, size_t task, int *status,
                          uint64_t *transferred);

/* State of the whole batch: COMPLETED when all tasks completed, FAILED as
 * soon as one failed, TIMEOUT once the deadline passed, else WAITING. */
TE_API int te_batch_status(te_engine *engine, te_batch_id id, int *status,
                           uint64_t *transferred);

/* Sleeps (never spins) until the batch is no longer WAITING or timeout_ms
 * passes (timeout_ms < 0: until the batch deadline).  *status as above;
 * returns 0 once the batch has settled, TE_ERR_TIMEOUT otherwise. */
TE_API int te_batch_wait(te_engine *engine, te_batch_id id, int64_t timeout_ms,
                         int *status);

/* Convenience: allocate, submit (with a notification if name is not NULL),
 * wait until the deadline, free.  0 when every request completed. */
TE_API int te_transfer_sync(te_engine *engine, const te_request *requests, size_t count,
                            const char *notify_name, const char *notify_msg);

/* ---- transport hints (an addition beyond the original API) ---------------- */

/*
 * The core chooses a transport per request (docs/transports.md): shm for
 * host memory on a same-host peer, nvlink for device memory on one host,
 * else the protocol's transport (rdma where both sides have it), tcp last;
 * a slice that fails for a transport reason moves to the next one.  A hint
 * pins one transport instead, and such requests never fail over.
 *
 * te_transport_hint_check: 0 when `transport` is "" / NULL (no hint), a
 * transport this engine loaded, or a known name (tcp, rdma, shm, nvlink);
 * TE_ERR_INVALID_ARGUMENT for anything else.
 *
 * te_batch_set_transport_hint: requests submitted to the batch from now on
 * use `transport` only ("" or NULL: the core chooses again).  A known
 * transport that cannot serve a request (not loaded, declined the peer,
 * cannot move that memory) fails the request; te_transfer_sync_hint then
 * says why in te_last_error().  TE_ERR_INVALID_ARGUMENT for an unknown name.
 *
 * te_transfer_sync_hint: te_transfer_sync with a hint.
 */
TE_API int te_transport_hint_check(te_engine *engine, const char *transport);
TE_API int te_batch_set_transport_hint(te_engine *engine, te_batch_id id, const char *transport);
TE_API int te_transfer_sync_hint(te_engine *engine, const te_request *requests, size_t count,
                                 const char *notify_name, const char *notify_msg,
                                 const char *transport);

/* ---- notifications and probes --------------------------------------------- */

/* Moves out every notification received so far (oldest first).  *out may be
 * NULL when *count is 0.  Release with te_notifies_free(). */
TE_API int te_notifies_drain(te_engine *engine, te_notify **out, size_t *count);
TE_API void te_notifies_free(te_notify *notifies, size_t count);

/* Sends a notification to a segment without a transfer. */
TE_API int te_send_notify(te_engine *engine, te_segment_id target, const char *name,
                          const char *msg);

/* Checks that a peer's RPC port answers.  0 if it does; TE_ERR_SOCKET (-102)
 * when it cannot be connected to or drops the exchange (as the original);
 * TE_ERR_METADATA (-200) when the peer's address cannot be resolved. */
TE_API int te_probe(te_engine *engine, const char *peer_name);

/* ---- metrics (an addition beyond the original API) ------------------------- */

/*
 * The engine's counters as JSON text (documented in docs/metrics.md):
 * {"transports": {"tcp": {"read_bytes", "write_bytes", "reads", "writes"}},
 *  "segments": {"<name>": {same members}}, "failures": {"<status name>": n},
 *  "retries", "failovers": {"<from>": {"<to>": n}}, "inflight_requests",
 *  "registered_bytes", "completed_requests",
 *  "latency_us": {"buckets": [[upper_bound_us, count], ...], "sum_us", "count"}}
 * Counters only grow (except the two gauges) from te_engine_initialize on.
 */
TE_API int te_get_metrics(te_engine *engine, char **json);

/* ---- topology ------------------------------------------------------------ */

/* The local NIC priority matrix as JSON text, in the original's format,
 * filtered by a comma separated device list (NULL or "" for all).  Works
 * without an engine. */
TE_API int te_get_local_topology(const char *device_filter, char **json);

/* ---- configuration (an addition beyond the original API) ------------------ */

/*
 * Every setting the engine, its bundled plugins, the Python module and
 * te-bench read is declared once (docs/configuration.md lists them; so does
 * `te-bench --help-env`).  Values come from the environment, read on every
 * call.  A value of the wrong type or out of range is logged once (per
 * variable and value) and read as the default.  Booleans take 1/0,
 * true/false, yes/no, on/off, y/n (any case).
 */
enum te_config_type { TE_CONFIG_BOOL = 0, TE_CONFIG_INT = 1, TE_CONFIG_STRING = 2 };

typedef struct te_config_var {
    const char *name;           /* e.g. "MC_TCP_SLICE_SIZE" */
    int type;                   /* enum te_config_type */
    int64_t default_int;        /* TE_CONFIG_INT and TE_CONFIG_BOOL (0 or 1) */
    const char *default_string; /* TE_CONFIG_STRING: NULL when unset means "none" */
    int64_t min, max;           /* TE_CONFIG_INT: the accepted range, inclusive */
    const char *aliases;        /* other names read when `name` is unset, comma separated,
                                   in order; NULL if none */
    const char *owner;          /* who reads it: "core", "tcp", "rdma", "tcp,nvlink", ... */
    const char *help;           /* one line */
} te_config_var;

/* The index-th declaration (0, 1, ... in a stable order), NULL past the end. */
TE_API const te_config_var *te_config_describe(size_t index);

/* The value of a declared variable (its default when unset or bad).  0, or
 * TE_ERR_INVALID_ARGUMENT (logged, *out untouched) when `name` is not
 * declared or is declared with another type.  te_config_string's *out is
 * the environment's text or the default (NULL: none), valid until the
 * variable is next changed. */
TE_API int te_config_int(const char *name, int64_t *out);
TE_API int te_config_bool(const char *name, int *out);
TE_API int te_config_string(const char *name, const char **out);

/* ---- errors and memory ---------------------------------------------------- */

/* A static description of a status code. */
TE_API const char *te_strerror(int status);

/* Detail of the last error raised in the calling thread ("" if none). */
TE_API const char *te_last_error(void);

/* Releases memory returned by the engine through a char ** or similar. */
TE_API void te_free(void *ptr);

#ifdef __cplusplus
}
#endif
#endif /* TE_TE_H */
