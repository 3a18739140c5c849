/* Framing in C for the callback style: the `framing` option of listen and
 * connect (read into ioc_session_options_t.framing, so the core runs the
 * framer and on_recv gets one message per call) and s:send_frame. */
#include "lbind.h"

#include <string.h>

static int framing_error(lua_State *L, int arg, const char *what) {
  return luaL_argerror(L, arg, lua_pushfstring(L, "field 'framing': %s", what));
}

/* framing = "line" | { line = true | length = 2|4 | delimiter = "...", max = n }.
 * Absent: no framing. Misuse raises. */
void lb_opt_framing(lua_State *L, int o, ioc_framing_t *fr) {
  memset(fr, 0, sizeof *fr);
  if (!o) return;
  int t = lua_getfield(L, o, "framing");
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  if (t == LUA_TSTRING) {
    if (strcmp(lua_tostring(L, -1), "line") != 0)
      framing_error(L, o, "a string must be \"line\" (or give a table)");
    fr->kind = IOC_FRAMING_LINE;
    lua_pop(L, 1);
    return;
  }
  if (t != LUA_TTABLE) framing_error(L, o, "must be \"line\" or a table");
  int f = lua_gettop(L);
  int kinds = 0;
  if (lua_getfield(L, f, "line") != LUA_TNIL) {
    if (!lua_toboolean(L, -1)) framing_error(L, o, "line must be true");
    fr->kind = IOC_FRAMING_LINE;
    kinds++;
  }
  if (lua_getfield(L, f, "length") != LUA_TNIL) {
    lua_Integer n = lua_tointeger(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || (n != 2 && n != 4)) framing_error(L, o, "length must be 2 or 4");
    fr->kind = n == 2 ? IOC_FRAMING_LEN2 : IOC_FRAMING_LEN4;
    kinds++;
  }
  if (lua_getfield(L, f, "delimiter") != LUA_TNIL) {
    size_t len = 0;
    const char *d = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!d || len < 1 || len > IOC_FRAMING_DELIMITER_MAX)
      framing_error(L, o, "delimiter must be a string of 1 to 64 bytes");
    fr->kind = IOC_FRAMING_DELIMITER;
    memcpy(fr->delimiter, d, len);
    fr->delimiter_len = len;
    kinds++;
  }
  if (kinds != 1) framing_error(L, o, "give exactly one of line, length, delimiter");
  if (lua_getfield(L, f, "max") != LUA_TNIL) {
    lua_Integer n = lua_tointeger(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || n < 1 || n > INT32_MAX)
      framing_error(L, o, "max must be an integer from 1 to 2147483647");
    fr->max = (size_t)n;
  }
  lua_settop(L, f - 1);
}

static lsession *check_session(lua_State *L, int idx) { return lb_checksession(L, idx); }

/* s:send_frame(payload): length prefix + payload as one send. Raises on a
 * session without length framing (a programming error, not an operational
 * failure). */
static int l_session_send_frame(lua_State *L) {
  lsession *ls = check_session(L, 1);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  ioc_session_t *s = ls->closed ? NULL : ls->s;
  int rc = s ? ioc_session_send_frame(s, p, len) : IOC_ECLOSED;
  if (rc == IOC_EINVAL) return luaL_error(L, "send_frame: the session has no length framing");
  if (rc < 0) return lb_fail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

const luaL_Reg lb_framing_methods[] = {{"send_frame", l_session_send_frame}, {NULL, NULL}};
