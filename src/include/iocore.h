/* iocore — an embeddable completion-port event core.
 *
 * This is the one public header for C users. Everything in it is stable API;
 * everything else under src/ is internal.
 *
 * Model (the Windows IOCP model, on every platform):
 *   - a core owns a completion port and a backend (io_uring, epoll or iocp);
 *   - long-lived objects (listeners, sessions, timers) are registered with it;
 *   - every in-flight request (accept, connect, recv, send, posted job, timer)
 *     is one operation that holds a reference on its owner, so nothing is
 *     freed while the kernel may still complete into it;
 *   - worker threads call ioc_core_dispatch(); any worker may take any
 *     completion; the completion runs through its owner's dispatch.
 *
 * Conventions: functions return 0 (or a non-negative count) on success and a
 * negative IOC_E* code on failure. ioc_err_name() / ioc_strerror() turn a code
 * into "ECONNRESET" / "connection reset by peer". Codes are the same on every
 * backend and platform.
 *
 * Callbacks are only ever invoked from ioc_core_dispatch() (a worker thread),
 * never from inside another API call, so any API function may be called from
 * inside any callback without deadlock.
 */
#ifndef IOCORE_H
#define IOCORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(IOC_SHARED_BUILD)
#define IOC_API __declspec(dllexport)
#elif defined(__GNUC__)
#define IOC_API __attribute__((visibility("default")))
#else
#define IOC_API
#endif

#define IOC_VERSION_MAJOR 0
#define IOC_VERSION_MINOR 1
#define IOC_VERSION_PATCH 0
#define IOC_VERSION_STRING "0.1.0"

/* ---- errors ------------------------------------------------------------ */

/* Portable error codes. The numeric values equal -errno on Linux so the Linux
 * backends can return kernel results as they are; the Windows backend maps
 * WSA/NTSTATUS codes onto them. IOC_EOF, IOC_ECLOSED, IOC_EUNKNOWN and
 * IOC_ENOTFOUND (a host name that does not resolve) are iocore's own. */
#define IOC_ERRNO_MAP(X)                                                     \
  X(EPERM, -1, "operation not permitted")                                    \
  X(ENOENT, -2, "no such file or directory")                                 \
  X(EINTR, -4, "interrupted system call")                                    \
  X(EIO, -5, "i/o error")                                                    \
  X(EBADF, -9, "bad file descriptor")                                        \
  X(EAGAIN, -11, "resource temporarily unavailable")                         \
  X(ENOMEM, -12, "not enough memory")                                        \
  X(EACCES, -13, "permission denied")                                        \
  X(EFAULT, -14, "bad address in system call argument")                      \
  X(EBUSY, -16, "resource busy or locked")                                   \
  X(EEXIST, -17, "already exists")                                           \
  X(EINVAL, -22, "invalid argument")                                         \
  X(ENFILE, -23, "file table overflow")                                      \
  X(EMFILE, -24, "too many open files")                                      \
  X(ENOSPC, -28, "no space left on device")                                  \
  X(EPIPE, -32, "broken pipe")                                               \
  X(ENAMETOOLONG, -36, "file name too long")                                 \
  X(ENOSYS, -38, "function not implemented")                                 \
  X(EPROTO, -71, "protocol error")                                           \
  X(ENOTSOCK, -88, "socket operation on non-socket")                         \
  X(EMSGSIZE, -90, "message too long")                                       \
  X(EPROTONOSUPPORT, -93, "protocol not supported")                          \
  X(EOPNOTSUPP, -95, "operation not supported on socket")                    \
  X(EAFNOSUPPORT, -97, "address family not supported")                       \
  X(EADDRINUSE, -98, "address already in use")                               \
  X(EADDRNOTAVAIL, -99, "address not available")                             \
  X(ENETDOWN, -100, "network is down")                                       \
  X(ENETUNREACH, -101, "network is unreachable")                             \
  X(ECONNABORTED, -103, "software caused connection abort")                  \
  X(ECONNRESET, -104, "connection reset by peer")                            \
  X(ENOBUFS, -105, "no buffer space available")                              \
  X(EISCONN, -106, "socket is already connected")                            \
  X(ENOTCONN, -107, "socket is not connected")                               \
  X(ESHUTDOWN, -108, "cannot send after transport endpoint shutdown")        \
  X(ETIMEDOUT, -110, "connection timed out")                                 \
  X(ECONNREFUSED, -111, "connection refused")                                \
  X(EHOSTUNREACH, -113, "host is unreachable")                               \
  X(EALREADY, -114, "connection already in progress")                        \
  X(EINPROGRESS, -115, "operation in progress")                              \
  X(ECANCELED, -125, "operation canceled")                                   \
  X(EOF, -4095, "end of file")                                               \
  X(ECLOSED, -4094, "session is closing or closed")                          \
  X(EUNKNOWN, -4093, "unknown error")                                        \
  X(ENOTFOUND, -4092, "host name not found")

typedef enum {
#define IOC__ERR_ENUM(name, value, text) IOC_##name = (value),
  IOC_ERRNO_MAP(IOC__ERR_ENUM)
#undef IOC__ERR_ENUM
  IOC__ERR_END_ = 0
} ioc_errno_t;

/* "ECONNRESET" for IOC_ECONNRESET; "EUNKNOWN" for codes outside the table. */
IOC_API const char *ioc_err_name(int code);
/* "connection reset by peer"; a generic text for codes outside the table. */
IOC_API const char *ioc_strerror(int code);

/* ---- addresses --------------------------------------------------------- */

/* An IPv4, IPv6 or unix-domain socket address. For IPv4 and IPv6 `bytes`
 * is laid out as a struct sockaddr_in / sockaddr_in6 and `len` is its
 * length. For a unix-domain address (family AF_UNIX, "unix:/path") the
 * path is not inside: it is kept once per process by iocore (never freed,
 * the same path always the same bytes), so the struct keeps its size and
 * can be copied freely; `len` is the length of the struct sockaddr_un it
 * stands for (2 for an unnamed socket, "unix:"). Read it only through
 * ioc_addr_format. */
typedef struct ioc_addr {
  union {
    uint16_t family; /* AF_INET or AF_INET6 (first member of any sockaddr) */
    unsigned char bytes[28];
    uint32_t align_; /* sockaddr_in6's strictest member is 4 bytes */
  } u;
  uint32_t len;
} ioc_addr_t;

/* The longest string ioc_addr_format() writes, NUL included: "unix:" and
 * a path of IOC_UNIX_PATH_MAX bytes (longer than any IPv6 text,
 * "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535"). */
#define IOC_UNIX_PATH_MAX 107
#define IOC_ADDRSTRLEN (5 + IOC_UNIX_PATH_MAX + 1)

/* Parses "1.2.3.4:80", "[::1]:80", "localhost:80" (loopback, IPv4) of exactly
 * `len` bytes (an embedded NUL is an error, not an end). Port 0..65535 is
 * required. Returns 0, or IOC_EINVAL for anything malformed; `out` is only
 * written on success. Host names other than "localhost" are not resolved.
 * "unix:PATH" is a unix-domain socket: PATH is 1..IOC_UNIX_PATH_MAX bytes
 * (IOC_ENAMETOOLONG beyond), taken as it is (relative paths are relative
 * to the working directory when the socket is bound or connected). At
 * most IOC_UNIX_PATHS_MAX different paths are kept per process; a new
 * one beyond that is IOC_ENOMEM. */
#define IOC_UNIX_PATHS_MAX 4096
IOC_API int ioc_addr_parse(ioc_addr_t *out, const char *str, size_t len);
/* Writes "1.2.3.4:80", "[::1]:80", "unix:/path" or "unix:" (an unnamed
 * unix-domain socket) into buf (always NUL-terminated when size > 0). Returns the length written, or IOC_ENOBUFS if it does not fit
 * (nothing is truncated silently), or IOC_EINVAL for an unknown family. */
IOC_API int ioc_addr_format(const ioc_addr_t *addr, char *buf, size_t size);
/* Port in host byte order (0 for a unix-domain address or an unknown family). */
IOC_API int ioc_addr_port(const ioc_addr_t *addr);

/* ---- core -------------------------------------------------------------- */

typedef struct ioc_core ioc_core_t;
typedef struct ioc_listener ioc_listener_t;
typedef struct ioc_session ioc_session_t;
typedef struct ioc_timer ioc_timer_t;

typedef enum ioc_backend_kind {
  IOC_BACKEND_AUTO = 0, /* io_uring if usable, else epoll (Linux); iocp (Windows) */
  IOC_BACKEND_IO_URING,
  IOC_BACKEND_EPOLL,
  IOC_BACKEND_IOCP
} ioc_backend_kind_t;

typedef struct ioc_core_options {
  ioc_backend_kind_t backend; /* IOC_BACKEND_AUTO; env IOCORE_BACKEND overrides AUTO */
  unsigned queue_depth;       /* io_uring submission entries; 0 = default (4096) */
  /* One-line log sink (backend choice, fallbacks, resource trouble). NULL =
   * lines go to stderr prefixed "iocore: ". */
  void (*log)(void *log_ud, const char *line);
  void *log_ud;
} ioc_core_options_t;

typedef struct ioc_stats {
  uint64_t accepted;       /* sessions accepted by listeners */
  uint64_t connected;      /* outbound sessions connected */
  uint64_t active;         /* sessions open now */
  uint64_t closed;         /* sessions whose close callback has run */
  uint64_t bytes_in;       /* bytes received */
  uint64_t bytes_out;      /* bytes written to sockets */
  uint64_t accepts_posted; /* accept operations outstanding, all listeners */
  uint64_t completions;    /* completions dispatched */
  uint64_t rejected;       /* connections closed at once by max_connections */
  /* leak accounting: all three are 0 once everything is closed */
  uint64_t objects;        /* live objects (listeners, sessions, timers) */
  uint64_t ops_inflight;   /* operations submitted and not yet completed */
  uint64_t sockets;        /* sockets opened by the core and not yet closed */
  /* connections of proxy_protocol listeners closed before on_accept: a
   * missing, malformed or over-long PROXY header, or none within
   * IOC_PROXY_HEADER_TIMEOUT_MS */
  uint64_t proxy_rejected;
  /* shared buffers (ioc_buffer_new) alive now in the whole process, and
   * their payload bytes: a message sent to many sessions counts once */
  uint64_t buffers;
  uint64_t buffer_bytes;
} ioc_stats_t;

/* Returns the names of the backends usable on this machine, best first,
 * probing each (e.g. {"io_uring","epoll"}). Returns the count written. */
IOC_API int ioc_backends(const char **names, int max);
IOC_API const char *ioc_backend_name(ioc_backend_kind_t kind);

/* Creates a core. opts may be NULL. Returns 0 and *out, or a negative code
 * (IOC_ENOSYS when the requested backend is not available here). */
IOC_API int ioc_core_create(ioc_core_t **out, const ioc_core_options_t *opts);
/* Destroys a core. Everything must be closed and no worker running (see
 * ioc_core_shutdown for a core with live objects). Returns IOC_EBUSY and does
 * nothing if objects or operations are still alive. */
IOC_API int ioc_core_destroy(ioc_core_t *core);
IOC_API const char *ioc_core_backend(const ioc_core_t *core);

/* Waits up to timeout_ms (-1 = forever, 0 = poll) for completions and runs a
 * batch of them through their owners. Returns the number run (> 0), 0 on
 * time-out, IOC_ECANCELED once ioc_core_stop() has been called, or another
 * negative code. Safe to call from several threads at once. */
IOC_API int ioc_core_dispatch(ioc_core_t *core, int timeout_ms);

/* Runs fn(arg) once on a thread calling dispatch (the PostQueuedCompletion-
 * Status of this core). Safe from any thread, including non-workers. */
IOC_API int ioc_core_post(ioc_core_t *core, void (*fn)(void *arg), void *arg);

/* Worker pool: starts n threads looping on dispatch. */
IOC_API int ioc_core_start(ioc_core_t *core, int nthreads);
/* Makes every dispatch (workers and any other caller) return IOC_ECANCELED
 * as soon as it can; wakes all of them. Does not close objects. Safe from any
 * thread and from callbacks. */
IOC_API void ioc_core_stop(ioc_core_t *core);
/* Joins the worker pool after ioc_core_stop(); clears the stop flag so the
 * core can be dispatched or started again. Not from a worker. */
IOC_API void ioc_core_join(ioc_core_t *core);
/* Number of threads the pool was started with (0 when none). */
IOC_API int ioc_core_threads(const ioc_core_t *core);

IOC_API void ioc_core_stats(ioc_core_t *core, ioc_stats_t *out);

/* ---- embedding hooks ------------------------------------------------------
 * What a binding (the Lua module) needs around dispatch, without reaching
 * into the core. */

/* A monotonic clock in milliseconds (the one timers and time-outs use). */
IOC_API uint64_t ioc_now_ms(void);
/* Number of online CPUs (at least 1): the default worker count. */
IOC_API int ioc_cpu_count(void);
/* Runs fn(ud) on the dispatching thread at the end of every dispatch batch,
 * after the batch's submissions went to the kernel; submissions fn makes go
 * out right after it. NULL removes it. Set it before any thread dispatches. */
IOC_API void ioc_core_set_batch_hook(ioc_core_t *core, void (*fn)(void *ud), void *ud);
/* Nonzero when the calling thread is inside ioc_core_dispatch(core). */
IOC_API int ioc_core_in_dispatch(const ioc_core_t *core);
/* Inside a callback: how many completions this thread still has to run in
 * its current batch after this one (0 = this is the last, or not in one). */
IOC_API int ioc_core_batch_left(void);
/* Calls fn(s, arg) for every session open when called (closing ones
 * included). fn runs on the calling thread with no core lock held and s
 * retained for the call, so it may call any API on s, close it included.
 * Sessions made during the walk may or may not be visited. */
IOC_API void ioc_core_foreach_session(ioc_core_t *core, void (*fn)(ioc_session_t *s, void *arg),
                                      void *arg);
/* Closes every listener of the core (ioc_listener_close on each, with the
 * same effect on references) and nothing else: the first half of
 * ioc_core_close_all, for a stop that lets sessions finish. */
IOC_API void ioc_core_close_listeners(ioc_core_t *core);

/* ---- timers ------------------------------------------------------------ */

typedef void (*ioc_timer_cb)(ioc_timer_t *timer, void *ud);

/* Starts a timer firing after delay_ms, then every repeat_ms if repeat_ms > 0.
 * Timers with equal deadlines fire in the order they were started. If out is
 * non-NULL the caller holds a reference and must end it with
 * ioc_timer_cancel() or ioc_timer_release(); with out NULL the timer owns
 * itself (one-shot: freed after firing). */
IOC_API int ioc_timer_start(ioc_core_t *core, uint64_t delay_ms, uint64_t repeat_ms,
                            ioc_timer_cb cb, void *ud, ioc_timer_t **out);
/* Stops the timer (cb does not run again once this returns, unless it is
 * running right now on another thread) and drops the caller's reference. */
IOC_API void ioc_timer_cancel(ioc_timer_t *timer);
/* Drops the caller's reference without stopping the timer. */
IOC_API void ioc_timer_release(ioc_timer_t *timer);
/* An id unique within the core (never reused), for callers that must refer
 * to a timer after it may have been freed. */
IOC_API uint64_t ioc_timer_id(const ioc_timer_t *timer);

/* ---- sessions ---------------------------------------------------------- */

/* The callbacks of a session. Order per session, whatever thread runs them:
 *   on_open (accepted: err 0; connect: err 0 or the failure) first;
 *   on_recv calls in stream order, never two at once;
 *   on_drain when the send queue empties after a send that was not written at once
 *     (never two at once; may run concurrently with on_recv, never with on_open/on_close);
 *   on_close exactly once, last, after every other callback has returned;
 *     err is 0 for a clean close by either side, else the cause.
 * A connect that fails calls on_open(err) and then on_close(err). */
typedef struct ioc_session_callbacks {
  void (*on_open)(ioc_session_t *s, int err);
  void (*on_recv)(ioc_session_t *s, const char *data, size_t len);
  void (*on_drain)(ioc_session_t *s);
  void (*on_close)(ioc_session_t *s, int err);
  /* The peer sent FIN (it will send nothing more) after the last on_recv.
   * NULL: the session closes gracefully at once (queued data, then FIN).
   * Set: the session stays open for sends, and the callee closes it when it
   * is done replying (ioc_session_close). */
  void (*on_eof)(ioc_session_t *s);
} ioc_session_callbacks_t;

typedef struct ioc_buf {
  const void *base;
  size_t len;
} ioc_buf_t;

/* The default of ioc_session_options_t.max_pending (64 MiB). */
#define IOC_DEFAULT_MAX_PENDING ((size_t)64 << 20)
/* The default of ioc_session_options_t.close_timeout_ms. */
#define IOC_DEFAULT_CLOSE_TIMEOUT_MS 5000

/* Message framing of a session's received bytes (ioc_session_options_t.framing):
 * on_recv runs once per message, whatever the boundaries the bytes came in. */
typedef enum ioc_framing_kind {
  IOC_FRAMING_NONE = 0,  /* on_recv gets the bytes as they come */
  IOC_FRAMING_LINE,      /* a message ends at "\n"; it and a "\r" before it are dropped */
  IOC_FRAMING_LEN2,      /* a 2-byte big-endian length, then that many bytes */
  IOC_FRAMING_LEN4,      /* a 4-byte big-endian length, then that many bytes */
  IOC_FRAMING_DELIMITER  /* a message ends at `delimiter` (dropped) */
} ioc_framing_kind_t;

/* The default message size limit (ioc_framing_t.max 0). */
#define IOC_FRAMING_DEFAULT_MAX 65536
/* The longest delimiter. */
#define IOC_FRAMING_DELIMITER_MAX 64

typedef struct ioc_framing {
  int kind;             /* ioc_framing_kind_t */
  /* The longest message (payload, without prefix or delimiter); 0 =
   * IOC_FRAMING_DEFAULT_MAX. A longer one fails the session with
   * IOC_EMSGSIZE (a reset; on_close(s, IOC_EMSGSIZE)) as soon as the bytes
   * prove it, without waiting for its end. */
  size_t max;
  size_t delimiter_len; /* IOC_FRAMING_DELIMITER: 1..IOC_FRAMING_DELIMITER_MAX */
  char delimiter[IOC_FRAMING_DELIMITER_MAX];
  /* Nonzero: after the messages of one receive (or of a resume) have been
   * handed to on_recv, on_recv(s, NULL, 0) marks the end (a message is never
   * NULL; an empty one is (non-NULL, 0)), before a failure of that receive
   * ends the session. An owner that gathers the messages and hands them on
   * together does so at the mark. */
  int end_marks;
} ioc_framing_t;

/* Time-outs all close the session with IOC_ETIMEDOUT (a reset); 0 = off.
 * Zero-initialise the struct: later versions add fields at the end. */
typedef struct ioc_session_options {
  /* Nothing received AND nothing written for this long. */
  uint64_t idle_timeout_ms;
  /* 0 = IOC_DEFAULT_MAX_PENDING. A send that finds data already queued and
   * would take the queue past this returns IOC_ENOBUFS (and on_drain follows);
   * a send on an empty queue is always taken, whatever its size. */
  size_t max_pending;
  /* A non-empty send queue that makes no progress for this long. */
  uint64_t write_timeout_ms;
  /* Outbound only: the connect has not completed after this long;
   * on_open(IOC_ETIMEDOUT) then on_close(IOC_ETIMEDOUT). */
  uint64_t connect_timeout_ms;
  /* 0 = IOC_DEFAULT_CLOSE_TIMEOUT_MS. A graceful close (ioc_session_close,
   * or the end after a half-close) gives up with a reset and
   * on_close(IOC_ETIMEDOUT) after this long WITHOUT progress: no queued
   * byte written, no byte acknowledged by the peer, no peer FIN. */
  uint64_t close_timeout_ms;
  /* Zero (IOC_FRAMING_NONE): no framing. Else one on_recv per message; an
   * empty message is on_recv(s, p, 0). Pausing stops between messages:
   * what follows is kept and delivered first on resume. ioc_listen and
   * ioc_connect return IOC_EINVAL for an unknown kind or a bad delimiter. */
  ioc_framing_t framing;
} ioc_session_options_t;

typedef enum ioc_timeout {
  IOC_TIMEOUT_IDLE,    /* idle_timeout_ms */
  IOC_TIMEOUT_WRITE,   /* write_timeout_ms */
  IOC_TIMEOUT_CONNECT, /* connect_timeout_ms (outbound, before on_open) */
  IOC_TIMEOUT_CLOSE    /* close_timeout_ms (0 = the default) */
} ioc_timeout_t;

/* Starts an outbound connection. Callbacks may run on a worker before this
 * returns, so when out is non-NULL the caller gets a reference of its own
 * and ends it with ioc_session_release(); with out NULL the session belongs
 * to the core alone and is valid in its callbacks until on_close returns.
 * Returns IOC_EINVAL for a bad address, or another code if no socket could
 * be made; connection failures arrive in on_open, then on_close. */
IOC_API int ioc_connect(ioc_core_t *core, const char *address, size_t address_len,
                        const ioc_session_callbacks_t *cbs, void *ud,
                        const ioc_session_options_t *opts, ioc_session_t **out);

/* Replaces the callbacks and user data (normally from on_accept). */
IOC_API void ioc_session_set_callbacks(ioc_session_t *s, const ioc_session_callbacks_t *cbs, void *ud);
IOC_API void *ioc_session_userdata(const ioc_session_t *s);
IOC_API ioc_core_t *ioc_session_core(const ioc_session_t *s);
IOC_API uint64_t ioc_session_id(const ioc_session_t *s);
IOC_API const ioc_addr_t *ioc_session_peer(const ioc_session_t *s);
IOC_API const ioc_addr_t *ioc_session_local(const ioc_session_t *s);

/* The embedder's slot: any pointer, NULL at first. The core never reads
 * it; the embedder orders its own reads and writes. */
IOC_API void *ioc_session_user(const ioc_session_t *s);
IOC_API void ioc_session_set_user(ioc_session_t *s, void *p);

/* Copies the bytes into the send queue and returns 0 at once (never blocks).
 * The bufs of sendv are queued back to back, in order, as one write.
 * IOC_ECLOSED once the owner closed, shut down or aborted the session or it
 * is ending; IOC_ENOBUFS if data is already queued and these bytes would
 * take the queue past max_pending (nothing is queued then, and on_drain
 * runs once the queue has emptied). A send on an empty queue is always
 * taken. After the peer's FIN, with on_eof set, sends still go out. */
IOC_API int ioc_session_send(ioc_session_t *s, const void *data, size_t len);
IOC_API int ioc_session_sendv(ioc_session_t *s, const ioc_buf_t *bufs, size_t n);
/* For IOC_FRAMING_LEN2/LEN4 sessions: queues the length prefix and data as
 * one message (as ioc_session_sendv). IOC_EINVAL for a session with another
 * framing, IOC_EMSGSIZE when len does not fit the prefix (above 65535 for
 * LEN2); else what ioc_session_sendv returns. */
IOC_API int ioc_session_send_frame(ioc_session_t *s, const void *data, size_t len);

/* ---- shared buffers and broadcast ------------------------------------------
 * An ioc_buffer_t is an immutable byte string with a reference count, made
 * with one allocation (header and payload together). Sending it queues a
 * reference instead of a copy, so one message sent to many sessions is held
 * in memory once; each session's queue keeps its reference until those bytes
 * are written or the session ends (on every path: close, abort, reset,
 * time-out, ioc_core_close_all), whatever the creator does with its own.
 * Counts are atomic: retain, release and sends of one buffer are safe from
 * any threads at once. Buffers belong to no core; ioc_stats_t.buffers and
 * buffer_bytes count the live ones of the whole process. */
typedef struct ioc_buffer ioc_buffer_t;

/* Copies len bytes of data into a new buffer holding one reference (the
 * caller's). NULL when out of memory (or len too large to allocate). */
IOC_API ioc_buffer_t *ioc_buffer_new(const void *data, size_t len);
/* Adds a reference; returns b. */
IOC_API ioc_buffer_t *ioc_buffer_retain(ioc_buffer_t *b);
/* Drops a reference; the last one frees the buffer. NULL is ignored. */
IOC_API void ioc_buffer_release(ioc_buffer_t *b);
IOC_API const void *ioc_buffer_data(const ioc_buffer_t *b);
IOC_API size_t ioc_buffer_len(const ioc_buffer_t *b);
/* Queues a reference to b on s, without copying: the same rules and
 * results as ioc_session_send of its bytes (IOC_ECLOSED, IOC_ENOBUFS: the
 * whole length counts against max_pending, as each session holds it). The
 * caller keeps its own reference. */
IOC_API int ioc_session_send_buffer(ioc_session_t *s, ioc_buffer_t *b);
/* ioc_session_sendv where item i is a reference to refs[i] when refs is
 * not NULL and refs[i] is not NULL (bufs[i] is then ignored), else the
 * bytes of bufs[i], copied. All items are taken as one write, or none. */
IOC_API int ioc_session_sendv_buffers(ioc_session_t *s, const ioc_buf_t *bufs,
                                      ioc_buffer_t *const *refs, size_t n);
/* Queues b on each of the n sessions of core (ss[i] NULL, or a session of
 * another core, is skipped) as ioc_session_send_buffer does, and returns how
 * many took it; sessions that are closing, closed or refuse it (IOC_ENOBUFS)
 * are skipped. Any thread; the sessions may belong to different workers
 * (each send goes to the loop its session is pinned to). The caller keeps
 * a reference on every session for the call. */
IOC_API size_t ioc_core_broadcast(ioc_core_t *core, ioc_session_t *const *ss, size_t n,
                                  ioc_buffer_t *b);
/* Corking: while s is corked, sends are queued as usual but no write is
 * started for them, so several small sends made in a row go to the
 * socket as one write when ioc_session_uncork starts it (as TCP_CORK does
 * for segments, here for system calls and ring entries). A write starts
 * anyway once IOC_CORK_MAX bytes are queued, and close and shutdown
 * uncork. Pair each cork with an uncork from the same thread; a send in
 * flight is not affected. The Lua binding corks a session while the
 * handlers of one of its receive events run (every s:send and s:write of
 * a stream-style reply batch leaves as one write). */
#define IOC_CORK_MAX (64 * 1024)
IOC_API void ioc_session_cork(ioc_session_t *s);
IOC_API void ioc_session_uncork(ioc_session_t *s);
/* Bytes queued and not yet written to the socket. */
IOC_API size_t ioc_session_pending(ioc_session_t *s);
/* Asks for on_drain: when bytes are queued, on_drain runs once the queue
 * next empties (whether or not the sends could be written at once) and the
 * queued byte count is returned; when the queue is empty nothing is asked
 * and 0 is returned. Checking and asking are one step, so a writer that
 * waits whenever this returns non-zero never misses its on_drain (the
 * stream style's write() above its high-water mark waits this way). */
IOC_API size_t ioc_session_want_drain(ioc_session_t *s);
/* Graceful: queued data is written, then FIN; the session then reads (and
 * discards) until the peer's FIN, so that a reset cannot destroy the reply,
 * and on_close(s, 0) follows. It waits as long as the peer makes progress
 * (takes queued bytes, acknowledges sent ones); after close_timeout_ms
 * without progress it resets and on_close(s, IOC_ETIMEDOUT) follows.
 * No on_recv, on_eof or on_drain runs once this returns. */
IOC_API void ioc_session_close(ioc_session_t *s);
/* Half-close: queued data is written, then FIN, while reading goes on:
 * on_recv and on_eof run until the peer's FIN, then the session ends as a
 * graceful close does (on_close(s, 0) once the peer has it all). Sends are
 * refused (IOC_ECLOSED) from here on. Returns 0, or IOC_ECLOSED if the
 * owner already closed, shut down or aborted it or it is ending. */
IOC_API int ioc_session_shutdown(ioc_session_t *s);
/* Immediate reset (RST); queued data is dropped; on_close follows. */
IOC_API void ioc_session_abort(ioc_session_t *s);
/* Like ioc_session_abort, with err (a negative IOC_E* code, or 0) as the
 * cause on_close receives. */
IOC_API void ioc_session_fail(ioc_session_t *s, int err);
/* Stops reading: nothing is read from the socket and on_recv does not run
 * until ioc_session_resume. Bytes of a receive already in flight are kept,
 * in order, and delivered first after the resume. The peer's FIN is not
 * noticed while paused. Idempotent; any thread, callbacks included. */
IOC_API void ioc_session_pause(ioc_session_t *s);
/* Reading goes on: held bytes are delivered first, from a dispatching
 * thread (never inside this call), then the next receive is posted.
 * Idempotent. */
IOC_API void ioc_session_resume(ioc_session_t *s);
/* Nonzero while paused. */
IOC_API int ioc_session_paused(const ioc_session_t *s);
/* Sets one time-out of the session from now on (see ioc_session_options_t);
 * 0 turns it off (IOC_TIMEOUT_CLOSE: back to the default). Idle and write
 * periods are measured from the last activity, not from this call. Returns
 * 0, IOC_EINVAL for an unknown `which`, IOC_ECLOSED once the session is
 * ending (IOC_TIMEOUT_CONNECT: once the connect completed). */
IOC_API int ioc_session_set_timeout(ioc_session_t *s, ioc_timeout_t which, uint64_t ms);
/* Nonzero once closing has begun. */
IOC_API int ioc_session_closed(ioc_session_t *s);
/* Extra references keep the pointer valid past on_close. */
IOC_API void ioc_session_retain(ioc_session_t *s);
IOC_API void ioc_session_release(ioc_session_t *s);

/* ---- listeners --------------------------------------------------------- */

/* The most accept operations one listener keeps posted. */
#define IOC_MAX_ACCEPTS 4096

typedef void (*ioc_accept_cb)(ioc_listener_t *l, ioc_session_t *s, void *ud);

typedef struct ioc_listener_options {
  int backlog;          /* 0 = default 511 */
  int accepts;          /* accept operations kept posted; 0 = default 16; at most IOC_MAX_ACCEPTS */
  int reuseport;        /* SO_REUSEPORT */
  uint64_t max_connections;     /* 0 = no cap; past it: accept and close, count rejected */
  ioc_session_options_t session; /* applied to every accepted session */
  /* Nonzero: every connection starts with a PROXY protocol v1 or v2 header
   * (sent by a load balancer in front). It is read before on_accept; the
   * session's peer and local addresses become the client's and the address
   * it connected to, and the bytes after the header are the first on_recv.
   * A missing, malformed or over-long header, an end of stream or an error
   * before it, or no complete header within IOC_PROXY_HEADER_TIMEOUT_MS
   * closes the connection (a reset): no on_accept, no callback at all, and
   * stats.proxy_rejected counts it. */
  int proxy_protocol;
} ioc_listener_options_t;

/* How long a proxy_protocol listener waits for a connection's header. */
#define IOC_PROXY_HEADER_TIMEOUT_MS 5000

/* Binds, listens, and keeps opts->accepts accept operations posted at all
 * times. on_accept(l, s, ud) runs for each accepted session before any of its
 * receives; set the session's callbacks there. Returns 0 and *out, or a
 * negative code (IOC_EINVAL bad address, IOC_EADDRINUSE, ...). */
IOC_API int ioc_listen(ioc_core_t *core, const char *address, size_t address_len,
                       const ioc_listener_options_t *opts, ioc_accept_cb on_accept, void *ud,
                       ioc_listener_t **out);
IOC_API const ioc_addr_t *ioc_listener_address(const ioc_listener_t *l);
IOC_API void ioc_listener_set_accept(ioc_listener_t *l, ioc_accept_cb on_accept, void *ud);
/* Number of the listener's sessions open now. */
IOC_API uint64_t ioc_listener_sessions(const ioc_listener_t *l);
/* Stops accepting: outstanding accepts are cancelled, the socket closed
 * once their completions are back. Sessions already accepted live on.
 * The listener ioc_listen hands out carries one reference, the caller's,
 * and ioc_listener_close ends it: without a reference of its own (from
 * ioc_listener_retain) the caller must not touch l afterwards. With one,
 * l stays valid, and closing again is a harmless no-op, until the matching
 * ioc_listener_release. */
IOC_API void ioc_listener_close(ioc_listener_t *l);
/* An extra reference: l stays valid (closed or not) until the matching
 * release. Any thread. */
IOC_API void ioc_listener_retain(ioc_listener_t *l);
IOC_API void ioc_listener_release(ioc_listener_t *l);

/* Closes every listener and closes every session (graceful, or abortive when
 * abort is nonzero). Completions still have to be dispatched for the closes
 * to finish; ioc_stats().objects tells when they have. Closing a listener
 * here ends the reference ioc_listen handed out, as ioc_listener_close does:
 * keep one of your own (ioc_listener_retain) to use l afterwards. */
IOC_API void ioc_core_close_all(ioc_core_t *core, int abort);

/* ---- name resolution ------------------------------------------------------ */

/* Resolves a host name without blocking the caller or any worker: the
 * system resolver (getaddrinfo: /etc/hosts, DNS, ...) runs on a resolver
 * thread, and cb(ud, err, addrs, n) runs once, later, on a thread calling
 * ioc_core_dispatch (never inside this call). name is `len` bytes:
 * "host", "host:port", "[v6]:port" or an IP literal; the addresses get the
 * port (0 when none is given). On success err is 0 and addrs holds n >= 1
 * IPv4/IPv6 addresses in the resolver's order of preference (valid during
 * the call only); else err is IOC_ENOTFOUND (no such name, or no IPv4/IPv6
 * address for it), IOC_EAGAIN (a temporary failure: the DNS server did
 * not answer, or no thread could be started), IOC_ENOMEM or IOC_EIO,
 * with addrs NULL and n 0. Returns 0 (cb will run), or IOC_EINVAL for a
 * malformed name (empty, a NUL, spaces, a bad port, over 254 bytes of
 * host) or IOC_ENOMEM, and then cb never runs.
 * A lookup in flight counts as an operation of the core: ioc_core_destroy
 * returns IOC_EBUSY until its cb has run, so dispatch until then (a lookup
 * cannot be cancelled; it ends within the system resolver's time-out). */
IOC_API int ioc_resolve(ioc_core_t *core, const char *name, size_t len,
                        void (*cb)(void *ud, int err, const ioc_addr_t *addrs, size_t n),
                        void *ud);

#ifdef __cplusplus
}
#endif
#endif /* IOCORE_H */
