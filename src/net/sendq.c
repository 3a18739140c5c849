/* A session's send queue: a FIFO (queue.h) of chunks, each either bytes
 * copied in or a reference to a shared buffer (buffer.c), written head
 * first by one gathered send at a time (session.c). Allocated when the
 * queue goes from empty to non-empty and freed when it drains. Callers
 * hold s->lock. */
#include "net.h"

#include <stdlib.h>
#include <string.h>

/* Largest piece of one chunk: a chunk's offsets are 32-bit, and a gathered
 * write's lengths are too on Windows. */
#define CHUNK_MAX ((size_t)1 << 30)

static ioc__chunk_t *chunk_of(ioc__qnode_t *n) { return IOC__QUEUE_DATA(n, ioc__chunk_t, qn); }

static void chunk_free(ioc__chunk_t *c) {
  ioc_buffer_release(c->ref); /* NULL for copied bytes */
  free(c);
}

static void free_all(ioc__queue_t *q) {
  ioc__qnode_t *n;
  while ((n = ioc__queue_pop(q)) != NULL) chunk_free(chunk_of(n));
}

void ioc__sendq_free_chunks(ioc_session_t *s) {
  if (s->sq) free_all(&s->sq->chunks);
}

/* The chunk new bytes may be copied into: the last of `add` (this call's),
 * else the queue's tail. */
static ioc__chunk_t *last_chunk(ioc__queue_t *q, ioc__queue_t *add) {
  ioc__qnode_t *n = add->tail ? add->tail : q->tail;
  return n ? chunk_of(n) : NULL;
}

/* Copies len bytes: into the last chunk's free room first (small writes
 * coalesce; the bytes already handed to an in-flight send lie before
 * len and are not touched), then into new chunks on `add`. */
static int queue_bytes(ioc__queue_t *q, ioc__queue_t *add, const char *p, size_t len) {
  ioc__chunk_t *t = last_chunk(q, add);
  if (t && t->cap > t->len) {
    size_t room = t->cap - t->len, n = len < room ? len : room;
    memcpy(t->data + t->len, p, n);
    t->len += (uint32_t)n;
    p += n;
    len -= n;
  }
  while (len > 0) {
    size_t cap = len < IOC__CHUNK_SMALL ? IOC__CHUNK_SMALL : len;
    if (cap > CHUNK_MAX) cap = CHUNK_MAX;
    ioc__chunk_t *c = malloc(sizeof *c + cap);
    if (!c) return IOC_ENOMEM;
    size_t n = len < cap ? len : cap;
    c->ref = NULL;
    c->base = c->data;
    c->off = 0;
    c->len = (uint32_t)n;
    c->cap = (uint32_t)cap;
    memcpy(c->data, p, n);
    ioc__queue_push(add, &c->qn);
    p += n;
    len -= n;
  }
  return 0;
}

/* Queues references to b on `add`: one chunk per CHUNK_MAX bytes, each
 * holding a reference of its own. */
static int queue_ref(ioc__queue_t *add, ioc_buffer_t *b) {
  const char *p = ioc_buffer_data(b);
  size_t len = ioc_buffer_len(b);
  while (len > 0) {
    ioc__chunk_t *c = malloc(sizeof *c);
    if (!c) return IOC_ENOMEM;
    size_t n = len < CHUNK_MAX ? len : CHUNK_MAX;
    c->ref = ioc_buffer_retain(b);
    c->base = p;
    c->off = 0;
    c->len = (uint32_t)n;
    c->cap = 0;
    ioc__queue_push(add, &c->qn);
    p += n;
    len -= n;
  }
  return 0;
}

int ioc__sendq_append(ioc_session_t *s, const ioc_buf_t *bufs, ioc_buffer_t *const *refs, size_t n) {
  if (!s->sq && !(s->sq = calloc(1, sizeof *s->sq))) return IOC_ENOMEM;
  ioc__queue_t *q = &s->sq->chunks;
  ioc__queue_t add = IOC__QUEUE_INIT;
  ioc__chunk_t *old_tail = q->tail ? chunk_of(q->tail) : NULL;
  uint32_t old_len = old_tail ? old_tail->len : 0;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (refs && refs[i])
      rc = queue_ref(&add, refs[i]);
    else if (bufs[i].len)
      rc = queue_bytes(q, &add, bufs[i].base, bufs[i].len);
  }
  if (rc < 0) {
    /* Out of memory part-way: take back what this call queued. */
    free_all(&add);
    if (old_tail) old_tail->len = old_len;
    return rc;
  }
  ioc__queue_append(q, &add);
  return 0;
}

int ioc__sendq_gather(ioc__sendq_t *q, ioc__iov_t *iov, int max) {
  int n = 0;
  for (ioc__qnode_t *node = ioc__queue_head(&q->chunks); node && n < max; node = node->next) {
    ioc__chunk_t *c = chunk_of(node);
    if (c->len == c->off) continue;
    IOC__IOV_SET(&iov[n], c->base + c->off, c->len - c->off);
    n++;
  }
  return n;
}

void ioc__sendq_consume(ioc__sendq_t *q, size_t n) {
  ioc__qnode_t *node;
  while (n > 0 && (node = ioc__queue_head(&q->chunks)) != NULL) {
    ioc__chunk_t *c = chunk_of(node);
    size_t avail = c->len - c->off;
    if (n < avail) {
      c->off += (uint32_t)n; /* a partial write: within a copy or a buffer alike */
      return;
    }
    n -= avail;
    ioc__queue_pop(&q->chunks);
    chunk_free(c);
  }
}

bool ioc__sendq_empty(const ioc__sendq_t *q) {
  if (!q || ioc__queue_empty(&q->chunks)) return true;
  ioc__chunk_t *h = chunk_of(q->chunks.head);
  return q->chunks.head == q->chunks.tail && h->off == h->len;
}

void ioc__sendq_release_if_idle(ioc_session_t *s) {
  if (!s->sq || s->send_posted || !ioc__sendq_empty(s->sq)) return;
  ioc__sendq_free_chunks(s);
  free(s->sq);
  s->sq = NULL;
}
