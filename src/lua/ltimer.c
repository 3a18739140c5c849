/* core:after(ms, fn), core:every(ms, fn), timer:cancel().
 *
 * Every firing is a one-shot C timer that only queues an event naming its
 * id (ids are never reused), so an event that arrives after cancel() finds
 * no timer and does nothing: no Lua object is touched from a worker. A
 * repeating timer arms its next C timer when the event of the previous one
 * is processed, just before its handler runs: however slow the handler, at
 * most one firing per timer is ever queued, and ticks it could not keep up
 * with are skipped (the next one keeps the timer's phase).
 *
 * Ownership: the userdata holds the reference on the C timer armed now
 * (NULL when none) and counts as a live object of the core until __gc. An
 * armed timer is anchored in K_TIMERS under the C timer's id. */
#include "lbind.h"

#include <stdio.h>
#include <string.h>

static void cb_timer(ioc_timer_t *t, void *ud) {
  lcore *lc = ud;
  lev *e = lb_new_event(LEV_TIMER, NULL, 0);
  if (!e) {
    fprintf(stderr, "iocore: out of memory queueing a timer event (the timer stops)\n");
    return;
  }
  e->id = ioc_timer_id(t);
  lb_push_event(lc, e);
}

static ltimer *check_timer(lua_State *L, int idx) { return luaL_checkudata(L, idx, LTIMER_MT); }

/* Arms the next C timer of lt, delay ms from now, and anchors the userdata
 * at index ud under its id in the table at index tab. */
static int arm(lua_State *L, ltimer *lt, uint64_t delay, int ud, int tab) {
  int rc = ioc_timer_start(lt->lc->core, delay, 0, cb_timer, lt->lc, &lt->t);
  if (rc < 0) {
    lt->t = NULL;
    return rc;
  }
  lt->id = ioc_timer_id(lt->t);
  lt->due = ioc_now_ms() + delay;
  lua_pushvalue(L, ud);
  lua_rawseti(L, tab, (lua_Integer)lt->id);
  return 0;
}

static int start(lua_State *L, bool repeat) {
  lcore *lc = lb_checkcore(L, 1);
  lua_Integer ms = luaL_checkinteger(L, 2);
  luaL_argcheck(L, ms >= (repeat ? 1 : 0) && ms <= INT32_MAX, 2,
                repeat ? "interval must be 1..2^31-1 ms" : "delay must be 0..2^31-1 ms");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  lb_push_registry(L, lc, K_TIMERS); /* 4 */
  ltimer *lt = lua_newuserdatauv(L, sizeof *lt, 1); /* 5 */
  memset(lt, 0, sizeof *lt);
  lt->repeat = repeat;
  lt->interval = (uint64_t)ms;
  luaL_setmetatable(L, LTIMER_MT);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 5, 1);
  lt->lc = lc;
  lc->live_objects++;
  int rc = arm(L, lt, (uint64_t)ms, 5, 4);
  if (rc < 0) return lb_fail(L, rc);
  return 1;
}

int lb_core_after(lua_State *L) { return start(L, false); }
int lb_core_every(lua_State *L) { return start(L, true); }

/* Forgets the timer: no callback after this. */
static void stop_timer(lua_State *L, ltimer *lt) {
  if (!lt->t) return;
  ioc_timer_cancel(lt->t);
  lt->t = NULL;
  if (!lt->lc->closed) {
    lb_push_registry(L, lt->lc, K_TIMERS);
    lua_pushnil(L);
    lua_rawseti(L, -2, (lua_Integer)lt->id);
    lua_pop(L, 1);
  }
}

/* Under the lock: the timer whose C timer `id` fired (if still armed). */
void lb_timer_fire(lcore *lc, uint64_t id) {
  lua_State *T = lc->T;
  int top = lua_gettop(T);
  lb_push_registry(T, lc, K_TIMERS); /* top+1 */
  if (lua_rawgeti(T, top + 1, (lua_Integer)id) == LUA_TNIL) { /* cancelled after it fired */
    lua_settop(T, top);
    return;
  }
  ltimer *lt = lua_touserdata(T, top + 2);
  lua_pushnil(T);
  lua_rawseti(T, top + 1, (lua_Integer)id);
  ioc_timer_release(lt->t);
  lt->t = NULL;
  if (lt->repeat) {
    uint64_t now = ioc_now_ms();
    uint64_t late = now > lt->due ? now - lt->due : 0;
    int rc = arm(T, lt, lt->interval - late % lt->interval, top + 2, top + 1);
    if (rc < 0) luaL_error(T, "%s: a repeating timer could not be re-armed: %s", ioc_err_name(rc), ioc_strerror(rc));
  }
  lua_getiuservalue(T, top + 2, 1);
  lua_pushvalue(T, top + 2);
  lb_call(lc, 1, NULL);
  lua_settop(T, top);
}

void lb_timers_cancel_all(lua_State *L, lcore *lc) {
  lb_push_registry(L, lc, K_TIMERS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    ltimer *lt = lua_touserdata(L, -1);
    if (lt->t) {
      ioc_timer_cancel(lt->t);
      lt->t = NULL;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
  lua_newtable(L);
  lua_setfield(L, -2, K_TIMERS);
  lua_pop(L, 1);
}

static int l_timer_cancel(lua_State *L) {
  stop_timer(L, check_timer(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

/* The one place a timer object lets go of its core. */
static int l_timer_gc(lua_State *L) {
  ltimer *lt = check_timer(L, 1);
  if (lt->lc) {
    stop_timer(L, lt);
    lb_object_gone(lt->lc);
    lt->lc = NULL;
  }
  return 0;
}

static int l_timer_tostring(lua_State *L) {
  ltimer *lt = check_timer(L, 1);
  lua_pushfstring(L, "iocore.timer %I (%s)", (lua_Integer)lt->id,
                  lt->t ? (lt->repeat ? "repeating" : "armed") : "done");
  return 1;
}

static const luaL_Reg timer_methods[] = {{"cancel", l_timer_cancel}, {NULL, NULL}};
static const luaL_Reg timer_meta[] = {
    {"__gc", l_timer_gc}, {"__close", l_timer_gc}, {"__tostring", l_timer_tostring}, {NULL, NULL}};

void lb_open_timer(lua_State *L) {
  luaL_newmetatable(L, LTIMER_MT);
  luaL_setfuncs(L, timer_meta, 0);
  luaL_newlib(L, timer_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
