/* Socket addresses as strings: a strict parser and a canonical formatter.
 *
 * Accepted, and nothing else (`len` bytes exactly; a NUL among them is an
 * error, not an end):
 *
 *   IPV4 ":" PORT          "127.0.0.1:7777", "0.0.0.0:0"
 *   "[" IPV6 "]" ":" PORT  "[::1]:7777", "[fe80::1%2]:80", "[::ffff:1.2.3.4]:80"
 *   "localhost" ":" PORT   127.0.0.1 (ASCII case-insensitive)
 *
 *   IPV4  four decimal octets 0..255 joined by dots; no sign, no spaces, and
 *         no leading zeros ("01.2.3.4" is rejected: inet_aton() would read it
 *         as octal, so it means different things to different tools).
 *   IPV6  RFC 4291 text: up to eight groups of 1..4 hex digits, at most one
 *         "::", optionally ending in an IPV4 as above. Same acceptance as
 *         glibc's inet_pton(AF_INET6) (the fuzzer checks this), but
 *         hand-written so every platform parses alike.
 *         A zone may follow as "%N": N a decimal interface index 1..4294967295
 *         without leading zeros, stored in sin6_scope_id. Interface names
 *         ("%eth0") are rejected: they would need a lookup.
 *   PORT  decimal 0..65535, no sign, no spaces, no leading zeros ("0" itself
 *         is fine; "080" is not), so each address has one spelling.
 *
 *   "unix:" PATH           a unix-domain socket, PATH 1..IOC_UNIX_PATH_MAX
 *                          bytes taken as they are
 *
 * Every other host name is rejected: iocore resolves nothing. IPV6 without
 * brackets ("::1:80") is rejected since the port could not be told apart.
 *
 * Unix-domain paths (up to 107 bytes) do not fit the 28 bytes of an
 * ioc_addr_t, and the struct must not grow (it is embedded in every
 * session and operation). So each path is kept once per process in an
 * append-only table (bounded, never freed, so a copied ioc_addr_t can
 * never dangle) and the address holds a pointer to it: the same path is
 * always the same bytes, which keeps "parse what the formatter wrote gives
 * back the same bytes" true for unix: too.
 *
 * The formatter writes the canonical (RFC 5952) form: lower-case hex, the
 * longest run of two or more zero groups as "::" (the first on a tie), dotted
 * IPv4 only in IPv4-mapped addresses (::ffff:a.b.c.d), "%N" when
 * sin6_scope_id is not 0. sin6_flowinfo is not part of the text. Parsing what
 * the formatter wrote gives back the same bytes. */
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

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "iocore.h"
#include "address.h"

_Static_assert(sizeof(struct sockaddr_in) <= sizeof(((ioc_addr_t *)0)->u.bytes),
               "ioc_addr_t too small for sockaddr_in");
_Static_assert(sizeof(struct sockaddr_in6) <= sizeof(((ioc_addr_t *)0)->u.bytes),
               "ioc_addr_t too small for sockaddr_in6");

/* The longest IPv6 text accepted inside the brackets, zone excluded:
 * "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" (INET6_ADDRSTRLEN - 1). */
#define IOC__IP6_TEXT_MAX 45

/* ---- parsing pieces -------------------------------------------------------- */

static int ioc__is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int ioc__hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* A decimal number of [s, end) without sign or leading zeros, at most max.
 * Returns 0 and *out, or -1. */
static int ioc__parse_decimal(const char *s, const char *end, uint32_t max, uint32_t *out) {
  if (s == end || (s[0] == '0' && end - s > 1))
    return -1;
  uint64_t v = 0;
  for (; s < end; s++) {
    if (!ioc__is_digit(*s))
      return -1;
    v = v * 10 + (uint64_t)(*s - '0');
    if (v > max)
      return -1; /* also bounds v long before it could overflow */
  }
  *out = (uint32_t)v;
  return 0;
}

/* Exactly "a.b.c.d" over [s, end), into 4 bytes in network order. */
static int ioc__parse_ip4(const char *s, const char *end, unsigned char out[4]) {
  for (int i = 0; i < 4; i++) {
    const char *p = s;
    while (p < end && *p != '.')
      p++;
    if ((i < 3) != (p < end)) /* a dot after each of the first three octets only */
      return -1;
    uint32_t v;
    if (p - s > 3 || ioc__parse_decimal(s, p, 255, &v) != 0)
      return -1;
    out[i] = (unsigned char)v;
    if (i < 3)
      s = p + 1;
  }
  return 0;
}

/* IPv6 text over [s, end) (no zone, no brackets), into 16 bytes. Mirrors the
 * acceptance of glibc's inet_pton6: 1..4 hex digits a group, one "::" at
 * most, "::" never standing for zero groups, an IPv4 tail only where the
 * last 32 bits go. */
static int ioc__parse_ip6(const char *s, const char *end, unsigned char out[16]) {
  unsigned char tmp[16] = {0};
  int n = 0;     /* bytes filled in tmp */
  int gap = -1;  /* where "::" stands, in bytes, or -1 */
  if (s == end)
    return -1;
  if (*s == ':') {
    if (end - s < 2 || s[1] != ':')
      return -1; /* a lone leading ':' */
    gap = 0;
    s += 2;
    if (s == end)
      goto done; /* "::" */
  }
  for (;;) {
    /* one group (or an IPv4 tail) starts at s */
    const char *g = s;
    unsigned v = 0;
    int digits = 0;
    while (s < end && ioc__hex_value(*s) >= 0 && digits < 5) {
      v = v * 16 + (unsigned)ioc__hex_value(*s);
      digits++;
      s++;
    }
    if (s < end && *s == '.') {
      if (n > 12 || ioc__parse_ip4(g, end, tmp + n) != 0)
        return -1;
      n += 4;
      break;
    }
    if (digits == 0 || digits > 4 || n > 14)
      return -1;
    tmp[n++] = (unsigned char)(v >> 8);
    tmp[n++] = (unsigned char)v;
    if (s == end)
      break;
    if (*s != ':')
      return -1;
    s++;
    if (s == end)
      return -1; /* trailing single ':' */
    if (*s == ':') {
      if (gap >= 0)
        return -1; /* a second "::" */
      gap = n;
      s++;
      if (s == end)
        break; /* trailing "::" */
    }
  }
done:
  if (gap >= 0) {
    if (n == 16)
      return -1; /* "::" must stand for at least one group */
    int tail = n - gap;
    memmove(tmp + 16 - tail, tmp + gap, (size_t)tail);
    memset(tmp + gap, 0, (size_t)(16 - tail - gap));
  } else if (n != 16) {
    return -1;
  }
  memcpy(out, tmp, 16);
  return 0;
}

static int ioc__ascii_ieq(const char *s, size_t len, const char *lower) {
  size_t i = 0;
  for (; i < len && lower[i] != '\0'; i++) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    if (c != lower[i])
      return 0;
  }
  return i == len && lower[i] == '\0';
}

/* ---- unix-domain paths ----------------------------------------------------------- */

/* Where the path pointer sits in a unix address's bytes (after the family). */
#define IOC__UNIX_PTR_OFF 8
#define IOC__UNIX_BUCKETS 256
/* offsetof(struct sockaddr_un, sun_path) on every platform */
#define IOC__SUN_PATH_OFF 2

typedef struct ioc__upath {
  struct ioc__upath *next;
  size_t len;
  char path[]; /* NUL-terminated */
} ioc__upath_t;

static struct {
  atomic_flag lock;
  size_t count;
  ioc__upath_t *buckets[IOC__UNIX_BUCKETS];
} ioc__upaths = {ATOMIC_FLAG_INIT, 0, {NULL}};

/* The process's one copy of path (len bytes, no NUL among them), made on
 * first use; NULL when IOC_UNIX_PATHS_MAX paths are kept already or
 * memory ran out. Any thread. */
static const char *ioc__upath_intern(const char *path, size_t len) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)path[i]) * 16777619u;
  ioc__upath_t **b = &ioc__upaths.buckets[h % IOC__UNIX_BUCKETS];
  while (atomic_flag_test_and_set_explicit(&ioc__upaths.lock, memory_order_acquire)) {
  }
  const char *found = NULL;
  for (ioc__upath_t *e = *b; e && !found; e = e->next)
    if (e->len == len && memcmp(e->path, path, len) == 0) found = e->path;
  if (!found && ioc__upaths.count < IOC_UNIX_PATHS_MAX) {
    ioc__upath_t *e = malloc(sizeof *e + len + 1);
    if (e) {
      e->len = len;
      memcpy(e->path, path, len);
      e->path[len] = '\0';
      e->next = *b;
      *b = e;
      ioc__upaths.count++;
      found = e->path;
    }
  }
  atomic_flag_clear_explicit(&ioc__upaths.lock, memory_order_release);
  return found;
}

/* A unix address for path (NULL: unnamed). */
static void ioc__addr_set_unix(ioc_addr_t *a, const char *path) {
  memset(a, 0, sizeof *a);
  a->u.family = AF_UNIX;
  memcpy(a->u.bytes + IOC__UNIX_PTR_OFF, &path, sizeof path);
  a->len = (uint32_t)(IOC__SUN_PATH_OFF + (path ? strlen(path) + 1 : 0));
}

const char *ioc__addr_unix_path(const ioc_addr_t *a) {
  const char *path = NULL;
  if (a && a->u.family == AF_UNIX) memcpy(&path, a->u.bytes + IOC__UNIX_PTR_OFF, sizeof path);
  return path;
}

int ioc__addr_sockaddr(const ioc_addr_t *a, void *sa, size_t cap) {
  if (a->u.family != AF_UNIX) {
    if (a->len == 0 || a->len > sizeof a->u.bytes || a->len > cap) return IOC_EINVAL;
    memcpy(sa, a->u.bytes, a->len);
    return (int)a->len;
  }
  const char *path = ioc__addr_unix_path(a);
  size_t n = path ? strlen(path) : 0;
  if (IOC__SUN_PATH_OFF + n + 1 > cap) return IOC_EINVAL;
  memset(sa, 0, IOC__SUN_PATH_OFF + n + 1);
  uint16_t family = AF_UNIX;
  memcpy(sa, &family, sizeof family); /* sun_family: the first member, 2 bytes */
  if (n) memcpy((char *)sa + IOC__SUN_PATH_OFF, path, n);
  return (int)(IOC__SUN_PATH_OFF + n + (n ? 1 : 0));
}

int ioc__addr_from_unix(ioc_addr_t *out, const void *sa, size_t len) {
  const char *p = (const char *)sa + IOC__SUN_PATH_OFF;
  size_t n = 0;
  if (len > IOC__SUN_PATH_OFF) {
    const char *nul = memchr(p, '\0', len - IOC__SUN_PATH_OFF);
    n = nul ? (size_t)(nul - p) : len - IOC__SUN_PATH_OFF;
  }
  if (n == 0 || n > IOC_UNIX_PATH_MAX) { /* unnamed (or abstract: not kept) */
    ioc__addr_set_unix(out, NULL);
    return 0;
  }
  const char *kept = ioc__upath_intern(p, n);
  ioc__addr_set_unix(out, kept);
  return kept ? 0 : IOC_ENOMEM;
}

static int ioc__parse_unix(ioc_addr_t *out, const char *path, size_t len) {
  if (len == 0) return IOC_EINVAL;
  if (len > IOC_UNIX_PATH_MAX) return IOC_ENAMETOOLONG;
  const char *kept = ioc__upath_intern(path, len);
  if (!kept) return IOC_ENOMEM;
  ioc__addr_set_unix(out, kept);
  return 0;
}

/* ---- public ------------------------------------------------------------------ */

int ioc_addr_parse(ioc_addr_t *out, const char *str, size_t len) {
  if (out == NULL || str == NULL || len == 0)
    return IOC_EINVAL;
  if (memchr(str, '\0', len) != NULL)
    return IOC_EINVAL;
  if (len >= 5 && memcmp(str, "unix:", 5) == 0)
    return ioc__parse_unix(out, str + 5, len - 5);
  const char *end = str + len;

  /* Split host and port. */
  const char *host, *host_end, *port;
  int bracketed = str[0] == '[';
  if (bracketed) {
    const char *close = memchr(str, ']', len);
    if (close == NULL || close + 1 == end || close[1] != ':')
      return IOC_EINVAL;
    host = str + 1;
    host_end = close;
    port = close + 2;
  } else {
    const char *colon = memchr(str, ':', len);
    if (colon == NULL || memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL)
      return IOC_EINVAL; /* no port, or unbracketed IPv6 */
    host = str;
    host_end = colon;
    port = colon + 1;
  }
  uint32_t port_num;
  if (end - port > 5 || ioc__parse_decimal(port, end, 65535, &port_num) != 0)
    return IOC_EINVAL;

  ioc_addr_t a;
  memset(&a, 0, sizeof a);
  if (bracketed) {
    const char *zone = memchr(host, '%', (size_t)(host_end - host));
    const char *ip_end = zone != NULL ? zone : host_end;
    uint32_t scope = 0;
    if (ip_end - host > IOC__IP6_TEXT_MAX)
      return IOC_EINVAL;
    if (zone != NULL &&
        (host_end - zone > 11 || ioc__parse_decimal(zone + 1, host_end, UINT32_MAX, &scope) != 0 ||
         scope == 0))
      return IOC_EINVAL;
    struct sockaddr_in6 sa6;
    memset(&sa6, 0, sizeof sa6);
    if (ioc__parse_ip6(host, ip_end, (unsigned char *)&sa6.sin6_addr) != 0)
      return IOC_EINVAL;
    sa6.sin6_family = AF_INET6;
    sa6.sin6_port = htons((uint16_t)port_num);
    sa6.sin6_scope_id = scope;
    memcpy(a.u.bytes, &sa6, sizeof sa6);
    a.len = (uint32_t)sizeof sa6;
  } else {
    struct sockaddr_in sa4;
    memset(&sa4, 0, sizeof sa4);
    size_t hlen = (size_t)(host_end - host);
    if (ioc__ascii_ieq(host, hlen, "localhost")) {
      sa4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (hlen > 15 || ioc__parse_ip4(host, host_end, (unsigned char *)&sa4.sin_addr) != 0) {
      return IOC_EINVAL;
    }
    sa4.sin_family = AF_INET;
    sa4.sin_port = htons((uint16_t)port_num);
    memcpy(a.u.bytes, &sa4, sizeof sa4);
    a.len = (uint32_t)sizeof sa4;
  }
  *out = a;
  return 0;
}

/* ---- formatting ---------------------------------------------------------------- */

/* A bounded writer: remembers overflow instead of truncating. */
typedef struct {
  char *buf;
  size_t size, n;
} ioc__w_t;

static void ioc__w_str(ioc__w_t *w, const char *s) {
  for (; *s; s++, w->n++)
    if (w->n < w->size)
      w->buf[w->n] = *s;
}

static void ioc__w_uint(ioc__w_t *w, uint32_t v) {
  char tmp[11];
  int i = (int)sizeof tmp - 1;
  tmp[i] = '\0';
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  ioc__w_str(w, tmp + i);
}

static void ioc__w_hex16(ioc__w_t *w, unsigned v) {
  static const char hex[] = "0123456789abcdef";
  char tmp[5];
  int i = 4;
  tmp[i] = '\0';
  do {
    tmp[--i] = hex[v & 15];
    v >>= 4;
  } while (v != 0);
  ioc__w_str(w, tmp + i);
}

static void ioc__w_ip4(ioc__w_t *w, const unsigned char b[4]) {
  for (int i = 0; i < 4; i++) {
    if (i > 0)
      ioc__w_str(w, ".");
    ioc__w_uint(w, b[i]);
  }
}

static void ioc__w_ip6(ioc__w_t *w, const unsigned char b[16]) {
  unsigned g[8];
  for (int i = 0; i < 8; i++)
    g[i] = (unsigned)b[2 * i] << 8 | b[2 * i + 1];

  /* IPv4-mapped ::ffff:a.b.c.d keeps its dotted tail (RFC 5952 section 5). */
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(b, mapped, sizeof mapped) == 0) {
    ioc__w_str(w, "::ffff:");
    ioc__w_ip4(w, b + 12);
    return;
  }

  /* The longest run of at least two zero groups becomes "::". */
  int best = -1, best_len = 1;
  for (int i = 0; i < 8;) {
    if (g[i] != 0) {
      i++;
      continue;
    }
    int j = i;
    while (j < 8 && g[j] == 0)
      j++;
    if (j - i > best_len) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  for (int i = 0; i < 8; i++) {
    if (i == best) {
      ioc__w_str(w, "::");
      i += best_len - 1;
      continue;
    }
    if (i > 0 && i != best + best_len)
      ioc__w_str(w, ":");
    ioc__w_hex16(w, g[i]);
  }
}

int ioc_addr_format(const ioc_addr_t *addr, char *buf, size_t size) {
  ioc__w_t w = {buf, size, 0};
  if (buf == NULL)
    w.size = 0;
  if (addr == NULL) {
    if (w.size > 0)
      buf[0] = '\0';
    return IOC_EINVAL;
  }
  if (addr->u.family == AF_INET) {
    struct sockaddr_in sa4;
    memcpy(&sa4, addr->u.bytes, sizeof sa4);
    ioc__w_ip4(&w, (const unsigned char *)&sa4.sin_addr);
    ioc__w_str(&w, ":");
    ioc__w_uint(&w, ntohs(sa4.sin_port));
  } else if (addr->u.family == AF_INET6) {
    struct sockaddr_in6 sa6;
    memcpy(&sa6, addr->u.bytes, sizeof sa6);
    ioc__w_str(&w, "[");
    ioc__w_ip6(&w, (const unsigned char *)&sa6.sin6_addr);
    if (sa6.sin6_scope_id != 0) {
      ioc__w_str(&w, "%");
      ioc__w_uint(&w, (uint32_t)sa6.sin6_scope_id);
    }
    ioc__w_str(&w, "]:");
    ioc__w_uint(&w, ntohs(sa6.sin6_port));
  } else if (addr->u.family == AF_UNIX) {
    const char *path = ioc__addr_unix_path(addr);
    ioc__w_str(&w, "unix:");
    if (path)
      ioc__w_str(&w, path);
  } else {
    if (w.size > 0)
      buf[0] = '\0';
    return IOC_EINVAL;
  }
  if (w.n >= w.size) {
    if (w.size > 0)
      buf[0] = '\0'; /* nothing half-written */
    return IOC_ENOBUFS;
  }
  buf[w.n] = '\0';
  return (int)w.n;
}

int ioc_addr_port(const ioc_addr_t *addr) {
  if (addr == NULL)
    return 0;
  if (addr->u.family == AF_INET) {
    struct sockaddr_in sa4;
    memcpy(&sa4, addr->u.bytes, sizeof sa4);
    return ntohs(sa4.sin_port);
  }
  if (addr->u.family == AF_INET6) {
    struct sockaddr_in6 sa6;
    memcpy(&sa6, addr->u.bytes, sizeof sa6);
    return ntohs(sa6.sin6_port);
  }
  return 0;
}
