/* An echo server in plain C on the worker pool.
 *
 *   build/bin/release/echo [address] [threads]      (default 127.0.0.1:7777, CPU count)
 *
 * Every byte a client sends comes back. Ctrl-C (or SIGTERM) closes the
 * listener and every session gracefully, waits for them, and exits 0. */
#include "iocore.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#define sleep_ms(ms) Sleep(ms)
#else
#include <unistd.h>
#define sleep_ms(ms) usleep((ms) * 1000)
#endif

static volatile sig_atomic_t quit;
static void on_signal(int sig) {
  (void)sig;
  quit = 1;
}

static void echo_recv(ioc_session_t *s, const char *data, size_t len) {
  int rc = ioc_session_send(s, data, len);
  if (rc < 0 && rc != IOC_ECLOSED) ioc_session_abort(s); /* e.g. ENOBUFS: a client that never reads */
}

static void echo_close(ioc_session_t *s, int err) {
  char peer[IOC_ADDRSTRLEN];
  ioc_addr_format(ioc_session_peer(s), peer, sizeof peer);
  printf("client left %s%s%s\n", peer, err ? ": " : "", err ? ioc_strerror(err) : "");
}

static const ioc_session_callbacks_t echo_cbs = {.on_recv = echo_recv, .on_close = echo_close};

static void on_accept(ioc_listener_t *l, ioc_session_t *s, void *ud) {
  (void)l;
  (void)ud;
  char peer[IOC_ADDRSTRLEN];
  ioc_addr_format(ioc_session_peer(s), peer, sizeof peer);
  printf("client connected %s\n", peer);
  ioc_session_set_callbacks(s, &echo_cbs, NULL);
}

int main(int argc, char **argv) {
  const char *address = argc > 1 ? argv[1] : "127.0.0.1:7777";
  int threads = argc > 2 ? atoi(argv[2]) : 0;
  setvbuf(stdout, NULL, _IOLBF, 0);

  ioc_core_t *core;
  int rc = ioc_core_create(&core, NULL);
  if (rc < 0) {
    fprintf(stderr, "echo: %s: %s\n", ioc_err_name(rc), ioc_strerror(rc));
    return 1;
  }
  ioc_listener_t *l;
  rc = ioc_listen(core, address, strlen(address), NULL, on_accept, NULL, &l);
  if (rc < 0) {
    fprintf(stderr, "echo: listen %s: %s: %s\n", address, ioc_err_name(rc), ioc_strerror(rc));
    ioc_core_destroy(core);
    return 1;
  }
  char bound[IOC_ADDRSTRLEN];
  ioc_addr_format(ioc_listener_address(l), bound, sizeof bound);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  if ((rc = ioc_core_start(core, threads)) < 0) {
    fprintf(stderr, "echo: start: %s\n", ioc_strerror(rc));
    return 1;
  }
  printf("echo listening on %s (%s, %d threads)\n", bound, ioc_core_backend(core),
         ioc_core_threads(core));

  while (!quit) sleep_ms(100);

  /* Graceful stop: close everything, let the workers finish the closes. */
  ioc_core_close_all(core, 0);
  ioc_stats_t st;
  for (int i = 0; i < 100; i++) {
    ioc_core_stats(core, &st);
    if (st.objects == 0 && st.ops_inflight == 0) break;
    sleep_ms(50);
  }
  ioc_core_stop(core);
  ioc_core_join(core);
  ioc_core_stats(core, &st);
  printf("echo stopped: %llu accepted, %llu bytes in, %llu bytes out\n",
         (unsigned long long)st.accepted, (unsigned long long)st.bytes_in,
         (unsigned long long)st.bytes_out);
  if (ioc_core_destroy(core) < 0) {
    ioc_core_close_all(core, 1);
    fprintf(stderr, "echo: sessions still closing at exit\n");
    return 1;
  }
  return 0;
}
