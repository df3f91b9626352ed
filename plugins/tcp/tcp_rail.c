/* tcp_rail.c - the health and the measured throughput of the TCP transport's
 * rails, and the choice of a rail per slice (see tcp_rail.h).  Throughput is
 * bytes moved per second while the rail had work (so an idle rail does not
 * look slow), averaged over windows of WINDOW_NS; slices go where the queue
 * empties first, which spreads them in proportion to the rates. */
#include "tcp_rail.h"

#include <string.h>

#define WINDOW_NS 50000000LL /* busy time per throughput sample */
#define EWMA_NEW 0.3         /* weight of a new sample in the moving average */
#define PROBE_SHARE 0.05     /* slowest weight, as a share of the fastest */
#define MAX_PAUSE_SHIFT 5

void tcp_rail_init(tcp_rail *r, const tcp_rail_spec *spec)
{
    memset(r, 0, sizeof *r);
    r->spec = *spec;
    pthread_mutex_init(&r->lock, NULL);
}

void tcp_rail_destroy(tcp_rail *r)
{
    pthread_mutex_destroy(&r->lock);
}

void tcp_rail_sent(tcp_rail *r, uint64_t bytes, int64_t now_ns)
{
    pthread_mutex_lock(&r->lock);
    if (r->outstanding == 0)
        r->busy_since = now_ns;
    r->outstanding += bytes;
    pthread_mutex_unlock(&r->lock);
}

/* Closes the window into the average once it covers WINDOW_NS of work. */
static void sample(tcp_rail *r, int64_t now_ns)
{
    r->win_busy_ns += now_ns - r->busy_since;
    r->busy_since = now_ns;
    if (r->win_busy_ns < WINDOW_NS)
        return;
    double rate = (double)r->win_bytes * 1e9 / (double)r->win_busy_ns;
    r->rate = r->rate > 0 ? (1 - EWMA_NEW) * r->rate + EWMA_NEW * rate : rate;
    r->win_bytes = 0;
    r->win_busy_ns = 0;
}

void tcp_rail_done(tcp_rail *r, uint64_t bytes, bool ok, int64_t now_ns)
{
    pthread_mutex_lock(&r->lock);
    r->outstanding = bytes < r->outstanding ? r->outstanding - bytes : 0;
    if (ok) {
        r->win_bytes += bytes;
        r->failures = 0;
    }
    sample(r, now_ns);
    pthread_mutex_unlock(&r->lock);
}

bool tcp_rail_failed(tcp_rail *r, int64_t now_ns, int64_t pause_ns)
{
    bool paused = false;
    pthread_mutex_lock(&r->lock);
    if (pause_ns > 0 && now_ns >= r->paused_until) {
        int shift = r->failures < MAX_PAUSE_SHIFT ? r->failures : MAX_PAUSE_SHIFT;
        r->failures++;
        r->paused_until = now_ns + (pause_ns << shift);
        paused = true;
    }
    pthread_mutex_unlock(&r->lock);
    return paused;
}

bool tcp_rail_usable(tcp_rail *r, int64_t now_ns)
{
    pthread_mutex_lock(&r->lock);
    bool ok = now_ns >= r->paused_until;
    pthread_mutex_unlock(&r->lock);
    return ok;
}

/* Each rail's weight: its rate; unmeasured rails get the fastest one's (or
 * 1 when none is measured), and none gets less than PROBE_SHARE of it. */
static void weights(tcp_rail *rails, int n, double *w, uint64_t *out, bool *usable,
                    int64_t now_ns)
{
    double top = 0;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&rails[i].lock);
        w[i] = rails[i].rate;
        out[i] = rails[i].outstanding;
        /* Back from a pause but not yet proven: one slice at a time. */
        usable[i] = now_ns >= rails[i].paused_until &&
                    (rails[i].failures == 0 || rails[i].outstanding == 0);
        pthread_mutex_unlock(&rails[i].lock);
        if (w[i] > top)
            top = w[i];
    }
    if (top <= 0)
        top = 1;
    for (int i = 0; i < n; i++)
        if (w[i] < PROBE_SHARE * top)
            w[i] = w[i] > 0 ? PROBE_SHARE * top : top;
}

int tcp_rail_pick(tcp_rail *rails, int n, uint64_t bytes, int64_t now_ns, int exclude)
{
    if (n <= 1)
        return n == 1 && exclude != 0 ? 0 : -1;
    double w[TCP_MAX_RAILS];
    uint64_t out[TCP_MAX_RAILS];
    bool usable[TCP_MAX_RAILS];
    weights(rails, n, w, out, usable, now_ns);
    int best = -1;
    double best_t = 0;
    for (int pass = 0; pass < 2 && best < 0; pass++) {
        for (int i = 0; i < n; i++) {
            if (i == exclude || (pass == 0 && !usable[i]))
                continue;
            double t = (double)(out[i] + bytes) / w[i];
            if (best < 0 || t < best_t)
                best = i, best_t = t;
        }
        if (exclude >= 0)
            break; /* moving away from a failed rail: only to a usable one */
    }
    return best;
}
