/* fuzz_util.h - shared pieces of the fuzz targets: quiet logs, loopback
 * exchanges with a real target port, and a failure that libFuzzer reports
 * (with the input that caused it) instead of a silent wrong answer. */
#ifndef TE_FUZZ_UTIL_H
#define TE_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "te/plugin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prints the broken property and traps, so the fuzzer saves the input. */
#define FUZZ_ASSERT(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                     \
    } while (0)
void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Engine logs at ERROR unless FUZZ_LOG_LEVEL says otherwise (rejected
 * inputs would otherwise print a warning per run), and plugins from the
 * build tree. */
void fuzz_setup_env(void);

/* A NUL-terminated copy of data (malloc'd, never NULL). */
char *fuzz_strndup(const uint8_t *data, size_t size);

/* poll() on one fd for up to ms milliseconds, resumed after signals
 * (libFuzzer's timeout alarm interrupts system calls every second).
 * Returns what poll returns: 1, 0 on timeout, -1 on error. */
int fuzz_poll1(int fd, short events, int ms);

/* Connects to 127.0.0.1:port (blocking, 5 s at most); the fd or -1. */
int fuzz_connect(uint16_t port);

/* Writes data while reading whatever the target sends, half-closes, then
 * reads until the target closes.  Returns the bytes received; traps when
 * the target neither answers nor closes within limit_ms (a hang).  When
 * `sink` is not NULL it gets up to sink_len bytes of the reply. */
size_t fuzz_exchange(int fd, const uint8_t *data, size_t size, int limit_ms, uint8_t *sink,
                     size_t sink_len);

/* Closes a finished client connection with a reset (SO_LINGER 0), so that
 * thousands of runs a second leave no TIME_WAIT behind to exhaust the
 * ephemeral ports. */
void fuzz_close(int fd);

/* A listening TCP socket on 127.0.0.1 and a free port: the port, the
 * socket in *fd; aborts on failure. */
uint16_t fuzz_listen(int *fd);

/* Runs fn(NULL) on a detached thread; aborts on failure. */
void fuzz_thread(void *(*fn)(void *));

/* A transport instance from a plugin's init function linked into the
 * target, created on `host` with host table `api`; aborts on failure. */
void *fuzz_transport(te_plugin_init_fn init, const te_host_api *api, te_host *host);

/* Polls cond(arg) every millisecond until it is true; traps after limit_ms. */
void fuzz_wait_until(int (*cond)(void *arg), void *arg, int limit_ms, const char *what);

#endif
