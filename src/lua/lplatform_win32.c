/* lplatform.h on Windows: slim reader/writer locks, an auto-reset event for
 * the run() waiter, and a console control handler in place of SIGINT/SIGTERM.
 *
 * Console events. Windows runs a console control handler on a thread of its
 * own when the console sees Ctrl-C, Ctrl-Break or its window closing (the
 * counterparts of SIGINT and SIGTERM; wine delivers a SIGINT sent to a wine
 * process as Ctrl-C). One handler serves the whole process: it is installed
 * the first time a waiter catches signals and stays installed, and it acts
 * on the waiters registered at that moment. With none registered it returns
 * FALSE, so the next handler — in the end the default one, which ends the
 * process — runs, just as a signal not caught keeps its default action.
 *
 * A console close ends the process as soon as the handlers return (Windows
 * gives them about 5 s). So for CTRL_CLOSE_EVENT the handler waits, at most
 * 4.5 s, for the registered waiters to let go of the signals — run() does
 * that after its graceful stop — before it returns; the script gets to run
 * what follows run() meanwhile. */
#ifdef _WIN32
#undef _WIN32_WINNT
#define _WIN32_WINNT 0x0601 /* TryAcquireSRWLockExclusive: Windows 7 and later */
#include "lplatform.h"

#include "iocore.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <windows.h>

/* ---- mutex ------------------------------------------------------------------
 * An SRW lock, not a CRITICAL_SECTION: a critical section is recursive, and
 * the binding relies on a try from the thread that already holds the Lua
 * lock failing (a handler that queues an event must not start draining the
 * queue from inside itself). */
struct lp_mutex {
  SRWLOCK l;
};

lp_mutex_t *lp_mutex_new(void) {
  lp_mutex_t *m = malloc(sizeof *m);
  if (m) InitializeSRWLock(&m->l);
  return m;
}

void lp_mutex_free(lp_mutex_t *m) { free(m); }
void lp_mutex_lock(lp_mutex_t *m) { AcquireSRWLockExclusive(&m->l); }
int lp_mutex_trylock(lp_mutex_t *m) { return TryAcquireSRWLockExclusive(&m->l) != 0; }
void lp_mutex_unlock(lp_mutex_t *m) { ReleaseSRWLockExclusive(&m->l); }

/* ---- the run() waiter ------------------------------------------------------- */

struct lp_waiter {
  HANDLE event;            /* auto-reset: set by a wake or a console event */
  volatile LONG woken;     /* lp_waiter_wake since the last wait */
  volatile LONG signalled; /* the console event pending since the last wait (0: none) */
  int caught;              /* registered with the console handler */
  int holding;             /* lp_waiter_hold_signals was called */
  lp_waiter_t *next;       /* in `catchers`, under `catch_lock` */
};

static SRWLOCK catch_lock = SRWLOCK_INIT;
static CONDITION_VARIABLE catchers_changed = CONDITION_VARIABLE_INIT;
static lp_waiter_t *catchers; /* waiters between catch_signals and release_signals */
static int handler_installed;
static int hold_users;          /* holding waiters, under catch_lock */
static volatile LONG held_event; /* an event that came with no catcher but a holder (type + 1) */

/* Runs on a thread Windows starts for the event. Each registered waiter
 * gets the event (its `signalled` holds the type plus one, so 0 stays
 * "nothing") and is woken; TRUE tells Windows the event was handled. */
static BOOL WINAPI console_handler(DWORD type) {
  if (type != CTRL_C_EVENT && type != CTRL_BREAK_EVENT && type != CTRL_CLOSE_EVENT) return FALSE;
  AcquireSRWLockExclusive(&catch_lock);
  if (!catchers) {
    /* Outside run(): held for the next run(), once; a second one (or a
     * console close, which cannot wait) gets the default action. */
    BOOL held = hold_users > 0 && type != CTRL_CLOSE_EVENT &&
                InterlockedCompareExchange(&held_event, (LONG)type + 1, 0) == 0;
    ReleaseSRWLockExclusive(&catch_lock);
    return held;
  }
  for (lp_waiter_t *w = catchers; w; w = w->next) {
    InterlockedExchange(&w->signalled, (LONG)type + 1);
    SetEvent(w->event);
  }
  if (type == CTRL_CLOSE_EVENT) {
    ULONGLONG deadline = GetTickCount64() + 4500;
    for (;;) {
      ULONGLONG now = GetTickCount64();
      if (!catchers || now >= deadline) break;
      SleepConditionVariableSRW(&catchers_changed, &catch_lock, (DWORD)(deadline - now), 0);
    }
  }
  ReleaseSRWLockExclusive(&catch_lock);
  return TRUE;
}

lp_waiter_t *lp_waiter_new(void) {
  lp_waiter_t *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->event = CreateEventW(NULL, FALSE, FALSE, NULL);
  if (!w->event) {
    free(w);
    return NULL;
  }
  return w;
}

void lp_waiter_free(lp_waiter_t *w) {
  if (!w) return;
  if (w->caught) lp_waiter_release_signals(w);
  if (w->holding) {
    AcquireSRWLockExclusive(&catch_lock);
    LONG pending = --hold_users == 0 ? InterlockedExchange(&held_event, 0) : 0;
    ReleaseSRWLockExclusive(&catch_lock);
    /* still held when the last holder goes: the default action, now */
    if (pending) ExitProcess(STATUS_CONTROL_C_EXIT);
  }
  CloseHandle(w->event);
  free(w);
}

void lp_waiter_wake(lp_waiter_t *w) {
  InterlockedExchange(&w->woken, 1);
  SetEvent(w->event);
}

int lp_waiter_wait(lp_waiter_t *w, int ms) {
  if (w->holding && InterlockedExchange(&held_event, 0)) return LP_SIGNAL;
  WaitForSingleObject(w->event, ms < 0 ? INFINITE : (DWORD)ms);
  /* Read the flags even after a time-out: a wake that raced with it is
   * reported now rather than by a spurious early return next time. */
  int got = 0;
  if (InterlockedExchange(&w->woken, 0)) got |= LP_WOKEN;
  if (InterlockedExchange(&w->signalled, 0)) got |= LP_SIGNAL;
  return got;
}

int lp_waiter_hold_signals(lp_waiter_t *w) {
  int rc = 0;
  AcquireSRWLockExclusive(&catch_lock);
  if (!handler_installed) handler_installed = SetConsoleCtrlHandler(console_handler, TRUE) != 0;
  if (!handler_installed) {
    rc = -1;
  } else if (!w->holding) {
    w->holding = 1;
    hold_users++;
  }
  ReleaseSRWLockExclusive(&catch_lock);
  return rc;
}

int lp_waiter_catch_signals(lp_waiter_t *w) {
  int rc = 0;
  AcquireSRWLockExclusive(&catch_lock);
  if (!handler_installed) handler_installed = SetConsoleCtrlHandler(console_handler, TRUE) != 0;
  if (!handler_installed) {
    rc = -1;
  } else if (!w->caught) {
    w->caught = 1;
    w->next = catchers;
    catchers = w;
  }
  ReleaseSRWLockExclusive(&catch_lock);
  return rc;
}

/* A Ctrl-C or Ctrl-Break that came after the last wait is handled now as if
 * it came just after run(), as a blocked SIGINT is on POSIX when it is
 * unblocked: held for the next run() if a waiter holds signals and none is
 * held yet (another run() still catching took it already), else the default
 * handler's ExitProcess(STATUS_CONTROL_C_EXIT). (A console close needs
 * nothing: the handler still waiting for us ends the process when it
 * returns.) */
void lp_waiter_release_signals(lp_waiter_t *w) {
  AcquireSRWLockExclusive(&catch_lock);
  if (!w->caught) {
    ReleaseSRWLockExclusive(&catch_lock);
    return;
  }
  for (lp_waiter_t **p = &catchers; *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      break;
    }
  }
  w->caught = 0;
  w->next = NULL;
  WakeAllConditionVariable(&catchers_changed);
  LONG pending = InterlockedExchange(&w->signalled, 0);
  bool fatal = false;
  if (pending == CTRL_C_EVENT + 1 || pending == CTRL_BREAK_EVENT + 1)
    fatal = !catchers && !(hold_users > 0 && InterlockedCompareExchange(&held_event, pending, 0) == 0);
  ReleaseSRWLockExclusive(&catch_lock);
  if (fatal) ExitProcess(STATUS_CONTROL_C_EXIT);
}

/* ---- time -------------------------------------------------------------------- */

void lp_sleep_ms(int ms) { Sleep(ms < 0 ? 0 : (DWORD)ms); }

uint64_t lp_coarse_ms(void) { return ioc_now_ms(); }
int lp_coarse_lag_ms(void) { return 0; }

#endif /* _WIN32 */

/* ---- child processes: no signal masks here, the C library's are right ---------- */

void lp_child_init(void) {}
int lp_child_needed(void) { return 0; }
long lp_child_spawn(const char *cmd, int mode, FILE **file) {
  (void)cmd;
  (void)mode;
  (void)file;
  return -ENOSYS;
}
int lp_child_wait(long pid, int *status) {
  (void)pid;
  (void)status;
  return -ENOSYS;
}
