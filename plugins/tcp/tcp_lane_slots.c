/* tcp_lane_slots.c - the bound on lane threads (see tcp_lane_slots.h): a
 * counter of slots, a FIFO of lanes waiting for one and the list of idle
 * lanes that can give theirs up.  Lanes call in under their own lock; this
 * lock is taken after it, and kick() only writes an eventfd. */
#include "tcp_lane_slots.h"

#include <stddef.h>

enum { SLOT_NONE = 0, SLOT_WAITING = 1, SLOT_IDLE = 2 };

static void ring_init(tcp_slot_node *head)
{
    head->next = head->prev = head;
}

static void ring_push(tcp_slot_node *head, tcp_slot_node *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static void ring_del(tcp_slot_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = NULL;
}

void tcp_slots_init(tcp_lane_slots *s, int max, void (*kick)(void *lane))
{
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->drained, NULL);
    s->live = 0;
    s->max = max > 0 ? max : 1;
    atomic_init(&s->waiting, 0);
    ring_init(&s->waiters);
    ring_init(&s->idlers);
    s->kick = kick;
}

void tcp_slots_destroy(tcp_lane_slots *s)
{
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->drained);
}

bool tcp_slots_take(tcp_lane_slots *s, tcp_slot_node *n)
{
    pthread_mutex_lock(&s->lock);
    bool granted = s->live < s->max;
    if (granted) {
        s->live++;
    } else {
        ring_push(&s->waiters, n);
        n->list = SLOT_WAITING;
        atomic_fetch_add(&s->waiting, 1);
        /* The longest idle idle lane ends at once; it may also notice on its own. */
        if (s->idlers.next != &s->idlers) /* ring order: the first to sleep */
            s->kick(s->idlers.next->lane);
    }
    pthread_mutex_unlock(&s->lock);
    return granted;
}

void *tcp_slots_give(tcp_lane_slots *s)
{
    pthread_mutex_lock(&s->lock);
    void *heir = NULL;
    if (s->waiters.next != &s->waiters) {
        tcp_slot_node *n = s->waiters.next;
        ring_del(n);
        n->list = SLOT_NONE;
        atomic_fetch_sub(&s->waiting, 1);
        heir = n->lane; /* the slot changes hands: live stays */
    } else if (--s->live == 0) {
        pthread_cond_broadcast(&s->drained);
    }
    pthread_mutex_unlock(&s->lock);
    return heir;
}

void *tcp_slots_yield(tcp_lane_slots *s, tcp_slot_node *n)
{
    pthread_mutex_lock(&s->lock);
    ring_push(&s->waiters, n);
    n->list = SLOT_WAITING;
    tcp_slot_node *head = s->waiters.next;
    ring_del(head);
    head->list = SLOT_NONE;
    pthread_mutex_unlock(&s->lock);
    return head->lane;
}

void tcp_slots_idle_enter(tcp_lane_slots *s, tcp_slot_node *n)
{
    pthread_mutex_lock(&s->lock);
    ring_push(&s->idlers, n);
    n->list = SLOT_IDLE;
    pthread_mutex_unlock(&s->lock);
}

void tcp_slots_idle_leave(tcp_lane_slots *s, tcp_slot_node *n)
{
    pthread_mutex_lock(&s->lock);
    if (n->list == SLOT_IDLE) {
        ring_del(n);
        n->list = SLOT_NONE;
    }
    pthread_mutex_unlock(&s->lock);
}

void tcp_slots_wait_drained(tcp_lane_slots *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->live > 0)
        pthread_cond_wait(&s->drained, &s->lock);
    pthread_mutex_unlock(&s->lock);
}
