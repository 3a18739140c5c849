/* Sessions with framing (ioc_session_options_t.framing): one on_recv per
 * message however the bytes arrived, empty messages delivered, the limit
 * enforced as soon as it is passed (IOC_EMSGSIZE), pause/resume between
 * messages, and ioc_session_send_frame. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

#define FR_MAX_MSGS 64

typedef struct fr_state {
  char msgs[FR_MAX_MSGS][80];
  size_t lens[FR_MAX_MSGS];
  atomic_int n;
  atomic_int closes;
  atomic_int close_err;
  atomic_int pause_after; /* pause in on_recv after this many messages (0: never); set while sessions run */
  ioc_session_t *s;
} fr_state_t;

static fr_state_t fr;

static bool fr_close_on_recv;

static void fr_recv(ioc_session_t *s, const char *data, size_t len) {
  int i = atomic_load(&fr.n);
  ASSERT(i < FR_MAX_MSGS && len < sizeof fr.msgs[0]);
  memcpy(fr.msgs[i], data, len);
  fr.msgs[i][len] = 0;
  fr.lens[i] = len;
  atomic_store(&fr.n, i + 1);
  int pa = atomic_load(&fr.pause_after);
  if (pa && i + 1 == pa) ioc_session_pause(s);
  if (fr_close_on_recv) ioc_session_close(s);
}
static void fr_close(ioc_session_t *s, int err) {
  (void)s;
  atomic_store(&fr.close_err, err);
  atomic_fetch_add(&fr.closes, 1);
}
static void fr_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  ioc_session_callbacks_t cb = callbacks(NULL, fr_recv, NULL, fr_close);
  ioc_session_set_callbacks(s, &cb, NULL);
  fr.s = s;
}

static ioc_listener_t *framed_listener(ioc_core_t *core, int kind, size_t max, const char *delim,
                                       ioc_addr_t *addr) {
  memset(&fr, 0, sizeof fr);
  ioc_listener_options_t o;
  memset(&o, 0, sizeof o);
  o.session.framing.kind = kind;
  o.session.framing.max = max;
  /* a close that stalls shows as a test time-out, not as a late clean end */
  o.session.close_timeout_ms = 60000;
  if (delim) {
    o.session.framing.delimiter_len = strlen(delim);
    memcpy(o.session.framing.delimiter, delim, strlen(delim));
  }
  ioc_listener_t *l = listen_loopback(core, &o, fr_accept, NULL);
  *addr = *ioc_listener_address(l);
  return l;
}

/* Sends stream from a fresh client in one piece (step 0) or `step`-byte
 * pieces with a dispatch between them; waits for `want` messages. */
static sock_t send_stream(ioc_core_t *core, const ioc_addr_t *addr, const char *stream, size_t n,
                          size_t step, int want) {
  atomic_store(&fr.n, 0);
  sock_t c = tcp_connect(addr);
  sock_set_nodelay(c);
  for (size_t off = 0; off < n;) {
    size_t k = step && step < n - off ? step : n - off;
    ASSERT_OK(sock_send_all(c, stream + off, k));
    off += k;
    if (step) pump_for(core, 1);
  }
  WAIT_UNTIL(core, atomic_load(&fr.n) >= want, 10000);
  return c;
}

static void expect_msgs(const char *const *want, int nwant, const char *what) {
  ASSERT_MSG(atomic_load(&fr.n) == nwant, "%s: %d messages, expected %d", what, atomic_load(&fr.n),
             nwant);
  for (int i = 0; i < nwant; i++)
    ASSERT_MSG(fr.lens[i] == strlen(want[i]) && strcmp(fr.msgs[i], want[i]) == 0,
               "%s: message %d is \"%s\", expected \"%s\"", what, i, fr.msgs[i], want[i]);
}

/* ---- framed_session_one_on_recv_per_message_split_at_every_byte ---------------------- */

void test_framed_session_one_on_recv_per_message_split_at_every_byte(void) {
  static const char *lines[] = {"hello", "", "crlf", "last"};
  static const char *delimited[] = {"a", "", "bcd"};
  static const char *framed[] = {"one", "", "three"};
  const char len2[] = "\0\3one\0\0\0\5three";
  const char len4[] = "\0\0\0\3one\0\0\0\0\0\0\0\5three";
  struct {
    int kind;
    const char *delim;
    const char *stream;
    size_t n;
    const char *const *want;
    int nwant;
  } cases[] = {
      {IOC_FRAMING_LINE, NULL, "hello\n\ncrlf\r\nlast\n", 18, lines, 4},
      {IOC_FRAMING_DELIMITER, "||", "a||||bcd||", 10, delimited, 3},
      {IOC_FRAMING_LEN2, NULL, len2, sizeof len2 - 1, framed, 3},
      {IOC_FRAMING_LEN4, NULL, len4, sizeof len4 - 1, framed, 3},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    ioc_core_t *core;
    make_core(&core);
    ioc_addr_t addr;
    ioc_listener_t *l = framed_listener(core, cases[k].kind, 0, cases[k].delim, &addr);
    for (size_t step = 0; step <= 1; step++) {
      sock_t c = send_stream(core, &addr, cases[k].stream, cases[k].n, step, cases[k].nwant);
      pump_for(core, 20); /* nothing more comes */
      char what[64];
      snprintf(what, sizeof what, "kind %d, %s", cases[k].kind, step ? "byte by byte" : "at once");
      expect_msgs(cases[k].want, cases[k].nwant, what);
      sock_close(c);
      WAIT_UNTIL(core, core_stats(core).active == 0, 10000);
    }
    ioc_listener_close(l);
    ASSERT_CORE_CLEAN(core);
  }
}

/* ---- framed_session_max_is_taken_and_max_plus_one_fails_with_emsgsize -------------------- */

void test_framed_session_max_is_taken_and_max_plus_one_fails_with_emsgsize(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_addr_t addr;
  /* a line of exactly max bytes is a message; one more byte with no "\n" is not */
  ioc_listener_t *l = framed_listener(core, IOC_FRAMING_LINE, 8, NULL, &addr);
  sock_t c = send_stream(core, &addr, "12345678\r\n123456789", 19, 0, 1);
  WAIT_UNTIL(core, atomic_load(&fr.closes) == 1, 10000);
  ASSERT_EQ(atomic_load(&fr.close_err), IOC_EMSGSIZE);
  static const char *one[] = {"12345678"};
  expect_msgs(one, 1, "line max");
  sock_close(c);
  ioc_listener_close(l);
  WAIT_UNTIL(core, core_stats(core).active == 0, 10000);
  /* a length prefix of max + 1 fails at once, before any payload */
  l = framed_listener(core, IOC_FRAMING_LEN2, 8, NULL, &addr);
  c = send_stream(core, &addr, "\0\x08" "abcdefgh" "\0\x09", 12, 0, 1);
  WAIT_UNTIL(core, atomic_load(&fr.closes) == 1, 10000);
  ASSERT_EQ(atomic_load(&fr.close_err), IOC_EMSGSIZE);
  static const char *eight[] = {"abcdefgh"};
  expect_msgs(eight, 1, "len2 max");
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- framed_session_pause_in_on_recv_holds_later_messages_until_resume ------------------- */

void test_framed_session_pause_in_on_recv_holds_later_messages_until_resume(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_addr_t addr;
  ioc_listener_t *l = framed_listener(core, IOC_FRAMING_LINE, 0, NULL, &addr);
  fr.pause_after = 1;
  sock_t c = send_stream(core, &addr, "a\nb\nc\n", 6, 0, 1); /* one packet, three lines */
  pump_for(core, 100);
  ASSERT_EQ(atomic_load(&fr.n), 1);
  ASSERT(ioc_session_paused(fr.s));
  fr.pause_after = 2;
  ioc_session_resume(fr.s);
  WAIT_UNTIL(core, atomic_load(&fr.n) == 2, 10000);
  pump_for(core, 100);
  ASSERT_EQ(atomic_load(&fr.n), 2);
  /* bytes that arrive while paused queue behind the kept ones */
  ASSERT_OK(sock_send_all(c, "d\n", 2));
  pump_for(core, 50);
  fr.pause_after = 0;
  ioc_session_resume(fr.s);
  WAIT_UNTIL(core, atomic_load(&fr.n) == 4, 10000);
  static const char *all[] = {"a", "b", "c", "d"};
  expect_msgs(all, 4, "after resume");
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- framed_session_closed_in_on_recv_ends_cleanly_without_more_messages ---------------- */

void test_framed_session_closed_in_on_recv_ends_cleanly_without_more_messages(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_addr_t addr;
  ioc_listener_t *l = framed_listener(core, IOC_FRAMING_LINE, 0, NULL, &addr);
  fr_close_on_recv = true;
  sock_t c = send_stream(core, &addr, "quit\nnot delivered\n", 19, 0, 1);
  /* the close is graceful: the client reads EOF, and once it closes too
   * the session ends clean (no close time-out, no reset) */
  sock_set_nonblock(c, true);
  long got = IOC_EAGAIN;
  char b[16];
  uint64_t deadline = now_ms() + (uint64_t)scaled_ms(3000);
  while (got == IOC_EAGAIN && now_ms() < deadline) {
    pump_for(core, 5);
    got = sock_recv(c, b, sizeof b);
  }
  ASSERT_MSG(got == 0, "the client read %ld, expected the server's FIN", got);
  sock_close(c);
  WAIT_UNTIL(core, atomic_load(&fr.closes) == 1, 3000);
  ASSERT_EQ(atomic_load(&fr.close_err), 0);
  ASSERT_EQ(atomic_load(&fr.n), 1);
  fr_close_on_recv = false;
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- send_frame_prefixes_length_framed_sessions_only ------------------------------------ */

static void frame_echo_recv(ioc_session_t *s, const char *data, size_t len) {
  fr_recv(s, data, len);
  ASSERT_OK(ioc_session_send_frame(s, data, len));
}

static void frame_echo_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  fr_accept(l, s, ud);
  ioc_session_callbacks_t cb = callbacks(NULL, frame_echo_recv, NULL, fr_close);
  ioc_session_set_callbacks(s, &cb, NULL);
}

void test_send_frame_prefixes_length_framed_sessions_only(void) {
  ioc_core_t *core;
  make_core(&core);
  memset(&fr, 0, sizeof fr);
  ioc_listener_options_t o;
  memset(&o, 0, sizeof o);
  o.session.framing.kind = IOC_FRAMING_LEN2;
  ioc_listener_t *l = listen_loopback(core, &o, frame_echo_accept, NULL);
  /* an outbound session framed with LEN2 too: it receives the echo as messages */
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.framing.kind = IOC_FRAMING_LEN2;
  char a[IOC_ADDRSTRLEN];
  listener_addr_str(l, a);
  ioc_session_callbacks_t cb = callbacks(NULL, fr_recv, NULL, NULL);
  ioc_session_t *out;
  ASSERT_OK(ioc_connect(core, a, strlen(a), &cb, NULL, &so, &out));
  ASSERT_OK(ioc_session_send_frame(out, "ping", 4));
  ASSERT_OK(ioc_session_send_frame(out, "", 0));
  WAIT_UNTIL(core, atomic_load(&fr.n) == 4, 10000); /* 2 at the server, 2 echoed */
  ASSERT_STR_EQ(fr.msgs[0], "ping");
  ASSERT_EQ(fr.lens[1], 0);
  ASSERT_STR_EQ(fr.msgs[2], "ping");
  ASSERT_EQ(fr.lens[3], 0);
  static char big[65536];
  ASSERT_ERR(ioc_session_send_frame(out, big, sizeof big), IOC_EMSGSIZE);
  ioc_session_close(out);
  ioc_session_release(out);
  /* an unframed session has no frames to send */
  ioc_session_t *plain;
  cb = callbacks(NULL, NULL, NULL, NULL);
  ASSERT_OK(ioc_connect(core, a, strlen(a), &cb, NULL, NULL, &plain));
  ASSERT_ERR(ioc_session_send_frame(plain, "x", 1), IOC_EINVAL);
  ioc_session_close(plain);
  ioc_session_release(plain);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}

/* ---- framing_options_are_checked --------------------------------------------------------- */

void test_framing_options_are_checked(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_options_t o;
  ioc_listener_t *l;
  memset(&o, 0, sizeof o);
  o.session.framing.kind = 99;
  ASSERT_ERR(ioc_listen(core, "127.0.0.1:0", 11, &o, NULL, NULL, &l), IOC_EINVAL);
  o.session.framing.kind = IOC_FRAMING_DELIMITER; /* with no delimiter */
  ASSERT_ERR(ioc_listen(core, "127.0.0.1:0", 11, &o, NULL, NULL, &l), IOC_EINVAL);
  o.session.framing.delimiter_len = IOC_FRAMING_DELIMITER_MAX + 1;
  ASSERT_ERR(ioc_listen(core, "127.0.0.1:0", 11, &o, NULL, NULL, &l), IOC_EINVAL);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.framing.kind = -1;
  ioc_session_t *s;
  ASSERT_ERR(ioc_connect(core, "127.0.0.1:9", 11, NULL, NULL, &so, &s), IOC_EINVAL);
  ASSERT_CORE_CLEAN(core);
}

/* ---- framing_constants_match_the_docs ---------------------------------------------------- */

void test_framing_constants_match_the_docs(void) {
  ASSERT_C_API_DOC_SAYS("`IOC_FRAMING_DEFAULT_MAX` (%d)", IOC_FRAMING_DEFAULT_MAX);
  ASSERT_C_API_DOC_SAYS("`IOC_FRAMING_DELIMITER_MAX` (%d)", IOC_FRAMING_DELIMITER_MAX);
}

/* ---- framed_session_end_marks_follow_each_receives_messages ------------------------------ */

/* The order of what a framed session saw: each message, "|" for an end
 * mark, "X" for on_close. */
/* atomic chars: the callbacks write it on workers, the test reads it after
 * waiting on the counters below (a socket's order is invisible to TSan) */
#define EM_LOG_MAX 256
static atomic_char em_log[EM_LOG_MAX];
static atomic_int em_len;
/* written after the log (read first by the test thread, so the log it reads
 * is complete): messages seen, the last entry is a mark, closed */
static atomic_int em_msgs, em_last_mark, em_closed;

static void em_add(const char *p, size_t n) {
  int at = atomic_load(&em_len);
  ASSERT((size_t)at + n < EM_LOG_MAX);
  for (size_t i = 0; i < n; i++) atomic_store(&em_log[at + (int)i], p[i]);
  atomic_store(&em_log[at + (int)n], 0);
  atomic_store(&em_len, at + (int)n);
}
/* The log as a string, and without its marks. */
static char em_text[EM_LOG_MAX], em_plain[EM_LOG_MAX];
static void em_read(void) {
  size_t k = 0, j = 0;
  for (char ch; (ch = atomic_load(&em_log[k])) != 0; k++) {
    em_text[k] = ch;
    if (ch != '|') em_plain[j++] = ch;
  }
  em_text[k] = 0;
  em_plain[j] = 0;
}
static void em_recv(ioc_session_t *s, const char *data, size_t len) {
  (void)s;
  if (data) {
    em_add(data, len);
    atomic_fetch_add(&em_msgs, 1);
  } else {
    em_add("|", 1);
  }
  atomic_store(&em_last_mark, data == NULL);
}
static void em_close(ioc_session_t *s, int err) {
  (void)s;
  atomic_store(&fr.close_err, err);
  em_add("X", 1);
  atomic_store(&em_closed, 1);
}
void test_framed_session_end_marks_follow_each_receives_messages(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_options_t o;
  memset(&o, 0, sizeof o);
  o.session.framing.kind = IOC_FRAMING_LINE;
  o.session.framing.max = 8;
  o.session.framing.end_marks = 1;
  ioc_session_callbacks_t cb = callbacks(NULL, em_recv, NULL, em_close);
  ioc_listener_t *l = listen_loopback(core, &o, accept_with_callbacks, &cb);
  ioc_addr_t addr = *ioc_listener_address(l);
  atomic_store(&em_len, 0);
  atomic_store(&em_msgs, 0);
  atomic_store(&em_last_mark, 0);
  atomic_store(&em_closed, 0);
  atomic_store(&em_log[0], 0);
  sock_t c = tcp_connect(&addr);
  /* three lines, in one receive unless the machine splits them: the
   * messages, each run of them followed by a mark */
  ASSERT_OK(sock_send_all(c, "a\nb\nc\n", 6));
  WAIT_UNTIL(core, atomic_load(&em_msgs) == 3 && atomic_load(&em_last_mark), 10000);
  em_read();
  ASSERT_STR_EQ(em_plain, "abc");
  ASSERT(em_text[0] != '|');
  /* a message over max: the messages before it and a mark, then the close */
  ASSERT_OK(sock_send_all(c, "d\n123456789", 11));
  WAIT_UNTIL(core, atomic_load(&em_closed), 10000);
  em_read();
  ASSERT_STR_EQ(em_plain, "abcdX");
  size_t n = strlen(em_text);
  ASSERT_MSG(n >= 2 && em_text[n - 2] == '|', "no mark before the close: \"%s\"", em_text);
  ASSERT_EQ(atomic_load(&fr.close_err), IOC_EMSGSIZE);
  sock_close(c);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}
