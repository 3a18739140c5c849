/* idle_conns: open N TCP connections to a server and hold them idle; on
 * SIGTERM, SIGINT or SIGUSR1 report how many are still open, then exit.
 * Used by scripts/bench for "memory per idle
 * connection": the server's RSS is read before and while these are held.
 *
 *   cc -O2 -o idle_conns bench/idle_conns.c
 *   idle_conns HOST PORT N
 *
 * Prints "connected N" on stdout once every connect() has completed (the
 * caller waits for that line), then "alive M" at the end. Exits 1 if a
 * connection could not be made (the reason goes to stderr). Needs
 * RLIMIT_NOFILE above N: it raises its soft limit to the hard limit itself. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s HOST PORT N\n", argv[0]);
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]);
  long n = atol(argv[3]);
  if (port <= 0 || port > 65535 || n <= 0) {
    fprintf(stderr, "idle_conns: bad PORT or N\n");
    return 2;
  }

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      (rlim_t)n + 16 > rl.rlim_cur) {
    fprintf(stderr, "idle_conns: RLIMIT_NOFILE %lu is too low for %ld connections (ulimit -n)\n",
            (unsigned long)rl.rlim_cur, n);
    return 1;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: pause() returns */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    fprintf(stderr, "idle_conns: HOST must be an IPv4 address\n");
    return 2;
  }

  int *fds = calloc((size_t)n, sizeof *fds);
  if (!fds) return 1;
  for (long i = 0; i < n && !stop; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      fprintf(stderr, "idle_conns: socket #%ld: %s\n", i, strerror(errno));
      return 1;
    }
    /* blocking connect: returns once the handshake is done */
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
      fprintf(stderr, "idle_conns: connect #%ld: %s\n", i, strerror(errno));
      return 1;
    }
    fds[i] = fd;
    /* pace the burst a little so the server's accept queue never overflows
     * (an overflowed handshake completes only seconds later) */
    if (i % 256 == 255) {
      struct timespec ts = { 0, 2 * 1000 * 1000 };
      nanosleep(&ts, NULL);
    }
  }
  if (stop) return 1;
  printf("connected %ld\n", n);
  fflush(stdout);

  while (!stop) pause();

  /* count the connections the server has not closed */
  long alive = 0;
  for (long i = 0; i < n; i++) {
    struct pollfd p = { .fd = fds[i], .events = POLLIN | POLLRDHUP };
    int r = poll(&p, 1, 0);
    if (r == 0) {
      alive++;
    } else if (r == 1 && !(p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      char c;
      ssize_t got = recv(fds[i], &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (got > 0) alive++; /* the server said something but kept the connection */
    }
  }
  printf("alive %ld\n", alive);
  fflush(stdout);
  return 0;
}
