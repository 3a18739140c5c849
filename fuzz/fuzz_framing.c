/* libFuzzer target: the framing engine (src/net/framing.c).
 *
 * The input picks a framing (kind, max, delimiter), a chunking seed and a
 * pause pattern, then the stream. Invariants:
 *   - the framer fed in random chunks (empty ones included, pausing and
 *     resuming now and then) emits exactly the messages, and ends with the
 *     same result (0 or IOC_EMSGSIZE), as when fed everything at once;
 *   - both agree with a naive model written from the definition (scan the
 *     whole stream; a message is too long when it passes max, or when the
 *     bytes after the last message can no longer hold a delimiter starting
 *     by max);
 *   - the framer never holds more than one incomplete message: at most
 *     max + prefix / delimiter bytes while not paused.
 *
 * Build and run: scripts/fuzz [SECONDS] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framing.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                      \
      abort();                                                             \
    }                                                                      \
  } while (0)

typedef struct out {
  char *bytes; /* messages back to back */
  size_t len, cap;
  size_t *lens;
  size_t n, ncap;
  ioc__framer_t *f;
  uint32_t pause_bits; /* pause after message k when bit k % 32 is set */
} out_t;

static void out_add(out_t *o, const char *m, size_t n) {
  CHECK(m != NULL);
  if (o->len + n > o->cap || o->bytes == NULL) {
    o->cap = (o->len + n) * 2 + 16;
    o->bytes = realloc(o->bytes, o->cap);
    CHECK(o->bytes != NULL);
  }
  if (n)
    memcpy(o->bytes + o->len, m, n);
  o->len += n;
  if (o->n == o->ncap) {
    o->ncap = o->ncap * 2 + 16;
    o->lens = realloc(o->lens, o->ncap * sizeof *o->lens);
    CHECK(o->lens != NULL);
  }
  o->lens[o->n++] = n;
}

static void emit(void *ud, const char *m, size_t n) {
  out_t *o = ud;
  out_add(o, m, n);
  if (o->f != NULL && (o->pause_bits >> (o->n % 32) & 1))
    ioc__framer_pause(o->f);
}

static int same(const out_t *a, const out_t *b) {
  return a->n == b->n && a->len == b->len &&
         (a->n == 0 || memcmp(a->lens, b->lens, a->n * sizeof *a->lens) == 0) &&
         (a->len == 0 || memcmp(a->bytes, b->bytes, a->len) == 0);
}

/* The naive model: the whole stream at once, from the definitions. */
static int model(ioc__frame_kind_t kind, size_t max, const char *delim, size_t dl,
                 const char *s, size_t n, out_t *o) {
  size_t pos = 0;
  if (kind == IOC__FRAME_LEN2 || kind == IOC__FRAME_LEN4) {
    size_t h = kind == IOC__FRAME_LEN2 ? 2 : 4;
    while (n - pos >= h) {
      size_t m = 0;
      for (size_t i = 0; i < h; i++)
        m = m << 8 | (unsigned char)s[pos + i];
      if (m > max)
        return IOC_EMSGSIZE;
      if (n - pos - h < m)
        break;
      out_add(o, s + pos + h, m);
      pos += h + m;
    }
    return 0;
  }
  for (;;) {
    size_t found = (size_t)-1;
    for (size_t i = pos; i + dl <= n; i++)
      if (memcmp(s + i, delim, dl) == 0) {
        found = i;
        break;
      }
    if (found == (size_t)-1)
      break;
    size_t len = found - pos;
    if (kind == IOC__FRAME_LINE && len > 0 && s[found - 1] == '\r')
      len--;
    if (len > max)
      return IOC_EMSGSIZE;
    out_add(o, s + pos, len);
    pos = found + dl;
  }
  /* the rest: could a delimiter still start within max bytes of it? */
  size_t rest = n - pos;
  if (rest <= max)
    return 0;
  if (kind == IOC__FRAME_LINE)
    return rest == max + 1 && s[pos + max] == '\r' ? 0 : IOC_EMSGSIZE;
  for (size_t i = 0; i <= max; i++) {
    size_t k = rest - i;
    if (k < dl && memcmp(s + pos + i, delim, k) == 0)
      return 0;
  }
  return IOC_EMSGSIZE;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8)
    return 0;
  ioc__frame_kind_t kind = (ioc__frame_kind_t)(IOC__FRAME_LINE + data[0] % 4);
  size_t max = data[1] == 255 ? 0 : (size_t)data[1] % 40; /* small limits are hit often */
  size_t dl = 1 + data[2] % 4;
  const char *delim = (const char *)data + 3;
  uint32_t seed = (uint32_t)data[3 + dl - 1] << 8 | data[2];
  uint32_t pause_bits = (uint32_t)data[1] * 0x01010101u ^ (uint32_t)data[0];
  size_t hdr = 3 + dl;
  if (size < hdr)
    return 0;
  const char *s = (const char *)data + hdr;
  size_t n = size - hdr;
  if (kind != IOC__FRAME_DELIM) {
    delim = kind == IOC__FRAME_LINE ? "\n" : NULL;
    dl = kind == IOC__FRAME_LINE ? 1 : 0;
  }

  ioc__framer_t whole, chunked;
  CHECK(ioc__framer_init(&whole, kind, max, delim, dl) == 0);
  CHECK(ioc__framer_init(&chunked, kind, max, delim, dl) == 0);
  size_t eff_max = max ? max : IOC__FRAME_DEFAULT_MAX;

  out_t a = {0}, b = {0}, m = {0};
  char *copy = malloc(n ? n : 1);
  CHECK(copy != NULL);
  memcpy(copy, s, n);
  int rc_whole = ioc__framer_feed(&whole, copy, n, emit, &a);
  int rc_model = model(kind, eff_max, delim, dl, s, n, &m);
  CHECK(rc_whole == 0 || rc_whole == IOC_EMSGSIZE);
  CHECK(rc_whole == rc_model);
  CHECK(same(&a, &m));

  b.f = &chunked;
  b.pause_bits = pause_bits;
  int rc = 0;
  size_t pos = 0;
  uint32_t x = seed | 1;
  while (rc == 0 && pos < n) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    size_t len = x % 8 == 0 ? 0 : x % 29;
    if (len > n - pos)
      len = n - pos;
    char *chunk = malloc(len ? len : 1); /* exact copy: ASan sees over-reads */
    CHECK(chunk != NULL);
    memcpy(chunk, s + pos, len);
    rc = ioc__framer_feed(&chunked, chunk, len, emit, &b);
    free(chunk);
    pos += len;
    if (rc == 0 && (x >> 8) % 3 == 0)
      rc = ioc__framer_resume(&chunked, emit, &b);
    if (rc == 0 && chunked.paused == 0) {
      size_t bound = eff_max + (kind == IOC__FRAME_LEN2 || kind == IOC__FRAME_LEN4 ? 4 : dl);
      CHECK(ioc__framer_buffered(&chunked) <= bound);
    }
  }
  /* resume until nothing is held back by a pause */
  for (int i = 0; rc == 0 && i < 100000 && (chunked.paused || chunked.kept); i++)
    rc = ioc__framer_resume(&chunked, emit, &b);
  CHECK(rc == rc_whole);
  CHECK(same(&a, &b));

  free(copy);
  free(a.bytes), free(a.lens), free(b.bytes), free(b.lens), free(m.bytes), free(m.lens);
  ioc__framer_free(&whole);
  ioc__framer_free(&chunked);
  return 0;
}
