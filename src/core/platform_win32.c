/* platform.h on Windows: critical sections, condition variables, threads,
 * clocks and the spin lock's slow path. Needs Vista or later
 * (_WIN32_WINNT >= 0x0600, set by the build).
 *
 * Compiled on every platform; empty elsewhere (see platform_posix.c). */
#ifdef _WIN32

#include "platform.h"

#include <process.h>
#include <stdlib.h>

#include "iocore.h"

/* ---- mutexes -------------------------------------------------------------- */

int ioc__mutex_init(ioc__mutex_t *m) {
  InitializeCriticalSection(m); /* cannot fail since Vista */
  return 0;
}

void ioc__mutex_destroy(ioc__mutex_t *m) {
  DeleteCriticalSection(m);
}

void ioc__mutex_lock(ioc__mutex_t *m) {
  EnterCriticalSection(m);
}

void ioc__mutex_unlock(ioc__mutex_t *m) {
  LeaveCriticalSection(m);
}

/* A critical section has no timed acquire. Try, then back off: a few
 * SwitchToThread() rounds for a lock that is about to be released, then
 * Sleep(1) steps (about one scheduler tick, so the deadline may be passed by
 * up to ~15 ms) until the deadline on the ioc__now_ms clock. */
bool ioc__mutex_lock_until(ioc__mutex_t *m, uint64_t deadline_ms) {
  if (deadline_ms == UINT64_MAX) {
    EnterCriticalSection(m);
    return true;
  }
  for (unsigned round = 0;; round++) {
    if (TryEnterCriticalSection(m))
      return true;
    if (ioc__now_ms() >= deadline_ms)
      return false;
    if (round < 16)
      SwitchToThread();
    else
      Sleep(1);
  }
}

/* ---- condition variables --------------------------------------------------- */

int ioc__cond_init(ioc__cond_t *c) {
  InitializeConditionVariable(c);
  return 0;
}

void ioc__cond_destroy(ioc__cond_t *c) {
  IOC__UNUSED(c); /* a CONDITION_VARIABLE owns no resources */
}

void ioc__cond_signal(ioc__cond_t *c) {
  WakeConditionVariable(c);
}

void ioc__cond_broadcast(ioc__cond_t *c) {
  WakeAllConditionVariable(c);
}

void ioc__cond_wait(ioc__cond_t *c, ioc__mutex_t *m) {
  if (!SleepConditionVariableCS(c, m, INFINITE))
    abort();
}

/* Returns false only when the time ran out; true on a wake (spurious ones
 * included: callers re-check their predicate). */
bool ioc__cond_wait_ms(ioc__cond_t *c, ioc__mutex_t *m, uint64_t ms) {
  DWORD t = ms >= (uint64_t)INFINITE ? INFINITE - 1 : (DWORD)ms;
  if (SleepConditionVariableCS(c, m, t))
    return true;
  if (GetLastError() == ERROR_TIMEOUT)
    return false;
  abort();
}

/* ---- threads ------------------------------------------------------------- */

typedef struct ioc__thread_start {
  void (*fn)(void *);
  void *arg;
} ioc__thread_start_t;

static unsigned __stdcall ioc__thread_main(void *p) {
  ioc__thread_start_t start = *(ioc__thread_start_t *)p;
  free(p);
  start.fn(start.arg);
  return 0;
}

/* _beginthreadex rather than CreateThread so the C runtime's per-thread
 * state is set up for the worker. Returns 0 or a negative code. */
int ioc__thread_create(ioc__thread_t *t, void (*fn)(void *), void *arg) {
  ioc__thread_start_t *start = malloc(sizeof *start);
  if (start == NULL)
    return IOC_ENOMEM;
  start->fn = fn;
  start->arg = arg;
  uintptr_t h = _beginthreadex(NULL, 0, ioc__thread_main, start, 0, NULL);
  if (h == 0) {
    free(start);
    return IOC_EAGAIN;
  }
  *t = (HANDLE)h;
  return 0;
}

void ioc__thread_join(ioc__thread_t t) {
  WaitForSingleObject(t, INFINITE);
  CloseHandle(t);
}

/* ---- clocks and CPUs ------------------------------------------------------ */

/* QueryPerformanceCounter: monotonic and sub-millisecond, unlike
 * GetTickCount64's ~15.6 ms steps. Split so counter * 1000 cannot overflow. */
uint64_t ioc__now_ms(void) {
  LARGE_INTEGER freq, now;
  QueryPerformanceFrequency(&freq); /* a constant read from shared memory: cheap */
  QueryPerformanceCounter(&now);
  uint64_t c = (uint64_t)now.QuadPart, f = (uint64_t)freq.QuadPart;
  return (c / f) * 1000u + (c % f) * 1000u / f;
}

int ioc__cpu_count(void) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  return si.dwNumberOfProcessors > 0 ? (int)si.dwNumberOfProcessors : 1;
}

/* ---- spin lock ------------------------------------------------------------- */

/* Spin on a plain load with a pause for a short while, then give the CPU away
 * so a preempted holder can run. */
void ioc__thread_yield(void) { SwitchToThread(); }

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
      YieldProcessor();
    } else {
      SwitchToThread();
    }
  }
}

#endif /* _WIN32 */
