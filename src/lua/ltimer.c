/* core:after(ms, fn), core:every(ms, fn), timer:cancel().
 *
 * A firing C timer only queues an event naming the timer's id (ids are never
 * reused), so an event that arrives after cancel() finds no timer and does
 * nothing: no Lua object is touched from a worker. */
#include "lbind.h"

#include <stdlib.h>
#include <string.h>

static void cb_timer(ioc_timer_t *t, void *ud) {
  lcore *lc = ud;
  lev *e = calloc(1, sizeof *e);
  if (!e) {
    ioc__log(lc->core, "lua: out of memory queueing a timer event");
    return;
  }
  e->type = LEV_TIMER;
  e->id = ioc_timer_id(t);
  lb_push_event(lc, e);
}

static ltimer *check_timer(lua_State *L, int idx) { return luaL_checkudata(L, idx, LTIMER_MT); }

static int start(lua_State *L, bool repeat) {
  lcore *lc = lb_checkcore(L, 1);
  lua_Integer ms = luaL_checkinteger(L, 2);
  luaL_argcheck(L, ms >= (repeat ? 1 : 0) && ms <= INT32_MAX, 2,
                repeat ? "interval must be 1..2^31-1 ms" : "delay must be 0..2^31-1 ms");
  luaL_checktype(L, 3, LUA_TFUNCTION);
  ltimer *lt = lua_newuserdatauv(L, sizeof *lt, 1);
  memset(lt, 0, sizeof *lt);
  lt->lc = lc;
  lt->repeat = repeat;
  int rc = ioc_timer_start(lc->core, (uint64_t)ms, repeat ? (uint64_t)ms : 0, cb_timer, lc, &lt->t);
  if (rc < 0) {
    lt->t = NULL;
    return lb_fail(L, rc);
  }
  lt->id = ioc_timer_id(lt->t);
  lc->live_objects++;
  luaL_setmetatable(L, LTIMER_MT);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, -2, 1);
  lb_push_registry(L, lc, K_TIMERS);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, (lua_Integer)lt->id);
  lua_pop(L, 1);
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

void lb_timer_fire(lcore *lc, uint64_t id) {
  lua_State *T = lc->T;
  lb_push_registry(T, lc, K_TIMERS);
  lua_rawgeti(T, -1, (lua_Integer)id);
  lua_remove(T, -2);
  if (lua_isnil(T, -1)) { /* cancelled after it fired */
    lua_pop(T, 1);
    return;
  }
  ltimer *lt = lua_touserdata(T, -1);
  if (!lt->repeat) {
    /* A one-shot is done: release it before its handler, which may start
     * a new one. */
    ioc_timer_release(lt->t);
    lt->t = NULL;
    lb_push_registry(T, lc, K_TIMERS);
    lua_pushnil(T);
    lua_rawseti(T, -2, (lua_Integer)id);
    lua_pop(T, 1);
  }
  lua_getiuservalue(T, -1, 1);
  lua_insert(T, -2);
  lb_call(lc, 1, NULL);
}

void lb_timers_cancel_all(lua_State *L, lcore *lc) {
  lb_push_registry(L, lc, K_TIMERS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    ltimer *lt = luaL_checkudata(L, -1, LTIMER_MT);
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

void lb_open_timer(lua_State *L) {
  luaL_newmetatable(L, LTIMER_MT);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_timer_cancel);
  lua_setfield(L, -2, "cancel");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_timer_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_timer_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, l_timer_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
