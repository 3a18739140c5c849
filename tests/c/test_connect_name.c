/* ioc_connect to "name:port": the name is resolved with ioc_resolve (no
 * thread blocks), the session connects to the first address; a name that
 * does not resolve fails the connect with IOC_ENOTFOUND in on_open and
 * on_close; a close or time-out during the lookup is the connect's failure. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#ifndef _WIN32
#include <unistd.h>
#endif

#include "resolve.h"

typedef struct cn_state {
  atomic_int opens, closes, open_err, close_err;
  atomic_int accepted;
} cn_state_t;

static cn_state_t cn;

static void cn_open(ioc_session_t *s, int err) {
  (void)s;
  ASSERT_EQ(atomic_load(&cn.closes), 0);
  atomic_store(&cn.open_err, err);
  atomic_fetch_add(&cn.opens, 1);
}
static void cn_close(ioc_session_t *s, int err) {
  (void)s;
  ASSERT_EQ(atomic_load(&cn.opens), 1); /* on_open first, once */
  atomic_store(&cn.close_err, err);
  atomic_fetch_add(&cn.closes, 1);
}
static void cn_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  (void)s;
  atomic_fetch_add(&cn.accepted, 1);
}

typedef struct lookup {
  ioc_addr_t first;
  int err;
  atomic_int done;
} lookup_t;

static void got_addrs(void *ud, int err, const ioc_addr_t *addrs, size_t n) {
  lookup_t *lk = ud;
  if (err == 0 && n > 0) lk->first = addrs[0];
  lk->err = err;
  atomic_store(&lk->done, 1);
}

/* ---- connect_to_a_host_name_resolves_then_connects ---------------------------------------- */

void test_connect_to_a_host_name_resolves_then_connects(void) {
#ifdef _WIN32
  SKIPF("the machine's host name is not set up for this test under wine");
#else
  char host[256];
  if (gethostname(host, sizeof host - 1) != 0) SKIPF("no host name");
  host[sizeof host - 1] = 0;
  ioc_core_t *core;
  make_core(&core);
  /* What the system resolver says the host name is: only a local IPv4
   * address can be reached by a listener on 0.0.0.0. */
  static lookup_t lk;
  ASSERT_OK(ioc_resolve(core, host, strlen(host), got_addrs, &lk));
  WAIT_UNTIL(core, atomic_load(&lk.done), 30000);
  ioc_addr_t first = lk.first;
  if (lk.err != 0 || first.u.family != AF_INET) {
    ASSERT_CORE_CLEAN(core);
    SKIPF("the host name \"%s\" does not resolve to an IPv4 address here", host);
  }
  memset(&cn, 0, sizeof cn);
  ioc_listener_t *l;
  ASSERT_OK(ioc_listen(core, "0.0.0.0:0", 9, NULL, cn_accept, NULL, &l));
  char name[300];
  snprintf(name, sizeof name, "%s:%d", host, ioc_addr_port(ioc_listener_address(l)));
  ioc_session_callbacks_t cb = callbacks(cn_open, NULL, NULL, cn_close);
  ioc_session_t *s;
  ASSERT_OK(ioc_connect(core, name, strlen(name), &cb, NULL, NULL, &s));
  WAIT_UNTIL(core, atomic_load(&cn.opens) == 1 && atomic_load(&cn.accepted) == 1, 30000);
  ASSERT_EQ(atomic_load(&cn.open_err), 0);
  char peer[IOC_ADDRSTRLEN], want[IOC_ADDRSTRLEN];
  ASSERT(ioc_addr_format(ioc_session_peer(s), peer, sizeof peer) > 0);
  ((struct sockaddr_in *)(void *)first.u.bytes)->sin_port =
      htons((uint16_t)ioc_addr_port(ioc_listener_address(l)));
  ASSERT(ioc_addr_format(&first, want, sizeof want) > 0);
  ASSERT_STR_EQ(peer, want);
  ioc_session_close(s);
  ioc_session_release(s);
  WAIT_UNTIL(core, atomic_load(&cn.closes) == 1, 10000);
  ASSERT_EQ(atomic_load(&cn.close_err), 0);
  ioc_listener_close(l);
  ASSERT_CORE_CLEAN(core);
#endif
}

/* ---- connect_to_a_name_that_does_not_resolve_fails_with_enotfound ------------------------ */

void test_connect_to_a_name_that_does_not_resolve_fails_with_enotfound(void) {
  ioc_core_t *core;
  make_core(&core);
  memset(&cn, 0, sizeof cn);
  ioc_session_callbacks_t cb = callbacks(cn_open, NULL, NULL, cn_close);
  /* .invalid never resolves (RFC 6761) */
  ASSERT_OK(ioc_connect(core, "name.invalid:80", 15, &cb, NULL, NULL, NULL));
  WAIT_UNTIL(core, atomic_load(&cn.closes) == 1, 30000);
  ASSERT_EQ(atomic_load(&cn.open_err), IOC_ENOTFOUND);
  ASSERT_EQ(atomic_load(&cn.close_err), IOC_ENOTFOUND);
  /* malformed names are refused by the call itself, and nothing runs */
  ASSERT_ERR(ioc_connect(core, "bad name:80", 11, &cb, NULL, NULL, NULL), IOC_EINVAL);
  ASSERT_ERR(ioc_connect(core, "name:99999", 10, &cb, NULL, NULL, NULL), IOC_EINVAL);
  ASSERT_ERR(ioc_connect(core, "name", 4, &cb, NULL, NULL, NULL), IOC_EINVAL);
  pump_for(core, 50);
  ASSERT_EQ(atomic_load(&cn.opens), 1);
  ASSERT_CORE_CLEAN(core);
}

/* ---- connect_by_name_abort_or_timeout_during_the_lookup_is_the_connect_failure ------------ */

void test_connect_by_name_abort_or_timeout_during_the_lookup_is_the_connect_failure(void) {
  ioc_core_t *core;
  make_core(&core);
  ioc_session_callbacks_t cb = callbacks(cn_open, NULL, NULL, cn_close);
  /* the connect time-out counts from ioc_connect, the lookup included */
  memset(&cn, 0, sizeof cn);
  ioc__resolve_hold(true);
  ioc_session_options_t so;
  memset(&so, 0, sizeof so);
  so.connect_timeout_ms = 100;
  ASSERT_OK(ioc_connect(core, "name.invalid:80", 15, &cb, NULL, &so, NULL));
  pump_for(core, 400);
  ASSERT_EQ(atomic_load(&cn.opens), 0); /* the lookup still holds it */
  ioc__resolve_hold(false);
  WAIT_UNTIL(core, atomic_load(&cn.closes) == 1, 30000);
  ASSERT_EQ(atomic_load(&cn.open_err), IOC_ETIMEDOUT);
  ASSERT_EQ(atomic_load(&cn.close_err), IOC_ETIMEDOUT);
  /* an abort during the lookup */
  memset(&cn, 0, sizeof cn);
  ioc__resolve_hold(true);
  ioc_session_t *s;
  ASSERT_OK(ioc_connect(core, "name.invalid:80", 15, &cb, NULL, NULL, &s));
  ioc_session_abort(s);
  pump_for(core, 50);
  ASSERT_EQ(atomic_load(&cn.opens), 0);
  ioc__resolve_hold(false);
  WAIT_UNTIL(core, atomic_load(&cn.closes) == 1, 30000);
  ASSERT_EQ(atomic_load(&cn.open_err), IOC_ECANCELED);
  ASSERT_EQ(atomic_load(&cn.close_err), IOC_ECANCELED);
  ioc_session_release(s);
  ASSERT_CORE_CLEAN(core);
}
