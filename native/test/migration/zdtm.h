/*
 * zdtm.h: helpers of the process-image fidelity programs, after CRIU's zdtm.
 *
 * Each program sets up one kind of state, calls zdtm_migrate(argv[1]) which
 * writes an image to that path, and in the copy that `rex-restore IMAGE`
 * rebuilds checks the state and reports with pass() or fail():
 *   original:  prints "DUMPED <name> <bytes> <pages>" and exits 0
 *   restored:  prints "PASS <name>" and exits 0, or "FAIL <name>: why" and exits 1
 * A dump that fails prints "DUMPFAIL <name>: errno-name: rex_last_error()" and exits 2.
 */
#ifndef ZDTM_H
#define ZDTM_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rex.h"

static const char *zdtm_name = "?";
static struct rex_dump_info zdtm_info;
/* Set in a child that rfork() moved (IMAGE "rfork"): zdtm_info is not filled then. */
static int zdtm_by_rfork;

__attribute__((unused)) static void pass(void) {
  printf("PASS %s\n", zdtm_name);
  fflush(stdout);
  exit(0);
}

__attribute__((format(printf, 1, 2), unused)) static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("FAIL %s: ", zdtm_name);
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  fflush(stdout);
  exit(1);
}

/*
 * Where a moved child runs (test/rfork/): with $REX_TEST_WHERE set, a child
 * that rfork() moved appends "WHERE name pid ppid host origin-host" to that
 * file in one write (ppid is the executor's rexd). errno is left as it was.
 */
__attribute__((unused)) static void zdtm_where(void) {
  const char *path = getenv("REX_TEST_WHERE");
  if (!path || !*path) return;
  int e = errno;
  char host[256], line[640];
  if (gethostname(host, sizeof host)) strcpy(host, "?");
  int n = snprintf(line, sizeof line, "WHERE %s %d %d %s %s\n", zdtm_name, (int)getpid(), (int)getppid(), host, rgethostname());
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
  }
  errno = e;
}

/* rfork() and rfork_on() in these programs: the moved child says where it runs (zdtm_where) before the program goes on. */
__attribute__((unused)) static pid_t zdtm_rfork_on(const char *host, unsigned flags) {
  pid_t pid = rfork_on(host, flags);
  if (pid == 0 && rforked()) zdtm_where();
  return pid;
}
#define rfork() zdtm_rfork_on(NULL, 0)
#define rfork_on(host, flags) zdtm_rfork_on((host), (flags))

/* Opens the image file; -1 after printing why. */
__attribute__((unused)) static int zdtm_open_image(const char *path) {
  int fd = strcmp(path, "-") == 0 ? 1 : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    printf("DUMPFAIL %s: open %s: %s\n", zdtm_name, path, strerror(errno));
    exit(2);
  }
  return fd;
}

/* Dumps to path with flags; returns 1 in the restored copy, 0 in the original (which the caller ends). */
__attribute__((unused)) static int zdtm_dump(const char *path, unsigned flags) {
  int fd = zdtm_open_image(path);
  int r = rex_dump_self(fd, flags, &zdtm_info);
  if (r < 0) {
    int e = errno;
    printf("DUMPFAIL %s: %s: %s\n", zdtm_name, strerrorname_np(e) ? strerrorname_np(e) : "?", rex_last_error());
    exit(2);
  }
  if (r == 0 && fd != 1) close(fd);
  return r;
}

/*
 * With IMAGE "rfork" the program moves with rfork() instead (test/rfork/):
 * the child continues on the host placement or $REX_HOST picks and reports
 * PASS/FAIL there (its stdout is relayed through the stub); the parent waits
 * and exits with the child's status, or prints "CHILD SIGNAL n" and exits 3.
 */
__attribute__((unused)) static void zdtm_rfork(void) {
  pid_t pid = rfork();
  if (pid < 0) {
    int e = errno;
    printf("RFORKFAIL %s: %s: %s\n", zdtm_name, strerrorname_np(e) ? strerrorname_np(e) : "?", rex_last_error());
    exit(2);
  }
  if (pid == 0) {
    if (!rforked()) fail("rfork returned 0 in a child that did not move");
    zdtm_by_rfork = 1;
    return;
  }
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) {
      printf("WAITFAIL %s: %s\n", zdtm_name, strerror(errno));
      exit(2);
    }
  if (WIFSIGNALED(st)) {
    printf("CHILD SIGNAL %d\n", WTERMSIG(st));
    exit(3);
  }
  exit(WEXITSTATUS(st));
}

/* Dumps to path; only the restored copy returns. */
__attribute__((unused)) static void zdtm_migrate(const char *path) {
  if (strcmp(path, "rfork") == 0) {
    zdtm_rfork();
    return;
  }
  if (zdtm_dump(path, 0) == 1) return;
  printf("DUMPED %s %llu %llu\n", zdtm_name, (unsigned long long)zdtm_info.image_bytes,
         (unsigned long long)zdtm_info.data_pages);
  fflush(stdout);
  exit(0);
}

#define ZDTM_INIT(name, argc, argv)                                   \
  do {                                                                \
    zdtm_name = (name);                                               \
    if ((argc) < 2) {                                                 \
      fprintf(stderr, "usage: %s IMAGE\n", (argv)[0]);                \
      exit(2);                                                        \
    }                                                                 \
  } while (0)

#endif /* ZDTM_H */
