/* Helpers for the iocore C conformance suite: assertions that end the test
 * process with a reason, the backend chosen on the command line, cores that
 * are checked to close cleanly, plain OS sockets used as clients, threads,
 * a deterministic byte stream to check integrity, and clocks.
 *
 * Every test runs in its own process (see runner.c), so an assertion simply
 * reports its reason to the runner and exits; nothing is unwound. */
#ifndef IOC_TEST_HELPERS_H
#define IOC_TEST_HELPERS_H

/* POSIX and GNU declarations under -std=c11; every test file includes this
 * header (or rec.h) before any system header. */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
/* mingw-w64: C99 printf (%zu, %lld) instead of msvcrt's */
#if defined(_WIN32) && !defined(__USE_MINGW_ANSI_STDIO)
#define __USE_MINGW_ANSI_STDIO 1
#endif

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#endif

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "iocore.h"

#if defined(__GNUC__)
#define T_NORETURN __attribute__((noreturn))
#ifdef _WIN32
#define T_PRINTF(a, b) __attribute__((format(gnu_printf, a, b)))
#else
#define T_PRINTF(a, b) __attribute__((format(printf, a, b)))
#endif
#else
#define T_NORETURN
#define T_PRINTF(a, b)
#endif

/* ---- run-time settings (set by runner.c) ---------------------------------- */

extern ioc_backend_kind_t g_backend_kind; /* from --backend */
extern const char *g_backend_name;
extern double g_timeout_scale; /* --timeout-scale / IOCORE_TEST_TIMEOUT_SCALE (valgrind) */
extern double g_load_scale;    /* --load-scale / IOCORE_TEST_LOAD_SCALE: volume of data tests */
/* --threads / IOCORE_TEST_THREADS: 0 (default) = tests dispatch on their own
 * thread; N > 0 = the first pump() of a core that never had a pool starts
 * one of N workers, so every test written with pump() / WAIT_UNTIL runs its
 * callbacks on N worker threads instead. */
extern int g_test_threads;
void pool_track_init(void); /* once, before any test (runner) */
/* ioc_core_start for a test that wants a pool of its own at this point:
 * joins the pool pump() started first (IOCORE_TEST_THREADS), if any. */
int test_pool_start(ioc_core_t *core, int nthreads);

/* Scales a deadline (ms) by g_timeout_scale. */
int scaled_ms(int ms);
/* Scales a byte/count volume by g_load_scale (at least `min`). */
size_t scaled_load(size_t n, size_t min);

/* ---- failing and skipping -------------------------------------------------- */

/* Reports "FAIL <reason>" to the runner and ends the test process. Callable
 * from any thread, including library callbacks. */
T_NORETURN void test_fail_(const char *file, int line, const char *fmt, ...) T_PRINTF(3, 4);
/* Reports "SKIP <reason>" and ends the test process (a platform limit only). */
T_NORETURN void test_skip_(const char *fmt, ...) T_PRINTF(1, 2);
/* Used by the runner: reports a pass. */
void test_report_pass_(void);
/* Implemented in runner.c: hands one result line ("FAIL", "SKIP", "PASS" and
 * a text) to the parent process, and ends the test process. */
void result_write(const char *kind, const char *text);
T_NORETURN void result_exit(int code);

#define FAILF(...) test_fail_(__FILE__, __LINE__, __VA_ARGS__)
#define SKIPF(...) test_skip_(__VA_ARGS__)

#define ASSERT(cond)                                        \
  do {                                                      \
    if (!(cond)) FAILF("assertion failed: %s", #cond);      \
  } while (0)

#define ASSERT_MSG(cond, ...)                               \
  do {                                                      \
    if (!(cond)) FAILF(__VA_ARGS__);                        \
  } while (0)

/* Fails unless the C API page (IOCORE_DOCS, default docs/c-api.md from the
 * source tree the suite runs in) contains the text `fmt` formats to: the
 * numbers the page states are checked against the code this way. Skips the
 * test when the page is not there. The page is read once per process. */
#define ASSERT_C_API_DOC_SAYS(...) assert_c_api_doc_says_(__FILE__, __LINE__, __VA_ARGS__)
void assert_c_api_doc_says_(const char *file, int line, const char *fmt, ...) T_PRINTF(3, 4);

/* Integer comparison printing both sides. */
#define ASSERT_EQ(a, b)                                                              \
  do {                                                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                              \
    if (a_ != b_) FAILF("%s == %s: got %lld, expected %lld", #a, #b, a_, b_);        \
  } while (0)
#define ASSERT_NE(a, b)                                                              \
  do {                                                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                              \
    if (a_ == b_) FAILF("%s != %s: both are %lld", #a, #b, a_);                     \
  } while (0)
#define ASSERT_LE(a, b)                                                              \
  do {                                                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                              \
    if (!(a_ <= b_)) FAILF("%s <= %s: got %lld > %lld", #a, #b, a_, b_);            \
  } while (0)
#define ASSERT_LT(a, b)                                                              \
  do {                                                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                              \
    if (!(a_ < b_)) FAILF("%s < %s: got %lld >= %lld", #a, #b, a_, b_);             \
  } while (0)
#define ASSERT_GE(a, b) ASSERT_LE(b, a)
#define ASSERT_GT(a, b) ASSERT_LT(b, a)

/* An iocore call that must return 0 (or a non-negative count). */
#define ASSERT_OK(expr)                                                              \
  do {                                                                               \
    int rc_ = (int)(expr);                                                           \
    if (rc_ < 0) FAILF("%s: returned %d (%s)", #expr, rc_, ioc_err_name(rc_));       \
  } while (0)
/* An iocore call that must return exactly `code`. */
#define ASSERT_ERR(expr, code)                                                       \
  do {                                                                               \
    int rc_ = (int)(expr), want_ = (int)(code);                                      \
    if (rc_ != want_)                                                                \
      FAILF("%s: returned %d (%s), expected %d (%s)", #expr, rc_, ioc_err_name(rc_), \
            want_, ioc_err_name(want_));                                             \
  } while (0)
#define ASSERT_STR_EQ(a, b)                                                          \
  do {                                                                               \
    const char *a_ = (a), *b_ = (b);                                                 \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                             \
      FAILF("%s == %s: got \"%s\", expected \"%s\"", #a, #b, a_ ? a_ : "(null)",    \
            b_ ? b_ : "(null)");                                                     \
  } while (0)

/* ---- time ------------------------------------------------------------------ */

uint64_t now_ms(void);
uint64_t now_us(void);
void sleep_ms(unsigned ms);
/* User + system CPU seconds of the whole process (all threads). */
double process_cpu_seconds(void);

/* ---- cores ----------------------------------------------------------------- */

/* Creates a core on the backend given by --backend; fails the test otherwise.
 * Every core made must end with ASSERT_CORE_CLEAN (the runner checks). */
void make_core(ioc_core_t **core);
/* Same with options; opts->backend is overwritten with the chosen backend. */
void make_core_opts(ioc_core_t **core, ioc_core_options_t *opts);

/* Closes everything still open (ioc_core_close_all), dispatches (or, with a
 * worker pool running, waits for the workers, then stops and joins them)
 * until stats show objects, ops_inflight, sockets and active all 0, then
 * checks ioc_core_destroy() == 0. Fails the test on a deadline. */
void assert_core_clean_(ioc_core_t *core, const char *file, int line);
#define ASSERT_CORE_CLEAN(core) assert_core_clean_((core), __FILE__, __LINE__)

extern atomic_int g_cores_made, g_cores_cleaned;

/* One dispatch step: dispatch(core, ms) when no worker pool runs (fails the
 * test on an error other than ECANCELED), else a 1 ms sleep. */
void pump(ioc_core_t *core, int ms);

/* Pumps until expr holds; fails the test after ms (scaled) with the text. */
#define WAIT_UNTIL(core, expr, ms)                                                   \
  do {                                                                               \
    uint64_t dl_ = now_ms() + (uint64_t)scaled_ms(ms);                               \
    while (!(expr)) {                                                                \
      if (now_ms() > dl_) FAILF("timed out after %d ms waiting for %s", (int)(ms), #expr); \
      pump((core), 5);                                                               \
    }                                                                                \
  } while (0)

/* Pumps for ms milliseconds (to see that something does NOT happen). */
void pump_for(ioc_core_t *core, int ms);

ioc_stats_t core_stats(ioc_core_t *core);

/* The listener's address as a string ("127.0.0.1:port"). */
void listener_addr_str(ioc_listener_t *l, char buf[IOC_ADDRSTRLEN]);
/* Listens on 127.0.0.1:0 (accepts/backlog from opts if given). */
ioc_listener_t *listen_loopback(ioc_core_t *core, const ioc_listener_options_t *opts,
                                ioc_accept_cb cb, void *ud);
/* An accept callback for a listener whose sessions need only a callback
 * set: gives each accepted session the set `ud` points to (the caller's,
 * alive as long as the listener; the library keeps a copy), no user data.
 *   ioc_session_callbacks_t cb = callbacks(NULL, my_recv, NULL, my_close);
 *   ioc_listener_t *l = listen_loopback(core, NULL, accept_with_callbacks, &cb); */
void accept_with_callbacks(ioc_listener_t *l, ioc_session_t *s, void *ud);

/* ---- sockets (plain OS sockets, blocking unless said) ---------------------- */

#ifdef _WIN32
typedef SOCKET sock_t;
#define BAD_SOCK INVALID_SOCKET
#else
typedef int sock_t;
#define BAD_SOCK (-1)
#endif

/* The last socket error of this thread as an IOC_E* code. */
int sock_last_error(void);
/* Connects to addr; returns the socket or fails the test. */
sock_t tcp_connect(const ioc_addr_t *addr);
/* Connects; returns the socket, or BAD_SOCK with *err set (IOC_E* code). */
sock_t tcp_connect_err(const ioc_addr_t *addr, int *err);
/* A plain OS listener on 127.0.0.1:0; *bound gets its address. */
sock_t tcp_listen_os(ioc_addr_t *bound);
/* accept() with a time-out; BAD_SOCK on time-out. */
sock_t tcp_accept_os(sock_t l, int timeout_ms);
void sock_close(sock_t s);
/* SO_LINGER {1,0}: close() sends RST. */
void sock_set_linger_rst(sock_t s);
void sock_set_nonblock(sock_t s, bool on);
/* Receive / send time-outs so a stuck test fails instead of hanging. */
void sock_set_timeouts(sock_t s, int ms);
void sock_set_rcvbuf(sock_t s, int bytes);
void sock_set_nodelay(sock_t s);
/* Sends everything; 0 or an IOC_E* code. */
int sock_send_all(sock_t s, const void *buf, size_t len);
/* One recv: bytes (> 0), 0 at EOF, or an IOC_E* code (IOC_EAGAIN when
 * non-blocking and empty or on a receive time-out). */
long sock_recv(sock_t s, void *buf, size_t len);
/* Reads exactly len bytes; 0, IOC_EOF if the peer closed first, or a code. */
int sock_recv_exact(sock_t s, void *buf, size_t len);
/* Reads until EOF or error into buf (up to cap, the rest is counted and
 * dropped); returns 0 at EOF or the error code; *got = bytes read. */
int sock_recv_until_eof(sock_t s, char *buf, size_t cap, size_t *got);
void sock_local_addr(sock_t s, ioc_addr_t *out);
int sock_local_port(sock_t s);
/* A loopback port with nothing listening on it (bound then closed). */
int closed_port(void);
/* poll() / WSAPoll(): the count ready, 0 on time-out, or an IOC_E* code. */
int sock_poll(struct pollfd *fds, unsigned n, int timeout_ms);
/* shutdown(SHUT_WR). */
void sock_shutdown_write(sock_t s);

/* Number of open file descriptors of this process (POSIX: /proc/self/fd),
 * or -1 where it cannot be counted. */
int count_open_fds(void);
/* Writes a short list of open fds and their targets (for a leak report). */
void describe_open_fds(char *buf, size_t size);

/* ---- threads and locks ----------------------------------------------------- */

typedef struct test_thread test_thread_t;
test_thread_t *thread_start(void (*fn)(void *), void *arg);
void thread_join(test_thread_t *t);
/* An opaque id of the calling thread, comparable with ==. */
uintptr_t thread_self_id(void);

typedef struct test_mutex {
#ifdef _WIN32
  CRITICAL_SECTION cs;
#else
  pthread_mutex_t m;
#endif
} test_mutex_t;
void mutex_init(test_mutex_t *m);
void mutex_destroy(test_mutex_t *m);
void mutex_lock(test_mutex_t *m);
void mutex_unlock(test_mutex_t *m);

/* ---- data ------------------------------------------------------------------ */

/* splitmix64: a small, good PRNG. */
uint64_t rng_next(uint64_t *state);
/* Uniform in [lo, hi]. */
uint64_t rng_range(uint64_t *state, uint64_t lo, uint64_t hi);

/* A deterministic byte stream: byte i of stream `seed` depends only on
 * (seed, i), so a reader can check any slice at any offset. */
void pattern_fill(uint64_t seed, uint64_t offset, void *buf, size_t len);
/* Returns the index of the first byte that differs, or -1 if all match. */
long pattern_check(uint64_t seed, uint64_t offset, const void *buf, size_t len);

/* FNV-1a 64, incremental: start with FNV_INIT. */
#define FNV_INIT 0xcbf29ce484222325ull
uint64_t fnv1a(uint64_t h, const void *buf, size_t len);

/* Callbacks struct with every member NULL but the given ones. */
ioc_session_callbacks_t callbacks(void (*on_open)(ioc_session_t *, int),
                                  void (*on_recv)(ioc_session_t *, const char *, size_t),
                                  void (*on_drain)(ioc_session_t *),
                                  void (*on_close)(ioc_session_t *, int));

#endif /* IOC_TEST_HELPERS_H */
