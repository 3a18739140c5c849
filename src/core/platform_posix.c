/* platform.h on POSIX (Linux): pthread locks, condition variables on the
 * monotonic clock, threads, clocks and the spin lock's slow path.
 *
 * Compiled on every platform; empty on Windows (see platform_win32.c). */
#ifndef _WIN32

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#endif

#include "platform.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "iocore.h"

#define IOC__NS_PER_MS 1000000L
#define IOC__NS_PER_S 1000000000L

/* The longest single pthread_mutex_timedlock() wait in ioc__mutex_lock_until.
 * timedlock only takes a CLOCK_REALTIME deadline; if the wall clock is set
 * back while we wait, a slice ends this much later than the monotonic
 * deadline at worst, and the loop then re-checks the monotonic clock. */
#define IOC__LOCK_SLICE_MS 100

static struct timespec ioc__ts_add_ms(struct timespec ts, uint64_t ms) {
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * IOC__NS_PER_MS;
  if (ts.tv_nsec >= IOC__NS_PER_S) {
    ts.tv_sec += 1;
    ts.tv_nsec -= IOC__NS_PER_S;
  }
  return ts;
}

/* ---- mutexes -------------------------------------------------------------- */

int ioc__mutex_init(ioc__mutex_t *m) {
  int rc = pthread_mutex_init(m, NULL);
  return rc == 0 ? 0 : -rc;
}

void ioc__mutex_destroy(ioc__mutex_t *m) {
  pthread_mutex_destroy(m);
}

/* A failure here means a corrupted or uninitialised mutex: a bug that must
 * not be papered over, so abort rather than run unlocked. */
void ioc__mutex_lock(ioc__mutex_t *m) {
  if (pthread_mutex_lock(m) != 0)
    abort();
}

void ioc__mutex_unlock(ioc__mutex_t *m) {
  if (pthread_mutex_unlock(m) != 0)
    abort();
}

/* pthread_mutex_clocklock() would take the monotonic deadline directly, but
 * ThreadSanitizer (gcc 12, clang 14) does not intercept it, so the TSan build
 * would report false races. Instead: wait in slices of at most
 * IOC__LOCK_SLICE_MS on a CLOCK_REALTIME deadline computed from the time left
 * on the monotonic clock, and decide time-out on the monotonic clock only. */
bool ioc__mutex_lock_until(ioc__mutex_t *m, uint64_t deadline_ms) {
  if (deadline_ms == UINT64_MAX) {
    ioc__mutex_lock(m);
    return true;
  }
  for (;;) {
    int rc = pthread_mutex_trylock(m);
    if (rc == 0)
      return true;
    if (rc != EBUSY)
      abort();
    uint64_t now = ioc__now_ms();
    if (now >= deadline_ms)
      return false;
    uint64_t left = deadline_ms - now;
    if (left > IOC__LOCK_SLICE_MS)
      left = IOC__LOCK_SLICE_MS;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts = ioc__ts_add_ms(ts, left);
    rc = pthread_mutex_timedlock(m, &ts);
    if (rc == 0)
      return true;
    if (rc != ETIMEDOUT && rc != EINTR)
      abort();
  }
}

/* ---- condition variables (on CLOCK_MONOTONIC) ---------------------------- */

int ioc__cond_init(ioc__cond_t *c) {
  pthread_condattr_t attr;
  int rc = pthread_condattr_init(&attr);
  if (rc != 0)
    return -rc;
  rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  if (rc == 0)
    rc = pthread_cond_init(c, &attr);
  pthread_condattr_destroy(&attr);
  return rc == 0 ? 0 : -rc;
}

void ioc__cond_destroy(ioc__cond_t *c) {
  pthread_cond_destroy(c);
}

void ioc__cond_signal(ioc__cond_t *c) {
  pthread_cond_signal(c);
}

void ioc__cond_broadcast(ioc__cond_t *c) {
  pthread_cond_broadcast(c);
}

void ioc__cond_wait(ioc__cond_t *c, ioc__mutex_t *m) {
  if (pthread_cond_wait(c, m) != 0)
    abort();
}

/* Returns false only when the time ran out; true on a signal, a broadcast or
 * a spurious wake-up (callers re-check their predicate either way). */
bool ioc__cond_wait_ms(ioc__cond_t *c, ioc__mutex_t *m, uint64_t ms) {
  /* Keep tv_sec far from overflow: a wait of more than ~31 years is forever
   * for our purposes, and the caller re-checks after a wake anyway. */
  const uint64_t max_ms = (uint64_t)1000 * 1000 * 1000 * 1000;
  if (ms > max_ms)
    ms = max_ms;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts = ioc__ts_add_ms(ts, ms);
  int rc = pthread_cond_timedwait(c, m, &ts);
  if (rc == ETIMEDOUT)
    return false;
  if (rc != 0 && rc != EINTR)
    abort();
  return true;
}

/* ---- threads ------------------------------------------------------------- */

typedef struct ioc__thread_start {
  void (*fn)(void *);
  void *arg;
} ioc__thread_start_t;

static void *ioc__thread_main(void *p) {
  ioc__thread_start_t start = *(ioc__thread_start_t *)p;
  free(p);
  start.fn(start.arg);
  return NULL;
}

/* Starts fn(arg) on a new thread. The thread starts with every asynchronous
 * signal blocked, so SIGINT, SIGTERM, SIGPIPE and the like are delivered to
 * the application's own threads (the one that called run(), or a signalfd)
 * and never interrupt a worker. Synchronous faults stay unblocked: blocking
 * them would turn a crash into a silent kill. Returns 0 or a negative code. */
int ioc__thread_create(ioc__thread_t *t, void (*fn)(void *), void *arg) {
  ioc__thread_start_t *start = malloc(sizeof *start);
  if (start == NULL)
    return IOC_ENOMEM;
  start->fn = fn;
  start->arg = arg;

  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGFPE);
  sigdelset(&all, SIGILL);
  sigdelset(&all, SIGTRAP);
  sigdelset(&all, SIGABRT);
  sigdelset(&all, SIGSYS);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(t, NULL, ioc__thread_main, start);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    free(start);
    return -rc;
  }
  return 0;
}

void ioc__thread_join(ioc__thread_t t) {
  pthread_join(t, NULL);
}

/* ---- clocks and CPUs ------------------------------------------------------ */

uint64_t ioc__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / (uint64_t)IOC__NS_PER_MS;
}

/* CPUs this process may run on (taskset and cgroup cpusets lower it), else
 * the online count, and never less than 1. */
int ioc__cpu_count(void) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0)
      return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

void ioc__thread_yield(void) { sched_yield(); }

/* ---- spin lock ------------------------------------------------------------- */

static inline void ioc__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield");
#endif
}

/* The contended path: spin on a plain load (no cache-line ping-pong) with a
 * pause for a short while, since holders keep the lock for a few dozen
 * instructions; after that, give the CPU away so a preempted holder can run. */
void ioc__spin_lock_slow(ioc__spin_t *s) {
  unsigned spins = 0;
  for (;;) {
    int expected = 0;
    if (atomic_load_explicit(&s->v, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_weak_explicit(&s->v, &expected, 1, memory_order_acquire,
                                              memory_order_relaxed))
      return;
    if (spins < 100) {
      spins++;
      ioc__cpu_relax();
    } else {
      sched_yield();
    }
  }
}

#endif /* !_WIN32 */
