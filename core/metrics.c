/* metrics.c - counters kept per engine with relaxed atomics (no locks on the
 * data path), their JSON and Prometheus renderings, and the periodic report
 * thread that exists only when MC_TE_METRIC is on. */
#include "metrics.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "engine.h"
#include "log.h"

#define ADD(a, v) atomic_fetch_add_explicit(&(a), (v), memory_order_relaxed)
#define GET(a) atomic_load_explicit(&(a), memory_order_relaxed)

static const struct {
    int status;
    const char *label;
} failure_kinds[TE_FAILURE_KINDS] = {
    {0, "other"},
    {TE_ERR_TIMEOUT, "timeout"},
    {TE_ERR_ADDRESS_NOT_REGISTERED, "address_not_registered"},
    {TE_ERR_PEER_CLOSED, "peer_closed"},
    {TE_ERR_SOCKET, "socket"},
    {TE_ERR_REMOTE, "remote"},
    {TE_ERR_DNS, "dns"},
    {TE_ERR_INVALID_ARGUMENT, "invalid_argument"},
    {TE_ERR_MEMORY, "memory"},
    {TE_ERR_STATE, "state"},
    {TE_ERR_ENDPOINT, "endpoint"},
    {TE_ERR_REJECT_HANDSHAKE, "reject_handshake"},
    {TE_ERR_MALFORMED_JSON, "malformed"},
    {TE_ERR_NOT_SUPPORTED_TRANSPORT, "not_supported_transport"},
    {TE_ERR_METADATA, "metadata"},
    {TE_ERR_CONTEXT, "context"},
    {TE_ERR_MALFORMED_FRAME, "malformed_frame"},
};

int te_metrics_failure_index(int status)
{
    for (int i = 1; i < TE_FAILURE_KINDS; i++)
        if (failure_kinds[i].status == status)
            return i;
    return 0;
}

const char *te_metrics_failure_label(int index)
{
    return index >= 0 && index < TE_FAILURE_KINDS ? failure_kinds[index].label : "other";
}

void te_metrics_init(te_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
}

static int latency_bucket(uint64_t us)
{
    int b = 0;
    while (b < TE_LAT_BUCKETS - 1 && us > (1ull << b))
        b++;
    return b;
}

void te_metrics_request_done(te_metrics *m, te_io_counters *segment, int transport, int opcode,
                             uint64_t bytes, int status, int64_t latency_ns)
{
    ADD(m->inflight, -1);
    if (status) {
        ADD(m->failures[te_metrics_failure_index(status)], 1);
        return;
    }
    te_io_counters *ios[2] = {&m->transport[transport], segment};
    for (int i = 0; i < 2; i++) {
        if (!ios[i])
            continue;
        if (opcode == TE_OP_READ) {
            ADD(ios[i]->read_bytes, bytes);
            ADD(ios[i]->reads, 1);
        } else {
            ADD(ios[i]->write_bytes, bytes);
            ADD(ios[i]->writes, 1);
        }
    }
    uint64_t us = latency_ns > 0 ? (uint64_t)latency_ns / 1000 : 0;
    ADD(m->latency_sum_us, us);
    ADD(m->latency[latency_bucket(us)], 1);
}

/* Completed requests: each one counts in exactly one latency bucket, so the
 * sum saves a counter update per request. */
static uint64_t completed_count(te_metrics *m)
{
    uint64_t n = 0;
    for (int b = 0; b < TE_LAT_BUCKETS; b++)
        n += GET(m->latency[b]);
    return n;
}

/* ---- JSON ------------------------------------------------------------------ */

static json_t *io_json(te_io_counters *c)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "read_bytes", (json_int_t)GET(c->read_bytes),
                     "write_bytes", (json_int_t)GET(c->write_bytes), "reads",
                     (json_int_t)GET(c->reads), "writes", (json_int_t)GET(c->writes));
}

/* {"<from>": {"<to>": slices moved}} for every pair of this engine's transports. */
static json_t *failovers_json(te_engine *e)
{
    json_t *all = json_object();
    for (int f = 0; all && f < e->transport_count; f++) {
        json_t *to = json_object();
        for (int t = 0; to && t < e->transport_count; t++)
            if (t != f)
                json_object_set_new(to, e->transports[t].plugin->name,
                                    json_integer((json_int_t)GET(e->failover.moved[f][t])));
        json_object_set_new(all, e->transports[f].plugin->name, to);
    }
    return all;
}

int te_metrics_json(te_engine *e, char **json)
{
    te_metrics *m = &e->metrics;
    json_t *root = json_object(), *tr = json_object(), *segs = json_object();
    json_t *fail = json_object(), *buckets = json_array();
    for (int i = 0; i < e->transport_count; i++)
        json_object_set_new(tr, e->transports[i].plugin->name, io_json(&m->transport[i]));
    pthread_mutex_lock(&e->seg_lock);
    for (size_t i = 0; i < e->segment_count; i++)
        if (e->segments[i].name && e->segments[i].io)
            json_object_set_new(segs, e->segments[i].name, io_json(e->segments[i].io));
    pthread_mutex_unlock(&e->seg_lock);
    for (int i = 0; i < TE_FAILURE_KINDS; i++)
        json_object_set_new(fail, failure_kinds[i].label, json_integer((json_int_t)GET(m->failures[i])));
    for (int b = 0; b < TE_LAT_BUCKETS; b++)
        json_array_append_new(buckets, json_pack("[I, I]",
                              (json_int_t)(b == TE_LAT_BUCKETS - 1 ? -1 : (1ll << b)),
                              (json_int_t)GET(m->latency[b])));
    json_object_set_new(root, "transports", tr);
    json_object_set_new(root, "segments", segs);
    json_object_set_new(root, "failures", fail);
    json_object_set_new(root, "retries", json_integer((json_int_t)GET(m->retries)));
    json_object_set_new(root, "rail_pauses", json_integer((json_int_t)GET(m->rail_pauses)));
    json_object_set_new(root, "failovers", failovers_json(e));
    json_object_set_new(root, "inflight_requests", json_integer((json_int_t)GET(m->inflight)));
    json_object_set_new(root, "registered_bytes",
                        json_integer((json_int_t)GET(m->registered_bytes)));
    json_object_set_new(root, "completed_requests", json_integer((json_int_t)completed_count(m)));
    json_object_set_new(root, "latency_us",
                        json_pack("{s:o, s:I, s:I}", "buckets", buckets, "sum_us",
                                  (json_int_t)GET(m->latency_sum_us), "count",
                                  (json_int_t)completed_count(m)));
    *json = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return *json ? 0 : TE_ERR_MEMORY;
}

int te_get_metrics(te_engine *e, char **json)
{
    if (!e || !json)
        return TE_ERR_INVALID_ARGUMENT;
    if (!e->initialized)
        return te_fail(TE_ERR_STATE, "metrics: engine not initialized");
    return te_metrics_json(e, json);
}

/* ---- Prometheus text ----------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Label values escape backslash, double quote and newline. */
static void sb_label(sbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_printf(b, "\\%c", *v);
        else if (*v == '\n')
            sb_printf(b, "\\n");
        else
            sb_printf(b, "%c", *v);
    }
}

/* Opens a sample: name{engine="<segment name>" (the caller closes the braces). */
static void sb_series(sbuf *b, const char *name, const te_engine *e)
{
    sb_printf(b, "%s{engine=\"", name);
    sb_label(b, e->segment_name);
    sb_printf(b, "\"");
}

typedef struct family {
    const char *name, *type, *help;
    void (*lines)(sbuf *b, const struct family *f, te_engine *e);
    int which; /* what of several similar series this family is */
} family;

/* which: bit 0 requests (else bytes). */
static void io_samples(sbuf *b, const family *f, te_engine *e, const char *label,
                       const char *value, te_io_counters *c)
{
    static const char *const ops[2] = {"read", "write"};
    uint64_t v[2] = {GET(c->read_bytes), GET(c->write_bytes)};
    if (f->which & 1)
        v[0] = GET(c->reads), v[1] = GET(c->writes);
    for (int i = 0; i < 2; i++) {
        sb_series(b, f->name, e);
        sb_printf(b, ",%s=\"", label);
        sb_label(b, value);
        sb_printf(b, "\",op=\"%s\"} %llu\n", ops[i], (unsigned long long)v[i]);
    }
}

static void transport_lines(sbuf *b, const family *f, te_engine *e)
{
    for (int i = 0; i < e->transport_count; i++)
        io_samples(b, f, e, "transport", e->transports[i].plugin->name,
                   &e->metrics.transport[i]);
}

static void failover_lines(sbuf *b, const family *f, te_engine *e)
{
    for (int i = 0; i < e->transport_count; i++)
        for (int j = 0; j < e->transport_count; j++) {
            if (i == j)
                continue;
            sb_series(b, f->name, e);
            sb_printf(b, ",from=\"");
            sb_label(b, e->transports[i].plugin->name);
            sb_printf(b, "\",to=\"");
            sb_label(b, e->transports[j].plugin->name);
            sb_printf(b, "\"} %llu\n", (unsigned long long)GET(e->failover.moved[i][j]));
        }
}

static void segment_lines(sbuf *b, const family *f, te_engine *e)
{
    pthread_mutex_lock(&e->seg_lock);
    for (size_t i = 0; i < e->segment_count; i++)
        if (e->segments[i].name && e->segments[i].io)
            io_samples(b, f, e, "segment", e->segments[i].name, e->segments[i].io);
    pthread_mutex_unlock(&e->seg_lock);
}

static void failure_lines(sbuf *b, const family *f, te_engine *e)
{
    for (int i = 0; i < TE_FAILURE_KINDS; i++) {
        sb_series(b, f->name, e);
        sb_printf(b, ",status=\"%s\"} %llu\n", failure_kinds[i].label,
                  (unsigned long long)GET(e->metrics.failures[i]));
    }
}

/* which: 0 retries, 1 rail pauses, 2 in flight, 3 registered bytes. */
static void scalar_lines(sbuf *b, const family *f, te_engine *e)
{
    te_metrics *m = &e->metrics;
    long long v = f->which == 0   ? (long long)GET(m->retries)
                  : f->which == 1 ? (long long)GET(m->rail_pauses)
                  : f->which == 2 ? (long long)GET(m->inflight)
                                  : (long long)GET(m->registered_bytes);
    sb_series(b, f->name, e);
    sb_printf(b, "} %lld\n", v);
}

static void latency_lines(sbuf *b, const family *f, te_engine *e)
{
    te_metrics *m = &e->metrics;
    uint64_t cum = 0;
    for (int i = 0; i < TE_LAT_BUCKETS; i++) {
        cum += GET(m->latency[i]);
        sb_series(b, "te_request_latency_seconds_bucket", e);
        if (i == TE_LAT_BUCKETS - 1)
            sb_printf(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        else
            sb_printf(b, ",le=\"%g\"} %llu\n", (double)(1ull << i) / 1e6, (unsigned long long)cum);
    }
    sb_series(b, "te_request_latency_seconds_sum", e);
    sb_printf(b, "} %.6f\n", (double)GET(m->latency_sum_us) / 1e6);
    sb_series(b, "te_request_latency_seconds_count", e);
    sb_printf(b, "} %llu\n", (unsigned long long)cum);
    (void)f;
}

static const family families[] = {
    {"te_transport_bytes_total", "counter", "Bytes moved by completed requests.",
     transport_lines, 0},
    {"te_transport_requests_total", "counter", "Completed requests.", transport_lines, 1},
    {"te_segment_bytes_total", "counter", "Bytes moved per peer segment.", segment_lines, 0},
    {"te_segment_requests_total", "counter", "Completed requests per peer segment.",
     segment_lines, 1},
    {"te_failures_total", "counter", "Failed requests by cause.", failure_lines, 0},
    {"te_retries_total", "counter", "Slices a transport retried.", scalar_lines, 0},
    {"te_rail_pauses_total", "counter", "Paths a transport set aside after errors.",
     scalar_lines, 1},
    {"te_failovers_total", "counter",
     "Slices moved to another transport after a transport failure.", failover_lines, 0},
    {"te_inflight_requests", "gauge", "Requests submitted and not finished.", scalar_lines, 2},
    {"te_registered_bytes", "gauge", "Bytes of registered local memory.", scalar_lines, 3},
    {"te_request_latency_seconds", "histogram", "Latency of completed requests.",
     latency_lines, 0},
};

/* Each family once, its samples of every engine together, as the format asks. */
int te_metrics_prometheus(te_engine *const *engines, size_t count, char **text)
{
    sbuf b = {0};
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
                  families[f].name, families[f].type);
        for (size_t i = 0; i < count; i++)
            families[f].lines(&b, &families[f], engines[i]);
    }
    if (b.oom) {
        free(b.p);
        return TE_ERR_MEMORY;
    }
    *text = b.p;
    return 0;
}

/* ---- periodic report ---------------------------------------------------------- */

typedef struct snapshot {
    uint64_t rbytes, wbytes, done, fails, lat[TE_LAT_BUCKETS];
} snapshot;

static void take(te_engine *e, snapshot *s)
{
    te_metrics *m = &e->metrics;
    memset(s, 0, sizeof *s);
    for (int i = 0; i < e->transport_count; i++) {
        s->rbytes += GET(m->transport[i].read_bytes);
        s->wbytes += GET(m->transport[i].write_bytes);
    }
    s->done = completed_count(m);
    for (int i = 0; i < TE_FAILURE_KINDS; i++)
        s->fails += GET(m->failures[i]);
    for (int i = 0; i < TE_LAT_BUCKETS; i++)
        s->lat[i] = GET(m->latency[i]);
}

static double percentile_us(const snapshot *a, const snapshot *b, double q)
{
    uint64_t total = b->done - a->done, seen = 0;
    if (!total)
        return 0;
    for (int i = 0; i < TE_LAT_BUCKETS; i++) {
        seen += b->lat[i] - a->lat[i];
        if (seen >= (uint64_t)(q * (double)total + 0.5) && seen > 0)
            return (double)(1ull << i);
    }
    return (double)(1ull << (TE_LAT_BUCKETS - 1));
}

static void *reporter_main(void *arg)
{
    te_engine *e = arg;
    te_metrics *m = &e->metrics;
    snapshot prev, cur;
    take(e, &prev);
    pthread_mutex_lock(&m->lock);
    while (!m->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += m->interval_s;
        if (pthread_cond_timedwait(&m->cond, &m->lock, &ts) == 0 || m->stop)
            continue;
        take(e, &cur);
        double s = m->interval_s;
        te_log_always("metrics", "%s: write %.3f GB/s, read %.3f GB/s, %.0f req/s, latency "
                      "p50 <= %.0f us p99 <= %.0f us, %llu errors in the last %d s",
                      e->segment_name, (double)(cur.wbytes - prev.wbytes) / s / 1e9,
                      (double)(cur.rbytes - prev.rbytes) / s / 1e9,
                      (double)(cur.done - prev.done) / s, percentile_us(&prev, &cur, 0.5),
                      percentile_us(&prev, &cur, 0.99), (unsigned long long)(cur.fails - prev.fails),
                      m->interval_s);
        prev = cur;
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int te_metrics_start(te_engine *e)
{
    te_metrics *m = &e->metrics;
    bool on = te_cfg_bool("MC_TE_METRIC");
    m->interval_s = (int)te_cfg_int("MC_TE_METRIC_INTERVAL_SECONDS");
    m->stop = false;
    if (on) {
        if (pthread_create(&m->reporter, NULL, reporter_main, e) != 0)
            return te_fail(TE_ERR_MEMORY, "cannot start the metrics reporter");
        m->reporter_running = true;
    }
    const char *listen = te_cfg_str("MC_TE_METRIC_LISTEN");
    if (listen) {
        int rc = te_metrics_http_start(e, listen);
        if (rc) {
            te_metrics_stop(e);
            return rc;
        }
    }
    return 0;
}

void te_metrics_stop(te_engine *e)
{
    te_metrics *m = &e->metrics;
    te_metrics_http_stop(e);
    if (!m->reporter_running)
        return;
    pthread_mutex_lock(&m->lock);
    m->stop = true;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->reporter, NULL);
    m->reporter_running = false;
}
