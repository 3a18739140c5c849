/* EMFILE on accept: with the process out of file descriptors and a burst of
 * connections waiting, the listener must neither spin (burn CPU retrying
 * accept) nor stop for good: once descriptors are free again, new clients
 * are accepted and the N accepts are posted again.
 *
 * POSIX only: it lowers RLIMIT_NOFILE in the test process. The clients live
 * in a forked helper process so they do not need descriptors of ours. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef _WIN32
void test_emfile_neither_spins_nor_kills_listener(void) {
  SKIPF("RLIMIT_NOFILE and fd exhaustion are POSIX-only; Windows has no per-process socket limit to exhaust");
}
#else
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the client helper process --------------------------------------------------- */

typedef struct cmd {
  char op; /* 'B' burst of n non-blocking connects, 'C' n blocking connects, 'X' exit */
  int n;
  ioc_addr_t addr;
} cmd_t;

#define HELPER_MAX 256

static void helper_main(int rd, int wr) {
  int socks[HELPER_MAX], nsocks = 0;
  for (;;) {
    cmd_t c;
    if (read(rd, &c, sizeof c) != (ssize_t)sizeof c) _exit(0);
    if (c.op == 'X') {
      for (int i = 0; i < nsocks; i++) close(socks[i]);
      _exit(0);
    }
    int ports[HELPER_MAX], np = 0;
    for (int i = 0; i < c.n && nsocks < HELPER_MAX; i++) {
      int s = socket(AF_INET, SOCK_STREAM, 0);
      if (s < 0) _exit(3);
      if (c.op == 'B') fcntl(s, F_SETFL, O_NONBLOCK);
      int rc = connect(s, (const struct sockaddr *)c.addr.u.bytes, c.addr.len);
      if (rc != 0 && !(c.op == 'B' && errno == EINPROGRESS)) _exit(4);
      socks[nsocks++] = s;
      struct sockaddr_in sin;
      socklen_t len = sizeof sin;
      getsockname(s, (struct sockaddr *)&sin, &len);
      ports[np++] = ntohs(sin.sin_port);
    }
    if (write(wr, &np, sizeof np) != (ssize_t)sizeof np) _exit(5);
    if (np && write(wr, ports, sizeof(int) * (size_t)np) != (ssize_t)(sizeof(int) * (size_t)np)) _exit(6);
  }
}

typedef struct helper {
  pid_t pid;
  int to, from;
  ioc_addr_t addr;
} helper_t;

static int helper_do(helper_t *h, char op, int n, int *ports) {
  cmd_t c;
  memset(&c, 0, sizeof c);
  c.op = op;
  c.n = n;
  c.addr = h->addr;
  ASSERT(write(h->to, &c, sizeof c) == (ssize_t)sizeof c);
  if (op == 'X') return 0;
  int np = 0;
  ASSERT_MSG(read(h->from, &np, sizeof np) == (ssize_t)sizeof np, "client helper process died");
  if (np) ASSERT(read(h->from, ports, sizeof(int) * (size_t)np) == (ssize_t)(sizeof(int) * (size_t)np));
  return np;
}

/* ---- the test -------------------------------------------------------------------- */

static atomic_int log_lines;
static void count_log(void *ud, const char *line) {
  (void)ud;
  if (atomic_fetch_add(&log_lines, 1) < 3) fprintf(stderr, "iocore log: %s\n", line);
}

static test_mutex_t port_lock;
static int accepted_ports[1024];
static int naccepted_ports;
static atomic_int ef_closed;

static void ef_close(ioc_session_t *s, int err) {
  (void)s;
  (void)err;
  atomic_fetch_add(&ef_closed, 1);
}
static void ef_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  ioc_session_callbacks_t cb = callbacks(NULL, NULL, NULL, ef_close);
  ioc_session_set_callbacks(s, &cb, NULL);
  mutex_lock(&port_lock);
  if (naccepted_ports < 1024) accepted_ports[naccepted_ports++] = ioc_addr_port(ioc_session_peer(s));
  mutex_unlock(&port_lock);
}
static int port_accepted(int port) {
  int found = 0;
  mutex_lock(&port_lock);
  for (int i = 0; i < naccepted_ports; i++) found |= accepted_ports[i] == port;
  mutex_unlock(&port_lock);
  return found;
}

#define NACC 8

void test_emfile_neither_spins_nor_kills_listener(void) {
  mutex_init(&port_lock);
  /* the helper is forked first: before any core or worker thread exists */
  int to[2], from[2];
  ASSERT(pipe(to) == 0 && pipe(from) == 0);
  helper_t h;
  h.pid = fork();
  ASSERT(h.pid >= 0);
  if (h.pid == 0) {
    close(to[1]);
    close(from[0]);
    helper_main(to[0], from[1]);
  }
  close(to[0]);
  close(from[1]);
  h.to = to[1];
  h.from = from[0];

  ioc_core_t *core;
  ioc_core_options_t opts;
  memset(&opts, 0, sizeof opts);
  opts.log = count_log;
  make_core_opts(&core, &opts);
  ioc_listener_options_t lo;
  memset(&lo, 0, sizeof lo);
  lo.accepts = NACC;
  ioc_listener_t *l = listen_loopback(core, &lo, ef_accept, NULL);
  h.addr = *ioc_listener_address(l);

  ASSERT_OK(ioc_core_start(core, 2));
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 2000);

  /* lower the limit and use up every descriptor */
  struct rlimit old, low;
  ASSERT(getrlimit(RLIMIT_NOFILE, &old) == 0);
  low = old;
  low.rlim_cur = 128;
  if (old.rlim_cur < low.rlim_cur) low.rlim_cur = old.rlim_cur;
  ASSERT(setrlimit(RLIMIT_NOFILE, &low) == 0);
  int hogs[1024], nhogs = 0;
  for (;;) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      ASSERT_MSG(errno == EMFILE, "open: %s", strerror(errno));
      break;
    }
    ASSERT(nhogs < 1024);
    hogs[nhogs++] = fd;
  }

  /* a burst of connections while accept can only fail with EMFILE */
  int ports[HELPER_MAX];
  ASSERT_EQ(helper_do(&h, 'B', 50, ports), 50);
  sleep_ms(200);
  double cpu0 = process_cpu_seconds();
  uint64_t t0 = now_ms();
  int logs0 = atomic_load(&log_lines);
  sleep_ms(2000);
  double cpu = process_cpu_seconds() - cpu0;
  double wall = (double)(now_ms() - t0) / 1000.0;
  int logs = atomic_load(&log_lines) - logs0;
  mutex_lock(&port_lock);
  int meanwhile = naccepted_ports;
  mutex_unlock(&port_lock);
  fprintf(stderr, "emfile: %.3f s CPU over %.2f s wall with no descriptors, %d log lines, %d sessions accepted meanwhile\n",
          cpu, wall, logs, meanwhile);

  /* free the descriptors before asserting, so a failure report can be written */
  for (int i = 0; i < nhogs; i++) close(hogs[i]);
  ASSERT(setrlimit(RLIMIT_NOFILE, &old) == 0);
  ASSERT_MSG(cpu < 0.5 * g_timeout_scale, "the listener spins on EMFILE: %.2f s of CPU in %.2f s with no descriptors", cpu, wall);
  ASSERT_MSG(logs <= 200, "%d log lines in 2 s of EMFILE: the log is flooded", logs);

  /* the listener is alive: new clients are accepted */
  int np = helper_do(&h, 'C', 10, ports);
  ASSERT_EQ(np, 10);
  for (int i = 0; i < np; i++) WAIT_UNTIL(core, port_accepted(ports[i]), 5000);
  WAIT_UNTIL(core, core_stats(core).accepts_posted == NACC, 5000);

  helper_do(&h, 'X', 0, NULL);
  int status = 0;
  ASSERT(waitpid(h.pid, &status, 0) == h.pid);
  ASSERT_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client helper exited with status %d", status);
  close(h.to);
  close(h.from);
  WAIT_UNTIL(core, core_stats(core).active == 0, 10000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  mutex_destroy(&port_lock);
}
#endif
