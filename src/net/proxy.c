/* PROXY protocol v1 and v2 (the HAProxy specification), parsed from the
 * first bytes of a connection.
 *
 * v1:  "PROXY TCP4 " SRC4 " " DST4 " " SPORT " " DPORT "\r\n"
 *      "PROXY TCP6 " SRC6 " " DST6 " " SPORT " " DPORT "\r\n"
 *      "PROXY UNKNOWN" [" " anything] "\r\n"
 *   at most 107 bytes. Addresses and ports use the strict grammar of
 *   ioc_addr_parse (no leading zeros, no host names, no IPv6 zones); the
 *   family of both addresses must match the protocol word.
 * v2:  the 12-byte signature "\r\n\r\n\0\r\nQUIT\n", a version/command byte
 *   (0x20 LOCAL, 0x21 PROXY), a family/transport byte, a big-endian length,
 *   then that many bytes: the addresses (12 for IPv4, 36 for IPv6, 216 for
 *   AF_UNIX) and TLVs, which are skipped.
 *
 * The parser is incremental in the simplest way: it is handed everything
 * received so far and either finds a whole header, asks for more, or
 * refuses. It refuses as early as the bytes allow (a wrong first byte, a
 * character no v1 header can hold, a v2 byte with an unknown value), so a
 * client that is not a proxy is turned away without waiting for a time-out
 * when its first bytes already tell. */
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proxy.h"

static const char ioc__v2_sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                     '\n', 'Q',  'U',  'I',  'T',  '\n'};
static const char ioc__v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};

/* v2 family/transport bytes (high nibble family, low nibble transport). */
#define IOC__V2_UNSPEC 0x00
#define IOC__V2_TCP4 0x11
#define IOC__V2_UDP4 0x12
#define IOC__V2_TCP6 0x21
#define IOC__V2_UDP6 0x22
#define IOC__V2_UNIX_STREAM 0x31
#define IOC__V2_UNIX_DGRAM 0x32

/* Address block sizes of v2 per family. */
#define IOC__V2_LEN_INET 12
#define IOC__V2_LEN_INET6 36
#define IOC__V2_LEN_UNIX 216

/* ---- v1 ------------------------------------------------------------------------ */

/* A character that may appear in a v1 TCP4/TCP6 line before its "\r\n". */
static int ioc__v1_char(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
         c == '.' || c == ':' || c == ' ';
}

/* Builds an address from the v1 tokens ip and port (ip of the family the
 * protocol word named). 0 or -1. */
static int ioc__v1_addr(int v6, const char *ip, size_t iplen, const char *port, size_t portlen,
                        ioc_addr_t *out) {
  char text[IOC_ADDRSTRLEN];
  if (iplen == 0 || iplen > 45 || portlen == 0 || portlen > 5)
    return -1;
  for (size_t i = 0; i < iplen; i++) {
    char c = ip[i];
    int ok = (c >= '0' && c <= '9') || c == '.' ||
             (v6 && (c == ':' || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
    if (!ok)
      return -1; /* also keeps out "localhost", zones, brackets */
  }
  size_t n = 0;
  if (v6)
    text[n++] = '[';
  memcpy(text + n, ip, iplen);
  n += iplen;
  if (v6)
    text[n++] = ']';
  text[n++] = ':';
  memcpy(text + n, port, portlen);
  n += portlen;
  if (ioc_addr_parse(out, text, n) != 0)
    return -1;
  return out->u.family == (v6 ? AF_INET6 : AF_INET) ? 0 : -1;
}

/* The complete line [s, s+n) without its "\r\n". */
static int ioc__v1_line(const char *s, size_t n, ioc__proxy_result_t *r) {
  const char *end = s + n;
  s += sizeof ioc__v1_sig;
  if ((size_t)(end - s) >= 7 && memcmp(s, "UNKNOWN", 7) == 0) {
    if (end - s > 7 && s[7] != ' ')
      return -1;
    r->has_addrs = 0;
    return 0;
  }
  if ((size_t)(end - s) < 5 || memcmp(s, "TCP", 3) != 0 || (s[3] != '4' && s[3] != '6') ||
      s[4] != ' ')
    return -1;
  int v6 = s[3] == '6';
  s += 5;
  /* four tokens separated by single spaces */
  const char *tok[4];
  size_t toklen[4];
  for (int i = 0; i < 4; i++) {
    const char *sp = i < 3 ? memchr(s, ' ', (size_t)(end - s)) : end;
    if (sp == NULL)
      return -1;
    tok[i] = s;
    toklen[i] = (size_t)(sp - s);
    s = sp + (i < 3);
  }
  if (memchr(tok[3], ' ', toklen[3]) != NULL)
    return -1;
  if (ioc__v1_addr(v6, tok[0], toklen[0], tok[2], toklen[2], &r->src) != 0 ||
      ioc__v1_addr(v6, tok[1], toklen[1], tok[3], toklen[3], &r->dst) != 0)
    return -1;
  r->has_addrs = 1;
  return 0;
}

/* v1, given that the first byte is 'P'. */
static int ioc__v1_parse(const char *s, size_t len, ioc__proxy_result_t *out) {
  size_t sig = len < sizeof ioc__v1_sig ? len : sizeof ioc__v1_sig;
  if (memcmp(s, ioc__v1_sig, sig) != 0)
    return IOC_EPROTO;
  if (len <= sizeof ioc__v1_sig)
    return 0;

  /* The protocol word, as far as it has arrived. */
  const char *w = s + sizeof ioc__v1_sig;
  size_t wl = len - sizeof ioc__v1_sig;
  static const char *const words[] = {"TCP4 ", "TCP6 ", "UNKNOWN"};
  int word = -1;
  for (int i = 0; i < 3; i++) {
    size_t k = strlen(words[i]);
    if (memcmp(w, words[i], wl < k ? wl : k) == 0) {
      word = i;
      break;
    }
  }
  if (word < 0 || (word == 2 && wl > 7 && w[7] != ' ' && w[7] != '\r'))
    return IOC_EPROTO;

  size_t scan = len < IOC__PROXY_V1_MAX ? len : IOC__PROXY_V1_MAX;
  const char *nl = memchr(s, '\n', scan);
  if (nl == NULL) {
    if (len >= IOC__PROXY_V1_MAX)
      return IOC_EPROTO; /* no end within the longest line allowed */
    if (word < 2) {
      /* Refuse now what no complete TCP line could hold: a stray
       * character, or a '\r' anywhere but last. */
      for (size_t i = sizeof ioc__v1_sig + 5; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!ioc__v1_char(c) && !(c == '\r' && i == len - 1))
          return IOC_EPROTO;
      }
    }
    return 0;
  }
  size_t n = (size_t)(nl - s) + 1;
  if (n < sizeof ioc__v1_sig + 2 || nl[-1] != '\r')
    return IOC_EPROTO;
  ioc__proxy_result_t r;
  memset(&r, 0, sizeof r);
  if (ioc__v1_line(s, n - 2, &r) != 0)
    return IOC_EPROTO;
  r.version = 1;
  r.command = IOC__PROXY_PROXY;
  r.len = n;
  *out = r;
  return (int)n;
}

/* ---- v2 ------------------------------------------------------------------------ */

static void ioc__v2_addr4(const unsigned char *ip, const unsigned char *port, ioc_addr_t *out) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  memcpy(&sa.sin_addr, ip, 4);
  memcpy(&sa.sin_port, port, 2); /* both in network order already */
  memset(out, 0, sizeof *out);
  memcpy(out->u.bytes, &sa, sizeof sa);
  out->len = (uint32_t)sizeof sa;
}

static void ioc__v2_addr6(const unsigned char *ip, const unsigned char *port, ioc_addr_t *out) {
  struct sockaddr_in6 sa;
  memset(&sa, 0, sizeof sa);
  sa.sin6_family = AF_INET6;
  memcpy(&sa.sin6_addr, ip, 16);
  memcpy(&sa.sin6_port, port, 2);
  memset(out, 0, sizeof *out);
  memcpy(out->u.bytes, &sa, sizeof sa);
  out->len = (uint32_t)sizeof sa;
}

/* The smallest address block for a family/transport byte, or -1 when the
 * byte is not one the protocol defines. */
static int ioc__v2_min_len(unsigned char fam) {
  switch (fam) {
  case IOC__V2_UNSPEC:
    return 0;
  case IOC__V2_TCP4:
  case IOC__V2_UDP4:
    return IOC__V2_LEN_INET;
  case IOC__V2_TCP6:
  case IOC__V2_UDP6:
    return IOC__V2_LEN_INET6;
  case IOC__V2_UNIX_STREAM:
  case IOC__V2_UNIX_DGRAM:
    return IOC__V2_LEN_UNIX;
  default:
    return -1;
  }
}

/* v2, given that the first byte is '\r'. */
static int ioc__v2_parse(const unsigned char *s, size_t len, ioc__proxy_result_t *out) {
  size_t sig = len < sizeof ioc__v2_sig ? len : sizeof ioc__v2_sig;
  if (memcmp(s, ioc__v2_sig, sig) != 0)
    return IOC_EPROTO;
  if (len > 12 && (s[12] >> 4 != 2 || (s[12] & 0x0f) > IOC__PROXY_PROXY))
    return IOC_EPROTO; /* version 2 only; commands LOCAL and PROXY only */
  int local = len > 12 && (s[12] & 0x0f) == IOC__PROXY_LOCAL;
  /* LOCAL carries no addresses the receiver may use: whatever family byte
   * it has is ignored, as the specification asks. */
  int min = len > 13 ? ioc__v2_min_len(s[13]) : 0;
  if (len > 13 && !local && min < 0)
    return IOC_EPROTO;
  if (len < IOC__PROXY_V2_HEAD)
    return 0;
  size_t plen = (size_t)s[14] << 8 | s[15];
  if (plen > IOC__PROXY_V2_MAX_PAYLOAD || (!local && plen < (size_t)min))
    return IOC_EPROTO;
  size_t n = IOC__PROXY_V2_HEAD + plen;
  if (len < n)
    return 0;

  ioc__proxy_result_t r;
  memset(&r, 0, sizeof r);
  r.version = 2;
  r.command = local ? IOC__PROXY_LOCAL : IOC__PROXY_PROXY;
  r.len = n;
  const unsigned char *p = s + IOC__PROXY_V2_HEAD;
  if (!local && s[13] == IOC__V2_TCP4) {
    ioc__v2_addr4(p, p + 8, &r.src);
    ioc__v2_addr4(p + 4, p + 10, &r.dst);
    r.has_addrs = 1;
  } else if (!local && s[13] == IOC__V2_TCP6) {
    ioc__v2_addr6(p, p + 32, &r.src);
    ioc__v2_addr6(p + 16, p + 34, &r.dst);
    r.has_addrs = 1;
  }
  *out = r;
  return (int)n;
}

/* ---- public (internal API) ---------------------------------------------------------- */

int ioc__proxy_parse(const void *buf, size_t len, ioc__proxy_result_t *out) {
  const unsigned char *s = buf;
  if (len == 0)
    return 0;
  if (s[0] == 'P')
    return ioc__v1_parse((const char *)s, len, out);
  if (s[0] == '\r')
    return ioc__v2_parse(s, len, out);
  return IOC_EPROTO;
}

/* The address of a as text without brackets or port ("1.2.3.4", "::1"). */
static int ioc__ip_text(const ioc_addr_t *a, char *ip, size_t size) {
  char t[IOC_ADDRSTRLEN];
  int n = ioc_addr_format(a, t, sizeof t);
  if (n < 0)
    return n;
  const char *b = t, *e = strrchr(t, ':');
  if (t[0] == '[') {
    b++;
    e--; /* the ']' before ":port" */
  }
  if (memchr(b, '%', (size_t)(e - b)) != NULL)
    return IOC_EINVAL; /* v1 has no way to say a zone */
  if ((size_t)(e - b) >= size)
    return IOC_ENOBUFS;
  memcpy(ip, b, (size_t)(e - b));
  ip[e - b] = '\0';
  return (int)(e - b);
}

static int ioc__build_v1(const ioc__proxy_result_t *r, char *buf, size_t size) {
  char line[IOC__PROXY_V1_MAX + 1];
  int n;
  if (r->command != IOC__PROXY_PROXY || !r->has_addrs) {
    n = snprintf(line, sizeof line, "PROXY UNKNOWN\r\n");
  } else {
    int fam = r->src.u.family;
    if (fam != r->dst.u.family || (fam != AF_INET && fam != AF_INET6))
      return IOC_EINVAL;
    char src[IOC_ADDRSTRLEN], dst[IOC_ADDRSTRLEN];
    if (ioc__ip_text(&r->src, src, sizeof src) < 0 || ioc__ip_text(&r->dst, dst, sizeof dst) < 0)
      return IOC_EINVAL;
    n = snprintf(line, sizeof line, "PROXY TCP%c %s %s %d %d\r\n", fam == AF_INET ? '4' : '6', src,
                 dst, ioc_addr_port(&r->src), ioc_addr_port(&r->dst));
  }
  if (n < 0 || (size_t)n >= sizeof line)
    return IOC_EINVAL;
  if ((size_t)n > size)
    return IOC_ENOBUFS;
  memcpy(buf, line, (size_t)n);
  return n;
}

static int ioc__build_v2(const ioc__proxy_result_t *r, char *buf, size_t size) {
  unsigned char h[IOC__PROXY_V2_HEAD + IOC__V2_LEN_INET6];
  memcpy(h, ioc__v2_sig, sizeof ioc__v2_sig);
  size_t plen = 0;
  unsigned char fam = IOC__V2_UNSPEC;
  int local = r->command == IOC__PROXY_LOCAL;
  if (!local && r->has_addrs) {
    int f = r->src.u.family;
    if (f != r->dst.u.family)
      return IOC_EINVAL;
    unsigned char *p = h + IOC__PROXY_V2_HEAD;
    if (f == AF_INET) {
      struct sockaddr_in a, b;
      memcpy(&a, r->src.u.bytes, sizeof a);
      memcpy(&b, r->dst.u.bytes, sizeof b);
      memcpy(p, &a.sin_addr, 4);
      memcpy(p + 4, &b.sin_addr, 4);
      memcpy(p + 8, &a.sin_port, 2);
      memcpy(p + 10, &b.sin_port, 2);
      fam = IOC__V2_TCP4;
      plen = IOC__V2_LEN_INET;
    } else if (f == AF_INET6) {
      struct sockaddr_in6 a, b;
      memcpy(&a, r->src.u.bytes, sizeof a);
      memcpy(&b, r->dst.u.bytes, sizeof b);
      memcpy(p, &a.sin6_addr, 16);
      memcpy(p + 16, &b.sin6_addr, 16);
      memcpy(p + 32, &a.sin6_port, 2);
      memcpy(p + 34, &b.sin6_port, 2);
      fam = IOC__V2_TCP6;
      plen = IOC__V2_LEN_INET6;
    } else {
      return IOC_EINVAL;
    }
  }
  h[12] = (unsigned char)(0x20 | (local ? IOC__PROXY_LOCAL : IOC__PROXY_PROXY));
  h[13] = fam;
  h[14] = (unsigned char)(plen >> 8);
  h[15] = (unsigned char)plen;
  size_t n = IOC__PROXY_V2_HEAD + plen;
  if (n > size)
    return IOC_ENOBUFS;
  memcpy(buf, h, n);
  return (int)n;
}

int ioc__proxy_build(int version, const ioc__proxy_result_t *r, char *buf, size_t size) {
  if (version == 1)
    return ioc__build_v1(r, buf, size);
  if (version == 2)
    return ioc__build_v2(r, buf, size);
  return IOC_EINVAL;
}

int ioc__proxy_reader_feed(ioc__proxy_reader_t *rd, const void *data, size_t len,
                           ioc__proxy_result_t *out, size_t *used) {
  *used = 0;
  if (rd->len == 0) {
    int rc = ioc__proxy_parse(data, len, out);
    if (rc > 0)
      *used = (size_t)rc;
    if (rc != 0)
      return rc;
  }
  /* Incomplete: keep what the header can still need. The parser never
   * answers 0 for IOC__PROXY_MAX bytes, so the buffer never fills up
   * undecided. */
  size_t old = rd->len, take = sizeof rd->buf - old;
  if (take > len)
    take = len;
  if (old == 0 && take == len) {
    memcpy(rd->buf, data, len); /* parsed above already: 0 */
    rd->len = len;
    return 0;
  }
  memcpy(rd->buf + old, data, take);
  rd->len = old + take;
  int rc = ioc__proxy_parse(rd->buf, rd->len, out);
  if (rc > 0)
    *used = (size_t)rc - old;
  return rc;
}
