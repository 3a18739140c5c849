/* What the kernel knows about a connection's send side, for the time-out
 * sweep (timeout.c): how many bytes the peer has acknowledged so far, in
 * all (Linux TCP_INFO tcpi_bytes_acked, 4.1 and later), and how many it
 * still holds for the peer (SIOCOUTQ). Windows: SIO_TCP_INFO where the
 * stack has it (Windows 10 1703 and later; not wine 8, where the IOCP
 * tests run, so that path is untested here); else not known. Kept apart from socket.c because
 * <linux/tcp.h>, which has the newer tcp_info fields, clashes with
 * <netinet/tcp.h>. */
#include "net.h"

#ifdef __linux__
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#endif
#ifdef _WIN32
/* _WSAIORW(IOC_VENDOR, 39) */
#define IOC__SIO_TCP_INFO 0xD8000027u
#endif

int ioc__socket_send_state(ioc_fd_t fd, uint64_t *acked) {
#ifdef __linux__
  int q = 0;
  if (ioctl(fd, SIOCOUTQ, &q) != 0) return ioc__socket_error();
  if (!acked) return q < 0 ? 0 : q; /* the queue alone: one syscall */
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  *acked = UINT64_MAX; /* unknown */
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
      len >= offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked)
    *acked = ti.tcpi_bytes_acked;
  return q < 0 ? 0 : q;
#elif defined(_WIN32)
  /* SIO_TCP_INFO (Windows 10 1703 and later) with the documented version-0
   * layout of TCP_INFO_v0, spelled out because mingw-w64 only declares it
   * for newer targets than ours. */
  struct {
    int State;
    ULONG Mss;
    ULONG64 ConnectionTimeMs;
    BOOLEAN TimestampsEnabled;
    ULONG RttUs, MinRttUs, BytesInFlight, Cwnd, SndWnd, RcvWnd, RcvBuf;
    ULONG64 BytesOut, BytesIn;
    ULONG BytesReordered, BytesRetrans, FastRetrans, DupAcksIn, TimeoutEpisodes;
    UCHAR SynRetrans;
  } ti;
  static atomic_int unsupported; /* asked once in vain: do not ask again */
  DWORD version = 0, got = 0;
  uint64_t ignored;
  if (!acked) acked = &ignored;
  *acked = UINT64_MAX;
  if (atomic_load_explicit(&unsupported, memory_order_relaxed)) return IOC_ENOSYS;
  if (WSAIoctl(fd, IOC__SIO_TCP_INFO, &version, sizeof version, &ti, sizeof ti, &got, NULL,
               NULL) != 0 ||
      got < sizeof ti) {
    int e = WSAGetLastError();
    if (e == WSAEOPNOTSUPP || e == WSAEINVAL || e == WSAEFAULT || e == 0)
      atomic_store_explicit(&unsupported, 1, memory_order_relaxed);
    return IOC_ENOSYS;
  }
  *acked = ti.BytesOut - ti.BytesInFlight;
  return ti.BytesInFlight > 0x7fffffff ? 0x7fffffff : (int)ti.BytesInFlight;
#else
  IOC__UNUSED(fd);
  if (acked) *acked = UINT64_MAX;
  return IOC_ENOSYS;
#endif
}
