/* One intrusive FIFO for every list of waiting things in the core and the
 * backends (the ready queue, io_uring's backlog and starved receives, epoll's
 * per-handle read and write queues, the lists a runner builds).
 *
 * A queue is a head and a tail; a node is one pointer embedded in the item
 * (an op's `qn`), turned back into its item with IOC__QUEUE_DATA. Nothing
 * here allocates or locks: the owner of a queue says which lock guards it.
 * A node is in at most one queue at a time; pop and remove clear its link,
 * so a node that is in no queue always has next == NULL.
 *
 * Singly linked on purpose: push, push_front, pop, take and append are O(1)
 * and a node costs one pointer (an op lives in every session). remove is
 * O(n) and is only used on the short lists of one handle or on cancel.
 */
#ifndef IOC_QUEUE_H
#define IOC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ioc__qnode {
  struct ioc__qnode *next;
} ioc__qnode_t;

typedef struct ioc__queue {
  ioc__qnode_t *head, *tail;
} ioc__queue_t;

#define IOC__QUEUE_INIT {NULL, NULL}
/* The item a node is embedded in: IOC__QUEUE_DATA(n, ioc__op_t, qn). */
#define IOC__QUEUE_DATA(node, type, field) ((type *)((char *)(node) - offsetof(type, field)))

static inline void ioc__queue_init(ioc__queue_t *q) { q->head = q->tail = NULL; }

static inline bool ioc__queue_empty(const ioc__queue_t *q) { return q->head == NULL; }

static inline ioc__qnode_t *ioc__queue_head(const ioc__queue_t *q) { return q->head; }

/* Appends n at the tail. */
static inline void ioc__queue_push(ioc__queue_t *q, ioc__qnode_t *n) {
  n->next = NULL;
  if (q->tail)
    q->tail->next = n;
  else
    q->head = n;
  q->tail = n;
}

/* Puts n back at the head (an item taken out and not finished with). */
static inline void ioc__queue_push_front(ioc__queue_t *q, ioc__qnode_t *n) {
  n->next = q->head;
  q->head = n;
  if (!q->tail) q->tail = n;
}

/* Takes the head off, or returns NULL on an empty queue. */
static inline ioc__qnode_t *ioc__queue_pop(ioc__queue_t *q) {
  ioc__qnode_t *n = q->head;
  if (n) {
    q->head = n->next;
    if (!q->head) q->tail = NULL;
    n->next = NULL;
  }
  return n;
}

/* Unlinks n; false (and nothing changed) if n is not in q. O(length). */
static inline bool ioc__queue_remove(ioc__queue_t *q, ioc__qnode_t *n) {
  ioc__qnode_t *prev = NULL;
  for (ioc__qnode_t *cur = q->head; cur; prev = cur, cur = cur->next) {
    if (cur != n) continue;
    if (prev)
      prev->next = cur->next;
    else
      q->head = cur->next;
    if (q->tail == cur) q->tail = prev;
    cur->next = NULL;
    return true;
  }
  return false;
}

/* Moves every node of q into the returned queue, leaving q empty (to walk a
 * batch without the lock that guards q). */
static inline ioc__queue_t ioc__queue_take(ioc__queue_t *q) {
  ioc__queue_t all = *q;
  q->head = q->tail = NULL;
  return all;
}

/* Moves every node of from to the tail of q, in order; from ends empty. */
static inline void ioc__queue_append(ioc__queue_t *q, ioc__queue_t *from) {
  if (!from->head) return;
  if (q->tail)
    q->tail->next = from->head;
  else
    q->head = from->head;
  q->tail = from->tail;
  from->head = from->tail = NULL;
}

#endif /* IOC_QUEUE_H */
