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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "uring.h"

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
/* How long a starved receive waits when no buffer is known to be coming
 * back (see ur_starve). */
#define UR_RETRY_NS (1000L * 1000L)

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
 *      ioc__uring_complete submits such an op again, now on the new ring, losing no
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
        ioc__uring_enter_locked(bd);
        sqe = io_uring_get_sqe(&bd->ring);
      }
      if (sqe) {
        atomic_fetch_add_explicit(&bd->inflight, 1, memory_order_relaxed);
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, UR_UD(&ioc__uring_cancel_marker));
      }
      ioc__uring_enter_locked(bd);
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
    int m = ioc__uring_reap(bd, cqes, IOC__CQE_BATCH, &woke);
    if (m > 0) {
      ioc__cqe_t *grown = realloc(*out, (size_t)(*nout + m) * sizeof *grown);
      if (!grown) {
        /* No room to keep them: complete them now, on the old ring. */
        for (int i = 0; i < m; i++)
          ioc__uring_complete(core, loop, &cqes[i]);
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
    ioc__uring_resubmit(core, IOC__QUEUE_DATA(it, ioc__op_t, qn));
  atomic_store_explicit(&bd->ring_fd, bd->ring.ring_fd, memory_order_release);
  atomic_store_explicit(&bd->wake_pending, 0, memory_order_release);
  /* The old ring's completions are handed out by the next wait(), as if
   * reaped from the new ring: they run in the owner's usual batch, not
   * here under drive_lock, and what they submit again goes to the new one. */
  bd->kept = kept;
  bd->nkept = nkept;
  bd->kept_next = 0;
  atomic_store_explicit(&bd->dirty, 1, memory_order_relaxed);
  ioc__uring_flush(core, loop);
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
    .submit = ioc__uring_submit,
    .cancel = ioc__uring_cancel,
    .wait = ioc__uring_wait,
    .complete = ioc__uring_complete,
    .run_deferred = ur_run_deferred,
    .wake = ioc__uring_wake,
    .flush = ioc__uring_flush,
    .loop_own = ur_loop_own,
    .close = ioc__uring_close,
};

#endif /* __linux__ */
