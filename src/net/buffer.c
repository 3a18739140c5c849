/* Shared buffers: immutable bytes with an atomic reference count, sent by
 * reference (sendq.c queues a chunk that points into one). The header and
 * the payload are one allocation. Buffers belong to no core, so the live
 * count and bytes that ioc_core_stats reports are the process's. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct ioc_buffer {
  atomic_size_t refs;
  size_t len;
  /* max_align_t: the payload is as aligned as malloc's own result */
  _Alignas(max_align_t) char data[];
};

static atomic_uint_fast64_t live_buffers, live_bytes;

void ioc__buffer_stats(uint64_t *buffers, uint64_t *bytes) {
  *buffers = (uint64_t)atomic_load_explicit(&live_buffers, memory_order_relaxed);
  *bytes = (uint64_t)atomic_load_explicit(&live_bytes, memory_order_relaxed);
}

ioc_buffer_t *ioc_buffer_new(const void *data, size_t len) {
  if (len > SIZE_MAX - sizeof(ioc_buffer_t) || (len && !data)) return NULL;
  ioc_buffer_t *b = malloc(sizeof *b + len);
  if (!b) return NULL;
  atomic_init(&b->refs, 1);
  b->len = len;
  if (len) memcpy(b->data, data, len);
  atomic_fetch_add_explicit(&live_buffers, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&live_bytes, len, memory_order_relaxed);
  return b;
}

ioc_buffer_t *ioc_buffer_retain(ioc_buffer_t *b) {
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return b;
}

/* The last release frees. acq_rel: each decrement publishes this thread's
 * use of the bytes, and the one that reaches zero sees every other
 * thread's, so no read of the payload (a send finished elsewhere) can
 * come after the free. (No separate fence: TSan does not model fences.) */
void ioc_buffer_release(ioc_buffer_t *b) {
  if (!b) return;
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1) return;
  atomic_fetch_sub_explicit(&live_buffers, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&live_bytes, b->len, memory_order_relaxed);
  free(b);
}

const void *ioc_buffer_data(const ioc_buffer_t *b) { return b->data; }
size_t ioc_buffer_len(const ioc_buffer_t *b) { return b->len; }
