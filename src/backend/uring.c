/* The io_uring backend: the true completion model on Linux.
 *
 * One ring per loop (core.c: a loop per worker). Every ACCEPT / CONNECT /
 * RECV / SEND op is one SQE whose user_data is the op itself, submitted by
 * the thread driving the op's loop (pinned_submit: other threads' ops reach
 * it through the loop's inbox); its CQE comes back through wait() and
 * complete() on that same thread. So the task work that posts a request's
 * completion belongs to the thread that waits for it.
 *
 * Locks (never held across a call into the core):
 *   sq_lock  (mutex) the SQ ring, the backlog, the pending cancel keys. Held
 *            across io_uring_submit(): liburing's SQ side assumes a single
 *            submitter; besides the driver, a wake (a NOP) and a cancel
 *            from another thread reach the SQ.
 *   buf_lock (spin)  the provided-buffer ring tail, the starved list and the
 *            retry timer flag.
 *   Order: buf_lock may be taken before sq_lock is, never the other way.
 * The CQ side needs no lock: only the waiter reads and advances it.
 *
 * Batching: while the calling thread drives the loop, submit() only fills an
 * SQE; the core calls flush() at the end of the batch and wait() flushes
 * before it blocks, so a batch costs one io_uring_enter. A thread that does
 * not drive the loop (a cancel, a wake) enters the kernel at once.
 *
 * Receives use a ring of provided buffers (group UR_BUF_GROUP): an idle
 * session holds no buffer, the kernel picks one when data arrives, and we
 * put it back once the owner's dispatch has copied the bytes out.
 *
 * Ops are never freed here and an op is never touched after
 * ioc__op_complete() returned (its owner may be gone). Each successful submit
 * yields exactly one ioc__op_complete(): kernel conditions that are not the
 * owner's business (no buffer free, cancellation because the submitting
 * thread exited) are absorbed here by resubmitting.
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
/* The result of a MSG_RING wake sent to another loop's ring carries that
 * ring's ur_backend_t with this bit set (every other user_data is an
 * aligned pointer or 0). */
#define UR_MSG_TAG ((uintptr_t)1)
#define UR_UD(p) ((__u64)(uintptr_t)(p))

/* One loop's ring (loop->bl). */
typedef struct ur_backend {
  struct io_uring ring;
  ioc_core_t *core;
  ioc__loop_t *loop;

  ioc__mutex_t sq_lock;
  /* ops that found the SQ full and the kernel refusing to take more */
  ioc__queue_t backlog; /* of ioc__op_t */
  /* cancels that found no SQE for the same reason (keys only: the op may be
   * completed and freed by the time the key is submitted) */
  __u64 *cancel_keys;
  unsigned ncancel, cancel_cap;
  /* something prepared or queued and not yet pushed to the kernel: a hint
   * that lets flush() skip the lock (written under sq_lock) */
  atomic_int dirty;

  /* a wake NOP is in the ring and its CQE not yet reaped */
  atomic_int wake_pending;

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

  bool wait_in_poll; /* running under valgrind: see UR_ON_VALGRIND */
  bool has_msg_ring; /* IORING_OP_MSG_RING (5.18): wakes between workers' rings */
} ur_backend_t;

static void ur_wake(ioc_core_t *core, ioc__loop_t *loop);

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

/* Sets up a ring with our flags. SUBMIT_ALL (5.18) keeps one bad SQE from
 * leaving the rest of a batch behind in the SQ. No SINGLE_ISSUER (many
 * threads submit) and no COOP_TASKRUN: completions of an op are posted by
 * task work on the thread that submitted it, and with COOP_TASKRUN a worker
 * asleep on the core's poll lock would not be woken to run it while the
 * leader waits for that very CQE. */
static int ur_ring_init(struct io_uring *ring, unsigned depth) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL;
  p.cq_entries = depth * UR_CQ_FACTOR;
  int ret = io_uring_queue_init_params(depth, ring, &p);
  if (ret < 0)
    return ur_setup_error(ret);
  /* NODROP: a full CQ never loses a completion (5.5). EXT_ARG: a timed wait
   * without a timeout SQE, so wait() never touches the SQ (5.11). */
  if ((p.features & (IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG)) !=
      (IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG)) {
    io_uring_queue_exit(ring);
    return IOC_ENOSYS;
  }
  return 0;
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
  io_uring_queue_exit(&ring);
  return ret;
}

static unsigned ur_pow2_floor(unsigned v) {
  unsigned p = 1;
  while (p <= v / 2)
    p *= 2;
  return p;
}

/* The core-wide part: nothing but the admin's switch; each loop has a ring. */
static int ur_init(ioc_core_t *core) {
  core->bd = NULL;
  return ur_sysctl_check();
}

static void ur_destroy(ioc_core_t *core) { IOC__UNUSED(core); }

/* A ring of the loop's own, its provided buffers and its locks. */
static int ur_loop_init(ioc_core_t *core, ioc__loop_t *loop) {
  int ret;
  ur_backend_t *bd = calloc(1, sizeof *bd);
  if (!bd)
    return IOC_ENOMEM;
  unsigned depth = core->queue_depth ? core->queue_depth : UR_DEFAULT_DEPTH;
  ret = ur_ring_init(&bd->ring, depth);
  if (ret < 0)
    goto fail_bd;
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
  ret = ur_buf_ring_register(&bd->ring, nbufs, &bd->br, &bd->br_bytes);
  if (ret < 0)
    goto fail_bufs;
  int mask = io_uring_buf_ring_mask(nbufs);
  for (unsigned i = 0; i < nbufs; i++)
    io_uring_buf_ring_add(bd->br, bd->bufs + (size_t)i * UR_BUF_SIZE, UR_BUF_SIZE, (unsigned short)i,
                          mask, (int)i);
  io_uring_buf_ring_advance(bd->br, (int)nbufs);

  if (ioc__mutex_init(&bd->sq_lock) != 0) {
    ret = IOC_ENOMEM;
    goto fail_br;
  }
  atomic_init(&bd->dirty, 0);
  atomic_init(&bd->wake_pending, 0);
  atomic_init(&bd->bufs_out, 0);
  atomic_init(&bd->buf_lock.v, 0);
  bd->retry_ts.tv_sec = 0;
  bd->retry_ts.tv_nsec = UR_RETRY_NS;
  bd->wait_in_poll = UR_ON_VALGRIND();
  bd->has_msg_ring = ur_op_supported(&bd->ring, IORING_OP_MSG_RING);
  bd->core = core;
  bd->loop = loop;
  loop->bl = bd;
  return 0;

fail_br:
  io_uring_unregister_buf_ring(&bd->ring, UR_BUF_GROUP);
  free(bd->br);
fail_bufs:
  munmap(bd->bufs, bd->bufs_bytes);
fail_ring:
  io_uring_queue_exit(&bd->ring);
fail_bd:
  free(bd);
  return ret;
}

/* Everything is closed by now: no op is in flight, so nothing of ours can be
 * in the kernel but a retry timer or stray wake / cancel entries, which the
 * ring teardown discards. */
static void ur_loop_destroy(ioc_core_t *core, ioc__loop_t *loop) {
  IOC__UNUSED(core);
  ur_backend_t *bd = loop->bl;
  if (!bd)
    return;
  io_uring_unregister_buf_ring(&bd->ring, UR_BUF_GROUP);
  io_uring_queue_exit(&bd->ring);
  free(bd->br);
  munmap(bd->bufs, bd->bufs_bytes);
  ioc__mutex_destroy(&bd->sq_lock);
  free(bd->cancel_keys);
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
    op->u.accept.addrlen = (uint32_t)sizeof op->u.accept.addr.u.bytes;
    io_uring_prep_accept(sqe, fd, (struct sockaddr *)(void *)op->u.accept.addr.u.bytes,
                         (socklen_t *)&op->u.accept.addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    break;
  case IOC__OP_CONNECT:
    if (ur_flags(op) & UR_F_POLL)
      io_uring_prep_poll_add(sqe, fd, POLLOUT);
    else
      io_uring_prep_connect(sqe, fd, (const struct sockaddr *)(const void *)op->u.connect.addr.u.bytes,
                            (socklen_t)op->u.connect.addr.len);
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

/* Drains the queues and enters the kernel; leaves `dirty` saying whether
 * anything is still waiting in user space. */
static void ur_flush_locked(ur_backend_t *bd) {
  ur_drain_locked(bd);
  int ret = ur_enter_locked(bd);
  bool stuck = io_uring_sq_ready(&bd->ring) > 0 || !ioc__queue_empty(&bd->backlog) || bd->ncancel;
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
static int ur_submit(ioc_core_t *core, ioc__op_t *op) {
  ur_backend_t *bd = ur_of(core, op);
  if (!ur_net_op(op) || !op->handle)
    return IOC_EINVAL;
  op->buf = NULL;
  op->qn.next = NULL;
  ioc__mutex_lock(&bd->sq_lock);
  int r = ur_place_locked(bd, op);
  ur_commit_locked(core, bd);
  ioc__mutex_unlock(&bd->sq_lock);
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
  ioc__mutex_lock(&bd->sq_lock);
  int r = ur_place_locked(bd, op);
  ur_commit_locked(core, bd);
  ioc__mutex_unlock(&bd->sq_lock);
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
  ioc__mutex_lock(&bd->sq_lock);
  struct io_uring_sqe *sqe = ur_get_sqe_locked(bd);
  if (sqe) {
    io_uring_prep_timeout(sqe, &bd->retry_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UR_UD(&ur_retry_marker));
    ur_commit_locked(core, bd);
  }
  ioc__mutex_unlock(&bd->sq_lock);
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

/* Makes op finish soon. An op still in user space (starved or backlogged) is
 * completed with ECANCELED through the ready queue; one in the kernel gets an
 * ASYNC_CANCEL whose own CQE (user_data = ur_cancel_marker) is ignored; the
 * op's CQE (-ECANCELED, or its real result if it won the race) comes as
 * usual. Harmless on an op that already completed: the flag is reset by the
 * next submit, and a cancel SQE for an unknown key returns ENOENT. */
static void ur_cancel(ioc_core_t *core, ioc__op_t *op) {
  if (!ur_net_op(op))
    return;
  ur_backend_t *bd = ur_of(core, op);
  ur_flags_set(op, UR_F_CANCEL);
  bool found = false, wake_owner = false;
  if (op->type == IOC__OP_RECV) {
    ioc__spin_lock(&bd->buf_lock);
    if (ur_flags(op) & UR_F_STARVED) {
      found = ioc__queue_remove(&bd->starved, &op->qn);
      ur_flags_clear(op, UR_F_STARVED);
    }
    ioc__spin_unlock(&bd->buf_lock);
  }
  if (!found) {
    ioc__mutex_lock(&bd->sq_lock);
    if (ur_flags(op) & UR_F_BACKLOG) {
      found = ioc__queue_remove(&bd->backlog, &op->qn);
      ur_flags_clear(op, UR_F_BACKLOG);
    } else {
      ur_cancel_locked(bd, UR_UD(op));
      if (ioc__core_driving(bd->loop) || !atomic_load_explicit(&bd->loop->owner, memory_order_relaxed)) {
        ur_commit_locked(core, bd);
      } else {
        /* A worker owns the ring: it submits the cancel, woken below. */
        atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed);
        wake_owner = true;
      }
    }
    ioc__mutex_unlock(&bd->sq_lock);
  }
  if (wake_owner)
    ur_wake(core, bd->loop);
  if (found) {
    op->res = IOC_ECANCELED;
    ioc__core_defer(core, op);
  }
}

/* A worker wakes another loop's waiter with a MSG_RING from its own ring:
 * the wake (user_data 0) lands in the target's CQ without this thread
 * touching the target's SQ or entering the kernel for it - the MSG_RING
 * goes out with this worker's next submit (the end of its batch, or before
 * it waits). Returns false when that is not possible (not a pool worker, no
 * MSG_RING, no SQE): the caller then posts a NOP into the target's ring. */
static bool ur_wake_by_msg(ioc_core_t *core, ur_backend_t *target) {
  ioc__loop_t *mine = ioc__core_own_loop(core);
  if (!mine || mine->bl == target)
    return false;
  ur_backend_t *src = mine->bl;
  if (!src->has_msg_ring)
    return false;
  ioc__mutex_lock(&src->sq_lock);
  struct io_uring_sqe *sqe = ur_get_sqe_locked(src);
  if (sqe) {
    io_uring_prep_msg_ring(sqe, target->ring.ring_fd, 0, 0, 0);
    io_uring_sqe_set_data64(sqe, UR_UD(target) | UR_MSG_TAG);
    ur_commit_locked(core, src);
  }
  ioc__mutex_unlock(&src->sq_lock);
  return sqe != NULL;
}

/* A NOP with user_data 0 in the target's own ring, entered at once: the
 * way for threads without a ring of their own. */
static void ur_wake_nop(ioc_core_t *core, ur_backend_t *bd) {
  for (int tries = 0;; tries++) {
    ioc__mutex_lock(&bd->sq_lock);
    struct io_uring_sqe *sqe = ur_get_sqe_locked(bd);
    if (sqe) {
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, 0);
    }
    ur_flush_locked(bd);
    ioc__mutex_unlock(&bd->sq_lock);
    if (sqe)
      return;
    /* The kernel takes no SQE (out of memory). A waiter already asleep can
     * only be reached through the ring, so keep trying until it takes one. */
    if (tries == 0)
      ioc__log(core, "io_uring: no SQE for a wake-up, retrying");
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

/* Wakes the thread waiting on loop with an entry of user_data 0 in its CQ.
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
    ur_wake_nop(core, bd);
}

static void ur_flush(ioc_core_t *core, ioc__loop_t *loop) {
  IOC__UNUSED(core);
  ur_backend_t *bd = loop->bl;
  if (!atomic_load_explicit(&bd->dirty, memory_order_relaxed))
    return;
  ioc__mutex_lock(&bd->sq_lock);
  ur_flush_locked(bd);
  ioc__mutex_unlock(&bd->sq_lock);
}

/* ---- the completion side ---------------------------------------------------- */

/* Copies up to max CQEs into out and advances the CQ. Wake NOPs and cancel
 * results are consumed here and not handed out. Only the waiter calls it. */
static int ur_reap(ur_backend_t *bd, ioc__cqe_t *out, int max, bool *woke) {
  unsigned head, seen = 0;
  struct io_uring_cqe *cqe;
  int n = 0;
  io_uring_for_each_cqe(&bd->ring, head, cqe) {
    if (n == max)
      break;
    seen++;
    if (cqe->user_data == 0) {
      *woke = true;
      continue;
    }
    if (cqe->user_data == UR_UD(&ur_cancel_marker))
      continue;
    if (cqe->flags & IORING_CQE_F_BUFFER)
      atomic_fetch_add_explicit(&bd->bufs_out, 1, memory_order_acq_rel);
    out[n].ptr = (void *)(uintptr_t)cqe->user_data;
    out[n].res = cqe->res;
    out[n].flags = cqe->flags;
    n++;
  }
  io_uring_cq_advance(&bd->ring, seen);
  if (*woke)
    atomic_exchange_explicit(&bd->wake_pending, 0, memory_order_acq_rel);
  return n;
}

/* Asks the kernel to move overflowed CQEs (NODROP kept them aside when the CQ
 * was full) into the CQ. Needed only by the non-blocking peek: a blocking
 * wait flushes them itself. */
static void ur_flush_overflow(ur_backend_t *bd) {
  if (IO_URING_READ_ONCE(*bd->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
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
  uint64_t deadline = timeout_ms > 0 ? ioc__now_ms() + (uint64_t)timeout_ms : 0;
  for (;;) {
    ur_flush(core, loop);
    /* A retry timer that could not be armed (no SQE) is armed here. */
    ioc__spin_lock(&bd->buf_lock);
    bool rearm = bd->retry_lost && !bd->retry_armed;
    if (rearm) {
      bd->retry_armed = true;
      bd->retry_lost = false;
    }
    ioc__spin_unlock(&bd->buf_lock);
    if (rearm)
      ur_arm_retry(core, bd);

    bool woke = false;
    int n = ur_reap(bd, out, max, &woke);
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
    int ret = io_uring_enter2((unsigned)bd->ring.ring_fd, 0, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                              (sigset_t *)(void *)&arg, sizeof arg);
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
 *  - a RECV with a buffer exposes it in op->buf for the owner's dispatch and
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
      ur_wake_nop(core, target);
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
    op->u.accept.addr.len = res >= 0 ? op->u.accept.addrlen : 0;
    break;
  case IOC__OP_RECV:
    if (has_buf && res > 0) {
      op->buf = bd->bufs + (size_t)bid * bd->buf_size;
    } else {
      op->buf = NULL;
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
};

#endif /* __linux__ */
