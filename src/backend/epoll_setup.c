/* The epoll backend's set-up (the design is in epoll.c): the fd table,
 * probing, the core's and the loops' state, registering and unregistering
 * sockets, wakes, and the backend table. */
#ifdef __linux__

#include "epoll.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- the fd table ---------------------------------------------------------- */


/* The slot of fd, allocating its chunk if needed. NULL on ENOMEM or an fd
 * beyond the table (sized from RLIMIT_NOFILE's hard limit at init). */
static ep_slot_t *ep_slot_make(ep_state_t *st, int fd) {
  ep_slot_t *slot = ep_slot(st, fd);
  if (slot || fd < 0 || (size_t)fd >> EP_CHUNK_SHIFT >= st->nchunks) return slot;
  ep_slot_t *fresh = calloc(EP_CHUNK_SIZE, sizeof *fresh);
  if (!fresh) return NULL;
  ep_slot_t *expected = NULL;
  if (!atomic_compare_exchange_strong_explicit(&st->chunks[fd >> EP_CHUNK_SHIFT], &expected,
                                               fresh, memory_order_acq_rel,
                                               memory_order_acquire)) {
    free(fresh); /* another add won the race: use its chunk */
    return &expected[(unsigned)fd & (EP_CHUNK_SIZE - 1)];
  }
  return &fresh[(unsigned)fd & (EP_CHUNK_SIZE - 1)];
}

/* ---- the backend functions -------------------------------------------------------- */

static int ep_probe(void) {
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return errno == EPERM ? IOC_EPERM : IOC_ENOSYS;
  close(fd);
  return 0;
}

static void ep_destroy(ioc_core_t *core) {
  ep_state_t *st = ep_state(core);
  if (!st) return;
  for (size_t i = 0; st->chunks && i < st->nchunks; i++)
    free(atomic_load_explicit(&st->chunks[i], memory_order_relaxed));
  free(st->chunks);
  free(st);
  core->bd = NULL;
}

static int ep_init(ioc_core_t *core) {
  ep_state_t *st = calloc(1, sizeof *st);
  if (!st) return IOC_ENOMEM;
  core->bd = st;
  /* The table covers every fd the process may ever hold: the hard limit,
   * capped (a huge limit costs only untouched virtual memory here, 8 bytes
   * per 1024 fds). */
  struct rlimit rl;
  size_t maxfd = 1u << 20;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY)
    maxfd = rl.rlim_max < (1u << 30) ? (size_t)rl.rlim_max : (size_t)1 << 30;
  if (maxfd < 1024) maxfd = 1024;
  st->nchunks = (maxfd + EP_CHUNK_SIZE - 1) >> EP_CHUNK_SHIFT;
  st->chunks = calloc(st->nchunks, sizeof *st->chunks);
  if (!st->chunks) {
    ep_destroy(core);
    return IOC_ENOMEM;
  }
  return 0;
}

static void ep_loop_destroy(ioc_core_t *core, ioc__loop_t *loop) {
  IOC__UNUSED(core);
  ep_loop_t *el = loop->bl;
  if (!el) return;
  if (el->epfd >= 0) close(el->epfd);
  if (el->wakefd >= 0) close(el->wakefd);
  free(el);
  loop->bl = NULL;
}

static int ep_loop_init(ioc_core_t *core, ioc__loop_t *loop) {
  ep_loop_t *el = calloc(1, sizeof *el);
  if (!el) return IOC_ENOMEM;
  el->epfd = el->wakefd = -1;
  loop->bl = el;
  el->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (el->epfd < 0) goto fail;
  el->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (el->wakefd < 0) goto fail;
  /* Level-triggered: it stays reported until wait() drains it, so a wake
   * that lands while nobody waits is not lost. */
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EP_WAKE_TAG};
  if (epoll_ctl(el->epfd, EPOLL_CTL_ADD, el->wakefd, &ev) < 0) goto fail;
  return 0;
fail:;
  int rc = -errno;
  ep_loop_destroy(core, loop);
  return rc;
}

/* Registers h->fd for edge-triggered reading and writing, once. The handle's
 * queues must be empty. The socket starts out assumed writable (a fresh
 * connected socket is; the first send then goes out without an epoll round
 * trip), and not assumed readable (ADD reports data already there). */
static int ep_add(ioc_core_t *core, ioc__handle_t *h) {
  ep_state_t *st = ep_state(core);
  int fd = h->fd;
  if (fd < 0) return IOC_EBADF;
  ep_slot_t *slot = ep_slot_make(st, fd);
  if (!slot) return (size_t)fd >> EP_CHUNK_SHIFT >= st->nchunks ? IOC_EMFILE : IOC_ENOMEM;

  ioc__spin_lock(&ep_h(h)->lock);
  ep_h(h)->bits = EP_WRITABLE;
  ioc__queue_init(&ep_h(h)->rd);
  ioc__queue_init(&ep_h(h)->wr);
  ioc__spin_unlock(&ep_h(h)->lock);

  ioc__spin_lock(&slot->lock);
  uint32_t gen = ++slot->gen;
  slot->h = h;
  ioc__spin_unlock(&slot->lock);

  struct epoll_event ev = {
      .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
      .data.u64 = (uint64_t)gen << 32 | (uint32_t)fd,
  };
  if (epoll_ctl(ep_epfd(core, h), EPOLL_CTL_ADD, fd, &ev) < 0) {
    int rc = -errno;
    ioc__spin_lock(&slot->lock);
    if (slot->gen == gen) {
      slot->gen++;
      slot->h = NULL;
    }
    ioc__spin_unlock(&slot->lock);
    return rc;
  }
  return 0;
}

/* Forgets h in the fd table and in its slot: after the generation bump no
 * event reaped earlier can reach it, and taking the slot lock waited out
 * any thread still working on h. Leaves the kernel's registration alone. */
static void ep_forget(ioc_core_t *core, ioc__handle_t *h) {
  ep_slot_t *slot = ep_slot(ep_state(core), h->fd);
  if (slot) {
    ioc__spin_lock(&slot->lock);
    if (slot->h == h) {
      slot->gen++;
      slot->h = NULL;
    }
    ioc__spin_unlock(&slot->lock);
  }
  ioc__spin_lock(&ep_h(h)->lock);
  assert(ioc__queue_empty(&ep_h(h)->rd) && ioc__queue_empty(&ep_h(h)->wr));
  ep_h(h)->bits = 0;
  ioc__spin_unlock(&ep_h(h)->lock);
}

/* Unregisters h. Called with no op of h in flight, before the fd is closed. */
static void ep_del(ioc_core_t *core, ioc__handle_t *h) {
  ep_forget(core, h);
  /* A zeroed event: kernels before 2.6.9 wanted a non-NULL pointer. */
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  epoll_ctl(ep_epfd(core, h), EPOLL_CTL_DEL, h->fd, &ev);
}

/* backend->close for a session's socket: what ep_del does, without the
 * EPOLL_CTL_DEL: closing the socket drops its registration in the kernel
 * (the socket is the session's alone), and an event reaped before that
 * finds the generation bumped here and is dropped. One syscall less per
 * connection. */
static bool ep_close(ioc_core_t *core, ioc__handle_t *h) {
  ep_forget(core, h);
  close(h->fd); /* EINTR too releases the descriptor on Linux: never retried */
  return true;
}

/* Makes the thread blocked in wait() return. One eventfd write per wait at
 * most: later wakes see wake_pending and skip the syscall. */
static void ep_wake(ioc_core_t *core, ioc__loop_t *loop) {
  IOC__UNUSED(core);
  ep_loop_t *st = loop->bl;
  if (atomic_exchange(&st->wake_pending, 1)) return;
  uint64_t one = 1;
  while (write(st->wakefd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

const ioc__backend_t ioc__backend_epoll = {
    .name = "epoll",
    .kind = IOC_BACKEND_EPOLL,
    .single_waiter = true,
    .pinned_submit = false,
    .probe = ep_probe,
    .init = ep_init,
    .destroy = ep_destroy,
    .loop_init = ep_loop_init,
    .loop_destroy = ep_loop_destroy,
    .add = ep_add,
    .del = ep_del,
    .submit = ioc__ep_submit,
    .cancel = ioc__ep_cancel,
    .wait = ioc__ep_wait,
    .complete = ioc__ep_complete,
    .run_deferred = ioc__ep_run_deferred,
    .wake = ep_wake,
    .flush = NULL,
    .shutdown = NULL, /* the syscall, inline: it would be the same syscall later */
    .close = ep_close,
};

#else
typedef int ioc__epoll_setup_unused_t; /* not Linux: no epoll backend */
#endif /* __linux__ */
