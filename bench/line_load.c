/* line_load: the load of scripts/bench's line-echo job. C connections to a
 * line-echo server, each sending batches of B lines of L bytes (pipelined)
 * and waiting for their B echoed lines before the next batch, for S
 * seconds; every echoed byte is checked against what was sent.
 *
 *   cc -O2 -o line_load bench/line_load.c
 *   line_load HOST PORT C S [B [L]]      (defaults B = 16, L = 40)
 *
 * Prints "lines N seconds T errors E" on stdout (N: echoed lines counted,
 * T: the measured time). Exits 1 if nothing was echoed or an echo was
 * wrong (the reason goes to stderr). */
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

typedef struct conn {
  int fd;
  size_t sent;      /* bytes of the batch written */
  size_t got;       /* bytes of the batch's echo read */
} conn;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 5 || argc > 7) {
    fprintf(stderr, "usage: %s HOST PORT CONNS SECONDS [LINES_PER_BATCH [LINE_BYTES]]\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[2]), nconn = atoi(argv[3]);
  double secs = atof(argv[4]);
  int batch = argc > 5 ? atoi(argv[5]) : 16, line_len = argc > 6 ? atoi(argv[6]) : 40;
  if (port <= 0 || port > 65535 || nconn <= 0 || secs <= 0 || batch <= 0 || line_len < 1) {
    fprintf(stderr, "line_load: bad arguments\n");
    return 2;
  }
  /* one batch: B lines "<i mod 10 repeated L-1 times>x\n", the same for every connection */
  size_t blen = (size_t)batch * (size_t)(line_len + 1);
  char *msg = malloc(blen), *rbuf = malloc(blen);
  if (!msg || !rbuf) return 1;
  for (int i = 0; i < batch; i++) {
    char *l = msg + (size_t)i * (size_t)(line_len + 1);
    memset(l, '0' + i % 10, (size_t)line_len - 1);
    l[line_len - 1] = 'x';
    l[line_len] = '\n';
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
    fprintf(stderr, "line_load: bad HOST\n");
    return 2;
  }
  int ep = epoll_create1(0);
  conn *cs = calloc((size_t)nconn, sizeof *cs);
  if (ep < 0 || !cs) return 1;
  for (int i = 0; i < nconn; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      fprintf(stderr, "line_load: connect: %s\n", strerror(errno));
      return 1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cs[i].fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    /* blocking sockets: a batch is far below the socket buffers */
    if (write(fd, msg, blen) != (ssize_t)blen) {
      fprintf(stderr, "line_load: write: %s\n", strerror(errno));
      return 1;
    }
  }
  long long lines = 0, errors = 0;
  double start = now_s(), end = start + secs;
  struct epoll_event evs[64];
  while (now_s() < end) {
    int n = epoll_wait(ep, evs, 64, 100);
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      ssize_t r = read(c->fd, rbuf, blen - c->got);
      if (r <= 0) {
        fprintf(stderr, "line_load: the server closed a connection (%s)\n", r < 0 ? strerror(errno) : "EOF");
        return 1;
      }
      if (memcmp(rbuf, msg + c->got, (size_t)r) != 0) errors++;
      c->got += (size_t)r;
      if (c->got == blen) {
        lines += batch;
        c->got = 0;
        if (write(c->fd, msg, blen) != (ssize_t)blen) {
          fprintf(stderr, "line_load: write: %s\n", strerror(errno));
          return 1;
        }
      }
    }
  }
  double took = now_s() - start;
  printf("lines %lld seconds %.3f errors %lld\n", lines, took, errors);
  for (int i = 0; i < nconn; i++) close(cs[i].fd);
  return lines > 0 && errors == 0 ? 0 : 1;
}
