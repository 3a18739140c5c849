/* What the kernel knows about a connection's send side, for the time-out
 * sweep (timeout.c): how many bytes the peer has acknowledged so far, in
 * all (Linux TCP_INFO tcpi_bytes_acked, 4.1 and later), and how many it
 * still holds for the peer (SIOCOUTQ). Kept apart from socket.c because
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

int ioc__socket_send_state(ioc_fd_t fd, uint64_t *acked) {
#ifdef __linux__
  int q = 0;
  if (ioctl(fd, SIOCOUTQ, &q) != 0) return ioc__socket_error();
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  *acked = UINT64_MAX; /* unknown */
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
      len >= offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked)
    *acked = ti.tcpi_bytes_acked;
  return q < 0 ? 0 : q;
#else
  IOC__UNUSED(fd);
  *acked = UINT64_MAX;
  return IOC_ENOSYS;
#endif
}
