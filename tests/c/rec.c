/* The session recorder; see rec.h. */
#include "rec.h"

#include <stdlib.h>

void rec_init(rec_t *r, int keep_data) {
  memset(r, 0, sizeof *r);
  mutex_init(&r->lock);
  r->keep_data = keep_data;
  r->open_err = 1;  /* "not called" */
  r->close_err = 1;
}

void rec_free(rec_t *r) {
  mutex_destroy(&r->lock);
  free(r->buf);
  r->buf = NULL;
}

static rec_t *rec_of(ioc_session_t *s) {
  rec_t *r = (rec_t *)ioc_session_userdata(s);
  ASSERT_MSG(r != NULL, "session callback without its userdata");
  return r;
}

static void check_not_closed(rec_t *r, const char *what) {
  if (atomic_load(&r->closes) != 0) FAILF("%s after on_close", what);
}

static void rec_open(ioc_session_t *s, int err) {
  rec_t *r = rec_of(s);
  check_not_closed(r, "on_open");
  /* the fields first: a test thread reads them once it sees opens == 1 */
  if (atomic_load(&r->opens) != 0) FAILF("on_open called twice");
  r->open_err = err;
  ioc_session_t *none = NULL;
  atomic_compare_exchange_strong(&r->s, &none, s);
  ASSERT(atomic_load(&r->s) == s);
  if (atomic_fetch_add(&r->opens, 1) != 0) FAILF("on_open called twice");
}

static void rec_recv(ioc_session_t *s, const char *data, size_t len) {
  rec_t *r = rec_of(s);
  check_not_closed(r, "on_recv");
  ASSERT_MSG(atomic_load(&r->opens) == 1, "on_recv before on_open");
  ASSERT_MSG(len > 0, "on_recv with 0 bytes");
  if (atomic_exchange(&r->in_recv, 1) != 0) FAILF("two on_recv of one session at once");
  atomic_fetch_add(&r->recvs, 1);
  if (r->keep_data) {
    mutex_lock(&r->lock);
    if (r->len + len > r->cap) {
      size_t cap = r->cap ? r->cap * 2 : 65536;
      while (cap < r->len + len) cap *= 2;
      r->buf = (char *)realloc(r->buf, cap);
      ASSERT(r->buf != NULL);
      r->cap = cap;
    }
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    mutex_unlock(&r->lock);
  }
  atomic_fetch_add(&r->total, len);
  if (r->echo) {
    int rc = ioc_session_send(s, data, len);
    if (rc != 0 && rc != IOC_ECLOSED) FAILF("echo send: %d (%s)", rc, ioc_err_name(rc));
  }
  atomic_store(&r->in_recv, 0);
}

static void rec_drain(ioc_session_t *s) {
  rec_t *r = rec_of(s);
  check_not_closed(r, "on_drain");
  ASSERT_MSG(atomic_load(&r->opens) == 1, "on_drain before on_open");
  atomic_store(&r->pending_at_drain, ioc_session_pending(s));
  atomic_fetch_add(&r->drains, 1);
}

static void rec_close(ioc_session_t *s, int err) {
  rec_t *r = rec_of(s);
  ASSERT_MSG(atomic_load(&r->in_recv) == 0, "on_close while on_recv runs");
  r->close_err = err;
  r->close_ms = now_ms();
  ioc_session_t *none = NULL;
  atomic_compare_exchange_strong(&r->s, &none, s);
  ASSERT_MSG(ioc_session_closed(s) != 0, "ioc_session_closed() is 0 inside on_close");
  if (atomic_fetch_add(&r->closes, 1) != 0) FAILF("on_close called twice (err %s)", ioc_err_name(err));
}

ioc_session_callbacks_t rec_callbacks(void) {
  return callbacks(rec_open, rec_recv, rec_drain, rec_close);
}

size_t rec_snapshot(rec_t *r, char *dst, size_t cap) {
  mutex_lock(&r->lock);
  size_t n = r->len < cap ? r->len : cap;
  if (n) memcpy(dst, r->buf, n);
  mutex_unlock(&r->lock);
  return n;
}

rec_server_t *rec_server_new(int keep_data, int echo) {
  rec_server_t *srv = (rec_server_t *)calloc(1, sizeof *srv);
  ASSERT(srv != NULL);
  srv->keep_data = keep_data;
  srv->echo = echo;
  for (int i = 0; i < REC_SERVER_MAX; i++) {
    rec_init(&srv->recs[i], keep_data);
    srv->recs[i].echo = echo;
  }
  return srv;
}

void rec_server_free(rec_server_t *srv) {
  for (int i = 0; i < REC_SERVER_MAX; i++) rec_free(&srv->recs[i]);
  free(srv);
}

void rec_server_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  rec_server_t *srv = (rec_server_t *)ud;
  int i = atomic_fetch_add(&srv->nslots, 1);
  ASSERT_MSG(i < REC_SERVER_MAX, "more than %d sessions accepted", REC_SERVER_MAX);
  rec_t *r = &srv->recs[i];
  r->s = s;
  r->peer_port = ioc_addr_port(ioc_session_peer(s));
  ioc_session_callbacks_t cb = rec_callbacks();
  ioc_session_set_callbacks(s, &cb, r);
  ASSERT(ioc_session_userdata(s) == r);
  /* counted once its fields are written: test threads read them after */
  atomic_fetch_add(&srv->naccepted, 1);
}
