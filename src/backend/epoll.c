/* The epoll backend: completions emulated on readiness (Linux fallback).
 *
 * The layers above only ever see completions. A socket is registered once,
 * edge-triggered for reading and writing; operations that cannot finish at
 * once wait in the handle's queues (rd: ACCEPT/RECV, wr: SEND/CONNECT). When
 * readiness is reported, complete() performs the syscall itself (accept4,
 * recv, sendmsg, or SO_ERROR for a connect) and completes the operation.
 *
 * Edge-triggered means the kernel says "ready" once per change, so the
 * handle remembers it (EP_READABLE / EP_WRITABLE in its slot) until a
 * syscall answers EAGAIN; an operation posted later finds the bit and runs
 * without waiting for an edge that will never come.
 *
 * Lifetime of harvested events. epoll_wait() hands out events that a thread
 * holds for a while before complete() runs, and meanwhile another thread may
 * finish the socket's last operation, del() it and free the session. So an
 * event never carries a handle pointer: it carries (fd, generation), and a
 * table indexed by fd (like Redis's events[fd] or libuv's watchers[fd])
 * maps it to the handle under a per-slot lock. del() bumps the generation
 * under that lock, so once it returns no thread touches the handle, and a
 * stale event finds a generation that no longer matches and is dropped.
 * libuv solves the same problem by rewriting the pending batch in
 * uv__platform_invalidate_fd; with batches held by several threads the
 * generation check is the multi-threaded equivalent.
 *
 * Lock order: slot lock, then the handle's lock (ep_handle_t, kept in the
 * handle's backend slot); the owner's own lock (session) may be held around
 * submit/cancel, which take only the handle's lock. No lock is held while
 * an operation is completed or deferred.
 *
 * The read side of a handle has one runner at a time (EP_RD_BUSY): the
 * thread that saw the edge, or a deferred "token" operation carrying the
 * duty to a dispatching thread. A runner completes RECVs one at a time (the
 * data lives in a thread-local buffer until ioc__op_complete returns) and
 * keeps going while the owner re-posts from inside dispatch, up to a
 * budget, so one busy socket cannot hold a thread forever.
 */
#ifdef __linux__

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif

#include "epoll.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* op->flags, all under the handle's lock */
#define EP_OP_RDQ 0x1u    /* in h->rd queue */
#define EP_OP_WRQ 0x2u    /* in h->wr queue */
#define EP_OP_TOKEN 0x4u  /* deferred with ioc__core_defer_backend; holds EP_RD_BUSY */
#define EP_OP_CANCEL 0x8u /* cancel asked while a token */

#define EP_RECV_BUF (64 * 1024)
/* Operations one runner completes on a handle before it hands the rest to
 * the ready queue (16 x 64 KiB = 1 MiB of a fast sender per turn). */
#define EP_READ_BUDGET 16

/* The receive buffer of this thread. A RECV completion points op->u.recv.buf here;
 * it stays valid until that op's ioc__op_complete returns. ep_recv_buf_busy
 * covers a dispatch that re-enters the backend on the same thread (a
 * callback calling ioc_core_dispatch): the nested read gets a heap buffer. */
static _Thread_local char ep_recv_buf[EP_RECV_BUF];
static _Thread_local int ep_recv_buf_busy;

/* ---- queues (queue.h, through op->qn, under the handle's lock) ------------- */

static inline void q_push(ioc__queue_t *q, ioc__op_t *op) { ioc__queue_push(q, &op->qn); }

static inline ioc__op_t *q_first(const ioc__queue_t *q) {
  ioc__qnode_t *n = ioc__queue_head(q);
  return n ? IOC__QUEUE_DATA(n, ioc__op_t, qn) : NULL;
}

static inline ioc__op_t *q_pop(ioc__queue_t *q) {
  ioc__qnode_t *n = ioc__queue_pop(q);
  return n ? IOC__QUEUE_DATA(n, ioc__op_t, qn) : NULL;
}

/* Completes a queue built by the runners, in order. Returns how many. */
static int complete_list(ioc_core_t *core, ioc__queue_t *done) {
  int n = 0;
  ioc__op_t *op;
  while ((op = q_pop(done)) != NULL) { /* op may be re-submitted inside */
    ioc__op_complete(core, op);
    n++;
  }
  return n;
}

/* Marks op as the token that carries the read side of its handle to a
 * dispatching thread (ioc__ep_run_deferred). Under the handle's lock; the caller
 * gives the token EP_RD_BUSY and defers it with ioc__core_defer_backend
 * after unlocking. */
static void make_token(ioc__op_t *op) {
  op->flags = EP_OP_TOKEN;
  op->qn.next = NULL;
}

/* ---- fault injection (fault.h) ----------------------------------------------
 *
 * At the system call sites, under the handle's lock: the call is pretended to have
 * returned one of
 *   EINTR       retried by the site's loop, as a real one is;
 *   EAGAIN      the op stays queued and the readiness bit is cleared, as
 *               after a real EAGAIN. A real one means the socket was not
 *               ready, so any later data (room, connection) raises a new
 *               edge. This one was not real, and no edge would come for what
 *               is already there: so the handle is re-armed with
 *               EPOLL_CTL_MOD, which makes the kernel report the fd again if
 *               it is ready now (ep_rearm_locked). What the backend sees is
 *               then "EAGAIN, and the data came right after": a real race.
 *               (For a connect: readiness that is not the end of the
 *               handshake, which ADD reports for a fresh socket.)
 *   ECONNRESET  recv/sendmsg: the peer reset the connection;
 *   ECONNABORTED, ENOMEM  accept4: a connection died in the backlog (the
 *               site's loop takes the next one) / no memory, before a
 *               connection was dequeued.
 * A send may also be cut short: it is given a prefix of its bytes, so the
 * kernel really writes only that much (do_send). */
enum { EP_SITE_ACCEPT, EP_SITE_RECV, EP_SITE_SEND, EP_SITE_CONNECT };

static int ep_fault(ioc_core_t *core, ioc__handle_t *h, int site) {
  ioc__faults_t *f = &core->faults;
  if (site != EP_SITE_CONNECT && ioc__fault_roll(f, IOC__FAULT_EINTR)) return -EINTR;
  if (ioc__fault_roll(f, IOC__FAULT_EAGAIN)) {
    ep_h(h)->bits |= EP_REARM;
    return -EAGAIN;
  }
  if (site == EP_SITE_CONNECT) return 0;
  if (ioc__fault_roll(f, IOC__FAULT_ECONNRESET))
    return site == EP_SITE_ACCEPT ? -ECONNABORTED : -ECONNRESET;
  if (site == EP_SITE_ACCEPT && ioc__fault_roll(f, IOC__FAULT_ENOMEM)) return -ENOMEM;
  return 0;
}

/* Re-arms fd (registered as generation gen) after an injected EAGAIN: MOD
 * with the same events makes an edge-triggered fd report its present
 * readiness again. Under the slot lock, with gen checked, so the fd cannot
 * have been closed and reused meanwhile. */
static void ep_rearm_locked(int epfd, int fd, uint32_t gen) {
  struct epoll_event ev = {
      .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
      .data.u64 = (uint64_t)gen << 32 | (uint32_t)fd,
  };
  epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
}

/* Takes EP_REARM off h (under its lock); true if it was set. */
static bool ep_take_rearm(ioc__handle_t *h) {
  if (IOC__LIKELY(!(ep_h(h)->bits & EP_REARM))) return false;
  ep_h(h)->bits &= ~EP_REARM;
  return true;
}

/* ---- the syscalls (each returns a result or -errno; EAGAIN means "later") -- */

static int do_accept(ioc_core_t *core, ioc__handle_t *h, ioc__op_t *op) {
  for (;;) {
    if (IOC__FAULTS_ON(core)) {
      int inj = ep_fault(core, h, EP_SITE_ACCEPT);
      if (inj == -EINTR || inj == -ECONNABORTED) continue; /* as below */
      if (inj) return inj;
    }
    socklen_t len = sizeof op->u.accept.slot->addr.u.bytes;
    int fd = accept4(h->fd, (struct sockaddr *)op->u.accept.slot->addr.u.bytes, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      op->u.accept.fd = fd;
      op->u.accept.slot->addr.len = (uint32_t)len;
      op->u.accept.slot->addrlen = (uint32_t)len;
      return fd;
    }
    /* The connection died in the backlog: take the next one. */
    if (errno != EINTR && errno != ECONNABORTED) return -errno;
  }
}

static int do_recv(ioc_core_t *core, ioc__handle_t *h, char *buf) {
  ssize_t n;
  for (;;) {
    if (IOC__FAULTS_ON(core)) {
      int inj = ep_fault(core, h, EP_SITE_RECV);
      if (inj == -EINTR) continue;
      if (inj) return inj;
    }
    n = recv(h->fd, buf, EP_RECV_BUF, 0);
    if (n >= 0 || errno != EINTR) break;
  }
  return n < 0 ? -errno : (int)n;
}

/* Injected short write: maybe points m at a copy of a random non-empty
 * proper prefix of its bytes (within its first EP_CUT_IOV iovecs). */
#define EP_CUT_IOV 64
static void ep_fault_cut(ioc_core_t *core, struct msghdr *m, struct iovec cut[EP_CUT_IOV]) {
  size_t n = m->msg_iovlen < EP_CUT_IOV ? m->msg_iovlen : EP_CUT_IOV;
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) total += m->msg_iov[i].iov_len;
  if (total < 2 || !ioc__fault_roll(&core->faults, IOC__FAULT_SHORT_WRITE)) return;
  uint64_t at = 1 + ioc__fault_below(&core->faults, total - 1), acc = 0;
  for (size_t i = 0; i < n; i++) {
    cut[i] = m->msg_iov[i];
    if (acc + cut[i].iov_len >= at) {
      cut[i].iov_len = (size_t)(at - acc);
      m->msg_iov = cut;
      m->msg_iovlen = i + 1;
      return;
    }
    acc += cut[i].iov_len;
  }
}

/* One gathered write of the op's iovecs; a short write is a valid result
 * (the session re-posts the rest). More than IOV_MAX iovecs are written as
 * a short write of the first IOV_MAX rather than failing with EMSGSIZE. */
static int do_send(ioc_core_t *core, ioc__handle_t *h, ioc__op_t *op) {
  if (op->u.send.iovcnt == 1 && !IOC__FAULTS_ON(core)) {
    ssize_t n;
    do n = send(h->fd, op->u.send.iov[0].iov_base, op->u.send.iov[0].iov_len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (int)n;
  }
  struct msghdr m;
  memset(&m, 0, sizeof m);
  m.msg_iov = op->u.send.iov;
  m.msg_iovlen = (size_t)(op->u.send.iovcnt > IOV_MAX ? IOV_MAX : op->u.send.iovcnt);
  struct iovec cut[EP_CUT_IOV];
  ssize_t n;
  for (;;) {
    if (IOC__FAULTS_ON(core)) {
      int inj = ep_fault(core, h, EP_SITE_SEND);
      if (inj == -EINTR) continue;
      if (inj) return inj;
      ep_fault_cut(core, &m, cut);
    }
    if (m.msg_iovlen == 1) /* as above, with injection on */
      n = send(h->fd, m.msg_iov[0].iov_base, m.msg_iov[0].iov_len, MSG_NOSIGNAL);
    else
      n = sendmsg(h->fd, &m, MSG_NOSIGNAL);
    if (n >= 0 || errno != EINTR) break;
  }
  return n < 0 ? -errno : (int)n;
}

/* The outcome of a connect in progress: 0, -error, or -EAGAIN while it is
 * still going. SO_ERROR alone cannot tell "connected" from "not yet": the
 * ADD of a fresh socket reports EPOLLOUT|EPOLLHUP for its unconnected state,
 * and that event may be reaped before connect() and completed after it. So
 * a zero SO_ERROR is confirmed with getpeername(). */
static int connect_result(ioc_core_t *core, ioc__handle_t *h) {
  if (IOC__FAULTS_ON(core) && ep_fault(core, h, EP_SITE_CONNECT)) return -EAGAIN;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
  if (err) return -err;
  struct sockaddr_storage peer;
  socklen_t plen = sizeof peer;
  if (getpeername(h->fd, (struct sockaddr *)&peer, &plen) < 0)
    return errno == ENOTCONN ? -EAGAIN : -errno;
  return 0;
}

/* ---- the write side ------------------------------------------------------------ */

/* Runs queued SEND/CONNECT ops while the socket takes them and moves the
 * finished ones to done, for the caller to complete after unlocking. Stops
 * after one SEND: a short write must be re-posted before anything else is
 * written (sessions keep one send in flight anyway). Under the handle's
 * lock. */
static void run_writes_locked(ioc_core_t *core, ioc__handle_t *h, ioc__queue_t *done) {
  ioc__op_t *op;
  while ((op = q_first(&ep_h(h)->wr)) && (ep_h(h)->bits & EP_WRITABLE)) {
    int res = op->type == IOC__OP_SEND ? do_send(core, h, op) : connect_result(core, h);
    if (res == -EAGAIN) {
      ep_h(h)->bits &= ~EP_WRITABLE;
      break;
    }
    q_pop(&ep_h(h)->wr);
    op->flags = 0;
    op->res = res;
    q_push(done, op);
    if (op->type == IOC__OP_SEND) break;
  }
}

/* ---- the read side ------------------------------------------------------------- */

/* Runs the read side of the handle registered in slot as generation gen. The
 * caller owns EP_RD_BUSY. Each round, under the locks, performs queued
 * ACCEPTs (all that succeed) or one RECV, then completes them unlocked and
 * looks again, so a RECV re-posted from inside dispatch is served here
 * without a trip through the ready queue. Ends, dropping EP_RD_BUSY, at
 * EAGAIN, an empty queue, or an error; at the budget it hands EP_RD_BUSY to
 * a token. If the handle is del()ed meanwhile the slot check stops it.
 * Returns the number of ops completed. */
static int run_reads(ioc_core_t *core, ep_slot_t *slot, uint32_t gen) {
  int completed = 0, budget = EP_READ_BUDGET;
  for (;;) {
    ioc__queue_t done = IOC__QUEUE_INIT;
    ioc__op_t *token = NULL, *op;
    char *heap_buf = NULL;
    bool tls_taken = false, stop = false;

    ioc__spin_lock(&slot->lock);
    if (slot->gen != gen) { /* del()ed: nothing of it may be touched */
      ioc__spin_unlock(&slot->lock);
      return completed;
    }
    ioc__handle_t *h = slot->h;
    ioc__spin_lock(&ep_h(h)->lock);
    while ((op = q_first(&ep_h(h)->rd)) && (ep_h(h)->bits & EP_READABLE)) {
      if (budget <= 0) {
        q_pop(&ep_h(h)->rd);
        make_token(op);
        token = op;
        break;
      }
      budget--;
      int res;
      char *buf = NULL;
      if (op->type == IOC__OP_RECV) {
        buf = ep_recv_buf_busy ? (heap_buf = malloc(EP_RECV_BUF)) : ep_recv_buf;
        res = buf ? do_recv(core, h, buf) : IOC_ENOMEM;
      } else {
        res = do_accept(core, h, op);
      }
      if (res == -EAGAIN) {
        ep_h(h)->bits &= ~EP_READABLE;
        break;
      }
      q_pop(&ep_h(h)->rd);
      op->flags = 0;
      op->res = res;
      q_push(&done, op);
      if (res < 0) {
        /* Keep EP_READABLE (the condition may persist), complete this one
         * and let the owner's re-post or the next edge retry the others, so
         * e.g. EMFILE fails one accept, not all of them in a burst. */
        stop = true;
        break;
      }
      if (op->type == IOC__OP_RECV) {
        op->u.recv.buf = buf;
        tls_taken = buf == ep_recv_buf;
        /* A short read drained the socket: any later data or FIN raises a
         * new edge. Not so if FIN or an error was already reported (its
         * edge is spent), nor after EOF, which stays readable. */
        if (res > 0 && res < EP_RECV_BUF && !(ep_h(h)->bits & EP_PEER_DONE))
          ep_h(h)->bits &= ~EP_READABLE;
        break; /* one RECV per round: its buffer is in use until completed */
      }
    }
    bool none = ioc__queue_empty(&done);
    if (!token && (stop || none)) ep_h(h)->bits &= ~EP_RD_BUSY;
    bool rearm = ep_take_rearm(h);
    ioc__spin_unlock(&ep_h(h)->lock);
    if (IOC__UNLIKELY(rearm)) ep_rearm_locked(ep_epfd(core, h), h->fd, gen);
    ioc__spin_unlock(&slot->lock);

    if (tls_taken) ep_recv_buf_busy = 1;
    completed += complete_list(core, &done);
    if (tls_taken) ep_recv_buf_busy = 0;
    free(heap_buf);
    if (token) {
      ioc__core_defer_backend(core, token);
      return completed;
    }
    if (stop || none) return completed;
  }
}

/* ---- submitting: one function per kind of operation -------------------------
 * None completes inline: a result known at once (a send that went out, a
 * connect that failed at once) goes through ioc__core_defer. */

/* ACCEPT / RECV: queued for the next edge, or handed to a dispatching thread
 * as a token when readiness is already banked and nobody runs the read side
 * (no edge may come again). A runner already active looks at the queue
 * again before it lets go. */
static int ep_submit_read(ioc_core_t *core, ioc__handle_t *h, ioc__op_t *op) {
  ep_handle_t *eh = ep_h(h);
  ioc__spin_lock(&eh->lock);
  if ((eh->bits & (EP_READABLE | EP_RD_BUSY)) == EP_READABLE) {
    eh->bits |= EP_RD_BUSY;
    make_token(op);
    ioc__spin_unlock(&eh->lock);
    ioc__core_defer_backend(core, op);
    return 0;
  }
  op->flags = EP_OP_RDQ;
  q_push(&eh->rd, op);
  ioc__spin_unlock(&eh->lock);
  return 0;
}

/* Re-arms h's fd after an injected EAGAIN on submit. Not under the slot
 * lock at the call site (it comes before the handle's lock): take it now.
 * The op may have completed meanwhile and h been freed, so h is compared
 * only as an address; if the slot holds it, it is registered under the
 * slot's gen, whoever it belongs to by now. */
static void ep_rearm_after_submit(ioc_core_t *core, ioc__handle_t *h, int fd) {
  ep_slot_t *slot = ep_slot(ep_state(core), fd);
  if (!slot) return;
  ioc__spin_lock(&slot->lock);
  if (slot->h == h) ep_rearm_locked(ep_epfd(core, h), fd, slot->gen);
  ioc__spin_unlock(&slot->lock);
}

/* SEND: written at once when nothing is queued before it and the socket is
 * writable (the common case: an idle socket takes a reply whole); else
 * queued for the next write edge. */
static int ep_submit_send(ioc_core_t *core, ioc__handle_t *h, ioc__op_t *op) {
  ep_handle_t *eh = ep_h(h);
  ioc__spin_lock(&eh->lock);
  if (ioc__queue_empty(&eh->wr) && (eh->bits & EP_WRITABLE)) {
    int res = do_send(core, h, op);
    if (res != -EAGAIN) {
      ioc__spin_unlock(&eh->lock);
      op->res = res;
      ioc__core_defer(core, op);
      return 0;
    }
    eh->bits &= ~EP_WRITABLE;
  }
  op->flags = EP_OP_WRQ;
  q_push(&eh->wr, op);
  int fd = h->fd;
  bool rearm = ep_take_rearm(h);
  ioc__spin_unlock(&eh->lock);
  if (IOC__UNLIKELY(rearm)) ep_rearm_after_submit(core, h, fd);
  return 0;
}

/* CONNECT: started here; one still in progress waits on the write queue.
 * Under the lock, so an edge for the new connection cannot be consumed
 * between connect() and queueing (it would never come again). */
static int ep_submit_connect(ioc_core_t *core, ioc__handle_t *h, ioc__op_t *op) {
  ep_handle_t *eh = ep_h(h);
  ioc__spin_lock(&eh->lock);
  const ioc_addr_t *a = op->u.connect.addr;
  int rc = connect(h->fd, (const struct sockaddr *)a->u.bytes, (socklen_t)a->len);
  if (rc < 0 && (errno == EINPROGRESS || errno == EINTR)) {
    eh->bits &= ~EP_WRITABLE;
    op->flags = EP_OP_WRQ;
    q_push(&eh->wr, op);
    ioc__spin_unlock(&eh->lock);
    return 0;
  }
  int res = rc < 0 ? -errno : 0;
  ioc__spin_unlock(&eh->lock);
  op->res = res;
  ioc__core_defer(core, op);
  return 0;
}

int ioc__ep_submit(ioc_core_t *core, ioc__op_t *op) {
  ioc__handle_t *h = op->handle;
  if (!h) return IOC_EINVAL;
  switch (op->type) {
  case IOC__OP_ACCEPT:
  case IOC__OP_RECV: return ep_submit_read(core, h, op);
  case IOC__OP_SEND: return ep_submit_send(core, h, op);
  case IOC__OP_CONNECT: return ep_submit_connect(core, h, op);
  default: return IOC_EINVAL;
  }
}

/* Completes op with ECANCELED if it still waits in a queue; a token is
 * marked and completes so when it runs; an op already being performed
 * completes with its real result. */
void ioc__ep_cancel(ioc_core_t *core, ioc__op_t *op) {
  ioc__handle_t *h = op->handle;
  if (!h) return;
  bool found = false;
  ioc__spin_lock(&ep_h(h)->lock);
  if (op->flags & EP_OP_RDQ)
    found = ioc__queue_remove(&ep_h(h)->rd, &op->qn);
  else if (op->flags & EP_OP_WRQ)
    found = ioc__queue_remove(&ep_h(h)->wr, &op->qn);
  else if (op->flags & EP_OP_TOKEN)
    op->flags |= EP_OP_CANCEL;
  if (found) op->flags = 0;
  ioc__spin_unlock(&ep_h(h)->lock);
  if (found) {
    op->res = IOC_ECANCELED;
    ioc__core_defer(core, op);
  }
}

/* Reaps up to max events. Each becomes {ptr = slot, res = generation,
 * flags = events}; the wake eventfd is drained here and reported as
 * nothing. Returns the count, 0 on time-out, EINTR, or a bare wake. */
int ioc__ep_wait(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *out, int max, int timeout_ms) {
  ep_state_t *st = ep_state(core);
  ep_loop_t *el = loop->bl;
  struct epoll_event evs[IOC__CQE_BATCH];
  if (max > IOC__CQE_BATCH) max = IOC__CQE_BATCH;
  if (max <= 0) return 0;
  int n = epoll_wait(el->epfd, evs, max, timeout_ms);
  if (n < 0) return errno == EINTR ? 0 : -errno;
  int k = 0;
  for (int i = 0; i < n; i++) {
    uint64_t tag = evs[i].data.u64;
    if (tag == EP_WAKE_TAG) {
      uint64_t count;
      /* Drain first, then re-arm wake(): a wake that finds the flag still
       * set lands while we are returning anyway, and the exchange pairs
       * with the waker's so its queued work is visible to our caller. */
      while (read(el->wakefd, &count, sizeof count) < 0 && errno == EINTR) {
      }
      atomic_exchange(&el->wake_pending, 0);
      continue;
    }
    ep_slot_t *slot = ep_slot(st, (int)(uint32_t)tag);
    if (!slot) continue;
    out[k].ptr = slot;
    out[k].res = (int32_t)(uint32_t)(tag >> 32);
    out[k].flags = evs[i].events;
    k++;
  }
  return k;
}

/* Banks the readiness of one event and runs whatever it unblocks: the write
 * queue under the locks (results completed after unlocking), then the read
 * side if no other thread is running it. Returns ops completed. */
int ioc__ep_complete(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *cqe) {
  IOC__UNUSED(loop);
  ep_slot_t *slot = cqe->ptr;
  if (!slot) return 0;
  uint32_t gen = (uint32_t)cqe->res;
  uint32_t ev = cqe->flags;

  ioc__spin_lock(&slot->lock);
  if (slot->gen != gen) { /* the fd was del()ed (and maybe reused) since */
    ioc__spin_unlock(&slot->lock);
    return 0;
  }
  ioc__handle_t *h = slot->h;
  ioc__spin_lock(&ep_h(h)->lock);
  /* Errors and hang-ups make every pending op try its syscall and pick up
   * the real error (ECONNRESET, EPIPE, ECONNREFUSED). EPOLLHUP alone is not
   * PEER_DONE: an unconnected socket reports it too. */
  if (ev & (EPOLLRDHUP | EPOLLERR)) ep_h(h)->bits |= EP_PEER_DONE;
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ep_h(h)->bits |= EP_READABLE;
  if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) ep_h(h)->bits |= EP_WRITABLE;
  ioc__queue_t done = IOC__QUEUE_INIT;
  if (!ioc__queue_empty(&ep_h(h)->wr)) run_writes_locked(core, h, &done);
  bool reads = (ep_h(h)->bits & (EP_READABLE | EP_RD_BUSY)) == EP_READABLE &&
               !ioc__queue_empty(&ep_h(h)->rd);
  if (reads) ep_h(h)->bits |= EP_RD_BUSY;
  bool rearm = ep_take_rearm(h);
  ioc__spin_unlock(&ep_h(h)->lock);
  if (IOC__UNLIKELY(rearm)) ep_rearm_locked(ep_epfd(core, h), h->fd, gen);
  ioc__spin_unlock(&slot->lock);

  int n = complete_list(core, &done);
  if (reads) n += run_reads(core, slot, gen);
  return n;
}

/* A token came out of the ready queue: put its op back at the head of the
 * read queue (or complete it, if cancelled meanwhile) and run the read side
 * with the EP_RD_BUSY the token carried; run_reads drops it when there is
 * nothing to do. The op holds a reference on the owner, so h is alive and
 * still registered (the EBADF branch only guards a broken owner). */
void ioc__ep_run_deferred(ioc_core_t *core, ioc__op_t *op) {
  ep_state_t *st = ep_state(core);
  ioc__handle_t *h = op->handle;
  ep_slot_t *slot = ep_slot(st, h->fd);
  bool complete_now = false;
  uint32_t gen = 0;

  if (slot) ioc__spin_lock(&slot->lock);
  bool registered = slot && slot->h == h;
  if (registered) gen = slot->gen;
  ioc__spin_lock(&ep_h(h)->lock);
  if (!registered || (op->flags & EP_OP_CANCEL)) {
    complete_now = true;
    op->res = registered ? IOC_ECANCELED : IOC_EBADF;
    op->flags = 0;
    if (!registered) ep_h(h)->bits &= ~EP_RD_BUSY;
  } else {
    op->flags = EP_OP_RDQ;
    ioc__queue_push_front(&ep_h(h)->rd, &op->qn);
  }
  ioc__spin_unlock(&ep_h(h)->lock);
  if (slot) ioc__spin_unlock(&slot->lock);

  if (registered) run_reads(core, slot, gen);
  if (complete_now) ioc__op_complete(core, op);
}

#else
typedef int ioc__epoll_unused_t; /* not Linux: no epoll backend */
#endif /* __linux__ */
