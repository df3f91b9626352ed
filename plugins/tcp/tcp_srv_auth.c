/* tcp_srv_auth.c - MC_AUTH_TOKEN handshakes of new data connections.  The
 * host's auth_accept blocks (three messages, one round trip for an honest
 * peer), so it runs on a small fixed pool of threads, never on a loop; each
 * handshake is bounded by the header deadline, and a connection waiting here
 * counts as idle: at a cap it is among the first to be evicted. */
#include <pthread.h>
#include <stdlib.h>

#include "tcp_srv.h"

#define AUTH_THREADS 4

struct tcp_srv_auth {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tcp_srv_conn *head, *tail; /* waiting for a thread */
    bool stop;
    int nthreads;
    pthread_t threads[AUTH_THREADS];
};

static tcp_srv_conn *next_conn(tcp_srv_auth *a)
{
    pthread_mutex_lock(&a->lock);
    while (!a->head && !a->stop)
        pthread_cond_wait(&a->cond, &a->lock);
    tcp_srv_conn *c = a->head;
    if (c) {
        a->head = c->qnext;
        if (!a->head)
            a->tail = NULL;
        c->qnext = NULL;
    }
    pthread_mutex_unlock(&a->lock);
    return c;
}

static void *auth_main(void *arg)
{
    tcp_server *s = arg;
    tcp_srv_auth *a = s->auth;
    tcp_srv_conn *c;
    while ((c = next_conn(a)) != NULL) {
        bool stopping;
        pthread_mutex_lock(&a->lock);
        stopping = a->stop;
        pthread_mutex_unlock(&a->lock);
        int64_t deadline = c->accepted_ns + s->header_timeout_ns;
        if (!stopping && atomic_load(&c->idle_since) > 0 &&
            te_host_table->auth_accept(c->t->host, c->fd, deadline) == 0)
            tcp_srv_loop_adopt(s, c);
        else
            tcp_srv_forget(s, c);
    }
    return NULL;
}

int tcp_srv_auth_start(tcp_server *s, tcp_transport *t)
{
    (void)t;
    tcp_srv_auth *a = calloc(1, sizeof *a);
    if (!a)
        return TE_ERR_MEMORY;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    s->auth = a;
    for (int i = 0; i < AUTH_THREADS; i++) {
        if (pthread_create(&a->threads[i], NULL, auth_main, s) != 0)
            break;
        a->nthreads++;
    }
    if (a->nthreads == 0) {
        tcp_srv_auth_stop(s);
        return TE_ERR_MEMORY;
    }
    return 0;
}

/* Ends the pool; connections still waiting are closed. */
void tcp_srv_auth_stop(tcp_server *s)
{
    tcp_srv_auth *a = s->auth;
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    a->stop = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    for (int i = 0; i < a->nthreads; i++)
        pthread_join(a->threads[i], NULL);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->cond);
    free(a);
    s->auth = NULL;
}

void tcp_srv_auth_submit(tcp_server *s, tcp_srv_conn *c)
{
    tcp_srv_auth *a = s->auth;
    pthread_mutex_lock(&a->lock);
    c->qnext = NULL;
    if (a->tail)
        a->tail->qnext = c;
    else
        a->head = c;
    a->tail = c;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
}
