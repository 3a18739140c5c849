/* Internal controls of the resolver (src/net/resolve.c) for tests. The
 * public call, ioc_resolve, is declared in iocore.h. */
#ifndef IOC_RESOLVE_H
#define IOC_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iocore.h"

/* Lookups running getaddrinfo at once, in the whole process; more wait in
 * a queue, first come first served. */
#define IOC__RESOLVE_THREADS 4
/* Addresses handed to the callback at most (the first ones, in the order
 * getaddrinfo gave them, duplicates dropped). */
#define IOC__RESOLVE_MAX_ADDRS 32
/* The longest host name (DNS: 253 characters, a trailing dot aside). */
#define IOC__RESOLVE_NAME_MAX 254

/* Appends the AF_INET / AF_INET6 sockaddr (salen bytes) to addrs[*n] with
 * the port set and flow info cleared; other families, a duplicate, or a
 * full list (IOC__RESOLVE_MAX_ADDRS) leave the list as it is. */
void ioc__resolve_collect(ioc_addr_t *addrs, size_t *n, uint16_t port, const void *sockaddr,
                          size_t salen);

/* Tests: while held, resolver threads wait before calling getaddrinfo, so
 * lookups stay in flight until released. */
void ioc__resolve_hold(bool on);
/* Tests: resolver threads alive now (running, held, or exiting). */
int ioc__resolve_threads(void);

#endif /* IOC_RESOLVE_H */
