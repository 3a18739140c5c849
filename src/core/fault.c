/* Fault injection: configuration, the per-thread PRNG, counters. Where the
 * faults are injected, and why each is one the kernel can give there: see
 * fault.h, the sites in backend/uring_submit.c and uring_complete.c,
 * backend/epoll.c and core.c (ioc__op_submit), and docs/fault-injection.md. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[IOC__FAULT_KINDS] = {"short_write", "eagain", "eintr",
                                                          "econnreset", "enomem"};

const char *ioc__fault_name(ioc__fault_kind_t kind) {
  return (unsigned)kind < IOC__FAULT_KINDS ? kind_names[kind] : "?";
}

/* Configurations get ids from one counter, so a thread's PRNG never takes a
 * configuration of a destroyed core for its own (0 = none). */
static atomic_uint_fast64_t fault_gens;

static _Thread_local struct {
  uint64_t gen;
  uint64_t s;
} tls_rng;

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t next_draw(ioc__faults_t *f) {
  uint64_t gen = atomic_load_explicit(&f->gen, memory_order_acquire);
  if (tls_rng.gen != gen) {
    /* First draw of this thread under this configuration: its own stream,
     * from the seed and the order in which threads first drew. */
    uint64_t ordinal = atomic_fetch_add_explicit(&f->threads, 1, memory_order_relaxed);
    uint64_t s = atomic_load_explicit(&f->seed, memory_order_relaxed) ^ (ordinal * 0xd1b54a32d192ed03ull);
    splitmix64(&s);
    tls_rng.gen = gen;
    tls_rng.s = s;
  }
  return splitmix64(&tls_rng.s);
}

bool ioc__fault_roll(ioc__faults_t *f, ioc__fault_kind_t kind) {
  uint64_t t = atomic_load_explicit(&f->thresh[kind], memory_order_relaxed);
  if (t == 0) return false;
  if ((next_draw(f) >> 32) >= t) return false;
  atomic_fetch_add_explicit(&f->count[kind], 1, memory_order_relaxed);
  return true;
}

uint64_t ioc__fault_below(ioc__faults_t *f, uint64_t n) { return n ? next_draw(f) % n : 0; }

/* ---- configuration ------------------------------------------------------------ */

/* A rate "0", "1", "0.05", ".5": parsed by hand, so the host's locale (a
 * Lua script may call os.setlocale) cannot change what "0.05" means.
 * Returns rate * 2^32 in *out, or false. */
static bool parse_rate(const char *p, size_t len, uint64_t *out) {
  uint64_t num = 0, den = 1;
  bool digits = false, dot = false;
  for (size_t i = 0; i < len; i++) {
    char c = p[i];
    if (c == '.' && !dot) {
      dot = true;
    } else if (c >= '0' && c <= '9') {
      digits = true;
      if (den >= 1000000000ull) continue; /* beyond 9 decimals: ignored */
      num = num * 10 + (uint64_t)(c - '0');
      if (dot) den *= 10;
      if (num > 10 * den) return false; /* far above 1 */
    } else {
      return false;
    }
  }
  if (!digits || num > den) return false;
  *out = (num << 32) / den; /* num <= den <= 10^9: no overflow */
  return true;
}

static bool parse_u64(const char *p, size_t len, uint64_t *out) {
  uint64_t v = 0;
  if (len == 0) return false;
  for (size_t i = 0; i < len; i++) {
    if (p[i] < '0' || p[i] > '9') return false;
    uint64_t d = (uint64_t)(p[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

static bool is_space(char c) { return c == ' ' || c == '\t'; }

/* Parses spec into thresh[] and *seed; false if malformed. */
static bool parse_spec(const char *spec, uint64_t thresh[IOC__FAULT_KINDS], uint64_t *seed) {
  memset(thresh, 0, IOC__FAULT_KINDS * sizeof thresh[0]);
  *seed = 1;
  if (!spec) return true;
  const char *p = spec;
  for (;;) {
    while (is_space(*p)) p++;
    if (*p == 0) return true;
    const char *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    const char *eq = memchr(p, '=', (size_t)(end - p));
    size_t klen = (size_t)((eq ? eq : end) - p);
    while (klen > 0 && is_space(p[klen - 1])) klen--;
    if (klen == 3 && strncmp(p, "off", 3) == 0 && !eq) {
      /* "off" alone: everything off */
    } else {
      if (!eq) return false;
      const char *v = eq + 1;
      while (v < end && is_space(*v)) v++;
      size_t vlen = (size_t)(end - v);
      while (vlen > 0 && is_space(v[vlen - 1])) vlen--;
      if (klen == 4 && strncmp(p, "seed", 4) == 0) {
        if (!parse_u64(v, vlen, seed)) return false;
      } else {
        int k = 0;
        while (k < IOC__FAULT_KINDS &&
               !(strlen(kind_names[k]) == klen && strncmp(p, kind_names[k], klen) == 0))
          k++;
        if (k == IOC__FAULT_KINDS || !parse_rate(v, vlen, &thresh[k])) return false;
      }
    }
    if (*end == 0) return true;
    p = end + 1;
  }
}

int ioc__faults_configure(ioc_core_t *core, const char *spec) {
  ioc__faults_t *f = &core->faults;
  uint64_t thresh[IOC__FAULT_KINDS], seed;
  if (!parse_spec(spec, thresh, &seed)) return IOC_EINVAL;
  bool on = false;
  for (int k = 0; k < IOC__FAULT_KINDS; k++) on = on || thresh[k] != 0;
  /* Off first, so no draw mixes old and new rates for long; then rates,
   * seed and a new generation; on last. Turned off, the seed of the last
   * run stays for the report. */
  atomic_store_explicit(&f->on, 0, memory_order_relaxed);
  for (int k = 0; k < IOC__FAULT_KINDS; k++)
    atomic_store_explicit(&f->thresh[k], thresh[k], memory_order_relaxed);
  if (!on) return 0;
  atomic_store_explicit(&f->seed, seed, memory_order_relaxed);
  atomic_store_explicit(&f->threads, 0, memory_order_relaxed);
  atomic_store_explicit(&f->gen, atomic_fetch_add(&fault_gens, 1) + 1, memory_order_release);
  atomic_store_explicit(&f->ever, true, memory_order_relaxed);
  atomic_store_explicit(&f->on, 1, memory_order_release);
  return 0;
}

int ioc__faults_init(ioc_core_t *core) {
  ioc__faults_t *f = &core->faults;
  atomic_init(&f->on, 0);
  atomic_init(&f->ever, false);
  atomic_init(&f->seed, 1);
  atomic_init(&f->gen, 0);
  atomic_init(&f->threads, 0);
  for (int k = 0; k < IOC__FAULT_KINDS; k++) {
    atomic_init(&f->thresh[k], 0);
    atomic_init(&f->count[k], 0);
  }
  const char *env = getenv("IOCORE_FAULTS");
  if (!env || !*env) return 0;
  if (ioc__faults_configure(core, env) < 0) {
    ioc__log(core, "IOCORE_FAULTS=\"%s\" is malformed: want kind=rate,... with kinds short_write, "
                   "eagain, eintr, econnreset, enomem (rates 0..1) and seed=N",
             env);
    return IOC_EINVAL;
  }
  if (atomic_load(&f->on)) ioc__log(core, "fault injection on: IOCORE_FAULTS=%s", env);
  return 0;
}

uint64_t ioc__faults_count(ioc_core_t *core, ioc__fault_kind_t kind) {
  if ((unsigned)kind >= IOC__FAULT_KINDS) return 0;
  return (uint64_t)atomic_load_explicit(&core->faults.count[kind], memory_order_relaxed);
}

void ioc__faults_report(ioc_core_t *core) {
  ioc__faults_t *f = &core->faults;
  if (!atomic_load_explicit(&f->ever, memory_order_relaxed)) return;
  char line[256];
  size_t used = 0;
  for (int k = 0; k < IOC__FAULT_KINDS && used < sizeof line; k++) {
    int n = snprintf(line + used, sizeof line - used, "%s%s=%llu", k ? " " : "", kind_names[k],
                     (unsigned long long)atomic_load(&f->count[k]));
    if (n > 0) used += (size_t)n;
  }
  ioc__log(core, "fault injection: injected %s (seed %llu)", line,
           (unsigned long long)atomic_load(&f->seed));
}
