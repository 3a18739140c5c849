/* lplatform.h on Linux: pthread mutexes, an eventfd for stop(), a signalfd
 * for SIGINT/SIGTERM, poll() to wait on both. */
#ifndef _WIN32
#include "lplatform.h"

#include "iocore.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct lp_mutex {
  pthread_mutex_t m;
};

lp_mutex_t *lp_mutex_new(void) {
  lp_mutex_t *m = malloc(sizeof *m);
  if (m && pthread_mutex_init(&m->m, NULL) != 0) {
    free(m);
    m = NULL;
  }
  return m;
}

void lp_mutex_free(lp_mutex_t *m) {
  if (!m) return;
  pthread_mutex_destroy(&m->m);
  free(m);
}

void lp_mutex_lock(lp_mutex_t *m) { pthread_mutex_lock(&m->m); }
int lp_mutex_trylock(lp_mutex_t *m) { return pthread_mutex_trylock(&m->m) == 0; }
void lp_mutex_unlock(lp_mutex_t *m) { pthread_mutex_unlock(&m->m); }

struct lp_waiter {
  int wake_fd;   /* eventfd */
  int sig_fd;    /* signalfd while signals are caught, else -1 */
  sigset_t old;  /* the mask before lp_waiter_catch_signals */
  int holding;   /* lp_waiter_hold_signals was called */
};

/* ---- signals held outside run() ---------------------------------------------
 * A process-wide handler for SIGINT/SIGTERM, installed while some waiter holds
 * signals: it records the signal and writes an eventfd that every holding
 * waiter polls. During run() the signals are blocked and read from the
 * signalfd instead, so the handler only sees the ones that come outside. */
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static int hold_users;
static int hold_fd = -1;
static const int hold_sigs[2] = {SIGINT, SIGTERM};
static struct sigaction hold_old[2];
static int hold_installed[2];
static volatile sig_atomic_t held_sig;

static void hold_handler(int sig) {
  int saved = errno;
  if (held_sig) {
    /* A second one while the first is still held: the user means it. The
     * signal is blocked inside its own handler, so it lands on return. */
    signal(sig, SIG_DFL);
    raise(sig);
  } else {
    held_sig = sig;
    uint64_t one = 1;
    ssize_t r = write(hold_fd, &one, sizeof one);
    (void)r;
  }
  errno = saved;
}

int lp_waiter_hold_signals(lp_waiter_t *w) {
  if (w->holding) return 0;
  pthread_mutex_lock(&hold_lock);
  if (hold_users == 0) {
    hold_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (hold_fd < 0) {
      pthread_mutex_unlock(&hold_lock);
      return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hold_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 2; i++) {
      hold_installed[i] = 0;
      if (sigaction(hold_sigs[i], NULL, &hold_old[i]) != 0) continue;
      if (!(hold_old[i].sa_flags & SA_SIGINFO) && hold_old[i].sa_handler == SIG_IGN) continue;
      hold_installed[i] = sigaction(hold_sigs[i], &sa, NULL) == 0;
    }
  }
  hold_users++;
  w->holding = 1;
  pthread_mutex_unlock(&hold_lock);
  return 0;
}

/* The last holder gone: the old handlers come back, and a signal still held
 * gets its default action as if it had come now. */
static void unhold_signals(lp_waiter_t *w) {
  if (!w->holding) return;
  w->holding = 0;
  int sig = 0;
  pthread_mutex_lock(&hold_lock);
  if (--hold_users == 0) {
    for (int i = 0; i < 2; i++)
      if (hold_installed[i]) sigaction(hold_sigs[i], &hold_old[i], NULL);
    sig = held_sig;
    held_sig = 0;
    close(hold_fd);
    hold_fd = -1;
  }
  pthread_mutex_unlock(&hold_lock);
  if (sig) raise(sig);
}

/* Takes a held signal, if any: true once per signal, for one waiter. */
static int take_held_signal(const lp_waiter_t *w) {
  if (!w->holding || !held_sig) return 0;
  pthread_mutex_lock(&hold_lock);
  int sig = held_sig;
  held_sig = 0;
  pthread_mutex_unlock(&hold_lock);
  return sig != 0;
}

lp_waiter_t *lp_waiter_new(void) {
  lp_waiter_t *w = malloc(sizeof *w);
  if (!w) return NULL;
  w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->sig_fd = -1;
  w->holding = 0;
  if (w->wake_fd < 0) {
    free(w);
    return NULL;
  }
  return w;
}

void lp_waiter_free(lp_waiter_t *w) {
  if (!w) return;
  if (w->sig_fd >= 0) lp_waiter_release_signals(w);
  close(w->wake_fd);
  unhold_signals(w);
  free(w);
}

void lp_waiter_wake(lp_waiter_t *w) {
  uint64_t one = 1;
  /* EAGAIN means the counter is already non-zero: the waiter wakes anyway. */
  while (write(w->wake_fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

int lp_waiter_wait(lp_waiter_t *w, int ms) {
  struct pollfd p[3];
  int n = 0, sig_i = -1, hold_i = -1;
  p[n++] = (struct pollfd){w->wake_fd, POLLIN, 0};
  if (w->sig_fd >= 0) {
    sig_i = n;
    p[n++] = (struct pollfd){w->sig_fd, POLLIN, 0};
  }
  if (w->holding) { /* hold_fd stays open while this waiter holds */
    hold_i = n;
    p[n++] = (struct pollfd){hold_fd, POLLIN, 0};
  }
  int got = take_held_signal(w) ? LP_SIGNAL : 0;
  if (got) ms = 0;
  if (poll(p, (nfds_t)n, ms) <= 0) return got;
  if (p[0].revents & POLLIN) {
    uint64_t v;
    if (read(w->wake_fd, &v, sizeof v) == (ssize_t)sizeof v) got |= LP_WOKEN;
  }
  if (sig_i >= 0 && (p[sig_i].revents & POLLIN)) {
    struct signalfd_siginfo si;
    while (read(w->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) got |= LP_SIGNAL;
  }
  if (hold_i >= 0 && (p[hold_i].revents & POLLIN)) {
    uint64_t v;
    if (read(hold_fd, &v, sizeof v) < 0) { /* another waiter drained it */ }
    if (take_held_signal(w)) got |= LP_SIGNAL;
  }
  return got;
}

int lp_waiter_catch_signals(lp_waiter_t *w) {
  if (w->sig_fd >= 0) return 0;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &set, &w->old) != 0) return -1;
  w->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (w->sig_fd < 0) {
    pthread_sigmask(SIG_SETMASK, &w->old, NULL);
    return -1;
  }
  return 0;
}

void lp_waiter_release_signals(lp_waiter_t *w) {
  if (w->sig_fd < 0) return;
  close(w->sig_fd);
  w->sig_fd = -1;
  pthread_sigmask(SIG_SETMASK, &w->old, NULL);
}

void lp_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

#ifdef CLOCK_MONOTONIC_COARSE
/* The same clock as ioc_now_ms (CLOCK_MONOTONIC) as of the last tick, read
 * without the hardware counter, so never ahead of it. */
uint64_t lp_coarse_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One tick (its resolution), rounded up, plus 1 ms for the truncation of
 * both clocks to whole ms. */
int lp_coarse_lag_ms(void) {
  struct timespec res;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) < 0) return 1000; /* unknown: a wide margin */
  return (int)(res.tv_sec * 1000 + (res.tv_nsec + 999999) / 1000000) + 1;
}
#else
uint64_t lp_coarse_ms(void) { return ioc_now_ms(); }
int lp_coarse_lag_ms(void) { return 0; }
#endif

#endif /* !_WIN32 */

/* ---- child processes ------------------------------------------------------------ */

extern char **environ;

static sigset_t child_mask;
static int child_mask_set;

void lp_child_init(void) {
  if (child_mask_set) return;
  pthread_sigmask(SIG_BLOCK, NULL, &child_mask);
  child_mask_set = 1;
}

int lp_child_needed(void) {
  if (!child_mask_set) return 0;
  sigset_t now;
  if (pthread_sigmask(SIG_BLOCK, NULL, &now) != 0) return 0;
  for (int sig = 1; sig < NSIG; sig++)
    if (sigismember(&now, sig) != sigismember(&child_mask, sig)) return 1;
  return 0;
}

long lp_child_spawn(const char *cmd, int mode, FILE **file) {
  int p[2] = {-1, -1};
  if (mode) {
    if (pipe(p) != 0) return -errno;
    /* not inherited by other children (ours gets its end by dup2) */
    fcntl(p[0], F_SETFD, FD_CLOEXEC);
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
  }
  /* the child's end and the number it takes: 'r' its stdout, 'w' its stdin */
  int child_end = mode == 'r' ? p[1] : p[0], parent_end = mode == 'r' ? p[0] : p[1];
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  pid_t pid = -1;
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc == 0) {
    if ((rc = posix_spawnattr_init(&attr)) == 0) {
      if (mode) rc = posix_spawn_file_actions_adddup2(&fa, child_end, mode == 'r' ? 1 : 0);
      if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &child_mask);
      if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
      if (rc == 0) {
        char *argv[] = {(char *)"sh", (char *)"-c", (char *)cmd, NULL};
        rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
      }
      posix_spawnattr_destroy(&attr);
    }
    posix_spawn_file_actions_destroy(&fa);
  }
  if (mode) close(child_end);
  if (rc != 0) {
    if (mode) close(parent_end);
    return -rc;
  }
  if (mode && !(*file = fdopen(parent_end, mode == 'r' ? "r" : "w"))) {
    int e = errno;
    close(parent_end);
    int status;
    lp_child_wait(pid, &status);
    return -e;
  }
  return (long)pid;
}

int lp_child_wait(long pid, int *status) {
  for (;;) {
    if (waitpid((pid_t)pid, status, 0) >= 0) return 0;
    if (errno != EINTR) return -errno;
  }
}
