/* The broadcast benchmark's yardstick (scripts/bench job 13): the same
 * protocol as bench/broadcast_server.lua, served by plain C with epoll and
 * one write(2) per member per message, no library, no queue. What it costs
 * per delivered message is (nearly all) the kernel's TCP send, which any
 * server pays once per session.
 *
 *   broadcast_floor port
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
#include <unistd.h>

#define MAXFD 65536

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: broadcast_floor port\n");
    return 2;
  }
  static char msg[1024];
  memset(msg, 'm', sizeof msg - 1);
  msg[sizeof msg - 1] = '\n';
  static int list[MAXFD], at[MAXFD]; /* the members, and each one's index in list */
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)atoi(argv[1]));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 511) < 0) {
    perror("broadcast_floor: listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  printf("listening %s floor\n", argv[1]);
  fflush(stdout);
  long rounds = 0, members = 0, short_writes = 0;
  for (;;) {
    struct epoll_event evs[256];
    int k = epoll_wait(ep, evs, 256, -1);
    if (k < 0 && errno != EINTR) return 1;
    for (int j = 0; j < k; j++) {
      int fd = evs[j].data.fd;
      if (fd == lfd) {
        int c;
        while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (c >= MAXFD) {
            close(c);
            continue;
          }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
          at[c] = (int)members;
          list[members++] = c;
        }
        continue;
      }
      char buf[4096];
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) {
        if (n < 0 && errno == EAGAIN) continue;
        int i = at[fd];
        list[i] = list[--members];
        at[list[i]] = i;
        close(fd);
        continue;
      }
      for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == 'b') {
          for (long m = 0; m < members; m++)
            if (write(list[m], msg, sizeof msg) != (ssize_t)sizeof msg) short_writes++;
          rounds++;
        } else if (buf[i] == 'q') {
          char line[256];
          int len = snprintf(line, sizeof line,
                             "stats mode=floor rounds=%ld max_buffers=0 max_buffer_bytes=0 members=%ld short_writes=%ld\n",
                             rounds, members, short_writes);
          if (write(fd, line, (size_t)len) != len) short_writes++;
        }
      }
    }
  }
}
