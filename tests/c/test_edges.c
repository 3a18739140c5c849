/* Nothing lost at the edges: the lossless graceful close and its time-out,
 * half-close both ways, pause/resume, idle/write/connect time-outs, the
 * ENOBUFS rule, connect failures that tell one cause, and the outbound
 * local address. */
#include "rec.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- shared pieces ------------------------------------------------------------- */

/* A client thread that reads until EOF, at most `rate` bytes per 100 ms
 * (0 = as fast as it can), after waiting start_ms. */
typedef struct paced {
  sock_t s;
  size_t rate;
  int start_ms;
  char *buf;
  size_t cap, got;
  atomic_size_t seen; /* got, for other threads */
  int err; /* 0 at EOF, else the code */
  atomic_int done;
} paced_t;

static void paced_main(void *arg) {
  paced_t *p = (paced_t *)arg;
  if (p->start_ms) sleep_ms((unsigned)p->start_ms);
  for (;;) {
    size_t want = p->rate ? p->rate : 65536;
    size_t room = p->cap - p->got;
    if (room == 0) {
      p->err = IOC_ENOBUFS;
      break;
    }
    long n = sock_recv(p->s, p->buf + p->got, want < room ? want : room);
    if (n == 0) {
      p->err = 0;
      break;
    }
    if (n < 0) {
      p->err = (int)n;
      break;
    }
    p->got += (size_t)n;
    atomic_store(&p->seen, p->got);
    if (p->rate) sleep_ms(100);
  }
  atomic_store(&p->done, 1);
}

static test_thread_t *paced_start(paced_t *p, sock_t s, size_t cap, size_t rate, int start_ms) {
  memset(p, 0, sizeof *p);
  p->s = s;
  p->rate = rate;
  p->start_ms = start_ms;
  p->cap = cap;
  p->buf = (char *)malloc(cap);
  ASSERT(p->buf != NULL);
  return thread_start(paced_main, p);
}

/* A client thread that sends len bytes of pattern `seed` (blocking). */
typedef struct sender {
  sock_t s;
  uint64_t seed;
  size_t len;
  int err;
  atomic_size_t sent;
  atomic_int done;
} sender_t;

static void sender_main(void *arg) {
  sender_t *x = (sender_t *)arg;
  static char chunk[65536];
  size_t off = 0;
  while (off < x->len) {
    size_t n = x->len - off < sizeof chunk ? x->len - off : sizeof chunk;
    pattern_fill(x->seed, off, chunk, n);
    x->err = sock_send_all(x->s, chunk, n);
    if (x->err) break;
    off += n;
    atomic_store(&x->sent, off);
  }
  atomic_store(&x->done, 1);
}

static char *pattern_buf(uint64_t seed, size_t len) {
  char *b = (char *)malloc(len);
  ASSERT(b != NULL);
  pattern_fill(seed, 0, b, len);
  return b;
}

static ioc_listener_t *listen_opts(ioc_core_t *core, rec_server_t *srv,
                                   const ioc_session_options_t *so) {
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  if (so) lo.session = *so;
  return listen_loopback(core, &lo, rec_server_accept, srv);
}

/* A client with a small receive buffer (set before connecting, so the
 * window stays small): what it has not read stays on the sender's side. */
static sock_t small_window_client(const ioc_addr_t *to) {
  sock_t c = socket(to->u.family, SOCK_STREAM, 0);
  ASSERT(c != BAD_SOCK);
  sock_set_rcvbuf(c, 16384);
  ASSERT_MSG(connect(c, (const struct sockaddr *)to->u.bytes, (int)to->len) == 0, "connect: %s",
             ioc_err_name(sock_last_error()));
  return c;
}

static bool on_iocp(void) { return g_backend_kind == IOC_BACKEND_IOCP; }

/* ---- graceful_close_waits_for_a_slow_reader_and_loses_nothing -------------------- */

void test_graceful_close_waits_for_a_slow_reader_and_loses_nothing(void) {
  if (on_iocp())
    SKIPF("iocp: the close time-out counts from the last write into the kernel (the stack's "
          "unacknowledged bytes are not observable under wine), see docs/c-api.md");
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.close_timeout_ms = 1000;
  ioc_listener_t *l = listen_opts(core, srv, &so);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 30000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  const size_t total = 4u << 20;
  char *data = pattern_buf(31, total);
  ASSERT_OK(ioc_session_send(srv->recs[0].s, data, total));
  ioc_session_close(srv->recs[0].s);
  paced_t rd;
  test_thread_t *th = paced_start(&rd, c, total + 1, 40000, 0); /* ~400 KB/s */
  WAIT_UNTIL(core, atomic_load(&rd.done), 40000);
  thread_join(th);
  sock_close(c); /* the client's FIN, once it has read everything */
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  fprintf(stderr, "slow reader: %zu of %zu bytes, then %s; on_close(%d)\n", rd.got, total,
          rd.err ? ioc_err_name(rd.err) : "EOF", srv->recs[0].close_err);
  ASSERT_EQ(rd.err, 0);
  ASSERT_EQ(rd.got, total);
  ASSERT_EQ(pattern_check(31, 0, rd.buf, rd.got), -1);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(rd.buf);
  free(data);
  rec_server_free(srv);
}

/* ---- graceful_close_to_a_stalled_reader_times_out_with_etimedout ------------------ */

void test_graceful_close_to_a_stalled_reader_times_out_with_etimedout(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_opts(core, srv, NULL); /* the default close time-out, 5 s */
  sock_t c = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  const size_t total = 16u << 20;
  char *data = pattern_buf(32, total);
  ASSERT_OK(ioc_session_send(srv->recs[0].s, data, total));
  uint64_t t0 = now_ms();
  ioc_session_close(srv->recs[0].s);
  ASSERT_OK(ioc_session_set_timeout(srv->recs[0].s, IOC_TIMEOUT_CLOSE, 1000)); /* while closing */
  /* the client reads nothing */
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 20000);
  uint64_t took = srv->recs[0].close_ms - t0;
  fprintf(stderr, "stalled reader: on_close(%s) %llu ms after close\n",
          ioc_err_name(srv->recs[0].close_err), (unsigned long long)took);
  ASSERT_ERR(srv->recs[0].close_err, IOC_ETIMEDOUT);
  ASSERT_GE(took, 900);
  ASSERT_LT(took, 4500); /* the session's own setting, not the default */
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(data);
  rec_server_free(srv);
}

/* ---- graceful_close_ends_at_once_when_the_peer_has_everything_and_fins ------------- */

void test_graceful_close_ends_at_once_when_the_peer_has_everything_and_fins(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_opts(core, srv, NULL); /* close time-out: the default 5 s */
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 5000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ASSERT_OK(ioc_session_send(srv->recs[0].s, "bye", 3));
  ioc_session_close(srv->recs[0].s);
  sock_set_nonblock(c, true);
  char b[8];
  size_t got = 0;
  long n = IOC_EAGAIN;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (now_ms() < dl && (n = sock_recv(c, b + got, sizeof b - got)) != 0) {
    if (n > 0) got += (size_t)n; else pump(core, 5);
  }
  ASSERT_MSG(n == 0 && got == 3, "client: %zu bytes, then %ld", got, n);
  uint64_t t0 = now_ms();
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  /* not a linger wait: well under the 5 s close time-out */
  ASSERT_LT(srv->recs[0].close_ms - t0, 2500);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- shutdown_sends_fin_and_keeps_receiving_until_the_peer_fin --------------------- */

typedef struct half {
  rec_t r;
  atomic_int eofs;
  atomic_int close_after_eof; /* 1: on_eof closes; 2: on_eof shuts down */
} half_t;

static void half_eof(ioc_session_t *s) {
  half_t *h = (half_t *)ioc_session_userdata(s);
  ASSERT_MSG(atomic_load(&h->r.closes) == 0, "on_eof after on_close");
  atomic_fetch_add(&h->eofs, 1);
}

static void half_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  half_t *h = (half_t *)ud;
  h->r.s = s;
  ioc_session_callbacks_t cb = rec_callbacks();
  cb.on_eof = half_eof;
  ioc_session_set_callbacks(s, &cb, h);
}

void test_shutdown_sends_fin_and_keeps_receiving_until_the_peer_fin(void) {
  ioc_core_t *core;
  make_core(&core);
  static half_t h;
  memset(&h, 0, sizeof h);
  rec_init(&h.r, 1);
  ioc_listener_t *l = listen_loopback(core, NULL, half_accept, &h);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 5000);
  WAIT_UNTIL(core, atomic_load(&h.r.opens) == 1, 5000);
  ioc_session_t *s = h.r.s;
  ASSERT_OK(ioc_session_send(s, "reply", 5));
  ASSERT_OK(ioc_session_shutdown(s));
  ASSERT_ERR(ioc_session_shutdown(s), IOC_ECLOSED);
  ASSERT_ERR(ioc_session_send(s, "x", 1), IOC_ECLOSED);
  ASSERT_EQ(ioc_session_closed(s), 0); /* still reading */
  /* the client gets the reply, then EOF */
  sock_set_nonblock(c, true);
  char b[16];
  size_t got = 0;
  long n = IOC_EAGAIN;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (now_ms() < dl && (n = sock_recv(c, b + got, sizeof b - got)) != 0) {
    if (n > 0) got += (size_t)n; else pump(core, 5);
  }
  ASSERT_MSG(n == 0 && got == 5 && memcmp(b, "reply", 5) == 0, "client: %zu bytes, then %ld", got, n);
  /* the other direction still works, for a while */
  sock_set_nonblock(c, false);
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(sock_send_all(c, "more!", 5), 0);
    pump_for(core, 30);
  }
  WAIT_UNTIL(core, atomic_load(&h.r.total) == 25, 5000);
  ASSERT(memcmp(h.r.buf, "more!more!more!more!more!", 25) == 0);
  ASSERT_EQ(atomic_load(&h.r.closes), 0);
  /* the peer's FIN: on_eof, then on_close(0) */
  sock_shutdown_write(c);
  WAIT_UNTIL(core, atomic_load(&h.r.closes) == 1, 5000);
  ASSERT_EQ(atomic_load(&h.eofs), 1);
  ASSERT_ERR(h.r.close_err, 0);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_free(&h.r);
}

/* ---- sends_after_the_peer_fin_go_out_until_the_owner_closes ------------------------- */

static void late_reply(ioc_timer_t *t, void *ud) {
  (void)t;
  ioc_session_t *s = (ioc_session_t *)ud;
  ASSERT_OK(ioc_session_send(s, "from a timer;", 13));
}

void test_sends_after_the_peer_fin_go_out_until_the_owner_closes(void) {
  ioc_core_t *core;
  make_core(&core);
  for (int round = 0; round < 2; round++) {
    static half_t h;
    memset(&h, 0, sizeof h);
    rec_init(&h.r, 1);
    ioc_listener_t *l = listen_loopback(core, NULL, half_accept, &h);
    sock_t c = tcp_connect(ioc_listener_address(l));
    sock_set_timeouts(c, 5000);
    ASSERT_EQ(sock_send_all(c, "request", 7), 0);
    sock_shutdown_write(c);
    WAIT_UNTIL(core, atomic_load(&h.eofs) == 1, 5000);
    ASSERT_EQ(atomic_load(&h.r.total), 7);
    ioc_session_t *s = h.r.s;
    ASSERT_EQ(ioc_session_closed(s), 0);
    /* replies after the FIN: from a timer, from this thread, later */
    ASSERT_OK(ioc_timer_start(core, 50, 0, late_reply, s, NULL));
    pump_for(core, 150);
    ASSERT_OK(ioc_session_send(s, "from main;", 10));
    pump_for(core, 50);
    ASSERT_EQ(atomic_load(&h.r.closes), 0);
    if (round == 0) {
      ioc_session_close(s);
    } else {
      ASSERT_OK(ioc_session_shutdown(s));
    }
    paced_t rd;
    test_thread_t *th = paced_start(&rd, c, 64, 0, 0);
    WAIT_UNTIL(core, atomic_load(&rd.done) && atomic_load(&h.r.closes) == 1, 5000);
    thread_join(th);
    ASSERT_EQ(rd.err, 0);
    ASSERT_EQ(rd.got, 23);
    ASSERT(memcmp(rd.buf, "from a timer;from main;", 23) == 0);
    ASSERT_ERR(h.r.close_err, 0);
    free(rd.buf);
    sock_close(c);
    ioc_listener_close(l);
    WAIT_UNTIL(core, core_stats(core).objects == 0, 5000);
    rec_free(&h.r);
  }
  ASSERT_CORE_CLEAN(core);
}

/* ---- session_pause_holds_data_until_resume ------------------------------------------- */

/* More bytes than the kernel can hold on a loopback connection whose reader
 * reads nothing (the receive buffer's and the send buffer's maximum, from
 * /proc on Linux, plus 4 MiB), so a sender of this many must stall. Newer
 * kernels let the receive buffer grow to 32 MiB: a fixed 4 MiB all fitted. */
static size_t beyond_kernel_buffers(void) {
  size_t total = 4u << 20;
#ifdef __linux__
  static const char *const files[] = {"/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/net/ipv4/tcp_wmem"};
  size_t sum = 0;
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    FILE *f = fopen(files[i], "r");
    unsigned long lo, def, hi;
    if (f && fscanf(f, "%lu %lu %lu", &lo, &def, &hi) == 3) sum += hi;
    if (f) fclose(f);
  }
  if (sum + total > total) total += sum;
#endif
  return total;
}

void test_session_pause_holds_data_until_resume(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(1, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 30000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  pump_for(core, 20); /* its receive is posted */
  ioc_session_t *s = srv->recs[0].s;
  ioc_session_pause(s);
  ioc_session_pause(s); /* idempotent */
  ASSERT(ioc_session_paused(s));
  const size_t total = beyond_kernel_buffers();
  sender_t tx;
  memset(&tx, 0, sizeof tx);
  tx.s = c;
  tx.seed = 41;
  tx.len = total;
  test_thread_t *th = thread_start(sender_main, &tx);
  pump_for(core, 800);
  /* nothing read beyond the receive that was in flight: the sender is stuck */
  size_t during = atomic_load(&srv->recs[0].total);
  fprintf(stderr, "paused: %zu bytes delivered, sender has %zu of %zu in the kernel\n", during,
          atomic_load(&tx.sent), total);
  ASSERT_EQ(during, 0);
  ASSERT_EQ(atomic_load(&tx.done), 0);
  ASSERT_LT(atomic_load(&tx.sent), total);
  /* resume from this (non-dispatching) thread: nothing runs inline */
  ioc_session_resume(s);
  ioc_session_resume(s);
  ASSERT_EQ(atomic_load(&srv->recs[0].total), during);
  ASSERT(!ioc_session_paused(s));
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].total) == total, 30000);
  thread_join(th);
  ASSERT_EQ(tx.err, 0);
  ASSERT_EQ(pattern_check(41, 0, srv->recs[0].buf, total), -1);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- pause_from_inside_on_recv_stops_delivery ---------------------------------------- */

typedef struct pauser {
  rec_t r;
  atomic_int pause_next;
} pauser_t;

static void pauser_recv(ioc_session_t *s, const char *data, size_t len) {
  pauser_t *p = (pauser_t *)ioc_session_userdata(s);
  ASSERT_MSG(!ioc_session_paused(s), "on_recv while paused");
  mutex_lock(&p->r.lock);
  if (p->r.len + len > p->r.cap) {
    p->r.cap = (p->r.len + len) * 2;
    p->r.buf = (char *)realloc(p->r.buf, p->r.cap);
  }
  memcpy(p->r.buf + p->r.len, data, len);
  p->r.len += len;
  mutex_unlock(&p->r.lock);
  atomic_fetch_add(&p->r.recvs, 1);
  atomic_fetch_add(&p->r.total, len);
  if (atomic_exchange(&p->pause_next, 0)) ioc_session_pause(s);
}

static void pauser_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  pauser_t *p = (pauser_t *)ud;
  p->r.s = s;
  ioc_session_callbacks_t cb = rec_callbacks();
  cb.on_recv = pauser_recv;
  ioc_session_set_callbacks(s, &cb, p);
}

void test_pause_from_inside_on_recv_stops_delivery(void) {
  ioc_core_t *core;
  make_core(&core);
  static pauser_t p;
  memset(&p, 0, sizeof p);
  rec_init(&p.r, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, pauser_accept, &p);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 10000);
  WAIT_UNTIL(core, atomic_load(&p.r.opens) == 1, 5000);
  atomic_store(&p.pause_next, 1);
  ASSERT_EQ(sock_send_all(c, "first", 5), 0);
  WAIT_UNTIL(core, atomic_load(&p.r.recvs) == 1, 5000);
  ASSERT(ioc_session_paused(p.r.s));
  char more[3000];
  pattern_fill(43, 0, more, sizeof more);
  ASSERT_EQ(sock_send_all(c, more, sizeof more), 0);
  pump_for(core, 300);
  ASSERT_EQ(atomic_load(&p.r.recvs), 1);
  ASSERT_EQ(atomic_load(&p.r.total), 5);
  /* the peer's FIN is not noticed while paused either */
  sock_shutdown_write(c);
  pump_for(core, 200);
  ASSERT_EQ(atomic_load(&p.r.closes), 0);
  ioc_session_resume(p.r.s);
  WAIT_UNTIL(core, atomic_load(&p.r.closes) == 1, 5000);
  ASSERT_EQ(atomic_load(&p.r.total), 5 + sizeof more);
  ASSERT(memcmp(p.r.buf, "first", 5) == 0);
  ASSERT_EQ(pattern_check(43, 0, p.r.buf + 5, sizeof more), -1);
  ASSERT_ERR(p.r.close_err, 0);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_free(&p.r);
}

/* ---- idle_timeout_spares_an_active_download ------------------------------------------ */

void test_idle_timeout_spares_an_active_download(void) {
  if (on_iocp())
    SKIPF("iocp: send progress is the core's own writes into the kernel (its unacknowledged "
          "bytes are not observable under wine), so a download slower than the kernel's "
          "buffers looks idle; see docs/c-api.md");
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.idle_timeout_ms = 400;
  ioc_listener_t *l = listen_opts(core, srv, &so);
  sock_t c = small_window_client(ioc_listener_address(l));
  sock_set_timeouts(c, 30000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  /* the client only downloads (sends nothing), for much longer than the
   * idle time-out */
  const size_t total = 2u << 20;
  char *data = pattern_buf(51, total);
  ASSERT_OK(ioc_session_send(srv->recs[0].s, data, total));
  paced_t rd;
  test_thread_t *th = paced_start(&rd, c, total + 1, 150000, 0); /* ~1.5 MB/s */
  WAIT_UNTIL(core, atomic_load(&rd.seen) >= total || atomic_load(&srv->recs[0].closes) == 1, 30000);
  ASSERT_MSG(atomic_load(&srv->recs[0].closes) == 0,
             "an active download was closed as idle (%s) after %zu of %zu bytes",
             ioc_err_name(srv->recs[0].close_err), atomic_load(&rd.seen), total);
  /* then, really idle, it is closed */
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, IOC_ETIMEDOUT);
  WAIT_UNTIL(core, atomic_load(&rd.done), 5000);
  thread_join(th);
  ASSERT_EQ(rd.got, total);
  ASSERT_EQ(pattern_check(51, 0, rd.buf, total), -1);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(rd.buf);
  free(data);
  rec_server_free(srv);
}

/* ---- write_timeout_closes_a_session_whose_peer_stopped_reading ------------------------ */

void test_write_timeout_closes_a_session_whose_peer_stopped_reading(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.write_timeout_ms = 300;
  ioc_listener_t *l = listen_opts(core, srv, &so);
  sock_t quiet = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 1, 5000);
  sock_t stalled = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 2, 5000);
  const size_t total = 16u << 20;
  char *data = pattern_buf(52, total);
  /* before the send: copying 16 MiB takes a while under a sanitizer, and
   * the time-out may count from the queueing */
  uint64_t t0 = now_ms();
  ASSERT_OK(ioc_session_send(srv->recs[1].s, data, total));
  WAIT_UNTIL(core, atomic_load(&srv->recs[1].closes) == 1, 20000);
  ASSERT_ERR(srv->recs[1].close_err, IOC_ETIMEDOUT);
  ASSERT_GE(srv->recs[1].close_ms - t0, 250);
  /* nothing queued: a silent session is not a write time-out */
  pump_for(core, 500);
  ASSERT_EQ(atomic_load(&srv->recs[0].closes), 0);
  sock_close(quiet);
  sock_close(stalled);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(data);
  rec_server_free(srv);
}

/* ---- connect_timeout_and_failures_give_one_code_to_on_open_and_on_close ---------------- */

/* An OS listener whose accept queue is full and never drained: further
 * connects hang in SYN_SENT. */
static sock_t full_listener(ioc_addr_t *bound, sock_t fill[3]) {
  sock_t l = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT(l != BAD_SOCK);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT(bind(l, (struct sockaddr *)&a, sizeof a) == 0);
  ASSERT(listen(l, 0) == 0);
  sock_local_addr(l, bound);
  for (int i = 0; i < 3; i++) {
    fill[i] = socket(AF_INET, SOCK_STREAM, 0);
    sock_set_nonblock(fill[i], true);
    connect(fill[i], (const struct sockaddr *)bound->u.bytes, (int)bound->len);
  }
  sleep_ms(100);
  return l;
}

void test_connect_timeout_and_failures_give_one_code_to_on_open_and_on_close(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_addr_t to;
  sock_t fill[3];
  sock_t os = full_listener(&to, fill);
  char a[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(&to, a, sizeof a) > 0);
  ioc_session_callbacks_t cb = rec_callbacks();
  /* 1. the connect time-out */
  rec_t r1;
  rec_init(&r1, 0);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.connect_timeout_ms = 300;
  ioc_session_t *s1;
  uint64_t t0 = now_ms();
  ASSERT_OK(ioc_connect(core, a, strlen(a), &cb, &r1, &so, &s1));
  /* 2. a failure with a cause, while connecting */
  rec_t r2;
  rec_init(&r2, 0);
  ioc_session_t *s2;
  ASSERT_OK(ioc_connect(core, a, strlen(a), &cb, &r2, NULL, &s2));
  /* 3. the time-out set on the session itself */
  rec_t r3;
  rec_init(&r3, 0);
  ioc_session_t *s3;
  ASSERT_OK(ioc_connect(core, a, strlen(a), &cb, &r3, NULL, &s3));
  ASSERT_OK(ioc_session_set_timeout(s3, IOC_TIMEOUT_CONNECT, 300));
  pump_for(core, 100);
  if (atomic_load(&r2.opens) != 0)
    SKIPF("a full accept queue does not hold connects here (on_open %s)", ioc_err_name(r2.open_err));
  ioc_session_fail(s2, IOC_EHOSTUNREACH);
  WAIT_UNTIL(core, atomic_load(&r1.closes) == 1 && atomic_load(&r2.closes) == 1 &&
                       atomic_load(&r3.closes) == 1, 10000);
  ASSERT_ERR(r1.open_err, IOC_ETIMEDOUT);
  ASSERT_ERR(r1.close_err, IOC_ETIMEDOUT);
  ASSERT_GE(r1.close_ms - t0, 250);
  ASSERT_ERR(r2.open_err, IOC_EHOSTUNREACH);
  ASSERT_ERR(r2.close_err, IOC_EHOSTUNREACH);
  ASSERT_ERR(r3.open_err, IOC_ETIMEDOUT);
  ASSERT_ERR(r3.close_err, IOC_ETIMEDOUT);
  ASSERT_ERR(ioc_session_set_timeout(s3, IOC_TIMEOUT_CONNECT, 300), IOC_ECLOSED);
  ioc_session_release(s1);
  ioc_session_release(s2);
  ioc_session_release(s3);
  for (int i = 0; i < 3; i++) sock_close(fill[i]);
  sock_close(os);
  ASSERT_CORE_CLEAN(core);
  rec_free(&r1);
  rec_free(&r2);
  rec_free(&r3);
}

/* ---- set_timeout_changes_a_live_session ---------------------------------------------- */

void test_set_timeout_changes_a_live_session(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_opts(core, srv, NULL);
  sock_t c0 = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 1, 5000);
  sock_t c1 = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->naccepted) == 2, 5000);
  ioc_session_t *s0 = srv->recs[0].s, *s1 = srv->recs[1].s;
  ASSERT_ERR(ioc_session_set_timeout(s0, (ioc_timeout_t)99, 10), IOC_EINVAL);
  ASSERT_ERR(ioc_session_set_timeout(s0, IOC_TIMEOUT_CONNECT, 10), IOC_ECLOSED);
  pump_for(core, 300); /* the idle time-out counts from the call, not from the accept */
  uint64_t t0 = now_ms();
  ASSERT_OK(ioc_session_set_timeout(s0, IOC_TIMEOUT_IDLE, 300));
  ASSERT_OK(ioc_session_set_timeout(s1, IOC_TIMEOUT_IDLE, 300));
  ASSERT_OK(ioc_session_set_timeout(s1, IOC_TIMEOUT_IDLE, 0)); /* off again */
  ASSERT_OK(ioc_session_set_timeout(s1, IOC_TIMEOUT_CLOSE, 0));
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, IOC_ETIMEDOUT);
  ASSERT_GE(srv->recs[0].close_ms - t0, 250);
  pump_for(core, 600);
  ASSERT_EQ(atomic_load(&srv->recs[1].closes), 0);
  ioc_session_close(s1);
  ASSERT_ERR(ioc_session_set_timeout(s1, IOC_TIMEOUT_IDLE, 10), 0); /* closing, not ended */
  sock_close(c0);
  sock_close(c1);
  WAIT_UNTIL(core, atomic_load(&srv->recs[1].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[1].close_err, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* ---- send_on_an_empty_queue_is_taken_whatever_its_size ------------------------------- */

void test_send_on_an_empty_queue_is_taken_whatever_its_size(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.max_pending = 65536;
  ioc_listener_t *l = listen_opts(core, srv, &so);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 30000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ioc_session_t *s = srv->recs[0].s;
  const size_t total = 16u << 20; /* 256 x max_pending, to a client not reading yet */
  char *data = pattern_buf(61, total);
  ASSERT_OK(ioc_session_send(s, data, total));
  pump_for(core, 50);
  ASSERT_GT(ioc_session_pending(s), 0);
  /* behind queued data: refused, and on_drain follows */
  ASSERT_ERR(ioc_session_send(s, "x", 1), IOC_ENOBUFS);
  ASSERT_EQ(atomic_load(&srv->recs[0].drains), 0);
  paced_t rd;
  test_thread_t *th = paced_start(&rd, c, total + 1, 0, 0);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].drains) >= 1, 20000);
  ASSERT_EQ(ioc_session_pending(s), 0);
  ioc_session_close(s);
  WAIT_UNTIL(core, atomic_load(&rd.done), 20000);
  thread_join(th);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  ASSERT_EQ(rd.got, total);
  ASSERT_EQ(pattern_check(61, 0, rd.buf, total), -1);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(rd.buf);
  free(data);
  rec_server_free(srv);
}

/* ---- want_drain_brings_on_drain_for_a_send_written_at_once ---------------------------- */

/* A writer that waits for the queue to go down (the stream style's write()
 * above its high-water mark) asks with ioc_session_want_drain(): when bytes
 * are still queued it gets an on_drain once they are out, even when the
 * kernel took them in one write (a plain send then gives no on_drain). */
void test_want_drain_brings_on_drain_for_a_send_written_at_once(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_opts(core, srv, NULL);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 30000);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  ioc_session_t *s = srv->recs[0].s;
  ASSERT_EQ(ioc_session_want_drain(s), (size_t)0); /* empty queue: nothing asked */
  const size_t chunk = 4096;
  char *data = pattern_buf(67, chunk);
  size_t sent = 0;
  int asked = 0;
  for (int i = 0; i < 200 && !asked; i++) {
    int before = atomic_load(&srv->recs[0].drains);
    ASSERT_OK(ioc_session_send(s, data, chunk));
    sent += chunk;
    size_t n = ioc_session_want_drain(s);
    if (n > 0) {
      asked = 1;
      WAIT_UNTIL(core, atomic_load(&srv->recs[0].drains) == before + 1, 10000);
    } else {
      WAIT_UNTIL(core, ioc_session_pending(s) == 0, 10000);
    }
  }
  ASSERT_MSG(asked, "never still queued when asked"); /* the send was still queued when asked, at least once */
  ASSERT_EQ(ioc_session_pending(s), 0);
  char *got = malloc(sent);
  ASSERT(got != NULL);
  size_t have = 0;
  while (have < sent) {
    long r = sock_recv(c, got + have, sent - have);
    ASSERT_GT(r, 0);
    have += (size_t)r;
  }
  for (size_t off = 0; off < sent; off += chunk) ASSERT_EQ(pattern_check(67, 0, got + off, chunk), -1);
  ioc_session_close(s);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(got);
  free(data);
  rec_server_free(srv);
}

/* ---- outbound_local_address_asked_before_the_connect_is_right_after ------------------- */

typedef struct local_probe {
  ioc_core_t *core;
  char target[IOC_ADDRSTRLEN];
  rec_t r;
  ioc_session_t *s;
  char early[IOC_ADDRSTRLEN];
  atomic_int asked; /* s and early are written */
} local_probe_t;

/* In a dispatch batch: io_uring submits the connect at the batch's end, so
 * the socket is not bound yet when it is asked here. */
static void connect_and_ask(void *arg) {
  local_probe_t *p = (local_probe_t *)arg;
  ioc_session_callbacks_t cb = rec_callbacks();
  ASSERT_OK(ioc_connect(p->core, p->target, strlen(p->target), &cb, &p->r, NULL, &p->s));
  int n = ioc_addr_format(ioc_session_local(p->s), p->early, sizeof p->early);
  if (n < 0) snprintf(p->early, sizeof p->early, "(%s)", ioc_err_name(n));
  atomic_store(&p->asked, 1);
}

void test_outbound_local_address_asked_before_the_connect_is_right_after(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  static local_probe_t p;
  memset(&p, 0, sizeof p);
  p.core = core;
  rec_init(&p.r, 0);
  listener_addr_str(l, p.target);
  ASSERT_OK(ioc_core_post(core, connect_and_ask, &p));
  WAIT_UNTIL(core, atomic_load(&p.asked) && atomic_load(&p.r.opens) == 1 &&
                       atomic_load(&srv->naccepted) == 1, 5000);
  ASSERT_ERR(p.r.open_err, 0);
  char got[IOC_ADDRSTRLEN], want[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(ioc_session_local(p.s), got, sizeof got) > 0);
  snprintf(want, sizeof want, "127.0.0.1:%d", srv->recs[0].peer_port);
  fprintf(stderr, "local address: %s inside the connecting callback, %s after\n", p.early, got);
  ASSERT_STR_EQ(got, want);
  ioc_session_close(p.s);
  WAIT_UNTIL(core, atomic_load(&p.r.closes) == 1, 5000);
  ioc_session_release(p.s);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_free(&p.r);
  rec_server_free(srv);
}

/* ---- sweep_runs_only_while_a_session_needs_it ---------------------------------------- */

/* The time-out sweep is one core-wide timer (an object of the core): none
 * while no session has a time-out or is closing, one while any has. */
void test_sweep_runs_only_while_a_session_needs_it(void) {
  ioc_core_t *core;
  make_core(&core);
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = listen_opts(core, srv, NULL);
  sock_t c0 = tcp_connect(ioc_listener_address(l));
  sock_t c1 = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, atomic_load(&srv->recs[1].opens) == 1, 5000);
  pump_for(core, 20);
  ASSERT_EQ(core_stats(core).objects, 3); /* listener, 2 sessions: no sweep */
  ASSERT_OK(ioc_session_set_timeout(srv->recs[0].s, IOC_TIMEOUT_WRITE, 60000));
  ASSERT_OK(ioc_session_set_timeout(srv->recs[1].s, IOC_TIMEOUT_IDLE, 60000));
  ASSERT_EQ(core_stats(core).objects, 4); /* + the one sweep for both */
  sock_close(c0);
  sock_close(c1);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1 && atomic_load(&srv->recs[1].closes) == 1,
             5000);
  WAIT_UNTIL(core, core_stats(core).objects == 1, 5000); /* the listener alone */
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}
