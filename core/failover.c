/* failover.c - the rules and the thread behind failover: which failures
 * move a slice to another transport, the cool-down of a path that keeps
 * failing, and the queue a core thread drains, so a slice is never
 * resubmitted inside a transport's completion callback (whose locks another
 * transport's submit could need in the other order). */
#include "failover.h"

#include <stdlib.h>

#include "config.h"
#include "engine.h"
#include "log.h"

#define NS_PER_S 1000000000LL

/* ---- the rules (pure) ---------------------------------------------------- */

int64_t te_cooldown_ns(const te_cooldown *c, int strikes)
{
    if (strikes < 1)
        return 0;
    int64_t d = c->base_ns;
    for (int i = 1; i < strikes && d < c->max_ns; i++)
        d *= 2;
    return d < c->max_ns ? d : c->max_ns;
}

bool te_path_usable(const te_path_health *h, int64_t now_ns)
{
    return now_ns >= atomic_load_explicit(&h->until_ns, memory_order_relaxed);
}

bool te_path_was_set_aside(const te_path_health *h)
{
    return atomic_load_explicit(&h->until_ns, memory_order_relaxed) != 0;
}

bool te_path_failed(te_path_health *h, const te_cooldown *c, int64_t now_ns)
{
    int64_t until = atomic_load(&h->until_ns);
    if (now_ns < until)
        return false; /* already set aside: slices that were in flight */
    /* One failure episode counts once even when many slices report it. */
    int strikes = atomic_load(&h->strikes) + 1;
    if (!atomic_compare_exchange_strong(&h->until_ns, &until,
                                        now_ns + te_cooldown_ns(c, strikes)))
        return false;
    atomic_store(&h->strikes, strikes);
    return true;
}

void te_path_succeeded(te_path_health *h)
{
    if (atomic_load_explicit(&h->strikes, memory_order_relaxed))
        atomic_store(&h->strikes, 0);
}

bool te_failover_status(int status)
{
    switch (status) {
    case TE_ERR_SOCKET:
    case TE_ERR_PEER_CLOSED:
    case TE_ERR_TIMEOUT:
    case TE_ERR_ENDPOINT:
    case TE_ERR_REJECT_HANDSHAKE:
    case TE_ERR_CONTEXT:
    case TE_ERR_DNS:
    case TE_ERR_DEVICE_NOT_FOUND:
    case TE_ERR_NOT_SUPPORTED_TRANSPORT:
        return true;
    default: /* the target's refusal (not registered, invalid, remote), memory, shutdown */
        return false;
    }
}

bool te_failover_breaks_path(int status)
{
    return te_failover_status(status) && status != TE_ERR_NOT_SUPPORTED_TRANSPORT;
}

/* ---- settings ------------------------------------------------------------ */

static void load_settings(te_failover *f)
{
    /* Milliseconds are accepted as well for tests (0: the seconds apply). */
    int64_t base_ms = te_cfg_int("MC_TE_FAILOVER_COOLDOWN_MS");
    if (base_ms > 0)
        f->cooldown.base_ns = base_ms * 1000000;
    else
        f->cooldown.base_ns = te_cfg_int("MC_TE_FAILOVER_COOLDOWN") * NS_PER_S;
    f->cooldown.max_ns = te_cfg_int("MC_TE_FAILOVER_COOLDOWN_MAX") * NS_PER_S;
    if (f->cooldown.max_ns < f->cooldown.base_ns)
        f->cooldown.max_ns = f->cooldown.base_ns;
    f->max_attempts = (int)te_cfg_int("MC_TE_FAILOVER_ATTEMPTS");
}

/* ---- the resubmission thread --------------------------------------------- */

static te_slice *next_of(te_slice *s)
{
    return s->transport_data[3];
}

static void *failover_main(void *arg)
{
    te_engine *e = arg;
    te_failover *f = &e->failover;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        while (!f->head && !f->stop)
            pthread_cond_wait(&f->cond, &f->lock);
        te_slice *s = f->head;
        if (!s)
            break; /* stopping with an empty queue */
        f->head = next_of(s);
        if (!f->head)
            f->tail = NULL;
        pthread_mutex_unlock(&f->lock);
        te_batch_resubmit(e, s);
        pthread_mutex_lock(&f->lock);
    }
    f->running = false;
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

int te_failover_start(te_engine *e)
{
    te_failover *f = &e->failover;
    load_settings(f);
    if (!f->inited) {
        pthread_mutex_init(&f->lock, NULL);
        pthread_cond_init(&f->cond, NULL);
        f->inited = true;
    }
    pthread_mutex_lock(&f->lock);
    f->head = f->tail = NULL;
    f->stop = false;
    f->running = pthread_create(&f->thread, NULL, failover_main, e) == 0;
    bool ok = f->running;
    pthread_mutex_unlock(&f->lock);
    return ok ? 0 : te_fail(TE_ERR_MEMORY, "cannot start the failover thread");
}

void te_failover_stop(te_engine *e)
{
    te_failover *f = &e->failover;
    if (!f->inited)
        return;
    pthread_mutex_lock(&f->lock);
    bool join = f->running && !f->stop;
    f->stop = true;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    if (join)
        pthread_join(f->thread, NULL);
}

void te_failover_destroy(te_engine *e)
{
    te_failover *f = &e->failover;
    if (!f->inited)
        return;
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    f->inited = false;
}

bool te_failover_enqueue(te_engine *e, te_slice *slice)
{
    te_failover *f = &e->failover;
    if (!f->inited || f->max_attempts == 0)
        return false;
    pthread_mutex_lock(&f->lock);
    bool ok = f->running && !f->stop;
    if (ok) {
        slice->transport_data[3] = NULL;
        if (f->tail)
            f->tail->transport_data[3] = slice;
        else
            f->head = slice;
        f->tail = slice;
        pthread_cond_signal(&f->cond);
    }
    pthread_mutex_unlock(&f->lock);
    return ok;
}
