/* How completions reach Lua: the event queue, the drain loop that runs
 * handlers under the Lua lock inside a protected call, the handler calls and
 * error reports, the handler_timeout watchdog and its hooks, and
 * core:run() / core:stop(). See lbind.h for the threading model. */
#include "lbind.h"

#include <stdio.h>
#include <stdlib.h>

/* Registry key: lightuserdata of the core whose drain loop is running Lua in
 * this state right now (false otherwise). The time-out hook of a coroutine
 * finds its core through it. */
static const char active_key = 'a';


/* ---- the event queue ------------------------------------------------------------- */

static int chain_len(const lev *first, const lev *last) {
  int n = 1;
  for (const lev *e = first; e != last; e = e->next) n++;
  return n;
}

/* Puts the chain first..last at the head of the queue (order kept). */
static void enqueue_front(lcore *lc, lev *first, lev *last) {
  int n = chain_len(first, last);
  lp_mutex_lock(lc->q_lock);
  lb_fifo_push_front(&lc->queue, first, last);
  lc->queue_n += n;
  atomic_fetch_add(&lc->q_len, n);
  lp_mutex_unlock(lc->q_lock);
}

void lb_queue_event(lcore *lc, lev *e) {
  lp_mutex_lock(lc->q_lock);
  if (e->type == LEV_TIMER) {
    lb_fifo_push(&lc->timers, e);
    atomic_fetch_add(&lc->timers_n, 1);
  } else {
    lb_fifo_push(&lc->queue, e);
    lc->queue_n++;
  }
  atomic_fetch_add(&lc->q_len, 1);
  lp_mutex_unlock(lc->q_lock);
}

void lb_requeue_first(lcore *lc, lev *first, lev *last) {
  if (lc->processing) {
    /* from a handler: next in the batch, before the later events it holds */
    lb_fifo_push_front(&lc->batch, first, last);
    return;
  }
  enqueue_front(lc, first, last);
}

void lb_push_event(lcore *lc, lev *e) {
  lb_queue_event(lc, e);
  /* Inside dispatch the batch hook drains once the thread's batch is done,
   * so a long handler never holds the rest of the batch back. */
  if (!ioc_core_in_dispatch(lc->core)) lb_drain(lc);
}

/* Moves everything queued into the (empty) batch; false if nothing was. */
static bool take_all(lcore *lc) {
  lp_mutex_lock(lc->q_lock);
  lb_fifo_take(&lc->queue, &lc->batch);
  atomic_fetch_sub(&lc->q_len, lc->queue_n);
  lc->queue_n = 0;
  lp_mutex_unlock(lc->q_lock);
  return !lb_fifo_empty(&lc->batch);
}

/* The timer event due next, or NULL. */
static lev *take_timer(lcore *lc) {
  if (!atomic_load(&lc->timers_n)) return NULL; /* one queued after this look is drained next (lb_drain) */
  lp_mutex_lock(lc->q_lock);
  lev *e = lb_fifo_pop(&lc->timers);
  if (e) {
    atomic_fetch_sub(&lc->timers_n, 1);
    atomic_fetch_sub(&lc->q_len, 1);
  }
  lp_mutex_unlock(lc->q_lock);
  return e;
}

static bool timers_waiting(lcore *lc) { return atomic_load(&lc->timers_n) > 0; }

/* Events drained but not run (run()'s thread wants the lock) go back to the
 * head of the queue, ahead of anything queued since: order is kept. */
static void put_back_batch(lcore *lc) {
  if (lb_fifo_empty(&lc->batch)) return;
  lb_fifo b;
  lb_fifo_take(&lc->batch, &b);
  enqueue_front(lc, b.head, b.tail);
}

/* Drops every queued event without running it (core close, main thread). */
void lb_discard_events(lua_State *L, lcore *lc) {
  lp_mutex_lock(lc->q_lock);
  lb_fifo all, timers;
  lb_fifo_take(&lc->queue, &all);
  lb_fifo_take(&lc->timers, &timers);
  lc->queue_n = 0;
  atomic_store(&lc->timers_n, 0);
  atomic_store(&lc->q_len, 0);
  lp_mutex_unlock(lc->q_lock);
  for (lev *e; (e = lb_fifo_pop(&all)) != NULL || (e = lb_fifo_pop(&timers)) != NULL;) {
    if (L) lb_event_forget(L, e);
    lb_free_event(e);
  }
}

/* ---- the drain loop ------------------------------------------------------------------ */

static void set_active(lua_State *T, lcore *lc) {
  if (lc)
    lua_pushlightuserdata(T, lc);
  else
    lua_pushboolean(T, 0);
  lua_rawsetp(T, LUA_REGISTRYINDEX, &active_key);
}

/* The body of one protected drain: the direct receive if there is one, then
 * the batch, then whatever was queued meanwhile, then ONE timer event, then
 * the session events queued meanwhile; it ends when they are all done (or
 * run()'s thread wants the lock). Timer events left are run by the next
 * drain, after the worker has looked at its sockets (lb_drain). So timers,
 * however many and however slow, never hold a session's event back by more
 * than one timer handler. lc->cur / cur_session say what is in progress
 * should an error escape a handler's own protection. */
static int drain_protected(lua_State *T) {
  lcore *lc = lua_touserdata(T, 1);
  lua_settop(T, 0);
  set_active(T, lc);
  if (lc->direct) {
    lc->cur_session = lc->direct->s;
    lc->stack_top = 0;
    lc->processing = true;
    lb_process_direct(lc, lc->direct);
    lc->processing = false;
    lc->direct = NULL;
    lc->cur_session = NULL;
  }
  bool timer_ran = false;
  for (;;) {
    if (atomic_load(&lc->want_lock)) break;
    lev *e;
    if (!lb_fifo_empty(&lc->batch) || take_all(lc))
      e = lb_fifo_pop(&lc->batch);
    else if (!timer_ran && (e = take_timer(lc)) != NULL)
      timer_ran = true;
    else
      break;
    lc->cur = e;
    lc->cur_session = e->s;
    lc->stack_top = lua_gettop(T);
    lc->processing = true;
    lb_process(lc, e);
    lc->processing = false;
    lc->cur = NULL;
    lc->cur_session = NULL;
    if (!e->kept) lb_free_event(e);
  }
  set_active(T, NULL);
  return 0;
}

/* Turns the error on top of T (status st) into a message string. */
static void normalize_error(lua_State *T, int st) {
  if (st == LUA_ERRMEM && !lua_isstring(T, -1)) {
    lua_pop(T, 1);
    lua_pushliteral(T, "not enough memory");
  } else if (st == LUA_ERRERR) {
    lua_pop(T, 1);
    lua_pushliteral(T, "error in error handling (the error object's __tostring failed?)");
  }
}

/* Runs the queue under the lock (held, with lc->running). An error that
 * escaped the handlers' own protection ends the event in progress: it is
 * reported, its session aborted, and the loop goes on with the next one. */
static void drain_locked(lcore *lc) {
  lua_State *T = lc->T;
  for (;;) {
    lua_pushcfunction(T, drain_protected);
    lua_pushlightuserdata(T, lc);
    int st = lua_pcall(T, 1, 0, 0);
    if (st == LUA_OK) break;
    lev *e = lc->cur;
    ioc_session_t *s = lc->cur_session;
    lc->cur = NULL;
    lc->cur_session = NULL;
    lc->direct = NULL;
    lc->processing = false;
    normalize_error(T, st);
    lb_report(lc, s);
    if (e && e->type == LEV_CLOSE)
      lb_close_done(T, lc, s);
    else if (s)
      lb_session_fail(s, st == LUA_ERRMEM ? IOC_ENOMEM : IOC_ECONNABORTED);
    if (e && !e->kept) lb_free_event(e);
    lua_settop(T, 0);
  }
  put_back_batch(lc);
}

/* A posted no-op: the dispatch that runs it looks at its loops and ends
 * with the batch hook, which drains what was queued. */
static void kick(void *arg) { LB_UNUSED(arg); }

static void kick_after_yield(void *arg) {
  lcore *lc = arg;
  atomic_store(&lc->kick_posted, 0);
}

/* Takes the lock if it is free and drains; whoever holds it drains for us.
 * After unlocking, looks again: an event pushed while we held the lock found
 * it taken and left its event to us. A drain that left timer events (it
 * runs one) gives the thread back to its loop with a posted kick: that
 * dispatch round looks at the sockets (queueing what arrived meanwhile,
 * which runs first), then drains again. */
void lb_drain(lcore *lc) {
  while (atomic_load(&lc->q_len) > 0 && !atomic_load(&lc->want_lock)) {
    if (!lp_mutex_trylock(lc->lua_lock)) return;
    bool ran = lc->running;
    if (ran) drain_locked(lc);
    bool yield = ran && !atomic_load(&lc->want_lock) && timers_waiting(lc);
    lp_mutex_unlock(lc->lua_lock);
    if (!ran) return; /* the script owns the state: events wait for run() */
    if (yield) {
      if (atomic_exchange(&lc->kick_posted, 1)) return; /* one is on its way */
      if (ioc_core_post(lc->core, kick_after_yield, lc) == 0) return;
      atomic_store(&lc->kick_posted, 0); /* no memory for it: drain on */
    }
  }
}

void lb_batch_hook(void *ud) { lb_drain(ud); }

/* The fast path for a receive: when nothing is queued and the lock is free,
 * run on_recv straight from the backend's buffer (one copy, into the Lua
 * string). Nothing of this session can be queued then: an empty queue seen
 * under the lock means every earlier event has been handled. */
bool lb_try_direct(lcore *lc, lb_direct *d) {
  /* Only for the last completion of the batch: running Lua earlier would
   * hold the batch's other completions back. */
  if (ioc_core_batch_left() > 0 || atomic_load(&lc->q_len) > 0 || atomic_load(&lc->want_lock)) return false;
  if (!lp_mutex_trylock(lc->lua_lock)) return false;
  if (!lc->running || atomic_load(&lc->q_len) > 0) {
    lp_mutex_unlock(lc->lua_lock);
    return false;
  }
  lc->direct = d;
  drain_locked(lc);
  lp_mutex_unlock(lc->lua_lock);
  lb_drain(lc);
  return true;
}

/* ---- calling handlers ----------------------------------------------------------------- */

int lb_msgh(lua_State *L) {
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

/* The start is read from the coarse clock (a handler call is often shorter
 * than reading the fine one); the watchdog allows for its lag. Only the
 * lock holder writes these, so plain stores ordered by release do (no
 * locked instruction per call): the watchdog reads seq, start, seq again,
 * and sees a start no older than its seq. */
static void handler_begin(lcore *lc) {
  atomic_store_explicit(&lc->handler_started_ms, lp_coarse_ms(), memory_order_relaxed);
  uint64_t seq = atomic_load_explicit(&lc->handler_seq, memory_order_relaxed);
  atomic_store_explicit(&lc->handler_seq, seq + 1, memory_order_release);
}

static void handler_end(lcore *lc) {
  atomic_store_explicit(&lc->handler_started_ms, 0, memory_order_release);
  /* A resume that raised past its guard left it set. Only the lock holder
   * writes running_co, so it may look without co_lock (the watchdog only
   * reads it, under co_lock). */
  if (lc->running_co) {
    lp_mutex_lock(lc->co_lock);
    lc->running_co = NULL;
    lp_mutex_unlock(lc->co_lock);
  }
  if (atomic_load_explicit(&lc->hook_armed, memory_order_relaxed) && atomic_exchange(&lc->hook_armed, 0))
    lua_sethook(lc->T, NULL, 0, 0);
}

static bool expired(lcore *lc) {
  return atomic_load(&lc->handler_started_ms) != 0 &&
         atomic_load(&lc->expired_seq) == atomic_load(&lc->handler_seq);
}

/* The time-out hook: set by the watchdog on T and on the coroutine running
 * when the handler expires, by a guarded resume on either side of an
 * expired handler's resume, and kept (every LB_CO_HOOK_COUNT instructions)
 * on coroutines made by coroutine.wrap, which resume without the guard.
 * Once the handler in progress has expired it raises at every instruction,
 * so a handler that catches the error cannot run on. */
static void timeout_hook(lua_State *L, lua_Debug *ar) {
  LB_UNUSED(ar);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &active_key);
  lcore *lc = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (lc && expired(lc)) {
    lua_sethook(L, timeout_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    luaL_error(L, "ETIMEDOUT: handler ran longer than %d ms", (int)lc->handler_timeout_ms);
  }
  if (lua_gethookcount(L) == LB_CO_HOOK_COUNT && (!lc || L != lc->T))
    lua_sethook(L, timeout_hook, LUA_MASKCOUNT, LB_CO_HOOK_COUNT); /* a wrap coroutine's */
  else
    lua_sethook(L, NULL, 0, 0); /* armed for a handler that has ended since */
}

void lb_hook_thread(lua_State *L, lua_State *co) {
  LB_UNUSED(L);
  if (lua_gethook(co) != timeout_hook) lua_sethook(co, timeout_hook, LUA_MASKCOUNT, LB_CO_HOOK_COUNT);
}

/* Reports the error message on top of T (popped): on_error(msg, session) or
 * stderr. Protected: failing to report (out of memory, a failing on_error)
 * writes to stderr instead. */
static int report_protected(lua_State *T) {
  lcore *lc = lua_touserdata(T, 1);
  ioc_session_t *s = lua_touserdata(T, 3);
  lb_push_registry(T, lc, K_ONERROR);
  if (!lua_isfunction(T, -1)) {
    const char *m = lua_tostring(T, 2);
    fprintf(stderr, "iocore: handler error: %s\n", m ? m : "(no message)");
    return 0;
  }
  lua_pushvalue(T, 2);
  if (s)
    lb_push_session(T, lc, s);
  else
    lua_pushnil(T);
  handler_begin(lc); /* on_error is a handler too: the time-out applies */
  int st = lua_pcall(T, 2, 0, 0);
  handler_end(lc);
  if (st != LUA_OK) {
    const char *e = lua_tostring(T, -1), *m = lua_tostring(T, 2);
    fprintf(stderr, "iocore: on_error failed: %s\n", e ? e : "?");
    fprintf(stderr, "iocore: handler error: %s\n", m ? m : "?");
  }
  return 0;
}

void lb_report(lcore *lc, ioc_session_t *s) {
  lua_State *T = lc->T;
  lc->handler_errors++;
  lua_pushcfunction(T, report_protected); /* msg f */
  lua_pushlightuserdata(T, lc);
  lua_pushvalue(T, -3);                   /* msg f lc msg */
  lua_pushlightuserdata(T, s);            /* msg f lc msg s */
  if (lua_pcall(T, 3, 0, 0) != LUA_OK) {
    const char *e = lua_tostring(T, -1), *m = lua_tostring(T, -2);
    fprintf(stderr, "iocore: handler error: %s\n", m ? m : "(no message)");
    fprintf(stderr, "iocore: (on_error not called: %s)\n", e ? e : "?");
    lua_pop(T, 1);
  }
  lua_pop(T, 1);
}

void lb_call_at(lcore *lc, int nargs, ioc_session_t *s, int msgh) {
  lua_State *T = lc->T;
  int fn = lua_gettop(T) - nargs; /* the function's slot */
  handler_begin(lc);
  int st = lua_pcall(T, nargs, 0, msgh);
  handler_end(lc);
  if (st != LUA_OK) {
    normalize_error(T, st);
    lb_report(lc, s);
    if (s) lb_session_fail(s, IOC_ECONNABORTED);
  }
  lua_settop(T, fn - 1);
}

void lb_call(lcore *lc, int nargs, ioc_session_t *s) {
  lua_State *T = lc->T;
  int base = lua_gettop(T) - nargs; /* the function's slot */
  lua_pushcfunction(T, lb_msgh);
  lua_insert(T, base);
  lb_call_at(lc, nargs, s, base);
  lua_settop(T, base - 1);
}

/* ---- coroutines resumed by handlers ----------------------------------------------------- */

int lb_resume_handler(lcore *lc, lua_State *co, int nargs, int *nres) {
  handler_begin(lc);
  lp_mutex_lock(lc->co_lock);
  lc->running_co = co;
  lp_mutex_unlock(lc->co_lock);
  int st = lua_resume(co, lc->T, nargs, nres);
  handler_end(lc); /* (lets go of running_co) */
  return st;
}

static void hook_now(lua_State *co) { lua_sethook(co, timeout_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1); }

/* coroutine.resume that tells the watchdog which coroutine a handler is
 * running, so a loop in it is interrupted like one in the handler — at no
 * cost per instruction until the handler expires. On the way back, a
 * resumer whose handler has expired meanwhile is hooked too (a loop around
 * the failed resume). Upvalue 1: the original resume. */
static int guarded_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co, 1, "coroutine"); /* checked here: the original would be '?' in messages */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &active_key);
  lcore *lc = lua_touserdata(L, -1);
  lua_pop(L, 1);
  lua_State *prev = NULL;
  if (lc) {
    lp_mutex_lock(lc->co_lock);
    prev = lc->running_co;
    lc->running_co = co;
    lp_mutex_unlock(lc->co_lock);
    if (expired(lc)) hook_now(co);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  if (lc) {
    lp_mutex_lock(lc->co_lock);
    lc->running_co = prev;
    lp_mutex_unlock(lc->co_lock);
    if (expired(lc)) hook_now(L);
  }
  return lua_gettop(L);
}

/* coroutine.wrap: the coroutine it makes carries the time-out hook (it is
 * resumed by the wrapper function, not through coroutine.resume). */
static int guarded_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  if (lua_getupvalue(L, -1, 1) && lua_type(L, -1) == LUA_TTHREAD) lb_hook_thread(L, lua_tothread(L, -1));
  lua_settop(L, 1);
  return 1;
}

/* Replaces coroutine.resume and coroutine.wrap (once per state) by the
 * guarded versions above. */
void lb_open_coroutine_guard(lua_State *L) {
  lua_pushboolean(L, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &active_key);
  if (lua_getglobal(L, "coroutine") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "resume");
  if (lua_tocfunction(L, -1) != guarded_resume && lua_iscfunction(L, -1)) {
    lua_pushcclosure(L, guarded_resume, 1);
    lua_setfield(L, -2, "resume");
  } else {
    lua_pop(L, 1);
  }
  lua_getfield(L, -1, "wrap");
  if (lua_tocfunction(L, -1) != guarded_wrap && lua_iscfunction(L, -1)) {
    lua_pushcclosure(L, guarded_wrap, 1);
    lua_setfield(L, -2, "wrap");
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* ---- the watchdog --------------------------------------------------------------------- */

/* Run by run()'s thread: marks the handler in progress expired once it has
 * run handler_timeout ms, and hooks T so that it raises. */
static void watchdog(lcore *lc) {
  if (!lc->handler_timeout_ms) return;
  uint64_t seq = atomic_load(&lc->handler_seq);
  uint64_t started = atomic_load(&lc->handler_started_ms);
  if (!started || seq != atomic_load(&lc->handler_seq)) return;
  /* started may be up to the coarse clock's lag early: never interrupt
   * before handler_timeout has really passed */
  if (ioc_now_ms() - started < lc->handler_timeout_ms + (uint64_t)lp_coarse_lag_ms()) return;
  atomic_store(&lc->expired_seq, seq);
  atomic_store(&lc->hook_armed, 1);
  /* lua_sethook is documented as safe to call asynchronously (ldebug.c).
   * Again every period while the handler runs on: the coroutine running
   * now may not be the one that was running last time. */
  hook_now(lc->T);
  lp_mutex_lock(lc->co_lock);
  if (lc->running_co) hook_now(lc->running_co);
  lp_mutex_unlock(lc->co_lock);
}

static int watchdog_period(lcore *lc) {
  int w = (int)(lc->handler_timeout_ms / LB_WATCHDOG_DIVISOR);
  if (w < LB_WATCHDOG_MIN_MS) w = LB_WATCHDOG_MIN_MS;
  if (w > LB_WATCHDOG_MAX_MS) w = LB_WATCHDOG_MAX_MS;
  return w;
}

/* Waits up to ms (-1: no limit) for stop()/a signal, running the watchdog
 * meanwhile. Returns true when a stop was asked for. */
static bool wait_events(lcore *lc, int ms) {
  int slice = ms;
  if (lc->handler_timeout_ms) {
    int w = watchdog_period(lc);
    if (slice < 0 || slice > w) slice = w;
  }
  if (lp_waiter_wait(lc->waiter, slice) & LP_SIGNAL) {
    /* A signal asks for a stop without grace, and cuts short the grace of
     * a stop under way (docs/lua-api.md, "Signals"). */
    if (!atomic_exchange(&lc->stop_requested, 1) || atomic_load(&lc->stopping))
      atomic_store(&lc->stop_grace_ms, 0);
  }
  watchdog(lc);
  return atomic_load(&lc->stop_requested) != 0;
}

/* ---- run and stop ---------------------------------------------------------------------- */

int lb_core_stop(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  lua_Integer grace = luaL_optinteger(L, 2, LB_STOP_GRACE_MS);
  luaL_argcheck(L, grace >= 0, 2, "grace_ms must be >= 0");
  /* a stop under way keeps the grace it started with */
  if (!atomic_load(&lc->stopping)) atomic_store(&lc->stop_grace_ms, (uint64_t)grace);
  atomic_store(&lc->stop_requested, 1);
  lp_waiter_wake(lc->waiter);
  lua_pushboolean(L, 1);
  return 1;
}

/* Every session closed, and its on_close run (its close event freed).
 * Not "the queue is empty": repeating timers can keep it from ever being. */
static bool settled(lcore *lc) {
  ioc_stats_t st;
  ioc_core_stats(lc->core, &st);
  return st.active == 0 && atomic_load(&lc->bound_sessions) == 0;
}

static void reset_timed_out(ioc_session_t *s, void *arg) {
  LB_UNUSED(arg);
  ioc_session_fail(s, IOC_ETIMEDOUT);
}

/* Graceful stop while the workers still run handlers: no new accepts at
 * once; the sessions get the grace to finish and close by themselves
 * (core:stopping() is true); then what is left is closed gracefully (what
 * the binding held for paused sessions is delivered first), and reset if it
 * has not closed close_timeout + 1 s later. */
static void graceful_stop(lcore *lc) {
  atomic_store(&lc->stopping, 1);
  ioc_core_close_listeners(lc->core);
  uint64_t start = ioc_now_ms();
  while (!settled(lc) && ioc_now_ms() < start + atomic_load(&lc->stop_grace_ms)) wait_events(lc, 10);
  if (settled(lc)) return;
  atomic_store(&lc->stop_closing, 1);
  lev *flush = calloc(1, sizeof *flush);
  if (flush) {
    flush->type = LEV_STOP_FLUSH;
    lb_queue_event(lc, flush);
    ioc_core_post(lc->core, kick, lc); /* a worker drains it */
  }
  ioc_core_close_all(lc->core, 0);
  uint64_t close_ms = lc->close_timeout_ms ? lc->close_timeout_ms : IOC_DEFAULT_CLOSE_TIMEOUT_MS;
  uint64_t deadline = ioc_now_ms() + close_ms + 1000;
  while (!settled(lc) && ioc_now_ms() < deadline) wait_events(lc, 10);
  if (!settled(lc)) {
    /* still flushing (a peer that reads, slowly): the rest of its data is
     * lost, and its on_close says so */
    ioc_core_foreach_session(lc->core, reset_timed_out, NULL);
    deadline = ioc_now_ms() + 2000;
    while (!settled(lc) && ioc_now_ms() < deadline) wait_events(lc, 10);
  }
}

/* Takes the state back from the workers: the drainer stops after the
 * handler in progress. The watchdog keeps running meanwhile: blocking on
 * the lock would leave a runaway handler uninterrupted. */
static void take_state_back(lcore *lc) {
  atomic_store(&lc->want_lock, 1);
  while (!lp_mutex_trylock(lc->lua_lock)) {
    lp_sleep_ms(1);
    watchdog(lc);
  }
  lc->running = false;
  atomic_store(&lc->want_lock, 0);
  lp_mutex_unlock(lc->lua_lock);
}

/* After a stop: listeners a handler opened during the stop are closed too,
 * and the workers dispatch until every closed listener has given its socket
 * back, so stats() is true as soon as run() returns. */
static void finish_stop(lua_State *L, lcore *lc) {
  lb_listeners_close_all(L, lc);
  uint64_t deadline = ioc_now_ms() + 2000;
  for (;;) {
    ioc_stats_t st;
    ioc_core_stats(lc->core, &st);
    if ((st.accepts_posted == 0 && st.sockets <= st.active) || ioc_now_ms() >= deadline) break;
    lp_sleep_ms(2);
  }
}

int lb_core_run(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  lua_Integer timeout = luaL_optinteger(L, 2, -1);
  if (lc->running) return luaL_error(L, "run: the core is already running (run() called from a handler?)");
  bool caught = lc->signals && lp_waiter_catch_signals(lc->waiter) == 0;
  lp_mutex_lock(lc->lua_lock);
  lc->running = true;
  lp_mutex_unlock(lc->lua_lock);
  int rc = ioc_core_start(lc->core, lc->threads);
  if (rc < 0) {
    lc->running = false;
    if (caught) lp_waiter_release_signals(lc->waiter);
    return lb_fail(L, rc);
  }
  ioc_core_post(lc->core, kick, lc); /* events queued before run() */

  uint64_t deadline = timeout < 0 ? UINT64_MAX : ioc_now_ms() + (uint64_t)timeout;
  bool stopped = false;
  for (;;) {
    if (atomic_load(&lc->stop_requested)) {
      graceful_stop(lc);
      stopped = true;
      break;
    }
    uint64_t now = ioc_now_ms();
    if (now >= deadline) break;
    int ms = deadline == UINT64_MAX ? -1 : (int)((deadline - now) > 0x7fffffff ? 0x7fffffff : deadline - now);
    wait_events(lc, ms);
  }
  take_state_back(lc);
  if (stopped) finish_stop(L, lc);
  ioc_core_stop(lc->core);
  ioc_core_join(lc->core);
  if (caught) lp_waiter_release_signals(lc->waiter);
  /* A stop asked for by a handler that ran after the loop ended (while the
   * state was being taken back) is not lost: the next run() performs it,
   * with the grace it was asked with. After a stop performed, the grace is
   * cleared: a signal's stop has none. */
  if (stopped) {
    atomic_store(&lc->stop_requested, 0);
    atomic_store(&lc->stop_grace_ms, 0);
  }
  atomic_store(&lc->stop_closing, 0);
  atomic_store(&lc->stopping, 0);
  lua_pushboolean(L, stopped);
  return 1;
}
