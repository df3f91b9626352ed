/* log.h - leveled logging to stderr and the per-thread last-error detail. */
#ifndef TE_CORE_LOG_H
#define TE_CORE_LOG_H

#include <stdarg.h>

#include "te/plugin.h"

/* Sets the process log level from MC_LOG_LEVEL (TRACE, DEBUG, INFO, WARNING,
 * ERROR; default WARNING).  Called by every engine create; cheap. */
void te_log_init(void);
int te_log_enabled(int level);
void te_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes a line whatever MC_LOG_LEVEL says (reports the user asked for). */
void te_log_always(const char *component, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void te_vlog(int level, const char *component, const char *fmt, va_list ap);

/* Records `fmt` as the calling thread's te_last_error(), logs it at WARN
 * and returns `status`, so error paths read `return te_fail(st, "...")`. */
int te_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void te_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void te_vset_error(const char *fmt, va_list ap);
void te_clear_error(void);

#define TE_TRACE(...) te_log(TE_LOG_TRACE, "core", __VA_ARGS__)
#define TE_DEBUG(...) te_log(TE_LOG_DEBUG, "core", __VA_ARGS__)
#define TE_INFO(...) te_log(TE_LOG_INFO, "core", __VA_ARGS__)
#define TE_WARN(...) te_log(TE_LOG_WARN, "core", __VA_ARGS__)
#define TE_ERROR(...) te_log(TE_LOG_ERROR, "core", __VA_ARGS__)

#endif
