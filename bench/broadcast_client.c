/* The broadcast benchmark's client (scripts/bench job 13): opens N
 * connections to bench/broadcast_server.lua, then runs R closed-loop
 * rounds: a "b" on connection 0, and wait until every connection has its
 * 1 KiB message. The server's CPU time (utime + stime of its pid, from
 * /proc) is read before the first and after the last round; prints
 *
 *   delivered=M secs=S msgs_per_s=R cpu_us_per_msg=C user_us_per_msg=U stats mode=...
 *
 * (user_us_per_msg: the part of that CPU time spent outside the kernel).
 *
 * with the server's own stats line ("q") at the end.
 *
 *   broadcast_client host port server_pid connections rounds
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 1024

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long sys_ticks_last;

static long long cpu_ticks(int pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  long long ut = 0, st = 0;
  /* fields after the name: state(3) ... utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lld %lld", &ut, &st) != 2) return -1;
  sys_ticks_last = st;
  return ut + st;
}

static void die(const char *what) {
  fprintf(stderr, "broadcast_client: %s: %s\n", what, strerror(errno));
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: broadcast_client host port server_pid connections rounds\n");
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]), pid = atoi(argv[3]), n = atoi(argv[4]), rounds = atoi(argv[5]);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("address");
  int *fd = calloc((size_t)n, sizeof *fd);
  long long *got = calloc((size_t)n, sizeof *got);
  int ep = epoll_create1(0);
  if (!fd || !got || ep < 0) die("setup");
  for (int i = 0; i < n; i++) {
    fd[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (fd[i] < 0 || connect(fd[i], (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
    int one = 1;
    setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  /* every connection a member: wait until a probe round reaches all */
  usleep(300 * 1000);
  for (int i = 0; i < n; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev) < 0) die("epoll_ctl");
  }
  char buf[65536];
  long long ticks0 = 0, sys0 = 0;
  double t0 = 0;
  int warm = 3;
  for (int r = 0; r < rounds + warm; r++) {
    if (r == warm) {
      ticks0 = cpu_ticks(pid);
      sys0 = sys_ticks_last;
      t0 = now_s();
    }
    if (write(fd[0], "b", 1) != 1) die("write");
    long long want = (long long)(r + 1) * MSG;
    int done = 0;
    for (int i = 0; i < n; i++) done += got[i] >= want;
    double deadline = now_s() + 30;
    while (done < n) {
      struct epoll_event evs[256];
      int k = epoll_wait(ep, evs, 256, 1000);
      if (k < 0 && errno != EINTR) die("epoll_wait");
      for (int j = 0; j < k; j++) {
        int i = (int)evs[j].data.u32;
        ssize_t m = read(fd[i], buf, sizeof buf);
        if (m <= 0) {
          fprintf(stderr, "broadcast_client: connection %d ended\n", i);
          return 1;
        }
        int before = got[i] >= want;
        got[i] += m;
        if (!before && got[i] >= want) done++;
      }
      if (now_s() > deadline) {
        fprintf(stderr, "broadcast_client: round %d: %d of %d copies in 30 s\n", r, done, n);
        return 1;
      }
    }
  }
  double secs = now_s() - t0;
  long long ticks = cpu_ticks(pid) - ticks0, sys = sys_ticks_last - sys0;
  double per = (double)ticks * 1e6 / (double)sysconf(_SC_CLK_TCK) / ((double)rounds * n);
  /* the server's stats line, on connection 0 after everything else */
  if (write(fd[0], "q", 1) != 1) die("write");
  char line[512];
  size_t len = 0;
  while (len < sizeof line - 1) {
    ssize_t m = read(fd[0], line + len, 1);
    if (m <= 0) break;
    if (line[len] == '\n') break;
    len++;
  }
  line[len] = 0;
  double user = (double)(ticks - sys) * 1e6 / (double)sysconf(_SC_CLK_TCK) / ((double)rounds * n);
  printf("delivered=%lld secs=%.3f msgs_per_s=%.0f cpu_us_per_msg=%.4f user_us_per_msg=%.4f %s\n", (long long)rounds * n,
         secs, secs > 0 ? (double)rounds * n / secs : 0.0, per, user, line);
  return 0;
}
