/* etcd_store.c - the etcd metadata store plugin (libte_metadata_etcd.so).
 * Every key it puts hangs on one lease per engine, kept alive by a thread;
 * when the lease is lost (TTL ran out, etcd wiped) it grants a new one and
 * puts again every key it owns, so a crashed engine's keys vanish and a
 * restarted etcd is refilled.  destroy() revokes the lease. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etcd_client.h"
#include "http_body.h"
#include "te/plugin.h"

#define PLUGIN_NAME "metadata_etcd"
#define DEFAULT_TTL 5


#define LOG(s, lvl, ...) te_host_table->log((s)->host, lvl, PLUGIN_NAME, __VA_ARGS__)

typedef struct owned_key {
    char *key;
    char *value;
} owned_key;

typedef struct etcd_store {
    te_host *host;
    etcd_client client;
    int64_t want_ttl;       /* MC_METADATA_LEASE_TTL */
    /* write_lock serializes every write (put, remove, re-publish) so that an
     * older value can never overtake a newer one; it guards the members below. */
    pthread_mutex_t write_lock;
    owned_key *keys;
    size_t key_count, key_cap;
    int64_t lease;          /* 0 until granted */
    int64_t ttl;            /* what etcd granted */
    bool dirty;             /* a re-publish is owed (a write failed) */
    /* The keepalive thread sleeps on wake under lock until stop. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    atomic_bool cancel;     /* aborts the thread's in-flight request on destroy */
    atomic_llong lease_seen; /* the lease id, for the thread to read without write_lock */
    pthread_t thread;
    bool thread_started;
    bool unreachable;       /* the thread's last tick failed (log transitions only) */
} etcd_store;

static void destroy_store(etcd_store *s);

/* ---- owned keys ------------------------------------------------------------ */

static bool key_ok(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > ETCD_MAX_KEY) {
        te_host_table->set_error("etcd: key of %zu bytes (want 1..%d)", n, ETCD_MAX_KEY);
        return false;
    }
    return true;
}

static owned_key *find_key(etcd_store *s, const char *key)
{
    for (size_t i = 0; i < s->key_count; i++)
        if (!strcmp(s->keys[i].key, key))
            return &s->keys[i];
    return NULL;
}

static int remember(etcd_store *s, const char *key, const char *value)
{
    char *v = strdup(value);
    if (!v)
        return TE_ERR_MEMORY;
    owned_key *k = find_key(s, key);
    if (k) {
        free(k->value);
        k->value = v;
        return 0;
    }
    if (s->key_count == s->key_cap) {
        size_t cap = s->key_cap ? s->key_cap * 2 : 8;
        owned_key *n = realloc(s->keys, cap * sizeof *n);
        if (!n) {
            free(v);
            return TE_ERR_MEMORY;
        }
        s->keys = n;
        s->key_cap = cap;
    }
    k = &s->keys[s->key_count];
    k->key = strdup(key);
    if (!k->key) {
        free(v);
        return TE_ERR_MEMORY;
    }
    k->value = v;
    s->key_count++;
    return 0;
}

static void forget(etcd_store *s, const char *key)
{
    owned_key *k = find_key(s, key);
    if (!k)
        return;
    free(k->key);
    free(k->value);
    *k = s->keys[--s->key_count];
}

/* ---- lease ----------------------------------------------------------------- */

/* Puts every owned key on lease id.  A key etcd refuses (too large, ...) is
 * dropped with a warning so that it cannot block the others forever. */
static int put_all(etcd_store *s, int64_t id)
{
    for (size_t i = 0; i < s->key_count;) {
        int rc = etcd_kv_put(&s->client, s->keys[i].key, s->keys[i].value, id, &s->cancel);
        if (rc == ETCD_REFUSED) {
            LOG(s, TE_LOG_WARN, "etcd refused key %s; no longer publishing it", s->keys[i].key);
            forget(s, s->keys[i].key);
            continue;
        }
        if (rc)
            return rc == ETCD_LEASE_LOST ? TE_ERR_METADATA : rc; /* retried on the next tick */
        i++;
    }
    return 0;
}

/* Grants a fresh lease and puts every owned key on it.  Caller holds
 * write_lock.  On failure the store stays dirty and the thread retries. */
static int republish(etcd_store *s)
{
    int64_t id = 0, ttl = 0;
    s->dirty = true;
    int rc = etcd_lease_grant(&s->client, s->want_ttl, &id, &ttl, &s->cancel);
    if (rc)
        return rc;
    int64_t old = s->lease;
    s->lease = id;
    s->ttl = ttl;
    atomic_store(&s->lease_seen, id);
    rc = put_all(s, id);
    if (rc)
        return rc;
    s->dirty = false;
    if (old)
        etcd_lease_revoke(&s->client, old); /* usually gone already; harmless if not */
    LOG(s, TE_LOG_INFO, "etcd lease %llx (TTL %llds) holds %zu keys", (unsigned long long)id,
        (long long)ttl, s->key_count);
    return 0;
}

/* One keepalive tick: renew the lease, or re-publish when it was lost or a
 * previous write failed.  Only the keepalive thread runs it. */
static void tick(etcd_store *s)
{
    int64_t lease = atomic_load(&s->lease_seen);
    pthread_mutex_lock(&s->write_lock);
    bool dirty = s->dirty;
    long long ttl = (long long)s->ttl;
    pthread_mutex_unlock(&s->write_lock);
    int rc = dirty ? ETCD_LEASE_LOST : etcd_lease_keepalive(&s->client, lease, &s->cancel);
    if (atomic_load(&s->cancel))
        return;
    if (rc != ETCD_LEASE_LOST) {
        if (rc && !s->unreachable)
            LOG(s, TE_LOG_WARN, "etcd lease keepalive: no endpoint answers; retrying (our keys "
                "expire if this lasts %llds)", ttl);
        else if (!rc && s->unreachable)
            LOG(s, TE_LOG_INFO, "etcd answers again; lease kept");
        s->unreachable = rc != 0;
        return;
    }
    pthread_mutex_lock(&s->write_lock);
    if (s->dirty || s->lease == lease) { /* else a put re-granted meanwhile */
        LOG(s, TE_LOG_WARN, "etcd lease %llx lost or a write is owed; re-publishing %zu keys",
            (unsigned long long)lease, s->key_count);
        rc = republish(s);
        if (rc && !s->unreachable)
            LOG(s, TE_LOG_WARN, "etcd re-publish failed; retrying");
        s->unreachable = rc != 0;
    }
    pthread_mutex_unlock(&s->write_lock);
}

/* The renewal period: a third of the TTL, in milliseconds. */
static int64_t period_ms(etcd_store *s)
{
    pthread_mutex_lock(&s->write_lock);
    int64_t ttl = s->ttl > 0 ? s->ttl : s->want_ttl;
    bool dirty = s->dirty;
    pthread_mutex_unlock(&s->write_lock);
    int64_t ms = ttl * 1000 / 3;
    return dirty && ms > 500 ? 500 : ms; /* retry an owed re-publish sooner */
}

/* Sleeps a period (or until destroy), then ticks; never spins. */
static void *keepalive_main(void *arg)
{
    etcd_store *s = arg;
    for (;;) {
        int64_t ms = period_ms(s);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += ms / 1000;
        until.tv_nsec += (ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&s->lock);
        int w = 0;
        while (!s->stop && w != ETIMEDOUT)
            w = pthread_cond_timedwait(&s->wake, &s->lock, &until);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->lock);
        if (stop)
            return NULL;
        tick(s);
    }
}

/* ---- operations ------------------------------------------------------------ */

static int64_t lease_ttl(te_host *host)
{
    int64_t t = DEFAULT_TTL; /* 2..3600 s, declared in the core */
    te_host_table->config_int(host, "MC_METADATA_LEASE_TTL", &t);
    return t;
}

static void store_free(etcd_store *s)
{
    for (size_t i = 0; i < s->key_count; i++) {
        free(s->keys[i].key);
        free(s->keys[i].value);
    }
    free(s->keys);
    etcd_client_fini(&s->client);
    pthread_mutex_destroy(&s->write_lock);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    free(s);
}

static int start_thread(etcd_store *s)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, keepalive_main, s)) {
        te_host_table->set_error("etcd: cannot start the lease keepalive thread");
        return TE_ERR_MEMORY;
    }
    s->thread_started = true;
    return 0;
}

static int etcd_create(te_host *host, const char *conn, void **inst)
{
    int rc = http_curl_global_init();
    if (rc) {
        te_host_table->set_error("etcd: curl_global_init failed");
        return rc;
    }
    etcd_store *s = calloc(1, sizeof *s);
    if (!s)
        return TE_ERR_MEMORY;
    s->host = host;
    s->want_ttl = lease_ttl(host);
    atomic_init(&s->cancel, false);
    atomic_init(&s->lease_seen, 0);
    pthread_mutex_init(&s->write_lock, NULL);
    pthread_mutex_init(&s->lock, NULL);
    rc = etcd_client_init(&s->client, te_host_table, host, conn);
    if (rc) {
        pthread_mutex_destroy(&s->write_lock);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return rc;
    }
    rc = start_thread(s); /* initializes s->wake */
    if (!rc) {
        pthread_mutex_lock(&s->write_lock);
        rc = republish(s); /* the first lease; proves an endpoint answers */
        pthread_mutex_unlock(&s->write_lock);
    }
    if (rc) {
        destroy_store(s);
        return rc;
    }
    *inst = s;
    return 0;
}

static void destroy_store(etcd_store *s)
{
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        atomic_store(&s->cancel, true);
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    if (s->lease && etcd_lease_revoke(&s->client, s->lease))
        LOG(s, TE_LOG_WARN, "etcd: could not revoke lease %llx; its keys expire within %llds",
            (unsigned long long)s->lease, (long long)s->ttl);
    store_free(s);
}

static void etcd_destroy(void *inst)
{
    if (inst)
        destroy_store(inst);
}

static int etcd_get(void *inst, const char *key, char **value)
{
    etcd_store *s = inst;
    return etcd_kv_get(&s->client, key, value);
}

/* Writes one key on the current lease; re-publishes everything when there
 * is no good lease.  Caller holds write_lock and has remembered the key. */
static int write_key(etcd_store *s, const char *key, const char *value)
{
    int rc = s->dirty || !s->lease ? ETCD_LEASE_LOST
                                   : etcd_kv_put(&s->client, key, value, s->lease, NULL);
    if (rc == ETCD_LEASE_LOST) {
        rc = republish(s);
        if (!rc && !find_key(s, key))
            rc = TE_ERR_METADATA; /* etcd refused this very key */
    } else if (rc == ETCD_REFUSED) {
        forget(s, key);
        rc = TE_ERR_METADATA;
    } else if (rc) {
        s->dirty = true; /* the thread puts the latest values once etcd answers */
    }
    return rc;
}

static int etcd_put(void *inst, const char *key, const char *value)
{
    etcd_store *s = inst;
    if (!value) {
        te_host_table->set_error("etcd put: NULL value");
        return TE_ERR_INVALID_ARGUMENT;
    }
    if (!key_ok(key))
        return TE_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&s->write_lock);
    owned_key *k = find_key(s, key);
    char *previous = k ? strdup(k->value) : NULL;
    int rc = remember(s, key, value);
    if (!rc)
        rc = write_key(s, key, value);
    if (rc && previous && !find_key(s, key))
        remember(s, key, previous); /* refused: etcd still holds the previous value */
    pthread_mutex_unlock(&s->write_lock);
    free(previous);
    return rc;
}

static int etcd_remove(void *inst, const char *key)
{
    etcd_store *s = inst;
    if (!key_ok(key))
        return TE_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&s->write_lock);
    forget(s, key);
    int rc = etcd_kv_delete(&s->client, key);
    pthread_mutex_unlock(&s->write_lock);
    return rc;
}

static const te_metadata_ops g_ops = {
    .size = sizeof(te_metadata_ops),
    .caps = 0,
    .create = etcd_create,
    .destroy = etcd_destroy,
    .get = etcd_get,
    .put = etcd_put,
    .remove = etcd_remove,
    .ctrl = NULL,
};


TE_PLUGIN_DEFINE(TE_PLUGIN_METADATA, PLUGIN_NAME, "1.0", &g_ops, config_int)
