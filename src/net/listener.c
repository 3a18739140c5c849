/* Listeners: a bound socket that keeps N accept operations posted at all
 * times ("after landing a fish, always cast the line again"): every accept
 * completion, success or failure, re-posts its operation. Two failures get
 * special care so the listener neither spins nor silently stops:
 *   - EMFILE/ENFILE: the process has no fd for the new connection, which
 *     stays in the backlog and would complete the next accept at once,
 *     forever. We free a reserve fd, accept and close everything waiting
 *     (clients see their connection closed rather than hang), take the
 *     reserve back, and re-post after a short back-off.
 *   - any other unexpected error: re-post after the same back-off.
 * Closing cancels the outstanding accepts; the socket is closed and the
 * memory freed when the last of their completions has come back.
 *
 * A unix-domain listener ("unix:/path") makes its socket file at bind:
 * a file left by a listener that is gone (connecting to it is refused) is
 * replaced, a live one gives IOC_EADDRINUSE, and so does anything that is
 * not a socket. The file is removed when the listener's socket closes, if
 * it is still the one this listener made (same device and inode): a newer
 * listener's file on the same path is left alone. */
#include "net.h"
#include "address.h"

#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#endif

static void listener_dispatch(ioc__object_t *obj, ioc__op_t *op);
static void listener_destroy(ioc__object_t *obj);
static const ioc__object_vtbl_t listener_vtbl = {"listener", listener_dispatch, listener_destroy};

void ioc__listener_ref(ioc_listener_t *l) { ioc__object_ref(&l->obj); }
void ioc__listener_unref(ioc_listener_t *l) { ioc__object_unref(&l->obj); }

/* Posts accept i. Under l->lock. */
static int post_accept(ioc_listener_t *l, int i) {
  ioc__op_t *op = &l->ops[i];
  ioc__op_init(op, IOC__OP_ACCEPT, &l->obj, &l->h);
  op->u.accept.fd = IOC_BAD_FD;
  op->u.accept.slot = &l->slots[i];
  op->u.accept.slot->addrlen = sizeof op->u.accept.slot->addr.u.bytes;
  l->posted[i] = 1;
  l->nposted++;
  IOC__STAT_ADD(l->obj.core, accepts_posted, 1);
  /* Accept i is carried by loop i mod loops: the accepts are spread over
   * every worker's ring, and a session stays on the ring that accepted it. */
  int rc = ioc__op_submit_on(l->obj.core, op, ioc__core_spread(l->obj.core, i));
  if (rc < 0) {
    l->posted[i] = 0;
    l->nposted--;
    IOC__STAT_SUB(l->obj.core, accepts_posted, 1);
  }
  return rc;
}

static void backoff_fire(ioc_timer_t *t, void *ud);
static void arm_backoff(ioc_listener_t *l);

#ifndef _WIN32
/* True when a unix socket file is live: something accepts connections on
 * it (or its backlog is full). A refused connect means a file left by a
 * listener that is gone. */
static bool unix_file_live(const ioc_addr_t *addr) {
  int p = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (p < 0) return true; /* cannot tell: do not touch it */
  int rc = ioc__socket_connect_now(p, addr);
  close(p);
  return rc != IOC_ECONNREFUSED && rc != IOC_ENOENT;
}

/* Binds a unix-domain listener's socket, replacing a stale socket file,
 * and notes which file it made. */
static int unix_bind(ioc_listener_t *l, ioc_fd_t fd, const ioc_addr_t *addr) {
  const char *path = ioc__addr_unix_path(addr);
  int rc = ioc__socket_bind(fd, addr);
  struct stat st;
  if (rc == IOC_EADDRINUSE && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
      !unix_file_live(addr)) {
    unlink(path);
    rc = ioc__socket_bind(fd, addr);
  }
  if (rc == 0 && stat(path, &st) == 0) {
    l->unix_file = true;
    l->unix_dev = (uint64_t)st.st_dev;
    l->unix_ino = (uint64_t)st.st_ino;
  }
  return rc;
}

/* Removes the listener's socket file if the path still names it. */
static void unix_unlink(ioc_listener_t *l) {
  if (!l->unix_file) return;
  l->unix_file = false;
  const char *path = ioc__addr_unix_path(&l->addr);
  struct stat st;
  if (path && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (uint64_t)st.st_dev == l->unix_dev &&
      (uint64_t)st.st_ino == l->unix_ino)
    unlink(path);
}
#endif

/* Forgets and closes the listener's socket (and removes its socket file). */
static void close_listen_socket(ioc_listener_t *l) {
  ioc_core_t *core = l->obj.core;
#ifndef _WIN32
  unix_unlink(l); /* first: no moment with a file nobody will ever answer */
#endif
  core->backend->del(core, &l->h);
  ioc__socket_close(core, l->h.fd);
  l->h.fd = IOC_BAD_FD;
}

/* A closed listener gives its port back as soon as no accept is in flight,
 * not when the object is freed (its sessions keep it alive). Under l->lock. */
static void close_socket_when_idle(ioc_listener_t *l) {
  if (!l->closing || l->nposted > 0 || l->h.fd == IOC_BAD_FD) return;
  close_listen_socket(l);
}

/* Re-posts every accept not in flight, or arms the back-off if that fails.
 * Under l->lock. */
static void repost_missing(ioc_listener_t *l) {
  for (int i = 0; i < l->naccepts && !l->closing; i++) {
    if (l->posted[i]) continue;
    int rc = post_accept(l, i);
    if (rc < 0) {
      if (!l->backoff_armed) {
        ioc__log(l->obj.core, "listener: posting accept failed (%s), retrying in %d ms",
                 ioc_err_name(rc), IOC__ACCEPT_BACKOFF_MS);
      }
      break; /* the back-off below retries */
    }
  }
  if (!l->closing && l->nposted < l->naccepts) arm_backoff(l);
}

static void backoff_fire(ioc_timer_t *t, void *ud) {
  IOC__UNUSED(t);
  ioc_listener_t *l = ud;
  ioc__spin_lock(&l->lock);
  l->backoff_armed = false;
#ifndef _WIN32
  if (l->reserve_fd < 0 && !l->closing) l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
#endif
  repost_missing(l);
  close_socket_when_idle(l);
  ioc__spin_unlock(&l->lock);
  ioc__object_unref(&l->obj);
}

#ifndef _WIN32
/* Out of fds: drop what waits in the backlog using the reserve fd's slot.
 * Under l->lock.
 * The slot is free between close(reserve) and the accepts/open below, and
 * another accept of this very listener (another worker's accept4 on epoll,
 * an accept the kernel completes on io_uring) may take it. Then nothing can
 * be shed and the reserve cannot be re-opened; the thief's completion
 * hands the slot back (see reclaim_reserve), so the reserve is never lost
 * for good to the listener's own accepts. */
static void shed_backlog(ioc_listener_t *l) {
  if (l->reserve_fd >= 0) {
    close(l->reserve_fd);
    l->reserve_fd = -1;
  }
  int shed = 0;
  for (;;) {
    int fd = accept(l->h.fd, NULL, NULL);
    if (fd < 0) break;
    close(fd);
    shed++;
  }
  l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (shed) IOC__STAT_ADD(l->obj.core, rejected, shed);
}

/* An accepted connection while the reserve is missing: its descriptor
 * becomes the reserve (the connection shut down: the client sees it
 * closed, and it counts as rejected). Without this, a reserve lost at
 * EMFILE stays lost while every descriptor is held, the backlog is never
 * shed again, and new clients hang in it. Returns true if fd was taken.
 * Under l->lock. */
static bool reclaim_reserve(ioc_listener_t *l, int fd) {
  if (l->reserve_fd >= 0 || l->closing) return false;
  shutdown(fd, SHUT_RDWR);
  l->reserve_fd = fd;
  IOC__STAT_ADD(l->obj.core, rejected, 1);
  return true;
}
#endif

/* Arms the one-shot back-off that re-posts the missing accepts later.
 * Under l->lock. */
static void arm_backoff(ioc_listener_t *l) {
  if (l->backoff_armed) return;
  l->backoff_armed = true;
  ioc__object_ref(&l->obj);
  if (ioc_timer_start(l->obj.core, IOC__ACCEPT_BACKOFF_MS, 0, backoff_fire, l, NULL) < 0) {
    l->backoff_armed = false;
    ioc__object_unref(&l->obj);
  }
}

/* A connection came in on accept op: it becomes a session, announced and
 * started; or, when the listener is closing or at max_connections, it is
 * closed at once (the client sees a close, not a hang). The socket is
 * counted from here on. */
static void take_connection(ioc_listener_t *l, ioc__op_t *op, ioc_fd_t fd, bool closing) {
  ioc_core_t *core = l->obj.core;
  ioc__socket_adopt(core, fd);
  if (closing) {
    ioc__socket_close(core, fd);
    return;
  }
  if (l->opts.max_connections && atomic_load(&l->nsessions) >= l->opts.max_connections) {
    IOC__STAT_ADD(core, rejected, 1);
    ioc__socket_close(core, fd);
    return;
  }
  ioc_addr_t peer = op->u.accept.slot->addr;
  if (l->addr.u.family == AF_UNIX && (peer.len <= 2 || ioc__socket_peer_addr(fd, &peer) < 0))
    ioc__addr_from_unix(&peer, "", 0); /* unnamed (as most clients are), or not asked */
  ioc_session_t *s = NULL;
  int rc = ioc__session_new_accepted(core, l, fd, &peer, &s);
  if (rc < 0) {
    ioc__log(core, "listener: dropping a connection: %s", ioc_strerror(rc));
    ioc__socket_close(core, fd);
    return;
  }
  if (l->opts.proxy_protocol) {
    ioc__session_start_proxy(s); /* announced once its header is in */
    return;
  }
  if (l->on_accept) l->on_accept(l, s, l->ud);
  ioc__session_start(s);
}

/* An accept failed with res. Returns true when the listener should back
 * off before posting again: out of descriptors or memory (the backlog is
 * shed first, so waiting clients see a close instead of a hang), or an
 * error not known to be about one connection only (logged). A connection
 * that died in the backlog, a cancel or an interruption: post again now. */
static bool accept_failed(ioc_listener_t *l, int res, bool closing) {
  if (closing) return false;
  if (res == IOC_EMFILE || res == IOC_ENFILE || res == IOC_ENOBUFS || res == IOC_ENOMEM) {
#ifndef _WIN32
    ioc__spin_lock(&l->lock);
    shed_backlog(l);
    ioc__spin_unlock(&l->lock);
#endif
    return true;
  }
  if (res == IOC_ECANCELED || res == IOC_ECONNABORTED || res == IOC_EAGAIN || res == IOC_EINTR ||
      res == IOC_ECONNRESET || res == IOC_EPERM)
    return false;
  ioc__log(l->obj.core, "listener: accept failed: %s", ioc_strerror(res));
  return true;
}

/* One accept completed: its connection is taken (or its failure weighed),
 * then accept i is posted again, or the back-off armed, unless the
 * listener is closing (then its socket closes once no accept is left). */
static void listener_dispatch(ioc__object_t *obj, ioc__op_t *op) {
  ioc_listener_t *l = IOC__CONTAINER_OF(obj, ioc_listener_t, obj);
  int i = (int)(op - l->ops);
  int res = op->res;

  ioc__spin_lock(&l->lock);
  l->posted[i] = 0;
  l->nposted--;
  IOC__STAT_SUB(obj->core, accepts_posted, 1);
  bool closing = l->closing;
#ifndef _WIN32
  if (res >= 0 && reclaim_reserve(l, op->u.accept.fd))
    res = IOC_ECONNABORTED; /* re-posted below like a dropped connection */
#endif
  ioc__spin_unlock(&l->lock);

  bool backoff = false;
  if (res >= 0)
    take_connection(l, op, op->u.accept.fd, closing);
  else
    backoff = accept_failed(l, res, closing);

  ioc__spin_lock(&l->lock);
  if (!l->closing) {
    if (backoff) {
      arm_backoff(l);
    } else if (!l->posted[i] && post_accept(l, i) < 0) {
      /* posted[i] may be set already: a back-off that fired while this
       * completion ran on_accept re-posted every idle op, this one too. */
      repost_missing(l);
    }
  }
  close_socket_when_idle(l);
  ioc__spin_unlock(&l->lock);
}

static void listener_destroy(ioc__object_t *obj) {
  ioc_listener_t *l = IOC__CONTAINER_OF(obj, ioc_listener_t, obj);
  if (l->h.fd != IOC_BAD_FD) close_listen_socket(l);
#ifndef _WIN32
  if (l->reserve_fd >= 0) close(l->reserve_fd);
#endif
  free(l->ops);
  free(l->slots);
  free(l->posted);
  free(l);
}

int ioc_listen(ioc_core_t *core, const char *address, size_t address_len,
               const ioc_listener_options_t *opts, ioc_accept_cb on_accept, void *ud,
               ioc_listener_t **out) {
  ioc_listener_options_t o;
  memset(&o, 0, sizeof o);
  if (opts) o = *opts;
  if (!address || !out || o.backlog < 0 || o.accepts < 0 || o.accepts > IOC__MAX_ACCEPTS ||
      ioc__framing_check(&o.session.framing) < 0)
    return IOC_EINVAL;
  if (!o.backlog) o.backlog = IOC__DEFAULT_BACKLOG;
  if (!o.accepts) o.accepts = IOC__DEFAULT_ACCEPTS;
  ioc_addr_t addr;
  int rc = ioc_addr_parse(&addr, address, address_len);
  if (rc < 0) return rc;
  bool is_unix = addr.u.family == AF_UNIX;
#ifdef _WIN32
  if (is_unix) return IOC_EAFNOSUPPORT; /* not in this build (wine has no AF_UNIX) */
#endif

  ioc_listener_t *l = calloc(1, sizeof *l);
  if (!l) return IOC_ENOMEM;
  ioc_fd_t fd;
  rc = ioc__socket_open(core, addr.u.family, &fd);
  if (rc < 0) {
    free(l);
    return rc;
  }
  if (is_unix) {
#ifndef _WIN32
    rc = unix_bind(l, fd, &addr);
#endif
  } else {
    /* TCP_NODELAY here is inherited by every accepted socket (Linux): one
     * syscall per listener instead of one per connection. */
    ioc__socket_set_nodelay(fd);
    if ((rc = ioc__socket_set_reuseaddr(fd)) == 0 && o.reuseport)
      rc = ioc__socket_set_reuseport(fd);
    if (rc == 0) rc = ioc__socket_bind(fd, &addr);
  }
  if (rc < 0 || (rc = ioc__socket_listen(fd, o.backlog)) < 0 ||
      (!is_unix && (rc = ioc__socket_local_addr(fd, &addr)) < 0)) {
    l->addr = addr;
#ifndef _WIN32
    unix_unlink(l);
#endif
    ioc__socket_close(core, fd);
    free(l);
    return rc;
  }

  ioc__object_init(&l->obj, core, &listener_vtbl); /* the open reference */
  l->h.fd = fd;
  l->addr = addr;
  l->opts = o;
  l->on_accept = on_accept;
  l->ud = ud;
  l->naccepts = o.accepts;
#ifndef _WIN32
  l->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
#endif
  l->ops = calloc((size_t)o.accepts, sizeof *l->ops);
  l->slots = calloc((size_t)o.accepts, sizeof *l->slots);
  l->posted = calloc((size_t)o.accepts, 1);
  rc = (!l->ops || !l->slots || !l->posted) ? IOC_ENOMEM : core->backend->add(core, &l->h);
  if (rc < 0) {
    /* Never associated with the backend: close it here, so destroy does not
     * dissociate what was never added. */
#ifndef _WIN32
    unix_unlink(l);
#endif
    ioc__socket_close(core, fd);
    l->h.fd = IOC_BAD_FD;
    ioc__object_unref(&l->obj);
    return rc;
  }
  ioc__mutex_lock(&core->objects_lock);
  l->next = core->listeners;
  if (l->next) l->next->prev = l;
  core->listeners = l;
  ioc__mutex_unlock(&core->objects_lock);

  ioc__spin_lock(&l->lock);
  repost_missing(l);
  ioc__spin_unlock(&l->lock);
  *out = l;
  return 0;
}

const ioc_addr_t *ioc_listener_address(const ioc_listener_t *l) { return &l->addr; }

void ioc_listener_set_accept(ioc_listener_t *l, ioc_accept_cb on_accept, void *ud) {
  ioc__spin_lock(&l->lock);
  l->on_accept = on_accept;
  l->ud = ud;
  ioc__spin_unlock(&l->lock);
}

uint64_t ioc_listener_sessions(const ioc_listener_t *l) {
  return (uint64_t)atomic_load(&((ioc_listener_t *)l)->nsessions);
}

void ioc_listener_close(ioc_listener_t *l) {
  ioc_core_t *core = l->obj.core;
  ioc__spin_lock(&l->lock);
  if (l->closing) {
    ioc__spin_unlock(&l->lock);
    return;
  }
  l->closing = true;
  for (int i = 0; i < l->naccepts; i++)
    if (l->posted[i]) ioc__op_cancel(core, &l->ops[i]);
  close_socket_when_idle(l);
  ioc__spin_unlock(&l->lock);
  ioc__mutex_lock(&core->objects_lock);
  if (l->prev) l->prev->next = l->next; else core->listeners = l->next;
  if (l->next) l->next->prev = l->prev;
  l->prev = l->next = NULL;
  ioc__mutex_unlock(&core->objects_lock);
  ioc__object_unref(&l->obj); /* the open reference */
}

/* The sessions of the core for which keep(s, now) is true (all when keep
 * is NULL), each with a reference the caller drops, taken under the
 * objects lock so that the caller can close them without it. Returns the
 * array (free it) and its length in *n; a shorter one if memory ran out. */
static ioc_session_t **snapshot_sessions(ioc_core_t *core, bool (*keep)(ioc_session_t *, uint64_t),
                                         uint64_t now, size_t *n) {
  size_t cap = 0;
  ioc_session_t **all = NULL;
  *n = 0;
  ioc__mutex_lock(&core->objects_lock);
  for (ioc_session_t *s = core->sessions; s; s = s->next) {
    if (keep && !keep(s, now)) continue;
    if (*n == cap) {
      size_t grow = cap ? cap * 2 : 64;
      ioc_session_t **grown = realloc(all, grow * sizeof *all);
      if (!grown) break;
      all = grown;
      cap = grow;
    }
    ioc__object_ref(&s->obj);
    all[(*n)++] = s;
  }
  ioc__mutex_unlock(&core->objects_lock);
  return all;
}

void ioc_listener_retain(ioc_listener_t *l) { ioc__object_ref(&l->obj); }
void ioc_listener_release(ioc_listener_t *l) { ioc__object_unref(&l->obj); }

void ioc_core_close_listeners(ioc_core_t *core) {
  for (;;) {
    ioc__mutex_lock(&core->objects_lock);
    ioc_listener_t *l = core->listeners;
    if (l) ioc__object_ref(&l->obj);
    ioc__mutex_unlock(&core->objects_lock);
    if (!l) break;
    ioc_listener_close(l);
    ioc__object_unref(&l->obj);
  }
}

/* Sessions the embedder knows of (not those still reading a PROXY header). */
static bool announced(ioc_session_t *s, uint64_t now) {
  IOC__UNUSED(now);
  ioc__spin_lock(&s->lock); /* (under objects_lock: that order is allowed) */
  bool shown = !s->hidden;
  ioc__spin_unlock(&s->lock);
  return shown;
}

void ioc_core_foreach_session(ioc_core_t *core, void (*fn)(ioc_session_t *s, void *arg),
                              void *arg) {
  size_t n;
  ioc_session_t **all = snapshot_sessions(core, announced, 0, &n);
  for (size_t i = 0; i < n; i++) {
    fn(all[i], arg);
    ioc__object_unref(&all[i]->obj);
  }
  free(all);
}

void ioc_core_close_all(ioc_core_t *core, int abort) {
  ioc_core_close_listeners(core);
  /* Sessions leave the list only when finalized, so walk a snapshot. */
  size_t n;
  ioc_session_t **all = snapshot_sessions(core, NULL, 0, &n);
  for (size_t i = 0; i < n; i++) {
    if (abort)
      ioc_session_abort(all[i]);
    else
      ioc_session_close(all[i]);
    ioc__object_unref(&all[i]->obj);
  }
  free(all);
}
