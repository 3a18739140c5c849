/* The session's settings and properties: its time-outs, callbacks and
 * user data, its state as others may ask for it, and its addresses. */
#include "net.h"

#include <stdlib.h>

/* A new idle or write time-out counts from now. Idle is measured from the
 * later of the last receive and the last send progress, write from the
 * last send progress, so moving both to now does it. Only while open:
 * connecting, last_recv_ms is the start the connect time-out counts from
 * (the connect's completion moves both anyway); closing, progress_ms
 * bounds the close and the idle and write time-outs no longer apply. */
static void restart_clocks(ioc_session_t *s) {
  if (s->state == IOC__S_OPEN) s->last_recv_ms = s->progress_ms = ioc__now32();
}

int ioc_session_set_timeout(ioc_session_t *s, ioc_timeout_t which, uint64_t ms) {
  uint32_t v = ioc__clamp_ms(ms);
  int rc = 0;
  ioc__spin_lock(&s->lock);
  if (s->state >= IOC__S_CLOSING) {
    rc = IOC_ECLOSED;
  } else {
    switch ((int)which) {
    case IOC_TIMEOUT_IDLE:
      s->idle_timeout_ms = v;
      restart_clocks(s);
      break;
    case IOC_TIMEOUT_WRITE:
      s->write_timeout_ms = v;
      restart_clocks(s);
      break;
    case IOC_TIMEOUT_CONNECT:
      if (s->state == IOC__S_CONNECTING && !s->outbound) rc = IOC_EINVAL;
      else if (s->state != IOC__S_CONNECTING) rc = IOC_ECLOSED;
      else s->connect_timeout_ms = v;
      break;
    case IOC_TIMEOUT_CLOSE:
      s->close_timeout_ms = ms ? v : IOC_DEFAULT_CLOSE_TIMEOUT_MS;
      break;
    default:
      rc = IOC_EINVAL;
    }
  }
  if (rc == 0 && ioc__session_needs_sweep(s)) ioc__timed_add(s);
  ioc__spin_unlock(&s->lock);
  return rc;
}

int ioc_session_closed(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  int closed = s->state >= IOC__S_DRAINING;
  ioc__spin_unlock(&s->lock);
  return closed;
}

/* Out of memory for a set never seen before: the session keeps its
 * callbacks and ends with IOC_ENOMEM (its on_close still comes). */
void ioc_session_set_callbacks(ioc_session_t *s, const ioc_session_callbacks_t *cbs, void *ud) {
  const ioc_session_callbacks_t *c = ioc__callbacks_intern(cbs);
  if (!c) {
    ioc_session_fail(s, IOC_ENOMEM);
    return;
  }
  s->cbs = c;
  s->ud = ud;
}

void *ioc_session_userdata(const ioc_session_t *s) { return s->ud; }
ioc_core_t *ioc_session_core(const ioc_session_t *s) { return s->obj.core; }
uint64_t ioc_session_id(const ioc_session_t *s) { return s->id; }
const ioc_addr_t *ioc_session_peer(const ioc_session_t *s) { return &s->peer; }

/* Looked up once and kept, but only once the socket is bound: an outbound
 * socket whose connect has not reached the kernel yet (io_uring submits at
 * the end of the batch) is still 0.0.0.0:0, and keeping that would answer
 * it for the session's life. Until then the answer is "unknown" (family 0). */
const ioc_addr_t *ioc_session_local(const ioc_session_t *s) {
  static const ioc_addr_t none; /* family 0: formats as EINVAL */
  ioc_session_t *m = (ioc_session_t *)s;
  ioc__spin_lock(&m->lock);
  if (!m->local && m->h.fd != IOC_BAD_FD) {
    ioc_addr_t *a = calloc(1, sizeof *a);
    if (a && ioc__socket_local_addr(m->h.fd, a) == 0 &&
        (ioc_addr_port(a) != 0 || a->u.family == AF_UNIX)) {
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
