/* no_uring: runs a command in a process where io_uring does not exist.
 *
 *   no_uring [--errno ENOSYS|EPERM] [--verbose] COMMAND [ARGS...]
 *
 * Installs a seccomp-bpf filter (after prctl(PR_SET_NO_NEW_PRIVS), so no
 * privilege is needed) that makes io_uring_setup, io_uring_enter and
 * io_uring_register fail with ENOSYS (an old kernel, the default) or EPERM
 * (an administrator's or a container runtime's seccomp profile), lets every
 * other system call through, then execvp()s COMMAND. The filter is
 * inherited by every child and survives exec, so a whole test suite can run
 * under it.
 *
 * It prints nothing (with --verbose: one line saying what it did), so the
 * command's own output is all there is. Before exec it checks its own work: io_uring_setup() must now fail with
 * the chosen errno, otherwise it exits 2 (a launcher that silently did
 * nothing would make every test under it pass for the wrong reason).
 * Exit status: COMMAND's, or 2 for a usage or setup error, 127 if COMMAND
 * cannot be run. Linux only (x86-64, i386, aarch64, arm, riscv64). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH_NR AUDIT_ARCH_X86_64
#elif defined(__i386__)
#define ARCH_NR AUDIT_ARCH_I386
#elif defined(__aarch64__)
#define ARCH_NR AUDIT_ARCH_AARCH64
#elif defined(__arm__)
#define ARCH_NR AUDIT_ARCH_ARM
#elif defined(__riscv) && __riscv_xlen == 64
#define ARCH_NR AUDIT_ARCH_RISCV64
#else
#error "no_uring: unknown architecture"
#endif

/* The numbers are the same on every architecture (added after the tables
 * were unified), but old headers may lack the names. */
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif
#ifndef SECCOMP_SET_MODE_FILTER
#define SECCOMP_SET_MODE_FILTER 1
#endif
/* x32 system calls on x86-64 carry this bit; deny those too. */
#define X32_BIT 0x40000000u

static void usage(void) {
  fprintf(stderr, "usage: no_uring [--errno ENOSYS|EPERM] [--verbose] COMMAND [ARGS...]\n");
  exit(2);
}

static int install(int err) {
  unsigned ret_errno = SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA);
  struct sock_filter f[] = {
      /* a foreign architecture (e.g. i386 calls on x86-64): let it through;
       * its numbers mean other things */
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH_NR, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 6, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 5, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 4, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, X32_BIT | __NR_io_uring_setup, 3, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, X32_BIT | __NR_io_uring_enter, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, X32_BIT | __NR_io_uring_register, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, ret_errno),
  };
  struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    perror("no_uring: prctl(PR_SET_NO_NEW_PRIVS)");
    return -1;
  }
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
    if (errno != ENOSYS || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
      perror("no_uring: installing the seccomp filter");
      return -1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  int err = ENOSYS, verbose = 0, i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (!strcmp(argv[i], "--errno") && i + 1 < argc) {
      const char *e = argv[++i];
      if (!strcmp(e, "ENOSYS"))
        err = ENOSYS;
      else if (!strcmp(e, "EPERM"))
        err = EPERM;
      else
        usage();
    } else if (!strcmp(argv[i], "--verbose")) {
      verbose = 1;
    } else if (!strcmp(argv[i], "--")) {
      i++;
      break;
    } else {
      usage();
    }
  }
  if (i >= argc) usage();
  if (install(err) != 0) return 2;

  /* Check the filter: io_uring_setup(1, params) must fail with err now. */
  unsigned char params[120];
  memset(params, 0, sizeof params);
  long r = syscall(__NR_io_uring_setup, 1, params);
  if (r >= 0 || errno != err) {
    fprintf(stderr, "no_uring: the filter did not take: io_uring_setup returned %ld (%s)\n", r,
            r >= 0 ? "a ring" : strerror(errno));
    if (r >= 0) close((int)r);
    return 2;
  }
  if (verbose) fprintf(stderr, "no_uring: io_uring_setup now fails with %s\n", err == EPERM ? "EPERM" : "ENOSYS");
  execvp(argv[i], argv + i);
  fprintf(stderr, "no_uring: cannot run %s: %s\n", argv[i], strerror(errno));
  return 127;
}
