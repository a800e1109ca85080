/*
 * runner.c: runs the tests of test-list.h, each in a forked process with a
 * time limit, and prints TAP-like lines:
 *   ok 1 - vectors_decode
 *   not ok 2 - codec_utf8: test_codec.c:120: assertion failed: ...
 *   C tests: 24 passed, 1 failed
 * Usage: rex_tests [NAME...]   (no names: all tests)
 */
#define _GNU_SOURCE /* vdprintf */
#include "runner.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test-list.h"

#define X(name) TEST_IMPL(name);
REX_TEST_LIST(X)
#undef X

struct test {
  const char *name;
  void (*fn)(void);
};

static const struct test tests[] = {
#define X(name) {#name, rex_test_##name},
    REX_TEST_LIST(X)
#undef X
};

/* Generous: the fuzz tests run 100k iterations each under ASan. */
#define TEST_TIMEOUT_MS 120000

static int report_fd = -1;

void rex_test_fail(const char *file, int line, const char *fmt, ...) {
  const char *base = strrchr(file, '/');
  dprintf(report_fd, "%s:%d: ", base ? base + 1 : file, line);
  va_list ap;
  va_start(ap, fmt);
  vdprintf(report_fd, fmt, ap);
  va_end(ap);
  /* _exit: a failed test's leaks are not worth a second report. */
  _exit(1);
}

const char *rex_test_vectors_path(void) {
  const char *p = getenv("REX_VECTORS");
#ifdef REX_VECTORS_DEFAULT
  if (!p || !*p) p = REX_VECTORS_DEFAULT;
#endif
  return p ? p : "../test/vectors/protocol-v1.json";
}

uint8_t *rex_test_unhex(const char *hex, size_t *len) {
  size_t n = strlen(hex) / 2;
  uint8_t *b = malloc(n ? n : 1);
  if (!b) abort();
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) abort();
    b[i] = (uint8_t)v;
  }
  *len = n;
  return b;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs one test in a child; returns 1 when it passed, else writes the reason into why. */
static int run_one(const struct test *t, char *why, size_t cap) {
  int p[2];
  if (pipe(p) < 0) {
    snprintf(why, cap, "pipe: %s", strerror(errno));
    return 0;
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(why, cap, "fork: %s", strerror(errno));
    return 0;
  }
  if (pid == 0) {
    close(p[0]);
    report_fd = p[1];
    t->fn();
    exit(0); /* exit, not _exit: LeakSanitizer checks at exit */
  }
  close(p[1]);
  size_t len = 0;
  why[0] = '\0';
  long long deadline = now_ms() + TEST_TIMEOUT_MS;
  int timed_out = 0;
  for (;;) {
    long long left = deadline - now_ms();
    if (left <= 0) {
      timed_out = 1;
      kill(pid, SIGKILL);
      break;
    }
    struct pollfd pf = {.fd = p[0], .events = POLLIN, .revents = 0};
    int r = poll(&pf, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = read(p[0], why + len, cap - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* EOF: the child ended */
    len += (size_t)n;
    why[len] = '\0';
    if (len == cap - 1) break;
  }
  close(p[0]);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    snprintf(why, cap, "timed out after %d ms", TEST_TIMEOUT_MS);
    return 0;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !why[0]) return 1;
  if (!why[0]) {
    if (WIFSIGNALED(status))
      snprintf(why, cap, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
      snprintf(why, cap, "exit status %d (a sanitizer report is above)", WEXITSTATUS(status));
  }
  for (char *c = why; *c; c++)
    if (*c == '\n') *c = ' ';
  return 0;
}

int main(int argc, char **argv) {
  /* A test's peer that dies must fail that test with EPIPE, not kill the runner. */
  signal(SIGPIPE, SIG_IGN);
  size_t ntests = sizeof tests / sizeof *tests;
  int passed = 0, failed = 0, n = 0;
  for (size_t i = 0; i < ntests; i++) {
    if (argc > 1) {
      int wanted = 0;
      for (int k = 1; k < argc; k++) wanted |= strcmp(argv[k], tests[i].name) == 0;
      if (!wanted) continue;
    }
    char why[1024];
    n++;
    if (run_one(&tests[i], why, sizeof why)) {
      printf("ok %d - %s\n", n, tests[i].name);
      passed++;
    } else {
      printf("not ok %d - %s: %s\n", n, tests[i].name, why);
      failed++;
    }
    fflush(stdout);
  }
  if (n == 0) fprintf(stderr, "rex_tests: no test matches\n");
  printf("C tests: %d passed, %d failed\n", passed, failed);
  return failed || n == 0 ? 1 : 0;
}
