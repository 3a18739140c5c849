/* The Lua binding's shared definitions. The binding sees only iocore.h (the
 * public C API), the Lua headers and lplatform.h (its portability layer).
 *
 * Files: lcore.c (module, core object, options), ldispatch.c (event queue,
 * drain loop, protected handler calls, watchdog, run/stop), llistener.c,
 * lsession.c, ltimer.c (one Lua type each), lconnect.c (core:connect).
 *
 * Threads and the lock. One mutex, `lua_lock`, owns the Lua state while run()
 * is active (`running`); outside run() the script owns the state and workers
 * leave events queued. A worker that has a Lua-bound completion pushes an
 * event on the core's queue and then *tries* the lock: whoever holds it
 * drains every event waiting (one lock acquisition per batch), and re-checks
 * the queue after unlocking so no event is left behind. Workers never block
 * on the lock, so the C side (sockets, buffers, re-posted accepts) goes on in
 * parallel while one of them runs Lua. When run()'s thread wants the state
 * back it sets `want_lock`: the drainer stops after the handler in progress
 * and puts the rest of its batch back at the head of the queue.
 *
 * Protection. Everything a worker does to the Lua state runs inside one
 * lua_pcall per drained batch (drain_protected), handlers inside a nested
 * pcall each: an error outside a handler (out of memory turning bytes into a
 * string, making a session object) is reported like a handler error, aborts
 * the session of the event in progress, and the drain goes on with the next
 * event. Nothing on a worker can longjmp past the lock.
 *
 * Order. Per session, the C core guarantees open -> recv... -> close with each
 * callback returning before the next starts; the events are pushed on one
 * FIFO in that order, and handlers run in FIFO order, so the Lua handlers see
 * the same order whichever worker took each completion.
 */
#ifndef IOC_LBIND_H
#define IOC_LBIND_H

#include "iocore.h"
#include "lplatform.h"

#include <lauxlib.h>
#include <lua.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LCORE_MT "iocore.core"
#define LLISTENER_MT "iocore.listener"
#define LSESSION_MT "iocore.session"
/* The metatable of sessions that carry user fields (`s.x = v`): the same
 * methods, but its __index looks at the fields after them. LSESSION_MT's
 * __index is the method table itself (no call per method look-up). */
#define LSESSION_FIELDS_MT "iocore.session+fields"
#define LTIMER_MT "iocore.timer"

#define LB_UNUSED(x) ((void)(x))

/* The watchdog looks every handler_timeout / LB_WATCHDOG_DIVISOR ms, clamped
 * to LB_WATCHDOG_MIN_MS..LB_WATCHDOG_MAX_MS (docs/lua-api.md, "Limits"). */
#define LB_WATCHDOG_DIVISOR 20
#define LB_WATCHDOG_MIN_MS 5
#define LB_WATCHDOG_MAX_MS 200
/* A coroutine resumed by a handler checks the time-out every this many VM
 * instructions (and at every instruction once it has passed). */
#define LB_CO_HOOK_COUNT 1000
/* core:stop()'s default grace, ms (docs/lua-api.md, "core:stop"). */
#define LB_STOP_GRACE_MS 5000
/* send(array): items gathered on the C stack before a heap array is used. */
#define LB_SEND_STACK_ITEMS 16

typedef enum {
  LEV_ACCEPT = 1, /* s accepted by l */
  LEV_CONNECT,    /* outbound s: connect finished (err) */
  LEV_RECV,       /* s received data[len] */
  LEV_DRAIN,      /* s send queue empty */
  LEV_CLOSE,      /* s closed (err) */
  LEV_TIMER,      /* the C timer with this id fired */
  LEV_POST,       /* run posts[id] */
  LEV_EOF,        /* s: the peer sent FIN: on_eof, or a graceful close after the handlers before it */
  LEV_STOP_FLUSH, /* the stop's grace is over: every session's held events are delivered */
  LEV_RESOLVE,    /* core:resolve's answer for posts[id]: err, or data[len] (lresolve.c) */
  LEV_FRAMES      /* s received the messages in data[len], each a frame record (lframing.c) */
} lev_type;

typedef struct lev {
  struct lev *next;
  uint8_t type;
  uint8_t kept;      /* a close the session object now holds: the drain does not free it */
  int err;
  ioc_session_t *s;  /* ACCEPT/CONNECT/RECV/DRAIN/CLOSE/EOF */
  ioc_listener_t *l; /* ACCEPT: holds a listener reference */
  uint64_t id;       /* TIMER/POST */
  size_t len;
  char data[];       /* RECV */
} lev;

/* The binding's one FIFO of events, linked through lev.next: the core's
 * queue, the drain's batch, a session's held events. The binding keeps its
 * own rather than using the core's queue.h: that header is internal to the
 * C library (its names, its node type), and the binding builds against
 * iocore.h alone, like any embedder. No locking here: each owner says which
 * lock guards its FIFO. */
typedef struct lb_fifo {
  lev *head, *tail;
} lb_fifo;

static inline bool lb_fifo_empty(const lb_fifo *q) { return q->head == NULL; }

/* Appends e at the tail. */
static inline void lb_fifo_push(lb_fifo *q, lev *e) {
  e->next = NULL;
  if (q->tail)
    q->tail->next = e;
  else
    q->head = e;
  q->tail = e;
}

/* Puts the chain first..last (linked through next) before the head. */
static inline void lb_fifo_push_front(lb_fifo *q, lev *first, lev *last) {
  last->next = q->head;
  q->head = first;
  if (!q->tail) q->tail = last;
}

/* Takes the head off, or NULL. */
static inline lev *lb_fifo_pop(lb_fifo *q) {
  lev *e = q->head;
  if (e) {
    q->head = e->next;
    if (!q->head) q->tail = NULL;
    e->next = NULL;
  }
  return e;
}

/* Takes everything: the FIFO is left empty, *out has the events in order. */
static inline void lb_fifo_take(lb_fifo *q, lb_fifo *out) {
  *out = *q;
  q->head = q->tail = NULL;
}

/* A receive handed to Lua straight from the backend's buffer (no event). */
typedef struct lb_direct {
  ioc_session_t *s;
  const char *data;
  size_t len;
  bool frames; /* data holds frame records (lframing.c), not one chunk */
} lb_direct;

typedef struct lcore {
  ioc_core_t *core;
  lua_State *T;      /* the thread handlers run on (anchored in the core's table) */
  int self_ref;      /* registry ref of the core's table (see K_* below) */

  lp_mutex_t *lua_lock;
  lp_mutex_t *q_lock;
  lp_waiter_t *waiter; /* run() sleeps on it; stop() and signals wake it */
  lb_fifo queue;        /* session events, posts, the stop's flush; under q_lock */
  lb_fifo timers;       /* timer events, in firing order; under q_lock */
  int queue_n;          /* events in `queue`; under q_lock */
  atomic_int q_len;     /* events in both */
  atomic_int timers_n;  /* events in `timers` (changed under q_lock, read without) */
  atomic_int kick_posted; /* a drain that left timer events posted a kick, not run yet */
  atomic_int want_lock; /* run()'s thread wants lua_lock: drainers give it back */

  /* Under lua_lock: the drained events not processed yet, the event (or
   * direct receive) in progress and its session, for errors outside handlers. */
  lb_fifo batch;
  lev *cur;
  lb_direct *direct;
  ioc_session_t *cur_session;

  int threads;
  bool running;       /* inside run() (the workers own the state); under lua_lock */
  bool closed;
  bool signals;
  atomic_int stop_requested;
  /* stop([grace_ms]): the grace asked for; `stopping` from the stop's start
   * until run() returns (core:stopping()); `stop_closing` once the grace is
   * over and what is left is being closed (held events are then flushed). */
  atomic_uint_fast64_t stop_grace_ms;
  atomic_int stopping;
  atomic_int stop_closing;
  uint64_t close_timeout_ms; /* core option close_timeout: the sessions' default (0 = C's) */
  atomic_int bound_sessions; /* lb_sess alive: sessions whose close event is not freed yet */

  /* handler_timeout: each handler call takes a new sequence number; the
   * watchdog marks the call in progress expired by storing its number. */
  uint64_t handler_timeout_ms;
  atomic_uint_fast64_t handler_started_ms; /* 0 = no handler running */
  atomic_uint_fast64_t handler_seq;
  atomic_uint_fast64_t expired_seq;
  atomic_int hook_armed; /* the watchdog set a hook on T */
  /* The coroutine a handler is running right now through coroutine.resume
   * (NULL: T itself). The watchdog hooks it when the handler expires, so
   * coroutines pay nothing for the time-out until then. co_lock keeps it
   * from being collected while the watchdog hooks it. */
  lp_mutex_t *co_lock;
  lua_State *running_co;

  size_t memory_limit;
  size_t memory_used;
  lua_Alloc prev_alloc;
  void *prev_alloc_ud;

  /* T's stack top when the event being processed began (see stats().stack);
   * `processing` is true meanwhile. Both under lua_lock. */
  int stack_top;
  bool processing;

  uint64_t handler_errors;
  uint64_t next_post_id;
  int live_objects;   /* userdata holding C references; the core is freed at 0 once closed */
} lcore;

/* The binding's part of a C session: the user data of its callbacks, from
 * when the binding takes the session (accept, connect) until its close event
 * is freed. */
typedef struct lb_sess {
  lcore *lc;
  int href;             /* lazy accepted session: registry ref of its handler table; under the lock */
  bool closed;          /* sticky: the script (or the binding for it) closed or aborted it; under the lock */
  atomic_int hold_recv; /* no on_recv handler: the worker that got a receive pauses reading */
} lb_sess;
#define LB_SESS(s) ((lb_sess *)ioc_session_userdata(s))
lb_sess *lb_sess_new(lcore *lc); /* counted in lc->bound_sessions */
void lb_sess_free(lb_sess *st);

/* lrbuf.c: the receive buffer of a stream-style session (see there). */
typedef struct lb_rbuf lb_rbuf;
#define LB_RBUF_READ_AHEAD (64 * 1024) /* buffered with no reader parked before the session pauses */
#define LB_RBUF_MAX 65536              /* read_line / read_until's default max */

/* A session object's user values: 1 the script's fields, 2 its handler
 * table, 3 a stream session's handler coroutine (lrbuf.c: a slot is
 * cheaper than a table entry for each parked session). */
#define LSESSION_NUV 3
#define LSESSION_UV_STREAM 3

/* Userdata payloads. Each holds one reference on its C object from creation
 * to __gc (the only place that drops it), so methods keep working on a
 * closed object; the pointer is NULL only after __gc. */
typedef struct lsession {
  ioc_session_t *s;
  lcore *lc;
  uint64_t id;      /* kept for id() after __gc */
  bool closed;      /* on_close has been delivered (or the core closed) */
  /* Reading flow, under the Lua lock. `paused`: the script's pause();
   * `hold_paused`: paused by the binding because data arrived without an
   * on_recv handler; `c_paused`: what the C session was told. Events that
   * cannot be delivered now (receives while paused or without a handler,
   * and whatever of the session follows them) wait in `held`,
   * in order. */
  bool paused;
  bool hold_paused;
  lb_fifo held;
  uint64_t read_timeout_ms; /* kept for the stream style */
  lb_rbuf *rb;              /* a stream-style session's receive buffer (lrbuf.c), else NULL */
} lsession;

typedef struct llistener {
  ioc_listener_t *l;
  lcore *lc;
  bool closed;      /* closed in C (close(), stop(), core close) */
} llistener;

typedef struct ltimer {
  ioc_timer_t *t;   /* the C timer armed now (our reference); NULL once done or cancelled */
  lcore *lc;        /* NULL once the core closed */
  uint64_t id;      /* ioc_timer_id(t): the key in K_TIMERS */
  uint64_t due;     /* repeating: when the armed C timer falls due (ioc_now_ms) */
  uint64_t interval;
  bool repeat;
} ltimer;

/* The core's table (registry ref self_ref) */
#define K_SESSIONS "sessions"   /* lightuserdata(ioc_session_t*) -> session userdata (open ones) */
#define K_LISTENERS "listeners" /* lightuserdata(ioc_listener_t*) -> listener userdata (open ones) */
#define K_TIMERS "timers"       /* C timer id -> timer userdata (armed) */
#define K_POSTS "posts"         /* id -> function */
#define K_ONERROR "on_error"

/* lcore.c */
lcore *lb_checkcore(lua_State *L, int idx);
void lb_push_registry(lua_State *L, lcore *lc, const char *key); /* pushes the core's table `key` */
int lb_fail(lua_State *L, int code); /* pushes nil, "ECODE: text", "ECODE"; returns 3 */
void lb_push_err(lua_State *L, int err); /* "ECODE: text", or nil for 0 */
void lb_object_gone(lcore *lc);
/* The option reader, for every option table (`opts` at stack index `arg`,
 * 0 = none given). Each returns the field's value or `def` when it is
 * absent (nil), and raises a luaL_argerror naming the field otherwise. */
int lb_opts_arg(lua_State *L, int arg); /* arg if a table there, 0 if none/nil; raises otherwise */
lua_Integer lb_opt_integer(lua_State *L, int arg, const char *field, lua_Integer def, lua_Integer lo,
                           lua_Integer hi);
bool lb_opt_boolean(lua_State *L, int arg, const char *field, bool def);
/* The index in `names` (NULL-terminated) of a string field, or def. */
int lb_opt_enum(lua_State *L, int arg, const char *field, const char *const names[], int def);
/* Pushes a function field (or nil). */
void lb_opt_function(lua_State *L, int arg, const char *field);

/* ldispatch.c */
void lb_push_event(lcore *lc, lev *e);
void lb_queue_event(lcore *lc, lev *e); /* queue only: the drain loop in progress (or run()) takes it */
/* Puts first..last (linked) back where they run next: at the head of the
 * batch in progress when called from a handler, else at the queue's head. */
void lb_requeue_first(lcore *lc, lev *first, lev *last);
void lb_drain(lcore *lc);
void lb_batch_hook(void *ud);
/* Runs the receive under the lock at once if nothing is queued and the lock
 * is free (then drains); false if it did not. */
bool lb_try_direct(lcore *lc, lb_direct *d);
/* Runs the function on top of T's stack with nargs arguments under the
 * handler protections; on error reports it and aborts `s` if given. */
void lb_call(lcore *lc, int nargs, ioc_session_t *s);
/* lb_call with the error handler already on the stack, at index msgh below
 * the function (pushed once by a caller that makes many calls). */
void lb_call_at(lcore *lc, int nargs, ioc_session_t *s, int msgh);
/* The error handler of handler calls: the message with a traceback. */
int lb_msgh(lua_State *L);
/* Reports the error message on top of T (popped) like a handler's: counted,
 * then on_error(msg, session) or stderr. */
void lb_report(lcore *lc, ioc_session_t *s);
/* lchild.c: os.execute / io.popen from a handler start children with the
 * process's usual signal mask, not the worker's. */
void lb_open_child_guard(lua_State *L);
/* Resumes the suspended coroutine co with the nargs values on top of its
 * stack as a handler of its own, without a Lua function between (lrbuf.c
 * wakes a parked stream reader so): handler_timeout applies and the
 * watchdog is told co runs, as for a coroutine.resume from a handler.
 * Returns lua_resume's status; *nres: co's results on its stack. Call it
 * on T under the lock, from the drain (not from inside a handler). */
int lb_resume_handler(lcore *lc, lua_State *co, int nargs, int *nres);
/* Makes a coroutine honour handler_timeout while a handler runs. */
void lb_hook_thread(lua_State *L, lua_State *co);
void lb_open_coroutine_guard(lua_State *L);
void lb_discard_events(lua_State *L, lcore *lc);
int lb_core_run(lua_State *L);
int lb_core_stop(lua_State *L);

/* lsession.c */
void lb_open_session(lua_State *L);
void lb_process(lcore *lc, lev *e); /* one event, under the lock, on lc->T */
void lb_process_direct(lcore *lc, lb_direct *d);
/* Queues e (NULL: could not be made, the session fails with ENOMEM). */
void lb_push_or_fail(lcore *lc, lev *e, ioc_session_t *s);
void lb_recv_one(lcore *lc, lsession *ls, int sidx, int key, int msgh, const char *data, size_t len,
                 bool *synced);
extern const ioc_session_callbacks_t lb_session_framed_cbs, lb_accepted_framed_cbs;
void lb_process_stop_flush(lcore *lc);
void lb_free_event(lev *e);
lev *lb_new_event(int type, ioc_session_t *s, size_t len);
/* The binding ends the session (a handler error, out of memory): it counts
 * as closed by the script, so no on_recv of it runs any more. */
void lb_session_fail(ioc_session_t *s, int err);
void lb_sessions_forget(lua_State *L, lcore *lc);
/* The end of a close event: the session object (if any) is closed and no
 * longer anchored. Allocates nothing: also run when the event failed. */
void lb_close_done(lua_State *L, lcore *lc, ioc_session_t *s); /* core close: drop every session's Lua side */
/* Pushes the session userdata of s (made now for a lazy session), or nil. */
void lb_push_session(lua_State *L, lcore *lc, ioc_session_t *s);
/* The session object at idx (either session metatable), or NULL. */
lsession *lb_tosession(lua_State *L, int idx);
/* lb_tosession, raising luaL_checkudata's error for anything else. */
lsession *lb_checksession(lua_State *L, int idx);
void lb_anchor_session(lua_State *L, lcore *lc, ioc_session_t *s, int htab);
void lb_defer_session(lua_State *L, ioc_session_t *s); /* handler table on top: popped */
/* Before an unprocessed event is dropped (core close): its session's lazy
 * handler reference goes. */
void lb_event_forget(lua_State *L, lev *e);
/* The key of the handler table that carries the read_timeout option
 * (lsession.c, lconnect.c). */
#define LB_READ_TIMEOUT_KEY "read_timeout"
#define LB_OWN_KEY "own" /* marks a handler table as the session's own */
/* lconnect.c */
const char *lb_check_address(lua_State *L, int idx, size_t *len);
/* Reads the session options (listen, connect) of the options table at o;
 * read_timeout goes to *read_ms (kept for the stream style). */
void lb_session_options(lua_State *L, lcore *lc, int o, ioc_session_options_t *so, uint64_t *read_ms);

/* Reads the handler fields (from lb_handler_names[first]) of the options
 * table at arg into a new table (pushed). */
void lb_handlers_from_opts(lua_State *L, int arg, int first);
int lb_core_connect(lua_State *L);
extern const ioc_session_callbacks_t lb_session_cbs;  /* outbound sessions */
extern const ioc_session_callbacks_t lb_accepted_cbs; /* accepted sessions */
extern const char *const lb_handler_names[];

/* lrbuf.c: a received chunk of a stream session (the object at idx) goes
 * into its buffer; its on_recv(s) runs only if the parked reader can go on. */
void lb_rbuf_deliver(lcore *lc, lsession *ls, int idx, const char *data, size_t len);
void lb_rbuf_free(lua_State *L, lsession *ls);       /* the object goes */
void lb_rbuf_push_primitives(lua_State *L);           /* the table stream.lua builds on */
/* lbuffer.c: iocore.buffer objects and core:broadcast */
void lb_open_buffer(lua_State *L);
int lb_buffer_new(lua_State *L);    /* iocore.buffer(str) */
int lb_core_broadcast(lua_State *L); /* core:broadcast(sessions, data) */
/* The C buffer of the iocore.buffer object at idx, or NULL if it is not one. */
ioc_buffer_t *lb_tobuffer(lua_State *L, int idx);

/* lstream.c: loads the pure-Lua part (iocore.stream) into the module table on top, if installed */
void lb_open_lua_part(lua_State *L);

/* Pushes handler `name` of the session userdata at idx (or nil). */
void lb_push_handler(lua_State *L, int idx, const char *name);
bool lb_has_handler(lua_State *L, int idx, const char *name);
bool lb_has_handler_in(lua_State *L, int htab, const char *name); /* a handler table at htab */
/* The sticky fact: the script (or the binding for it) closed or aborted s. */
bool lb_closed_by_script(ioc_session_t *s);

/* lflow.c: pause/resume and holding, shutdown, timeouts{} (see there) */
/* Tells the C session to pause or read after pause()/the hold changed. */
void lb_flow_sync(lsession *ls);
/* Whether an event of `type` for the session object at idx must be held:
 * behind anything held already, a receive while paused or without on_recv,
 * the FIN while paused; never once closed by the script, nothing new once
 * the stop's grace is over. */
bool lb_flow_must_hold(lcore *lc, lsession *ls, int idx, int type);
/* Appends a copy of the event to the held list. */
void lb_flow_hold(lsession *ls, int type, ioc_session_t *s, int err, const char *data, size_t len);
/* Appends the event itself (a close: it carries the binding's reference). */
void lb_flow_keep(lsession *ls, lev *e);
/* Whether the session has no on_recv handler now (workers pause it after a receive). */
void lb_flow_set_hold_recv(ioc_session_t *s, bool no_handler);
/* Hands the held events back to the drain, to run next (not while paused). */
void lb_flow_release(lsession *ls);
/* Closed by the script: not paused any more, a held close gets delivered. */
void lb_flow_unhold(lsession *ls);
void lb_flow_free(lsession *ls); /* the session object goes, or the core closes */
extern const luaL_Reg lb_flow_methods[];
/* lframing.c: the `framing` option (absent: none; misuse raises) and s:send_frame. */
void lb_opt_framing(lua_State *L, int o, ioc_framing_t *fr);
/* The on_recv of framed sessions (worker thread, no Lua): gathers the
 * messages of one receive into one frame-record run, handed on at the
 * core's end mark, under the lock at once or as one LEV_FRAMES event. */
void lb_recv_frame(ioc_session_t *s, const char *data, size_t len);
/* A frame record: the message length (LB_FRAME_HDR bytes), then the bytes. */
#define LB_FRAME_HDR sizeof(uint32_t)
static inline size_t lb_frame_len(const char *rec) {
  uint32_t n;
  memcpy(&n, rec, sizeof n);
  return n;
}
extern const luaL_Reg lb_framing_methods[];
/* lresolve.c: core:resolve(name, callback) and its event. */
int lb_core_resolve(lua_State *L);
void lb_process_resolve(lcore *lc, lev *e);

/* llistener.c */
void lb_open_listener(lua_State *L);
int lb_core_listen(lua_State *L);
void lb_process_accept(lcore *lc, lev *e);
/* Closes every listener of the core in C and in Lua (stop, core close). */
void lb_listeners_close_all(lua_State *L, lcore *lc);

/* ltimer.c */
void lb_open_timer(lua_State *L);
int lb_core_after(lua_State *L);
int lb_core_every(lua_State *L);
void lb_timer_fire(lcore *lc, uint64_t id);
void lb_timers_cancel_all(lua_State *L, lcore *lc);

#endif /* IOC_LBIND_H */
