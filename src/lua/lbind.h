/* The Lua binding's shared definitions.
 *
 * Threads and the lock. One mutex, `lua_lock`, owns the Lua state. The thread
 * that created the core holds it whenever run() is not active, so the script
 * owns the state before run() and after it returns. run() releases it and
 * starts the workers; a worker that has a Lua-bound completion pushes an event
 * on the core's queue and then *tries* the lock: whoever holds it drains every
 * event waiting (one lock acquisition per batch), and re-checks the queue after
 * unlocking so no event is left behind. Workers never block on the lock, so
 * the C side (sockets, buffers, re-posted accepts) goes on in parallel while
 * one of them runs Lua.
 *
 * Order. Per session, the C core guarantees open -> recv... -> close with each
 * callback returning before the next starts; the events are pushed on one
 * FIFO in that order, and handlers run in FIFO order, so the Lua handlers see
 * the same order whichever worker took each completion.
 */
#ifndef IOC_LBIND_H
#define IOC_LBIND_H

#include "internal.h"
#include "net.h"

#include <lauxlib.h>
#include <lua.h>

#define LCORE_MT "iocore.core"
#define LLISTENER_MT "iocore.listener"
#define LSESSION_MT "iocore.session"
#define LTIMER_MT "iocore.timer"

typedef enum {
  LEV_ACCEPT = 1, /* s accepted by l */
  LEV_CONNECT,    /* outbound s: connect finished (err) */
  LEV_RECV,       /* s received data[len] */
  LEV_DRAIN,      /* s send queue empty */
  LEV_CLOSE,      /* s closed (err) */
  LEV_TIMER,      /* timer id fired */
  LEV_POST,       /* run posts[id] */
  LEV_EOF,        /* s: the peer sent FIN; close gracefully after the handlers before it */
  LEV_KICK        /* nothing: makes a worker drain the queue */
} lev_type;

typedef struct lev {
  struct lev *next;
  uint8_t type;
  int err;
  ioc_session_t *s;  /* ACCEPT/CONNECT/RECV/DRAIN/CLOSE */
  ioc_listener_t *l; /* ACCEPT: holds a listener reference */
  uint64_t id;       /* TIMER/POST */
  size_t len;
  char data[];       /* RECV */
} lev;

typedef struct lcore {
  ioc_core_t *core;
  lua_State *T;      /* the thread handlers run on (anchored in the registry) */
  int self_ref;      /* registry ref of the core's uservalue table */

  ioc__mutex_t lua_lock;
  ioc__mutex_t q_lock;
  lev *q_head, *q_tail;
  atomic_int q_len;

  int threads;
  bool running;       /* inside run() (the workers own the state) */
  bool closed;
  bool signals;
  atomic_int stop_requested;
  int wake_fd;        /* eventfd: stop() wakes run() */

  /* limits */
  uint64_t handler_timeout_ms;
  atomic_uint_fast64_t handler_started_ms; /* 0 = no handler running */
  atomic_int hook_armed;
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

/* Userdata payloads */
typedef struct lsession {
  ioc_session_t *s; /* retained until __gc */
  lcore *lc;
  bool closed;      /* on_close has been delivered */
} lsession;

typedef struct llistener {
  ioc_listener_t *l; /* referenced until __gc */
  lcore *lc;
  bool closed;
} llistener;

typedef struct ltimer {
  ioc_timer_t *t; /* the caller's reference; NULL once cancelled or done */
  lcore *lc;
  uint64_t id;
  bool repeat;
} ltimer;

/* Registry tables per core, in the core's uservalue table */
#define K_SESSIONS "sessions"   /* lightuserdata(ioc_session_t*) -> session userdata (open ones) */
#define K_LISTENERS "listeners" /* lightuserdata(ioc_listener_t*) -> listener userdata (open ones) */

#define K_TIMERS "timers"       /* id -> timer userdata (armed) */
#define K_POSTS "posts"         /* id -> function */
#define K_ONERROR "on_error"

/* lcore.c */
lcore *lb_checkcore(lua_State *L, int idx);
void lb_push_registry(lua_State *L, lcore *lc, const char *key); /* pushes the core's table `key` */
void lb_push_event(lcore *lc, lev *e);
void lb_drain(lcore *lc);
/* Runs fn(lc, arg) under the lock at once if nothing is queued and the lock
 * is free (then drains); false if it did not. */
bool lb_try_direct(lcore *lc, void (*fn)(lcore *, void *), void *arg);
int lb_fail(lua_State *L, int code); /* pushes nil, "ECODE: text", "ECODE"; returns 3 */
/* Runs the function on top of T's stack with nargs arguments under the
 * handler protections; on error reports it and aborts `s` if given. */
void lb_call(lcore *lc, int nargs, ioc_session_t *s);
void lb_object_gone(lcore *lc);

/* lsession.c */
void lb_open_session(lua_State *L);
void lb_process(lcore *lc, lev *e); /* one event, under the lock, on lc->T */
void lb_free_event(lev *e);
int lb_core_listen(lua_State *L);
int lb_core_connect(lua_State *L);
extern const ioc_session_callbacks_t lb_session_cbs;
/* ltimer.c */
void lb_open_timer(lua_State *L);
int lb_core_after(lua_State *L);
int lb_core_every(lua_State *L);
void lb_timers_cancel_all(lua_State *L, lcore *lc);

#endif /* IOC_LBIND_H */
