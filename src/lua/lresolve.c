/* core:resolve(name, callback): a host name looked up by ioc_resolve (a
 * resolver thread; no worker and not the Lua lock waits for it), the
 * answer delivered as an event like any other: callback(addresses) with an
 * array of address strings, or callback(nil, "ENOTFOUND: ...", "ENOTFOUND").
 * The callback is anchored in the core's posts table until then. */
#include "lbind.h"

#include <stdlib.h>
#include <string.h>

typedef struct lb_lookup {
  lcore *lc;
  uint64_t id;
  bool has_port;
} lb_lookup;

/* "1.2.3.4" / "::1" for a name given without a port, else "1.2.3.4:80" /
 * "[::1]:80" (what connect takes). Returns the length, or < 0. */
static int format_addr(const ioc_addr_t *a, bool has_port, char *buf, size_t size) {
  int n = ioc_addr_format(a, buf, size);
  if (n < 0 || has_port) return n;
  char *colon = strrchr(buf, ':');
  if (!colon) return n;
  *colon = '\0';
  n = (int)(colon - buf);
  if (buf[0] == '[' && n >= 2 && buf[n - 1] == ']') {
    memmove(buf, buf + 1, (size_t)n - 2);
    n -= 2;
    buf[n] = '\0';
  }
  return n;
}

/* Resolver delivery (a dispatching thread, no Lua): the addresses travel
 * in the event as NUL-separated strings. */
static void resolved(void *ud, int err, const ioc_addr_t *addrs, size_t n) {
  lb_lookup *lk = ud;
  char text[32 * IOC_ADDRSTRLEN];
  size_t len = 0;
  for (size_t i = 0; err == 0 && i < n && len + IOC_ADDRSTRLEN <= sizeof text; i++) {
    int k = format_addr(&addrs[i], lk->has_port, text + len, IOC_ADDRSTRLEN);
    if (k > 0) len += (size_t)k + 1;
  }
  lev *e = lb_new_event(LEV_RESOLVE, NULL, len);
  if (e) {
    e->id = lk->id;
    e->err = err;
    memcpy(e->data, text, len);
    lb_push_event(lk->lc, e);
  }
  /* without memory for the event the callback never runs; its anchor
   * goes with the core */
  free(lk);
}

/* Under the lock: the callback gets the answer. */
void lb_process_resolve(lcore *lc, lev *e) {
  lua_State *T = lc->T;
  lb_push_registry(T, lc, K_POSTS);
  lua_rawgeti(T, -1, (lua_Integer)e->id);
  lua_pushnil(T);
  lua_rawseti(T, -3, (lua_Integer)e->id);
  lua_remove(T, -2);
  if (!lua_isfunction(T, -1)) {
    lua_pop(T, 1);
    return;
  }
  if (e->err < 0) {
    lua_pushnil(T);
    lua_pushfstring(T, "%s: %s", ioc_err_name(e->err), ioc_strerror(e->err));
    lua_pushstring(T, ioc_err_name(e->err));
    lb_call(lc, 3, NULL);
    return;
  }
  lua_newtable(T);
  lua_Integer i = 0;
  for (size_t off = 0; off < e->len;) {
    size_t k = strlen(e->data + off);
    lua_pushlstring(T, e->data + off, k);
    lua_rawseti(T, -2, ++i);
    off += k + 1;
  }
  lb_call(lc, 1, NULL);
}

/* core:resolve(name, callback) -> true, or nil, "EINVAL: ...", "EINVAL" for a
 * malformed name (the callback then never runs). */
int lb_core_resolve(lua_State *L) {
  lcore *lc = lb_checkcore(L, 1);
  size_t len;
  const char *name = lb_check_address(L, 2, &len);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lb_lookup *lk = malloc(sizeof *lk);
  if (!lk) return lb_fail(L, IOC_ENOMEM);
  lk->lc = lc;
  lk->id = ++lc->next_post_id;
  const char *colon = memchr(name, ':', len);
  const char *close = len ? memchr(name, ']', len) : NULL;
  /* "host:port", "[v6]:port": a port; "host", "::1", "[v6]": none */
  lk->has_port = name[0] == '[' ? close && close + 1 < name + len && close[1] == ':'
                                : colon && memchr(colon + 1, ':', len - (size_t)(colon + 1 - name)) == NULL;
  lb_push_registry(L, lc, K_POSTS);
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, (lua_Integer)lk->id); /* anchored before the lookup can answer */
  int rc = ioc_resolve(lc->core, name, len, resolved, lk);
  if (rc < 0) {
    lua_pushnil(L);
    lua_rawseti(L, -2, (lua_Integer)lk->id);
    free(lk);
    return lb_fail(L, rc);
  }
  lua_pushboolean(L, 1);
  return 1;
}
