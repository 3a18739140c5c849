/* require "iocore": the module table and the core object.
 * See lbind.h for the threading model. */
#include "lbind.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------ */

int lb_fail(lua_State *L, int code) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", ioc_err_name(code), ioc_strerror(code));
  lua_pushstring(L, ioc_err_name(code));
  return 3;
}

typedef struct lcore_ud {
  lcore *lc;
} lcore_ud;

lcore *lb_checkcore(lua_State *L, int idx) {
  lcore_ud *u = luaL_checkudata(L, idx, LCORE_MT);
  if (!u->lc || u->lc->closed) luaL_argerror(L, idx, "core is closed");
  return u->lc;
}

void lb_push_registry(lua_State *L, lcore *lc, const char *key) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
  lua_getfield(L, -1, key);
  lua_remove(L, -2);
}

/* ---- the event queue --------------------------------------------------------------- */

void lb_push_event(lcore *lc, lev *e) {
  e->next = NULL;
  ioc__mutex_lock(&lc->q_lock);
  if (lc->q_tail)
    lc->q_tail->next = e;
  else
    lc->q_head = e;
  lc->q_tail = e;
  atomic_fetch_add(&lc->q_len, 1);
  ioc__mutex_unlock(&lc->q_lock);
  /* Inside dispatch the batch hook drains once the thread's batch is done,
   * so a long handler never holds the rest of the batch back. */
  if (!ioc__core_in_dispatch(lc->core)) lb_drain(lc);
}

/* Runs every queued event; the caller holds lua_lock and lc->running. */
static void drain_locked(lcore *lc) {
  for (;;) {
    ioc__mutex_lock(&lc->q_lock);
    lev *e = lc->q_head;
    lc->q_head = lc->q_tail = NULL;
    atomic_store(&lc->q_len, 0);
    ioc__mutex_unlock(&lc->q_lock);
    if (!e) return;
    while (e) {
      lev *next = e->next;
      lc->stack_top = lua_gettop(lc->T);
      lc->processing = true;
      lb_process(lc, e);
      lc->processing = false;
      lb_free_event(e);
      e = next;
    }
  }
}

/* Takes the lock if it is free and drains; whoever holds it drains for us.
 * After unlocking, looks again: an event pushed while we held the lock found
 * it taken and left its event to us. */
void lb_drain(lcore *lc) {
  while (atomic_load(&lc->q_len) > 0) {
    if (pthread_mutex_trylock(&lc->lua_lock) != 0) return;
    bool ran = lc->running;
    if (ran) drain_locked(lc);
    pthread_mutex_unlock(&lc->lua_lock);
    if (!ran) return; /* the script owns the state: events wait for run() */
  }
}

/* The fast path for a receive: when nothing is queued and the lock is free,
 * run on_recv straight from the backend's buffer (one copy, into the Lua
 * string). Nothing of this session can be queued then: an empty queue seen
 * under the lock means every earlier event has been handled. */
bool lb_try_direct(lcore *lc, void (*fn)(lcore *, void *), void *arg) {
  /* Only for the last completion of the batch: running Lua earlier would
   * hold the batch's other completions back. */
  if (ioc__core_batch_left() > 0 || atomic_load(&lc->q_len) > 0) return false;
  if (pthread_mutex_trylock(&lc->lua_lock) != 0) return false;
  if (!lc->running || atomic_load(&lc->q_len) > 0) {
    pthread_mutex_unlock(&lc->lua_lock);
    return false;
  }
  lc->stack_top = lua_gettop(lc->T);
  lc->processing = true;
  fn(lc, arg);
  lc->processing = false;
  drain_locked(lc);
  pthread_mutex_unlock(&lc->lua_lock);
  lb_drain(lc);
  return true;
}

/* A posted no-op: the dispatch that runs it ends with the batch hook, which
 * drains what was queued before run(). */
static void kick(void *arg) { IOC__UNUSED(arg); }

static void batch_hook(void *ud) { lb_drain(ud); }

/* ---- calling handlers ----------------------------------------------------------------- */

static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static lcore *core_of_thread(lua_State *L) { return *(lcore **)lua_getextraspace(L); }

static void timeout_hook(lua_State *L, lua_Debug *ar) {
  IOC__UNUSED(ar);
  lcore *lc = core_of_thread(L);
  lua_sethook(L, NULL, 0, 0);
  uint64_t started = lc ? atomic_load(&lc->handler_started_ms) : 0;
  if (lc && started && ioc__now_ms() - started >= lc->handler_timeout_ms)
    luaL_error(L, "ETIMEDOUT: handler ran longer than %d ms", (int)lc->handler_timeout_ms);
}

static void report_error(lcore *lc, lua_State *T, ioc_session_t *s) {
  /* stack: message */
  lc->handler_errors++;
  lb_push_registry(T, lc, K_ONERROR);
  if (lua_isfunction(T, -1)) {
    lua_pushvalue(T, -2);
    if (s) {
      lb_push_registry(T, lc, K_SESSIONS);
      lua_rawgetp(T, -1, s);
      lua_remove(T, -2);
    } else {
      lua_pushnil(T);
    }
    if (lua_pcall(T, 2, 0, 0) != LUA_OK) {
      fprintf(stderr, "iocore: on_error failed: %s\n", lua_tostring(T, -1) ? lua_tostring(T, -1) : "?");
      fprintf(stderr, "iocore: handler error: %s\n", lua_tostring(T, -2) ? lua_tostring(T, -2) : "?");
      lua_pop(T, 1);
    }
  } else {
    lua_pop(T, 1);
    const char *m = lua_tostring(T, -1);
    fprintf(stderr, "iocore: handler error: %s\n", m ? m : "(no message)");
  }
  lua_pop(T, 1);
}

void lb_call(lcore *lc, int nargs, ioc_session_t *s) {
  lua_State *T = lc->T;
  int base = lua_gettop(T) - nargs; /* the function's slot */
  lua_pushcfunction(T, msgh);
  lua_insert(T, base);
  atomic_store(&lc->handler_started_ms, ioc__now_ms());
  int st = lua_pcall(T, nargs, 0, base);
  atomic_store(&lc->handler_started_ms, 0);
  if (atomic_exchange(&lc->hook_armed, 0)) lua_sethook(T, NULL, 0, 0);
  if (st != LUA_OK) {
    if (st == LUA_ERRMEM && !lua_isstring(T, -1)) {
      lua_pop(T, 1);
      lua_pushliteral(T, "not enough memory");
    } else if (st == LUA_ERRERR) {
      lua_pop(T, 1);
      lua_pushliteral(T, "error in error handling (the error object's __tostring failed?)");
    }
    report_error(lc, T, s);
    if (s) ioc__session_fail(s, IOC_ECONNABORTED);
  }
  lua_settop(T, base - 1);
}

/* ---- memory limit --------------------------------------------------------------------- */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  lcore *lc = ud;
  size_t old = ptr ? osize : 0;
  if (nsize > old && lc->memory_used + (nsize - old) > lc->memory_limit) return NULL;
  void *p = lc->prev_alloc(lc->prev_alloc_ud, ptr, osize, nsize);
  if (p || nsize == 0) lc->memory_used = lc->memory_used - old + nsize;
  return p;
}

/* ---- module functions ---------------------------------------------------------------------- */

static int l_backends(lua_State *L) {
  const char *names[8];
  int n = ioc_backends(names, 8);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static lua_Integer opt_int_field(lua_State *L, int t, const char *k, lua_Integer def,
                                 lua_Integer lo, lua_Integer hi, int arg, const char *fn) {
  lua_getfield(L, t, k);
  lua_Integer v = def;
  if (!lua_isnil(L, -1)) {
    int isnum;
    v = lua_tointegerx(L, -1, &isnum);
    if (!isnum)
      luaL_error(L, "bad argument #%d to '%s' (field '%s' must be an integer, got %s)", arg, fn, k,
                 luaL_typename(L, -1));
    if (v < lo || v > hi)
      luaL_error(L, "bad argument #%d to '%s' (field '%s' out of range %I..%I)", arg, fn, k, lo, hi);
  }
  lua_pop(L, 1);
  return v;
}

static int l_core_new(lua_State *L) {
  ioc_core_options_t o;
  memset(&o, 0, sizeof o);
  int threads = ioc__cpu_count();
  bool signals = true;
  lua_Integer handler_timeout = 10000, memory_limit = 0;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    threads = (int)opt_int_field(L, 1, "threads", threads, 1, 256, 1, "core");
    handler_timeout = opt_int_field(L, 1, "handler_timeout", 10000, 0, INT32_MAX, 1, "core");
    memory_limit = opt_int_field(L, 1, "memory_limit", 0, 0, LUA_MAXINTEGER, 1, "core");
    lua_getfield(L, 1, "backend");
    if (!lua_isnil(L, -1)) {
      const char *b = lua_tostring(L, -1);
      if (!b || lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "bad argument #1 to 'core' (field 'backend' must be a string)");
      if (!strcmp(b, "auto")) o.backend = IOC_BACKEND_AUTO;
      else if (!strcmp(b, "io_uring")) o.backend = IOC_BACKEND_IO_URING;
      else if (!strcmp(b, "epoll")) o.backend = IOC_BACKEND_EPOLL;
      else if (!strcmp(b, "iocp")) o.backend = IOC_BACKEND_IOCP;
      else
        return luaL_error(L, "bad argument #1 to 'core' (unknown backend '%s': auto, io_uring, epoll, iocp)", b);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "signals");
    if (!lua_isnil(L, -1)) signals = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (memory_limit) {
    void *ud;
    if (lua_getallocf(L, &ud) == limited_alloc)
      return luaL_error(L, "bad argument #1 to 'core' (memory_limit: another core already limits this Lua state)");
  }

  lcore *lc = calloc(1, sizeof *lc);
  if (!lc) return lb_fail(L, IOC_ENOMEM);
  int rc = ioc_core_create(&lc->core, &o);
  if (rc < 0) {
    free(lc);
    return lb_fail(L, rc);
  }
  lc->threads = threads;
  lc->signals = signals;
  lc->handler_timeout_ms = (uint64_t)handler_timeout;
  lc->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ioc__core_set_batch_hook(lc->core, batch_hook, lc);
  pthread_mutex_init(&lc->lua_lock, NULL);
  ioc__mutex_init(&lc->q_lock);

  lcore_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->lc = lc;
  luaL_setmetatable(L, LCORE_MT);
  /* the core's own tables, reachable from C through self_ref */
  lua_createtable(L, 0, 6);
  lua_newtable(L); lua_setfield(L, -2, K_SESSIONS);
  lua_newtable(L); lua_setfield(L, -2, K_LISTENERS);
  lua_newtable(L); lua_setfield(L, -2, K_TIMERS);
  lua_newtable(L); lua_setfield(L, -2, K_POSTS);
  lc->T = lua_newthread(L);
  *(lcore **)lua_getextraspace(lc->T) = lc;
  lua_setfield(L, -2, "thread");
  lua_pushvalue(L, -1);
  lc->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_setiuservalue(L, -2, 1);

  if (memory_limit) {
    lc->memory_limit = (size_t)memory_limit;
    lc->prev_alloc = lua_getallocf(L, &lc->prev_alloc_ud);
    lc->memory_used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    lua_setallocf(L, limited_alloc, lc);
  }
  return 1;
}

/* ---- core methods --------------------------------------------------------------------------- */

static int l_core_backend(lua_State *L) {
  lua_pushstring(L, ioc_core_backend(lb_checkcore(L, 1)->core));
  return 1;
}

static int l_core_threads(lua_State *L) {
  lua_pushinteger(L, lb_checkcore(L, 1)->threads);
  return 1;
}

static int l_core_stats(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  ioc_stats_t st;
  ioc_core_stats(lc->core, &st);
  lua_createtable(L, 0, 16);
#define F(name, v) (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))
  F("accepted", st.accepted);
  F("connected", st.connected);
  F("active", st.active);
  F("closed", st.closed);
  F("bytes_in", st.bytes_in);
  F("bytes_out", st.bytes_out);
  F("accepts_posted", st.accepts_posted);
  F("completions", st.completions);
  F("handler_errors", lc->handler_errors);
  F("rejected", st.rejected);
  F("threads", lc->threads);
  F("objects", st.objects);
  F("ops_inflight", st.ops_inflight);
  F("sockets", st.sockets);
  F("queued", atomic_load(&lc->q_len));
  F("memory", lc->memory_limit ? lc->memory_used : (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024);
  /* Values left on the handler thread's stack between events: constant (0)
   * unless some path leaks a slot per event. Inside a handler: the value when
   * the current event began. */
  F("stack", lc->processing ? lc->stack_top : lua_gettop(lc->T));
#undef F
  lua_pushstring(L, ioc_core_backend(lc->core));
  lua_setfield(L, -2, "backend");
  return 1;
}

static int l_core_on_error(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, K_ONERROR);
  lua_settop(L, 1);
  return 1;
}

static int l_core_post(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lev *e = calloc(1, sizeof *e);
  if (!e) return lb_fail(L, IOC_ENOMEM);
  e->type = LEV_POST;
  e->id = ++lc->next_post_id;
  lb_push_registry(L, lc, K_POSTS);
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, (lua_Integer)e->id);
  lua_pop(L, 1);
  /* Inside a handler we hold the lock: the drain loop runs it after us.
   * Outside run() it waits for run(). */
  ioc__mutex_lock(&lc->q_lock);
  if (lc->q_tail) lc->q_tail->next = e; else lc->q_head = e;
  lc->q_tail = e;
  atomic_fetch_add(&lc->q_len, 1);
  ioc__mutex_unlock(&lc->q_lock);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_core_stop(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  atomic_store(&lc->stop_requested, 1);
  uint64_t one = 1;
  if (write(lc->wake_fd, &one, sizeof one) < 0) { /* the flag is enough */ }
  lua_pushboolean(L, 1);
  return 1;
}

/* Closes the Lua side of listeners that close_all closed in C. Main thread,
 * state owned. */
static void forget_closed_listeners(lua_State *L, lcore *lc) {
  lb_push_registry(L, lc, K_LISTENERS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    llistener *ll = luaL_checkudata(L, -1, LLISTENER_MT);
    ll->closed = true;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
  lua_newtable(L);
  lua_setfield(L, -2, K_LISTENERS);
  lua_pop(L, 1);
}

static void watchdog(lcore *lc) {
  if (!lc->handler_timeout_ms) return;
  uint64_t started = atomic_load(&lc->handler_started_ms);
  if (started && ioc__now_ms() - started >= lc->handler_timeout_ms &&
      !atomic_exchange(&lc->hook_armed, 1)) {
    /* lua_sethook is documented as safe to call asynchronously (ldebug.c). */
    lua_sethook(lc->T, timeout_hook, LUA_MASKCOUNT | LUA_MASKCALL | LUA_MASKRET, 1);
  }
}

/* Waits up to ms for stop()/a signal; runs the watchdog meanwhile. Returns
 * true when a stop was asked for. */
static bool wait_events(lcore *lc, int sfd, int ms) {
  struct pollfd p[2] = {{lc->wake_fd, POLLIN, 0}, {sfd, POLLIN, 0}};
  int slice = ms;
  if (lc->handler_timeout_ms) {
    /* The watchdog's lag is up to one slice: 5% of handler_timeout keeps a
     * runaway's total under handler_timeout + 10% with room for the hook
     * to fire and the next handler to run (a tenth used up all of it). */
    int w = (int)(lc->handler_timeout_ms / 20);
    if (w < 5) w = 5;
    if (w > 200) w = 200;
    if (slice < 0 || slice > w) slice = w;
  }
  int n = poll(p, sfd >= 0 ? 2 : 1, slice);
  if (n > 0) {
    if (p[0].revents & POLLIN) {
      uint64_t v;
      if (read(lc->wake_fd, &v, sizeof v) < 0) { /* spurious */ }
    }
    if (sfd >= 0 && (p[1].revents & POLLIN)) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) atomic_store(&lc->stop_requested, 1);
    }
  }
  watchdog(lc);
  return atomic_load(&lc->stop_requested) != 0;
}

static bool settled(lcore *lc) {
  ioc_stats_t st;
  ioc_core_stats(lc->core, &st);
  return st.active == 0 && atomic_load(&lc->q_len) == 0;
}

/* Graceful stop while the workers still run handlers: no new accepts,
 * queued sends flushed, every session closed with its on_close. */
static void graceful_stop(lcore *lc, int sfd) {
  ioc_core_close_all(lc->core, 0);
  uint64_t deadline = ioc__now_ms() + IOC__LINGER_MS + 1000;
  while (!settled(lc) && ioc__now_ms() < deadline) wait_events(lc, sfd, 10);
  if (!settled(lc)) {
    ioc_core_close_all(lc->core, 1);
    deadline = ioc__now_ms() + 2000;
    while (!settled(lc) && ioc__now_ms() < deadline) wait_events(lc, sfd, 10);
  }
}

static int l_core_run(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  lua_Integer timeout = luaL_optinteger(L, 2, -1);
  if (lc->running) return luaL_error(L, "run: the core is already running (run() called from a handler?)");
  sigset_t set, old;
  int sfd = -1;
  if (lc->signals) {
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  }
  pthread_mutex_lock(&lc->lua_lock);
  lc->running = true;
  pthread_mutex_unlock(&lc->lua_lock);
  int rc = ioc_core_start(lc->core, lc->threads);
  if (rc < 0) {
    lc->running = false;
    if (sfd >= 0) close(sfd);
    if (lc->signals) pthread_sigmask(SIG_SETMASK, &old, NULL);
    return lb_fail(L, rc);
  }
  ioc_core_post(lc->core, kick, lc); /* events queued before run() */

  uint64_t deadline = timeout < 0 ? UINT64_MAX : ioc__now_ms() + (uint64_t)timeout;
  bool stopped = false;
  for (;;) {
    if (atomic_load(&lc->stop_requested)) {
      graceful_stop(lc, sfd);
      stopped = true;
      break;
    }
    uint64_t now = ioc__now_ms();
    if (now >= deadline) break;
    int ms = deadline == UINT64_MAX ? -1 : (int)((deadline - now) > 0x7fffffff ? 0x7fffffff : deadline - now);
    wait_events(lc, sfd, ms);
  }
  /* Take the state back: wait for the handler in progress, then the workers.
   * The watchdog keeps running meanwhile: blocking on the lock would leave a
   * runaway handler uninterrupted and run(timeout) would never return. */
  while (pthread_mutex_trylock(&lc->lua_lock) != 0) {
    poll(NULL, 0, 2);
    watchdog(lc);
  }
  lc->running = false;
  pthread_mutex_unlock(&lc->lua_lock);
  ioc_core_stop(lc->core);
  ioc_core_join(lc->core);
  if (sfd >= 0) close(sfd);
  if (lc->signals) pthread_sigmask(SIG_SETMASK, &old, NULL);
  atomic_store(&lc->stop_requested, 0);
  if (stopped) forget_closed_listeners(L, lc);
  lua_pushboolean(L, stopped);
  return 1;
}

/* ---- closing ----------------------------------------------------------------------------------- */

/* Frees the C core once nothing of it is alive. Objects of the core's own
 * (a listener's accept back-off, a lingering close's timer) may need a few
 * more completions first. Returns false, and frees nothing, if something
 * stays alive: better a leak than a free under live objects. */
static bool destroy_core(lcore *lc) {
  uint64_t deadline = ioc__now_ms() + 6000;
  int rc;
  while ((rc = ioc_core_destroy(lc->core)) == IOC_EBUSY && ioc__now_ms() < deadline)
    ioc_core_dispatch(lc->core, 10);
  if (rc < 0) {
    ioc_stats_t st;
    ioc_core_stats(lc->core, &st);
    fprintf(stderr, "iocore: the core cannot be freed (%s): %llu objects, %llu operations alive\n",
            ioc_err_name(rc), (unsigned long long)st.objects, (unsigned long long)st.ops_inflight);
    return false;
  }
  for (lev *e = lc->q_head, *next; e; e = next) { /* timer events that came meanwhile */
    next = e->next;
    lb_free_event(e);
  }
  if (lc->wake_fd >= 0) close(lc->wake_fd);
  pthread_mutex_destroy(&lc->lua_lock);
  ioc__mutex_destroy(&lc->q_lock);
  free(lc);
  return true;
}

void lb_object_gone(lcore *lc) {
  if (--lc->live_objects == 0 && lc->closed) destroy_core(lc);
}

/* Closing a core (core:close(), or its garbage collection, or the end of the
 * script) resets every session without running handlers, cancels timers,
 * and frees the C core once no Lua object still points into it. Returns
 * true when everything is freed now. */
static bool core_close(lua_State *L, lcore *lc) {
  if (lc->closed) return lc->live_objects == 0;
  lb_timers_cancel_all(L, lc);
  ioc_core_close_all(lc->core, 1);
  uint64_t deadline = ioc__now_ms() + 5000;
  ioc_stats_t st;
  for (;;) {
    ioc_core_stats(lc->core, &st);
    if ((st.ops_inflight == 0 && st.active == 0) || ioc__now_ms() > deadline) break;
    ioc_core_dispatch(lc->core, 10);
  }
  /* Drop what is queued (releasing the C references events hold). */
  lev *e = lc->q_head;
  lc->q_head = lc->q_tail = NULL;
  atomic_store(&lc->q_len, 0);
  while (e) {
    lev *next = e->next;
    if (e->s && e->s->lua_href > 0) { /* a session whose Lua object was never made */
      luaL_unref(L, LUA_REGISTRYINDEX, e->s->lua_href);
      e->s->lua_href = 0;
    }
    lb_free_event(e);
    e = next;
  }
  ioc__mutex_lock(&lc->core->objects_lock);
  for (ioc_session_t *s = lc->core->sessions; s; s = s->next) {
    if (s->lua_href > 0) {
      luaL_unref(L, LUA_REGISTRYINDEX, s->lua_href);
      s->lua_href = 0;
    }
  }
  ioc__mutex_unlock(&lc->core->objects_lock);
  /* Sessions still referenced from Lua stay valid and report ECLOSED. */
  lb_push_registry(L, lc, K_SESSIONS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lsession *ls = luaL_checkudata(L, -1, LSESSION_MT);
    ls->closed = true;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  forget_closed_listeners(L, lc);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
  lua_newtable(L);
  lua_setfield(L, -2, K_SESSIONS);
  lua_newtable(L);
  lua_setfield(L, -2, K_POSTS);
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, lc->self_ref);
  lc->self_ref = LUA_NOREF;
  if (lc->memory_limit) {
    lua_setallocf(L, lc->prev_alloc, lc->prev_alloc_ud);
    lc->memory_limit = 0;
  }
  lc->closed = true;
  return lc->live_objects == 0 && destroy_core(lc);
}

static int l_core_close(lua_State *L) {
  lcore_ud *u = luaL_checkudata(L, 1, LCORE_MT);
  if (!u->lc) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (u->lc->running) return luaL_error(L, "close: the core is running (call stop() instead)");
  bool freed = core_close(L, u->lc);
  u->lc = NULL;
  if (freed) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushliteral(L, "EBUSY: closed; the C core is freed when the last session/listener/timer object is collected");
  lua_pushliteral(L, "EBUSY");
  return 3;
}

static int l_core_gc(lua_State *L) {
  lcore_ud *u = luaL_checkudata(L, 1, LCORE_MT);
  if (u->lc && !u->lc->running) {
    core_close(L, u->lc);
    u->lc = NULL;
  }
  return 0;
}

static int l_core_tostring(lua_State *L) {
  lcore_ud *u = luaL_checkudata(L, 1, LCORE_MT);
  if (!u->lc)
    lua_pushliteral(L, "iocore.core (closed)");
  else
    lua_pushfstring(L, "iocore.core (%s, %d threads)", ioc_core_backend(u->lc->core), u->lc->threads);
  return 1;
}

static const luaL_Reg core_methods[] = {
    {"backend", l_core_backend}, {"threads", l_core_threads}, {"listen", lb_core_listen},
    {"connect", lb_core_connect}, {"after", lb_core_after}, {"every", lb_core_every},
    {"post", l_core_post}, {"run", l_core_run}, {"stop", l_core_stop}, {"stats", l_core_stats},
    {"on_error", l_core_on_error}, {"close", l_core_close}, {NULL, NULL}};

__attribute__((visibility("default"))) int luaopen_iocore(lua_State *L);
int luaopen_iocore(lua_State *L) {
  luaL_newmetatable(L, LCORE_MT);
  luaL_newlib(L, core_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_core_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_core_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, l_core_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  lb_open_session(L);
  lb_open_timer(L);

  lua_createtable(L, 0, 4);
  lua_pushliteral(L, IOC_VERSION_STRING);
  lua_setfield(L, -2, "version");
  lua_pushcfunction(L, l_backends);
  lua_setfield(L, -2, "backends");
  lua_pushcfunction(L, l_core_new);
  lua_setfield(L, -2, "core");
  return 1;
}
