/* notify.c - notifications: those received from peers queue (bounded) until
 * te_notifies_drain(); te_notify_send() sends one to a peer's RPC port.  The
 * RPC handler that receives them is in rpc_builtin.c. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"

#define MAX_QUEUED_NOTIFIES 100000

void te_notify_deliver(te_host *h, const char *name, const char *msg)
{
    te_engine *e = te_engine_of(h);
    te_notify_node *n = calloc(1, sizeof *n);
    if (!n || !(n->name = strdup(name)) || !(n->msg = strdup(msg))) {
        if (n)
            free(n->name);
        free(n);
        te_log(TE_LOG_ERROR, "notify", "out of memory: notification dropped");
        return;
    }
    pthread_mutex_lock(&e->notify_lock);
    if (e->notify_count >= MAX_QUEUED_NOTIFIES) {
        pthread_mutex_unlock(&e->notify_lock);
        te_log(TE_LOG_WARN, "notify", "%d notifications not drained: dropping one from a peer",
               MAX_QUEUED_NOTIFIES);
        free(n->name);
        free(n->msg);
        free(n);
        return;
    }
    if (e->notify_tail)
        e->notify_tail->next = n;
    else
        e->notify_head = n;
    e->notify_tail = n;
    e->notify_count++;
    pthread_mutex_unlock(&e->notify_lock);
}

int te_notifies_drain(te_engine *e, te_notify **out, size_t *count)
{
    if (!e || !out || !count)
        return TE_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&e->notify_lock);
    te_notify_node *head = e->notify_head;
    e->notify_head = e->notify_tail = NULL;
    size_t taken = e->notify_count;
    e->notify_count = 0;
    pthread_mutex_unlock(&e->notify_lock);
    size_t n = 0;
    for (te_notify_node *p = head; p; p = p->next)
        n++;
    *out = NULL;
    *count = 0;
    te_notify *arr = n ? calloc(n, sizeof *arr) : NULL;
    if (n && !arr) {
        /* Put them back rather than lose them. */
        pthread_mutex_lock(&e->notify_lock);
        te_notify_node *tail = head;
        while (tail->next)
            tail = tail->next;
        tail->next = e->notify_head;
        e->notify_head = head;
        if (!e->notify_tail)
            e->notify_tail = tail;
        e->notify_count += taken;
        pthread_mutex_unlock(&e->notify_lock);
        return TE_ERR_MEMORY;
    }
    size_t i = 0;
    while (head) {
        te_notify_node *next = head->next;
        arr[i].name = head->name;
        arr[i].msg = head->msg;
        i++;
        free(head);
        head = next;
    }
    *out = arr;
    *count = n;
    return 0;
}

void te_notifies_free(te_notify *notifies, size_t count)
{
    for (size_t i = 0; notifies && i < count; i++) {
        free(notifies[i].name);
        free(notifies[i].msg);
    }
    free(notifies);
}

void te_notifies_clear(te_engine *e)
{
    te_notify *arr;
    size_t n;
    if (te_notifies_drain(e, &arr, &n) == 0)
        te_notifies_free(arr, n);
}

int te_notify_send(te_engine *e, te_segment *seg, const char *name, const char *msg)
{
    json_t *o = json_pack("{s:s, s:s}", "name", name, "notify_msg", msg);
    char *req = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!req)
        return TE_ERR_MEMORY;
    char *reply = NULL;
    int rc = te_rpc_call(seg->rpc_host, seg->rpc_port, TE_RPC_NOTIFY, req, strlen(req), &reply,
                         NULL, e->cfg.connect_timeout_ms, e->cfg.max_frame, e->cfg.auth_token);
    free(req);
    free(reply);
    if (rc)
        return te_fail(rc, "notification to %s failed", seg->desc->name);
    return 0;
}

int te_send_notify(te_engine *e, te_segment_id target, const char *name, const char *msg)
{
    if (!e || !name || !msg)
        return TE_ERR_INVALID_ARGUMENT;
    if (!e->initialized)
        return TE_ERR_STATE;
    te_segment *s;
    int rc = te_segment_get(e, target, false, &s);
    if (rc)
        return rc;
    rc = te_notify_send(e, s, name, msg);
    te_segment_put(s);
    return rc;
}
