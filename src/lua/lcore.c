/* require "iocore": the module table, the option reader every option table
 * goes through, and the core object (creation, methods, closing). run() and
 * stop() are in ldispatch.c. See lbind.h for the threading model. */
#include "lbind.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------ */

void lb_push_err(lua_State *L, int err) {
  if (err)
    lua_pushfstring(L, "%s: %s", ioc_err_name(err), ioc_strerror(err));
  else
    lua_pushnil(L);
}

int lb_fail(lua_State *L, int code) {
  lua_pushnil(L);
  lb_push_err(L, code);
  lua_pushstring(L, ioc_err_name(code));
  return 3;
}

typedef struct lcore_ud {
  lcore *lc; /* NULL once closed */
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

/* ---- the option reader ------------------------------------------------------------ */

int lb_opts_arg(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return 0;
  luaL_checktype(L, arg, LUA_TTABLE);
  return arg;
}

/* Pushes the field (nil without a table) and returns its type. */
static int opt_push(lua_State *L, int arg, const char *field) {
  if (!arg) {
    lua_pushnil(L);
    return LUA_TNIL;
  }
  return lua_getfield(L, arg, field);
}

/* The field on top of the stack has the wrong type. */
static int opt_type_error(lua_State *L, int arg, const char *field, const char *expected) {
  return luaL_argerror(L, arg,
                       lua_pushfstring(L, "field '%s' must be %s, got %s", field, expected, luaL_typename(L, -1)));
}

lua_Integer lb_opt_integer(lua_State *L, int arg, const char *field, lua_Integer def, lua_Integer lo,
                           lua_Integer hi) {
  if (opt_push(L, arg, field) == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  int isnum;
  lua_Integer v = lua_tointegerx(L, -1, &isnum);
  if (!isnum || lua_type(L, -1) != LUA_TNUMBER) opt_type_error(L, arg, field, "an integer");
  if (v < lo || v > hi) luaL_argerror(L, arg, lua_pushfstring(L, "field '%s' out of range %I..%I", field, lo, hi));
  lua_pop(L, 1);
  return v;
}

bool lb_opt_boolean(lua_State *L, int arg, const char *field, bool def) {
  int t = opt_push(L, arg, field);
  bool v = t == LUA_TNIL ? def : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

int lb_opt_enum(lua_State *L, int arg, const char *field, const char *const names[], int def) {
  int t = opt_push(L, arg, field);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return def;
  }
  if (t != LUA_TSTRING) opt_type_error(L, arg, field, "a string");
  const char *v = lua_tostring(L, -1);
  for (int i = 0; names[i]; i++) {
    if (!strcmp(names[i], v)) {
      lua_pop(L, 1);
      return i;
    }
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 0; names[i]; i++) {
    if (i) luaL_addstring(&b, ", ");
    luaL_addstring(&b, names[i]);
  }
  luaL_pushresult(&b);
  return luaL_argerror(L, arg, lua_pushfstring(L, "field '%s': unknown value '%s' (%s)", field, v, lua_tostring(L, -1)));
}

void lb_opt_function(lua_State *L, int arg, const char *field) {
  int t = opt_push(L, arg, field);
  if (t != LUA_TNIL && t != LUA_TFUNCTION) opt_type_error(L, arg, field, "a function");
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

static const char *const backend_names[] = {"auto", "io_uring", "epoll", "iocp", NULL};
static const ioc_backend_kind_t backend_kinds[] = {IOC_BACKEND_AUTO, IOC_BACKEND_IO_URING, IOC_BACKEND_EPOLL,
                                                   IOC_BACKEND_IOCP};

static void free_lcore(lcore *lc) {
  lp_mutex_free(lc->lua_lock);
  lp_mutex_free(lc->q_lock);
  lp_mutex_free(lc->co_lock);
  lp_waiter_free(lc->waiter);
  free(lc);
}

static int l_core_new(lua_State *L) {
  int o = lb_opts_arg(L, 1);
  ioc_core_options_t co;
  memset(&co, 0, sizeof co);
  int threads = (int)lb_opt_integer(L, o, "threads", ioc_cpu_count(), 1, 256);
  lua_Integer handler_timeout = lb_opt_integer(L, o, "handler_timeout", 10000, 0, INT32_MAX);
  lua_Integer memory_limit = lb_opt_integer(L, o, "memory_limit", 0, 0, LUA_MAXINTEGER);
  lua_Integer close_timeout = lb_opt_integer(L, o, "close_timeout", IOC_DEFAULT_CLOSE_TIMEOUT_MS, 1, INT32_MAX);
  co.backend = backend_kinds[lb_opt_enum(L, o, "backend", backend_names, 0)];
  bool signals = lb_opt_boolean(L, o, "signals", true);
  if (memory_limit) {
    void *ud;
    if (lua_getallocf(L, &ud) == limited_alloc)
      return luaL_argerror(L, 1, "memory_limit: another core already limits this Lua state");
  }

  lcore *lc = calloc(1, sizeof *lc);
  if (!lc) return lb_fail(L, IOC_ENOMEM);
  lc->lua_lock = lp_mutex_new();
  lc->q_lock = lp_mutex_new();
  lc->co_lock = lp_mutex_new();
  lc->waiter = lp_waiter_new();
  if (!lc->lua_lock || !lc->q_lock || !lc->co_lock || !lc->waiter) {
    free_lcore(lc);
    return lb_fail(L, IOC_ENOMEM);
  }
  int rc = ioc_core_create(&lc->core, &co);
  if (rc < 0) {
    free_lcore(lc);
    return lb_fail(L, rc);
  }
  lc->threads = threads;
  lc->signals = signals;
  /* A SIGTERM between here and run() (a supervisor stopping a server that
   * has just printed "listening") must stop it gracefully, not kill it. */
  if (signals) lp_waiter_hold_signals(lc->waiter);
  lc->handler_timeout_ms = (uint64_t)handler_timeout;
  lc->close_timeout_ms = (uint64_t)close_timeout;
  atomic_store(&lc->stop_grace_ms, 0); /* until stop(): a signal's stop has no grace */
  lc->self_ref = LUA_NOREF;
  ioc_core_set_batch_hook(lc->core, lb_batch_hook, lc);

  lcore_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
  u->lc = NULL; /* set once complete: __gc of a half-made core does nothing */
  luaL_setmetatable(L, LCORE_MT);
  /* the core's own tables, reachable from C through self_ref */
  lua_createtable(L, 0, 6);
  lua_newtable(L);
  lua_setfield(L, -2, K_SESSIONS);
  lua_newtable(L);
  lua_setfield(L, -2, K_LISTENERS);
  lua_newtable(L);
  lua_setfield(L, -2, K_TIMERS);
  lua_newtable(L);
  lua_setfield(L, -2, K_POSTS);
  lc->T = lua_newthread(L);
  lua_setfield(L, -2, "thread");
  lua_pushvalue(L, -1);
  lc->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_setiuservalue(L, -2, 1);
  u->lc = lc;

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
  lua_createtable(L, 0, 21);
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
  F("proxy_rejected", st.proxy_rejected);
  F("threads", lc->threads);
  F("objects", st.objects);
  F("ops_inflight", st.ops_inflight);
  F("sockets", st.sockets);
  F("buffers", st.buffers);
  F("buffer_bytes", st.buffer_bytes);
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

/* core:now(): the monotonic clock, ms. Works on a closed core too. */
static int l_core_now(lua_State *L) {
  luaL_checkudata(L, 1, LCORE_MT);
  lua_pushinteger(L, (lua_Integer)ioc_now_ms());
  return 1;
}

static int l_core_stopping(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  lua_pushboolean(L, atomic_load(&lc->stopping) != 0);
  return 1;
}

static int l_core_post(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lb_push_registry(L, lc, K_POSTS);
  lev *e = lb_new_event(LEV_POST, NULL, 0);
  if (!e) return lb_fail(L, IOC_ENOMEM);
  e->id = ++lc->next_post_id;
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, (lua_Integer)e->id); /* may raise (memory): e not queued yet */
  /* Inside a handler we hold the lock: the drain loop runs it after us.
   * Outside run() it waits for run(). */
  lb_queue_event(lc, e);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- closing ----------------------------------------------------------------------------------- */

/* Frees the C core once nothing of it is alive. Objects of the core's own
 * (a listener's accept back-off, a lingering close's timer) may need a few
 * more completions first. Returns false, and frees nothing, if something
 * stays alive: better a leak than a free under live objects. */
static bool destroy_core(lcore *lc) {
  uint64_t deadline = ioc_now_ms() + 6000;
  int rc;
  while ((rc = ioc_core_destroy(lc->core)) == IOC_EBUSY && ioc_now_ms() < deadline) ioc_core_dispatch(lc->core, 10);
  if (rc < 0) {
    ioc_stats_t st;
    ioc_core_stats(lc->core, &st);
    fprintf(stderr, "iocore: the core cannot be freed (%s): %llu objects, %llu operations alive\n",
            ioc_err_name(rc), (unsigned long long)st.objects, (unsigned long long)st.ops_inflight);
    return false;
  }
  lb_discard_events(NULL, lc); /* events that came meanwhile */
  free_lcore(lc);
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
  lb_listeners_close_all(L, lc);
  ioc_core_close_all(lc->core, 1);
  uint64_t deadline = ioc_now_ms() + 5000;
  ioc_stats_t st;
  for (;;) {
    ioc_core_stats(lc->core, &st);
    if ((st.ops_inflight == 0 && st.active == 0) || ioc_now_ms() > deadline) break;
    ioc_core_dispatch(lc->core, 10);
  }
  lb_discard_events(L, lc); /* releasing the C references events hold */
  lb_sessions_forget(L, lc);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
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
    {"connect", lb_core_connect}, {"after", lb_core_after},   {"every", lb_core_every},
    {"post", l_core_post},       {"run", lb_core_run},        {"stop", lb_core_stop},
    {"resolve", lb_core_resolve}, {"broadcast", lb_core_broadcast},
    {"stats", l_core_stats},     {"on_error", l_core_on_error}, {"close", l_core_close},
    {"now", l_core_now},         {"stopping", l_core_stopping},
    {NULL, NULL}};

static const luaL_Reg core_meta[] = {
    {"__gc", l_core_gc}, {"__close", l_core_gc}, {"__tostring", l_core_tostring}, {NULL, NULL}};

static const luaL_Reg module_functions[] = {{"backends", l_backends}, {"core", l_core_new},
                                                      {"buffer", lb_buffer_new}, {NULL, NULL}};

/* The numbers docs/lua-api.md states about the binding, for programs (and
 * the test that keeps the page true). */
static void push_limits(lua_State *L) {
  lua_createtable(L, 0, 8);
#define F(name, v) (lua_pushinteger(L, (lua_Integer)(v)), lua_setfield(L, -2, name))
  F("watchdog_divisor", LB_WATCHDOG_DIVISOR);
  F("watchdog_min_ms", LB_WATCHDOG_MIN_MS);
  F("watchdog_max_ms", LB_WATCHDOG_MAX_MS);
  F("max_accepts", IOC_MAX_ACCEPTS);
  F("default_max_pending", IOC_DEFAULT_MAX_PENDING);
  F("default_close_timeout_ms", IOC_DEFAULT_CLOSE_TIMEOUT_MS);
#undef F
}

IOC_API int luaopen_iocore(lua_State *L);
int luaopen_iocore(lua_State *L) {
  luaL_newmetatable(L, LCORE_MT);
  luaL_setfuncs(L, core_meta, 0);
  luaL_newlib(L, core_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lb_open_session(L);
  lb_open_listener(L);
  lb_open_timer(L);
  lb_open_buffer(L);
  lb_open_coroutine_guard(L);
  lb_open_child_guard(L);

  luaL_newlib(L, module_functions);
  lua_pushliteral(L, IOC_VERSION_STRING);
  lua_setfield(L, -2, "version");
  push_limits(L);
  lua_setfield(L, -2, "limits");
  lb_open_lua_part(L); /* lua/iocore/stream.lua, when installed */
  return 1;
}
