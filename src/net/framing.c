/* The framing engine (framing.h): a byte stream in, whole messages out.
 *
 * Two paths. The fast one runs over the caller's bytes and hands each
 * message that lies wholly inside them to emit straight from there; what is
 * left at the end (an incomplete message) is copied into f->buf. The joining
 * one runs when f->buf holds the start of a message: it completes that one
 * message from the new bytes (copying only the bytes it needs, or none when
 * a delimiter straddles the boundary), emits it from f->buf, and hands the
 * rest to the fast path. So f->buf never holds more than one incomplete
 * message (at most max plus a prefix or delimiter), except while paused. */
#include <stdlib.h>
#include <string.h>

#include "framing.h"

static const char ioc__empty[1] = {0};

int ioc__framer_init(ioc__framer_t *f, ioc__frame_kind_t kind, size_t max, const char *delim,
                     size_t delimlen) {
  memset(f, 0, sizeof *f);
  switch (kind) {
  case IOC__FRAME_LINE:
    f->delim[0] = '\n';
    f->delimlen = 1;
    break;
  case IOC__FRAME_LEN2:
  case IOC__FRAME_LEN4:
    break;
  case IOC__FRAME_DELIM:
    if (delim == NULL || delimlen == 0 || delimlen > IOC__FRAME_DELIM_MAX)
      return IOC_EINVAL;
    memcpy(f->delim, delim, delimlen);
    f->delimlen = delimlen;
    break;
  default:
    return IOC_EINVAL;
  }
  f->kind = (uint8_t)kind;
  f->max = max ? max : IOC__FRAME_DEFAULT_MAX;
  return 0;
}

void ioc__framer_free(ioc__framer_t *f) {
  free(f->buf);
  f->buf = NULL;
  f->blen = f->bcap = 0;
}

size_t ioc__framer_buffered(const ioc__framer_t *f) { return f->blen; }

void ioc__framer_pause(ioc__framer_t *f) { f->paused = 1; }

static int ioc__reserve(ioc__framer_t *f, size_t extra) {
  if (f->bcap - f->blen >= extra)
    return 0;
  size_t want = f->blen + extra;
  size_t cap = f->bcap ? f->bcap : 256;
  while (cap < want)
    cap = cap > SIZE_MAX / 2 ? want : cap * 2;
  char *b = realloc(f->buf, cap);
  if (b == NULL)
    return IOC_ENOMEM;
  f->buf = b;
  f->bcap = cap;
  return 0;
}

static int ioc__append(ioc__framer_t *f, const char *data, size_t n) {
  if (n == 0)
    return 0;
  int rc = ioc__reserve(f, n);
  if (rc != 0)
    return rc;
  memcpy(f->buf + f->blen, data, n);
  f->blen += n;
  return 0;
}

static size_t ioc__prefix_len(const ioc__framer_t *f) { return f->kind == IOC__FRAME_LEN2 ? 2 : 4; }

static size_t ioc__read_prefix(const ioc__framer_t *f, const unsigned char *p) {
  if (f->kind == IOC__FRAME_LEN2)
    return (size_t)p[0] << 8 | p[1];
  return (size_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
}

/* The first delimiter in [s, s+n), or NULL. */
static const char *ioc__find(const ioc__framer_t *f, const char *s, size_t n) {
  size_t dl = f->delimlen;
  const char *end = s + n;
  while ((size_t)(end - s) >= dl) {
    const char *c = memchr(s, (unsigned char)f->delim[0], (size_t)(end - s) - dl + 1);
    if (c == NULL)
      return NULL;
    if (memcmp(c, f->delim, dl) == 0)
      return c;
    s = c + 1;
  }
  return NULL;
}

/* Emits the message [m, m+n) of a delimiter kind (a line loses its "\r"). */
static void ioc__emit_delimited(const ioc__framer_t *f, const char *m, size_t n,
                                ioc__frame_emit_fn emit, void *ud) {
  if (f->kind == IOC__FRAME_LINE && n > 0 && m[n - 1] == '\r')
    n--;
  emit(ud, n ? m : ioc__empty, n);
}

/* Byte i of the pending bytes a (f->buf) followed by b. */
static unsigned char ioc__at(const char *a, size_t alen, const char *b, size_t i) {
  return (unsigned char)(i < alen ? a[i] : b[i - alen]);
}

/* The pending bytes a+b (no complete delimiter among them) already make a
 * message longer than max, whatever comes next: the delimiter could start
 * no sooner than past max. */
static int ioc__too_long(const ioc__framer_t *f, const char *a, size_t alen, const char *b,
                         size_t blen) {
  size_t n = alen + blen, max = f->max;
  if (n <= max)
    return 0;
  if (f->kind == IOC__FRAME_LINE) /* "\r\n" may still end a line of max bytes */
    return n > max + 1 || ioc__at(a, alen, b, max) != '\r';
  /* A delimiter starting at i <= max would have its first n - i bytes at
   * the end of the pending bytes (fewer than all of it: none is complete). */
  size_t dl = f->delimlen;
  for (size_t i = n >= dl ? n - dl + 1 : 0; i <= max; i++) {
    size_t k = n - i, j = 0;
    while (j < k && ioc__at(a, alen, b, i + j) == (unsigned char)f->delim[j])
      j++;
    if (j == k)
      return 0;
  }
  return 1;
}

/* A complete message of raw bytes (delimiter excluded), its last byte
 * `last`, is longer than max (a line's "\r" does not count). */
static int ioc__msg_too_long(const ioc__framer_t *f, size_t raw, char last) {
  if (raw <= f->max)
    return 0;
  return !(f->kind == IOC__FRAME_LINE && raw == f->max + 1 && last == '\r');
}

static int ioc__fail(ioc__framer_t *f, int err) {
  f->err = err;
  return err;
}

/* Keeps [s, s+n) as the start of the next message (or, paused, as kept
 * bytes). replay: s points into f->buf itself (kept bytes being replayed). */
static int ioc__keep(ioc__framer_t *f, const char *s, size_t n, int replay) {
  if (replay) {
    memmove(f->buf, s, n);
    f->blen = n;
    return 0;
  }
  return ioc__append(f, s, n);
}

/* The fast path over [s, s+n) with f->buf empty, or (replay) over f->buf
 * itself, which is then rewritten with what is left. */
static int ioc__run(ioc__framer_t *f, const char *s, size_t n, int replay,
                    ioc__frame_emit_fn emit, void *ud) {
  const char *end = s + n;
  while (s < end && !f->paused) {
    size_t left = (size_t)(end - s);
    if (f->kind == IOC__FRAME_LEN2 || f->kind == IOC__FRAME_LEN4) {
      size_t h = ioc__prefix_len(f);
      if (left < h)
        break;
      size_t m = ioc__read_prefix(f, (const unsigned char *)s);
      if (m > f->max)
        return ioc__fail(f, IOC_EMSGSIZE);
      if (left - h < m)
        break;
      emit(ud, m ? s + h : ioc__empty, m);
      s += h + m;
    } else {
      const char *d = ioc__find(f, s, left);
      if (d == NULL) {
        if (ioc__too_long(f, s, left, NULL, 0))
          return ioc__fail(f, IOC_EMSGSIZE);
        break;
      }
      if (ioc__msg_too_long(f, (size_t)(d - s), d > s ? d[-1] : 0))
        return ioc__fail(f, IOC_EMSGSIZE);
      ioc__emit_delimited(f, s, (size_t)(d - s), emit, ud);
      s = d + f->delimlen;
    }
  }
  size_t rest = (size_t)(end - s);
  if (rest == 0) {
    if (replay)
      f->blen = 0;
    return 0;
  }
  f->kept = f->paused;
  int rc = ioc__keep(f, s, rest, replay);
  return rc != 0 ? ioc__fail(f, rc) : 0;
}

/* f->buf holds the start of one message: completes it from [s, s+n) if the
 * bytes are there, emits it, and says how many of the n bytes it used. */
static int ioc__join(ioc__framer_t *f, const char *s, size_t n, ioc__frame_emit_fn emit, void *ud,
                     size_t *used) {
  *used = 0;
  if (f->kind == IOC__FRAME_LEN2 || f->kind == IOC__FRAME_LEN4) {
    size_t h = ioc__prefix_len(f);
    if (f->blen < h) {
      size_t take = h - f->blen < n ? h - f->blen : n;
      int rc = ioc__append(f, s, take);
      if (rc != 0)
        return rc;
      *used = take;
      if (f->blen < h)
        return 0;
    }
    size_t m = ioc__read_prefix(f, (const unsigned char *)f->buf);
    if (m > f->max)
      return IOC_EMSGSIZE;
    size_t need = h + m - f->blen, have = n - *used;
    size_t take = need < have ? need : have;
    int rc = ioc__append(f, s + *used, take);
    if (rc != 0)
      return rc;
    *used += take;
    if (take == need) {
      f->blen = 0;
      emit(ud, m ? f->buf + h : ioc__empty, m);
    }
    return 0;
  }

  /* A delimiter that starts in f->buf and ends in the new bytes: the
   * message is all in f->buf, nothing to copy. */
  size_t dl = f->delimlen;
  size_t from = f->blen >= dl - 1 ? f->blen - (dl - 1) : 0;
  for (size_t i = from; i < f->blen; i++) {
    size_t k = f->blen - i; /* delimiter bytes already in buf */
    if (n < dl - k || memcmp(f->buf + i, f->delim, k) != 0 || memcmp(s, f->delim + k, dl - k) != 0)
      continue;
    if (ioc__msg_too_long(f, i, i ? f->buf[i - 1] : 0))
      return IOC_EMSGSIZE;
    f->blen = 0;
    *used = dl - k;
    ioc__emit_delimited(f, f->buf, i, emit, ud);
    return 0;
  }
  const char *d = ioc__find(f, s, n);
  size_t upto = d ? (size_t)(d - s) : n;
  if (d == NULL ? ioc__too_long(f, f->buf, f->blen, s, n)
                : ioc__msg_too_long(f, f->blen + upto, upto ? s[upto - 1] : f->buf[f->blen - 1]))
    return IOC_EMSGSIZE;
  int rc = ioc__append(f, s, upto);
  if (rc != 0)
    return rc;
  *used = upto;
  if (d != NULL) {
    *used += dl;
    size_t m = f->blen;
    f->blen = 0;
    ioc__emit_delimited(f, f->buf, m, emit, ud);
  }
  return 0;
}

int ioc__framer_feed(ioc__framer_t *f, const char *data, size_t len, ioc__frame_emit_fn emit,
                     void *ud) {
  if (f->err)
    return f->err;
  if (f->paused || f->kept) {
    /* Kept bytes start at a message boundary: append, and replay them all
     * unless still paused. */
    int rc = ioc__append(f, data, len);
    if (rc != 0)
      return ioc__fail(f, rc);
    f->kept = 1;
    if (f->paused)
      return 0;
    f->kept = 0;
    return f->blen ? ioc__run(f, f->buf, f->blen, 1, emit, ud) : 0;
  }
  if (len == 0)
    return 0;
  if (f->blen > 0) {
    size_t used;
    int rc = ioc__join(f, data, len, emit, ud, &used);
    if (rc != 0)
      return ioc__fail(f, rc);
    if (f->blen > 0) /* still incomplete: it took every byte */
      return 0;
    data += used;
    len -= used;
  }
  return len ? ioc__run(f, data, len, 0, emit, ud) : 0;
}

int ioc__framer_resume(ioc__framer_t *f, ioc__frame_emit_fn emit, void *ud) {
  f->paused = 0;
  return ioc__framer_feed(f, NULL, 0, emit, ud);
}

int ioc__frame_prefix(ioc__frame_kind_t kind, size_t len, unsigned char out[4]) {
  if (kind == IOC__FRAME_LEN2) {
    if (len > 0xffff)
      return IOC_EMSGSIZE;
    out[0] = (unsigned char)(len >> 8);
    out[1] = (unsigned char)len;
    return 2;
  }
  if (kind == IOC__FRAME_LEN4) {
    if ((uint64_t)len > 0xffffffffu)
      return IOC_EMSGSIZE;
    out[0] = (unsigned char)(len >> 24);
    out[1] = (unsigned char)(len >> 16);
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
    return 4;
  }
  return IOC_EINVAL;
}
