/* libFuzzer target: ioc_addr_parse / ioc_addr_format.
 *
 * Invariants checked on every input:
 *   - parse never reads past len, never crashes, and writes out only on
 *     success (poisoned output stays poisoned on failure); "unix:PATH"
 *     parses too (the same path always to the same bytes);
 *   - an address that parses formats without error, and the text parses back
 *     to the same bytes and formats to the same text (one spelling);
 *   - a buffer one byte too small gives IOC_ENOBUFS and an empty string,
 *     never a truncated address;
 *   - on Linux, the IPv4 and IPv6 grammars accept exactly what glibc's
 *     inet_pton accepts, and produce the same bytes.
 *
 * Build and run: scripts/fuzz [SECONDS] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef __linux__
#include <arpa/inet.h>
#include <netinet/in.h>
#endif

#include "iocore.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                      \
      abort();                                                             \
    }                                                                      \
  } while (0)

static void check_roundtrip(const char *s, size_t n) {
  ioc_addr_t a, b;
  memset(&a, 0xA5, sizeof a);
  ioc_addr_t poison = a;
  int rc = ioc_addr_parse(&a, s, n);
  /* "unix:" paths: too long, or the process's table of paths is full */
  int is_unix = n >= 5 && memcmp(s, "unix:", 5) == 0;
  CHECK(rc == 0 || rc == IOC_EINVAL || (is_unix && (rc == IOC_ENAMETOOLONG || rc == IOC_ENOMEM)));
  if (rc != 0) {
    CHECK(memcmp(&a, &poison, sizeof a) == 0);
    return;
  }
  CHECK(memchr(s, '\0', n) == NULL);

  char text[IOC_ADDRSTRLEN], again[IOC_ADDRSTRLEN];
  int len = ioc_addr_format(&a, text, sizeof text);
  CHECK(len > 0 && (size_t)len < sizeof text && strlen(text) == (size_t)len);
  CHECK(ioc_addr_parse(&b, text, (size_t)len) == 0);
  CHECK(memcmp(&a, &b, sizeof a) == 0);
  CHECK(ioc_addr_format(&b, again, sizeof again) == len);
  CHECK(strcmp(text, again) == 0);
  CHECK(ioc_addr_port(&a) == ioc_addr_port(&b));

  char small[IOC_ADDRSTRLEN];
  memset(small, 'x', sizeof small);
  CHECK(ioc_addr_format(&a, small, (size_t)len) == IOC_ENOBUFS);
  CHECK(small[0] == '\0');
  CHECK(ioc_addr_format(&a, small, (size_t)len + 1) == len);
  CHECK(strcmp(small, text) == 0);
}

#ifdef __linux__
/* The host grammar against inet_pton: wrap the input as a host and compare. */
static void check_against_inet_pton(const char *s, size_t n) {
  if (n > 100 || memchr(s, '\0', n) != NULL)
    return;
  char host[101], wrapped[110];
  memcpy(host, s, n);
  host[n] = '\0';
  ioc_addr_t a;

  /* IPv4: "HOST:1" (skip the one host name we accept). */
  if (strcasecmp(host, "localhost") != 0) {
    struct in_addr ref;
    int ok_ref = inet_pton(AF_INET, host, &ref) == 1;
    int len = snprintf(wrapped, sizeof wrapped, "%s:1", host);
    int ok = ioc_addr_parse(&a, wrapped, (size_t)len) == 0 && a.u.family == AF_INET;
    CHECK(ok == ok_ref);
    if (ok) {
      struct sockaddr_in sa;
      memcpy(&sa, a.u.bytes, sizeof sa);
      CHECK(memcmp(&sa.sin_addr, &ref, sizeof ref) == 0);
    }
  }

  /* IPv6: "[HOST]:1" without a zone (inet_pton knows none). */
  if (memchr(host, '%', n) == NULL && memchr(host, ']', n) == NULL) {
    struct in6_addr ref6;
    int ok_ref = inet_pton(AF_INET6, host, &ref6) == 1;
    int len = snprintf(wrapped, sizeof wrapped, "[%s]:1", host);
    int ok = ioc_addr_parse(&a, wrapped, (size_t)len) == 0;
    CHECK(ok == ok_ref);
    if (ok) {
      struct sockaddr_in6 sa6;
      memcpy(&sa6, a.u.bytes, sizeof sa6);
      CHECK(memcmp(&sa6.sin6_addr, &ref6, sizeof ref6) == 0);
    }
  }
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A heap copy of exactly size bytes, so ASan catches any read past len. */
  char *s = malloc(size ? size : 1);
  if (s == NULL)
    return 0;
  memcpy(s, data, size);
  check_roundtrip(s, size);
#ifdef __linux__
  check_against_inet_pton(s, size);
#endif
  free(s);
  return 0;
}
