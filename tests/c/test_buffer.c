/* Shared buffers and broadcast: one allocation, atomic counts, references
 * queued on many sessions and written (in part, then the rest) byte-exact,
 * released on every way a session ends, the send rules, and broadcast
 * from any thread to sessions of every worker. */
#include "rec.h"

#include <stdio.h>
#include <stdlib.h>

static ioc_stats_t st(ioc_core_t *core) { return core_stats(core); }

/* The process's live buffers, read through a core made for it (buffers
 * belong to no core: this works after the test's core is gone). */
static uint64_t live_buffers(void) {
  ioc_core_t *c;
  make_core(&c);
  uint64_t n = st(c).buffers;
  ASSERT_CORE_CLEAN(c);
  return n;
}

/* Plain clients reading while the core runs (pumped here, or by a pool). */
typedef struct clients {
  int n;
  sock_t *fd;
  char **buf;
  size_t *got, cap;
  bool *eof;
} clients_t;

static void clients_open(clients_t *c, int n, const ioc_addr_t *to, size_t cap) {
  c->n = n;
  c->cap = cap;
  c->fd = calloc((size_t)n, sizeof *c->fd);
  c->buf = calloc((size_t)n, sizeof *c->buf);
  c->got = calloc((size_t)n, sizeof *c->got);
  c->eof = calloc((size_t)n, sizeof *c->eof);
  ASSERT(c->fd && c->buf && c->got && c->eof);
  for (int i = 0; i < n; i++) {
    c->fd[i] = tcp_connect(to);
    c->buf[i] = malloc(cap ? cap : 1);
    ASSERT(c->buf[i] != NULL);
    sock_set_nonblock(c->fd[i], true);
  }
}

/* Reads what is there on every client; true once each has `want` bytes
 * (or, with want == SIZE_MAX, has seen EOF). */
static bool clients_read(clients_t *c, size_t want) {
  bool all = true;
  for (int i = 0; i < c->n; i++) {
    while (!c->eof[i]) {
      char tmp[65536];
      size_t room = c->cap - c->got[i];
      long r = sock_recv(c->fd[i], room ? c->buf[i] + c->got[i] : tmp, room ? room : sizeof tmp);
      if (r > 0) {
        ASSERT_MSG(room >= (size_t)r, "client %d got more than the %zu bytes expected", i, c->cap);
        c->got[i] += (size_t)r;
        continue;
      }
      if (r == 0 || (r != IOC_EAGAIN)) c->eof[i] = true; /* EOF or reset */
      break;
    }
    if (want == SIZE_MAX ? !c->eof[i] : c->got[i] < want) all = false;
  }
  return all;
}

/* One plain socket: true once the peer closed it (what comes is dropped). */
static bool clients_read_eof_one(sock_t fd) {
  sock_set_nonblock(fd, true);
  for (;;) {
    char tmp[65536];
    long r = sock_recv(fd, tmp, sizeof tmp);
    if (r > 0) continue;
    return r != IOC_EAGAIN;
  }
}

static void clients_close(clients_t *c) {
  for (int i = 0; i < c->n; i++) {
    sock_close(c->fd[i]);
    free(c->buf[i]);
  }
  free(c->fd);
  free(c->buf);
  free(c->got);
  free(c->eof);
}

/* The accepted session whose peer is client socket fd (accepts complete
 * in any order across workers). */
static ioc_session_t *session_of(rec_server_t *srv, sock_t fd) {
  int port = sock_local_port(fd);
  for (int i = 0; i < atomic_load(&srv->naccepted); i++)
    if (srv->recs[i].peer_port == port) return srv->recs[i].s;
  FAILF("no session for the client on port %d", port);
}

/* Waits until the server has accepted n sessions. */
static void wait_accepted(ioc_core_t *core, rec_server_t *srv, int n) {
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == n, 10000);
}

/* ---- buffer_is_one_allocation_with_counts_in_stats ----------------------------------- */

void test_buffer_is_one_allocation_with_counts_in_stats(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_EQ(st(core).buffers, 0);
  ASSERT_EQ(st(core).buffer_bytes, 0);
  ioc_buffer_t *b = ioc_buffer_new("hello", 5);
  ASSERT(b != NULL);
  ASSERT_EQ(ioc_buffer_len(b), 5);
  ASSERT(memcmp(ioc_buffer_data(b), "hello", 5) == 0);
  ASSERT_EQ(st(core).buffers, 1);
  ASSERT_EQ(st(core).buffer_bytes, 5);
  /* a copy: changing the source does not change the buffer */
  char src[3] = {'a', 'b', 'c'};
  ioc_buffer_t *c = ioc_buffer_new(src, 3);
  src[0] = 'z';
  ASSERT(memcmp(ioc_buffer_data(c), "abc", 3) == 0);
  ASSERT_EQ(st(core).buffers, 2);
  ASSERT_EQ(st(core).buffer_bytes, 8);
  ASSERT(ioc_buffer_retain(b) == b);
  ioc_buffer_release(b);
  ASSERT_EQ(st(core).buffers, 2); /* one reference left */
  ioc_buffer_release(b);
  ioc_buffer_release(c);
  ASSERT_EQ(st(core).buffers, 0);
  ASSERT_EQ(st(core).buffer_bytes, 0);
  /* empty buffers are buffers too; NULL is ignored by release */
  ioc_buffer_t *e = ioc_buffer_new(NULL, 0);
  ASSERT(e != NULL);
  ASSERT_EQ(ioc_buffer_len(e), 0);
  ASSERT_EQ(st(core).buffers, 1);
  ioc_buffer_release(e);
  ioc_buffer_release(NULL);
  ASSERT_EQ(st(core).buffers, 0);
  ASSERT(ioc_buffer_new(NULL, 4) == NULL); /* bytes from nowhere */
  ASSERT(ioc_buffer_new("x", SIZE_MAX) == NULL);
  ASSERT_EQ(st(core).buffers, 0);
  ASSERT_CORE_CLEAN(core);
}

/* ---- buffer_counts_are_exact_under_4_threads ---------------------------------------- */

typedef struct {
  ioc_buffer_t *b;
  int rounds;
} churn_t;

static void churn(void *arg) {
  churn_t *c = arg;
  for (int i = 0; i < c->rounds; i++) {
    ioc_buffer_retain(c->b);
    const char *p = ioc_buffer_data(c->b);
    ASSERT(p[0] == 'q');
    ioc_buffer_release(c->b);
  }
  ioc_buffer_release(c->b); /* each thread was handed one reference */
}

void test_buffer_counts_are_exact_under_4_threads(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_buffer_t *b = ioc_buffer_new("q123", 4);
  churn_t c = {b, (int)scaled_load(100000, 1000)};
  test_thread_t *t[4];
  for (int i = 0; i < 4; i++) ioc_buffer_retain(b);
  for (int i = 0; i < 4; i++) t[i] = thread_start(churn, &c);
  for (int i = 0; i < 4; i++) thread_join(t[i]);
  ASSERT_EQ(st(core).buffers, 1); /* ours is the last */
  ioc_buffer_release(b);
  ASSERT_EQ(st(core).buffers, 0);
  ASSERT_EQ(st(core).buffer_bytes, 0);
  ASSERT_CORE_CLEAN(core);
}

/* ---- buffer_to_many_sessions_arrives_byte_exact_through_partial_writes --------------- */

void test_buffer_to_many_sessions_arrives_byte_exact_through_partial_writes(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  enum { N = 16 };
  /* Far above what a socket takes at once while its reader is slow: the
   * buffer goes out in many partial writes, each resuming inside it. */
  size_t big = scaled_load((size_t)8 << 20, (size_t)1 << 20);
  char *data = malloc(big);
  ASSERT(data != NULL);
  pattern_fill(11, 0, data, big);
  size_t total = 3 + big + 3 + big;
  clients_t cl;
  clients_open(&cl, N, ioc_listener_address(l), total);
  wait_accepted(core, srv, N);
  ioc_buffer_t *b = ioc_buffer_new(data, big);
  ASSERT(b != NULL);
  ASSERT_EQ(st(core).buffer_bytes, big);
  for (int i = 0; i < N; i++) {
    ioc_session_t *s = srv->recs[i].s;
    ASSERT_OK(ioc_session_send(s, "<<<", 3));
    ASSERT_OK(ioc_session_send_buffer(s, b));
    ioc_buf_t bufs[2] = {{">>>", 3}, {NULL, 0}};
    ioc_buffer_t *refs[2] = {NULL, b};
    ASSERT_OK(ioc_session_sendv_buffers(s, bufs, refs, 2)); /* copied bytes and a reference, mixed */
    ASSERT_EQ(ioc_session_pending(s) <= total, 1);
  }
  ioc_buffer_release(b); /* the sessions' references keep it */
  ASSERT_EQ(st(core).buffers, 1);
  ASSERT_EQ(st(core).buffer_bytes, big);
  /* read slowly at first: a few KiB per client per round */
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < N; i++) {
      char tmp[4096];
      long r = sock_recv(cl.fd[i], tmp, sizeof tmp);
      if (r > 0) {
        memcpy(cl.buf[i] + cl.got[i], tmp, (size_t)r);
        cl.got[i] += (size_t)r;
      }
    }
    pump(core, 5);
  }
  ASSERT_EQ(st(core).buffers, 1); /* still being written */
  WAIT_UNTIL(core, clients_read(&cl, total), 60000);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(cl.got[i], total);
    ASSERT(memcmp(cl.buf[i], "<<<", 3) == 0);
    ASSERT_EQ(pattern_check(11, 0, cl.buf[i] + 3, big), -1);
    ASSERT(memcmp(cl.buf[i] + 3 + big, ">>>", 3) == 0);
    ASSERT_EQ(pattern_check(11, 0, cl.buf[i] + 6 + big, big), -1);
  }
  /* every reference went with its last byte, the sessions still open */
  WAIT_UNTIL(core, st(core).buffers == 0, 5000);
  ASSERT_EQ(st(core).buffer_bytes, 0);
  ASSERT_EQ(st(core).active, N);
  clients_close(&cl);
  ioc_listener_close(l);
  free(data);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- buffer_references_are_released_on_every_end_path -------------------------------- */

enum { END_ABORT, END_RESET, END_CLOSE, END_FAIL, END_WRITE_TIMEOUT, END_CLOSE_ALL, END_CORE_FREE, END_N };
static const char *const end_names[] = {"abort", "peer reset", "close with data queued", "fail",
                                        "write time-out", "close_all", "core freed"};

void test_buffer_references_are_released_on_every_end_path(void) {
  size_t big = (size_t)32 << 20; /* far more than the kernel takes from a reader that does not read */
  char *data = malloc(big);
  ASSERT(data != NULL);
  memset(data, 'x', big);
  for (int path = 0; path < END_N; path++) {
    ioc_core_t *core;
    make_core(&core);
    rec_server_t *srv = rec_server_new(0, 0);
    ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
    sock_t c = tcp_connect(ioc_listener_address(l));
    wait_accepted(core, srv, 1);
    ioc_session_t *s = srv->recs[0].s;
    ioc_buffer_t *b = ioc_buffer_new(data, big);
    ASSERT(b != NULL);
    ASSERT_OK(ioc_session_send_buffer(s, b));
    ASSERT_OK(ioc_session_send(s, "tail", 4)); /* an owned chunk behind it */
    ioc_buffer_release(b);
    pump_for(core, 50); /* part of it written, the rest queued */
    ASSERT_MSG(st(core).buffers == 1, "%s: the queued buffer is alive before the end", end_names[path]);
    ASSERT_GT(ioc_session_pending(s), 0);
    switch (path) {
    case END_ABORT: ioc_session_abort(s); break;
    case END_RESET:
      sock_set_linger_rst(c);
      sock_close(c);
      c = BAD_SOCK;
      break;
    case END_CLOSE:
      ioc_session_close(s);
      ASSERT_EQ(st(core).buffers, 1); /* a graceful close still sends it */
      {
        size_t got = 0;
        sock_set_nonblock(c, true);
        uint64_t dl = now_ms() + (uint64_t)scaled_ms(30000);
        for (;;) {
          char tmp[65536];
          long r = sock_recv(c, tmp, sizeof tmp);
          if (r > 0) {
            got += (size_t)r;
            continue;
          }
          if (r == 0) break;
          ASSERT_MSG(r == IOC_EAGAIN, "reader: %s", ioc_err_name((int)r));
          ASSERT_MSG(now_ms() < dl, "close: read %zu bytes only", got);
          pump(core, 2);
        }
        ASSERT_GE(got, 4); /* what was written before the 50 ms and all the rest */
      }
      sock_close(c); /* our FIN: the graceful close ends now */
      c = BAD_SOCK;
      break;
    case END_FAIL: ioc_session_fail(s, IOC_EPROTO); break;
    case END_WRITE_TIMEOUT: ASSERT_OK(ioc_session_set_timeout(s, IOC_TIMEOUT_WRITE, 100)); break;
    case END_CLOSE_ALL: ioc_core_close_all(core, 1); break;
    case END_CORE_FREE: break; /* ASSERT_CORE_CLEAN below closes it and frees the core */
    }
    if (path != END_CORE_FREE) {
      WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 20000);
      ASSERT_MSG(st(core).buffers == 0, "%s: the buffer outlived its session", end_names[path]);
      ASSERT_EQ(st(core).buffer_bytes, 0);
    }
    if (c != BAD_SOCK) sock_close(c);
    if (path != END_CLOSE_ALL) ioc_listener_close(l); /* close_all closed it (and it is gone) */
    ASSERT_CORE_CLEAN(core);
    ASSERT_MSG(live_buffers() == 0, "%s: a buffer outlived the core", end_names[path]);
    rec_server_free(srv);
  }
  free(data);
}

/* ---- send_buffer_follows_the_rules_of_send ------------------------------------------ */

void test_send_buffer_follows_the_rules_of_send(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.session.max_pending = 4096;
  ioc_listener_t *l = listen_loopback(core, &lo, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  wait_accepted(core, srv, 1);
  ioc_session_t *s = srv->recs[0].s;
  size_t big = (size_t)16 << 20;
  char *data = calloc(1, big);
  ASSERT(data != NULL);
  ioc_buffer_t *huge = ioc_buffer_new(data, big);
  ioc_buffer_t *small = ioc_buffer_new("0123456789", 10);
  ioc_buffer_t *k3 = ioc_buffer_new(data, 3000);
  /* an empty queue always takes it, however long (16 MiB > max_pending) */
  ASSERT_OK(ioc_session_send_buffer(s, huge));
  size_t pend = ioc_session_pending(s);
  ASSERT_GT(pend, 0);
  /* queued data and the new bytes over max_pending: refused, nothing queued */
  ASSERT_ERR(ioc_session_send_buffer(s, small), IOC_ENOBUFS);
  ioc_buf_t bufs[2] = {{"ab", 2}, {NULL, 0}};
  ioc_buffer_t *refs[2] = {NULL, small};
  ASSERT_ERR(ioc_session_sendv_buffers(s, bufs, refs, 2), IOC_ENOBUFS);
  ASSERT_LE(ioc_session_pending(s), pend); /* nothing of either queued */
  ASSERT_EQ(st(core).buffers, 3);
  /* the client reads it all: on_drain follows the refusal */
  size_t want = big, got = 0;
  sock_set_nonblock(c, true);
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(30000);
  while (got < want) {
    char tmp[65536];
    long r = sock_recv(c, tmp, sizeof tmp);
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    ASSERT_MSG(r == IOC_EAGAIN && now_ms() < dl, "read %zu of %zu", got, want);
    pump(core, 2);
  }
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].drains) >= 1, 5000);
  /* the full length of each buffer counts against max_pending: one 3000-byte
   * buffer on an empty queue, then a second one would make 6000 > 4096 unless
   * the first is out already; pending is exactly the buffers' lengths */
  ASSERT_EQ(ioc_session_pending(s), 0);
  ASSERT_OK(ioc_session_send_buffer(s, k3));
  size_t p1 = ioc_session_pending(s);
  ASSERT(p1 == 0 || p1 == 3000);
  if (p1 == 3000) ASSERT_ERR(ioc_session_send_buffer(s, k3), IOC_ENOBUFS);
  /* a session of another core is skipped by this core's broadcast */
  {
    ioc_core_t *other;
    make_core(&other);
    rec_server_t *osrv = rec_server_new(0, 0);
    ioc_listener_t *ol = listen_loopback(other, NULL, rec_server_accept, osrv);
    sock_t oc = tcp_connect(ioc_listener_address(ol));
    WAIT_UNTIL(other, atomic_load(&osrv->naccepted) == 1, 10000);
    ioc_session_t *os = osrv->recs[0].s;
    ASSERT_EQ(ioc_core_broadcast(core, &os, 1, small), 0);
    ASSERT_EQ(ioc_session_pending(os), 0);
    ASSERT_EQ(ioc_core_broadcast(other, &os, 1, small), 1); /* its own core's takes it */
    char got[10];
    sock_set_timeouts(oc, 10000);
    sock_set_nonblock(oc, false);
    uint64_t odl = now_ms() + (uint64_t)scaled_ms(10000);
    size_t have = 0;
    while (have < sizeof got && now_ms() < odl) {
      pump(other, 5);
      sock_set_nonblock(oc, true);
      long r = sock_recv(oc, got + have, sizeof got - have);
      if (r > 0) have += (size_t)r;
    }
    ASSERT_EQ(have, 10);
    ASSERT(memcmp(got, "0123456789", 10) == 0);
    sock_close(oc);
    ioc_listener_close(ol);
    ASSERT_CORE_CLEAN(other);
    rec_server_free(osrv);
  }
  /* closed: ECLOSED, and nothing retained */
  ioc_session_close(s);
  ASSERT_ERR(ioc_session_send_buffer(s, small), IOC_ECLOSED);
  ioc_buffer_t *one[1] = {small};
  ioc_session_t *ss[1] = {s};
  ASSERT_EQ(ioc_core_broadcast(core, ss, 1, one[0]), 0);
  ioc_buffer_release(huge);
  ioc_buffer_release(small);
  ioc_buffer_release(k3);
  WAIT_UNTIL(core, clients_read_eof_one(c), 20000);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 20000);
  ASSERT_EQ(st(core).buffers, 0);
  ioc_listener_close(l);
  free(data);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- broadcast_reaches_sessions_of_every_worker_and_skips_closing_ones --------------- */

typedef struct {
  ioc_core_t *core;
  ioc_session_t **ss;
  size_t n;
  ioc_buffer_t *b;
  atomic_size_t count;
  atomic_int done;
} bcast_t;

/* Broadcast from a worker's callback (a posted job). */
static void bcast_job(void *arg) {
  bcast_t *bc = arg;
  atomic_store(&bc->count, ioc_core_broadcast(bc->core, bc->ss, bc->n, bc->b));
  atomic_store(&bc->done, 1);
}

void test_broadcast_reaches_sessions_of_every_worker_and_skips_closing_ones(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(test_pool_start(core, 4));
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  enum { N = 200, MSG = 1024 };
  char msg[MSG];
  pattern_fill(5, 0, msg, MSG);
  clients_t cl;
  clients_open(&cl, N, ioc_listener_address(l), 2 * MSG);
  wait_accepted(core, srv, N);
  ioc_session_t *ss[N + 1];
  for (int i = 0; i < N; i++) {
    ss[i] = session_of(srv, cl.fd[i]);
    ioc_session_retain(ss[i]); /* ours, for the broadcasts below */
  }
  ss[N] = NULL; /* skipped */
  /* every 10th closes first: skipped, not counted */
  for (int i = 0; i < N; i += 10) ioc_session_close(ss[i]);
  ioc_buffer_t *b = ioc_buffer_new(msg, MSG);
  ASSERT_EQ(ioc_core_broadcast(core, ss, N + 1, b), N - N / 10); /* from this (foreign) thread */
  bcast_t bc = {core, ss, N + 1, b, 0, 0};
  ASSERT_OK(ioc_core_post(core, bcast_job, &bc)); /* and from a worker */
  WAIT_UNTIL(core, atomic_load(&bc.done) == 1, 10000);
  ASSERT_EQ(atomic_load(&bc.count), N - N / 10);
  ioc_buffer_release(b);
  /* the open ones get the message twice, byte-exact; the closed ones EOF
   * and nothing */
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(30000);
  for (;;) {
    clients_read(&cl, 2 * MSG);
    bool all = true;
    for (int i = 0; i < N; i++)
      if (i % 10 ? cl.got[i] < 2 * MSG : !cl.eof[i]) all = false;
    if (all) break;
    if (now_ms() >= dl) {
      for (int i = 0; i < N; i++)
        if (i % 10 ? cl.got[i] < 2 * MSG : !cl.eof[i])
          FAILF("broadcast not delivered in time: client %d got %zu bytes, eof %d", i, cl.got[i], (int)cl.eof[i]);
    }
    pump(core, 5);
  }
  for (int i = 0; i < N; i++) {
    if (i % 10 == 0) {
      ASSERT_EQ(cl.got[i], 0);
      continue;
    }
    ASSERT_EQ(cl.got[i], 2 * MSG);
    ASSERT_EQ(pattern_check(5, 0, cl.buf[i], MSG), -1);
    ASSERT_EQ(pattern_check(5, 0, cl.buf[i] + MSG, MSG), -1);
  }
  WAIT_UNTIL(core, st(core).buffers == 0, 5000);
  for (int i = 0; i < N; i++) ioc_session_release(ss[i]);
  clients_close(&cl);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- broadcasts_from_4_threads_at_once_arrive_whole_and_in_order ---------------------- */

enum { BT_THREADS = 4, BT_SESSIONS = 32, BT_MSG = 256 };

typedef struct {
  ioc_core_t *core;
  ioc_session_t **ss;
  int id, rounds;
} bthread_t;

/* Each message: its thread, its number, then filler; a buffer of its own. */
static void bthread(void *arg) {
  bthread_t *t = arg;
  for (int r = 0; r < t->rounds; r++) {
    char m[BT_MSG];
    memset(m, 'a' + t->id, sizeof m);
    memcpy(m, &t->id, sizeof t->id);
    memcpy(m + 4, &r, sizeof r);
    ioc_buffer_t *b = ioc_buffer_new(m, sizeof m);
    ASSERT(b != NULL);
    size_t n = ioc_core_broadcast(t->core, t->ss, BT_SESSIONS, b);
    ASSERT_EQ(n, BT_SESSIONS);
    ioc_buffer_release(b);
  }
}

void test_broadcasts_from_4_threads_at_once_arrive_whole_and_in_order(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(test_pool_start(core, 4));
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.session.max_pending = (size_t)1 << 30; /* nothing refused: every message counts */
  ioc_listener_t *l = listen_loopback(core, &lo, rec_server_accept, srv);
  int rounds = (int)scaled_load(200, 20);
  size_t total = (size_t)BT_THREADS * (size_t)rounds * BT_MSG;
  clients_t cl;
  clients_open(&cl, BT_SESSIONS, ioc_listener_address(l), total);
  wait_accepted(core, srv, BT_SESSIONS);
  ioc_session_t *ss[BT_SESSIONS];
  for (int i = 0; i < BT_SESSIONS; i++) ss[i] = srv->recs[i].s;
  bthread_t bt[BT_THREADS];
  test_thread_t *th[BT_THREADS];
  for (int i = 0; i < BT_THREADS; i++) {
    bt[i] = (bthread_t){core, ss, i, rounds};
    th[i] = thread_start(bthread, &bt[i]);
  }
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(60000);
  while (!clients_read(&cl, total)) {
    ASSERT_MSG(now_ms() < dl, "broadcasts not delivered in time");
    pump(core, 2);
  }
  for (int i = 0; i < BT_THREADS; i++) thread_join(th[i]);
  /* each message whole; each thread's messages in its order */
  for (int c = 0; c < BT_SESSIONS; c++) {
    int next[BT_THREADS] = {0};
    for (size_t off = 0; off < total; off += BT_MSG) {
      int id, r;
      memcpy(&id, cl.buf[c] + off, sizeof id);
      memcpy(&r, cl.buf[c] + off + 4, sizeof r);
      ASSERT_MSG(id >= 0 && id < BT_THREADS, "client %d: message at %zu is torn", c, off);
      ASSERT_EQ(r, next[id]);
      next[id]++;
      for (int k = 8; k < BT_MSG; k++) ASSERT(cl.buf[c][off + (size_t)k] == 'a' + id);
    }
  }
  WAIT_UNTIL(core, st(core).buffers == 0, 5000);
  clients_close(&cl);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}
