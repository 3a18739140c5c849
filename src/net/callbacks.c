/* Session callback sets, kept once per process.
 *
 * A session stores a pointer to its callbacks instead of a copy of the five
 * function pointers: every session of a program uses one of a handful of
 * sets (the Lua module has two), and 32 bytes of every session, idle ones
 * included, are worth more than a short search per ioc_session_set_callbacks.
 * ioc_session_set_callbacks still copies what it is given (the caller's
 * struct may be on its stack): the copy is looked up among the sets seen
 * before and made only if it is new. Sets are never freed: they are
 * function pointers, so a program has finitely many, and a session may
 * hold one after its core is gone.
 */
#include "net.h"

#include <stdlib.h>
#include <string.h>

typedef struct cbset {
  ioc_session_callbacks_t cbs;
  struct cbset *next;
} cbset_t;

static const ioc_session_callbacks_t no_callbacks;
static _Atomic(cbset_t *) sets;
static ioc__spin_t sets_lock; /* serializes additions; lookups take no lock */

const ioc_session_callbacks_t *ioc__callbacks_none(void) { return &no_callbacks; }

static const ioc_session_callbacks_t *find(cbset_t *from, const ioc_session_callbacks_t *cbs) {
  for (cbset_t *c = from; c; c = c->next)
    if (memcmp(&c->cbs, cbs, sizeof *cbs) == 0) return &c->cbs;
  return NULL;
}

const ioc_session_callbacks_t *ioc__callbacks_intern(const ioc_session_callbacks_t *cbs) {
  if (!cbs || memcmp(cbs, &no_callbacks, sizeof *cbs) == 0) return &no_callbacks;
  const ioc_session_callbacks_t *r = find(atomic_load_explicit(&sets, memory_order_acquire), cbs);
  if (r) return r;
  ioc__spin_lock(&sets_lock);
  r = find(atomic_load_explicit(&sets, memory_order_relaxed), cbs); /* added meanwhile? */
  if (!r) {
    cbset_t *c = malloc(sizeof *c);
    if (c) {
      c->cbs = *cbs;
      c->next = atomic_load_explicit(&sets, memory_order_relaxed);
      atomic_store_explicit(&sets, c, memory_order_release);
      r = &c->cbs;
    }
  }
  ioc__spin_unlock(&sets_lock);
  return r;
}
