/* A core's life: creating and destroying it (its backend chosen, its first
 * loop made), the loops' allocation, the reference-counted objects, logging
 * and the statistics. Dispatch, the queues and the worker pool are in core.c.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void loop_free(ioc_core_t *core, ioc__loop_t *l) {
  if (l->bl) core->backend->loop_destroy(core, l);
  ioc__sendq_cache_free(l);
  ioc__mutex_destroy(&l->drive_lock);
  free(l);
}

/* Makes loop number index (the next one) and publishes it. */
int ioc__loop_make(ioc_core_t *core, int index) {
  ioc__loop_t *l = calloc(1, sizeof *l);
  if (!l) return IOC_ENOMEM;
  l->index = index;
  if (ioc__mutex_init(&l->drive_lock) != 0) {
    free(l);
    return IOC_ENOMEM;
  }
  ioc__queue_init(&l->ready);
  ioc__queue_init(&l->inbox);
  int rc = core->backend->loop_init(core, l);
  if (rc < 0) {
    l->bl = NULL;
    loop_free(core, l);
    return rc;
  }
  core->loops[index] = l;
  atomic_store_explicit(&core->nloops, index + 1, memory_order_release);
  return 0;
}

static void core_free(ioc_core_t *core) {
  for (int i = ioc__core_nloops(core) - 1; i >= 0; i--) loop_free(core, core->loops[i]);
  if (core->bd) core->backend->destroy(core);
  ioc__mutex_destroy(&core->ready_lock);
  ioc__mutex_destroy(&core->timer_lock);
  ioc__mutex_destroy(&core->objects_lock);
  ioc__mutex_destroy(&core->foreign_lock);
  ioc__cond_destroy(&core->foreign_cond);
  ioc__mutex_destroy(&core->timed_lock);
  free(core);
}

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
  ioc__mutex_init(&core->timer_lock);
  ioc__mutex_init(&core->objects_lock);
  ioc__mutex_init(&core->foreign_lock);
  ioc__cond_init(&core->foreign_cond);
  ioc__mutex_init(&core->timed_lock);
  rc = core->backend->init(core);
  if (rc < 0) core->bd = NULL;
  if (rc == 0) rc = ioc__loop_make(core, 0);
  if (rc < 0) {
    core_free(core);
    return rc;
  }
  *out = core;
  return 0;
}

static bool loops_pending(ioc_core_t *core) {
  for (int i = 0; i < ioc__core_nloops(core); i++)
    if (atomic_load_explicit(&core->loops[i]->pending, memory_order_acquire)) return true;
  return false;
}

int ioc_core_destroy(ioc_core_t *core) {
  if (!core) return 0;
  if (core->nworkers > 0) return IOC_EBUSY;
  /* Jobs already queued (posts nobody dispatched) would leak: run them. */
  while (atomic_load(&core->ready_nonempty) || loops_pending(core)) ioc_core_dispatch(core, 0);
  if (atomic_load(&core->st.objects) || atomic_load(&core->st.ops_inflight)) return IOC_EBUSY;
  ioc__faults_report(core);
  ioc__timers_destroy(core);
  core_free(core);
  return 0;
}

const char *ioc_core_backend(const ioc_core_t *core) { return core->backend->name; }

void ioc_core_stats(ioc_core_t *core, ioc_stats_t *out) {
#define LOAD(f) out->f = (uint64_t)atomic_load_explicit(&core->st.f, memory_order_relaxed)
  LOAD(accepted); LOAD(connected); LOAD(active); LOAD(closed); LOAD(bytes_in); LOAD(bytes_out);
  LOAD(accepts_posted); LOAD(completions); LOAD(rejected); LOAD(objects); LOAD(ops_inflight);
  LOAD(sockets); LOAD(proxy_rejected);
#undef LOAD
  ioc__buffer_stats(&out->buffers, &out->buffer_bytes);
}
