/* A session's send queue: chunks of copied bytes, written head first by one
 * gathered send at a time (session.c). Allocated when the queue goes from
 * empty to non-empty and freed when it drains. Callers hold s->lock. */
#include "net.h"

#include <stdlib.h>
#include <string.h>

void ioc__sendq_free_chunks(ioc_session_t *s) {
  if (!s->sq) return;
  ioc__chunk_t *c = s->sq->head;
  while (c) {
    ioc__chunk_t *next = c->next;
    free(c);
    c = next;
  }
  s->sq->head = s->sq->tail = NULL;
}

/* Appends len bytes, filling the tail chunk's free space first (small
 * writes coalesce; the bytes already handed to an in-flight send lie before
 * tail->len and are not touched). */
static int queue_bytes(ioc__sendq_t *q, const char *p, size_t len) {
  ioc__chunk_t *t = q->tail;
  if (t && t->cap > t->len) {
    size_t room = t->cap - t->len, n = len < room ? len : room;
    memcpy(t->data + t->len, p, n);
    t->len += (uint32_t)n;
    p += n;
    len -= n;
  }
  while (len > 0) {
    size_t cap = len < IOC__CHUNK_SMALL ? IOC__CHUNK_SMALL : len;
    if (cap > ((size_t)1 << 30)) cap = (size_t)1 << 30;
    ioc__chunk_t *c = malloc(sizeof *c + cap);
    if (!c) return IOC_ENOMEM;
    size_t n = len < cap ? len : cap;
    c->next = NULL;
    c->off = 0;
    c->len = (uint32_t)n;
    c->cap = (uint32_t)cap;
    memcpy(c->data, p, n);
    if (q->tail)
      q->tail->next = c;
    else
      q->head = c;
    q->tail = c;
    p += n;
    len -= n;
  }
  return 0;
}

int ioc__sendq_append(ioc_session_t *s, const ioc_buf_t *bufs, size_t n) {
  if (!s->sq && !(s->sq = calloc(1, sizeof *s->sq))) return IOC_ENOMEM;
  ioc__chunk_t *old_tail = s->sq->tail;
  uint32_t old_len = old_tail ? old_tail->len : 0;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++)
    if (bufs[i].len) rc = queue_bytes(s->sq, bufs[i].base, bufs[i].len);
  if (rc < 0) {
    /* Out of memory part-way: take back what this call queued. */
    ioc__chunk_t *c = old_tail ? old_tail->next : s->sq->head;
    while (c) {
      ioc__chunk_t *next = c->next;
      free(c);
      c = next;
    }
    if (old_tail) {
      old_tail->len = old_len;
      old_tail->next = NULL;
    } else {
      s->sq->head = NULL;
    }
    s->sq->tail = old_tail;
  }
  return rc;
}

void ioc__sendq_consume(ioc__sendq_t *q, size_t n) {
  while (n > 0 && q->head) {
    ioc__chunk_t *c = q->head;
    size_t avail = c->len - c->off;
    if (n < avail) {
      c->off += (uint32_t)n;
      return;
    }
    n -= avail;
    q->head = c->next;
    if (!q->head) q->tail = NULL;
    free(c);
  }
}

bool ioc__sendq_empty(const ioc__sendq_t *q) {
  return !q || !q->head || (q->head == q->tail && q->head->off == q->head->len);
}

void ioc__sendq_release_if_idle(ioc_session_t *s) {
  if (!s->sq || s->send_posted || !ioc__sendq_empty(s->sq)) return;
  ioc__sendq_free_chunks(s);
  free(s->sq);
  s->sq = NULL;
}
