/* The session's close path through a backend's optional asynchronous
 * shutdown and close (internal.h: backend->shutdown, backend->close): the
 * core is given a copy of its backend whose two entries make the plain
 * syscalls and report back as a ring would, so the session side is pinned
 * on every backend, with or without the backend's own entries. */
#include "rec.h"

#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#ifndef _WIN32
#include <unistd.h>
#endif

enum { SHUT_ASYNC, SHUT_REFUSE, SHUT_ENOTCONN };

static int g_mode;
static atomic_int g_shutdowns, g_closes;
static ioc__backend_t g_wrapped, g_real;

/* As a ring does: the result comes back later as a completion. */
static int fake_shutdown(ioc_core_t *core, ioc__op_t *op) {
  atomic_fetch_add(&g_shutdowns, 1);
  ASSERT_EQ(op->type, IOC__OP_SHUTDOWN);
  if (g_mode == SHUT_REFUSE) return IOC_ENOMEM; /* nothing started: the session makes the syscall */
  op->res = g_mode == SHUT_ENOTCONN ? IOC_ENOTCONN : ioc__socket_shutdown_write(op->handle->fd);
  ioc__core_defer(core, op);
  return 0;
}

static bool fake_close(ioc_core_t *core, ioc__handle_t *h) {
  atomic_fetch_add(&g_closes, 1);
  if (g_mode == SHUT_REFUSE) return false; /* the caller forgets and closes it */
  g_real.del(core, h);
#ifdef _WIN32
  closesocket(h->fd);
#else
  close(h->fd);
#endif
  return true;
}

static ioc_core_t *wrapped_core(int mode) {
  ioc_core_t *core;
  make_core(&core);
  g_mode = mode;
  atomic_store(&g_shutdowns, 0);
  atomic_store(&g_closes, 0);
  g_real = g_wrapped = *core->backend;
  g_wrapped.shutdown = fake_shutdown;
  g_wrapped.close = fake_close;
  core->backend = &g_wrapped;
  return core;
}

typedef struct reader {
  sock_t s;
  char buf[4000];
  size_t got;
  int err;
  atomic_int done;
} reader_t;

static void reader_main(void *arg) {
  reader_t *rd = (reader_t *)arg;
  rd->err = sock_recv_until_eof(rd->s, rd->buf, sizeof rd->buf, &rd->got);
  atomic_store(&rd->done, 1);
}

/* Reads c until EOF on a thread while the core runs here. */
static void read_to_eof(ioc_core_t *core, sock_t c, reader_t *rd) {
  memset(rd, 0, sizeof *rd);
  rd->s = c;
  test_thread_t *th = thread_start(reader_main, rd);
  WAIT_UNTIL(core, atomic_load(&rd->done), 10000);
  thread_join(th);
  ASSERT_OK(rd->err);
}

/* A request, a reply, close(): the client gets the reply and then EOF, the
 * session ends cleanly. Returns the server's record. */
static void request_reply_close(ioc_core_t *core, rec_server_t *srv, ioc_listener_t *l,
                                bool half) {
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 10000);
  ASSERT_EQ(sock_send_all(c, "GET", 3), 0);
  rec_t *r = &srv->recs[0];
  WAIT_UNTIL(core, atomic_load(&r->total) == 3, 5000);
  char reply[3000];
  pattern_fill(5, 0, reply, sizeof reply);
  ASSERT_OK(ioc_session_send(r->s, reply, sizeof reply));
  if (half)
    ASSERT_OK(ioc_session_shutdown(r->s));
  else
    ioc_session_close(r->s);
  static reader_t rd;
  read_to_eof(core, c, &rd);
  ASSERT_EQ(rd.got, sizeof reply);
  ASSERT_EQ(pattern_check(5, 0, rd.buf, rd.got), -1);
  if (half) {
    /* still open for reading after our FIN */
    ASSERT_EQ(sock_send_all(c, "more", 4), 0);
    WAIT_UNTIL(core, atomic_load(&r->total) == 7, 5000);
    ASSERT_EQ(atomic_load(&r->closes), 0);
  }
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&r->closes) == 1, 10000);
  ASSERT_ERR(r->close_err, 0);
}

static void run_mode(int mode, bool half, int want_shutdowns) {
  ioc_core_t *core = wrapped_core(mode);
  rec_server_t *srv = rec_server_new(1, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  request_reply_close(core, srv, l, half);
  ASSERT_EQ(atomic_load(&g_shutdowns), want_shutdowns);
  ASSERT_EQ(atomic_load(&g_closes), 1);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core); /* stats.sockets 0: a socket the backend took is uncounted once */
  rec_server_free(srv);
}

void test_close_goes_through_the_backends_async_shutdown_and_close(void) {
  run_mode(SHUT_ASYNC, false, 1);
}

void test_half_close_goes_through_the_backends_async_shutdown(void) {
  run_mode(SHUT_ASYNC, true, 1);
}

void test_close_falls_back_to_syscalls_when_the_backend_refuses(void) {
  run_mode(SHUT_REFUSE, false, 1);
}

/* ENOTCONN from the shutdown: the peer is gone, nothing is left to send,
 * so the session ends at once and cleanly (the reply was written before). */
void test_async_shutdown_enotconn_ends_the_session_cleanly(void) {
  ioc_core_t *core = wrapped_core(SHUT_ENOTCONN);
  rec_server_t *srv = rec_server_new(1, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 10000);
  rec_t *r = &srv->recs[0];
  WAIT_UNTIL(core, atomic_load(&r->opens) == 1, 5000);
  ASSERT_OK(ioc_session_send(r->s, "bye", 3));
  ioc_session_close(r->s);
  WAIT_UNTIL(core, atomic_load(&r->closes) == 1, 10000);
  ASSERT_ERR(r->close_err, 0);
  static reader_t rd;
  read_to_eof(core, c, &rd);
  ASSERT_EQ(rd.got, 3);
  ASSERT_EQ(memcmp(rd.buf, "bye", 3), 0);
  sock_close(c);
  ASSERT_EQ(atomic_load(&g_shutdowns), 1);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}

/* The peer's FIN is in and it has acknowledged everything: close() alone
 * sends our FIN and loses nothing, so no separate shutdown is made. The
 * client still sees a clean EOF and the session ends with 0. */
void test_close_after_the_peers_fin_with_nothing_unacked_needs_no_shutdown(void) {
  ioc_core_t *core = wrapped_core(SHUT_ASYNC);
  rec_server_t *srv = rec_server_new(1, 0);
  ioc_listener_t *l = listen_loopback(core, NULL, rec_server_accept, srv);
  sock_t c = tcp_connect(ioc_listener_address(l));
  sock_set_timeouts(c, 10000);
  ASSERT_EQ(sock_send_all(c, "last words", 10), 0);
  sock_shutdown_write(c); /* the server's session has no on_eof: FIN closes it */
  rec_t *r = &srv->recs[0];
  static reader_t rd;
  read_to_eof(core, c, &rd);
  ASSERT_EQ(rd.got, 0);
  WAIT_UNTIL(core, atomic_load(&r->closes) == 1, 10000);
  ASSERT_ERR(r->close_err, 0);
  ASSERT_EQ(atomic_load(&r->total), 10);
  sock_close(c);
#ifdef __linux__
  ASSERT_EQ(atomic_load(&g_shutdowns), 0);
#else
  /* where the kernel does not tell what the peer acknowledged, the FIN
   * goes out with a shutdown and the close waits for the peer's as before */
#endif
  ASSERT_EQ(atomic_load(&g_closes), 1);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
  rec_server_free(srv);
}
