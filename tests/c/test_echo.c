/* Echo under load: byte-exact integrity across many sessions and workers,
 * per-session callback order whatever worker runs it, and the byte and
 * session counters.
 *
 * The clients are non-blocking plain sockets driven by poll() in one or two
 * client threads. Client i sends a deterministic stream seeded by its own
 * local port, so the server can check every received slice in place, and
 * the client checks every echoed slice: a lost, reordered or duplicated
 * byte fails at the first wrong offset. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- the client engine ------------------------------------------------------------ */

typedef struct echo_conn {
  sock_t s;
  uint64_t seed; /* = local port */
  int port;
  size_t *payloads; /* sizes of the writes, in order */
  int npayloads, pi;
  size_t ppos;      /* bytes of payloads[pi] already sent */
  uint64_t total, sent, rcvd;
  uint64_t fnv_sent, fnv_rcvd;
  int state; /* 0 running, 1 all echoed and FIN sent, 2 EOF seen (done) */
} echo_conn_t;

typedef struct echo_group {
  ioc_addr_t addr;
  echo_conn_t *conns;
  int n;
  int timeout_ms;
  atomic_int connected; /* all connections of this group are up */
  atomic_int done;
} echo_group_t;

static void echo_group_main(void *arg) {
  echo_group_t *g = (echo_group_t *)arg;
  const size_t bufsz = 256 * 1024;
  char *out = (char *)malloc(bufsz), *in = (char *)malloc(bufsz);
  struct pollfd *pfd = (struct pollfd *)calloc((size_t)g->n, sizeof *pfd);
  ASSERT(out && in && pfd);
  for (int i = 0; i < g->n; i++) {
    echo_conn_t *c = &g->conns[i];
    c->s = tcp_connect(&g->addr);
    c->port = sock_local_port(c->s);
    c->seed = (uint64_t)c->port;
    c->fnv_sent = c->fnv_rcvd = FNV_INIT;
    sock_set_nonblock(c->s, true);
  }
  atomic_store(&g->connected, 1);
  int finished = 0;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(g->timeout_ms);
  while (finished < g->n) {
    if (now_ms() > dl) {
      uint64_t want = 0, got = 0;
      for (int i = 0; i < g->n; i++) {
        want += g->conns[i].total;
        got += g->conns[i].rcvd;
      }
      FAILF("echo clients: %d of %d connections finished after %d ms; %llu of %llu bytes echoed", finished, g->n,
            g->timeout_ms, (unsigned long long)got, (unsigned long long)want);
    }
    for (int i = 0; i < g->n; i++) {
      echo_conn_t *c = &g->conns[i];
      pfd[i].fd = c->s;
      pfd[i].events = 0;
      pfd[i].revents = 0;
      if (c->state == 2) {
        pfd[i].fd = (sock_t)-1; /* poll ignores negative fds */
        continue;
      }
      pfd[i].events = POLLIN;
      if (c->sent < c->total) pfd[i].events |= POLLOUT;
    }
    int rc = sock_poll(pfd, (unsigned)g->n, 50);
    ASSERT_MSG(rc >= 0, "poll: %s", ioc_err_name(rc));
    if (rc == 0) continue;
    for (int i = 0; i < g->n; i++) {
      echo_conn_t *c = &g->conns[i];
      if (c->state == 2 || pfd[i].revents == 0) continue;
      if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        long n = sock_recv(c->s, in, bufsz);
        if (n > 0) {
          if (c->rcvd + (uint64_t)n > c->total)
            FAILF("connection %d (port %d): echoed %llu bytes, more than the %llu sent", i, c->port,
                  (unsigned long long)(c->rcvd + (uint64_t)n), (unsigned long long)c->total);
          long bad = pattern_check(c->seed, c->rcvd, in, (size_t)n);
          if (bad >= 0)
            FAILF("connection %d (port %d): echoed byte at offset %llu is wrong (lost, reordered or duplicated data)", i,
                  c->port, (unsigned long long)(c->rcvd + (uint64_t)bad));
          c->fnv_rcvd = fnv1a(c->fnv_rcvd, in, (size_t)n);
          c->rcvd += (uint64_t)n;
          if (c->rcvd == c->total && c->state == 0) {
            sock_shutdown_write(c->s);
            c->state = 1;
          }
        } else if (n == 0) {
          if (c->rcvd != c->total)
            FAILF("connection %d (port %d): EOF after %llu of %llu echoed bytes", i, c->port,
                  (unsigned long long)c->rcvd, (unsigned long long)c->total);
          c->state = 2;
          finished++;
          continue;
        } else if (n != IOC_EAGAIN) {
          FAILF("connection %d (port %d): recv %s after %llu of %llu echoed bytes", i, c->port, ioc_err_name((int)n),
                (unsigned long long)c->rcvd, (unsigned long long)c->total);
        }
      }
      if ((pfd[i].revents & POLLOUT) && c->sent < c->total) {
        size_t left = c->payloads[c->pi] - c->ppos;
        size_t len = left < bufsz ? left : bufsz;
        pattern_fill(c->seed, c->sent, out, len);
#ifdef _WIN32
        int n = send(c->s, out, (int)len, 0);
#else
        ssize_t n = send(c->s, out, len, MSG_NOSIGNAL);
#endif
        if (n < 0) {
          int e = sock_last_error();
          if (e != IOC_EAGAIN) FAILF("connection %d: send: %s", i, ioc_err_name(e));
          continue;
        }
        c->fnv_sent = fnv1a(c->fnv_sent, out, (size_t)n);
        c->sent += (uint64_t)n;
        c->ppos += (size_t)n;
        if (c->ppos == c->payloads[c->pi]) {
          c->pi++;
          c->ppos = 0;
        }
        if (c->total == 0 && c->state == 0) {
          sock_shutdown_write(c->s);
          c->state = 1;
        }
      }
    }
  }
  for (int i = 0; i < g->n; i++) sock_close(g->conns[i].s);
  free(out);
  free(in);
  free(pfd);
  atomic_store(&g->done, 1);
}

/* Plans connection i: npay payloads with sizes drawn by mix: 0 = small
 * messages (1..max_small), 1 = the 1 B .. 1 MiB spread. */
static void plan_conn(echo_conn_t *c, uint64_t *rng, int npay, int mix, size_t max_small) {
  memset(c, 0, sizeof *c);
  c->payloads = (size_t *)calloc((size_t)npay, sizeof(size_t));
  ASSERT(c->payloads != NULL);
  c->npayloads = npay;
  for (int k = 0; k < npay; k++) {
    size_t sz;
    if (mix == 0) {
      sz = (size_t)rng_range(rng, 1, max_small);
    } else {
      uint64_t bucket = rng_range(rng, 0, 9);
      if (bucket < 4)
        sz = (size_t)rng_range(rng, 1, 4096);
      else if (bucket < 8)
        sz = (size_t)rng_range(rng, 4097, 256 * 1024);
      else
        sz = (size_t)rng_range(rng, 256 * 1024 + 1, 1 << 20);
      if (k == 0 && rng_range(rng, 0, 19) == 0) sz = 1; /* some 1-byte writes */
    }
    c->payloads[k] = sz;
    c->total += sz;
  }
}

/* ---- the server side ---------------------------------------------------------------- */

enum { EV_ACCEPT = 1, EV_OPEN, EV_RECV, EV_DRAIN, EV_CLOSE };

typedef struct srv_sess {
  atomic_int filled; /* es_accept has filled s, port, seed: set last */
  ioc_session_t *s;
  int port;
  uint64_t seed;
  uint64_t bytes, fnv;
  int close_err;
  atomic_int closes;
  atomic_int in_main;      /* inside on_open / on_recv / on_close */
  atomic_int in_openclose; /* inside on_open / on_close */
  atomic_int in_drain;
  /* event log for the order test */
  test_mutex_t lock;
  unsigned char *events;
  int nevents, capevents;
} srv_sess_t;

typedef struct echo_server {
  srv_sess_t *sess;
  int max;
  atomic_int naccepted, nclosed;
  int log_events;
} echo_server_t;

static void log_event(srv_sess_t *ss, int ev, int on) {
  if (!on) return;
  mutex_lock(&ss->lock);
  if (ss->nevents == ss->capevents) {
    ss->capevents = ss->capevents ? ss->capevents * 2 : 256;
    ss->events = (unsigned char *)realloc(ss->events, (size_t)ss->capevents);
    ASSERT(ss->events != NULL);
  }
  ss->events[ss->nevents++] = (unsigned char)ev;
  mutex_unlock(&ss->lock);
}

static echo_server_t *g_srv;

static void enter_main(srv_sess_t *ss, const char *what) {
  if (atomic_exchange(&ss->in_main, 1) != 0)
    FAILF("session port %d: %s while another on_open/on_recv/on_close of it runs", ss->port, what);
}
static void leave_main(srv_sess_t *ss) { atomic_store(&ss->in_main, 0); }

static void es_open(ioc_session_t *s, int err) {
  srv_sess_t *ss = (srv_sess_t *)ioc_session_userdata(s);
  atomic_store(&ss->in_openclose, 1);
  enter_main(ss, "on_open");
  ASSERT_MSG(atomic_load(&ss->in_drain) == 0, "on_open while on_drain runs");
  ASSERT_EQ(err, 0);
  log_event(ss, EV_OPEN, g_srv->log_events);
  leave_main(ss);
  atomic_store(&ss->in_openclose, 0);
}

static void es_recv(ioc_session_t *s, const char *data, size_t len) {
  srv_sess_t *ss = (srv_sess_t *)ioc_session_userdata(s);
  enter_main(ss, "on_recv");
  long bad = pattern_check(ss->seed, ss->bytes, data, len);
  if (bad >= 0)
    FAILF("server session port %d: byte at offset %llu wrong: receives out of stream order", ss->port,
          (unsigned long long)(ss->bytes + (uint64_t)bad));
  ss->fnv = fnv1a(ss->fnv, data, len);
  ss->bytes += len;
  log_event(ss, EV_RECV, g_srv->log_events);
  int rc = ioc_session_send(s, data, len);
  if (rc != 0) FAILF("echo send on port %d: %d (%s)", ss->port, rc, ioc_err_name(rc));
  leave_main(ss);
}

static void es_drain(ioc_session_t *s) {
  srv_sess_t *ss = (srv_sess_t *)ioc_session_userdata(s);
  atomic_fetch_add(&ss->in_drain, 1);
  ASSERT_MSG(atomic_load(&ss->in_openclose) == 0, "on_drain while on_open/on_close runs");
  log_event(ss, EV_DRAIN, g_srv->log_events);
  atomic_fetch_sub(&ss->in_drain, 1);
}

static void es_close(ioc_session_t *s, int err) {
  srv_sess_t *ss = (srv_sess_t *)ioc_session_userdata(s);
  atomic_store(&ss->in_openclose, 1);
  enter_main(ss, "on_close");
  ASSERT_MSG(atomic_load(&ss->in_drain) == 0, "on_close while on_drain runs");
  ss->close_err = err;
  log_event(ss, EV_CLOSE, g_srv->log_events);
  leave_main(ss);
  atomic_store(&ss->in_openclose, 0);
  if (atomic_fetch_add(&ss->closes, 1) != 0) FAILF("session port %d: on_close twice", ss->port);
  atomic_fetch_add(&g_srv->nclosed, 1);
}

static void es_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  echo_server_t *srv = (echo_server_t *)ud;
  int i = atomic_fetch_add(&srv->naccepted, 1);
  ASSERT_MSG(i < srv->max, "more sessions accepted than clients connected");
  srv_sess_t *ss = &srv->sess[i];
  ss->s = s;
  ss->port = ioc_addr_port(ioc_session_peer(s));
  ss->seed = (uint64_t)ss->port;
  ss->fnv = FNV_INIT;
  log_event(ss, EV_ACCEPT, srv->log_events);
  atomic_store(&ss->filled, 1);
  ioc_session_callbacks_t cb = callbacks(es_open, es_recv, es_drain, es_close);
  ioc_session_set_callbacks(s, &cb, ss);
}

static echo_server_t *echo_server_new(int max, int log_events) {
  echo_server_t *srv = (echo_server_t *)calloc(1, sizeof *srv);
  srv->sess = (srv_sess_t *)calloc((size_t)max, sizeof(srv_sess_t));
  ASSERT(srv && srv->sess);
  srv->max = max;
  srv->log_events = log_events;
  for (int i = 0; i < max; i++) mutex_init(&srv->sess[i].lock);
  g_srv = srv;
  return srv;
}

static void echo_server_free(echo_server_t *srv) {
  for (int i = 0; i < srv->max; i++) {
    mutex_destroy(&srv->sess[i].lock);
    free(srv->sess[i].events);
  }
  free(srv->sess);
  free(srv);
}

/* The session accepted for a client port: a slot is claimed (naccepted)
 * before it is filled, and only read once `filled` says so (on a pool the
 * accept callback may still be filling it). */
static srv_sess_t *find_port(echo_server_t *srv, int port) {
  int n = atomic_load(&srv->naccepted);
  for (int i = 0; i < n; i++)
    if (atomic_load(&srv->sess[i].filled) && srv->sess[i].port == port) return &srv->sess[i];
  return NULL;
}

static srv_sess_t *sess_for_port(ioc_core_t *core, echo_server_t *srv, int port) {
  srv_sess_t *ss = NULL;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while ((ss = find_port(srv, port)) == NULL) {
    if (now_ms() > dl) FAILF("no session accepted for client port %d", port);
    pump(core, 5);
  }
  return ss;
}

/* Runs n connections in nthreads client threads against l; checks both
 * directions; waits for every server session to close with 0. Returns the
 * total bytes sent by the clients. */
static uint64_t run_echo(ioc_core_t *core, ioc_listener_t *l, echo_server_t *srv, echo_conn_t *conns, int n,
                         int nthreads, int timeout_ms) {
  echo_group_t groups[4];
  test_thread_t *th[4];
  ASSERT(nthreads >= 1 && nthreads <= 4);
  int per = (n + nthreads - 1) / nthreads, start = 0;
  for (int t = 0; t < nthreads; t++) {
    memset(&groups[t], 0, sizeof groups[t]);
    groups[t].addr = *ioc_listener_address(l);
    groups[t].conns = conns + start;
    groups[t].n = start + per > n ? n - start : per;
    groups[t].timeout_ms = timeout_ms;
    start += groups[t].n;
    th[t] = thread_start(echo_group_main, &groups[t]);
  }
  for (int t = 0; t < nthreads; t++) WAIT_UNTIL(core, atomic_load(&groups[t].done), timeout_ms + 5000);
  for (int t = 0; t < nthreads; t++) thread_join(th[t]);
  uint64_t total = 0;
  WAIT_UNTIL(core, atomic_load(&srv->nclosed) == n, 10000);
  ASSERT_EQ(atomic_load(&srv->naccepted), n);
  for (int i = 0; i < n; i++) {
    echo_conn_t *c = &conns[i];
    srv_sess_t *ss = sess_for_port(core, srv, c->port);
    ASSERT_MSG(ss->bytes == c->total, "client port %d sent %llu bytes, its session received %llu", c->port,
               (unsigned long long)c->total, (unsigned long long)ss->bytes);
    ASSERT_MSG(ss->fnv == c->fnv_sent, "client port %d: checksum of what the session received differs", c->port);
    ASSERT_MSG(c->fnv_rcvd == c->fnv_sent, "client port %d: checksum of the echo differs", c->port);
    ASSERT_MSG(ss->close_err == 0, "session port %d closed with %s after the peer's FIN", c->port,
               ioc_err_name(ss->close_err));
    total += c->total;
  }
  return total;
}

static void free_conns(echo_conn_t *conns, int n) {
  for (int i = 0; i < n; i++) free(conns[i].payloads);
  free(conns);
}

/* ---- echo_large_stream_single_thread ---------------------------------------------------- */

void test_echo_large_stream_single_thread(void) {
  ioc_core_t *core;
  make_core(&core);
  echo_server_t *srv = echo_server_new(4, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, es_accept, srv);
  int n = 3;
  echo_conn_t *conns = (echo_conn_t *)calloc((size_t)n, sizeof *conns);
  uint64_t rng = 1;
  plan_conn(&conns[0], &rng, 1, 0, 1); /* one 1-byte stream */
  conns[0].payloads[0] = 1;
  conns[0].total = 1;
  plan_conn(&conns[1], &rng, 1, 0, 1);
  conns[1].payloads[0] = scaled_load(32u << 20, 1 << 20); /* one 32 MiB write */
  conns[1].total = conns[1].payloads[0];
  plan_conn(&conns[2], &rng, 40, 1, 0);
  uint64_t total = run_echo(core, l, srv, conns, n, 1, 60000);
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.bytes_in, total);
  ASSERT_EQ(st.bytes_out, total);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free_conns(conns, n);
  echo_server_free(srv);
}

/* ---- echo_integrity_100_sessions_4_workers --------------------------------------------- */

void test_echo_integrity_100_sessions_4_workers(void) {
  enum { N = 100 };
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 4));
  echo_server_t *srv = echo_server_new(N, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, es_accept, srv);
  echo_conn_t *conns = (echo_conn_t *)calloc(N, sizeof *conns);
  uint64_t rng = 2024;
  /* 1 B .. 1 MiB payloads, 4 per connection on average: about 70 MiB each way */
  int npay = (int)scaled_load(4, 1);
  for (int i = 0; i < N; i++) plan_conn(&conns[i], &rng, npay, 1, 0);
  uint64_t want = 0;
  for (int i = 0; i < N; i++) want += conns[i].total;
  uint64_t t0 = now_ms();
  uint64_t total = run_echo(core, l, srv, conns, N, 2, 90000);
  ASSERT_EQ(total, want);
  uint64_t ms = now_ms() - t0;
  fprintf(stderr, "echo_integrity: %.1f MiB each way through 100 sessions in %llu ms\n", (double)total / 1048576.0,
          (unsigned long long)ms);
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.bytes_in, total);
  ASSERT_EQ(st.bytes_out, total);
  ASSERT_EQ(st.accepted, N);
  ASSERT_EQ(st.closed, N);
  ioc_listener_close(l);
  ioc_core_stop(core);
  ioc_core_join(core);
  ASSERT_EQ(ioc_core_threads(core), 0);
  ASSERT_CORE_CLEAN(core);
  free_conns(conns, N);
  echo_server_free(srv);
}

/* ---- session_callbacks_order_accept_recv_close ------------------------------------------ */

void test_session_callbacks_order_accept_recv_close(void) {
  enum { N = 24 };
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 4));
  echo_server_t *srv = echo_server_new(N, 1);
  ioc_listener_t *l = listen_loopback(core, NULL, es_accept, srv);
  echo_conn_t *conns = (echo_conn_t *)calloc(N, sizeof *conns);
  uint64_t rng = 77;
  /* many small writes: lots of receives per session, on any worker */
  int npay = (int)scaled_load(300, 20);
  for (int i = 0; i < N; i++) plan_conn(&conns[i], &rng, npay, 0, 4000);
  run_echo(core, l, srv, conns, N, 2, 60000);
  for (int i = 0; i < N; i++) {
    srv_sess_t *ss = &srv->sess[i];
    mutex_lock(&ss->lock);
    ASSERT_MSG(ss->nevents >= 3, "session %d logged %d events", i, ss->nevents);
    ASSERT_MSG(ss->events[0] == EV_ACCEPT, "session %d: first event %d, expected on_accept", i, ss->events[0]);
    ASSERT_MSG(ss->events[1] == EV_OPEN, "session %d: second event %d, expected on_open", i, ss->events[1]);
    ASSERT_MSG(ss->events[ss->nevents - 1] == EV_CLOSE, "session %d: last event %d, expected on_close", i,
               ss->events[ss->nevents - 1]);
    int recvs = 0;
    for (int k = 2; k < ss->nevents - 1; k++) {
      ASSERT_MSG(ss->events[k] == EV_RECV || ss->events[k] == EV_DRAIN, "session %d: event %d at %d between open and close", i,
                 ss->events[k], k);
      recvs += ss->events[k] == EV_RECV;
    }
    ASSERT_GE(recvs, 1);
    mutex_unlock(&ss->lock);
    ASSERT_EQ(atomic_load(&ss->closes), 1);
  }
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free_conns(conns, N);
  echo_server_free(srv);
}

/* ---- stats_count_bytes_and_sessions ----------------------------------------------------- */

void test_stats_count_bytes_and_sessions(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_stats_t st0 = core_stats(core);
  ASSERT_EQ(st0.accepted, 0);
  ASSERT_EQ(st0.connected, 0);
  ASSERT_EQ(st0.active, 0);
  ASSERT_EQ(st0.closed, 0);
  ASSERT_EQ(st0.bytes_in, 0);
  ASSERT_EQ(st0.bytes_out, 0);
  ASSERT_EQ(st0.objects, 0);
  ASSERT_EQ(st0.sockets, 0);
  echo_server_t *srv = echo_server_new(8, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, es_accept, srv);
  ioc_stats_t st1 = core_stats(core);
  ASSERT_EQ(st1.objects, 1);
  ASSERT_EQ(st1.sockets, 1);
  sock_t c[5];
  for (int i = 0; i < 5; i++) c[i] = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, core_stats(core).active == 5, 5000);
  ioc_stats_t st2 = core_stats(core);
  ASSERT_EQ(st2.accepted, 5);
  ASSERT_EQ(st2.objects, 6);
  ASSERT_EQ(st2.sockets, 6);
  ASSERT_EQ(ioc_listener_sessions(l), 5);
  size_t sent = 0;
  for (int i = 0; i < 5; i++) {
    char b[1000];
    size_t len = 100 * (size_t)(i + 1);
    srv_sess_t *ss = sess_for_port(core, srv, sock_local_port(c[i]));
    pattern_fill(ss->seed, 0, b, len);
    ASSERT_EQ(sock_send_all(c[i], b, len), 0);
    sent += len;
  }
  WAIT_UNTIL(core, core_stats(core).bytes_in == sent && core_stats(core).bytes_out == sent, 5000);
  ASSERT_GT(core_stats(core).completions, 0);
  for (int i = 0; i < 5; i++) sock_close(c[i]);
  WAIT_UNTIL(core, core_stats(core).closed == 5, 5000);
  ioc_stats_t st3 = core_stats(core);
  ASSERT_EQ(st3.active, 0);
  ASSERT_EQ(st3.objects, 1);
  ASSERT_EQ(st3.sockets, 1);
  ASSERT_EQ(st3.accepted, 5);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  echo_server_free(srv);
}

/* ---- small_queue_depth_still_carries_many_sessions ------------------------------------- */

/* io_uring with 8 submission entries and far more operations than that in
 * flight: submissions must queue, not fail, and completions must not be
 * dropped. (Other backends ignore queue_depth; the test holds for them too.) */
void test_small_queue_depth_still_carries_many_sessions(void) {
  enum { N = 64 };
  ioc_core_t *core;
  ioc_core_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.queue_depth = 8;
  make_core_opts(&core, &opts);
  ASSERT_OK(ioc_core_start(core, 2));
  echo_server_t *srv = echo_server_new(N, 0);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.accepts = 32; /* more accepts than submission entries on their own */
  ioc_listener_t *l = listen_loopback(core, &lo, es_accept, srv);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 32, 5000);
  echo_conn_t *conns = (echo_conn_t *)calloc(N, sizeof *conns);
  uint64_t rng = 8;
  for (int i = 0; i < N; i++) plan_conn(&conns[i], &rng, (int)scaled_load(20, 4), 0, 64 * 1024);
  run_echo(core, l, srv, conns, N, 2, 60000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free_conns(conns, N);
  echo_server_free(srv);
}
