/* Listener and session objects, the C callbacks that feed the event queue,
 * and the processing of each event under the Lua lock.
 *
 * A session userdata has two user values: 1 = the user's own fields
 * (`session.anything = v`), 2 = its handler table. Accepted sessions share
 * their listener's handler table until one of their own handlers is set
 * (copy on write), so an idle session costs only its userdata. */
#include "lbind.h"

#include <stdlib.h>
#include <string.h>


/* ---- C callbacks (worker threads, no Lua) ------------------------------------------ */

static lev *new_event(int type, ioc_session_t *s, size_t len) {
  lev *e = malloc(sizeof *e + len);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->type = (uint8_t)type;
  e->s = s;
  e->len = len;
  return e;
}

static void push_or_abort(lcore *lc, lev *e, ioc_session_t *s) {
  if (e) {
    lb_push_event(lc, e);
  } else {
    /* Out of memory for the event itself: this session cannot be served
     * correctly any more, the others can. */
    ioc__session_fail(s, IOC_ENOMEM);
  }
}

static void cb_open(ioc_session_t *s, int err) {
  if (!s->outbound) return; /* accepted: on_accept already queued the event */
  lev *e = new_event(LEV_CONNECT, s, 0);
  if (e) e->err = err;
  push_or_abort(ioc_session_userdata(s), e, s);
}

typedef struct {
  ioc_session_t *s;
  const char *data;
  size_t len;
} direct_recv;

static void deliver_recv(lcore *lc, ioc_session_t *s, const char *data, size_t len);

static void direct_recv_fn(lcore *lc, void *arg) {
  direct_recv *d = arg;
  deliver_recv(lc, d->s, d->data, d->len);
}

static void cb_recv(ioc_session_t *s, const char *data, size_t len) {
  lcore *lc = ioc_session_userdata(s);
  direct_recv d = {s, data, len};
  if (lb_try_direct(lc, direct_recv_fn, &d)) return;
  lev *e = new_event(LEV_RECV, s, len);
  if (e) memcpy(e->data, data, len);
  push_or_abort(lc, e, s);
}

static void cb_drain(ioc_session_t *s) {
  push_or_abort(ioc_session_userdata(s), new_event(LEV_DRAIN, s, 0), s);
}

static void cb_close(ioc_session_t *s, int err) {
  lev *e = new_event(LEV_CLOSE, s, 0);
  if (!e) {
    /* Cannot queue the close: keep the session's references forever rather
     * than free what Lua may still point to. Reported once. */
    ioc__log(ioc_session_core(s), "lua: out of memory queueing on_close");
    return;
  }
  e->err = err;
  lb_push_event(ioc_session_userdata(s), e);
}

/* The peer's FIN: queued behind the session's earlier events, so the Lua
 * handlers of the data before it can still reply; then a graceful close. */
static void cb_eof(ioc_session_t *s) {
  push_or_abort(ioc_session_userdata(s), new_event(LEV_EOF, s, 0), s);
}

const ioc_session_callbacks_t lb_session_cbs = {cb_open, cb_recv, cb_drain, cb_close, cb_eof};

static void cb_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  lcore *lc = ud;
  ioc_session_retain(s); /* the binding's, until the close event is freed */
  ioc_session_set_callbacks(s, &lb_session_cbs, lc);
  lev *e = new_event(LEV_ACCEPT, s, 0);
  if (!e) {
    ioc_session_set_callbacks(s, NULL, NULL);
    ioc_session_release(s);
    ioc__session_fail(s, IOC_ENOMEM);
    return;
  }
  ioc__listener_ref(l);
  e->l = l;
  lb_push_event(lc, e);
}

void lb_free_event(lev *e) {
  if (e->type == LEV_ACCEPT) ioc__listener_unref(e->l);
  if (e->type == LEV_CLOSE) ioc_session_release(e->s);
  free(e);
}

#define OWN_KEY "own" /* marks a handler table as the session's own */
static const char *const handler_names[] = {"on_accept", "on_recv", "on_close", "on_drain", "on_connect", NULL};

/* ---- session userdata ------------------------------------------------------------------ */

static lsession *check_session(lua_State *L, int idx) { return luaL_checkudata(L, idx, LSESSION_MT); }

/* Pushes a new session userdata for s with handler table at index htab. */
static lsession *new_session_ud(lua_State *L, lcore *lc, ioc_session_t *s, int htab) {
  htab = lua_absindex(L, htab);
  lsession *ls = lua_newuserdatauv(L, sizeof *ls, 2);
  ls->s = s;
  ls->lc = lc;
  ls->closed = false;
  ioc_session_retain(s);
  lc->live_objects++;
  luaL_setmetatable(L, LSESSION_MT);
  lua_pushvalue(L, htab);
  lua_setiuservalue(L, -2, 2);
  return ls;
}

/* Makes, anchors and pushes the Lua object of an accepted session whose
 * creation was put off: an idle connection of a listener without on_accept
 * costs one registry slot (a reference to its handler table) until an event
 * first needs its object. */
static void make_lazy_session(lua_State *L, lcore *lc, ioc_session_t *s) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->lua_href);
  luaL_unref(L, LUA_REGISTRYINDEX, s->lua_href);
  s->lua_href = 0;
  new_session_ud(L, lc, s, -1);
  lua_remove(L, -2);
  lb_push_registry(L, lc, K_SESSIONS);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, s);
  lua_pop(L, 1);
}

/* Pushes the session userdata of s (or nil). */
static void push_session(lua_State *L, lcore *lc, ioc_session_t *s) {
  lb_push_registry(L, lc, K_SESSIONS);
  lua_rawgetp(L, -1, s);
  lua_remove(L, -2);
  if (lua_isnil(L, -1) && s->lua_href > 0) {
    lua_pop(L, 1);
    make_lazy_session(L, lc, s);
  }
}

/* Pushes handler `name` of the session userdata at idx (or nil). */
static void push_handler(lua_State *L, int idx, const char *name) {
  lua_getiuservalue(L, idx, 2);
  if (lua_istable(L, -1))
    lua_getfield(L, -1, name);
  else
    lua_pushnil(L);
  lua_remove(L, -2);
}

static void push_err(lua_State *L, int err) {
  if (err)
    lua_pushfstring(L, "%s: %s", ioc_err_name(err), ioc_strerror(err));
  else
    lua_pushnil(L);
}

static void deliver_recv(lcore *lc, ioc_session_t *s, const char *data, size_t len) {
  lua_State *T = lc->T;
  /* Queued before the script closed or aborted it: no on_recv after close(). */
  if (ioc__session_closed_by_owner(s)) return;
  push_session(T, lc, s);
  if (lua_isnil(T, -1)) {
    lua_pop(T, 1);
    return;
  }
  push_handler(T, -1, "on_recv");
  if (!lua_isfunction(T, -1)) {
    lua_pop(T, 2);
    return;
  }
  lua_insert(T, -2);
  lua_pushlstring(T, data, len);
  lb_call(lc, 2, s);
}

/* Calls handler `name` of s with the session and, if nargs == 2, err. */
static void deliver_simple(lcore *lc, ioc_session_t *s, const char *name, int nargs, int err) {
  lua_State *T = lc->T;
  push_session(T, lc, s);
  if (lua_isnil(T, -1)) {
    lua_pop(T, 1);
    return;
  }
  push_handler(T, -1, name);
  if (!lua_isfunction(T, -1)) {
    lua_pop(T, 2);
    return;
  }
  lua_insert(T, -2);
  if (nargs == 2) push_err(T, err);
  lb_call(lc, nargs, s);
}

static void process_accept(lcore *lc, lev *e) {
  lua_State *T = lc->T;
  int top = lua_gettop(T);
  lb_push_registry(T, lc, K_LISTENERS);
  lua_rawgetp(T, -1, e->l);
  if (lua_isnil(T, -1)) {
    /* Accepted while its listener was being closed: no handler to give it to. */
    lua_settop(T, top);
    ioc_session_abort(e->s);
    return;
  }
  lua_getiuservalue(T, -1, 1); /* top+3: the listener's handlers */
  lua_getfield(T, -1, "on_accept");
  if (!lua_isfunction(T, -1)) {
    lua_pop(T, 1);
    e->s->lua_href = luaL_ref(T, LUA_REGISTRYINDEX); /* made on its first event */
    lua_settop(T, top);
    return;
  }
  new_session_ud(T, lc, e->s, top + 3);
  lb_push_registry(T, lc, K_SESSIONS); /* anchor while open */
  lua_pushvalue(T, -2);
  lua_rawsetp(T, -2, e->s);
  lua_pop(T, 1);
  lb_call(lc, 1, e->s); /* on_accept(session) */
  lua_settop(T, top);
}

static void process_close(lcore *lc, lev *e) {
  lua_State *T = lc->T;
  if (e->s->lua_href > 0) {
    /* Never needed a Lua object: make one only for an on_close handler. */
    lua_rawgeti(T, LUA_REGISTRYINDEX, e->s->lua_href);
    bool wanted = lua_getfield(T, -1, "on_close") == LUA_TFUNCTION;
    lua_pop(T, 2);
    if (!wanted) {
      luaL_unref(T, LUA_REGISTRYINDEX, e->s->lua_href);
      e->s->lua_href = 0;
      return;
    }
  }
  push_session(T, lc, e->s);
  if (lua_isnil(T, -1)) {
    lua_pop(T, 1);
    return;
  }
  lsession *ls = lua_touserdata(T, -1);
  ls->closed = true;
  push_handler(T, -1, "on_close");
  if (lua_isfunction(T, -1)) {
    lua_pushvalue(T, -2);
    push_err(T, e->err);
    /* on_error gets the session too; the abort lb_call does on an error
     * is a no-op here, the session being closed already. */
    lb_call(lc, 2, e->s);
  } else {
    lua_pop(T, 1);
  }
  lua_pop(T, 1);
  lb_push_registry(T, lc, K_SESSIONS);
  lua_pushnil(T);
  lua_rawsetp(T, -2, e->s);
  lua_pop(T, 1);
}

static void process_post(lcore *lc, lev *e) {
  lua_State *T = lc->T;
  lb_push_registry(T, lc, K_POSTS);
  lua_rawgeti(T, -1, (lua_Integer)e->id);
  lua_pushnil(T);
  lua_rawseti(T, -3, (lua_Integer)e->id);
  lua_remove(T, -2);
  if (lua_isfunction(T, -1))
    lb_call(lc, 0, NULL);
  else
    lua_pop(T, 1);
}

void lb_timer_fire(lcore *lc, uint64_t id);

void lb_process(lcore *lc, lev *e) {
  switch (e->type) {
  case LEV_ACCEPT: process_accept(lc, e); break;
  case LEV_CONNECT: deliver_simple(lc, e->s, "on_connect", 2, e->err); break;
  case LEV_RECV: deliver_recv(lc, e->s, e->data, e->len); break;
  case LEV_DRAIN: deliver_simple(lc, e->s, "on_drain", 1, 0); break;
  case LEV_CLOSE: process_close(lc, e); break;
  case LEV_TIMER: lb_timer_fire(lc, e->id); break;
  case LEV_POST: process_post(lc, e); break;
  case LEV_EOF: ioc_session_close(e->s); break;
  default: break;
  }
}

/* ---- session methods ---------------------------------------------------------------------- */

static int closed_fail(lua_State *L) { return lb_fail(L, IOC_ECLOSED); }

static int l_session_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ioc_session_id(check_session(L, 1)->s));
  return 1;
}

static int push_addr(lua_State *L, const ioc_addr_t *a) {
  char buf[IOC_ADDRSTRLEN];
  int n = ioc_addr_format(a, buf, sizeof buf);
  if (n < 0) return lb_fail(L, n);
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

static int l_session_peer(lua_State *L) { return push_addr(L, ioc_session_peer(check_session(L, 1)->s)); }
static int l_session_address(lua_State *L) { return push_addr(L, ioc_session_local(check_session(L, 1)->s)); }

#define SEND_STACK_BUFS 16

static int l_session_send(lua_State *L) {
  lsession *ls = check_session(L, 1);
  int rc;
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t len;
    const char *p = lua_tolstring(L, 2, &len);
    if (ls->closed) return closed_fail(L);
    rc = ioc_session_send(ls->s, p, len);
  } else if (lua_type(L, 2) == LUA_TTABLE) {
    lua_Integer n = luaL_len(L, 2);
    ioc_buf_t stackbufs[SEND_STACK_BUFS];
    ioc_buf_t *bufs = stackbufs;
    if (n > SEND_STACK_BUFS) bufs = lua_newuserdatauv(L, sizeof *bufs * (size_t)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, i);
      if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "bad argument #1 to 'send' (array of strings expected, item %I is %s)", i,
                          luaL_typename(L, -1));
      bufs[i - 1].base = lua_tolstring(L, -1, &bufs[i - 1].len);
      lua_pop(L, 1); /* still referenced by the table, which is on the stack */
    }
    if (ls->closed) return closed_fail(L);
    rc = ioc_session_sendv(ls->s, bufs, (size_t)n);
  } else {
    return luaL_typeerror(L, 2, "string or array of strings");
  }
  if (rc < 0) return lb_fail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_session_pending(lua_State *L) {
  lsession *ls = check_session(L, 1);
  lua_pushinteger(L, ls->closed ? 0 : (lua_Integer)ioc_session_pending(ls->s));
  return 1;
}

static int l_session_close(lua_State *L) {
  lsession *ls = check_session(L, 1);
  if (ls->closed || ioc_session_closed(ls->s)) return closed_fail(L);
  ioc_session_close(ls->s);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_session_abort(lua_State *L) {
  lsession *ls = check_session(L, 1);
  if (ls->closed) return closed_fail(L);
  ioc_session_abort(ls->s);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_session_closed(lua_State *L) {
  lsession *ls = check_session(L, 1);
  lua_pushboolean(L, ls->closed || ioc_session_closed(ls->s));
  return 1;
}

/* Sets handler `name`. An accepted session starts out sharing its
 * listener's handler table; its first own handler copies it. */
static int set_handler(lua_State *L, const char *name) {
  lsession *ls = check_session(L, 1);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  if (ls->closed) return closed_fail(L);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 2); /* 3: current table */
  bool own = false;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, OWN_KEY);
    own = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (!own) {
    lua_createtable(L, 0, 5); /* 4 */
    if (lua_istable(L, 3)) {
      for (int i = 0; handler_names[i]; i++) {
        lua_getfield(L, 3, handler_names[i]);
        lua_setfield(L, 4, handler_names[i]);
      }
    }
    lua_pushboolean(L, 1);
    lua_setfield(L, 4, OWN_KEY);
    lua_pushvalue(L, 4);
    lua_setiuservalue(L, 1, 2);
  }
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, name);
  lua_settop(L, 1);
  return 1;
}

static int l_session_on_recv(lua_State *L) { return set_handler(L, "on_recv"); }
static int l_session_on_close(lua_State *L) { return set_handler(L, "on_close"); }
static int l_session_on_drain(lua_State *L) { return set_handler(L, "on_drain"); }
static int l_session_on_connect(lua_State *L) { return set_handler(L, "on_connect"); }

static const luaL_Reg session_methods[] = {
    {"id", l_session_id}, {"peer", l_session_peer}, {"address", l_session_address},
    {"send", l_session_send}, {"pending", l_session_pending}, {"close", l_session_close},
    {"abort", l_session_abort}, {"closed", l_session_closed}, {"on_recv", l_session_on_recv},
    {"on_close", l_session_on_close}, {"on_drain", l_session_on_drain},
    {"on_connect", l_session_on_connect}, {NULL, NULL}};

/* session.x: methods first, then the user's fields */
static int l_session_index(lua_State *L) {
  check_session(L, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  if (!lua_isnil(L, -1)) return 1;
  lua_getiuservalue(L, 1, 1);
  if (!lua_istable(L, -1)) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int l_session_newindex(lua_State *L) {
  check_session(L, 1);
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

static int l_session_gc(lua_State *L) {
  lsession *ls = check_session(L, 1);
  if (ls->s) {
    ioc_session_release(ls->s);
    ls->s = NULL;
    lb_object_gone(ls->lc);
  }
  return 0;
}

static int l_session_tostring(lua_State *L) {
  lsession *ls = check_session(L, 1);
  char buf[IOC_ADDRSTRLEN] = "?";
  if (ls->s) ioc_addr_format(ioc_session_peer(ls->s), buf, sizeof buf);
  lua_pushfstring(L, "iocore.session %I (%s%s)", (lua_Integer)(ls->s ? ioc_session_id(ls->s) : 0), buf,
                  ls->closed ? ", closed" : "");
  return 1;
}

/* `local s <close> = ...`: a graceful close when the variable goes out of scope. */
static int l_session_close_meta(lua_State *L) {
  lsession *ls = check_session(L, 1);
  if (ls->s && !ls->closed && !ioc_session_closed(ls->s)) ioc_session_close(ls->s);
  return 0;
}

/* ---- listener ------------------------------------------------------------------------------ */

static llistener *check_listener(lua_State *L, int idx) { return luaL_checkudata(L, idx, LLISTENER_MT); }


/* Copies the handler fields of opts (at idx, or none) into a new table. */
static void handlers_from_opts(lua_State *L, int idx, const char *fn, int first) {
  lua_createtable(L, 0, 4);
  for (int i = first; handler_names[i]; i++) {
    if (idx) lua_getfield(L, idx, handler_names[i]); else lua_pushnil(L);
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
      luaL_error(L, "bad argument #2 to '%s' (field '%s' must be a function, got %s)", fn, handler_names[i],
                 luaL_typename(L, -1));
    lua_setfield(L, -2, handler_names[i]);
  }
}

/* The address argument: a string, and only a string. luaL_checklstring would
 * turn a number into text ("42"), so a misuse would come back as EINVAL
 * instead of raising as the contract says. */
static const char *check_address(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING) luaL_typeerror(L, idx, "string");
  return lua_tolstring(L, idx, len);
}

static uint64_t opt_u64(lua_State *L, int idx, const char *k, uint64_t def, uint64_t lo, uint64_t hi,
                        const char *fn) {
  if (!idx) return def;
  lua_getfield(L, idx, k);
  uint64_t v = def;
  if (!lua_isnil(L, -1)) {
    int isnum;
    lua_Integer x = lua_tointegerx(L, -1, &isnum);
    if (!isnum)
      luaL_error(L, "bad argument #2 to '%s' (field '%s' must be an integer, got %s)", fn, k, luaL_typename(L, -1));
    if (x < 0 || (uint64_t)x < lo || (uint64_t)x > hi)
      luaL_error(L, "bad argument #2 to '%s' (field '%s' out of range %I..%I)", fn, k, (lua_Integer)lo,
                 (lua_Integer)hi);
    v = (uint64_t)x;
  }
  lua_pop(L, 1);
  return v;
}

int lb_core_listen(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  size_t alen;
  const char *addr = check_address(L, 2, &alen);
  int oi = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    oi = 3;
  }
  ioc_listener_options_t o;
  memset(&o, 0, sizeof o);
  o.backlog = (int)opt_u64(L, oi, "backlog", 511, 1, 65535, "listen");
  o.accepts = (int)opt_u64(L, oi, "accepts", 16, 1, IOC__MAX_ACCEPTS, "listen");
  o.max_connections = opt_u64(L, oi, "max_connections", 0, 0, UINT32_MAX, "listen");
  o.session.idle_timeout_ms = opt_u64(L, oi, "idle_timeout", 0, 0, INT32_MAX, "listen");
  o.session.max_pending = (size_t)opt_u64(L, oi, "max_pending", (uint64_t)64 << 20, 1, (uint64_t)1 << 40, "listen");
  if (oi) {
    lua_getfield(L, oi, "reuseport");
    o.reuseport = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  handlers_from_opts(L, oi, "listen", 0); /* validated before anything is opened */
  int htab = lua_gettop(L);

  ioc_listener_t *l;
  int rc = ioc_listen(lc->core, addr, alen, &o, cb_accept, lc, &l);
  if (rc < 0) return lb_fail(L, rc);
  llistener *ll = lua_newuserdatauv(L, sizeof *ll, 1);
  ll->l = l;
  ll->lc = lc;
  ll->closed = false;
  ioc__listener_ref(l); /* the userdata's, so the pointer outlives close */
  lc->live_objects++;
  luaL_setmetatable(L, LLISTENER_MT);
  lua_pushvalue(L, htab);
  lua_setiuservalue(L, -2, 1);
  lb_push_registry(L, lc, K_LISTENERS);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, l);
  lua_pop(L, 1);
  return 1;
}

static int l_listener_address(lua_State *L) { return push_addr(L, ioc_listener_address(check_listener(L, 1)->l)); }

static int l_listener_port(lua_State *L) {
  lua_pushinteger(L, ioc_addr_port(ioc_listener_address(check_listener(L, 1)->l)));
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

static int l_listener_close(lua_State *L) {
  llistener *ll = check_listener(L, 1);
  if (ll->closed) return closed_fail(L);
  ll->closed = true;
  ioc_listener_close(ll->l);
  if (!ll->lc->closed) {
    lb_push_registry(L, ll->lc, K_LISTENERS);
    lua_pushnil(L);
    lua_rawsetp(L, -2, ll->l);
    lua_pop(L, 1);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_listener_gc(lua_State *L) {
  llistener *ll = check_listener(L, 1);
  if (ll->l) {
    if (!ll->closed) ioc_listener_close(ll->l);
    ll->closed = true;
    ioc__listener_unref(ll->l);
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

/* ---- connect ---------------------------------------------------------------------------- */

int lb_core_connect(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  size_t alen;
  const char *addr = check_address(L, 2, &alen);
  int oi = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    oi = 3;
  }
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.idle_timeout_ms = opt_u64(L, oi, "idle_timeout", 0, 0, INT32_MAX, "connect");
  so.max_pending = (size_t)opt_u64(L, oi, "max_pending", (uint64_t)64 << 20, 1, (uint64_t)1 << 40, "connect");
  handlers_from_opts(L, oi, "connect", 1);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, OWN_KEY);
  int htab = lua_gettop(L);
  ioc_session_t *s;
  /* Our reference from ioc_connect is the binding's: released with the close event. */
  int rc = ioc_connect(lc->core, addr, alen, &lb_session_cbs, lc, &so, &s);
  if (rc < 0) return lb_fail(L, rc);
  new_session_ud(L, lc, s, htab);
  lb_push_registry(L, lc, K_SESSIONS);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, s);
  lua_pop(L, 1);
  return 1;
}

void lb_open_session(lua_State *L) {
  luaL_newmetatable(L, LSESSION_MT);
  luaL_newlib(L, session_methods);
  lua_pushcclosure(L, l_session_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_session_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, l_session_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_session_close_meta);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, l_session_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  luaL_newmetatable(L, LLISTENER_MT);
  luaL_newlib(L, listener_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_listener_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_listener_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, l_listener_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
