/* The io_uring backend: the true completion model on Linux.
 *
 * One ring per loop (core.c: a loop per worker). Every ACCEPT / CONNECT /
 * RECV / SEND op is one SQE whose user_data is the op itself, submitted by
 * the thread driving the op's loop (pinned_submit: other threads' ops reach
 * it through the loop's inbox); its CQE comes back through wait() and
 * complete() on that same thread. So the task work that posts a request's
 * completion belongs to the thread that waits for it.
 *
 * Rings and their lifetime. A loop (ur_backend_t) lives as long as the
 * core; the ring in it does not. While a pool runs, each worker drives a
 * ring of its own, made on its thread when it starts: SINGLE_ISSUER +
 * DEFER_TASKRUN (fallbacks: SINGLE_ISSUER + COOP_TASKRUN, COOP_TASKRUN,
 * plain; probed, the fallback logged once, IOCORE_URING_MODE forces one,
 * ioc__uring_mode() tells). Only that thread ever puts an SQE in it: other
 * threads wake it with a MSG_RING from their own ring or a write to the
 * loop's eventfd (which every ring of the loop keeps a READ on), leave
 * cancels as keys for it (xkeys) and ops in the core's inbox. When the
 * worker exits it swaps in a plain ring any thread may drive (the core
 * without a pool, leader/followers). A core with a batch hook (Lua) gives
 * its workers COOP_TASKRUN rings without SINGLE_ISSUER instead, which other
 * workers may reap and submit to while a handler runs (ur_mode_cap). Each swap happens on the thread that
 * is allowed on the SINGLE_ISSUER ring, drains the old ring (cancel all,
 * reap until every SQE of it has completed, ops moved to the new ring) and
 * tears it down there: so a ring never outlives the thread it belongs to,
 * ops in flight when a worker exits are carried over, not lost, and the
 * core, freed from any thread once the pool is joined, frees plain rings
 * only. See "handing a loop's ring over" below.
 *
 * Locks (never held across a call into the core):
 *   sq_lock  (mutex) the SQ ring, the backlog, the pending cancel keys of a
 *            plain ring, which any driving thread may submit to (and a
 *            thread running what it reaped after dropping the drive_lock).
 *            Not taken on a worker's own ring: only its thread touches it.
 *   buf_lock (spin)  the provided-buffer ring tail, the starved list and the
 *            retry timer flag.
 *   x_lock   (spin)  the cancels and ops other threads hand to the loop's
 *            submitting thread.
 *   Order: buf_lock may be taken before sq_lock is, never the other way.
 * The CQ side needs no lock: only the waiter reads and advances it.
 *
 * Batching: while the calling thread drives the loop, submit() only fills an
 * SQE; the core calls flush() at the end of the batch and wait() flushes
 * before it blocks, so a batch costs one io_uring_enter.
 *
 * Receives use a ring of provided buffers (group UR_BUF_GROUP): an idle
 * session holds no buffer, the kernel picks one when data arrives, and we
 * put it back once the owner's dispatch has copied the bytes out.
 *
 * Receives are single-shot too. A session's next receive is an SQE in the
 * batch that carried its reply, not a syscall: HTTP keep-alive (the Lua
 * examples/http_hello.lua, wrk -t1 -c64, strace -f -c) costs 0.03 syscalls
 * per request on one worker (15,342 for 393,827 requests), so a multishot
 * receive could not cut syscalls; it would spare the SQE and the kernel's
 * poll re-arm, at the price of data arriving while a session is paused or
 * before its previous receive was dispatched, to be held per session
 * against the one-receive-at-a-time rule of net/session.c. Not measured
 * (no CPU A/B was run): not done.
 *
 * Accepts are single-shot on purpose. A multishot accept (IORING_ACCEPT_
 * MULTISHOT) stays armed at the head of the listening socket's wait queue,
 * and the kernel wakes only the first exclusive waiter per connection: with
 * one armed on each of two rings, 400 connections made one after another
 * all went to the same ring (0 / 400, DEFER_TASKRUN rings, 6.18), while 8
 * single-shot accepts per ring, each re-armed at the tail after it
 * completes, split them 200 / 200. It would also lose the peer address the
 * single-shot accept fills in (one more syscall per connection,
 * getpeername). So accepts stay spread by the listener over the rings
 * (tests/c test_uring.c uring_accepts_spread_over_worker_rings).
 *
 * Ops are never freed here and an op is never touched after
 * ioc__op_complete() returned (its owner may be gone). Each successful submit
 * yields exactly one ioc__op_complete(): kernel conditions that are not the
 * owner's business (no buffer free, cancellation because the submitting
 * thread exited or its ring was handed over) are absorbed here by
 * resubmitting.
 *
 * Kernel floor: 5.19 (buffer rings, IORING_SETUP_SUBMIT_ALL, EXT_ARG waits);
 * probe() says no on anything older and the core falls back to epoll.
 */
#ifdef __linux__

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

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
/* Valgrind (3.19 at least; liburing issue #657, KDE bug 463859) does not
 * treat io_uring_enter as a blocking call: while one thread waits in it, no
 * other thread runs, so a wake from another thread never comes. Under
 * valgrind only, the waiter blocks in poll(2) on the ring fd instead. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UR_ON_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#endif
#endif
#ifndef UR_ON_VALGRIND
#define UR_ON_VALGRIND() false
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
/* Nor does it see that munmap orders the last use of a ring's memory before
 * a new ring mapped at the same address on another thread: every teardown
 * releases, and every new ring acquires, this one token. */
static char ur_tsan_rings;
#define UR_RING_GONE() UR_HANDOFF_RELEASE(&ur_tsan_rings)
#define UR_RING_MADE() UR_HANDOFF_ACQUIRE(&ur_tsan_rings)

#define UR_DEFAULT_DEPTH 4096u
/* CQ entries per SQ entry: sessions keep a recv (and maybe a send) in flight
 * each, so completions outnumber one SQ's worth by far. NODROP keeps an
 * overflow safe, but costs an allocation per overflowed CQE. */
#define UR_CQ_FACTOR 4u
/* Provided receive buffers: UR_BUF_SIZE bytes each, one per SQ_PER_BUF SQ
 * entries, between UR_BUF_MIN and UR_BUF_MAX (a power of two). A buffer is
 * only held from the moment data lands until the owner's dispatch returned,
 * so the count bounds receives being processed at once, not sessions. With
 * the default depth: 1024 x 16 KiB = 16 MiB of address space; pages are
 * touched as the ring cycles through them. */
#define UR_BUF_SIZE (16u * 1024u)
#define UR_SQ_PER_BUF 4u
#define UR_BUF_MIN 64u
#define UR_BUF_MAX 1024u
#define UR_BUF_GROUP 0
/* How long a starved receive waits when no buffer is known to be coming
 * back (see ur_starve). */
#define UR_RETRY_NS (1000L * 1000L)
/* Longest single block in wait() while submissions are stuck in user space
 * (the kernel refused them for lack of memory): retry this often. */
#define UR_STUCK_MS 10

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
  /* Fault injection (fault.h), set by ur_prep, undone by ur_complete: */
  UR_F_FAULT = 1u << 4,    /* a NOP stands in for the op; op->res = the injected result */
  UR_F_SHORT = 1u << 5     /* a SEND cut short; op->res = the cut iovec's real length */
};

/* user_data markers for CQEs that are not ops. 0 is a wake. */
static uint64_t ur_cancel_marker; /* the result of an ASYNC_CANCEL: ignored */
static uint64_t ur_retry_marker;  /* the starved-receive retry timer */
static uint64_t ur_close_marker;  /* a fire-and-forget IORING_OP_CLOSE: ignored */
/* The result of a MSG_RING wake sent to another loop's ring carries that
 * ring's ur_backend_t with this bit set (every other user_data is an
 * aligned pointer or 0). */
#define UR_MSG_TAG ((uintptr_t)1)
#define UR_UD(p) ((__u64)(uintptr_t)(p))

/* How a ring runs, best first (see ur_ring_create). */
enum {
  UR_MODE_DEFER = 0, /* SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG (6.1) */
  UR_MODE_COOP_SI,   /* SINGLE_ISSUER | COOP_TASKRUN | TASKRUN_FLAG (6.0) */
  UR_MODE_COOP,      /* COOP_TASKRUN | TASKRUN_FLAG (5.19) */
  UR_MODE_PLAIN,     /* none of them: the shared ring of a loop without a worker */
  UR_NMODES
};
static const char *const ur_mode_names[UR_NMODES] = {
    "single_issuer+defer_taskrun", "single_issuer+coop_taskrun", "coop_taskrun", "plain"};

/* The core-wide part (core->bd): the best mode the kernel took so far, so
 * that later rings do not probe again, and whether a fallback was logged. */
typedef struct ur_core {
  atomic_int best_mode; /* -1: not probed yet */
  atomic_int logged;
} ur_core_t;

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
   * once instead of leaving it to its next wait (see ur_flush) */
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

static void ur_wake(ioc_core_t *core, ioc__loop_t *loop);

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
static int32_t ur_map_res(int32_t res) {
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

static bool ur_net_op(const ioc__op_t *op) {
  return op->type == IOC__OP_ACCEPT || op->type == IOC__OP_CONNECT || op->type == IOC__OP_RECV ||
         op->type == IOC__OP_SEND;
}

/* ---- probing and ring setup ---------------------------------------------- */

/* 0 when io_uring may be used by this process, IOC_EPERM when the admin
 * switched it off (kernel.io_uring_disabled, 6.6+: 2 = off for everyone; 1 =
 * only for a group, which io_uring_setup() itself then refuses with EPERM). */
static int ur_sysctl_check(void) {
  int fd = open("/proc/sys/kernel/io_uring_disabled", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  char c = '0';
  ssize_t n = read(fd, &c, 1);
  close(fd);
  return (n == 1 && c == '2') ? IOC_EPERM : 0;
}

static int ur_setup_error(int ret) {
  if (ret == -EPERM || ret == -EACCES)
    return IOC_EPERM;
  if (ret == -ENOMEM)
    return IOC_ENOMEM;
  return IOC_ENOSYS; /* ENOSYS, or EINVAL for flags an old kernel lacks */
}

/* The setup flags of each mode. SUBMIT_ALL (5.18) keeps one bad SQE from
 * leaving the rest of a batch behind in the SQ. A worker's ring is
 * SINGLE_ISSUER (only its thread submits and waits) with DEFER_TASKRUN: the
 * kernel queues the task work that posts our completions on the ring and
 * runs it when the worker enters to wait, in one batch, instead of
 * interrupting the worker with an IPI for each (the profile in the
 * ring-per-worker work showed ~12 % of a worker's CPU in those interrupts
 * and ~12 % in lock_sock contention they cause). A loop driven without a
 * pool (any thread may wait on it, leader/followers) runs a plain ring:
 * with COOP_TASKRUN a follower asleep on drive_lock would not be woken to
 * run the task work of an op it submitted while the leader waits for it. */
static const unsigned ur_mode_flags[UR_NMODES] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    0};

/* Sets up a ring in one mode. */
static int ur_ring_init_mode(struct io_uring *ring, unsigned depth, int mode) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL | ur_mode_flags[mode];
  p.cq_entries = depth * UR_CQ_FACTOR;
  int ret = io_uring_queue_init_params(depth, ring, &p);
  if (ret < 0)
    return ur_setup_error(ret);
  UR_RING_MADE();
  /* NODROP: a full CQ never loses a completion (5.5). EXT_ARG: a timed wait
   * without a timeout SQE, so wait() never touches the SQ (5.11). */
  if ((p.features & (IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG)) !=
      (IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG)) {
    UR_RING_GONE();
    io_uring_queue_exit(ring);
    return IOC_ENOSYS;
  }
  return 0;
}

static int ur_ring_init(struct io_uring *ring, unsigned depth) {
  return ur_ring_init_mode(ring, depth, UR_MODE_PLAIN);
}

/* The best mode a worker's ring may try. A SINGLE_ISSUER ring takes SQEs
 * from its worker only, and with DEFER_TASKRUN its completions are posted
 * only when that worker waits: while the worker runs a long handler,
 * nobody can carry its sockets on. A core with a batch hook (the Lua
 * binding: handlers run there, under one lock, for as long as they take)
 * promises that socket work goes on meanwhile (tests/lua test_order.lua
 * test_socket_work_goes_on_while_a_handler_runs): an idle worker must be
 * able to reap a busy one's ring and post its accepts and receives again.
 * So its worker rings run COOP_TASKRUN without SINGLE_ISSUER: the kernel
 * runs their task work at the submitter's next kernel entry or tick, with
 * no IPI, and any worker may submit (sq_lock). (Reaping only, handing the
 * re-posts back to the busy owner, is not enough: the listener's accepts on
 * that ring stay down until the handler returns.) Measured, Lua HTTP
 * keep-alive (wrk -t1 -c64, 2 workers, server CPU per request, 3 interleaved
 * rounds on a busy 2-core host, medians): plain rings 4.16 us (3.97 before
 * the rings were the workers' own), COOP_TASKRUN + SINGLE_ISSUER 3.30,
 * DEFER_TASKRUN 3.77. IOCORE_URING_MODE (defer, coop_si, coop, plain) sets
 * the start instead, so the fallbacks can be run on a kernel that has
 * everything. */
static int ur_mode_cap(const ioc_core_t *core) {
  const char *env = getenv("IOCORE_URING_MODE");
  if (!env || !*env)
    return core->batch_hook ? UR_MODE_COOP : UR_MODE_DEFER;
  if (strcmp(env, "defer") == 0)
    return UR_MODE_DEFER;
  if (strcmp(env, "coop_si") == 0)
    return UR_MODE_COOP_SI;
  if (strcmp(env, "coop") == 0)
    return UR_MODE_COOP;
  if (strcmp(env, "plain") == 0)
    return UR_MODE_PLAIN;
  return UR_MODE_DEFER;
}

/* Sets up a worker's ring (own) in the best mode the kernel takes, falling
 * back one mode at a time on EINVAL (an unknown flag); the first fallback
 * is logged once per core. A loop without a worker gets a plain ring. */
static int ur_ring_create(ioc_core_t *core, struct io_uring *ring, unsigned depth, bool own, int *mode) {
  ur_core_t *uc = core->bd;
  if (!own) {
    *mode = UR_MODE_PLAIN;
    return ur_ring_init_mode(ring, depth, UR_MODE_PLAIN);
  }
  int m = ur_mode_cap(core), best = atomic_load(&uc->best_mode);
  if (best > m)
    m = best; /* the kernel refused the better ones before */
  for (;; m++) {
    int ret = ur_ring_init_mode(ring, depth, m);
    if (ret == 0 || m == UR_MODE_PLAIN || ret != IOC_ENOSYS) {
      if (ret == 0) {
        if (m > ur_mode_cap(core)) {
          atomic_store(&uc->best_mode, m);
          if (!atomic_exchange(&uc->logged, 1))
            ioc__log(core, "io_uring: worker rings run %s (the kernel refused the better modes)",
                     ur_mode_names[m]);
        } else if (getenv("IOCORE_URING_MODE") && !atomic_exchange(&uc->logged, 1)) {
          ioc__log(core, "io_uring: worker rings run %s (IOCORE_URING_MODE)", ur_mode_names[m]);
        }
        *mode = m;
      }
      return ret;
    }
  }
}

static bool ur_op_supported(struct io_uring *ring, int op) {
  struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
  if (!probe)
    return false;
  bool ok = io_uring_opcode_supported(probe, op) != 0;
  io_uring_free_probe(probe);
  return ok;
}

static int ur_ops_check(struct io_uring *ring) {
  static const int needed[] = {IORING_OP_NOP,     IORING_OP_ACCEPT,       IORING_OP_CONNECT,
                               IORING_OP_RECV,    IORING_OP_SEND,         IORING_OP_SENDMSG,
                               IORING_OP_ASYNC_CANCEL,
                               IORING_OP_TIMEOUT, IORING_OP_POLL_ADD};
  struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
  if (!probe)
    return IOC_ENOSYS;
  int ret = 0;
  for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++)
    if (!io_uring_opcode_supported(probe, needed[i]))
      ret = IOC_ENOSYS;
  io_uring_free_probe(probe);
  return ret;
}

/* Allocates and registers a buffer ring of n entries (a power of two). The
 * ring memory must be page aligned; liburing 2.3 has no helper for it. */
static int ur_buf_ring_register(struct io_uring *ring, unsigned n, struct io_uring_buf_ring **out,
                                size_t *out_bytes) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t bytes = (n * sizeof(struct io_uring_buf) + page - 1) & ~(page - 1);
  void *mem = NULL;
  if (posix_memalign(&mem, page, bytes) != 0)
    return IOC_ENOMEM;
  memset(mem, 0, bytes);
  struct io_uring_buf_ring *br = mem;
  io_uring_buf_ring_init(br);
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (__u64)(uintptr_t)br;
  reg.ring_entries = n;
  reg.bgid = UR_BUF_GROUP;
  int ret = io_uring_register_buf_ring(ring, &reg, 0);
  if (ret < 0) {
    free(mem);
    return ret == -ENOMEM ? IOC_ENOMEM : IOC_ENOSYS; /* EINVAL before 5.19 */
  }
  *out = br;
  *out_bytes = bytes;
  return 0;
}

static int ur_probe(void) {
  int ret = ur_sysctl_check();
  if (ret < 0)
    return ret;
  struct io_uring ring;
  ret = ur_ring_init(&ring, 8);
  if (ret < 0)
    return ret;
  ret = ur_ops_check(&ring);
  if (ret == 0) {
    struct io_uring_buf_ring *br;
    size_t bytes;
    ret = ur_buf_ring_register(&ring, 8, &br, &bytes);
    if (ret == 0) {
      io_uring_unregister_buf_ring(&ring, UR_BUF_GROUP);
      free(br);
    }
  }
  UR_RING_GONE();
  io_uring_queue_exit(&ring);
  return ret;
}

static unsigned ur_pow2_floor(unsigned v) {
  unsigned p = 1;
  while (p <= v / 2)
    p *= 2;
  return p;
}

/* The core-wide part: the admin's switch and the mode cache; each loop has
 * a ring. */
static int ur_init(ioc_core_t *core) {
  int ret = ur_sysctl_check();
  if (ret < 0)
    return ret;
  ur_core_t *uc = calloc(1, sizeof *uc);
  if (!uc)
    return IOC_ENOMEM;
  atomic_init(&uc->best_mode, -1);
  atomic_init(&uc->logged, 0);
  core->bd = uc;
  return 0;
}

static void ur_destroy(ioc_core_t *core) {
  free(core->bd);
  core->bd = NULL;
}

/* Registers a fresh buffer ring on the loop's current ring and gives it
 * every buffer (none may be out: bufs_out == 0). */
static int ur_bufs_attach(ur_backend_t *bd, const unsigned char *held) {
  int ret = ur_buf_ring_register(&bd->ring, bd->nbufs, &bd->br, &bd->br_bytes);
  if (ret < 0) {
    bd->br = NULL;
    return ret;
  }
  int mask = io_uring_buf_ring_mask(bd->nbufs), n = 0;
  for (unsigned i = 0; i < bd->nbufs; i++)
    if (!held || !held[i])
      io_uring_buf_ring_add(bd->br, bd->bufs + (size_t)i * bd->buf_size, bd->buf_size, (unsigned short)i,
                            mask, n++);
  io_uring_buf_ring_advance(bd->br, n);
  return 0;
}

/* Tears the current ring down, its buffer ring with it. SQEs still in the
 * SQ go to the kernel first: a fire-and-forget close among them must not
 * leave its socket open. */
static void ur_ring_close(ur_backend_t *bd) {
  if (io_uring_sq_ready(&bd->ring) > 0)
    io_uring_submit(&bd->ring);
  if (bd->br) {
    io_uring_unregister_buf_ring(&bd->ring, UR_BUF_GROUP);
    free(bd->br);
    bd->br = NULL;
  }
  UR_RING_GONE();
  io_uring_queue_exit(&bd->ring);
}

/* A ring (plain: no worker owns the loop yet) with its provided buffers,
 * the loop's eventfd and locks. */
static int ur_loop_init(ioc_core_t *core, ioc__loop_t *loop) {
  int ret;
  ur_backend_t *bd = calloc(1, sizeof *bd);
  if (!bd)
    return IOC_ENOMEM;
  bd->core = core;
  bd->loop = loop;
  unsigned depth = core->queue_depth ? core->queue_depth : UR_DEFAULT_DEPTH;
  int mode;
  ret = ur_ring_create(core, &bd->ring, depth, false, &mode);
  if (ret < 0)
    goto fail_bd;
  atomic_init(&bd->mode, mode);
  ret = ur_ops_check(&bd->ring);
  if (ret < 0)
    goto fail_ring;

  unsigned nbufs = ur_pow2_floor(bd->ring.sq.ring_entries / UR_SQ_PER_BUF);
  if (nbufs < UR_BUF_MIN)
    nbufs = UR_BUF_MIN;
  if (nbufs > UR_BUF_MAX)
    nbufs = UR_BUF_MAX;
  bd->nbufs = nbufs;
  bd->buf_size = UR_BUF_SIZE;
  bd->bufs_bytes = (size_t)nbufs * UR_BUF_SIZE;
  /* Anonymous mapping: pages cost nothing until the kernel first fills them. */
  bd->bufs = mmap(NULL, bd->bufs_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (bd->bufs == MAP_FAILED) {
    ret = IOC_ENOMEM;
    goto fail_ring;
  }
  ret = ur_bufs_attach(bd, NULL);
  if (ret < 0)
    goto fail_bufs;
  /* Blocking on purpose: the ring's READ on it then waits for a write
   * (on an O_NONBLOCK eventfd io_uring would complete it with EAGAIN). */
  bd->efd = eventfd(0, EFD_CLOEXEC);
  if (bd->efd < 0) {
    ret = ur_map_res(-errno);
    goto fail_br;
  }
  if (ioc__mutex_init(&bd->sq_lock) != 0) {
    ret = IOC_ENOMEM;
    goto fail_efd;
  }
  atomic_init(&bd->dirty, 1); /* the eventfd READ is armed by the first flush */
  atomic_init(&bd->wake_pending, 0);
  atomic_init(&bd->bufs_out, 0);
  atomic_init(&bd->inflight, 0);
  atomic_init(&bd->xpending, 0);
  atomic_init(&bd->ring_fd, bd->ring.ring_fd);
  atomic_init(&bd->buf_lock.v, 0);
  atomic_init(&bd->x_lock.v, 0);
  bd->retry_ts.tv_sec = 0;
  bd->retry_ts.tv_nsec = UR_RETRY_NS;
  bd->wait_in_poll = UR_ON_VALGRIND();
  bd->has_msg_ring = ur_op_supported(&bd->ring, IORING_OP_MSG_RING);
  bd->has_close = ur_op_supported(&bd->ring, IORING_OP_CLOSE);
  loop->bl = bd;
  return 0;

fail_efd:
  close(bd->efd);
fail_br:
  io_uring_unregister_buf_ring(&bd->ring, UR_BUF_GROUP);
  free(bd->br);
  bd->br = NULL;
fail_bufs:
  munmap(bd->bufs, bd->bufs_bytes);
fail_ring:
  UR_RING_GONE();
  io_uring_queue_exit(&bd->ring);
fail_bd:
  free(bd);
  return ret;
}

/* Everything is closed by now and no worker runs (the ring is a plain one
 * again): no op is in flight, so nothing of ours can be in the kernel but
 * the eventfd READ, a retry timer or stray cancel entries, which the ring
 * teardown discards. Any thread. */
static void ur_loop_destroy(ioc_core_t *core, ioc__loop_t *loop) {
  IOC__UNUSED(core);
  ur_backend_t *bd = loop->bl;
  if (!bd)
    return;
  ur_ring_close(bd);
  munmap(bd->bufs, bd->bufs_bytes);
  close(bd->efd);
  ioc__mutex_destroy(&bd->sq_lock);
  free(bd->cancel_keys);
  free(bd->xkeys);
  free(bd->kept);
  free(bd);
  loop->bl = NULL;
}

/* ---- the submission side (sq_lock) ---------------------------------------- */

/* Pushes everything prepared to the kernel. Entries the kernel refused stay
 * in the SQ (liburing already published them) and go with the next enter.
 * Returns the io_uring_submit() result. */
static int ur_enter_locked(ur_backend_t *bd) {
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
static struct io_uring_sqe *ur_get_sqe_locked(ur_backend_t *bd) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&bd->ring);
  if (!sqe) {
    ur_enter_locked(bd);
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
 * user_data, and ur_complete gives the op the injected result instead of
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
static int32_t ur_fault_undo(ioc__op_t *op, int32_t res) {
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
    struct io_uring_sqe *sqe = ur_get_sqe_locked(bd);
    if (!sqe)
      return;
    ioc__op_t *op = IOC__QUEUE_DATA(ioc__queue_pop(&bd->backlog), ioc__op_t, qn);
    ur_flags_clear(op, UR_F_BACKLOG);
    ur_prep(bd, sqe, op);
  }
  unsigned done = 0;
  while (done < bd->ncancel) {
    struct io_uring_sqe *sqe = ur_get_sqe_locked(bd);
    if (!sqe)
      break;
    io_uring_prep_cancel64(sqe, bd->cancel_keys[done++], 0);
    io_uring_sqe_set_data64(sqe, UR_UD(&ur_cancel_marker));
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
  struct io_uring_sqe *sqe = ur_get_sqe_locked(bd);
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
  int ret = ur_enter_locked(bd);
  bool stuck = io_uring_sq_ready(&bd->ring) > 0 || !ioc__queue_empty(&bd->backlog) || bd->ncancel ||
               !atomic_load_explicit(&bd->efd_armed, memory_order_relaxed);
  atomic_store_explicit(&bd->dirty, stuck ? 1 : 0, memory_order_relaxed);
  IOC__UNUSED(ret);
}

/* After filling SQEs: enter now, or leave it to the end of the dispatch batch. */
static void ur_commit_locked(ioc_core_t *core, ur_backend_t *bd) {
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
    struct io_uring_sqe *sqe = ur_get_sqe_locked(bd);
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

static int ur_submit(ioc_core_t *core, ioc__op_t *op) {
  ur_backend_t *bd = ur_of(core, op);
  if (!ur_net_op(op) || !op->handle)
    return IOC_EINVAL;
  if (op->type == IOC__OP_RECV) op->u.recv.buf = NULL;
  op->qn.next = NULL;
  if (!ur_may_submit(bd)) {
    ur_hand_to_owner(core, bd, op);
    return 0;
  }
  ur_sq_lock(bd);
  int r = ur_place_locked(bd, op);
  ur_commit_locked(core, bd);
  ur_sq_unlock(bd);
  if (r == UR_CANCELLED) { /* cancel() raced with this very submit */
    op->res = IOC_ECANCELED;
    ioc__core_defer(core, op);
  }
  return 0;
}

/* Submits op again from a completion (same op, new SQE). Returns 1 if op was
 * completed instead (its owner cancelled it meanwhile), else 0. Only called
 * from complete(), so completing inline is allowed. */
static int ur_resubmit(ioc_core_t *core, ioc__op_t *op) {
  ur_backend_t *bd = ur_of(core, op);
  op->qn.next = NULL;
  if (!ur_may_submit(bd)) {
    ur_hand_to_owner(core, bd, op);
    return 0;
  }
  ur_sq_lock(bd);
  int r = ur_place_locked(bd, op);
  ur_commit_locked(core, bd);
  ur_sq_unlock(bd);
  if (r != UR_CANCELLED)
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
    struct io_uring_sqe *sqe = ur_get_sqe_locked(bd);
    if (sqe) {
      io_uring_prep_cancel64(sqe, key, 0);
      io_uring_sqe_set_data64(sqe, UR_UD(&ur_cancel_marker));
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
    /* another worker reaping the ring: its owner arms it (ur_wait) */
    ioc__spin_lock(&bd->buf_lock);
    bd->retry_armed = false;
    bd->retry_lost = true;
    ioc__spin_unlock(&bd->buf_lock);
    ur_wake(core, bd->loop);
    return;
  }
  ur_sq_lock(bd);
  struct io_uring_sqe *sqe = bd->swapping ? NULL : ur_get_sqe_locked(bd);
  if (sqe) {
    io_uring_prep_timeout(sqe, &bd->retry_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UR_UD(&ur_retry_marker));
    ur_commit_locked(core, bd);
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
    n += ur_resubmit(core, IOC__QUEUE_DATA(it, ioc__op_t, qn));
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
  return op ? ur_resubmit(core, op) : 0;
}

/* ---- cancel, wake, flush --------------------------------------------------- */

/* By the loop's driver: makes the op whose user_data is key finish soon.
 * An op still in user space (starved or backlogged) is completed with
 * ECANCELED through the ready queue; one in the kernel gets an ASYNC_CANCEL
 * whose own CQE (user_data = ur_cancel_marker) is ignored; the op's CQE
 * (-ECANCELED, or its real result if it won the race) comes as usual. key
 * may name an op that completed meanwhile (a cross-thread cancel): it is
 * dereferenced only once found in one of our lists, and only taken as
 * cancelled if its owner asked (UR_F_CANCEL), so a new op at the same
 * address is left alone; a cancel SQE for such a key returns ENOENT, or
 * cancels the new op, which then goes out again (not asked: ur_complete). */
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
      ur_commit_locked(core, bd);
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
  ur_commit_locked(core, bd);
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
  ur_wake(core, bd->loop);
}

static void ur_wake_efd(ur_backend_t *bd) {
  uint64_t one = 1;
  while (write(bd->efd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

/* Makes op finish soon; any thread. Only the loop's driver touches its
 * ring: another thread leaves the key for it (x_lock) and wakes it. The
 * core takes a loop nobody drives over for the call (ioc__op_cancel), so
 * without a pool the cancel still goes out at once. Harmless on an op that
 * already completed: the flag is reset by the next submit. */
static void ur_cancel(ioc_core_t *core, ioc__op_t *op) {
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
  ur_wake(core, bd->loop);
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
  struct io_uring_sqe *sqe = src->swapping ? NULL : ur_get_sqe_locked(src);
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
static void ur_wake(ioc_core_t *core, ioc__loop_t *loop) {
  ur_backend_t *bd = loop->bl;
  if (atomic_exchange_explicit(&bd->wake_pending, 1, memory_order_acq_rel))
    return;
  if (!ur_wake_by_msg(core, bd))
    ur_wake_efd(bd);
}

/* Pushes what is prepared to the kernel. The worker that owns a ring
 * leaves it to its own next wait(), which submits and waits in one
 * io_uring_enter (a batch then costs one syscall, not two), unless a
 * MSG_RING wake is among it (a worker about to run long handlers calls
 * another one for help: that must go now). Every batch of a worker ends in
 * a wait on its loops (0 ms when it has more to do), so nothing stays. */
static void ur_flush_now(ioc_core_t *core, ioc__loop_t *loop, bool force) {
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

static void ur_flush(ioc_core_t *core, ioc__loop_t *loop) { ur_flush_now(core, loop, false); }

/* The owner's half of ur_flush before it enters the kernel itself: moves
 * the backlog and cancels into the SQ and publishes the SQ tail, without
 * entering. Returns the number of SQEs for the kernel to take. */
static unsigned ur_prepare(ioc_core_t *core, ur_backend_t *bd) {
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

/* ---- the completion side ---------------------------------------------------- */

/* Copies up to max CQEs into out and advances the CQ. Wake NOPs and cancel
 * results are consumed here and not handed out. Only the waiter calls it. */
static int ur_reap(ur_backend_t *bd, ioc__cqe_t *out, int max, bool *woke) {
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
    if (cqe->user_data == UR_UD(&ur_cancel_marker) || cqe->user_data == UR_UD(&ur_close_marker))
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
static int ur_wait(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *out, int max, int timeout_ms) {
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
      to_submit = ur_prepare(core, bd);
    else
      ur_flush_now(core, loop, true);
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
    int n = ur_reap(bd, out, max, &woke);
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
        n = ur_reap(bd, out, max, &woke);
    }
    if (n == 0 && !woke) {
      ur_flush_overflow(bd);
      n = ur_reap(bd, out, max, &woke);
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

/* CONNECT re-armed as POLL_ADD(POLLOUT) (see ur_complete) is done: the
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
static int ur_complete(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *cqe) {
  ur_backend_t *bd = loop->bl;
  if (!cqe->ptr || cqe->ptr == &ur_cancel_marker)
    return 0;
  if ((uintptr_t)cqe->ptr & UR_MSG_TAG) {
    /* A MSG_RING wake this loop sent: if it did not arrive (the target's
     * CQ overflowed), wake the target the other way. */
    ur_backend_t *target = (ur_backend_t *)((uintptr_t)cqe->ptr & ~UR_MSG_TAG);
    if (cqe->res < 0)
      ur_wake_efd(target);
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
    res = ur_fault_undo(op, res);
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
    return done + ur_resubmit(core, op);
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

/* ---- handing a loop's ring over ------------------------------------------------
 *
 * A SINGLE_ISSUER ring belongs to the thread that made it, for its whole
 * life, and with DEFER_TASKRUN only that thread can even wait on it. Yet a
 * loop outlives its workers: its sessions stay pinned to it when the pool is
 * joined, and the next dispatcher (any thread) or the next pool's worker
 * must carry them on. So the ring is replaced whenever the loop changes
 * hands: a worker makes its own ring when it starts and swaps it in; when
 * it exits it swaps in a plain ring that any thread may drive. The swap
 * (ur_loop_own) runs on the thread taking the loop (start) or giving it
 * (exit) - the one thread allowed on the SINGLE_ISSUER ring involved - with
 * the loop's drive_lock held and nobody else running its completions, so
 * no other thread can reach either ring:
 *   1. the new ring is made first (failing, the loop keeps the old one);
 *   2. the old ring is drained: one ASYNC_CANCEL(ANY | ALL) and its CQEs reaped
 *      and kept until every SQE prepared on it has completed (`inflight` =
 *      0); nothing is submitted to it meanwhile (`swapping`);
 *   3. the old ring and its buffer ring are torn down, the new ring gets a
 *      fresh buffer ring with every buffer but those the kept entries hold,
 *      its eventfd READ and the starved ops; the kept entries complete in
 *      the driver's next batch (wait() hands them out first). A cancel the owner did not ask for is not its business:
 *      ur_complete submits such an op again, now on the new ring, losing no
 *      data and no connection.
 * MSG_RING wakes aimed at the old ring meanwhile land in its CQ (ignored),
 * fail (the waker writes the eventfd instead), or see ring_fd = -1 and write
 * the eventfd: the eventfd outlives every ring, and the core looks at the
 * loop's queues after the swap anyway, so no wake is lost. So when the core
 * is freed every ring is a plain one (ioc_core_destroy needs the pool
 * joined) and any thread may free it; no op is in flight (stats) and no fd
 * is left: the eventfd and the ring fd are closed by ur_loop_destroy. */

/* Step 2 above: empties the current ring (see the comment above). The
 * entries reaped are not completed here but returned (*out, *nout; the
 * caller frees it) to be completed once the new ring is in: a completion
 * runs the owner's callbacks, and a handler run from here that waits for
 * another completion of this very drain (a Lua handler spinning on stats)
 * would hold the drain up for as long as it waits. */
static void ur_drain_ring(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t **out, int *nout) {
  ur_backend_t *bd = loop->bl;
  ur_sq_lock(bd); /* no one else is here; the lock orders us after past users */
  bd->swapping = true;
  atomic_store_explicit(&bd->ring_fd, -1, memory_order_release);
  ur_sq_unlock(bd);
  ioc__cqe_t cqes[IOC__CQE_BATCH];
  uint64_t started = ioc__now_ms(), last_cancel = 0;
  bool logged = false;
  while (atomic_load_explicit(&bd->inflight, memory_order_relaxed) > 0) {
    uint64_t now = ioc__now_ms();
    if (!last_cancel || now - last_cancel >= 250) {
      /* Again now and then: an op running in io-wq is not cancellable until
       * it parks (it finishes by itself anyway). */
      struct io_uring_sqe *sqe = io_uring_get_sqe(&bd->ring);
      if (!sqe) {
        ur_enter_locked(bd);
        sqe = io_uring_get_sqe(&bd->ring);
      }
      if (sqe) {
        atomic_fetch_add_explicit(&bd->inflight, 1, memory_order_relaxed);
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, UR_UD(&ur_cancel_marker));
      }
      ur_enter_locked(bd);
      last_cancel = now;
    }
    if (!logged && now - started > 2000) {
      ioc__log(core, "io_uring: %u requests still in flight while handing a ring over",
               atomic_load_explicit(&bd->inflight, memory_order_relaxed));
      logged = true;
    }
    struct __kernel_timespec ts = {0, 50L * 1000 * 1000};
    struct io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.sigmask_sz = _NSIG / 8;
    arg.ts = (__u64)(uintptr_t)&ts;
    io_uring_enter2((unsigned)bd->ring.ring_fd, 0, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                    (sigset_t *)(void *)&arg, sizeof arg);
    bool woke = false;
    int m = ur_reap(bd, cqes, IOC__CQE_BATCH, &woke);
    if (m > 0) {
      ioc__cqe_t *grown = realloc(*out, (size_t)(*nout + m) * sizeof *grown);
      if (!grown) {
        /* No room to keep them: complete them now, on the old ring. */
        for (int i = 0; i < m; i++)
          ur_complete(core, loop, &cqes[i]);
        continue;
      }
      *out = grown;
      memcpy(*out + *nout, cqes, (size_t)m * sizeof *cqes);
      *nout += m;
    }
  }
}

/* Gives loop a new ring: the calling worker's own (own) or a plain one, and
 * moves every op over (see above). The core calls it with the loop's
 * drive_lock held and no other thread running its completions. Returns 1
 * when the loop now runs a ring only the calling thread may touch
 * (DEFER_TASKRUN: no other thread may reap it), 2 for a worker's ring other
 * workers may reap, 0 for a plain ring, or a negative code when no new
 * ring could be made (the loop keeps its ring; logged). */
static int ur_loop_own(ioc_core_t *core, ioc__loop_t *loop, bool own) {
  ur_backend_t *bd = loop->bl;
  if (own == bd->worker_ring)
    return !bd->owned ? 0 : atomic_load(&bd->mode) == UR_MODE_DEFER ? 1 : 2;
  struct io_uring fresh;
  int mode;
  unsigned depth = core->queue_depth ? core->queue_depth : UR_DEFAULT_DEPTH;
  int ret = ur_ring_create(core, &fresh, depth, own, &mode);
  if (ret < 0) {
    ioc__log(core, "io_uring: no new ring for loop %d (%s); it keeps its %s ring", loop->index,
             ioc_err_name(ret), ur_mode_names[atomic_load(&bd->mode)]);
    return ret;
  }
  /* entries kept from an earlier hand-over and not yet handed out stay
   * first, in order */
  ioc__cqe_t *kept = NULL;
  int nkept = 0;
  if (bd->kept) {
    nkept = bd->nkept - bd->kept_next;
    memmove(bd->kept, bd->kept + bd->kept_next, (size_t)nkept * sizeof *kept);
    kept = bd->kept;
    bd->kept = NULL;
    bd->nkept = bd->kept_next = 0;
  }
  ur_drain_ring(core, loop, &kept, &nkept);
  ur_ring_close(bd);
  bd->ring = fresh;
  atomic_store(&bd->mode, mode);
  /* only a SINGLE_ISSUER ring refuses other threads' SQEs */
  bd->owned = own && mode <= UR_MODE_COOP_SI;
  bd->worker_ring = own;
  atomic_store_explicit(&bd->inflight, 0, memory_order_relaxed);
  atomic_store_explicit(&bd->efd_armed, false, memory_order_relaxed);
  /* Every buffer goes to the new ring but those the kept entries hold:
   * they are given back after their completions, as always. */
  unsigned char *held = calloc(bd->nbufs, 1);
  for (int i = 0; held && i < nkept; i++)
    if (kept[i].flags & IORING_CQE_F_BUFFER)
      held[(kept[i].flags >> IORING_CQE_BUFFER_SHIFT) % bd->nbufs] = 1;
  if (!held || (ret = ur_bufs_attach(bd, held)) < 0)
    ioc__log(core, "io_uring: loop %d has no receive buffers (%s)", loop->index,
             ioc_err_name(held ? ret : IOC_ENOMEM));
  free(held);
  bd->swapping = false;
  ioc__spin_lock(&bd->buf_lock);
  ioc__queue_t starved = ioc__queue_take(&bd->starved);
  for (ioc__qnode_t *it = ioc__queue_head(&starved); it; it = it->next)
    ur_flags_clear(IOC__QUEUE_DATA(it, ioc__op_t, qn), UR_F_STARVED);
  bd->retry_armed = bd->retry_lost = false;
  ioc__spin_unlock(&bd->buf_lock);
  ioc__queue_t again = ioc__queue_take(&bd->rehome);
  ioc__queue_append(&again, &starved);
  ioc__qnode_t *it;
  while ((it = ioc__queue_pop(&again)) != NULL)
    ur_resubmit(core, IOC__QUEUE_DATA(it, ioc__op_t, qn));
  atomic_store_explicit(&bd->ring_fd, bd->ring.ring_fd, memory_order_release);
  atomic_store_explicit(&bd->wake_pending, 0, memory_order_release);
  /* The old ring's completions are handed out by the next wait(), as if
   * reaped from the new ring: they run in the owner's usual batch, not
   * here under drive_lock, and what they submit again goes to the new one. */
  bd->kept = kept;
  bd->nkept = nkept;
  bd->kept_next = 0;
  atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed);
  ur_flush(core, loop);
  return !bd->owned ? 0 : mode == UR_MODE_DEFER ? 1 : 2;
}

/* How many sockets were closed through the core's rings (tests). */
uint64_t ioc__uring_closes(ioc_core_t *core) {
  uint64_t n = 0;
  if (core->backend != &ioc__backend_uring)
    return 0;
  for (int i = 0; i < atomic_load_explicit(&core->nloops, memory_order_acquire); i++)
    n += atomic_load(&((ur_backend_t *)core->loops[i]->bl)->n_close);
  return n;
}

/* The mode loop's ring runs in (tests, logs). */
const char *ioc__uring_mode(ioc_core_t *core, int loop) {
  if (core->backend != &ioc__backend_uring || loop < 0 ||
      loop >= atomic_load_explicit(&core->nloops, memory_order_acquire))
    return NULL;
  ur_backend_t *bd = core->loops[loop]->bl;
  return ur_mode_names[atomic_load(&bd->mode)];
}

/* ---- the rest of the contract ---------------------------------------------- */

/* Sockets need no registration with io_uring. */
static int ur_add(ioc_core_t *core, ioc__handle_t *h) {
  IOC__UNUSED(core);
  IOC__UNUSED(h);
  return 0;
}

static void ur_del(ioc_core_t *core, ioc__handle_t *h) {
  IOC__UNUSED(core);
  IOC__UNUSED(h);
}

/* Nothing is deferred with ioc__core_defer_backend: starved receives and
 * backlogged submissions wait on queues of their own. */
static void ur_run_deferred(ioc_core_t *core, ioc__op_t *op) {
  IOC__UNUSED(core);
  IOC__UNUSED(op);
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
static bool ur_close(ioc_core_t *core, ioc__handle_t *h) {
  ur_backend_t *bd = (ur_backend_t *)core->loops[h->loop]->bl;
  if (!bd->has_close || !ioc__core_driving(bd->loop) || !ur_may_submit(bd))
    return false;
  ur_sq_lock(bd);
  struct io_uring_sqe *sqe = bd->swapping ? NULL : ur_get_sqe_locked(bd);
  if (sqe) {
    io_uring_prep_close(sqe, h->fd);
    io_uring_sqe_set_data64(sqe, UR_UD(&ur_close_marker));
    atomic_fetch_add_explicit(&bd->n_close, 1, memory_order_relaxed);
    ur_commit_locked(core, bd);
  }
  ur_sq_unlock(bd);
  return sqe != NULL;
}

const ioc__backend_t ioc__backend_uring = {
    .name = "io_uring",
    .kind = IOC_BACKEND_IO_URING,
    .single_waiter = true,
    .pinned_submit = true,
    .probe = ur_probe,
    .init = ur_init,
    .destroy = ur_destroy,
    .loop_init = ur_loop_init,
    .loop_destroy = ur_loop_destroy,
    .add = ur_add,
    .del = ur_del,
    .submit = ur_submit,
    .cancel = ur_cancel,
    .wait = ur_wait,
    .complete = ur_complete,
    .run_deferred = ur_run_deferred,
    .wake = ur_wake,
    .flush = ur_flush,
    .loop_own = ur_loop_own,
    .close = ur_close,
};

#endif /* __linux__ */
