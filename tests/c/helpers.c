/* Helpers for the conformance suite; see helpers.h. Portable between POSIX
 * and Win32 (mingw-w64): every OS difference is kept in this file. */
#include "helpers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef _WIN32
#include <process.h>
#else
#include <dirent.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#endif

ioc_backend_kind_t g_backend_kind = IOC_BACKEND_AUTO;
const char *g_backend_name = "auto";
double g_timeout_scale = 1.0;
double g_load_scale = 1.0;
int g_test_threads = 0;
atomic_int g_cores_made, g_cores_cleaned;

int scaled_ms(int ms) {
  double v = (double)ms * g_timeout_scale;
  return v > 2e9 ? 2000000000 : (int)v;
}

size_t scaled_load(size_t n, size_t min) {
  double v = (double)n * g_load_scale;
  return v < (double)min ? min : (size_t)v;
}

/* ---- failing and skipping ---------------------------------------------------- */

static atomic_int reported;

T_NORETURN static void report_and_exit(const char *kind, int code, const char *text) {
  /* Only the first report of a process counts; a second failing thread
   * waits for the exit. */
  if (atomic_exchange(&reported, 1) != 0) {
    for (;;) sleep_ms(1000);
  }
  result_write(kind, text);
  result_exit(code);
}

void test_fail_(const char *file, int line, const char *fmt, ...) {
  char msg[1500], text[1800];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *base = strrchr(file, '/');
  base = base ? base + 1 : file;
  snprintf(text, sizeof text, "%s (%s:%d)", msg, base, line);
  report_and_exit("FAIL", 1, text);
}

void assert_c_api_doc_says_(const char *file, int line, const char *fmt, ...) {
  static char doc[1 << 17];
  static const char *path;
  if (!path) {
    path = getenv("IOCORE_DOCS") ? getenv("IOCORE_DOCS") : "docs/c-api.md";
    FILE *f = fopen(path, "rb");
    if (!f) SKIPF("%s not found (run from the source tree, or set IOCORE_DOCS)", path);
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = 0;
  }
  char want[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(want, sizeof want, fmt, ap);
  va_end(ap);
  if (!strstr(doc, want)) test_fail_(file, line, "%s does not say %s", path, want);
}

void test_skip_(const char *fmt, ...) {
  char msg[1500];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  report_and_exit("SKIP", 77, msg);
}

void test_report_pass_(void) {
  if (atomic_exchange(&reported, 1) != 0) {
    for (;;) sleep_ms(1000);
  }
  result_write("PASS", "");
}

/* ---- time -------------------------------------------------------------------- */

#ifdef _WIN32
uint64_t now_us(void) {
  static LARGE_INTEGER freq;
  LARGE_INTEGER c;
  if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
  QueryPerformanceCounter(&c);
  return (uint64_t)((double)c.QuadPart * 1e6 / (double)freq.QuadPart);
}
void sleep_ms(unsigned ms) { Sleep(ms); }
double process_cpu_seconds(void) {
  FILETIME c, e, k, u;
  GetProcessTimes(GetCurrentProcess(), &c, &e, &k, &u);
  uint64_t kt = ((uint64_t)k.dwHighDateTime << 32) | k.dwLowDateTime;
  uint64_t ut = ((uint64_t)u.dwHighDateTime << 32) | u.dwLowDateTime;
  return (double)(kt + ut) / 1e7;
}
#else
uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
void sleep_ms(unsigned ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}
double process_cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}
#endif
uint64_t now_ms(void) { return now_us() / 1000u; }

/* ---- cores ------------------------------------------------------------------- */

void make_core_opts(ioc_core_t **core, ioc_core_options_t *opts) {
  opts->backend = g_backend_kind;
  *core = NULL;
  int rc = ioc_core_create(core, opts);
  if (rc != 0) FAILF("ioc_core_create(%s): %d (%s)", g_backend_name, rc, ioc_err_name(rc));
  ASSERT(*core != NULL);
  ASSERT_STR_EQ(ioc_core_backend(*core), g_backend_name);
  atomic_fetch_add(&g_cores_made, 1);
}

void make_core(ioc_core_t **core) {
  ioc_core_options_t opts;
  memset(&opts, 0, sizeof opts);
  make_core_opts(core, &opts);
}

ioc_stats_t core_stats(ioc_core_t *core) {
  ioc_stats_t st;
  memset(&st, 0xff, sizeof st);
  ioc_core_stats(core, &st);
  return st;
}

static bool stats_clean(const ioc_stats_t *st) {
  return st->objects == 0 && st->ops_inflight == 0 && st->sockets == 0 && st->active == 0;
}

/* IOCORE_TEST_THREADS: which cores pump() gave a pool, and which had one
 * the test started itself. After a test joins its own pool, pump()
 * dispatches on the test's thread as before rather than starting another,
 * so a test that manages its pool keeps control of it. */
#define POOL_TRACK 64
static struct {
  ioc_core_t *core;
  bool helper_pool; /* the pool running now was started by pump() */
  bool test_pool;   /* the test started a pool of its own at some point */
} pool_track[POOL_TRACK];
static test_mutex_t pool_track_lock;

void pool_track_init(void) { mutex_init(&pool_track_lock); }

static int pool_track_slot(ioc_core_t *core, bool add) {
  int free_slot = -1;
  for (int i = 0; i < POOL_TRACK; i++) {
    if (pool_track[i].core == core) return i;
    if (!pool_track[i].core && free_slot < 0) free_slot = i;
  }
  if (!add || free_slot < 0) return -1;
  memset(&pool_track[free_slot], 0, sizeof pool_track[free_slot]);
  pool_track[free_slot].core = core;
  return free_slot;
}

/* Forgets core (destroyed: its address may come back for another). */
static void pool_track_forget(ioc_core_t *core) {
  if (g_test_threads <= 0) return;
  mutex_lock(&pool_track_lock);
  int i = pool_track_slot(core, false);
  if (i >= 0) pool_track[i].core = NULL;
  mutex_unlock(&pool_track_lock);
}

/* Starts the pool of g_test_threads workers on core if it is due. */
static void pool_maybe_start(ioc_core_t *core) {
  if (g_test_threads <= 0) return;
  mutex_lock(&pool_track_lock);
  int i = pool_track_slot(core, true);
  if (i >= 0) {
    int threads = ioc_core_threads(core);
    if (threads > 0 && !pool_track[i].helper_pool) pool_track[i].test_pool = true;
    if (threads == 0) pool_track[i].helper_pool = false;
    if (threads == 0 && !pool_track[i].test_pool) {
      int rc = ioc_core_start(core, g_test_threads);
      if (rc < 0) {
        mutex_unlock(&pool_track_lock);
        FAILF("ioc_core_start(%d) for IOCORE_TEST_THREADS: %d (%s)", g_test_threads, rc, ioc_err_name(rc));
      }
      pool_track[i].helper_pool = true;
    }
  }
  mutex_unlock(&pool_track_lock);
}

int test_pool_start(ioc_core_t *core, int nthreads) {
  if (g_test_threads > 0) {
    mutex_lock(&pool_track_lock);
    int i = pool_track_slot(core, true);
    bool helpers = i >= 0 && pool_track[i].helper_pool && ioc_core_threads(core) > 0;
    if (i >= 0) {
      pool_track[i].helper_pool = false;
      pool_track[i].test_pool = true;
    }
    mutex_unlock(&pool_track_lock);
    if (helpers) {
      ioc_core_stop(core);
      ioc_core_join(core);
    }
  }
  return ioc_core_start(core, nthreads);
}

void pump(ioc_core_t *core, int ms) {
  pool_maybe_start(core);
  if (ioc_core_threads(core) > 0) {
    sleep_ms(1);
    return;
  }
  int rc = ioc_core_dispatch(core, ms);
  if (rc < 0 && rc != IOC_ECANCELED)
    FAILF("ioc_core_dispatch: %d (%s)", rc, ioc_err_name(rc));
}

void pump_for(ioc_core_t *core, int ms) {
  uint64_t end = now_ms() + (uint64_t)ms;
  for (;;) {
    uint64_t t = now_ms();
    if (t >= end) break;
    pump(core, (int)(end - t));
  }
}

void assert_core_clean_(ioc_core_t *core, const char *file, int line) {
  ioc_stats_t st;
  uint64_t deadline = now_ms() + (uint64_t)scaled_ms(10000);
  bool pool = ioc_core_threads(core) > 0;
  ioc_core_close_all(core, 0);
  for (;;) {
    st = core_stats(core);
    if (stats_clean(&st)) break;
    if (now_ms() > deadline) {
      test_fail_(file, line,
                 "core not clean after close_all: objects=%llu ops_inflight=%llu sockets=%llu "
                 "active=%llu accepts_posted=%llu",
                 (unsigned long long)st.objects, (unsigned long long)st.ops_inflight,
                 (unsigned long long)st.sockets, (unsigned long long)st.active,
                 (unsigned long long)st.accepts_posted);
    }
    if (pool)
      sleep_ms(2);
    else {
      int rc = ioc_core_dispatch(core, 10);
      if (rc < 0 && rc != IOC_ECANCELED)
        test_fail_(file, line, "ioc_core_dispatch while closing: %d (%s)", rc, ioc_err_name(rc));
    }
  }
  if (pool) {
    ioc_core_stop(core);
    ioc_core_join(core);
  }
  st = core_stats(core);
  if (!stats_clean(&st) || st.accepts_posted != 0)
    test_fail_(file, line, "core not clean after join: objects=%llu ops=%llu sockets=%llu accepts_posted=%llu",
               (unsigned long long)st.objects, (unsigned long long)st.ops_inflight,
               (unsigned long long)st.sockets, (unsigned long long)st.accepts_posted);
  pool_track_forget(core);
  int rc = ioc_core_destroy(core);
  if (rc != 0) test_fail_(file, line, "ioc_core_destroy: %d (%s)", rc, ioc_err_name(rc));
  atomic_fetch_add(&g_cores_cleaned, 1);
}

void listener_addr_str(ioc_listener_t *l, char buf[IOC_ADDRSTRLEN]) {
  const ioc_addr_t *a = ioc_listener_address(l);
  ASSERT(a != NULL);
  int n = ioc_addr_format(a, buf, IOC_ADDRSTRLEN);
  ASSERT_MSG(n > 0, "ioc_addr_format(listener address): %d (%s)", n, ioc_err_name(n));
}

ioc_listener_t *listen_loopback(ioc_core_t *core, const ioc_listener_options_t *opts,
                                ioc_accept_cb cb, void *ud) {
  ioc_listener_t *l = NULL;
  const char *a = "127.0.0.1:0";
  int rc = ioc_listen(core, a, strlen(a), opts, cb, ud, &l);
  if (rc != 0) FAILF("ioc_listen(%s): %d (%s)", a, rc, ioc_err_name(rc));
  ASSERT(l != NULL);
  const ioc_addr_t *la = ioc_listener_address(l);
  ASSERT(la != NULL);
  ASSERT_MSG(ioc_addr_port(la) != 0, "ioc_listener_address() reports port 0 after listening on port 0");
  return l;
}

void accept_with_callbacks(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  ioc_session_set_callbacks(s, (const ioc_session_callbacks_t *)ud, NULL);
}

ioc_session_callbacks_t callbacks(void (*on_open)(ioc_session_t *, int),
                                  void (*on_recv)(ioc_session_t *, const char *, size_t),
                                  void (*on_drain)(ioc_session_t *),
                                  void (*on_close)(ioc_session_t *, int)) {
  ioc_session_callbacks_t c;
  memset(&c, 0, sizeof c);
  c.on_open = on_open;
  c.on_recv = on_recv;
  c.on_drain = on_drain;
  c.on_close = on_close;
  return c;
}

/* ---- sockets ----------------------------------------------------------------- */

#ifdef _WIN32
static int map_wsa(int e) {
  switch (e) {
    case WSAECONNRESET: return IOC_ECONNRESET;
    case WSAECONNREFUSED: return IOC_ECONNREFUSED;
    case WSAECONNABORTED: return IOC_ECONNABORTED;
    case WSAEWOULDBLOCK: return IOC_EAGAIN;
    case WSAETIMEDOUT: return IOC_EAGAIN; /* SO_RCVTIMEO expiry */
    case WSAEINTR: return IOC_EINTR;
    case WSAESHUTDOWN: return IOC_EPIPE;
    case WSAEMFILE: return IOC_EMFILE;
    case WSAEINVAL: return IOC_EINVAL;
    case WSAENOTCONN: return IOC_ENOTCONN;
    case WSAEADDRINUSE: return IOC_EADDRINUSE;
    default: return IOC_EUNKNOWN;
  }
}
int sock_last_error(void) { return map_wsa(WSAGetLastError()); }
#else
int sock_last_error(void) {
  int e = errno;
  if (e == EWOULDBLOCK) return IOC_EAGAIN;
  return -e;
}
#endif

sock_t tcp_connect_err(const ioc_addr_t *addr, int *err) {
  sock_t s = socket(addr->u.family, SOCK_STREAM, 0);
  if (s == BAD_SOCK) {
    *err = sock_last_error();
    return BAD_SOCK;
  }
  for (;;) {
    if (connect(s, (const struct sockaddr *)addr->u.bytes, (int)addr->len) == 0) break;
    int e = sock_last_error();
    if (e == IOC_EINTR) continue;
    *err = e;
    sock_close(s);
    return BAD_SOCK;
  }
  *err = 0;
  return s;
}

sock_t tcp_connect(const ioc_addr_t *addr) {
  int err = 0;
  sock_t s = tcp_connect_err(addr, &err);
  if (s == BAD_SOCK) FAILF("client connect: %d (%s)", err, ioc_err_name(err));
  return s;
}

sock_t tcp_listen_os(ioc_addr_t *bound) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sock_t s = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT(s != BAD_SOCK);
  ASSERT_MSG(bind(s, (struct sockaddr *)&sin, sizeof sin) == 0, "bind: %s", ioc_err_name(sock_last_error()));
  ASSERT(listen(s, 128) == 0);
  if (bound) sock_local_addr(s, bound);
  return s;
}

sock_t tcp_accept_os(sock_t l, int timeout_ms) {
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(l, &rd);
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  if (select((int)l + 1, &rd, NULL, NULL, &tv) <= 0) return BAD_SOCK;
  return accept(l, NULL, NULL);
}

void sock_close(sock_t s) {
#ifdef _WIN32
  closesocket(s);
#else
  close(s);
#endif
}

void sock_set_linger_rst(sock_t s) {
  struct linger lg;
  lg.l_onoff = 1;
  lg.l_linger = 0;
  ASSERT(setsockopt(s, SOL_SOCKET, SO_LINGER, (const char *)&lg, sizeof lg) == 0);
}

void sock_set_nonblock(sock_t s, bool on) {
#ifdef _WIN32
  u_long v = on ? 1 : 0;
  ASSERT(ioctlsocket(s, FIONBIO, &v) == 0);
#else
  int fl = fcntl(s, F_GETFL);
  ASSERT(fl >= 0);
  ASSERT(fcntl(s, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK)) == 0);
#endif
}

void sock_set_timeouts(sock_t s, int ms) {
  ms = scaled_ms(ms);
#ifdef _WIN32
  DWORD tv = (DWORD)ms;
#else
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
#endif
  ASSERT(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, (const char *)&tv, sizeof tv) == 0);
  ASSERT(setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, (const char *)&tv, sizeof tv) == 0);
}

void sock_set_rcvbuf(sock_t s, int bytes) {
  ASSERT(setsockopt(s, SOL_SOCKET, SO_RCVBUF, (const char *)&bytes, sizeof bytes) == 0);
}

void sock_set_nodelay(sock_t s) {
  int one = 1;
  ASSERT(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one) == 0);
}

int sock_send_all(sock_t s, const void *buf, size_t len) {
  const char *p = (const char *)buf;
  while (len > 0) {
    int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
#ifdef _WIN32
    int n = send(s, p, chunk, 0);
#else
    ssize_t n = send(s, p, (size_t)chunk, MSG_NOSIGNAL);
#endif
    if (n < 0) {
      int e = sock_last_error();
      if (e == IOC_EINTR) continue;
      return e;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

long sock_recv(sock_t s, void *buf, size_t len) {
  for (;;) {
    int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
#ifdef _WIN32
    int n = recv(s, (char *)buf, chunk, 0);
#else
    ssize_t n = recv(s, buf, (size_t)chunk, 0);
#endif
    if (n >= 0) return (long)n;
    int e = sock_last_error();
    if (e == IOC_EINTR) continue;
    return e;
  }
}

int sock_recv_exact(sock_t s, void *buf, size_t len) {
  char *p = (char *)buf;
  while (len > 0) {
    long n = sock_recv(s, p, len);
    if (n == 0) return IOC_EOF;
    if (n < 0) return (int)n;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int sock_recv_until_eof(sock_t s, char *buf, size_t cap, size_t *got) {
  char scratch[65536];
  *got = 0;
  for (;;) {
    char *dst = scratch;
    size_t room = sizeof scratch;
    if (buf && *got < cap) {
      dst = buf + *got;
      room = cap - *got;
    }
    long n = sock_recv(s, dst, room);
    if (n == 0) return 0;
    if (n < 0) return (int)n;
    *got += (size_t)n;
  }
}

void sock_local_addr(sock_t s, ioc_addr_t *out) {
  memset(out, 0, sizeof *out);
  socklen_t len = (socklen_t)sizeof out->u.bytes;
  ASSERT(getsockname(s, (struct sockaddr *)out->u.bytes, &len) == 0);
  out->len = (uint32_t)len;
}

int sock_local_port(sock_t s) {
  ioc_addr_t a;
  sock_local_addr(s, &a);
  return ioc_addr_port(&a);
}

int closed_port(void) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sock_t s = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT(s != BAD_SOCK);
  ASSERT(bind(s, (struct sockaddr *)&sin, sizeof sin) == 0);
  int port = sock_local_port(s);
  sock_close(s);
  return port;
}

int sock_poll(struct pollfd *fds, unsigned n, int timeout_ms) {
#ifdef _WIN32
  int rc = WSAPoll(fds, (ULONG)n, timeout_ms);
#else
  int rc = poll(fds, (nfds_t)n, timeout_ms);
#endif
  if (rc < 0) {
    int e = sock_last_error();
    return e == IOC_EINTR ? 0 : e;
  }
  return rc;
}

void sock_shutdown_write(sock_t s) {
#ifdef _WIN32
  shutdown(s, SD_SEND);
#else
  shutdown(s, SHUT_WR);
#endif
}

#ifdef _WIN32
int count_open_fds(void) { return -1; }
void describe_open_fds(char *buf, size_t size) { snprintf(buf, size, "(not available)"); }
#else
int count_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] != '.') n++;
  }
  closedir(d);
  return n - 1; /* the directory's own fd */
}

void describe_open_fds(char *buf, size_t size) {
  size_t used = 0;
  buf[0] = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  int self = dirfd(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL && used + 80 < size) {
    if (e->d_name[0] == '.' || atoi(e->d_name) == self) continue;
    char path[300], target[256];
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t n = readlink(path, target, sizeof target - 1);
    target[n > 0 ? n : 0] = 0;
    used += (size_t)snprintf(buf + used, size - used, "%s%s=%.40s", used ? " " : "", e->d_name, target);
  }
  closedir(d);
}
#endif

/* ---- threads ----------------------------------------------------------------- */

struct test_thread {
  void (*fn)(void *);
  void *arg;
#ifdef _WIN32
  HANDLE h;
#else
  pthread_t t;
#endif
};

#ifdef _WIN32
static unsigned __stdcall thread_main(void *p) {
  test_thread_t *t = (test_thread_t *)p;
  t->fn(t->arg);
  return 0;
}
test_thread_t *thread_start(void (*fn)(void *), void *arg) {
  test_thread_t *t = (test_thread_t *)calloc(1, sizeof *t);
  ASSERT(t != NULL);
  t->fn = fn;
  t->arg = arg;
  t->h = (HANDLE)_beginthreadex(NULL, 0, thread_main, t, 0, NULL);
  ASSERT(t->h != 0);
  return t;
}
void thread_join(test_thread_t *t) {
  WaitForSingleObject(t->h, INFINITE);
  CloseHandle(t->h);
  free(t);
}
uintptr_t thread_self_id(void) { return (uintptr_t)GetCurrentThreadId(); }
void mutex_init(test_mutex_t *m) { InitializeCriticalSection(&m->cs); }
void mutex_destroy(test_mutex_t *m) { DeleteCriticalSection(&m->cs); }
void mutex_lock(test_mutex_t *m) { EnterCriticalSection(&m->cs); }
void mutex_unlock(test_mutex_t *m) { LeaveCriticalSection(&m->cs); }
#else
static void *thread_main(void *p) {
  test_thread_t *t = (test_thread_t *)p;
  t->fn(t->arg);
  return NULL;
}
test_thread_t *thread_start(void (*fn)(void *), void *arg) {
  test_thread_t *t = (test_thread_t *)calloc(1, sizeof *t);
  ASSERT(t != NULL);
  t->fn = fn;
  t->arg = arg;
  ASSERT(pthread_create(&t->t, NULL, thread_main, t) == 0);
  return t;
}
void thread_join(test_thread_t *t) {
  pthread_join(t->t, NULL);
  free(t);
}
uintptr_t thread_self_id(void) { return (uintptr_t)pthread_self(); }
void mutex_init(test_mutex_t *m) { pthread_mutex_init(&m->m, NULL); }
void mutex_destroy(test_mutex_t *m) { pthread_mutex_destroy(&m->m); }
void mutex_lock(test_mutex_t *m) { pthread_mutex_lock(&m->m); }
void mutex_unlock(test_mutex_t *m) { pthread_mutex_unlock(&m->m); }
#endif

/* ---- data -------------------------------------------------------------------- */

uint64_t rng_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rng_range(uint64_t *state, uint64_t lo, uint64_t hi) {
  return lo + rng_next(state) % (hi - lo + 1);
}

static inline uint64_t pattern_word(uint64_t seed, uint64_t index) {
  uint64_t s = seed * 0x2545f4914f6cdd1dull + index * 0x9e3779b97f4a7c15ull;
  return rng_next(&s);
}

void pattern_fill(uint64_t seed, uint64_t offset, void *buf, size_t len) {
  unsigned char *p = (unsigned char *)buf;
  size_t i = 0;
  while (i < len) {
    uint64_t pos = offset + i;
    uint64_t w = pattern_word(seed, pos >> 3);
    unsigned shift = (unsigned)(pos & 7);
    for (; shift < 8 && i < len; shift++, i++) p[i] = (unsigned char)(w >> (shift * 8));
  }
}

long pattern_check(uint64_t seed, uint64_t offset, const void *buf, size_t len) {
  const unsigned char *p = (const unsigned char *)buf;
  size_t i = 0;
  while (i < len) {
    uint64_t pos = offset + i;
    uint64_t w = pattern_word(seed, pos >> 3);
    unsigned shift = (unsigned)(pos & 7);
    for (; shift < 8 && i < len; shift++, i++)
      if (p[i] != (unsigned char)(w >> (shift * 8))) return (long)i;
  }
  return -1;
}

uint64_t fnv1a(uint64_t h, const void *buf, size_t len) {
  const unsigned char *p = (const unsigned char *)buf;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
