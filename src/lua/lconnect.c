/* core:connect(), and what it shares with core:listen(): the address
 * argument, the session options and the handler table read from the
 * options. The session object it makes is lsession.c's. */
#include "lbind.h"

#include <string.h>

void lb_handlers_from_opts(lua_State *L, int arg, int first) {
  lua_createtable(L, 0, 6);
  for (int i = first; lb_handler_names[i]; i++) {
    lb_opt_function(L, arg, lb_handler_names[i]);
    lua_setfield(L, -2, lb_handler_names[i]);
  }
}

/* The address argument: a string, and only a string. luaL_checklstring would
 * turn a number into text ("42"), so a misuse would come back as EINVAL
 * instead of raising as the contract says. */
const char *lb_check_address(lua_State *L, int idx, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING) luaL_typeerror(L, idx, "string");
  return lua_tolstring(L, idx, len);
}

/* Session options shared by listen and connect. */
void lb_session_options(lua_State *L, lcore *lc, int o, ioc_session_options_t *so, uint64_t *read_ms) {
  so->idle_timeout_ms = (uint64_t)lb_opt_integer(L, o, "idle_timeout", 0, 0, INT32_MAX);
  so->max_pending = (size_t)lb_opt_integer(L, o, "max_pending", (lua_Integer)IOC_DEFAULT_MAX_PENDING, 1,
                                           (lua_Integer)1 << 40);
  so->write_timeout_ms = (uint64_t)lb_opt_integer(L, o, "write_timeout", 0, 0, INT32_MAX);
  so->close_timeout_ms = (uint64_t)lb_opt_integer(L, o, "close_timeout", (lua_Integer)lc->close_timeout_ms, 1,
                                                  INT32_MAX);
  *read_ms = (uint64_t)lb_opt_integer(L, o, "read_timeout", 0, 0, INT32_MAX);
  lb_opt_framing(L, o, &so->framing);
}

int lb_core_connect(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  size_t alen;
  const char *addr = lb_check_address(L, 2, &alen);
  int o = lb_opts_arg(L, 3);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  uint64_t read_ms;
  lb_session_options(L, lc, o, &so, &read_ms);
  so.connect_timeout_ms = (uint64_t)lb_opt_integer(L, o, "connect_timeout", 0, 0, INT32_MAX);
  lb_handlers_from_opts(L, o, 1);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, LB_OWN_KEY);
  lua_pushinteger(L, (lua_Integer)read_ms);
  lua_setfield(L, -2, LB_READ_TIMEOUT_KEY);
  int htab = lua_gettop(L);
  lb_sess *st = lb_sess_new(lc);
  if (!st) return lb_fail(L, IOC_ENOMEM);
  atomic_store(&st->hold_recv, !lb_has_handler_in(L, htab, "on_recv"));
  ioc_session_t *s;
  /* Our reference from ioc_connect is the binding's: released with the close event. */
  const ioc_session_callbacks_t *cbs = so.framing.kind ? &lb_session_framed_cbs : &lb_session_cbs;
  int rc = ioc_connect(lc->core, addr, alen, cbs, st, &so, &s);
  if (rc < 0) {
    lb_sess_free(st);
    return lb_fail(L, rc);
  }
  lb_anchor_session(L, lc, s, htab);
  return 1;
}
