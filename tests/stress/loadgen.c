/* loadgen: the stress suite's client. One thread, epoll, non-blocking
 * sockets, thousands of connections to one server (tests/stress/server.lua).
 *
 *   loadgen MODE --addr 127.0.0.1:PORT [--key value ...]
 *
 * Every connection starts with a one-line header that tells the server what
 * to do with it (see server.lua): "E\n" echo, "B <n>\n" send n bytes of
 * records, "S <count> <size> <action> <burst>\n" accounted sends, ... The
 * echo streams are pseudo-random bytes from a counter-based generator seeded
 * per connection, so any byte of any stream can be regenerated to check what
 * comes back: a lost, duplicated, reordered or corrupted byte is caught at
 * the first byte it affects. A checksum (FNV-1a) of what was sent and of what
 * came back is compared per connection as well.
 *
 * Modes (each ends with one line "LOADGEN mode=... key=value ..." on stdout,
 * preceded by up to 20 "ERROR ..." lines; exit 0 when the mode's own checks
 * passed, 1 otherwise; the test driver asserts on the values):
 *
 *   echo       --conns N --duration S [--window B] [--seed X]
 *              N echo streams of messages 1 B..64 KiB (log-uniform sizes),
 *              at most --window bytes unanswered per connection, for S
 *              seconds; then every connection waits for its last byte,
 *              shuts down its write side and expects a clean EOF.
 *   halfclose  --conns N --size B   N connections each send B bytes, shut
 *              down their write side at once, and expect the whole echo,
 *              then EOF (not a reset).
 *   slowloris  --conns N --idle MS --duration S   N connections trickle a
 *              header one byte at a time (at 0, at idle/2, then every
 *              3*idle); each must be closed by the server between idle and
 *              idle + 1 s after its last byte. Meanwhile one normal echo
 *              client pings every 100 ms.
 *   storm      --conns N --duration S   N clients connect at once and,
 *              whenever closed before the server's greeting, reconnect after
 *              100..300 ms; a greeted client holds its connection. Counts
 *              greeted / closed-before-greeting / stuck (connected, neither
 *              greeted nor closed within 2 s). At the end every connection is
 *              closed and a new client must be greeted within 1 s.
 *   resets     --total N --concurrency C   N connections reset (SO_LINGER
 *              0) at one of four moments: right after connect (during
 *              accept), after sending (during recv), while the server sends
 *              ("B"), and with the server's sends queued. Every 100 resets a
 *              new echo client must be served within 2 s.
 *   hold       --conns N --size B [--rcvbuf B] [--big K --big-size BB]
 *              N connections ask for B bytes ("B"; the first K of them for
 *              BB bytes, more than the kernel buffers, so it waits in the
 *              server's queues) and read nothing until SIGUSR1 (or
 *              --go-after MS), then read to EOF; every connection must get
 *              all its bytes of valid records, then a clean EOF. Prints
 *              "READY" once all are connected and have sent their request.
 *   accounted  --count N --size B --action close|abort|none --wait MS
 *              [--then drain|reset] one connection asks the server for N
 *              sends of B-byte records, reads nothing for MS ms, then reads
 *              everything to EOF/reset (drain) or resets at once (reset).
 *              Reports the records it got (strictly increasing indices,
 *              content checked) and a hash of their indices.
 *   probe      [--header H] [--timeout MS]   one new connection, one echo
 *              round trip: result=served|refused|closed|timeout|error.
 *   ping       --duration S [--interval MS]   one echo connection, a 16-byte
 *              round trip every interval; reports the slowest round trip.
 *   trigger    --header H [--timeout MS]   sends H and waits until the server
 *              closes the connection; reports how long that took.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- options ----------------------------------------------------------------- */

static struct {
  const char *mode;
  struct sockaddr_in addr;
  int conns;
  double duration;
  uint64_t seed;
  uint64_t window;
  uint64_t size;
  uint64_t count;
  int idle;
  int total;
  int concurrency;
  int rcvbuf;
  int go_after;
  int wait;
  int interval;
  int timeout;
  const char *action;
  const char *then;
  const char *header;
  int burst;
  int big;
  uint64_t big_size;
} O;

static int errors_shown;
static int errors_total;
static void report_error(const char *fmt, ...) {
  errors_total++;
  if (errors_shown >= 20) return;
  errors_shown++;
  va_list ap;
  va_start(ap, fmt);
  printf("ERROR ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  fflush(stdout);
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

/* ---- time, randomness, streams --------------------------------------------------- */

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
static uint64_t now_ms(void) { return now_us() / 1000u; }

static uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

static uint64_t rng_next(uint64_t *s) {
  *s += 0x9E3779B97F4A7C15ull;
  return mix64(*s);
}

/* Byte `pos` of stream `seed`, any range of it, in any order. */
static void stream_fill(uint64_t seed, uint64_t pos, unsigned char *out, size_t n) {
  while (n > 0) {
    uint64_t v = mix64(seed ^ ((pos >> 3) * 0xD6E8FEB86659FD93ull));
    unsigned off = (unsigned)(pos & 7);
    size_t take = 8 - off < n ? 8 - off : n;
    unsigned char b[8];
    memcpy(b, &v, 8);
    memcpy(out, b + off, take);
    out += take;
    pos += take;
    n -= take;
  }
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001B3ull;
  }
  return h;
}
#define FNV_INIT 0xCBF29CE484222325ull

/* Records, as server.lua makes them: "R" + 9-digit index + "|" + filler
 * where filler byte j is 'a' + (index % 26 + j) % 26. */
#define REC_HDR 11
static int rec_byte_ok(uint64_t index, size_t j, unsigned char c) {
  return c == (unsigned char)('a' + (index % 26 + j) % 26);
}

/* The index hash both sides compute: xor of index * golden ratio. */
static uint64_t index_hash(uint64_t h, uint64_t i) { return h ^ (i * 0x9E3779B97F4A7C15ull); }

/* A parser for a stream of fixed-size records. */
typedef struct recparse {
  uint64_t size;    /* record size */
  uint64_t pos;     /* bytes consumed */
  char hdr[REC_HDR];
  uint64_t index;   /* index of the record being read */
  uint64_t records; /* complete records */
  int64_t last;     /* last index seen, -1 none */
  uint64_t hash;
  uint64_t bad;
  int cyclic;       /* indices repeat every `cyclic` records from 0 ("B") */
  uint64_t cycle;
} recparse_t;

static void rec_init(recparse_t *r, uint64_t size, uint64_t cycle) {
  memset(r, 0, sizeof *r);
  r->size = size;
  r->last = -1;
  r->cycle = cycle;
  r->cyclic = cycle > 0;
}

static void rec_feed(recparse_t *r, const unsigned char *p, size_t n) {
  for (size_t k = 0; k < n; k++, r->pos++) {
    uint64_t off = r->pos % r->size;
    unsigned char c = p[k];
    if (off < REC_HDR) {
      r->hdr[off] = (char)c;
      if (off == REC_HDR - 1) {
        char digits[10];
        memcpy(digits, r->hdr + 1, 9);
        digits[9] = 0;
        char *end;
        unsigned long long v = strtoull(digits, &end, 10);
        if (r->hdr[0] != 'R' || r->hdr[10] != '|' || *end) {
          if (r->bad++ < 3) report_error("record at byte %llu: bad header", (unsigned long long)(r->pos - off));
          v = 0;
        }
        r->index = v;
        uint64_t want;
        if (r->cyclic) {
          want = r->records % r->cycle;
          if (v != want && r->bad++ < 3)
            report_error("record %llu: index %llu, expected %llu", (unsigned long long)r->records, v,
                         (unsigned long long)want);
        } else if ((int64_t)v <= r->last) {
          if (r->bad++ < 3)
            report_error("record %llu: index %llu after %lld (duplicate or out of order)",
                         (unsigned long long)r->records, v, (long long)r->last);
        }
      }
    } else if (!rec_byte_ok(r->index, (size_t)(off - REC_HDR), c)) {
      if (r->bad++ < 3)
        report_error("record index %llu: byte %llu corrupt", (unsigned long long)r->index,
                     (unsigned long long)off);
    }
    if (off == r->size - 1) {
      r->records++;
      r->last = (int64_t)r->index;
      r->hash = index_hash(r->hash, r->index);
    }
  }
}

/* ---- sockets ---------------------------------------------------------------------- */

static int ep;
static unsigned char scratch[1 << 16];
static unsigned char expect_buf[1 << 16];

enum { C_FREE, C_CONNECTING, C_OPEN, C_CLOSED };

typedef struct conn {
  int fd;
  int idx;
  int state;
  int role;      /* mode-specific */
  int phase;     /* mode-specific */
  int wants_out; /* EPOLLOUT registered */
  int wr_shut;   /* we shut down our write side */
  int done;
  int failed;
  char out[128];
  size_t out_len, out_off;
  uint64_t seed;
  uint64_t szrng;
  uint64_t sp, rp, msg_end, total;
  uint64_t h_sent, h_recv;
  uint64_t t_start, t_connected, t_last_send, t_next, t_deadline, t_ping;
  uint64_t recv_bytes;
  recparse_t rec;
} conn_t;

static int conn_open(conn_t *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (O.rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &O.rcvbuf, sizeof O.rcvbuf);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc = connect(fd, (struct sockaddr *)&O.addr, sizeof O.addr);
  if (rc < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    return -e;
  }
  c->fd = fd;
  c->state = C_CONNECTING;
  c->t_start = now_ms();
  c->wants_out = 1;
  c->wr_shut = 0;
  c->out_len = c->out_off = 0;
  struct epoll_event ev = {EPOLLIN | EPOLLOUT | EPOLLRDHUP, {.ptr = c}};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
  return 0;
}

static void want_out(conn_t *c, int on) {
  if (c->wants_out == on || c->fd < 0) return;
  c->wants_out = on;
  struct epoll_event ev = {EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), {.ptr = c}};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_close(conn_t *c, int rst) {
  if (c->fd < 0) return;
  if (rst) {
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
  c->state = C_CLOSED;
}

/* Result of a finished connect: 0 or -errno. */
static int connect_result(conn_t *c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
  return -err;
}

static void set_header(conn_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(c->out, sizeof c->out, fmt, ap);
  va_end(ap);
  c->out_len = n < 0 ? 0 : (size_t)n;
  c->out_off = 0;
}

/* Writes what is left of c->out. 1 done, 0 would block, -errno. */
static int flush_out(conn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN) return 0;
      return -errno;
    }
    c->out_off += (size_t)w;
  }
  return 1;
}

/* Writes stream bytes [sp, limit). 1 done, 0 would block, -errno. */
static int write_stream(conn_t *c, uint64_t limit) {
  while (c->sp < limit) {
    size_t n = limit - c->sp;
    if (n > 16384) n = 16384;
    stream_fill(c->seed, c->sp, scratch, n);
    ssize_t w = send(c->fd, scratch, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN) return 0;
      return -errno;
    }
    c->h_sent = fnv1a(c->h_sent, scratch, (size_t)w);
    c->sp += (uint64_t)w;
    c->t_last_send = now_ms();
    if ((size_t)w < n) return 0;
  }
  return 1;
}

/* Reads stream echo; checks every byte. Returns bytes read (>0), 0 at EOF,
 * -EAGAIN, or -errno. Mismatches are counted in *bad. */
static long read_stream(conn_t *c, uint64_t *bad) {
  ssize_t r = recv(c->fd, scratch, sizeof scratch, 0);
  if (r < 0) return -errno;
  if (r == 0) return 0;
  if (c->rp + (uint64_t)r > c->sp) {
    report_error("conn %d: %llu bytes back, only %llu sent (duplicated bytes)", c->idx,
                 (unsigned long long)(c->rp + (uint64_t)r), (unsigned long long)c->sp);
    (*bad)++;
    c->failed = 1;
  }
  stream_fill(c->seed, c->rp, expect_buf, (size_t)r);
  if (memcmp(scratch, expect_buf, (size_t)r) != 0) {
    size_t k = 0;
    while (k < (size_t)r && scratch[k] == expect_buf[k]) k++;
    if (!c->failed)
      report_error("conn %d: stream byte %llu differs (lost, duplicated, reordered or corrupt)", c->idx,
                   (unsigned long long)(c->rp + k));
    (*bad)++;
    c->failed = 1;
  }
  c->h_recv = fnv1a(c->h_recv, scratch, (size_t)r);
  c->rp += (uint64_t)r;
  return r;
}

static void parse_addr(const char *s) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host) die("bad --addr %s", s);
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  memset(&O.addr, 0, sizeof O.addr);
  O.addr.sin_family = AF_INET;
  O.addr.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &O.addr.sin_addr) != 1) die("bad --addr %s", s);
}

static conn_t *conns;
static int nconns;

static conn_t *alloc_conns(int n) {
  conns = calloc((size_t)n, sizeof *conns);
  if (!conns) die("out of memory");
  nconns = n;
  for (int i = 0; i < n; i++) {
    conns[i].fd = -1;
    conns[i].idx = i;
    conns[i].state = C_FREE;
    conns[i].h_sent = conns[i].h_recv = FNV_INIT;
    conns[i].seed = mix64(O.seed * 1000003u + (uint64_t)i);
    conns[i].szrng = mix64(conns[i].seed ^ 0x5A5A5A5Aull);
  }
  return conns;
}

/* Runs epoll until done() says so or the deadline passes; on_event for each
 * readiness, tick every ~5 ms. Returns 0, or -1 on the deadline. */
typedef void (*event_fn)(conn_t *c, uint32_t ev);
typedef int (*done_fn)(uint64_t now);
typedef void (*tick_fn)(uint64_t now);

static int loop(event_fn on_event, tick_fn tick, done_fn done, uint64_t deadline_ms) {
  struct epoll_event evs[512];
  uint64_t next_tick = 0;
  for (;;) {
    uint64_t now = now_ms();
    if (now >= next_tick) {
      if (tick) tick(now);
      next_tick = now + 5;
    }
    if (done(now)) return 0;
    if (now >= deadline_ms) return -1;
    int n = epoll_wait(ep, evs, 512, 5);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
  }
}

/* ---- echo and halfclose ---------------------------------------------------------------- */

static struct {
  int sending;
  uint64_t connected, connect_failed, ok, msgs, bytes_sent, bytes_recv, mismatches, unexpected_closes,
      resets, hash_mismatch, short_reply, stalled;
} E;

static uint64_t msg_size(conn_t *c) {
  uint64_t x = rng_next(&c->szrng);
  unsigned bits = (unsigned)(x % 17);
  return 1 + ((x >> 8) % (1ull << bits));
}

static int is_halfclose(void) { return !strcmp(O.mode, "halfclose"); }

static void echo_fail(conn_t *c, const char *what, int err) {
  if (c->done) return;
  if (err == -ECONNRESET || err == -EPIPE) E.resets++;
  E.unexpected_closes++;
  report_error("conn %d: %s (%s) after %llu of %llu bytes echoed", c->idx, what, err ? strerror(-err) : "EOF",
               (unsigned long long)c->rp, (unsigned long long)c->sp);
  c->done = 1;
  c->failed = 1;
  conn_close(c, 0);
}

static void echo_pump(conn_t *c) {
  if (c->state != C_OPEN || c->done) return;
  int rc = flush_out(c);
  if (rc < 0) return echo_fail(c, "send failed", rc);
  if (rc == 0) return want_out(c, 1);
  for (;;) {
    if (c->sp == c->msg_end) {
      if (is_halfclose()) {
        if (!c->wr_shut) {
          shutdown(c->fd, SHUT_WR);
          c->wr_shut = 1;
        }
        break;
      }
      if (!E.sending || c->sp - c->rp >= O.window) break;
      c->msg_end += msg_size(c);
      E.msgs++;
    }
    rc = write_stream(c, c->msg_end);
    if (rc < 0) return echo_fail(c, "send failed", rc);
    if (rc == 0) return want_out(c, 1);
  }
  want_out(c, 0);
  /* the run is over and everything came back: our FIN */
  if (!is_halfclose() && !E.sending && c->rp == c->sp && c->sp == c->msg_end && !c->wr_shut) {
    shutdown(c->fd, SHUT_WR);
    c->wr_shut = 1;
  }
}

static void echo_event(conn_t *c, uint32_t ev) {
  if (c->state == C_CONNECTING) {
    int rc = connect_result(c);
    if (rc < 0) {
      E.connect_failed++;
      report_error("conn %d: connect: %s", c->idx, strerror(-rc));
      c->done = c->failed = 1;
      conn_close(c, 0);
      return;
    }
    c->state = C_OPEN;
    E.connected++;
    set_header(c, "E\n");
    if (is_halfclose()) {
      c->msg_end = O.size;
      E.msgs++;
    }
  }
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
    for (;;) {
      long r = read_stream(c, &E.mismatches);
      if (r == -EAGAIN) break;
      if (r < 0) return echo_fail(c, "reset", (int)r);
      if (r == 0) {
        if (!c->wr_shut) return echo_fail(c, "closed by the server", 0);
        if (c->rp != c->sp) {
          E.short_reply++;
          return echo_fail(c, "EOF before the whole echo", 0);
        }
        if (c->h_recv != c->h_sent) {
          E.hash_mismatch++;
          report_error("conn %d: checksum of the echo differs", c->idx);
          c->failed = 1;
        }
        if (!c->failed) E.ok++;
        c->done = 1;
        conn_close(c, 0);
        return;
      }
    }
  }
  echo_pump(c);
}

static void echo_tick(uint64_t now) {
  (void)now;
  /* connections whose window opened again start their next message */
  for (int i = 0; i < nconns; i++)
    if (conns[i].state == C_OPEN && !conns[i].done) echo_pump(&conns[i]);
}

static int echo_all_done(uint64_t now) {
  (void)now;
  for (int i = 0; i < nconns; i++)
    if (!conns[i].done) return 0;
  return 1;
}

static int echo_never(uint64_t now) {
  (void)now;
  return 0;
}

static int mode_echo(void) {
  alloc_conns(O.conns);
  E.sending = !is_halfclose();
  /* connect at most 128 at a time: a burst bigger than the backlog would
   * only measure SYN retransmission */
  for (int i = 0; i < nconns;) {
    int started = 0;
    for (; i < nconns && started < 128; i++, started++) {
      int rc = conn_open(&conns[i]);
      if (rc < 0) {
        E.connect_failed++;
        conns[i].done = conns[i].failed = 1;
        report_error("conn %d: socket/connect: %s", i, strerror(-rc));
      }
    }
    uint64_t until = now_ms() + 5;
    loop(echo_event, NULL, echo_never, until);
  }
  uint64_t t0 = now_ms();
  if (!is_halfclose()) {
    loop(echo_event, echo_tick, echo_never, t0 + (uint64_t)(O.duration * 1000));
    E.sending = 0;
    echo_tick(now_ms());
  }
  uint64_t drain_limit = (uint64_t)(O.timeout > 0 ? O.timeout : 30000);
  if (loop(echo_event, echo_tick, echo_all_done, now_ms() + drain_limit) < 0) {
    for (int i = 0; i < nconns; i++) {
      conn_t *c = &conns[i];
      if (c->done) continue;
      E.stalled++;
      report_error("conn %d: stalled: %llu sent, %llu echoed, write side %s", i, (unsigned long long)c->sp,
                   (unsigned long long)c->rp, c->wr_shut ? "shut" : "open");
      c->done = c->failed = 1;
      conn_close(c, 0);
    }
  }
  for (int i = 0; i < nconns; i++) {
    E.bytes_sent += conns[i].sp;
    E.bytes_recv += conns[i].rp;
  }
  printf("LOADGEN mode=%s conns=%d connected=%llu ok=%llu msgs=%llu bytes_sent=%llu bytes_recv=%llu "
         "mismatches=%llu unexpected_closes=%llu resets=%llu short=%llu hash_mismatch=%llu stalled=%llu "
         "connect_failed=%llu secs=%.1f errors=%d\n",
         O.mode, O.conns, (unsigned long long)E.connected, (unsigned long long)E.ok, (unsigned long long)E.msgs,
         (unsigned long long)E.bytes_sent, (unsigned long long)E.bytes_recv, (unsigned long long)E.mismatches,
         (unsigned long long)E.unexpected_closes, (unsigned long long)E.resets, (unsigned long long)E.short_reply,
         (unsigned long long)E.hash_mismatch, (unsigned long long)E.stalled, (unsigned long long)E.connect_failed,
         (now_ms() - t0) / 1000.0, errors_total);
  return E.ok == (uint64_t)O.conns && errors_total == 0 ? 0 : 1;
}

/* ---- a probe: one echo round trip on a connection of its own --------------------------- */

/* A small state machine used by several modes: connects, sends "E\n" and 16
 * stream bytes, waits for them back. role=1 marks a probe connection. */
typedef struct probe_stats {
  uint64_t started, served, failed, max_ms;
  int active;
} probe_stats_t;

static void probe_start(conn_t *c, probe_stats_t *ps) {
  memset(c, 0, sizeof *c);
  c->fd = -1;
  c->idx = -1;
  c->role = 1;
  c->seed = mix64(O.seed ^ now_us());
  c->h_sent = c->h_recv = FNV_INIT;
  ps->started++;
  ps->active = 1;
  int rc = conn_open(c);
  if (rc < 0) {
    ps->failed++;
    ps->active = 0;
    report_error("probe: connect: %s", strerror(-rc));
    return;
  }
  c->t_deadline = now_ms() + 2000;
}

static void probe_end(conn_t *c, probe_stats_t *ps, int ok, const char *why) {
  uint64_t ms = now_ms() - c->t_start;
  if (ok) {
    ps->served++;
    if (ms > ps->max_ms) ps->max_ms = ms;
  } else {
    ps->failed++;
    report_error("probe: %s after %llu ms", why, (unsigned long long)ms);
  }
  ps->active = 0;
  conn_close(c, 0);
}

static void probe_event(conn_t *c, uint32_t ev, probe_stats_t *ps) {
  if (c->state == C_CONNECTING) {
    int rc = connect_result(c);
    if (rc < 0) return probe_end(c, ps, 0, strerror(-rc));
    c->state = C_OPEN;
    set_header(c, "E\n");
    c->msg_end = 16;
  }
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
    uint64_t bad = 0;
    long r = read_stream(c, &bad);
    if (bad) return probe_end(c, ps, 0, "wrong bytes");
    if (r == 0) return probe_end(c, ps, 0, "closed by the server");
    if (r < 0 && r != -EAGAIN) return probe_end(c, ps, 0, strerror((int)-r));
    if (c->rp == 16) return probe_end(c, ps, 1, NULL);
  }
  int rc = flush_out(c);
  if (rc > 0) rc = write_stream(c, c->msg_end);
  if (rc < 0) return probe_end(c, ps, 0, strerror(-rc));
  want_out(c, rc == 0);
}

static void probe_tick(conn_t *c, probe_stats_t *ps, uint64_t now) {
  if (ps->active && now > c->t_deadline) probe_end(c, ps, 0, "no echo within 2 s");
}

/* ---- slowloris --------------------------------------------------------------------------- */

static struct {
  uint64_t connected, closed, not_closed, connect_failed, early, late, got_data, pings, ping_fail;
  uint64_t max_after, min_after;
  conn_t ping;
  uint64_t ping_next, ping_sent_at;
  int ping_waiting;
} SL;

static void slow_send_byte(conn_t *c, uint64_t now) {
  char b = 'x';
  ssize_t w = send(c->fd, &b, 1, MSG_NOSIGNAL);
  if (w == 1) {
    c->t_last_send = now;
    c->phase++;
  }
  /* EPIPE/ECONNRESET: closed under us; the read side reports it */
}

static void slow_closed(conn_t *c, uint64_t now, int err) {
  (void)err;
  uint64_t after = now - c->t_last_send;
  SL.closed++;
  if (after > SL.max_after) SL.max_after = after;
  if (after < SL.min_after) SL.min_after = after;
  if (after + 150 < (uint64_t)O.idle) {
    SL.early++;
    report_error("slow conn %d closed %llu ms after its last byte (idle_timeout %d)", c->idx,
                 (unsigned long long)after, O.idle);
  } else if (after > (uint64_t)O.idle + 1000) {
    SL.late++;
    report_error("slow conn %d closed %llu ms after its last byte (idle_timeout %d + 1 s)", c->idx,
                 (unsigned long long)after, O.idle);
  }
  c->done = 1;
  conn_close(c, 0);
}

static void ping_event(conn_t *c, uint32_t ev) {
  if (c->state == C_CONNECTING) {
    int rc = connect_result(c);
    if (rc < 0) {
      SL.ping_fail++;
      report_error("ping: connect: %s", strerror(-rc));
      c->done = 1;
      conn_close(c, 0);
      return;
    }
    c->state = C_OPEN;
    set_header(c, "E\n");
  }
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
    for (;;) {
      uint64_t bad = 0;
      long r = read_stream(c, &bad);
      if (bad) SL.ping_fail++;
      if (r == -EAGAIN) break;
      if (r <= 0) {
        SL.ping_fail++;
        report_error("ping connection closed: %s", r == 0 ? "EOF" : strerror((int)-r));
        c->done = 1;
        conn_close(c, 0);
        return;
      }
    }
    if (SL.ping_waiting && c->rp == c->sp) {
      uint64_t rtt = now_ms() - SL.ping_sent_at;
      SL.pings++;
      if (rtt > c->t_ping) c->t_ping = rtt;
      SL.ping_waiting = 0;
    }
  }
  int rc = flush_out(c);
  if (rc > 0) rc = write_stream(c, c->msg_end);
  if (rc < 0) {
    SL.ping_fail++;
    c->done = 1;
    conn_close(c, 0);
    return;
  }
  want_out(c, rc == 0);
}

static void ping_tick(conn_t *c, uint64_t now, int interval) {
  if (c->state != C_OPEN || c->done) return;
  if (SL.ping_waiting) {
    if (now - SL.ping_sent_at > 2000) {
      SL.ping_fail++;
      report_error("ping: no echo within 2 s");
      SL.ping_waiting = 0;
      c->done = 1;
      conn_close(c, 0);
    }
    return;
  }
  if (now < SL.ping_next) return;
  SL.ping_next = now + (uint64_t)interval;
  SL.ping_sent_at = now;
  SL.ping_waiting = 1;
  c->msg_end += 16;
  ping_event(c, 0);
}

static void slow_event(conn_t *c, uint32_t ev) {
  if (c->role == 2) return ping_event(c, ev);
  uint64_t now = now_ms();
  if (c->state == C_CONNECTING) {
    int rc = connect_result(c);
    if (rc < 0) {
      SL.connect_failed++;
      report_error("slow conn %d: connect: %s", c->idx, strerror(-rc));
      c->done = 1;
      conn_close(c, 0);
      return;
    }
    c->state = C_OPEN;
    SL.connected++;
    want_out(c, 0);
    slow_send_byte(c, now);
    c->t_next = now + (uint64_t)O.idle / 2;
  }
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
    ssize_t r = recv(c->fd, scratch, sizeof scratch, 0);
    if (r > 0) {
      SL.got_data++;
      report_error("slow conn %d: the server sent %zd bytes", c->idx, r);
    } else if (r == 0 || (r < 0 && errno != EAGAIN)) {
      slow_closed(c, now, r == 0 ? 0 : errno);
    }
  }
}

static void slow_tick(uint64_t now) {
  for (int i = 0; i < nconns; i++) {
    conn_t *c = &conns[i];
    if (c->state != C_OPEN || c->done) continue;
    if (now >= c->t_next) {
      slow_send_byte(c, now);
      c->t_next = now + 3 * (uint64_t)O.idle;
    }
  }
  ping_tick(&SL.ping, now, O.interval > 0 ? O.interval : 100);
}

static int slow_done(uint64_t now) {
  (void)now;
  for (int i = 0; i < nconns; i++)
    if (!conns[i].done) return 0;
  return 1;
}

static int mode_slowloris(void) {
  if (O.idle <= 0) die("slowloris needs --idle MS");
  alloc_conns(O.conns);
  SL.min_after = UINT64_MAX;
  memset(&SL.ping, 0, sizeof SL.ping);
  SL.ping.fd = -1;
  SL.ping.role = 2;
  SL.ping.seed = mix64(O.seed ^ 77);
  SL.ping.h_sent = SL.ping.h_recv = FNV_INIT;
  if (conn_open(&SL.ping) < 0) die("ping connect failed");
  uint64_t t0 = now_ms();
  for (int i = 0; i < nconns;) {
    int started = 0;
    for (; i < nconns && started < 128; i++, started++) {
      int rc = conn_open(&conns[i]);
      if (rc < 0) {
        SL.connect_failed++;
        conns[i].done = 1;
        report_error("slow conn %d: %s", i, strerror(-rc));
      }
    }
    loop(slow_event, slow_tick, echo_never, now_ms() + 5);
  }
  uint64_t limit = (uint64_t)(O.duration > 0 ? O.duration * 1000 : 10.0 * O.idle + 10000);
  loop(slow_event, slow_tick, slow_done, t0 + limit);
  /* keep pinging a little after the last slow connection went away */
  uint64_t until = now_ms() + 300;
  loop(slow_event, slow_tick, echo_never, until);
  for (int i = 0; i < nconns; i++) {
    if (!conns[i].done) {
      SL.not_closed++;
      if (SL.not_closed <= 3) report_error("slow conn %d still open after %.1f s", i, limit / 1000.0);
      conn_close(&conns[i], 0);
    }
  }
  if (SL.ping.done || SL.ping.state != C_OPEN) {
    if (!SL.ping_fail) SL.ping_fail++;
  }
  conn_close(&SL.ping, 0);
  printf("LOADGEN mode=slowloris conns=%d connected=%llu closed=%llu not_closed=%llu early=%llu late=%llu "
         "min_close_after_ms=%llu max_close_after_ms=%llu got_data=%llu connect_failed=%llu pings=%llu "
         "ping_fail=%llu ping_max_ms=%llu secs=%.1f errors=%d\n",
         O.conns, (unsigned long long)SL.connected, (unsigned long long)SL.closed,
         (unsigned long long)SL.not_closed, (unsigned long long)SL.early, (unsigned long long)SL.late,
         (unsigned long long)(SL.min_after == UINT64_MAX ? 0 : SL.min_after), (unsigned long long)SL.max_after,
         (unsigned long long)SL.got_data, (unsigned long long)SL.connect_failed, (unsigned long long)SL.pings,
         (unsigned long long)SL.ping_fail, (unsigned long long)SL.ping.t_ping, (now_ms() - t0) / 1000.0,
         errors_total);
  return errors_total == 0 ? 0 : 1;
}

/* ---- storm -------------------------------------------------------------------------------- */

static struct {
  int storming;
  uint64_t attempts, greeted, rejected, refused, stuck, connect_slow, greeted_then_closed, other_err;
  uint64_t max_reject_ms, max_connect_ms;
} ST;

enum { ST_WAIT_GREETING = 0, ST_HOLD = 1, ST_IDLE = 2 };

static uint64_t rng_state = 1;

static void storm_retry(conn_t *c, uint64_t now) {
  conn_close(c, 0);
  c->phase = ST_IDLE;
  c->state = C_FREE;
  c->t_next = now + 100 + rng_next(&rng_state) % 200;
}

static void storm_event(conn_t *c, uint32_t ev) {
  uint64_t now = now_ms();
  if (c->state == C_CONNECTING) {
    int rc = connect_result(c);
    if (rc == 0 && !(ev & (EPOLLOUT | EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    if (rc < 0) {
      if (rc == -ECONNREFUSED)
        ST.refused++;
      else
        ST.other_err++;
      if (ST.refused + ST.other_err <= 3) report_error("storm conn %d: connect: %s", c->idx, strerror(-rc));
      return storm_retry(c, now);
    }
    c->state = C_OPEN;
    c->t_connected = now;
    if (now - c->t_start > ST.max_connect_ms) ST.max_connect_ms = now - c->t_start;
    want_out(c, 0);
  }
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
    ssize_t r = recv(c->fd, scratch, sizeof scratch, 0);
    if (r > 0) {
      if (c->phase == ST_WAIT_GREETING) {
        ST.greeted++;
        c->phase = ST_HOLD;
      }
      return;
    }
    if (r < 0 && errno == EAGAIN) return;
    if (c->phase == ST_WAIT_GREETING) {
      ST.rejected++;
      uint64_t ms = now - c->t_connected;
      if (ms > ST.max_reject_ms) ST.max_reject_ms = ms;
    } else {
      ST.greeted_then_closed++;
      if (ST.greeted_then_closed <= 3) report_error("storm conn %d: a greeted connection was closed", c->idx);
    }
    storm_retry(c, now);
  }
}

static void storm_tick(uint64_t now) {
  for (int i = 0; i < nconns; i++) {
    conn_t *c = &conns[i];
    if (c->state == C_FREE && ST.storming && now >= c->t_next) {
      c->phase = ST_WAIT_GREETING;
      ST.attempts++;
      int rc = conn_open(c);
      if (rc < 0) {
        ST.other_err++;
        if (ST.other_err <= 3) report_error("storm: socket/connect: %s", strerror(-rc));
        c->state = C_FREE;
        c->t_next = now + 100;
      }
    } else if (c->state == C_CONNECTING && now - c->t_start > 3000) {
      ST.connect_slow++;
      storm_retry(c, now);
    } else if (c->state == C_OPEN && c->phase == ST_WAIT_GREETING && now - c->t_connected > 2000) {
      ST.stuck++;
      if (ST.stuck <= 3) report_error("storm conn %d: connected, neither greeted nor closed in 2 s", c->idx);
      storm_retry(c, now);
    }
  }
}

/* After the storm: a new client must be greeted within 1 s. */
static int64_t storm_after(void) {
  uint64_t t0 = now_ms();
  while (now_ms() - t0 < 1000) {
    conn_t c;
    memset(&c, 0, sizeof c);
    c.fd = -1;
    if (conn_open(&c) < 0) {
      usleep(10000);
      continue;
    }
    int greeted = 0, over = 0;
    while (!over && now_ms() - t0 < 1000) {
      struct epoll_event evs[4];
      int n = epoll_wait(ep, evs, 4, 10);
      for (int i = 0; i < n; i++) {
        if (c.state == C_CONNECTING) {
          if (connect_result(&c) < 0) {
            over = 1;
            break;
          }
          c.state = C_OPEN;
          want_out(&c, 0);
        }
        ssize_t r = recv(c.fd, scratch, sizeof scratch, 0);
        if (r > 0) greeted = 1;
        if (r > 0 || r == 0 || (r < 0 && errno != EAGAIN)) over = 1;
      }
    }
    conn_close(&c, 0);
    if (greeted) return (int64_t)(now_ms() - t0);
    usleep(10000);
  }
  return -1;
}

static int mode_storm(void) {
  alloc_conns(O.conns);
  ST.storming = 1;
  uint64_t t0 = now_ms();
  loop(storm_event, storm_tick, echo_never, t0 + (uint64_t)(O.duration * 1000));
  ST.storming = 0;
  uint64_t held = 0;
  for (int i = 0; i < nconns; i++) {
    if (conns[i].state == C_OPEN && conns[i].phase == ST_HOLD) held++;
    conn_close(&conns[i], 0);
  }
  uint64_t storm_ms = now_ms() - t0;
  printf("STORM-OVER\n");
  fflush(stdout);
  int64_t after = storm_after();
  if (after < 0) report_error("no new client greeted within 1 s after the storm");
  printf("LOADGEN mode=storm conns=%d attempts=%llu greeted=%llu held_at_end=%llu rejected=%llu refused=%llu "
         "stuck=%llu connect_slow=%llu greeted_then_closed=%llu other_err=%llu max_reject_ms=%llu "
         "max_connect_ms=%llu after_ms=%lld storm_ms=%llu errors=%d\n",
         O.conns, (unsigned long long)ST.attempts, (unsigned long long)ST.greeted, (unsigned long long)held,
         (unsigned long long)ST.rejected, (unsigned long long)ST.refused, (unsigned long long)ST.stuck,
         (unsigned long long)ST.connect_slow, (unsigned long long)ST.greeted_then_closed,
         (unsigned long long)ST.other_err, (unsigned long long)ST.max_reject_ms,
         (unsigned long long)ST.max_connect_ms, (long long)after, (unsigned long long)storm_ms, errors_total);
  return ST.stuck == 0 && after >= 0 ? 0 : 1;
}

/* ---- resets -------------------------------------------------------------------------------- */

enum { RS_ACCEPT, RS_RECV, RS_SEND, RS_QUEUED, RS_NPHASES };
static const char *const rs_names[] = {"accept", "recv", "send", "queued"};

static struct {
  int started, finished;
  uint64_t per_phase[RS_NPHASES];
  uint64_t job_timeouts, connect_failed, server_closed_first;
  probe_stats_t probe;
  conn_t probe_conn;
  int next_probe_at;
} RS;

static void rs_start(conn_t *c) {
  int job = RS.started++;
  c->phase = job % RS_NPHASES;
  c->done = 0;
  c->recv_bytes = 0;
  c->out_len = c->out_off = 0;
  int rc = conn_open(c);
  if (rc < 0) {
    RS.connect_failed++;
    if (RS.connect_failed <= 3) report_error("resets: connect: %s", strerror(-rc));
    RS.finished++;
    c->state = C_FREE;
    return;
  }
  c->t_deadline = now_ms() + 5000;
}

static void rs_finish(conn_t *c) {
  RS.per_phase[c->phase]++;
  RS.finished++;
  conn_close(c, 1);
  c->state = C_FREE;
}

static void rs_event(conn_t *c, uint32_t ev) {
  if (c->role == 1) return probe_event(c, ev, &RS.probe);
  if (c->state == C_CONNECTING) {
    int rc = connect_result(c);
    if (rc < 0) {
      RS.connect_failed++;
      if (RS.connect_failed <= 3) report_error("resets: connect: %s", strerror(-rc));
      RS.finished++;
      conn_close(c, 0);
      c->state = C_FREE;
      return;
    }
    c->state = C_OPEN;
    switch (c->phase) {
    case RS_ACCEPT:
      return rs_finish(c); /* reset while the server accepts it */
    case RS_RECV: {
      set_header(c, "E\n");
      flush_out(c);
      size_t n = 1024 + (size_t)(rng_next(&rng_state) % 8192);
      stream_fill(c->seed, 0, scratch, n);
      if (send(c->fd, scratch, n, MSG_NOSIGNAL) < 0) { /* reset anyway */ }
      return rs_finish(c); /* reset with our bytes in the server's receive path */
    }
    case RS_SEND:
      set_header(c, "B 262144\n");
      break;
    case RS_QUEUED:
      set_header(c, "B 1048576\n");
      break;
    }
    flush_out(c);
    want_out(c, 0);
  }
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
    for (;;) {
      ssize_t r = recv(c->fd, scratch, c->phase == RS_QUEUED ? 1 : sizeof scratch, 0);
      if (r > 0) {
        c->recv_bytes += (uint64_t)r;
        if (c->phase == RS_QUEUED) return rs_finish(c); /* first byte: the rest is queued */
        if (c->recv_bytes >= 16384) return rs_finish(c); /* mid-transfer */
        continue;
      }
      if (r < 0 && errno == EAGAIN) break;
      RS.server_closed_first++;
      report_error("resets: the server closed a %s connection first (%s)", rs_names[c->phase],
                   r == 0 ? "EOF" : strerror(errno));
      return rs_finish(c);
    }
  }
}

static void rs_tick(uint64_t now) {
  for (int i = 0; i < nconns; i++) {
    conn_t *c = &conns[i];
    if (c->state == C_FREE && RS.started < O.total) rs_start(c);
    else if ((c->state == C_OPEN || c->state == C_CONNECTING) && now > c->t_deadline) {
      RS.job_timeouts++;
      report_error("resets: a %s job got nothing in 5 s", rs_names[c->phase]);
      rs_finish(c);
    }
  }
  probe_tick(&RS.probe_conn, &RS.probe, now);
  if (!RS.probe.active && RS.finished >= RS.next_probe_at && RS.next_probe_at <= O.total) {
    RS.next_probe_at += 100;
    probe_start(&RS.probe_conn, &RS.probe);
  }
}

static int rs_done(uint64_t now) {
  (void)now;
  return RS.finished >= O.total && !RS.probe.active;
}

static int mode_resets(void) {
  if (O.total <= 0) die("resets needs --total N");
  alloc_conns(O.concurrency > 0 ? O.concurrency : 32);
  RS.next_probe_at = 0;
  uint64_t t0 = now_ms();
  int rc = loop(rs_event, rs_tick, rs_done, t0 + (uint64_t)(O.timeout > 0 ? O.timeout : 600000));
  if (rc < 0) report_error("resets: not finished in time (%d of %d)", RS.finished, O.total);
  for (int i = 0; i < nconns; i++) conn_close(&conns[i], 1);
  /* one more probe after the last reset */
  probe_start(&RS.probe_conn, &RS.probe);
  while (RS.probe.active) {
    struct epoll_event evs[4];
    int n = epoll_wait(ep, evs, 4, 10);
    for (int i = 0; i < n; i++) probe_event(evs[i].data.ptr, evs[i].events, &RS.probe);
    probe_tick(&RS.probe_conn, &RS.probe, now_ms());
  }
  printf("LOADGEN mode=resets total=%d done=%d accept=%llu recv=%llu send=%llu queued=%llu job_timeouts=%llu "
         "server_closed_first=%llu connect_failed=%llu probes=%llu probes_served=%llu probes_failed=%llu "
         "probe_max_ms=%llu secs=%.1f errors=%d\n",
         O.total, RS.finished, (unsigned long long)RS.per_phase[0], (unsigned long long)RS.per_phase[1],
         (unsigned long long)RS.per_phase[2], (unsigned long long)RS.per_phase[3],
         (unsigned long long)RS.job_timeouts, (unsigned long long)RS.server_closed_first,
         (unsigned long long)RS.connect_failed, (unsigned long long)RS.probe.started,
         (unsigned long long)RS.probe.served, (unsigned long long)RS.probe.failed,
         (unsigned long long)RS.probe.max_ms, (now_ms() - t0) / 1000.0, errors_total);
  return errors_total == 0 ? 0 : 1;
}

/* ---- hold (graceful stop) ---------------------------------------------------------------- */

static volatile sig_atomic_t go_flag;
static void on_usr1(int sig) {
  (void)sig;
  go_flag = 1;
}

static struct {
  uint64_t connected, complete, short_, resets, connect_failed, requested, bad;
  int reading;
} HD;

static void hold_event(conn_t *c, uint32_t ev) {
  if (c->state == C_CONNECTING) {
    int rc = connect_result(c);
    if (rc < 0) {
      HD.connect_failed++;
      if (HD.connect_failed <= 3) report_error("hold conn %d: connect: %s", c->idx, strerror(-rc));
      c->done = c->failed = 1;
      conn_close(c, 0);
      return;
    }
    c->state = C_OPEN;
    HD.connected++;
    c->total = c->idx < O.big ? O.big_size : O.size;
    set_header(c, "B %llu\n", (unsigned long long)c->total);
    rec_init(&c->rec, 1024, 64);
  }
  if (c->out_off < c->out_len) {
    int rc = flush_out(c);
    if (rc < 0) {
      c->done = c->failed = 1;
      HD.resets++;
      conn_close(c, 0);
      return;
    }
    if (rc > 0) HD.requested++;
  }
  want_out(c, c->out_off < c->out_len);
  if (!HD.reading) {
    /* nothing read until go: drop read interest so level-triggered epoll
     * does not spin on the bytes waiting (nor on an early close, which the
     * reads after go report) */
    struct epoll_event e2 = {c->wants_out ? EPOLLOUT : 0, {.ptr = c}};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e2);
    return;
  }
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
    for (;;) {
      ssize_t r = recv(c->fd, scratch, sizeof scratch, 0);
      if (r > 0) {
        rec_feed(&c->rec, scratch, (size_t)r);
        c->recv_bytes += (uint64_t)r;
        continue;
      }
      if (r < 0 && errno == EAGAIN) return;
      if (r == 0 && c->recv_bytes == c->total && !c->rec.bad) {
        HD.complete++;
      } else if (r == 0) {
        HD.short_++;
        if (HD.short_ <= 3)
          report_error("hold conn %d: EOF after %llu of %llu bytes", c->idx, (unsigned long long)c->recv_bytes,
                       (unsigned long long)c->total);
      } else {
        HD.resets++;
        if (HD.resets <= 3)
          report_error("hold conn %d: %s after %llu of %llu bytes", c->idx, strerror(errno),
                       (unsigned long long)c->recv_bytes, (unsigned long long)c->total);
      }
      HD.bad += c->rec.bad;
      c->done = 1;
      conn_close(c, 0);
      return;
    }
  }
}

static int hold_ready(uint64_t now) {
  (void)now;
  return HD.requested + HD.connect_failed >= (uint64_t)nconns || go_flag;
}

static int mode_hold(void) {
  signal(SIGUSR1, on_usr1);
  alloc_conns(O.conns);
  uint64_t t0 = now_ms();
  for (int i = 0; i < nconns;) {
    int started = 0;
    for (; i < nconns && started < 128; i++, started++) {
      int rc = conn_open(&conns[i]);
      if (rc < 0) {
        HD.connect_failed++;
        conns[i].done = 1;
        report_error("hold conn %d: %s", i, strerror(-rc));
      }
    }
    loop(hold_event, NULL, echo_never, now_ms() + 5);
  }
  loop(hold_event, NULL, hold_ready, t0 + 60000);
  printf("READY connected=%llu requested=%llu\n", (unsigned long long)HD.connected,
         (unsigned long long)HD.requested);
  fflush(stdout);
  uint64_t go_at = O.go_after > 0 ? now_ms() + (uint64_t)O.go_after : UINT64_MAX;
  while (!go_flag && now_ms() < go_at) usleep(5000);
  uint64_t tgo = now_ms();
  HD.reading = 1;
  for (int i = 0; i < nconns; i++) {
    conn_t *c = &conns[i];
    if (c->fd < 0) continue;
    /* read at full speed now: the small buffer was only there to keep the
     * server's data waiting */
    int big = 1 << 20;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct epoll_event ev = {EPOLLIN | EPOLLRDHUP, {.ptr = c}};
    c->wants_out = 0;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
  uint64_t limit = (uint64_t)(O.timeout > 0 ? O.timeout : 30000);
  if (loop(hold_event, NULL, echo_all_done, tgo + limit) < 0) {
    int left = 0;
    for (int i = 0; i < nconns; i++)
      if (!conns[i].done) {
        left++;
        conn_close(&conns[i], 0);
      }
    report_error("hold: %d connections not finished %.1f s after go", left, limit / 1000.0);
  }
  printf("LOADGEN mode=hold conns=%d connected=%llu requested=%llu complete=%llu short=%llu resets=%llu "
         "bad_records=%llu connect_failed=%llu read_secs=%.1f errors=%d\n",
         O.conns, (unsigned long long)HD.connected, (unsigned long long)HD.requested,
         (unsigned long long)HD.complete, (unsigned long long)HD.short_, (unsigned long long)HD.resets,
         (unsigned long long)HD.bad, (unsigned long long)HD.connect_failed, (now_ms() - tgo) / 1000.0,
         errors_total);
  return HD.complete == (uint64_t)O.conns && errors_total == 0 ? 0 : 1;
}

/* ---- accounted sends --------------------------------------------------------------------------- */

static int wait_connected(int fd, int ms) {
  uint64_t t0 = now_ms();
  for (;;) {
    struct epoll_event evs[1];
    int n = epoll_wait(ep, evs, 1, 10);
    if (n > 0) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      return -err;
    }
    if ((int)(now_ms() - t0) > ms) return -ETIMEDOUT;
  }
}

static int mode_accounted(void) {
  conn_t c;
  memset(&c, 0, sizeof c);
  c.fd = -1;
  if (conn_open(&c) < 0) die("connect failed");
  int rc = wait_connected(c.fd, 5000);
  if (rc < 0) {
    printf("LOADGEN mode=accounted connected=0 error=%s\n", strerror(-rc));
    return 1;
  }
  want_out(&c, 0);
  set_header(&c, "S %llu %llu %s %d\n", (unsigned long long)O.count, (unsigned long long)O.size,
             O.action ? O.action : "close", O.burst > 0 ? O.burst : 100);
  while ((rc = flush_out(&c)) == 0) usleep(1000);
  printf("REQUESTED\n");
  fflush(stdout);
  usleep((useconds_t)O.wait * 1000);
  rec_init(&c.rec, O.size, 0);
  const char *then = O.then ? O.then : "drain";
  const char *end = "none";
  uint64_t t0 = now_ms();
  if (!strcmp(then, "reset")) {
    conn_close(&c, 1);
    end = "we_reset";
  } else {
    /* blocking-ish reads until EOF or an error */
    for (;;) {
      ssize_t r = recv(c.fd, scratch, sizeof scratch, 0);
      if (r > 0) {
        rec_feed(&c.rec, scratch, (size_t)r);
        c.recv_bytes += (uint64_t)r;
        continue;
      }
      if (r == 0) {
        end = "eof";
        break;
      }
      if (errno == EAGAIN) {
        if (now_ms() - t0 > (uint64_t)(O.timeout > 0 ? O.timeout : 30000)) {
          end = "timeout";
          break;
        }
        usleep(1000);
        continue;
      }
      end = errno == ECONNRESET ? "reset" : "error";
      break;
    }
    conn_close(&c, 0);
  }
  printf("LOADGEN mode=accounted connected=1 bytes=%llu records=%llu partial=%llu last_index=%lld hash=h%llx "
         "bad=%llu end=%s errors=%d\n",
         (unsigned long long)c.recv_bytes, (unsigned long long)c.rec.records,
         (unsigned long long)(c.recv_bytes % O.size), (long long)c.rec.last, (unsigned long long)c.rec.hash,
         (unsigned long long)c.rec.bad, end, errors_total);
  return errors_total == 0 ? 0 : 1;
}

/* ---- probe, ping, trigger --------------------------------------------------------------------- */

static int mode_probe(void) {
  conn_t c;
  memset(&c, 0, sizeof c);
  c.fd = -1;
  c.seed = mix64(O.seed + 1);
  c.h_sent = c.h_recv = FNV_INIT;
  uint64_t t0 = now_ms();
  int rc = conn_open(&c);
  const char *result = "error";
  if (rc == 0) rc = wait_connected(c.fd, O.timeout > 0 ? O.timeout : 2000);
  if (rc == -ECONNREFUSED) {
    result = "refused";
  } else if (rc == -ETIMEDOUT) {
    result = "timeout";
  } else if (rc == 0) {
    want_out(&c, 0);
    c.state = C_OPEN;
    set_header(&c, "%s", O.header ? O.header : "E\n");
    c.msg_end = 16;
    if (flush_out(&c) < 0 || write_stream(&c, 16) < 0) {
      result = "closed";
    } else {
      uint64_t bad = 0;
      uint64_t limit = (uint64_t)(O.timeout > 0 ? O.timeout : 2000);
      result = "timeout";
      while (now_ms() - t0 < limit) {
        long r = read_stream(&c, &bad);
        if (r == -EAGAIN) {
          usleep(1000);
          continue;
        }
        if (r <= 0 || bad) {
          result = bad ? "wrong" : "closed";
          break;
        }
        if (c.rp >= 16) {
          result = "served";
          break;
        }
      }
    }
  }
  conn_close(&c, 0);
  printf("LOADGEN mode=probe result=%s ms=%llu\n", result, (unsigned long long)(now_ms() - t0));
  return strcmp(result, "served") == 0 ? 0 : 1;
}

static int mode_ping(void) {
  memset(&SL.ping, 0, sizeof SL.ping);
  SL.ping.fd = -1;
  SL.ping.seed = mix64(O.seed ^ 99);
  SL.ping.h_sent = SL.ping.h_recv = FNV_INIT;
  SL.ping.role = 2;
  if (conn_open(&SL.ping) < 0) die("connect failed");
  uint64_t t0 = now_ms();
  int interval = O.interval > 0 ? O.interval : 20;
  struct epoll_event evs[4];
  uint64_t first_ok = 0;
  while (now_ms() - t0 < (uint64_t)(O.duration * 1000) && !SL.ping.done) {
    int n = epoll_wait(ep, evs, 4, 2);
    for (int i = 0; i < n; i++) ping_event(evs[i].data.ptr, evs[i].events);
    ping_tick(&SL.ping, now_ms(), interval);
    if (!first_ok && SL.pings > 0) {
      first_ok = 1;
      printf("PINGING\n");
      fflush(stdout);
    }
  }
  /* the last ping may still be out */
  uint64_t t1 = now_ms();
  while (SL.ping_waiting && !SL.ping.done && now_ms() - t1 < 3000) {
    int n = epoll_wait(ep, evs, 4, 2);
    for (int i = 0; i < n; i++) ping_event(evs[i].data.ptr, evs[i].events);
    ping_tick(&SL.ping, now_ms(), interval);
  }
  conn_close(&SL.ping, 0);
  printf("LOADGEN mode=ping pings=%llu fail=%llu max_ms=%llu errors=%d\n", (unsigned long long)SL.pings,
         (unsigned long long)SL.ping_fail, (unsigned long long)SL.ping.t_ping, errors_total);
  return SL.ping_fail == 0 && errors_total == 0 ? 0 : 1;
}

static int mode_trigger(void) {
  conn_t c;
  memset(&c, 0, sizeof c);
  c.fd = -1;
  if (conn_open(&c) < 0) die("connect failed");
  int rc = wait_connected(c.fd, 5000);
  if (rc < 0) die("connect: %s", strerror(-rc));
  want_out(&c, 0);
  set_header(&c, "%s", O.header ? O.header : "E\n");
  while ((rc = flush_out(&c)) == 0) usleep(1000);
  uint64_t t0 = now_ms();
  const char *end = "timeout";
  uint64_t limit = (uint64_t)(O.timeout > 0 ? O.timeout : 30000);
  uint64_t got = 0;
  while (now_ms() - t0 < limit) {
    ssize_t r = recv(c.fd, scratch, sizeof scratch, 0);
    if (r > 0) {
      got += (uint64_t)r;
      continue;
    }
    if (r < 0 && errno == EAGAIN) {
      usleep(1000);
      continue;
    }
    end = r == 0 ? "eof" : errno == ECONNRESET ? "reset" : "error";
    break;
  }
  conn_close(&c, 0);
  printf("LOADGEN mode=trigger end=%s closed_after_ms=%llu bytes=%llu\n", end,
         (unsigned long long)(now_ms() - t0), (unsigned long long)got);
  return strcmp(end, "timeout") ? 0 : 1;
}

/* ---- main ------------------------------------------------------------------------------------ */

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen echo|halfclose|slowloris|storm|resets|hold|accounted|probe|ping|trigger\n"
          "               --addr HOST:PORT [--conns N] [--duration S] [--seed X] [--window B] [--size B]\n"
          "               [--count N] [--idle MS] [--total N] [--concurrency C] [--rcvbuf B] [--go-after MS]\n"
          "               [--wait MS] [--interval MS] [--timeout MS] [--action A] [--then T] [--header H]\n"
          "               [--burst N]\n(see the comment at the top of tests/stress/loadgen.c)\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  O.mode = argv[1];
  O.conns = 1;
  O.duration = 5;
  O.seed = 1;
  O.window = 65536;
  O.size = 1 << 20;
  O.count = 10000;
  int have_addr = 0;
  for (int i = 2; i < argc; i++) {
    const char *k = argv[i];
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (!strcmp(k, "--addr")) {
      parse_addr(v);
      have_addr = 1;
    } else if (!strcmp(k, "--conns")) O.conns = atoi(v);
    else if (!strcmp(k, "--duration")) O.duration = atof(v);
    else if (!strcmp(k, "--seed")) O.seed = strtoull(v, NULL, 0);
    else if (!strcmp(k, "--window")) O.window = strtoull(v, NULL, 0);
    else if (!strcmp(k, "--size")) O.size = strtoull(v, NULL, 0);
    else if (!strcmp(k, "--count")) O.count = strtoull(v, NULL, 0);
    else if (!strcmp(k, "--idle")) O.idle = atoi(v);
    else if (!strcmp(k, "--total")) O.total = atoi(v);
    else if (!strcmp(k, "--concurrency")) O.concurrency = atoi(v);
    else if (!strcmp(k, "--rcvbuf")) O.rcvbuf = atoi(v);
    else if (!strcmp(k, "--go-after")) O.go_after = atoi(v);
    else if (!strcmp(k, "--wait")) O.wait = atoi(v);
    else if (!strcmp(k, "--interval")) O.interval = atoi(v);
    else if (!strcmp(k, "--timeout")) O.timeout = atoi(v);
    else if (!strcmp(k, "--action")) O.action = v;
    else if (!strcmp(k, "--then")) O.then = v;
    else if (!strcmp(k, "--header")) O.header = v;
    else if (!strcmp(k, "--burst")) O.burst = atoi(v);
    else if (!strcmp(k, "--big")) O.big = atoi(v);
    else if (!strcmp(k, "--big-size")) O.big_size = strtoull(v, NULL, 0);
    else usage();
  }
  if (!have_addr) usage();
  if (O.size == 0 || O.conns <= 0) usage();
  /* "\n" in --header from a shell */
  if (O.header) {
    char *h = strdup(O.header), *w = h;
    for (const char *r = O.header; *r; r++) {
      if (r[0] == '\\' && r[1] == 'n') {
        *w++ = '\n';
        r++;
      } else {
        *w++ = *r;
      }
    }
    *w = 0;
    O.header = h;
  }
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  rng_state = mix64(O.seed ^ 0xABCDEF);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1: %s", strerror(errno));
  int rc;
  if (!strcmp(O.mode, "echo") || !strcmp(O.mode, "halfclose")) rc = mode_echo();
  else if (!strcmp(O.mode, "slowloris")) rc = mode_slowloris();
  else if (!strcmp(O.mode, "storm")) rc = mode_storm();
  else if (!strcmp(O.mode, "resets")) rc = mode_resets();
  else if (!strcmp(O.mode, "hold")) rc = mode_hold();
  else if (!strcmp(O.mode, "accounted")) rc = mode_accounted();
  else if (!strcmp(O.mode, "probe")) rc = mode_probe();
  else if (!strcmp(O.mode, "ping")) rc = mode_ping();
  else if (!strcmp(O.mode, "trigger")) rc = mode_trigger();
  else usage();
  fflush(stdout);
  return rc;
}
