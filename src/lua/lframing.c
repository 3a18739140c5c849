/* Framing in C for the callback style: the `framing` option of listen and
 * connect (read into ioc_session_options_t.framing, so the core runs the
 * framer and on_recv gets one message per call), the gathering of one
 * receive's messages for delivery in one go, and s:send_frame. */
#include "lbind.h"

#include <stdlib.h>
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
    fr->end_marks = 1; /* lb_recv_frame gathers */
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
  fr->end_marks = 1; /* lb_recv_frame gathers */
  lua_settop(L, f - 1);
}

/* ---- gathering (worker threads, no Lua) ------------------------------------------------- */

/* The core hands a framed session's messages to on_recv one by one, then
 * an end mark (on_recv(s, NULL, 0)) once the receive they came in is done.
 * Taking the Lua lock, setting up a protected call and queueing an event
 * for each message would cost more than the handler; so the messages are
 * copied, as frame records, into one event, and at the mark that event runs
 * under the lock at once (when nothing is queued and the lock is free, like
 * an unframed receive) or is queued whole. Either way each message is
 * checked and delivered as its own on_recv (lsession.c, deliver).
 * A session's receives never overlap, and marks come on the thread of
 * their messages, so the run in progress is per thread. */

typedef struct gather {
  ioc_session_t *s; /* whose messages `e` holds (NULL: none) */
  lev *e;           /* LEV_FRAMES; e->len bytes used of cap */
  size_t cap;
} gather;

static _Thread_local gather tls_gather;

/* The first allocation of a run: 1 KiB in all, a few messages, and small
 * enough for the allocator's per-thread cache (glibc's takes up to 1032). */
#define GATHER_MIN (1024 - sizeof(lev))

/* Hands the run on: runs it under the lock now, or queues it. */
static void hand_on(gather *g) {
  ioc_session_t *s = g->s;
  lev *e = g->e;
  g->s = NULL;
  g->e = NULL;
  g->cap = 0;
  if (!e) return;
  lcore *lc = LB_SESS(s)->lc;
  lb_direct d = {s, e->data, e->len, true};
  if (lb_try_direct(lc, &d)) {
    free(e);
    return;
  }
  lb_push_event(lc, e);
}

/* Appends one message to the run of s, growing it; false without memory. */
static bool gather_add(gather *g, ioc_session_t *s, const char *data, size_t len) {
  size_t used = g->e ? g->e->len : 0;
  size_t need = used + LB_FRAME_HDR + len;
  if (need > g->cap) {
    size_t cap = g->cap ? g->cap : GATHER_MIN;
    while (cap < need) cap *= 2;
    lev *e = realloc(g->e, sizeof *e + cap);
    if (!e) return false;
    if (!g->e) {
      memset(e, 0, sizeof *e);
      e->type = LEV_FRAMES;
      e->s = s;
    }
    g->e = e;
    g->cap = cap;
  }
  uint32_t n = (uint32_t)len; /* max is at most INT32_MAX (lb_opt_framing) */
  memcpy(g->e->data + used, &n, LB_FRAME_HDR);
  memcpy(g->e->data + used + LB_FRAME_HDR, data, len);
  g->e->len = need;
  return true;
}

void lb_recv_frame(ioc_session_t *s, const char *data, size_t len) {
  gather *g = &tls_gather;
  if (g->s && g->s != s) hand_on(g); /* never expected: a run is ended by its mark */
  if (!data) {
    if (g->s) hand_on(g);
    return;
  }
  g->s = s;
  if (atomic_load(&LB_SESS(s)->hold_recv)) {
    /* No handler to take it: it will be held, and reading stops here (the
     * framer keeps the messages after this one). */
    ioc_session_pause(s);
  }
  if (!gather_add(g, s, data, len)) {
    hand_on(g); /* the messages before it still go, in order */
    ioc_session_fail(s, IOC_ENOMEM); /* this session cannot be served correctly any more; the others can */
  }
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
