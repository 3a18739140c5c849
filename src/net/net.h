/* Listener and session internals shared by net/listener.c and the session's
 * files: net/session.c, net/connect.c, net/accepted.c, net/session_props.c. */
#ifndef IOC_NET_H
#define IOC_NET_H

#include "internal.h"

#define IOC__DEFAULT_BACKLOG 511
#define IOC__DEFAULT_ACCEPTS 16
#define IOC__MAX_ACCEPTS IOC_MAX_ACCEPTS
#define IOC__DEFAULT_MAX_PENDING IOC_DEFAULT_MAX_PENDING
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
  ioc__accept_slot_t *slots; /* slots[i]: where ops[i] puts the peer's address */
  uint8_t *posted;          /* posted[i]: ops[i] is in flight */
  int nposted;
  bool closing;
  bool backoff_armed;
#ifndef _WIN32
  int reserve_fd; /* spare fd given up to shed the backlog on EMFILE */
  /* unix: listeners: the socket file this listener made (device and
   * inode), removed when the listener closes if it is still that one */
  bool unix_file;
  uint64_t unix_dev, unix_ino;
#endif
  atomic_uint_fast64_t nsessions; /* open sessions accepted here */
  ioc_listener_t *prev, *next;    /* core->listeners, under objects_lock */
};

/* One piece of a send queue: bytes copied in (ref NULL; they follow the
 * header in the same allocation, cap of them, and later small sends fill
 * the free room), or a reference to a shared buffer (ref set, cap 0:
 * nothing is ever appended to it; base points into the buffer, which the
 * chunk holds until it is freed). */
typedef struct ioc__chunk {
  ioc__qnode_t qn;
  ioc_buffer_t *ref;
  const char *base; /* the bytes: the copy after the header, or into ref */
  uint32_t off, len, cap;
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
  size_t pending; /* bytes queued and not yet written (the session's pending()) */
#ifndef _WIN32
  struct msghdr msg;
#endif
  ioc__queue_t chunks; /* of ioc__chunk_t, through qn */
  /* A reference chunk inside the state: the usual queue of one broadcast
   * message costs no allocation besides the state itself. */
  ioc__chunk_t ref_slot;
  bool ref_slot_used;
  ioc__iov_t iov[IOC__SEND_IOV_MAX];
} ioc__sendq_t;

/* The bytes of a receive that completed while its session was paused. */
typedef struct ioc__held {
  size_t len;
  char data[];
} ioc__held_t;

typedef enum ioc__session_state {
  IOC__S_CONNECTING, /* outbound, connect in flight */
  IOC__S_OPEN,       /* (half-closed by the owner too: see `half`) */
  IOC__S_DRAINING,   /* close() called (or the peer's FIN without on_eof): queued data being written */
  IOC__S_SHUTDOWN,   /* FIN sent; reading (and discarding) until the peer's FIN, or, that FIN
                        in, waiting for the peer to acknowledge the rest */
  IOC__S_CLOSING,    /* terminal: waiting for in-flight operations to come back */
  IOC__S_CLOSED      /* on_close delivered */
} ioc__session_state_t;

enum { IOC__FIN_NONE, IOC__FIN_POSTED, IOC__FIN_SENT };

/* Every accepted connection is one of these, idle ones included, so its
 * size is the memory an idle connection costs: fields are ordered to leave
 * no padding, flags are bits, and what few sessions use lives behind a
 * pointer made on demand (the send state, held bytes, a framer, a PROXY
 * header being read). The callbacks are a pointer to the process's one
 * copy of the set (callbacks.c). */
struct ioc_session {
  ioc__object_t obj;
  ioc__handle_t h;
  ioc__spin_t lock; /* guards the fields below, the flag bits included (they share words) */
  unsigned state : 3;         /* ioc__session_state_t */
  unsigned fin : 2;           /* our FIN: IOC__FIN_NONE, _POSTED (asynchronous shutdown in flight, on sq->op), _SENT */
  unsigned recv_posted : 1, send_posted : 1, connect_posted : 1;
  unsigned recv_busy : 1;     /* a receive's completion is being run (rop not free) */
  unsigned peer_eof : 1;      /* the peer sent FIN (and it was processed) */
  unsigned want_drain : 1;    /* a send found the socket busy or was refused: on_drain when the queue empties */
  unsigned aborting : 1;      /* reset on close */
  unsigned outbound : 1;
  unsigned local_owned : 1;   /* local was allocated here */
  unsigned in_drain : 1;      /* on_drain is running (on some worker) */
  unsigned drain_again : 1;   /* ...and another one was due meanwhile */
  unsigned half : 1;          /* the owner called ioc_session_shutdown */
  unsigned paused : 1;        /* ioc_session_pause */
  unsigned has_held : 1;      /* a receive completed while paused: its bytes in held, or the FIN (held NULL) */
  unsigned resume_queued : 1; /* the job delivering the held bytes is queued (it uses rop) */
  unsigned timed : 1;         /* on core->timed (until finalized) */
  unsigned resolving : 1;     /* outbound to a host name: the lookup is in flight (no socket yet) */
  unsigned in_header : 1;     /* reading a PROXY header: `proxy` (not `held`) is set */
  /* Accepted by a proxy_protocol listener and its header not yet in: the
   * embedder has not been told of the session (no on_accept yet), so
   * ioc_core_foreach_session skips it. */
  unsigned hidden : 1;
  unsigned corked : 1;        /* ioc_session_cork: sends queue without starting a write */
  unsigned inflight : 4;      /* operations of this session in flight (at most 4: receive, send, creation guard, lookup) */
  int close_err;
  /* Time-outs in ms (0 = off; clamped to 2^32-1 ms, 49 days) and the
   * moments they count from: low 32 bits of ioc__now_ms(), compared with
   * wrap-around. */
  uint32_t idle_timeout_ms, write_timeout_ms, connect_timeout_ms, close_timeout_ms;
  /* bytes received; also the creation time until the connect completes or
   * the PROXY header is in (the connect and header time-outs count from it) */
  uint32_t last_recv_ms;
  /* send progress: bytes written, or acknowledged, or the queue started.
   * Setting an idle or write time-out on an open session moves it and
   * last_recv_ms to now: the new time-out counts from there. */
  uint32_t progress_ms;
  int32_t last_unacked;   /* the kernel's unacknowledged bytes at the last look (-1 unknown) */
  /* Low 32 bits of the bytes the peer had acknowledged at the last look,
   * compared with wrap-around: the sweep looks every 100 ms, far less
   * than 2 GiB apart. */
  uint32_t last_acked;
  /* The send-queue limit; clamped to 4 GiB - 1 (a queue beyond that
   * behind a socket is no use to anyone). */
  uint32_t max_pending;
  void *user; /* the embedder's slot (ioc_session_user) */
  union {
    ioc__held_t *held;               /* the receive that completed while paused */
    struct ioc__proxy_reader *proxy; /* while in_header: the PROXY header read so far */
  };
  ioc__sendq_t *sq; /* NULL while nothing is queued or in flight */
  /* Framing (NULL: none). Used only by the thread that owns rop (the
   * receive's completion or the resume job), never two at once. */
  struct ioc__framer *framer;
  uint64_t id;
  ioc_listener_t *listener; /* holds a reference while the session lives */
  const ioc_session_callbacks_t *cbs; /* never NULL; one copy per distinct set (callbacks.c) */
  void *ud;
  ioc_addr_t peer;
  /* The local address: the listener's own when it is bound to a specific
   * address (the same for every session it accepts), else looked up and
   * allocated on first use. */
  const ioc_addr_t *local;
  ioc__op_t rop; /* the one receive (and the connect, the resume job and the final close job) */
  ioc_session_t *prev, *next;   /* core->sessions, under objects_lock */
  ioc_session_t *tprev, *tnext; /* core->timed, under timed_lock */
};

/* net/callbacks.c: the process's one copy of the set *cbs (NULL or all
 * NULL: the empty set), made on first use; NULL when out of memory for a
 * new one. Any thread. */
const ioc_session_callbacks_t *ioc__callbacks_intern(const ioc_session_callbacks_t *cbs);
const ioc_session_callbacks_t *ioc__callbacks_none(void);

/* net/sendq.c (under s->lock) */
/* Frees the queue (its chunks, releasing their buffers) and the send
 * state; s->sq is NULL after. Nothing may be in flight. */
void ioc__sendq_release(ioc_session_t *s);
/* Appends the n items to the queue (made if needed): item i is a reference
 * to refs[i] when refs and refs[i] are set, else bufs[i]'s bytes, copied.
 * On failure (IOC_ENOMEM) nothing of them stays queued. */
int ioc__sendq_append(ioc_session_t *s, const ioc_buf_t *bufs, ioc_buffer_t *const *refs, size_t n);
/* Fills iov[0..max) with the unwritten bytes of the first chunks; returns
 * the count. */
int ioc__sendq_gather(ioc__sendq_t *q, ioc__iov_t *iov, int max);
/* Drops n written bytes from the head of the queue. */
void ioc__sendq_consume(ioc__sendq_t *q, size_t n);
bool ioc__sendq_empty(const ioc__sendq_t *q);
/* Frees the send state once nothing is queued or in flight. Called from
 * the send's own completion too: the op lives in the state, and nothing
 * reads an op after its dispatch. */
void ioc__sendq_release_if_idle(ioc_session_t *s);

/* Bytes queued and not yet written. Under s->lock. */
static inline size_t ioc__session_pending(const ioc_session_t *s) { return s->sq ? s->sq->pending : 0; }

static inline uint32_t ioc__now32(void) { return (uint32_t)ioc__now_ms(); }
static inline uint32_t ioc__ms_since(uint32_t now, uint32_t then) { return (uint32_t)(now - then); }
/* A time-out in ms (or a byte limit) as a session keeps it: at most
 * UINT32_MAX. */
static inline uint32_t ioc__clamp_ms(uint64_t ms) { return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms; }

/* net/tcpinfo.c: the bytes the kernel still holds for the peer (unsent or
 * unacknowledged; our FIN counts one once shut down), and in *acked the
 * bytes the peer has acknowledged so far (UINT64_MAX: not known). acked
 * NULL: only the first (Linux: SIOCOUTQ alone, one syscall instead of two).
 * IOC_ENOSYS where the platform does not tell (Windows). */
int ioc__socket_send_state(ioc_fd_t fd, uint64_t *acked);

/* net/timeout.c: puts s on the core's timed list (idempotent), starting
 * the sweep if it is the first. Under s->lock. */
void ioc__timed_add(ioc_session_t *s);
/* Takes a finalized session off the list (stops the sweep on the last). */
void ioc__timed_remove(ioc_session_t *s);
/* True if the session has something for the sweep to watch. Under s->lock. */
bool ioc__session_needs_sweep(const ioc_session_t *s);
/* net/session.c, for the sweep: both FINs are out; end now or once the
 * peer acknowledged the rest. Under s->lock. */
void ioc__session_finish_graceful(ioc_session_t *s);
void ioc__session_enter_closing(ioc_session_t *s, int err);
/* net/session.c, for connect.c: a new session on fd (IOC_BAD_FD: no
 * socket yet, one being looked up), with options o (NULL: defaults),
 * outbound (connecting) or accepted, hidden from ioc_core_foreach_session
 * while the embedder has not been told of it. It is on the core's session
 * list, holding the core's reference and a creation guard (one operation)
 * that its starter ends. On failure fd is not closed (the caller does). */
int ioc__session_new(ioc_core_t *core, ioc_fd_t fd, const ioc_session_options_t *o, bool outbound,
                     bool hidden, ioc_session_t **out);
/* The session is done (state CLOSED, no operation in flight or to come):
 * closes its socket, calls on_close, drops the core's reference. */
void ioc__session_finalize(ioc_session_t *s);
/* A job on s->rop that ends one operation's share of the session
 * (finalizing it on the last): queued to end a guard from dispatch. */
void ioc__session_close_job(ioc__op_t *op);
/* net/session.c, for accepted.c: starts what reading needs next (see
 * kick_recv). Under s->lock. */
void ioc__session_kick_recv(ioc_session_t *s);
/* net/session.c, for accepted.c: runs one receive's result (res bytes at
 * buf, 0 for the peer's FIN, or an error) as the session's receive path
 * does; fresh says the bytes are new from the kernel (counted). The caller
 * owns rop and does not hold s->lock. */
void ioc__session_run_recv_result(ioc_session_t *s, const char *buf, int res, bool fresh);
/* net/accepted.c: a receive of a session still reading its PROXY header;
 * the caller owns rop and does not hold s->lock. */
void ioc__session_run_proxy_header(ioc_session_t *s, const char *buf, int res);
/* net/accepted.c: an accepted session of a proxy_protocol listener starts
 * by reading its header; on_accept and on_open run once it is in. Ends
 * the creation guard, like ioc__session_start. */
void ioc__session_start_proxy(ioc_session_t *s);
/* 0 for no framing or a valid one, else IOC_EINVAL (ioc_listen, ioc_connect). */
int ioc__framing_check(const ioc_framing_t *fr);
void ioc__listener_ref(ioc_listener_t *l);
void ioc__listener_unref(ioc_listener_t *l);

#endif /* IOC_NET_H */
