/* Addresses: strict parsing of exactly `len` bytes, formatting that never
 * truncates, and listen/connect refusing what the parser refuses. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

/* Parses from a heap copy of exactly len bytes (no terminator), so an
 * address-sanitizer build catches a parser that reads past len. */
static int parse_exact(ioc_addr_t *out, const char *str, size_t len) {
  char *copy = (char *)malloc(len ? len : 1);
  ASSERT(copy != NULL);
  memcpy(copy, str, len);
  int rc = ioc_addr_parse(out, copy, len);
  free(copy);
  return rc;
}

typedef struct bad_form {
  const char *str;
  size_t len; /* 0 = strlen */
} bad_form_t;

#define B(s) {s, 0}
#define BL(s) {s, sizeof(s) - 1} /* keeps embedded NULs */

static const bad_form_t bad_forms[] = {
    /* empty and missing parts */
    {"", 0}, B(":"), B(":80"), B("1.2.3.4"), B("1.2.3.4:"), B("localhost"), B("localhost:"),
    B("[::1]"), B("[::1]:"), B("[]:80"), B(":::80"), B("::"),
    /* IPv4 octets */
    B("256.1.1.1:80"), B("1.2.3.256:80"), B("1.2.3.999:80"), B("1.2.3:80"), B("1.2.3.4.5:80"),
    B("1..3.4:80"), B(".1.2.3:80"), B("1.2.3.4.:80"), B("1.2.3.-4:80"), B("0x1.2.3.4:80"),
    B("a.b.c.d:80"), B("1.2.3.4a:80"), B("4294967296:80"),
    /* ports */
    B("1.2.3.4:65536"), B("1.2.3.4:-1"), B("1.2.3.4:+80"), B("+80"), B(":65536"),
    B("1.2.3.4:99999999999999999999"), B("1.2.3.4:0x50"), B("1.2.3.4:8a"), B("1.2.3.4:1e3"),
    B("1.2.3.4:80:80"), B("1.2.3.4::80"), B("1.2.3.4:8 0"), B("[::1]:65536"), B("[::1]:-1"),
    B("localhost:65536"), B("localhost:-1"), B("1.2.3.4:80."),
    /* IPv6 and brackets */
    B("::1:80"), B("[::1:80"), B("::1]:80"), B("[::1]]:80"), B("[[::1]]:80"), B("[::1]80"),
    B("[:::1]:80"), B("[::g]:80"), B("[1:2:3:4:5:6:7:8:9]:80"), B("[1.2.3.4]:80"), B("[]"),
    B("["), B("]"), B("[::1]:80]"), B("[::1]::80"),
    /* spaces and control characters */
    B(" 1.2.3.4:80"), B("1.2.3.4:80 "), B("1.2.3.4 :80"), B("1.2.3.4: 80"), B("\t1.2.3.4:80"),
    B("1.2.3.4:80\n"), B("[ ::1]:80"), B("1.2.3.4:\t80"),
    /* embedded NUL, with an explicit length that includes it */
    BL("1.2.3.4:80\0"), BL("1.2.3.4\0:80"), BL("\0"), BL("1.2.3.4:8\0" "0"), BL("[::1]\0:80"),
    BL("localhost\0:80"),
    /* names that are not resolved */
    B("example.com:80"), B("host:80"), B("localhost.:80"), B("local host:80"),
};

static char long_host[400], long_digits[400], long_port[400];

static void check_rejected(const char *str, size_t len, const char *label) {
  ioc_addr_t out;
  memset(&out, 0xA5, sizeof out);
  ioc_addr_t before = out;
  int rc = parse_exact(&out, str, len);
  char shown[96];
  size_t k = 0;
  for (size_t i = 0; i < len && k + 5 < sizeof shown; i++) {
    unsigned char ch = (unsigned char)str[i];
    if (ch >= 32 && ch < 127)
      shown[k++] = (char)ch;
    else
      k += (size_t)snprintf(shown + k, sizeof shown - k, "\\x%02x", ch);
  }
  shown[k] = 0;
  if (rc != IOC_EINVAL)
    FAILF("ioc_addr_parse(\"%s\"%s, len %zu) returned %d (%s), expected EINVAL", shown, label, len, rc, ioc_err_name(rc));
  if (memcmp(&out, &before, sizeof out) != 0)
    FAILF("ioc_addr_parse(\"%s\"%s) wrote to out although it failed", shown, label);
}

void test_address_parse_rejects_malformed_forms(void) {
  size_t n = sizeof bad_forms / sizeof bad_forms[0];
  ASSERT_GE(n, 50);
  for (size_t i = 0; i < n; i++) {
    size_t len = bad_forms[i].len ? bad_forms[i].len : strlen(bad_forms[i].str);
    check_rejected(bad_forms[i].str, len, "");
  }
  /* 300-byte host, 300 digits, 300-digit port */
  memset(long_host, 'a', 300);
  memcpy(long_host + 300, ":80", 4);
  check_rejected(long_host, strlen(long_host), " (300-byte host)");
  for (int i = 0; i < 300; i++) long_digits[i] = (char)('1' + i % 9);
  memcpy(long_digits + 300, ":80", 4);
  check_rejected(long_digits, strlen(long_digits), " (300 digits)");
  memcpy(long_port, "1.2.3.4:", 8);
  memset(long_port + 8, '0', 300);
  long_port[307] = '8';
  long_port[308] = 0;
  check_rejected(long_port, strlen(long_port), " (300-digit port)");
  /* an over-long IPv6 literal */
  char v6[400];
  size_t u = 0;
  v6[u++] = '[';
  for (int i = 0; i < 60; i++) u += (size_t)snprintf(v6 + u, sizeof v6 - u, "ffff:");
  u += (size_t)snprintf(v6 + u, sizeof v6 - u, "1]:80");
  check_rejected(v6, u, " (long IPv6)");
}

/* ---- address_parse_and_format_round_trip ------------------------------------ */

typedef struct good_form {
  const char *in;
  const char *out; /* what ioc_addr_format gives back */
  int family;      /* 4 or 6 */
  int port;
} good_form_t;

static const good_form_t good_forms[] = {
    {"1.2.3.4:80", "1.2.3.4:80", 4, 80},
    {"0.0.0.0:0", "0.0.0.0:0", 4, 0},
    {"255.255.255.255:65535", "255.255.255.255:65535", 4, 65535},
    {"127.0.0.1:7777", "127.0.0.1:7777", 4, 7777},
    {"localhost:7777", "127.0.0.1:7777", 4, 7777},
    {"localhost:0", "127.0.0.1:0", 4, 0},
    {"10.0.0.1:1", "10.0.0.1:1", 4, 1},
    {"[::1]:0", "[::1]:0", 6, 0},
    {"[::1]:80", "[::1]:80", 6, 80},
    {"[::]:65535", "[::]:65535", 6, 65535},
    {"[2001:db8::1]:443", "[2001:db8::1]:443", 6, 443},
    {"[2001:DB8::1]:443", "[2001:db8::1]:443", 6, 443},
    {"[0:0:0:0:0:0:0:1]:8080", "[::1]:8080", 6, 8080},
    {"[fe80::1:2]:1", "[fe80::1:2]:1", 6, 1},
    {"[1:2:3:4:5:6:7:8]:9", "[1:2:3:4:5:6:7:8]:9", 6, 9},
};

void test_address_parse_and_format_round_trip(void) {
  for (size_t i = 0; i < sizeof good_forms / sizeof good_forms[0]; i++) {
    const good_form_t *g = &good_forms[i];
    ioc_addr_t a;
    memset(&a, 0, sizeof a);
    int rc = parse_exact(&a, g->in, strlen(g->in));
    ASSERT_MSG(rc == 0, "ioc_addr_parse(\"%s\"): %d (%s)", g->in, rc, ioc_err_name(rc));
    if (g->family == 4) {
      ASSERT_EQ(a.u.family, AF_INET);
      ASSERT_EQ(a.len, sizeof(struct sockaddr_in));
      struct sockaddr_in sin;
      memcpy(&sin, a.u.bytes, sizeof sin);
      ASSERT_EQ(ntohs(sin.sin_port), g->port);
    } else {
      ASSERT_EQ(a.u.family, AF_INET6);
      ASSERT_EQ(a.len, sizeof(struct sockaddr_in6));
      struct sockaddr_in6 sin6;
      memcpy(&sin6, a.u.bytes, sizeof sin6);
      ASSERT_EQ(ntohs(sin6.sin6_port), g->port);
    }
    ASSERT_EQ(ioc_addr_port(&a), g->port);
    char buf[IOC_ADDRSTRLEN];
    memset(buf, 'x', sizeof buf);
    int n = ioc_addr_format(&a, buf, sizeof buf);
    ASSERT_MSG(n > 0, "ioc_addr_format(%s): %d (%s)", g->in, n, ioc_err_name(n));
    ASSERT_EQ(n, strlen(buf));
    ASSERT_MSG(strcmp(buf, g->out) == 0, "\"%s\" formats as \"%s\", expected \"%s\"", g->in, buf, g->out);
    /* and back again, to the same bytes */
    ioc_addr_t b;
    memset(&b, 0, sizeof b);
    ASSERT_OK(parse_exact(&b, buf, (size_t)n));
    ASSERT_EQ(b.len, a.len);
    ASSERT_MSG(memcmp(a.u.bytes, b.u.bytes, a.len) == 0, "\"%s\" does not parse back to the same address", buf);
  }
  /* a sockaddr built by hand formats as expected */
  ioc_addr_t h;
  memset(&h, 0, sizeof h);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons(4321);
  sin.sin_addr.s_addr = htonl(0xC0A80102); /* 192.168.1.2 */
  memcpy(h.u.bytes, &sin, sizeof sin);
  h.len = sizeof sin;
  char buf[IOC_ADDRSTRLEN];
  ASSERT_EQ(ioc_addr_format(&h, buf, sizeof buf), 16);
  ASSERT_STR_EQ(buf, "192.168.1.2:4321");
  ASSERT_EQ(ioc_addr_port(&h), 4321);
}

/* ---- address_parse_honours_explicit_length ------------------------------------ */

void test_address_parse_honours_explicit_length(void) {
  ioc_addr_t a;
  char buf[IOC_ADDRSTRLEN];
  /* the first 9 bytes of "1.2.3.4:8080" are "1.2.3.4:8" */
  ASSERT_OK(parse_exact(&a, "1.2.3.4:8080", 9));
  ASSERT_EQ(ioc_addr_port(&a), 8);
  /* trailing bytes past len are not looked at */
  ASSERT_OK(ioc_addr_parse(&a, "1.2.3.4:80XYZ", 10));
  ASSERT_EQ(ioc_addr_port(&a), 80);
  ASSERT_OK(ioc_addr_parse(&a, "[::1]:443]]]", 9));
  ASSERT_EQ(ioc_addr_port(&a), 443);
  ASSERT_OK(ioc_addr_parse(&a, "localhost:99 and more", 12));
  ASSERT_EQ(ioc_addr_port(&a), 99);
  ASSERT(ioc_addr_format(&a, buf, sizeof buf) > 0);
  ASSERT_STR_EQ(buf, "127.0.0.1:99");
  /* a length that cuts the form short is malformed */
  ASSERT_ERR(parse_exact(&a, "1.2.3.4:80", 7), IOC_EINVAL);
  ASSERT_ERR(parse_exact(&a, "[::1]:80", 5), IOC_EINVAL);
  ASSERT_ERR(ioc_addr_parse(&a, "1.2.3.4:80", 0), IOC_EINVAL);
}

/* ---- address_format_never_truncates ---------------------------------------------- */

static void check_small_buffers(const ioc_addr_t *a, const char *want) {
  size_t need = strlen(want); /* without the NUL */
  for (size_t size = 0; size <= need; size++) {
    char buf[IOC_ADDRSTRLEN + 8];
    memset(buf, '#', sizeof buf);
    int rc = ioc_addr_format(a, buf, size);
    ASSERT_MSG(rc == IOC_ENOBUFS, "ioc_addr_format(%s) into %zu bytes returned %d (%s), expected ENOBUFS", want, size, rc, ioc_err_name(rc));
    if (size > 0) ASSERT_MSG(memchr(buf, 0, size) != NULL, "ioc_addr_format into %zu bytes left no NUL", size);
    for (size_t i = size; i < sizeof buf; i++)
      ASSERT_MSG(buf[i] == '#', "ioc_addr_format into %zu bytes wrote byte %zu", size, i);
  }
  char buf[IOC_ADDRSTRLEN + 8];
  memset(buf, '#', sizeof buf);
  ASSERT_EQ(ioc_addr_format(a, buf, need + 1), (int)need);
  ASSERT_STR_EQ(buf, want);
  ASSERT_EQ(buf[need + 1], '#');
}

void test_address_format_never_truncates(void) {
  ioc_addr_t a;
  ASSERT_OK(ioc_addr_parse(&a, "[2001:db8::1]:443", 17));
  check_small_buffers(&a, "[2001:db8::1]:443");
  ASSERT_OK(ioc_addr_parse(&a, "255.255.255.255:65535", 21));
  check_small_buffers(&a, "255.255.255.255:65535");
  ASSERT_OK(ioc_addr_parse(&a, "1.2.3.4:5", 9));
  check_small_buffers(&a, "1.2.3.4:5");

  /* the longest form fits IOC_ADDRSTRLEN */
  ioc_addr_t big;
  memset(&big, 0, sizeof big);
  struct sockaddr_in6 s6;
  memset(&s6, 0, sizeof s6);
  s6.sin6_family = AF_INET6;
  s6.sin6_port = htons(65535);
  memset(&s6.sin6_addr, 0xff, sizeof s6.sin6_addr);
  s6.sin6_scope_id = 4294967295u;
  memcpy(big.u.bytes, &s6, sizeof s6);
  big.len = sizeof s6;
  char buf[IOC_ADDRSTRLEN];
  int n = ioc_addr_format(&big, buf, sizeof buf);
  ASSERT_MSG(n > 0 && n < IOC_ADDRSTRLEN, "ioc_addr_format of an all-ones IPv6 address with scope: %d (%s)", n, ioc_err_name(n));
  ASSERT_EQ(strlen(buf), n);
  ASSERT(strstr(buf, "]:65535") != NULL);
  /* the v4-mapped form with the dotted quad */
  memset(&s6.sin6_addr, 0, sizeof s6.sin6_addr);
  s6.sin6_addr.s6_addr[10] = 0xff;
  s6.sin6_addr.s6_addr[11] = 0xff;
  memset(&s6.sin6_addr.s6_addr[12], 0xff, 4);
  memcpy(big.u.bytes, &s6, sizeof s6);
  n = ioc_addr_format(&big, buf, sizeof buf);
  ASSERT_MSG(n > 0 && n < IOC_ADDRSTRLEN, "ioc_addr_format of a v4-mapped address with scope: %d", n);

  /* an unknown family */
  ioc_addr_t bad;
  memset(&bad, 0, sizeof bad);
  bad.u.family = 12345;
  bad.len = 16;
  memset(buf, '#', sizeof buf);
  ASSERT_ERR(ioc_addr_format(&bad, buf, sizeof buf), IOC_EINVAL);
  ASSERT_EQ(ioc_addr_port(&bad), 0);
}

/* ---- listen_and_connect_reject_bad_addresses ------------------------------------------ */

static void must_not_run_open(ioc_session_t *s, int err) {
  (void)s;
  FAILF("on_open(%d) ran for a connect that was refused at the call", err);
}

void test_listen_and_connect_reject_bad_addresses(void) {
  ioc_core_t *core;
  make_core(&core);
  /* (a host name such as "example.com:80" is no longer refused by connect:
   * it is resolved, see test_connect_name.c; listen still wants an address) */
  const char *forms[] = {"", "1.2.3.256:80", "[::1", "1.2.3.4:-1", "1.2.3.4:65536",
                         "::1:80", "[::1]", ":80", "1.2.3.4:", "example.com:99999", "bad name:80",
                         "1.2.3.4a:80", "10.0.0.1x:80", "127.0.0.1.2a:80"};
  ioc_session_callbacks_t cbs = callbacks(must_not_run_open, NULL, NULL, NULL);
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    ioc_listener_t *l = (ioc_listener_t *)(uintptr_t)1;
    int rc = ioc_listen(core, forms[i], strlen(forms[i]), NULL, NULL, NULL, &l);
    ASSERT_MSG(rc == IOC_EINVAL, "ioc_listen(\"%s\") returned %d (%s)", forms[i], rc, ioc_err_name(rc));
    ASSERT_MSG(l == (ioc_listener_t *)(uintptr_t)1, "ioc_listen(\"%s\") wrote *out although it failed", forms[i]);
    ioc_session_t *s = (ioc_session_t *)(uintptr_t)1;
    rc = ioc_connect(core, forms[i], strlen(forms[i]), &cbs, NULL, NULL, &s);
    ASSERT_MSG(rc == IOC_EINVAL, "ioc_connect(\"%s\") returned %d (%s)", forms[i], rc, ioc_err_name(rc));
    ASSERT_MSG(s == (ioc_session_t *)(uintptr_t)1, "ioc_connect(\"%s\") wrote *out although it failed", forms[i]);
    ioc_stats_t st = core_stats(core);
    ASSERT_EQ(st.objects, 0);
    ASSERT_EQ(st.sockets, 0);
    ASSERT_EQ(st.ops_inflight, 0);
  }
  /* embedded NUL with the explicit length */
  static const char nul_form[] = "127.0.0.1:0\0";
  ioc_listener_t *l = NULL;
  ASSERT_ERR(ioc_listen(core, nul_form, sizeof nul_form - 1, NULL, NULL, NULL, &l), IOC_EINVAL);
  ioc_session_t *s = NULL;
  ASSERT_ERR(ioc_connect(core, nul_form, sizeof nul_form - 1, &cbs, NULL, NULL, &s), IOC_EINVAL);
  ASSERT(s == NULL && l == NULL);
  pump_for(core, 20);
  ASSERT_EQ(core_stats(core).objects, 0);
  ASSERT_CORE_CLEAN(core);
}

/* ---- listen_reports_eaddrinuse -------------------------------------------------------- */

void test_listen_reports_eaddrinuse(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_listener_t *l = listen_loopback(core, NULL, NULL, NULL);
  char addr[IOC_ADDRSTRLEN];
  listener_addr_str(l, addr);
  ioc_listener_t *l2 = NULL;
  int rc = ioc_listen(core, addr, strlen(addr), NULL, NULL, NULL, &l2);
  ASSERT_MSG(rc == IOC_EADDRINUSE, "second ioc_listen(%s) returned %d (%s), expected EADDRINUSE", addr, rc, ioc_err_name(rc));
  ASSERT(l2 == NULL);
  ioc_stats_t st = core_stats(core);
  ASSERT_EQ(st.objects, 1);
  ASSERT_EQ(st.sockets, 1);
  /* a port held by a plain OS listener too */
  ioc_addr_t os_addr;
  sock_t os = tcp_listen_os(&os_addr);
  listener_addr_str(l, addr);
  ASSERT(ioc_addr_format(&os_addr, addr, sizeof addr) > 0);
  ASSERT_ERR(ioc_listen(core, addr, strlen(addr), NULL, NULL, NULL, &l2), IOC_EADDRINUSE);
  sock_close(os);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
}
