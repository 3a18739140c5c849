/* The link between the C module and its pure-Lua part (the lua/iocore/ files).
 *
 * `require "iocore"` loads this C module. At the end of luaopen_iocore,
 * lb_open_lua_part() looks for "iocore.stream" on package.path; when it is
 * installed there (scripts/setup puts lua/ beside the module), it is loaded
 * and its install(module, parts) is called with the method tables of the
 * core, session and listener objects and the C helpers below, so the Lua
 * part adds methods to the same objects instead of wrapping the module.
 * When the file is not found the C module works alone, without the stream
 * style; an error raised while loading it is passed on: a broken
 * installation should not go unnoticed. The stream sessions' receive
 * buffer (lrbuf.c) comes as parts.rbuf, and stays in the registry as
 * "iocore.rbuf" for a stream.lua installed by hand later. */
#include "lbind.h"

#define LUA_PART "iocore.stream"

/* report(core, msg[, session]): an error the Lua part caught (a coroutine
 * that failed) is counted in stats().handler_errors and handed to
 * on_error(msg, session), exactly like an error raised by a handler.
 * Returns true; false (nothing done) unless called from a handler on the
 * thread that runs handlers, where on_error may run. The session is not
 * aborted here: the caller does that. */
static int l_report(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  luaL_checktype(L, 2, LUA_TSTRING);
  ioc_session_t *s = NULL;
  if (!lua_isnoneornil(L, 3)) s = lb_checksession(L, 3)->s;
  if (L != lc->T || !lc->running) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushvalue(L, 2);
  lb_report(lc, s); /* pops the message */
  lua_pushboolean(L, 1);
  return 1;
}

/* Pushes the method table behind the metatable `name`: its __index when
 * that is a table, else the first upvalue of its __index function (the
 * session's __index looks up methods there before the user's fields). */
static void push_methods(lua_State *L, const char *name) {
  luaL_getmetatable(L, name);
  lua_getfield(L, -1, "__index");
  lua_remove(L, -2);
  if (lua_isfunction(L, -1)) {
    if (!lua_getupvalue(L, -1, 1)) lua_pushnil(L);
    lua_remove(L, -2);
  }
  if (!lua_istable(L, -1)) luaL_error(L, "iocore: no method table behind %s", name);
}

void lb_open_lua_part(lua_State *L) {
  int mod = lua_gettop(L); /* the module table */
  /* the receive buffer's primitives, also for a stream.lua installed later by hand */
  lb_rbuf_push_primitives(L);
  lua_setfield(L, LUA_REGISTRYINDEX, "iocore.rbuf");
  /* found on package.path? (package.searchpath, so nothing is loaded when not) */
  if (lua_getglobal(L, "package") != LUA_TTABLE || lua_getfield(L, -1, "searchpath") != LUA_TFUNCTION) {
    lua_settop(L, mod);
    return;
  }
  lua_pushliteral(L, LUA_PART);
  if (lua_getfield(L, -3, "path") != LUA_TSTRING) {
    lua_settop(L, mod);
    return;
  }
  lua_call(L, 2, 1);
  bool found = lua_type(L, -1) == LUA_TSTRING;
  lua_settop(L, mod);
  if (!found) return;

  lua_getglobal(L, "require");
  lua_pushliteral(L, LUA_PART);
  lua_call(L, 1, 1); /* the Lua part's table */
  if (!lua_istable(L, -1) || lua_getfield(L, -1, "install") != LUA_TFUNCTION)
    luaL_error(L, "iocore: %s has no install function", LUA_PART);
  lua_pushvalue(L, mod);
  lua_createtable(L, 0, 5);
  push_methods(L, LCORE_MT);
  lua_setfield(L, -2, "core");
  push_methods(L, LSESSION_MT);
  lua_setfield(L, -2, "session");
  push_methods(L, LLISTENER_MT);
  lua_setfield(L, -2, "listener");
  lua_pushcfunction(L, l_report);
  lua_setfield(L, -2, "report");
  lua_getfield(L, LUA_REGISTRYINDEX, "iocore.rbuf");
  lua_setfield(L, -2, "rbuf");
  lua_call(L, 2, 0);
  lua_settop(L, mod);
}
