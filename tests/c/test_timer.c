/* Timers: deadline order, equal deadlines in start order, repeat, cancel,
 * release, and timers under a worker pool. */
#include "rec.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- timers_fire_in_order ------------------------------------------------------ */

#define ORDER_N 28

typedef struct order_rec {
  test_mutex_t lock;
  int fired[ORDER_N];
  int nfired;
  uint64_t at_ms[ORDER_N];
  uint64_t t0;
} order_rec_t;

static order_rec_t orec;

typedef struct order_timer {
  int index;
  uint64_t delay;
} order_timer_t;

static void order_cb(ioc_timer_t *t, void *ud) {
  (void)t;
  order_timer_t *ot = (order_timer_t *)ud;
  mutex_lock(&orec.lock);
  if (orec.nfired < ORDER_N) {
    orec.at_ms[ot->index] = now_ms() - orec.t0;
    orec.fired[orec.nfired++] = ot->index;
  }
  mutex_unlock(&orec.lock);
}

/* Read under the lock: the fired list is complete and visible once this
 * says ORDER_N (the callbacks run on worker threads with --threads). */
static int order_count(void) {
  mutex_lock(&orec.lock);
  int n = orec.nfired;
  mutex_unlock(&orec.lock);
  return n;
}

void test_timers_fire_in_order(void) {
  ioc_core_t *core;
  make_core(&core);
  mutex_init(&orec.lock);
  /* distinct delays 10 ms apart, and runs of equal delays */
  static const uint64_t delays[ORDER_N] = {60, 20, 40, 20, 0, 60, 40, 30, 30, 30, 30, 30,
                                           30, 30, 30, 30, 30, 30, 30, 30, 10, 50, 0, 10,
                                           50, 20, 60, 0};
  order_timer_t ot[ORDER_N];
  uint64_t started[ORDER_N];
  orec.t0 = now_ms();
  for (int i = 0; i < ORDER_N; i++) {
    ot[i].index = i;
    ot[i].delay = delays[i];
    started[i] = now_ms() - orec.t0;
    ASSERT_OK(ioc_timer_start(core, delays[i], 0, order_cb, &ot[i], NULL));
  }
  WAIT_UNTIL(core, order_count() == ORDER_N, 5000);
  /* Every pair in firing order must respect: equal delays fire in start
   * order (a later start means an equal or later deadline); otherwise the
   * earlier deadline (start + delay) first. Deadlines within 1 ms of each
   * other are left alone: clocks round differently. */
  int pos[ORDER_N];
  for (int k = 0; k < ORDER_N; k++) pos[orec.fired[k]] = k;
  for (int a = 0; a < ORDER_N; a++) {
    for (int b = 0; b < ORDER_N; b++) {
      if (a == b || pos[a] > pos[b]) continue; /* a fired before b */
      uint64_t da = started[a] + delays[a], db = started[b] + delays[b];
      int wrong = delays[a] == delays[b] ? a > b : da > db + 1;
      if (wrong) {
        char got[512];
        size_t u = 0;
        for (int j = 0; j < ORDER_N; j++)
          u += (size_t)snprintf(got + u, sizeof got - u, "%d(%llu) ", orec.fired[j], (unsigned long long)delays[orec.fired[j]]);
        FAILF("timer %d (delay %llu, started at +%llu ms) fired before timer %d (delay %llu, started at +%llu ms); order: %s", a,
              (unsigned long long)delays[a], (unsigned long long)started[a], b, (unsigned long long)delays[b],
              (unsigned long long)started[b], got);
      }
    }
  }
  for (int i = 0; i < ORDER_N; i++)
    ASSERT_MSG(orec.at_ms[i] + 1 >= started[i] + delays[i], "timer %d (delay %llu) fired after %llu ms", i,
               (unsigned long long)delays[i], (unsigned long long)orec.at_ms[i]);
  /* one-shot timers started with out == NULL own themselves: all freed */
  WAIT_UNTIL(core, core_stats(core).objects == 0, 2000);
  ASSERT_CORE_CLEAN(core);
  mutex_destroy(&orec.lock);
}

/* ---- repeating_timer_repeats_and_cancel_stops_it ---------------------------------- */

typedef struct rep {
  atomic_int count;
  int cancel_at; /* > 0: the callback cancels its own timer at this count */
  _Atomic(ioc_timer_t *) self;
  /* written by the callback on a worker while the test reads them */
  _Atomic uint64_t first_ms, last_ms;
  uint64_t t0;
} rep_t;

static void rep_cb(ioc_timer_t *t, void *ud) {
  rep_t *r = (rep_t *)ud;
  /* the times before the count: a test that sees count n sees run n's time
   * (one runner at a time: the runs of one timer never overlap) */
  uint64_t at = now_ms() - r->t0;
  if (atomic_load(&r->count) == 0) r->first_ms = at;
  r->last_ms = at;
  int n = atomic_fetch_add(&r->count, 1) + 1;
  if (r->cancel_at > 0 && n == r->cancel_at) {
    ASSERT(t == r->self);
    ioc_timer_cancel(t);
  }
}

void test_repeating_timer_repeats_and_cancel_stops_it(void) {
  ioc_core_t *core;
  make_core(&core);
  rep_t a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  ioc_timer_t *ta = NULL;
  a.t0 = now_ms();
  ASSERT_OK(ioc_timer_start(core, 30, 10, rep_cb, &a, &ta));
  ASSERT(ta != NULL);
  /* b cancels itself from its own callback on the 3rd run */
  b.cancel_at = 3;
  b.t0 = now_ms();
  ioc_timer_t *bt = NULL;
  ASSERT_OK(ioc_timer_start(core, 5, 5, rep_cb, &b, &bt));
  atomic_store(&b.self, bt);
  WAIT_UNTIL(core, atomic_load(&a.count) >= 6, 5000);
  ASSERT_MSG(a.first_ms + 1 >= 30, "first run after %llu ms, delay 30", (unsigned long long)a.first_ms);
  /* 6 runs: at least 30 + 5 * 10 ms */
  ASSERT_MSG(a.last_ms + 2 >= 80, "6 runs of a 10 ms repeat after 30 ms took only %llu ms", (unsigned long long)a.last_ms);
  ioc_timer_cancel(ta);
  int frozen = atomic_load(&a.count);
  pump_for(core, 100);
  ASSERT_EQ(atomic_load(&a.count), frozen);
  ASSERT_EQ(atomic_load(&b.count), 3);
  ASSERT_CORE_CLEAN(core);
}

/* ---- timer_cancel_before_deadline_never_fires ------------------------------------- */

static void count_cb(ioc_timer_t *t, void *ud) {
  (void)t;
  atomic_fetch_add((atomic_int *)ud, 1);
}

void test_timer_cancel_before_deadline_never_fires(void) {
  ioc_core_t *core;
  make_core(&core);
  atomic_int fired;
  atomic_store(&fired, 0);
  ioc_timer_t *t1 = NULL, *t2 = NULL, *t3 = NULL;
  ASSERT_OK(ioc_timer_start(core, 50, 0, count_cb, &fired, &t1));
  ASSERT_OK(ioc_timer_start(core, 0, 0, count_cb, &fired, &t2));
  ASSERT_OK(ioc_timer_start(core, 500, 500, count_cb, &fired, &t3)); /* cancelled after one dispatch */
  ioc_timer_cancel(t1); /* before any dispatch */
  ioc_timer_cancel(t2); /* delay 0, but not yet dispatched */
  pump_for(core, 10);
  ioc_timer_cancel(t3);
  pump_for(core, 120);
  ASSERT_EQ(atomic_load(&fired), 0);
  ASSERT_EQ(core_stats(core).objects, 0);
  ASSERT_CORE_CLEAN(core);
}

/* ---- timer_release_keeps_it_running ----------------------------------------------- */

void test_timer_release_keeps_it_running(void) {
  ioc_core_t *core;
  make_core(&core);
  atomic_int fired;
  atomic_store(&fired, 0);
  ioc_timer_t *t = NULL;
  ASSERT_OK(ioc_timer_start(core, 20, 0, count_cb, &fired, &t));
  ioc_timer_release(t); /* still fires, then frees itself */
  WAIT_UNTIL(core, atomic_load(&fired) == 1, 2000);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 2000);
  pump_for(core, 50);
  ASSERT_EQ(atomic_load(&fired), 1);

  /* a fired one-shot still held by the caller stays an object until released */
  ASSERT_OK(ioc_timer_start(core, 0, 0, count_cb, &fired, &t));
  WAIT_UNTIL(core, atomic_load(&fired) == 2, 2000);
  ioc_timer_release(t);
  ASSERT_CORE_CLEAN(core);
}

/* ---- timers_on_4_workers_fire_exactly_once ---------------------------------------- */

void test_timers_on_4_workers_fire_exactly_once(void) {
  int n = (int)scaled_load(2000, 200);
  atomic_int *slots = (atomic_int *)calloc((size_t)n, sizeof *slots);
  ASSERT(slots != NULL);
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 4));
  uint64_t seed = 42;
  for (int i = 0; i < n; i++)
    ASSERT_OK(ioc_timer_start(core, rng_range(&seed, 0, 50), 0, count_cb, &slots[i], NULL));
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(10000);
  for (int i = 0; i < n; i++) {
    while (atomic_load(&slots[i]) == 0) {
      ASSERT_MSG(now_ms() < dl, "timer %d of %d never fired", i, n);
      sleep_ms(1);
    }
  }
  sleep_ms(60);
  for (int i = 0; i < n; i++) ASSERT_MSG(atomic_load(&slots[i]) == 1, "timer %d fired %d times", i, atomic_load(&slots[i]));
  ASSERT_CORE_CLEAN(core);
  free(slots);
}

/* ---- timer_cancel_from_another_thread_stops_it ------------------------------------ */

void test_timer_cancel_from_another_thread_stops_it(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 4));
  enum { N = 16 };
  atomic_int counts[N];
  ioc_timer_t *t[N];
  for (int i = 0; i < N; i++) {
    atomic_store(&counts[i], 0);
    ASSERT_OK(ioc_timer_start(core, 1, 1, count_cb, &counts[i], &t[i]));
  }
  for (int i = 0; i < N; i++) {
    uint64_t dl = now_ms() + (uint64_t)scaled_ms(3000);
    while (atomic_load(&counts[i]) < 3) {
      ASSERT_MSG(now_ms() < dl, "repeating timer %d ran %d times in 3 s", i, atomic_load(&counts[i]));
      sleep_ms(1);
    }
  }
  int after[N];
  for (int i = 0; i < N; i++) {
    ioc_timer_cancel(t[i]);
    after[i] = atomic_load(&counts[i]);
  }
  sleep_ms(50);
  for (int i = 0; i < N; i++) {
    /* a run already under way on a worker when cancel returned may still
     * count once; nothing after that */
    int c = atomic_load(&counts[i]);
    ASSERT_MSG(c <= after[i] + 1, "timer %d ran %d more times after ioc_timer_cancel returned", i, c - after[i]);
  }
  ASSERT_CORE_CLEAN(core);
}

/* ---- timer_ids_are_never_reused ------------------------------------------------------ */

void test_timer_ids_are_never_reused(void) {
  ioc_core_t *core;
  make_core(&core);
  enum { N = 200 };
  uint64_t ids[N];
  atomic_int fired;
  atomic_store(&fired, 0);
  for (int round = 0; round < 2; round++) {
    ioc_timer_t *t[N / 2];
    for (int i = 0; i < N / 2; i++) {
      ASSERT_OK(ioc_timer_start(core, round ? 0 : 100000, 0, count_cb, &fired, &t[i]));
      ids[round * (N / 2) + i] = ioc_timer_id(t[i]);
    }
    if (round == 1) WAIT_UNTIL(core, atomic_load(&fired) == N / 2, 2000);
    /* freed timers leave room for new ones: their ids still must not come back */
    for (int i = 0; i < N / 2; i++) {
      if (round == 0)
        ioc_timer_cancel(t[i]);
      else
        ioc_timer_release(t[i]);
    }
    pump_for(core, 10);
  }
  for (int i = 0; i < N; i++)
    for (int j = 0; j < i; j++) ASSERT_MSG(ids[i] != ids[j], "timers %d and %d share id %llu", i, j, (unsigned long long)ids[i]);
  ASSERT_CORE_CLEAN(core);
}

/* ---- timer_started_from_callback_fires --------------------------------------------- */

typedef struct chain {
  ioc_core_t *core;
  atomic_int links;
  ioc_timer_t *victim;
  atomic_int victim_fired;
} chain_t;

static void chain_cb(ioc_timer_t *t, void *ud) {
  (void)t;
  chain_t *c = (chain_t *)ud;
  int n = atomic_fetch_add(&c->links, 1) + 1;
  if (n == 1) {
    /* cancel another pending timer from inside a callback */
    ioc_timer_cancel(c->victim);
    c->victim = NULL;
  }
  if (n < 5) ASSERT_OK(ioc_timer_start(c->core, (uint64_t)n, 0, chain_cb, c, NULL));
}

void test_timer_started_from_callback_fires(void) {
  ioc_core_t *core;
  make_core(&core);
  chain_t c;
  memset(&c, 0, sizeof c);
  c.core = core;
  ASSERT_OK(ioc_timer_start(core, 30, 0, count_cb, &c.victim_fired, &c.victim));
  ASSERT_OK(ioc_timer_start(core, 0, 0, chain_cb, &c, NULL));
  WAIT_UNTIL(core, atomic_load(&c.links) == 5, 3000);
  pump_for(core, 60);
  ASSERT_EQ(atomic_load(&c.links), 5);
  ASSERT_EQ(atomic_load(&c.victim_fired), 0);
  ASSERT_CORE_CLEAN(core);
}

/* ---- timers_fire_in_deadline_order_on_4_workers ------------------------------------ */

/* Each timer's deadline is known to lie in [before + delay, after + delay]
 * (the clock read around its start). Timer a must start its callback
 * before timer b when a's latest possible deadline is earlier than b's
 * earliest, or when both are exactly known, equal, and a started first. */
typedef struct dl_timer {
  uint64_t lo, hi; /* deadline bounds */
  int start_index;
  struct dl_state *st;
} dl_timer_t;

typedef struct dl_state {
  atomic_int next;
  atomic_int done; /* callbacks that have written their slot */
  int *fired; /* start indexes in callback-start order */
} dl_state_t;

static void dl_cb(ioc_timer_t *t, void *ud) {
  (void)t;
  dl_timer_t *o = (dl_timer_t *)ud;
  int k = atomic_fetch_add(&o->st->next, 1);
  o->st->fired[k] = o->start_index;
  if (o->start_index % 8 == 0) sleep_ms(1); /* a slower callback: later ones must not overtake it */
  atomic_fetch_add(&o->st->done, 1);
}

void test_timers_fire_in_deadline_order_on_4_workers(void) {
  enum { N = 300 };
  static dl_timer_t ts[N];
  static int fired[N];
  static dl_state_t st;
  atomic_init(&st.next, 0);
  atomic_init(&st.done, 0);
  st.fired = fired;
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 4));
  uint64_t seed = 7;
  for (int i = 0; i < N; i++) {
    uint64_t delay = 100 + 5 * rng_range(&seed, 0, 3);
    ts[i].st = &st;
    ts[i].start_index = i;
    uint64_t before = ioc_now_ms();
    ASSERT_OK(ioc_timer_start(core, delay, 0, dl_cb, &ts[i], NULL));
    uint64_t after = ioc_now_ms();
    ts[i].lo = before + delay;
    ts[i].hi = after + delay;
  }
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(20000);
  while (atomic_load(&st.done) < N) {
    ASSERT_MSG(now_ms() < dl, "%d of %d timers fired", atomic_load(&st.done), N);
    sleep_ms(5);
  }
  int exact_ties = 0;
  for (int x = 0; x < N; x++) {
    for (int y = x + 1; y < N; y++) {
      const dl_timer_t *a = &ts[fired[x]], *b = &ts[fired[y]]; /* a ran first */
      bool b_due_first = b->hi < a->lo;
      bool tie = a->lo == a->hi && b->lo == b->hi && a->lo == b->lo;
      if (tie) exact_ties++;
      ASSERT_MSG(!b_due_first, "timer %d (deadline %llu) ran after timer %d (deadline %llu)",
                 b->start_index, (unsigned long long)b->hi, a->start_index,
                 (unsigned long long)a->lo);
      ASSERT_MSG(!(tie && b->start_index < a->start_index),
                 "timers %d and %d have the same deadline but ran out of start order",
                 b->start_index, a->start_index);
    }
  }
  fprintf(stderr, "timer order: %d timers on 4 workers in order (%d exactly tied pairs)\n", N,
          exact_ties);
  ASSERT_GT(exact_ties, 0);
  ASSERT_CORE_CLEAN(core);
}

/* ---- busy_timers_and_posts_leave_sockets_served ------------------------------------------ */

/* Work that is due at every dispatch round: repeating timers slower than
 * their interval (each round finds them due again), or a post that posts
 * itself again. */
typedef struct busy_work {
  atomic_int stop;
  atomic_int runs;
  ioc_core_t *core;
} busy_work_t;

static void busy_timer_cb(ioc_timer_t *t, void *ud) {
  (void)t;
  atomic_fetch_add(&((busy_work_t *)ud)->runs, 1);
  sleep_ms(2);
}

static void busy_post(void *arg) {
  busy_work_t *w = (busy_work_t *)arg;
  atomic_fetch_add(&w->runs, 1);
  sleep_ms(2);
  if (!atomic_load(&w->stop)) ASSERT_OK(ioc_core_post(w->core, busy_post, w));
}

/* One worker keeps the work above due at every round; a client's bytes are
 * echoed all the same: each round looks at the loop's sockets (without
 * waiting) after running timers or posts. They were reaped only by a round
 * that found nothing else to do, i.e. never. */
static void busy_work_leaves_sockets_served(bool timers) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(test_pool_start(core, 1));
  busy_work_t w;
  memset(&w, 0, sizeof w);
  w.core = core;
  ioc_timer_t *ts[4] = {NULL};
  if (timers) {
    for (int i = 0; i < 4; i++) ASSERT_OK(ioc_timer_start(core, 0, 1, busy_timer_cb, &w, &ts[i]));
  } else {
    ASSERT_OK(ioc_core_post(core, busy_post, &w));
  }
  while (atomic_load(&w.runs) < 4) sleep_ms(1);
  rec_server_t *srv = rec_server_new(0, 1);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, scaled_ms(10000));
  char got[5] = {0};
  for (int i = 0; i < 3; i++) {
    ASSERT_OK(sock_send_all(c, "ping", 4));
    int rc = sock_recv_exact(c, got, 4);
    ASSERT_MSG(rc == 0, "echo %d of 3 not received (%s) while %s kept every round busy (%d runs)", i + 1,
               ioc_err_name(rc), timers ? "slow repeating timers" : "a re-posting post", atomic_load(&w.runs));
    ASSERT_STR_EQ(got, "ping");
  }
  sock_close(c);
  if (timers)
    for (int i = 0; i < 4; i++) ioc_timer_cancel(ts[i]);
  atomic_store(&w.stop, 1);
  ioc_listener_close(l);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 10000);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

void test_slow_repeating_timers_leave_sockets_served(void) { busy_work_leaves_sockets_served(true); }

void test_reposting_post_leaves_sockets_served(void) { busy_work_leaves_sockets_served(false); }
