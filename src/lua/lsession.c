/* Session objects: the C callbacks that feed the event queue, the
 * processing of session events under the Lua lock, and the session methods
 * (core:connect() is lconnect.c).
 *
 * Ownership. The binding holds one reference on every C session it serves,
 * taken when it first sees the session (ioc_connect's, or a retain in the
 * accept callback) and dropped when the session's close event is freed.
 * A session userdata holds one more, from its creation to its __gc, so its
 * methods work on a closed session; the pointer is NULL only after __gc.
 * An open session's userdata is anchored in the core's K_SESSIONS table
 * until its on_close has run.
 *
 * The user data of a session's callbacks is the binding's lb_sess (lbind.h),
 * made when the binding takes the session and freed with its close event
 * (the last event of a session; a close held behind undelivered data is the
 * event itself, kept). Under the Lua lock it carries the sticky fact "the
 * script (or the binding on its behalf) closed or aborted this session" and
 * the registry reference to the handler table of an accepted session whose
 * Lua object is not made yet (lazy: an idle connection costs no userdata);
 * its hold_recv flag is read by the workers (lflow.c).
 *
 * A session userdata has two user values: 1 = the user's own fields
 * (`session.anything = v`), 2 = its handler table. Accepted sessions share
 * their listener's handler table until one of their own handlers is set
 * (copy on write). */
#include "lbind.h"

#include <stdlib.h>
#include <string.h>

/* ---- the binding's part of a session (lb_sess) ---------------------------------------- */

lb_sess *lb_sess_new(lcore *lc) {
  lb_sess *st = calloc(1, sizeof *st);
  if (st) {
    st->lc = lc;
    atomic_fetch_add(&lc->bound_sessions, 1);
  }
  return st;
}

void lb_sess_free(lb_sess *st) {
  if (!st) return;
  atomic_fetch_sub(&st->lc->bound_sessions, 1);
  free(st);
}

static int slot_href(ioc_session_t *s) { return LB_SESS(s)->href; }
static void slot_set_href(ioc_session_t *s, int ref) { LB_SESS(s)->href = ref; }
bool lb_closed_by_script(ioc_session_t *s) { return LB_SESS(s)->closed; }
static void mark_closed_by_script(ioc_session_t *s) { LB_SESS(s)->closed = true; }

void lb_session_fail(ioc_session_t *s, int err) {
  mark_closed_by_script(s);
  lcore *lc = LB_SESS(s)->lc;
  if (lc && lc->T) {
    lua_State *T = lc->T;
    lb_push_registry(T, lc, K_SESSIONS);
    if (lua_rawgetp(T, -1, s) == LUA_TUSERDATA) lb_flow_unhold(lua_touserdata(T, -1));
    lua_pop(T, 2);
  }
  ioc_session_fail(s, err);
}

/* Drops the handler-table reference of a lazy session (no object made). */
static void drop_lazy(lua_State *L, ioc_session_t *s) {
  int ref = slot_href(s);
  if (ref > 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    slot_set_href(s, 0);
  }
}

/* ---- C callbacks (worker threads, no Lua) ------------------------------------------ */

lev *lb_new_event(int type, ioc_session_t *s, size_t len) {
  lev *e = malloc(sizeof *e + len);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  e->type = (uint8_t)type;
  e->s = s;
  e->len = len;
  return e;
}

void lb_free_event(lev *e) {
  if (e->type == LEV_ACCEPT) ioc_listener_release(e->l);
  if (e->type == LEV_CLOSE) {
    /* the binding is done with the session: its part and its reference go */
    lb_sess_free(LB_SESS(e->s));
    ioc_session_release(e->s);
  }
  free(e);
}

void lb_push_or_fail(lcore *lc, lev *e, ioc_session_t *s) {
  if (e)
    lb_push_event(lc, e);
  else
    ioc_session_fail(s, IOC_ENOMEM); /* this session cannot be served correctly any more; the others can */
}

static void cb_open(ioc_session_t *s, int err) {
  lev *e = lb_new_event(LEV_CONNECT, s, 0);
  if (e) e->err = err;
  lb_push_or_fail(LB_SESS(s)->lc, e, s);
}

static void cb_recv(ioc_session_t *s, const char *data, size_t len) {
  lb_sess *st = LB_SESS(s);
  if (atomic_load(&st->hold_recv)) {
    /* No handler to take it: it will be held, and reading stops here (a
     * worker that waited for Lua would read on, up to the whole stream). */
    ioc_session_pause(s);
  } else {
    lb_direct d = {s, data, len, false};
    if (lb_try_direct(st->lc, &d)) return;
  }
  lev *e = lb_new_event(LEV_RECV, s, len);
  if (e) memcpy(e->data, data, len);
  lb_push_or_fail(st->lc, e, s);
}

static void cb_drain(ioc_session_t *s) { lb_push_or_fail(LB_SESS(s)->lc, lb_new_event(LEV_DRAIN, s, 0), s); }

static void cb_close(ioc_session_t *s, int err) {
  lev *e = lb_new_event(LEV_CLOSE, s, 0);
  if (!e) {
    /* Cannot queue the close: keep the session's references forever rather
     * than free what Lua may still point to. */
    return;
  }
  e->err = err;
  lb_push_event(LB_SESS(s)->lc, e);
}

/* The peer's FIN: queued behind the session's earlier events, so the Lua
 * handlers of the data before it can still reply; then a graceful close. */
static void cb_eof(ioc_session_t *s) { lb_push_or_fail(LB_SESS(s)->lc, lb_new_event(LEV_EOF, s, 0), s); }

/* Outbound sessions get on_open; accepted ones are announced by the accept
 * event instead. */
const ioc_session_callbacks_t lb_session_cbs = {cb_open, cb_recv, cb_drain, cb_close, cb_eof};
const ioc_session_callbacks_t lb_accepted_cbs = {NULL, cb_recv, cb_drain, cb_close, cb_eof};
/* Framed sessions: the messages of one receive are gathered (lframing.c). */
const ioc_session_callbacks_t lb_session_framed_cbs = {cb_open, lb_recv_frame, cb_drain, cb_close, cb_eof};
const ioc_session_callbacks_t lb_accepted_framed_cbs = {NULL, lb_recv_frame, cb_drain, cb_close, cb_eof};

const char *const lb_handler_names[] = {"on_accept", "on_recv", "on_close", "on_drain", "on_connect", "on_eof", NULL};
/* ---- session objects ------------------------------------------------------------------ */

lsession *lb_tosession(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  luaL_getmetatable(L, LSESSION_MT);
  bool is = lua_rawequal(L, -1, -2);
  if (!is) {
    luaL_getmetatable(L, LSESSION_FIELDS_MT);
    is = lua_rawequal(L, -1, -3);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return is ? lua_touserdata(L, idx) : NULL;
}

lsession *lb_checksession(lua_State *L, int idx) {
  lsession *ls = lb_tosession(L, idx);
  if (!ls) luaL_typeerror(L, idx, LSESSION_MT);
  return ls;
}

static lsession *check_session(lua_State *L, int idx) { return lb_checksession(L, idx); }

/* Pushes a new session userdata for s, anchored in K_SESSIONS, with the
 * handler table at index htab. */
void lb_anchor_session(lua_State *L, lcore *lc, ioc_session_t *s, int htab) {
  htab = lua_absindex(L, htab);
  lb_push_registry(L, lc, K_SESSIONS);
  lsession *ls = lua_newuserdatauv(L, sizeof *ls, LSESSION_NUV);
  ls->s = NULL;
  ls->lc = lc;
  ls->id = ioc_session_id(s);
  ls->closed = false;
  ls->paused = ls->hold_paused = false;
  ls->held.head = ls->held.tail = NULL;
  ls->rb = NULL;
  lua_getfield(L, htab, LB_READ_TIMEOUT_KEY);
  ls->read_timeout_ms = (uint64_t)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_setmetatable(L, LSESSION_MT);
  lua_pushvalue(L, htab);
  lua_setiuservalue(L, -2, 2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, -3, s); /* may raise (memory): the userdata holds nothing yet */
  lua_remove(L, -2);
  ioc_session_retain(s); /* the userdata's reference, dropped by __gc */
  ls->s = s;
  lc->live_objects++;
}

/* An accepted session without on_accept: only its handler table (on top,
 * popped) is kept, in the registry, until an event needs the object. */
void lb_defer_session(lua_State *L, ioc_session_t *s) { slot_set_href(s, luaL_ref(L, LUA_REGISTRYINDEX)); }

void lb_push_session(lua_State *L, lcore *lc, ioc_session_t *s) {
  lb_push_registry(L, lc, K_SESSIONS);
  lua_rawgetp(L, -1, s);
  lua_remove(L, -2);
  int ref = slot_href(s);
  if (lua_isnil(L, -1) && ref > 0) {
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lb_anchor_session(L, lc, s, -1);
    lua_remove(L, -2);
    drop_lazy(L, s);
  }
}

/* Pushes handler `name` of the session userdata at idx (or nil). */
void lb_push_handler(lua_State *L, int idx, const char *name) {
  lua_getiuservalue(L, idx, 2);
  if (lua_istable(L, -1))
    lua_getfield(L, -1, name);
  else
    lua_pushnil(L);
  lua_remove(L, -2);
}

/* ---- events (under the lock, on lc->T, inside the drain's protected call) ---------------- */

/* One received chunk (or message) for the session object at sidx: held
 * behind what is held already, into a stream's buffer, or on_recv(s, data).
 * `key` is the index of the string "on_recv" and `msgh` that of the error
 * handler (lb_msgh), pushed once by a caller that delivers many; *synced
 * says the flow was synced already by this caller. */
void lb_recv_one(lcore *lc, lsession *ls, int sidx, int key, int msgh, const char *data, size_t len,
                 bool *synced) {
  lua_State *T = lc->T;
  ioc_session_t *s = ls->s;
  if (lb_closed_by_script(s)) return; /* closed or aborted by a handler before */
  /* the handler: looked up for each message (the one before may change it) */
  if (lua_getiuservalue(T, sidx, 2) == LUA_TTABLE) {
    lua_pushvalue(T, key);
    lua_gettable(T, -2);
    lua_remove(T, -2);
  } else {
    lua_pop(T, 1);
    lua_pushnil(T);
  }
  bool has = lua_isfunction(T, -1);
  if (!lb_fifo_empty(&ls->held) || (!atomic_load(&lc->stop_closing) && (ls->paused || !has))) {
    lua_pop(T, 1);
    lb_flow_hold(ls, LEV_RECV, s, 0, data, len);
    if (!ls->paused && !has) {
      /* about one read held: the kernel keeps the rest until a handler comes */
      ls->hold_paused = true;
      lb_flow_sync(ls);
    }
    return;
  }
  if (!*synced) {
    /* A worker that found no on_recv paused the session (cb_recv); if the
     * script set one just before that pause took effect, nobody resumed it. */
    lb_flow_sync(ls);
    *synced = true;
  }
  if (ls->rb) { /* stream style: into its buffer, no string made */
    lua_pop(T, 1);
    lb_rbuf_deliver(lc, ls, sidx, data, len);
    return;
  }
  if (!has) { /* the stop's end: nobody left to take it */
    lua_pop(T, 1);
    return;
  }
  lua_pushvalue(T, sidx);
  lua_pushlstring(T, data, len);
  lb_call_at(lc, 2, s, msgh);
}

/* One receive event: the bytes of one receive, or (frames) the messages
 * framed from it (lframing.c), in one go. The session, its handler's key
 * and the error handler are pushed once; each message is then checked and
 * delivered like a receive of its own, so a pause, a close or an error in
 * one handler holds or drops the messages after it exactly as if each had
 * come alone. The session is corked meanwhile: the replies its handlers
 * send leave in one write when they are done. */
static void deliver(lcore *lc, ioc_session_t *s, const char *p, size_t len, bool frames) {
  lua_State *T = lc->T;
  /* Queued before the script closed or aborted it: no on_recv after that. */
  if (lb_closed_by_script(s)) return;
  int top = lua_gettop(T);
  lb_push_session(T, lc, s);
  if (lua_isnil(T, -1)) {
    lua_settop(T, top);
    return;
  }
  lsession *ls = lua_touserdata(T, -1);
  lua_pushcfunction(T, lb_msgh);
  lua_pushliteral(T, "on_recv");
  bool synced = false;
  ioc_session_cork(s);
  if (!frames) {
    lb_recv_one(lc, ls, top + 1, top + 3, top + 2, p, len, &synced);
  } else {
    for (const char *end = p + len; p < end && !lb_closed_by_script(s);) {
      size_t n = lb_frame_len(p);
      lb_recv_one(lc, ls, top + 1, top + 3, top + 2, p + LB_FRAME_HDR, n, &synced);
      p += LB_FRAME_HDR + n;
    }
  }
  ioc_session_uncork(s);
  lua_settop(T, top);
}

void lb_process_direct(lcore *lc, lb_direct *d) {
  deliver(lc, d->s, d->data, d->len, d->frames);
}

/* The peer's FIN. With on_eof the session stays open (the script ends it);
 * without, it closes gracefully now that the handlers before it have run. */
static void process_eof(lcore *lc, ioc_session_t *s) {
  lua_State *T = lc->T;
  if (lb_closed_by_script(s)) return;
  int ref = slot_href(s);
  if (ref > 0) {
    /* no object yet (so nothing held): make one only for an on_eof */
    lua_rawgeti(T, LUA_REGISTRYINDEX, ref);
    bool wanted = lua_getfield(T, -1, "on_eof") == LUA_TFUNCTION;
    lua_pop(T, 2);
    if (!wanted) {
      ioc_session_close(s);
      return;
    }
  }
  lb_push_session(T, lc, s);
  if (lua_isnil(T, -1)) {
    lua_pop(T, 1);
    ioc_session_close(s);
    return;
  }
  lsession *ls = lua_touserdata(T, -1);
  if (lb_flow_must_hold(lc, ls, -1, LEV_EOF)) {
    lb_flow_hold(ls, LEV_EOF, s, 0, NULL, 0);
    lua_pop(T, 1);
    return;
  }
  lb_push_handler(T, -1, "on_eof");
  if (!lua_isfunction(T, -1)) {
    lua_pop(T, 2);
    ioc_session_close(s);
    return;
  }
  lua_insert(T, -2);
  lb_call(lc, 1, s);
}

/* Calls handler `name` of s with the session and, if nargs == 2, err. */
static void deliver_simple(lcore *lc, ioc_session_t *s, const char *name, int nargs, int err) {
  lua_State *T = lc->T;
  lb_push_session(T, lc, s);
  if (lua_isnil(T, -1)) {
    lua_pop(T, 1);
    return;
  }
  lb_push_handler(T, -1, name);
  if (!lua_isfunction(T, -1)) {
    lua_pop(T, 2);
    return;
  }
  lua_insert(T, -2);
  if (nargs == 2) lb_push_err(T, err);
  lb_call(lc, nargs, s);
}

void lb_close_done(lua_State *L, lcore *lc, ioc_session_t *s) {
  lb_push_registry(L, lc, K_SESSIONS);
  if (lua_rawgetp(L, -1, s) != LUA_TNIL) {
    ((lsession *)lua_touserdata(L, -1))->closed = true;
    lua_pushnil(L);
    lua_rawsetp(L, -3, s);
  }
  lua_pop(L, 2);
  drop_lazy(L, s);
}

static void process_close(lcore *lc, lev *e) {
  lua_State *T = lc->T;
  ioc_session_t *s = e->s;
  int ref = slot_href(s);
  if (ref > 0) {
    /* Never needed a Lua object: make one only for an on_close handler. */
    lua_rawgeti(T, LUA_REGISTRYINDEX, ref);
    bool wanted = lua_getfield(T, -1, "on_close") == LUA_TFUNCTION;
    lua_pop(T, 2);
    if (!wanted) {
      drop_lazy(T, s);
      return;
    }
  }
  lb_push_session(T, lc, s);
  if (lua_isnil(T, -1)) {
    lua_pop(T, 1);
    return;
  }
  lsession *ls = lua_touserdata(T, -1);
  if (lb_flow_must_hold(lc, ls, -1, LEV_CLOSE)) {
    /* behind held data: on_close comes after it */
    lb_flow_keep(ls, e);
    lua_pop(T, 1);
    return;
  }
  ls->closed = true;
  lb_push_handler(T, -1, "on_close");
  if (lua_isfunction(T, -1)) {
    lua_pushvalue(T, -2);
    lb_push_err(T, e->err);
    /* on_error gets the session too; the abort lb_call does on an error
     * is a no-op here, the session being closed already. */
    lb_call(lc, 2, s);
  } else {
    lua_pop(T, 1);
  }
  lua_pop(T, 1);
  lb_close_done(T, lc, s);
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

void lb_process(lcore *lc, lev *e) {
  switch (e->type) {
  case LEV_ACCEPT: lb_process_accept(lc, e); break;
  case LEV_CONNECT: deliver_simple(lc, e->s, "on_connect", 2, e->err); break;
  case LEV_RECV: deliver(lc, e->s, e->data, e->len, false); break;
  case LEV_FRAMES: deliver(lc, e->s, e->data, e->len, true); break;
  case LEV_DRAIN: deliver_simple(lc, e->s, "on_drain", 1, 0); break;
  case LEV_CLOSE: process_close(lc, e); break;
  case LEV_TIMER: lb_timer_fire(lc, e->id); break;
  case LEV_POST: process_post(lc, e); break;
  case LEV_RESOLVE: lb_process_resolve(lc, e); break;
  case LEV_EOF: process_eof(lc, e->s); break;
  case LEV_STOP_FLUSH: lb_process_stop_flush(lc); break;
  default: break;
  }
}

/* Core close: every session's Lua side lets go. Lazy sessions drop their
 * handler table; session objects still reachable report closed. */
static void forget_one(ioc_session_t *s, void *arg) { drop_lazy(arg, s); }

void lb_sessions_forget(lua_State *L, lcore *lc) {
  ioc_core_foreach_session(lc->core, forget_one, L);
  lb_push_registry(L, lc, K_SESSIONS);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lsession *ls = lua_touserdata(L, -1);
    ls->closed = true;
    lb_flow_free(ls);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, lc->self_ref);
  lua_newtable(L);
  lua_setfield(L, -2, K_SESSIONS);
  lua_pop(L, 1);
}

void lb_event_forget(lua_State *L, lev *e) {
  if (e->s) drop_lazy(L, e->s);
}

/* ---- session methods ---------------------------------------------------------------------- */

static int closed_fail(lua_State *L) { return lb_fail(L, IOC_ECLOSED); }

/* The C session, or NULL once on_close ran (or the object was collected). */
static ioc_session_t *open_session(lsession *ls) { return ls->closed ? NULL : ls->s; }

static int l_session_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_session(L, 1)->id);
  return 1;
}

static int push_addr(lua_State *L, const ioc_addr_t *a) {
  char buf[IOC_ADDRSTRLEN];
  int n = ioc_addr_format(a, buf, sizeof buf);
  if (n < 0) return lb_fail(L, n);
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

static int l_session_peer(lua_State *L) {
  lsession *ls = check_session(L, 1);
  return ls->s ? push_addr(L, ioc_session_peer(ls->s)) : closed_fail(L);
}

static int l_session_address(lua_State *L) {
  lsession *ls = check_session(L, 1);
  return ls->s ? push_addr(L, ioc_session_local(ls->s)) : closed_fail(L);
}

/* send(array): the strings of t, gathered. The length is the raw one (a
 * __len cannot make us read past the array), and a __len that disagrees
 * with it is refused rather than half-believed. */
static int send_array(lua_State *L, lsession *ls) {
  size_t n = lua_rawlen(L, 2);
  if (luaL_getmetafield(L, 2, "__len") != LUA_TNIL) {
    lua_pop(L, 1);
    lua_len(L, 2);
    int isnum;
    lua_Integer declared = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || declared < 0 || (lua_Unsigned)declared != (lua_Unsigned)n)
      return luaL_argerror(L, 2, lua_pushfstring(L, "array of strings expected (its __len says %s, it holds %I items)",
                                                 isnum ? lua_pushfstring(L, "%I", declared) : "not a number",
                                                 (lua_Integer)n));
  }
  ioc_buf_t stackbufs[LB_SEND_STACK_ITEMS];
  ioc_buffer_t *stackrefs[LB_SEND_STACK_ITEMS];
  ioc_buf_t *bufs = stackbufs;
  ioc_buffer_t **refs = stackrefs;
  bool any_ref = false;
  if (n > LB_SEND_STACK_ITEMS) {
    if (n > (size_t)-1 / (sizeof *bufs + sizeof *refs)) return luaL_argerror(L, 2, "array too long");
    bufs = lua_newuserdatauv(L, (sizeof *bufs + sizeof *refs) * n, 0);
    refs = (ioc_buffer_t **)(void *)(bufs + n);
  }
  for (size_t i = 0; i < n; i++) {
    int t = lua_rawgeti(L, 2, (lua_Integer)i + 1);
    refs[i] = t == LUA_TUSERDATA ? lb_tobuffer(L, -1) : NULL; /* iocore.buffer: by reference */
    if (refs[i]) {
      bufs[i].base = NULL;
      bufs[i].len = 0;
      any_ref = true;
    } else if (t == LUA_TSTRING) {
      bufs[i].base = lua_tolstring(L, -1, &bufs[i].len);
    } else {
      return luaL_argerror(L, 2, lua_pushfstring(L, "array of strings and buffers expected, item %I is %s",
                                                 (lua_Integer)i + 1, luaL_typename(L, -1)));
    }
    lua_pop(L, 1); /* still referenced by the table, which is on the stack */
  }
  ioc_session_t *s = open_session(ls);
  return s ? ioc_session_sendv_buffers(s, bufs, any_ref ? refs : NULL, n) : IOC_ECLOSED;
}

static int l_session_send(lua_State *L) {
  lsession *ls = check_session(L, 1);
  int rc;
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t len;
    const char *p = lua_tolstring(L, 2, &len);
    ioc_session_t *s = open_session(ls);
    rc = s ? ioc_session_send(s, p, len) : IOC_ECLOSED;
  } else if (lua_type(L, 2) == LUA_TTABLE) {
    rc = send_array(L, ls);
  } else if (lua_type(L, 2) == LUA_TUSERDATA && lb_tobuffer(L, 2)) {
    ioc_session_t *s = open_session(ls); /* a shared buffer: queued by reference */
    rc = s ? ioc_session_send_buffer(s, lb_tobuffer(L, 2)) : IOC_ECLOSED;
  } else {
    return luaL_typeerror(L, 2, "string, iocore.buffer or array of them");
  }
  if (rc < 0) return lb_fail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_session_pending(lua_State *L) {
  ioc_session_t *s = open_session(check_session(L, 1));
  lua_pushinteger(L, s ? (lua_Integer)ioc_session_pending(s) : 0);
  return 1;
}

static int l_session_close(lua_State *L) {
  lsession *ls = check_session(L, 1);
  ioc_session_t *s = open_session(ls);
  if (!s || ioc_session_closed(s)) return closed_fail(L);
  mark_closed_by_script(s);
  lb_flow_unhold(ls);
  ioc_session_close(s);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_session_abort(lua_State *L) {
  lsession *ls = check_session(L, 1);
  ioc_session_t *s = open_session(ls);
  if (!s) return closed_fail(L);
  mark_closed_by_script(s);
  lb_flow_unhold(ls);
  ioc_session_abort(s);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_session_closed(lua_State *L) {
  ioc_session_t *s = open_session(check_session(L, 1));
  lua_pushboolean(L, !s || ioc_session_closed(s));
  return 1;
}

/* Sets handler `name`. An accepted session starts out sharing its
 * listener's handler table; its first own handler copies it. */
static int set_handler(lua_State *L, const char *name) {
  lsession *ls = check_session(L, 1);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!open_session(ls)) return closed_fail(L);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 2); /* 3: current table */
  bool own = false;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, LB_OWN_KEY);
    own = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (!own) {
    lua_createtable(L, 0, 6); /* 4 */
    if (lua_istable(L, 3)) {
      for (int i = 0; lb_handler_names[i]; i++) {
        lua_getfield(L, 3, lb_handler_names[i]);
        lua_setfield(L, 4, lb_handler_names[i]);
      }
    }
    lua_pushboolean(L, 1);
    lua_setfield(L, 4, LB_OWN_KEY);
    lua_pushvalue(L, 4);
    lua_setiuservalue(L, 1, 2);
  }
  bool removed = lua_isnil(L, 2);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, name);
  lua_settop(L, 1);
  if (strcmp(name, "on_recv") == 0) {
    lb_flow_set_hold_recv(ls->s, removed);
    if (!removed && ls->hold_paused) {
      /* a handler for what was held: deliver it, then read again */
      ls->hold_paused = false;
      lb_flow_sync(ls);
      lb_flow_release(ls);
    }
  }
  return 1;
}

static int l_session_on_recv(lua_State *L) { return set_handler(L, "on_recv"); }
static int l_session_on_close(lua_State *L) { return set_handler(L, "on_close"); }
static int l_session_on_drain(lua_State *L) { return set_handler(L, "on_drain"); }
static int l_session_on_connect(lua_State *L) { return set_handler(L, "on_connect"); }
static int l_session_on_eof(lua_State *L) { return set_handler(L, "on_eof"); }

static const luaL_Reg session_methods[] = {
    {"id", l_session_id},         {"peer", l_session_peer},         {"address", l_session_address},
    {"send", l_session_send},     {"pending", l_session_pending},   {"close", l_session_close},
    {"abort", l_session_abort},   {"closed", l_session_closed},     {"on_recv", l_session_on_recv},
    {"on_close", l_session_on_close}, {"on_drain", l_session_on_drain}, {"on_connect", l_session_on_connect},
    {"on_eof", l_session_on_eof},     {NULL, NULL}};

/* The user's field k of session s (the fields metatable's __index, after
 * the methods). Raises for an object that is not a session. */
static int l_session_field(lua_State *L) {
  check_session(L, 1);
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* Method look-up. It runs for every method call on a session (s:send()),
 * so a session without user fields has the method table itself as its
 * __index: the VM finds a method with no call at all. Its first user field
 * gives it the fields metatable, whose __index is this Lua function:
 * methods first, then the fields. (A Lua function, not a C one: the VM
 * calls a metamethod at the top of the caller's whole frame, and a C
 * function there needs LUA_MINSTACK free slots, which doubles the stack of
 * a coroutine whose handler has a frame of ~14 slots or more, 640 bytes
 * kept by every parked session.) Handing a method to any object is
 * harmless: each method checks its self. The function's first upvalue is
 * the method table. */
static const char session_index_lua[] =
    "local methods, field = ...\n"
    "return function(s, k)\n"
    "  local m = methods[k]\n"
    "  if m ~= nil then return m end\n"
    "  return field(s, k)\n"
    "end\n";

/* session.k = v: into the user's fields (user value 1), made by the first
 * one, which also gives the session the fields metatable. */
static int l_session_newindex(lua_State *L) {
  check_session(L, 1);
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
    luaL_getmetatable(L, LSESSION_FIELDS_MT);
    lua_setmetatable(L, 1);
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* The one place a session object lets go of its C session. */
static int l_session_gc(lua_State *L) {
  lsession *ls = check_session(L, 1);
  lb_flow_free(ls);
  lb_rbuf_free(L, ls);
  if (ls->s) {
    ioc_session_release(ls->s);
    ls->s = NULL;
    ls->closed = true;
    lb_object_gone(ls->lc);
  }
  return 0;
}

static int l_session_tostring(lua_State *L) {
  lsession *ls = check_session(L, 1);
  char buf[IOC_ADDRSTRLEN] = "?";
  if (ls->s) ioc_addr_format(ioc_session_peer(ls->s), buf, sizeof buf);
  lua_pushfstring(L, "iocore.session %I (%s%s)", (lua_Integer)ls->id, buf,
                  (ls->closed || !ls->s) ? ", closed" : "");
  return 1;
}

/* `local s <close> = ...`: a graceful close when the variable goes out of scope. */
static int l_session_close_meta(lua_State *L) {
  ioc_session_t *s = open_session(check_session(L, 1));
  if (s && !ioc_session_closed(s)) {
    mark_closed_by_script(s);
    ioc_session_close(s);
  }
  return 0;
}

static const luaL_Reg session_meta[] = {{"__newindex", l_session_newindex}, {"__gc", l_session_gc},
                                        {"__close", l_session_close_meta}, {"__tostring", l_session_tostring},
                                        {NULL, NULL}};

void lb_open_session(lua_State *L) {
  luaL_newmetatable(L, LSESSION_MT); /* 1: sessions without user fields */
  luaL_setfuncs(L, session_meta, 0);
  lua_newtable(L); /* 2: sessions with user fields */
  luaL_setfuncs(L, session_meta, 0);
  lua_pushliteral(L, LSESSION_MT);
  lua_setfield(L, -2, "__name");
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LSESSION_FIELDS_MT);
  luaL_newlib(L, session_methods); /* 3 */
  luaL_setfuncs(L, lb_flow_methods, 0);
  luaL_setfuncs(L, lb_framing_methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "__index");
  if (luaL_loadbufferx(L, session_index_lua, sizeof session_index_lua - 1, "=iocore.session", "t") != LUA_OK)
    lua_error(L);
  lua_pushvalue(L, -2); /* the methods */
  lua_pushcfunction(L, l_session_field);
  lua_call(L, 2, 1);
  lua_setfield(L, -3, "__index");
  lua_pop(L, 3);
}
