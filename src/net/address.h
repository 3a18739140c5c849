/* Unix-domain addresses inside ioc_addr_t (net/address.c): the path is
 * kept once per process and the address points at it. */
#ifndef IOC_ADDRESS_H
#define IOC_ADDRESS_H

#include <stddef.h>

#include "iocore.h"

/* The path of a unix address (NULL: unnamed, or not a unix address). */
const char *ioc__addr_unix_path(const ioc_addr_t *a);
/* Writes the struct sockaddr the address stands for (a sockaddr_un for a
 * unix one) into sa (cap bytes); returns its length or IOC_EINVAL. */
int ioc__addr_sockaddr(const ioc_addr_t *a, void *sa, size_t cap);
/* A unix address from a struct sockaddr_un of len bytes the kernel gave
 * (accept, getsockname, getpeername). An unnamed (or abstract) one is
 * "unix:". IOC_ENOMEM (and *out unnamed) when its path cannot be kept. */
int ioc__addr_from_unix(ioc_addr_t *out, const void *sa, size_t len);

#endif /* IOC_ADDRESS_H */
