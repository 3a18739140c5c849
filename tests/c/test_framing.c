/* The framing engine (src/net/framing.c): the same messages whatever the
 * feed boundaries, empty messages, the max limit found as early as it can
 * be, zero-copy delivery of whole messages, pause/resume, and the prefix
 * encoder of send_frame. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

#include "framing.h"

/* ---- a collector for emitted messages ------------------------------------------ */

#define MAX_MSGS 256

typedef struct got {
  size_t n;
  char *msg[MAX_MSGS];
  size_t len[MAX_MSGS];
  const char *ptr[MAX_MSGS]; /* where emit pointed */
  ioc__framer_t *pause_in;   /* pause this framer after message pause_after */
  size_t pause_after;
} got_t;

static void collect(void *ud, const char *msg, size_t n) {
  got_t *g = (got_t *)ud;
  ASSERT(msg != NULL);
  ASSERT(g->n < MAX_MSGS);
  g->msg[g->n] = (char *)malloc(n + 1);
  ASSERT(g->msg[g->n] != NULL);
  memcpy(g->msg[g->n], msg, n);
  g->msg[g->n][n] = '\0';
  g->len[g->n] = n;
  g->ptr[g->n] = msg;
  g->n++;
  if (g->pause_in != NULL && g->n == g->pause_after) ioc__framer_pause(g->pause_in);
}

static void got_free(got_t *g) {
  for (size_t i = 0; i < g->n; i++) free(g->msg[i]);
  memset(g, 0, sizeof *g);
}

static void got_equal(const got_t *a, const got_t *b, const char *label) {
  ASSERT_MSG(a->n == b->n, "%s: %zu messages, expected %zu", label, a->n, b->n);
  for (size_t i = 0; i < a->n; i++)
    ASSERT_MSG(a->len[i] == b->len[i] && memcmp(a->msg[i], b->msg[i], a->len[i]) == 0,
               "%s: message %zu differs (\"%s\" vs \"%s\")", label, i, a->msg[i], b->msg[i]);
}

/* Feeds [s, s+n) from an exact heap copy (ASan sees reads past it). */
static int feed(ioc__framer_t *f, const char *s, size_t n, got_t *g) {
  char *copy = (char *)malloc(n ? n : 1);
  ASSERT(copy != NULL);
  memcpy(copy, s, n);
  int rc = ioc__framer_feed(f, copy, n, collect, g);
  free(copy);
  return rc;
}

typedef struct spec {
  ioc__frame_kind_t kind;
  const char *delim;
  const char *name;
} spec_t;

static const spec_t kinds[] = {
    {IOC__FRAME_LINE, NULL, "line"},
    {IOC__FRAME_LEN2, NULL, "length 2"},
    {IOC__FRAME_LEN4, NULL, "length 4"},
    {IOC__FRAME_DELIM, "\r\n\r\n", "delimiter \\r\\n\\r\\n"},
    {IOC__FRAME_DELIM, "|", "delimiter |"},
    {IOC__FRAME_DELIM, "abab", "delimiter abab"},
};

static void init(ioc__framer_t *f, const spec_t *k, size_t max) {
  ASSERT_OK(ioc__framer_init(f, k->kind, max, k->delim, k->delim ? strlen(k->delim) : 0));
}

/* Appends message m framed for kind k to out; returns the new length. */
static size_t frame(const spec_t *k, const char *m, size_t mlen, char *out, size_t at) {
  unsigned char p[4];
  if (k->kind == IOC__FRAME_LEN2 || k->kind == IOC__FRAME_LEN4) {
    int h = ioc__frame_prefix(k->kind, mlen, p);
    ASSERT_GT(h, 0);
    memcpy(out + at, p, (size_t)h);
    at += (size_t)h;
  }
  memcpy(out + at, m, mlen);
  at += mlen;
  if (k->kind == IOC__FRAME_LINE) {
    memcpy(out + at, "\r\n", 2);
    at += 2;
  } else if (k->kind == IOC__FRAME_DELIM) {
    memcpy(out + at, k->delim, strlen(k->delim));
    at += strlen(k->delim);
  }
  return at;
}

/* Messages chosen to straddle every kind of boundary: empty ones, ones
 * holding parts of the delimiters ("\r", "\n\r", "aba"), a bare "\n"-ended
 * line in the line kind (added below). */
static const char *const sample[] = {"hello", "", "x", "a\rb", "aba", "", "\r\n\r", "last one"};

static size_t build_sample(const spec_t *k, char *out, got_t *want) {
  size_t at = 0;
  for (size_t i = 0; i < sizeof sample / sizeof sample[0]; i++) {
    const char *m = sample[i];
    /* a message may not hold its own delimiter */
    if (k->kind == IOC__FRAME_LINE && strchr(m, '\n')) continue;
    if (k->kind == IOC__FRAME_DELIM && strstr(m, k->delim)) continue;
    at = frame(k, m, strlen(m), out, at);
    collect(want, m, strlen(m));
  }
  if (k->kind == IOC__FRAME_LINE) { /* a line ended by "\n" alone */
    memcpy(out + at, "bare\n", 5);
    at += 5;
    collect(want, "bare", 4);
  }
  return at;
}

/* ---- tests ---------------------------------------------------------------------- */

void test_framing_every_split_point_gives_the_same_messages(void) {
  char input[512];
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    got_t want, g;
    memset(&want, 0, sizeof want);
    size_t n = build_sample(&kinds[k], input, &want);
    ioc__framer_t f;
    char label[128];

    /* all at once */
    init(&f, &kinds[k], 0);
    memset(&g, 0, sizeof g);
    ASSERT_OK(feed(&f, input, n, &g));
    snprintf(label, sizeof label, "%s at once", kinds[k].name);
    got_equal(&g, &want, label);
    ASSERT_EQ(ioc__framer_buffered(&f), 0);
    got_free(&g);
    ioc__framer_free(&f);

    /* every pair of split points: three feeds, empty ones included */
    for (size_t i = 0; i <= n; i++) {
      for (size_t j = i; j <= n; j++) {
        init(&f, &kinds[k], 0);
        memset(&g, 0, sizeof g);
        ASSERT_OK(feed(&f, input, i, &g));
        ASSERT_OK(feed(&f, input + i, j - i, &g));
        ASSERT_OK(feed(&f, input + j, n - j, &g));
        snprintf(label, sizeof label, "%s split at %zu and %zu", kinds[k].name, i, j);
        got_equal(&g, &want, label);
        ASSERT_EQ(ioc__framer_buffered(&f), 0);
        got_free(&g);
        ioc__framer_free(&f);
      }
    }

    /* one byte at a time */
    init(&f, &kinds[k], 0);
    memset(&g, 0, sizeof g);
    for (size_t i = 0; i < n; i++) ASSERT_OK(feed(&f, input + i, 1, &g));
    snprintf(label, sizeof label, "%s byte by byte", kinds[k].name);
    got_equal(&g, &want, label);
    got_free(&g);
    ioc__framer_free(&f);
    got_free(&want);
  }
}

void test_framing_delivers_whole_messages_from_the_input_without_copying(void) {
  ioc__framer_t f;
  got_t g;
  memset(&g, 0, sizeof g);
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LINE, 0, NULL, 0));
  char in[] = "one\ntwo\r\nthr";
  ASSERT_OK(ioc__framer_feed(&f, in, strlen(in), collect, &g));
  ASSERT_EQ(g.n, 2);
  ASSERT(g.ptr[0] == in && g.ptr[1] == in + 4); /* pointers into the input */
  ASSERT_EQ(ioc__framer_buffered(&f), 3);       /* only "thr" was copied */
  char in2[] = "ee\nfour\n";
  ASSERT_OK(ioc__framer_feed(&f, in2, strlen(in2), collect, &g));
  ASSERT_EQ(g.n, 4);
  ASSERT_STR_EQ(g.msg[2], "three");
  ASSERT(g.ptr[3] == in2 + 3); /* after the joined one, straight from the input again */
  ASSERT_EQ(ioc__framer_buffered(&f), 0);
  got_free(&g);
  ioc__framer_free(&f);

  /* length prefix: the same */
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LEN2, 0, NULL, 0));
  char bin[] = {0, 2, 'h', 'i', 0, 0, 0, 5, 'h'};
  ASSERT_OK(ioc__framer_feed(&f, bin, sizeof bin, collect, &g));
  ASSERT_EQ(g.n, 2);
  ASSERT(g.ptr[0] == bin + 2 && g.ptr[1] != NULL && g.len[1] == 0);
  ASSERT_EQ(ioc__framer_buffered(&f), 3);
  got_free(&g);
  ioc__framer_free(&f);
}

void test_framing_empty_messages_are_delivered_as_empty_strings(void) {
  ioc__framer_t f;
  got_t g;
  memset(&g, 0, sizeof g);
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LINE, 0, NULL, 0));
  ASSERT_OK(feed(&f, "\n\r\n\n", 4, &g));
  ASSERT_EQ(g.n, 3);
  for (size_t i = 0; i < 3; i++) ASSERT_EQ(g.len[i], 0);
  got_free(&g);
  ioc__framer_free(&f);

  const unsigned char zero4[] = {0, 0, 0, 0, 0, 0, 0, 0};
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LEN4, 0, NULL, 0));
  ASSERT_OK(feed(&f, (const char *)zero4, 8, &g));
  ASSERT_EQ(g.n, 2);
  ASSERT_EQ(g.len[0] + g.len[1], 0);
  got_free(&g);
  ioc__framer_free(&f);

  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_DELIM, 0, "--", 2));
  ASSERT_OK(feed(&f, "----a--", 7, &g));
  ASSERT_EQ(g.n, 3);
  ASSERT_STR_EQ(g.msg[0], "");
  ASSERT_STR_EQ(g.msg[1], "");
  ASSERT_STR_EQ(g.msg[2], "a");
  got_free(&g);
  ioc__framer_free(&f);
}

/* max exactly is fine, max + 1 is EMSGSIZE, for every kind. */
void test_framing_max_is_accepted_and_max_plus_one_is_emsgsize(void) {
  const size_t max = 100;
  char *buf = (char *)malloc(2 * max + 16), *m = (char *)malloc(max + 2);
  ASSERT(buf != NULL && m != NULL);
  memset(m, 'm', max + 1);
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    ioc__framer_t f;
    got_t g;
    memset(&g, 0, sizeof g);
    init(&f, &kinds[k], max);
    size_t n = frame(&kinds[k], m, max, buf, 0);
    ASSERT_OK(feed(&f, buf, n, &g));
    ASSERT_MSG(g.n == 1 && g.len[0] == max, "%s: a message of max bytes", kinds[k].name);
    n = frame(&kinds[k], m, max + 1, buf, 0);
    ASSERT_ERR(feed(&f, buf, n, &g), IOC_EMSGSIZE);
    ASSERT_EQ(g.n, 1);
    /* failed for good: even a fine message is refused now */
    n = frame(&kinds[k], "ok", 2, buf, 0);
    ASSERT_ERR(feed(&f, buf, n, &g), IOC_EMSGSIZE);
    ASSERT_EQ(g.n, 1);
    got_free(&g);
    ioc__framer_free(&f);
  }
  free(buf);
  free(m);
}

/* EMSGSIZE comes as soon as the bytes prove it, not at the message's end. */
void test_framing_too_long_is_known_before_the_message_ends(void) {
  const size_t max = 10;
  ioc__framer_t f;
  got_t g;
  memset(&g, 0, sizeof g);

  /* length prefixes: the prefix alone, even split, decides */
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LEN2, max, NULL, 0));
  ASSERT_OK(feed(&f, "\0", 1, &g));
  ASSERT_ERR(feed(&f, "\x0b", 1, &g), IOC_EMSGSIZE);
  ioc__framer_free(&f);
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LEN4, max, NULL, 0));
  ASSERT_ERR(feed(&f, "\x80\0\0\0", 4, &g), IOC_EMSGSIZE);
  ioc__framer_free(&f);

  /* a line: max bytes wait; a "\r" after them still may end it; anything
   * else is too long at once */
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LINE, max, NULL, 0));
  ASSERT_OK(feed(&f, "0123456789", 10, &g));
  ASSERT_OK(feed(&f, "\r", 1, &g));
  ASSERT_OK(feed(&f, "\n", 1, &g));
  ASSERT_EQ(g.n, 1);
  ASSERT_STR_EQ(g.msg[0], "0123456789");
  ASSERT_OK(feed(&f, "01234567", 8, &g));
  ASSERT_OK(feed(&f, "89", 2, &g));
  ASSERT_ERR(feed(&f, "x", 1, &g), IOC_EMSGSIZE);
  ioc__framer_free(&f);
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LINE, max, NULL, 0));
  ASSERT_ERR(feed(&f, "0123456789\r\r", 12, &g), IOC_EMSGSIZE);
  ioc__framer_free(&f);

  /* a delimiter: past max, only a partial delimiter starting by max keeps
   * the message possible */
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_DELIM, max, "\r\n\r\n", 4));
  ASSERT_OK(feed(&f, "0123456789\r\n\r", 13, &g)); /* 13 bytes > max, yet fine so far */
  ASSERT_OK(feed(&f, "\n", 1, &g));
  ASSERT_EQ(g.n, 2);
  ASSERT_OK(feed(&f, "0123456789\r\n", 12, &g));
  ASSERT_ERR(feed(&f, "x", 1, &g), IOC_EMSGSIZE);
  ioc__framer_free(&f);
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_DELIM, max, "\r\n\r\n", 4));
  ASSERT_ERR(feed(&f, "0123456789x", 11, &g), IOC_EMSGSIZE); /* no wait for a delimiter */
  ioc__framer_free(&f);
  got_free(&g);
}

/* "\r\n\r\n" starts with "\r\n", the end of itself: a partial match that
 * fails must not hide a real one beginning inside it. */
void test_framing_delimiter_that_overlaps_itself_splits_right(void) {
  const char *in = "a\r\n\r\r\n\r\nb\r\n\r\n\r\n\r\nc\r\r\n\r\n";
  const char *want[] = {"a\r\n\r", "b", "", "c\r"};
  size_t n = strlen(in);
  for (size_t i = 0; i <= n; i++) {
    ioc__framer_t f;
    got_t g;
    memset(&g, 0, sizeof g);
    ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_DELIM, 0, "\r\n\r\n", 4));
    ASSERT_OK(feed(&f, in, i, &g));
    ASSERT_OK(feed(&f, in + i, n - i, &g));
    ASSERT_MSG(g.n == 4, "split at %zu: %zu messages", i, g.n);
    for (size_t k = 0; k < 4; k++)
      ASSERT_MSG(strcmp(g.msg[k], want[k]) == 0, "split at %zu: message %zu", i, k);
    got_free(&g);
    ioc__framer_free(&f);
  }
}

void test_framing_pause_holds_messages_until_resume(void) {
  ioc__framer_t f;
  got_t g;
  memset(&g, 0, sizeof g);
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LINE, 0, NULL, 0));
  g.pause_in = &f;
  g.pause_after = 1;
  ASSERT_OK(feed(&f, "a\nb\nc", 5, &g));
  ASSERT_EQ(g.n, 1); /* paused from inside emit: "b" is held */
  ASSERT_OK(feed(&f, "\nd\n", 3, &g));
  ASSERT_EQ(g.n, 1); /* nothing while paused */
  g.pause_after = 3;
  ASSERT_OK(ioc__framer_resume(&f, collect, &g));
  ASSERT_EQ(g.n, 3); /* "b", "c", then paused again */
  ASSERT_OK(ioc__framer_resume(&f, collect, &g));
  ASSERT_EQ(g.n, 4);
  ASSERT_STR_EQ(g.msg[1], "b");
  ASSERT_STR_EQ(g.msg[2], "c");
  ASSERT_STR_EQ(g.msg[3], "d");
  ASSERT_EQ(ioc__framer_buffered(&f), 0);
  ASSERT_OK(feed(&f, "e\n", 2, &g));
  ASSERT_EQ(g.n, 5);
  got_free(&g);
  ioc__framer_free(&f);
}

void test_framing_limits_and_prefix_encoding(void) {
  ASSERT_EQ(IOC__FRAME_DEFAULT_MAX, 65536);
  ASSERT_EQ(IOC__FRAME_DELIM_MAX, 64);
  ioc__framer_t f;
  char d[IOC__FRAME_DELIM_MAX + 1];
  memset(d, '-', sizeof d);
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_DELIM, 0, d, IOC__FRAME_DELIM_MAX));
  ioc__framer_free(&f);
  ASSERT_ERR(ioc__framer_init(&f, IOC__FRAME_DELIM, 0, d, IOC__FRAME_DELIM_MAX + 1), IOC_EINVAL);
  ASSERT_ERR(ioc__framer_init(&f, IOC__FRAME_DELIM, 0, d, 0), IOC_EINVAL);
  ASSERT_ERR(ioc__framer_init(&f, IOC__FRAME_DELIM, 0, NULL, 1), IOC_EINVAL);
  ASSERT_ERR(ioc__framer_init(&f, (ioc__frame_kind_t)99, 0, NULL, 0), IOC_EINVAL);

  /* max 0 means the default: 65536 bytes pass, 65537 do not */
  unsigned char p[4];
  char *big = (char *)calloc(1, IOC__FRAME_DEFAULT_MAX + 8);
  ASSERT(big != NULL);
  got_t g;
  memset(&g, 0, sizeof g);
  ASSERT_OK(ioc__framer_init(&f, IOC__FRAME_LEN4, 0, NULL, 0));
  ASSERT_EQ(ioc__frame_prefix(IOC__FRAME_LEN4, IOC__FRAME_DEFAULT_MAX, p), 4);
  memcpy(big, p, 4);
  ASSERT_OK(feed(&f, big, IOC__FRAME_DEFAULT_MAX + 4, &g));
  ASSERT_EQ(g.n, 1);
  ASSERT_EQ(g.len[0], IOC__FRAME_DEFAULT_MAX);
  ASSERT_EQ(ioc__frame_prefix(IOC__FRAME_LEN4, IOC__FRAME_DEFAULT_MAX + 1, p), 4);
  ASSERT_ERR(feed(&f, (const char *)p, 4, &g), IOC_EMSGSIZE);
  got_free(&g);
  ioc__framer_free(&f);
  free(big);

  /* the prefix: big-endian, refused when the length does not fit */
  ASSERT_EQ(ioc__frame_prefix(IOC__FRAME_LEN2, 0x1234, p), 2);
  ASSERT(p[0] == 0x12 && p[1] == 0x34);
  ASSERT_EQ(ioc__frame_prefix(IOC__FRAME_LEN2, 65535, p), 2);
  ASSERT_ERR(ioc__frame_prefix(IOC__FRAME_LEN2, 65536, p), IOC_EMSGSIZE);
  ASSERT_EQ(ioc__frame_prefix(IOC__FRAME_LEN4, 0x01020304, p), 4);
  ASSERT(p[0] == 1 && p[1] == 2 && p[2] == 3 && p[3] == 4);
#if SIZE_MAX > 0xffffffffu
  ASSERT_ERR(ioc__frame_prefix(IOC__FRAME_LEN4, (size_t)0x100000000ull, p), IOC_EMSGSIZE);
#endif
  ASSERT_ERR(ioc__frame_prefix(IOC__FRAME_LINE, 1, p), IOC_EINVAL);
}
