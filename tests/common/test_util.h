/* test_util.h - helpers for multi-process tests: a peer engine in another
 * process (te-test-peer) driven over a pipe, data patterns, a Check suite
 * runner, and Check-asserting steps that drive the peer from an engine in the
 * test process. */
#ifndef TE_TEST_UTIL_H
#define TE_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "te/te.h"

typedef struct te_test_peer {
    pid_t pid;
    int to_child;
    int from_child;
    char segment[512];
    uint64_t addr;
    uint64_t size;
    int rpc_port;
    int reply_ms; /* how long a reply may take */
} te_test_peer;

/* Starts build/tests/te-test-peer with the given arguments (NULL-terminated
 * list after argv0) and waits (up to 20 s) for its READY line. 0 on success. */
int te_test_peer_start(te_test_peer *p, const char *const *args);
/* The same for any such helper, bin_name in $TE_TEST_BIN_DIR: its line
 * "READY <segment> <addr hex> <size> [<rpc_port>]" must give `fields` (3 or
 * 4) values within reply_ms, the wait for every reply after it too. */
int te_test_child_start(te_test_peer *p, const char *bin_name, const char *const *args,
                        int reply_ms, int fields);
/* Sends one command line and reads one reply line (timeout 30 s for
 * te-test-peer). */
int te_test_peer_cmd(te_test_peer *p, const char *cmd, char *reply, size_t reply_len);
/* Reads one more reply line (for multi-line answers). */
int te_test_peer_read(te_test_peer *p, char *reply, size_t reply_len);
/* Asks the peer to quit and reaps it (SIGKILL after 10 s); returns its exit status. */
int te_test_peer_stop(te_test_peer *p);
void te_test_peer_kill(te_test_peer *p, int sig);

/* Deterministic pattern: byte i of a fill with seed s. */
void te_test_fill(void *buf, size_t len, uint64_t seed, uint64_t offset);
/* Index of the first byte that differs from the pattern, or -1. */
long long te_test_check(const void *buf, size_t len, uint64_t seed, uint64_t offset);

/* CLOCK_MONOTONIC in seconds. */
double te_test_now_s(void);

/* Path of a built test helper: $TE_TEST_BIN_DIR/name. */
const char *te_test_bin(const char *name, char *out, size_t out_len);

struct Suite;
/* Runs every test of a Check suite (CK_NORMAL output): EXIT_SUCCESS when all
 * passed, else EXIT_FAILURE.  For `return te_test_run(s);` in main(). */
int te_test_run(struct Suite *s);

/* The steps below check with Check's ck_assert_*: on any failure they end the
 * running (forked) test, with a message naming the failing command or value. */

/* Creates an engine (127.0.0.1, P2PHANDSHAKE, tcp) in *eng, registers a
 * zeroed 4096-aligned buffer of `size` bytes in *local (the caller frees it)
 * and opens peer p's segment in *seg. */
void te_test_engine_to_peer(const te_test_peer *p, size_t size, te_engine **eng, uint8_t **local,
                            te_segment_id *seg);
/* Registers a zeroed 4096-aligned buffer of `size` bytes with engine e in
 * *local (the caller frees it) and opens peer p's segment in *seg. */
void te_test_local_to_peer(te_engine *e, const te_test_peer *p, size_t size, uint8_t **local,
                           te_segment_id *seg);
/* A teardown: stops the peer if it still runs, destroys e, frees local. */
void te_test_peer_teardown(te_test_peer *p, te_engine *e, void *local);
/* Sends cmd to the peer and checks that it answers `want`. */
void te_test_peer_expect(te_test_peer *p, const char *cmd, const char *want);
/* The same with a printf-style command. */
void te_test_peer_expectf(te_test_peer *p, const char *want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes 1 MiB of pattern 77 from local to the start of peer p's buffer with
 * the notification "kv_done"/"layer-7": the peer then holds exactly that
 * notification, and the data was there when it arrived. */
void te_test_notify_after_data(te_engine *e, te_segment_id seg, te_test_peer *p, uint8_t *local);
/* A write running past the end of p's buffer and a read starting before it
 * both fail with TE_ERR_ADDRESS_NOT_REGISTERED. */
void te_test_outside_rejected(te_engine *e, te_segment_id seg, const te_test_peer *p,
                              uint8_t *local);
/* Writes len bytes of pattern `seed` from `local` to offset off of peer p's
 * buffer (segment seg of engine e) and has the peer check them; then the peer
 * fills that range with seed + 1, and it is read back into the zeroed `local`
 * and checked. */
void te_test_write_then_read(te_engine *e, te_segment_id seg, te_test_peer *p, uint8_t *local,
                             uint64_t off, uint64_t len, uint64_t seed);

#endif
