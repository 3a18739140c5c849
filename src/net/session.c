/* Sessions: one connection, its receive, its send queue, and its close.
 *
 * Invariants (all under s->lock):
 *   - at most one receive in flight (rop), re-posted only after on_recv has
 *     returned, so on_recv sees the stream in order on any thread;
 *   - at most one send in flight (sq->op), written as one gathered write of
 *     the queue's first IOC__SEND_IOV_MAX chunks;
 *   - `inflight` counts this session's operations; the session is finalized
 *     (socket closed, on_close called, the core's reference dropped) by
 *     whichever completion brings it to zero in state CLOSING. Every path to
 *     the end - close, abort, EOF, reset, cancel, connect failure - goes
 *     through enter_closing() and finalize(), so on_close runs exactly once
 *     and after every other callback of the session has returned.
 * Backend calls (submit/cancel) happen under s->lock; backends never call
 * back into a session from inside them, so this cannot deadlock.
 */
#include "net.h"

#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <netinet/in.h>
#endif

static void session_dispatch(ioc__object_t *obj, ioc__op_t *op);
static void session_destroy(ioc__object_t *obj);
static const ioc__object_vtbl_t session_vtbl = {"session", session_dispatch, session_destroy};

/* ---- send queue ------------------------------------------------------------- */

static void free_chunks(ioc_session_t *s) {
  if (!s->sq) return;
  ioc__chunk_t *c = s->sq->head;
  while (c) {
    ioc__chunk_t *next = c->next;
    free(c);
    c = next;
  }
  s->sq->head = s->sq->tail = NULL;
}

static int ensure_sendq(ioc_session_t *s) {
  if (s->sq) return 0;
  s->sq = calloc(1, sizeof *s->sq);
  return s->sq ? 0 : IOC_ENOMEM;
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

/* Drops n written bytes from the head of the queue. */
static void consume(ioc__sendq_t *q, size_t n) {
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

static bool queue_empty(const ioc__sendq_t *q) {
  return !q || !q->head || (q->head == q->tail && q->head->off == q->head->len);
}

/* Frees the send state once nothing is queued or in flight. Called from
 * the send's own completion too: the op lives in the state, and nothing
 * reads an op after its dispatch. Under s->lock. */
static void release_sendq_if_idle(ioc_session_t *s) {
  if (!s->sq || s->send_posted || !queue_empty(s->sq)) return;
  free_chunks(s);
  free(s->sq);
  s->sq = NULL;
}

static void enter_closing(ioc_session_t *s, int err);

/* Starts one gathered write of the queue's head. Under s->lock. */
static void post_send(ioc_session_t *s) {
  ioc__sendq_t *q = s->sq;
  int n = 0;
  for (ioc__chunk_t *c = q->head; c && n < IOC__SEND_IOV_MAX; c = c->next) {
    if (c->len == c->off) continue;
    IOC__IOV_SET(&q->iov[n], c->data + c->off, c->len - c->off);
    n++;
  }
  if (n == 0) return;
  ioc__op_init(&q->op, IOC__OP_SEND, &s->obj, &s->h);
  q->op.u.send.iov = q->iov;
  q->op.u.send.iovcnt = n;
#ifndef _WIN32
  q->op.u.send.msg = &q->msg;
#endif
  s->inflight++;
  s->send_posted = true;
  int rc = ioc__op_submit(s->obj.core, &q->op);
  if (rc < 0) {
    s->inflight--;
    s->send_posted = false;
    enter_closing(s, rc);
  }
}

static void post_recv(ioc_session_t *s) {
  ioc__op_init(&s->rop, IOC__OP_RECV, &s->obj, &s->h);
  s->inflight++;
  s->recv_posted = true;
  int rc = ioc__op_submit(s->obj.core, &s->rop);
  if (rc < 0) {
    s->inflight--;
    s->recv_posted = false;
    enter_closing(s, rc);
  }
}

/* ---- closing ------------------------------------------------------------------ */

static void close_job(ioc__op_t *op);

/* The one way into CLOSING. Cancels what is in flight; if nothing is, queues
 * a job so the session is finalized from a dispatching thread. Under s->lock. */
static void enter_closing(ioc_session_t *s, int err) {
  if (s->state >= IOC__S_CLOSING) return;
  s->state = IOC__S_CLOSING;
  if (err && !s->close_err) s->close_err = err;
  s->pending = 0;
  ioc_core_t *core = s->obj.core;
  if (s->recv_posted || s->connect_posted) ioc__op_cancel(core, &s->rop);
  if (s->send_posted) ioc__op_cancel(core, &s->sq->op);
  if (s->inflight == 0) {
    s->inflight++;
    ioc__core_queue_job(core, &s->rop, &s->obj, close_job);
  }
}

static void linger_expired(ioc_timer_t *t, void *ud) {
  IOC__UNUSED(t);
  ioc_session_t *s = ud;
  ioc_session_abort(s);
  ioc__object_unref(&s->obj); /* the timer's reference */
}

/* All queued data is written: send FIN. If the peer already sent its own,
 * the conversation is over; otherwise keep reading until it does (or the
 * linger time passes). Under s->lock. */
static void shutdown_write(ioc_session_t *s) {
  int rc = ioc__socket_shutdown_write(s->h.fd);
  if (rc < 0 && rc != IOC_ENOTCONN) {
    enter_closing(s, rc);
    return;
  }
  if (s->peer_eof || rc == IOC_ENOTCONN) {
    enter_closing(s, 0);
    return;
  }
  s->state = IOC__S_SHUTDOWN;
  ioc__object_ref(&s->obj);
  if (ioc_timer_start(s->obj.core, IOC__LINGER_MS, 0, linger_expired, s, &s->linger) < 0) {
    ioc__object_unref(&s->obj);
    s->linger = NULL;
  }
}

/* The session is done: no operation is in flight and none will be posted. */
static void finalize(ioc_session_t *s) {
  ioc_core_t *core = s->obj.core;
  if (s->linger) {
    ioc_timer_t *t = s->linger;
    s->linger = NULL;
    /* Cancel takes the timer's callback away only if it had not started. */
    if (ioc__timer_cancel(t)) ioc__object_unref(&s->obj);
  }
  /* session:address() stays answerable in and after on_close. */
  if (!s->local) ioc_session_local(s);
  core->backend->del(core, &s->h);
  if (s->aborting) ioc__socket_set_linger_rst(s->h.fd);
  ioc__socket_close(core, s->h.fd);
  s->h.fd = IOC_BAD_FD;
  free_chunks(s);
  free(s->sq);
  s->sq = NULL;
  ioc__mutex_lock(&core->objects_lock);
  if (s->prev) s->prev->next = s->next; else core->sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  if (s->idle_timeout_ms) ioc__sweep_remove(core);
  ioc__mutex_unlock(&core->objects_lock);
  IOC__STAT_SUB(core, active, 1);
  IOC__STAT_ADD(core, closed, 1);
  if (s->listener) atomic_fetch_sub(&s->listener->nsessions, 1);
  if (s->cbs.on_close) s->cbs.on_close(s, s->close_err);
  ioc__object_unref(&s->obj); /* the core's reference */
}

/* Ends one operation's share of the session; finalizes on the last. */
static void op_done(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  bool fin = --s->inflight == 0 && s->state == IOC__S_CLOSING;
  if (fin) s->state = IOC__S_CLOSED;
  ioc__spin_unlock(&s->lock);
  if (fin) finalize(s);
}

static void close_job(ioc__op_t *op) { op_done(IOC__CONTAINER_OF(op, ioc_session_t, rop)); }

/* ---- completions ------------------------------------------------------------------ */

static void on_recv_done(ioc_session_t *s, ioc__op_t *op) {
  int res = op->res;
  bool deliver = false, eof = false;
  ioc__spin_lock(&s->lock);
  s->recv_posted = false;
  if (res > 0) {
    IOC__STAT_ADD(s->obj.core, bytes_in, res);
    s->last_recv_ms = (uint32_t)ioc__now_ms();
    deliver = s->state == IOC__S_OPEN; /* after close() the rest is discarded */
  } else if (res == 0) {
    s->peer_eof = true;
    if (s->state == IOC__S_OPEN) {
      if (s->cbs.on_eof) {
        eof = true; /* the owner replies, then closes */
      } else {
        /* The peer is done sending: finish ours (queued data, then FIN). */
        s->state = IOC__S_DRAINING;
        if (!s->send_posted && queue_empty(s->sq)) shutdown_write(s);
      }
    } else if (s->state == IOC__S_SHUTDOWN) {
      enter_closing(s, 0);
    }
  } else if (s->state < IOC__S_CLOSING) {
    enter_closing(s, res);
  }
  ioc__spin_unlock(&s->lock);

  if (deliver && s->cbs.on_recv) s->cbs.on_recv(s, op->buf, (size_t)res);
  if (eof) s->cbs.on_eof(s);

  ioc__spin_lock(&s->lock);
  if (!s->peer_eof && !s->recv_posted && s->state >= IOC__S_OPEN && s->state <= IOC__S_SHUTDOWN)
    post_recv(s);
  ioc__spin_unlock(&s->lock);
  op_done(s);
}

static void on_send_done(ioc_session_t *s, ioc__op_t *op) {
  int res = op->res;
  bool drain = false;
  ioc__spin_lock(&s->lock);
  s->send_posted = false;
  if (res > 0) {
    size_t asked = 0;
    for (int i = 0; i < op->u.send.iovcnt; i++) asked += IOC__IOV_LEN(&op->u.send.iov[i]);
    IOC__STAT_ADD(s->obj.core, bytes_out, res);
    if (s->state < IOC__S_CLOSING) {
      consume(s->sq, (size_t)res);
      s->pending -= (size_t)res;
      /* could not be written at once */
      if ((size_t)res < asked || (op->flags & IOC__OPF_SEND_WAITED)) s->want_drain = true;
    }
  } else if (res == 0) {
    res = IOC_EPIPE; /* nothing written for a non-empty write: never loop on it */
  }
  if (res < 0) {
    enter_closing(s, res);
  } else if (s->state < IOC__S_CLOSING) {
    if (!queue_empty(s->sq)) {
      post_send(s);
    } else if (s->state == IOC__S_DRAINING) {
      shutdown_write(s);
    } else if (s->want_drain && s->state == IOC__S_OPEN) {
      s->want_drain = false;
      /* One on_drain at a time per session: a send from another thread
       * can finish its write while one is still running elsewhere. */
      if (s->in_drain)
        s->drain_again = true;
      else
        drain = s->in_drain = true;
    }
  }
  if (s->state < IOC__S_CLOSING) release_sendq_if_idle(s); /* op is gone after this */
  ioc__spin_unlock(&s->lock);
  while (drain) {
    if (s->cbs.on_drain) s->cbs.on_drain(s);
    ioc__spin_lock(&s->lock);
    drain = s->drain_again && s->state == IOC__S_OPEN;
    s->drain_again = false;
    s->in_drain = drain;
    ioc__spin_unlock(&s->lock);
  }
  op_done(s);
}

static void on_connect_done(ioc_session_t *s, ioc__op_t *op) {
  ioc_core_t *core = s->obj.core;
  int res = op->res;
  ioc__spin_lock(&s->lock);
  s->connect_posted = false;
  if (res == 0 && s->state < IOC__S_CLOSING) {
    s->state = s->state == IOC__S_CONNECTING ? IOC__S_OPEN : s->state;
    ioc__socket_set_nodelay(s->h.fd);
    IOC__STAT_ADD(core, connected, 1);
  } else {
    if (res == 0) res = s->close_err ? s->close_err : IOC_ECANCELED;
    enter_closing(s, res);
  }
  ioc__spin_unlock(&s->lock);

  if (s->cbs.on_open) s->cbs.on_open(s, res);

  ioc__spin_lock(&s->lock);
  /* on_open may have closed the session already (SHUTDOWN: FIN sent, and
   * the receive is what notices the peer's FIN). */
  if (s->state >= IOC__S_OPEN && s->state <= IOC__S_SHUTDOWN) post_recv(s);
  if ((s->state == IOC__S_OPEN || s->state == IOC__S_DRAINING) && !s->send_posted) {
    if (!queue_empty(s->sq))
      post_send(s);
    else if (s->state == IOC__S_DRAINING)
      shutdown_write(s);
  }
  ioc__spin_unlock(&s->lock);
  op_done(s);
}

static void session_dispatch(ioc__object_t *obj, ioc__op_t *op) {
  ioc_session_t *s = IOC__CONTAINER_OF(obj, ioc_session_t, obj);
  switch (op->type) {
  case IOC__OP_RECV: on_recv_done(s, op); break;
  case IOC__OP_SEND: on_send_done(s, op); break;
  case IOC__OP_CONNECT: on_connect_done(s, op); break;
  default: op_done(s); break;
  }
}

static void session_destroy(ioc__object_t *obj) {
  ioc_session_t *s = IOC__CONTAINER_OF(obj, ioc_session_t, obj);
  if (s->local_owned) free((void *)s->local);
  if (s->listener) ioc__listener_unref(s->listener);
  free_chunks(s);
  free(s->sq);
  free(s);
}

static bool addr_is_wildcard(const ioc_addr_t *a) {
  static const unsigned char zero[16];
  if (a->u.family == AF_INET) {
    const struct sockaddr_in *in = (const void *)a->u.bytes;
    return in->sin_addr.s_addr == 0;
  }
  const struct sockaddr_in6 *in6 = (const void *)a->u.bytes;
  return memcmp(&in6->sin6_addr, zero, 16) == 0;
}

/* ---- creation ------------------------------------------------------------------------ */

static int session_new(ioc_core_t *core, ioc_fd_t fd, const ioc_session_options_t *o,
                       ioc_session_t **out) {
  ioc_session_t *s = calloc(1, sizeof *s);
  if (!s) return IOC_ENOMEM;
  ioc__object_init(&s->obj, core, &session_vtbl); /* the core's reference */
  /* A creation guard: the session is in core->sessions (close_all and the
   * idle sweep can reach it) before it is started. Counting the start as an
   * operation keeps a close from finalizing it underneath its creator;
   * ioc__session_start / ioc_connect release it. */
  s->inflight = 1;
  s->h.fd = fd;
  s->max_pending = o && o->max_pending ? o->max_pending : IOC__DEFAULT_MAX_PENDING;
  uint64_t idle = o ? o->idle_timeout_ms : 0;
  s->idle_timeout_ms = idle > UINT32_MAX ? UINT32_MAX : (uint32_t)idle;
  s->id = atomic_fetch_add(&core->next_id, 1);
  s->last_recv_ms = (uint32_t)ioc__now_ms();
  s->h.loop = (uint16_t)ioc__core_loop_for_new(core); /* pinned for life */
  int rc = core->backend->add(core, &s->h);
  if (rc < 0) {
    s->h.fd = IOC_BAD_FD;
    ioc__object_unref(&s->obj);
    return rc;
  }
  ioc__mutex_lock(&core->objects_lock);
  s->next = core->sessions;
  if (s->next) s->next->prev = s;
  core->sessions = s;
  if (s->idle_timeout_ms) ioc__sweep_add(core);
  ioc__mutex_unlock(&core->objects_lock);
  IOC__STAT_ADD(core, active, 1);
  *out = s;
  return 0;
}

int ioc__session_new_accepted(ioc_core_t *core, ioc_listener_t *l, ioc_fd_t fd,
                              const ioc_addr_t *peer, ioc_session_t **out) {
  ioc_session_t *s;
  int rc = session_new(core, fd, &l->opts.session, &s);
  if (rc < 0) return rc;
  s->state = IOC__S_OPEN;
  s->peer = *peer;
  if (!addr_is_wildcard(&l->addr)) s->local = &l->addr;
#ifdef _WIN32
  ioc__socket_set_nodelay(fd);
#endif /* Linux: accepted sockets inherit TCP_NODELAY from the listener */
  s->listener = l;
  ioc__listener_ref(l);
  atomic_fetch_add(&l->nsessions, 1);
  IOC__STAT_ADD(core, accepted, 1);
  *out = s;
  return 0;
}

/* For an accepted session, after on_accept: on_open, then the first receive.
 * Runs inside the listener's accept completion and ends the creation guard,
 * which also keeps a close() from inside the callbacks from finalizing
 * underneath. */
void ioc__session_start(ioc_session_t *s) {
  if (s->cbs.on_open) s->cbs.on_open(s, 0);
  ioc__spin_lock(&s->lock);
  if (s->state <= IOC__S_SHUTDOWN) post_recv(s);
  bool fin = --s->inflight == 0 && s->state == IOC__S_CLOSING;
  if (fin) s->state = IOC__S_CLOSED;
  ioc__spin_unlock(&s->lock);
  if (fin) finalize(s);
}

int ioc_connect(ioc_core_t *core, const char *address, size_t address_len,
                const ioc_session_callbacks_t *cbs, void *ud, const ioc_session_options_t *opts,
                ioc_session_t **out) {
  ioc_addr_t addr;
  if (!address) return IOC_EINVAL;
  int rc = ioc_addr_parse(&addr, address, address_len);
  if (rc < 0) return rc;
  ioc_fd_t fd;
  rc = ioc__socket_open(core, addr.u.family, &fd);
  if (rc < 0) return rc;
  ioc_session_t *s;
  rc = session_new(core, fd, opts, &s);
  if (rc < 0) {
    ioc__socket_close(core, fd);
    return rc;
  }
  s->outbound = true;
  s->state = IOC__S_CONNECTING;
  s->peer = addr;
  if (cbs) s->cbs = *cbs;
  s->ud = ud;
  if (out) {
    ioc__object_ref(&s->obj); /* the caller's, released with ioc_session_release */
    *out = s;
  }
  ioc__spin_lock(&s->lock);
  ioc__op_init(&s->rop, IOC__OP_CONNECT, &s->obj, &s->h);
  s->rop.u.connect.addr = addr;
  s->inflight++;
  s->connect_posted = true;
  rc = ioc__op_submit(core, &s->rop);
  if (rc < 0) {
    /* Never started: complete it as failed from a dispatching thread, so the
     * owner hears on_open(err) then on_close(err), as for any failure. */
    s->rop.res = rc;
    ioc__object_ref(&s->obj);
    IOC__STAT_ADD(core, ops_inflight, 1);
    ioc__core_defer(core, &s->rop);
  }
  /* End the creation guard. Not inline: on_close must come from dispatch. */
  if (--s->inflight == 0 && s->state == IOC__S_CLOSING) {
    s->inflight++;
    ioc__core_queue_job(core, &s->rop, &s->obj, close_job);
  }
  ioc__spin_unlock(&s->lock);
  return 0;
}

/* ---- the public session calls ------------------------------------------------------------ */

int ioc_session_sendv(ioc_session_t *s, const ioc_buf_t *bufs, size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += bufs[i].len;
  ioc__spin_lock(&s->lock);
  int rc = 0;
  if (s->state >= IOC__S_DRAINING) {
    rc = IOC_ECLOSED;
  } else if (total == 0) {
    rc = 0;
  } else if (s->pending + total > s->max_pending || s->pending + total < s->pending) {
    s->want_drain = true;
    rc = IOC_ENOBUFS;
  } else if ((rc = ensure_sendq(s)) == 0) {
    ioc__chunk_t *old_tail = s->sq->tail;
    uint32_t old_len = old_tail ? old_tail->len : 0;
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
    } else {
      if (s->pending > 0) s->want_drain = true; /* queued behind earlier data */
      s->pending += total;
      if (!s->send_posted && s->state == IOC__S_OPEN) post_send(s);
    }
  }
  ioc__spin_unlock(&s->lock);
  return rc;
}

int ioc_session_send(ioc_session_t *s, const void *data, size_t len) {
  ioc_buf_t b = {data, len};
  return ioc_session_sendv(s, &b, 1);
}

size_t ioc_session_pending(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  size_t n = s->pending;
  ioc__spin_unlock(&s->lock);
  return n;
}

void ioc_session_close(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  if (s->state == IOC__S_CONNECTING) {
    s->state = IOC__S_DRAINING; /* the connect completion carries on */
  } else if (s->state == IOC__S_OPEN) {
    s->state = IOC__S_DRAINING;
    if (!s->send_posted && queue_empty(s->sq)) shutdown_write(s);
  }
  ioc__spin_unlock(&s->lock);
}

void ioc_session_abort(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  if (s->state < IOC__S_CLOSED) {
    s->aborting = true;
    enter_closing(s, 0);
  }
  ioc__spin_unlock(&s->lock);
}

/* Used by the idle sweep and the Lua binding: close at once with a cause. */
void ioc__session_fail(ioc_session_t *s, int err) {
  ioc__spin_lock(&s->lock);
  if (s->state < IOC__S_CLOSING) {
    s->aborting = true;
    enter_closing(s, err);
  }
  ioc__spin_unlock(&s->lock);
}

void ioc_session_fail(ioc_session_t *s, int err) { ioc__session_fail(s, err > 0 ? -err : err); }

/* True once the owner closed or aborted the session (close(), abort(), a
 * handler error): the Lua binding then drops receive events still queued,
 * as the C side drops data arriving after close(). A close caused by the
 * peer (a reset after data) does not count: that data is delivered. */
bool ioc__session_closed_by_owner(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  bool r = s->aborting || s->state == IOC__S_DRAINING || s->state == IOC__S_SHUTDOWN;
  ioc__spin_unlock(&s->lock);
  return r;
}

int ioc_session_closed(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  int closed = s->state >= IOC__S_DRAINING;
  ioc__spin_unlock(&s->lock);
  return closed;
}

void ioc_session_set_callbacks(ioc_session_t *s, const ioc_session_callbacks_t *cbs, void *ud) {
  if (cbs)
    s->cbs = *cbs;
  else
    memset(&s->cbs, 0, sizeof s->cbs);
  s->ud = ud;
}

void *ioc_session_userdata(const ioc_session_t *s) { return s->ud; }
ioc_core_t *ioc_session_core(const ioc_session_t *s) { return s->obj.core; }
uint64_t ioc_session_id(const ioc_session_t *s) { return s->id; }
const ioc_addr_t *ioc_session_peer(const ioc_session_t *s) { return &s->peer; }
const ioc_addr_t *ioc_session_local(const ioc_session_t *s) {
  static const ioc_addr_t none; /* family 0: formats as EINVAL */
  ioc_session_t *m = (ioc_session_t *)s;
  ioc__spin_lock(&m->lock);
  if (!m->local && m->h.fd != IOC_BAD_FD) {
    ioc_addr_t *a = calloc(1, sizeof *a);
    if (a && ioc__socket_local_addr(m->h.fd, a) == 0) {
      m->local = a;
      m->local_owned = true;
    } else {
      free(a);
    }
  }
  const ioc_addr_t *r = m->local ? m->local : &none;
  ioc__spin_unlock(&m->lock);
  return r;
}
void *ioc_session_user(const ioc_session_t *s) { return s->user; }
void ioc_session_set_user(ioc_session_t *s, void *p) { s->user = p; }
void ioc_session_retain(ioc_session_t *s) { ioc__object_ref(&s->obj); }
void ioc_session_release(ioc_session_t *s) { ioc__object_unref(&s->obj); }

/* Declared for the edge API; implemented next (each returns IOC_ENOSYS or
 * does nothing until then). */
int ioc_session_shutdown(ioc_session_t *s) {
  IOC__UNUSED(s);
  return IOC_ENOSYS;
}
void ioc_session_pause(ioc_session_t *s) { IOC__UNUSED(s); }
void ioc_session_resume(ioc_session_t *s) { IOC__UNUSED(s); }
int ioc_session_paused(const ioc_session_t *s) {
  IOC__UNUSED(s);
  return 0;
}
int ioc_session_set_timeout(ioc_session_t *s, ioc_timeout_t which, uint64_t ms) {
  IOC__UNUSED(s);
  IOC__UNUSED(which);
  IOC__UNUSED(ms);
  return IOC_ENOSYS;
}
