/* notify_sender.c - the thread that sends a batch's notification once all
 * its tasks are done (te_submit_with_notify): batch.c queues the batch here,
 * the thread sends in queue order through notify.c and then settles the
 * batch, so a waiter sees the batch finished only after its notification. */
#include "batch.h"
#include "log.h"

void te_sender_enqueue(te_engine *e, te_batch *b)
{
    atomic_fetch_add(&b->refs, 1);
    pthread_mutex_lock(&e->sender_lock);
    b->sender_next = NULL;
    te_batch **p = &e->sender_head;
    while (*p)
        p = &(*p)->sender_next;
    *p = b;
    pthread_cond_signal(&e->sender_cond);
    pthread_mutex_unlock(&e->sender_lock);
}

static void *sender_main(void *arg)
{
    te_engine *e = arg;
    pthread_mutex_lock(&e->sender_lock);
    for (;;) {
        while (!e->sender_head && !e->sender_stop)
            pthread_cond_wait(&e->sender_cond, &e->sender_lock);
        te_batch *b = e->sender_head;
        if (!b)
            break;
        e->sender_head = b->sender_next;
        bool stopping = e->sender_stop;
        pthread_mutex_unlock(&e->sender_lock);
        int rc = stopping ? TE_ERR_STATE
                          : te_notify_send(e, b->notify_seg, b->notify_name, b->notify_msg);
        if (rc)
            atomic_store(&b->notify_status, rc);
        te_batch_settle_one(b);
        te_batch_unref(b);
        pthread_mutex_lock(&e->sender_lock);
    }
    pthread_mutex_unlock(&e->sender_lock);
    return NULL;
}

int te_sender_start(te_engine *e)
{
    e->sender_stop = false;
    if (pthread_create(&e->sender_thread, NULL, sender_main, e) != 0)
        return te_fail(TE_ERR_MEMORY, "cannot start the notification thread");
    e->sender_running = true;
    return 0;
}

void te_sender_stop(te_engine *e)
{
    if (!e->sender_running)
        return;
    pthread_mutex_lock(&e->sender_lock);
    e->sender_stop = true;
    pthread_cond_broadcast(&e->sender_cond);
    pthread_mutex_unlock(&e->sender_lock);
    pthread_join(e->sender_thread, NULL);
    e->sender_running = false;
}
