/* The completion port: loops, the ready queues, dispatch, posted jobs and
 * the worker pool. Creating and destroying a core, backend selection and
 * the loops' allocation are in create.c.
 *
 * Loops. On io_uring and epoll a core has one loop (a ring, an epoll
 * instance) per worker of the largest pool it was started with, and at least
 * one. A socket is pinned to one loop for life (h->loop). A loop is driven by
 * one thread at a time, the one holding its drive_lock: it waits on it, runs
 * what it reaped, starts the ops other threads left in its inbox, and
 * completes the ops whose result is known (its ready queue).
 *
 * Who drives which loop:
 *   - while a pool runs, worker w of n drives the loops l with l % n == w
 *     (just loop w once the pool is as large as it ever was), holding their
 *     drive_locks for as long as it dispatches: no hand-off, no lock taken
 *     per batch, its sessions' completions and sends are its own;
 *   - a thread that dispatches while a pool runs and is not one of its
 *     workers only runs posts and waits for the stop (foreign_cond);
 *   - with no pool, a dispatching thread drives every loop it can lock:
 *     with one loop this is the leader/followers scheme (one waits, others
 *     queue on drive_lock); with several (a pool ran before) it polls them
 *     and blocks on loop 0 at most 10 ms at a time.
 * On io_uring (pinned_submit) an op submitted by a thread that does not
 * drive its loop goes to the loop's inbox and the driver is woken: only the
 * driver ever starts requests on its ring. epoll's submit is safe from any
 * thread and runs at once. IOCP has one loop, the port, and every worker
 * waits on it (its native model).
 *
 * Timers live in one heap per core (timer.c); while a pool runs, worker 0
 * keeps them (bounds its wait by the earliest deadline and runs them).
 */
#include "internal.h"

#include <stdlib.h>

static _Thread_local const ioc_core_t *tls_dispatching;
static _Thread_local int tls_batch_left;

uint64_t ioc_now_ms(void) { return ioc__now_ms(); }
int ioc_cpu_count(void) { return ioc__cpu_count(); }
int ioc_core_batch_left(void) { return tls_batch_left; }
void ioc_core_set_batch_hook(ioc_core_t *core, void (*fn)(void *ud), void *ud) {
  core->batch_hook_ud = ud;
  core->batch_hook = fn;
}
int ioc_core_in_dispatch(const ioc_core_t *core) { return tls_dispatching == core; }

/* ---- per-thread state ------------------------------------------------------------ */

static _Thread_local char tls_token;        /* its address identifies this thread */
static _Thread_local ioc__loop_t *tls_loop; /* the loop whose entries this thread runs now */

/* A worker's place in its pool, handed to worker_main. */
typedef struct ioc__worker {
  ioc_core_t *core;
  int index, count;
  ioc__thread_t thread;
} ioc__worker_t;
static _Thread_local const ioc__worker_t *tls_worker;

/* ---- loops: who drives, wake-ups ------------------------------------------------ */

bool ioc__core_driving(const ioc__loop_t *loop) {
  ioc__loop_t *l = (ioc__loop_t *)loop;
  return atomic_load_explicit(&l->owner, memory_order_relaxed) == &tls_token ||
         atomic_load_explicit(&l->driver, memory_order_relaxed) == &tls_token;
}

bool ioc__core_owns(const ioc__loop_t *loop) {
  return atomic_load_explicit(&((ioc__loop_t *)loop)->owner, memory_order_relaxed) == &tls_token;
}

ioc__loop_t *ioc__core_own_loop(ioc_core_t *core) {
  const ioc__worker_t *w = tls_worker;
  if (!w || w->core != core || !core->backend->single_waiter || w->index >= ioc__core_nloops(core)) return NULL;
  return core->loops[w->index];
}

/* Holding drive_lock now. */
static bool holds(const ioc__loop_t *loop) {
  return atomic_load_explicit(&((ioc__loop_t *)loop)->driver, memory_order_relaxed) == &tls_token;
}

/* Takes loop's drive_lock (try: only if free; else until deadline). Returns
 * 1 when taken now, 2 when this thread already holds it (a callback that
 * dispatches), 0 when not taken. */
static int loop_acquire(ioc__loop_t *l, bool try, uint64_t deadline) {
  if (holds(l)) return 2;
  if (!ioc__mutex_lock_until(&l->drive_lock, try ? 0 : deadline)) return 0;
  if (atomic_load_explicit(&l->exclusive, memory_order_relaxed) &&
      atomic_load_explicit(&l->owner, memory_order_relaxed) != &tls_token) {
    /* Its ring is its worker's alone (a SINGLE_ISSUER ring): only that
     * worker waits on it, reaps it and submits to it. */
    ioc__mutex_unlock(&l->drive_lock);
    return 0;
  }
  atomic_store_explicit(&l->driver, (void *)&tls_token, memory_order_relaxed);
  return 1;
}

static void loop_release(ioc_core_t *core, ioc__loop_t *l, int how) {
  if (how != 1) return;
  if (core->backend->flush) core->backend->flush(core, l);
  atomic_store_explicit(&l->driver, NULL, memory_order_relaxed);
  ioc__mutex_unlock(&l->drive_lock);
}

/* Marks loop as having work in its inbox or ready queue and wakes its
 * driver, unless the calling thread is the driver (it looks before it
 * waits) or a wake is already on its way. */
static void loop_kick(ioc_core_t *core, ioc__loop_t *l) {
  if (atomic_exchange_explicit(&l->pending, 1, memory_order_acq_rel) == 0 && !ioc__core_driving(l))
    core->backend->wake(core, l);
}

static void wake_all_loops(ioc_core_t *core) {
  for (int i = 0; i < ioc__core_nloops(core); i++) core->backend->wake(core, core->loops[i]);
}

/* Work on the shared queue (a post): some dispatching thread must see it. */
static void wake_for_shared(ioc_core_t *core) {
  ioc__mutex_lock(&core->foreign_lock);
  bool foreign = core->foreign_waiting > 0;
  if (foreign) ioc__cond_signal(&core->foreign_cond);
  ioc__mutex_unlock(&core->foreign_lock);
  int n = ioc__core_nloops(core);
  int i = atomic_load_explicit(&core->pool_running, memory_order_acquire) && n > 1
              ? (int)(atomic_fetch_add_explicit(&core->spread_next, 1, memory_order_relaxed) % (unsigned)n)
              : 0;
  core->backend->wake(core, core->loops[i]);
}

void ioc__core_wake_timers(ioc_core_t *core) { core->backend->wake(core, core->loops[0]); }

int ioc__core_spread(ioc_core_t *core, int i) { return i % ioc__core_nloops(core); }

int ioc__core_loop_for_new(ioc_core_t *core) {
  int n = ioc__core_nloops(core);
  if (n == 1) return 0;
  if (core->backend->pinned_submit && tls_loop && tls_dispatching == core) return tls_loop->index;
  return (int)(atomic_fetch_add_explicit(&core->spread_next, 1, memory_order_relaxed) % (unsigned)n);
}

/* ---- operations ---------------------------------------------------------------- */

/* Hands op to the backend: its submit, or, for an asynchronous shutdown,
 * its optional shutdown entry (net/ only submits one when it exists). */
static int backend_start(ioc_core_t *core, ioc__op_t *op) {
  if (op->type == IOC__OP_SHUTDOWN)
    return core->backend->shutdown ? core->backend->shutdown(core, op) : IOC_ENOSYS;
  return core->backend->submit(core, op);
}

int ioc__op_submit_on(ioc_core_t *core, ioc__op_t *op, int loop) {
  /* Injected: the backend refuses the op for lack of memory, as the
   * contract allows ("< 0 = nothing started"); the owner's error path. */
  if (IOC__FAULT(core, IOC__FAULT_ENOMEM)) return IOC_ENOMEM;
  if (loop < 0 || loop >= ioc__core_nloops(core)) loop = 0;
  op->loop = (uint8_t)loop;
  if (op->owner) ioc__object_ref(op->owner);
  IOC__STAT_ADD(core, ops_inflight, 1);
  ioc__loop_t *l = core->loops[loop];
  int how = 2;
  if (core->backend->pinned_submit && !ioc__core_driving(l) &&
      (atomic_load_explicit(&l->owner, memory_order_relaxed) || !(how = loop_acquire(l, true, 0)) ||
       atomic_load_explicit(&l->owner, memory_order_relaxed))) {
    /* (owner is looked at again once drive_lock is held: a worker that
     * took the loop over meanwhile did so under it) */
    loop_release(core, l, how);
    /* A worker owns the loop, or another thread drives it: that one starts
     * op (a completion comes from there). A loop nobody owns or drives is
     * taken over just for this submit, so an op started outside dispatch
     * (no pool) goes out at once. */
    ioc__spin_lock(&l->lock);
    ioc__queue_push(&l->inbox, &op->qn);
    ioc__spin_unlock(&l->lock);
    loop_kick(core, l);
    return 0;
  }
  int rc = backend_start(core, op);
  loop_release(core, l, how);
  if (rc < 0) {
    IOC__STAT_SUB(core, ops_inflight, 1);
    if (op->owner) ioc__object_unref(op->owner);
  }
  return rc;
}

int ioc__op_submit(ioc_core_t *core, ioc__op_t *op) {
  return ioc__op_submit_on(core, op, op->handle ? op->handle->loop : 0);
}

/* On io_uring a thread that does not drive the op's loop leaves the cancel
 * to the driver; a loop nobody owns or drives is taken over for the call,
 * so that without a pool the cancel goes out at once. */
void ioc__op_cancel(ioc_core_t *core, ioc__op_t *op) {
  ioc__loop_t *l = NULL;
  int how = 0;
  if (core->backend->pinned_submit && op->handle && op->loop < ioc__core_nloops(core)) {
    l = core->loops[op->loop];
    if (!ioc__core_driving(l) && !atomic_load_explicit(&l->owner, memory_order_relaxed))
      how = loop_acquire(l, true, 0);
  }
  core->backend->cancel(core, op);
  if (l) loop_release(core, l, how);
}

void ioc__op_complete(ioc_core_t *core, ioc__op_t *op) {
  IOC__STAT_ADD(core, completions, 1);
  /* The owner may re-submit op from inside dispatch: read nothing from op
   * afterwards. */
  ioc__object_t *owner = op->owner;
  switch (op->type) {
  case IOC__OP_POST: {
    void (*fn)(void *) = op->u.post.fn;
    void *arg = op->u.post.arg;
    free(op);
    fn(arg);
    break;
  }
  case IOC__OP_JOB:
    op->u.job.fn(op);
    break;
  default:
    owner->vtbl->dispatch(owner, op);
    break;
  }
  IOC__STAT_SUB(core, ops_inflight, 1);
  if (owner) ioc__object_unref(owner);
}

/* ---- the ready queues --------------------------------------------------------------- */

bool ioc__core_in_dispatch(const ioc_core_t *core) { return tls_dispatching == core; }

/* An op on a socket goes to its loop's queue, to be completed by the thread
 * that drives the loop; a post or a job (no socket) to the shared queue,
 * for any dispatching thread. */
static void defer(ioc_core_t *core, ioc__op_t *op, uint8_t to_backend) {
  op->to_backend = to_backend;
  if (op->handle) {
    ioc__loop_t *l = core->loops[op->loop < ioc__core_nloops(core) ? op->loop : 0];
    ioc__spin_lock(&l->lock);
    ioc__queue_push(&l->ready, &op->qn);
    ioc__spin_unlock(&l->lock);
    loop_kick(core, l);
    return;
  }
  ioc__mutex_lock(&core->ready_lock);
  ioc__queue_push(&core->ready, &op->qn);
  atomic_store_explicit(&core->ready_nonempty, 1, memory_order_release);
  ioc__mutex_unlock(&core->ready_lock);
  /* A dispatching thread looks at the shared queue before it waits again, so
   * only foreign threads need to interrupt a waiter. */
  if (!ioc__core_in_dispatch(core)) wake_for_shared(core);
}

void ioc__core_defer(ioc_core_t *core, ioc__op_t *op) { defer(core, op, 0); }

void ioc__core_defer_backend(ioc_core_t *core, ioc__op_t *op) { defer(core, op, 1); }

void ioc__core_queue_job(ioc_core_t *core, ioc__op_t *op, ioc__object_t *owner,
                         void (*fn)(ioc__op_t *op)) {
  ioc__op_init(op, IOC__OP_JOB, owner, NULL);
  op->u.job.fn = fn;
  if (owner) ioc__object_ref(owner);
  IOC__STAT_ADD(core, ops_inflight, 1);
  ioc__core_defer(core, op);
}

/* Completes (or hands to the backend) every op of batch, in order. */
static int run_batch(ioc_core_t *core, ioc__queue_t *batch) {
  int n = 0;
  ioc__qnode_t *node;
  while ((node = ioc__queue_pop(batch)) != NULL) {
    ioc__op_t *op = IOC__QUEUE_DATA(node, ioc__op_t, qn);
    tls_batch_left = !ioc__queue_empty(batch);
    if (op->to_backend)
      core->backend->run_deferred(core, op);
    else
      ioc__op_complete(core, op);
    n++;
  }
  return n;
}

/* Runs the shared queue's ops queued at this moment; returns how many. */
static int run_shared(ioc_core_t *core) {
  if (!atomic_load_explicit(&core->ready_nonempty, memory_order_acquire)) return 0;
  ioc__mutex_lock(&core->ready_lock);
  ioc__queue_t batch = ioc__queue_take(&core->ready);
  atomic_store_explicit(&core->ready_nonempty, 0, memory_order_relaxed);
  ioc__mutex_unlock(&core->ready_lock);
  return run_batch(core, &batch);
}

/* The driver of l starts what other threads submitted to it and completes
 * its known results. Returns the number of ops completed. */
static int run_loop_queues(ioc_core_t *core, ioc__loop_t *l) {
  if (!atomic_load_explicit(&l->pending, memory_order_acquire)) return 0;
  atomic_store_explicit(&l->pending, 0, memory_order_release);
  ioc__spin_lock(&l->lock);
  ioc__queue_t inbox = ioc__queue_take(&l->inbox);
  ioc__queue_t ready = ioc__queue_take(&l->ready);
  ioc__spin_unlock(&l->lock);
  ioc__qnode_t *node;
  while ((node = ioc__queue_pop(&inbox)) != NULL) {
    ioc__op_t *op = IOC__QUEUE_DATA(node, ioc__op_t, qn);
    int rc = backend_start(core, op);
    if (rc < 0) {
      /* Accepted by ioc__op_submit, so a completion is owed: the failure. */
      op->res = rc;
      ioc__queue_push(&ready, &op->qn);
    }
  }
  return run_batch(core, &ready);
}

int ioc_core_post(ioc_core_t *core, void (*fn)(void *arg), void *arg) {
  if (!fn) return IOC_EINVAL;
  ioc__op_t *op = malloc(sizeof *op);
  if (!op) return IOC_ENOMEM;
  ioc__op_init(op, IOC__OP_POST, NULL, NULL);
  op->u.post.fn = fn;
  op->u.post.arg = arg;
  IOC__STAT_ADD(core, ops_inflight, 1);
  ioc__core_defer(core, op);
  return 0;
}

/* ---- dispatch ------------------------------------------------------------------------- */

static int ms_until(uint64_t deadline) {
  if (deadline == UINT64_MAX) return -1;
  uint64_t now = ioc__now_ms();
  if (now >= deadline) return 0;
  uint64_t d = deadline - now;
  return d > 0x7fffffff ? 0x7fffffff : (int)d;
}

/* The wait bound of one round: the caller's deadline, the earliest timer if
 * this thread keeps them, and cap_ms (-1: none). */
static int wait_bound(ioc_core_t *core, uint64_t deadline, bool timers, int cap_ms) {
  int wait_ms = ms_until(deadline);
  if (timers) {
    int timer_ms = ioc__timers_next_ms(core);
    if (timer_ms >= 0 && (wait_ms < 0 || timer_ms < wait_ms)) wait_ms = timer_ms;
  }
  if (cap_ms >= 0 && (wait_ms < 0 || wait_ms > cap_ms)) wait_ms = cap_ms;
  return wait_ms;
}

/* A pool worker busy this long (running completions or Lua handlers, not
 * waiting on its loop) while its loop has completions waiting gets help: an
 * idle worker reaps the loop meanwhile (help_stuck_loops). */
#define IOC__HELP_AFTER_MS 2
/* How often an idle worker looks while another one is busy. */
#define IOC__HELP_POLL_MS 5

/* A pool worker about to run a batch: wakes one other worker that sleeps
 * on its own loop with no time bound, so that it looks at this loop
 * (help_stuck_loops) and keeps looking every IOC__HELP_POLL_MS while
 * workers are busy. One wake per such sleep: the flag is claimed here. */
static void call_for_help(ioc_core_t *core) {
  if (!atomic_load_explicit(&core->sleepers, memory_order_relaxed)) return;
  int count = ioc__core_nloops(core);
  for (int i = 0; i < count; i++) {
    ioc__loop_t *o = core->loops[i];
    int one = 1;
    if (atomic_load_explicit(&o->sleeping, memory_order_relaxed) &&
        atomic_compare_exchange_strong_explicit(&o->sleeping, &one, 0, memory_order_relaxed,
                                                memory_order_relaxed)) {
      core->backend->wake(core, o);
      return;
    }
  }
}

/* Waits on l and runs what came: waiting and reaping under l's drive_lock,
 * running without it, so that while this thread runs a long batch (a Lua
 * handler) an idle worker may reap l meanwhile. The lock is taken at once
 * (try) or by the deadline; if it is not, nothing is done and *got is
 * false. *err gets a wait failure. Returns the number of ops completed. */
static int loop_wait_run(ioc_core_t *core, ioc__loop_t *l, int wait_ms, bool try, uint64_t deadline,
                         bool *got, int *err) {
  const ioc__backend_t *be = core->backend;
  ioc__cqe_t cqes[IOC__CQE_BATCH];
  int how = loop_acquire(l, try, deadline);
  *got = how != 0;
  if (!how) return 0;
  bool owner = atomic_load_explicit(&l->owner, memory_order_relaxed) == &tls_token;
  if (owner) atomic_store_explicit(&l->busy_since, 0, memory_order_relaxed);
  bool sleep = owner && wait_ms < 0;
  if (sleep) {
    atomic_store_explicit(&l->sleeping, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&core->sleepers, 1, memory_order_relaxed);
  }
  int m = be->wait(core, l, cqes, IOC__CQE_BATCH, wait_ms);
  if (sleep) {
    atomic_store_explicit(&l->sleeping, 0, memory_order_relaxed);
    atomic_fetch_sub_explicit(&core->sleepers, 1, memory_order_relaxed);
  }
  if (owner) {
    uint64_t now = ioc__now_ms();
    atomic_store_explicit(&l->busy_since, now ? now : 1, memory_order_relaxed);
  }
  /* Counted before drive_lock goes: a worker taking the loop over waits
   * for the entries reaped before it (loop_hand_over). */
  atomic_fetch_add_explicit(&l->runners, 1, memory_order_acq_rel);
  if (how == 1) {
    atomic_store_explicit(&l->driver, NULL, memory_order_relaxed);
    ioc__mutex_unlock(&l->drive_lock);
  }
  if (m < 0 && m != IOC_EINTR) *err = m;
  if (owner && m > 0 && ioc__core_nloops(core) > 1 && !atomic_load_explicit(&l->exclusive, memory_order_relaxed))
    call_for_help(core);
  ioc__loop_t *saved = tls_loop;
  tls_loop = l;
  int n = 0;
  for (int i = 0; i < m; i++) {
    tls_batch_left = m - i - 1;
    n += be->complete(core, l, &cqes[i]);
  }
  n += run_loop_queues(core, l);
  /* Every entry absorbed by the backend (an op re-submitted or parked):
   * push what that batched before waiting again. */
  if (be->flush) be->flush(core, l);
  atomic_fetch_sub_explicit(&l->runners, 1, memory_order_acq_rel);
  tls_loop = saved;
  return n;
}

/* The loops this call drives and how it holds them. */
typedef struct drive_set {
  int n;
  bool timers;                   /* this thread keeps the timers */
  bool pool;                     /* a pool worker: the loops are its own */
  ioc__loop_t *loops[IOC__MAX_LOOPS];
} drive_set_t;

/* An idle pool worker reaps, for once, the loops of workers that have been
 * busy for IOC__HELP_AFTER_MS or more (a long Lua handler): their sockets
 * keep being read and written meanwhile. *busy counts loops whose workers
 * are busy at all. Returns the number of ops completed. */
static int help_stuck_loops(ioc_core_t *core, int *busy) {
  int n = 0, count = ioc__core_nloops(core);
  uint64_t now = 0;
  for (int i = 0; i < count; i++) {
    ioc__loop_t *l = core->loops[i];
    if (atomic_load_explicit(&l->owner, memory_order_relaxed) == &tls_token ||
        atomic_load_explicit(&l->exclusive, memory_order_relaxed))
      continue;
    uint64_t since = atomic_load_explicit(&l->busy_since, memory_order_relaxed);
    if (!since) continue;
    (*busy)++;
    if (!now) now = ioc__now_ms();
    if (now - since < IOC__HELP_AFTER_MS) continue;
    int err = 0;
    bool got;
    n += loop_wait_run(core, l, 0, true, 0, &got, &err);
  }
  return n;
}

/* One round over the set: the queues, then a look (or a wait) at each loop.
 * Returns ops completed, or a negative code. */
static int drive(ioc_core_t *core, drive_set_t *set, uint64_t deadline) {
  int err = 0;
  for (;;) {
    if (atomic_load_explicit(&core->stopping, memory_order_acquire)) return IOC_ECANCELED;
    if (!set->pool && atomic_load_explicit(&core->pool_running, memory_order_acquire))
      return 0; /* a pool took the loops over: the caller looks again */
    int n = run_shared(core);
    if (set->timers) n += ioc__timers_run(core);
    bool reap = n > 0;
    for (int i = 0; i < set->n; i++) {
      ioc__loop_t *l = set->loops[i];
      if (!atomic_load_explicit(&l->pending, memory_order_acquire)) continue;
      /* Under drive_lock, so that a worker taking the loop over never
       * finds another thread starting its inbox's ops. */
      int how = loop_acquire(l, true, 0);
      if (!how) continue; /* its driver runs them */
      ioc__loop_t *saved = tls_loop;
      tls_loop = l;
      n += run_loop_queues(core, l);
      tls_loop = saved;
      loop_release(core, l, how);
    }
    if (reap) {
      /* Posts and timers can be due at every round (timers slower than
       * their interval, a handler that posts again): the loops are looked
       * at, without waiting, in the same round, or their sockets' completions
       * would wait until a round found nothing else to do. */
      for (int i = 0; i < set->n; i++) {
        bool got;
        n += loop_wait_run(core, set->loops[i], 0, true, 0, &got, &err);
        if (err) return err;
      }
    }
    if (n > 0) return n;

    int cap = set->n > 1 ? 10 : -1;
    if (set->n > 1) {
      /* Several loops: look at each without blocking, then block on the
       * first one at most 10 ms (a wake aimed at another one is seen then). */
      for (int i = 1; i < set->n; i++) {
        bool got;
        n += loop_wait_run(core, set->loops[i], 0, true, 0, &got, &err);
        if (err) return err;
      }
      if (n > 0) return n;
    }
    if (set->pool && ioc__core_nloops(core) > 1) {
      int busy = 0;
      n += help_stuck_loops(core, &busy);
      if (n > 0) return n;
      if (busy && (cap < 0 || cap > IOC__HELP_POLL_MS)) cap = IOC__HELP_POLL_MS;
    }
    ioc__loop_t *l = set->loops[0];
    if (atomic_load_explicit(&core->stopping, memory_order_acquire)) return IOC_ECANCELED;
    int wait_ms = wait_bound(core, deadline, set->timers, cap);
    if (atomic_load_explicit(&l->pending, memory_order_acquire) ||
        atomic_load_explicit(&core->ready_nonempty, memory_order_acquire))
      wait_ms = 0;
    /* Without a pool this is leader/followers: dispatchers queue for the
     * loop until their deadline. A pool worker's own loop is free at once
     * unless a helper reaps it right now. */
    bool got;
    n = loop_wait_run(core, l, wait_ms, false, set->pool ? UINT64_MAX : deadline, &got, &err);
    if (!got) return 0; /* time-out while another thread waited on it */
    if (err) return err;
    if (n > 0) return n;
    if (deadline != UINT64_MAX && ioc__now_ms() >= deadline) {
      /* One last look so a timer due exactly now is not reported as a time-out. */
      return run_shared(core) + (set->timers ? ioc__timers_run(core) : 0);
    }
  }
}

/* A thread that is not a worker while a pool runs: the loops are the
 * workers'. It runs posts and returns on the stop or its deadline. */
static int dispatch_foreign(ioc_core_t *core, uint64_t deadline) {
  for (;;) {
    if (atomic_load_explicit(&core->stopping, memory_order_acquire)) return IOC_ECANCELED;
    int n = run_shared(core);
    if (n > 0) return n;
    ioc__mutex_lock(&core->foreign_lock);
    bool wait = !atomic_load_explicit(&core->stopping, memory_order_acquire) &&
                !atomic_load_explicit(&core->ready_nonempty, memory_order_acquire) &&
                atomic_load_explicit(&core->pool_running, memory_order_acquire);
    bool timed_out = false;
    if (wait) {
      core->foreign_waiting++;
      int ms = ms_until(deadline);
      if (ms < 0)
        ioc__cond_wait(&core->foreign_cond, &core->foreign_lock);
      else
        timed_out = !ioc__cond_wait_ms(&core->foreign_cond, &core->foreign_lock, (uint64_t)ms);
      core->foreign_waiting--;
    }
    ioc__mutex_unlock(&core->foreign_lock);
    if (!atomic_load_explicit(&core->pool_running, memory_order_acquire)) return 0;
    if (timed_out || (deadline != UINT64_MAX && ioc__now_ms() >= deadline)) return run_shared(core);
  }
}

/* IOCP: one port, any number of waiters at once (the native model). */
static int dispatch_port(ioc_core_t *core, uint64_t deadline) {
  const ioc__backend_t *be = core->backend;
  ioc__loop_t *l = core->loops[0];
  for (;;) {
    if (atomic_load_explicit(&core->stopping, memory_order_acquire)) return IOC_ECANCELED;
    int n = run_shared(core) + run_loop_queues(core, l) + ioc__timers_run(core);
    /* after other work, one look at the port without waiting (see drive) */
    ioc__cqe_t cqes[IOC__CQE_BATCH];
    int m = be->wait(core, l, cqes, IOC__CQE_BATCH, n > 0 ? 0 : wait_bound(core, deadline, true, -1));
    if (m < 0 && m != IOC_EINTR) return m;
    for (int i = 0; i < m; i++) {
      tls_batch_left = m - i - 1;
      n += be->complete(core, l, &cqes[i]);
    }
    if (n > 0) return n;
    if (deadline != UINT64_MAX && ioc__now_ms() >= deadline)
      return run_shared(core) + run_loop_queues(core, l) + ioc__timers_run(core);
  }
}

/* Flushes what this thread batched on its own loops. */
static void flush_own(ioc_core_t *core, drive_set_t *set) {
  if (!core->backend->flush || !set->pool) return;
  for (int i = 0; i < set->n; i++) core->backend->flush(core, set->loops[i]);
}

int ioc_core_dispatch(ioc_core_t *core, int timeout_ms) {
  const ioc__backend_t *be = core->backend;
  uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : ioc__now_ms() + (uint64_t)timeout_ms;
  const ioc_core_t *saved = tls_dispatching;
  ioc__loop_t *saved_loop = tls_loop;
  tls_dispatching = core;
  int n;
  drive_set_t set;
  set.n = 0;
  set.pool = false;
  if (!be->single_waiter) {
    n = dispatch_port(core, deadline);
  } else {
    for (;;) {
      const ioc__worker_t *w = tls_worker && tls_worker->core == core ? tls_worker : NULL;
      if (!w && atomic_load_explicit(&core->pool_running, memory_order_acquire)) {
        n = dispatch_foreign(core, deadline);
        if (n != 0 || atomic_load_explicit(&core->pool_running, memory_order_acquire) ||
            (deadline != UINT64_MAX && ioc__now_ms() >= deadline))
          break;
        continue; /* the pool was joined meanwhile: drive the loops */
      }
      int count = ioc__core_nloops(core);
      set.n = 0;
      set.pool = w != NULL;
      set.timers = !w || w->index == 0;
      for (int i = 0; i < count; i++)
        if (!w || i % w->count == w->index) set.loops[set.n++] = core->loops[i];
      if (set.pool) tls_loop = set.loops[0];
      n = drive(core, &set, deadline);
      if (n != 0 || set.pool || (deadline != UINT64_MAX && ioc__now_ms() >= deadline) ||
          !atomic_load_explicit(&core->pool_running, memory_order_acquire))
        break;
    }
  }
  tls_batch_left = 0;
  /* Lua handlers may run long in the hook: another worker may reap this
   * one's loop meanwhile (help_stuck_loops). Called for before the flush,
   * so that a wake it sends from this worker's ring (io_uring: a MSG_RING)
   * goes out with it. Submissions the hook makes (the handlers' sends) go
   * out right after it. */
  bool help = core->batch_hook && set.pool && !saved && ioc__core_nloops(core) > 1 &&
              !atomic_load_explicit(&set.loops[0]->exclusive, memory_order_relaxed);
  if (help) call_for_help(core);
  flush_own(core, &set);
  if (core->batch_hook) {
    core->batch_hook(core->batch_hook_ud);
    flush_own(core, &set);
  }
  tls_loop = saved_loop;
  tls_dispatching = saved;
  return n;
}

/* ---- worker pool ------------------------------------------------------------------------ */

/* A worker takes loop l over (own) or gives it back when it exits:
 * backend->loop_own, with drive_lock held once no other thread still runs
 * entries it reaped from l (a dispatcher of the time before the pool). */
static void loop_hand_over(ioc_core_t *core, ioc__loop_t *l, bool own) {
  if (!core->backend->loop_own) return;
  int how = loop_acquire(l, false, UINT64_MAX);
  while (atomic_load_explicit(&l->runners, memory_order_acquire) > 0) ioc__thread_yield();
  tls_loop = l;
  int rc = core->backend->loop_own(core, l, own);
  tls_loop = NULL;
  if (rc >= 0) atomic_store_explicit(&l->exclusive, rc == 1, memory_order_relaxed);
  loop_release(core, l, how);
}

/* A worker owns its loops for its whole life: it submits to them directly,
 * and it is the one that waits on them and reaps them (another worker only
 * reaps one while its owner is stuck in a long batch). */
static void worker_main(void *arg) {
  ioc__worker_t *w = arg;
  ioc_core_t *core = w->core;
  int count = core->backend->single_waiter ? ioc__core_nloops(core) : 0;
  for (int i = w->index; i < count; i += w->count)
    atomic_store_explicit(&core->loops[i]->owner, (void *)&tls_token, memory_order_relaxed);
  tls_worker = w;
  for (int i = w->index; i < count; i += w->count) loop_hand_over(core, core->loops[i], true);
  /* No worker dispatches before every loop has been taken over: one that
   * did could submit to another worker's loop while it is still the old
   * ring, and a request belongs to the thread that submitted it (its
   * cancel by the hand-over would then wait for that thread, busy in a
   * handler). */
  atomic_fetch_sub_explicit(&core->handovers_left, 1, memory_order_acq_rel);
  while (atomic_load_explicit(&core->handovers_left, memory_order_acquire) > 0) ioc__thread_yield();
  for (;;) {
    int rc = ioc_core_dispatch(core, -1);
    if (rc == IOC_ECANCELED) break;
    if (rc < 0) ioc__log(core, "dispatch failed: %s", ioc_strerror(rc));
  }
  for (int i = w->index; i < count; i += w->count) {
    ioc__loop_t *l = core->loops[i];
    if (core->backend->flush) core->backend->flush(core, l);
    loop_hand_over(core, l, false);
    atomic_store_explicit(&l->busy_since, 0, memory_order_relaxed);
    atomic_store_explicit(&l->owner, NULL, memory_order_relaxed);
  }
  tls_worker = NULL;
}

int ioc_core_start(ioc_core_t *core, int nthreads) {
  if (nthreads <= 0) nthreads = ioc__cpu_count();
  if (core->nworkers > 0) return IOC_EBUSY;
  ioc__worker_t *workers = calloc((size_t)nthreads, sizeof *workers);
  if (!workers) return IOC_ENOMEM;
  if (core->backend->single_waiter) {
    /* A loop per worker (up to IOC__MAX_LOOPS; workers then share them). */
    int want = nthreads < IOC__MAX_LOOPS ? nthreads : IOC__MAX_LOOPS;
    for (int i = ioc__core_nloops(core); i < want; i++) {
      int rc = ioc__loop_make(core, i);
      if (rc < 0) {
        free(workers);
        return rc;
      }
    }
  }
  core->workers = workers;
  atomic_store(&core->handovers_left, nthreads);
  atomic_store(&core->stopping, 0);
  atomic_store_explicit(&core->pool_running, 1, memory_order_release);
  /* Threads dispatching without the pool leave the loops to it. */
  wake_all_loops(core);
  for (int i = 0; i < nthreads; i++) {
    workers[i].core = core;
    workers[i].index = i;
    workers[i].count = nthreads;
    int rc = ioc__thread_create(&workers[i].thread, worker_main, &workers[i]);
    if (rc < 0) {
      /* The loops are driven as workers index % count: start over with the
       * ones that did start, after they stop. */
      atomic_fetch_sub(&core->handovers_left, nthreads - i);
      core->nworkers = i;
      ioc_core_stop(core);
      ioc_core_join(core);
      return rc;
    }
  }
  core->nworkers = nthreads;
  return 0;
}

void ioc_core_stop(ioc_core_t *core) {
  atomic_store_explicit(&core->stopping, 1, memory_order_release);
  ioc__mutex_lock(&core->foreign_lock);
  ioc__cond_broadcast(&core->foreign_cond);
  ioc__mutex_unlock(&core->foreign_lock);
  if (core->backend->single_waiter) {
    wake_all_loops(core);
  } else {
    /* One port, many waiters: one wake each. */
    for (int i = 0; i < core->nworkers + 1; i++) core->backend->wake(core, core->loops[0]);
  }
}

void ioc_core_join(ioc_core_t *core) {
  ioc__worker_t *workers = core->workers;
  for (int i = 0; i < core->nworkers; i++) ioc__thread_join(workers[i].thread);
  free(workers);
  core->workers = NULL;
  core->nworkers = 0;
  atomic_store_explicit(&core->pool_running, 0, memory_order_release);
  atomic_store_explicit(&core->stopping, 0, memory_order_release);
  ioc__mutex_lock(&core->foreign_lock);
  ioc__cond_broadcast(&core->foreign_cond);
  ioc__mutex_unlock(&core->foreign_lock);
}

int ioc_core_threads(const ioc_core_t *core) { return core->nworkers; }
