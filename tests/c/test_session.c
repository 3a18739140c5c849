/* Sessions: connecting, accessors, gathered sends in order, drain, the
 * max_pending limit, idle time-outs and retained sessions. */
#include "rec.h"

#include <stdio.h>
#include <stdlib.h>

/* Non-blocking read on a plain socket while this thread dispatches, until
 * `want` bytes arrived; returns the count. */
static size_t pump_recv(ioc_core_t *core, sock_t c, char *buf, size_t want, int timeout_ms) {
  size_t got = 0;
  sock_set_nonblock(c, true);
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(timeout_ms);
  while (got < want && now_ms() < dl) {
    long n = sock_recv(c, buf + got, want - got);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (n == 0) break;
    if (n != IOC_EAGAIN) FAILF("client recv: %s", ioc_err_name((int)n));
    pump(core, 5);
  }
  sock_set_nonblock(c, false);
  return got;
}

static ioc_session_t *connect_rec(ioc_core_t *core, const ioc_addr_t *to, rec_t *r,
                                  const ioc_session_options_t *opts) {
  char a[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(to, a, sizeof a) > 0);
  ioc_session_callbacks_t cb = rec_callbacks();
  ioc_session_t *s = NULL;
  int rc = ioc_connect(core, a, strlen(a), &cb, r, opts, &s);
  ASSERT_MSG(rc == 0, "ioc_connect(%s): %d (%s)", a, rc, ioc_err_name(rc));
  ASSERT(s != NULL);
  r->s = s;
  return s; /* a reference of ours: ioc_session_release() it */
}

/* ---- connect_succeeds ---------------------------------------------------------- */

void test_connect_succeeds(void) {
  ioc_core_t *core;
  make_core(&core);

  /* 1. to a plain OS listener */
  ioc_addr_t os_addr;
  sock_t os = tcp_listen_os(&os_addr);
  rec_t r;
  rec_init(&r, 1);
  ioc_session_t *s = connect_rec(core, &os_addr, &r, NULL);
  WAIT_UNTIL(core, atomic_load(&r.opens) == 1, 5000);
  ASSERT_ERR(r.open_err, 0);
  ASSERT_EQ(core_stats(core).connected, 1);
  sock_t peer = tcp_accept_os(os, 5000);
  ASSERT(peer != BAD_SOCK);
  sock_set_timeouts(peer, 5000);
  /* addresses: the session's peer is the listener, its local is the
   * accepted socket's peer */
  char got[IOC_ADDRSTRLEN], want[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(ioc_session_peer(s), got, sizeof got) > 0);
  ASSERT(ioc_addr_format(&os_addr, want, sizeof want) > 0);
  ASSERT_STR_EQ(got, want);
  ioc_addr_t pa;
  memset(&pa, 0, sizeof pa);
  socklen_t plen = (socklen_t)sizeof pa.u.bytes;
  ASSERT(getpeername(peer, (struct sockaddr *)pa.u.bytes, &plen) == 0);
  pa.len = (uint32_t)plen;
  ASSERT(ioc_addr_format(ioc_session_local(s), got, sizeof got) > 0);
  ASSERT(ioc_addr_format(&pa, want, sizeof want) > 0);
  ASSERT_STR_EQ(got, want);
  /* data both ways */
  ASSERT_OK(ioc_session_send(s, "hello from iocore", 17));
  char b[64];
  ASSERT_EQ(pump_recv(core, peer, b, 17, 5000), 17);
  ASSERT(memcmp(b, "hello from iocore", 17) == 0);
  ASSERT_EQ(sock_send_all(peer, "hello from the os", 17), 0);
  WAIT_UNTIL(core, atomic_load(&r.total) == 17, 5000);
  ASSERT(memcmp(r.buf, "hello from the os", 17) == 0);
  /* the peer closes: on_close(0) */
  sock_close(peer);
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 5000);
  ASSERT_ERR(r.close_err, 0);
  /* out holds a reference: the session outlives on_close until released */
  pump_for(core, 20);
  ASSERT_EQ(core_stats(core).objects, 1);
  ASSERT(ioc_session_closed(s) != 0);
  ioc_session_release(s);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 2000);
  sock_close(os);
  rec_free(&r);

  /* 2. to an iocore listener on the same core, echoing */
  rec_server_t *srv = rec_server_new(1, 1);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  rec_init(&r, 1);
  s = connect_rec(core, ioc_listener_address(l), &r, NULL);
  WAIT_UNTIL(core, atomic_load(&r.opens) == 1 && atomic_load(&srv->recs[0].opens) == 1, 5000);
  ASSERT_ERR(r.open_err, 0);
  ASSERT_ERR(srv->recs[0].open_err, 0);
  size_t n = 100000;
  char *data = (char *)malloc(n);
  pattern_fill(7, 0, data, n);
  ASSERT_OK(ioc_session_send(s, data, n));
  WAIT_UNTIL(core, atomic_load(&r.total) == n, 5000);
  /* the server's count too: its buffer is read after it (the echo reached
   * us through the socket, which orders nothing for TSan) */
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].total) == n, 5000);
  ASSERT_EQ(pattern_check(7, 0, r.buf, n), -1);
  ASSERT_EQ(pattern_check(7, 0, srv->recs[0].buf, n), -1);
  ioc_session_close(s);
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1 && atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(r.close_err, 0);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  ioc_session_release(s);
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.connected, 2);
  ASSERT_EQ(st.accepted, 1);
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 5000);
  free(data);
  rec_free(&r);
  rec_server_free(srv);

  /* 3. "localhost:port" resolves to 127.0.0.1 */
  os = tcp_listen_os(&os_addr);
  char lh[64];
  snprintf(lh, sizeof lh, "localhost:%d", ioc_addr_port(&os_addr));
  rec_init(&r, 0);
  ioc_session_callbacks_t cb = rec_callbacks();
  ASSERT_OK(ioc_connect(core, lh, strlen(lh), &cb, &r, NULL, &s));
  WAIT_UNTIL(core, atomic_load(&r.opens) == 1, 5000);
  ASSERT_ERR(r.open_err, 0);
  ASSERT(ioc_addr_format(ioc_session_peer(s), got, sizeof got) > 0);
  snprintf(want, sizeof want, "127.0.0.1:%d", ioc_addr_port(&os_addr));
  ASSERT_STR_EQ(got, want);
  peer = tcp_accept_os(os, 5000);
  ASSERT(peer != BAD_SOCK);
  sock_close(peer);
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 5000);
  ioc_session_release(s);
  sock_close(os);
  rec_free(&r);
  ASSERT_CORE_CLEAN(core);
}

/* ---- connect_refused_reports_econnrefused ----------------------------------------- */

void test_connect_refused_reports_econnrefused(void) {
  ioc_core_t *core;
  make_core(&core);
  for (int i = 0; i < 3; i++) {
    char a[64];
    snprintf(a, sizeof a, "127.0.0.1:%d", closed_port());
    rec_t r;
    rec_init(&r, 0);
    ioc_session_callbacks_t cb = rec_callbacks();
    ioc_session_t *s = NULL;
    ASSERT_OK(ioc_connect(core, a, strlen(a), &cb, &r, NULL, &s));
    ASSERT(s != NULL);
    r.s = s;
    WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 10000);
    ASSERT_EQ(atomic_load(&r.opens), 1);
    ASSERT_ERR(r.open_err, IOC_ECONNREFUSED);
    ASSERT_ERR(r.close_err, IOC_ECONNREFUSED);
    ASSERT_EQ(atomic_load(&r.recvs), 0);
    pump_for(core, 20);
    ASSERT_EQ(atomic_load(&r.closes), 1);
    ioc_stats_t st = core_stats(core);
    ASSERT_EQ(st.connected, 0);
    ASSERT_EQ(st.objects, 1); /* the reference out gave us */
    ioc_session_release(s);
    ASSERT_EQ(core_stats(core).objects, 0);
    rec_free(&r);
  }
  /* with out NULL the core alone owns the session */
  char a[64];
  snprintf(a, sizeof a, "127.0.0.1:%d", closed_port());
  rec_t r;
  rec_init(&r, 0);
  ioc_session_callbacks_t cb = rec_callbacks();
  ASSERT_OK(ioc_connect(core, a, strlen(a), &cb, &r, NULL, NULL));
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 10000);
  ASSERT_ERR(r.open_err, IOC_ECONNREFUSED);
  ASSERT_ERR(r.close_err, IOC_ECONNREFUSED);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 2000);
  rec_free(&r);
  ASSERT_CORE_CLEAN(core);
}

/* ---- send_before_connect_completes_is_delivered ----------------------------------- */

void test_send_before_connect_completes_is_delivered(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_addr_t os_addr;
  sock_t os = tcp_listen_os(&os_addr);
  rec_t r;
  rec_init(&r, 0);
  ioc_session_t *s = connect_rec(core, &os_addr, &r, NULL);
  /* queued before any dispatch: sent once connected */
  ASSERT_OK(ioc_session_send(s, "early ", 6));
  ioc_buf_t bufs[2] = {{"bi", 2}, {"rd", 2}};
  ASSERT_OK(ioc_session_sendv(s, bufs, 2));
  sock_t peer = tcp_accept_os(os, 5000);
  ASSERT(peer != BAD_SOCK);
  char b[16];
  ASSERT_EQ(pump_recv(core, peer, b, 10, 5000), 10);
  ASSERT(memcmp(b, "early bird", 10) == 0);
  ASSERT_EQ(atomic_load(&r.opens), 1);
  ASSERT_ERR(r.open_err, 0);
  /* a graceful close right after connect flushes too */
  rec_t r2;
  rec_init(&r2, 0);
  ioc_session_t *s2 = connect_rec(core, &os_addr, &r2, NULL);
  ASSERT_OK(ioc_session_send(s2, "bye", 3));
  ioc_session_close(s2);
  ASSERT_ERR(ioc_session_send(s2, "x", 1), IOC_ECLOSED);
  sock_t peer2 = tcp_accept_os(os, 5000);
  ASSERT(peer2 != BAD_SOCK);
  ASSERT_EQ(pump_recv(core, peer2, b, 4, 5000), 3); /* "bye", then EOF */
  ASSERT(memcmp(b, "bye", 3) == 0);
  sock_close(peer2); /* the peer's FIN ends the close (no 5 s linger) */
  WAIT_UNTIL(core, atomic_load(&r2.closes) == 1, 5000);
  ASSERT_ERR(r2.close_err, 0);
  sock_close(peer);
  sock_close(os);
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 5000);
  ioc_session_release(s);
  ioc_session_release(s2);
  ASSERT_CORE_CLEAN(core);
  rec_free(&r);
  rec_free(&r2);
}

/* ---- session_accessors_report_ids_addresses_userdata ------------------------------ */

void test_session_accessors_report_ids_addresses_userdata(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c[4];
  for (int i = 0; i < 4; i++) c[i] = tcp_connect(ioc_listener_address(l));
  rec_t r;
  rec_init(&r, 0);
  ioc_session_t *out = connect_rec(core, ioc_listener_address(l), &r, NULL);
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 5 && atomic_load(&r.opens) == 1, 5000);
  ioc_session_t *all[6];
  /* references of ours while this thread reads them: the workers free a
   * session once it has closed, and a close can come at any time */
  for (int i = 0; i < 5; i++) {
    all[i] = srv->recs[i].s;
    ioc_session_retain(all[i]);
  }
  all[5] = out;
  for (int i = 0; i < 6; i++) {
    ASSERT(ioc_session_core(all[i]) == core);
    ASSERT_EQ(ioc_session_closed(all[i]), 0);
    ASSERT_EQ(ioc_session_pending(all[i]), 0);
    ASSERT(ioc_session_peer(all[i]) != NULL);
    ASSERT(ioc_session_local(all[i]) != NULL);
    for (int j = 0; j < i; j++)
      ASSERT_MSG(ioc_session_id(all[i]) != ioc_session_id(all[j]), "sessions %d and %d share id %llu", i, j,
                 (unsigned long long)ioc_session_id(all[i]));
  }
  for (int i = 0; i < 5; i++) ASSERT(ioc_session_userdata(all[i]) == &srv->recs[i]);
  ASSERT(ioc_session_userdata(out) == &r);
  /* replacing the callbacks replaces the userdata too */
  rec_t other;
  rec_init(&other, 0);
  other.s = out;
  atomic_store(&other.opens, 1);
  ioc_session_callbacks_t cb = rec_callbacks();
  ioc_session_set_callbacks(out, &cb, &other);
  ASSERT(ioc_session_userdata(out) == &other);
  ioc_session_close(out);
  ASSERT(ioc_session_closed(out) != 0);
  WAIT_UNTIL(core, atomic_load(&other.closes) == 1, 5000);
  ASSERT_EQ(atomic_load(&r.closes), 0);
  ioc_session_release(out);
  for (int i = 0; i < 4; i++) sock_close(c[i]);
  for (int i = 0; i < 5; i++) ioc_session_release(all[i]);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_free(&r);
  rec_free(&other);
  rec_server_free(srv);
}

/* ---- sendv_many_small_buffers_arrive_in_order ------------------------------------- */

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

void test_sendv_many_small_buffers_arrive_in_order(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 10000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ioc_session_t *s = srv->recs[0].s;

  enum { NV1 = 1000, NSEND = 1000, NV2 = 3000 };
  size_t total_cap = (NV1 + NSEND + NV2) * 48;
  char *src = (char *)malloc(total_cap);
  ioc_buf_t *bufs = (ioc_buf_t *)malloc(sizeof(ioc_buf_t) * NV2);
  uint64_t rng = 99, off = 0;
  /* 1000 buffers in one sendv, some of them empty */
  for (int round = 0; round < 3; round++) {
    int nb = round == 0 ? NV1 : round == 1 ? NSEND : NV2;
    size_t start = (size_t)off;
    for (int i = 0; i < nb; i++) {
      size_t len = (size_t)rng_range(&rng, 0, 40);
      if (i % 97 == 0) len = 0;
      pattern_fill(5, off, src + off, len);
      bufs[i].base = src + off;
      bufs[i].len = len;
      off += len;
    }
    if (round == 1) {
      for (int i = 0; i < nb; i++) ASSERT_OK(ioc_session_send(s, bufs[i].base, bufs[i].len));
    } else {
      ASSERT_OK(ioc_session_sendv(s, bufs, (size_t)nb));
    }
    /* the bytes were copied: scribbling over the source changes nothing */
    memset(src + start, 0xEE, (size_t)off - start);
  }
  ioc_session_close(s);
  reader_t rd;
  memset(&rd, 0, sizeof rd);
  rd.s = c;
  rd.cap = (size_t)off + 1024;
  rd.buf = (char *)malloc(rd.cap);
  test_thread_t *th = thread_start(reader_main, &rd);
  WAIT_UNTIL(core, atomic_load(&rd.done), 10000);
  thread_join(th);
  ASSERT_MSG(rd.err == 0, "client read ended with %s after %zu bytes", ioc_err_name(rd.err), rd.got);
  ASSERT_EQ(rd.got, off);
  long bad = pattern_check(5, 0, rd.buf, rd.got);
  ASSERT_MSG(bad < 0, "byte %ld of %zu is out of order or wrong", bad, rd.got);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(rd.buf);
  free(src);
  free(bufs);
  rec_server_free(srv);
}

/* ---- on_drain_runs_when_queue_empties --------------------------------------------- */

void test_on_drain_runs_when_queue_empties(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = socket(AF_INET, SOCK_STREAM, 0);
  sock_set_rcvbuf(c, 32768);
  ASSERT(connect(c, (const struct sockaddr *)ioc_listener_address(l)->u.bytes, (int)ioc_listener_address(l)->len) == 0);
  sock_set_timeouts(c, 10000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ioc_session_t *s = srv->recs[0].s;
  size_t n = 16u << 20;
  char *data = (char *)malloc(n);
  pattern_fill(11, 0, data, n);
  ASSERT_OK(ioc_session_send(s, data, n));
  pump_for(core, 100);
  size_t p = ioc_session_pending(s);
  ASSERT_MSG(p > 0 && p <= n, "pending after queueing 16 MiB to a client that does not read: %zu", p);
  ASSERT_EQ(atomic_load(&srv->recs[0].drains), 0);
  /* the client reads everything; the queue empties; on_drain runs */
  reader_t rd;
  memset(&rd, 0, sizeof rd);
  rd.s = c;
  rd.cap = n;
  rd.buf = data; /* overwritten in place; checked below */
  memset(data, 0, n);
  test_thread_t *th = thread_start(reader_main, &rd);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].drains) >= 1, 10000);
  ASSERT_EQ(atomic_load(&srv->recs[0].pending_at_drain), 0);
  ASSERT_EQ(ioc_session_pending(s), 0);
  pump_for(core, 50);
  ASSERT_EQ(atomic_load(&srv->recs[0].drains), 1);
  ioc_session_close(s);
  WAIT_UNTIL(core, atomic_load(&rd.done), 10000);
  thread_join(th);
  ASSERT_EQ(rd.err, 0);
  ASSERT_EQ(rd.got, n);
  ASSERT_EQ(pattern_check(11, 0, data, n), -1);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(data);
  rec_server_free(srv);
}

/* ---- max_pending_rejects_send_with_enobufs ---------------------------------------- */

/* Fills s's queue in 16 KiB steps until ENOBUFS; returns the bytes accepted. */
static size_t fill_to_limit(ioc_core_t *core, ioc_session_t *s, size_t limit, uint64_t seed, size_t off) {
  static char chunk[16384];
  size_t accepted = 0;
  for (int i = 0; i < 20000; i++) {
    pattern_fill(seed, off + accepted, chunk, sizeof chunk);
    size_t before = ioc_session_pending(s);
    int rc = ioc_session_send(s, chunk, sizeof chunk);
    if (rc == IOC_ENOBUFS) {
      size_t after = ioc_session_pending(s);
      ASSERT_MSG(after <= before, "a send refused with ENOBUFS still grew pending from %zu to %zu", before, after);
      ASSERT_MSG(before + sizeof chunk > limit, "ENOBUFS with pending %zu + %zu <= max_pending %zu", before, sizeof chunk, limit);
      return accepted;
    }
    ASSERT_MSG(rc == 0, "send: %d (%s)", rc, ioc_err_name(rc));
    accepted += sizeof chunk;
    ASSERT_MSG(ioc_session_pending(s) <= limit, "pending %zu passed max_pending %zu", ioc_session_pending(s), limit);
    pump(core, 1);
  }
  FAILF("20000 sends of 16 KiB to a client that does not read never gave ENOBUFS (max_pending %zu)", limit);
}

void test_max_pending_rejects_send_with_enobufs(void) {
  const size_t limit = 65536;
  ioc_core_t *core;
  make_core(&core);
  static char big[1 << 20];

  /* 1. an outbound session with max_pending */
  ioc_addr_t os_addr;
  sock_t os = tcp_listen_os(&os_addr);
  rec_t r;
  rec_init(&r, 0);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.max_pending = limit;
  ioc_session_t *s = connect_rec(core, &os_addr, &r, &so);
  WAIT_UNTIL(core, atomic_load(&r.opens) == 1, 5000);
  ASSERT_ERR(r.open_err, 0);
  sock_t peer = tcp_accept_os(os, 5000);
  ASSERT(peer != BAD_SOCK);
  sock_set_timeouts(peer, 10000);
  size_t accepted = fill_to_limit(core, s, limit, 21, 0);
  /* refused as a whole, behind queued data */
  size_t before = ioc_session_pending(s);
  ASSERT_GT(before, 0);
  ioc_buf_t two[2] = {{big, limit}, {big, 1}};
  ASSERT_ERR(ioc_session_sendv(s, two, 2), IOC_ENOBUFS);
  ASSERT_LE(ioc_session_pending(s), before);
  /* everything accepted arrives, in order, and nothing else */
  ioc_session_close(s);
  reader_t rd;
  memset(&rd, 0, sizeof rd);
  rd.s = peer;
  rd.cap = accepted + 65536;
  rd.buf = (char *)malloc(rd.cap);
  test_thread_t *th = thread_start(reader_main, &rd);
  WAIT_UNTIL(core, atomic_load(&rd.done), 20000);
  thread_join(th);
  ASSERT_EQ(rd.err, 0);
  ASSERT_EQ(rd.got, accepted);
  ASSERT_EQ(pattern_check(21, 0, rd.buf, rd.got), -1);
  free(rd.buf);
  sock_close(peer);
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 5000);
  ASSERT_ERR(r.close_err, 0);
  ioc_session_release(s);
  sock_close(os);
  rec_free(&r);

  /* 2. accepted sessions take it from the listener options */
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.session.max_pending = limit;
  ioc_listener_t *l = listen_loopback(core, &lo, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  /* the client reads nothing: within 16 MiB the limit (not the default
   * 64 MiB) refuses a send once data is queued */
  int rc = 0;
  for (int i = 0; i < 16 && rc == 0; i++) {
    rc = ioc_session_send(srv->recs[0].s, big, sizeof big);
    pump(core, 1);
  }
  ASSERT_ERR(rc, IOC_ENOBUFS);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- idle_timeout_closes_silent_session -------------------------------------------- */

void test_idle_timeout_closes_silent_session(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.session.idle_timeout_ms = 200;
  ioc_listener_t *l = listen_loopback(core, &lo, rec_server_accept, srv);
  uint64_t t_silent = now_ms(); /* no later than the accept */
  sock_t silent = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 1, 5000);
  sock_t chatty = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 2, 5000);
  uint64_t t0 = now_ms();
  /* the chatty client sends a byte every 50 ms for 800 ms: never idle */
  while (now_ms() - t0 < 800) {
    ASSERT_EQ(sock_send_all(chatty, "x", 1), 0);
    pump_for(core, 50);
  }
  ASSERT_EQ(atomic_load(&srv->recs[1].closes), 0);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 3000);
  ASSERT_ERR(srv->recs[0].close_err, IOC_ETIMEDOUT);
  long long after = (long long)srv->recs[0].close_ms - (long long)t_silent;
  ASSERT_MSG(after >= 190 && after <= scaled_ms(1500), "silent session closed %lld ms after connect (idle_timeout 200)", after);
  /* then it goes quiet and is closed too */
  uint64_t quiet = now_ms();
  WAIT_UNTIL(core, atomic_load(&srv->recs[1].closes) == 1, 3000);
  ASSERT_ERR(srv->recs[1].close_err, IOC_ETIMEDOUT);
  long long quiet_for = (long long)srv->recs[1].close_ms - (long long)quiet;
  ASSERT_MSG(quiet_for >= 100, "chatty session closed %lld ms after its last byte (idle_timeout 200)", quiet_for);
  ASSERT_GE(atomic_load(&srv->recs[1].total), 10);
  /* the clients see the connection end */
  sock_set_timeouts(silent, 3000);
  char b[8];
  long n = sock_recv(silent, b, sizeof b);
  ASSERT_MSG(n == 0 || n == IOC_ECONNRESET, "client of a timed-out session: recv %ld", n);
  sock_close(silent);
  sock_close(chatty);

  /* an outbound session with idle_timeout_ms */
  ioc_addr_t os_addr;
  sock_t os = tcp_listen_os(&os_addr);
  rec_t r;
  rec_init(&r, 0);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.idle_timeout_ms = 150;
  ioc_session_t *s = connect_rec(core, &os_addr, &r, &so);
  WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 3000);
  ioc_session_release(s);
  ASSERT_ERR(r.open_err, 0);
  ASSERT_ERR(r.close_err, IOC_ETIMEDOUT);
  sock_t peer = tcp_accept_os(os, 1000);
  if (peer != BAD_SOCK) sock_close(peer);
  sock_close(os);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_free(&r);
  rec_server_free(srv);
}

/* ---- retained_session_outlives_on_close -------------------------------------------- */

static void retain_on_open(ioc_session_t *s, int err) {
  ASSERT_EQ(err, 0);
  ioc_session_retain(s);
  /* handed to the test thread, which waits for it */
  atomic_store((_Atomic(ioc_session_t *) *)ioc_session_userdata(s), s);
}
static atomic_int retained_closed;
static void retain_on_close(ioc_session_t *s, int err) {
  (void)s;
  (void)err;
  atomic_fetch_add(&retained_closed, 1);
}
static void retain_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  ioc_session_callbacks_t cb = callbacks(retain_on_open, NULL, NULL, retain_on_close);
  ioc_session_set_callbacks(s, &cb, ud);
}

void test_retained_session_outlives_on_close(void) {
  ioc_core_t *core;
  make_core(&core);
  _Atomic(ioc_session_t *) kept = NULL;
  ioc_listener_t *l = listen_loopback(core, NULL, retain_accept, &kept);
  sock_t c = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, kept != NULL, 5000);
  uint64_t id = ioc_session_id(kept);
  char before[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(ioc_session_peer(kept), before, sizeof before) > 0);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&retained_closed) == 1, 5000);
  pump_for(core, 20);
  /* still valid: accessors work, sending is refused */
  ASSERT_EQ(ioc_session_id(kept), id);
  ASSERT(ioc_session_closed(kept) != 0);
  char after[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(ioc_session_peer(kept), after, sizeof after) > 0);
  ASSERT_STR_EQ(after, before);
  ASSERT_ERR(ioc_session_send(kept, "x", 1), IOC_ECLOSED);
  ioc_session_close(kept); /* harmless now */
  ioc_session_abort(kept);
  pump_for(core, 20);
  ASSERT_EQ(atomic_load(&retained_closed), 1);
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.active, 0);
  ASSERT_EQ(st.objects, 2); /* the listener and the retained session */
  ioc_session_release(kept);
  WAIT_UNTIL(core, core_stats(core).objects == 1, 2000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- sends_from_4_threads_stay_whole_and_ordered_per_thread ------------------------- */

/* Four threads that are not workers send framed messages on one session
 * while two workers dispatch. Each ioc_session_send / ioc_session_sendv call
 * is queued whole, so the client must find every frame intact, and each
 * thread's frames in its own order. Frame: u32 payload length, u32 thread,
 * u32 sequence, then the payload (pattern seeded by thread and sequence). */

#define SENDERS 4

typedef struct sender {
  ioc_session_t *s;
  uint32_t tid;
  int count;
} sender_t;

static void put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}
static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void sender_main(void *arg) {
  sender_t *sd = (sender_t *)arg;
  static _Thread_local unsigned char frame[12 + 2048];
  uint64_t rng = sd->tid * 7919u + 1;
  for (int i = 0; i < sd->count; i++) {
    uint32_t len = (uint32_t)rng_range(&rng, 0, 2048);
    put_u32(frame, len);
    put_u32(frame + 4, sd->tid);
    put_u32(frame + 8, (uint32_t)i);
    pattern_fill(((uint64_t)sd->tid << 32) | (uint32_t)i, 0, frame + 12, len);
    int rc;
    if (i % 2) {
      ioc_buf_t bufs[3] = {{frame, 4}, {frame + 4, 8}, {frame + 12, len}};
      rc = ioc_session_sendv(sd->s, bufs, 3);
    } else {
      rc = ioc_session_send(sd->s, frame, 12 + len);
    }
    if (rc != 0) FAILF("sender %u, frame %d: %d (%s)", sd->tid, i, rc, ioc_err_name(rc));
  }
}

void test_sends_from_4_threads_stay_whole_and_ordered_per_thread(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 2));
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 20000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ioc_session_t *s = srv->recs[0].s;
  int per = (int)scaled_load(2000, 100);
  reader_t rd;
  memset(&rd, 0, sizeof rd);
  rd.s = c;
  rd.cap = (size_t)per * SENDERS * (12 + 2048);
  rd.buf = (char *)malloc(rd.cap);
  ASSERT(rd.buf != NULL);
  test_thread_t *reader = thread_start(reader_main, &rd);
  sender_t sd[SENDERS];
  test_thread_t *th[SENDERS];
  for (int i = 0; i < SENDERS; i++) {
    sd[i].s = s;
    sd[i].tid = (uint32_t)i;
    sd[i].count = per;
    th[i] = thread_start(sender_main, &sd[i]);
  }
  for (int i = 0; i < SENDERS; i++) thread_join(th[i]);
  ioc_session_close(s);
  WAIT_UNTIL(core, atomic_load(&rd.done), 20000);
  thread_join(reader);
  ASSERT_MSG(rd.err == 0, "client read ended with %s after %zu bytes", ioc_err_name(rd.err), rd.got);
  uint32_t next[SENDERS] = {0};
  size_t off = 0;
  int frames = 0;
  const unsigned char *p = (const unsigned char *)rd.buf;
  while (off < rd.got) {
    ASSERT_MSG(off + 12 <= rd.got, "a frame header is cut at byte %zu of %zu", off, rd.got);
    uint32_t len = get_u32(p + off), tid = get_u32(p + off + 4), seq = get_u32(p + off + 8);
    ASSERT_MSG(len <= 2048 && tid < SENDERS, "garbage frame header at byte %zu (len %u, thread %u): calls interleaved", off, len, tid);
    ASSERT_MSG(seq == next[tid], "thread %u: frame %u where %u was due (byte %zu)", tid, seq, next[tid], off);
    ASSERT_MSG(off + 12 + len <= rd.got, "frame %u of thread %u is cut", seq, tid);
    long bad = pattern_check(((uint64_t)tid << 32) | seq, 0, p + off + 12, len);
    ASSERT_MSG(bad < 0, "frame %u of thread %u: payload byte %ld wrong", seq, tid, bad);
    next[tid]++;
    off += 12 + len;
    frames++;
  }
  ASSERT_EQ(frames, per * SENDERS);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(rd.buf);
  rec_server_free(srv);
}

/* ---- active_count_covers_an_on_close_still_running ------------------------------------ */

static atomic_int slow_close_returned;

static void slow_on_close(ioc_session_t *s, int err) {
  (void)s;
  (void)err;
  sleep_ms(200);
  atomic_store(&slow_close_returned, 1);
}

/* A stop check ("no session active: nothing of them runs any more, their
 * user data can go") must not see 0 while an on_close still runs on a
 * worker: the session counts as active until its on_close has returned. */
void test_active_count_covers_an_on_close_still_running(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(test_pool_start(core, 2));
  ioc_session_callbacks_t cb = callbacks(NULL, NULL, NULL, slow_on_close);
  ioc_listener_t *l = listen_loopback(core, NULL, accept_with_callbacks, &cb);
  sock_t c = tcp_connect(ioc_listener_address(l));
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (core_stats(core).active != 1) {
    ASSERT_MSG(now_ms() < dl, "the session was never accepted");
    sleep_ms(1);
  }
  sock_close(c);
  dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (core_stats(core).active != 0) {
    ASSERT_MSG(now_ms() < dl, "the session never closed");
    sleep_ms(1);
  }
  ASSERT_MSG(atomic_load(&slow_close_returned) == 1, "stats.active was 0 while on_close was still running");
  ASSERT_EQ(core_stats(core).closed, 1);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}
