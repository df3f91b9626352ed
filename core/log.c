/* log.c - leveled logging and the per-thread last-error message.  Logging
 * never allocates and never blocks on anything but stderr. */
#include "log.h"

#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int g_log_level = TE_LOG_WARN;
static _Thread_local char t_last_error[512];

static const char *const level_names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};

void te_log_init(void)
{
    const char *v = te_cfg_str("MC_LOG_LEVEL");
    if (!v)
        return;
    if (!strcasecmp(v, "TRACE"))
        g_log_level = TE_LOG_TRACE;
    else if (!strcasecmp(v, "DEBUG"))
        g_log_level = TE_LOG_DEBUG;
    else if (!strcasecmp(v, "INFO"))
        g_log_level = TE_LOG_INFO;
    else if (!strcasecmp(v, "WARNING") || !strcasecmp(v, "WARN"))
        g_log_level = TE_LOG_WARN;
    else if (!strcasecmp(v, "ERROR") || !strcasecmp(v, "FATAL"))
        g_log_level = TE_LOG_ERROR;
}

int te_log_enabled(int level)
{
    return level >= g_log_level;
}

static void vlog_line(int level, const char *component, const char *fmt, va_list ap);

void te_vlog(int level, const char *component, const char *fmt, va_list ap)
{
    if (level >= g_log_level)
        vlog_line(level, component, fmt, ap);
}

void te_log_always(const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_line(TE_LOG_INFO, component, fmt, ap);
    va_end(ap);
}

static void vlog_line(int level, const char *component, const char *fmt, va_list ap)
{
    if (level < TE_LOG_TRACE || level > TE_LOG_ERROR)
        level = TE_LOG_ERROR;
    char line[1024];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%c%02d%02d %02d:%02d:%02d.%06ld %ld te/%s] ",
                     level_names[level][0], tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000, (long)syscall(SYS_gettid),
                     component ? component : "?");
    if (n < 0)
        return;
    if ((size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = strnlen(line, sizeof line - 2);
    line[len++] = '\n';
    /* One write so lines of concurrent threads do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void te_log(int level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    te_vlog(level, component, fmt, ap);
    va_end(ap);
}

void te_vset_error(const char *fmt, va_list ap)
{
    /* Format aside first: callers may pass te_last_error() as an argument. */
    char tmp[sizeof t_last_error];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    memcpy(t_last_error, tmp, sizeof tmp);
}

void te_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    te_vset_error(fmt, ap);
    va_end(ap);
}

void te_clear_error(void)
{
    t_last_error[0] = '\0';
}

int te_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    te_vset_error(fmt, ap);
    va_end(ap);
    te_log(TE_LOG_WARN, "core", "%s (%s)", t_last_error, te_strerror(status));
    return status;
}

const char *te_last_error(void)
{
    return t_last_error;
}

const char *te_strerror(int status)
{
    switch (status) {
    case TE_OK: return "success";
    case TE_ERR_INVALID_ARGUMENT: return "invalid argument";
    case TE_ERR_TOO_MANY_REQUESTS: return "too many requests";
    case TE_ERR_ADDRESS_NOT_REGISTERED: return "address not registered";
    case TE_ERR_BATCH_BUSY: return "batch busy";
    case TE_ERR_DEVICE_NOT_FOUND: return "device not found";
    case TE_ERR_ADDRESS_OVERLAPPED: return "address overlaps a registered range";
    case TE_ERR_NOT_SUPPORTED_TRANSPORT: return "transport not supported";
    case TE_ERR_TIMEOUT: return "timed out";
    case TE_ERR_PLUGIN: return "plugin could not be loaded";
    case TE_ERR_STATE: return "invalid state for this call";
    case TE_ERR_NOT_FOUND: return "not found";
    case TE_ERR_REMOTE: return "rejected by the peer";
    case TE_ERR_PEER_CLOSED: return "peer closed the connection";
    case TE_ERR_MALFORMED_FRAME: return "malformed frame";
    case TE_ERR_DNS: return "name resolution failed";
    case TE_ERR_SOCKET: return "socket error";
    case TE_ERR_MALFORMED_JSON: return "malformed JSON";
    case TE_ERR_REJECT_HANDSHAKE: return "handshake rejected";
    case TE_ERR_METADATA: return "metadata store error";
    case TE_ERR_ENDPOINT: return "endpoint error";
    case TE_ERR_CONTEXT: return "device context error";
    case TE_ERR_NUMA: return "NUMA error";
    case TE_ERR_CLOCK: return "clock error";
    case TE_ERR_MEMORY: return "out of memory";
    case TE_ERR_NOT_IMPLEMENTED: return "not supported";
    default: return "unknown status";
    }
}

void te_free(void *ptr)
{
    free(ptr);
}
