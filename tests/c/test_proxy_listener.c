/* Listeners with proxy_protocol: the PROXY header is read before on_accept,
 * the session's addresses come from it, the bytes after it are the first
 * on_recv however they arrived, and a bad, missing or late header closes
 * the connection unannounced and counted. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

#include "proxy.h"

typedef struct pl_state {
  atomic_int accepts, opens, closes;
  /* Under lock: written by on_accept on a worker, read by the test, and
   * written again by the next client's accept. */
  test_mutex_t lock;
  char peer[IOC_ADDRSTRLEN], local[IOC_ADDRSTRLEN];
  char data[256];
  atomic_size_t len;
} pl_state_t;

static pl_state_t pl;

static void pl_open(ioc_session_t *s, int err) {
  (void)s;
  ASSERT_EQ(err, 0);
  ASSERT_EQ(atomic_load(&pl.accepts), atomic_load(&pl.opens) + 1); /* after on_accept */
  atomic_fetch_add(&pl.opens, 1);
}
static void pl_recv(ioc_session_t *s, const char *data, size_t len) {
  size_t have = atomic_load(&pl.len);
  ASSERT(have + len < sizeof pl.data);
  memcpy(pl.data + have, data, len);
  atomic_store(&pl.len, have + len);
  ASSERT_OK(ioc_session_send(s, data, len)); /* echo */
}
static void pl_close(ioc_session_t *s, int err) {
  (void)s;
  (void)err;
  atomic_fetch_add(&pl.closes, 1);
}
static void pl_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  ASSERT(ud == &pl);
  mutex_lock(&pl.lock);
  ASSERT(ioc_addr_format(ioc_session_peer(s), pl.peer, sizeof pl.peer) > 0);
  ASSERT(ioc_addr_format(ioc_session_local(s), pl.local, sizeof pl.local) > 0);
  mutex_unlock(&pl.lock);
  ioc_session_callbacks_t cb = callbacks(pl_open, pl_recv, NULL, pl_close);
  ioc_session_set_callbacks(s, &cb, NULL);
  atomic_fetch_add(&pl.accepts, 1);
}

static ioc_listener_t *proxy_listener(ioc_core_t *core, ioc_addr_t *addr) {
  memset(&pl, 0, sizeof pl);
  mutex_init(&pl.lock);
  ioc_listener_options_t o;
  memset(&o, 0, sizeof o);
  o.proxy_protocol = 1;
  ioc_listener_t *l = listen_loopback(core, &o, pl_accept, &pl);
  *addr = *ioc_listener_address(l);
  return l;
}

static size_t build(int version, const char *src, const char *dst, char *buf, size_t size) {
  ioc__proxy_result_t r;
  memset(&r, 0, sizeof r);
  r.version = version;
  r.command = IOC__PROXY_PROXY;
  r.has_addrs = 1;
  ASSERT_OK(ioc_addr_parse(&r.src, src, strlen(src)));
  ASSERT_OK(ioc_addr_parse(&r.dst, dst, strlen(dst)));
  int n = ioc__proxy_build(version, &r, buf, size);
  ASSERT(n > 0);
  return (size_t)n;
}

/* One client: sends stream[0, n) in pieces of `step` bytes (0: at once),
 * then expects the echo of the application's `app` bytes. */
static void run_client(ioc_core_t *core, const ioc_addr_t *addr, const char *stream, size_t n,
                       size_t step, const char *app, const char *want_peer, const char *want_local) {
  int accepts0 = atomic_load(&pl.accepts), closes0 = atomic_load(&pl.closes);
  atomic_store(&pl.len, 0);
  sock_t c = tcp_connect(addr);
  sock_set_nodelay(c);
  sock_set_timeouts(c, scaled_ms(10000));
  for (size_t off = 0; off < n;) {
    size_t k = step && step < n - off ? step : n - off;
    ASSERT_OK(sock_send_all(c, stream + off, k));
    off += k;
    if (step) pump_for(core, 2); /* let each piece be a read of its own */
  }
  size_t alen = strlen(app);
  WAIT_UNTIL(core, atomic_load(&pl.len) == alen, 10000);
  ASSERT_EQ(atomic_load(&pl.accepts), accepts0 + 1);
  ASSERT(memcmp(pl.data, app, alen) == 0);
  char peer[IOC_ADDRSTRLEN], local[IOC_ADDRSTRLEN];
  mutex_lock(&pl.lock);
  memcpy(peer, pl.peer, sizeof peer);
  memcpy(local, pl.local, sizeof local);
  mutex_unlock(&pl.lock);
  ASSERT_STR_EQ(peer, want_peer);
  ASSERT_STR_EQ(local, want_local);
  char back[64];
  ASSERT_OK(sock_recv_exact(c, back, alen));
  ASSERT(memcmp(back, app, alen) == 0);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&pl.closes) == closes0 + 1, 10000);
}

/* ---- proxy_listener_v1_and_v2_peer_is_the_client_and_data_follows ------------------- */

void test_proxy_listener_v1_and_v2_peer_is_the_client_and_data_follows(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_addr_t addr;
  ioc_listener_t *l = proxy_listener(core, &addr);
  char stream[256];
  for (int version = 1; version <= 2; version++) {
    /* header and data in one packet */
    size_t h = build(version, "192.0.2.1:56324", "198.51.100.7:443", stream, sizeof stream);
    memcpy(stream + h, "hello", 5);
    run_client(core, &addr, stream, h + 5, 0, "hello", "192.0.2.1:56324", "198.51.100.7:443");
    /* IPv6, header split in one-byte pieces, then the data */
    h = build(version, "[2001:db8::1]:50000", "[2001:db8::2]:8443", stream, sizeof stream);
    memcpy(stream + h, "split!", 6);
    run_client(core, &addr, stream, h + 6, 1, "split!", "[2001:db8::1]:50000",
               "[2001:db8::2]:8443");
  }
  /* v1 UNKNOWN: valid, and the session keeps its real addresses */
  const char *unk = "PROXY UNKNOWN\r\nabc";
  char real_local[IOC_ADDRSTRLEN];
  listener_addr_str(l, real_local);
  mutex_lock(&pl.lock);
  memset(pl.peer, 0, sizeof pl.peer);
  mutex_unlock(&pl.lock);
  sock_t probe = tcp_connect(&addr); /* learn what a real peer looks like: 127.0.0.1 */
  sock_close(probe);
  atomic_store(&pl.len, 0);
  sock_t c = tcp_connect(&addr);
  sock_set_timeouts(c, scaled_ms(10000));
  char want_peer[IOC_ADDRSTRLEN];
  snprintf(want_peer, sizeof want_peer, "127.0.0.1:%d", sock_local_port(c));
  ASSERT_OK(sock_send_all(c, unk, strlen(unk)));
  WAIT_UNTIL(core, atomic_load(&pl.len) == 3, 10000);
  mutex_lock(&pl.lock);
  char peer[IOC_ADDRSTRLEN], local[IOC_ADDRSTRLEN];
  memcpy(peer, pl.peer, sizeof peer);
  memcpy(local, pl.local, sizeof local);
  mutex_unlock(&pl.lock);
  ASSERT_STR_EQ(peer, want_peer);
  ASSERT_STR_EQ(local, real_local);
  sock_close(c);
  WAIT_UNTIL(core, core_stats(core).active == 0, 10000);
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.accepted, 5);      /* the probe without a header is not one */
  ASSERT_EQ(st.proxy_rejected, 1); /* the probe: the stream ended before a header */
  ASSERT_EQ(atomic_load(&pl.accepts), 5);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- proxy_listener_bad_headers_close_unannounced_and_counted ----------------------- */

/* Sends bytes (then FIN when fin) and expects the server to end the
 * connection without on_accept. */
static void expect_refused(ioc_core_t *core, const ioc_addr_t *addr, const void *bytes, size_t n,
                           bool fin, const char *what) {
  uint64_t rejected0 = core_stats(core).proxy_rejected;
  sock_t c = tcp_connect(addr);
  sock_set_timeouts(c, scaled_ms(10000));
  ASSERT_OK(sock_send_all(c, bytes, n));
  if (fin) sock_shutdown_write(c);
  char b[16];
  long got = IOC_EAGAIN;
  sock_set_nonblock(c, true);
  uint64_t deadline = now_ms() + (uint64_t)scaled_ms(10000);
  while (got == IOC_EAGAIN) {
    ASSERT_MSG(now_ms() < deadline, "%s: the connection stayed open", what);
    pump_for(core, 5);
    got = sock_recv(c, b, sizeof b);
  }
  ASSERT_MSG(got == 0 || got == IOC_ECONNRESET, "%s: the client read %ld", what, got);
  WAIT_UNTIL(core, core_stats(core).proxy_rejected == rejected0 + 1, 10000);
  ASSERT_MSG(atomic_load(&pl.accepts) == 0, "%s: on_accept ran", what);
  sock_close(c);
  WAIT_UNTIL(core, core_stats(core).active == 0, 10000);
}

void test_proxy_listener_bad_headers_close_unannounced_and_counted(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_addr_t addr;
  ioc_listener_t *l = proxy_listener(core, &addr);
  /* wrong signature: a client talking straight to the server */
  expect_refused(core, &addr, "GET / HTTP/1.1\r\n\r\n", 18, false, "no header");
  /* an over-long v1 line (no CRLF within 107 bytes) */
  char longv1[200] = "PROXY TCP4 ";
  memset(longv1 + 11, '1', sizeof longv1 - 11);
  expect_refused(core, &addr, longv1, sizeof longv1, false, "over-long v1");
  /* truncated: half a v1 header, then the client's FIN */
  expect_refused(core, &addr, "PROXY TCP4 192.0.2.1 ", 21, true, "truncated v1");
  /* truncated v2: signature only, then FIN */
  static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  expect_refused(core, &addr, sig, sizeof sig, true, "truncated v2");
  /* v2 with an unknown family (0x4_) */
  unsigned char v2[16 + 12];
  memcpy(v2, sig, 12);
  v2[12] = 0x21;
  v2[13] = 0x41;
  v2[14] = 0;
  v2[15] = 12;
  memset(v2 + 16, 1, 12);
  expect_refused(core, &addr, v2, sizeof v2, false, "v2 unknown family");
  /* v2 oversized: a length above the cap */
  v2[13] = 0x11;
  v2[14] = (unsigned char)((IOC__PROXY_V2_MAX_PAYLOAD + 1) >> 8);
  v2[15] = (unsigned char)((IOC__PROXY_V2_MAX_PAYLOAD + 1) & 0xff);
  expect_refused(core, &addr, v2, 16, false, "v2 oversized");
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.proxy_rejected, 6);
  ASSERT_EQ(st.accepted, 0);
  ASSERT_EQ(atomic_load(&pl.closes), 0); /* no callback of any kind */
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- proxy_listener_closes_a_silent_connection_at_the_deadline ---------------------- */

void test_proxy_listener_closes_a_silent_connection_at_the_deadline(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_addr_t addr;
  ioc_listener_t *l = proxy_listener(core, &addr);
  sock_t c = tcp_connect(&addr);
  uint64_t t0 = now_ms();
  ASSERT_OK(sock_send_all(c, "PROXY ", 6)); /* a start, never finished */
  WAIT_UNTIL(core, core_stats(core).proxy_rejected == 1, IOC_PROXY_HEADER_TIMEOUT_MS + 10000);
  uint64_t waited = now_ms() - t0;
  ASSERT_MSG(waited + 50 >= IOC_PROXY_HEADER_TIMEOUT_MS, "closed after %llu ms",
             (unsigned long long)waited);
  ASSERT_EQ(atomic_load(&pl.accepts), 0);
  WAIT_UNTIL(core, core_stats(core).active == 0, 10000);
  char b[4];
  long got = sock_recv(c, b, sizeof b);
  ASSERT_MSG(got == 0 || got == IOC_ECONNRESET, "the client read %ld", got);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- proxy_header_timeout_matches_the_docs ------------------------------------------ */

void test_proxy_header_timeout_matches_the_docs(void) {
  ASSERT_C_API_DOC_SAYS("`IOC_PROXY_HEADER_TIMEOUT_MS` (%d ms)", IOC_PROXY_HEADER_TIMEOUT_MS);
  ASSERT_C_API_DOC_SAYS("at most %d bytes", IOC__PROXY_MAX);
}
