/* Listener objects: core:listen(), the accept callback and the processing of
 * accept events, and the listener methods.
 *
 * Ownership. ioc_listen's reference (the "open" one) is ended by
 * ioc_listener_close, which l:close(), a stop, the core's close or the __gc
 * of a listener still open call. The userdata holds one more (a retain) from
 * its creation to its __gc, the only place that drops it, so address() and
 * port() work on a closed listener. An open listener's userdata is anchored
 * in the core's K_LISTENERS table. */
#include "lbind.h"

#include <stdlib.h>
#include <string.h>

static llistener *check_listener(lua_State *L, int idx) { return luaL_checkudata(L, idx, LLISTENER_MT); }

/* Worker thread, no Lua: the session is the binding's from here on. */
static void accept_with(ioc_listener_t *l, ioc_session_t *s, lcore *lc, const ioc_session_callbacks_t *cbs) {
  lev *e = lb_new_event(LEV_ACCEPT, s, 0);
  lb_sess *st = lb_sess_new(lc);
  if (!e || !st) {
    free(e);
    lb_sess_free(st);
    ioc_session_fail(s, IOC_ENOMEM); /* no callbacks set: the core ends it alone */
    return;
  }
  ioc_session_retain(s); /* the binding's, until the close event is freed */
  ioc_session_set_callbacks(s, cbs, st);
  ioc_listener_retain(l); /* the event's, until it is freed */
  e->l = l;
  lb_push_event(lc, e);
}

static void cb_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) { accept_with(l, s, ud, &lb_accepted_cbs); }

/* A listener with framing: its sessions' messages are gathered (lframing.c). */
static void cb_accept_framed(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  accept_with(l, s, ud, &lb_accepted_framed_cbs);
}

/* Under the lock: the session gets its Lua object and on_accept runs, or,
 * without on_accept, the object is put off until an event needs it. */
void lb_process_accept(lcore *lc, lev *e) {
  lua_State *T = lc->T;
  int top = lua_gettop(T);
  lb_push_registry(T, lc, K_LISTENERS);
  if (lua_rawgetp(T, -1, e->l) == LUA_TNIL) {
    /* Accepted while its listener was being closed: no handler to give it to. */
    lua_settop(T, top);
    ioc_session_abort(e->s);
    return;
  }
  lua_getiuservalue(T, -1, 1); /* top+3: the listener's handlers */
  /* without an on_recv, what arrives is held and reading stops (lflow.c) */
  lb_flow_set_hold_recv(e->s, !lb_has_handler_in(T, top + 3, "on_recv"));
  if (lua_getfield(T, -1, "on_accept") != LUA_TFUNCTION) {
    lua_pop(T, 1);
    lb_defer_session(T, e->s);
    lua_settop(T, top);
    return;
  }
  lb_anchor_session(T, lc, e->s, top + 3);
  lb_call(lc, 1, e->s); /* on_accept(session) */
  lua_settop(T, top);
}

int lb_core_listen(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  size_t alen;
  const char *addr = lb_check_address(L, 2, &alen);
  int o = lb_opts_arg(L, 3);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.backlog = (int)lb_opt_integer(L, o, "backlog", 511, 1, 65535);
  lo.accepts = (int)lb_opt_integer(L, o, "accepts", 16, 1, IOC_MAX_ACCEPTS);
  lo.max_connections = (uint64_t)lb_opt_integer(L, o, "max_connections", 0, 0, UINT32_MAX);
  lo.reuseport = lb_opt_boolean(L, o, "reuseport", false);
  lo.proxy_protocol = lb_opt_boolean(L, o, "proxy_protocol", false);
  uint64_t read_ms;
  lb_session_options(L, lc, o, &lo.session, &read_ms);
  lb_handlers_from_opts(L, o, 0); /* validated before anything is opened */
  lua_pushinteger(L, (lua_Integer)read_ms);
  lua_setfield(L, -2, "read_timeout"); /* kept for the stream style */
  int htab = lua_gettop(L);
  /* The object first: once the C listener is open nothing may fail. */
  llistener *ll = lua_newuserdatauv(L, sizeof *ll, 1);
  ll->l = NULL;
  ll->lc = lc;
  ll->closed = true;
  luaL_setmetatable(L, LLISTENER_MT);
  lua_pushvalue(L, htab);
  lua_setiuservalue(L, -2, 1);
  lb_push_registry(L, lc, K_LISTENERS);
  ioc_listener_t *l;
  int rc = ioc_listen(lc->core, addr, alen, &lo, lo.session.framing.kind ? cb_accept_framed : cb_accept, lc, &l);
  if (rc < 0) return lb_fail(L, rc);
  ioc_listener_retain(l); /* the userdata's, dropped by __gc */
  ll->l = l;
  ll->closed = false;
  lc->live_objects++;
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, l); /* anchored while open */
  lua_pop(L, 1);
  return 1;
}

static int l_listener_address(lua_State *L) {
  llistener *ll = check_listener(L, 1);
  if (!ll->l) return lb_fail(L, IOC_ECLOSED);
  char buf[IOC_ADDRSTRLEN];
  int n = ioc_addr_format(ioc_listener_address(ll->l), buf, sizeof buf);
  if (n < 0) return lb_fail(L, n);
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

static int l_listener_port(lua_State *L) {
  llistener *ll = check_listener(L, 1);
  if (!ll->l) return lb_fail(L, IOC_ECLOSED);
  lua_pushinteger(L, ioc_addr_port(ioc_listener_address(ll->l)));
  return 1;
}

static int l_listener_on_accept(lua_State *L) {
  check_listener(L, 1);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "on_accept");
  lua_settop(L, 1);
  return 1;
}

/* Closes the listener in C and un-anchors it (the core's table at index
 * `tab`, or 0 when the caller replaces the whole table). */
static void close_listener(lua_State *L, llistener *ll, int tab) {
  if (ll->closed) return;
  ll->closed = true;
  ioc_listener_close(ll->l);
  if (tab) {
    lua_pushnil(L);
    lua_rawsetp(L, tab, ll->l);
  }
}

static int l_listener_close(lua_State *L) {
  llistener *ll = check_listener(L, 1);
  if (ll->closed) return lb_fail(L, IOC_ECLOSED);
  lb_push_registry(L, ll->lc, K_LISTENERS);
  close_listener(L, ll, lua_gettop(L));
  lua_pushboolean(L, 1);
  return 1;
}

void lb_listeners_close_all(lua_State *L, lcore *lc) {
  lb_push_registry(L, lc, K_LISTENERS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    close_listener(L, lua_touserdata(L, -1), 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
  lua_newtable(L);
  lua_setfield(L, -2, K_LISTENERS);
  lua_pop(L, 1);
}

/* `local l <close> = core:listen(...)`: closed at the end of the scope. */
static int l_listener_close_meta(lua_State *L) {
  llistener *ll = check_listener(L, 1);
  if (!ll->closed && !ll->lc->closed) {
    lb_push_registry(L, ll->lc, K_LISTENERS);
    close_listener(L, ll, lua_gettop(L));
  }
  return 0;
}

/* The one place a listener object lets go of its C listener. An open one is
 * anchored, so it is collected open only when the whole state closes. */
static int l_listener_gc(lua_State *L) {
  llistener *ll = check_listener(L, 1);
  if (ll->l) {
    close_listener(L, ll, 0);
    ioc_listener_release(ll->l);
    ll->l = NULL;
    lb_object_gone(ll->lc);
  }
  return 0;
}

static int l_listener_tostring(lua_State *L) {
  llistener *ll = check_listener(L, 1);
  char buf[IOC_ADDRSTRLEN] = "?";
  if (ll->l) ioc_addr_format(ioc_listener_address(ll->l), buf, sizeof buf);
  lua_pushfstring(L, "iocore.listener (%s%s)", buf, ll->closed ? ", closed" : "");
  return 1;
}

static const luaL_Reg listener_methods[] = {{"address", l_listener_address}, {"port", l_listener_port},
                                            {"on_accept", l_listener_on_accept}, {"close", l_listener_close},
                                            {NULL, NULL}};

static const luaL_Reg listener_meta[] = {
    {"__gc", l_listener_gc}, {"__close", l_listener_close_meta}, {"__tostring", l_listener_tostring}, {NULL, NULL}};

void lb_open_listener(lua_State *L) {
  luaL_newmetatable(L, LLISTENER_MT);
  luaL_setfuncs(L, listener_meta, 0);
  luaL_newlib(L, listener_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
