/* lplatform.h on Linux: pthread mutexes, an eventfd for stop(), a signalfd
 * for SIGINT/SIGTERM, poll() to wait on both. */
#ifndef _WIN32
#include "lplatform.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
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
};

lp_waiter_t *lp_waiter_new(void) {
  lp_waiter_t *w = malloc(sizeof *w);
  if (!w) return NULL;
  w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->sig_fd = -1;
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
  free(w);
}

void lp_waiter_wake(lp_waiter_t *w) {
  uint64_t one = 1;
  /* EAGAIN means the counter is already non-zero: the waiter wakes anyway. */
  while (write(w->wake_fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

int lp_waiter_wait(lp_waiter_t *w, int ms) {
  struct pollfd p[2] = {{w->wake_fd, POLLIN, 0}, {w->sig_fd, POLLIN, 0}};
  int n = poll(p, w->sig_fd >= 0 ? 2 : 1, ms);
  int got = 0;
  if (n <= 0) return 0;
  if (p[0].revents & POLLIN) {
    uint64_t v;
    if (read(w->wake_fd, &v, sizeof v) == (ssize_t)sizeof v) got |= LP_WOKEN;
  }
  if (w->sig_fd >= 0 && (p[1].revents & POLLIN)) {
    struct signalfd_siginfo si;
    while (read(w->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) got |= LP_SIGNAL;
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

#endif /* !_WIN32 */
