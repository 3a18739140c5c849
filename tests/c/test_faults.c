/* Fault injection (src/core/fault.h, docs/fault-injection.md): the backends
 * pretend the kernel gave short writes, EAGAIN, EINTR, ECONNRESET and ENOMEM
 * at a set rate, at the points where a kernel result enters the core. Each
 * injected fault is one the real system can give there, so what these tests
 * pin is real behaviour:
 *   - short writes, EAGAIN and EINTR are invisible to the owner: not a byte
 *     lost, duplicated or reordered, every connect completes;
 *   - failed accepts (ECONNABORTED, ENOMEM, EINTR, EAGAIN) never cost the
 *     listener an accept: N stay posted;
 *   - resets close each session exactly once and leak nothing;
 *   - a submit that fails (ENOMEM) is reported (connects: on_open(err), then
 *     on_close(err)), never a hang.
 * The faults are set per core with ioc__faults_configure(), whatever
 * IOCORE_FAULTS says. The injection sites are in the Linux backends (and
 * ioc__op_submit for ENOMEM), so the tests that need the backend's sites
 * skip on IOCP. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

#include "fault.h" /* internal: ioc__faults_configure / ioc__faults_count */

static void faults_set(ioc_core_t *core, const char *spec) {
  int rc = ioc__faults_configure(core, spec);
  ASSERT_MSG(rc == 0, "ioc__faults_configure(\"%s\"): %s", spec, ioc_err_name(rc));
}

static uint64_t injected(ioc_core_t *core, ioc__fault_kind_t kind) { return ioc__faults_count(core, kind); }

static void need_linux_backend(void) {
  if (g_backend_kind == IOC_BACKEND_IOCP)
    SKIPF("fault injection sites for %s are in the Linux backends only", g_backend_name);
}

/* ---- the echo server: checks every byte in place, counts closes ----------------- */

#define FS_MAX 1024

typedef struct fsess {
  int port;
  uint64_t seed, bytes, fnv;
  int close_err;
  atomic_int opens, closes, in_cb;
} fsess_t;

typedef struct fserver {
  fsess_t sess[FS_MAX];
  atomic_int naccepted, nclosed, nreset, nother_err;
  atomic_int max_posted_seen;
  ioc_core_t *core;
  int check_stream; /* clients send pattern streams seeded by their port */
} fserver_t;

static fserver_t *g_fs;

static void fs_enter(fsess_t *fs, const char *what) {
  if (atomic_exchange(&fs->in_cb, 1) != 0)
    FAILF("session port %d: %s while another callback of it runs", fs->port, what);
}
static void fs_leave(fsess_t *fs) { atomic_store(&fs->in_cb, 0); }

static void fs_open(ioc_session_t *s, int err) {
  fsess_t *fs = (fsess_t *)ioc_session_userdata(s);
  fs_enter(fs, "on_open");
  ASSERT_EQ(err, 0);
  if (atomic_fetch_add(&fs->opens, 1) != 0) FAILF("session port %d: on_open twice", fs->port);
  fs_leave(fs);
}

static void fs_recv(ioc_session_t *s, const char *data, size_t len) {
  fsess_t *fs = (fsess_t *)ioc_session_userdata(s);
  fs_enter(fs, "on_recv");
  if (atomic_load(&fs->closes) != 0) FAILF("session port %d: on_recv after on_close", fs->port);
  long bad = g_fs->check_stream ? pattern_check(fs->seed, fs->bytes, data, len) : -1;
  if (bad >= 0)
    FAILF("session port %d: received byte at offset %llu is wrong (lost, duplicated or reordered)",
          fs->port, (unsigned long long)(fs->bytes + (uint64_t)bad));
  fs->fnv = fnv1a(fs->fnv, data, len);
  fs->bytes += len;
  int rc = ioc_session_send(s, data, len);
  if (rc != 0 && rc != IOC_ECLOSED) FAILF("echo send on port %d: %s", fs->port, ioc_err_name(rc));
  fs_leave(fs);
}

static void fs_close(ioc_session_t *s, int err) {
  fsess_t *fs = (fsess_t *)ioc_session_userdata(s);
  fs_enter(fs, "on_close");
  if (atomic_fetch_add(&fs->closes, 1) != 0) FAILF("session port %d: on_close twice", fs->port);
  fs->close_err = err;
  if (err == IOC_ECONNRESET)
    atomic_fetch_add(&g_fs->nreset, 1);
  else if (err != 0)
    atomic_fetch_add(&g_fs->nother_err, 1);
  fs_leave(fs);
  atomic_fetch_add(&g_fs->nclosed, 1);
}

static void fs_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  fserver_t *srv = (fserver_t *)ud;
  ioc_stats_t st = core_stats(srv->core);
  int posted = (int)st.accepts_posted;
  int seen = atomic_load(&srv->max_posted_seen);
  while (posted > seen && !atomic_compare_exchange_weak(&srv->max_posted_seen, &seen, posted)) {
  }
  int i = atomic_fetch_add(&srv->naccepted, 1);
  ASSERT_MSG(i < FS_MAX, "more than %d sessions accepted", FS_MAX);
  fsess_t *fs = &srv->sess[i];
  fs->port = ioc_addr_port(ioc_session_peer(s));
  fs->seed = (uint64_t)fs->port;
  fs->fnv = FNV_INIT;
  ioc_session_callbacks_t cb = callbacks(fs_open, fs_recv, NULL, fs_close);
  ioc_session_set_callbacks(s, &cb, fs);
}

static fserver_t *fserver_new(ioc_core_t *core) {
  fserver_t *srv = (fserver_t *)calloc(1, sizeof *srv);
  ASSERT(srv != NULL);
  srv->core = core;
  srv->check_stream = 1;
  g_fs = srv;
  return srv;
}

static fsess_t *fs_for_port(fserver_t *srv, int port) {
  int n = atomic_load(&srv->naccepted);
  for (int i = 0; i < n; i++)
    if (srv->sess[i].port == port) return &srv->sess[i];
  return NULL;
}

/* ---- stream clients: non-blocking sockets driven by poll() ------------------------ */

typedef struct fconn {
  sock_t s;
  int port;
  uint64_t seed, total, sent, rcvd, fnv_sent, fnv_rcvd;
  int state;   /* 0 running, 1 everything echoed and FIN sent, 2 done */
  int end_err; /* 0 = clean EOF after the whole echo; else how it ended early */
} fconn_t;

typedef struct fgroup {
  ioc_addr_t addr;
  fconn_t *c;
  int n;
  int timeout_ms;
  int tolerate_resets; /* an early EOF / ECONNRESET ends a connection, not the test */
  atomic_int done;
} fgroup_t;

static void fgroup_main(void *arg) {
  fgroup_t *g = (fgroup_t *)arg;
  const size_t bufsz = 64 * 1024;
  char *out = (char *)malloc(bufsz), *in = (char *)malloc(bufsz);
  struct pollfd *pfd = (struct pollfd *)calloc((size_t)g->n, sizeof *pfd);
  ASSERT(out && in && pfd);
  uint64_t rng = 0x5eed0000u + (uint64_t)g->n;
  for (int i = 0; i < g->n; i++) {
    fconn_t *c = &g->c[i];
    c->s = tcp_connect(&g->addr);
    c->port = sock_local_port(c->s);
    c->seed = (uint64_t)c->port;
    c->fnv_sent = c->fnv_rcvd = FNV_INIT;
    sock_set_nonblock(c->s, true);
  }
  int finished = 0;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(g->timeout_ms);
  while (finished < g->n) {
    if (now_ms() > dl) {
      uint64_t want = 0, got = 0;
      for (int i = 0; i < g->n; i++) {
        want += g->c[i].total;
        got += g->c[i].rcvd;
      }
      FAILF("clients: %d of %d connections finished after %d ms; %llu of %llu bytes echoed", finished,
            g->n, g->timeout_ms, (unsigned long long)got, (unsigned long long)want);
    }
    for (int i = 0; i < g->n; i++) {
      fconn_t *c = &g->c[i];
      pfd[i].fd = c->state == 2 ? (sock_t)-1 : c->s;
      pfd[i].events = (short)(POLLIN | (c->sent < c->total ? POLLOUT : 0));
      pfd[i].revents = 0;
    }
    int rc = sock_poll(pfd, (unsigned)g->n, 50);
    ASSERT_MSG(rc >= 0, "poll: %s", ioc_err_name(rc));
    for (int i = 0; i < g->n && rc > 0; i++) {
      fconn_t *c = &g->c[i];
      if (c->state == 2 || pfd[i].revents == 0) continue;
      if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        long n = sock_recv(c->s, in, bufsz);
        if (n > 0) {
          if (c->rcvd + (uint64_t)n > c->sent)
            FAILF("connection port %d: %llu bytes echoed, only %llu sent", c->port,
                  (unsigned long long)(c->rcvd + (uint64_t)n), (unsigned long long)c->sent);
          long bad = pattern_check(c->seed, c->rcvd, in, (size_t)n);
          if (bad >= 0)
            FAILF("connection port %d: echoed byte at offset %llu is wrong (lost, duplicated or reordered)",
                  c->port, (unsigned long long)(c->rcvd + (uint64_t)bad));
          c->fnv_rcvd = fnv1a(c->fnv_rcvd, in, (size_t)n);
          c->rcvd += (uint64_t)n;
          if (c->rcvd == c->total && c->state == 0) {
            sock_shutdown_write(c->s);
            c->state = 1;
          }
        } else if (n == 0 || n != IOC_EAGAIN) {
          int why = n == 0 ? IOC_EOF : (int)n;
          if (n == 0 && c->rcvd == c->total) why = 0;
          if (why != 0 && !(g->tolerate_resets && (why == IOC_EOF || why == IOC_ECONNRESET || why == IOC_EPIPE)))
            FAILF("connection port %d: %s after %llu of %llu echoed bytes", c->port, ioc_err_name(why),
                  (unsigned long long)c->rcvd, (unsigned long long)c->total);
          c->end_err = why;
          c->state = 2;
          finished++;
          continue;
        }
      }
      if ((pfd[i].revents & POLLOUT) && c->sent < c->total) {
        size_t len = (size_t)rng_range(&rng, 1, bufsz);
        if (len > c->total - c->sent) len = (size_t)(c->total - c->sent);
        pattern_fill(c->seed, c->sent, out, len);
#ifdef _WIN32
        int n = send(c->s, out, (int)len, 0);
#else
        ssize_t n = send(c->s, out, len, MSG_NOSIGNAL);
#endif
        if (n < 0) {
          int e = sock_last_error();
          if (e == IOC_EAGAIN) continue;
          if (g->tolerate_resets && (e == IOC_ECONNRESET || e == IOC_EPIPE)) {
            c->end_err = e;
            c->state = 2;
            finished++;
            continue;
          }
          FAILF("connection port %d: send: %s", c->port, ioc_err_name(e));
        }
        c->fnv_sent = fnv1a(c->fnv_sent, out, (size_t)n);
        c->sent += (uint64_t)n;
      }
    }
  }
  for (int i = 0; i < g->n; i++) sock_close(g->c[i].s);
  free(out);
  free(in);
  free(pfd);
  atomic_store(&g->done, 1);
}

/* Runs n stream connections (sizes 1 B .. max_bytes) in two client threads. */
static fconn_t *run_streams(ioc_core_t *core, ioc_listener_t *l, int n, uint64_t max_bytes, uint64_t seed,
                            int tolerate_resets, int timeout_ms) {
  fconn_t *conns = (fconn_t *)calloc((size_t)n, sizeof *conns);
  ASSERT(conns != NULL);
  uint64_t rng = seed;
  for (int i = 0; i < n; i++) conns[i].total = rng_range(&rng, 1, max_bytes);
  fgroup_t g[2];
  test_thread_t *th[2];
  for (int t = 0; t < 2; t++) {
    memset(&g[t], 0, sizeof g[t]);
    g[t].addr = *ioc_listener_address(l);
    g[t].c = conns + (t == 0 ? 0 : n / 2);
    g[t].n = t == 0 ? n / 2 : n - n / 2;
    g[t].timeout_ms = timeout_ms;
    g[t].tolerate_resets = tolerate_resets;
    th[t] = thread_start(fgroup_main, &g[t]);
  }
  for (int t = 0; t < 2; t++) WAIT_UNTIL(core, atomic_load(&g[t].done), timeout_ms + 5000);
  for (int t = 0; t < 2; t++) thread_join(th[t]);
  return conns;
}

/* ---- echo_integrity_survives_injected_short_writes_and_eagain ---------------------- */

void test_echo_integrity_survives_injected_short_writes_and_eagain(void) {
  enum { N = 100 };
  need_linux_backend();
  ioc_core_t *core;
  make_core(&core);
  faults_set(core, "short_write=0.05,eagain=0.03,eintr=0.03,seed=11");
  ASSERT_OK(ioc_core_start(core, 4));
  fserver_t *srv = fserver_new(core);
  ioc_listener_t *l = listen_loopback(core, NULL, fs_accept, srv);
  fconn_t *c = run_streams(core, l, N, scaled_load(1u << 20, 4096), 2025, 0, 90000);
  WAIT_UNTIL(core, atomic_load(&srv->nclosed) == N, 10000);
  ASSERT_EQ(atomic_load(&srv->naccepted), N);
  uint64_t total = 0;
  for (int i = 0; i < N; i++) {
    fsess_t *fs = fs_for_port(srv, c[i].port);
    ASSERT_MSG(fs != NULL, "no session for client port %d", c[i].port);
    ASSERT_MSG(fs->bytes == c[i].total, "client port %d sent %llu bytes, its session received %llu",
               c[i].port, (unsigned long long)c[i].total, (unsigned long long)fs->bytes);
    ASSERT_MSG(fs->fnv == c[i].fnv_sent, "client port %d: checksum of what the session received differs", c[i].port);
    ASSERT_MSG(c[i].fnv_rcvd == c[i].fnv_sent, "client port %d: checksum of the echo differs", c[i].port);
    ASSERT_MSG(fs->close_err == 0, "session port %d closed with %s", c[i].port, ioc_err_name(fs->close_err));
    total += c[i].total;
  }
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.bytes_in, total);
  ASSERT_EQ(st.bytes_out, total);
  uint64_t sw = injected(core, IOC__FAULT_SHORT_WRITE), ea = injected(core, IOC__FAULT_EAGAIN),
           ei = injected(core, IOC__FAULT_EINTR);
  fprintf(stderr, "faults: %.1f MiB each way through %d sessions; injected %llu short writes, %llu EAGAIN, %llu EINTR\n",
          (double)total / 1048576.0, N, (unsigned long long)sw, (unsigned long long)ea, (unsigned long long)ei);
  ASSERT_GT(sw, 0);
  ASSERT_GT(ea, 0);
  ASSERT_GT(ei, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(c);
  free(srv);
}

/* ---- connects_complete_under_injected_eintr_and_eagain ---------------------------- */

/* io_uring: a connect reported as EINTR goes on in the background; the
 * backend waits for POLLOUT and reads SO_ERROR. epoll: readiness that is
 * not the end of the handshake (injected EAGAIN from the connect's check). */

typedef struct oconn {
  atomic_int opens, closes, open_err, close_err;
  atomic_size_t got;
  size_t want;
  int close_on_open;
} oconn_t;

static void oc_open(ioc_session_t *s, int err) {
  oconn_t *o = (oconn_t *)ioc_session_userdata(s);
  if (atomic_fetch_add(&o->opens, 1) != 0) FAILF("outbound session: on_open twice");
  if (atomic_load(&o->closes) != 0) FAILF("outbound session: on_open after on_close");
  atomic_store(&o->open_err, err);
  if (err == 0 && o->close_on_open) ioc_session_close(s);
}

static void oc_recv(ioc_session_t *s, const char *data, size_t len) {
  oconn_t *o = (oconn_t *)ioc_session_userdata(s);
  (void)data;
  if (atomic_load(&o->opens) != 1) FAILF("outbound session: on_recv before on_open");
  size_t got = atomic_fetch_add(&o->got, len) + len;
  if (got >= o->want) ioc_session_close(s);
}

static void oc_close(ioc_session_t *s, int err) {
  oconn_t *o = (oconn_t *)ioc_session_userdata(s);
  if (atomic_fetch_add(&o->closes, 1) != 0) FAILF("outbound session: on_close twice (%s)", ioc_err_name(err));
  atomic_store(&o->close_err, err);
}

/* Starts n outbound sessions to l; each sends `bytes` of its stream. */
static oconn_t *start_outbound(ioc_core_t *core, ioc_listener_t *l, int n, size_t bytes) {
  oconn_t *o = (oconn_t *)calloc((size_t)n, sizeof *o);
  ASSERT(o != NULL);
  char addr[IOC_ADDRSTRLEN];
  listener_addr_str(l, addr);
  char *payload = (char *)malloc(bytes);
  ASSERT(payload != NULL);
  for (int i = 0; i < n; i++) {
    o[i].want = bytes;
    atomic_store(&o[i].open_err, 1);
    atomic_store(&o[i].close_err, 1);
    ioc_session_callbacks_t cb = callbacks(oc_open, oc_recv, NULL, oc_close);
    ioc_session_t *s = NULL;
    ASSERT_OK(ioc_connect(core, addr, strlen(addr), &cb, &o[i], NULL, &s));
    /* the server checks streams seeded by the client's port: learn it
     * once connected; until then send nothing but keep the reference */
    WAIT_UNTIL(core, atomic_load(&o[i].opens) == 1, 10000);
    if (atomic_load(&o[i].open_err) == 0) {
      int port = ioc_addr_port(ioc_session_local(s));
      pattern_fill((uint64_t)port, 0, payload, bytes);
      int rc = ioc_session_send(s, payload, bytes);
      ASSERT_MSG(rc == 0 || rc == IOC_ECLOSED, "send: %s", ioc_err_name(rc));
    }
    ioc_session_release(s);
  }
  free(payload);
  return o;
}

void test_connects_complete_under_injected_eintr_and_eagain(void) {
  enum { N = 24 };
  need_linux_backend();
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 2));
  fserver_t *srv = fserver_new(core);
  ioc_listener_t *l = listen_loopback(core, NULL, fs_accept, srv);
  faults_set(core, "eintr=0.5,eagain=0.5,short_write=0.2,seed=3");
  oconn_t *o = start_outbound(core, l, N, 20000);
  for (int i = 0; i < N; i++) {
    WAIT_UNTIL(core, atomic_load(&o[i].closes) == 1, 15000);
    ASSERT_MSG(atomic_load(&o[i].open_err) == 0, "connect %d: on_open(%s)", i, ioc_err_name(atomic_load(&o[i].open_err)));
    ASSERT_MSG(atomic_load(&o[i].close_err) == 0, "connect %d: on_close(%s)", i, ioc_err_name(atomic_load(&o[i].close_err)));
    ASSERT_EQ(atomic_load(&o[i].got), 20000);
  }
  WAIT_UNTIL(core, atomic_load(&srv->nclosed) == N, 10000);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(srv->sess[i].bytes, 20000);
    ASSERT_EQ(srv->sess[i].close_err, 0);
  }
  ASSERT_EQ(core_stats(core).connected, N);
  ASSERT_GT(injected(core, IOC__FAULT_EINTR) + injected(core, IOC__FAULT_EAGAIN), 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(o);
  free(srv);
}

/* ---- accept_keeps_n_posted_under_injected_accept_failures -------------------------- */

#define NACC 8

typedef struct pinger {
  ioc_addr_t addr;
  ioc_core_t *core;
  int clients, served, attempts, max_attempts;
  int timeout_ms; /* for all the clients of one run */
} pinger_t;

/* Each client: connect, "ping", expect "ping" back; on a connection dropped
 * (shed backlog, reset session) try again with a new one. */
static void pinger_main(void *arg) {
  pinger_t *p = (pinger_t *)arg;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(p->timeout_ms);
  for (int i = 0; i < p->clients; i++) {
    int ok = 0;
    for (int a = 0; a < p->max_attempts && !ok; a++) {
      if (now_ms() > dl)
        FAILF("clients stalled: %d of %d served in %d ms; accepts_posted = %llu", i, p->clients,
              p->timeout_ms, (unsigned long long)core_stats(p->core).accepts_posted);
      p->attempts++;
      int err = 0;
      sock_t s = tcp_connect_err(&p->addr, &err);
      if (s == BAD_SOCK) FAILF("client %d: connect: %s", i, ioc_err_name(err));
      sock_set_timeouts(s, 1000);
      char b[4];
      ok = sock_send_all(s, "ping", 4) == 0 && sock_recv_exact(s, b, 4) == 0 && memcmp(b, "ping", 4) == 0;
      sock_close(s);
    }
    if (!ok) FAILF("client %d: no echo in %d attempts", i, p->max_attempts);
    p->served++;
  }
}

void test_accept_keeps_n_posted_under_injected_accept_failures(void) {
  need_linux_backend();
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 2));
  fserver_t *srv = fserver_new(core);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.accepts = NACC;
  srv->check_stream = 0; /* "ping" */
  ioc_listener_t *l = listen_loopback(core, &lo, fs_accept, srv);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 2000);
  /* Phase 1, accept results the listener re-posts at once: EINTR and
   * EAGAIN (retried inside the backend), ECONNABORTED (epoll: the backend
   * takes the next connection; io_uring: the listener re-posts). No
   * back-off is involved, so an accept not re-posted stays missing. Sessions
   * may be reset as well: the clients try again. */
  faults_set(core, "eintr=0.2,eagain=0.2,econnreset=0.15,seed=5");
  pinger_t p;
  memset(&p, 0, sizeof p);
  p.addr = *ioc_listener_address(l);
  p.clients = (int)scaled_load(100, 30);
  p.max_attempts = 50;
  p.core = core;
  p.timeout_ms = 15000;
  test_thread_t *th = thread_start(pinger_main, &p);
  thread_join(th);
  ASSERT_EQ(p.served, p.clients);
  uint64_t aborted = injected(core, IOC__FAULT_ECONNRESET);
  ASSERT_GT(aborted, 0);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 1000);
  /* Phase 2, with ENOMEM: accept4 fails before dequeuing (the listener
   * sheds the backlog and backs off), and submitting accepts fails (the
   * listener backs off and re-posts what is missing). */
  faults_set(core, "eintr=0.2,eagain=0.2,econnreset=0.15,enomem=0.05,seed=6");
  p.clients = (int)scaled_load(100, 30);
  th = thread_start(pinger_main, &p);
  thread_join(th);
  ASSERT_EQ(p.served, 2 * p.clients);
  ASSERT_MSG(atomic_load(&srv->max_posted_seen) <= NACC, "accepts_posted reached %d > %d",
             atomic_load(&srv->max_posted_seen), NACC);
  aborted = injected(core, IOC__FAULT_ECONNRESET);
  uint64_t nomem = injected(core, IOC__FAULT_ENOMEM);
  fprintf(stderr, "faults: %d clients in %d attempts; injected %llu EINTR, %llu EAGAIN, %llu ECONNRESET/ECONNABORTED, %llu ENOMEM; %llu rejected\n",
          p.served, p.attempts, (unsigned long long)injected(core, IOC__FAULT_EINTR),
          (unsigned long long)injected(core, IOC__FAULT_EAGAIN), (unsigned long long)aborted,
          (unsigned long long)nomem, (unsigned long long)core_stats(core).rejected);
  ASSERT_GT(nomem, 0);
  /* Faults off: within the back-off, N accepts are posted again, and a new
   * client is served at once. */
  faults_set(core, "off");
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 2000);
  pump_for(core, 100);
  ASSERT_EQ(core_stats(core).accepts_posted, NACC);
  sock_t s = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(s, 5000);
  char b[4];
  ASSERT_OK(sock_send_all(s, "ping", 4));
  ASSERT_OK(sock_recv_exact(s, b, 4));
  sock_close(s);
  int n = atomic_load(&srv->naccepted);
  WAIT_UNTIL(core, atomic_load(&srv->nclosed) == n, 10000);
  ASSERT_EQ(core_stats(core).active, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(srv);
}

/* ---- injected_resets_close_sessions_once_and_leak_nothing -------------------------- */

void test_injected_resets_close_sessions_once_and_leak_nothing(void) {
  enum { N = 100, NOUT = 16 };
  need_linux_backend();
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 4));
  fserver_t *srv = fserver_new(core);
  ioc_listener_t *l = listen_loopback(core, NULL, fs_accept, srv);
  faults_set(core, "econnreset=0.02,short_write=0.05,eintr=0.02,seed=9");
  fconn_t *c = run_streams(core, l, N, scaled_load(512u << 10, 4096), 77, 1, 30000);
  oconn_t *o = start_outbound(core, l, NOUT, 64 * 1024);
  for (int i = 0; i < NOUT; i++) {
    WAIT_UNTIL(core, atomic_load(&o[i].closes) == 1, 15000);
    ASSERT_EQ(atomic_load(&o[i].opens), 1);
    int ce = atomic_load(&o[i].close_err);
    ASSERT_MSG(ce == 0 || ce == IOC_ECONNRESET || ce == IOC_EPIPE || ce == IOC_EOF,
               "outbound session %d closed with %s", i, ioc_err_name(ce));
  }
  WAIT_UNTIL(core, atomic_load(&srv->nclosed) == atomic_load(&srv->naccepted), 15000);
  int early = 0;
  for (int i = 0; i < N; i++) {
    early += c[i].end_err != 0;
    fsess_t *fs = fs_for_port(srv, c[i].port);
    ASSERT_MSG(fs != NULL, "no session for client port %d", c[i].port);
    ASSERT_MSG(fs->bytes <= c[i].sent, "session port %d received more than was sent", c[i].port);
    ASSERT_EQ(atomic_load(&fs->closes), 1);
    ASSERT_MSG(fs->close_err == 0 || fs->close_err == IOC_ECONNRESET || fs->close_err == IOC_EPIPE,
               "session port %d closed with %s", c[i].port, ioc_err_name(fs->close_err));
  }
  ioc_stats_t st = core_stats(core);
  uint64_t resets = injected(core, IOC__FAULT_ECONNRESET);
  fprintf(stderr, "faults: %llu resets injected; %d of %d server sessions closed by ECONNRESET, %d clients cut short\n",
          (unsigned long long)resets, atomic_load(&srv->nreset), atomic_load(&srv->naccepted), early);
  ASSERT_GT(resets, 0);
  ASSERT_GT(atomic_load(&srv->nreset), 0);
  ASSERT_EQ(st.active, 0);
  ASSERT_EQ(st.connected, NOUT);
  ASSERT_EQ(st.closed, st.accepted + NOUT);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 16, 2000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(c);
  free(o);
  free(srv);
}

/* ---- injected_enomem_on_submit_is_an_error_not_a_hang ------------------------------ */

void test_injected_enomem_on_submit_is_an_error_not_a_hang(void) {
  enum { NOUT = 40 };
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 2));
  fserver_t *srv = fserver_new(core);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.accepts = NACC;
  srv->check_stream = 0; /* "ping" */
  ioc_listener_t *l = listen_loopback(core, &lo, fs_accept, srv);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 2000);
  faults_set(core, "enomem=0.15,seed=21");
  /* Outbound sessions: a connect whose submit fails still reports
   * on_open(ENOMEM), then on_close(ENOMEM); one that connects may lose
   * its receive or send the same way and close with ENOMEM. */
  oconn_t *o = (oconn_t *)calloc(NOUT, sizeof *o);
  ASSERT(o != NULL);
  char addr[IOC_ADDRSTRLEN];
  listener_addr_str(l, addr);
  for (int i = 0; i < NOUT; i++) {
    o[i].want = 1;
    o[i].close_on_open = 1;
    atomic_store(&o[i].open_err, 1);
    atomic_store(&o[i].close_err, 1);
    ioc_session_callbacks_t cb = callbacks(oc_open, oc_recv, NULL, oc_close);
    ASSERT_OK(ioc_connect(core, addr, strlen(addr), &cb, &o[i], NULL, NULL));
  }
  int failed_connects = 0;
  for (int i = 0; i < NOUT; i++) {
    WAIT_UNTIL(core, atomic_load(&o[i].closes) == 1, 10000);
    ASSERT_MSG(atomic_load(&o[i].opens) == 1, "outbound session %d: on_close(%s) without on_open", i,
               ioc_err_name(atomic_load(&o[i].close_err)));
    int oe = atomic_load(&o[i].open_err), ce = atomic_load(&o[i].close_err);
    ASSERT_MSG(oe == 0 || oe == IOC_ENOMEM, "outbound session %d: on_open(%s)", i, ioc_err_name(oe));
    if (oe != 0) {
      failed_connects++;
      ASSERT_MSG(ce == oe, "outbound session %d: on_open(%s) but on_close(%s)", i, ioc_err_name(oe), ioc_err_name(ce));
    }
  }
  /* Plain clients: each is served, trying again when its session was lost. */
  pinger_t p;
  memset(&p, 0, sizeof p);
  p.addr = *ioc_listener_address(l);
  p.clients = (int)scaled_load(60, 20);
  p.max_attempts = 50;
  p.core = core;
  p.timeout_ms = 15000;
  test_thread_t *th = thread_start(pinger_main, &p);
  thread_join(th);
  ASSERT_EQ(p.served, p.clients);
  fprintf(stderr, "faults: %llu ENOMEM injected; %d of %d connects failed at submit; %d clients in %d attempts\n",
          (unsigned long long)injected(core, IOC__FAULT_ENOMEM), failed_connects, NOUT, p.clients, p.attempts);
  ASSERT_GT(injected(core, IOC__FAULT_ENOMEM), 0);
  faults_set(core, "");
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 2000);
  WAIT_UNTIL(core, atomic_load(&srv->nclosed) == atomic_load(&srv->naccepted), 10000);
  for (int i = 0; i < atomic_load(&srv->naccepted); i++) {
    int e = srv->sess[i].close_err;
    ASSERT_MSG(e == 0 || e == IOC_ENOMEM || e == IOC_ECONNRESET || e == IOC_EPIPE,
               "session %d closed with %s", i, ioc_err_name(e));
  }
  ASSERT_EQ(core_stats(core).active, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(o);
  free(srv);
}

/* ---- faults_spec_parsing ------------------------------------------------------------ */

void test_faults_spec_is_parsed_strictly(void) {
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc__faults_configure(core, "short_write=0.05, eagain=1,eintr=.5 ,econnreset=0,enomem=0.001,seed=42"));
  ASSERT_OK(ioc__faults_configure(core, "off"));
  ASSERT_OK(ioc__faults_configure(core, ""));
  ASSERT_OK(ioc__faults_configure(core, NULL));
  ASSERT_ERR(ioc__faults_configure(core, "short_writes=0.1"), IOC_EINVAL);
  ASSERT_ERR(ioc__faults_configure(core, "eagain=1.5"), IOC_EINVAL);
  ASSERT_ERR(ioc__faults_configure(core, "eagain=-0.1"), IOC_EINVAL);
  ASSERT_ERR(ioc__faults_configure(core, "eagain"), IOC_EINVAL);
  ASSERT_ERR(ioc__faults_configure(core, "eagain=0,1"), IOC_EINVAL);
  ASSERT_ERR(ioc__faults_configure(core, "seed=x"), IOC_EINVAL);
  ASSERT_CORE_CLEAN(core);
#ifndef _WIN32
  /* The environment is read at creation; a malformed value fails it. */
  setenv("IOCORE_FAULTS", "eagain=lots", 1);
  ioc_core_t *bad = NULL;
  ioc_core_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.backend = g_backend_kind;
  ASSERT_ERR(ioc_core_create(&bad, &opts), IOC_EINVAL);
  ASSERT(bad == NULL);
  unsetenv("IOCORE_FAULTS");
#endif
}
