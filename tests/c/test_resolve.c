/* ioc_resolve (src/net/resolve.c): names resolve off the workers, results
 * come back once through dispatch, failures have their codes, and a core
 * with lookups in flight is neither destroyed under them nor leaked. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "resolve.h"

typedef struct lookup {
  ioc_core_t *core;
  atomic_int calls;
  int err;
  size_t n;
  ioc_addr_t addrs[IOC__RESOLVE_MAX_ADDRS];
  int in_dispatch;
} lookup_t;

static void on_resolved(void *ud, int err, const ioc_addr_t *addrs, size_t n) {
  lookup_t *l = (lookup_t *)ud;
  l->err = err;
  l->n = n;
  l->in_dispatch = ioc__core_in_dispatch(l->core);
  if (err == 0) {
    ASSERT(addrs != NULL && n >= 1 && n <= IOC__RESOLVE_MAX_ADDRS);
    memcpy(l->addrs, addrs, n * sizeof *addrs);
  } else {
    ASSERT(addrs == NULL && n == 0);
  }
  atomic_fetch_add(&l->calls, 1);
}

static void resolve_wait(ioc_core_t *core, const char *name, lookup_t *l) {
  memset(l, 0, sizeof *l);
  l->core = core;
  ASSERT_OK(ioc_resolve(core, name, strlen(name), on_resolved, l));
  WAIT_UNTIL(core, atomic_load(&l->calls) == 1, 20000);
  ASSERT_MSG(l->in_dispatch, "%s: callback ran outside dispatch", name);
}

static int is_loopback(const ioc_addr_t *a) {
  char text[IOC_ADDRSTRLEN];
  ASSERT_OK(ioc_addr_format(a, text, sizeof text));
  return strncmp(text, "127.", 4) == 0 || strncmp(text, "[::1]:", 6) == 0;
}

void test_resolve_localhost_gives_loopback_with_the_port(void) {
  ioc_core_t *core;
  make_core(&core);
  lookup_t l;
  resolve_wait(core, "localhost", &l);
  ASSERT_ERR(l.err, 0);
  ASSERT_GE(l.n, 1);
  for (size_t i = 0; i < l.n; i++) {
    ASSERT(is_loopback(&l.addrs[i]));
    ASSERT_EQ(ioc_addr_port(&l.addrs[i]), 0);
  }
  resolve_wait(core, "localhost:8080", &l);
  ASSERT_ERR(l.err, 0);
  for (size_t i = 0; i < l.n; i++) {
    ASSERT(is_loopback(&l.addrs[i]));
    ASSERT_EQ(ioc_addr_port(&l.addrs[i]), 8080);
  }
  ASSERT_CORE_CLEAN(core);
}

void test_resolve_ip6_localhost_resolves_to_ipv6_loopback(void) {
  FILE *hosts = fopen("/etc/hosts", "r");
  if (hosts == NULL) SKIPF("no /etc/hosts to name ip6-localhost on this system");
  char line[512];
  int listed = 0;
  while (!listed && fgets(line, sizeof line, hosts) != NULL) {
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    if (strstr(line, "::1") != NULL && strstr(line, "ip6-localhost") != NULL) listed = 1;
  }
  fclose(hosts);
  if (!listed) SKIPF("/etc/hosts does not list ip6-localhost (::1) on this machine");
  ioc_core_t *core;
  make_core(&core);
  lookup_t l;
  resolve_wait(core, "ip6-localhost:53", &l);
  ASSERT_ERR(l.err, 0);
  int v6 = 0;
  for (size_t i = 0; i < l.n; i++) {
    char text[IOC_ADDRSTRLEN];
    ASSERT_OK(ioc_addr_format(&l.addrs[i], text, sizeof text));
    if (strcmp(text, "[::1]:53") == 0) v6 = 1;
  }
  ASSERT_MSG(v6, "ip6-localhost did not give [::1]:53");
  ASSERT_CORE_CLEAN(core);
}

void test_resolve_unknown_name_gives_enotfound(void) {
  ASSERT_EQ(IOC_ENOTFOUND, -4092);
  ASSERT_STR_EQ(ioc_err_name(IOC_ENOTFOUND), "ENOTFOUND");
  ASSERT_STR_EQ(ioc_strerror(IOC_ENOTFOUND), "host name not found");
  ioc_core_t *core;
  make_core(&core);
  lookup_t l;
  /* .invalid is reserved (RFC 6761): it never resolves */
  resolve_wait(core, "name.invalid", &l);
  ASSERT_ERR(l.err, IOC_ENOTFOUND);
  resolve_wait(core, "no-such-host.invalid:80", &l);
  ASSERT_ERR(l.err, IOC_ENOTFOUND);
  ASSERT_CORE_CLEAN(core);
}

void test_resolve_literals_answer_without_a_thread(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc__resolve_hold(true); /* a thread would now wait: literals must not need one */
  const char *names[] = {"127.0.0.1", "192.0.2.7:80", "[::1]:443", "::1", "[2001:db8::5]"};
  const char *want[] = {"127.0.0.1:0", "192.0.2.7:80", "[::1]:443", "[::1]:0", "[2001:db8::5]:0"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    lookup_t l;
    resolve_wait(core, names[i], &l);
    ASSERT_ERR(l.err, 0);
    ASSERT_EQ(l.n, 1);
    char text[IOC_ADDRSTRLEN];
    ASSERT_OK(ioc_addr_format(&l.addrs[0], text, sizeof text));
    ASSERT_STR_EQ(text, want[i]);
    ASSERT_EQ(ioc__resolve_threads(), 0);
  }
  ioc__resolve_hold(false);
  ASSERT_CORE_CLEAN(core);
}

void test_resolve_rejects_malformed_names_at_once(void) {
  ioc_core_t *core;
  make_core(&core);
  char long_name[IOC__RESOLVE_NAME_MAX + 2];
  memset(long_name, 'a', sizeof long_name);
  long_name[sizeof long_name - 1] = '\0';
  struct { const char *s; size_t len; } bad[] = {
      {"", 0}, {":80", 3}, {"host:", 5}, {"host:65536", 10}, {"host:080", 8}, {"host:-1", 7},
      {"host:8a", 7}, {"ho st", 5}, {"host\n", 5}, {"ho\0st", 5}, {"[::1", 4}, {"[::1]x", 6},
      {"[]:80", 5}, {"a/b", 3}, {long_name, sizeof long_name - 1},
  };
  lookup_t l;
  memset(&l, 0, sizeof l);
  l.core = core;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = ioc_resolve(core, bad[i].s, bad[i].len, on_resolved, &l);
    ASSERT_MSG(rc == IOC_EINVAL, "bad name %zu (\"%s\"): got %d", i, bad[i].s, rc);
  }
  ASSERT_EQ(IOC__RESOLVE_NAME_MAX, 254);
  ASSERT_ERR(ioc_resolve(core, "localhost", 9, NULL, &l), IOC_EINVAL);
  ASSERT_ERR(ioc_resolve(NULL, "localhost", 9, on_resolved, &l), IOC_EINVAL);
  /* the longest host accepted still goes to the resolver */
  long_name[IOC__RESOLVE_NAME_MAX] = '\0';
  ASSERT_OK(ioc_resolve(core, long_name, IOC__RESOLVE_NAME_MAX, on_resolved, &l));
  WAIT_UNTIL(core, atomic_load(&l.calls) == 1, 20000);
  ASSERT(l.err != 0);
  pump_for(core, 50);
  ASSERT_EQ(atomic_load(&l.calls), 1);
  ASSERT_CORE_CLEAN(core);
}

/* 50 lookups at once, delivered through a pool of 4 workers: each callback
 * runs exactly once; at most IOC__RESOLVE_THREADS run getaddrinfo at once. */
void test_resolve_50_parallel_lookups_complete_exactly_once(void) {
  ASSERT_EQ(IOC__RESOLVE_THREADS, 4);
  ASSERT_EQ(IOC__RESOLVE_MAX_ADDRS, 32);
  ioc_core_t *core;
  make_core(&core);
  ASSERT_OK(ioc_core_start(core, 4));
  enum { N = 50 };
  static lookup_t l[N];
  ioc__resolve_hold(true);
  for (int i = 0; i < N; i++) {
    memset(&l[i], 0, sizeof l[i]);
    l[i].core = core;
    const char *name = i % 3 == 2 ? "name.invalid" : "localhost:7";
    ASSERT_OK(ioc_resolve(core, name, strlen(name), on_resolved, &l[i]));
  }
  ASSERT_EQ(ioc__resolve_threads(), IOC__RESOLVE_THREADS);
  ASSERT_EQ(core_stats(core).ops_inflight, N);
  for (int i = 0; i < N; i++) ASSERT_EQ(atomic_load(&l[i].calls), 0);
  ioc__resolve_hold(false);
  uint64_t deadline = now_ms() + (uint64_t)scaled_ms(30000);
  for (;;) {
    int done = 0;
    for (int i = 0; i < N; i++) done += atomic_load(&l[i].calls) == 1;
    if (done == N) break;
    ASSERT_MSG(now_ms() < deadline, "only %d of %d lookups finished", done, N);
    ASSERT_LE(ioc__resolve_threads(), IOC__RESOLVE_THREADS);
    sleep_ms(5);
  }
  sleep_ms(100);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(atomic_load(&l[i].calls), 1);
    ASSERT(l[i].in_dispatch);
    ASSERT_ERR(l[i].err, i % 3 == 2 ? IOC_ENOTFOUND : 0);
  }
  ASSERT_CORE_CLEAN(core);
  ASSERT_EQ(ioc__resolve_threads(), 0);
}

/* The rule: a lookup in flight is an operation of its core, so destroying
 * the core is refused (nothing freed under the lookup) until its callback
 * has run; then everything is freed (ASan checks no leak). */
void test_resolve_destroy_with_a_lookup_in_flight_waits_for_it(void) {
  ioc_core_t *core;
  make_core(&core);
  static lookup_t l[3];
  ioc__resolve_hold(true);
  for (int i = 0; i < 3; i++) {
    memset(&l[i], 0, sizeof l[i]);
    l[i].core = core;
    ASSERT_OK(ioc_resolve(core, "localhost", 9, on_resolved, &l[i]));
  }
  ASSERT_ERR(ioc_core_destroy(core), IOC_EBUSY);
  ASSERT_EQ(core_stats(core).ops_inflight, 3);
  ASSERT_EQ(core_stats(core).objects, 0);
  ioc__resolve_hold(false);
  /* Once the threads have handed their results over, destroy runs the
   * callbacks still queued and succeeds. */
  uint64_t deadline = now_ms() + (uint64_t)scaled_ms(20000);
  while (ioc__resolve_threads() != 0) {
    ASSERT_MSG(now_ms() < deadline, "resolver threads did not finish");
    sleep_ms(2);
  }
  int rc;
  while ((rc = ioc_core_destroy(core)) == IOC_EBUSY) {
    ASSERT_MSG(now_ms() < deadline, "destroy still refused");
    sleep_ms(2);
  }
  ASSERT_ERR(rc, 0);
  atomic_fetch_add(&g_cores_cleaned, 1); /* destroyed here, not by ASSERT_CORE_CLEAN */
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(atomic_load(&l[i].calls), 1);
    ASSERT_ERR(l[i].err, 0);
  }
}

/* ioc_resolve only starts the lookup: the callback never runs inside it,
 * even for a literal, and a worker is never the one waiting. */
void test_resolve_never_calls_back_inside_the_call(void) {
  ioc_core_t *core;
  make_core(&core);
  lookup_t a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.core = b.core = core;
  ASSERT_OK(ioc_resolve(core, "127.0.0.1:1", 11, on_resolved, &a));
  ASSERT_OK(ioc_resolve(core, "localhost", 9, on_resolved, &b));
  ASSERT_EQ(atomic_load(&a.calls), 0);
  ASSERT_EQ(atomic_load(&b.calls), 0);
  WAIT_UNTIL(core, atomic_load(&a.calls) == 1 && atomic_load(&b.calls) == 1, 20000);
  ASSERT_CORE_CLEAN(core);
}

/* What getaddrinfo gives is kept in its order, with the port, without
 * duplicates or other families, and at most IOC__RESOLVE_MAX_ADDRS. */
void test_resolve_results_are_deduplicated_and_capped(void) {
  ioc_addr_t addrs[IOC__RESOLVE_MAX_ADDRS];
  size_t n = 0;
  ioc_addr_t a;
  ASSERT_OK(ioc_addr_parse(&a, "127.0.0.1:0", 11));
  ioc__resolve_collect(addrs, &n, 80, a.u.bytes, a.len);
  ioc__resolve_collect(addrs, &n, 80, a.u.bytes, a.len); /* the same again */
  ASSERT_EQ(n, 1);
  ASSERT_OK(ioc_addr_parse(&a, "[::1]:0", 7));
  ioc__resolve_collect(addrs, &n, 80, a.u.bytes, a.len);
  ASSERT_EQ(n, 2);
  unsigned char unix_like[32];
  memset(unix_like, 0, sizeof unix_like);
  unix_like[0] = 1; /* AF_UNIX / AF_LOCAL on Linux and Windows */
  ioc__resolve_collect(addrs, &n, 80, unix_like, sizeof unix_like);
  ASSERT_EQ(n, 2);
  char text[IOC_ADDRSTRLEN];
  ASSERT_OK(ioc_addr_format(&addrs[0], text, sizeof text));
  ASSERT_STR_EQ(text, "127.0.0.1:80");
  ASSERT_OK(ioc_addr_format(&addrs[1], text, sizeof text));
  ASSERT_STR_EQ(text, "[::1]:80");
  for (int i = 0; i < 40; i++) {
    char s[32];
    int len = snprintf(s, sizeof s, "10.0.0.%d:0", i);
    ASSERT_OK(ioc_addr_parse(&a, s, (size_t)len));
    ioc__resolve_collect(addrs, &n, 80, a.u.bytes, a.len);
  }
  ASSERT_EQ(n, IOC__RESOLVE_MAX_ADDRS);
  ASSERT_OK(ioc_addr_format(&addrs[IOC__RESOLVE_MAX_ADDRS - 1], text, sizeof text));
  ASSERT_STR_EQ(text, "10.0.0.29:80"); /* the first ones are kept */
}

/* ---- docs/protocols.md ------------------------------------------------------------ */

#include "framing.h"
#include "proxy.h"

/* Each number the page gives is written from the constant here, so the page
 * and the code cannot drift apart. */
void test_protocols_doc_states_the_constants(void) {
  const char *path = "docs/protocols.md";
  FILE *f = fopen(path, "rb");
  if (!f) SKIPF("%s not found (run from the source tree)", path);
  static char doc[1 << 16];
  size_t n = fread(doc, 1, sizeof doc - 1, f);
  fclose(f);
  doc[n] = 0;
  char want[9][96];
  snprintf(want[0], sizeof want[0], "of at most %d bytes", IOC__PROXY_V1_MAX);
  snprintf(want[1], sizeof want[1], "at most %d + %d bytes", IOC__PROXY_V2_HEAD,
           IOC__PROXY_V2_MAX_PAYLOAD);
  snprintf(want[2], sizeof want[2], "the default, %d bytes", IOC__FRAME_DEFAULT_MAX);
  snprintf(want[3], sizeof want[3], "of 1 to %d bytes", IOC__FRAME_DELIM_MAX);
  snprintf(want[4], sizeof want[4], "at most %d.", IOC__RESOLVE_MAX_ADDRS);
  snprintf(want[5], sizeof want[5], "at most %d at once", IOC__RESOLVE_THREADS);
  snprintf(want[6], sizeof want[6], "over %d bytes", IOC__RESOLVE_NAME_MAX);
  snprintf(want[7], sizeof want[7], "\"host name not found\", %d", IOC_ENOTFOUND);
  snprintf(want[8], sizeof want[8], "may be at most %d,", IOC__PROXY_V2_MAX_PAYLOAD);
  /* the page wraps and indents lines: compare with each run of white
   * space as one space */
  char *w = doc;
  for (const char *p = doc; *p; p++) {
    int space = *p == ' ' || *p == '\n' || *p == '\r';
    if (!space || w == doc || w[-1] != ' ') *w++ = space ? ' ' : *p;
  }
  *w = '\0';
  for (int i = 0; i < 9; i++) {
    ASSERT_MSG(strstr(doc, want[i]) != NULL, "%s does not say \"%s\"", path, want[i]);
  }
}
