/* unix-domain sockets ("unix:/path"): parsing and formatting, listen and
 * connect end to end, the address strings of both ends, the socket file's
 * life (made at listen, removed at close if still ours, a stale one
 * replaced, a live one refused), the errors (a path too long, a missing
 * path, nobody listening) and the lossless close to a slow reader.
 *
 * The Windows build has no unix-domain sockets (wine 8, where its tests
 * run, has no AF_UNIX): there listen and connect return EAFNOSUPPORT, and
 * the other tests skip saying so. */
#include "rec.h"

#include <stdio.h>
#include <stdlib.h>

#ifndef _WIN32
#include <errno.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#ifdef _WIN32
#define NEED_UNIX() SKIPF("no unix-domain sockets in the Windows build (wine 8 has no AF_UNIX): " \
                          "unix_listen_and_connect_are_eafnosupport_on_windows covers it")
#else
#define NEED_UNIX() ((void)0)
#endif

#ifndef _WIN32
/* A fresh directory for this test's socket files, removed by done_dir. */
static char g_dir[64];

static void make_dir(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/ioc-unix-XXXXXX");
  ASSERT(mkdtemp(g_dir) != NULL);
}

/* "unix:<dir>/<name>" into buf; the bare path into path (optional). */
static size_t unix_addr(char *buf, size_t cap, const char *name, char *path, size_t pcap) {
  if (path) snprintf(path, pcap, "%s/%s", g_dir, name);
  int n = snprintf(buf, cap, "unix:%s/%s", g_dir, name);
  return (size_t)n;
}

static bool file_exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static void done_dir(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  ASSERT_EQ(system(cmd), 0);
}

/* The OS address of the socket file at path. */
static struct sockaddr_un os_unix_addr(const char *path) {
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%.100s", path);
  return sa;
}

/* A plain OS unix-domain client, blocking. */
static int os_unix_connect(const char *path) {
  int c = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT(c >= 0);
  struct sockaddr_un sa = os_unix_addr(path);
  ASSERT_MSG(connect(c, (struct sockaddr *)&sa, sizeof sa) == 0, "connect %s: %s", path, strerror(errno));
  sock_set_timeouts(c, 15000);
  return c;
}

/* A socket file nobody listens on: bound, listened, closed, not removed. */
static void make_stale_file(const char *path) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT(s >= 0);
  struct sockaddr_un sa = os_unix_addr(path);
  ASSERT(bind(s, (struct sockaddr *)&sa, sizeof sa) == 0);
  ASSERT(listen(s, 1) == 0);
  close(s);
  ASSERT(file_exists(path));
}

static void addr_text(const ioc_addr_t *a, char buf[IOC_ADDRSTRLEN]) {
  ASSERT_OK(ioc_addr_format(a, buf, IOC_ADDRSTRLEN));
}

/* A test's set-up: a fresh directory (make_dir), a core (returned), and
 * the address of the socket file `name` in that directory. */
typedef struct unix_case {
  ioc_core_t *core;
  char addr[IOC_ADDRSTRLEN]; /* "unix:<dir>/<name>" */
  char path[IOC_ADDRSTRLEN]; /* "<dir>/<name>" */
  size_t alen;
} unix_case_t;

static ioc_core_t *unix_case_start(unix_case_t *u, const char *name) {
  make_dir();
  make_core(&u->core);
  u->alen = unix_addr(u->addr, sizeof u->addr, name, u->path, sizeof u->path);
  return u->core;
}

/* A listener on the case's address; its sessions go to srv (NULL: none
 * is given callbacks). */
static ioc_listener_t *unix_case_listen(unix_case_t *u, rec_server_t *srv) {
  ioc_listener_t *l;
  ASSERT_OK(ioc_listen(u->core, u->addr, u->alen, NULL, srv ? rec_server_accept : NULL, srv, &l));
  return l;
}
#endif

/* ---- addresses ---------------------------------------------------------------- */

void test_unix_address_parse_and_format(void) {
  ioc_addr_t a, b;
  const char *s = "unix:/run/app/server.sock";
  ASSERT_OK(ioc_addr_parse(&a, s, strlen(s)));
  char text[IOC_ADDRSTRLEN];
  ASSERT_EQ(ioc_addr_format(&a, text, sizeof text), (int)strlen(s));
  ASSERT_STR_EQ(text, s);
  ASSERT_OK(ioc_addr_parse(&b, text, strlen(text)));
  ASSERT_EQ(memcmp(&a, &b, sizeof a), 0); /* one path, one spelling, the same bytes */
  ASSERT_EQ(ioc_addr_port(&a), 0);
  ASSERT_EQ(a.len, 2 + strlen("/run/app/server.sock") + 1); /* the sockaddr_un's length */
  /* a relative path is taken as it is */
  ASSERT_OK(ioc_addr_parse(&a, "unix:rel.sock", 13));
  ASSERT_EQ(ioc_addr_format(&a, text, sizeof text), 13);
  ASSERT_STR_EQ(text, "unix:rel.sock");
  /* no path, an embedded NUL, a near miss of the prefix */
  ASSERT_ERR(ioc_addr_parse(&a, "unix:", 5), IOC_EINVAL);
  ASSERT_ERR(ioc_addr_parse(&a, "unix:/a\0b", 9), IOC_EINVAL);
  ASSERT_ERR(ioc_addr_parse(&a, "unix/tmp/x", 10), IOC_EINVAL);
  ASSERT_ERR(ioc_addr_parse(&a, "UNIX:/tmp/x", 11), IOC_EINVAL);
  /* the longest path, then one byte more; the longest formats into IOC_ADDRSTRLEN */
  char longest[5 + IOC_UNIX_PATH_MAX + 2];
  memcpy(longest, "unix:/", 6);
  memset(longest + 6, 'p', sizeof longest - 6);
  ASSERT_OK(ioc_addr_parse(&a, longest, 5 + IOC_UNIX_PATH_MAX));
  ASSERT_EQ(ioc_addr_format(&a, text, sizeof text), 5 + IOC_UNIX_PATH_MAX);
  ASSERT_ERR(ioc_addr_format(&a, text, IOC_ADDRSTRLEN - 1), IOC_ENOBUFS);
  ASSERT_ERR(ioc_addr_parse(&a, longest, 5 + IOC_UNIX_PATH_MAX + 1), IOC_ENAMETOOLONG);
  ASSERT_STR_EQ(ioc_err_name(IOC_ENAMETOOLONG), "ENAMETOOLONG");
}

/* ---- end to end ------------------------------------------------------------------ */

void test_unix_echo_and_the_address_strings_of_both_ends(void) {
  NEED_UNIX();
#ifndef _WIN32
  unix_case_t u;
  ioc_core_t *core = unix_case_start(&u, "echo.sock");
  char text[IOC_ADDRSTRLEN];
  rec_server_t *srv = rec_server_new(1, 1);
  ioc_listener_t *l = unix_case_listen(&u, srv);
  ASSERT(file_exists(u.path));
  addr_text(ioc_listener_address(l), text);
  ASSERT_STR_EQ(text, u.addr);

  rec_t out;
  rec_init(&out, 1);
  ioc_session_callbacks_t cbs = rec_callbacks();
  ioc_session_t *c;
  ASSERT_OK(ioc_connect(core, u.addr, u.alen, &cbs, &out, NULL, &c));
  WAIT_UNTIL(core, atomic_load(&out.opens) == 1, 5000);
  ASSERT_ERR(out.open_err, 0);
  size_t n = 256 * 1024;
  char *data = (char *)malloc(n);
  pattern_fill(9, 0, data, n);
  ASSERT_OK(ioc_session_send(c, data, n));
  WAIT_UNTIL(core, atomic_load(&out.total) == n, 10000);
  ASSERT_EQ(pattern_check(9, 0, out.buf, out.len), -1);

  /* the accepted end: an unnamed peer, the listener's path as its own */
  rec_t *in = &srv->recs[0];
  addr_text(ioc_session_peer(in->s), text);
  ASSERT_STR_EQ(text, "unix:");
  addr_text(ioc_session_local(in->s), text);
  ASSERT_STR_EQ(text, u.addr);
  /* the connecting end: the path it connected to, unnamed itself */
  addr_text(ioc_session_peer(c), text);
  ASSERT_STR_EQ(text, u.addr);
  addr_text(ioc_session_local(c), text);
  ASSERT_STR_EQ(text, "unix:");

  ioc_session_close(c);
  WAIT_UNTIL(core, atomic_load(&out.closes) == 1 && atomic_load(&in->closes) == 1, 10000);
  ASSERT_ERR(out.close_err, 0);
  ASSERT_ERR(in->close_err, 0);
  ioc_session_release(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  ASSERT(!file_exists(u.path));
  rec_free(&out);
  rec_server_free(srv);
  free(data);
  done_dir();
#endif
}

void test_unix_listener_removes_its_socket_file_on_close(void) {
  NEED_UNIX();
#ifndef _WIN32
  unix_case_t u;
  ioc_core_t *core = unix_case_start(&u, "gone.sock");
  ioc_listener_t *l = unix_case_listen(&u, NULL);
  ASSERT(file_exists(u.path));
  ioc_listener_close(l);
  WAIT_UNTIL(core, !file_exists(u.path), 5000);
  ASSERT_CORE_CLEAN(core);
  done_dir();
#endif
}

void test_unix_listener_leaves_a_newer_socket_file_alone(void) {
  NEED_UNIX();
#ifndef _WIN32
  unix_case_t u;
  ioc_core_t *core = unix_case_start(&u, "swap.sock");
  ioc_listener_t *a, *b;
  ASSERT_OK(ioc_listen(core, u.addr, u.alen, NULL, NULL, NULL, &a));
  ASSERT_EQ(unlink(u.path), 0); /* someone removed it, and a new listener took the path */
  ASSERT_OK(ioc_listen(core, u.addr, u.alen, NULL, NULL, NULL, &b));
  ioc_listener_close(a);
  pump_for(core, 50);
  ASSERT_MSG(file_exists(u.path), "closing the old listener removed the new one's file");
  int fd = os_unix_connect(u.path); /* and it still answers */
  close(fd);
  ioc_listener_close(b);
  WAIT_UNTIL(core, !file_exists(u.path), 5000);
  ASSERT_CORE_CLEAN(core);
  done_dir();
#endif
}

void test_unix_listener_replaces_a_stale_socket_file(void) {
  NEED_UNIX();
#ifndef _WIN32
  unix_case_t u;
  ioc_core_t *core = unix_case_start(&u, "stale.sock");
  make_stale_file(u.path);
  rec_server_t *srv = rec_server_new(1, 0);
  ioc_listener_t *l = unix_case_listen(&u, srv);
  int fd = os_unix_connect(u.path);
  ASSERT_EQ(sock_send_all(fd, "hi", 2), 0);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].total) == 2, 5000);
  close(fd);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  ASSERT(!file_exists(u.path));
  rec_server_free(srv);
  done_dir();
#endif
}

void test_unix_listener_on_a_live_socket_file_is_eaddrinuse(void) {
  NEED_UNIX();
#ifndef _WIN32
  unix_case_t u;
  ioc_core_t *core = unix_case_start(&u, "live.sock");
  ioc_listener_t *l, *again = NULL;
  ASSERT_OK(ioc_listen(core, u.addr, u.alen, NULL, NULL, NULL, &l));
  ASSERT_ERR(ioc_listen(core, u.addr, u.alen, NULL, NULL, NULL, &again), IOC_EADDRINUSE);
  ASSERT(again == NULL);
  ASSERT(file_exists(u.path)); /* the failed listen took nothing away */
  int fd = os_unix_connect(u.path);
  close(fd);
  /* a file that is not a socket is not replaced either */
  char faddr[IOC_ADDRSTRLEN], fpath[IOC_ADDRSTRLEN];
  size_t flen = unix_addr(faddr, sizeof faddr, "plain.txt", fpath, sizeof fpath);
  FILE *f = fopen(fpath, "w");
  ASSERT(f != NULL);
  fputs("keep me", f);
  fclose(f);
  ASSERT_ERR(ioc_listen(core, faddr, flen, NULL, NULL, NULL, &again), IOC_EADDRINUSE);
  ASSERT(file_exists(fpath));
  ASSERT_EQ(core_stats(core).sockets, 1); /* the failed listens left no socket open */
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  done_dir();
#endif
}

void test_unix_path_too_long_is_enametoolong(void) {
  NEED_UNIX();
#ifndef _WIN32
  ioc_core_t *core;
  make_core(&core);
  char addr[5 + IOC_UNIX_PATH_MAX + 2];
  memcpy(addr, "unix:/tmp/", 10);
  memset(addr + 10, 'x', sizeof addr - 10);
  ioc_listener_t *l = NULL;
  ASSERT_ERR(ioc_listen(core, addr, sizeof addr - 1, NULL, NULL, NULL, &l), IOC_ENAMETOOLONG);
  ioc_session_t *s = NULL;
  ioc_session_callbacks_t cbs = rec_callbacks();
  ASSERT_ERR(ioc_connect(core, addr, sizeof addr - 1, &cbs, NULL, NULL, &s), IOC_ENAMETOOLONG);
  ASSERT(l == NULL && s == NULL);
  ASSERT_EQ(core_stats(core).sockets, 0);
  ASSERT_CORE_CLEAN(core);
#endif
}

/* A missing path is ENOENT, a file nobody listens on ECONNREFUSED and a
 * listener whose backlog is full EAGAIN, told as any failed connect is:
 * on_open(err), then on_close(err). */
void test_unix_connect_to_a_missing_path_a_dead_file_or_a_full_backlog_fails_with_its_code(void) {
  NEED_UNIX();
#ifndef _WIN32
  make_dir();
  ioc_core_t *core;
  make_core(&core);
  char addr[IOC_ADDRSTRLEN], path[IOC_ADDRSTRLEN];
  for (int i = 0; i < 2; i++) {
    size_t alen = unix_addr(addr, sizeof addr, i == 0 ? "missing.sock" : "dead.sock", path, sizeof path);
    if (i == 1) make_stale_file(path);
    rec_t r;
    rec_init(&r, 0);
    ioc_session_callbacks_t cbs = rec_callbacks();
    ASSERT_OK(ioc_connect(core, addr, alen, &cbs, &r, NULL, NULL));
    WAIT_UNTIL(core, atomic_load(&r.closes) == 1, 5000);
    int want = i == 0 ? IOC_ENOENT : IOC_ECONNREFUSED;
    ASSERT_ERR(r.open_err, want);
    ASSERT_ERR(r.close_err, want);
    rec_free(&r);
  }
  /* a listener whose backlog is full (it never accepts): EAGAIN, not a wait */
  size_t alen = unix_addr(addr, sizeof addr, "full.sock", path, sizeof path);
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = os_unix_addr(path);
  ASSERT(ls >= 0 && bind(ls, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(ls, 0) == 0);
  static rec_t rs[8];
  ioc_session_t *ss[8];
  int eagain = 0, n = 0;
  while (n < 8 && !eagain) {
    rec_init(&rs[n], 0);
    ioc_session_callbacks_t cbs = rec_callbacks();
    ASSERT_OK(ioc_connect(core, addr, alen, &cbs, &rs[n], NULL, &ss[n]));
    WAIT_UNTIL(core, atomic_load(&rs[n].opens) == 1, 5000);
    if (rs[n].open_err == IOC_EAGAIN) eagain = 1;
    else ASSERT_ERR(rs[n].open_err, 0);
    n++;
  }
  ASSERT_MSG(eagain, "no EAGAIN after %d connects to a listener with a full backlog", n);
  for (int i = 0; i < n; i++) {
    ioc_session_abort(ss[i]); /* never accepted: a graceful close would wait for nothing */
    WAIT_UNTIL(core, atomic_load(&rs[i].closes) == 1, 5000);
    ioc_session_release(ss[i]);
    rec_free(&rs[i]);
  }
  close(ls);
  ASSERT_CORE_CLEAN(core);
  done_dir();
#endif
}

#ifndef _WIN32
typedef struct slow_reader {
  int fd;
  size_t want, got;
  char *buf;
  int err;
  atomic_int done;
} slow_reader_t;

/* Reads in small bites with pauses until EOF. */
static void slow_reader_main(void *arg) {
  slow_reader_t *r = (slow_reader_t *)arg;
  for (;;) {
    ssize_t n = recv(r->fd, r->buf + r->got, r->got + 16384 <= r->want ? 16384 : r->want + 1 - r->got, 0);
    if (n <= 0) {
      r->err = n == 0 ? 0 : -errno;
      break;
    }
    r->got += (size_t)n;
    if (r->got > r->want) break;
    if ((r->got / 16384) % 16 == 0) sleep_ms(5);
  }
  atomic_store(&r->done, 1);
}
#endif

/* close() after a large reply to a slow reader over unix: every byte
 * arrives, then EOF, and the session ends cleanly (SIOCOUTQ counts what the
 * peer has not read yet, so the close waits for the reader). */
void test_unix_graceful_close_delivers_everything_to_a_slow_reader(void) {
  NEED_UNIX();
#ifndef _WIN32
  unix_case_t u;
  ioc_core_t *core = unix_case_start(&u, "slow.sock");
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = unix_case_listen(&u, srv);
  slow_reader_t rd;
  memset(&rd, 0, sizeof rd);
  rd.fd = os_unix_connect(u.path);
  rd.want = 4u << 20;
  rd.buf = (char *)malloc(rd.want + 1);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  char *data = (char *)malloc(rd.want);
  pattern_fill(21, 0, data, rd.want);
  ASSERT_OK(ioc_session_send(srv->recs[0].s, data, rd.want));
  ioc_session_close(srv->recs[0].s);
  test_thread_t *th = thread_start(slow_reader_main, &rd);
  WAIT_UNTIL(core, atomic_load(&rd.done), 30000);
  thread_join(th);
  ASSERT_MSG(rd.err == 0 && rd.got == rd.want, "reader: %zu of %zu bytes, then %d", rd.got, rd.want, rd.err);
  ASSERT_EQ(pattern_check(21, 0, rd.buf, rd.got), -1);
  close(rd.fd);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 10000);
  ASSERT_ERR(srv->recs[0].close_err, 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  free(rd.buf);
  free(data);
  rec_server_free(srv);
  done_dir();
#endif
}

void test_unix_listen_and_connect_are_eafnosupport_on_windows(void) {
#ifndef _WIN32
  SKIPF("Windows only: this build has unix-domain sockets");
#else
  ioc_core_t *core;
  make_core(&core);
  const char *addr = "unix:C:\\iocore-test.sock";
  ioc_listener_t *l = NULL;
  ASSERT_ERR(ioc_listen(core, addr, strlen(addr), NULL, NULL, NULL, &l), IOC_EAFNOSUPPORT);
  ioc_session_callbacks_t cbs = rec_callbacks();
  ASSERT_ERR(ioc_connect(core, addr, strlen(addr), &cbs, NULL, NULL, NULL), IOC_EAFNOSUPPORT);
  ASSERT_EQ(core_stats(core).sockets, 0);
  ASSERT_CORE_CLEAN(core);
#endif
}

/* A client that bound a name of its own is seen by that name. */
void test_unix_accepted_peer_is_the_name_a_client_bound(void) {
  NEED_UNIX();
#ifndef _WIN32
  unix_case_t u;
  ioc_core_t *core = unix_case_start(&u, "named.sock");
  char text[IOC_ADDRSTRLEN];
  rec_server_t *srv = rec_server_new(0, 0);
  ioc_listener_t *l = unix_case_listen(&u, srv);
  char caddr[IOC_ADDRSTRLEN], cpath[IOC_ADDRSTRLEN];
  unix_addr(caddr, sizeof caddr, "client.sock", cpath, sizeof cpath);
  int c = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = os_unix_addr(cpath);
  ASSERT(c >= 0 && bind(c, (struct sockaddr *)&sa, sizeof sa) == 0);
  sa = os_unix_addr(u.path);
  ASSERT(connect(c, (struct sockaddr *)&sa, sizeof sa) == 0);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].opens) == 1, 5000);
  /* a reference of our own while we read it: the session's end (after
   * close(c) below) then frees it only after our release, which TSan sees */
  ioc_session_t *ss = srv->recs[0].s;
  ioc_session_retain(ss);
  addr_text(ioc_session_peer(ss), text);
  ioc_session_release(ss);
  ASSERT_STR_EQ(text, caddr);
  close(c);
  WAIT_UNTIL(core, atomic_load(&srv->recs[0].closes) == 1, 5000);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
  done_dir();
#endif
}
