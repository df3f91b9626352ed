/* metrics.h - per-engine counters (atomics, no locks on the data path), the
 * MC_TE_METRIC periodic report and the MC_TE_METRIC_LISTEN Prometheus
 * endpoint. */
#ifndef TE_CORE_METRICS_H
#define TE_CORE_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memreg.h"

#define TE_LAT_BUCKETS 25 /* upper bounds 1 us .. 2^23 us, then +Inf */
#define TE_FAILURE_KINDS 17

typedef struct te_io_counters {
    atomic_uint_fast64_t read_bytes, write_bytes, reads, writes;
} te_io_counters;

typedef struct te_metrics {
    te_io_counters transport[TE_MAX_TRANSPORTS];
    atomic_uint_fast64_t failures[TE_FAILURE_KINDS];
    atomic_uint_fast64_t retries, rail_pauses, latency_sum_us;
    atomic_uint_fast64_t latency[TE_LAT_BUCKETS];
    atomic_int_fast64_t inflight, registered_bytes;

    pthread_mutex_t lock; /* reporter lifetime */
    pthread_cond_t cond;
    bool stop;
    bool reporter_running;
    bool http_registered; /* served by the process's endpoint (metrics_http.c) */
    pthread_t reporter;
    int interval_s;
} te_metrics;

struct te_engine;

void te_metrics_init(te_metrics *m);
/* Starts the reporter (MC_TE_METRIC) and endpoint (MC_TE_METRIC_LISTEN). */
int te_metrics_start(struct te_engine *e);
void te_metrics_stop(struct te_engine *e);

/* A finished request: status 0 or a negative te_status. */
void te_metrics_request_done(te_metrics *m, te_io_counters *segment, int transport, int opcode,
                             uint64_t bytes, int status, int64_t latency_ns);

/* JSON text for te_get_metrics, and the Prometheus text exposition of the
 * given engines, every series labelled engine="<segment name>". */
int te_metrics_json(struct te_engine *e, char **json);
int te_metrics_prometheus(struct te_engine *const *engines, size_t count, char **text);

/* Index and label of a status in the failures array. */
int te_metrics_failure_index(int status);
const char *te_metrics_failure_label(int index);

/* metrics_http.c: the process's one endpoint.  start registers the engine
 * (opening the endpoint if it is the first); stop unregisters it (closing the
 * endpoint with the last), and returns once no scrape can read it. */
int te_metrics_http_start(struct te_engine *e, const char *listen);
void te_metrics_http_stop(struct te_engine *e);

#endif
