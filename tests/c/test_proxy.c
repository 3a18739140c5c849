/* PROXY protocol v1/v2 parser (src/net/proxy.c): addresses out of valid
 * headers, "more bytes" for every truncation, EPROTO for each kind of
 * malformed header, the size limits, and the builder round trip. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

#include "proxy.h"

/* Parses from a heap copy of exactly len bytes, so an address-sanitizer
 * build catches a read past len. */
static int parse_exact(const void *buf, size_t len, ioc__proxy_result_t *out) {
  char *copy = (char *)malloc(len ? len : 1);
  ASSERT(copy != NULL);
  memcpy(copy, buf, len);
  int rc = ioc__proxy_parse(copy, len, out);
  free(copy);
  return rc;
}

static void addr_is(const ioc_addr_t *a, const char *want) {
  char text[IOC_ADDRSTRLEN];
  ASSERT_OK(ioc_addr_format(a, text, sizeof text));
  ASSERT_STR_EQ(text, want);
}

static const char v2_sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* A v2 header: signature, ver_cmd, fam, then plen bytes of payload. */
static size_t v2(unsigned char *out, unsigned char ver_cmd, unsigned char fam,
                 const unsigned char *payload, size_t plen) {
  memcpy(out, v2_sig, 12);
  out[12] = ver_cmd;
  out[13] = fam;
  out[14] = (unsigned char)(plen >> 8);
  out[15] = (unsigned char)plen;
  if (plen) memcpy(out + 16, payload, plen);
  return 16 + plen;
}

static const unsigned char v4_block[12] = {192, 0, 2, 1, 198, 51, 100, 7, 0x1f, 0x90, 0x01, 0xbb};
static unsigned char v6_block[36];

static void fill_v6_block(void) {
  memset(v6_block, 0, sizeof v6_block);
  v6_block[0] = 0x20; v6_block[1] = 0x01; v6_block[2] = 0x0d; v6_block[3] = 0xb8; v6_block[15] = 1;
  v6_block[16] = 0xfe; v6_block[17] = 0x80; v6_block[31] = 2;
  v6_block[32] = 0xc3; v6_block[33] = 0x50; /* 50000 */
  v6_block[34] = 0x00; v6_block[35] = 0x50; /* 80 */
}

/* ---- valid headers ------------------------------------------------------- */

void test_proxy_v1_tcp4_and_tcp6_give_client_and_proxy_addresses(void) {
  ioc__proxy_result_t r;
  const char *h4 = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\nGET /";
  int n = parse_exact(h4, strlen(h4), &r);
  ASSERT_EQ(n, (int)strlen(h4) - 5);
  ASSERT_EQ(r.len, (size_t)n);
  ASSERT_EQ(r.version, 1);
  ASSERT_EQ(r.command, IOC__PROXY_PROXY);
  ASSERT_EQ(r.has_addrs, 1);
  addr_is(&r.src, "192.0.2.1:56324");
  addr_is(&r.dst, "198.51.100.7:443");

  const char *h6 = "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 65535 0\r\n";
  n = parse_exact(h6, strlen(h6), &r);
  ASSERT_EQ(n, (int)strlen(h6));
  ASSERT_EQ(r.has_addrs, 1);
  addr_is(&r.src, "[2001:db8::1]:65535");
  addr_is(&r.dst, "[::ffff:10.0.0.1]:0");

  /* upper-case hex is the same address */
  const char *h6u = "PROXY TCP6 2001:DB8::1 FE80::2 1 2\r\n";
  ASSERT_EQ(parse_exact(h6u, strlen(h6u), &r), (int)strlen(h6u));
  addr_is(&r.src, "[2001:db8::1]:1");
  addr_is(&r.dst, "[fe80::2]:2");
}

void test_proxy_v1_unknown_keeps_the_real_peer(void) {
  ioc__proxy_result_t r;
  const char *forms[] = {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
                         "PROXY UNKNOWN anything at all \x01\x7f\r\n"};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    memset(&r, 0xA5, sizeof r);
    ASSERT_EQ(parse_exact(forms[i], strlen(forms[i]), &r), (int)strlen(forms[i]));
    ASSERT_EQ(r.version, 1);
    ASSERT_EQ(r.command, IOC__PROXY_PROXY);
    ASSERT_EQ(r.has_addrs, 0);
    ASSERT_EQ(r.src.len, 0);
    ASSERT_EQ(r.dst.len, 0);
  }
}

void test_proxy_v2_tcp4_and_tcp6_give_addresses_and_skip_tlvs(void) {
  fill_v6_block();
  unsigned char h[600], payload[64];
  ioc__proxy_result_t r;

  size_t n = v2(h, 0x21, 0x11, v4_block, sizeof v4_block);
  ASSERT_EQ(parse_exact(h, n, &r), (int)n);
  ASSERT_EQ(r.version, 2);
  ASSERT_EQ(r.command, IOC__PROXY_PROXY);
  ASSERT_EQ(r.has_addrs, 1);
  addr_is(&r.src, "192.0.2.1:8080");
  addr_is(&r.dst, "198.51.100.7:443");

  n = v2(h, 0x21, 0x21, v6_block, sizeof v6_block);
  ASSERT_EQ(parse_exact(h, n, &r), (int)n);
  addr_is(&r.src, "[2001:db8::1]:50000");
  addr_is(&r.dst, "[fe80::2]:80");

  /* TLVs after the addresses (here PP2_TYPE_AUTHORITY "example.com" and a
   * NOOP) are part of the header: consumed, not handed to the application. */
  memcpy(payload, v4_block, 12);
  const unsigned char tlvs[] = {0x02, 0x00, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.',
                                'c',  'o',  'm',  0x04, 0x00, 0x02, 0, 0};
  memcpy(payload + 12, tlvs, sizeof tlvs);
  n = v2(h, 0x21, 0x11, payload, 12 + sizeof tlvs);
  memcpy(h + n, "app", 3);
  ASSERT_EQ(parse_exact(h, n + 3, &r), (int)n);
  ASSERT_EQ(r.len, n);
  addr_is(&r.src, "192.0.2.1:8080");
}

void test_proxy_v2_local_unspec_unix_and_udp_keep_the_real_peer(void) {
  unsigned char h[600], block[216];
  memset(block, 'u', sizeof block);
  ioc__proxy_result_t r;
  struct { unsigned char ver_cmd, fam; size_t plen; int command; } cases[] = {
      {0x20, 0x00, 0, IOC__PROXY_LOCAL},   /* LOCAL, the usual health check */
      {0x20, 0x11, 12, IOC__PROXY_LOCAL},  /* LOCAL ignores the addresses */
      {0x20, 0xff, 0, IOC__PROXY_LOCAL},   /* ... and even the family byte */
      {0x20, 0x11, 0, IOC__PROXY_LOCAL},   /* ... and its length */
      {0x21, 0x00, 0, IOC__PROXY_PROXY},   /* PROXY, UNSPEC */
      {0x21, 0x00, 9, IOC__PROXY_PROXY},   /* UNSPEC with TLVs */
      {0x21, 0x31, 216, IOC__PROXY_PROXY}, /* AF_UNIX stream */
      {0x21, 0x32, 216, IOC__PROXY_PROXY}, /* AF_UNIX datagram */
      {0x21, 0x12, 12, IOC__PROXY_PROXY},  /* UDP over IPv4 */
      {0x21, 0x22, 36, IOC__PROXY_PROXY},  /* UDP over IPv6 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = v2(h, cases[i].ver_cmd, cases[i].fam, block, cases[i].plen);
    memset(&r, 0xA5, sizeof r);
    ASSERT_MSG(parse_exact(h, n, &r) == (int)n, "case %zu", i);
    ASSERT_EQ(r.version, 2);
    ASSERT_EQ(r.command, cases[i].command);
    ASSERT_EQ(r.has_addrs, 0);
    ASSERT_EQ(r.src.len, 0);
  }
}

/* ---- truncation -------------------------------------------------------------- */

/* Every proper prefix of a valid header asks for more (0) and writes
 * nothing; the whole header, and the header with data after it, give its
 * length. */
static void check_every_prefix(const void *h, size_t n, const char *label) {
  ioc__proxy_result_t r;
  for (size_t k = 0; k < n; k++) {
    memset(&r, 0xA5, sizeof r);
    ioc__proxy_result_t poison = r;
    int rc = parse_exact(h, k, &r);
    ASSERT_MSG(rc == 0, "%s: prefix of %zu of %zu bytes gave %d, expected 0", label, k, n, rc);
    ASSERT_MSG(memcmp(&r, &poison, sizeof r) == 0, "%s: prefix %zu wrote the result", label, k);
  }
  ASSERT_MSG(parse_exact(h, n, &r) == (int)n, "%s: complete header not accepted", label);
  unsigned char *more = (unsigned char *)malloc(n + 100);
  ASSERT(more != NULL);
  memcpy(more, h, n);
  memset(more + n, 'Z', 100);
  ASSERT_MSG(parse_exact(more, n + 100, &r) == (int)n, "%s: header with data after it", label);
  free(more);
}

void test_proxy_headers_truncated_at_every_byte_ask_for_more(void) {
  fill_v6_block();
  const char *v1s[] = {
      "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n",
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "65535 65535\r\n",
      "PROXY UNKNOWN\r\n",
      "PROXY UNKNOWN 1 2 3\r\n",
  };
  for (size_t i = 0; i < sizeof v1s / sizeof v1s[0]; i++) check_every_prefix(v1s[i], strlen(v1s[i]), v1s[i]);

  unsigned char h[600], block[300];
  memset(block, 7, sizeof block);
  size_t n = v2(h, 0x21, 0x11, v4_block, 12);
  check_every_prefix(h, n, "v2 tcp4");
  n = v2(h, 0x21, 0x21, v6_block, 36);
  check_every_prefix(h, n, "v2 tcp6");
  n = v2(h, 0x20, 0x00, NULL, 0);
  check_every_prefix(h, n, "v2 local");
  n = v2(h, 0x21, 0x31, block, 216);
  check_every_prefix(h, n, "v2 unix");
  n = v2(h, 0x21, 0x11, block, 300);
  check_every_prefix(h, n, "v2 tcp4 with tlvs");
}

/* ---- malformed ---------------------------------------------------------------- */

typedef struct bad {
  const char *label;
  const char *bytes;
  size_t len; /* 0 = strlen */
} bad_t;

static const bad_t bad_v1[] = {
    {"not a proxy header at all", "GET / HTTP/1.1\r\n", 0},
    {"first byte wrong", "X", 0},
    {"lower-case signature", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 0},
    {"signature without space", "PROXYTCP4", 0},
    {"unknown protocol word", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 0},
    {"protocol word prefix then junk", "PROXY TCPX", 0},
    {"UNKNOWN glued to more", "PROXY UNKNOWNX\r\n", 0},
    {"TCP4 with an IPv6 address", "PROXY TCP4 ::1 ::1 1 2\r\n", 0},
    {"TCP6 with IPv4 addresses", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", 0},
    {"host name", "PROXY TCP4 localhost 5.6.7.8 1 2\r\n", 0},
    {"IPv6 zone", "PROXY TCP6 fe80::1%2 ::1 1 2\r\n", 0},
    {"octet above 255", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", 0},
    {"leading zero octet", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", 0},
    {"port above 65535", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 0},
    {"port with leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", 0},
    {"six-digit port", "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", 0},
    {"negative port", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", 0},
    {"missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 0},
    {"extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 0},
    {"double space", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", 0},
    {"trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 0},
    {"LF without CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 0},
    {"LF without CR in UNKNOWN", "PROXY UNKNOWN\n", 0},
    {"CR then not LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 0},
    {"truncated then garbage", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ; rm -rf", 0},
    {"truncated then NUL", "PROXY TCP4 1.2\0", 15},
    {"tab for space", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", 0},
    {"empty line", "PROXY \r\n", 0},
};

void test_proxy_rejects_each_kind_of_malformed_header_with_eproto(void) {
  ioc__proxy_result_t r;
  for (size_t i = 0; i < sizeof bad_v1 / sizeof bad_v1[0]; i++) {
    size_t len = bad_v1[i].len ? bad_v1[i].len : strlen(bad_v1[i].bytes);
    memset(&r, 0xA5, sizeof r);
    ioc__proxy_result_t poison = r;
    int rc = parse_exact(bad_v1[i].bytes, len, &r);
    ASSERT_MSG(rc == IOC_EPROTO, "v1 %s: got %d, expected EPROTO", bad_v1[i].label, rc);
    ASSERT_MSG(memcmp(&r, &poison, sizeof r) == 0, "v1 %s: result written", bad_v1[i].label);
  }

  fill_v6_block();
  unsigned char h[600], block[300];
  memset(block, 1, sizeof block);
  struct { const char *label; unsigned char ver_cmd, fam; size_t plen; } bad2[] = {
      {"version 1 in a v2 header", 0x11, 0x11, 12},
      {"version 3", 0x31, 0x11, 12},
      {"command 2", 0x22, 0x11, 12},
      {"command 15", 0x2f, 0x11, 12},
      {"family 4", 0x21, 0x41, 12},
      {"transport 3", 0x21, 0x13, 12},
      {"INET with transport UNSPEC", 0x21, 0x10, 12},
      {"UNSPEC family with a transport", 0x21, 0x01, 12},
      {"INET block too short", 0x21, 0x11, 11},
      {"INET6 block too short", 0x21, 0x21, 35},
      {"INET6 with an INET-sized block", 0x21, 0x21, 12},
      {"UNIX block too short", 0x21, 0x31, 215},
  };
  for (size_t i = 0; i < sizeof bad2 / sizeof bad2[0]; i++) {
    size_t n = v2(h, bad2[i].ver_cmd, bad2[i].fam, block, bad2[i].plen);
    int rc = parse_exact(h, n, &r);
    ASSERT_MSG(rc == IOC_EPROTO, "v2 %s: got %d, expected EPROTO", bad2[i].label, rc);
    /* Refused as soon as the offending byte is there: the 16-byte fixed
     * part at most, never waiting for the payload. */
    rc = parse_exact(h, 16, &r);
    ASSERT_MSG(rc == IOC_EPROTO, "v2 %s (fixed part only): got %d", bad2[i].label, rc);
  }
  /* a damaged signature, at each of its 12 bytes */
  for (size_t k = 0; k < 12; k++) {
    size_t n = v2(h, 0x21, 0x11, v4_block, 12);
    h[k] ^= 0x20;
    ASSERT_MSG(parse_exact(h, n, &r) == IOC_EPROTO, "v2 signature byte %zu damaged", k);
    ASSERT_MSG(parse_exact(h, k + 1, &r) == IOC_EPROTO, "v2 signature byte %zu, prefix", k);
  }
  ASSERT_STR_EQ(ioc_err_name(IOC_EPROTO), "EPROTO");
  ASSERT_STR_EQ(ioc_strerror(IOC_EPROTO), "protocol error");
  ASSERT_EQ(IOC_EPROTO, -71);
}

/* ---- limits --------------------------------------------------------------------- */

void test_proxy_never_waits_past_the_protocol_maximum(void) {
  ASSERT_EQ(IOC__PROXY_V1_MAX, 107);
  ASSERT_EQ(IOC__PROXY_V2_MAX_PAYLOAD, 4096);
  ASSERT_EQ(IOC__PROXY_MAX, 16 + 4096);
  ioc__proxy_result_t r;
  char line[300];

  /* v1: a 107-byte line is the longest accepted; 106 bytes without an end
   * still wait; at 107 bytes without an end it has decided. */
  memset(line, 'x', sizeof line);
  memcpy(line, "PROXY UNKNOWN ", 14);
  memcpy(line + 105, "\r\n", 2);
  ASSERT_EQ(parse_exact(line, 107, &r), 107);
  memset(line + 105, 'x', 2);
  ASSERT_EQ(parse_exact(line, 106, &r), 0);
  ASSERT_ERR(parse_exact(line, 107, &r), IOC_EPROTO);
  memcpy(line + 106, "\r\n", 2);
  ASSERT_ERR(parse_exact(line, 108, &r), IOC_EPROTO); /* a 108-byte line */

  /* v2: the payload cap is accepted, one more byte is not, and the refusal
   * comes from the fixed 16 bytes (nothing of the payload needed). */
  unsigned char *h = (unsigned char *)malloc(IOC__PROXY_MAX + 1);
  unsigned char *block = (unsigned char *)calloc(1, IOC__PROXY_V2_MAX_PAYLOAD + 1);
  ASSERT(h != NULL && block != NULL);
  memcpy(block, v4_block, 12);
  size_t n = v2(h, 0x21, 0x11, block, IOC__PROXY_V2_MAX_PAYLOAD);
  ASSERT_EQ(n, IOC__PROXY_MAX);
  ASSERT_EQ(parse_exact(h, n - 1, &r), 0);
  ASSERT_EQ(parse_exact(h, n, &r), (int)IOC__PROXY_MAX);
  n = v2(h, 0x21, 0x11, block, IOC__PROXY_V2_MAX_PAYLOAD + 1);
  ASSERT_ERR(parse_exact(h, 16, &r), IOC_EPROTO);
  ASSERT_ERR(parse_exact(h, n, &r), IOC_EPROTO);
  n = v2(h, 0x20, 0x00, block, IOC__PROXY_V2_MAX_PAYLOAD + 1); /* LOCAL too */
  ASSERT_ERR(parse_exact(h, 16, &r), IOC_EPROTO);
  free(h);
  free(block);
}

/* ---- builder -------------------------------------------------------------------- */

static ioc__proxy_result_t with_addrs(const char *src, const char *dst) {
  ioc__proxy_result_t r;
  memset(&r, 0, sizeof r);
  r.command = IOC__PROXY_PROXY;
  r.has_addrs = 1;
  ASSERT_OK(ioc_addr_parse(&r.src, src, strlen(src)));
  ASSERT_OK(ioc_addr_parse(&r.dst, dst, strlen(dst)));
  return r;
}

void test_proxy_build_writes_headers_the_parser_reads_back(void) {
  const char *pairs[][2] = {{"192.0.2.1:56324", "198.51.100.7:443"},
                            {"0.0.0.0:0", "255.255.255.255:65535"},
                            {"[2001:db8::1]:1", "[::ffff:1.2.3.4]:2"},
                            {"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                             "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"}};
  char buf[IOC__PROXY_V1_MAX + 64];
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    ioc__proxy_result_t in = with_addrs(pairs[i][0], pairs[i][1]), out;
    for (int version = 1; version <= 2; version++) {
      int n = ioc__proxy_build(version, &in, buf, sizeof buf);
      ASSERT_GT(n, 0);
      ASSERT_EQ(parse_exact(buf, (size_t)n, &out), n);
      ASSERT_EQ(out.version, version);
      ASSERT_EQ(out.has_addrs, 1);
      ASSERT(memcmp(&out.src, &in.src, sizeof in.src) == 0);
      ASSERT(memcmp(&out.dst, &in.dst, sizeof in.dst) == 0);
      /* one byte short: refused whole, nothing written */
      memset(buf, '#', sizeof buf);
      ASSERT_ERR(ioc__proxy_build(version, &in, buf, (size_t)n - 1), IOC_ENOBUFS);
      ASSERT_EQ(buf[0], '#');
    }
  }
  char text[IOC__PROXY_V1_MAX + 1];
  ioc__proxy_result_t r = with_addrs("192.0.2.1:56324", "198.51.100.7:443");
  int n = ioc__proxy_build(1, &r, text, sizeof text - 1);
  text[n] = '\0';
  ASSERT_STR_EQ(text, "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
  /* the longest TCP6 line fits the protocol's limit */
  r = with_addrs(pairs[3][0], pairs[3][1]);
  n = ioc__proxy_build(1, &r, text, sizeof text - 1);
  ASSERT_GT(n, 0);
  ASSERT_LE(n, IOC__PROXY_V1_MAX);

  /* LOCAL and address-less results: v1 says UNKNOWN, v2 LOCAL / UNSPEC */
  memset(&r, 0, sizeof r);
  r.command = IOC__PROXY_LOCAL;
  n = ioc__proxy_build(1, &r, text, sizeof text - 1);
  text[n] = '\0';
  ASSERT_STR_EQ(text, "PROXY UNKNOWN\r\n");
  ioc__proxy_result_t out;
  n = ioc__proxy_build(2, &r, text, sizeof text);
  ASSERT_EQ(n, 16);
  ASSERT_EQ(parse_exact(text, 16, &out), 16);
  ASSERT_EQ(out.command, IOC__PROXY_LOCAL);

  /* mismatched families cannot be said */
  r = with_addrs("192.0.2.1:1", "[::1]:2");
  ASSERT_ERR(ioc__proxy_build(1, &r, text, sizeof text), IOC_EINVAL);
  ASSERT_ERR(ioc__proxy_build(2, &r, text, sizeof text), IOC_EINVAL);
  ASSERT_ERR(ioc__proxy_build(3, &r, text, sizeof text), IOC_EINVAL);
}

/* ---- the listener's reader ---------------------------------------------------------- */

/* Header plus "hello" in two reads split anywhere: the header is found once,
 * and exactly "hello" is left for the application, whichever read it came in. */
void test_proxy_reader_hands_over_the_bytes_after_the_header(void) {
  fill_v6_block();
  unsigned char v2h[64];
  size_t v2n = v2(v2h, 0x21, 0x21, v6_block, 36);
  const char *v1h = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
  struct { const unsigned char *h; size_t n; const char *src; } hs[] = {
      {(const unsigned char *)v1h, strlen(v1h), "192.0.2.1:56324"},
      {v2h, v2n, "[2001:db8::1]:50000"},
  };
  for (size_t k = 0; k < 2; k++) {
    unsigned char stream[128];
    memcpy(stream, hs[k].h, hs[k].n);
    memcpy(stream + hs[k].n, "hello", 5);
    size_t total = hs[k].n + 5;
    for (size_t split = 0; split <= total; split++) {
      ioc__proxy_reader_t *rd = (ioc__proxy_reader_t *)calloc(1, sizeof *rd);
      ASSERT(rd != NULL);
      ioc__proxy_result_t r;
      size_t used;
      char app[16];
      size_t applen = 0;
      int rc = ioc__proxy_reader_feed(rd, stream, split, &r, &used);
      if (rc > 0) {
        memcpy(app, stream + used, split - used);
        applen = split - used;
        memcpy(app + applen, stream + split, total - split); /* the next read is all the app's */
        applen += total - split;
      } else {
        ASSERT_MSG(rc == 0, "header %zu split %zu: first read gave %d", k, split, rc);
        rc = ioc__proxy_reader_feed(rd, stream + split, total - split, &r, &used);
        ASSERT_MSG(rc == (int)hs[k].n, "header %zu split %zu: second read gave %d", k, split, rc);
        memcpy(app, stream + split + used, total - split - used);
        applen = total - split - used;
      }
      ASSERT_EQ(applen, 5);
      ASSERT(memcmp(app, "hello", 5) == 0);
      addr_is(&r.src, hs[k].src);
      free(rd);
    }
  }
  /* garbage is refused on the first read, and after a good start */
  ioc__proxy_reader_t *rd = (ioc__proxy_reader_t *)calloc(1, sizeof *rd);
  ASSERT(rd != NULL);
  ioc__proxy_result_t r;
  size_t used;
  ASSERT_ERR(ioc__proxy_reader_feed(rd, "GET / HTTP/1.0\r\n", 16, &r, &used), IOC_EPROTO);
  memset(rd, 0, sizeof *rd);
  ASSERT_EQ(ioc__proxy_reader_feed(rd, "PROXY TCP4 1.2.3.4", 18, &r, &used), 0);
  ASSERT_ERR(ioc__proxy_reader_feed(rd, " x", 2, &r, &used), IOC_EPROTO);
  /* a v2 header as long as allowed, arriving in 100-byte reads */
  unsigned char *big = (unsigned char *)calloc(1, IOC__PROXY_MAX + 10);
  ASSERT(big != NULL);
  unsigned char *block = (unsigned char *)calloc(1, IOC__PROXY_V2_MAX_PAYLOAD);
  ASSERT(block != NULL);
  memcpy(block, v4_block, 12);
  size_t n = v2(big, 0x21, 0x11, block, IOC__PROXY_V2_MAX_PAYLOAD);
  memcpy(big + n, "tail", 4);
  memset(rd, 0, sizeof *rd);
  size_t pos = 0;
  int rc = 0;
  while (rc == 0) {
    size_t step = n + 4 - pos < 100 ? n + 4 - pos : 100;
    ASSERT(step > 0);
    rc = ioc__proxy_reader_feed(rd, big + pos, step, &r, &used);
    pos += rc > 0 ? used : step;
  }
  ASSERT_EQ(rc, (int)IOC__PROXY_MAX);
  ASSERT_EQ(pos, IOC__PROXY_MAX);
  free(big);
  free(block);
  free(rd);
}
