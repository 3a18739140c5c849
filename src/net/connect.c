/* Outbound sessions: ioc_connect to an address, or to "host:port" through
 * a lookup (ioc_resolve) first, and the posting of the connect. The
 * session is made and run by session.c, the connect's completion
 * included (on_connect_done). */
#include "net.h"

#include <string.h>

/* Posts the connect of an outbound session to addr (&s->peer: the op
 * keeps the pointer while in flight), or, when err (or the
 * submission) fails, completes it as failed from a dispatching thread, so
 * the owner hears on_open(err) then on_close(err), as for any failure. A
 * unix-domain connect is made here (it never waits) and its result
 * completes the same way, so on_open still comes from dispatch. Under
 * s->lock. */
static void submit_connect(ioc_session_t *s, const ioc_addr_t *addr, int err) {
  ioc_core_t *core = s->obj.core;
  ioc__op_init(&s->rop, IOC__OP_CONNECT, &s->obj, &s->h);
  if (addr) s->rop.u.connect.addr = addr;
  s->inflight++;
  s->connect_posted = true;
  int rc = err;
  bool known = err < 0;
  if (!known && addr->u.family == AF_UNIX) {
    rc = ioc__socket_connect_now(s->h.fd, addr); /* at once: no operation needed */
    known = true;
  } else if (!known) {
    rc = ioc__op_submit(core, &s->rop);
    known = rc < 0;
  }
  if (known) {
    s->rop.res = rc;
    ioc__object_ref(&s->obj);
    IOC__STAT_ADD(core, ops_inflight, 1);
    ioc__core_defer(core, &s->rop);
  }
}

/* Ends ioc_connect's creation guard. Not inline: on_close must come from
 * dispatch. Under s->lock. */
static void end_connect_guard(ioc_session_t *s) {
  if (--s->inflight == 0 && s->state == IOC__S_CLOSING) {
    s->inflight++;
    ioc__core_queue_job(s->obj.core, &s->rop, &s->obj, ioc__session_close_job);
  }
}

/* "host:port" where host is a DNS name, not an IP literal: labels of
 * letters, digits, "-" and "_" (1 to 63 bytes, no "-" at either end)
 * separated by dots (a final dot allowed), at most 253 bytes, not digits
 * and dots alone, and a last label (the top-level domain, or the only
 * label) that starts with a letter or "_" — no top-level domain starts with
 * a digit, so "1.2.3.256" and "1.2.3.4a" are malformed IPv4 addresses, not
 * names; then ":" and a port 0..65535 without leading zeros,
 * as ioc_addr_parse wants. */
static bool is_host_name(const char *a, size_t len) {
  const char *colon = memchr(a, ':', len);
  if (!colon || colon == a || (size_t)(colon - a) > 253) return false;
  size_t plen = len - (size_t)(colon + 1 - a);
  if (plen < 1 || plen > 5) return false;
  unsigned port = 0;
  for (size_t i = 1; i <= plen; i++) {
    if (colon[i] < '0' || colon[i] > '9') return false;
    port = port * 10 + (unsigned)(colon[i] - '0');
  }
  if (port > 65535 || (colon[1] == '0' && plen > 1)) return false;
  bool name = false;
  size_t label = 0;
  char last_first = 0; /* first character of the last label */
  for (const char *p = a; p < colon; p++) {
    char c = *p;
    if (c == '.') {
      if (label == 0 || p[-1] == '-') return false;
      label = 0;
      continue;
    }
    if (label == 0) last_first = c;
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '-';
    if (!alpha && (c < '0' || c > '9')) return false;
    if (c == '-' && label == 0) return false;
    if (++label > 63) return false;
    name = name || alpha;
  }
  if (last_first >= '0' && last_first <= '9') return false;
  return name && (label == 0 || colon[-1] != '-');
}

/* The lookup of an outbound session's host name is done: connect to the
 * first address, or fail the connect with the lookup's error. Runs on a
 * dispatching thread. */
static void connect_resolved(void *ud, int err, const ioc_addr_t *addrs, size_t n) {
  ioc_session_t *s = ud;
  ioc_core_t *core = s->obj.core;
  int rc = err < 0 ? err : n == 0 ? IOC_ENOTFOUND : 0;
  ioc_fd_t fd = IOC_BAD_FD;
  if (rc == 0) rc = ioc__socket_open(core, addrs[0].u.family, &fd);
  ioc__spin_lock(&s->lock);
  s->resolving = false;
  /* Closed meanwhile (abort, the connect time-out): the connect completion
   * reports the cause it recorded. */
  if (s->state >= IOC__S_CLOSING) rc = IOC_ECANCELED;
  if (rc == 0) {
    s->h.fd = fd;
    rc = core->backend->add(core, &s->h);
    if (rc < 0) s->h.fd = IOC_BAD_FD;
  }
  if (rc < 0 && fd != IOC_BAD_FD) ioc__socket_close(core, fd); /* never added */
  if (rc == 0) s->peer = addrs[0];
  submit_connect(s, rc == 0 ? &s->peer : NULL, rc);
  bool fin = --s->inflight == 0 && s->state == IOC__S_CLOSING;
  if (fin) s->state = IOC__S_CLOSED;
  ioc__spin_unlock(&s->lock);
  if (fin) ioc__session_finalize(s);
}

/* ioc_connect to "name:port": the session exists at once, without a
 * socket, while ioc_resolve looks the name up. */
static int connect_by_name(ioc_core_t *core, const char *address, size_t len,
                           const ioc_session_callbacks_t *cbs, void *ud,
                           const ioc_session_options_t *opts, ioc_session_t **out) {
  ioc_session_t *s;
  int rc = ioc__session_new(core, IOC_BAD_FD, opts, true, false, &s);
  if (rc < 0) return rc;
  s->cbs = cbs; /* interned by ioc_connect */
  s->ud = ud;
  ioc__spin_lock(&s->lock);
  s->resolving = true;
  s->inflight++; /* the lookup's */
  ioc__spin_unlock(&s->lock);
  ioc__object_ref(&s->obj); /* ours, while the callback may already run */
  rc = ioc_resolve(core, address, len, connect_resolved, s);
  ioc__spin_lock(&s->lock);
  if (rc < 0) {
    /* Refused at once (a malformed name): never announced, no callback. */
    s->resolving = false;
    s->inflight--;
    s->cbs = ioc__callbacks_none();
    ioc__session_enter_closing(s, rc);
  }
  end_connect_guard(s);
  ioc__spin_unlock(&s->lock);
  if (rc == 0 && out)
    *out = s; /* our reference becomes the caller's */
  else
    ioc__object_unref(&s->obj);
  return rc;
}

int ioc_connect(ioc_core_t *core, const char *address, size_t address_len,
                const ioc_session_callbacks_t *cbs, void *ud, const ioc_session_options_t *opts,
                ioc_session_t **out) {
  ioc_addr_t addr;
  if (!address || (opts && ioc__framing_check(&opts->framing) < 0)) return IOC_EINVAL;
  cbs = ioc__callbacks_intern(cbs); /* from here on the process's copy */
  if (!cbs) return IOC_ENOMEM;
  int rc = ioc_addr_parse(&addr, address, address_len);
  if (rc == IOC_EINVAL && is_host_name(address, address_len))
    return connect_by_name(core, address, address_len, cbs, ud, opts, out);
  if (rc < 0) return rc;
#ifdef _WIN32
  if (addr.u.family == AF_UNIX) return IOC_EAFNOSUPPORT; /* not in this build (wine has no AF_UNIX) */
#endif
  ioc_fd_t fd;
  rc = ioc__socket_open(core, addr.u.family, &fd);
  if (rc < 0) return rc;
  ioc_session_t *s;
  rc = ioc__session_new(core, fd, opts, true, false, &s);
  if (rc < 0) {
    ioc__socket_close(core, fd);
    return rc;
  }
  s->peer = addr;
  s->cbs = cbs;
  s->ud = ud;
  if (out) {
    ioc__object_ref(&s->obj); /* the caller's, released with ioc_session_release */
    *out = s;
  }
  ioc__spin_lock(&s->lock);
  submit_connect(s, &s->peer, 0);
  end_connect_guard(s);
  ioc__spin_unlock(&s->lock);
  return 0;
}
