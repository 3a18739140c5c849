/* The embedding hooks of iocore.h: the clock, the CPU count, the batch hook,
 * dispatch introspection, walking sessions, closing listeners only, failing
 * a session with a cause, the user slot, listener references, and the
 * documented values of the public constants. */
#include "rec.h"
#include "net.h" /* sizeof(ioc_session_t) */

#include <stdio.h>
#include <stdlib.h>

/* ---- now_ms_is_monotonic_and_cpu_count_positive --------------------------------- */

void test_now_ms_is_monotonic_and_cpu_count_positive(void) {
  uint64_t a = ioc_now_ms();
  sleep_ms(30);
  uint64_t b = ioc_now_ms();
  ASSERT_GE(b, a + 25);
  ASSERT_LT(b, a + (uint64_t)scaled_ms(5000));
  ASSERT_GE(ioc_cpu_count(), 1);
}

/* ---- batch_hook_runs_on_the_dispatching_thread_after_each_batch ------------------- */

typedef struct hook_state {
  ioc_core_t *core;
  atomic_int hooks, jobs, in_dispatch_seen, last_left;
  int left[3];
} hook_state_t;

static void hook_fn(void *ud) {
  hook_state_t *h = (hook_state_t *)ud;
  ASSERT_MSG(ioc_core_in_dispatch(h->core), "the batch hook runs outside dispatch");
  atomic_fetch_add(&h->hooks, 1);
}

static void hook_job(void *arg) {
  hook_state_t *h = (hook_state_t *)arg;
  int i = atomic_fetch_add(&h->jobs, 1);
  if (i < 3) h->left[i] = ioc_core_batch_left();
  if (ioc_core_in_dispatch(h->core)) atomic_fetch_add(&h->in_dispatch_seen, 1);
}

void test_batch_hook_runs_on_the_dispatching_thread_after_each_batch(void) {
  ioc_core_t *core;
  make_core(&core);
  static hook_state_t h;
  memset(&h, 0, sizeof h);
  h.core = core;
  ioc_core_set_batch_hook(core, hook_fn, &h);
  ASSERT_EQ(ioc_core_in_dispatch(core), 0);
  ASSERT_EQ(ioc_core_batch_left(), 0);
  for (int i = 0; i < 3; i++) ASSERT_OK(ioc_core_post(core, hook_job, &h));
  /* the three posts are one batch: the hook runs once, after all of them */
  ASSERT_EQ(ioc_core_dispatch(core, 1000), 3);
  ASSERT_EQ(atomic_load(&h.jobs), 3);
  ASSERT_EQ(atomic_load(&h.in_dispatch_seen), 3);
  ASSERT_EQ(atomic_load(&h.hooks), 1);
  ASSERT_GT(h.left[0], 0);
  ASSERT_GT(h.left[1], 0);
  ASSERT_EQ(h.left[2], 0);
  ASSERT_EQ(ioc_core_in_dispatch(core), 0);
  /* removed: no more calls */
  ioc_core_set_batch_hook(core, NULL, NULL);
  ASSERT_OK(ioc_core_post(core, hook_job, &h));
  ASSERT_EQ(ioc_core_dispatch(core, 1000), 1);
  ASSERT_EQ(atomic_load(&h.hooks), 1);
  ASSERT_CORE_CLEAN(core);
}

/* ---- foreach_session_visits_every_session_and_may_close_it ------------------------- */

static void count_and_close(ioc_session_t *s, void *arg) {
  atomic_int *n = (atomic_int *)arg;
  ASSERT(ioc_session_core(s) != NULL);
  atomic_fetch_add(n, 1);
  ioc_session_close(s);
}

void test_foreach_session_visits_every_session_and_may_close_it(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  char a[IOC_ADDRSTRLEN];
  listener_addr_str(l, a);
  rec_t r[3];
  for (int i = 0; i < 3; i++) {
    rec_init(&r[i], 0);
    ioc_session_callbacks_t cb = rec_callbacks();
    ASSERT_OK(ioc_connect(core, a, strlen(a), &cb, &r[i], NULL, NULL));
  }
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 3 && atomic_load(&r[0].opens) == 1 &&
                       atomic_load(&r[1].opens) == 1 && atomic_load(&r[2].opens) == 1,
             5000);
  atomic_int n;
  atomic_init(&n, 0);
  ioc_core_foreach_session(core, count_and_close, &n);
  ASSERT_EQ(atomic_load(&n), 6);
  WAIT_UNTIL(core, atomic_load(&r[0].closes) == 1 && atomic_load(&r[1].closes) == 1 &&
                       atomic_load(&r[2].closes) == 1 && core_stats(core).active == 0,
             5000);
  for (int i = 0; i < 3; i++) ASSERT_ERR(r[i].close_err, 0);
  atomic_store(&n, 0);
  ioc_core_foreach_session(core, count_and_close, &n);
  ASSERT_EQ(atomic_load(&n), 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  for (int i = 0; i < 3; i++) rec_free(&r[i]);
  rec_server_free(srv);
}

/* ---- close_listeners_leaves_sessions_open ------------------------------------------ */

void test_close_listeners_leaves_sessions_open(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(1, 1);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  ioc_addr_t la = *ioc_listener_address(l);
  sock_t c = tcp_connect(&la);
  sock_set_timeouts(c, 5000);
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 1, 5000);
  ioc_core_close_listeners(core);
  WAIT_UNTIL(core, core_stats(core).sockets == 1, 5000); /* the session's only */
  /* the session still echoes */
  ASSERT_EQ(sock_send_all(c, "ping", 4), 0);
  char b[4];
  sock_set_nonblock(c, true);
  size_t got = 0;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (got < 4 && now_ms() < dl) {
    long k = sock_recv(c, b + got, 4 - got);
    if (k > 0) got += (size_t)k; else pump(core, 5);
  }
  ASSERT_EQ(got, 4);
  ASSERT(memcmp(b, "ping", 4) == 0);
  /* and nothing accepts any more */
  int err = 0;
  sock_t c2 = tcp_connect_err(&la, &err);
  if (c2 != BAD_SOCK) sock_close(c2);
  ASSERT(c2 == BAD_SOCK);
  ASSERT_EQ(atomic_load(&srv->naccepted), 1);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- session_fail_gives_its_cause_to_on_close --------------------------------------- */

void test_session_fail_gives_its_cause_to_on_close(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 5000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ioc_session_fail(srv->recs[0].s, IOC_EPROTONOSUPPORT);
  ioc_session_fail(srv->recs[0].s, IOC_EIO); /* the first cause stays */
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, IOC_EPROTONOSUPPORT);
  /* a reset, not a FIN */
  char b[8];
  long k = sock_recv(c, b, sizeof b);
  ASSERT_MSG(k == IOC_ECONNRESET, "client read after fail: %ld, expected ECONNRESET", k);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- an outbound session to a rec server --------------------------------------------- */

/* A rec server on loopback (*srv, its listener returned) and an outbound
 * session *s to it, recorded in r, with the callbacks cb (rec's, or a
 * variation of them). */
static ioc_listener_t *connect_to_rec_server(ioc_core_t *core, rec_server_t **srv, rec_t *r,
                                             const ioc_session_callbacks_t *cb, ioc_session_t **s) {
  *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, *srv);
  char a[IOC_ADDRSTRLEN];
  listener_addr_str(l, a);
  rec_init(r, 0);
  ASSERT_OK(ioc_connect(core, a, strlen(a), cb, r, NULL, s));
  return l;
}

/* Ends what connect_to_rec_server began: our reference to s and the
 * listener go, the core must close clean, the records are freed. */
static void end_rec_server_and_session(ioc_core_t *core, ioc_listener_t *l, rec_server_t *srv, rec_t *r,
                                       ioc_session_t *s) {
  ioc_session_release(s);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_free(r);
  rec_server_free(srv);
}

/* ---- session_user_slot_starts_null_and_keeps_a_pointer ------------------------------ */

void test_session_user_slot_starts_null_and_keeps_a_pointer(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv;
  rec_t r;
  ioc_session_t *s;
  ioc_session_callbacks_t cb = rec_callbacks();
  ioc_listener_t *l = connect_to_rec_server(core, &srv, &r, &cb, &s);
  ASSERT(ioc_session_user(s) == NULL);
  int mark;
  ioc_session_set_user(s, &mark);
  ASSERT(ioc_session_user(s) == &mark);
  ASSERT(ioc_session_userdata(s) == &r); /* a slot of its own */
  WAIT_UNTIL(core, atomic_load(&r.opens) == 1, 5000);
  ioc_session_close(s);
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 5000);
  ASSERT(ioc_session_user(s) == &mark);
  end_rec_server_and_session(core, l, srv, &r, s);
}

/* ---- callbacks_given_on_the_stack_are_copied ------------------------------------- */

static atomic_int eofs_seen;
static void count_eof(ioc_session_t *s) {
  atomic_fetch_add(&eofs_seen, 1);
  ioc_session_close(s);
}

/* on_open of the test's session: swaps in a set never seen before (rec's
 * callbacks with this file's on_eof) from a struct on this stack, wipes
 * the struct, then counts the open as rec's on_open does. */
static void open_then_swap(ioc_session_t *s, int err) {
  ioc_session_callbacks_t next = rec_callbacks();
  next.on_eof = count_eof;
  ioc_session_set_callbacks(s, &next, ioc_session_userdata(s));
  memset(&next, 0, sizeof next);
  rec_callbacks().on_open(s, err);
}

/* Sessions point to one kept copy of each distinct callback set: what the
 * caller passed may be gone or changed right after the call, for
 * ioc_connect and for ioc_session_set_callbacks with a new set. */
void test_callbacks_given_on_the_stack_are_copied(void) {
  ioc_core_t *core;
  make_core(&core);
  atomic_store(&eofs_seen, 0);
  rec_server_t *srv;
  rec_t r;
  ioc_session_t *s;
  ioc_session_callbacks_t cb = rec_callbacks();
  cb.on_open = open_then_swap;
  ioc_listener_t *l = connect_to_rec_server(core, &srv, &r, &cb, &s);
  memset(&cb, 0, sizeof cb);
  WAIT_UNTIL(core, atomic_load(&r.opens) == 1, 5000);
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 1, 5000);
  ioc_session_t *peer = atomic_load(&srv->recs[0].s);
  ASSERT(peer != NULL);
  ASSERT_OK(ioc_session_shutdown(peer)); /* our side sees the FIN: on_eof, which closes */
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 5000);
  ASSERT_EQ(atomic_load(&eofs_seen), 1);
  ASSERT_EQ(r.close_err, 0);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  end_rec_server_and_session(core, l, srv, &r, s);
}

/* ---- session_is_one_allocation_of_the_size_the_docs_state ----------------------- */

/* An idle connection costs its session struct (the benchmark's memory per
 * idle connection is mostly this), so the C API page states its size. */
void test_session_is_one_allocation_of_the_size_the_docs_state(void) {
#ifdef _WIN32
  ASSERT_C_API_DOC_SAYS("`sizeof(ioc_session_t)` bytes (%d on Linux, %d on Windows,", 312,
                        (int)sizeof(ioc_session_t));
#else
  ASSERT_C_API_DOC_SAYS("`sizeof(ioc_session_t)` bytes (%d on Linux, %d on Windows,",
                        (int)sizeof(ioc_session_t), 344);
#endif
}

/* ---- max_pending_above_4_gib_counts_as_4_gib ------------------------------------- */

/* A session keeps its send-queue limit in 32 bits; a larger one is
 * clamped, as the C API page says, never wrapped to something small. */
void test_max_pending_above_4_gib_counts_as_4_gib(void) {
  ASSERT_C_API_DOC_SAYS("a value above %d GiB − 1 counts as %d GiB − 1", 4, 4);
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_t *l = listen_loopback(core, NULL, NULL, NULL);
  char a[IOC_ADDRSTRLEN];
  listener_addr_str(l, a);
  size_t asks[3] = {(size_t)1 << 20, (size_t)UINT32_MAX + 2, SIZE_MAX};
  size_t want[3] = {(size_t)1 << 20, UINT32_MAX, UINT32_MAX};
  for (int i = 0; i < 3; i++) {
    ioc_session_options_t o;
    memset(&o, 0, sizeof o);
    o.max_pending = asks[i];
    ioc_session_t *s;
    ASSERT_OK(ioc_connect(core, a, strlen(a), NULL, NULL, &o, &s));
    ASSERT_EQ(s->max_pending, want[i]);
    ioc_session_abort(s);
    ioc_session_release(s);
  }
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- listener_close_twice_with_a_reference_is_safe ---------------------------------- */

void test_listener_close_twice_with_a_reference_is_safe(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_t *l = listen_loopback(core, NULL, NULL, NULL);
  ioc_listener_retain(l);
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).sockets == 0 && core_stats(core).ops_inflight == 0, 5000);
  /* closed, port given back, but still valid while retained */
  ASSERT_EQ(core_stats(core).objects, 1);
  ASSERT_NE(ioc_addr_port(ioc_listener_address(l)), 0);
  ioc_listener_close(l); /* a no-op, under ASan too */
  ioc_core_close_listeners(core);
  pump_for(core, 20);
  ASSERT_EQ(core_stats(core).objects, 1);
  ioc_listener_release(l);
  ASSERT_EQ(core_stats(core).objects, 0);
  ASSERT_CORE_CLEAN(core);
}

/* ---- public_constants_match_the_docs ------------------------------------------------- */

/* The C API page states the constants' values: they must be these. */
void test_public_constants_match_the_docs(void) {
  ASSERT_C_API_DOC_SAYS("`IOC_MAX_ACCEPTS` (%d)", IOC_MAX_ACCEPTS);
  ASSERT_C_API_DOC_SAYS("`IOC_DEFAULT_MAX_PENDING` (%d MiB)", (int)(IOC_DEFAULT_MAX_PENDING >> 20));
  ASSERT_C_API_DOC_SAYS("`IOC_DEFAULT_CLOSE_TIMEOUT_MS` (%d ms)", IOC_DEFAULT_CLOSE_TIMEOUT_MS);
  /* and the library enforces them */
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_options_t o;
  memset(&o, 0, sizeof o);
  o.accepts = IOC_MAX_ACCEPTS + 1;
  ioc_listener_t *l;
  ASSERT_ERR(ioc_listen(core, "127.0.0.1:0", 11, &o, NULL, NULL, &l), IOC_EINVAL);
  ASSERT_CORE_CLEAN(core);
}
