/* Private to the io_uring backend (src/backend/uring*.c): the loop state and
 * the helpers its files share. uring.c: the design, probing, ring set-up,
 * a loop's lifetime and the hand-over of its ring between threads, and the
 * backend table; uring_submit.c: preparing and submitting ops, cancels,
 * wakes, flushes, closes; uring_complete.c: provided buffers, waiting,
 * reaping and completing. */
#ifndef IOC_BACKEND_URING_H
#define IOC_BACKEND_URING_H
#ifdef __linux__

#include <liburing.h>

#include "../core/internal.h"

/* ThreadSanitizer cannot see that the kernel orders an SQE's submission
 * before its CQE: an op filled on one thread and completed on another would
 * be reported as a race. Tell it, in TSan builds only. */
#if defined(__SANITIZE_THREAD__)
#define UR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UR_TSAN 1
#endif
#endif

#ifdef UR_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define UR_HANDOFF_RELEASE(p) __tsan_release(p)
#define UR_HANDOFF_ACQUIRE(p) __tsan_acquire(p)
#else
#define UR_HANDOFF_RELEASE(p) ((void)(p))
#define UR_HANDOFF_ACQUIRE(p) ((void)(p))
#endif

/* The buffer group of the provided receive buffers (see uring.c). */
#define UR_BUF_GROUP 0

/* op->flags bits (backend-private). Changed with atomic RMWs: cancel() sets
 * UR_F_CANCEL while other threads move the op between lists. */
enum {
  UR_F_CANCEL = 1u << 0,   /* the owner asked for a cancel: ECANCELED is final */
  UR_F_STARVED = 1u << 1,  /* on the starved list (buf_lock) */
  UR_F_BACKLOG = 1u << 2,  /* on the backlog (sq_lock) */
  /* Re-submitted after EINTR/EAGAIN (or a thread-exit cancel): wait for
   * readiness first. A CONNECT waits as POLL_ADD(POLLOUT) and reads
   * SO_ERROR; a RECV/SEND carries IORING_RECVSEND_POLL_FIRST. */
  UR_F_POLL = 1u << 3,
  /* Fault injection (fault.h), set by ur_prep, undone by ioc__uring_complete: */
  UR_F_FAULT = 1u << 4,    /* a NOP stands in for the op; op->res = the injected result */
  UR_F_SHORT = 1u << 5     /* a SEND cut short; op->res = the cut iovec's real length */
};

/* user_data markers for CQEs that are not ops. 0 is a wake. */
extern uint64_t ioc__uring_cancel_marker; /* the result of an ASYNC_CANCEL: ignored */
extern uint64_t ioc__uring_close_marker;  /* a fire-and-forget IORING_OP_CLOSE: ignored */
/* The result of a MSG_RING wake sent to another loop's ring carries that
 * ring's ur_backend_t with this bit set (every other user_data is an
 * aligned pointer or 0). */
#define UR_MSG_TAG ((uintptr_t)1)
#define UR_UD(p) ((__u64)(uintptr_t)(p))

/* One loop's state (loop->bl); it lives as long as the loop, while the ring
 * in it is replaced when a worker takes the loop over and gives it back
 * (ur_loop_own). */
typedef struct ur_backend {
  struct io_uring ring;
  ioc_core_t *core;
  ioc__loop_t *loop;
  atomic_int mode; /* UR_MODE_* of the current ring (read by tests from any thread) */
  /* The current ring is a worker's own (SINGLE_ISSUER): only that thread
   * ever touches its SQ, so sq_lock is not taken. With DEFER_TASKRUN no
   * other thread even reaps it; with COOP_TASKRUN (a core whose handlers
   * may run long, see ur_loop_own) an idle worker may reap it while its
   * owner is busy, and hands what it would submit to the owner (xops,
   * xkeys). Written only by ur_loop_own, while no other thread can reach
   * the ring. */
  bool owned;
  bool worker_ring; /* the current ring was made by a worker for itself */
  /* ur_loop_own is draining the old ring: nothing is prepared on it; ops go
   * to `rehome` and are placed on the new ring when it is in. */
  bool swapping;
  ioc__queue_t rehome;
  /* SQEs prepared on the current ring whose last CQE is not reaped yet: the
   * drain waits for 0 (sq_lock for writers; the reaper decrements). */
  atomic_uint inflight;
  /* the ring's fd for MSG_RING wakes from other workers; -1 while swapping */
  atomic_int ring_fd;

  /* Wakes from threads without a ring of theirs (the thread running Lua's
   * run(), a thread posting a job): they write this eventfd, which every
   * ring of the loop keeps a READ on (user_data = &efd_val). */
  int efd;
  uint64_t efd_val;
  atomic_bool efd_armed; /* cleared by the reaper, set by the submitter */

  /* Work other threads leave for the thread that may submit to the ring
   * (x_lock; xpending says there is some): cancels asked for by threads
   * that do not drive the loop (keys), and, on a worker's ring that other
   * workers may reap (see `owned`), ops their completions submit again. */
  ioc__spin_t x_lock;
  __u64 *xkeys;
  unsigned nx, xcap;
  ioc__queue_t xops;
  atomic_int xpending;

  ioc__mutex_t sq_lock; /* shared rings only (see `owned`) */
  /* ops that found the SQ full and the kernel refusing to take more */
  ioc__queue_t backlog; /* of ioc__op_t */
  /* cancels that found no SQE for the same reason (keys only: the op may be
   * completed and freed by the time the key is submitted) */
  __u64 *cancel_keys;
  unsigned ncancel, cancel_cap;
  /* something prepared or queued and not yet pushed to the kernel: a hint
   * that lets flush() skip the lock (written under sq_lock) */
  atomic_int dirty;

  /* a wake is on its way to this loop's waiter and not yet reaped */
  atomic_int wake_pending;
  /* a MSG_RING wake waits in this ring's SQ: the owner's flush sends it at
   * once instead of leaving it to its next wait (see ioc__uring_flush) */
  atomic_int urgent;

  ioc__spin_t buf_lock;
  struct io_uring_buf_ring *br;
  size_t br_bytes;
  char *bufs;
  size_t bufs_bytes;
  unsigned nbufs, buf_size;
  /* buffers reaped by wait() and not yet returned to the ring: when > 0 a
   * return is on its way and will feed a starved receive */
  atomic_int bufs_out;
  ioc__queue_t starved;                  /* buf_lock; of ioc__op_t */
  bool retry_armed;                      /* buf_lock */
  bool retry_lost;                       /* buf_lock: arming found no SQE */
  struct __kernel_timespec retry_ts;

  /* entries reaped from a ring handed over, for the next wait() (driver) */
  ioc__cqe_t *kept;
  int nkept, kept_next;

  bool wait_in_poll; /* running under valgrind: see UR_ON_VALGRIND */
  bool has_msg_ring; /* IORING_OP_MSG_RING (5.18): wakes between workers' rings */
  /* CLOSE SQEs made (tests: ioc__uring_closes) */
  atomic_uint_fast64_t n_close;
  bool has_close;    /* IORING_OP_CLOSE (5.6) */
} ur_backend_t;

static inline void ur_sq_lock(ur_backend_t *bd) {
  if (!bd->owned)
    ioc__mutex_lock(&bd->sq_lock);
}
static inline void ur_sq_unlock(ur_backend_t *bd) {
  if (!bd->owned)
    ioc__mutex_unlock(&bd->sq_lock);
}

/* True when the calling thread may put SQEs in bd's ring: any thread on a
 * plain ring (sq_lock), only the worker on its own ring. */
static inline bool ur_may_submit(const ur_backend_t *bd) {
  return !bd->owned || ioc__core_owns(bd->loop);
}

/* The ring that carries op: its loop's. */
static inline ur_backend_t *ur_of(ioc_core_t *core, const ioc__op_t *op) {
  return (ur_backend_t *)core->loops[op->loop]->bl;
}

static inline uint8_t ur_flags(ioc__op_t *op) {
  return __atomic_load_n(&op->flags, __ATOMIC_ACQUIRE);
}
static inline void ur_flags_set(ioc__op_t *op, uint8_t f) {
  __atomic_fetch_or(&op->flags, f, __ATOMIC_ACQ_REL);
}
static inline void ur_flags_clear(ioc__op_t *op, uint8_t f) {
  __atomic_fetch_and(&op->flags, (uint8_t)~f, __ATOMIC_ACQ_REL);
}

/* Kernel results are -errno, and IOC_E* codes equal -errno for every errno
 * in the table; anything else becomes IOC_EUNKNOWN. */
static inline int32_t ur_map_res(int32_t res) {
  if (res >= 0)
    return res;
  switch (res) {
#define UR_ERR_CASE(name, value, text) case value:
    IOC_ERRNO_MAP(UR_ERR_CASE)
#undef UR_ERR_CASE
    return res;
  default:
    return IOC_EUNKNOWN;
  }
}

/* ---- shared between the files (uring_submit.c) ---- */

/* Pushes everything prepared to the kernel (sq_lock held); returns the
 * io_uring_submit() result. */
int ioc__uring_enter_locked(ur_backend_t *bd);
/* An SQE of bd's ring (sq_lock held), counted in `inflight`; NULL only when
 * the kernel takes nothing. */
struct io_uring_sqe *ioc__uring_get_sqe_locked(ur_backend_t *bd);
/* After filling SQEs (sq_lock held): enters now, or leaves it to the end of
 * the dispatch batch. */
void ioc__uring_commit_locked(ioc_core_t *core, ur_backend_t *bd);
/* backend->submit: puts op in its loop's ring, backlog or owner's hands;
 * never drops it. */
int ioc__uring_submit(ioc_core_t *core, ioc__op_t *op);
/* Submits op again from a completion; returns 1 if op was completed
 * instead (its owner cancelled it), else 0. */
int ioc__uring_resubmit(ioc_core_t *core, ioc__op_t *op);
/* backend->cancel: makes op finish soon; any thread. */
void ioc__uring_cancel(ioc_core_t *core, ioc__op_t *op);
/* backend->wake: wakes the thread waiting on loop; wakes coalesce. */
void ioc__uring_wake(ioc_core_t *core, ioc__loop_t *loop);
/* Wakes bd's waiter through the loop's eventfd (one write). */
void ioc__uring_wake_efd(ur_backend_t *bd);
/* backend->flush: pushes what is prepared to the kernel (a worker's own
 * ring may leave it to its next wait). */
void ioc__uring_flush(ioc_core_t *core, ioc__loop_t *loop);
/* ioc__uring_flush, and with force nothing is left to the next wait. */
void ioc__uring_flush_now(ioc_core_t *core, ioc__loop_t *loop, bool force);
/* The owner's half of a flush before it enters the kernel itself: returns
 * the number of SQEs published for that enter to take. */
unsigned ioc__uring_prepare(ioc_core_t *core, ur_backend_t *bd);
/* Undoes an injected fault of op before its completion is looked at:
 * returns the result to use in place of the kernel's. */
int32_t ioc__uring_fault_undo(ioc__op_t *op, int32_t res);
/* backend->close: closes h's socket by an SQE in the batch, or returns
 * false and the caller closes it. */
bool ioc__uring_close(ioc_core_t *core, ioc__handle_t *h);

/* ---- shared between the files (uring_complete.c) ---- */

/* Copies up to max CQEs of bd's ring into out and advances the CQ; wakes
 * and ignored results are consumed, *woke set for a wake. The waiter only. */
int ioc__uring_reap(ur_backend_t *bd, ioc__cqe_t *out, int max, bool *woke);
/* backend->wait: flushes, then blocks up to timeout_ms for completions. */
int ioc__uring_wait(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *out, int max, int timeout_ms);
/* backend->complete: turns one reaped entry into its op's completion (or a
 * resubmission); returns the number of ops completed. */
int ioc__uring_complete(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *cqe);

#endif /* __linux__ */
#endif /* IOC_BACKEND_URING_H */
