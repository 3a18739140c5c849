/* PROXY protocol v1 (text) and v2 (binary) headers: the parser a listener
 * with proxy_protocol on runs over the first bytes of each connection, and
 * a builder (tests, fuzzing, and clients that speak to such listeners).
 * docs/protocols.md describes both in prose. */
#ifndef IOC_PROXY_H
#define IOC_PROXY_H

#include <stddef.h>

#include "iocore.h"

/* The longest v1 header, "PROXY ... \r\n" included (the protocol's limit). */
#define IOC__PROXY_V1_MAX 107
/* The fixed part of a v2 header: signature, version/command, family, length. */
#define IOC__PROXY_V2_HEAD 16
/* The longest v2 address block + TLVs accepted (the length field can say up
 * to 65535). Real senders put 12 or 36 bytes of addresses and a few short
 * TLVs there; a longer header is refused as EPROTO rather than buffered. */
#define IOC__PROXY_V2_MAX_PAYLOAD 4096
/* The longest header of either version, so the most a listener ever holds
 * back before the session starts. */
#define IOC__PROXY_MAX (IOC__PROXY_V2_HEAD + IOC__PROXY_V2_MAX_PAYLOAD)

typedef enum ioc__proxy_command {
  IOC__PROXY_LOCAL = 0, /* v2 LOCAL: a health check by the proxy itself */
  IOC__PROXY_PROXY = 1  /* relayed for a client (v1 always says this) */
} ioc__proxy_command_t;

typedef struct ioc__proxy_result {
  int version; /* 1 or 2 */
  int command; /* ioc__proxy_command_t */
  /* 1: src and dst hold the client's and the proxy's TCP addresses (v1
   * TCP4/TCP6, v2 PROXY with AF_INET/AF_INET6 over STREAM). 0: the header
   * names no TCP address (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC, AF_UNIX, DGRAM):
   * the connection keeps its real peer and local addresses, and src/dst
   * are zeroed. */
  int has_addrs;
  ioc_addr_t src, dst;
  size_t len; /* header bytes consumed; the application's data starts here */
} ioc__proxy_result_t;

/* Parses a PROXY header at the start of buf[0, len). Returns:
 *   > 0  a complete, valid header of that many bytes (also out->len); the
 *        bytes after it belong to the application;
 *   0    valid so far but incomplete: call again with more bytes. It never
 *        asks for more than IOC__PROXY_V1_MAX (v1) or IOC__PROXY_MAX (v2)
 *        bytes in all: past that it has decided;
 *   IOC_EPROTO  not a PROXY header, or a malformed one (wrong signature,
 *        an over-long v1 line, bad addresses or ports, an unknown v2
 *        version, command or family, a v2 length too short for its family
 *        or above IOC__PROXY_V2_MAX_PAYLOAD). Bytes that can no longer
 *        start a valid header are refused as soon as they arrive.
 * out is written only when the return is > 0. Never reads past len. */
int ioc__proxy_parse(const void *buf, size_t len, ioc__proxy_result_t *out);

/* Writes the header that says what r says (version 1 or 2; r->len and
 * anything else the header cannot carry are ignored) into buf. v1 cannot
 * say LOCAL: such an r (or one without addresses) gives "PROXY UNKNOWN\r\n".
 * Returns its length, IOC_ENOBUFS if size is too small (buf untouched), or
 * IOC_EINVAL for an unknown version or an address family mismatch. */
int ioc__proxy_build(int version, const ioc__proxy_result_t *r, char *buf, size_t size);

/* What a listener keeps for one connection while its header arrives: the
 * bytes received so far, at most the longest header. Zero-initialise it. */
typedef struct ioc__proxy_reader {
  size_t len;
  unsigned char buf[IOC__PROXY_MAX];
} ioc__proxy_reader_t;

/* Runs the parser over everything received so far plus data[0, len).
 * Copies only while the header is incomplete: a header wholly inside the
 * first data is parsed from data itself. Returns what ioc__proxy_parse
 * returns (> 0 a header: out filled; 0 more bytes needed; IOC_EPROTO), and
 * on > 0 sets *used to how many bytes of data belonged to the header: the
 * application's first bytes are data + *used, len - *used of them. */
int ioc__proxy_reader_feed(ioc__proxy_reader_t *rd, const void *data, size_t len,
                           ioc__proxy_result_t *out, size_t *used);

#endif /* IOC_PROXY_H */
