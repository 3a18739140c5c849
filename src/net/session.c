/* Sessions: one connection, its receive, its send queue, and its close.
 * They are made by connect.c (outbound: ioc_connect) and accepted.c
 * (inbound, with the PROXY header when the listener asks for one).
 * Their settings and properties (time-outs, callbacks, addresses) are in
 * session_props.c.
 *
 * Invariants (all under s->lock):
 *   - at most one receive in flight (rop), re-posted only after on_recv has
 *     returned, so on_recv sees the stream in order on any thread. rop is
 *     also the connect, the job that delivers bytes held while paused, and
 *     the final close job; recv_wanted()/kick_recv() only reuse it when all
 *     of those are done;
 *   - at most one send in flight (sq->op), written as one gathered write of
 *     the queue's first IOC__SEND_IOV_MAX chunks. Once the queue is empty
 *     for good (closing or half-closed), sq->op is also the asynchronous
 *     shutdown where the backend offers one (fin == IOC__FIN_POSTED);
 *   - `inflight` counts this session's operations; the session is finalized
 *     (socket closed, on_close called, the core's reference dropped) by
 *     whichever completion brings it to zero in state CLOSING. Every path to
 *     the end - close, abort, EOF, reset, cancel, connect failure, time-out -
 *     goes through enter_closing() and ioc__session_finalize(), so on_close
 *     runs exactly once and after every other callback of the session has
 *     returned.
 * A graceful end (close, or half-close plus the peer's FIN) goes through
 * advance_close(): queued data, then our FIN, then waiting for the peer's
 * FIN and for the peer to acknowledge what it has not yet (timeout.c watches
 * the progress and gives up after close_timeout_ms without any).
 * Backend calls (submit/cancel) happen under s->lock; backends never call
 * back into a session from inside them, so this cannot deadlock.
 */
#include "net.h"
#include "address.h"
#include "framing.h"

#include <stdlib.h>
#include <string.h>

static void session_dispatch(ioc__object_t *obj, ioc__op_t *op);
static void session_destroy(ioc__object_t *obj);
static const ioc__object_vtbl_t session_vtbl = {"session", session_dispatch, session_destroy};

static void enter_closing(ioc_session_t *s, int err);

/* Starts one gathered write of the queue's head. Under s->lock. */
static void post_send(ioc_session_t *s) {
  ioc__sendq_t *q = s->sq;
  int n = ioc__sendq_gather(q, q->iov, IOC__SEND_IOV_MAX);
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

/* Whether a corked session's queue must wait for ioc_session_uncork: yes
 * until IOC_CORK_MAX bytes are queued (a long reply goes out while it is
 * still being written). Under s->lock. */
static bool must_wait_cork(const ioc_session_t *s) {
  return s->corked && s->sq->pending < IOC_CORK_MAX;
}

/* Uncorks s and starts the write of what the cork held back. Under s->lock. */
static void flush_cork(ioc_session_t *s) {
  s->corked = false;
  if (!s->send_posted && s->state < IOC__S_CLOSING && s->state != IOC__S_CONNECTING && !ioc__sendq_empty(s->sq))
    post_send(s);
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

static void resume_job(ioc__op_t *op);

/* Starts what reading needs next, if rop is free: the delivery of bytes
 * held while paused (as a job, so it runs on a dispatching thread), or the
 * next receive. Reading goes on while the session is open and not paused,
 * and after close() until the peer's FIN (discarding). Under s->lock. */
static void kick_recv(ioc_session_t *s) {
  if (s->recv_posted || s->recv_busy || s->resume_queued || s->connect_posted || s->resolving)
    return;
  /* (a framer paused by a close stays so: reading after close() only
   * discards until the peer's FIN) */
  if (s->has_held || (s->framer && s->framer->paused && s->state == IOC__S_OPEN)) {
    if (s->state == IOC__S_OPEN && !s->paused) {
      s->resume_queued = true;
      s->inflight++;
      ioc__core_queue_job(s->obj.core, &s->rop, &s->obj, resume_job);
    }
    return;
  }
  if (s->peer_eof) return;
  if ((s->state == IOC__S_OPEN && !s->paused) || s->state == IOC__S_DRAINING ||
      s->state == IOC__S_SHUTDOWN)
    post_recv(s);
}

void ioc__session_kick_recv(ioc_session_t *s) { kick_recv(s); }

/* ---- closing ------------------------------------------------------------------ */


/* The one way into CLOSING. Cancels what is in flight; if nothing is, queues
 * a job so the session is finalized from a dispatching thread. Under s->lock. */
static void enter_closing(ioc_session_t *s, int err) {
  if (s->state >= IOC__S_CLOSING) return;
  s->state = IOC__S_CLOSING;
  if (err && !s->close_err) s->close_err = err;
  if (s->sq) s->sq->pending = 0;
  ioc_core_t *core = s->obj.core;
  if (s->recv_posted || s->connect_posted) ioc__op_cancel(core, &s->rop);
  if (s->send_posted || s->fin == IOC__FIN_POSTED) ioc__op_cancel(core, &s->sq->op);
  if (s->inflight == 0) {
    s->inflight++;
    ioc__core_queue_job(core, &s->rop, &s->obj, ioc__session_close_job);
  }
}

void ioc__session_enter_closing(ioc_session_t *s, int err) { enter_closing(s, err); }

/* Both FINs are out. Where the kernel tells how much the peer has not
 * acknowledged yet (beyond our FIN), wait for it (the sweep ends the
 * session when it is in, or after close_timeout_ms without progress);
 * else end now: closing the socket does not lose what the kernel still
 * sends. Under s->lock. */
void ioc__session_finish_graceful(ioc_session_t *s) {
  /* The common end (the peer has everything) needs only the queue's size;
   * the acknowledged count is the baseline of a wait, so only then. */
  int q = ioc__socket_send_state(s->h.fd, NULL);
  if (q > 1) {
    uint64_t acked;
    int q2 = ioc__socket_send_state(s->h.fd, &acked);
    s->state = IOC__S_SHUTDOWN;
    s->last_unacked = q2 >= 0 ? q2 : q;
    if (q2 >= 0 && acked != UINT64_MAX) s->last_acked = (uint32_t)acked;
    s->progress_ms = ioc__now32();
    ioc__timed_add(s);
  } else {
    enter_closing(s, 0);
  }
}

/* The result of our shutdown(SHUT_WR): true when the FIN is queued. On
 * ENOTCONN the peer is gone already and nothing is left to send: the
 * session ends cleanly; any other error ends it with that error. Under
 * s->lock. */
static bool fin_result(ioc_session_t *s, int rc) {
  if (rc < 0) {
    s->fin = IOC__FIN_NONE;
    enter_closing(s, rc == IOC_ENOTCONN ? 0 : rc);
    return false;
  }
  s->fin = IOC__FIN_SENT;
  s->progress_ms = ioc__now32();
  return true;
}

/* Starts the FIN: through the backend's asynchronous shutdown on sq->op
 * when it has one (returns false: the completion carries on, in
 * on_shutdown_done), else (or when that cannot start) with the syscall
 * (returns fin_result's answer). The queue is empty and no send is in
 * flight. Under s->lock. */
static bool send_fin(ioc_session_t *s) {
  ioc_core_t *core = s->obj.core;
  if (core->backend->shutdown && (s->sq || (s->sq = calloc(1, sizeof *s->sq)))) {
    ioc__op_init(&s->sq->op, IOC__OP_SHUTDOWN, &s->obj, &s->h);
    s->inflight++;
    s->fin = IOC__FIN_POSTED;
    if (ioc__op_submit(core, &s->sq->op) == 0) return false;
    s->inflight--;
    s->fin = IOC__FIN_NONE;
  }
  return fin_result(s, ioc__socket_shutdown_write(s->h.fd));
}

/* Moves on a session whose owner is done writing (close: DRAINING or
 * SHUTDOWN; half-close: `half` while OPEN): FIN once the queue is empty,
 * then the end once the peer's FIN is in too. Under s->lock. */
static void advance_close(ioc_session_t *s) {
  bool closing = s->state == IOC__S_DRAINING || s->state == IOC__S_SHUTDOWN;
  if (!closing && !(s->half && s->state == IOC__S_OPEN)) return;
  if (s->fin != IOC__FIN_SENT) {
    if (s->fin == IOC__FIN_POSTED || s->send_posted || !ioc__sendq_empty(s->sq)) return;
    if (s->peer_eof && ioc__socket_send_state(s->h.fd, NULL) == 0) {
      /* The peer's FIN is in (nothing is unread and nothing more can come,
       * so closing sends no reset) and the peer has acknowledged every
       * byte: close() alone sends our FIN and loses nothing, so neither a
       * separate shutdown nor a wait for acknowledgements is needed. */
      enter_closing(s, 0);
      return;
    }
    if (!send_fin(s)) return;
  }
  if (s->peer_eof) {
    ioc__session_finish_graceful(s);
  } else if (s->state == IOC__S_DRAINING) {
    s->state = IOC__S_SHUTDOWN;
    ioc__timed_add(s);
  }
}

/* The owner is done with the session (close, or the peer's FIN without
 * on_eof): the rest goes out, then FIN. Under s->lock, state OPEN. */
static void begin_close(ioc_session_t *s) {
  flush_cork(s); /* closing writes what is queued: a cork cannot hold it */
  s->state = IOC__S_DRAINING;
  s->progress_ms = ioc__now32();
  if (s->has_held) {
    /* The owner closed: held bytes are discarded like any that come later;
     * a held FIN still counts. */
    if (!s->held) s->peer_eof = true;
    free(s->held);
    s->held = NULL;
    s->has_held = false;
  }
  advance_close(s);
  if (s->state == IOC__S_DRAINING) ioc__timed_add(s);
  kick_recv(s);
}

/* The session is done: no operation is in flight and none will be posted. */
void ioc__session_finalize(ioc_session_t *s) {
  ioc_core_t *core = s->obj.core;
  ioc__timed_remove(s);
  /* session:address() stays answerable in and after on_close. */
  if (!s->local) ioc_session_local(s);
  /* Other threads may still call in (pending(), pause()): the flag bits
   * share words, and the send state goes, so both under the lock. */
  ioc__spin_lock(&s->lock);
  bool rst = s->aborting;
  ioc__spin_unlock(&s->lock);
  if (s->h.fd != IOC_BAD_FD) { /* none when a host name never resolved */
    if (rst) ioc__socket_set_linger_rst(s->h.fd);
    ioc__socket_close_handle(core, &s->h); /* nothing refers to it any more */
  }
  s->h.fd = IOC_BAD_FD;
  ioc__spin_lock(&s->lock);
  ioc__sendq_release(s);
  void *rare = s->held; /* or the PROXY reader: they share the pointer */
  s->held = NULL;
  s->in_header = false;
  ioc__spin_unlock(&s->lock);
  free(rare);
  if (s->framer) ioc__framer_free(s->framer);
  free(s->framer);
  s->framer = NULL;
  ioc__mutex_lock(&core->objects_lock);
  if (s->prev) s->prev->next = s->next; else core->sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
  ioc__mutex_unlock(&core->objects_lock);
  if (s->listener) atomic_fetch_sub(&s->listener->nsessions, 1);
  if (s->cbs->on_close) s->cbs->on_close(s, s->close_err);
  /* Counted closed once on_close has returned: a stop that waits for
   * `active` to reach 0 then knows no callback of it runs any more. */
  IOC__STAT_SUB(core, active, 1);
  IOC__STAT_ADD(core, closed, 1);
  ioc__object_unref(&s->obj); /* the core's reference */
}

/* Ends one operation's share of the session; finalizes on the last. */
static void op_done(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  bool fin = --s->inflight == 0 && s->state == IOC__S_CLOSING;
  if (fin) s->state = IOC__S_CLOSED;
  ioc__spin_unlock(&s->lock);
  if (fin) ioc__session_finalize(s);
}

void ioc__session_close_job(ioc__op_t *op) { op_done(IOC__CONTAINER_OF(op, ioc_session_t, rop)); }

/* ---- completions ------------------------------------------------------------------ */

/* One message of a framed session: on_recv, then, if the owner paused or
 * closed the session meanwhile, no further message until resume. */
static void frame_emit(void *ud, const char *msg, size_t n) {
  ioc_session_t *s = ud;
  if (s->cbs->on_recv) s->cbs->on_recv(s, msg, n);
  ioc__spin_lock(&s->lock);
  bool stop = s->paused || s->state != IOC__S_OPEN;
  ioc__spin_unlock(&s->lock);
  if (stop) ioc__framer_pause(s->framer);
}

/* After a feed (or resume) of the framer: the end mark if the owner asked
 * for one (ioc_framing_t.end_marks), then the framer's verdict: a message
 * over max (or no memory for one) fails the session at once. */
static void deliver_framed(ioc_session_t *s, int rc) {
  if (s->framer->end_mark && s->cbs->on_recv) s->cbs->on_recv(s, NULL, 0);
  if (rc < 0) ioc_session_fail(s, rc);
}

/* Runs one receive's result: res bytes at buf (fresh from the kernel, or
 * held while paused), 0 for the peer's FIN, or an error. Delivers, holds
 * (paused), or moves the session towards its end. The caller owns rop. */
static void run_recv_result(ioc_session_t *s, const char *buf, int res, bool fresh) {
  bool deliver = false, eof = false;
  ioc__spin_lock(&s->lock);
  bool hold = s->state == IOC__S_OPEN && s->paused;
  if (res > 0) {
    if (fresh) {
      IOC__STAT_ADD(s->obj.core, bytes_in, res);
      s->last_recv_ms = ioc__now32();
    }
    if (hold) {
      s->held = malloc(sizeof *s->held + (size_t)res);
      if (s->held) {
        memcpy(s->held->data, buf, (size_t)res);
        s->held->len = (size_t)res;
        s->has_held = true;
      } else {
        enter_closing(s, IOC_ENOMEM);
      }
    } else {
      deliver = s->state == IOC__S_OPEN; /* after close() the rest is discarded */
    }
  } else if (res == 0) {
    if (hold) {
      s->has_held = true; /* the FIN (held NULL), noticed at resume */
    } else {
      s->peer_eof = true;
      if (s->state == IOC__S_OPEN) {
        if (s->cbs->on_eof)
          eof = true; /* the owner replies, then closes (or has shut down: see below) */
        else
          begin_close(s); /* the peer is done sending: finish ours */
      } else if (s->state == IOC__S_SHUTDOWN) {
        ioc__session_finish_graceful(s);
      } /* DRAINING: advance_close sees peer_eof once the queue is out */
    }
  } else if (s->state < IOC__S_CLOSING) {
    enter_closing(s, res);
  }
  ioc__spin_unlock(&s->lock);

  if (deliver && s->cbs->on_recv) {
    if (s->framer)
      deliver_framed(s, ioc__framer_feed(s->framer, buf, (size_t)res, frame_emit, s));
    else
      s->cbs->on_recv(s, buf, (size_t)res);
  }
  if (eof) {
    s->cbs->on_eof(s);
    ioc__spin_lock(&s->lock);
    advance_close(s); /* half-closed before: both FINs are out now */
    ioc__spin_unlock(&s->lock);
  }
}

void ioc__session_run_recv_result(ioc_session_t *s, const char *buf, int res, bool fresh) {
  run_recv_result(s, buf, res, fresh);
}

static void on_recv_done(ioc_session_t *s, ioc__op_t *op) {
  ioc__spin_lock(&s->lock);
  s->recv_posted = false;
  s->recv_busy = true;
  bool header = s->in_header;
  ioc__spin_unlock(&s->lock);
  if (header)
    ioc__session_run_proxy_header(s, op->u.recv.buf, op->res);
  else
    run_recv_result(s, op->u.recv.buf, op->res, true);
  ioc__spin_lock(&s->lock);
  s->recv_busy = false;
  kick_recv(s);
  ioc__spin_unlock(&s->lock);
  op_done(s);
}

/* Delivers what was held while paused, first, then reading goes on. */
static void resume_job(ioc__op_t *op) {
  ioc_session_t *s = IOC__CONTAINER_OF(op, ioc_session_t, rop);
  ioc__held_t *held = NULL;
  int res = -1;
  ioc__spin_lock(&s->lock);
  if (s->framer && s->framer->paused && s->state == IOC__S_OPEN && !s->paused) {
    /* messages kept by the framer came before any held receive */
    ioc__spin_unlock(&s->lock);
    deliver_framed(s, ioc__framer_resume(s->framer, frame_emit, s));
    ioc__spin_lock(&s->lock);
  }
  if (s->has_held && s->state == IOC__S_OPEN && !s->paused && !(s->framer && s->framer->paused)) {
    held = s->held;
    res = held ? (int)held->len : 0; /* none: the FIN */
    s->held = NULL;
    s->has_held = false;
  }
  ioc__spin_unlock(&s->lock);
  if (res >= 0) run_recv_result(s, held ? held->data : NULL, res, false);
  free(held);
  ioc__spin_lock(&s->lock);
  s->resume_queued = false;
  kick_recv(s);
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
      ioc__sendq_consume(s->sq, (size_t)res);
      s->sq->pending -= (size_t)res;
      s->progress_ms = ioc__now32();
      /* could not be written at once */
      if ((size_t)res < asked || (op->flags & IOC__OPF_SEND_WAITED)) s->want_drain = true;
    }
  } else if (res == 0) {
    res = IOC_EPIPE; /* nothing written for a non-empty write: never loop on it */
  }
  if (res < 0) {
    enter_closing(s, res);
  } else if (s->state < IOC__S_CLOSING) {
    if (!ioc__sendq_empty(s->sq)) {
      if (!must_wait_cork(s)) post_send(s);
    } else if (s->state == IOC__S_DRAINING || s->half) {
      advance_close(s);
    } else if (s->want_drain && s->state == IOC__S_OPEN) {
      s->want_drain = false;
      /* One on_drain at a time per session: a send from another thread
       * can finish its write while one is still running elsewhere. */
      if (s->in_drain)
        s->drain_again = true;
      else
        drain = true, s->in_drain = true;
    }
  }
  /* op is gone after this, unless advance_close made it the shutdown */
  if (s->state < IOC__S_CLOSING && s->fin != IOC__FIN_POSTED) ioc__sendq_release_if_idle(s);
  ioc__spin_unlock(&s->lock);
  while (drain) {
    if (s->cbs->on_drain) s->cbs->on_drain(s);
    ioc__spin_lock(&s->lock);
    drain = s->drain_again && s->state == IOC__S_OPEN;
    s->drain_again = false;
    s->in_drain = drain;
    ioc__spin_unlock(&s->lock);
  }
  op_done(s);
}

/* The backend's asynchronous shutdown is done. A failure to start it
 * from a loop's inbox (not a result of shutdown(2) itself) comes here as
 * an error too, so any error but ENOTCONN is retried once with the
 * syscall. Then the close moves on as after a synchronous shutdown. */
static void on_shutdown_done(ioc_session_t *s, ioc__op_t *op) {
  int res = op->res;
  ioc__spin_lock(&s->lock);
  if (s->state < IOC__S_CLOSING) {
    if (res < 0 && res != IOC_ENOTCONN) res = ioc__socket_shutdown_write(s->h.fd);
    if (fin_result(s, res)) advance_close(s);
    if (s->state < IOC__S_CLOSING) ioc__sendq_release_if_idle(s); /* op is gone after this */
  } else {
    s->fin = IOC__FIN_NONE; /* cancelled or not: the session is ending */
  }
  ioc__spin_unlock(&s->lock);
  op_done(s);
}

static void on_connect_done(ioc_session_t *s, ioc__op_t *op) {
  ioc_core_t *core = s->obj.core;
  int res = op->res;
  ioc__spin_lock(&s->lock);
  s->connect_posted = false;
  if (res == 0 && s->state < IOC__S_CLOSING) {
    if (s->state == IOC__S_CONNECTING) s->state = IOC__S_OPEN;
    s->last_recv_ms = s->progress_ms = ioc__now32(); /* idle counts from here */
    if (s->peer.u.family != AF_UNIX) ioc__socket_set_nodelay(s->h.fd);
    IOC__STAT_ADD(core, connected, 1);
  } else {
    /* Closed while connecting (abort, fail, the connect time-out): on_open
     * and on_close tell the same cause, not the cancel it caused. */
    if (s->close_err)
      res = s->close_err;
    else if (res == 0)
      res = IOC_ECANCELED;
    s->close_err = res;
    enter_closing(s, res);
  }
  ioc__spin_unlock(&s->lock);

  if (s->cbs->on_open) s->cbs->on_open(s, res);

  ioc__spin_lock(&s->lock);
  kick_recv(s);
  if ((s->state == IOC__S_OPEN || s->state == IOC__S_DRAINING) && !s->send_posted) {
    if (!ioc__sendq_empty(s->sq))
      post_send(s);
    else
      advance_close(s);
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
  case IOC__OP_SHUTDOWN: on_shutdown_done(s, op); break;
  default: op_done(s); break;
  }
}

static void session_destroy(ioc__object_t *obj) {
  ioc_session_t *s = IOC__CONTAINER_OF(obj, ioc_session_t, obj);
  if (s->local_owned) free((void *)s->local);
  if (s->listener) ioc__listener_unref(s->listener);
  ioc__sendq_release(s);
  free(s->held); /* or the PROXY reader */
  if (s->framer) ioc__framer_free(s->framer);
  free(s->framer);
  free(s);
}

/* ---- creation ------------------------------------------------------------------------ */

_Static_assert((int)IOC_FRAMING_LINE == (int)IOC__FRAME_LINE && (int)IOC_FRAMING_LEN2 == (int)IOC__FRAME_LEN2 &&
                   (int)IOC_FRAMING_LEN4 == (int)IOC__FRAME_LEN4 && (int)IOC_FRAMING_DELIMITER == (int)IOC__FRAME_DELIM &&
                   IOC_FRAMING_DEFAULT_MAX == IOC__FRAME_DEFAULT_MAX &&
                   IOC_FRAMING_DELIMITER_MAX == IOC__FRAME_DELIM_MAX,
               "the public framing names are the framer's");

static int framer_init(ioc__framer_t *f, const ioc_framing_t *fr) {
  if (fr->kind < IOC_FRAMING_LINE || fr->kind > IOC_FRAMING_DELIMITER) return IOC_EINVAL;
  int rc = ioc__framer_init(f, (ioc__frame_kind_t)fr->kind, fr->max, fr->delimiter,
                            fr->delimiter_len);
  f->end_mark = fr->end_marks != 0;
  return rc;
}

int ioc__framing_check(const ioc_framing_t *fr) {
  if (fr->kind == IOC_FRAMING_NONE) return 0;
  ioc__framer_t f;
  int rc = framer_init(&f, fr);
  if (rc == 0) ioc__framer_free(&f);
  return rc;
}

int ioc__session_new(ioc_core_t *core, ioc_fd_t fd, const ioc_session_options_t *o,
                      bool outbound, bool hidden, ioc_session_t **out) {
  ioc_session_t *s = calloc(1, sizeof *s);
  if (!s) return IOC_ENOMEM;
  ioc__object_init(&s->obj, core, &session_vtbl); /* the core's reference */
  s->cbs = ioc__callbacks_none();
  /* A creation guard: the session is in core->sessions (close_all and the
   * sweep can reach it) before it is started. Counting the start as an
   * operation keeps a close from finalizing it underneath its creator;
   * ioc__session_start / ioc_connect release it. */
  s->inflight = 1;
  s->h.fd = fd;
  s->outbound = outbound;
  s->hidden = hidden; /* before the sweep or the session list can reach it */
  s->state = outbound ? IOC__S_CONNECTING : IOC__S_OPEN;
  s->max_pending = ioc__clamp_ms(o && o->max_pending ? o->max_pending : IOC__DEFAULT_MAX_PENDING);
  s->close_timeout_ms = IOC_DEFAULT_CLOSE_TIMEOUT_MS;
  if (o) {
    s->idle_timeout_ms = ioc__clamp_ms(o->idle_timeout_ms);
    s->write_timeout_ms = ioc__clamp_ms(o->write_timeout_ms);
    if (outbound) s->connect_timeout_ms = ioc__clamp_ms(o->connect_timeout_ms);
    if (o->close_timeout_ms) s->close_timeout_ms = ioc__clamp_ms(o->close_timeout_ms);
  }
  if (o && o->framing.kind != IOC_FRAMING_NONE) {
    s->framer = calloc(1, sizeof *s->framer);
    int rc = s->framer ? framer_init(s->framer, &o->framing) : IOC_ENOMEM;
    if (rc < 0) {
      free(s->framer); /* not inited */
      s->framer = NULL;
      s->h.fd = IOC_BAD_FD; /* the caller closes it */
      ioc__object_unref(&s->obj);
      return rc;
    }
  }
  s->id = atomic_fetch_add(&core->next_id, 1);
  s->last_recv_ms = s->progress_ms = ioc__now32();
  s->last_unacked = -1;
  s->h.loop = (uint16_t)ioc__core_loop_for_new(core); /* pinned for life */
  int rc = fd == IOC_BAD_FD ? 0 : core->backend->add(core, &s->h);
  if (rc < 0) {
    s->h.fd = IOC_BAD_FD;
    ioc__object_unref(&s->obj);
    return rc;
  }
  ioc__spin_lock(&s->lock);
  if (ioc__session_needs_sweep(s)) ioc__timed_add(s);
  ioc__spin_unlock(&s->lock);
  ioc__mutex_lock(&core->objects_lock);
  s->next = core->sessions;
  if (s->next) s->next->prev = s;
  core->sessions = s;
  ioc__mutex_unlock(&core->objects_lock);
  IOC__STAT_ADD(core, active, 1);
  *out = s;
  return 0;
}

/* ---- the public session calls ------------------------------------------------------------ */

int ioc_session_sendv_buffers(ioc_session_t *s, const ioc_buf_t *bufs, ioc_buffer_t *const *refs,
                              size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    size_t len = refs && refs[i] ? ioc_buffer_len(refs[i]) : bufs[i].len;
    if (total + len < total) return IOC_ENOBUFS; /* can never fit */
    total += len;
  }
  ioc__spin_lock(&s->lock);
  int rc = 0;
  if (s->state >= IOC__S_DRAINING || s->half) {
    rc = IOC_ECLOSED;
  } else if (total == 0) {
    rc = 0;
  } else if ((ioc__session_pending(s) > 0 && ioc__session_pending(s) + total > s->max_pending) ||
             ioc__session_pending(s) + total < ioc__session_pending(s)) {
    /* Refused only behind queued data: a send on an empty queue always
     * goes, so a reply larger than max_pending cannot wait forever. */
    s->want_drain = true;
    rc = IOC_ENOBUFS;
  } else if ((rc = ioc__sendq_append(s, bufs, refs, n)) == 0) {
    /* (the queue exists now: the append made it) */
    if (s->sq->pending == 0)
      s->progress_ms = ioc__now32(); /* the write time-out counts from here */
    else if (s->send_posted || !s->corked)
      s->want_drain = true; /* queued behind data the socket has not taken */
    s->sq->pending += total;
    if (!s->send_posted && s->state == IOC__S_OPEN && !must_wait_cork(s)) post_send(s);
  }
  ioc__spin_unlock(&s->lock);
  return rc;
}

int ioc_session_sendv(ioc_session_t *s, const ioc_buf_t *bufs, size_t n) {
  return ioc_session_sendv_buffers(s, bufs, NULL, n);
}

int ioc_session_send_buffer(ioc_session_t *s, ioc_buffer_t *b) {
  ioc_buf_t none = {NULL, 0};
  return ioc_session_sendv_buffers(s, &none, &b, 1);
}

/* One reference per session, queued through each session's own send
 * path: a session pinned to another worker's loop gets its write started
 * through that loop's inbox (ioc__op_submit), and a busy session just
 * queues the chunk behind the send in flight. */
size_t ioc_core_broadcast(ioc_core_t *core, ioc_session_t *const *ss, size_t n, ioc_buffer_t *b) {
  size_t count = 0;
  if (!b) return 0;
  for (size_t i = 0; i < n; i++)
    if (ss[i] && ss[i]->obj.core == core && ioc_session_send_buffer(ss[i], b) == 0) count++;
  return count;
}

int ioc_session_send_frame(ioc_session_t *s, const void *data, size_t len) {
  /* the kind is set at creation and never changes: no lock needed */
  if (!s->framer || (s->framer->kind != IOC__FRAME_LEN2 && s->framer->kind != IOC__FRAME_LEN4))
    return IOC_EINVAL;
  unsigned char prefix[4];
  int n = ioc__frame_prefix((ioc__frame_kind_t)s->framer->kind, len, prefix);
  if (n < 0) return n;
  ioc_buf_t bufs[2] = {{prefix, (size_t)n}, {data, len}};
  return ioc_session_sendv(s, bufs, 2);
}

int ioc_session_send(ioc_session_t *s, const void *data, size_t len) {
  ioc_buf_t b = {data, len};
  return ioc_session_sendv(s, &b, 1);
}

size_t ioc_session_pending(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  size_t n = ioc__session_pending(s);
  ioc__spin_unlock(&s->lock);
  return n;
}

size_t ioc_session_want_drain(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  size_t n = ioc__session_pending(s);
  if (n > 0) s->want_drain = true;
  ioc__spin_unlock(&s->lock);
  return n;
}

void ioc_session_cork(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  if (s->state < IOC__S_CLOSING) s->corked = true;
  ioc__spin_unlock(&s->lock);
}

void ioc_session_uncork(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  if (s->corked) flush_cork(s);
  ioc__spin_unlock(&s->lock);
}

void ioc_session_close(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  if (s->state == IOC__S_CONNECTING) {
    s->state = IOC__S_DRAINING; /* the connect completion carries on */
    s->progress_ms = ioc__now32();
    ioc__timed_add(s);
  } else if (s->state == IOC__S_OPEN) {
    begin_close(s);
  }
  ioc__spin_unlock(&s->lock);
}

int ioc_session_shutdown(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  int rc = 0;
  if (s->state >= IOC__S_DRAINING || s->half) {
    rc = IOC_ECLOSED;
  } else {
    flush_cork(s);
    s->half = true;
    advance_close(s); /* CONNECTING: the connect completion does it */
  }
  ioc__spin_unlock(&s->lock);
  return rc;
}

void ioc_session_abort(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  if (s->state < IOC__S_CLOSED) {
    s->aborting = true;
    enter_closing(s, 0);
  }
  ioc__spin_unlock(&s->lock);
}

void ioc_session_fail(ioc_session_t *s, int err) {
  if (err > 0) err = -err;
  ioc__spin_lock(&s->lock);
  if (s->state < IOC__S_CLOSING) {
    s->aborting = true;
    enter_closing(s, err);
  }
  ioc__spin_unlock(&s->lock);
}

void ioc_session_pause(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  s->paused = true;
  ioc__spin_unlock(&s->lock);
}

void ioc_session_resume(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  if (s->paused) {
    s->paused = false;
    kick_recv(s);
  }
  ioc__spin_unlock(&s->lock);
}

int ioc_session_paused(const ioc_session_t *s) {
  ioc_session_t *m = (ioc_session_t *)s;
  ioc__spin_lock(&m->lock);
  int r = m->paused;
  ioc__spin_unlock(&m->lock);
  return r;
}
