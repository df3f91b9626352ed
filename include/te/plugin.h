/*
 * plugin.h - the ABI between the engine core (libte.so) and its plugins.
 *
 * A plugin is a shared object that exports one symbol, te_plugin_init, which
 * returns a constant descriptor: its kind (transport or metadata store), its
 * name, the ABI version it was built for and a table of operations.  Plugins
 * never link libte.so: everything they need from the core comes through the
 * te_host_api table handed to te_plugin_init.
 *
 * Versioning (see docs/plugin-abi.md):
 *  - abi_major must equal the core's TE_PLUGIN_ABI_MAJOR, or the plugin is
 *    refused with a message naming the file and both versions.
 *  - Every struct here starts with a `size` field and only ever grows at the
 *    end (a minor bump).  The core reads a member only when the plugin's size
 *    covers it, and never calls an operation newer than the plugin.
 *  - A NULL operation means "not supported": the core substitutes a stub that
 *    returns TE_ERR_NOT_IMPLEMENTED, so no caller tests for NULL.
 *
 * Conventions: operations return 0 or a negative te_status.  Strings a
 * plugin returns through a char ** are malloc()'d; the core free()s them.
 * The first argument of every operation is the plugin's per-engine instance.
 */
#ifndef TE_PLUGIN_H
#define TE_PLUGIN_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "te.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TE_PLUGIN_ABI_MAJOR 1
#define TE_PLUGIN_ABI_MINOR 3

/* The one symbol a plugin exports, and its type. */
#define TE_PLUGIN_INIT_SYMBOL "te_plugin_init"

enum te_plugin_kind { TE_PLUGIN_TRANSPORT = 1, TE_PLUGIN_METADATA = 2 };

enum te_log_level {
    TE_LOG_TRACE = 0,
    TE_LOG_DEBUG = 1,
    TE_LOG_INFO = 2,
    TE_LOG_WARN = 3,
    TE_LOG_ERROR = 4
};

/* RPC frame types on the engine's RPC port (Mooncake's handshake types). */
enum te_rpc_type {
    TE_RPC_CONNECTION = 0, /* transport handshakes (RDMA QP exchange) */
    TE_RPC_METADATA = 1,   /* P2P: a peer asks for our segment descriptor */
    TE_RPC_NOTIFY = 2,
    TE_RPC_PROBE = 3
};

/* What a metadata key names (see te_host_api.parse_meta_key). */
enum te_meta_key_kind { TE_META_KEY_OTHER = 0, TE_META_KEY_SEGMENT = 1, TE_META_KEY_RPC = 2 };

/* Opaque per-engine core context; every host call takes it. */
typedef struct te_host te_host;

/*
 * One piece of a request, owned by the core.  A transport receives slices
 * through submit(), may keep them until it reports each exactly once with
 * host->slice_done(), and must do so no later than shortly after
 * deadline_ns.  Only the members below are the plugin's to read (and
 * `transport_data` to use as scratch); the core keeps its own state after them.
 */
typedef struct te_slice {
    uint32_t opcode;          /* TE_OP_READ or TE_OP_WRITE */
    uint32_t retry;           /* how many times the core resubmitted it */
    void *local;              /* local address */
    uint64_t remote;          /* absolute address in the peer's memory */
    uint64_t length;          /* > 0 */
    void *peer;               /* the handle peer_open() returned */
    void *local_mr;           /* register_memory() handle of the local range, or NULL */
    int32_t remote_buffer;    /* index in the peer's descriptor buffers[], -1 if unknown */
    uint32_t reserved;
    int64_t deadline_ns;      /* CLOCK_MONOTONIC nanoseconds; fail the slice after it */
    void *transport_data[4];  /* scratch for the transport while it holds the slice */
} te_slice;

/* Handler for an RPC frame type.  It gets the request payload and returns a
 * malloc()'d reply payload (the core sends it with the same type).  A
 * negative return closes the connection without a reply. */
typedef int (*te_rpc_handler)(void *arg, const char *req, size_t req_len, char **reply,
                              size_t *reply_len);

/* Core services, one table for the process; per-engine state is te_host. */
typedef struct te_host_api {
    uint32_t size;
    uint16_t abi_major;
    uint16_t abi_minor;

    void (*log)(te_host *host, int level, const char *plugin, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 4, 5)))
#endif
        ;
    /* Sets the calling thread's te_last_error() detail. */
    void (*set_error)(const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 1, 2)))
#endif
        ;
    /* A configuration value (MC_* environment variable), NULL if unset. */
    const char *(*config)(te_host *host, const char *name);
    /* Reports a slice finished: status 0 or a negative te_status. */
    void (*slice_done)(te_host *host, te_slice *slice, int status);
    /* Installs the handler of an RPC frame type on this engine's port. */
    int (*rpc_set_handler)(te_host *host, int type, te_rpc_handler fn, void *arg);
    /* One request/reply exchange with a peer's RPC port. */
    int (*rpc_call)(te_host *host, const char *peer_host, uint16_t port, int type,
                    const char *req, size_t req_len, char **reply, size_t *reply_len,
                    int timeout_ms);
    /* Queues a notification for te_notifies_drain(). */
    void (*notify_deliver)(te_host *host, const char *name, const char *msg);
    /* Target side: pins the registered buffer that wholly contains
     * [addr, addr+len) so it cannot be unregistered until unpin_range().
     * TE_ERR_ADDRESS_NOT_REGISTERED if no single buffer contains it. */
    int (*pin_range)(te_host *host, uint64_t addr, uint64_t len, void **pin);
    void (*unpin_range)(te_host *host, void *pin);
    /* This engine's segment name and its descriptor as JSON text. */
    const char *(*segment_name)(te_host *host);
    int (*local_descriptor)(te_host *host, char **json);
    /* Splits "host:port", "[v6]:port" or "host" (then *port = default_port).
     * host_out gets the host without brackets. */
    int (*parse_host_port)(const char *s, char *host_out, size_t host_len, uint16_t *port,
                           uint16_t default_port);
    /* Classifies a metadata key; *name points into key. */
    int (*parse_meta_key)(te_host *host, const char *key, const char **name);
    /* CLOCK_MONOTONIC in nanoseconds. */
    int64_t (*now_ns)(void);
    /* The address peers should use to reach this host (MC_TCP_BIND_ADDRESS,
     * the P2P host, or the first non-loopback interface). */
    const char *(*advertised_host)(te_host *host);
    /* The NIC priority matrix for this engine (device filter of initialize,
     * MC_TE_FILTERS and MC_CUSTOM_TOPO_JSON applied), JSON text in the
     * original's format: {"cpu:0": [["nic", ...], ["nic", ...]], ...}. */
    int (*topology)(te_host *host, char **json);
    /* The NICs to use for memory at `location` ("cpu:N", "cuda:N", "*"), in
     * order of preference (preferred ones first, then available ones), as a
     * JSON array of names.  An unknown location is treated as "*". */
    int (*topology_nics)(te_host *host, const char *location, char **json_array);
    /* Where memory lives: "cpu:N", "cuda:N", or "*" when unknown. */
    int (*memory_location)(const void *addr, size_t len, char *out, size_t out_len);
    /* Adds to one of the engine's counters (enum te_host_metric), e.g. a
     * transport reporting that it retried a slice on another path. */
    void (*metric_add)(te_host *host, int metric, uint64_t value);
    /* Peer authentication (MC_AUTH_TOKEN) of a freshly accepted or
     * connected socket, before any frame: 0 to go on (always 0 when no
     * token is configured), otherwise close the socket. */
    int (*auth_accept)(te_host *host, int fd, int64_t deadline_ns);
    int (*auth_connect)(te_host *host, int fd, int64_t deadline_ns);
    /* Per-peer connection cap of a listening port (MC_TE_MAX_CONNECTIONS_PER_PEER). */
    int (*max_connections_per_peer)(te_host *host);

    /* ---- ABI 1.1: check TE_HOST_HAS(host, member) before use ---- */
    /* CUDA as the whole process opens it: dlopen, never linked, with one
     * search order for the core and every plugin (MC_CUDART_LIBRARY, else a
     * runtime already in the process, else libcudart.so.13, .12, .11.0, .so),
     * so all of them end up on the same library.  cuda_runtime: a handle for
     * cuda_symbol, or NULL and the reason in `why`.  cuda_driver:
     * libcuda.so.1 if it is in the process (or, with `load`, can be loaded).
     * cuda_symbol: stores the function's address at fn_ptr (a pointer to a
     * function pointer); 0 when missing, and `why` (may be NULL) says which. */
    void *(*cuda_runtime)(char *why, size_t why_len);
    void *(*cuda_driver)(int load, char *why, size_t why_len);
    int (*cuda_symbol)(void *lib, const char *name, void *fn_ptr, char *why, size_t why_len);
    /* Who this host is, for same-host transports to recognise a peer: the
     * kernel's boot id, then (with_pid_namespace) this process's pid
     * namespace, then the hostname, joined by '/'.  Peers whose strings are
     * equal share a kernel (and a pid namespace).  0, or -1 when the boot id
     * cannot be read. */
    int (*host_identity)(int with_pid_namespace, char *out, size_t out_len);

    /* ---- ABI 1.2: check TE_HOST_HAS(host, member) before use ---- */
    /* The engine's one answer to "is this GPU memory, which device": the
     * ordinal of plain device memory at addr, or -1 for host memory, managed
     * memory (readable by the CPU), or while the process has not loaded the
     * CUDA driver.  Never loads CUDA itself; thread-safe; cheap enough to
     * call on every registration or slice. */
    int (*cuda_device_of)(const void *addr);

    /* ---- ABI 1.3: check TE_HOST_HAS(host, member) before use ---- */
    /* Typed configuration (docs/configuration.md lists every variable): the
     * value of a variable the engine declares, or its default when unset.  A
     * value of the wrong type or out of range is logged once and read as the
     * default, alike for the core and every plugin.  Booleans take
     * 1/0, true/false, yes/no, on/off, y/n.  TE_ERR_INVALID_ARGUMENT (and
     * *out untouched) for a name the engine does not declare; `config`
     * above still reads any name as text. */
    int (*config_int)(te_host *host, const char *name, int64_t *out);
    int (*config_bool)(te_host *host, const char *name, int *out);
    /* The progress wait of a CUDA pipeline, called with `lock` held.  With
     * an event (a cudaEvent_t of the core's runtime): unlocks, sleeps in the
     * driver until the event completes, relocks.  Without: waits on `cond`
     * for at most backoff_ns, and not past deadline_ns (0: no deadline). */
    void (*cuda_progress_wait)(void *event, pthread_mutex_t *lock, pthread_cond_t *cond,
                               int64_t backoff_ns, int64_t deadline_ns);
    /* A listening socket (close-on-exec, blocking) on a random free port of
     * [lo, hi], the wildcard address, dual-stack where IPv6 is on: the way
     * the core picks its RPC port.  The fd and *port, or a negative status
     * (TE_ERR_SOCKET when no port of the range is free). */
    int (*listen_in_range)(uint16_t lo, uint16_t hi, int backlog, uint16_t *port);
} te_host_api;

enum te_host_metric {
    TE_METRIC_RETRIES = 0,
    TE_METRIC_RAIL_PAUSES = 1, /* ABI 1.1: a path (local NIC to peer NIC) set aside */
};

/* Whether the core's host table has `member` (added in a later minor). */
#define TE_HOST_HAS(host, member) \
    ((host)->size >= offsetof(te_host_api, member) + sizeof((host)->member))

/* ---- transports ----------------------------------------------------------- */

typedef struct te_transport_params {
    uint32_t size;
    const char *segment_name;  /* how peers name this engine */
    const char *device_filter; /* comma separated NIC names, "" for all */
} te_transport_params;

/* What the core knows about a peer when it asks a transport to reach it. */
typedef struct te_peer_info {
    uint32_t size;
    const char *segment_name;
    const char *descriptor; /* the peer's segment descriptor, JSON text */
    const char *rpc_host;   /* the peer's RPC address */
    uint16_t rpc_port;
} te_peer_info;

/* Transport capability bits. */
#define TE_TRANSPORT_CAP_REMOTE (1u << 0)    /* reaches other hosts */
#define TE_TRANSPORT_CAP_NEEDS_LOCAL_MR (1u << 1) /* local memory must be registered */
#define TE_TRANSPORT_CAP_GPU (1u << 2)       /* moves device memory */

typedef struct te_transport_ops {
    uint32_t size;       /* sizeof(te_transport_ops) as the plugin was built */
    uint32_t caps;       /* TE_TRANSPORT_CAP_* */
    uint64_t slice_size; /* the core cuts requests into pieces this big; 0 = never */

    /* Creates the per-engine instance.  TE_ERR_DEVICE_NOT_FOUND when the
     * transport has no usable device here (the core may fall back). */
    int (*create)(te_host *host, const te_transport_params *params, void **inst);
    /* Fails everything in flight (slice_done) and frees the instance. */
    void (*destroy)(void *inst);
    /* Extra members of this engine's segment descriptor, as a JSON object
     * text (e.g. {"tcp_data_port":16050,"tcp_proto_version":2}). */
    int (*describe)(void *inst, char **json_object);
    /* Per-buffer registration; *mr is the transport's handle. */
    int (*register_memory)(void *inst, void *addr, size_t length, const char *location,
                           void **mr);
    int (*unregister_memory)(void *inst, void *mr);
    /* Extra members of a buffer's descriptor entry (e.g. lkey/rkey). */
    int (*describe_buffer)(void *inst, void *mr, char **json_object);
    /* Prepares to reach a peer.  TE_ERR_NOT_SUPPORTED_TRANSPORT when this
     * transport cannot reach it (the core then tries the next transport). */
    int (*peer_open)(void *inst, const te_peer_info *peer, void **handle);
    /* Called once no slice uses the handle any more. */
    void (*peer_close)(void *inst, void *handle);
    /* Takes slices; each is later reported with host->slice_done().  A
     * negative return means none of them was taken. */
    int (*submit)(void *inst, te_slice *const *slices, size_t count);
    /* Operations without a member, by enum te_transport_ctrl opcode:
     * TE_ERR_NOT_IMPLEMENTED for an opcode the plugin does not know. */
    int (*ctrl)(void *inst, int op, void *arg);
} te_transport_ops;

/* Transport ctrl opcodes. */
enum te_transport_ctrl {
    /* ABI 1.3.  arg: uint64_t *, set to this instance's slice size (0 =
     * never cut).  The core asks right after create(), so engines of one
     * process may differ; a transport that does not answer is cut at
     * ops->slice_size. */
    TE_TRANSPORT_CTRL_SLICE_SIZE = 1,
};

/* ---- metadata stores ------------------------------------------------------ */

/* The store keeps nothing: descriptors are fetched from the peers' RPC
 * ports, and segment names are "host:rpc_port" (P2PHANDSHAKE). */
#define TE_METADATA_CAP_PEER_TO_PEER (1u << 0)

typedef struct te_metadata_ops {
    uint32_t size;
    uint32_t caps; /* TE_METADATA_CAP_* */

    /* conn is what follows "scheme://" (or the whole string for bare
     * host:port); for http the full URL. */
    int (*create)(te_host *host, const char *conn, void **inst);
    void (*destroy)(void *inst); /* removes what it published */
    /* Keys are Mooncake's ("mooncake/[cluster/]ram/<name>", ".../rpc_meta/<name>").
     * get: TE_ERR_NOT_FOUND if absent, TE_ERR_METADATA if unreachable. */
    int (*get)(void *inst, const char *key, char **value);
    int (*put)(void *inst, const char *key, const char *value);
    int (*remove)(void *inst, const char *key);
    /* Reserved: no metadata opcode is defined and the core never calls it;
     * leave it NULL. */
    int (*ctrl)(void *inst, int op, void *arg);
} te_metadata_ops;

/* ---- the descriptor and the entry point ----------------------------------- */

typedef struct te_plugin_desc {
    uint32_t size;       /* sizeof(te_plugin_desc) as built */
    uint16_t abi_major;  /* TE_PLUGIN_ABI_MAJOR */
    uint16_t abi_minor;  /* TE_PLUGIN_ABI_MINOR */
    uint32_t kind;       /* enum te_plugin_kind */
    const char *name;    /* must match the name it was loaded by */
    const char *version; /* the plugin's own version string */
    const void *ops;     /* te_transport_ops or te_metadata_ops */
} te_plugin_desc;

typedef int (*te_plugin_init_fn)(const te_host_api *host, const te_plugin_desc **desc);

#if defined(__GNUC__)
#define TE_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define TE_PLUGIN_EXPORT
#endif

/* Plugins define exactly this function, normally with TE_PLUGIN_DEFINE. */
TE_PLUGIN_EXPORT int te_plugin_init(const te_host_api *host, const te_plugin_desc **desc);

/* ---- writing a plugin ----------------------------------------------------- */

#if defined(__GNUC__)
#define TE_PLUGIN_HIDDEN __attribute__((visibility("hidden")))
#else
#define TE_PLUGIN_HIDDEN
#endif

/* The core's host table inside a plugin, under one name in every plugin:
 * TE_PLUGIN_DEFINE's te_plugin_init sets it before anything else runs. */
extern TE_PLUGIN_HIDDEN const te_host_api *te_host_table;

/* What TE_PLUGIN_DEFINE's te_plugin_init does: refuses a core of another
 * major, or one whose host table ends before the newest member the plugin
 * uses (needs_size), with a log line naming that member; then keeps the
 * table and hands over the descriptor. */
static inline int te_plugin_accept_host_(const te_host_api *host, const te_plugin_desc **desc,
                                         const te_plugin_desc *mine, size_t needs_size,
                                         const char *needs_member)
{
    if (!host || !desc)
        return TE_ERR_INVALID_ARGUMENT;
    if (host->abi_major != TE_PLUGIN_ABI_MAJOR)
        return TE_ERR_PLUGIN;
    if (host->size < needs_size) {
        host->log(NULL, TE_LOG_ERROR, mine->name,
                  "needs an engine core with the host service %s (plugin ABI %u.%u); this core "
                  "is %u.%u", needs_member, (unsigned)mine->abi_major, (unsigned)mine->abi_minor,
                  (unsigned)host->abi_major, (unsigned)host->abi_minor);
        host->set_error("plugin %s needs host service %s, core ABI is %u.%u", mine->name,
                        needs_member, (unsigned)host->abi_major, (unsigned)host->abi_minor);
        return TE_ERR_PLUGIN;
    }
    te_host_table = host;
    *desc = mine;
    return 0;
}

/* Defines a plugin's descriptor, te_host_table and te_plugin_init, e.g.
 *   TE_PLUGIN_DEFINE(TE_PLUGIN_TRANSPORT, "tcp", "1.0", &tcp_ops, config_int)
 * kind: enum te_plugin_kind; ops: a const te_transport_ops or
 * te_metadata_ops; needs: the newest te_host_api member the plugin calls
 * (the core must have it).  Use it once, in one file of the plugin. */
#define TE_PLUGIN_DEFINE(kind, name, version, ops, needs)                                     \
    TE_PLUGIN_HIDDEN const te_host_api *te_host_table;                                        \
    static const te_plugin_desc te_plugin_descriptor_ = {                                      \
        sizeof(te_plugin_desc), TE_PLUGIN_ABI_MAJOR, TE_PLUGIN_ABI_MINOR, (kind), (name),       \
        (version), (ops)};                                                                     \
    TE_PLUGIN_EXPORT int te_plugin_init(const te_host_api *host, const te_plugin_desc **desc) \
    {                                                                                          \
        return te_plugin_accept_host_(host, desc, &te_plugin_descriptor_,                      \
                                      offsetof(te_host_api, needs) + sizeof(void *), #needs);  \
    }

#ifdef __cplusplus
}
#endif
#endif /* TE_PLUGIN_H */
