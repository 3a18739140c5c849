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

/* The copied bytes of a chunk that owns them (they follow its header). */
static char *owned_bytes(ioc__chunk_t *c) { return (char *)(c + 1); }

/* Frees a chunk of q's (the state's own reference slot is only marked
 * free). */
static void chunk_free(ioc__sendq_t *q, ioc__chunk_t *c) {
  ioc_buffer_release(c->ref); /* NULL for copied bytes */
  if (c == &q->ref_slot)
    q->ref_slot_used = false;
  else
    free(c);
}

static void free_all(ioc__sendq_t *sq, ioc__queue_t *q) {
  ioc__qnode_t *n;
  while ((n = ioc__queue_pop(q)) != NULL) chunk_free(sq, chunk_of(n));
}

/* Send states kept per loop for reuse, at most this many (about 680 KiB). */
#define SQ_CACHE_MAX 1024

static ioc__loop_t *loop_of(ioc_session_t *s) { return s->obj.core->loops[s->h.loop]; }

/* A send state from the loop's cache, or a new one. Not zeroed: post_send
 * sets up the op, the backend its msghdr or OVERLAPPED, gather the iovs;
 * only the queue needs a start. */
static ioc__sendq_t *sq_get(ioc_session_t *s) {
  ioc__loop_t *l = loop_of(s);
  ioc__sendq_t *q = NULL;
  ioc__spin_lock(&l->sq_lock);
  if (l->sq_free) {
    q = l->sq_free;
    l->sq_free = *(void **)q;
    l->sq_nfree--;
  }
  ioc__spin_unlock(&l->sq_lock);
  if (!q && !(q = malloc(sizeof *q))) return NULL;
  ioc__queue_init(&q->chunks);
  q->ref_slot_used = false;
  q->pending = 0;
  return q;
}

void ioc__sendq_release(ioc_session_t *s) {
  ioc__sendq_t *q = s->sq;
  if (!q) return;
  s->sq = NULL;
  free_all(q, &q->chunks);
  ioc__loop_t *l = loop_of(s);
  ioc__spin_lock(&l->sq_lock);
  if (l->sq_nfree < SQ_CACHE_MAX) {
    *(void **)q = l->sq_free;
    l->sq_free = q;
    l->sq_nfree++;
    q = NULL;
  }
  ioc__spin_unlock(&l->sq_lock);
  free(q);
}

void ioc__sendq_cache_free(ioc__loop_t *l) {
  void *q = l->sq_free;
  while (q) {
    void *next = *(void **)q;
    free(q);
    q = next;
  }
  l->sq_free = NULL;
  l->sq_nfree = 0;
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
    memcpy(owned_bytes(t) + t->len, p, n);
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
    c->base = owned_bytes(c);
    c->off = 0;
    c->len = (uint32_t)n;
    c->cap = (uint32_t)cap;
    memcpy(owned_bytes(c), p, n);
    ioc__queue_push(add, &c->qn);
    p += n;
    len -= n;
  }
  return 0;
}

/* Queues references to b on `add`: one chunk per CHUNK_MAX bytes, each
 * holding a reference of its own; the first in the state's slot if free. */
static int queue_ref(ioc__sendq_t *q, ioc__queue_t *add, ioc_buffer_t *b) {
  const char *p = ioc_buffer_data(b);
  size_t len = ioc_buffer_len(b);
  while (len > 0) {
    ioc__chunk_t *c;
    if (!q->ref_slot_used) {
      c = &q->ref_slot;
      q->ref_slot_used = true;
    } else if (!(c = malloc(sizeof *c))) {
      return IOC_ENOMEM;
    }
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
  if (!s->sq && !(s->sq = sq_get(s))) return IOC_ENOMEM;
  ioc__queue_t *q = &s->sq->chunks;
  ioc__queue_t add = IOC__QUEUE_INIT;
  ioc__chunk_t *old_tail = q->tail ? chunk_of(q->tail) : NULL;
  uint32_t old_len = old_tail ? old_tail->len : 0;
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    if (refs && refs[i])
      rc = queue_ref(s->sq, &add, refs[i]);
    else if (bufs[i].len)
      rc = queue_bytes(q, &add, bufs[i].base, bufs[i].len);
  }
  if (rc < 0) {
    /* Out of memory part-way: take back what this call queued. */
    free_all(s->sq, &add);
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
    chunk_free(q, c);
  }
}

bool ioc__sendq_empty(const ioc__sendq_t *q) {
  if (!q || ioc__queue_empty(&q->chunks)) return true;
  ioc__chunk_t *h = chunk_of(q->chunks.head);
  return q->chunks.head == q->chunks.tail && h->off == h->len;
}

void ioc__sendq_release_if_idle(ioc_session_t *s) {
  if (!s->sq || s->send_posted || !ioc__sendq_empty(s->sq)) return;
  ioc__sendq_release(s);
}
