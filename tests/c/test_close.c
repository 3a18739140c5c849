/* Closing: peer FIN, graceful close after queued data, abort, peer resets
 * during recv and during a large send, SIGPIPE, and closing sessions with
 * operations in flight from callbacks and from other threads.
 *
 * Error codes pinned here: a peer reset seen by a pending receive closes
 * with IOC_ECONNRESET; a reset that hits a send may surface as
 * IOC_ECONNRESET or IOC_EPIPE (which one depends on whether the send or
 * the receive notices first), so both are accepted there. */
#include "rec.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct reader {
  sock_t s;
  char *buf;
  size_t cap, got;
  int err;
  atomic_int done;
} reader_t;

static void reader_main(void *arg) {
  reader_t *rd = (reader_t *)arg;
  rd->err = sock_recv_until_eof(rd->s, rd->buf, rd->cap, &rd->got);
  atomic_store(&rd->done, 1);
}

/* A client socket with a small receive buffer, so queued data stays queued. */
static sock_t slow_client(const ioc_addr_t *to) {
  sock_t c = socket(to->u.family, SOCK_STREAM, 0);
  ASSERT(c != BAD_SOCK);
  sock_set_rcvbuf(c, 16384);
  ASSERT_MSG(connect(c, (const struct sockaddr *)to->u.bytes, (int)to->len) == 0, "connect: %s", ioc_err_name(sock_last_error()));
  sock_set_timeouts(c, 15000);
  return c;
}

/* Finds the server rec whose session's peer port is the client's port
 * (by the port noted at accept: other sessions may be gone already). */
static rec_t *rec_for_client(rec_server_t *srv, sock_t c) {
  int port = sock_local_port(c);
  int n = atomic_load(&srv->naccepted);
  for (int i = 0; i < n; i++)
    if (srv->recs[i].peer_port == port) return &srv->recs[i];
  FAILF("no accepted session has peer port %d", port);
}

/* ---- peer_fin_closes_with_zero_after_all_data ------------------------------------ */

void test_peer_fin_closes_with_zero_after_all_data(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(1, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  size_t n = 1u << 20;
  char *data = (char *)malloc(n);
  pattern_fill(3, 0, data, n);
  for (int i = 0; i < 3; i++) {
    sock_t c = tcp_connect(ioc_listener_address(l));
    size_t len = i == 0 ? 0 : i == 1 ? 1 : n;
    ASSERT_EQ(sock_send_all(c, data, len), 0);
    if (i == 2)
      sock_shutdown_write(c); /* half-close first, then close */
    sock_close(c);
    rec_t *r = &srv->recs[i];
    WAIT_UNTIL(core, atomic_load(&r->closes) == 1, 10000);
    ASSERT_ERR(r->close_err, 0);
    ASSERT_EQ(atomic_load(&r->opens), 1);
    ASSERT_EQ(atomic_load(&r->total), len);
    ASSERT_EQ(pattern_check(3, 0, r->buf, r->len), -1);
  }
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(data);
  rec_server_free(srv);
}

/* ---- graceful_close_delivers_queued_data_before_fin -------------------------------- */

void test_graceful_close_delivers_queued_data_before_fin(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = slow_client(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ioc_session_t *s = srv->recs[0].s;
  size_t chunk = 65536, total = 8u << 20;
  char *buf = (char *)malloc(chunk);
  for (size_t off = 0; off < total; off += chunk) {
    pattern_fill(17, off, buf, chunk);
    ASSERT_OK(ioc_session_send(s, buf, chunk));
  }
  pump_for(core, 20);
  ASSERT_MSG(ioc_session_pending(s) > 0, "8 MiB to a client that does not read left nothing pending");
  ioc_session_close(s);
  ASSERT(ioc_session_closed(s) != 0);
  ASSERT_ERR(ioc_session_send(s, "x", 1), IOC_ECLOSED);
  ioc_buf_t one = {"y", 1};
  ASSERT_ERR(ioc_session_sendv(s, &one, 1), IOC_ECLOSED);
  ioc_session_close(s); /* twice is harmless */
  pump_for(core, 50);
  ASSERT_EQ(atomic_load(&srv->recs[0].closes), 0); /* still flushing */
  reader_t rd;
  memset(&rd, 0, sizeof rd);
  rd.s = c;
  rd.cap = total + chunk;
  rd.buf = (char *)malloc(rd.cap);
  test_thread_t *th = thread_start(reader_main, &rd);
  WAIT_UNTIL(core, atomic_load(&rd.done), 20000);
  thread_join(th);
  ASSERT_MSG(rd.err == 0, "client read ended with %s after %zu of %zu bytes, expected EOF after all", ioc_err_name(rd.err), rd.got, total);
  ASSERT_EQ(rd.got, total);
  ASSERT_EQ(pattern_check(17, 0, rd.buf, rd.got), -1);
  sock_close(c); /* our FIN ends the close without waiting out the linger */
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(buf);
  free(rd.buf);
  rec_server_free(srv);
}

/* ---- graceful_close_ends_within_linger_when_peer_stays_open ----------------------- */

/* After FIN the session reads until the peer's FIN, at most 5 s (the linger
 * documented in docs/c-api.md); a peer that never closes must not keep it
 * alive longer. */
void test_graceful_close_ends_within_linger_when_peer_stays_open(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ASSERT_OK(ioc_session_send(srv->recs[0].s, "data", 4));
  ioc_session_close(srv->recs[0].s);
  uint64_t t0 = now_ms();
  char b[8];
  sock_set_nonblock(c, true);
  size_t got = 0;
  long n;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(3000);
  while ((n = sock_recv(c, b + got, sizeof b - got)) != 0 && now_ms() < dl) {
    if (n > 0) got += (size_t)n;
    pump(core, 5);
  }
  ASSERT_MSG(n == 0 && got == 4, "client: %zu bytes, then %s", got, n == 0 ? "EOF" : ioc_err_name((int)n));
  /* the client stays open and silent */
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 8000);
  uint64_t took = now_ms() - t0;
  fprintf(stderr, "linger: on_close(%d) %llu ms after close with a silent peer\n", srv->recs[0].close_err,
          (unsigned long long)took);
  ASSERT_LE(took, (uint64_t)scaled_ms(7000));
  /* Where the kernel tells (not IOCP), the peer acknowledged everything,
   * our FIN too: a close without a reset, and a clean one. */
  if (g_backend_kind != IOC_BACKEND_IOCP) ASSERT_ERR(srv->recs[0].close_err, 0);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- abort_drops_queued_data_and_resets ------------------------------------------- */

void test_abort_drops_queued_data_and_resets(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = slow_client(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ioc_session_t *s = srv->recs[0].s;
  size_t total = 16u << 20;
  char *buf = (char *)malloc(total);
  pattern_fill(19, 0, buf, total);
  ASSERT_OK(ioc_session_send(s, buf, total));
  pump_for(core, 100);
  ASSERT_MSG(ioc_session_pending(s) > 0, "16 MiB to a client that does not read left nothing pending");
  ioc_session_abort(s);
  ASSERT(ioc_session_closed(s) != 0);
  ASSERT_ERR(ioc_session_send(s, "x", 1), IOC_ECLOSED);
  ioc_session_abort(s);
  ioc_session_close(s);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  pump_for(core, 20);
  ASSERT_EQ(atomic_load(&srv->recs[0].closes), 1);
  /* the client gets what was already in flight, then a reset: not EOF */
  size_t got = 0;
  int err = sock_recv_until_eof(c, NULL, 0, &got);
  ASSERT_MSG(err == IOC_ECONNRESET, "client after abort: %s after %zu bytes, expected ECONNRESET", err == 0 ? "EOF" : ioc_err_name(err), got);
  ASSERT_LT(got, total);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(buf);
  rec_server_free(srv);
}

/* ---- peer_reset_during_recv_closes_once ------------------------------------------- */

void test_peer_reset_during_recv_closes_once(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  enum { N = 10 };
  sock_t c[N];
  for (int i = 0; i < N; i++) c[i] = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == N, 5000);
  for (int i = 0; i < N; i++) WAIT_UNTIL(core, atomic_load(&srv->recs[i].opens) == 1, 5000);
  pump_for(core, 20); /* receives are posted */
  for (int i = 0; i < N; i++) {
    rec_t *r = rec_for_client(srv, c[i]);
    if (i % 2) ASSERT_EQ(sock_send_all(c[i], "some data", 9), 0);
    sock_set_linger_rst(c[i]);
    sock_close(c[i]);
    WAIT_UNTIL(core, atomic_load(&r->closes) == 1, 5000);
    ASSERT_MSG(r->close_err == IOC_ECONNRESET, "session %d: on_close(%d %s) after a peer reset, expected ECONNRESET", i, r->close_err, ioc_err_name(r->close_err));
  }
  pump_for(core, 50);
  for (int i = 0; i < N; i++) ASSERT_EQ(atomic_load(&srv->recs[i].closes), 1);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- peer_reset_during_large_send_closes_once ------------------------------------- */

void test_peer_reset_during_large_send_closes_once(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  enum { N = 8 };
  sock_t c[N];
  for (int i = 0; i < N; i++) c[i] = slow_client(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == N, 5000);
  size_t total = 8u << 20;
  char *buf = (char *)malloc(total);
  pattern_fill(23, 0, buf, total);
  for (int i = 0; i < N; i++) {
    WAIT_UNTIL(core, atomic_load(&srv->recs[i].opens) == 1, 5000);
    ASSERT_OK(ioc_session_send(srv->recs[i].s, buf, total));
  }
  pump_for(core, 100);
  for (int i = 0; i < N; i++) {
    rec_t *r = rec_for_client(srv, c[i]);
    ASSERT_MSG(ioc_session_pending(r->s) > 0, "session %d: nothing pending", i);
    if (i % 2) { /* read a little first: a send completes mid-stream */
      char tmp[4096];
      ASSERT_GT(sock_recv(c[i], tmp, sizeof tmp), 0);
    }
    sock_set_linger_rst(c[i]);
    sock_close(c[i]);
    WAIT_UNTIL(core, atomic_load(&r->closes) == 1, 5000);
    ASSERT_MSG(r->close_err == IOC_ECONNRESET || r->close_err == IOC_EPIPE,
               "session %d: on_close(%d %s) after a peer reset during a send, expected ECONNRESET or EPIPE", i,
               r->close_err, ioc_err_name(r->close_err));
  }
  pump_for(core, 50);
  for (int i = 0; i < N; i++) ASSERT_EQ(atomic_load(&srv->recs[i].closes), 1);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(buf);
  rec_server_free(srv);
}

/* ---- send_to_closed_peer_does_not_raise_sigpipe ----------------------------------- */

static void flood_drain(ioc_session_t *s) {
  static char chunk[65536];
  for (int i = 0; i < 4; i++)
    if (ioc_session_send(s, chunk, sizeof chunk) != 0) break;
}
static atomic_int flood_closed;
static void flood_close(ioc_session_t *s, int err) {
  (void)s;
  (void)err;
  atomic_fetch_add(&flood_closed, 1);
}
static void flood_open(ioc_session_t *s, int err) {
  ASSERT_EQ(err, 0);
  flood_drain(s);
}
void test_send_to_closed_peer_does_not_raise_sigpipe(void) {
  /* The runner leaves SIGPIPE at its default in the test process: if the
   * library writes to a closed socket without MSG_NOSIGNAL, this process
   * dies of it. */
  ioc_core_t *core;
  make_core(&core);
  ioc_session_callbacks_t cb = callbacks(flood_open, NULL, flood_drain, flood_close);
  ioc_listener_t *l = listen_loopback(core, NULL, accept_with_callbacks, &cb);
  for (int i = 0; i < 20; i++) {
    sock_t c = tcp_connect(ioc_listener_address(l));
    char tmp[1024];
    if (i % 2) {
      pump_for(core, 5);
      sock_set_timeouts(c, 2000);
      ASSERT_GT(sock_recv(c, tmp, sizeof tmp), 0);
    }
    if (i % 4 == 3) sock_shutdown_write(c);
    sock_close(c);
    WAIT_UNTIL(core, atomic_load(&flood_closed) == i + 1, 5000);
  }
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- close_sessions_with_ops_in_flight_frees_everything ---------------------------- */

/* (b): on_recv queues a reply and then closes or aborts at once. */
static atomic_int cb_closed;
static void reply_then_end(ioc_session_t *s, const char *data, size_t len) {
  static char reply[512 * 1024];
  ASSERT(len >= 1);
  int abortive = data[0] == 'A';
  ASSERT_OK(ioc_session_send(s, reply, sizeof reply));
  if (abortive)
    ioc_session_abort(s);
  else
    ioc_session_close(s);
  ASSERT_ERR(ioc_session_send(s, "x", 1), IOC_ECLOSED);
}
static void end_on_open(ioc_session_t *s, int err) {
  ASSERT_EQ(err, 0);
  uintptr_t mode = (uintptr_t)ioc_session_userdata(s);
  if (mode == 1) ioc_session_close(s);
  if (mode == 2) ioc_session_abort(s);
}
static void count_close(ioc_session_t *s, int err) {
  (void)s;
  (void)err;
  atomic_fetch_add(&cb_closed, 1);
}
static atomic_int accept_seq;
static void closing_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  int i = atomic_fetch_add(&accept_seq, 1);
  ioc_session_callbacks_t cb = callbacks(end_on_open, reply_then_end, NULL, count_close);
  /* the first 10 sessions end in on_open (close / abort), the rest in on_recv */
  ioc_session_set_callbacks(s, &cb, (void *)(uintptr_t)(i < 10 ? 1 + i % 2 : 0));
}

/* (c): streaming clients, sessions retained, closed from this thread */
#define STREAMERS 30
static ioc_session_t *retained[STREAMERS];
static atomic_int nretained;
static void stream_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  rec_server_accept(l, s, ud);
  ioc_session_retain(s);
  int i = atomic_fetch_add(&nretained, 1);
  ASSERT(i < STREAMERS);
  retained[i] = s;
}

typedef struct streamer {
  ioc_addr_t addr;
  sock_t socks[STREAMERS];
  atomic_int connected, stop;
  int ended;
} streamer_t;

static void streamer_main(void *arg) {
  streamer_t *st = (streamer_t *)arg;
  static char out[32768], in[65536];
  struct pollfd pfd[STREAMERS];
  int live[STREAMERS];
  for (int i = 0; i < STREAMERS; i++) {
    st->socks[i] = tcp_connect(&st->addr);
    sock_set_nonblock(st->socks[i], true);
    live[i] = 1;
  }
  atomic_store(&st->connected, 1);
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(20000);
  while (st->ended < STREAMERS && now_ms() < dl) {
    for (int i = 0; i < STREAMERS; i++) {
      pfd[i].fd = st->socks[i];
      pfd[i].events = live[i] ? (short)(POLLIN | POLLOUT) : 0;
      pfd[i].revents = 0;
    }
    if (sock_poll(pfd, STREAMERS, 10) <= 0) continue;
    for (int i = 0; i < STREAMERS; i++) {
      if (!live[i]) continue;
      if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        long n = sock_recv(st->socks[i], in, sizeof in);
        if (n == 0 || (n < 0 && n != IOC_EAGAIN)) {
          live[i] = 0;
          st->ended++;
          continue;
        }
      }
      if ((pfd[i].revents & POLLOUT) && !atomic_load(&st->stop)) {
#ifdef _WIN32
        send(st->socks[i], out, sizeof out, 0);
#else
        send(st->socks[i], out, sizeof out, MSG_NOSIGNAL);
#endif
      }
    }
  }
  for (int i = 0; i < STREAMERS; i++) sock_close(st->socks[i]);
}

void test_close_sessions_with_ops_in_flight_frees_everything(void) {
  ioc_core_t *core;
  make_core(&core);

  /* (a) no pool: sends stuck in flight to clients that do not read; half
   * closed gracefully, half aborted, from outside any callback */
  enum { NA = 20 };
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c[NA];
  for (int i = 0; i < NA; i++) c[i] = slow_client(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == NA, 5000);
  size_t total = 1u << 20;
  char *buf = (char *)malloc(total);
  pattern_fill(29, 0, buf, total);
  for (int i = 0; i < NA; i++) {
    WAIT_UNTIL(core, atomic_load(&srv->recs[i].opens) == 1, 5000);
    ASSERT_OK(ioc_session_send(srv->recs[i].s, buf, total));
  }
  pump_for(core, 50);
  rec_t *rs[NA];
  for (int i = 0; i < NA; i++) {
    rs[i] = rec_for_client(srv, c[i]);
    if (i % 2)
      ioc_session_abort(rs[i]->s);
    else
      ioc_session_close(rs[i]->s);
  }
  for (int i = 0; i < NA; i++) {
    size_t got = 0;
    int err = 0;
    /* read while dispatching: the graceful ones must flush all 1 MiB */
    sock_set_nonblock(c[i], true);
    char tmp[65536];
    uint64_t dl = now_ms() + (uint64_t)scaled_ms(10000);
    for (;;) {
      long n = sock_recv(c[i], tmp, sizeof tmp);
      if (n > 0) {
        got += (size_t)n;
        continue;
      }
      if (n == 0) break;
      if (n != IOC_EAGAIN) {
        err = (int)n;
        break;
      }
      ASSERT_MSG(now_ms() < dl, "client %d: no EOF or reset after 10 s (%zu bytes)", i, got);
      pump(core, 2);
    }
    if (i % 2)
      ASSERT_MSG(err == IOC_ECONNRESET, "aborted session %d: client saw %s after %zu bytes", i, err ? ioc_err_name(err) : "EOF", got);
    else
      ASSERT_MSG(err == 0 && got == total, "closed session %d: client saw %s after %zu of %zu bytes", i, err ? ioc_err_name(err) : "EOF", got, total);
    sock_close(c[i]);
  }
  for (int i = 0; i < NA; i++) {
    WAIT_UNTIL(core, atomic_load(&rs[i]->closes) == 1, 5000);
    if (i % 2 == 0) ASSERT_ERR(rs[i]->close_err, 0);
  }
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 5000);
  rec_server_free(srv);

  /* (b) close and abort from inside on_open and on_recv, with a send queued */
  enum { NB = 30 };
  atomic_store(&cb_closed, 0);
  atomic_store(&accept_seq, 0);
  l = listen_loopback(core, NULL, closing_accept, NULL);
  ASSERT_OK(test_pool_start(core, 2));
  for (int i = 0; i < NB; i++) {
    int mode = i < 10 ? 1 + i % 2 : 0; /* as closing_accept decides */
    int abortive = mode == 2 || (mode == 0 && i % 2);
    int cerr = 0;
    sock_t s = tcp_connect_err(ioc_listener_address(l), &cerr);
    if (s == BAD_SOCK) {
      /* an abort in on_open can reset the connection before this thread's
       * connect() has even returned */
      ASSERT_MSG(mode == 2 && cerr == IOC_ECONNRESET, "client %d: connect: %s", i, ioc_err_name(cerr));
      WAIT_UNTIL(core, atomic_load(&accept_seq) == i + 1, 5000);
      continue;
    }
    sock_set_timeouts(s, 10000);
    WAIT_UNTIL(core, atomic_load(&accept_seq) == i + 1, 5000);
    if (mode == 0) ASSERT_EQ(sock_send_all(s, abortive ? "A" : "C", 1), 0);
    size_t got = 0;
    int err = sock_recv_until_eof(s, NULL, 0, &got);
    if (abortive)
      ASSERT_MSG(err == IOC_ECONNRESET, "client %d (abort in %s): %s after %zu bytes", i, mode ? "on_open" : "on_recv", err ? ioc_err_name(err) : "EOF", got);
    else
      ASSERT_MSG(err == 0 && got == (mode ? 0 : 512 * 1024), "client %d (close in %s): %s after %zu bytes", i, mode ? "on_open" : "on_recv", err ? ioc_err_name(err) : "EOF", got);
    sock_close(s);
  }
  WAIT_UNTIL(core, atomic_load(&cb_closed) == NB, 5000);
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 5000);

  /* (c) 4 workers; clients stream both ways; this thread closes or aborts
   * every session while its sends and receives are in flight */
  ioc_core_stop(core);
  ioc_core_join(core);
  ASSERT_OK(ioc_core_start(core, 4));
  srv = rec_server_new(0, 1);
  l = listen_loopback(core, NULL, stream_accept, srv);
  static streamer_t st;
  memset(&st, 0, sizeof st);
  st.addr = *ioc_listener_address(l);
  test_thread_t *th = thread_start(streamer_main, &st);
  WAIT_UNTIL(core, atomic_load(&st.connected) && atomic_load(&nretained) == STREAMERS, 10000);
  sleep_ms(300);
  for (int i = 0; i < STREAMERS; i++) {
    if (i % 2)
      ioc_session_abort(retained[i]);
    else
      ioc_session_close(retained[i]);
  }
  atomic_store(&st.stop, 1);
  thread_join(th);
  ASSERT_EQ(st.ended, STREAMERS);
  for (int i = 0; i < STREAMERS; i++) WAIT_UNTIL(core, atomic_load(&srv->recs[i].closes) == 1, 10000);
  ASSERT_EQ(core_stats(core).active, 0);
  for (int i = 0; i < STREAMERS; i++) ioc_session_release(retained[i]);
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 5000);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
  free(buf);
}
