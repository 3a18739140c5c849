/* The Lua binding's portability layer: the few operating-system services the
 * binding needs besides iocore.h. lplatform_posix.c implements it with
 * pthread, eventfd, signalfd and poll; lplatform_win32.c with Windows
 * synchronisation objects and a console control handler. Nothing else in
 * src/lua/ includes a system header beyond the C library.
 *
 * Every function returns at once unless it says it waits. Objects are
 * opaque and heap-allocated, so this header needs no system header (only
 * the C library's stdio.h, for io.popen's FILE).
 */
#ifndef IOC_LPLATFORM_H
#define IOC_LPLATFORM_H

#include <stdint.h>
#include <stdio.h>

/* ---- mutex ------------------------------------------------------------------
 * A plain (non-recursive) mutex. The Lua lock is one: workers only ever
 * try it, the thread in run() also blocks on it. */
typedef struct lp_mutex lp_mutex_t;

/* Returns a new unlocked mutex, or NULL when out of memory. */
lp_mutex_t *lp_mutex_new(void);
/* Frees an unlocked mutex; NULL is ignored. */
void lp_mutex_free(lp_mutex_t *m);
void lp_mutex_lock(lp_mutex_t *m);
/* Returns 1 and holds the mutex if it was free, else 0 at once. */
int lp_mutex_trylock(lp_mutex_t *m);
void lp_mutex_unlock(lp_mutex_t *m);

/* ---- the run() waiter -------------------------------------------------------
 * The thread in core:run() sleeps on it; core:stop() (any thread) and, while
 * lp_waiter_catch_signals is in effect, SIGINT/SIGTERM (Windows: Ctrl-C,
 * Ctrl-Break, console close) wake it. One waiter per core; one thread waits
 * on it at a time. */
typedef struct lp_waiter lp_waiter_t;

#define LP_WOKEN 1  /* lp_waiter_wake was called since the last wait */
#define LP_SIGNAL 2 /* a stop signal arrived since the last wait */

/* Returns a new waiter, or NULL when the system refuses one. */
lp_waiter_t *lp_waiter_new(void);
/* Frees it (signals must not be caught by it any more); NULL is ignored. */
void lp_waiter_free(lp_waiter_t *w);
/* Wakes the waiting thread, or makes its next wait return at once. Safe from
 * any thread. */
void lp_waiter_wake(lp_waiter_t *w);
/* Waits at most ms milliseconds (-1: no limit) for a wake or a signal.
 * Returns LP_WOKEN and/or LP_SIGNAL for what happened (both are consumed),
 * or 0 when the time ran out. */
int lp_waiter_wait(lp_waiter_t *w, int ms);
/* From the calling thread until lp_waiter_release_signals: the stop signals
 * no longer end the process but wake this waiter with LP_SIGNAL. Threads
 * created meanwhile (the core's workers) must not receive them either
 * (POSIX: the signals are blocked in the calling thread, and workers inherit
 * the mask). Returns 0, or -1 if signals cannot be caught here. */
int lp_waiter_catch_signals(lp_waiter_t *w);
/* Gives the signals back as they were before lp_waiter_catch_signals. A
 * signal that arrived after the last wait is then handled as usual (by
 * default it ends the process), as if it had come just after run(). */
void lp_waiter_release_signals(lp_waiter_t *w);
/* From now until the waiter is freed, outside the catch above too: a stop
 * signal that arrives while no run() is catching signals (between the core's
 * creation and run(), or between two runs) is held, not fatal, and the next
 * wait of a holding waiter reports it as LP_SIGNAL, so the next run() stops
 * gracefully at once. A second signal while one is held ends the process
 * as usual (the way out of a script stuck before run()), and a signal still
 * held when the last holding waiter is freed gets its default action then.
 * Signals the process ignores (SIG_IGN) stay ignored. Nothing is inherited
 * by child processes (no signal mask changes). Returns 0, or -1. */
int lp_waiter_hold_signals(lp_waiter_t *w);

/* ---- child processes ---------------------------------------------------------
 * Worker threads block signals (the core's workers, and the stop signals
 * caught for run()), and a process inherits the signal mask of the thread
 * that starts it: a command a handler started with io.popen or os.execute
 * would ignore SIGTERM and SIGINT for its whole life. These start
 * `/bin/sh -c cmd` with the signal mask the process had when the module was
 * loaded instead. Windows has no signal masks: lp_child_needed is 0 there
 * and the others fail with -ENOSYS. */

/* Records the calling thread's signal mask as the one children get (once,
 * at module load, on the loading thread). */
void lp_child_init(void);
/* 1 when the calling thread's signal mask differs from that one (a worker),
 * so the C library's popen/system would hand the child a blocked mask. */
int lp_child_needed(void);
/* Starts /bin/sh -c cmd. mode 'r': *file reads its standard output; 'w':
 * *file writes its standard input; 0: no pipe (file unused). Returns the
 * child's id (> 0) or -errno (nothing left running). */
long lp_child_spawn(const char *cmd, int mode, FILE **file);
/* Waits for the child to end; *status gets its wait status. Returns 0 or
 * -errno. */
int lp_child_wait(long pid, int *status);

/* ---- time -------------------------------------------------------------------- */

/* Sleeps the calling thread for about ms milliseconds. */
void lp_sleep_ms(int ms);
/* A clock cheaper to read than ioc_now_ms, on its time base: it never runs
 * ahead of ioc_now_ms, and lags it by at most lp_coarse_lag_ms(). (Linux:
 * CLOCK_MONOTONIC_COARSE, the time of the last tick; elsewhere ioc_now_ms
 * itself, lag 0.) */
uint64_t lp_coarse_ms(void);
int lp_coarse_lag_ms(void);

#endif /* IOC_LPLATFORM_H */
