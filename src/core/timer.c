/* Timers: one binary min-heap per core, ordered by (deadline, start order),
 * run by whichever thread dispatches after a deadline passes. The wait in
 * dispatch is bounded by the earliest deadline, so no backend needs a timer
 * primitive of its own (IOCP included).
 *
 * References: the heap holds one on every armed timer; a caller that asked
 * for the handle holds another. A firing timer leaves the heap, runs, and is
 * re-armed (repeating, not cancelled) or released. */
#include "internal.h"

#include <stdlib.h>

struct ioc_timer {
  ioc__object_t obj;
  ioc_timer_cb cb;
  void *ud;
  uint64_t deadline;
  uint64_t repeat;
  uint64_t seq;
  uint64_t id;
  size_t slot; /* index in the heap, or NOT_ARMED */
  atomic_int state; /* IDLE (armed or between firings), CANCELLED, RUNNING */
};

enum { IDLE = 0, CANCELLED = 1, RUNNING = 2 };

#define NOT_ARMED ((size_t)-1)

static void timer_destroy(ioc__object_t *obj) { free(IOC__CONTAINER_OF(obj, ioc_timer_t, obj)); }

static void timer_dispatch(ioc__object_t *obj, ioc__op_t *op) {
  IOC__UNUSED(obj);
  IOC__UNUSED(op);
}

static const ioc__object_vtbl_t timer_vtbl = {"timer", timer_dispatch, timer_destroy};

static bool before(const ioc_timer_t *a, const ioc_timer_t *b) {
  return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_set(ioc__timer_heap_t *h, size_t i, ioc_timer_t *t) {
  h->items[i] = t;
  t->slot = i;
}

static void sift_up(ioc__timer_heap_t *h, size_t i) {
  ioc_timer_t *t = h->items[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(t, h->items[parent])) break;
    heap_set(h, i, h->items[parent]);
    i = parent;
  }
  heap_set(h, i, t);
}

static void sift_down(ioc__timer_heap_t *h, size_t i) {
  ioc_timer_t *t = h->items[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->count) break;
    if (c + 1 < h->count && before(h->items[c + 1], h->items[c])) c++;
    if (!before(h->items[c], t)) break;
    heap_set(h, i, h->items[c]);
    i = c;
  }
  heap_set(h, i, t);
}

static int heap_push(ioc__timer_heap_t *h, ioc_timer_t *t) {
  if (h->count == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 16;
    ioc_timer_t **items = realloc(h->items, cap * sizeof *items);
    if (!items) return IOC_ENOMEM;
    h->items = items;
    h->cap = cap;
  }
  t->seq = h->seq++;
  heap_set(h, h->count++, t);
  sift_up(h, t->slot);
  return 0;
}

static void heap_remove(ioc__timer_heap_t *h, ioc_timer_t *t) {
  size_t i = t->slot;
  t->slot = NOT_ARMED;
  h->count--;
  if (i == h->count) return;
  heap_set(h, i, h->items[h->count]);
  sift_down(h, i);
  sift_up(h, h->items[i]->slot);
}

int ioc_timer_start(ioc_core_t *core, uint64_t delay_ms, uint64_t repeat_ms, ioc_timer_cb cb,
                    void *ud, ioc_timer_t **out) {
  if (!cb) return IOC_EINVAL;
  ioc_timer_t *t = calloc(1, sizeof *t);
  if (!t) return IOC_ENOMEM;
  ioc__object_init(&t->obj, core, &timer_vtbl); /* this reference is the heap's */
  t->cb = cb;
  t->ud = ud;
  t->repeat = repeat_ms;
  t->slot = NOT_ARMED;
  t->id = atomic_fetch_add(&core->next_id, 1);
  t->deadline = ioc__now_ms() + delay_ms;
  if (out) ioc__object_ref(&t->obj);
  ioc__mutex_lock(&core->timer_lock);
  int rc = heap_push(&core->timers, t);
  bool earliest = rc == 0 && t->slot == 0;
  ioc__mutex_unlock(&core->timer_lock);
  if (rc < 0) {
    if (out) ioc__object_unref(&t->obj);
    ioc__object_unref(&t->obj);
    return rc;
  }
  /* A leader may be asleep with a later deadline than this one. */
  if (earliest) ioc__core_wake_timers(core);
  if (out) *out = t;
  return 0;
}

bool ioc__timer_cancel(ioc_timer_t *t) {
  ioc_core_t *core = t->obj.core;
  bool prevented = atomic_exchange(&t->state, CANCELLED) == IDLE;
  bool was_armed = false;
  ioc__mutex_lock(&core->timer_lock);
  if (t->slot != NOT_ARMED) {
    heap_remove(&core->timers, t);
    was_armed = true;
  }
  ioc__mutex_unlock(&core->timer_lock);
  if (was_armed) ioc__object_unref(&t->obj); /* the heap's reference */
  ioc__object_unref(&t->obj);                /* the caller's */
  return prevented;
}

void ioc_timer_cancel(ioc_timer_t *t) { ioc__timer_cancel(t); }

void ioc_timer_release(ioc_timer_t *t) { ioc__object_unref(&t->obj); }

uint64_t ioc_timer_id(const ioc_timer_t *t) { return t->id; }

int ioc__timers_next_ms(ioc_core_t *core) {
  ioc__mutex_lock(&core->timer_lock);
  int ms = -1;
  if (core->timers_running) {
    /* The runner takes the due ones; it wakes a waiter when it is done so
     * that the next deadline is waited for. */
    core->timers_skipped = true;
  } else if (core->timers.count) {
    uint64_t now = ioc__now_ms(), d = core->timers.items[0]->deadline;
    ms = d <= now ? 0 : (d - now > 0x7fffffff ? 0x7fffffff : (int)(d - now));
  }
  ioc__mutex_unlock(&core->timer_lock);
  return ms;
}

#define FIRE_BATCH 64

/* One thread at a time is the runner: it takes the timers due when it
 * starts, one by one in (deadline, start order), and runs each callback
 * before taking the next, so callbacks start in that order on any number
 * of workers (and a slow one delays the later ones rather than letting
 * them overtake it). A timer re-armed meanwhile is due after the runner's
 * start time, so a repeating timer slower than its period cannot keep the
 * runner for ever. */
int ioc__timers_run(ioc_core_t *core) {
  ioc__timer_heap_t *h = &core->timers;
  int n = 0;
  ioc__mutex_lock(&core->timer_lock);
  if (core->timers_running || !h->count || h->items[0]->deadline > ioc__now_ms()) {
    if (core->timers_running && h->count) core->timers_skipped = true;
    ioc__mutex_unlock(&core->timer_lock);
    return 0;
  }
  core->timers_running = true;
  uint64_t now = ioc__now_ms();
  for (;;) {
    if (n == FIRE_BATCH || !h->count || h->items[0]->deadline > now) break;
    ioc_timer_t *t = h->items[0];
    heap_remove(h, t); /* the heap's reference travels with it */
    ioc__mutex_unlock(&core->timer_lock);
    n++;
    int expect = IDLE;
    bool ran = atomic_compare_exchange_strong(&t->state, &expect, RUNNING);
    if (ran) {
      IOC__STAT_ADD(core, completions, 1);
      t->cb(t, t->ud);
    }
    bool rearmed = false;
    ioc__mutex_lock(&core->timer_lock);
    if (ran && t->repeat) {
      /* A cancel() while cb ran found the timer unarmed and left the heap's
       * reference to us; the exchange decides under the lock. */
      expect = RUNNING;
      if (atomic_compare_exchange_strong(&t->state, &expect, IDLE)) {
        uint64_t later = ioc__now_ms();
        t->deadline += t->repeat;
        if (t->deadline <= now) t->deadline = later + t->repeat; /* no burst after a stall */
        rearmed = heap_push(h, t) == 0;
      }
    }
    if (!rearmed) {
      ioc__mutex_unlock(&core->timer_lock);
      ioc__object_unref(&t->obj);
      ioc__mutex_lock(&core->timer_lock);
    }
  }
  core->timers_running = false;
  /* Others skipped the timers while this thread ran them, and may sleep
   * without a deadline: one of them must look again. */
  bool wake = core->timers_skipped && h->count;
  core->timers_skipped = false;
  ioc__mutex_unlock(&core->timer_lock);
  if (wake) ioc__core_wake_timers(core);
  return n;
}

void ioc__timers_destroy(ioc_core_t *core) {
  /* Only reached when no object is alive, so the heap is empty. */
  free(core->timers.items);
  core->timers.items = NULL;
  core->timers.count = core->timers.cap = 0;
}
