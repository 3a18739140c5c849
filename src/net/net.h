/* Listener and session internals shared by net/listener.c and net/session.c. */
#ifndef IOC_NET_H
#define IOC_NET_H

#include "internal.h"

#define IOC__DEFAULT_BACKLOG 511
#define IOC__DEFAULT_ACCEPTS 16
#define IOC__MAX_ACCEPTS IOC_MAX_ACCEPTS
#define IOC__DEFAULT_MAX_PENDING IOC_DEFAULT_MAX_PENDING
/* How long a gracefully closed session waits for the peer's FIN after its
 * own, reading and discarding, before it gives up with a reset. Closing
 * without this wait would reset the connection whenever unread bytes sit in
 * the receive queue, and a reset can destroy the reply the peer has not yet
 * read. */
#define IOC__LINGER_MS IOC_DEFAULT_CLOSE_TIMEOUT_MS
/* Back-off before re-posting accepts after EMFILE/ENFILE or an unexpected
 * accept error, so the listener neither spins nor stops. */
#define IOC__ACCEPT_BACKOFF_MS 50

struct ioc_listener {
  ioc__object_t obj;
  ioc__handle_t h;
  ioc_addr_t addr;
  ioc__spin_t lock;
  ioc_accept_cb on_accept;
  void *ud;
  ioc_listener_options_t opts;
  int naccepts;
  ioc__op_t *ops;           /* naccepts accept operations */
  uint8_t *posted;          /* posted[i]: ops[i] is in flight */
  int nposted;
  bool closing;
  bool backoff_armed;
#ifndef _WIN32
  int reserve_fd; /* spare fd given up to shed the backlog on EMFILE */
#endif
  atomic_uint_fast64_t nsessions; /* open sessions accepted here */
  ioc_listener_t *prev, *next;    /* core->listeners, under objects_lock */
};

typedef struct ioc__chunk {
  struct ioc__chunk *next;
  uint32_t off, len, cap;
  char data[];
} ioc__chunk_t;

/* Buffers per gathered write; 32 keeps the send state under 1 KiB, in
 * malloc's per-thread cache. */
#define IOC__SEND_IOV_MAX 32
/* Smallest chunk: small writes coalesce into it while a send is in flight. */
#define IOC__CHUNK_SMALL 1000

/* Allocated when the queue goes from empty to non-empty and freed when it
 * drains, so a session holds no send state (nor buffer) between replies. */
typedef struct ioc__sendq {
  ioc__op_t op;
#ifndef _WIN32
  struct msghdr msg;
#endif
  ioc__chunk_t *head, *tail;
  ioc__iov_t iov[IOC__SEND_IOV_MAX];
} ioc__sendq_t;

typedef enum ioc__session_state {
  IOC__S_CONNECTING, /* outbound, connect in flight */
  IOC__S_OPEN,
  IOC__S_DRAINING,   /* close() called: queued data still being written */
  IOC__S_SHUTDOWN,   /* FIN sent; reading (and discarding) until the peer's FIN */
  IOC__S_CLOSING,    /* terminal: waiting for in-flight operations to come back */
  IOC__S_CLOSED      /* on_close delivered */
} ioc__session_state_t;

struct ioc_session {
  ioc__object_t obj;
  ioc__handle_t h;
  ioc__spin_t lock; /* guards the fields below */
  uint8_t state;
  bool recv_posted, send_posted, connect_posted;
  bool peer_eof;    /* the peer sent FIN */
  bool want_drain;  /* a send found the socket busy: on_drain when the queue empties */
  bool aborting;    /* reset on close */
  bool outbound;
  bool local_owned; /* local was allocated here */
  bool in_drain;    /* on_drain is running (on some worker) */
  bool drain_again; /* ...and another one was due meanwhile */
  int close_err;
  uint32_t inflight; /* operations of this session in flight */
  /* The Lua binding's, under its lock: a registry reference to the handler
   * table of an accepted session whose Lua object is not made yet (0: none). */
  int32_t lua_href;
  void *user; /* the embedder's slot (ioc_session_user) */
  size_t pending;
  size_t max_pending;
  uint32_t idle_timeout_ms; /* (clamped to 2^32-1 ms, 49 days) */
  uint32_t last_recv_ms;    /* low 32 bits of ioc__now_ms(); compared with wrap-around */
  ioc__sendq_t *sq;
  ioc_timer_t *linger;
  uint64_t id;
  ioc_listener_t *listener; /* holds a reference while the session lives */
  ioc_session_callbacks_t cbs;
  void *ud;
  ioc_addr_t peer;
  /* The local address: the listener's own when it is bound to a specific
   * address (the same for every session it accepts), else looked up and
   * allocated on first use. */
  const ioc_addr_t *local;
  ioc__op_t rop; /* the one receive (and the connect, and the final close job) */
  ioc_session_t *prev, *next; /* core->sessions, under objects_lock */
};

/* A session with an idle time-out comes / goes: the sweep runs exactly
 * while there is one. Under core->objects_lock. */
void ioc__sweep_add(ioc_core_t *core);
void ioc__sweep_remove(ioc_core_t *core);
void ioc__listener_ref(ioc_listener_t *l);
void ioc__listener_unref(ioc_listener_t *l);

#endif /* IOC_NET_H */
