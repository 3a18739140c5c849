/* The receive buffer of stream-style sessions (lua/iocore/stream.lua), in C.
 *
 * A stream session's received bytes go straight from the backend's buffer
 * into a per-session byte buffer here (deliver_recv in lsession.c calls
 * lb_rbuf_deliver instead of making a Lua string and calling on_recv). Lua
 * only hears of a receive when the coroutine parked on the session can go
 * on: the parked read's need (n bytes, any byte, or a delimiter within max
 * bytes) is kept here and checked at each delivery; then the session's
 * on_recv (stream.lua's on_ready) is called, without data, or, when the
 * reader is the session's handler parked in the plain state (`quick`),
 * that coroutine is resumed from here (wake_owner).
 *
 * The session methods read(n), read(), read_line([max]) and
 * read_until(delim[, max]) are C closures (make_readers): when what they
 * need is buffered, they return it at once (one string made, no yield, no
 * Lua call). Anything else (data missing, the end of the stream, this side
 * closed, misuse, the first read of a session that is not a stream session
 * yet) goes to stream.lua's slow path for the same method, which parks the
 * coroutine and keeps the failure rules.
 *
 * Memory. The buffer's bytes come from the Lua state's allocator (so the
 * core's memory_limit covers them); they are freed when a reader parks on
 * an empty buffer: an idle session parked in a read holds only the small
 * lb_rbuf.
 * Everything here runs under the Lua lock.
 *
 * Read-ahead. With no reader parked, at most LB_RBUF_READ_AHEAD bytes are
 * buffered: past that the session is paused (as by s:pause()), so a peer
 * that sends faster than the handler reads is slowed down by TCP; reading
 * below the mark, or parking a reader, resumes it. */
#include "lbind.h"

#include <string.h>

/* What the parked reader waits for. */
enum { WANT_NONE, WANT_N, WANT_ANY, WANT_DELIM };

/* Delimiters up to this long (lines, "\r\n\r\n") are kept in the struct,
 * in the room of the pointer to a longer one. */
#define DELIM_INLINE sizeof(char *)

struct lb_rbuf {
  char *buf;         /* NULL while empty */
  size_t cap;
  size_t head, tail; /* the unread bytes are buf[head..tail) */
  size_t scan;       /* bytes from head known to hold no start of `delim` */
  size_t need;       /* WANT_N: the count; WANT_DELIM: max */
  /* WANT_DELIM (and the scan): the delimiter (dlen bytes, 0: none), in
   * `in`, or allocated when longer (rb_delim) */
  union {
    char in[DELIM_INLINE];
    char *heap;
  } delim;
  size_t dlen;
  size_t hwm;        /* write_hwm: a write that may pass it goes to the slow path (0: never waits) */
  /* The session's handler coroutine while it is one of stream.lua's (own):
   * a read or write from it needs no look-up in the owners table. It
   * cannot be collected (and its address reused) meanwhile: the session
   * object's user value LSESSION_UV_STREAM refers to it. */
  const lua_State *owner;
  uint8_t want;
  bool closing;      /* this side closed it: reads go to the slow path (ECLOSED) */
  bool ra_paused;    /* paused by the read-ahead bound */
  /* stream.lua has a state table for the session (`state`). Until then the
   * session is in the plain state: no read time-out, no handlers of the
   * script's, nobody waiting to write, not ended; only its owner may then
   * park here without Lua (`quick`: the parked reader is the owner). */
  bool stated;
  bool quick;
};

/* ---- memory (the Lua state's allocator: memory_limit applies) ------------------------- */

static void *rb_alloc(lua_State *L, void *p, size_t osize, size_t nsize) {
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
  return f(ud, p, p ? osize : 0, nsize);
}

/* Raises a memory error (status LUA_ERRMEM, as when Lua itself runs out)
 * for a buffer of `size` bytes that could not be had: asking the allocator
 * for as much through Lua fails the same way and raises. */
static void rb_nomem(lua_State *L, size_t size) {
  lua_newuserdatauv(L, size, 0);
  luaL_error(L, "not enough memory for a receive buffer of %I bytes", (lua_Integer)size);
}

static void rb_free_bytes(lua_State *L, lb_rbuf *rb) {
  if (rb->buf) rb_alloc(L, rb->buf, rb->cap, 0);
  rb->buf = NULL;
  rb->cap = rb->head = rb->tail = rb->scan = 0;
}

static const char *rb_delim(const lb_rbuf *rb) { return rb->dlen > DELIM_INLINE ? rb->delim.heap : rb->delim.in; }

static void rb_free_delim(lua_State *L, lb_rbuf *rb) {
  if (rb->dlen > DELIM_INLINE) rb_alloc(L, rb->delim.heap, rb->dlen, 0);
  rb->dlen = 0;
}

static void rb_set_delim(lua_State *L, lb_rbuf *rb, const char *d, size_t dl) {
  if (rb->dlen == dl && memcmp(rb_delim(rb), d, dl) == 0) return;
  rb_free_delim(L, rb);
  char *p = rb->delim.in;
  if (dl > DELIM_INLINE) {
    if (!(p = rb_alloc(L, NULL, 0, dl))) rb_nomem(L, dl);
    rb->delim.heap = p;
  }
  memcpy(p, d, dl);
  rb->dlen = dl;
  rb->scan = 0; /* known for the old delimiter only */
}

void lb_rbuf_free(lua_State *L, lsession *ls) {
  lb_rbuf *rb = ls->rb;
  if (!rb) return;
  rb_free_bytes(L, rb);
  rb_free_delim(L, rb);
  rb_alloc(L, rb, sizeof *rb, 0);
  ls->rb = NULL;
}

static size_t rb_len(const lb_rbuf *rb) { return rb->tail - rb->head; }

/* Appends len bytes. When it cannot, the buffered bytes are dropped too
 * (the session is aborted for it, and the state needs the memory to report
 * that: a buffer near memory_limit would starve it) and a memory error is
 * raised. */
static void rb_append(lua_State *L, lb_rbuf *rb, const char *data, size_t len) {
  size_t used = rb_len(rb);
  if (rb->cap - rb->tail < len) {
    if (rb->head > 0 && rb->cap - used >= len && used <= rb->cap / 2) {
      memmove(rb->buf, rb->buf + rb->head, used); /* room enough once the read part goes */
    } else {
      size_t cap = rb->cap ? rb->cap : 256;
      while (cap < used + len && cap <= ((size_t)-1) / 2) cap *= 2;
      char *nb = cap >= used + len ? rb_alloc(L, NULL, 0, cap) : NULL;
      if (!nb) {
        rb_free_bytes(L, rb);
        rb_nomem(L, cap);
      }
      if (used) memcpy(nb, rb->buf + rb->head, used);
      if (rb->buf) rb_alloc(L, rb->buf, rb->cap, 0);
      rb->buf = nb;
      rb->cap = cap;
    }
    rb->head = 0;
    rb->tail = used;
  }
  memcpy(rb->buf + rb->tail, data, len);
  rb->tail += len;
}

static void rb_pause(lsession *ls, bool on) {
  lb_rbuf *rb = ls->rb;
  if (rb->ra_paused == on) return;
  rb->ra_paused = on;
  ls->paused = on;
  lb_flow_sync(ls);
  if (!on) lb_flow_release(ls);
}

/* Drops the next n unread bytes (n <= len); a read-ahead pause ends below
 * the mark. An emptied buffer is kept for the next receives while the
 * coroutine reads on (freeing it after every read would allocate it again
 * for every receive); it goes when a reader parks on it empty. */
static void rb_consume(lua_State *L, lsession *ls, size_t n) {
  LB_UNUSED(L);
  lb_rbuf *rb = ls->rb;
  rb->head += n;
  rb->scan = 0;
  if (rb->head == rb->tail) rb->head = rb->tail = 0;
  if (rb->ra_paused && rb_len(rb) < LB_RBUF_READ_AHEAD) rb_pause(ls, false);
}

/* The offset from head of the first `d` at or after offset `from`, or -1.
 * (memchr for the first byte, then a compare: memmem is not everywhere.) */
static ptrdiff_t rb_find(const lb_rbuf *rb, size_t from, const char *d, size_t dl) {
  size_t len = rb_len(rb);
  if (len < dl || from > len - dl) return -1;
  const char *base = rb->buf + rb->head;
  const char *p = base + from, *last = base + (len - dl); /* the last place d can start */
  while (p <= last) {
    p = memchr(p, d[0], (size_t)(last - p) + 1);
    if (!p) return -1;
    if (dl == 1 || memcmp(p + 1, d + 1, dl - 1) == 0) return p - base;
    p++;
  }
  return -1;
}

/* After a failed search of the whole buffer for a dl-byte delimiter. */
static void rb_scanned(lb_rbuf *rb, size_t dl) {
  size_t len = rb_len(rb);
  rb->scan = len >= dl ? len - dl + 1 : 0;
}

/* Whether a message that has no delimiter d (dl bytes) in the buffer yet
 * is known to be longer than max: more than max bytes are buffered, and at
 * no offset up to max do the buffered bytes end with the start of d (the
 * places where d could still begin once more bytes come). */
static bool rb_too_long(const lb_rbuf *rb, const char *d, size_t dl, size_t max) {
  size_t len = rb_len(rb);
  if (len <= max) return false;
  const char *base = rb->buf + rb->head;
  for (size_t p = len >= dl ? len - dl + 1 : 0; p <= max; p++)
    if (memcmp(base + p, d, len - p) == 0) return false;
  return true;
}

/* Whether the parked reader can go on with what is buffered (for a
 * delimiter: it is there, or more than max bytes came without it). */
static bool rb_ready(lb_rbuf *rb) {
  switch (rb->want) {
  case WANT_N: return rb_len(rb) >= rb->need;
  case WANT_ANY: return rb_len(rb) > 0;
  case WANT_DELIM:
    if (rb_find(rb, rb->scan, rb_delim(rb), rb->dlen) >= 0) return true;
    rb_scanned(rb, rb->dlen);
    return rb_too_long(rb, rb_delim(rb), rb->dlen, rb->need);
  default: return false;
  }
}

/* The registry key of stream.lua's finish(co, ok, err): what follows a
 * wake whose coroutine ended (its session is closed) or failed (reported,
 * its session aborted). */
static const char finish_key = 'f';

/* Wakes the session's owner, parked here in the plain state (quick), as
 * stream.lua's on_ready would, without calling it: resumed straight from
 * here (lb_resume_handler) with `chunk` (a read() waiting on an empty
 * buffer: its result) or nothing. stream.lua's finish is called only when
 * the coroutine ends or fails. False (nothing done) when it cannot be
 * done so: the caller calls on_recv. */
static bool wake_owner(lcore *lc, lsession *ls, int idx, const char *chunk, size_t len) {
  lua_State *T = lc->T;
  int top = lua_gettop(T);
  if (lua_rawgetp(T, LUA_REGISTRYINDEX, &finish_key) != LUA_TFUNCTION ||
      lua_getiuservalue(T, idx, LSESSION_UV_STREAM) != LUA_TTHREAD) {
    lua_settop(T, top);
    return false;
  }
  lua_State *co = lua_tothread(T, -1);
  if (lua_status(co) != LUA_YIELD || !lua_checkstack(co, 1)) {
    lua_settop(T, top);
    return false;
  }
  if (chunk) lua_pushlstring(T, chunk, len); /* (made on T: a memory error is the drain's) */
  lb_rbuf *rb = ls->rb;
  rb->quick = false;
  rb->want = WANT_NONE;
  if (chunk) lua_xmove(T, co, 1);
  int nres = 0;
  int st = lb_resume_handler(lc, co, chunk ? 1 : 0, &nres);
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    lua_settop(T, top);
    return true;
  }
  lua_pushboolean(T, st == LUA_OK); /* finish co ok */
  if (st == LUA_OK) {
    lua_pop(co, nres);
    lua_pushnil(T);
  } else {
    lua_xmove(co, T, 1); /* the error */
  }
  lb_call(lc, 3, ls->s);
  lua_settop(T, top);
  return true;
}

void lb_rbuf_deliver(lcore *lc, lsession *ls, int idx, const char *data, size_t len) {
  lua_State *T = lc->T;
  lb_rbuf *rb = ls->rb;
  idx = lua_absindex(T, idx);
  /* A read() waiting on an empty buffer takes the chunk as it is: one
   * string, no copy into the buffer (a pump reading whatever comes). */
  bool direct = rb->want == WANT_ANY && rb_len(rb) == 0;
  if (!direct) {
    rb_append(T, rb, data, len);
    if (rb->want == WANT_NONE) {
      if (rb_len(rb) >= LB_RBUF_READ_AHEAD) rb_pause(ls, true);
      return;
    }
    if (!rb_ready(rb)) return;
  }
  if (rb->quick && wake_owner(lc, ls, idx, direct ? data : NULL, len)) return;
  lb_push_handler(T, idx, "on_recv");
  if (!lua_isfunction(T, -1)) {
    lua_pop(T, 1);
    if (direct) rb_append(T, rb, data, len);
    return;
  }
  lua_pushvalue(T, idx);
  if (direct) lua_pushlstring(T, data, len);
  lb_call(lc, direct ? 2 : 1, ls->s);
}

/* ---- the slow path's primitives (stream.lua), each on a session object ------------------- */

static lsession *check_ls(lua_State *L) { return lb_checksession(L, 1); }

static lb_rbuf *check_rb(lua_State *L) {
  lsession *ls = check_ls(L);
  if (!ls->rb) luaL_error(L, "iocore: not a stream session");
  return ls->rb;
}

/* attach(s, write_hwm): s becomes a stream session (its receives are
 * buffered here). */
static int p_attach(lua_State *L) {
  lsession *ls = check_ls(L);
  lua_Integer hwm = luaL_checkinteger(L, 2);
  luaL_argcheck(L, hwm >= 0, 2, "write_hwm must be >= 0");
  if (!ls->rb) {
    lb_rbuf *rb = rb_alloc(L, NULL, 0, sizeof *rb);
    if (!rb) rb_nomem(L, sizeof *rb);
    memset(rb, 0, sizeof *rb);
    ls->rb = rb;
  }
  ls->rb->hwm = (size_t)hwm;
  return 0;
}

/* len(s): the buffered bytes. */
static int p_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)rb_len(check_rb(L)));
  return 1;
}

/* take(s[, n]): the next n buffered bytes (n <= len), or all of them. */
static int p_take(lua_State *L) {
  lsession *ls = check_ls(L);
  lb_rbuf *rb = ls->rb;
  size_t len = rb ? rb_len(rb) : 0;
  size_t n = len;
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer want = luaL_checkinteger(L, 2);
    luaL_argcheck(L, want >= 0 && (lua_Unsigned)want <= len, 2, "more than is buffered");
    n = (size_t)want;
  }
  lua_pushlstring(L, n ? rb->buf + rb->head : "", n);
  if (n) rb_consume(L, ls, n);
  return 1;
}

/* Pushes the piece before a delimiter found at offset e (dl bytes) and
 * consumes it with the delimiter; `line` drops a "\r" before it. */
static void take_piece(lua_State *L, lsession *ls, size_t e, size_t dl, bool line) {
  lb_rbuf *rb = ls->rb;
  const char *p = rb->buf + rb->head;
  size_t n = e;
  if (line && n > 0 && p[n - 1] == '\r') n--;
  lua_pushlstring(L, p, n);
  rb_consume(L, ls, e + dl);
}

/* find(s, delim, max, line): the piece up to delim (not included) if it is
 * buffered within max bytes; false when it cannot be (the delimiter is
 * further than max, or more than max bytes came without it: the buffer is
 * dropped); nil when more data may complete it. */
static int p_find(lua_State *L) {
  lsession *ls = check_ls(L);
  lb_rbuf *rb = ls->rb;
  size_t dl;
  const char *d = luaL_checklstring(L, 2, &dl);
  lua_Integer max = luaL_checkinteger(L, 3);
  bool line = lua_toboolean(L, 4);
  luaL_argcheck(L, dl > 0, 2, "empty delimiter");
  if (!rb || rb_len(rb) == 0) return 0;
  rb_set_delim(L, rb, d, dl);
  ptrdiff_t e = rb_find(rb, rb->scan, d, dl);
  if (e >= 0 && (lua_Integer)e <= max) {
    take_piece(L, ls, (size_t)e, dl, line);
    return 1;
  }
  if (e >= 0 || rb_too_long(rb, d, dl, (size_t)max)) {
    rb_free_bytes(L, rb);
    if (rb->ra_paused) rb_pause(ls, false);
    lua_pushboolean(L, 0);
    return 1;
  }
  rb_scanned(rb, dl);
  return 0;
}

/* park(s, need, max): the coroutine about to yield waits for `need` bytes
 * (an integer), a delimiter within max bytes (a string), or any byte (nil). */
static int p_park(lua_State *L) {
  lsession *ls = check_ls(L);
  lb_rbuf *rb = ls->rb;
  if (!rb) return luaL_error(L, "iocore: not a stream session");
  if (rb_len(rb) == 0) rb_free_bytes(L, rb);
  if (lua_type(L, 2) == LUA_TSTRING) {
    size_t dl;
    const char *d = lua_tolstring(L, 2, &dl);
    rb_set_delim(L, rb, d, dl);
    rb->need = (size_t)luaL_checkinteger(L, 3);
    rb->want = WANT_DELIM;
  } else if (lua_isnoneornil(L, 2)) {
    rb->want = WANT_ANY;
  } else {
    rb->need = (size_t)luaL_checkinteger(L, 2);
    rb->want = WANT_N;
  }
  if (rb->ra_paused) rb_pause(ls, false);
  return 0;
}

/* put(s, data): appends data (a chunk handed to a reader that was gone). */
static int p_put(lua_State *L) {
  lb_rbuf *rb = check_rb(L);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  rb_append(L, rb, p, len);
  return 0;
}

/* own(s, co): co (a coroutine, or nil for none) is the session's handler
 * coroutine until own(s, nil); the session object keeps it alive (its user
 * value LSESSION_UV_STREAM), so a parked handler costs no table entry. */
static int p_own(lua_State *L) {
  lb_rbuf *rb = check_rb(L);
  lua_settop(L, 2);
  rb->owner = lua_tothread(L, 2);
  lua_setiuservalue(L, 1, LSESSION_UV_STREAM);
  return 0;
}

/* owner(s): the session's handler coroutine, or nil. */
static int p_owner(lua_State *L) {
  check_ls(L);
  if (lua_getiuservalue(L, 1, LSESSION_UV_STREAM) != LUA_TTHREAD) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  return 1;
}

/* quick(s): the owner coroutine if it is parked here by the C methods
 * alone (no state table yet), and then no longer: the caller wakes it.
 * nil otherwise. */
static int p_quick(lua_State *L) {
  lsession *ls = check_ls(L);
  lb_rbuf *rb = ls->rb;
  if (!rb || !rb->quick) return 0;
  rb->quick = false;
  rb->want = WANT_NONE;
  return p_owner(L);
}

/* state(s): stream.lua makes its state table for a stream session in the
 * plain state: returns whether it is one (false: no receive buffer), its
 * owner coroutine (or nil), that owner if it is parked here (the table's
 * reader from now on), and whether this side closed it. From now on
 * parking goes through stream.lua. */
static int p_state(lua_State *L) {
  lsession *ls = check_ls(L);
  lb_rbuf *rb = ls->rb;
  if (!rb) {
    lua_pushboolean(L, 0);
    return 1;
  }
  rb->stated = true;
  lua_pushboolean(L, 1);
  p_owner(L);
  if (rb->quick) {
    rb->quick = false;
    lua_pushvalue(L, -1);
  } else {
    lua_pushnil(L);
  }
  lua_pushboolean(L, rb->closing);
  return 4;
}

/* unpark(s): no reader is parked any more. */
static int p_unpark(lua_State *L) {
  lsession *ls = check_ls(L);
  if (ls->rb) {
    ls->rb->want = WANT_NONE;
    ls->rb->quick = false;
  }
  return 0;
}

/* attached(s): the session's write_hwm if it is a stream session, else nil. */
static int p_attached(lua_State *L) {
  lsession *ls = check_ls(L);
  if (!ls->rb) return 0;
  lua_pushinteger(L, (lua_Integer)ls->rb->hwm);
  return 1;
}

/* set_finish(fn): stream.lua's finish(co, ok, err), for wake_owner. */
static int p_set_finish(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &finish_key);
  return 0;
}

/* lc(obj): a light userdata naming the core of a core or session object. */
static int p_lc(lua_State *L) {
  lsession *ls = lb_tosession(L, 1);
  lua_pushlightuserdata(L, ls ? (void *)ls->lc : (void *)lb_checkcore(L, 1));
  return 1;
}

/* want_drain(s): the bytes still queued, and the session's write_hwm;
 * while there are some, an on_drain is asked for once they are all written
 * (ioc_session_want_drain), so a writer waiting for the queue to go down
 * is woken even when the kernel took a large write at once. 0 once the C
 * session is gone. */
static int p_want_drain(lua_State *L) {
  lsession *ls = check_ls(L);
  lua_pushinteger(L, ls->s ? (lua_Integer)ioc_session_want_drain(ls->s) : 0);
  lua_pushinteger(L, ls->rb ? (lua_Integer)ls->rb->hwm : 0);
  return 2;
}

/* closing(s): this side closed it; reads fail with ECLOSED from now on. */
static int p_closing(lua_State *L) {
  lsession *ls = check_ls(L);
  if (ls->rb) ls->rb->closing = true;
  return 0;
}

/* ---- the fast paths ------------------------------------------------------------------------ */

/* Upvalues of the reader closures. */
enum { UP_MT = 1, UP_OWNERS, UP_SLOW, UP_PARK, UP_TRY_PARK, UP_MT_FIELDS };

static int call_slow_m(lua_State *L, int nargs, int method);
static int f_read(lua_State *L);
static int f_read_line(lua_State *L);
static int f_read_until(lua_State *L);
static const lua_CFunction methods[] = {f_read, f_read_line, f_read_until};

/* Which method parked (its index in methods[]) and with how many
 * arguments, in a continuation's context. */
#define CTX(method, nargs) ((lua_KContext)(nargs) * 4 + (method))
#define CTX_METHOD(ctx) ((int)((ctx) % 4))
#define CTX_NARGS(ctx) ((int)((ctx) / 4))

/* Resumed after a park: the stack is the method's arguments, then the
 * values the coroutine was resumed with. None (data came, or the stream
 * ended): the method runs again from the top. A string: the chunk a
 * read() waited for (lb_rbuf_deliver). Another value (the read time-out):
 * the slow path gets it. */
static int resumed(lua_State *L, int status, lua_KContext ctx) {
  LB_UNUSED(status);
  int nargs = CTX_NARGS(ctx);
  if (lua_type(L, nargs + 1) == LUA_TSTRING) { /* read(): the chunk itself (lb_rbuf_deliver) */
    lua_settop(L, nargs + 1);
    return 1;
  }
  if (lua_gettop(L) == nargs || lua_isnil(L, nargs + 1)) {
    lua_settop(L, nargs);
    return methods[CTX_METHOD(ctx)](L);
  }
  lua_settop(L, nargs + 1);
  return call_slow_m(L, nargs, CTX_METHOD(ctx));
}

/* Runs the Lua slow path as slow(wake, args...) with the method's nargs
 * arguments at 1..nargs and `wake` at nargs + 1. It never yields itself:
 * when it has parked the coroutine it returns PARK, and the yield happens
 * here. */
static int call_slow_m(lua_State *L, int nargs, int method) {
  lua_pushvalue(L, lua_upvalueindex(UP_SLOW));
  lua_pushvalue(L, nargs + 1);
  for (int i = 1; i <= nargs; i++) lua_pushvalue(L, i);
  lua_call(L, nargs + 1, LUA_MULTRET);
  int nres = lua_gettop(L) - (nargs + 1);
  if (nres >= 1 && lua_rawequal(L, nargs + 2, lua_upvalueindex(UP_PARK))) {
    lua_settop(L, nargs);
    return lua_yieldk(L, 0, CTX(method, nargs), resumed);
  }
  return nres;
}

static int slow(lua_State *L, int method) {
  int nargs = lua_gettop(L);
  lua_pushnil(L);
  return call_slow_m(L, nargs, method);
}

/* The session at 1 when the fast path may serve it: a stream session that
 * this side has not closed, with no reader parked, read from one of
 * stream.lua's coroutines (the owners table); else NULL. */
static lsession *fast_session(lua_State *L) {
  if (!lua_getmetatable(L, 1)) return NULL;
  bool is = lua_rawequal(L, -1, lua_upvalueindex(UP_MT)) || lua_rawequal(L, -1, lua_upvalueindex(UP_MT_FIELDS));
  lua_pop(L, 1);
  if (!is) return NULL;
  lsession *ls = lua_touserdata(L, 1);
  lb_rbuf *rb = ls->rb;
  if (!rb || rb->closing || rb->want != WANT_NONE) return NULL;
  if (L == rb->owner) return ls;
  if (lua_pushthread(L)) { /* the main thread */
    lua_pop(L, 1);
    return NULL;
  }
  bool owned = lua_rawget(L, lua_upvalueindex(UP_OWNERS)) != LUA_TNIL;
  lua_pop(L, 1);
  return owned ? ls : NULL;
}

/* Nothing to return yet: park the coroutine and yield. The session's owner
 * parks here alone while the session is in the plain state (no state
 * table in stream.lua: no read time-out to arm, the stream has not ended,
 * nobody else reads). With a state table, stream.lua's try_park(s, co)
 * decides; otherwise the slow path does it all. try_park makes no C calls,
 * so a parked coroutine's stack stays as small as the script left it: its
 * frames and this one. */
static int park(lua_State *L, int method, lsession *ls, int want, size_t need, const char *d, size_t dl) {
  int nargs = lua_gettop(L);
  lb_rbuf *rb = ls->rb;
  bool quick = !rb->stated && L == rb->owner;
  if (!quick) {
    if (!rb->stated) return slow(L, method);
    lua_pushvalue(L, lua_upvalueindex(UP_TRY_PARK));
    lua_pushvalue(L, 1);
    lua_pushthread(L);
    lua_call(L, 2, 1);
    bool parked = lua_toboolean(L, -1);
    lua_settop(L, nargs);
    if (!parked) return slow(L, method);
  }
  if (rb_len(rb) == 0) rb_free_bytes(L, rb); /* an idle session holds no buffer */
  if (want == WANT_DELIM) rb_set_delim(L, rb, d, dl);
  rb->want = (uint8_t)want;
  rb->need = need;
  rb->quick = quick;
  if (rb->ra_paused) rb_pause(ls, false);
  return lua_yieldk(L, 0, CTX(method, nargs), resumed);
}

/* s:read(n) / s:read() */
static int f_read(lua_State *L) {
  lsession *ls = fast_session(L);
  if (!ls) return slow(L, 0);
  lb_rbuf *rb = ls->rb;
  size_t len = rb_len(rb), n;
  int t = lua_type(L, 2);
  if (t == LUA_TNONE || t == LUA_TNIL) {
    if (len == 0) return park(L, 0, ls, WANT_ANY, 0, NULL, 0);
    n = len;
  } else {
    int isint;
    lua_Integer want = lua_tointegerx(L, 2, &isint);
    if (t != LUA_TNUMBER || !isint || want <= 0) return slow(L, 0);
    if ((lua_Unsigned)want > len) return park(L, 0, ls, WANT_N, (size_t)want, NULL, 0);
    n = (size_t)want;
  }
  lua_pushlstring(L, rb->buf + rb->head, n);
  rb_consume(L, ls, n);
  return 1;
}

/* read_line / read_until: delim found within max bytes; a wait for it;
 * or the slow path (misuse, EMSGSIZE...). */
static int fast_delim(lua_State *L, int m, lsession *ls, const char *d, size_t dl, int maxarg, bool line) {
  lua_Integer max = LB_RBUF_MAX;
  int t = lua_type(L, maxarg);
  if (t != LUA_TNONE && t != LUA_TNIL) {
    int isint;
    max = lua_tointegerx(L, maxarg, &isint);
    if (t != LUA_TNUMBER || !isint || max < 1) return slow(L, m);
  }
  lb_rbuf *rb = ls->rb;
  ptrdiff_t e = rb_find(rb, 0, d, dl);
  if (e >= 0 && (lua_Integer)e <= max) {
    take_piece(L, ls, (size_t)e, dl, line);
    return 1;
  }
  if (e >= 0 || rb_too_long(rb, d, dl, (size_t)max)) return slow(L, m);
  rb_scanned(rb, dl);
  return park(L, m, ls, WANT_DELIM, (size_t)max, d, dl);
}

static int f_read_line(lua_State *L) {
  lsession *ls = fast_session(L);
  return ls ? fast_delim(L, 1, ls, "\n", 1, 2, true) : slow(L, 1);
}

static int f_read_until(lua_State *L) {
  lsession *ls = fast_session(L);
  size_t dl;
  const char *d;
  if (!ls || lua_type(L, 2) != LUA_TSTRING || (d = lua_tolstring(L, 2, &dl), dl == 0)) return slow(L, 2);
  return fast_delim(L, 2, ls, d, dl, 3, false);
}

/* make_readers(owners, park, try_park, slow_read, slow_read_line,
 * slow_read_until): the three reader methods, each its fast path in front
 * of its slow one. A slow path is called as slow(wake, args...) (wake:
 * nil, or the value the parked coroutine was resumed with) and returns the
 * method's results, or `park` once it has parked the coroutine (the method
 * then yields). try_park(s, co) makes co the session's reader if a plain
 * wait will do, and says whether it did. */
static int p_make_readers(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checkany(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  for (int i = 0; i < 3; i++) {
    luaL_checktype(L, 4 + i, LUA_TFUNCTION);
    luaL_getmetatable(L, LSESSION_MT);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 4 + i);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    luaL_getmetatable(L, LSESSION_FIELDS_MT);
    lua_pushcclosure(L, methods[i], 6);
  }
  return 3;
}

/* ---- write --------------------------------------------------------------------------------- */

static int write_done(lua_State *L, int status, lua_KContext ctx) {
  LB_UNUSED(status);
  LB_UNUSED(ctx);
  return lua_gettop(L);
}

/* The write closure's upvalues: UP_MT, UP_OWNERS, UP_SLOW, then this. */
#define W_MT_FIELDS 4

/* s:write(data): a string that cannot take the send queue past write_hwm
 * is sent at once, from one of stream.lua's coroutines; everything else
 * (arrays, buffers, a full queue, waiting below the mark, misuse) is the
 * slow path's (upvalue 3), which may yield. */
static int f_write(lua_State *L) {
  int nargs = lua_gettop(L);
  lsession *ls = NULL;
  if (nargs == 2 && lua_type(L, 2) == LUA_TSTRING && lua_getmetatable(L, 1)) {
    bool is = lua_rawequal(L, -1, lua_upvalueindex(UP_MT)) || lua_rawequal(L, -1, lua_upvalueindex(W_MT_FIELDS));
    lua_pop(L, 1);
    if (is) ls = lua_touserdata(L, 1);
  }
  if (ls && ls->rb && !ls->closed && ls->s && (L == ls->rb->owner || !lua_pushthread(L))) {
    bool owned = true;
    if (L != ls->rb->owner) {
      owned = lua_rawget(L, lua_upvalueindex(UP_OWNERS)) != LUA_TNIL;
      lua_pop(L, 1);
    }
    size_t len;
    const char *p = lua_tolstring(L, 2, &len);
    size_t hwm = ls->rb->hwm;
    if (owned && (hwm == 0 || ioc_session_pending(ls->s) + len <= hwm)) {
      int rc = ioc_session_send(ls->s, p, len);
      if (rc == 0) {
        lua_pushboolean(L, 1);
        return 1;
      }
      if (rc != IOC_ENOBUFS) return lb_fail(L, rc);
      /* refused, nothing queued: the slow path waits for the drain */
    }
  }
  lua_settop(L, nargs); /* (the main thread pushed above, if it was) */
  lua_pushvalue(L, lua_upvalueindex(UP_SLOW));
  lua_insert(L, 1);
  lua_callk(L, nargs, LUA_MULTRET, 0, write_done);
  return write_done(L, LUA_OK, 0);
}

/* make_writer(owners, slow_write): the write method. */
static int p_make_writer(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_getmetatable(L, LSESSION_MT);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  luaL_getmetatable(L, LSESSION_FIELDS_MT);
  lua_pushcclosure(L, f_write, W_MT_FIELDS);
  return 1;
}

static const luaL_Reg primitives[] = {{"attach", p_attach},   {"len", p_len},         {"take", p_take},
                                      {"find", p_find},       {"park", p_park},       {"unpark", p_unpark},
                                      {"closing", p_closing}, {"own", p_own}, {"owner", p_owner}, {"quick", p_quick}, {"state", p_state}, {"lc", p_lc}, {"attached", p_attached}, {"set_finish", p_set_finish}, {"want_drain", p_want_drain}, {"make_readers", p_make_readers}, {"put", p_put},
                                      {"make_writer", p_make_writer},
                                      {NULL, NULL}};

void lb_rbuf_push_primitives(lua_State *L) {
  luaL_newlib(L, primitives);
  lua_pushinteger(L, LB_RBUF_READ_AHEAD);
  lua_setfield(L, -2, "read_ahead");
  lua_pushinteger(L, LB_RBUF_MAX);
  lua_setfield(L, -2, "max");
}
