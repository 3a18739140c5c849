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

/* The session object at idx, or NULL (the metatable at mt, the usual
 * one, is compared first; a session with user fields has the other). */
static lsession *as_session(lua_State *L, int idx, int mt) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  bool same = lua_rawequal(L, -1, mt);
  lua_pop(L, 1);
  return same ? lua_touserdata(L, idx) : lb_tosession(L, idx);
}

/* Adds the session object ls to ss[0..*n) (grown in the userdata at
 * stack index 5), unless it is closed. */
static ioc_session_t **add_target(lua_State *L, lcore *lc, lsession *ls, ioc_session_t **ss, size_t *n,
                                  size_t *cap) {
  if (ls->lc != lc) luaL_argerror(L, 2, "a session of another core");
  if (ls->closed || !ls->s) return ss;
  if (*n == *cap) {
    ioc_session_t **bigger = lua_newuserdatauv(L, 2 * *cap * sizeof *ss, 0);
    memcpy(bigger, ss, *n * sizeof *ss);
    lua_replace(L, 5);
    ss = bigger;
    *cap *= 2;
  }
  ss[(*n)++] = ls->s;
  return ss;
}

/* core:broadcast(sessions, data): `sessions` is an array of sessions
 * (items 1 to #sessions) or, when it has no item 1, a set (sessions as
 * keys, any values). data is a string (copied into one buffer here) or a
 * buffer. Returns the number of sessions it was queued on: closed and
 * closing sessions, and those over max_pending (ENOBUFS, with on_drain to
 * follow), are skipped. */
int lb_core_broadcast(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  ioc_buffer_t *b = NULL, *own = NULL;
  bool str = lua_type(L, 3) == LUA_TSTRING;
  if (!str && (b = lb_tobuffer(L, 3)) == NULL) return luaL_typeerror(L, 3, "string or iocore.buffer");
  lua_settop(L, 3);
  luaL_getmetatable(L, LSESSION_MT); /* 4: fetched once, compared by identity */
  /* Collected first (an error while walking the table leaves nothing
   * queued anywhere), in a userdata so a raise frees it. */
  size_t len = lua_rawlen(L, 2), n = 0;
  size_t cap = len > ((size_t)1 << 28) ? ((size_t)1 << 28) : len + 16;
  ioc_session_t **ss = lua_newuserdatauv(L, cap * sizeof *ss, 0); /* 5 */
  if (len > 0) {
    for (size_t i = 1; i <= len; i++) {
      lua_rawgeti(L, 2, (lua_Integer)i);
      lsession *ls = as_session(L, -1, 4);
      if (!ls)
        return luaL_argerror(L, 2, lua_pushfstring(L, "array or set of sessions expected, found %s at index %I",
                                                   luaL_typename(L, -1), (lua_Integer)i));
      lua_pop(L, 1);
      ss = add_target(L, lc, ls, ss, &n, &cap);
    }
  } else {
    lua_pushnil(L);
    while (lua_next(L, 2) != 0) {
      lsession *ls = as_session(L, -2, 4);
      if (!ls)
        return luaL_argerror(L, 2, lua_pushfstring(L, "array or set of sessions expected, found %s as a key",
                                                   luaL_typename(L, -2)));
      lua_pop(L, 1);
      ss = add_target(L, lc, ls, ss, &n, &cap);
    }
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
