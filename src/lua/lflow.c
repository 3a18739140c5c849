/* Reading flow and the other per-session controls: s:pause() / s:resume(),
 * holding what cannot be delivered yet, s:shutdown() and s:timeouts{}.
 *
 * Holding. A session object keeps, in order, the events it cannot deliver
 * now: receives while it is paused or has no on_recv handler, the peer's FIN
 * while paused, and everything of the session that arrives behind them (so
 * nothing overtakes). The C session is paused meanwhile (the script's
 * pause(), or the binding's own after about one read without a handler), so
 * the kernel, not the binding, keeps the rest. resume() and a new on_recv
 * hand the held events back to the drain, to run next, in order; each is
 * checked again as it runs. All of it under the Lua lock. */
#include "lbind.h"

#include <string.h>

bool lb_has_handler(lua_State *L, int idx, const char *name) {
  lb_push_handler(L, idx, name);
  bool f = lua_isfunction(L, -1);
  lua_pop(L, 1);
  return f;
}

bool lb_has_handler_in(lua_State *L, int htab, const char *name) {
  bool f = lua_getfield(L, htab, name) == LUA_TFUNCTION;
  lua_pop(L, 1);
  return f;
}

void lb_flow_set_hold_recv(ioc_session_t *s, bool no_handler) {
  if (s) atomic_store(&LB_SESS(s)->hold_recv, no_handler);
}

void lb_flow_sync(lsession *ls) {
  if (!ls->s || ls->closed) return;
  bool want = ls->paused || ls->hold_paused;
  /* a worker may have paused it (no on_recv): ask the C session */
  if (want == (ioc_session_paused(ls->s) != 0)) return;
  if (want)
    ioc_session_pause(ls->s);
  else
    ioc_session_resume(ls->s);
}

bool lb_flow_must_hold(lcore *lc, lsession *ls, int idx, int type) {
  if (lb_closed_by_script(ls->s)) return false; /* nothing is for the script any more */
  if (!lb_fifo_empty(&ls->held)) return true;
  if (atomic_load(&lc->stop_closing)) return false;
  if (type == LEV_RECV) return ls->paused || !lb_has_handler(lc->T, idx, "on_recv");
  if (type == LEV_EOF) return ls->paused;
  return false;
}

void lb_flow_hold(lsession *ls, int type, ioc_session_t *s, int err, const char *data, size_t len) {
  lev *h = lb_new_event(type, s, len);
  if (!h) {
    lb_session_fail(s, IOC_ENOMEM);
    return;
  }
  h->err = err;
  if (len) memcpy(h->data, data, len);
  lb_fifo_push(&ls->held, h);
}

void lb_flow_keep(lsession *ls, lev *e) {
  e->kept = 1;
  lb_fifo_push(&ls->held, e);
}

void lb_flow_release(lsession *ls) {
  if (lb_fifo_empty(&ls->held) || ls->paused) return;
  lb_fifo held;
  lb_fifo_take(&ls->held, &held);
  lb_requeue_first(ls->lc, held.head, held.tail);
}

void lb_flow_unhold(lsession *ls) {
  ls->paused = ls->hold_paused = false;
  lb_flow_release(ls);
}

void lb_flow_free(lsession *ls) {
  for (lev *e; (e = lb_fifo_pop(&ls->held)) != NULL;) lb_free_event(e);
}

void lb_process_stop_flush(lcore *lc) {
  lua_State *T = lc->T;
  lb_push_registry(T, lc, K_SESSIONS);
  lua_pushnil(T);
  while (lua_next(T, -2)) {
    lsession *ls = lua_touserdata(T, -1);
    ls->paused = ls->hold_paused = false;
    lb_flow_sync(ls);
    lb_flow_release(ls);
    lua_pop(T, 1);
  }
  lua_pop(T, 1);
}

/* ---- methods ------------------------------------------------------------------------------ */

static lsession *check_session(lua_State *L, int idx) { return lb_checksession(L, idx); }

/* The C session, or NULL once on_close ran (or the object was collected). */
static ioc_session_t *open_session(lsession *ls) { return ls->closed ? NULL : ls->s; }

/* s:shutdown(): queued data, then FIN; reading goes on until the peer's FIN. */
static int l_session_shutdown(lua_State *L) {
  ioc_session_t *s = open_session(check_session(L, 1));
  int rc = s ? ioc_session_shutdown(s) : IOC_ECLOSED;
  if (rc < 0) return lb_fail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_session_pause(lua_State *L) {
  lsession *ls = check_session(L, 1);
  if (!open_session(ls)) return lb_fail(L, IOC_ECLOSED);
  ls->paused = true;
  lb_flow_sync(ls);
  lua_settop(L, 1);
  return 1;
}

/* What was held is delivered first (from the drain, never inside this call),
 * then reading goes on. */
static int l_session_resume(lua_State *L) {
  lsession *ls = check_session(L, 1);
  if (!open_session(ls)) return lb_fail(L, IOC_ECLOSED);
  ls->paused = false;
  lb_flow_sync(ls);
  lb_flow_release(ls);
  lua_settop(L, 1);
  return 1;
}

/* s:timeouts{idle=, write=, connect=, read=}: each given key (ms, 0 = off)
 * replaces that time-out; every value is checked before any is applied. */
static int l_session_timeouts(lua_State *L) {
  lsession *ls = check_session(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  static const char *const keys[] = {"idle", "write", "connect", "read"};
  static const ioc_timeout_t kinds[] = {IOC_TIMEOUT_IDLE, IOC_TIMEOUT_WRITE, IOC_TIMEOUT_CONNECT};
  lua_Integer v[4];
  for (int i = 0; i < 4; i++) v[i] = lb_opt_integer(L, 2, keys[i], -1, 0, INT32_MAX);
  ioc_session_t *s = open_session(ls);
  if (!s) return lb_fail(L, IOC_ECLOSED);
  for (int i = 0; i < 3; i++) {
    if (v[i] < 0) continue;
    int rc = ioc_session_set_timeout(s, kinds[i], (uint64_t)v[i]);
    /* a connect time-out means nothing once connected: not an error */
    if (rc < 0 && !(i == 2 && rc == IOC_ECLOSED && !ioc_session_closed(s))) return lb_fail(L, rc);
  }
  if (v[3] >= 0) ls->read_timeout_ms = (uint64_t)v[3];
  lua_settop(L, 1);
  return 1;
}

const luaL_Reg lb_flow_methods[] = {{"shutdown", l_session_shutdown}, {"pause", l_session_pause},
                                    {"resume", l_session_resume},     {"timeouts", l_session_timeouts},
                                    {NULL, NULL}};
