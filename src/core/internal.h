/* The inside of iocore: objects, operations, handles, and the contract every
 * backend implements. Read this file first; docs/architecture.md tells the
 * same story in prose.
 *
 * A completion travels:  kernel -> backend wait() on one loop (by the thread
 * driving that loop) -> backend complete() (no core lock) ->
 * ioc__op_complete(op) -> op->owner->vtbl->dispatch(owner, op) -> the owner
 * drops the reference the operation held.
 *
 * Threading: the core has one or more loops (ioc__loop_t). On io_uring and
 * epoll every worker of a pool drives a loop of its own (its ring or epoll
 * instance) and every socket is pinned to one loop (h->loop) for life; on
 * IOCP there is one loop, the port, which every worker waits on. See
 * core.c for who drives which loop when.
 */
#ifndef IOC_INTERNAL_H
#define IOC_INTERNAL_H

#include "iocore.h"
#include "platform.h"
#include "fault.h"
#include "queue.h"

typedef struct ioc__object ioc__object_t;
typedef struct ioc__op ioc__op_t;
typedef struct ioc__handle ioc__handle_t;
typedef struct ioc__backend ioc__backend_t;
typedef struct ioc__loop ioc__loop_t;

/* ---- objects ------------------------------------------------------------ */

typedef struct ioc__object_vtbl {
  const char *name;
  /* Runs one completed operation; op->res holds the result (bytes, a new fd,
   * or a negative IOC_E* code). Called with the op's reference still held. */
  void (*dispatch)(ioc__object_t *obj, ioc__op_t *op);
  /* The last reference is gone: free everything. */
  void (*destroy)(ioc__object_t *obj);
} ioc__object_vtbl_t;

/* The IocpObject of a classic IOCP core: anything registered with a core. Every
 * in-flight operation holds one reference on its owner. */
struct ioc__object {
  const ioc__object_vtbl_t *vtbl;
  ioc_core_t *core;
  atomic_uint refs;
};

void ioc__object_init(ioc__object_t *obj, ioc_core_t *core, const ioc__object_vtbl_t *vtbl);
static inline void ioc__object_ref(ioc__object_t *obj) {
  atomic_fetch_add_explicit(&obj->refs, 1, memory_order_relaxed);
}
/* Drops a reference; destroys the object when it was the last. */
void ioc__object_unref(ioc__object_t *obj);

/* ---- operations --------------------------------------------------------- */

typedef enum ioc__op_type {
  IOC__OP_NONE = 0,
  IOC__OP_ACCEPT,  /* handle = listening socket; res = new fd; u.accept.slot->addr = peer */
  IOC__OP_CONNECT, /* handle = session socket; u.connect.addr = target; res = 0 */
  IOC__OP_RECV,    /* handle = session socket; res = bytes (0 = EOF); buf = data */
  IOC__OP_SEND,    /* handle = session socket; u.send.iov/iovcnt; res = bytes written */
  IOC__OP_POST,    /* ioc_core_post job; no handle, no owner */
  IOC__OP_TIMER,   /* timer fired; owner = the timer */
  IOC__OP_JOB,     /* owner-internal job queued with ioc__core_defer (e.g. a close) */
  IOC__OP_SHUTDOWN /* handle = session socket; shutdown(SHUT_WR); res = 0 or a negative
                      IOC_E* code. Only through backend->shutdown (below). */
} ioc__op_type_t;

/* Where an accept writes the peer's address (and, on Windows, AcceptEx's
 * buffer). A listener keeps one beside each of its accept operations, so
 * the operation type, which every session embeds, stays small. */
typedef struct ioc__accept_slot {
  ioc_addr_t addr;  /* peer */
  uint32_t addrlen; /* scratch for accept(2) */
#ifdef _WIN32
  char acceptex_buf[2 * (sizeof(struct sockaddr_in6) + 16)];
#endif
} ioc__accept_slot_t;

/* The IocpEvent of a classic IOCP core: one in-flight request. On Windows the
 * OVERLAPPED comes first so a completion is turned back into its op with
 * IOC__CONTAINER_OF; no virtual table before it. */
struct ioc__op {
#ifdef _WIN32
  OVERLAPPED ov;
#endif
  ioc__qnode_t qn;        /* the ready queue, or one queue of the backend's */
  ioc__object_t *owner;   /* holds a reference while in flight (NULL for POST) */
  ioc__handle_t *handle;  /* the socket it works on (NULL for POST/TIMER/JOB) */
  uint8_t type;           /* ioc__op_type_t */
  uint8_t flags;          /* backend-private, except IOC__OPF_SEND_WAITED */
  uint8_t to_backend;     /* the ready queue's: true = run it through backend->run_deferred */
  uint8_t loop;           /* the loop that carries it (set by ioc__op_submit) */
  int32_t res;            /* result */
  union {
    struct {
      ioc_fd_t fd;              /* the accepted socket (also in res on POSIX) */
      ioc__accept_slot_t *slot; /* the peer's address, kept by the listener */
    } accept;
    struct {
      char *buf; /* the received bytes, valid during dispatch only */
    } recv;
    struct {
      const ioc_addr_t *addr; /* the target: the session's own peer field, alive as long as the op */
    } connect;
    struct {
      ioc__iov_t *iov;
      int iovcnt;
#ifndef _WIN32
      struct msghdr *msg; /* scratch for sendmsg, owned by the session's send state
                             (kept out of the op so receive and accept ops stay small) */
#endif
    } send;
    struct {
      void (*fn)(void *arg);
      void *arg;
    } post;
    struct {
      void (*fn)(ioc__op_t *op);
    } job;
  } u;
};

/* The one op->flags bit the layers above read: a backend sets it on a SEND
 * that could not be written at once and waited for the peer to make room,
 * when that does not show as a short write (IOCP: WSASend went pending and
 * completed in full later). session.c treats it like a short write: on_drain
 * is due once the queue empties. Backends keep their own bits below it. */
#define IOC__OPF_SEND_WAITED 0x80u

static inline void ioc__op_init(ioc__op_t *op, ioc__op_type_t type, ioc__object_t *owner,
                                ioc__handle_t *handle) {
  op->qn.next = NULL;
  op->owner = owner;
  op->handle = handle;
  op->type = (uint8_t)type;
  op->flags = 0;
  op->to_backend = 0;
  op->loop = 0;
  op->res = 0;
  op->u.recv.buf = NULL; /* (the caller fills in the other kinds) */
}

/* While an op is in flight the backend owns op->qn, flags and res; the owner reads them only in its dispatch. An op is never
 * submitted again before its completion has been dispatched.
 *
 * Starts op on its handle through the backend. Takes a reference on the owner
 * and counts the op in flight. Returns 0 (a completion will come, exactly
 * once) or a negative code (nothing started, no completion, no reference). */
int ioc__op_submit(ioc_core_t *core, ioc__op_t *op);
/* The same on a handle shared by every loop (a listener's): op is carried
 * by loop `loop` (ioc__core_spread picks one). */
int ioc__op_submit_on(ioc_core_t *core, ioc__op_t *op, int loop);
/* Asks the backend to finish op soon (ECANCELED or its real result). Its
 * completion still comes. Harmless if op already completed. */
void ioc__op_cancel(ioc_core_t *core, ioc__op_t *op);
/* Called by backends (and the ready queue) for each finished op: dispatches
 * it to its owner, then releases the op's count and reference. */
void ioc__op_complete(ioc_core_t *core, ioc__op_t *op);

/* Queues an op whose result is already known (op->res set) to be completed
 * by a dispatching thread; wakes a waiter when the caller is not itself
 * dispatching. The op must already be counted (submitted). Any thread. */
void ioc__core_defer(ioc_core_t *core, ioc__op_t *op);
/* The same for an op the backend itself must pick up again on a dispatching
 * thread (epoll hands the read side of a busy socket on this way): the
 * ready queue gives it to backend->run_deferred instead of completing it. */
void ioc__core_defer_backend(ioc_core_t *core, ioc__op_t *op);
/* Queues an owner-internal job (IOC__OP_JOB): takes a reference on the owner
 * and counts the op, then defers it; op->u.job.fn runs in dispatch. */
void ioc__core_queue_job(ioc_core_t *core, ioc__op_t *op, ioc__object_t *owner,
                         void (*fn)(ioc__op_t *op));
/* True when the calling thread is inside ioc_core_dispatch(core). */
bool ioc__core_in_dispatch(const ioc_core_t *core);
/* True when the calling thread drives loop now (its owner, or the thread
 * holding its drive_lock): it will flush the loop's submissions before it
 * waits or returns, so a backend may batch them. */
bool ioc__core_driving(const ioc__loop_t *loop);
/* True when the calling thread is the pool worker that owns loop. */
bool ioc__core_owns(const ioc__loop_t *loop);
/* The loop the calling thread owns as a worker of core's pool, or NULL. */
ioc__loop_t *ioc__core_own_loop(ioc_core_t *core);
/* The loop a new socket is pinned to: on io_uring the loop whose completion
 * the calling thread is running (an accepted session stays on the ring that
 * accepted it), else the loops in turn. */
int ioc__core_loop_for_new(ioc_core_t *core);
/* Loop number i of a set spread over every loop (a listener's accepts). */
int ioc__core_spread(ioc_core_t *core, int i);
/* A timer with an earlier deadline than any before was started: wakes the
 * thread that keeps the timers, so its wait is bounded anew. */
void ioc__core_wake_timers(ioc_core_t *core);

/* ---- handles ------------------------------------------------------------ */

/* Room for a backend's own per-socket state, embedded in every handle so
 * that registering a socket allocates nothing. Only the backend that owns
 * the core reads or writes it, through a typed view of its own (epoll: the
 * readiness bits and the queues of waiting operations; iocp: the lock
 * around WSASend and the listener's address family; io_uring: nothing).
 * Each backend checks with a static assertion that its view fits. */
#define IOC__HANDLE_SLOT_SIZE 40
typedef union ioc__hslot {
  void *align_;
  uint64_t align64_;
  unsigned char bytes[IOC__HANDLE_SLOT_SIZE];
} ioc__hslot_t;

/* A socket registered with the backend. Embedded in its owner (listener or
 * session). */
struct ioc__handle {
  ioc_fd_t fd;
  uint16_t loop;     /* the loop it is pinned to (set before backend->add) */
  ioc__hslot_t slot; /* backend-private */
};

/* The backend's typed view of h->slot. */
#define IOC__HANDLE_SLOT(h, type) ((type *)(void *)(h)->slot.bytes)

/* ---- backends ----------------------------------------------------------- */

/* One reaped completion as the backend's wait() hands it out, before it is
 * turned into an op completion by complete() outside the poll lock. */
typedef struct ioc__cqe {
  void *ptr;      /* backend-private token: an op (io_uring, iocp), the fd's slot (epoll,
                     with res = its generation), NULL = wake */
  int32_t res;
  uint32_t flags;
} ioc__cqe_t;

#define IOC__CQE_BATCH 128

/* One event loop of a core: a ring (io_uring), an epoll instance, or the
 * port (IOCP, the only loop there). Loops are made by ioc_core_create (loop
 * 0) and ioc_core_start (one per worker), and live until the core is
 * destroyed. */
struct ioc__loop {
  int index;
  void *bl;                /* the backend's state of this loop */
  /* single_waiter backends: held by the thread waiting on the loop and
   * reaping it (not while it runs what it reaped). */
  ioc__mutex_t drive_lock;
  _Atomic(void *) driver;  /* a token of the thread holding drive_lock (NULL: none) */
  /* The pool worker the loop belongs to (NULL: no pool): it alone submits
   * to it directly and waits on it. While it runs a batch (busy_since: when
   * it started, 0 = waiting) an idle worker may reap the loop if the batch
   * runs long (a Lua handler); sleeping: it waits with no time bound, and
   * another worker starting a batch may wake it once to come and look. */
  _Atomic(void *) owner;
  atomic_uint_fast64_t busy_since;
  atomic_int sleeping;
  /* The loop's ring is its owner's alone (loop_own returned 1): no other
   * worker helps with it. Written by its owner with drive_lock held. */
  atomic_int exclusive;
  /* threads running entries reaped from this loop right now (loop_wait_run
   * runs them after releasing drive_lock) */
  atomic_int runners;
  ioc__spin_t lock;        /* guards ready and inbox */
  ioc__queue_t ready;      /* ops of this loop whose result is known (ioc__core_defer) */
  ioc__queue_t inbox;      /* ops other threads submitted (pinned_submit backends) */
  atomic_int pending;      /* ready or inbox may be non-empty */
  /* Send states of this loop's sessions kept for reuse (net/sendq.c): one
   * is made when a queue starts and freed when it drains, and a broadcast
   * starts and drains thousands at once, far more than malloc's per-thread
   * cache holds. A list through each state's first word, under sq_lock. */
  ioc__spin_t sq_lock;
  void *sq_free;
  uint32_t sq_nfree;
};

#define IOC__MAX_LOOPS 256

/* The backend contract. The backend keeps its core-wide state in core->bd
 * and a loop's in loop->bl. "Any thread" functions may be called
 * concurrently with each other and with wait(). */
struct ioc__backend {
  const char *name;
  ioc_backend_kind_t kind;
  /* true: only one thread may wait on a loop at a time, the thread that
   * holds its drive_lock (io_uring, epoll). false: wait() is safe from many
   * threads at once and the core has one loop (iocp). */
  bool single_waiter;
  /* true: only the loop's driver submits to it; ops submitted by other
   * threads go through the loop's inbox (io_uring: so every request's task
   * work belongs to the thread that reaps it). false: submit from any
   * thread (epoll, iocp). */
  bool pinned_submit;
  /* 0 if usable on this machine, else a negative code (IOC_ENOSYS, IOC_EPERM). */
  int (*probe)(void);
  int (*init)(ioc_core_t *core);
  void (*destroy)(ioc_core_t *core);
  /* Sets up / tears down one loop (loop->bl). */
  int (*loop_init)(ioc_core_t *core, ioc__loop_t *loop);
  void (*loop_destroy)(ioc_core_t *core, ioc__loop_t *loop);
  /* Associates a socket with loop h->loop. Any thread. */
  int (*add)(ioc_core_t *core, ioc__handle_t *h);
  /* Dissociates it; called once no op on h is in flight, before the socket
   * is closed and before h is freed. After it returns the backend never
   * touches h again. Any thread. */
  void (*del)(ioc_core_t *core, ioc__handle_t *h);
  /* Starts op on op->handle, on loop op->loop. 0 = a completion will come;
   * < 0 = nothing started. pinned_submit: only by the loop's driver (the
   * core routes the others through the inbox); else any thread. May
   * complete at once through ioc__core_defer (never by calling dispatch
   * inline). */
  int (*submit)(ioc_core_t *core, ioc__op_t *op);
  /* Makes op complete soon (ECANCELED); any thread; op may have completed,
   * or still wait in its loop's inbox. */
  void (*cancel)(ioc_core_t *core, ioc__op_t *op);
  /* Waits on one loop up to timeout_ms (-1 forever, 0 poll) and reaps at
   * most max entries. Returns the count (0 on time-out or an empty wake),
   * or a negative code. single_waiter: under the loop's drive_lock. */
  int (*wait)(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *out, int max, int timeout_ms);
  /* Turns one reaped entry into zero or more ioc__op_complete() calls, on
   * the thread that reaped it. Returns the number of ops completed. */
  int (*complete)(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *cqe);
  /* Runs an op the backend queued with ioc__core_defer_backend. */
  void (*run_deferred)(ioc_core_t *core, ioc__op_t *op);
  /* Makes a thread blocked in wait() on loop return. Any thread. */
  void (*wake)(ioc_core_t *core, ioc__loop_t *loop);
  /* Pushes submissions batched on loop to the kernel. May be NULL. */
  void (*flush)(ioc_core_t *core, ioc__loop_t *loop);
  /* May be NULL. A pool worker takes loop over (own) or gives it back:
   * io_uring replaces the loop's ring by one of the worker's own
   * (SINGLE_ISSUER) or a plain one. Called on that worker's thread with the
   * loop's drive_lock held and no other thread running its completions.
   * Returns 1 when only the calling thread may now wait on and reap the
   * loop (the core then never lets another worker help with it), 2 when
   * other workers may still reap it (the backend keeps its submissions to
   * the owner), 0 when any thread may drive it, < 0 when nothing changed. */
  int (*loop_own)(ioc_core_t *core, ioc__loop_t *loop, bool own);

  /* Optional asynchronous socket calls, for a backend that can batch them
   * with its other submissions (io_uring: IORING_OP_CLOSE; its
   * IORING_OP_SHUTDOWN was measured and dropped, since the kernel punts
   * every one to an io-wq thread). NULL: net/ makes the plain syscall itself, inline,
   * and nothing else changes. epoll and IOCP leave them NULL: there the
   * call would be the same syscall, made later.
   *
   * shutdown: starts shutdown(SHUT_WR) of op->handle's socket; op->type is
   * IOC__OP_SHUTDOWN. It is an operation with submit's contract (the core
   * routes it exactly like submit: same loop, same inbox for pinned_submit,
   * reference and in-flight count taken by ioc__op_submit; 0 = one
   * completion will come, < 0 = nothing started, and the caller then makes
   * the syscall itself), and cancel works on it. It needs a completion
   * because its result decides what comes next: ENOTCONN (the peer is
   * gone) ends the session; any other error resets it; 0 starts the wait
   * for the peer's FIN and acknowledgements, which must not begin before
   * the FIN is queued. The session uses its send operation for it (no
   * send is in flight or possible then: the queue is empty and further
   * sends are refused), so a session never grows for it.
   *
   * close: forgets h as del() does and closes its socket, in one call, so
   * a backend can spare work: io_uring closes fire-and-forget (no op, no
   * completion), epoll skips EPOLL_CTL_DEL (the kernel drops a
   * registration when its socket closes; a late event from before is
   * dropped by the generation check). Called with no operation on h in
   * flight and none to come, and nothing waits for the result (a failed
   * close of a socket is not actionable; Linux releases the descriptor
   * either way). Returns true when it did both: the fd is the backend's
   * now (closed before the loop next waits for completions, at the latest
   * in loop_destroy) and the caller never touches it again. Returns false
   * when it did nothing (the calling thread may not submit to h's loop, no
   * room): the caller calls del() and closes the socket itself. Only for
   * sockets nobody else can hold (sessions): a listener's socket may live
   * on in a forked child, so listeners use del() and a plain close. Any
   * thread. */
  int (*shutdown)(ioc_core_t *core, ioc__op_t *op);
  bool (*close)(ioc_core_t *core, ioc__handle_t *h);
};

extern const ioc__backend_t ioc__backend_uring;
/* The mode of loop's io_uring ring ("single_issuer+defer_taskrun", ...,
 * "plain"), NULL on another backend. uring.c */
const char *ioc__uring_mode(ioc_core_t *core, int loop);
/* Sockets closed by SQEs on the core's rings (0 elsewhere). uring.c */
uint64_t ioc__uring_closes(ioc_core_t *core);
extern const ioc__backend_t ioc__backend_epoll;
extern const ioc__backend_t ioc__backend_iocp;

/* ---- timers --------------------------------------------------------------- */

typedef struct ioc__timer_heap {
  ioc_timer_t **items;
  size_t count, cap;
  uint64_t seq;
} ioc__timer_heap_t;

/* ---- the core ------------------------------------------------------------ */

struct ioc_core {
  const ioc__backend_t *backend;
  void *bd; /* backend data */
  /* Fault injection (fault.h): off unless IOCORE_FAULTS or a test says so.
   * Here, among fields only read while running, so the flag every site
   * tests never shares a cache line with the busy counters below. */
  ioc__faults_t faults;

  /* The loops: loops[0 .. nloops-1], each published before nloops grows. */
  ioc__loop_t *loops[IOC__MAX_LOOPS];
  atomic_int nloops;
  atomic_uint spread_next; /* round robin for ioc__core_loop_for_new */

  /* posts and jobs (no loop of their own), for any dispatching thread */
  ioc__mutex_t ready_lock;
  ioc__queue_t ready; /* of ioc__op_t, through qn */
  atomic_int ready_nonempty;

  /* Threads dispatching while a pool runs that are not its workers wait
   * here (for posts and the stop). */
  ioc__mutex_t foreign_lock;
  ioc__cond_t foreign_cond;
  int foreign_waiting;      /* foreign_lock */
  atomic_int pool_running;  /* a pool's workers own the loops */
  atomic_int sleepers;      /* pool workers waiting with no time bound (core.c: call_for_help) */
  atomic_int handovers_left; /* workers of a starting pool not done taking their loops over */

  ioc__mutex_t timer_lock;
  ioc__timer_heap_t timers;
  /* One thread at a time runs due timers, so callbacks start in deadline
   * order; others skip (under timer_lock) and say so in timers_skipped,
   * and the runner wakes a waiter when it is done. */
  bool timers_running;
  bool timers_skipped;

  atomic_int stopping;
  struct ioc__worker *workers; /* core.c's */
  int nworkers;

  /* every listener and session, for close_all (guarded by objects_lock) */
  ioc__mutex_t objects_lock;
  ioc_listener_t *listeners;
  ioc_session_t *sessions;
  atomic_uint_fast64_t next_id;
  /* The time-out sweep (net/timeout.c), under timed_lock: the sessions
   * that have a time-out to watch (timed list), and the one core-wide
   * repeating timer that runs exactly while that list is not empty. Lock
   * order: a session's lock, then timed_lock, then timer_lock. */
  ioc__mutex_t timed_lock;
  ioc_session_t *timed;
  size_t ntimed;
  ioc_timer_t *sweep;

  void (*log)(void *ud, const char *line);
  void *log_ud;
  unsigned queue_depth;
  void (*batch_hook)(void *ud);
  void *batch_hook_ud;

  struct {
    atomic_uint_fast64_t accepted, connected, active, closed, bytes_in, bytes_out;
    atomic_uint_fast64_t accepts_posted, completions, rejected;
    atomic_uint_fast64_t objects, ops_inflight, sockets, proxy_rejected;
  } st;
};

#define IOC__STAT_ADD(core, field, n) \
  atomic_fetch_add_explicit(&(core)->st.field, (uint_fast64_t)(n), memory_order_relaxed)
#define IOC__STAT_SUB(core, field, n) \
  atomic_fetch_sub_explicit(&(core)->st.field, (uint_fast64_t)(n), memory_order_relaxed)

/* How many loops core has now: loops[0 .. n-1] are made and published
 * (acquire: a loop counted here is seen whole). */
static inline int ioc__core_nloops(const ioc_core_t *core) {
  return atomic_load_explicit(&((ioc_core_t *)core)->nloops, memory_order_acquire);
}
/* Makes loop number index (the next one) and publishes it: 0, or a negative
 * IOC_E* with nothing left behind. create.c */
int ioc__loop_make(ioc_core_t *core, int index);

/* One log line through the core's sink (printf-style). */
void ioc__log(ioc_core_t *core, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Runs expired timers; returns how many fired. Computes the wait bound:
 * *next_ms = ms until the earliest deadline (-1 none). timer.c */
int ioc__timers_run(ioc_core_t *core);
int ioc__timers_next_ms(ioc_core_t *core);
void ioc__timers_destroy(ioc_core_t *core);
/* ioc_timer_cancel that also says whether it stopped the callback before it
 * started (true), or the callback has run or is running (false). */
bool ioc__timer_cancel(ioc_timer_t *timer);

/* net/sendq.c: frees the send states a loop keeps for reuse (the loop is
 * being freed). */
void ioc__sendq_cache_free(ioc__loop_t *l);

/* net/buffer.c: the shared buffers alive in the process and their bytes
 * (for ioc_core_stats). */
void ioc__buffer_stats(uint64_t *buffers, uint64_t *bytes);

/* ---- sockets (net/socket.c) ---------------------------------------------- */

/* Every socket the core opens or adopts is counted in stats.sockets, so a
 * test can check none is left. All return 0 or a negative IOC_E* code. */
int ioc__socket_open(ioc_core_t *core, int family, ioc_fd_t *out); /* non-blocking, close-on-exec */
void ioc__socket_adopt(ioc_core_t *core, ioc_fd_t fd);             /* count an fd made by accept */
int ioc__socket_close(ioc_core_t *core, ioc_fd_t fd);
/* Forgets a session's handle (backend del) and closes its counted socket,
 * once no operation on it is in flight: through backend->close when the
 * backend offers it and takes it, else del() and ioc__socket_close. */
void ioc__socket_close_handle(ioc_core_t *core, ioc__handle_t *h);
int ioc__socket_set_nonblock(ioc_fd_t fd);
int ioc__socket_set_reuseaddr(ioc_fd_t fd);
int ioc__socket_set_reuseport(ioc_fd_t fd);
int ioc__socket_set_nodelay(ioc_fd_t fd);
int ioc__socket_set_linger_off(ioc_fd_t fd);  /* SO_LINGER {0}: close returns at once, FIN */
int ioc__socket_set_linger_rst(ioc_fd_t fd);  /* SO_LINGER {1,0}: close sends RST */
int ioc__socket_bind(ioc_fd_t fd, const ioc_addr_t *addr);
int ioc__socket_listen(ioc_fd_t fd, int backlog);
int ioc__socket_shutdown_write(ioc_fd_t fd);
int ioc__socket_connect_now(ioc_fd_t fd, const ioc_addr_t *addr); /* unix-domain: no op needed */
int ioc__socket_local_addr(ioc_fd_t fd, ioc_addr_t *out);
int ioc__socket_peer_addr(ioc_fd_t fd, ioc_addr_t *out);
/* The last socket error of this thread as an IOC_E* code. */
int ioc__socket_error(void);
/* Maps a platform error number (errno / WSA / Win32) to an IOC_E* code. */
int ioc__translate_error(int sys_error);

/* ---- net objects ------------------------------------------------------------ */

/* Session and listener internals shared by net/listener.c and net/accepted.c. */
int ioc__session_new_accepted(ioc_core_t *core, ioc_listener_t *l, ioc_fd_t fd,
                              const ioc_addr_t *peer, ioc_session_t **out);
void ioc__session_start(ioc_session_t *s); /* on_open, then the first recv */

#endif /* IOC_INTERNAL_H */
