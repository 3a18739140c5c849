/* Socket helpers shared by listeners, sessions and backends, and the one
 * place where platform error numbers become IOC_E* codes.
 *
 * Every socket the core opens (ioc__socket_open) or takes over from accept
 * (ioc__socket_adopt) is counted in stats.sockets until ioc__socket_close,
 * so a test can check that none is left behind.
 *
 * Defaults deliberately left alone: IPV6_V6ONLY keeps the system default
 * (Linux: dual-stack unless net.ipv6.bindv6only=1; Windows: IPv6 only), so
 * "[::]:80" means what it means to every other program on the machine.
 * SIGPIPE: Linux has no SO_NOSIGPIPE; the backends send with MSG_NOSIGNAL.
 * Windows has no SIGPIPE. */
#ifndef _WIN32
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* SOCK_NONBLOCK, SOCK_CLOEXEC */
#endif
#endif

#include "internal.h"
#include "address.h"

#include <string.h>

#ifdef _WIN32
#ifndef WSA_FLAG_NO_HANDLE_INHERIT
#define WSA_FLAG_NO_HANDLE_INHERIT 0x80
#endif
typedef int ioc__socklen_t;
#define IOC__SHUT_WR SD_SEND
#else
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
typedef socklen_t ioc__socklen_t;
#define IOC__SHUT_WR SHUT_WR
#endif

/* ---- errors ----------------------------------------------------------------- */

/* True when code is one of the IOC_E* values of IOC_ERRNO_MAP. */
static bool ioc__is_known_code(int code) {
  switch (code) {
#define IOC__ERR_CASE(name, value, text) case IOC_##name:
    IOC_ERRNO_MAP(IOC__ERR_CASE)
#undef IOC__ERR_CASE
    return true;
  default:
    return false;
  }
}

#ifndef _WIN32

/* errno -> IOC_E*. The table's values are -errno on Linux, so a known errno
 * maps to itself negated; any other errno becomes IOC_EUNKNOWN so that
 * ioc_err_name() always has a name for what we return. 0 stays 0, and a
 * value that already is an IOC_E* code (negative) is returned unchanged. */
int ioc__translate_error(int sys_error) {
  if (sys_error == 0)
    return 0;
  int code = sys_error > 0 ? -sys_error : sys_error;
  return ioc__is_known_code(code) ? code : IOC_EUNKNOWN;
}

int ioc__socket_error(void) {
  return ioc__translate_error(errno);
}

#else /* _WIN32 */

/* Win32 error numbers (ERROR_*, also returned by GetOverlappedResult), WSA
 * codes (WSAE*), and the NTSTATUS values that GetQueuedCompletionStatusEx
 * leaves in OVERLAPPED.Internal -> IOC_E*. Anything else becomes
 * IOC_EUNKNOWN; 0 stays 0; an IOC_E* code passes through unchanged (NTSTATUS
 * errors are far below -4095, so the two ranges cannot be confused). */
int ioc__translate_error(int sys_error) {
  switch ((unsigned long)(unsigned int)sys_error) {
  case 0: return 0;

  /* Winsock */
  case WSAEINTR: return IOC_EINTR;
  case WSAEBADF: return IOC_EBADF;
  case WSAEACCES: return IOC_EACCES;
  case WSAEFAULT: return IOC_EFAULT;
  case WSAEINVAL: return IOC_EINVAL;
  case WSAEMFILE: return IOC_EMFILE;
  case WSAEWOULDBLOCK: return IOC_EAGAIN;
  case WSAEINPROGRESS: return IOC_EINPROGRESS;
  case WSAEALREADY: return IOC_EALREADY;
  case WSAENOTSOCK: return IOC_ENOTSOCK;
  case WSAEDESTADDRREQ: return IOC_EINVAL;
  case WSAEMSGSIZE: return IOC_EMSGSIZE;
  case WSAEPROTOTYPE: return IOC_EPROTONOSUPPORT;
  case WSAENOPROTOOPT: return IOC_EINVAL;
  case WSAEPROTONOSUPPORT: return IOC_EPROTONOSUPPORT;
  case WSAESOCKTNOSUPPORT: return IOC_EPROTONOSUPPORT;
  case WSAEOPNOTSUPP: return IOC_EOPNOTSUPP;
  case WSAEPFNOSUPPORT: return IOC_EAFNOSUPPORT;
  case WSAEAFNOSUPPORT: return IOC_EAFNOSUPPORT;
  case WSAEADDRINUSE: return IOC_EADDRINUSE;
  case WSAEADDRNOTAVAIL: return IOC_EADDRNOTAVAIL;
  case WSAENETDOWN: return IOC_ENETDOWN;
  case WSAENETUNREACH: return IOC_ENETUNREACH;
  case WSAENETRESET: return IOC_ECONNRESET;
  case WSAECONNABORTED: return IOC_ECONNABORTED;
  case WSAECONNRESET: return IOC_ECONNRESET;
  case WSAENOBUFS: return IOC_ENOBUFS;
  case WSAEISCONN: return IOC_EISCONN;
  case WSAENOTCONN: return IOC_ENOTCONN;
  case WSAESHUTDOWN: return IOC_ESHUTDOWN;
  case WSAETIMEDOUT: return IOC_ETIMEDOUT;
  case WSAECONNREFUSED: return IOC_ECONNREFUSED;
  case WSAEHOSTDOWN: return IOC_EHOSTUNREACH;
  case WSAEHOSTUNREACH: return IOC_EHOSTUNREACH;
  case WSAEDISCON: return IOC_EOF;
  case WSAEPROCLIM: return IOC_EMFILE;
  case WSAENOMORE: return IOC_EOF;
  case WSAECANCELLED: return IOC_ECANCELED;
  case WSA_E_CANCELLED: return IOC_ECANCELED;
  case WSASYSCALLFAILURE: return IOC_EIO;

  /* Win32 (WSA_OPERATION_ABORTED, WSA_IO_PENDING, WSA_INVALID_HANDLE,
   * WSA_INVALID_PARAMETER and WSA_NOT_ENOUGH_MEMORY are these same numbers) */
  case ERROR_FILE_NOT_FOUND: return IOC_ENOENT;
  case ERROR_PATH_NOT_FOUND: return IOC_ENOENT;
  case ERROR_TOO_MANY_OPEN_FILES: return IOC_EMFILE;
  case ERROR_ACCESS_DENIED: return IOC_EACCES;
  case ERROR_INVALID_HANDLE: return IOC_EBADF;
  case ERROR_NOT_ENOUGH_MEMORY: return IOC_ENOMEM;
  case ERROR_OUTOFMEMORY: return IOC_ENOMEM;
  case ERROR_HANDLE_EOF: return IOC_EOF;
  case ERROR_NOT_SUPPORTED: return IOC_EOPNOTSUPP;
  case ERROR_NETNAME_DELETED: return IOC_ECONNRESET;
  case ERROR_NETWORK_ACCESS_DENIED: return IOC_EACCES;
  case ERROR_INVALID_PARAMETER: return IOC_EINVAL;
  case ERROR_BROKEN_PIPE: return IOC_EPIPE;
  case ERROR_CALL_NOT_IMPLEMENTED: return IOC_ENOSYS;
  case ERROR_SEM_TIMEOUT: return IOC_ETIMEDOUT;
  case ERROR_INSUFFICIENT_BUFFER: return IOC_ENOBUFS;
  case ERROR_BUSY: return IOC_EBUSY;
  case ERROR_ALREADY_EXISTS: return IOC_EEXIST;
  case ERROR_NO_DATA: return IOC_EPIPE;
  case ERROR_PIPE_NOT_CONNECTED: return IOC_ENOTCONN;
  case WAIT_TIMEOUT: return IOC_ETIMEDOUT;
  case ERROR_OPERATION_ABORTED: return IOC_ECANCELED;
  case ERROR_IO_INCOMPLETE: return IOC_EAGAIN;
  case ERROR_IO_PENDING: return IOC_EINPROGRESS;
  case ERROR_INVALID_NETNAME: return IOC_EADDRNOTAVAIL;
  case ERROR_CANCELLED: return IOC_ECANCELED;
  case ERROR_CONNECTION_REFUSED: return IOC_ECONNREFUSED;
  case ERROR_GRACEFUL_DISCONNECT: return IOC_EPIPE;
  case ERROR_ADDRESS_ALREADY_ASSOCIATED: return IOC_EADDRINUSE;
  case ERROR_CONNECTION_INVALID: return IOC_ENOTCONN;
  case ERROR_CONNECTION_ACTIVE: return IOC_EISCONN;
  case ERROR_NETWORK_UNREACHABLE: return IOC_ENETUNREACH;
  case ERROR_HOST_UNREACHABLE: return IOC_EHOSTUNREACH;
  case ERROR_PROTOCOL_UNREACHABLE: return IOC_ENETUNREACH;
  case ERROR_PORT_UNREACHABLE: return IOC_ECONNREFUSED;
  case ERROR_REQUEST_ABORTED: return IOC_ECANCELED;
  case ERROR_CONNECTION_ABORTED: return IOC_ECONNABORTED;
  case ERROR_NO_SYSTEM_RESOURCES: return IOC_ENOMEM;
  case ERROR_TIMEOUT: return IOC_ETIMEDOUT;

  /* NTSTATUS, as found in OVERLAPPED.Internal */
  case 0xC0000120UL: return IOC_ECANCELED;      /* STATUS_CANCELLED */
  case 0xC000020DUL: return IOC_ECONNRESET;     /* STATUS_CONNECTION_RESET */
  case 0xC000013BUL: return IOC_ECONNABORTED;   /* STATUS_LOCAL_DISCONNECT */
  case 0xC000013CUL: return IOC_ECONNRESET;     /* STATUS_REMOTE_DISCONNECT */
  case 0xC000020CUL: return IOC_ECONNRESET;     /* STATUS_CONNECTION_DISCONNECTED */
  case 0xC0000236UL: return IOC_ECONNREFUSED;   /* STATUS_CONNECTION_REFUSED */
  case 0xC0000241UL: return IOC_ECONNABORTED;   /* STATUS_CONNECTION_ABORTED */
  case 0xC0000237UL: return IOC_EPIPE;          /* STATUS_GRACEFUL_DISCONNECT */
  case 0xC000023CUL: return IOC_ENETUNREACH;    /* STATUS_NETWORK_UNREACHABLE */
  case 0xC000023DUL: return IOC_EHOSTUNREACH;   /* STATUS_HOST_UNREACHABLE */
  case 0xC000023FUL: return IOC_ECONNREFUSED;   /* STATUS_PORT_UNREACHABLE */
  case 0xC00000B5UL: return IOC_ETIMEDOUT;      /* STATUS_IO_TIMEOUT */
  case 0xC000020AUL: return IOC_EADDRINUSE;     /* STATUS_ADDRESS_ALREADY_EXISTS */
  case 0xC0000207UL: return IOC_EADDRNOTAVAIL;  /* STATUS_INVALID_ADDRESS_COMPONENT */
  case 0xC0000017UL: return IOC_ENOMEM;         /* STATUS_NO_MEMORY */
  case 0xC000009AUL: return IOC_ENOMEM;         /* STATUS_INSUFFICIENT_RESOURCES */
  case 0xC000000DUL: return IOC_EINVAL;         /* STATUS_INVALID_PARAMETER */
  case 0xC0000008UL: return IOC_EBADF;          /* STATUS_INVALID_HANDLE */
  case 0xC0000022UL: return IOC_EACCES;         /* STATUS_ACCESS_DENIED */
  case 0xC00000B0UL: return IOC_EPIPE;          /* STATUS_PIPE_DISCONNECTED */
  case 0xC0000140UL: return IOC_ENOTCONN;       /* STATUS_INVALID_CONNECTION */
  case 0xC0000023UL: return IOC_ENOBUFS;        /* STATUS_BUFFER_TOO_SMALL */

  default:
    return ioc__is_known_code(sys_error) ? sys_error : IOC_EUNKNOWN;
  }
}

int ioc__socket_error(void) {
  return ioc__translate_error(WSAGetLastError());
}

#endif /* _WIN32 */

/* ---- lifetime ------------------------------------------------------------------ */

/* Opens a TCP socket of family (AF_INET / AF_INET6): non-blocking, not
 * inherited by child processes, and on Windows overlapped so it can be
 * associated with a completion port. Counts it. core may be NULL (not
 * counted). Returns 0 and *out, or a negative code. */
int ioc__socket_open(ioc_core_t *core, int family, ioc_fd_t *out) {
#ifdef _WIN32
  SOCKET s = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, NULL, 0,
                        WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET && WSAGetLastError() == WSAEINVAL) {
    /* Before Windows 7 SP1 the flag is unknown: clear inheritance instead. */
    s = WSASocketW(family, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
    if (s != INVALID_SOCKET)
      SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
  }
  if (s == INVALID_SOCKET)
    return ioc__socket_error();
  int rc = ioc__socket_set_nonblock(s);
  if (rc != 0) {
    closesocket(s);
    return rc;
  }
#else
  int s = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 family == AF_UNIX ? 0 : IPPROTO_TCP);
  if (s < 0)
    return ioc__socket_error();
#endif
  if (core != NULL)
    IOC__STAT_ADD(core, sockets, 1);
  *out = s;
  return 0;
}

/* Counts a socket the kernel made for us (accept). core may be NULL. */
void ioc__socket_adopt(ioc_core_t *core, ioc_fd_t fd) {
  if (core != NULL && fd != IOC_BAD_FD)
    IOC__STAT_ADD(core, sockets, 1);
}

/* Closes a counted socket and uncounts it. Returns 0 or the error close
 * reported. On Linux the descriptor is released even when close() fails
 * (EINTR, EIO), so it is never retried: a retry could close a descriptor
 * another thread has just been given. EINTR therefore counts as success
 * there. EBADF means the descriptor was not open: it was not ours to
 * uncount, and the caller has a double close to fix. */
int ioc__socket_close(ioc_core_t *core, ioc_fd_t fd) {
  if (fd == IOC_BAD_FD)
    return IOC_EBADF;
  int rc = 0;
#ifdef _WIN32
  if (closesocket(fd) != 0)
    rc = ioc__socket_error();
  if (rc == IOC_ENOTSOCK)
    rc = IOC_EBADF;
#else
  if (close(fd) != 0 && errno != EINTR)
    rc = ioc__socket_error();
#endif
  if (core != NULL && rc != IOC_EBADF)
    IOC__STAT_SUB(core, sockets, 1);
  return rc;
}

void ioc__socket_close_handle(ioc_core_t *core, ioc__handle_t *h) {
  if (core->backend->close && core->backend->close(core, h)) {
    IOC__STAT_SUB(core, sockets, 1); /* the backend closes it: no longer ours */
    return;
  }
  core->backend->del(core, h);
  ioc__socket_close(core, h->fd);
}

/* ---- options --------------------------------------------------------------------- */

static int ioc__setsockopt_int(ioc_fd_t fd, int level, int name, int value) {
#ifdef _WIN32
  BOOL v = value ? TRUE : FALSE; /* BOOL and DWORD options are both 4 bytes */
  if (setsockopt(fd, level, name, (const char *)&v, (int)sizeof v) != 0)
    return ioc__socket_error();
#else
  if (setsockopt(fd, level, name, &value, sizeof value) != 0)
    return ioc__socket_error();
#endif
  return 0;
}

int ioc__socket_set_nonblock(ioc_fd_t fd) {
#ifdef _WIN32
  u_long on = 1;
  if (ioctlsocket(fd, FIONBIO, &on) != 0)
    return ioc__socket_error();
#else
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0)
    return ioc__socket_error();
  if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return ioc__socket_error();
#endif
  return 0;
}

/* POSIX: lets a listener rebind while old connections sit in TIME_WAIT.
 * Windows: a no-op on purpose. There SO_REUSEADDR lets a second socket bind
 * the very same port and steal connections (and hides EADDRINUSE), while
 * binding past TIME_WAIT already works without it (as libuv does). */
int ioc__socket_set_reuseaddr(ioc_fd_t fd) {
#ifdef _WIN32
  IOC__UNUSED(fd);
  return 0;
#else
  return ioc__setsockopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
#endif
}

/* SO_REUSEPORT (Linux 3.9+): several listeners on one port, the kernel
 * spreading connections over them. IOC_EOPNOTSUPP where it does not exist. */
int ioc__socket_set_reuseport(ioc_fd_t fd) {
#if defined(SO_REUSEPORT) && !defined(_WIN32)
  return ioc__setsockopt_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
#else
  IOC__UNUSED(fd);
  return IOC_EOPNOTSUPP;
#endif
}

int ioc__socket_set_nodelay(ioc_fd_t fd) {
  return ioc__setsockopt_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
}

static int ioc__set_linger(ioc_fd_t fd, int onoff) {
  struct linger l;
  memset(&l, 0, sizeof l);
  l.l_onoff = onoff;
  l.l_linger = 0;
#ifdef _WIN32
  if (setsockopt(fd, SOL_SOCKET, SO_LINGER, (const char *)&l, (int)sizeof l) != 0)
#else
  if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l) != 0)
#endif
    return ioc__socket_error();
  return 0;
}

int ioc__socket_set_linger_off(ioc_fd_t fd) {
  return ioc__set_linger(fd, 0);
}

int ioc__socket_set_linger_rst(ioc_fd_t fd) {
  return ioc__set_linger(fd, 1);
}

/* ---- addresses and state ----------------------------------------------------------- */

int ioc__socket_bind(ioc_fd_t fd, const ioc_addr_t *addr) {
  struct sockaddr_storage ss;
  int len = addr ? ioc__addr_sockaddr(addr, &ss, sizeof ss) : IOC_EINVAL;
  if (len < 0)
    return len;
  if (bind(fd, (const struct sockaddr *)&ss, (ioc__socklen_t)len) != 0)
    return ioc__socket_error();
  return 0;
}

/* connect(2) now, for a unix-domain socket: it completes at once (or
 * fails: ENOENT, ECONNREFUSED, EAGAIN when the listener's backlog is
 * full), so it needs no operation. Returns 0 or a negative code. */
int ioc__socket_connect_now(ioc_fd_t fd, const ioc_addr_t *addr) {
  struct sockaddr_storage ss;
  int len = ioc__addr_sockaddr(addr, &ss, sizeof ss);
  if (len < 0)
    return len;
  int rc;
  do rc = connect(fd, (const struct sockaddr *)&ss, (ioc__socklen_t)len);
#ifdef _WIN32
  while (0);
#else
  while (rc != 0 && errno == EINTR);
#endif
  return rc == 0 ? 0 : ioc__socket_error();
}

int ioc__socket_listen(ioc_fd_t fd, int backlog) {
  if (listen(fd, backlog) != 0)
    return ioc__socket_error();
  return 0;
}

int ioc__socket_shutdown_write(ioc_fd_t fd) {
  if (shutdown(fd, IOC__SHUT_WR) != 0)
    return ioc__socket_error();
  return 0;
}

/* Copies a sockaddr the kernel filled into an ioc_addr_t: IPv4, IPv6, or
 * unix-domain (its path kept by address.c); anything else is
 * IOC_EAFNOSUPPORT. */
static int ioc__addr_from_storage(const struct sockaddr_storage *ss, ioc__socklen_t len,
                                  ioc_addr_t *out) {
  size_t want;
  if (ss->ss_family == AF_UNIX)
    return ioc__addr_from_unix(out, ss, (size_t)len);
  if (ss->ss_family == AF_INET)
    want = sizeof(struct sockaddr_in);
  else if (ss->ss_family == AF_INET6)
    want = sizeof(struct sockaddr_in6);
  else
    return IOC_EAFNOSUPPORT;
  if ((size_t)len < want)
    return IOC_EINVAL;
  memset(out, 0, sizeof *out);
  memcpy(out->u.bytes, ss, want);
  out->len = (uint32_t)want;
  return 0;
}

int ioc__socket_local_addr(ioc_fd_t fd, ioc_addr_t *out) {
  struct sockaddr_storage ss;
  ioc__socklen_t len = (ioc__socklen_t)sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return ioc__socket_error();
  return ioc__addr_from_storage(&ss, len, out);
}

int ioc__socket_peer_addr(ioc_fd_t fd, ioc_addr_t *out) {
  struct sockaddr_storage ss;
  ioc__socklen_t len = (ioc__socklen_t)sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
    return ioc__socket_error();
  return ioc__addr_from_storage(&ss, len, out);
}
