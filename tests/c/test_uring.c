/* io_uring rings per worker: the mode a worker's ring runs in and its
 * fallbacks, rings handed over between the pool and the threads that
 * dispatch without one while operations are in flight (nothing lost, nothing
 * leaked), cancels, sends and wakes from threads that own no ring reaching
 * the owner's ring, and accepts spread over the workers. Other backends skip
 * these tests, saying why. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#ifdef __linux__
#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#ifdef __linux__
#include "internal.h" /* ioc__uring_mode */

static void need_uring(void) {
  if (g_backend_kind != IOC_BACKEND_IO_URING)
    SKIPF("io_uring only (rings per worker); the backend under test is %s", g_backend_name);
}

/* ---- an echo server that records which thread ran each session ---------- */

#define UR_MAX_SESS 512

typedef struct ur_srv {
  test_mutex_t lock;
  ioc_session_t *sess[UR_MAX_SESS];
  uintptr_t accept_thread[UR_MAX_SESS];
  int nsess;
  atomic_int closes;
  atomic_llong echoed;
} ur_srv_t;

static ur_srv_t g_ur;

static void ur_recv(ioc_session_t *s, const char *data, size_t len) {
  int rc = ioc_session_send(s, data, len);
  if (rc != 0 && rc != IOC_ECLOSED) FAILF("echo send: %s", ioc_err_name(rc));
  atomic_fetch_add(&g_ur.echoed, (long long)len);
}
static void ur_close(ioc_session_t *s, int err) {
  (void)err;
  mutex_lock(&g_ur.lock);
  for (int i = 0; i < g_ur.nsess; i++)
    if (g_ur.sess[i] == s) {
      ioc_session_release(s);
      g_ur.sess[i] = NULL;
    }
  mutex_unlock(&g_ur.lock);
  atomic_fetch_add(&g_ur.closes, 1);
}
static void ur_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  ioc_session_callbacks_t cb = callbacks(NULL, ur_recv, NULL, ur_close);
  ioc_session_set_callbacks(s, &cb, NULL);
  mutex_lock(&g_ur.lock);
  if (g_ur.nsess < UR_MAX_SESS) {
    ioc_session_retain(s);
    g_ur.accept_thread[g_ur.nsess] = thread_self_id();
    g_ur.sess[g_ur.nsess++] = s;
  }
  mutex_unlock(&g_ur.lock);
}
static void ur_srv_init(void) {
  memset(&g_ur, 0, sizeof g_ur);
  mutex_init(&g_ur.lock);
}
static int ur_nsess(void) {
  mutex_lock(&g_ur.lock);
  int n = g_ur.nsess;
  mutex_unlock(&g_ur.lock);
  return n;
}

/* A core with g_ur reset, a pool of nthreads workers (none for 0), and a
 * loopback listener whose accept is `accept` (with ud). */
static ioc_listener_t *ur_start(ioc_core_t **core, int nthreads, ioc_accept_cb accept, void *ud) {
  make_core(core);
  ur_srv_init();
  if (nthreads > 0) ASSERT_OK(test_pool_start(*core, nthreads));
  return listen_loopback(*core, NULL, accept, ud);
}

/* n clients of l, connected at once; returns when g_ur has them all. */
static void ur_connect_all(ioc_core_t *core, ioc_listener_t *l, sock_t *c, int n) {
  for (int i = 0; i < n; i++) c[i] = tcp_connect(ioc_listener_address(l));
  WAIT_UNTIL(core, ur_nsess() == n, 10000);
}

/* The end of a test: the n clients in c (if not closed already: c NULL)
 * close, g_ur sees n closes, the listener closes, and the core must
 * close clean. */
static void ur_end(ioc_core_t *core, ioc_listener_t *l, sock_t *c, int n) {
  if (c)
    for (int i = 0; i < n; i++) sock_close(c[i]);
  WAIT_UNTIL(core, atomic_load(&g_ur.closes) == n, 10000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* Sends msg on every client and expects it echoed whole (pumping core). */
static void ping_all(ioc_core_t *core, sock_t *c, int n, const char *msg) {
  size_t len = strlen(msg);
  for (int i = 0; i < n; i++) ASSERT_OK(sock_send_all(c[i], msg, len));
  for (int i = 0; i < n; i++) {
    char buf[64];
    size_t got = 0;
    uint64_t dl = now_ms() + (uint64_t)scaled_ms(10000);
    while (got < len) {
      struct pollfd p = {.fd = c[i], .events = POLLIN};
      if (sock_poll(&p, 1, 0) > 0) {
        long r = sock_recv(c[i], buf + got, len - got);
        if (r <= 0) FAILF("client %d: connection ended (%ld) waiting for its echo \"%s\"", i, r, msg);
        got += (size_t)r;
      } else {
        if (now_ms() > dl) FAILF("client %d: no echo of \"%s\" within 10 s (%zu bytes)", i, msg, got);
        pump(core, 2);
      }
    }
    ASSERT(memcmp(buf, msg, len) == 0);
  }
}

/* ---- the ring's mode ---------------------------------------------------------- */

/* The mode every worker's ring runs in while the pool runs, and that the
 * rings are plain again once it is joined (any thread may drive them). */
static void check_modes(ioc_core_t *core, int n, const char *want) {
  for (int i = 0; i < n; i++) {
    const char *m = ioc__uring_mode(core, i);
    ASSERT_MSG(m && strcmp(m, want) == 0, "loop %d runs a %s ring, expected %s", i, m ? m : "(none)", want);
  }
}

/* Waits until every one of the first n loops runs a `want` ring. */
static void wait_modes(ioc_core_t *core, int n, const char *want) {
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(10000);
  for (int i = 0; i < n; i++) {
    for (;;) {
      const char *m = ioc__uring_mode(core, i);
      if (m && strcmp(m, want) == 0) break;
      if (now_ms() > dl) FAILF("loop %d runs a %s ring after 10 s, expected %s", i, m ? m : "(none)", want);
      sleep_ms(2);
    }
  }
}

/* Echo sessions made before a pool of nthreads starts are served by the
 * workers on rings of mode `want`, and by the test's own thread on plain
 * rings after the join: every ring hand-over carried them across. */
static void run_mode_case(int nthreads, const char *want) {
  ioc_core_t *core;
  ioc_listener_t *l = ur_start(&core, 0, ur_accept, NULL);
  enum { N = 8 };
  sock_t c[N];
  ur_connect_all(core, l, c, N);
  ping_all(core, c, N, "before");
  ASSERT_OK(test_pool_start(core, nthreads));
  wait_modes(core, nthreads, want);
  ping_all(core, c, N, "pooled");
  ioc_core_stop(core);
  ioc_core_join(core);
  check_modes(core, nthreads, "plain");
  ping_all(core, c, N, "after");
  /* and a second pool takes the same loops over again */
  ASSERT_OK(ioc_core_start(core, nthreads));
  wait_modes(core, nthreads, want);
  ping_all(core, c, N, "again");
  ur_end(core, l, c, N);
}

/* The kernel takes SINGLE_ISSUER | DEFER_TASKRUN (6.1+). */
static bool kernel_has_defer_taskrun(void) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  int fd = (int)syscall(__NR_io_uring_setup, 4, &p);
  if (fd < 0) return false;
  close(fd);
  return true;
}

void test_uring_worker_rings_run_single_issuer_defer_taskrun(void) {
  need_uring();
  if (getenv("IOCORE_URING_MODE")) SKIPF("IOCORE_URING_MODE is set: the default mode is not under test");
  if (!kernel_has_defer_taskrun()) SKIPF("this kernel refuses SINGLE_ISSUER | DEFER_TASKRUN (before 6.1)");
  run_mode_case(2, "single_issuer+defer_taskrun");
}

void test_uring_mode_falls_back_to_coop_taskrun(void) {
  need_uring();
  setenv("IOCORE_URING_MODE", "coop_si", 1);
  run_mode_case(2, "single_issuer+coop_taskrun");
}

void test_uring_mode_falls_back_to_coop_without_single_issuer(void) {
  need_uring();
  setenv("IOCORE_URING_MODE", "coop", 1);
  run_mode_case(2, "coop_taskrun");
}

void test_uring_mode_falls_back_to_plain_rings(void) {
  need_uring();
  setenv("IOCORE_URING_MODE", "plain", 1);
  run_mode_case(3, "plain");
}

/* ---- hand-over with operations in flight ------------------------------------- */

#define BIG (6u << 20) /* above the 4 MiB a socket buffers at most here (tcp_wmem) */
static char *g_big; /* the pattern every session is sent on accept */

static void big_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  ur_accept(l, s, ud);
  /* taken whole: the queue is empty; far more than the socket buffers hold,
   * so a send stays in flight until the client reads */
  ASSERT_OK(ioc_session_send(s, g_big, BIG));
}

/* 8 sessions each with a 6 MiB send stuck in the kernel (the clients do
 * not read yet) and a receive posted, on 4 workers' rings: the pool is
 * stopped and joined (every ring drained and replaced by a plain one), the
 * test thread dispatches a while, a pool of 2 takes the 4 loops over. Then
 * every client gets its 6 MiB intact and in order, echoes still work, and
 * the core closes clean (no op, socket or fd left: the runner counts fds). */
void test_uring_rings_handed_over_mid_send_lose_no_byte(void) {
  need_uring();
  g_big = malloc(BIG);
  ASSERT(g_big);
  pattern_fill(7, 0, g_big, BIG);
  ioc_core_t *core;
  ioc_listener_t *l = ur_start(&core, 4, big_accept, NULL);
  enum { N = 8 };
  sock_t c[N];
  /* (no small SO_RCVBUF: shrunk after the handshake, it stalls TCP itself
   * in zero-window probes; the default 128 KiB window is small enough) */
  ur_connect_all(core, l, c, N);
  sleep_ms(50); /* the sends reach the kernel and stall */
  ioc_stats_t st = core_stats(core);
  ASSERT_MSG(st.bytes_out < (uint64_t)N * BIG, "the sends were meant to be stuck: %llu bytes out",
             (unsigned long long)st.bytes_out);
  ioc_core_stop(core);
  ioc_core_join(core);
  pump_for(core, 30);
  ASSERT_OK(ioc_core_start(core, 2));
  char *buf = malloc(BIG);
  ASSERT(buf);
  for (int i = 0; i < N; i++) {
    sock_set_timeouts(c[i], scaled_ms(20000));
    ASSERT_MSG(sock_recv_exact(c[i], buf, BIG) == 0, "client %d: the 6 MiB did not arrive whole", i);
    long bad = pattern_check(7, 0, buf, BIG);
    ASSERT_MSG(bad < 0, "client %d: byte %ld differs", i, bad);
  }
  ping_all(core, c, N, "still here");
  ur_end(core, l, c, N);
  free(buf);
  free(g_big);
}

/* ---- threads that own no ring -------------------------------------------------- */

static atomic_int g_posted;
static void count_post(void *arg) {
  (void)arg;
  atomic_fetch_add(&g_posted, 1);
}

/* With a pool on 2 workers' SINGLE_ISSUER rings, the test's thread (which
 * owns no ring, as the thread running Lua's run() does not) sends on every
 * session, posts jobs, closes every session (cancelling its receive) and
 * closes the listener (cancelling accepts on both rings): each reaches the
 * owner's ring and completes, and the core closes clean. */
void test_uring_foreign_thread_sends_cancels_and_wakes_reach_owner_rings(void) {
  need_uring();
  ioc_core_t *core;
  ioc_listener_t *l = ur_start(&core, 2, ur_accept, NULL);
  enum { N = 24 };
  sock_t c[N];
  ur_connect_all(core, l, c, N);
  ping_all(core, c, N, "hello");
  /* sends from this thread */
  mutex_lock(&g_ur.lock);
  for (int i = 0; i < N; i++) ASSERT_OK(ioc_session_send(g_ur.sess[i], "from afar", 9));
  mutex_unlock(&g_ur.lock);
  for (int i = 0; i < N; i++) {
    char b[9];
    sock_set_timeouts(c[i], scaled_ms(10000));
    ASSERT_MSG(sock_recv_exact(c[i], b, 9) == 0 && memcmp(b, "from afar", 9) == 0,
               "client %d: a send from a thread without a ring did not arrive", i);
  }
  /* wakes: jobs posted from here run on the workers */
  atomic_store(&g_posted, 0);
  for (int i = 0; i < 100; i++) ASSERT_OK(ioc_core_post(core, count_post, NULL));
  WAIT_UNTIL(core, atomic_load(&g_posted) == 100, 10000);
  /* cancels: closing from here cancels receives in flight on both rings */
  mutex_lock(&g_ur.lock);
  ioc_session_t *ss[N];
  for (int i = 0; i < N; i++) {
    ss[i] = g_ur.sess[i];
    ioc_session_retain(ss[i]);
  }
  mutex_unlock(&g_ur.lock);
  for (int i = 0; i < N; i++) ioc_session_close(ss[i]);
  for (int i = 0; i < N; i++) {
    char b[1];
    ASSERT_MSG(sock_recv(c[i], b, 1) == 0, "client %d: no FIN after a close from another thread", i);
    sock_close(c[i]);
  }
  WAIT_UNTIL(core, atomic_load(&g_ur.closes) == N, 10000);
  for (int i = 0; i < N; i++) ioc_session_release(ss[i]);
  ASSERT_EQ(core_stats(core).accepts_posted, 16);
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == 0 && core_stats(core).sockets == 0, 10000);
  ASSERT_CORE_CLEAN(core);
}

/* ---- accepts spread over the workers ------------------------------------------ */

/* 200 connections made one after another on a pool of 2 land on both
 * workers' rings, each taking at least a quarter. The listener's accepts
 * are single-shot requests spread over the rings (accept i on loop i mod
 * n): a completed one is re-armed at the tail of the listening socket's
 * wait queue, so the kernel hands connections to the rings in turn. (A
 * multishot accept would stay at the head of that queue and take them all:
 * see uring.c.) */
void test_uring_accepts_spread_over_worker_rings(void) {
  need_uring();
  ioc_core_t *core;
  ioc_listener_t *l = ur_start(&core, 2, ur_accept, NULL);
  enum { N = 200 };
  for (int i = 0; i < N; i++) {
    sock_t c = tcp_connect(ioc_listener_address(l));
    WAIT_UNTIL(core, ur_nsess() == i + 1, 10000);
    sock_close(c);
  }
  WAIT_UNTIL(core, atomic_load(&g_ur.closes) == N, 10000);
  uintptr_t first = g_ur.accept_thread[0];
  int on_first = 0;
  for (int i = 0; i < N; i++) on_first += g_ur.accept_thread[i] == first;
  ASSERT_MSG(on_first >= N / 4 && on_first <= N - N / 4,
             "%d of %d connections were accepted by one worker, %d by the other", on_first, N, N - on_first);
  ur_end(core, l, NULL, N);
}

/* ---- the new-connection path on the ring ---------------------------------------- */

static void reply_and_close(ioc_session_t *s, const char *data, size_t len) {
  (void)data;
  (void)len;
  ASSERT_OK(ioc_session_send(s, "bye", 3));
  ioc_session_close(s);
}
/* 40 connections on a pool of 2, each answered and closed gracefully by the
 * server from its handler: every client gets the reply then EOF, and the
 * sessions' sockets were closed by IORING_OP_CLOSE SQEs in the workers'
 * batches, not by close(2) calls of their own; nothing is left open (the
 * runner counts fds). (The FIN stays a shutdown(2): see uring_submit.c.) */
void test_uring_graceful_close_closes_sockets_on_the_ring(void) {
  need_uring();
  ioc_core_t *core;
  ioc_session_callbacks_t cb = callbacks(NULL, reply_and_close, NULL, ur_close);
  ioc_listener_t *l = ur_start(&core, 2, accept_with_callbacks, &cb);
  enum { N = 40 };
  for (int i = 0; i < N; i++) {
    sock_t c = tcp_connect(ioc_listener_address(l));
    sock_set_timeouts(c, scaled_ms(10000));
    ASSERT_OK(sock_send_all(c, "hi", 2));
    char buf[8];
    size_t got = 0;
    ASSERT_MSG(sock_recv_until_eof(c, buf, sizeof buf, &got) == 0 && got == 3 && memcmp(buf, "bye", 3) == 0,
               "client %d: expected \"bye\" then EOF, got %zu bytes", i, got);
    sock_close(c);
  }
  WAIT_UNTIL(core, atomic_load(&g_ur.closes) == N, 10000);
  uint64_t closes = ioc__uring_closes(core);
  ASSERT_MSG(closes >= N, "%llu of %d sockets closed on the ring", (unsigned long long)closes, N);
  ur_end(core, l, NULL, N);
}

#else /* !__linux__ */

#define UR_SKIP(name) \
  void test_##name(void) { SKIPF("io_uring only (Linux); the backend under test is %s", g_backend_name); }
UR_SKIP(uring_worker_rings_run_single_issuer_defer_taskrun)
UR_SKIP(uring_mode_falls_back_to_coop_taskrun)
UR_SKIP(uring_mode_falls_back_to_coop_without_single_issuer)
UR_SKIP(uring_mode_falls_back_to_plain_rings)
UR_SKIP(uring_rings_handed_over_mid_send_lose_no_byte)
UR_SKIP(uring_foreign_thread_sends_cancels_and_wakes_reach_owner_rings)
UR_SKIP(uring_accepts_spread_over_worker_rings)
UR_SKIP(uring_graceful_close_closes_sockets_on_the_ring)

#endif
