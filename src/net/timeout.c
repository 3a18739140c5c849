/* Session time-outs: one core-wide sweep instead of a timer per session.
 *
 * A session joins the core's timed list when it first has something to
 * watch (an idle, write or connect time-out, or a graceful close waiting
 * for its peer) and leaves it when it is finalized; sessions without any
 * cost nothing. While the list is not empty one repeating timer runs every
 * SWEEP_MS and looks at each listed session under its lock:
 *
 *   - connect: still connecting connect_timeout_ms after it started;
 *   - PROXY header: not complete IOC_PROXY_HEADER_TIMEOUT_MS after accept;
 *   - idle:    nothing received and no send progress for idle_timeout_ms;
 *   - write:   bytes queued (here or in the kernel) and no send progress
 *              for write_timeout_ms;
 *   - close:   closing gracefully (queue draining, or FIN sent and waiting
 *              for the peer's) and no send progress for close_timeout_ms.
 *
 * "Send progress" is a write into the kernel, or, where the platform tells
 * (Linux: SIOCOUTQ), the kernel's count of unsent plus unacknowledged bytes
 * going down: a slow reader that keeps acknowledging keeps its session,
 * a peer that stopped reading does not. Every time-out resets the session
 * with IOC_ETIMEDOUT, except a close whose every byte (FIN included) the
 * peer has acknowledged: that one is closed without a reset, on_close 0.
 * A session whose FINs are both out but whose last bytes are not yet
 * acknowledged is finished here (on_close 0) as soon as the kernel's count
 * shows only the FIN left. */
#include "net.h"

#include <stdlib.h>

#define SWEEP_MS 100

bool ioc__session_needs_sweep(const ioc_session_t *s) {
  return s->in_header || s->idle_timeout_ms || s->write_timeout_ms ||
         (s->connect_timeout_ms && s->state == IOC__S_CONNECTING) ||
         s->state == IOC__S_DRAINING || s->state == IOC__S_SHUTDOWN;
}

enum { KEEP, EXPIRE, FINISH };

static uint32_t min2(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* Looks at one session. Under s->lock. */
static int check(ioc_session_t *s, uint32_t now) {
  if (s->state >= IOC__S_CLOSING) return KEEP;
  /* (until the header is in, or the connect done, last_recv_ms is when the session was made) */
  if (s->in_header && s->state == IOC__S_OPEN &&
      ioc__ms_since(now, s->last_recv_ms) >= IOC_PROXY_HEADER_TIMEOUT_MS)
    return EXPIRE;
  if (s->state == IOC__S_CONNECTING)
    return s->connect_timeout_ms && ioc__ms_since(now, s->last_recv_ms) >= s->connect_timeout_ms
               ? EXPIRE
               : KEEP;
  bool closing = s->state == IOC__S_DRAINING || s->state == IOC__S_SHUTDOWN;
  int q = -1;
  if (closing || s->write_timeout_ms || s->idle_timeout_ms) {
    uint64_t acked;
    q = ioc__socket_send_state(s->h.fd, &acked);
    if (q >= 0) {
      /* Acknowledged bytes going up is progress even while our writes
       * keep the kernel's queue full; the queue going down covers kernels
       * that do not count them. */
      if ((s->last_unacked >= 0 && q < s->last_unacked) ||
          (acked != UINT64_MAX && (int32_t)((uint32_t)acked - s->last_acked) > 0))
        s->progress_ms = now;
      s->last_unacked = q;
      if (acked != UINT64_MAX) s->last_acked = (uint32_t)acked;
    }
  }
  if (s->state == IOC__S_SHUTDOWN && s->peer_eof && q >= 0 && q <= 1) return FINISH;
  if (closing && ioc__ms_since(now, s->progress_ms) >= s->close_timeout_ms)
    /* The peer acknowledged everything, our FIN too, and never sent its
     * own: nothing of ours is at stake, so the socket is closed, not
     * reset, and the close is clean. Anything else is a loss. */
    return s->state == IOC__S_SHUTDOWN && q == 0 ? FINISH : EXPIRE;
  if (closing) return KEEP;
  if (s->write_timeout_ms && (ioc__session_pending(s) > 0 || q > 0) &&
      ioc__ms_since(now, s->progress_ms) >= s->write_timeout_ms)
    return EXPIRE;
  if (s->idle_timeout_ms &&
      min2(ioc__ms_since(now, s->last_recv_ms), ioc__ms_since(now, s->progress_ms)) >=
          s->idle_timeout_ms)
    return EXPIRE;
  return KEEP;
}

static void sweep_fire(ioc_timer_t *t, void *ud) {
  IOC__UNUSED(t);
  ioc_core_t *core = ud;
  /* Take references under the list's lock, look at each under its own. */
  ioc__mutex_lock(&core->timed_lock);
  size_t n = 0, cap = core->ntimed;
  ioc_session_t **all = cap ? malloc(cap * sizeof *all) : NULL;
  for (ioc_session_t *s = core->timed; s && all && n < cap; s = s->tnext) {
    ioc__object_ref(&s->obj);
    all[n++] = s;
  }
  ioc__mutex_unlock(&core->timed_lock);
  for (size_t i = 0; i < n; i++) {
    ioc_session_t *s = all[i];
    ioc__spin_lock(&s->lock);
    /* The clock is read under the session's lock: a time another thread
     * stored meanwhile (a send's progress) is never after it, which would
     * make ioc__ms_since wrap to ~49 days and expire the session at once. */
    int what = check(s, ioc__now32());
    if (what == FINISH) {
      ioc__session_enter_closing(s, 0);
    } else if (what == EXPIRE) {
      /* no PROXY header in time (or another time-out before it): never announced */
      if (s->in_header) IOC__STAT_ADD(core, proxy_rejected, 1);
      s->aborting = true;
      ioc__session_enter_closing(s, IOC_ETIMEDOUT);
    }
    ioc__spin_unlock(&s->lock);
    ioc__object_unref(&s->obj);
  }
  free(all);
}

void ioc__timed_add(ioc_session_t *s) {
  if (s->timed) return;
  s->timed = true;
  ioc_core_t *core = s->obj.core;
  ioc__mutex_lock(&core->timed_lock);
  s->tprev = NULL;
  s->tnext = core->timed;
  if (s->tnext) s->tnext->tprev = s;
  core->timed = s;
  if (core->ntimed++ == 0 &&
      ioc_timer_start(core, SWEEP_MS, SWEEP_MS, sweep_fire, core, &core->sweep) < 0) {
    core->sweep = NULL;
    ioc__log(core, "time-out sweep: no timer (out of memory): time-outs are not enforced");
  }
  ioc__mutex_unlock(&core->timed_lock);
}

void ioc__timed_remove(ioc_session_t *s) {
  /* (the flag shares a word with bits other threads may set meanwhile) */
  ioc__spin_lock(&s->lock);
  bool timed = s->timed;
  s->timed = false;
  ioc__spin_unlock(&s->lock);
  if (!timed) return;
  ioc_core_t *core = s->obj.core;
  ioc__mutex_lock(&core->timed_lock);
  if (s->tprev) s->tprev->tnext = s->tnext; else core->timed = s->tnext;
  if (s->tnext) s->tnext->tprev = s->tprev;
  s->tprev = s->tnext = NULL;
  if (--core->ntimed == 0 && core->sweep) {
    /* No object of the core's own outlives the last session that needed it. */
    ioc_timer_cancel(core->sweep);
    core->sweep = NULL;
  }
  ioc__mutex_unlock(&core->timed_lock);
}
