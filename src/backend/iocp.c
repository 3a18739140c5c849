/* The IOCP backend: the completion port the whole design is modelled on
 * (Windows; cross-built with mingw-w64 and tested under wine).
 *
 * Nothing is emulated here. One completion port per core; every socket is
 * associated with it once (add), with its handle as the completion key, and
 * every operation is a real overlapped request whose OVERLAPPED is the first
 * member of the ioc__op_t, so a completion is turned back into its op with
 * IOC__CONTAINER_OF:
 *
 *   ACCEPT   AcceptEx on the listening socket, into a socket made here per
 *            posted accept; on success SO_UPDATE_ACCEPT_CONTEXT and the peer
 *            address from GetAcceptExSockaddrs. On failure the socket made
 *            here is closed here: the listener adopts (counts) only the ones
 *            it is given.
 *   CONNECT  ConnectEx, after binding the socket to the wildcard address
 *            (ConnectEx insists on a bound socket); SO_UPDATE_CONNECT_CONTEXT
 *            afterwards so getsockname/shutdown work on it.
 *   RECV     a zero-byte WSARecv (the classic IOCP "PreRecv"): an idle session
 *            pins no receive buffer in the kernel. When it completes, data
 *            (or FIN, or an error) is there; a non-blocking recv() copies it
 *            into this thread's 64 KiB buffer, op->u.recv.buf points at it for the
 *            duration of the dispatch. If that recv finds nothing after all
 *            (WSAEWOULDBLOCK), the zero-byte receive is posted again without
 *            completing the op.
 *   SEND     WSASend of the op's WSABUF array (ioc__iov_t is WSABUF here):
 *            one gathered write.
 *   cancel   CancelIoEx(socket, &op->ov): the op completes with
 *            ERROR_OPERATION_ABORTED (-> IOC_ECANCELED) or its real result.
 *   wake     PostQueuedCompletionStatus with a NULL OVERLAPPED.
 *
 * Exactly one completion per successful submit. FILE_SKIP_COMPLETION_PORT_-
 * ON_SUCCESS is deliberately not used: every request that did not fail at
 * once completes through the port, even when it finished synchronously, so
 * there is one path for results. A request that fails at once queues no
 * packet; submit then delivers the error through ioc__core_defer, so the
 * owner sees it as an ordinary failed completion (the same as the epoll
 * backend does with a connect refused at once).
 *
 * Many threads may sit in GetQueuedCompletionStatusEx at once
 * (single_waiter = false): the port hands each packet to one of them, and
 * completions of different operations run in parallel. The core's guarantee
 * that an op's memory (and its owner) lives until its completion is back
 * holds because the kernel delivers exactly one packet per pending request,
 * cancelled or not.
 *
 * Failed completions: GetQueuedCompletionStatusEx leaves the request's
 * NTSTATUS in OVERLAPPED.Internal. ioc__translate_error knows the usual
 * socket statuses; anything else goes through RtlNtStatusToDosError first.
 */
#ifdef _WIN32

#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* The backend's state of one socket, kept in its handle's slot. */
typedef struct iocp_handle {
  ioc__spin_t lock; /* held across WSASend and a receive's re-post (see their notes) */
  int family;       /* a listening socket's address family, once looked up (0: not yet) */
} iocp_handle_t;
_Static_assert(sizeof(iocp_handle_t) <= IOC__HANDLE_SLOT_SIZE, "iocp_handle_t must fit a handle's slot");

static inline iocp_handle_t *iocp_h(ioc__handle_t *h) { return IOC__HANDLE_SLOT(h, iocp_handle_t); }

/* op->flags for RECV, under the handle's lock */
#define IOCP_OP_CANCELLED 0x1u /* cancel() was asked: do not re-post internally */

#define IOCP_RECV_BUF (64 * 1024)
#define IOCP_ADDR_SPACE (sizeof(struct sockaddr_in6) + 16) /* what AcceptEx wants per address */

typedef struct iocp_state {
  HANDLE port;
  LPFN_ACCEPTEX accept_ex;
  LPFN_GETACCEPTEXSOCKADDRS accept_ex_sockaddrs;
  LPFN_CONNECTEX connect_ex;
} iocp_state_t;

/* The receive buffer of this thread; see the RECV note above. A dispatch
 * nested inside a callback on the same thread gets a heap buffer. */
static _Thread_local char iocp_recv_buf[IOCP_RECV_BUF];
static _Thread_local int iocp_recv_buf_busy;

static iocp_state_t *iocp_state(ioc_core_t *core) { return (iocp_state_t *)core->bd; }

/* ---- errors ------------------------------------------------------------------ */

typedef ULONG(WINAPI *rtl_status_to_dos_fn)(LONG status);

/* An NTSTATUS from OVERLAPPED.Internal as an IOC_E* code. The direct table
 * covers what sockets report; RtlNtStatusToDosError (ntdll, looked up once)
 * maps the rest onto a Win32 error that the table knows. */
static int iocp_status_error(DWORD status) {
  int code = ioc__translate_error((int)status);
  if (code != IOC_EUNKNOWN) return code;
  static _Atomic(rtl_status_to_dos_fn) to_dos;
  rtl_status_to_dos_fn fn = atomic_load_explicit(&to_dos, memory_order_acquire);
  if (!fn) {
    HMODULE ntdll = GetModuleHandleA("ntdll.dll");
    FARPROC p = ntdll ? GetProcAddress(ntdll, "RtlNtStatusToDosError") : NULL;
    if (!p) return IOC_EUNKNOWN;
    /* cast through void (*)(void): FARPROC -> another function type */
    fn = (rtl_status_to_dos_fn)(void (*)(void))p;
    atomic_store_explicit(&to_dos, fn, memory_order_release);
  }
  return ioc__translate_error((int)fn((LONG)status));
}

/* ---- the extension functions ------------------------------------------------- */

static int load_extension(SOCKET s, GUID guid, void *fn, DWORD size) {
  DWORD bytes = 0;
  if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof guid, fn, size, &bytes, NULL,
               NULL) != 0)
    return ioc__socket_error();
  return 0;
}

/* AcceptEx, GetAcceptExSockaddrs and ConnectEx belong to the TCP provider,
 * so one throw-away socket is enough to find them (libuv does the same).
 * The Microsoft provider serves IPv4 and IPv6 with the same functions. */
static int load_extensions(iocp_state_t *st) {
  SOCKET s = WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
  if (s == INVALID_SOCKET) return ioc__socket_error();
  GUID accept_guid = WSAID_ACCEPTEX, sockaddrs_guid = WSAID_GETACCEPTEXSOCKADDRS,
       connect_guid = WSAID_CONNECTEX;
  int rc = load_extension(s, accept_guid, &st->accept_ex, sizeof st->accept_ex);
  if (rc == 0)
    rc = load_extension(s, sockaddrs_guid, &st->accept_ex_sockaddrs,
                        sizeof st->accept_ex_sockaddrs);
  if (rc == 0) rc = load_extension(s, connect_guid, &st->connect_ex, sizeof st->connect_ex);
  closesocket(s);
  return rc;
}

/* ---- backend functions ---------------------------------------------------------- */

static void iocp_wake(ioc_core_t *core, ioc__loop_t *loop);

/* IOCP exists on every Windows this library supports; the probe still checks
 * that Winsock starts and a port can be made (it can fail under a sandbox). */
static int iocp_probe(void) {
  WSADATA wsa;
  if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0) return IOC_ENOSYS;
  HANDLE port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
  WSACleanup();
  if (!port) return IOC_ENOSYS;
  CloseHandle(port);
  return 0;
}

/* Winsock is started once per core: WSAStartup/WSACleanup count, so cores
 * (and a program that uses Winsock itself) nest. */
static void iocp_destroy(ioc_core_t *core) {
  iocp_state_t *st = iocp_state(core);
  if (!st) return;
  if (st->port) CloseHandle(st->port);
  free(st);
  core->bd = NULL;
  WSACleanup();
}

static int iocp_init(ioc_core_t *core) {
  WSADATA wsa;
  int err = WSAStartup(MAKEWORD(2, 2), &wsa);
  if (err != 0) return ioc__translate_error(err);
  iocp_state_t *st = calloc(1, sizeof *st);
  if (!st) {
    WSACleanup();
    return IOC_ENOMEM;
  }
  core->bd = st;
  /* Concurrency 0: as many threads running at once as there are CPUs. */
  st->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
  int rc = st->port ? load_extensions(st) : ioc__translate_error((int)GetLastError());
  if (rc < 0) {
    iocp_destroy(core);
    return rc;
  }
  return 0;
}

/* Associates the socket with the port, its handle as the completion key.
 * There is no way back short of closing the socket, which is what del's
 * caller does next. */
static int iocp_add(ioc_core_t *core, ioc__handle_t *h) {
  if (h->fd == INVALID_SOCKET) return IOC_EBADF;
  memset(iocp_h(h), 0, sizeof(iocp_handle_t));
  if (!CreateIoCompletionPort((HANDLE)h->fd, iocp_state(core)->port, (ULONG_PTR)h, 0))
    return ioc__translate_error((int)GetLastError());
  return 0;
}

static void iocp_del(ioc_core_t *core, ioc__handle_t *h) {
  IOC__UNUSED(core);
  IOC__UNUSED(h); /* closing the socket ends the association */
}

/* A request that failed before it was queued: no packet will come, so the
 * result is delivered through the ready queue. Returns 0 (a completion will
 * come) as submit must. */
static int fail_now(ioc_core_t *core, ioc__op_t *op, int err) {
  op->res = err;
  ioc__core_defer(core, op);
  return 0;
}

/* The zero-byte receive. 0 when pending (or done: the packet comes anyway),
 * else the error; no packet comes then. */
static int post_zero_recv(ioc__op_t *op) {
  WSABUF none = {0, NULL};
  DWORD flags = 0;
  memset(&op->ov, 0, sizeof op->ov);
  if (WSARecv(op->handle->fd, &none, 1, NULL, &flags, &op->ov, NULL) == 0) return 0;
  int e = WSAGetLastError();
  return e == WSA_IO_PENDING ? 0 : ioc__translate_error(e);
}

/* The family of the listening socket h, remembered in its slot: each
 * posted accept needs a socket of the same family. */
static int listener_family(ioc__handle_t *h) {
  ioc__spin_lock(&iocp_h(h)->lock);
  int family = iocp_h(h)->family;
  ioc__spin_unlock(&iocp_h(h)->lock);
  if (family) return family;
  ioc_addr_t local;
  int rc = ioc__socket_local_addr(h->fd, &local);
  if (rc < 0) return rc;
  family = local.u.family;
  ioc__spin_lock(&iocp_h(h)->lock);
  iocp_h(h)->family = family;
  ioc__spin_unlock(&iocp_h(h)->lock);
  return family;
}

static int submit_accept(ioc_core_t *core, ioc__op_t *op) {
  iocp_state_t *st = iocp_state(core);
  ioc__handle_t *h = op->handle;
  op->u.accept.fd = IOC_BAD_FD;
  int family = listener_family(h);
  if (family < 0) return fail_now(core, op, family);
  /* Not counted yet: the listener adopts the socket if the accept succeeds. */
  SOCKET s;
  int rc = ioc__socket_open(NULL, family, &s);
  if (rc < 0) return fail_now(core, op, rc);
  op->u.accept.fd = s;
  DWORD bytes = 0;
  memset(&op->ov, 0, sizeof op->ov);
  if (st->accept_ex(h->fd, s, op->u.accept.slot->acceptex_buf, 0, (DWORD)IOCP_ADDR_SPACE,
                    (DWORD)IOCP_ADDR_SPACE, &bytes, &op->ov))
    return 0;
  int e = WSAGetLastError();
  if (e == WSA_IO_PENDING) return 0;
  closesocket(s);
  op->u.accept.fd = IOC_BAD_FD;
  return fail_now(core, op, ioc__translate_error(e));
}

static int submit_connect(ioc_core_t *core, ioc__op_t *op) {
  iocp_state_t *st = iocp_state(core);
  SOCKET s = op->handle->fd;
  const ioc_addr_t *a = op->u.connect.addr;
  ioc_addr_t any;
  memset(&any, 0, sizeof any);
  any.u.family = a->u.family;
  any.len = a->u.family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  /* in6addr_any / INADDR_ANY, port 0: all zeroes */
  int rc = ioc__socket_bind(s, &any);
  if (rc < 0 && rc != IOC_EINVAL) /* EINVAL: bound already */
    return fail_now(core, op, rc);
  memset(&op->ov, 0, sizeof op->ov);
  if (st->connect_ex(s, (const struct sockaddr *)a->u.bytes, (int)a->len, NULL, 0, NULL, &op->ov))
    return 0;
  int e = WSAGetLastError();
  return e == WSA_IO_PENDING ? 0 : fail_now(core, op, ioc__translate_error(e));
}

/* A send that goes pending waits for the peer to make room and then
 * completes in full: no short write tells the session that it was not
 * written at once, so IOC__OPF_SEND_WAITED does. The flag is written under
 * the handle's lock, held across WSASend, and complete() takes the same lock before
 * the owner reads it: the packet cannot be handled before the flag is set. */
static int submit_send(ioc_core_t *core, ioc__op_t *op) {
  ioc__handle_t *h = op->handle;
  memset(&op->ov, 0, sizeof op->ov);
  ioc__spin_lock(&iocp_h(h)->lock);
  int e = 0;
  if (WSASend(h->fd, op->u.send.iov, (DWORD)op->u.send.iovcnt, NULL, 0, &op->ov, NULL) != 0) {
    e = WSAGetLastError();
    if (e == WSA_IO_PENDING) op->flags |= IOC__OPF_SEND_WAITED;
  }
  ioc__spin_unlock(&iocp_h(h)->lock);
  return e == 0 || e == WSA_IO_PENDING ? 0 : fail_now(core, op, ioc__translate_error(e));
}

/* Starts op. Never completes inline: a failure found now is deferred. */
static int iocp_submit(ioc_core_t *core, ioc__op_t *op) {
  if (!op->handle) return IOC_EINVAL;
  switch (op->type) {
  case IOC__OP_ACCEPT: return submit_accept(core, op);
  case IOC__OP_CONNECT: return submit_connect(core, op);
  case IOC__OP_SEND: return submit_send(core, op);
  case IOC__OP_RECV: {
    int rc = post_zero_recv(op);
    return rc < 0 ? fail_now(core, op, rc) : 0;
  }
  default: return IOC_EINVAL;
  }
}

/* CancelIoEx finds the request if it is still pending; if it has finished
 * already its packet is on the way with the real result. A receive between
 * its zero-byte completion and an internal re-post is caught by the flag,
 * which the re-post checks under the same lock. */
static void iocp_cancel(ioc_core_t *core, ioc__op_t *op) {
  IOC__UNUSED(core);
  ioc__handle_t *h = op->handle;
  if (!h) return;
  if (op->type == IOC__OP_RECV) {
    ioc__spin_lock(&iocp_h(h)->lock);
    op->flags |= IOCP_OP_CANCELLED;
    CancelIoEx((HANDLE)h->fd, &op->ov);
    ioc__spin_unlock(&iocp_h(h)->lock);
    return;
  }
  CancelIoEx((HANDLE)h->fd, &op->ov);
}

/* Reaps up to max packets. Each becomes {ptr = op, res = bytes, flags =
 * NTSTATUS}; wake packets (NULL OVERLAPPED) are dropped. Returns the count,
 * 0 on time-out or a bare wake. Safe from many threads at once.
 *
 * A stop must wake every thread in wait(), but one thread may reap several
 * wake packets in one batch, and threads outside the pool may be waiting
 * too, so the number of packets ioc_core_stop() posts is not enough by
 * itself. Instead a wake reaped while the core is stopping is passed on:
 * one packet stays in the port until everybody has seen the flag, and the
 * one left over after ioc_core_join() is a harmless empty wake. */
static int iocp_wait(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *out, int max, int timeout_ms) {
  OVERLAPPED_ENTRY entries[IOC__CQE_BATCH];
  if (max > IOC__CQE_BATCH) max = IOC__CQE_BATCH;
  if (max <= 0) return 0;
  ULONG n = 0;
  DWORD ms = timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms;
  if (!GetQueuedCompletionStatusEx(iocp_state(core)->port, entries, (ULONG)max, &n, ms, FALSE)) {
    DWORD e = GetLastError();
    return e == WAIT_TIMEOUT ? 0 : ioc__translate_error((int)e);
  }
  int k = 0, wakes = 0;
  for (ULONG i = 0; i < n; i++) {
    OVERLAPPED *ov = entries[i].lpOverlapped;
    if (!ov) {
      wakes++;
      continue;
    }
    out[k].ptr = IOC__CONTAINER_OF(ov, ioc__op_t, ov);
    out[k].res = (int32_t)entries[i].dwNumberOfBytesTransferred;
    out[k].flags = (uint32_t)ov->Internal; /* NTSTATUS, 0 = success */
    k++;
  }
  if (wakes && atomic_load_explicit(&core->stopping, memory_order_acquire)) iocp_wake(core, loop);
  return k;
}

/* The zero-byte receive came back with success: read what is there. Returns
 * true if op is finished (op->res and op->u.recv.buf set), false if it was posted
 * again and its completion is still to come. *heap receives a buffer the
 * caller frees after completing op. */
static bool finish_recv(ioc__op_t *op, char **heap) {
  ioc__handle_t *h = op->handle;
  char *buf = iocp_recv_buf_busy ? (*heap = malloc(IOCP_RECV_BUF)) : iocp_recv_buf;
  if (!buf) {
    op->res = IOC_ENOMEM;
    return true;
  }
  for (;;) {
    int n = recv(h->fd, buf, IOCP_RECV_BUF, 0);
    if (n >= 0) {
      op->res = n; /* 0: the peer's FIN */
      op->u.recv.buf = buf;
      return true;
    }
    int e = WSAGetLastError();
    if (e == WSAEINTR) continue;
    if (e != WSAEWOULDBLOCK) {
      op->res = ioc__translate_error(e);
      return true;
    }
    /* Nothing after all (the data went to an earlier read): wait again,
     * unless a cancel came in the meantime. */
    ioc__spin_lock(&iocp_h(h)->lock);
    int rc = (op->flags & IOCP_OP_CANCELLED) ? IOC_ECANCELED : post_zero_recv(op);
    ioc__spin_unlock(&iocp_h(h)->lock);
    if (rc == 0) return false;
    op->res = rc;
    return true;
  }
}

/* For an AcceptEx packet that came with STATUS_PENDING (see iocp_complete):
 * whether the accept socket holds the connection after all. */
static bool iocp_accepted_anyway(SOCKET s, SOCKET ls) {
  struct sockaddr_storage peer;
  int len = (int)sizeof peer;
  return setsockopt(s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (const char *)&ls, (int)sizeof ls) == 0 &&
         getpeername(s, (struct sockaddr *)&peer, &len) == 0;
}

/* Turns one packet into the op's result and completes it. Runs on any
 * number of threads at once. Returns the number of ops completed (0 when a
 * receive was re-posted instead). */
static int iocp_complete(ioc_core_t *core, ioc__loop_t *loop, ioc__cqe_t *cqe) {
  IOC__UNUSED(loop);
  ioc__op_t *op = cqe->ptr;
  DWORD status = cqe->flags;
  int err = status ? iocp_status_error(status) : 0;
  char *heap = NULL;
  if (op->type == IOC__OP_RECV) op->u.recv.buf = NULL;
  /* Wine (8.0, under load) sometimes hands out the packet of a finished
   * AcceptEx or zero-byte WSARecv while its OVERLAPPED still reads
   * STATUS_PENDING, for good: the connection is in the accept socket, the
   * data in the receive buffer. (Windows writes the final status before it
   * queues the packet, so it never gets here.) Both results can be read off
   * the socket instead; taking the status as an error dropped a client that
   * had connected, or reset a session in the middle of its data. */
  bool pending = status == (DWORD)STATUS_PENDING;

  switch (op->type) {
  case IOC__OP_ACCEPT: {
    SOCKET s = op->u.accept.fd;
    SOCKET ls = op->handle->fd;
    if (pending && !iocp_accepted_anyway(s, ls)) pending = false; /* stays an error */
    if (pending) err = 0;
    if (!err && setsockopt(s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (const char *)&ls,
                           (int)sizeof ls) != 0)
      err = ioc__socket_error();
    if (err) {
      closesocket(s); /* never counted: the listener only adopts successes */
      op->u.accept.fd = IOC_BAD_FD;
      op->res = err;
      break;
    }
    struct sockaddr *local = NULL, *remote = NULL;
    int llen = 0, rlen = 0;
    iocp_state(core)->accept_ex_sockaddrs(op->u.accept.slot->acceptex_buf, 0, (DWORD)IOCP_ADDR_SPACE,
                                          (DWORD)IOCP_ADDR_SPACE, &local, &llen, &remote, &rlen);
    memset(&op->u.accept.slot->addr, 0, sizeof op->u.accept.slot->addr);
    if (!pending && remote && rlen > 0 && (size_t)rlen <= sizeof op->u.accept.slot->addr.u.bytes) {
      memcpy(op->u.accept.slot->addr.u.bytes, remote, (size_t)rlen);
      op->u.accept.slot->addr.len = (uint32_t)rlen;
    } else {
      ioc__socket_peer_addr(s, &op->u.accept.slot->addr);
    }
    op->u.accept.slot->addrlen = op->u.accept.slot->addr.len;
    op->res = 0;
    break;
  }
  case IOC__OP_CONNECT:
    if (!err && setsockopt(op->handle->fd, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0) != 0)
      err = ioc__socket_error();
    op->res = err;
    break;
  case IOC__OP_SEND:
    /* pairs with submit_send: its flag is visible to the owner after this */
    ioc__spin_lock(&iocp_h(op->handle)->lock);
    ioc__spin_unlock(&iocp_h(op->handle)->lock);
    op->res = err ? err : cqe->res;
    break;
  case IOC__OP_RECV:
    if (pending) err = 0; /* finish_recv's non-blocking recv() tells what is there */
    if (err) {
      op->res = err;
    } else if (!finish_recv(op, &heap)) {
      return 0;
    }
    break;
  default:
    op->res = err ? err : cqe->res;
    break;
  }

  bool tls = op->type == IOC__OP_RECV && op->u.recv.buf == iocp_recv_buf;
  if (tls) iocp_recv_buf_busy = 1;
  ioc__op_complete(core, op);
  if (tls) iocp_recv_buf_busy = 0;
  free(heap);
  return 1;
}

/* Nothing is deferred with ioc__core_defer_backend here; complete anything that is. */
static void iocp_run_deferred(ioc_core_t *core, ioc__op_t *op) { ioc__op_complete(core, op); }

/* Makes one thread blocked in wait() return. */
/* The port is the core's one loop: nothing per loop to set up. */
static int iocp_loop_init(ioc_core_t *core, ioc__loop_t *loop) {
  IOC__UNUSED(core);
  loop->bl = iocp_state(core);
  return 0;
}

static void iocp_loop_destroy(ioc_core_t *core, ioc__loop_t *loop) {
  IOC__UNUSED(core);
  loop->bl = NULL;
}

static void iocp_wake(ioc_core_t *core, ioc__loop_t *loop) {
  IOC__UNUSED(loop);
  PostQueuedCompletionStatus(iocp_state(core)->port, 0, 0, NULL);
}

const ioc__backend_t ioc__backend_iocp = {
    .name = "iocp",
    .kind = IOC_BACKEND_IOCP,
    .single_waiter = false,
    .pinned_submit = false,
    .probe = iocp_probe,
    .init = iocp_init,
    .destroy = iocp_destroy,
    .loop_init = iocp_loop_init,
    .loop_destroy = iocp_loop_destroy,
    .add = iocp_add,
    .del = iocp_del,
    .submit = iocp_submit,
    .cancel = iocp_cancel,
    .wait = iocp_wait,
    .complete = iocp_complete,
    .run_deferred = iocp_run_deferred,
    .wake = iocp_wake,
    .flush = NULL,
};

#else
typedef int ioc__iocp_unused_t; /* not Windows: no IOCP backend */
#endif /* _WIN32 */
