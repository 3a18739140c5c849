/* Message framing over a byte stream: lines, big-endian length prefixes,
 * or a delimiter, with a maximum message size enforced as soon as it is
 * exceeded. A session with framing runs its received bytes through one
 * framer and calls on_recv once per message. docs/protocols.md describes
 * it in prose. */
#ifndef IOC_FRAMING_H
#define IOC_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include "iocore.h"

typedef enum ioc__frame_kind {
  IOC__FRAME_LINE = 1, /* up to "\n"; a "\r" before it is dropped too */
  IOC__FRAME_LEN2,     /* 2-byte big-endian length, then that many bytes */
  IOC__FRAME_LEN4,     /* 4-byte big-endian length, then that many bytes */
  IOC__FRAME_DELIM     /* up to a delimiter of 1..IOC__FRAME_DELIM_MAX bytes */
} ioc__frame_kind_t;

/* The message size limit when none is given. */
#define IOC__FRAME_DEFAULT_MAX 65536
/* The longest delimiter. */
#define IOC__FRAME_DELIM_MAX 64

typedef void (*ioc__frame_emit_fn)(void *ud, const char *msg, size_t n);

typedef struct ioc__framer {
  uint8_t kind;
  uint8_t paused;  /* ioc__framer_pause: hold messages until resume */
  uint8_t kept;    /* buf may hold complete messages (kept while paused) */
  uint8_t end_mark; /* the session's owner wants on_recv(NULL, 0) after each feed's messages */
  int err;         /* IOC_EMSGSIZE / IOC_ENOMEM once failed: every feed says so again */
  size_t max;
  size_t delimlen;
  char delim[IOC__FRAME_DELIM_MAX];
  /* Bytes of the message not yet complete (its prefix included for the
   * length kinds), or, when kept, everything received while paused. */
  char *buf;
  size_t blen, bcap;
} ioc__framer_t;

/* Sets f up (nothing is allocated until a message spans two feeds). max
 * bounds the message (payload) length; 0 = IOC__FRAME_DEFAULT_MAX. delim
 * is read by IOC__FRAME_DELIM only. Returns 0, or IOC_EINVAL for an unknown
 * kind or a delimiter of 0 or more than IOC__FRAME_DELIM_MAX bytes. */
int ioc__framer_init(ioc__framer_t *f, ioc__frame_kind_t kind, size_t max, const char *delim,
                     size_t delimlen);
/* Frees the buffer. f can be inited again. */
void ioc__framer_free(ioc__framer_t *f);

/* Feeds the next len bytes of the stream; calls emit(ud, msg, n) once per
 * complete message, in order, whatever the feed boundaries (msg is valid
 * during the call only; an empty message is n 0 with msg non-NULL).
 * Messages wholly inside data are handed out of data itself; only the bytes
 * of a message still incomplete at the end are copied. Returns 0, or
 * IOC_EMSGSIZE as soon as the current message is known to be longer than
 * max (a length prefix above it; more than max bytes and no delimiter
 * possible in time) without waiting for its end: messages before it were
 * emitted, and the framer stays failed (every later feed returns the same
 * code). IOC_ENOMEM, failed too, if its buffer could not grow. emit must not
 * feed the same framer. */
int ioc__framer_feed(ioc__framer_t *f, const char *data, size_t len, ioc__frame_emit_fn emit,
                     void *ud);
/* From inside emit (or between feeds): no more emits after the current one;
 * the rest of the bytes are kept (copied) until ioc__framer_resume. Feeds
 * while paused only keep their bytes. A session closed from inside emit
 * pauses its framer so that no message follows, and frees it later. */
void ioc__framer_pause(ioc__framer_t *f);
/* Ends a pause: emits the complete messages kept meanwhile (it may pause
 * again from emit). Returns what feed returns. */
int ioc__framer_resume(ioc__framer_t *f, ioc__frame_emit_fn emit, void *ud);
/* Bytes held inside the framer (an incomplete message, or kept ones). */
size_t ioc__framer_buffered(const ioc__framer_t *f);

/* The length prefix of a len-byte message for kind LEN2 / LEN4 into out.
 * Returns its size (2 or 4), IOC_EMSGSIZE when len does not fit the prefix
 * (above 65535 / 4294967295), or IOC_EINVAL for another kind. */
int ioc__frame_prefix(ioc__frame_kind_t kind, size_t len, unsigned char out[4]);

#endif /* IOC_FRAMING_H */
