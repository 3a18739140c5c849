/* Thin portability layer: threads, locks, atomics, clocks, socket handles.
 * POSIX (Linux) and Win32 only. Everything here is internal. */
#ifndef IOC_PLATFORM_H
#define IOC_PLATFORM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
typedef SOCKET ioc_fd_t;
#define IOC_BAD_FD INVALID_SOCKET
typedef WSABUF ioc__iov_t; /* { ULONG len; CHAR *buf; } */
#define IOC__IOV_BASE(v) ((v)->buf)
#define IOC__IOV_LEN(v) ((v)->len)
#define IOC__IOV_SET(v, b, l) ((v)->buf = (CHAR *)(b), (v)->len = (ULONG)(l))
typedef CRITICAL_SECTION ioc__mutex_t;
typedef CONDITION_VARIABLE ioc__cond_t;
typedef HANDLE ioc__thread_t;
#else
#include <pthread.h>
#include <sys/socket.h>
#include <sys/uio.h>
typedef int ioc_fd_t;
#define IOC_BAD_FD (-1)
typedef struct iovec ioc__iov_t;
#define IOC__IOV_BASE(v) ((v)->iov_base)
#define IOC__IOV_LEN(v) ((v)->iov_len)
#define IOC__IOV_SET(v, b, l) ((v)->iov_base = (void *)(b), (v)->iov_len = (size_t)(l))
typedef pthread_mutex_t ioc__mutex_t;
typedef pthread_cond_t ioc__cond_t;
typedef pthread_t ioc__thread_t;
#endif

#define IOC__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define IOC__UNUSED(x) ((void)(x))

#if defined(__GNUC__)
#define IOC__LIKELY(x) __builtin_expect(!!(x), 1)
#define IOC__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define IOC__LIKELY(x) (x)
#define IOC__UNLIKELY(x) (x)
#endif

int ioc__mutex_init(ioc__mutex_t *m);
void ioc__mutex_destroy(ioc__mutex_t *m);
void ioc__mutex_lock(ioc__mutex_t *m);
void ioc__mutex_unlock(ioc__mutex_t *m);
/* Returns true if locked, false if deadline_ms (ioc__now_ms clock) passed
 * first. deadline_ms UINT64_MAX = wait forever. */
bool ioc__mutex_lock_until(ioc__mutex_t *m, uint64_t deadline_ms);

int ioc__cond_init(ioc__cond_t *c);
void ioc__cond_destroy(ioc__cond_t *c);
void ioc__cond_signal(ioc__cond_t *c);
void ioc__cond_broadcast(ioc__cond_t *c);
void ioc__cond_wait(ioc__cond_t *c, ioc__mutex_t *m);
/* false on time-out */
bool ioc__cond_wait_ms(ioc__cond_t *c, ioc__mutex_t *m, uint64_t ms);

int ioc__thread_create(ioc__thread_t *t, void (*fn)(void *), void *arg);
void ioc__thread_join(ioc__thread_t t);
/* Gives the CPU away for a moment (sched_yield / SwitchToThread). */
void ioc__thread_yield(void);

/* Monotonic milliseconds. */
uint64_t ioc__now_ms(void);
/* Number of online CPUs (at least 1). */
int ioc__cpu_count(void);

/* A tiny lock for short critical sections (session state, handle queues):
 * 4 bytes, spins briefly then yields. */
typedef struct {
  atomic_int v;
} ioc__spin_t;
void ioc__spin_lock_slow(ioc__spin_t *s);
static inline void ioc__spin_lock(ioc__spin_t *s) {
  int expected = 0;
  if (IOC__LIKELY(atomic_compare_exchange_weak_explicit(&s->v, &expected, 1, memory_order_acquire,
                                                        memory_order_relaxed)))
    return;
  ioc__spin_lock_slow(s);
}
static inline void ioc__spin_unlock(ioc__spin_t *s) {
  atomic_store_explicit(&s->v, 0, memory_order_release);
}

#endif /* IOC_PLATFORM_H */
