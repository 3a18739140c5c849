/* Listeners: N accepts kept posted, every connection accepted exactly once
 * with its real peer address, closing with accepts in flight, the
 * connection cap and replacing the accept callback. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

/* A session callback set that echoes and counts closes. */
static atomic_int echo_closes;
static void echo_recv(ioc_session_t *s, const char *data, size_t len) {
  int rc = ioc_session_send(s, data, len);
  if (rc != 0 && rc != IOC_ECLOSED) FAILF("echo send: %s", ioc_err_name(rc));
}
static void echo_close(ioc_session_t *s, int err) {
  (void)s;
  (void)err;
  atomic_fetch_add(&echo_closes, 1);
}
static void set_echo(ioc_session_t *s) {
  ioc_session_callbacks_t cb = callbacks(NULL, echo_recv, NULL, echo_close);
  ioc_session_set_callbacks(s, &cb, NULL);
}

/* Sends "ping" and expects it back: 1 if echoed, 0 if the connection was
 * refused/reset/closed instead. */
static int client_pings(sock_t c) {
  if (sock_send_all(c, "ping", 4) != 0) return 0;
  char b[4];
  return sock_recv_exact(c, b, 4) == 0 && memcmp(b, "ping", 4) == 0;
}

/* ---- listener_keeps_n_accepts_posted ------------------------------------------ */

#define BURST 200
#define NACC 8

typedef struct burst {
  ioc_addr_t addr;
  sock_t socks[BURST];
  int ports[BURST];
  atomic_int connected;
  atomic_int may_close;
} burst_t;

static burst_t burst;
static test_mutex_t acc_lock;
static int *port_hits; /* [65536] */
static atomic_int accepts_seen;
static char listener_str[IOC_ADDRSTRLEN];
static ioc_core_t *acc_core;

static void burst_client_main(void *arg) {
  burst_t *b = (burst_t *)arg;
  for (int i = 0; i < BURST; i++) {
    b->socks[i] = tcp_connect(&b->addr);
    b->ports[i] = sock_local_port(b->socks[i]);
  }
  atomic_store(&b->connected, 1);
  while (!atomic_load(&b->may_close)) sleep_ms(1);
  for (int i = 0; i < BURST; i++) sock_close(b->socks[i]);
}

static void burst_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  ASSERT(ud == &burst);
  const ioc_addr_t *peer = ioc_session_peer(s);
  const ioc_addr_t *local = ioc_session_local(s);
  ASSERT(peer != NULL && local != NULL);
  ASSERT_EQ(peer->u.family, AF_INET);
  char ps[IOC_ADDRSTRLEN], ls[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(peer, ps, sizeof ps) > 0);
  ASSERT(ioc_addr_format(local, ls, sizeof ls) > 0);
  int port = ioc_addr_port(peer);
  char want[IOC_ADDRSTRLEN];
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  ASSERT_MSG(port != 0 && strcmp(ps, want) == 0, "session peer is \"%s\", expected 127.0.0.1:<client port>", ps);
  ASSERT_MSG(strcmp(ls, listener_str) == 0, "session local address is \"%s\", listener is \"%s\"", ls, listener_str);
  ioc_stats_t st = core_stats(acc_core);
  ASSERT_MSG(st.accepts_posted <= NACC, "accepts_posted = %llu > accepts = %d", (unsigned long long)st.accepts_posted, NACC);
  (void)l;
  mutex_lock(&acc_lock);
  port_hits[port]++;
  mutex_unlock(&acc_lock);
  set_echo(s);
  atomic_fetch_add(&accepts_seen, 1);
}

void test_listener_keeps_n_accepts_posted(void) {
  ioc_core_t *core;
  make_core(&core);
  acc_core = core;
  mutex_init(&acc_lock);
  port_hits = (int *)calloc(65536, sizeof(int));
  ASSERT(port_hits != NULL);
  ioc_listener_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.accepts = NACC;
  ioc_listener_t *l = listen_loopback(core, &opts, burst_accept, &burst);
  listener_addr_str(l, listener_str);
  ASSERT(strncmp(listener_str, "127.0.0.1:", 10) == 0);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 2000);
  pump_for(core, 50);
  ASSERT_EQ(core_stats(core).accepts_posted, NACC); /* idle: exactly N, no more */

  memset(&burst, 0, sizeof burst);
  burst.addr = *ioc_listener_address(l);
  test_thread_t *th = thread_start(burst_client_main, &burst);
  WAIT_UNTIL(core, atomic_load(&burst.connected) && atomic_load(&accepts_seen) >= BURST, 15000);
  pump_for(core, 50);
  ASSERT_EQ(atomic_load(&accepts_seen), BURST);
  for (int i = 0; i < BURST; i++)
    ASSERT_MSG(port_hits[burst.ports[i]] == 1, "client %d (port %d) accepted %d times", i, burst.ports[i], port_hits[burst.ports[i]]);
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.accepted, BURST);
  ASSERT_EQ(st.active, BURST);
  ASSERT_EQ(ioc_listener_sessions(l), BURST);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 2000);

  atomic_store(&burst.may_close, 1);
  thread_join(th);
  WAIT_UNTIL(core, atomic_load(&echo_closes) == BURST, 10000);
  ASSERT_EQ(ioc_listener_sessions(l), 0);
  ASSERT_EQ(core_stats(core).accepts_posted, NACC);
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 0, 2000);
  ASSERT_CORE_CLEAN(core);
  free(port_hits);
  mutex_destroy(&acc_lock);
}

/* ---- listener_default_accepts_is_16 -------------------------------------------- */

static atomic_int one_accepts;
static void count_and_echo(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  set_echo(s);
  atomic_fetch_add(&one_accepts, 1);
}

void test_listener_default_accepts_is_16(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_t *a = listen_loopback(core, NULL, NULL, NULL);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 16, 2000);
  ioc_listener_options_t opts;
  memset(&opts, 0, sizeof opts); /* accepts 0 = default */
  ioc_listener_t *b = listen_loopback(core, &opts, NULL, NULL);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 32, 2000);
  /* one accept posted: re-posted after every connection */
  opts.accepts = 1;
  ioc_listener_t *c = listen_loopback(core, &opts, count_and_echo, NULL);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 33, 2000);
  ioc_addr_t ca = *ioc_listener_address(c);
  for (int i = 0; i < 20; i++) {
    sock_t s = tcp_connect(&ca);
    WAIT_UNTIL(core, atomic_load(&one_accepts) == i + 1, 5000);
    sock_close(s);
  }
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 33, 2000);
  ioc_listener_close(a);
  ioc_listener_close(b);
  ioc_listener_close(c);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 0, 2000);
  ASSERT_CORE_CLEAN(core);
}

/* ---- listener_on_ipv6_loopback_accepts ------------------------------------------- */

static atomic_int v6_ok;
static int v6_client_port;
static void v6_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  char ps[IOC_ADDRSTRLEN], want[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(ioc_session_peer(s), ps, sizeof ps) > 0);
  if (atomic_load(&v6_ok) == 0) { /* the plain client, whose port we know */
    snprintf(want, sizeof want, "[::1]:%d", v6_client_port);
    ASSERT_MSG(strcmp(ps, want) == 0, "IPv6 session peer is \"%s\", expected \"%s\"", ps, want);
  } else {
    ASSERT_MSG(strncmp(ps, "[::1]:", 6) == 0, "IPv6 session peer is \"%s\"", ps);
  }
  set_echo(s);
  atomic_fetch_add(&v6_ok, 1);
}

static atomic_int v6_opened;
static int v6_open_err = 1;
static void v6_open(ioc_session_t *s, int err) {
  v6_open_err = err;
  if (err == 0) {
    char ps[IOC_ADDRSTRLEN];
    ASSERT(ioc_addr_format(ioc_session_local(s), ps, sizeof ps) > 0);
    ASSERT_MSG(strncmp(ps, "[::1]:", 6) == 0, "outbound IPv6 session's local address is %s", ps);
  }
  atomic_fetch_add(&v6_opened, 1);
}

void test_listener_on_ipv6_loopback_accepts(void) {
  /* is IPv6 loopback usable at all on this machine? */
  ioc_addr_t probe;
  ASSERT_OK(ioc_addr_parse(&probe, "[::1]:0", 7));
  sock_t ps = socket(AF_INET6, SOCK_STREAM, 0);
  if (ps == BAD_SOCK) SKIPF("no IPv6 sockets on this machine");
  int bound = bind(ps, (const struct sockaddr *)probe.u.bytes, (int)probe.len) == 0;
  sock_close(ps);
  if (!bound) SKIPF("IPv6 loopback [::1] is not configured on this machine");

  ioc_core_t *core;
  make_core(&core);
  ioc_listener_t *l = NULL;
  ASSERT_OK(ioc_listen(core, "[::1]:0", 7, NULL, v6_accept, NULL, &l));
  char ls[IOC_ADDRSTRLEN];
  listener_addr_str(l, ls);
  ASSERT(strncmp(ls, "[::1]:", 6) == 0);
  ASSERT_NE(ioc_addr_port(ioc_listener_address(l)), 0);
  sock_t c = socket(AF_INET6, SOCK_STREAM, 0);
  ASSERT(c != BAD_SOCK);
  /* bind first so the accept callback knows the port to expect */
  ASSERT(bind(c, (const struct sockaddr *)probe.u.bytes, (int)probe.len) == 0);
  v6_client_port = sock_local_port(c);
  const ioc_addr_t *la = ioc_listener_address(l);
  ASSERT_MSG(connect(c, (const struct sockaddr *)la->u.bytes, (int)la->len) == 0, "connect to %s failed", ls);
  WAIT_UNTIL(core, atomic_load(&v6_ok), 5000);
  sock_set_timeouts(c, 5000);
  /* an echo round trip over IPv6, dispatching while the client waits */
  ASSERT_EQ(sock_send_all(c, "ping", 4), 0);
  char b[4];
  size_t got = 0;
  sock_set_nonblock(c, true);
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (got < 4 && now_ms() < dl) {
    pump(core, 10);
    long n = sock_recv(c, b + got, 4 - got);
    if (n > 0) got += (size_t)n;
  }
  ASSERT_EQ(got, 4);
  ASSERT(memcmp(b, "ping", 4) == 0);
  sock_close(c);
  /* and ioc_connect over IPv6 */
  ioc_session_callbacks_t cb = callbacks(v6_open, NULL, NULL, NULL);
  ASSERT_OK(ioc_connect(core, ls, strlen(ls), &cb, NULL, NULL, NULL));
  WAIT_UNTIL(core, atomic_load(&v6_opened) == 1, 5000);
  ASSERT_EQ(v6_open_err, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- close_listener_with_accepts_in_flight_frees_everything ------------------------ */

typedef struct closer_ctx {
  _Atomic(ioc_listener_t *) l; /* set by the test while connections may come */
  atomic_int accepted;
  atomic_int after_close; /* on_accept calls after ioc_listener_close returned */
  atomic_int closed_it;
  atomic_int closing; /* one on_accept, the first, closes */
} closer_ctx_t;

static closer_ctx_t cctx;
/* Set on the thread whose on_accept closed the listener. An on_accept that
 * thread runs later surely started after ioc_listener_close returned; one
 * that another worker had already begun when the close came (test threads
 * > 1) may run alongside it, and its reading of closed_it tells nothing. */
static _Thread_local int closed_on_this_thread;

static void close_on_first_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)ud;
  set_echo(s);
  if (closed_on_this_thread) atomic_fetch_add(&cctx.after_close, 1);
  atomic_fetch_add(&cctx.accepted, 1);
  int expected = 0;
  if (atomic_compare_exchange_strong(&cctx.closing, &expected, 1)) {
    ASSERT(l == cctx.l);
    ioc_listener_close(l);
    closed_on_this_thread = 1;
    atomic_store(&cctx.closed_it, 1);
  }
}

static void accept_echo_count(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  set_echo(s);
  atomic_fetch_add(&cctx.accepted, 1);
}

typedef struct conn_storm {
  ioc_addr_t addr;
  int n;
  sock_t socks[128];
  int nsocks;
  atomic_int done;
} conn_storm_t;

static void storm_main(void *arg) {
  conn_storm_t *cs = (conn_storm_t *)arg;
  for (int i = 0; i < cs->n; i++) {
    int err = 0;
    sock_t s = tcp_connect_err(&cs->addr, &err);
    if (s != BAD_SOCK) {
      sock_set_timeouts(s, 5000);
      cs->socks[cs->nsocks++] = s;
    } else if (err != IOC_ECONNREFUSED && err != IOC_ECONNRESET) {
      FAILF("client connect: %s", ioc_err_name(err));
    }
  }
  atomic_store(&cs->done, 1);
}

static void expect_refused(const ioc_addr_t *a) {
  int err = 0;
  sock_t s = tcp_connect_err(a, &err);
  if (s != BAD_SOCK) sock_close(s);
  ASSERT_MSG(s == BAD_SOCK && err == IOC_ECONNREFUSED, "connect to a closed listener's port: %s",
             s == BAD_SOCK ? ioc_err_name(err) : "connected");
}

void test_close_listener_with_accepts_in_flight_frees_everything(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.accepts = 32;

  /* (a) closed right after listen, before any dispatch */
  ioc_listener_t *l = listen_loopback(core, &opts, NULL, NULL);
  ioc_addr_t la = *ioc_listener_address(l);
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 5000);
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.accepts_posted, 0);
  ASSERT_EQ(st.ops_inflight, 0);
  ASSERT_EQ(st.sockets, 0);
  expect_refused(&la);

  /* (b) closed from inside on_accept during a burst of connections */
  memset(&cctx, 0, sizeof cctx);
  l = listen_loopback(core, &opts, close_on_first_accept, NULL);
  cctx.l = l;
  static conn_storm_t storm;
  memset(&storm, 0, sizeof storm);
  storm.addr = *ioc_listener_address(l);
  storm.n = 60;
  test_thread_t *th = thread_start(storm_main, &storm);
  WAIT_UNTIL(core, atomic_load(&storm.done) && atomic_load(&cctx.closed_it), 10000);
  thread_join(th);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 0, 5000);
  ASSERT_MSG(atomic_load(&cctx.after_close) == 0,
             "on_accept ran %d times on the closing thread after ioc_listener_close returned (from inside on_accept)",
             atomic_load(&cctx.after_close));
  /* sessions accepted before the close live on; the others are reset */
  int echoed = 0;
  for (int i = 0; i < storm.nsocks; i++) {
    sock_set_nonblock(storm.socks[i], false);
  }
  /* dispatch from a pool so the blocking clients below get their echoes */
  ASSERT_OK(test_pool_start(core, 1));
  for (int i = 0; i < storm.nsocks; i++) {
    echoed += client_pings(storm.socks[i]);
    sock_close(storm.socks[i]);
  }
  ASSERT_EQ(echoed, atomic_load(&cctx.accepted));
  expect_refused(&storm.addr);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 5000);

  /* (c) closed from another thread while 2 workers accept a storm */
  ioc_core_stop(core);
  ioc_core_join(core);
  ASSERT_OK(test_pool_start(core, 2));
  memset(&cctx, 0, sizeof cctx);
  l = listen_loopback(core, &opts, accept_echo_count, NULL);
  memset(&storm, 0, sizeof storm);
  storm.addr = *ioc_listener_address(l);
  storm.n = 100;
  th = thread_start(storm_main, &storm);
  WAIT_UNTIL(core, atomic_load(&cctx.accepted) >= 20, 10000);
  ioc_listener_close(l);
  thread_join(th);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 0, 5000);
  sleep_ms(50);
  int accepted = atomic_load(&cctx.accepted);
  echoed = 0;
  for (int i = 0; i < storm.nsocks; i++) {
    echoed += client_pings(storm.socks[i]);
    sock_close(storm.socks[i]);
  }
  ASSERT_EQ(echoed, accepted);
  expect_refused(&storm.addr);
  ASSERT_CORE_CLEAN(core);
}

/* ---- listener_close_keeps_accepted_sessions ----------------------------------------- */

void test_listener_close_keeps_accepted_sessions(void) {
  ioc_core_t *core;
  make_core(&core);
  memset(&cctx, 0, sizeof cctx);
  ioc_listener_t *l = listen_loopback(core, NULL, accept_echo_count, NULL);
  ioc_addr_t la = *ioc_listener_address(l);
  sock_t c[3];
  for (int i = 0; i < 3; i++) {
    c[i] = tcp_connect(&la);
    sock_set_timeouts(c[i], 5000);
  }
  WAIT_UNTIL(core, atomic_load(&cctx.accepted) == 3, 5000);
  ioc_listener_close(l);
  ioc_listener_close(l); /* safe to call twice */
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 0, 5000);
  pump_for(core, 20);
  /* the socket is closed at once, though its sessions live on */
  expect_refused(&la);
  ASSERT_EQ(core_stats(core).sockets, 3);
  ASSERT_EQ(core_stats(core).active, 3);
  ASSERT_OK(test_pool_start(core, 1));
  for (int i = 0; i < 3; i++) ASSERT_MSG(client_pings(c[i]), "session %d stopped working when its listener closed", i);
  for (int i = 0; i < 3; i++) sock_close(c[i]);
  WAIT_UNTIL(core, core_stats(core).objects == 0, 5000);
  ASSERT_CORE_CLEAN(core);
}

/* ---- listener_max_connections_rejects_excess ------------------------------------------ */

void test_listener_max_connections_rejects_excess(void) {
  ioc_core_t *core;
  make_core(&core);
  memset(&cctx, 0, sizeof cctx);
  atomic_store(&echo_closes, 0);
  ioc_listener_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.max_connections = 3;
  ioc_listener_t *l = listen_loopback(core, &opts, accept_echo_count, NULL);
  ioc_addr_t la = *ioc_listener_address(l);
  sock_t c[6];
  for (int i = 0; i < 3; i++) {
    c[i] = tcp_connect(&la);
    sock_set_timeouts(c[i], 5000);
    WAIT_UNTIL(core, atomic_load(&cctx.accepted) == i + 1, 5000);
  }
  for (int i = 3; i < 5; i++) {
    int err = 0;
    c[i] = tcp_connect_err(&la, &err);
    /* a reset can beat this thread's connect() back from the kernel */
    ASSERT_MSG(c[i] != BAD_SOCK || err == IOC_ECONNRESET, "client %d: connect: %s", i, ioc_err_name(err));
    if (c[i] != BAD_SOCK) sock_set_timeouts(c[i], 5000);
    WAIT_UNTIL(core, core_stats(core).rejected == (uint64_t)(i - 2), 5000);
  }
  pump_for(core, 30);
  ASSERT_EQ(atomic_load(&cctx.accepted), 3); /* no on_accept for the rejected */
  ASSERT_EQ(core_stats(core).active, 3);
  ASSERT_EQ(ioc_listener_sessions(l), 3);
  for (int i = 3; i < 5; i++) {
    if (c[i] == BAD_SOCK) continue;
    char b[8];
    long n = sock_recv(c[i], b, sizeof b);
    ASSERT_MSG(n == 0 || n == IOC_ECONNRESET, "rejected client %d: recv gave %ld (%s)", i, n, n < 0 ? ioc_err_name((int)n) : "data");
    sock_close(c[i]);
  }
  /* a slot frees up: the next client is accepted */
  sock_close(c[0]);
  WAIT_UNTIL(core, atomic_load(&echo_closes) == 1, 5000);
  WAIT_UNTIL(core, ioc_listener_sessions(l) == 2, 5000);
  c[5] = tcp_connect(&la);
  sock_set_timeouts(c[5], 5000);
  WAIT_UNTIL(core, atomic_load(&cctx.accepted) == 4, 5000);
  ASSERT_EQ(core_stats(core).rejected, 2);
  for (int i = 1; i < 3; i++) sock_close(c[i]);
  sock_close(c[5]);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- listener_set_accept_replaces_callback -------------------------------------------- */

static atomic_int acc_a, acc_b;
static void accept_a(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  ASSERT(ud == &acc_a);
  set_echo(s);
  atomic_fetch_add(&acc_a, 1);
}
static void accept_b(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  ASSERT(ud == &acc_b);
  set_echo(s);
  atomic_fetch_add(&acc_b, 1);
}

void test_listener_set_accept_replaces_callback(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_t *l = listen_loopback(core, NULL, accept_a, &acc_a);
  ioc_addr_t la = *ioc_listener_address(l);
  sock_t c1 = tcp_connect(&la);
  WAIT_UNTIL(core, atomic_load(&acc_a) == 1, 5000);
  ioc_listener_set_accept(l, accept_b, &acc_b);
  sock_t c2 = tcp_connect(&la);
  WAIT_UNTIL(core, atomic_load(&acc_b) == 1, 5000);
  pump_for(core, 20);
  ASSERT_EQ(atomic_load(&acc_a), 1);
  sock_close(c1);
  sock_close(c2);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- reuseport_lets_two_listeners_share_a_port --------------------------------------- */

static atomic_int rp_a, rp_b;
static void rp_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  set_echo(s);
  atomic_fetch_add((atomic_int *)ud, 1);
}

void test_reuseport_lets_two_listeners_share_a_port(void) {
#ifdef _WIN32
  SKIPF("SO_REUSEPORT has no Windows equivalent");
#else
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.reuseport = 1;
  ioc_listener_t *a = listen_loopback(core, &lo, rp_accept, &rp_a);
  char addr[IOC_ADDRSTRLEN];
  listener_addr_str(a, addr);
  ioc_listener_t *b = NULL;
  int rc = ioc_listen(core, addr, strlen(addr), &lo, rp_accept, &rp_b, &b);
  ASSERT_MSG(rc == 0, "second reuseport listener on %s: %d (%s)", addr, rc, ioc_err_name(rc));
  char addr_b[IOC_ADDRSTRLEN];
  listener_addr_str(b, addr_b);
  ASSERT_STR_EQ(addr_b, addr);
  enum { N = 64 };
  sock_t c[N];
  for (int i = 0; i < N; i++) c[i] = tcp_connect(ioc_listener_address(a));
  WAIT_UNTIL(core, atomic_load(&rp_a) + atomic_load(&rp_b) == N, 5000);
  fprintf(stderr, "reuseport: %d / %d connections\n", atomic_load(&rp_a), atomic_load(&rp_b));
  ASSERT_EQ(ioc_listener_sessions(a) + ioc_listener_sessions(b), N);
  for (int i = 0; i < N; i++) sock_close(c[i]);
  ioc_listener_close(a);
  ioc_listener_close(b);
  ASSERT_CORE_CLEAN(core);
#endif
}
