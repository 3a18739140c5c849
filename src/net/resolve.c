/* Host name resolution that never blocks a worker: ioc_resolve (iocore.h).
 *
 * Why getaddrinfo on a thread rather than c-ares (Debian has
 * libc-ares-dev): getaddrinfo is the system's own resolver, so names
 * resolve exactly as every other program on the machine resolves them —
 * /etc/hosts, nsswitch (files, dns, mdns, myhostname, systemd-resolved),
 * resolv.conf options and search domains, gai.conf address ordering — and
 * on Windows the same call (ws2tcpip.h) follows the Windows resolver. c-ares
 * speaks DNS itself and reads /etc/hosts, but ignores the rest of nsswitch
 * (a container's or a VPN's resolver, LDAP, mdns), would be one more
 * library to build and ship on Windows, and its sockets would have to be
 * driven by every backend. What it would buy — many lookups on few
 * threads, cancellation — matters for a DNS-heavy crawler, not for a server
 * that dials a handful of upstreams: lookups are rare and cached by the
 * system resolver. The cost of the thread is bounded: at most
 * IOC__RESOLVE_THREADS lookups run at once in the process; more wait in a
 * queue.
 *
 * The life of a lookup: ioc_resolve counts it as an operation in flight of
 * the core (stats.ops_inflight) and allocates everything it will need,
 * delivery included; a thread (one per running lookup, started when a slot
 * is free) calls getaddrinfo, hands its slot to the next queued lookup,
 * queues the delivery on the core, and ends. The delivery runs on a
 * dispatching thread: it joins the lookup's thread, calls the callback,
 * frees the lookup, and only then does the count drop. So a core cannot be
 * destroyed while one of its lookups is in flight (ioc_core_destroy says
 * IOC_EBUSY until the callback has run), and no lookup thread ever touches
 * a core or runs library code after the core could be gone. */
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#else
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#endif

#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "resolve.h"

typedef void (*ioc__resolve_cb)(void *ud, int err, const ioc_addr_t *addrs, size_t n);

typedef struct ioc__lookup {
  struct ioc__lookup *next; /* the pool's queue */
  ioc_core_t *core;
  ioc__op_t *op; /* the delivery (an IOC__OP_POST), made up front */
  ioc__resolve_cb cb;
  void *ud;
  ioc__thread_t thread;
  bool has_thread;
  /* Set by whoever queued the delivery, once it no longer touches the core
   * or the lookup; the delivery waits for it before freeing anything. */
  atomic_int handed_off;
  int err;
  uint16_t port;
  size_t n;
  ioc_addr_t addrs[IOC__RESOLVE_MAX_ADDRS];
  char host[IOC__RESOLVE_NAME_MAX + 1];
} ioc__lookup_t;

/* ---- the process-wide pool ---------------------------------------------------- */

static atomic_int ioc__pool_state; /* 0 none, 1 being made, 2 ready */
static ioc__mutex_t ioc__pool_lock;
static ioc__cond_t ioc__pool_cond;
static int ioc__pool_running; /* slots taken (lookup threads alive) */
static bool ioc__pool_held;
static ioc__lookup_t *pool_head, *pool_tail;

static void ioc__yield(void) {
#ifdef _WIN32
  SwitchToThread();
#else
  sched_yield();
#endif
}

/* The pool's lock and condition, made once; never freed (they live as long
 * as the process, like the threads they guard might). */
static void ioc__pool_init(void) {
  if (atomic_load_explicit(&ioc__pool_state, memory_order_acquire) == 2)
    return;
  int expected = 0;
  if (atomic_compare_exchange_strong(&ioc__pool_state, &expected, 1)) {
    ioc__mutex_init(&ioc__pool_lock);
    ioc__cond_init(&ioc__pool_cond);
    atomic_store_explicit(&ioc__pool_state, 2, memory_order_release);
    return;
  }
  while (atomic_load_explicit(&ioc__pool_state, memory_order_acquire) != 2)
    ioc__yield();
}

void ioc__resolve_hold(bool on) {
  ioc__pool_init();
  ioc__mutex_lock(&ioc__pool_lock);
  ioc__pool_held = on;
  ioc__mutex_unlock(&ioc__pool_lock);
  if (!on)
    ioc__cond_broadcast(&ioc__pool_cond);
}

int ioc__resolve_threads(void) {
  ioc__pool_init();
  ioc__mutex_lock(&ioc__pool_lock);
  int n = ioc__pool_running;
  ioc__mutex_unlock(&ioc__pool_lock);
  return n;
}

/* ---- delivery ---------------------------------------------------------------- */

/* Runs on a dispatching thread of the lookup's core (an IOC__OP_POST). */
static void ioc__deliver(void *arg) {
  ioc__lookup_t *l = arg;
  while (!atomic_load_explicit(&l->handed_off, memory_order_acquire))
    ioc__yield(); /* the queuing thread is between the queue and its last store */
  if (l->has_thread)
    ioc__thread_join(l->thread); /* it ended right after handing off */
  l->cb(l->ud, l->err, l->err ? NULL : l->addrs, l->err ? 0 : l->n);
  free(l);
}

/* Queues the delivery; touches neither l nor its core afterwards. */
static void ioc__hand_off(ioc__lookup_t *l) {
  ioc__op_t *op = l->op;
  ioc__op_init(op, IOC__OP_POST, NULL, NULL);
  op->u.post.fn = ioc__deliver;
  op->u.post.arg = l;
  ioc__core_defer(l->core, op);
  atomic_store_explicit(&l->handed_off, 1, memory_order_release);
}

/* ---- the lookup ---------------------------------------------------------------- */

static int ioc__gai_error(int rc) {
  /* if-chains, not a switch: on Windows several EAI_ names share a value */
  if (rc == EAI_NONAME)
    return IOC_ENOTFOUND;
#if defined(EAI_NODATA)
  if (rc == EAI_NODATA)
    return IOC_ENOTFOUND;
#endif
#if defined(EAI_ADDRFAMILY)
  if (rc == EAI_ADDRFAMILY)
    return IOC_ENOTFOUND;
#endif
  if (rc == EAI_AGAIN)
    return IOC_EAGAIN;
  if (rc == EAI_MEMORY)
    return IOC_ENOMEM;
  if (rc == EAI_FAMILY)
    return IOC_EAFNOSUPPORT;
#if defined(EAI_SYSTEM)
  if (rc == EAI_SYSTEM)
    return ioc__translate_error(errno);
#endif
  if (rc == EAI_FAIL)
    return IOC_EIO;
  return IOC_EINVAL; /* EAI_SERVICE, EAI_SOCKTYPE, EAI_BADFLAGS: our call was wrong */
}

void ioc__resolve_collect(ioc_addr_t *addrs, size_t *n, uint16_t port, const void *sockaddr,
                          size_t salen) {
  const struct sockaddr *sa = sockaddr;
  ioc_addr_t a;
  memset(&a, 0, sizeof a);
  if (sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in)) {
    struct sockaddr_in sin;
    memcpy(&sin, sa, sizeof sin);
    sin.sin_port = htons(port);
    memset(sin.sin_zero, 0, sizeof sin.sin_zero);
    memcpy(a.u.bytes, &sin, sizeof sin);
    a.len = (uint32_t)sizeof sin;
  } else if (sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 sin6;
    memcpy(&sin6, sa, sizeof sin6);
    sin6.sin6_port = htons(port);
    sin6.sin6_flowinfo = 0;
    memcpy(a.u.bytes, &sin6, sizeof sin6);
    a.len = (uint32_t)sizeof sin6;
  } else {
    return;
  }
  for (size_t i = 0; i < *n; i++)
    if (memcmp(&addrs[i], &a, sizeof a) == 0)
      return;
  if (*n < IOC__RESOLVE_MAX_ADDRS)
    addrs[(*n)++] = a;
}

static void ioc__add_addr(ioc__lookup_t *l, const struct sockaddr *sa, size_t salen) {
  ioc__resolve_collect(l->addrs, &l->n, l->port, sa, salen);
}

static void ioc__lookup_run(ioc__lookup_t *l) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  /* No AI_ADDRCONFIG: glibc leaves loopback out when it decides which
   * families are configured, so "localhost" would not resolve on a machine
   * that has only loopback. */
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  int rc = getaddrinfo(l->host, NULL, &hints, &res);
  if (rc != 0) {
    l->err = ioc__gai_error(rc);
    return;
  }
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
    if (ai->ai_addr != NULL)
      ioc__add_addr(l, ai->ai_addr, (size_t)ai->ai_addrlen);
  freeaddrinfo(res);
  l->err = l->n ? 0 : IOC_ENOTFOUND;
}

static void ioc__lookup_thread(void *arg);

/* Under the pool lock: starts a thread for l in a slot already counted.
 * 0, or the error (l then has no thread). */
static int ioc__start_locked(ioc__lookup_t *l) {
  int rc = ioc__thread_create(&l->thread, ioc__lookup_thread, l);
  l->has_thread = rc == 0;
  return rc;
}

static void ioc__lookup_thread(void *arg) {
  ioc__lookup_t *l = arg;
  /* Taking the lock once also makes sure l->thread was stored by the
   * thread that started this one. */
  ioc__mutex_lock(&ioc__pool_lock);
  while (ioc__pool_held)
    ioc__cond_wait(&ioc__pool_cond, &ioc__pool_lock);
  ioc__mutex_unlock(&ioc__pool_lock);

  ioc__lookup_run(l);

  /* Hand the slot to the next queued lookup. One whose thread cannot be
   * made fails (IOC_EAGAIN-like) rather than wait for a slot that might
   * never free. */
  ioc__lookup_t *failed = NULL;
  ioc__mutex_lock(&ioc__pool_lock);
  for (;;) {
    ioc__lookup_t *next = pool_head;
    if (next == NULL) {
      ioc__pool_running--;
      break;
    }
    pool_head = next->next;
    if (pool_head == NULL)
      pool_tail = NULL;
    next->next = NULL;
    int rc = ioc__start_locked(next);
    if (rc == 0)
      break;
    next->err = rc;
    next->next = failed;
    failed = next;
  }
  ioc__mutex_unlock(&ioc__pool_lock);
  while (failed != NULL) {
    ioc__lookup_t *f = failed;
    failed = f->next;
    ioc__hand_off(f);
  }
  ioc__hand_off(l); /* last: l and its core are not ours after this */
}

/* ---- parsing the name ---------------------------------------------------------------- */

/* Splits "host", "host:port", "[v6]:port", "[v6]" or a bare IPv6 literal.
 * 0, or -1 when malformed. */
static int ioc__split(const char *name, size_t len, const char **host, size_t *hlen,
                      uint16_t *port) {
  const char *end = name + len, *ps = NULL;
  *port = 0;
  if (name[0] == '[') {
    const char *close = memchr(name, ']', len);
    if (close == NULL)
      return -1;
    *host = name + 1;
    *hlen = (size_t)(close - name - 1);
    if (close + 1 != end) {
      if (close[1] != ':')
        return -1;
      ps = close + 2;
    }
  } else {
    const char *colon = memchr(name, ':', len);
    int more = colon != NULL && memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL;
    *host = name;
    *hlen = colon != NULL && !more ? (size_t)(colon - name) : len;
    if (colon != NULL && !more)
      ps = colon + 1;
  }
  if (ps != NULL) {
    size_t pl = (size_t)(end - ps);
    if (pl == 0 || pl > 5 || (ps[0] == '0' && pl > 1))
      return -1;
    uint32_t v = 0;
    for (size_t i = 0; i < pl; i++) {
      if (ps[i] < '0' || ps[i] > '9')
        return -1;
      v = v * 10 + (uint32_t)(ps[i] - '0');
    }
    if (v > 65535)
      return -1;
    *port = (uint16_t)v;
  }
  if (*hlen == 0 || *hlen > IOC__RESOLVE_NAME_MAX)
    return -1;
  for (size_t i = 0; i < *hlen; i++) {
    unsigned char c = (unsigned char)(*host)[i];
    if (c <= ' ' || c == 0x7f || c == '[' || c == ']' || c == '/' || c == '\\')
      return -1;
  }
  return 0;
}

/* An IP literal (not "localhost", which the system resolver answers):
 * fills l->addrs and says 1, else 0. */
static int ioc__literal(ioc__lookup_t *l, size_t hlen) {
  char text[IOC__RESOLVE_NAME_MAX + 16];
  int v6 = memchr(l->host, ':', hlen) != NULL;
  if (!v6 && hlen == 9 && (l->host[0] == 'l' || l->host[0] == 'L'))
    return 0; /* cheap: ioc_addr_parse would take "localhost" as 127.0.0.1 */
  size_t n = 0;
  if (v6)
    text[n++] = '[';
  memcpy(text + n, l->host, hlen);
  n += hlen;
  if (v6)
    text[n++] = ']';
  text[n++] = ':';
  text[n++] = '0';
  ioc_addr_t a;
  if (ioc_addr_parse(&a, text, n) != 0)
    return 0;
  if (a.u.family == AF_INET) {
    struct sockaddr_in sin;
    memcpy(&sin, a.u.bytes, sizeof sin);
    ioc__add_addr(l, (const struct sockaddr *)&sin, sizeof sin);
  } else {
    struct sockaddr_in6 sin6;
    memcpy(&sin6, a.u.bytes, sizeof sin6);
    ioc__add_addr(l, (const struct sockaddr *)&sin6, sizeof sin6);
  }
  return 1;
}

/* ---- public ---------------------------------------------------------------------- */

int ioc_resolve(ioc_core_t *core, const char *name, size_t len,
                void (*cb)(void *ud, int err, const ioc_addr_t *addrs, size_t n), void *ud) {
  if (core == NULL || name == NULL || cb == NULL || len == 0 || memchr(name, '\0', len) != NULL)
    return IOC_EINVAL;
  const char *host;
  size_t hlen;
  uint16_t port;
  if (ioc__split(name, len, &host, &hlen, &port) != 0)
    return IOC_EINVAL;

  ioc__lookup_t *l = calloc(1, sizeof *l);
  ioc__op_t *op = malloc(sizeof *op);
  if (l == NULL || op == NULL) {
    free(l);
    free(op);
    return IOC_ENOMEM;
  }
  l->core = core;
  l->op = op;
  l->cb = cb;
  l->ud = ud;
  l->port = port;
  memcpy(l->host, host, hlen);
  l->host[hlen] = '\0';
  atomic_init(&l->handed_off, 0);
  /* The delivery op's count, dropped by ioc__op_complete once it ran. */
  IOC__STAT_ADD(core, ops_inflight, 1);

  if (ioc__literal(l, hlen)) {
    ioc__hand_off(l); /* no thread for "1.2.3.4" or "::1" */
    return 0;
  }

  ioc__pool_init();
  ioc__mutex_lock(&ioc__pool_lock);
  int rc = 0;
  if (ioc__pool_running < IOC__RESOLVE_THREADS) {
    rc = ioc__start_locked(l);
    if (rc == 0)
      ioc__pool_running++;
    else if (ioc__pool_running > 0)
      rc = 1; /* queue it: a running lookup will start it */
  } else {
    rc = 1;
  }
  if (rc == 1) {
    if (pool_tail)
      pool_tail->next = l;
    else
      pool_head = l;
    pool_tail = l;
    rc = 0;
  }
  ioc__mutex_unlock(&ioc__pool_lock);
  if (rc != 0) {
    IOC__STAT_SUB(core, ops_inflight, 1);
    free(op);
    free(l);
    return rc;
  }
  return 0;
}
