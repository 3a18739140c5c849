/* Fault injection inside the backends, for tests (docs/fault-injection.md).
 *
 * strace -e inject cannot reach io_uring operations (the kernel performs
 * them without a system call per operation), so the backends inject faults
 * themselves, at the points where a kernel result enters the core, before
 * the owner sees it. Every fault injected is one the real system can give
 * at that point, so a failure found with it is a real bug:
 *
 *   short_write  a SEND writes a prefix of what it was given (the kernel is
 *                handed a shorter buffer list: nothing is lost or repeated)
 *   eagain       "not ready": the operation stays pending and completes later
 *   eintr        "interrupted": retried (epoll), re-submitted (io_uring)
 *   econnreset   RECV/SEND fail with ECONNRESET, ACCEPT with ECONNABORTED
 *   enomem       submit fails with ENOMEM (the owner's error path), ACCEPT
 *                fails with ENOMEM (the connection stays in the backlog)
 *
 * Configured once per core from the environment at ioc_core_create():
 *   IOCORE_FAULTS="short_write=0.05,eagain=0.02,eintr=0.02,seed=42"
 * (rates are probabilities per opportunity, 0..1; unset or "" = off), or by
 * tests through ioc__faults_configure(). Compiled in always; when off a
 * site costs one relaxed load of core->faults.on and a branch predicted
 * not taken. Each thread draws from its own PRNG, seeded from the seed and
 * the order in which threads first draw, so a single-threaded run is
 * reproducible. Counts per kind are logged when the core is destroyed. */
#ifndef IOC_FAULT_H
#define IOC_FAULT_H

#include "iocore.h"
#include "platform.h"

typedef enum ioc__fault_kind {
  IOC__FAULT_SHORT_WRITE = 0,
  IOC__FAULT_EAGAIN,
  IOC__FAULT_EINTR,
  IOC__FAULT_ECONNRESET,
  IOC__FAULT_ENOMEM,
  IOC__FAULT_KINDS
} ioc__fault_kind_t;

typedef struct ioc__faults {
  atomic_int on;                                /* any rate above 0 */
  atomic_bool ever;                             /* configured at some point: report at destroy */
  atomic_uint_fast64_t thresh[IOC__FAULT_KINDS]; /* rate * 2^32; a draw below it hits */
  atomic_uint_fast64_t seed;
  atomic_uint_fast64_t gen;                     /* unique per configuration: thread PRNGs reseed */
  atomic_uint threads;                          /* threads that drew under this configuration */
  atomic_uint_fast64_t count[IOC__FAULT_KINDS]; /* injected so far */
} ioc__faults_t;

/* The hot-path test: false (one relaxed load, a predicted branch) when off. */
#define IOC__FAULTS_ON(core) \
  IOC__UNLIKELY(atomic_load_explicit(&(core)->faults.on, memory_order_relaxed) != 0)
/* True if a fault of this kind is to be injected now (and counts it). */
#define IOC__FAULT(core, kind) (IOC__FAULTS_ON(core) && ioc__fault_roll(&(core)->faults, (kind)))

/* Draws once for kind; true (and counted) on a hit. */
bool ioc__fault_roll(ioc__faults_t *f, ioc__fault_kind_t kind);
/* A uniform draw in [0, n) from the calling thread's PRNG (n > 0). */
uint64_t ioc__fault_below(ioc__faults_t *f, uint64_t n);
const char *ioc__fault_name(ioc__fault_kind_t kind);

/* Reads IOCORE_FAULTS (ioc_core_create). 0, or IOC_EINVAL for a malformed
 * value (logged): a typo must not silently run a test without faults. */
int ioc__faults_init(ioc_core_t *core);
/* Replaces the configuration: "kind=rate,...,seed=N"; NULL, "" or "off"
 * turns injection off. IOC_EINVAL (nothing changed) if malformed. Any
 * thread, any time; draws in progress use the old or the new rates. */
int ioc__faults_configure(ioc_core_t *core, const char *spec);
/* Faults of this kind injected on the core so far. */
uint64_t ioc__faults_count(ioc_core_t *core, ioc__fault_kind_t kind);
/* Logs the counts (ioc_core_destroy), if injection was ever configured. */
void ioc__faults_report(ioc_core_t *core);

#endif /* IOC_FAULT_H */
