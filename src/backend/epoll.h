/* Private to the epoll backend (src/backend/epoll*.c): the state of a
 * socket, a loop and the core, and the helpers its files share. epoll.c:
 * the design, the emulated completions (queues, fault injection, the
 * syscalls, the read and write sides, submitting, cancelling, waiting and
 * completing); epoll_setup.c: the fd table, probing, the core's and the
 * loops' set-up, registering and unregistering sockets, wakes and the
 * backend table. */
#ifndef IOC_BACKEND_EPOLL_H
#define IOC_BACKEND_EPOLL_H
#ifdef __linux__

#include "../core/internal.h"

/* ep_handle_t.bits, all under its lock */
#define EP_READABLE 0x1u /* a read edge came and no syscall has said EAGAIN since */
#define EP_WRITABLE 0x2u /* the same for writing */
#define EP_PEER_DONE 0x4u /* FIN or an error was reported: a short read proves nothing */
#define EP_RD_BUSY 0x8u  /* a thread (or a deferred token) runs the read side */
#define EP_REARM 0x10u   /* fault injection: an injected EAGAIN wants the edge re-armed */

#define EP_CHUNK_SHIFT 10
#define EP_CHUNK_SIZE (1u << EP_CHUNK_SHIFT)
#define EP_WAKE_TAG UINT64_MAX

/* The backend's state of one socket, kept in its handle's slot. */
typedef struct ep_handle {
  ioc__spin_t lock; /* guards everything below */
  uint32_t bits;    /* EP_READABLE, EP_WRITABLE, ... */
  ioc__queue_t rd;  /* ACCEPT / RECV waiting for readiness (of ioc__op_t) */
  ioc__queue_t wr;  /* SEND / CONNECT waiting for readiness */
} ep_handle_t;
_Static_assert(sizeof(ep_handle_t) <= IOC__HANDLE_SLOT_SIZE, "ep_handle_t must fit a handle's slot");

static inline ep_handle_t *ep_h(ioc__handle_t *h) { return IOC__HANDLE_SLOT(h, ep_handle_t); }

/* One fd's registration. gen changes on every add and del, so an event
 * stamped with an older gen is recognised as stale. */
typedef struct ep_slot {
  ioc__spin_t lock;
  uint32_t gen;      /* under lock */
  ioc__handle_t *h;  /* under lock; NULL when the fd is not registered */
} ep_slot_t;

/* One loop's epoll instance (loop->bl): the sockets pinned to the loop are
 * registered here, and only the loop's driver waits on it. */
typedef struct ep_loop {
  int epfd;
  int wakefd;
  atomic_int wake_pending; /* a wake is written and not yet drained */
} ep_loop_t;

/* The core-wide part (core->bd): the fd table every loop shares. */
typedef struct ep_state {
  size_t nchunks;
  _Atomic(ep_slot_t *) *chunks; /* chunks[fd >> EP_CHUNK_SHIFT], allocated on first add */
} ep_state_t;

static inline ep_state_t *ep_state(ioc_core_t *core) { return (ep_state_t *)core->bd; }

/* The epoll instance h is registered with: its loop's. */
static inline int ep_epfd(ioc_core_t *core, const ioc__handle_t *h) {
  return ((ep_loop_t *)core->loops[h->loop]->bl)->epfd;
}

/* The slot of fd, or NULL if none was ever allocated for it. Any thread. */
static inline ep_slot_t *ep_slot(ep_state_t *st, int fd) {
  if (fd < 0 || (size_t)fd >> EP_CHUNK_SHIFT >= st->nchunks) return NULL;
  ep_slot_t *chunk = atomic_load_explicit(&st->chunks[fd >> EP_CHUNK_SHIFT], memory_order_acquire);
  return chunk ? &chunk[(unsigned)fd & (EP_CHUNK_SIZE - 1)] : NULL;
}

/* The backend functions of epoll.c that the table in epoll_setup.c names
 * (each described where it is defined): submit and cancel an op, wait on a
 * loop, complete what a wait reaped, run a token from the ready queue. */
int ioc__ep_submit(ioc_core_t *core, ioc__op_t *op);
void ioc__ep_cancel(ioc_core_t *core, ioc__op_t *op);
int ioc__ep_wait(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *out, int max, int timeout_ms);
int ioc__ep_complete(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *cqe);
void ioc__ep_run_deferred(ioc_core_t *core, ioc__op_t *op);

#endif /* __linux__ */
#endif /* IOC_BACKEND_EPOLL_H */
