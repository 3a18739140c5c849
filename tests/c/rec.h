/* A session recorder for tests: callbacks that count opens, closes and
 * drains, keep the error codes, collect the received bytes, and fail the
 * test on any callback after on_close or a second on_open/on_close. A
 * "server" hands a fresh recorder to each accepted session. */
#ifndef IOC_TEST_REC_H
#define IOC_TEST_REC_H

#include "helpers.h"

typedef struct rec {
  /* set by on_open, or by a test that connects (then possibly while on_open
   * runs on a worker): atomic */
  _Atomic(ioc_session_t *) s;
  int peer_port; /* accepted sessions: the client's port, kept past on_close */
  atomic_int opens, closes, drains, recvs;
  int open_err, close_err;
  atomic_int in_recv; /* a second on_recv while one runs = violation */
  test_mutex_t lock;
  char *buf; /* received bytes, when keep_data */
  size_t len, cap;
  atomic_size_t total; /* bytes received */
  int keep_data;
  int echo;     /* on_recv sends the bytes back */
  uint64_t close_ms; /* now_ms() at on_close */
  /* the header does not say two on_drain of one session never overlap, so
   * this is written atomically */
  atomic_size_t pending_at_drain;
} rec_t;

void rec_init(rec_t *r, int keep_data);
void rec_free(rec_t *r);
/* The callback set that records into the rec given as userdata. */
ioc_session_callbacks_t rec_callbacks(void);
/* Copies what was received so far (under the lock); returns the length. */
size_t rec_snapshot(rec_t *r, char *dst, size_t cap);

#define REC_SERVER_MAX 256

typedef struct rec_server {
  rec_t recs[REC_SERVER_MAX];
  atomic_int naccepted; /* sessions whose rec is filled in */
  atomic_int nslots;    /* recs handed out */
  int keep_data, echo;
} rec_server_t;

/* Allocates and initialises a server; every accepted session gets recs[i]. */
rec_server_t *rec_server_new(int keep_data, int echo);
void rec_server_free(rec_server_t *srv);
/* The ioc_accept_cb to pass with the server as ud. */
void rec_server_accept(ioc_listener_t *l, ioc_session_t *s, void *ud);

#endif
