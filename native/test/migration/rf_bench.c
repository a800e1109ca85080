/*
 * rf_bench: the benchmark's rfork program (bench/rfork.mjs). N times: rfork()
 * a child that exits at once, timing rfork()'s return in the parent (the child
 * runs remotely by then: STARTED follows its greeting) and the whole round
 * trip to wait(); then the same with a local fork(). Prints one line per
 * measure: "rfork_ns ...", "rfork_wait_ns ...", "fork_ns ...", "fork_wait_ns ...".
 */
#include "zdtm.h"

#include <time.h>

static long long now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void line(const char *what, long long *v, int n) {
  printf("%s", what);
  for (int i = 0; i < n; i++) printf(" %lld", v[i]);
  printf("\n");
}

int main(int argc, char **argv) {
  ZDTM_INIT("rf_bench", argc, argv);
  int n = argc > 2 ? atoi(argv[2]) : 20;
  long long *ret = calloc((size_t)n, sizeof *ret), *all = calloc((size_t)n, sizeof *all);
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < n; i++) {
      long long t0 = now();
      pid_t pid = pass == 0 ? rfork() : fork();
      if (pid < 0) fail("%s: %s", pass == 0 ? "rfork" : "fork", rex_last_error());
      if (pid == 0) _exit(0);
      ret[i] = now() - t0;
      int st;
      waitpid(pid, &st, 0);
      all[i] = now() - t0;
      if (!WIFEXITED(st) || WEXITSTATUS(st)) fail("child %d status 0x%x", i, st);
    }
    line(pass == 0 ? "rfork_ns" : "fork_ns", ret, n);
    line(pass == 0 ? "rfork_wait_ns" : "fork_wait_ns", all, n);
  }
  return 0;
}
