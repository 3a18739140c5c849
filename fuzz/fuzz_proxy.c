/* libFuzzer target: ioc__proxy_parse / ioc__proxy_build.
 *
 * Invariants checked on every input:
 *   - parse returns > 0, 0 or IOC_EPROTO only, never reads past len (the
 *     input is an exact heap copy), and writes its result only on > 0;
 *   - a header found is self-delimiting: the same bytes alone parse to the
 *     same result, and every shorter prefix asks for more (0);
 *   - decisions are final: once a prefix is refused, or found complete,
 *     every longer input gets the same answer;
 *   - "more bytes" is never asked past the protocol maximum (107 bytes for
 *     v1, IOC__PROXY_MAX for v2);
 *   - what the builder writes from a result parses back to the same result,
 *     in both versions (addresses byte for byte);
 *   - the listener's reader, fed the input in three pieces, decides as the
 *     parser does on the whole and says which bytes were the header.
 *
 * Build and run: scripts/fuzz [SECONDS] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                      \
      abort();                                                             \
    }                                                                      \
  } while (0)

static int parse_copy(const uint8_t *data, size_t n, ioc__proxy_result_t *out) {
  uint8_t *copy = malloc(n ? n : 1);
  CHECK(copy != NULL);
  memcpy(copy, data, n);
  int rc = ioc__proxy_parse(copy, n, out);
  free(copy);
  return rc;
}

static int same_result(const ioc__proxy_result_t *a, const ioc__proxy_result_t *b) {
  return a->version == b->version && a->command == b->command && a->has_addrs == b->has_addrs &&
         memcmp(&a->src, &b->src, sizeof a->src) == 0 &&
         memcmp(&a->dst, &b->dst, sizeof a->dst) == 0;
}

static void check_rebuild(const ioc__proxy_result_t *r) {
  char buf[IOC__PROXY_V1_MAX + 64];
  for (int version = 1; version <= 2; version++) {
    int n = ioc__proxy_build(version, r, buf, sizeof buf);
    CHECK(n > 0);
    if (version == 1)
      CHECK(n <= IOC__PROXY_V1_MAX);
    ioc__proxy_result_t back;
    CHECK(parse_copy((const uint8_t *)buf, (size_t)n, &back) == n);
    CHECK(back.version == version);
    CHECK(back.has_addrs == r->has_addrs);
    if (r->has_addrs) {
      CHECK(back.command == IOC__PROXY_PROXY);
      CHECK(memcmp(&back.src, &r->src, sizeof r->src) == 0);
      CHECK(memcmp(&back.dst, &r->dst, sizeof r->dst) == 0);
    } else if (version == 2) {
      CHECK(back.command == r->command);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ioc__proxy_result_t r, poison;
  memset(&r, 0xA5, sizeof r);
  poison = r;
  int rc = parse_copy(data, size, &r);
  CHECK(rc >= 0 || rc == IOC_EPROTO);
  if (rc <= 0)
    CHECK(memcmp(&r, &poison, sizeof r) == 0);

  if (rc == 0) {
    /* still undecided: only below the maximum of the version it started */
    CHECK(size < (size > 0 && data[0] == 'P' ? (size_t)IOC__PROXY_V1_MAX : (size_t)IOC__PROXY_MAX));
  } else if (rc > 0) {
    CHECK((size_t)rc <= size && r.len == (size_t)rc);
    CHECK(r.version == 1 || r.version == 2);
    CHECK(r.len <= (r.version == 1 ? (size_t)IOC__PROXY_V1_MAX : (size_t)IOC__PROXY_MAX));
    ioc__proxy_result_t alone;
    CHECK(parse_copy(data, r.len, &alone) == rc && same_result(&alone, &r));
    check_rebuild(&r);
  }

  /* The reader, three pieces (cut where the first byte says). */
  ioc__proxy_reader_t *rd = calloc(1, sizeof *rd);
  CHECK(rd != NULL);
  size_t cut1 = size ? data[0] % (size + 1) : 0, cut2 = cut1 + (size - cut1) / 2;
  size_t cuts[4] = {0, cut1, cut2, size};
  int rrc = 0;
  size_t header_end = 0;
  for (int i = 0; i < 3 && rrc == 0; i++) {
    ioc__proxy_result_t rr;
    size_t used = 0;
    rrc = ioc__proxy_reader_feed(rd, data + cuts[i], cuts[i + 1] - cuts[i], &rr, &used);
    if (rrc > 0) {
      CHECK(used <= cuts[i + 1] - cuts[i]);
      header_end = cuts[i] + used;
      CHECK(same_result(&rr, &r));
    }
  }
  CHECK(rrc == rc);
  if (rc > 0)
    CHECK(header_end == (size_t)rc);
  free(rd);

  /* Every prefix: undecided, or the same final answer as the whole input. */
  size_t limit = size < 200 ? size : 200;
  for (size_t k = 0; k <= limit; k++) {
    ioc__proxy_result_t p;
    int prc = parse_copy(data, k, &p);
    if (prc == IOC_EPROTO)
      CHECK(rc == IOC_EPROTO);
    else if (prc > 0)
      CHECK(prc == rc && same_result(&p, &r));
    else if (rc > 0)
      CHECK(k < (size_t)rc);
  }
  return 0;
}
