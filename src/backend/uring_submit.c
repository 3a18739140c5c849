/* The io_uring backend's submission side: preparing accept / connect /
 * receive / send SQEs (with injected faults), the backlog when the kernel
 * takes no more, cancels, wakes between threads, flushes, and the close
 * through the ring. See uring.c for the design. */
#ifdef __linux__

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "uring.h"

/* user_data markers for CQEs that are not ops (uring.h). */
uint64_t ioc__uring_cancel_marker;
uint64_t ioc__uring_close_marker;

static bool ur_net_op(const ioc__op_t *op) {
  return op->type == IOC__OP_ACCEPT || op->type == IOC__OP_CONNECT || op->type == IOC__OP_RECV ||
         op->type == IOC__OP_SEND;
}

/* ---- the submission side (sq_lock) ---------------------------------------- */

/* Pushes everything prepared to the kernel. Entries the kernel refused stay
 * in the SQ (liburing already published them) and go with the next enter.
 * Returns the io_uring_submit() result. */
int ioc__uring_enter_locked(ur_backend_t *bd) {
  if (io_uring_sq_ready(&bd->ring) == 0)
    return 0;
  int ret;
  do
    ret = io_uring_submit(&bd->ring);
  while (ret == -EINTR);
  return ret;
}

/* An SQE, making room by entering the kernel if the SQ is full; NULL only
 * when the kernel takes nothing (out of memory: EAGAIN / ENOMEM). */
struct io_uring_sqe *ioc__uring_get_sqe_locked(ur_backend_t *bd) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&bd->ring);
  if (!sqe) {
    ioc__uring_enter_locked(bd);
    sqe = io_uring_get_sqe(&bd->ring);
  }
  if (sqe)
    atomic_fetch_add_explicit(&bd->inflight, 1, memory_order_relaxed);
  return sqe;
}

/* ---- fault injection (fault.h) ---------------------------------------------
 *
 * Decided when the SQE is prepared, so the kernel never does what the
 * injected result says did not happen: a fault is a NOP carrying the op's
 * user_data, and ioc__uring_complete gives the op the injected result instead of
 * the NOP's 0. No byte is read, no connection dequeued; the result is one
 * the kernel gives for the op before it has done anything:
 *   RECV, SEND  EINTR (-ERESTARTSYS, io_uring/net.c), EAGAIN (an O_NONBLOCK
 *               socket's op punted to io-wq: liburing #364), ECONNRESET;
 *   ACCEPT      the same two, ECONNABORTED (a connection that died in the
 *               backlog), ENOMEM (before the connection is dequeued).
 * A SEND may instead go out short: the kernel gets a prefix of the bytes (a
 * shorter length for a plain send; for a sendmsg the cut iovec shortened in
 * place, its real length kept in op->res), so it really writes only that
 * prefix and the rest stays queued in the session.
 * A CONNECT is never replaced (it must really start): its success may be
 * reported as EINTR at completion, which for connect(2) means "continuing
 * in the background". Returns true if sqe became a NOP. */
static bool ur_fault_prep(ioc_core_t *core, struct io_uring_sqe *sqe, ioc__op_t *op) {
  int32_t code = 0;
  if (op->type == IOC__OP_RECV || op->type == IOC__OP_SEND || op->type == IOC__OP_ACCEPT) {
    if (ioc__fault_roll(&core->faults, IOC__FAULT_EINTR))
      code = IOC_EINTR;
    else if (ioc__fault_roll(&core->faults, IOC__FAULT_EAGAIN))
      code = IOC_EAGAIN;
    else if (ioc__fault_roll(&core->faults, IOC__FAULT_ECONNRESET))
      code = op->type == IOC__OP_ACCEPT ? IOC_ECONNABORTED : IOC_ECONNRESET;
    else if (op->type == IOC__OP_ACCEPT && ioc__fault_roll(&core->faults, IOC__FAULT_ENOMEM))
      code = IOC_ENOMEM;
  }
  if (!code) return false;
  io_uring_prep_nop(sqe);
  op->res = code;
  ur_flags_set(op, UR_F_FAULT);
  return true;
}

/* A plain send of len bytes: maybe a random non-empty proper prefix. */
static size_t ur_fault_cut_len(ioc_core_t *core, size_t len) {
  if (len < 2 || !ioc__fault_roll(&core->faults, IOC__FAULT_SHORT_WRITE))
    return len;
  return 1 + (size_t)ioc__fault_below(&core->faults, len - 1);
}

/* A SENDMSG: maybe cuts its msghdr (already filled) to a random non-empty
 * proper prefix of its bytes, shortening the cut iovec in place. */
static void ur_fault_cut(ioc_core_t *core, ioc__op_t *op) {
  struct msghdr *m = op->u.send.msg;
  uint64_t total = 0;
  for (size_t i = 0; i < m->msg_iovlen; i++) total += m->msg_iov[i].iov_len;
  if (total < 2 || !ioc__fault_roll(&core->faults, IOC__FAULT_SHORT_WRITE)) return;
  uint64_t cut = 1 + ioc__fault_below(&core->faults, total - 1), acc = 0;
  for (size_t i = 0; i < m->msg_iovlen; i++) {
    size_t len = m->msg_iov[i].iov_len;
    if (acc + len < cut) {
      acc += len;
      continue;
    }
    if (len > INT32_MAX) return; /* its length would not fit in op->res */
    op->res = (int32_t)len;
    m->msg_iov[i].iov_len = (size_t)(cut - acc);
    m->msg_iovlen = i + 1;
    ur_flags_set(op, UR_F_SHORT);
    return;
  }
}

/* Undoes ur_fault_prep / ur_fault_cut before anything else looks at the
 * op's completion: returns the result to use in place of the kernel's. */
int32_t ioc__uring_fault_undo(ioc__op_t *op, int32_t res) {
  uint8_t fl = ur_flags(op);
  if (fl & UR_F_SHORT) {
    struct msghdr *m = op->u.send.msg;
    m->msg_iov[m->msg_iovlen - 1].iov_len = (size_t)op->res;
  } else if (fl & UR_F_FAULT) {
    res = op->res;
  }
  ur_flags_clear(op, UR_F_FAULT | UR_F_SHORT);
  return res;
}

static void ur_prep(ur_backend_t *bd, struct io_uring_sqe *sqe, ioc__op_t *op) {
  int fd = op->handle->fd;
  if (IOC__FAULTS_ON(bd->core) && ur_fault_prep(bd->core, sqe, op)) {
    io_uring_sqe_set_data64(sqe, UR_UD(op));
    UR_HANDOFF_RELEASE(op);
    return;
  }
  switch (op->type) {
  case IOC__OP_ACCEPT:
    op->u.accept.slot->addrlen = (uint32_t)sizeof op->u.accept.slot->addr.u.bytes;
    io_uring_prep_accept(sqe, fd, (struct sockaddr *)(void *)op->u.accept.slot->addr.u.bytes,
                         (socklen_t *)&op->u.accept.slot->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    break;
  case IOC__OP_CONNECT:
    if (ur_flags(op) & UR_F_POLL)
      io_uring_prep_poll_add(sqe, fd, POLLOUT);
    else
      io_uring_prep_connect(sqe, fd, (const struct sockaddr *)(const void *)op->u.connect.addr->u.bytes,
                            (socklen_t)op->u.connect.addr->len);
    break;
  case IOC__OP_RECV:
    io_uring_prep_recv(sqe, fd, NULL, bd->buf_size, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = UR_BUF_GROUP;
    if (ur_flags(op) & UR_F_POLL)
      sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    break;
  case IOC__OP_SEND:
    if (op->u.send.iovcnt == 1) {
      /* One buffer (a typical reply): plain send, no msghdr for the kernel to copy. */
      size_t len = op->u.send.iov[0].iov_len;
      if (IOC__FAULTS_ON(bd->core))
        len = ur_fault_cut_len(bd->core, len);
      io_uring_prep_send(sqe, fd, op->u.send.iov[0].iov_base, len, MSG_NOSIGNAL);
    } else {
      memset(op->u.send.msg, 0, sizeof *op->u.send.msg);
      op->u.send.msg->msg_iov = op->u.send.iov;
      op->u.send.msg->msg_iovlen = (size_t)op->u.send.iovcnt;
      if (IOC__FAULTS_ON(bd->core))
        ur_fault_cut(bd->core, op);
      io_uring_prep_sendmsg(sqe, fd, op->u.send.msg, MSG_NOSIGNAL);
    }
    if (ur_flags(op) & UR_F_POLL)
      sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    break;
  default:
    break;
  }
  io_uring_sqe_set_data64(sqe, UR_UD(op));
  UR_HANDOFF_RELEASE(op);
}

static void ur_backlog_push_locked(ur_backend_t *bd, ioc__op_t *op) {
  ioc__queue_push(&bd->backlog, &op->qn);
  ur_flags_set(op, UR_F_BACKLOG);
}

/* Moves backlogged ops and cancels into the SQ while it has room. Order is
 * kept: an op and a cancel queued after it stay in that order. */
static void ur_drain_locked(ur_backend_t *bd) {
  while (!ioc__queue_empty(&bd->backlog)) {
    struct io_uring_sqe *sqe = ioc__uring_get_sqe_locked(bd);
    if (!sqe)
      return;
    ioc__op_t *op = IOC__QUEUE_DATA(ioc__queue_pop(&bd->backlog), ioc__op_t, qn);
    ur_flags_clear(op, UR_F_BACKLOG);
    ur_prep(bd, sqe, op);
  }
  unsigned done = 0;
  while (done < bd->ncancel) {
    struct io_uring_sqe *sqe = ioc__uring_get_sqe_locked(bd);
    if (!sqe)
      break;
    io_uring_prep_cancel64(sqe, bd->cancel_keys[done++], 0);
    io_uring_sqe_set_data64(sqe, UR_UD(&ioc__uring_cancel_marker));
  }
  if (done) {
    memmove(bd->cancel_keys, bd->cancel_keys + done, (bd->ncancel - done) * sizeof(__u64));
    bd->ncancel -= done;
  }
}

/* Keeps a READ on the loop's eventfd in the ring (re-armed after each). */
static void ur_arm_efd_locked(ur_backend_t *bd) {
  if (atomic_load_explicit(&bd->efd_armed, memory_order_relaxed))
    return;
  struct io_uring_sqe *sqe = ioc__uring_get_sqe_locked(bd);
  if (!sqe)
    return; /* retried by the next flush: dirty stays set */
  io_uring_prep_read(sqe, bd->efd, &bd->efd_val, sizeof bd->efd_val, 0);
  io_uring_sqe_set_data64(sqe, UR_UD(&bd->efd_val));
  atomic_store_explicit(&bd->efd_armed, true, memory_order_relaxed);
}

/* Drains the queues and enters the kernel; leaves `dirty` saying whether
 * anything is still waiting in user space. Nothing while the ring is being
 * replaced (its SQ is the drain's). */
static void ur_flush_locked(ur_backend_t *bd) {
  if (bd->swapping)
    return;
  ur_arm_efd_locked(bd);
  ur_drain_locked(bd);
  int ret = ioc__uring_enter_locked(bd);
  bool stuck = io_uring_sq_ready(&bd->ring) > 0 || !ioc__queue_empty(&bd->backlog) || bd->ncancel ||
               !atomic_load_explicit(&bd->efd_armed, memory_order_relaxed);
  atomic_store_explicit(&bd->dirty, stuck ? 1 : 0, memory_order_relaxed);
  IOC__UNUSED(ret);
}

/* After filling SQEs: enter now, or leave it to the end of the dispatch batch. */
void ioc__uring_commit_locked(ioc_core_t *core, ur_backend_t *bd) {
  IOC__UNUSED(core);
  if (ioc__core_driving(bd->loop))
    atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed);
  else
    ur_flush_locked(bd);
}

enum { UR_PLACED, UR_QUEUED, UR_CANCELLED };

/* Puts op into the SQ (or the backlog, never dropping it). A re-submission
 * (starved receive, thread-exit cancel) of an op whose owner asked for a
 * cancel in the meantime is not placed: the caller completes it with
 * ECANCELED. Checking here, under sq_lock, closes the race with cancel(),
 * which sets UR_F_CANCEL before it takes sq_lock to queue its ASYNC_CANCEL:
 * either we see the flag, or our SQE is ahead of the cancel SQE. */
static int ur_place_locked(ur_backend_t *bd, ioc__op_t *op) {
  if (ur_flags(op) & UR_F_CANCEL)
    return UR_CANCELLED;
  if (bd->swapping) {
    ioc__queue_push(&bd->rehome, &op->qn);
    return UR_QUEUED;
  }
  if (!ioc__queue_empty(&bd->backlog))
    ur_drain_locked(bd);
  if (ioc__queue_empty(&bd->backlog)) {
    struct io_uring_sqe *sqe = ioc__uring_get_sqe_locked(bd);
    if (sqe) {
      ur_prep(bd, sqe, op);
      return UR_PLACED;
    }
  }
  ur_backlog_push_locked(bd, op);
  atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed);
  return UR_QUEUED;
}

/* By the loop's driver (pinned_submit). op->flags are not reset here: a
 * cancel that came while op waited in the loop's inbox left UR_F_CANCEL,
 * and ur_place_locked honours it (ioc__op_init cleared them before). */
static void ur_hand_to_owner(ioc_core_t *core, ur_backend_t *bd, ioc__op_t *op);

/* The shared step of a submit and a resubmit: op goes to its loop's
 * driver when this thread may not submit to the ring (UR_QUEUED then),
 * else into the ring or its backlog, committed. Returns what
 * ur_place_locked said: UR_CANCELLED leaves completing op to the caller. */
static int ur_place(ioc_core_t *core, ur_backend_t *bd, ioc__op_t *op) {
  op->qn.next = NULL;
  if (!ur_may_submit(bd)) {
    ur_hand_to_owner(core, bd, op);
    return UR_QUEUED;
  }
  ur_sq_lock(bd);
  int r = ur_place_locked(bd, op);
  ioc__uring_commit_locked(core, bd);
  ur_sq_unlock(bd);
  return r;
}

int ioc__uring_submit(ioc_core_t *core, ioc__op_t *op) {
  ur_backend_t *bd = ur_of(core, op);
  if (!ur_net_op(op) || !op->handle)
    return IOC_EINVAL;
  if (op->type == IOC__OP_RECV) op->u.recv.buf = NULL;
  if (ur_place(core, bd, op) == UR_CANCELLED) { /* cancel() raced with this very submit */
    op->res = IOC_ECANCELED;
    ioc__core_defer(core, op);
  }
  return 0;
}

/* Submits op again from a completion (same op, new SQE). Returns 1 if op was
 * completed instead (its owner cancelled it meanwhile), else 0. Only called
 * from complete(), so completing inline is allowed. */
int ioc__uring_resubmit(ioc_core_t *core, ioc__op_t *op) {
  ur_backend_t *bd = ur_of(core, op);
  if (ur_place(core, bd, op) != UR_CANCELLED)
    return 0;
  op->res = IOC_ECANCELED;
  ioc__op_complete(core, op);
  return 1;
}

/* Queues an ASYNC_CANCEL for key. If no SQE can be had the key waits in
 * cancel_keys; if even that cannot grow, retry until the kernel takes it
 * (out of memory twice over: better late than a cancel that never comes). */
static void ur_cancel_locked(ur_backend_t *bd, __u64 key) {
  if (bd->swapping)
    return; /* the drain cancels everything; UR_F_CANCEL makes it final */
  if (ioc__queue_empty(&bd->backlog) && !bd->ncancel) {
    struct io_uring_sqe *sqe = ioc__uring_get_sqe_locked(bd);
    if (sqe) {
      io_uring_prep_cancel64(sqe, key, 0);
      io_uring_sqe_set_data64(sqe, UR_UD(&ioc__uring_cancel_marker));
      return;
    }
  }
  while (bd->ncancel == bd->cancel_cap) {
    unsigned cap = bd->cancel_cap ? bd->cancel_cap * 2 : 16;
    __u64 *keys = realloc(bd->cancel_keys, cap * sizeof *keys);
    if (keys) {
      bd->cancel_keys = keys;
      bd->cancel_cap = cap;
      break;
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    ur_flush_locked(bd);
  }
  bd->cancel_keys[bd->ncancel++] = key;
  atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed);
}

/* ---- cancel, wake, flush --------------------------------------------------- */

/* By the loop's driver: makes the op whose user_data is key finish soon.
 * An op still in user space (starved or backlogged) is completed with
 * ECANCELED through the ready queue; one in the kernel gets an ASYNC_CANCEL
 * whose own CQE (user_data = ioc__uring_cancel_marker) is ignored; the op's CQE
 * (-ECANCELED, or its real result if it won the race) comes as usual. key
 * may name an op that completed meanwhile (a cross-thread cancel): it is
 * dereferenced only once found in one of our lists, and only taken as
 * cancelled if its owner asked (UR_F_CANCEL), so a new op at the same
 * address is left alone; a cancel SQE for such a key returns ENOENT, or
 * cancels the new op, which then goes out again (not asked: ioc__uring_complete). */
static void ur_cancel_here(ioc_core_t *core, ur_backend_t *bd, __u64 key) {
  ioc__op_t *op = (ioc__op_t *)(uintptr_t)key;
  bool found = false;
  ioc__spin_lock(&bd->buf_lock);
  if (ioc__queue_remove(&bd->starved, &op->qn)) {
    if (ur_flags(op) & UR_F_CANCEL) {
      ur_flags_clear(op, UR_F_STARVED);
      found = true;
    } else {
      ioc__queue_push_front(&bd->starved, &op->qn);
    }
  }
  ioc__spin_unlock(&bd->buf_lock);
  if (!found) {
    ur_sq_lock(bd);
    if (ioc__queue_remove(&bd->backlog, &op->qn)) {
      if (ur_flags(op) & UR_F_CANCEL) {
        ur_flags_clear(op, UR_F_BACKLOG);
        found = true;
      } else {
        ioc__queue_push_front(&bd->backlog, &op->qn);
      }
    }
    if (!found) {
      ur_cancel_locked(bd, key);
      ioc__uring_commit_locked(core, bd);
    }
    ur_sq_unlock(bd);
  }
  if (found) {
    op->res = IOC_ECANCELED;
    ioc__core_defer(core, op);
  }
}

/* Places an op another thread handed over (see ur_hand_to_owner). */
static void ur_place_handed(ioc_core_t *core, ur_backend_t *bd, ioc__op_t *op) {
  ur_sq_lock(bd);
  int r = ur_place_locked(bd, op);
  ioc__uring_commit_locked(core, bd);
  ur_sq_unlock(bd);
  if (r == UR_CANCELLED) {
    op->res = IOC_ECANCELED;
    ioc__core_defer(core, op);
  }
}

/* Submits the ops and cancels other threads left for this loop (by the
 * thread that may submit to it). Ops first: a cancel of one of them finds
 * it placed, or its UR_F_CANCEL already honoured. */
static void ur_run_handoffs(ioc_core_t *core, ur_backend_t *bd) {
  ioc__spin_lock(&bd->x_lock);
  ioc__queue_t ops = ioc__queue_take(&bd->xops);
  ioc__spin_unlock(&bd->x_lock);
  ioc__qnode_t *it;
  while ((it = ioc__queue_pop(&ops)) != NULL)
    ur_place_handed(core, bd, IOC__QUEUE_DATA(it, ioc__op_t, qn));
  __u64 keys[64];
  for (;;) {
    unsigned n = 0;
    ioc__spin_lock(&bd->x_lock);
    while (n < 64 && bd->nx > 0)
      keys[n++] = bd->xkeys[--bd->nx];
    if (bd->nx == 0 && ioc__queue_empty(&bd->xops))
      atomic_store_explicit(&bd->xpending, 0, memory_order_relaxed);
    ioc__spin_unlock(&bd->x_lock);
    for (unsigned i = 0; i < n; i++)
      ur_cancel_here(core, bd, keys[i]);
    if (n < 64)
      return;
  }
}

/* A worker reaping another's ring (COOP_TASKRUN: see `owned`) may not
 * submit to it: the op goes to the owner, woken to place it. */
static void ur_hand_to_owner(ioc_core_t *core, ur_backend_t *bd, ioc__op_t *op) {
  op->qn.next = NULL;
  ioc__spin_lock(&bd->x_lock);
  ioc__queue_push(&bd->xops, &op->qn);
  atomic_store_explicit(&bd->xpending, 1, memory_order_relaxed);
  ioc__spin_unlock(&bd->x_lock);
  ioc__uring_wake(core, bd->loop);
}

void ioc__uring_wake_efd(ur_backend_t *bd) {
  uint64_t one = 1;
  while (write(bd->efd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

/* Makes op finish soon; any thread. Only the loop's driver touches its
 * ring: another thread leaves the key for it (x_lock) and wakes it. The
 * core takes a loop nobody drives over for the call (ioc__op_cancel), so
 * without a pool the cancel still goes out at once. Harmless on an op that
 * already completed: the flag is reset by the next submit. */
void ioc__uring_cancel(ioc_core_t *core, ioc__op_t *op) {
  if (!ur_net_op(op))
    return;
  ur_backend_t *bd = ur_of(core, op);
  ur_flags_set(op, UR_F_CANCEL);
  if (ioc__core_driving(bd->loop) && ur_may_submit(bd)) {
    ur_cancel_here(core, bd, UR_UD(op));
    return;
  }
  for (;;) {
    ioc__spin_lock(&bd->x_lock);
    if (bd->nx == bd->xcap) {
      unsigned cap = bd->xcap ? bd->xcap * 2 : 16;
      __u64 *keys = realloc(bd->xkeys, cap * sizeof *keys);
      if (keys) {
        bd->xkeys = keys;
        bd->xcap = cap;
      }
    }
    bool ok = bd->nx < bd->xcap;
    if (ok) {
      bd->xkeys[bd->nx++] = UR_UD(op);
      atomic_store_explicit(&bd->xpending, 1, memory_order_relaxed);
    }
    ioc__spin_unlock(&bd->x_lock);
    if (ok)
      break;
    /* Out of memory: better late than a cancel that never comes. */
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  ioc__uring_wake(core, bd->loop);
}

/* A worker wakes another loop's waiter with a MSG_RING from its own ring:
 * the wake (user_data 0) lands in the target's CQ without this thread
 * touching the target's ring or entering the kernel for it - the MSG_RING
 * goes out with this worker's next submit (the end of its batch, or before
 * it waits). Returns false when that is not possible (not a pool worker on
 * its own ring, no MSG_RING, the target's ring being replaced, no SQE): the
 * caller then writes the target's eventfd. */
static bool ur_wake_by_msg(ioc_core_t *core, ur_backend_t *target) {
  ioc__loop_t *mine = ioc__core_own_loop(core);
  if (!mine || mine->bl == target || !ioc__core_driving(mine))
    return false;
  ur_backend_t *src = mine->bl;
  if (!src->has_msg_ring || !src->worker_ring)
    return false;
  int fd = atomic_load_explicit(&target->ring_fd, memory_order_acquire);
  if (fd < 0)
    return false;
  ur_sq_lock(src);
  struct io_uring_sqe *sqe = src->swapping ? NULL : ioc__uring_get_sqe_locked(src);
  if (sqe) {
    io_uring_prep_msg_ring(sqe, fd, 0, 0, 0);
    io_uring_sqe_set_data64(sqe, UR_UD(target) | UR_MSG_TAG);
    atomic_store_explicit(&src->dirty, 1, memory_order_relaxed);
    atomic_store_explicit(&src->urgent, 1, memory_order_relaxed);
  }
  ur_sq_unlock(src);
  return sqe != NULL;
}

/* Wakes the thread waiting on loop: a MSG_RING from a worker's own ring,
 * else a write to the loop's eventfd (one syscall; never the target's SQ).
 * Wakes coalesce: while one is on its way to the waiter a second adds
 * nothing. The waiter clears wake_pending with an exchange when it reaps
 * it, which reads (and so synchronizes with) any wake that skipped posting:
 * whatever that waker queued before calling us is visible to the core after
 * wait() returns. */
void ioc__uring_wake(ioc_core_t *core, ioc__loop_t *loop) {
  ur_backend_t *bd = loop->bl;
  if (atomic_exchange_explicit(&bd->wake_pending, 1, memory_order_acq_rel))
    return;
  if (!ur_wake_by_msg(core, bd))
    ioc__uring_wake_efd(bd);
}

/* Pushes what is prepared to the kernel. The worker that owns a ring
 * leaves it to its own next wait(), which submits and waits in one
 * io_uring_enter (a batch then costs one syscall, not two), unless a
 * MSG_RING wake is among it (a worker about to run long handlers calls
 * another one for help: that must go now). Every batch of a worker ends in
 * a wait on its loops (0 ms when it has more to do), so nothing stays. */
void ioc__uring_flush_now(ioc_core_t *core, ioc__loop_t *loop, bool force) {
  ur_backend_t *bd = loop->bl;
  if (!ur_may_submit(bd))
    return; /* another worker reaping this one's ring */
  if (atomic_load_explicit(&bd->xpending, memory_order_relaxed))
    ur_run_handoffs(core, bd);
  if (!atomic_load_explicit(&bd->dirty, memory_order_relaxed))
    return;
  if (!force && bd->worker_ring && ioc__core_owns(loop) && !bd->swapping &&
      !atomic_load_explicit(&bd->urgent, memory_order_relaxed))
    return;
  ur_sq_lock(bd);
  ur_flush_locked(bd);
  ur_sq_unlock(bd);
  atomic_store_explicit(&bd->urgent, 0, memory_order_relaxed);
}

void ioc__uring_flush(ioc_core_t *core, ioc__loop_t *loop) { ioc__uring_flush_now(core, loop, false); }

/* The owner's half of ioc__uring_flush before it enters the kernel itself: moves
 * the backlog and cancels into the SQ and publishes the SQ tail, without
 * entering. Returns the number of SQEs for the kernel to take. */
unsigned ioc__uring_prepare(ioc_core_t *core, ur_backend_t *bd) {
  if (atomic_load_explicit(&bd->xpending, memory_order_relaxed))
    ur_run_handoffs(core, bd);
  ur_sq_lock(bd);
  ur_arm_efd_locked(bd);
  ur_drain_locked(bd);
  struct io_uring_sq *sq = &bd->ring.sq;
  unsigned tail = sq->sqe_tail;
  if (sq->sqe_head != tail) {
    sq->sqe_head = tail;
    io_uring_smp_store_release(sq->ktail, tail);
  }
  unsigned ready = tail - IO_URING_READ_ONCE(*sq->khead);
  bool stuck = !ioc__queue_empty(&bd->backlog) || bd->ncancel ||
               !atomic_load_explicit(&bd->efd_armed, memory_order_relaxed);
  /* the caller's enter takes the ready ones (it sets dirty if it does not) */
  atomic_store_explicit(&bd->dirty, stuck ? 1 : 0, memory_order_relaxed);
  ur_sq_unlock(bd);
  atomic_store_explicit(&bd->urgent, 0, memory_order_relaxed);
  return ready;
}

/* No backend->shutdown: an IORING_OP_SHUTDOWN is never issued inline, the
 * kernel hands every one to an io-wq thread. Tried (6.18, Lua http_hello,
 * ab -c50, 1 worker): two iou-wrk threads appeared and took 7 CPU ticks
 * while the worker took 47, plus a thread wake-up per connection, where
 * the shutdown(2) it replaces is one short syscall. So the session makes
 * the syscall (backend->shutdown NULL); the close, which IORING_OP_CLOSE
 * does inline, goes through the ring. */

/* backend->close: the socket is closed by an IORING_OP_CLOSE in the batch,
 * fire-and-forget (its CQE is ignored), when the calling thread may submit
 * to the handle's ring now; else false and the caller closes it. The SQE
 * goes out with the batch, or at the latest when the ring is torn down
 * (ur_ring_close submits what is left). Nothing else refers to the socket:
 * no op on it is in flight and none will be. */
bool ioc__uring_close(ioc_core_t *core, ioc__handle_t *h) {
  ur_backend_t *bd = (ur_backend_t *)core->loops[h->loop]->bl;
  if (!bd->has_close || !ioc__core_driving(bd->loop) || !ur_may_submit(bd))
    return false;
  ur_sq_lock(bd);
  struct io_uring_sqe *sqe = bd->swapping ? NULL : ioc__uring_get_sqe_locked(bd);
  if (sqe) {
    io_uring_prep_close(sqe, h->fd);
    io_uring_sqe_set_data64(sqe, UR_UD(&ioc__uring_close_marker));
    atomic_fetch_add_explicit(&bd->n_close, 1, memory_order_relaxed);
    ioc__uring_commit_locked(core, bd);
  }
  ur_sq_unlock(bd);
  return sqe != NULL;
}

#endif /* __linux__ */
