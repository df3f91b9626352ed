/* tcp_lane_slots.h - the bound on lane threads of one tcp transport
 * (MC_TCP_MAX_LANE_THREADS).  A lane needs a slot to run its thread; with
 * none free it waits in a FIFO, an idle lane is asked to end at once, and a
 * thread that ends hands its slot straight to the longest waiting lane. */
#ifndef TCP_LANE_SLOTS_H
#define TCP_LANE_SLOTS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* A lane's place in the slot lists; lives inside the lane. */
typedef struct tcp_slot_node {
    struct tcp_slot_node *next, *prev;
    void *lane;
    int list; /* SLOT_NONE, SLOT_WAITING or SLOT_IDLE (slots.lock) */
} tcp_slot_node;

typedef struct tcp_lane_slots {
    pthread_mutex_t lock;
    pthread_cond_t drained; /* live reached 0 */
    int live;               /* slots held: lane threads running or being started */
    int max;                /* MC_TCP_MAX_LANE_THREADS */
    atomic_int waiting;     /* lanes in the FIFO */
    tcp_slot_node waiters;  /* FIFO head (a ring through next/prev) */
    tcp_slot_node idlers;   /* lanes asleep without work, whose threads may end */
    /* Wakes an idle lane's thread (called under lock, the lane is in idlers). */
    void (*kick)(void *lane);
} tcp_lane_slots;

void tcp_slots_init(tcp_lane_slots *s, int max, void (*kick)(void *lane));
void tcp_slots_destroy(tcp_lane_slots *s);

/* A slot for a lane whose thread is about to start: true when granted;
 * false when the lane joined the waiters (it starts once handed a slot, and
 * one idle lane was asked to end). */
bool tcp_slots_take(tcp_lane_slots *s, tcp_slot_node *n);

/* A lane thread ends: the waiter that inherits its slot (the caller starts
 * it), or NULL when none waits and the slot is free again. */
void *tcp_slots_give(tcp_lane_slots *s);

/* A busy lane's thread gives way: the lane joins the back of the FIFO and
 * its slot goes to the head waiter, returned (the caller starts it; it may
 * be the lane itself when nobody else waited). */
void *tcp_slots_yield(tcp_lane_slots *s, tcp_slot_node *n);

/* An idle lane's thread goes to sleep / wakes up. */
void tcp_slots_idle_enter(tcp_lane_slots *s, tcp_slot_node *n);
void tcp_slots_idle_leave(tcp_lane_slots *s, tcp_slot_node *n);

/* Lanes wait for a thread: idle ones should end, busy ones yield soon. */
static inline bool tcp_slots_contended(tcp_lane_slots *s)
{
    return atomic_load_explicit(&s->waiting, memory_order_relaxed) > 0;
}

/* Waits until every slot is free (transport destroy: peers are closed). */
void tcp_slots_wait_drained(tcp_lane_slots *s);

#endif
