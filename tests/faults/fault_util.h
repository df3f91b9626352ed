/* fault_util.h - helpers for the fault injection tests: a time scale for
 * slow builds (TE_TEST_TIME_SCALE, e.g. 5 under TSan), clocks, and fake
 * peers on 127.0.0.1 whose RPC and data ports misbehave on purpose. */
#ifndef TE_FAULT_UTIL_H
#define TE_FAULT_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Under TSan every byte a peer process moves between its threads without a
 * happens-before TSan can see (the ordering crosses a socket to another
 * process) costs a suppressed race report, and those slow down with their
 * number: tests keep cross-process payloads small there. */
#if defined(__SANITIZE_THREAD__)
#define FAULT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FAULT_TSAN 1
#endif
#endif
#ifndef FAULT_TSAN
#define FAULT_TSAN 0
#endif

/* TE_TEST_TIME_SCALE (>= 1, default 1): multiplies every deadline and bound. */
double fault_scale(void);
/* Seconds scaled: fault_secs(2) is "2" at scale 1, "10" at scale 5. */
int fault_secs(double s);
/* setenv(name, "<fault_secs(s)>") */
void fault_setenv_secs(const char *name, double s);
double fault_now(void);

/* What the fake peer's RPC port does with a connection. */
enum fake_rpc_mode {
    FAKE_RPC_SERVE,  /* answers Metadata with a descriptor naming its data port */
    FAKE_RPC_SILENT, /* accepts, reads nothing, answers nothing, holds on */
    FAKE_RPC_SHORT   /* answers with a header claiming 1000 bytes, sends 10, closes */
};

/* What the fake peer's data port does. */
enum fake_data_mode {
    FAKE_DATA_SILENT,        /* reads every request, never answers */
    FAKE_DATA_NO_READ,       /* accepts and never reads: the sender's buffers fill */
    FAKE_DATA_RESET_PAYLOAD, /* reads half of a write's payload, then resets (SO_LINGER 0) */
    FAKE_DATA_SHORT_READ,    /* answers a READ with OK and half of the data, then closes */
    FAKE_DATA_SHORT_STATUS   /* answers with 4 bytes of an 8-byte status, then closes */
};

#define FAKE_MAX_CONNS 64

typedef struct fake_peer {
    int rpc_mode, data_mode;
    char name[64];          /* "127.0.0.1:<rpc port>", the P2P segment name */
    uint64_t buf_addr, buf_len; /* the buffer its descriptor advertises */
    uint16_t rpc_port, data_port;
    atomic_int data_conns, rpc_conns, bytes_in;
    /* internals */
    int rpc_fd, data_fd, wake[2];
    atomic_bool stop;
    pthread_t rpc_thread, data_thread;
    pthread_mutex_t lock;
    int nconns;
    int conn_fd[FAKE_MAX_CONNS];
    pthread_t conn_thread[FAKE_MAX_CONNS];
} fake_peer;

/* Listens on two free 127.0.0.1 ports and serves them.  0 or -1. */
int fake_peer_start(fake_peer *f, int rpc_mode, int data_mode);
/* Cuts every connection and joins every thread. */
void fake_peer_stop(fake_peer *f);

#endif
