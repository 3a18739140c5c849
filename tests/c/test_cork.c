/* Corking (ioc_session_cork / ioc_session_uncork): corked sends queue
 * without a write; uncorking writes them, in order, with no on_drain for
 * the wait the cork made; IOC_CORK_MAX queued bytes start the write
 * anyway; close and shutdown write what a cork holds. */
#include "rec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A listener with a rec server, one plain client connected to it, and the
 * server's session of that client. */
typedef struct corked {
  ioc_core_t *core;
  rec_server_t *srv;
  ioc_listener_t *l;
  sock_t c;
  ioc_session_t *s;
} corked_t;

static void corked_open(corked_t *t) {
  make_core(&t->core);
  t->srv = rec_server_new(0, 0);
  t->l = listen_loopback(t->core, NULL, rec_server_accept, t->srv);
  t->c = tcp_connect(ioc_listener_address(t->l));
  ASSERT(t->c != BAD_SOCK);
  sock_set_timeouts(t->c, 10000);
  WAIT_UNTIL(t->core, atomic_load(&t->srv->recs[0].opens) == 1, 5000);
  t->s = atomic_load(&t->srv->recs[0].s);
}

static void corked_close(corked_t *t) {
  sock_close(t->c);
  ioc_listener_close(t->l);
  ASSERT_CORE_CLEAN(t->core);
  rec_server_free(t->srv);
}

/* Bytes the client can read right now (none: 0), while the core runs. */
static size_t readable_now(corked_t *t, char *buf, size_t cap) {
  sock_set_nonblock(t->c, true);
  long n = sock_recv(t->c, buf, cap);
  sock_set_nonblock(t->c, false);
  if (n == IOC_EAGAIN) return 0;
  ASSERT_MSG(n > 0, "client recv: %ld (%s)", n, n < 0 ? ioc_err_name((int)n) : "EOF");
  return (size_t)n;
}

void test_corked_sends_wait_for_uncork_then_arrive_in_order(void) {
  corked_t t;
  corked_open(&t);
  ioc_session_cork(t.s);
  ASSERT_OK(ioc_session_send(t.s, "one ", 4));
  ASSERT_OK(ioc_session_send(t.s, "two ", 4));
  ASSERT_OK(ioc_session_send(t.s, "three", 5));
  pump_for(t.core, 150);
  char buf[64];
  ASSERT_MSG(readable_now(&t, buf, sizeof buf) == 0, "a corked session wrote before its uncork");
  ASSERT_EQ(ioc_session_pending(t.s), 13);
  ioc_session_uncork(t.s);
  size_t got = 0;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (got < 13 && now_ms() < dl) {
    got += readable_now(&t, buf + got, sizeof buf - got);
    if (got < 13) pump(t.core, 5);
  }
  ASSERT_EQ(got, 13);
  ASSERT(memcmp(buf, "one two three", 13) == 0);
  WAIT_UNTIL(t.core, ioc_session_pending(t.s) == 0, 5000);
  pump_for(t.core, 50);
  /* the cork, not the socket, held those bytes: no on_drain is owed */
  ASSERT_EQ(atomic_load(&t.srv->recs[0].drains), 0);
  ioc_session_close(t.s);
  sock_shutdown_write(t.c);
  WAIT_UNTIL(t.core, atomic_load(&t.srv->recs[0].closes) == 1, 5000);
  corked_close(&t);
}

void test_cork_starts_the_write_once_cork_max_bytes_are_queued(void) {
  ASSERT_C_API_DOC_SAYS("`IOC_CORK_MAX` (%d KiB)", IOC_CORK_MAX / 1024);
  corked_t t;
  corked_open(&t);
  size_t n = IOC_CORK_MAX;
  char *data = malloc(n), *in = malloc(n);
  ASSERT(data && in);
  pattern_fill(7, 0, data, n);
  ioc_session_cork(t.s);
  ASSERT_OK(ioc_session_send(t.s, data, n / 2));
  pump_for(t.core, 100);
  ASSERT_MSG(readable_now(&t, in, n) == 0, "half of IOC_CORK_MAX was written while corked");
  ASSERT_OK(ioc_session_send(t.s, data + n / 2, n - n / 2));
  /* still corked: IOC_CORK_MAX queued bytes go out all the same */
  size_t got = 0;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (got < n && now_ms() < dl) {
    got += readable_now(&t, in + got, n - got);
    if (got < n) pump(t.core, 5);
  }
  ASSERT_EQ(got, n);
  ASSERT_EQ(pattern_check(7, 0, in, n), -1);
  ioc_session_uncork(t.s);
  ioc_session_close(t.s);
  sock_shutdown_write(t.c);
  WAIT_UNTIL(t.core, atomic_load(&t.srv->recs[0].closes) == 1, 5000);
  free(data);
  free(in);
  corked_close(&t);
}

/* Close (shut == false) or shutdown (true) of a corked session: the queued
 * bytes are written, then the FIN; nothing is lost to the cork. */
static void closing_writes_what_the_cork_held(bool shut) {
  corked_t t;
  corked_open(&t);
  ioc_session_cork(t.s);
  ASSERT_OK(ioc_session_send(t.s, "held by the cork", 16));
  if (shut)
    ASSERT_OK(ioc_session_shutdown(t.s));
  else
    ioc_session_close(t.s);
  char buf[64];
  size_t got = 0;
  bool eof = false;
  uint64_t dl = now_ms() + (uint64_t)scaled_ms(5000);
  while (!eof && now_ms() < dl) {
    sock_set_nonblock(t.c, true);
    long r = sock_recv(t.c, buf + got, sizeof buf - got);
    sock_set_nonblock(t.c, false);
    if (r > 0) got += (size_t)r;
    else if (r == 0) eof = true;
    else if (r == IOC_EAGAIN) pump(t.core, 5);
    else FAILF("client recv: %s", ioc_err_name((int)r));
  }
  ASSERT_MSG(eof, "no FIN within 5 s (got %zu bytes)", got);
  ASSERT_EQ(got, 16);
  ASSERT(memcmp(buf, "held by the cork", 16) == 0);
  sock_shutdown_write(t.c); /* the graceful end waits for our FIN */
  WAIT_UNTIL(t.core, atomic_load(&t.srv->recs[0].closes) == 1, 5000);
  ASSERT_ERR(t.srv->recs[0].close_err, 0);
  corked_close(&t);
}

void test_close_of_a_corked_session_writes_what_it_held(void) { closing_writes_what_the_cork_held(false); }

void test_shutdown_of_a_corked_session_writes_what_it_held(void) { closing_writes_what_the_cork_held(true); }
