/* The core: error table, backend choice, dispatch, posted jobs, the worker
 * pool and stopping it, refusing to be destroyed with live objects. */
#include "helpers.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- error_names_and_texts ------------------------------------------------ */

void test_error_names_and_texts(void) {
  ASSERT_STR_EQ(ioc_err_name(IOC_ECONNRESET), "ECONNRESET");
  ASSERT_STR_EQ(ioc_strerror(IOC_ECONNRESET), "connection reset by peer");
  ASSERT_STR_EQ(ioc_err_name(IOC_EOF), "EOF");
  ASSERT_STR_EQ(ioc_err_name(IOC_ECLOSED), "ECLOSED");
  /* every entry of the table maps both ways */
#define CHECK_ENTRY(name, value, text)                   \
  ASSERT_EQ(IOC_##name, value);                          \
  ASSERT_STR_EQ(ioc_err_name(value), #name);            \
  ASSERT_STR_EQ(ioc_strerror(value), text);
  IOC_ERRNO_MAP(CHECK_ENTRY)
#undef CHECK_ENTRY
  /* codes outside the table */
  const int unknown[] = {-3, -7, -4096, -100000, 1, 12345, INT_MIN, INT_MAX, 0};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    ASSERT_STR_EQ(ioc_err_name(unknown[i]), "EUNKNOWN");
    const char *t = ioc_strerror(unknown[i]);
    ASSERT_MSG(t != NULL && t[0] != 0, "ioc_strerror(%d) gives no text", unknown[i]);
  }
#ifdef __linux__
  /* the values are -errno on Linux, so kernel results pass through as they are */
  ASSERT_EQ(IOC_ECONNRESET, -ECONNRESET);
  ASSERT_EQ(IOC_EMFILE, -EMFILE);
  ASSERT_EQ(IOC_ECANCELED, -ECANCELED);
  ASSERT_EQ(IOC_EAGAIN, -EAGAIN);
  ASSERT_EQ(IOC_ETIMEDOUT, -ETIMEDOUT);
#endif
}

/* ---- backends_lists_the_chosen_backend ------------------------------------ */

void test_backends_lists_the_chosen_backend(void) {
  const char *names[8];
  memset(names, 0, sizeof names);
  int n = ioc_backends(names, 8);
  ASSERT_GE(n, 1);
  ASSERT_LE(n, 3);
  int found = 0;
  for (int i = 0; i < n; i++) {
    ASSERT(names[i] != NULL);
    if (strcmp(names[i], g_backend_name) == 0) found = 1;
  }
  ASSERT_MSG(found, "ioc_backends() does not list %s", g_backend_name);
  /* max smaller than the list: only max names are written */
  const char *one[2] = {NULL, "sentinel"};
  ASSERT_EQ(ioc_backends(one, 1), 1);
  ASSERT_STR_EQ(one[0], names[0]);
  ASSERT_STR_EQ(one[1], "sentinel");

  ASSERT_STR_EQ(ioc_backend_name(IOC_BACKEND_IO_URING), "io_uring");
  ASSERT_STR_EQ(ioc_backend_name(IOC_BACKEND_EPOLL), "epoll");
  ASSERT_STR_EQ(ioc_backend_name(IOC_BACKEND_IOCP), "iocp");
  ASSERT_STR_EQ(ioc_backend_name(g_backend_kind), g_backend_name);

  ioc_core_t *core;
  make_core(&core);
  ASSERT_STR_EQ(ioc_core_backend(core), g_backend_name);
  ASSERT_EQ(ioc_core_threads(core), 0);
  ASSERT_CORE_CLEAN(core);

  /* AUTO (no IOCORE_BACKEND in the environment) picks the best one */
#ifdef _WIN32
  _putenv("IOCORE_BACKEND=");
#else
  unsetenv("IOCORE_BACKEND");
#endif
  ioc_core_t *autoc = NULL;
  ASSERT_OK(ioc_core_create(&autoc, NULL));
  ASSERT_STR_EQ(ioc_core_backend(autoc), names[0]);
  ASSERT_EQ(ioc_core_destroy(autoc), 0);
}

/* ---- auto_backend_honours_iocore_backend_env ------------------------------- */

void test_auto_backend_honours_iocore_backend_env(void) {
#ifdef _WIN32
  _putenv("IOCORE_BACKEND=iocp");
#else
  setenv("IOCORE_BACKEND", g_backend_name, 1);
#endif
  ioc_core_t *c = NULL;
  ioc_core_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.backend = IOC_BACKEND_AUTO;
  ASSERT_OK(ioc_core_create(&c, &opts));
  ASSERT_STR_EQ(ioc_core_backend(c), g_backend_name);
  ASSERT_EQ(ioc_core_destroy(c), 0);
  /* an explicit backend is not overridden by the environment */
  const char *names[8];
  int n = ioc_backends(names, 8);
  for (int i = 0; i < n; i++) {
    ioc_backend_kind_t k;
    if (strcmp(names[i], "io_uring") == 0)
      k = IOC_BACKEND_IO_URING;
    else if (strcmp(names[i], "epoll") == 0)
      k = IOC_BACKEND_EPOLL;
    else
      k = IOC_BACKEND_IOCP;
    opts.backend = k;
    ASSERT_OK(ioc_core_create(&c, &opts));
    ASSERT_STR_EQ(ioc_core_backend(c), names[i]);
    ASSERT_EQ(ioc_core_destroy(c), 0);
  }
}

/* ---- dispatch_timeout_returns_zero ------------------------------------------ */

void test_dispatch_timeout_returns_zero(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_EQ(ioc_core_dispatch(core, 0), 0);
  for (int i = 0; i < 3; i++) {
    uint64_t t0 = now_us();
    ASSERT_EQ(ioc_core_dispatch(core, 50), 0);
    uint64_t el = (now_us() - t0) / 1000;
    ASSERT_MSG(el >= 45, "dispatch(50) on an idle core returned after %llu ms", (unsigned long long)el);
    ASSERT_MSG(el < (uint64_t)scaled_ms(1000), "dispatch(50) took %llu ms", (unsigned long long)el);
  }
  /* a listener with accepts posted but no client is still idle */
  ioc_listener_t *l = listen_loopback(core, NULL, NULL, NULL);
  pump_for(core, 20);
  ASSERT_EQ(ioc_core_dispatch(core, 30), 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- post_runs_only_inside_dispatch -------------------------------------- */

typedef struct post_probe {
  atomic_int ran;
  uintptr_t thread;
} post_probe_t;

static void post_probe_cb(void *arg) {
  post_probe_t *p = (post_probe_t *)arg;
  p->thread = thread_self_id();
  atomic_fetch_add(&p->ran, 1);
}

void test_post_runs_only_inside_dispatch(void) {
  ioc_core_t *core;
  make_core(&core);
  post_probe_t p;
  memset(&p, 0, sizeof p);
  ASSERT_OK(ioc_core_post(core, post_probe_cb, &p));
  sleep_ms(20);
  ASSERT_EQ(atomic_load(&p.ran), 0); /* not run by ioc_core_post itself */
  int got = 0;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(2000);
  while (atomic_load(&p.ran) == 0 && now_ms() < dl) {
    int rc = ioc_core_dispatch(core, 100);
    ASSERT_OK(rc);
    got += rc;
  }
  ASSERT_EQ(atomic_load(&p.ran), 1);
  ASSERT_GE(got, 1);
  ASSERT(p.thread == thread_self_id());
  ASSERT_EQ(ioc_core_dispatch(core, 0), 0);
  ASSERT_EQ(atomic_load(&p.ran), 1);
  ASSERT_CORE_CLEAN(core);
}

/* ---- post_from_4_threads_runs_each_exactly_once ------------------------------ */

#define POSTERS 4

typedef struct post_load {
  ioc_core_t *core;
  atomic_int *slots;
  int per_thread;
  int index;
  atomic_int *total;
} post_load_t;

static atomic_int post_total;

static void post_count_cb(void *arg) {
  atomic_fetch_add((atomic_int *)arg, 1);
  atomic_fetch_add(&post_total, 1);
}

static void poster_main(void *arg) {
  post_load_t *pl = (post_load_t *)arg;
  for (int i = 0; i < pl->per_thread; i++) {
    int rc = ioc_core_post(pl->core, post_count_cb, &pl->slots[pl->index * pl->per_thread + i]);
    if (rc != 0) FAILF("ioc_core_post from thread %d: %s", pl->index, ioc_err_name(rc));
  }
}

static void run_posters(ioc_core_t *core, atomic_int *slots, int per) {
  post_load_t pl[POSTERS];
  test_thread_t *th[POSTERS];
  for (int i = 0; i < POSTERS; i++) {
    pl[i].core = core;
    pl[i].slots = slots;
    pl[i].per_thread = per;
    pl[i].index = i;
    th[i] = thread_start(poster_main, &pl[i]);
  }
  for (int i = 0; i < POSTERS; i++) thread_join(th[i]);
}

static void check_slots(atomic_int *slots, int n) {
  for (int i = 0; i < n; i++)
    ASSERT_MSG(atomic_load(&slots[i]) == 1, "post %d ran %d times", i, atomic_load(&slots[i]));
}

void test_post_from_4_threads_runs_each_exactly_once(void) {
  int per = (int)scaled_load(10000, 500);
  int n = per * POSTERS;
  atomic_int *slots = (atomic_int *)calloc((size_t)n, sizeof *slots);
  ASSERT(slots != NULL);
  ioc_core_t *core;
  make_core(&core);

  /* 1. a pool of 2 workers dispatches while 4 other threads post */
  atomic_store(&post_total, 0);
  ASSERT_OK(ioc_core_start(core, 2));
  ASSERT_EQ(ioc_core_threads(core), 2);
  run_posters(core, slots, per);
  WAIT_UNTIL(core, atomic_load(&post_total) >= n, 20000);
  sleep_ms(50);
  ASSERT_EQ(atomic_load(&post_total), n);
  check_slots(slots, n);
  ioc_core_stop(core);
  ioc_core_join(core);

  /* 2. no pool: this thread dispatches while 4 threads post */
  for (int i = 0; i < n; i++) atomic_store(&slots[i], 0);
  atomic_store(&post_total, 0);
  post_load_t pl[POSTERS];
  test_thread_t *th[POSTERS];
  for (int i = 0; i < POSTERS; i++) {
    pl[i].core = core;
    pl[i].slots = slots;
    pl[i].per_thread = per;
    pl[i].index = i;
    th[i] = thread_start(poster_main, &pl[i]);
  }
  WAIT_UNTIL(core, atomic_load(&post_total) >= n, 20000);
  for (int i = 0; i < POSTERS; i++) thread_join(th[i]);
  pump_for(core, 20);
  ASSERT_EQ(atomic_load(&post_total), n);
  check_slots(slots, n);
  ASSERT_CORE_CLEAN(core);
  free(slots);
}

/* ---- stop_wakes_every_worker ----------------------------------------------------- */

typedef struct ext_dispatcher {
  ioc_core_t *core;
  atomic_int done;
  int last_rc;
} ext_dispatcher_t;

static void ext_dispatch_main(void *arg) {
  ext_dispatcher_t *d = (ext_dispatcher_t *)arg;
  for (;;) {
    int rc = ioc_core_dispatch(d->core, -1);
    if (rc < 0) {
      d->last_rc = rc;
      break;
    }
  }
  atomic_store(&d->done, 1);
}

typedef struct joiner {
  ioc_core_t *core;
  atomic_int done;
} joiner_t;

static void joiner_main(void *arg) {
  joiner_t *j = (joiner_t *)arg;
  ioc_core_join(j->core);
  atomic_store(&j->done, 1);
}

static void slow_job(void *arg) {
  (void)arg;
  sleep_ms(100);
}

void test_stop_wakes_every_worker(void) {
  ioc_core_t *core;
  make_core(&core);
  for (int round = 0; round < 3; round++) {
    ASSERT_OK(ioc_core_start(core, 4));
    ASSERT_EQ(ioc_core_threads(core), 4);
    /* two threads outside the pool dispatch with no time-out too */
    ext_dispatcher_t ext[2];
    test_thread_t *et[2];
    for (int i = 0; i < 2; i++) {
      memset(&ext[i], 0, sizeof ext[i]);
      ext[i].core = core;
      et[i] = thread_start(ext_dispatch_main, &ext[i]);
    }
    if (round == 2) {
      /* some workers busy inside callbacks when stop comes */
      for (int i = 0; i < 3; i++) ASSERT_OK(ioc_core_post(core, slow_job, NULL));
    }
    sleep_ms(100); /* everyone is blocked in dispatch(-1) (or busy) */
    uint64_t t0 = now_ms();
    ioc_core_stop(core);
    /* the external dispatchers must return ECANCELED; wait for them before
     * ioc_core_join clears the stop flag */
    for (int i = 0; i < 2; i++) {
      uint64_t dl = now_ms() + (uint64_t)scaled_ms(3000);
      while (!atomic_load(&ext[i].done) && now_ms() < dl) sleep_ms(1);
      ASSERT_MSG(atomic_load(&ext[i].done), "round %d: a non-pool dispatch(-1) was not woken by ioc_core_stop", round);
      thread_join(et[i]);
      ASSERT_ERR(ext[i].last_rc, IOC_ECANCELED);
    }
    /* stopped: dispatch returns ECANCELED at once, whatever the time-out */
    uint64_t t1 = now_ms();
    ASSERT_ERR(ioc_core_dispatch(core, 2000), IOC_ECANCELED);
    ASSERT_LT(now_ms() - t1, 1000);
    joiner_t j;
    j.core = core;
    atomic_store(&j.done, 0);
    test_thread_t *jt = thread_start(joiner_main, &j);
    uint64_t dl = now_ms() + (uint64_t)scaled_ms(3000);
    while (!atomic_load(&j.done) && now_ms() < dl) sleep_ms(1);
    ASSERT_MSG(atomic_load(&j.done), "round %d: ioc_core_join did not return within 3 s of ioc_core_stop: a worker was not woken", round);
    thread_join(jt);
    ASSERT_LT(now_ms() - t0, (uint64_t)scaled_ms(3000));
    ASSERT_EQ(ioc_core_threads(core), 0);
    /* join cleared the stop flag: the core dispatches again */
    ASSERT_EQ(ioc_core_dispatch(core, 0), 0);
  }
  ASSERT_CORE_CLEAN(core);
}

/* ---- stop_from_callback_cancels_dispatch ----------------------------------------- */

static void stop_job(void *arg) { ioc_core_stop((ioc_core_t *)arg); }

void test_stop_from_callback_cancels_dispatch(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_post(core, stop_job, core));
  int rc = 0;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(3000);
  while (now_ms() < dl) {
    rc = ioc_core_dispatch(core, 1000);
    if (rc < 0) break;
  }
  ASSERT_ERR(rc, IOC_ECANCELED);
  ASSERT_ERR(ioc_core_dispatch(core, 0), IOC_ECANCELED);
  ioc_core_join(core); /* no pool; clears the flag */
  ASSERT_EQ(ioc_core_dispatch(core, 0), 0);

  /* the same from a worker of the pool */
  ASSERT_OK(ioc_core_start(core, 2));
  ASSERT_OK(ioc_core_post(core, stop_job, core));
  joiner_t j;
  j.core = core;
  atomic_store(&j.done, 0);
  test_thread_t *jt = thread_start(joiner_main, &j);
  dl = now_ms() + (uint64_t)scaled_ms(3000);
  while (!atomic_load(&j.done) && now_ms() < dl) sleep_ms(1);
  ASSERT_MSG(atomic_load(&j.done), "workers did not stop after ioc_core_stop from a callback");
  thread_join(jt);
  ASSERT_EQ(ioc_core_threads(core), 0);
  ASSERT_CORE_CLEAN(core);
}

/* ---- core_destroy_refuses_while_objects_alive -------------------------------------- */

static atomic_int destroy_test_accepts;

static void count_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  (void)s;
  atomic_fetch_add(&destroy_test_accepts, 1);
}

static void never_cb(ioc_timer_t *t, void *ud) {
  (void)t;
  (void)ud;
}

void test_core_destroy_refuses_while_objects_alive(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_t *l = listen_loopback(core, NULL, count_accept, NULL);
  ASSERT_ERR(ioc_core_destroy(core), IOC_EBUSY);
  /* "does nothing": the core and the listener still work */
  sock_t c = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&destroy_test_accepts) == 1, 5000);
  ASSERT_ERR(ioc_core_destroy(core), IOC_EBUSY);
  sock_close(c);
  ioc_listener_close(l);
  /* a timer held by the caller is a live object too */
  ioc_timer_t *t = NULL;
  ASSERT_OK(ioc_timer_start(core, 100000, 0, never_cb, NULL, &t));
  WAIT_UNTIL(core, core_stats(core).active == 0 && core_stats(core).objects == 1, 5000);
  ASSERT_ERR(ioc_core_destroy(core), IOC_EBUSY);
  ioc_timer_cancel(t);
  ASSERT_CORE_CLEAN(core);
}

/* ---- close_all_closes_listeners_and_sessions ----------------------------------------- */

typedef struct close_all_ctx {
  atomic_int opened, closed;
  atomic_int close_err[8]; /* written after `closed` is counted: atomic */
} close_all_ctx_t;

static close_all_ctx_t ca;

static void ca_open(ioc_session_t *s, int err) {
  (void)s;
  ASSERT_EQ(err, 0);
  atomic_fetch_add(&ca.opened, 1);
}
static void ca_close(ioc_session_t *s, int err) {
  (void)s;
  int i = atomic_fetch_add(&ca.closed, 1);
  if (i < 8) atomic_store(&ca.close_err[i], err);
}
void test_close_all_closes_listeners_and_sessions(void) {
  for (int abortive = 0; abortive < 2; abortive++) {
    memset(&ca, 0, sizeof ca);
    ioc_core_t *core;
    make_core(&core);
    ioc_session_callbacks_t cb = callbacks(ca_open, NULL, NULL, ca_close);
    ioc_listener_t *l = listen_loopback(core, NULL, accept_with_callbacks, &cb);
    ioc_addr_t la = *ioc_listener_address(l);
    sock_t c[4];
    for (int i = 0; i < 4; i++) {
      c[i] = tcp_connect(&la);
      sock_set_timeouts(c[i], 5000);
    }
    WAIT_UNTIL(core, atomic_load(&ca.opened) == 4, 5000);
    ioc_core_close_all(core, abortive);
    if (abortive) WAIT_UNTIL(core, atomic_load(&ca.closed) == 4 && core_stats(core).objects == 0, 5000);
    for (int i = 0; i < 4; i++) {
      char b[16];
      long n;
      sock_set_nonblock(c[i], true);
      uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
      while ((n = sock_recv(c[i], b, sizeof b)) == IOC_EAGAIN && now_ms() < dl) pump(core, 5);
      if (abortive)
        ASSERT_MSG(n == IOC_ECONNRESET, "close_all(abort): client %d recv gave %ld (%s), expected ECONNRESET", i, n, ioc_err_name((int)n));
      else
        ASSERT_MSG(n == 0, "close_all(graceful): client %d recv gave %ld (%s), expected EOF", i, n, n < 0 ? ioc_err_name((int)n) : "data");
      sock_close(c[i]);
    }
    WAIT_UNTIL(core, atomic_load(&ca.closed) == 4 && core_stats(core).objects == 0, 5000);
    if (!abortive)
      for (int i = 0; i < 4; i++) ASSERT_EQ(atomic_load(&ca.close_err[i]), 0);
    /* the listener is gone too: nothing accepts on its port */
    int err = 0;
    sock_t late = tcp_connect_err(&la, &err);
    if (late != BAD_SOCK) sock_close(late);
    ASSERT_MSG(late == BAD_SOCK && err == IOC_ECONNREFUSED, "connect after close_all: %s", late == BAD_SOCK ? ioc_err_name(err) : "connected");
    ASSERT_EQ(atomic_load(&ca.closed), 4);
    ASSERT_CORE_CLEAN(core);
  }
}

/* ---- two_cores_run_independently --------------------------------------------------- */

static atomic_int two_accepts;
static void two_recv(ioc_session_t *s, const char *data, size_t len) { ASSERT_OK(ioc_session_send(s, data, len)); }
static void two_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  ioc_session_callbacks_t cb = callbacks(NULL, two_recv, NULL, NULL);
  ioc_session_set_callbacks(s, &cb, NULL);
  atomic_fetch_add(&two_accepts, 1);
}

static void ping_through(ioc_listener_t *l) {
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 5000);
  ASSERT_EQ(sock_send_all(c, "ping", 4), 0);
  char b[4];
  ASSERT_OK(sock_recv_exact(c, b, 4));
  ASSERT(memcmp(b, "ping", 4) == 0);
  sock_close(c);
}

void test_two_cores_run_independently(void) {
  ioc_core_t *a, *b;
  make_core(&a);
  make_core(&b);
  ASSERT_OK(ioc_core_start(a, 2));
  ASSERT_OK(ioc_core_start(b, 2));
  ioc_listener_t *la = listen_loopback(a, NULL, two_accept, NULL);
  ioc_listener_t *lb = listen_loopback(b, NULL, two_accept, NULL);
  ping_through(la);
  ping_through(lb);
  /* stopping one leaves the other running */
  ioc_core_stop(a);
  ioc_core_join(a);
  ping_through(lb);
  ASSERT_OK(ioc_core_start(a, 1));
  ping_through(la);
  ioc_listener_close(la);
  ioc_listener_close(lb);
  ASSERT_CORE_CLEAN(a);
  ASSERT_CORE_CLEAN(b);
}
