/* The io_uring backend's completion side: the provided receive buffers
 * (starved receives, returns), waiting for and reaping CQEs, and turning
 * them into completions. See uring.c for the design. */
#ifdef __linux__

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "uring.h"

/* Longest single block in wait() while submissions are stuck in user space
 * (the kernel refused them for lack of memory): retry this often. */
#define UR_STUCK_MS 10

/* user_data of the starved-receive retry timer's CQE (the other markers
 * are in uring.h) */
static uint64_t ur_retry_marker;

/* ---- provided buffers (buf_lock) ------------------------------------------ */

static void ur_starved_push_locked(ur_backend_t *bd, ioc__op_t *op) {
  ioc__queue_push(&bd->starved, &op->qn);
  ur_flags_set(op, UR_F_STARVED);
}

static ioc__op_t *ur_starved_pop_locked(ur_backend_t *bd) {
  ioc__qnode_t *n = ioc__queue_pop(&bd->starved);
  if (!n)
    return NULL;
  ioc__op_t *op = IOC__QUEUE_DATA(n, ioc__op_t, qn);
  ur_flags_clear(op, UR_F_STARVED);
  return op;
}

/* Arms the one-shot retry timer (caller set retry_armed). On failure (no
 * SQE) retry_lost tells wait() to try again before it blocks. */
static void ur_arm_retry(ioc_core_t *core, ur_backend_t *bd) {
  if (!ur_may_submit(bd)) {
    /* another worker reaping the ring: its owner arms it (ioc__uring_wait) */
    ioc__spin_lock(&bd->buf_lock);
    bd->retry_armed = false;
    bd->retry_lost = true;
    ioc__spin_unlock(&bd->buf_lock);
    ioc__uring_wake(core, bd->loop);
    return;
  }
  ur_sq_lock(bd);
  struct io_uring_sqe *sqe = bd->swapping ? NULL : ioc__uring_get_sqe_locked(bd);
  if (sqe) {
    io_uring_prep_timeout(sqe, &bd->retry_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UR_UD(&ur_retry_marker));
    ioc__uring_commit_locked(core, bd);
  }
  ur_sq_unlock(bd);
  if (!sqe) {
    ioc__spin_lock(&bd->buf_lock);
    bd->retry_armed = false;
    bd->retry_lost = true;
    ioc__spin_unlock(&bd->buf_lock);
  }
}

/* A receive found the buffer ring empty (ENOBUFS). The owner never hears of
 * it: the op waits on the starved list and is submitted again when a buffer
 * comes back. If none is on its way back (all reaped buffers already
 * returned: the ring may have refilled in between), a 1 ms timer resubmits
 * instead; the kernel may still hold buffers whose CQEs are not posted yet,
 * and an immediate retry could spin on ENOBUFS until they are. Returns the
 * number of ops completed (1 if the owner had cancelled it). */
static int ur_starve(ioc_core_t *core, ur_backend_t *bd, ioc__op_t *op) {
  ioc__spin_lock(&bd->buf_lock);
  if (ur_flags(op) & UR_F_CANCEL) {
    ioc__spin_unlock(&bd->buf_lock);
    op->res = IOC_ECANCELED;
    ioc__op_complete(core, op);
    return 1;
  }
  ur_starved_push_locked(bd, op);
  bool arm = !bd->retry_armed && atomic_load_explicit(&bd->bufs_out, memory_order_acquire) == 0;
  if (arm)
    bd->retry_armed = true;
  ioc__spin_unlock(&bd->buf_lock);
  if (arm)
    ur_arm_retry(core, bd);
  return 0;
}

/* The retry timer fired: every starved receive tries again. */
static int ur_retry_fire(ioc_core_t *core, ur_backend_t *bd) {
  ioc__spin_lock(&bd->buf_lock);
  bd->retry_armed = false;
  ioc__queue_t list = ioc__queue_take(&bd->starved);
  for (ioc__qnode_t *it = ioc__queue_head(&list); it; it = it->next)
    ur_flags_clear(IOC__QUEUE_DATA(it, ioc__op_t, qn), UR_F_STARVED);
  ioc__spin_unlock(&bd->buf_lock);
  int n = 0;
  ioc__qnode_t *it;
  while ((it = ioc__queue_pop(&list)) != NULL)
    n += ioc__uring_resubmit(core, IOC__QUEUE_DATA(it, ioc__op_t, qn));
  return n;
}

/* Gives buffer bid back to the kernel and lets one starved receive (if any)
 * try again with it. Returns the number of ops completed. */
static int ur_buf_return(ioc_core_t *core, ur_backend_t *bd, unsigned bid) {
  ioc__spin_lock(&bd->buf_lock);
  io_uring_buf_ring_add(bd->br, bd->bufs + (size_t)bid * bd->buf_size, bd->buf_size,
                        (unsigned short)bid, io_uring_buf_ring_mask(bd->nbufs), 0);
  io_uring_buf_ring_advance(bd->br, 1);
  atomic_fetch_sub_explicit(&bd->bufs_out, 1, memory_order_acq_rel);
  ioc__op_t *op = ur_starved_pop_locked(bd);
  ioc__spin_unlock(&bd->buf_lock);
  return op ? ioc__uring_resubmit(core, op) : 0;
}

/* ---- the completion side ---------------------------------------------------- */

/* Copies up to max CQEs into out and advances the CQ. Wake NOPs and cancel
 * results are consumed here and not handed out. Only the waiter calls it. */
int ioc__uring_reap(ur_backend_t *bd, ioc__cqe_t *out, int max, bool *woke) {
  unsigned head, seen = 0;
  struct io_uring_cqe *cqe;
  int n = 0;
  bool efd_fired = false;
  io_uring_for_each_cqe(&bd->ring, head, cqe) {
    if (n == max)
      break;
    seen++;
    if (cqe->user_data == 0) { /* another worker's MSG_RING */
      *woke = true;
      continue;
    }
    if (!(cqe->flags & IORING_CQE_F_MORE))
      atomic_fetch_sub_explicit(&bd->inflight, 1, memory_order_relaxed);
    if (cqe->user_data == UR_UD(&bd->efd_val)) {
      *woke = efd_fired = true;
      continue;
    }
    if (cqe->user_data == UR_UD(&ioc__uring_cancel_marker) || cqe->user_data == UR_UD(&ioc__uring_close_marker))
      continue;
    if (cqe->flags & IORING_CQE_F_BUFFER)
      atomic_fetch_add_explicit(&bd->bufs_out, 1, memory_order_acq_rel);
    out[n].ptr = (void *)(uintptr_t)cqe->user_data;
    out[n].res = cqe->res;
    out[n].flags = cqe->flags;
    n++;
  }
  io_uring_cq_advance(&bd->ring, seen);
  if (efd_fired) {
    atomic_store_explicit(&bd->efd_armed, false, memory_order_relaxed);
    atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed);
  }
  if (*woke)
    atomic_exchange_explicit(&bd->wake_pending, 0, memory_order_acq_rel);
  return n;
}

/* Asks the kernel to move overflowed CQEs (NODROP kept them aside when the CQ
 * was full) into the CQ, and to run the task work that posts completions
 * (TASKRUN_FLAG says some is waiting: with DEFER_TASKRUN it runs only when
 * the owner enters to get events). Needed only by the non-blocking peek: a
 * blocking wait does both itself. */
static void ur_flush_overflow(ur_backend_t *bd) {
  if (IO_URING_READ_ONCE(*bd->ring.sq.kflags) & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN))
    io_uring_enter((unsigned)bd->ring.ring_fd, 0, 0, IORING_ENTER_GETEVENTS, NULL);
}

/* Flushes pending submissions (sq_lock), then blocks without any lock of
 * ours in io_uring_enter(GETEVENTS | EXT_ARG): the time-out travels in the
 * enter argument, so no timeout SQE is needed and the SQ stays free for the
 * submitters. liburing 2.3's io_uring_wait_cqes() would do the same with
 * EXT_ARG, but also tries to submit when asked to; calling enter directly
 * states the contract. */
int ioc__uring_wait(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *out, int max, int timeout_ms) {
  ur_backend_t *bd = loop->bl;
  if (bd->kept) {
    int n = bd->nkept - bd->kept_next < max ? bd->nkept - bd->kept_next : max;
    memcpy(out, bd->kept + bd->kept_next, (size_t)n * sizeof *out);
    bd->kept_next += n;
    if (bd->kept_next == bd->nkept) {
      free(bd->kept);
      bd->kept = NULL;
      bd->nkept = bd->kept_next = 0;
    }
    if (n > 0)
      return n;
  }
  uint64_t deadline = timeout_ms > 0 ? ioc__now_ms() + (uint64_t)timeout_ms : 0;
  /* The owner of a worker ring submits in the same enter that waits. */
  bool combine = bd->worker_ring && ioc__core_owns(loop) && !bd->wait_in_poll;
  for (;;) {
    unsigned to_submit = 0;
    if (combine)
      to_submit = ioc__uring_prepare(core, bd);
    else
      ioc__uring_flush_now(core, loop, true);
    /* A retry timer that could not be armed (no SQE) is armed here. */
    ioc__spin_lock(&bd->buf_lock);
    bool rearm = bd->retry_lost && !bd->retry_armed && ur_may_submit(bd);
    if (rearm) {
      bd->retry_armed = true;
      bd->retry_lost = false;
    }
    ioc__spin_unlock(&bd->buf_lock);
    if (rearm)
      ur_arm_retry(core, bd);

    bool woke = false;
    int n = ioc__uring_reap(bd, out, max, &woke);
    if (combine && to_submit && (n > 0 || woke || timeout_ms == 0)) {
      /* not waiting: submit, and run task work / overflow while in */
      int ret;
      do
        ret = io_uring_enter((unsigned)bd->ring.ring_fd, to_submit, 0, IORING_ENTER_GETEVENTS, NULL);
      while (ret == -EINTR);
      if (ret < 0 || (unsigned)ret < to_submit)
        atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed); /* refused: again */
      to_submit = 0;
      if (n == 0 && !woke)
        n = ioc__uring_reap(bd, out, max, &woke);
    }
    if (n == 0 && !woke) {
      ur_flush_overflow(bd);
      n = ioc__uring_reap(bd, out, max, &woke);
    }
    if (n > 0 || woke || timeout_ms == 0)
      return n;

    long wait_ms = -1;
    if (timeout_ms > 0) {
      uint64_t now = ioc__now_ms();
      if (now >= deadline)
        return 0;
      wait_ms = (long)(deadline - now);
    }
    ioc__spin_lock(&bd->buf_lock);
    bool stuck = bd->retry_lost;
    ioc__spin_unlock(&bd->buf_lock);
    stuck = stuck || atomic_load_explicit(&bd->dirty, memory_order_relaxed) != 0;
    if (stuck && (wait_ms < 0 || wait_ms > UR_STUCK_MS))
      wait_ms = UR_STUCK_MS;

    if (bd->wait_in_poll) {
      /* The ring fd polls readable once a CQE (or an overflow) is there;
       * task work for our own ops runs when the poll is interrupted. */
      struct pollfd pfd = {.fd = bd->ring.ring_fd, .events = POLLIN};
      int pr = poll(&pfd, 1, (int)wait_ms);
      if (pr < 0 && errno != EINTR)
        return ur_map_res(-errno);
      continue;
    }
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.sigmask_sz = _NSIG / 8;
    if (wait_ms >= 0) {
      ts.tv_sec = wait_ms / 1000;
      ts.tv_nsec = (wait_ms % 1000) * 1000000L;
      arg.ts = (__u64)(uintptr_t)&ts;
    }
    int ret = io_uring_enter2((unsigned)bd->ring.ring_fd, to_submit, 1,
                              IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, (sigset_t *)(void *)&arg,
                              sizeof arg);
    if (to_submit && (ret < 0 || (unsigned)ret < to_submit))
      atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed); /* refused: again */
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
      return ur_map_res(ret);
    /* Loop: reap what came, or see that the deadline passed. */
  }
}

/* CONNECT re-armed as POLL_ADD(POLLOUT) (see ioc__uring_complete) is done: the
 * socket's pending error, or 0 once connected. */
static int32_t ur_connect_result(ioc__op_t *op, int32_t res) {
  if (res < 0)
    return res;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(op->handle->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    return -errno;
  return -err;
}

/* Turns one reaped CQE into the op's completion. Beyond the plain case:
 *  - a RECV with a buffer exposes it in op->u.recv.buf for the owner's dispatch and
 *    hands it back to the ring afterwards (the op may be gone by then: the
 *    buffer id is kept in a local);
 *  - a RECV with ENOBUFS is parked, not completed (ur_starve);
 *  - -ECANCELED that the owner did not ask for means the thread that
 *    submitted the op exited: the kernel cancels such requests when their
 *    socket becomes ready (seen on 6.18; since 5.12 requests belong to the
 *    submitting task), without consuming data or connections. The op is
 *    submitted again from this live thread;
 *  - -EINTR and -EAGAIN are transient and not the owner's business either:
 *    the kernel turns -ERESTARTSYS into -EINTR for every socket op, and an
 *    op on an O_NONBLOCK socket (all of ours) that was punted to io-wq
 *    returns -EAGAIN instead of waiting (liburing issue #364). Neither
 *    consumed data or a connection; the op is submitted again, waiting for
 *    readiness first (UR_F_POLL), so a real EAGAIN cannot spin.
 *  A CONNECT cannot be reissued (connect(2) says EALREADY), and after
 *  EINTR or EINPROGRESS it goes on in the background: it waits for POLLOUT
 *  instead and reads SO_ERROR. (EAGAIN from connect(2) is a real failure.) */
int ioc__uring_complete(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *cqe) {
  ur_backend_t *bd = loop->bl;
  if (!cqe->ptr || cqe->ptr == &ioc__uring_cancel_marker)
    return 0;
  if ((uintptr_t)cqe->ptr & UR_MSG_TAG) {
    /* A MSG_RING wake this loop sent: if it did not arrive (the target's
     * CQ overflowed), wake the target the other way. */
    ur_backend_t *target = (ur_backend_t *)((uintptr_t)cqe->ptr & ~UR_MSG_TAG);
    if (cqe->res < 0)
      ioc__uring_wake_efd(target);
    return 0;
  }
  if (cqe->ptr == &ur_retry_marker)
    return ur_retry_fire(core, bd);

  ioc__op_t *op = cqe->ptr;
  UR_HANDOFF_ACQUIRE(op);
  int32_t res = cqe->res;
  bool has_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
  unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
  int done = 0;

  if (IOC__UNLIKELY(ur_flags(op) & (UR_F_FAULT | UR_F_SHORT)))
    res = ioc__uring_fault_undo(op, res);
  if (op->type == IOC__OP_CONNECT && res == 0 && !(ur_flags(op) & UR_F_POLL) &&
      IOC__FAULT(core, IOC__FAULT_EINTR))
    res = -EINTR; /* injected: the handshake carries on in the background */

  if (op->type == IOC__OP_RECV && res == -ENOBUFS && !has_buf)
    return ur_starve(core, bd, op);

  bool again = (res == -ECANCELED && !(ur_flags(op) & UR_F_CANCEL)) || res == -EINTR;
  if (op->type == IOC__OP_CONNECT)
    again = again || ((res == -EINPROGRESS || res == -EALREADY) && !(ur_flags(op) & UR_F_POLL));
  else
    again = again || res == -EAGAIN;
  if (again) {
    if (has_buf)
      done += ur_buf_return(core, bd, bid);
    if (op->type != IOC__OP_ACCEPT)
      ur_flags_set(op, UR_F_POLL);
    return done + ioc__uring_resubmit(core, op);
  }

  if (op->type == IOC__OP_CONNECT && (ur_flags(op) & UR_F_POLL))
    res = ur_connect_result(op, res);

  switch (op->type) {
  case IOC__OP_ACCEPT:
    op->u.accept.fd = res >= 0 ? (ioc_fd_t)res : IOC_BAD_FD;
    op->u.accept.slot->addr.len = res >= 0 ? op->u.accept.slot->addrlen : 0;
    break;
  case IOC__OP_RECV:
    if (has_buf && res > 0) {
      op->u.recv.buf = bd->bufs + (size_t)bid * bd->buf_size;
    } else {
      op->u.recv.buf = NULL;
    }
    break;
  default:
    break;
  }
  op->res = ur_map_res(res);
  ioc__op_complete(core, op); /* op may be gone from here on */
  done++;
  if (has_buf)
    done += ur_buf_return(core, bd, bid);
  return done;
}


#endif /* __linux__ */
