/* Inbound sessions: made from a socket the listener accepted, started
 * after on_accept, and, behind a proxy_protocol listener, reading the
 * PROXY header before anything else (the parser is proxy.c). The session
 * is run by session.c, which hands the header's receives here. */
#include "net.h"
#include "proxy.h"

#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <netinet/in.h>
#endif

static bool addr_is_wildcard(const ioc_addr_t *a) {
  static const unsigned char zero[16];
  if (a->u.family == AF_UNIX) return false; /* its path: every session's local address */
  if (a->u.family == AF_INET) {
    const struct sockaddr_in *in = (const void *)a->u.bytes;
    return in->sin_addr.s_addr == 0;
  }
  const struct sockaddr_in6 *in6 = (const void *)a->u.bytes;
  return memcmp(&in6->sin6_addr, zero, 16) == 0;
}

int ioc__session_new_accepted(ioc_core_t *core, ioc_listener_t *l, ioc_fd_t fd,
                              const ioc_addr_t *peer, ioc_session_t **out) {
  ioc_session_t *s;
  bool proxy = l->opts.proxy_protocol != 0;
  int rc = ioc__session_new(core, fd, &l->opts.session, false, proxy, &s);
  if (rc < 0) return rc;
  s->peer = *peer;
  if (!addr_is_wildcard(&l->addr)) s->local = &l->addr;
#ifdef _WIN32
  ioc__socket_set_nodelay(fd);
#endif /* Linux: accepted sockets inherit TCP_NODELAY from the listener */
  s->listener = l;
  ioc__listener_ref(l);
  atomic_fetch_add(&l->nsessions, 1);
  if (!proxy) IOC__STAT_ADD(core, accepted, 1); /* else once its header is in */
  *out = s;
  return 0;
}

/* For an accepted session, after on_accept: on_open, then the first receive.
 * Runs inside the listener's accept completion and ends the creation guard,
 * which also keeps a close() from inside the callbacks from finalizing
 * underneath. */
void ioc__session_start(ioc_session_t *s) {
  if (s->cbs->on_open) s->cbs->on_open(s, 0);
  ioc__spin_lock(&s->lock);
  ioc__session_kick_recv(s);
  bool fin = --s->inflight == 0 && s->state == IOC__S_CLOSING;
  if (fin) s->state = IOC__S_CLOSED;
  ioc__spin_unlock(&s->lock);
  if (fin) ioc__session_finalize(s);
}

void ioc__session_start_proxy(ioc_session_t *s) {
  ioc__spin_lock(&s->lock);
  s->proxy = calloc(1, sizeof *s->proxy);
  s->in_header = s->proxy != NULL;
  if (!s->proxy) {
    IOC__STAT_ADD(s->obj.core, proxy_rejected, 1);
    s->aborting = true;
    ioc__session_enter_closing(s, IOC_ENOMEM);
  } else {
    ioc__timed_add(s); /* the header's deadline */
    ioc__session_kick_recv(s);
  }
  bool fin = --s->inflight == 0 && s->state == IOC__S_CLOSING;
  if (fin) s->state = IOC__S_CLOSED;
  ioc__spin_unlock(&s->lock);
  if (fin) ioc__session_finalize(s);
}

/* A receive of a session still reading its PROXY header (s->proxy set).
 * Incomplete: the next receive follows (kick_recv, in session.c). Refused,
 * or an end of stream or error first: the connection is reset and
 * counted, and the embedder never hears of it. Complete: the addresses
 * from the header are the session's, the listener's on_accept and on_open
 * run, and the bytes after the header are the first on_recv. The caller
 * owns rop. */
void ioc__session_run_proxy_header(ioc_session_t *s, const char *buf, int res) {
  ioc_core_t *core = s->obj.core;
  ioc__proxy_result_t r;
  size_t used = 0;
  ioc__spin_lock(&s->lock);
  if (s->state != IOC__S_OPEN) { /* closed meanwhile (close_all, time-out) */
    ioc__spin_unlock(&s->lock);
    return;
  }
  int rc;
  if (res > 0) {
    IOC__STAT_ADD(core, bytes_in, res);
    rc = ioc__proxy_reader_feed(s->proxy, buf, (size_t)res, &r, &used);
  } else {
    rc = res == 0 ? IOC_EPROTO : res; /* the stream ended before the header did */
  }
  if (rc > 0 && r.has_addrs) {
    ioc_addr_t *local = malloc(sizeof *local);
    if (local) {
      *local = r.dst;
      if (s->local_owned) free((void *)s->local);
      s->local = local;
      s->local_owned = true;
      s->peer = r.src;
    } else {
      rc = IOC_ENOMEM;
    }
  }
  if (rc < 0) {
    IOC__STAT_ADD(core, proxy_rejected, 1);
    s->aborting = true;
    ioc__session_enter_closing(s, rc);
  }
  if (rc <= 0) {
    ioc__spin_unlock(&s->lock);
    return;
  }
  free(s->proxy);
  s->proxy = NULL;
  s->in_header = false;
  s->last_recv_ms = ioc__now32();
  ioc__spin_unlock(&s->lock);

  ioc_listener_t *l = s->listener;
  ioc__spin_lock(&l->lock);
  ioc_accept_cb on_accept = l->on_accept;
  void *ud = l->ud;
  bool closing = l->closing;
  ioc__spin_unlock(&l->lock);
  ioc__mutex_lock(&core->objects_lock); /* (foreach reads it under both) */
  ioc__spin_lock(&s->lock);
  s->hidden = closing; /* a closed listener has no one to announce it to */
  ioc__spin_unlock(&s->lock);
  ioc__mutex_unlock(&core->objects_lock);
  if (closing) {
    ioc__spin_lock(&s->lock);
    s->aborting = true;
    ioc__session_enter_closing(s, IOC_ECONNABORTED);
    ioc__spin_unlock(&s->lock);
    return;
  }
  IOC__STAT_ADD(core, accepted, 1);
  if (on_accept) on_accept(l, s, ud);
  if (s->cbs->on_open) s->cbs->on_open(s, 0);
  if ((size_t)res > used)
    ioc__session_run_recv_result(s, buf + used, (int)((size_t)res - used), false);
}
