/* iocore.buffer(str) and core:broadcast(sessions, data).
 *
 * A buffer object holds one reference on an immutable C buffer
 * (ioc_buffer_t) from creation to __gc. Sending it (s:send, s:write,
 * broadcast) queues a reference on each session, so the bytes stay in
 * memory, once, until the last session has written them, however early
 * Lua collects the object. Buffers belong to no core. */
#include "lbind.h"

#include <string.h>

#define LBUFFER_MT "iocore.buffer"

typedef struct lbuffer {
  ioc_buffer_t *b; /* NULL only after __gc */
} lbuffer;

ioc_buffer_t *lb_tobuffer(lua_State *L, int idx) {
  lbuffer *u = luaL_testudata(L, idx, LBUFFER_MT);
  return u ? u->b : NULL;
}

/* iocore.buffer(str): one copy of str's bytes, in C. */
static int l_buffer_new(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING) return luaL_typeerror(L, 1, "string");
  size_t len;
  const char *p = lua_tolstring(L, 1, &len);
  lbuffer *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->b = NULL;
  luaL_setmetatable(L, LBUFFER_MT);
  u->b = ioc_buffer_new(p, len);
  if (!u->b) return luaL_error(L, "not enough memory for a buffer of %I bytes", (lua_Integer)len);
  return 1;
}

static lbuffer *check_buffer(lua_State *L, int idx) {
  lbuffer *u = luaL_checkudata(L, idx, LBUFFER_MT);
  if (!u->b) luaL_argerror(L, idx, "buffer already collected");
  return u;
}

static int l_buffer_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)ioc_buffer_len(check_buffer(L, 1)->b));
  return 1;
}

static int l_buffer_tostring(lua_State *L) {
  ioc_buffer_t *b = check_buffer(L, 1)->b;
  lua_pushlstring(L, ioc_buffer_data(b), ioc_buffer_len(b));
  return 1;
}

static int l_buffer_gc(lua_State *L) {
  lbuffer *u = luaL_checkudata(L, 1, LBUFFER_MT);
  ioc_buffer_release(u->b); /* the sessions' references keep the bytes */
  u->b = NULL;
  return 0;
}

/* ---- core:broadcast -------------------------------------------------------------------- */

/* The C session of the session object at idx if it is open and of core
 * lc; NULL if it is closed; raises for anything else. */
static ioc_session_t *broadcast_target(lua_State *L, lcore *lc, int idx, int pos) {
  lsession *ls = luaL_testudata(L, idx, LSESSION_MT);
  if (!ls)
    luaL_argerror(L, 2, lua_pushfstring(L, "array or set of sessions expected, found %s at %s",
                                        luaL_typename(L, idx), pos ? "a value" : "a key"));
  if (ls->lc != lc) luaL_argerror(L, 2, "a session of another core");
  return ls->closed ? NULL : ls->s;
}

/* core:broadcast(sessions, data): `sessions` is an array of sessions or a
 * set (sessions as keys, any values); a pair gives its key when the key is
 * a session, else its value. data is a string (copied into one buffer
 * here) or a buffer. Returns the number of sessions it was queued on:
 * closed and closing sessions, and those over max_pending (ENOBUFS, with
 * on_drain to follow), are skipped. */
int lb_core_broadcast(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  ioc_buffer_t *b = NULL, *own = NULL;
  bool str = lua_type(L, 3) == LUA_TSTRING;
  if (!str && (b = lb_tobuffer(L, 3)) == NULL) return luaL_typeerror(L, 3, "string or iocore.buffer");
  /* Collected first (an error while walking the table leaves nothing
   * queued anywhere), in a userdata so a raise frees it. */
  size_t cap = 64, n = 0;
  ioc_session_t **ss = lua_newuserdatauv(L, cap * sizeof *ss, 0);
  int arr = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {
    ioc_session_t *s;
    if (luaL_testudata(L, -2, LSESSION_MT))
      s = broadcast_target(L, lc, -2, 0);
    else
      s = broadcast_target(L, lc, -1, 1);
    lua_pop(L, 1);
    if (!s) continue;
    if (n == cap) {
      ioc_session_t **bigger = lua_newuserdatauv(L, 2 * cap * sizeof *ss, 0);
      memcpy(bigger, ss, n * sizeof *ss);
      lua_replace(L, arr);
      ss = bigger;
      cap *= 2;
    }
    ss[n++] = s;
  }
  if (str) { /* encoded once, now that nothing can raise before its release */
    size_t len;
    const char *p = lua_tolstring(L, 3, &len);
    own = b = ioc_buffer_new(p, len);
    if (!b) return lb_fail(L, IOC_ENOMEM);
  }
  /* Each session object (held by the table) keeps its C session alive. */
  size_t count = ioc_core_broadcast(lc->core, ss, n, b);
  ioc_buffer_release(own);
  lua_pushinteger(L, (lua_Integer)count);
  return 1;
}

static const luaL_Reg buffer_meta[] = {{"__len", l_buffer_len},
                                       {"__tostring", l_buffer_tostring},
                                       {"__gc", l_buffer_gc},
                                       {NULL, NULL}};

void lb_open_buffer(lua_State *L) {
  luaL_newmetatable(L, LBUFFER_MT);
  luaL_setfuncs(L, buffer_meta, 0);
  lua_pop(L, 1);
}

/* The module's iocore.buffer. */
int lb_buffer_new(lua_State *L) { return l_buffer_new(L); }
