/* The completion port: backend selection, the ready queue, dispatch with
 * leader/followers, posted jobs and the worker pool.
 *
 * dispatch() in one paragraph: a thread first runs whatever is already known
 * to be complete (the ready queue: posts, jobs, results a backend got without
 * waiting) and any expired timers. Only when there is nothing to do does it
 * wait in the kernel. Backends whose wait must not be entered by two threads
 * at once (io_uring's completion ring, epoll with per-handle queues) get a
 * leader/followers scheme: one thread holds poll_lock and waits, the others
 * queue on the lock; the leader reaps one batch, hands the lock on, and only
 * then runs the batch, so reaping is serial but the work is parallel.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- objects -------------------------------------------------------------- */

void ioc__object_init(ioc__object_t *obj, ioc_core_t *core, const ioc__object_vtbl_t *vtbl) {
  obj->vtbl = vtbl;
  obj->core = core;
  atomic_init(&obj->refs, 1);
  IOC__STAT_ADD(core, objects, 1);
}

void ioc__object_unref(ioc__object_t *obj) {
  if (atomic_fetch_sub_explicit(&obj->refs, 1, memory_order_acq_rel) == 1) {
    ioc_core_t *core = obj->core;
    obj->vtbl->destroy(obj);
    IOC__STAT_SUB(core, objects, 1);
  }
}

/* ---- logging --------------------------------------------------------------- */

void ioc__log(ioc_core_t *core, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (core && core->log)
    core->log(core->log_ud, line);
  else
    fprintf(stderr, "iocore: %s\n", line);
}

/* ---- backends --------------------------------------------------------------- */

static const ioc__backend_t *const all_backends[] = {
#ifdef __linux__
    &ioc__backend_uring,
    &ioc__backend_epoll,
#endif
#ifdef _WIN32
    &ioc__backend_iocp,
#endif
};
#define NBACKENDS ((int)(sizeof all_backends / sizeof all_backends[0]))

const char *ioc_backend_name(ioc_backend_kind_t kind) {
  switch (kind) {
  case IOC_BACKEND_AUTO: return "auto";
  case IOC_BACKEND_IO_URING: return "io_uring";
  case IOC_BACKEND_EPOLL: return "epoll";
  case IOC_BACKEND_IOCP: return "iocp";
  }
  return "unknown";
}

int ioc_backends(const char **names, int max) {
  int n = 0;
  for (int i = 0; i < NBACKENDS && n < max; i++)
    if (all_backends[i]->probe() == 0) names[n++] = all_backends[i]->name;
  return n;
}

static const ioc__backend_t *backend_of_kind(ioc_backend_kind_t kind) {
  for (int i = 0; i < NBACKENDS; i++)
    if (all_backends[i]->kind == kind) return all_backends[i];
  return NULL;
}

/* AUTO honours IOCORE_BACKEND, then takes the first backend whose probe
 * passes, saying so in one log line when it had to skip a better one. */
static int choose_backend(ioc_core_t *core, ioc_backend_kind_t kind, const ioc__backend_t **out) {
  if (kind == IOC_BACKEND_AUTO) {
    const char *env = getenv("IOCORE_BACKEND");
    if (env && *env && strcmp(env, "auto") != 0) {
      kind = IOC_BACKEND_AUTO;
      for (int k = IOC_BACKEND_IO_URING; k <= IOC_BACKEND_IOCP; k++)
        if (strcmp(env, ioc_backend_name((ioc_backend_kind_t)k)) == 0) kind = (ioc_backend_kind_t)k;
      if (kind == IOC_BACKEND_AUTO) {
        ioc__log(core, "IOCORE_BACKEND=%s is not a backend (io_uring, epoll, iocp, auto)", env);
        return IOC_EINVAL;
      }
    }
  }
  if (kind != IOC_BACKEND_AUTO) {
    const ioc__backend_t *b = backend_of_kind(kind);
    if (!b) return IOC_ENOSYS;
    int rc = b->probe();
    if (rc < 0) return rc == IOC_ENOSYS ? rc : IOC_ENOSYS;
    *out = b;
    return 0;
  }
  int first_err = 0;
  const char *skipped = NULL;
  for (int i = 0; i < NBACKENDS; i++) {
    int rc = all_backends[i]->probe();
    if (rc == 0) {
      if (skipped)
        ioc__log(core, "%s unavailable (%s: %s), using %s", skipped, ioc_err_name(first_err),
                 ioc_strerror(first_err), all_backends[i]->name);
      *out = all_backends[i];
      return 0;
    }
    if (!skipped) {
      skipped = all_backends[i]->name;
      first_err = rc;
    }
  }
  return IOC_ENOSYS;
}

/* ---- create / destroy -------------------------------------------------------- */

int ioc_core_create(ioc_core_t **out, const ioc_core_options_t *opts) {
  ioc_core_options_t defaults;
  memset(&defaults, 0, sizeof defaults);
  if (!opts) opts = &defaults;
  if (!out) return IOC_EINVAL;
  ioc_core_t *core = calloc(1, sizeof *core);
  if (!core) return IOC_ENOMEM;
  core->log = opts->log;
  core->log_ud = opts->log_ud;
  core->queue_depth = opts->queue_depth ? opts->queue_depth : 4096;
  atomic_init(&core->next_id, 1);
  int rc = choose_backend(core, opts->backend, &core->backend);
  if (rc < 0) {
    free(core);
    return rc;
  }
  rc = ioc__faults_init(core);
  if (rc < 0) {
    free(core);
    return rc;
  }
  ioc__mutex_init(&core->ready_lock);
  ioc__mutex_init(&core->poll_lock);
  ioc__mutex_init(&core->timer_lock);
  ioc__mutex_init(&core->objects_lock);
  ioc__mutex_init(&core->timed_lock);
  rc = core->backend->init(core);
  if (rc < 0) {
    ioc__mutex_destroy(&core->timed_lock);
    ioc__mutex_destroy(&core->ready_lock);
    ioc__mutex_destroy(&core->poll_lock);
    ioc__mutex_destroy(&core->timer_lock);
    ioc__mutex_destroy(&core->objects_lock);
    free(core);
    return rc;
  }
  *out = core;
  return 0;
}

int ioc_core_destroy(ioc_core_t *core) {
  if (!core) return 0;
  if (core->nworkers > 0) return IOC_EBUSY;
  /* Jobs already queued (posts nobody dispatched) would leak: run them. */
  while (atomic_load(&core->ready_nonempty)) ioc_core_dispatch(core, 0);
  if (atomic_load(&core->st.objects) || atomic_load(&core->st.ops_inflight)) return IOC_EBUSY;
  ioc__faults_report(core);
  core->backend->destroy(core);
  ioc__timers_destroy(core);
  ioc__mutex_destroy(&core->ready_lock);
  ioc__mutex_destroy(&core->poll_lock);
  ioc__mutex_destroy(&core->timer_lock);
  ioc__mutex_destroy(&core->objects_lock);
  ioc__mutex_destroy(&core->timed_lock);
  free(core);
  return 0;
}

const char *ioc_core_backend(const ioc_core_t *core) { return core->backend->name; }

void ioc_core_stats(ioc_core_t *core, ioc_stats_t *out) {
#define LOAD(f) out->f = (uint64_t)atomic_load_explicit(&core->st.f, memory_order_relaxed)
  LOAD(accepted); LOAD(connected); LOAD(active); LOAD(closed); LOAD(bytes_in); LOAD(bytes_out);
  LOAD(accepts_posted); LOAD(completions); LOAD(rejected); LOAD(objects); LOAD(ops_inflight);
  LOAD(sockets); LOAD(proxy_rejected);
#undef LOAD
}

/* ---- operations ---------------------------------------------------------------- */

int ioc__op_submit(ioc_core_t *core, ioc__op_t *op) {
  /* Injected: the backend refuses the op for lack of memory, as the
   * contract allows ("< 0 = nothing started"); the owner's error path. */
  if (IOC__FAULT(core, IOC__FAULT_ENOMEM)) return IOC_ENOMEM;
  if (op->owner) ioc__object_ref(op->owner);
  IOC__STAT_ADD(core, ops_inflight, 1);
  int rc = core->backend->submit(core, op);
  if (rc < 0) {
    IOC__STAT_SUB(core, ops_inflight, 1);
    if (op->owner) ioc__object_unref(op->owner);
  }
  return rc;
}

void ioc__op_cancel(ioc_core_t *core, ioc__op_t *op) { core->backend->cancel(core, op); }

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

/* ---- the ready queue --------------------------------------------------------------- */

bool ioc__core_in_dispatch(const ioc_core_t *core) { return tls_dispatching == core; }

static void defer(ioc_core_t *core, ioc__op_t *op, uint8_t to_backend) {
  op->to_backend = to_backend;
  ioc__mutex_lock(&core->ready_lock);
  ioc__queue_push(&core->ready, &op->qn);
  atomic_store_explicit(&core->ready_nonempty, 1, memory_order_release);
  ioc__mutex_unlock(&core->ready_lock);
  /* A dispatching thread looks at the ready queue before it waits again, so
   * only foreign threads need to interrupt a waiter. */
  if (!ioc__core_in_dispatch(core)) core->backend->wake(core);
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

/* Runs everything queued at this moment; returns how many ran. */
static int run_ready(ioc_core_t *core) {
  if (!atomic_load_explicit(&core->ready_nonempty, memory_order_acquire)) return 0;
  ioc__mutex_lock(&core->ready_lock);
  ioc__queue_t batch = ioc__queue_take(&core->ready);
  atomic_store_explicit(&core->ready_nonempty, 0, memory_order_relaxed);
  ioc__mutex_unlock(&core->ready_lock);
  int n = 0;
  ioc__qnode_t *node;
  while ((node = ioc__queue_pop(&batch)) != NULL) {
    ioc__op_t *op = IOC__QUEUE_DATA(node, ioc__op_t, qn);
    tls_batch_left = !ioc__queue_empty(&batch);
    if (op->to_backend)
      core->backend->run_deferred(core, op);
    else
      ioc__op_complete(core, op);
    n++;
  }
  return n;
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

int ioc_core_dispatch(ioc_core_t *core, int timeout_ms) {
  const ioc__backend_t *be = core->backend;
  uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : ioc__now_ms() + (uint64_t)timeout_ms;
  const ioc_core_t *saved = tls_dispatching;
  tls_dispatching = core;
  int n;
  for (;;) {
    if (atomic_load_explicit(&core->stopping, memory_order_acquire)) {
      n = IOC_ECANCELED;
      break;
    }
    n = run_ready(core);
    n += ioc__timers_run(core);
    if (n > 0) break;

    if (be->single_waiter) {
      if (!ioc__mutex_lock_until(&core->poll_lock, deadline)) break; /* n == 0: time-out */
      /* While we queued for leadership, the previous leader may have left
       * work or a stop behind: look again before sleeping. */
      if (atomic_load_explicit(&core->ready_nonempty, memory_order_acquire) ||
          atomic_load_explicit(&core->stopping, memory_order_acquire)) {
        ioc__mutex_unlock(&core->poll_lock);
        continue;
      }
    }
    int wait_ms = ms_until(deadline);
    int timer_ms = ioc__timers_next_ms(core);
    if (timer_ms >= 0 && (wait_ms < 0 || timer_ms < wait_ms)) wait_ms = timer_ms;
    ioc__cqe_t cqes[IOC__CQE_BATCH];
    int m = be->wait(core, cqes, IOC__CQE_BATCH, wait_ms);
    if (be->single_waiter) ioc__mutex_unlock(&core->poll_lock);
    if (m < 0 && m != IOC_EINTR) {
      n = m;
      break;
    }
    for (int i = 0; i < m; i++) {
      tls_batch_left = m - i - 1;
      n += be->complete(core, &cqes[i]);
    }
    if (n > 0) break;
    /* Every entry was absorbed by the backend (an op re-submitted or
     * parked): nothing ran, but submissions may have been batched. Push
     * them before waiting again: as a follower this thread may sleep
     * behind a leader that waits for exactly those. */
    if (m > 0 && be->flush) be->flush(core);
    if (deadline != UINT64_MAX && ioc__now_ms() >= deadline) {
      /* One last look so a timer due exactly now is not reported as a time-out. */
      n = run_ready(core) + ioc__timers_run(core);
      break;
    }
  }
  tls_batch_left = 0;
  if (be->flush) be->flush(core);
  if (core->batch_hook) {
    /* Submissions the hook makes (Lua handlers' sends) go out now: this
     * thread may next queue as a follower behind a sleeping leader. */
    core->batch_hook(core->batch_hook_ud);
    if (be->flush) be->flush(core);
  }
  tls_dispatching = saved;
  return n;
}

/* ---- worker pool ------------------------------------------------------------------------ */

static void worker_main(void *arg) {
  ioc_core_t *core = arg;
  for (;;) {
    int rc = ioc_core_dispatch(core, -1);
    if (rc == IOC_ECANCELED) break;
    if (rc < 0) ioc__log(core, "dispatch failed: %s", ioc_strerror(rc));
  }
}

int ioc_core_start(ioc_core_t *core, int nthreads) {
  if (nthreads <= 0) nthreads = ioc__cpu_count();
  if (core->nworkers > 0) return IOC_EBUSY;
  core->workers = calloc((size_t)nthreads, sizeof *core->workers);
  if (!core->workers) return IOC_ENOMEM;
  atomic_store(&core->stopping, 0);
  for (int i = 0; i < nthreads; i++) {
    int rc = ioc__thread_create(&core->workers[i], worker_main, core);
    if (rc < 0) {
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
  /* Single-waiter backends need one wake (the leader); followers see the flag
   * when they take the lock. Multi-waiter backends need one per waiter. */
  int wakes = core->backend->single_waiter ? 1 : core->nworkers + 1;
  for (int i = 0; i < wakes; i++) core->backend->wake(core);
}

void ioc_core_join(ioc_core_t *core) {
  for (int i = 0; i < core->nworkers; i++) ioc__thread_join(core->workers[i]);
  free(core->workers);
  core->workers = NULL;
  core->nworkers = 0;
  atomic_store_explicit(&core->stopping, 0, memory_order_release);
}

int ioc_core_threads(const ioc_core_t *core) { return core->nworkers; }
