/* rf_loop: N children rforked in a loop without waiting, then all waited for; each computes and exits with its index mod 256. */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("rf_loop", argc, argv);
  int n = argc > 2 ? atoi(argv[2]) : 100;
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  for (int i = 0; i < n; i++) {
    pids[i] = rfork();
    if (pids[i] < 0) fail("rfork %d: %s", i, rex_last_error());
    if (pids[i] == 0) {
      unsigned long long x = 0;
      for (int k = 0; k <= i * 1000; k++) x += (unsigned long long)k;
      _exit(x == (unsigned long long)(i * 1000) * (unsigned long long)(i * 1000 + 1) / 2 ? i % 256 : 255);
    }
  }
  for (int i = 0; i < n; i++) {
    int st;
    if (waitpid(pids[i], &st, 0) != pids[i]) fail("waitpid %d", i);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != i % 256) fail("child %d: status 0x%x", i, st);
  }
  printf("OK %d children\n", n);
  return 0;
}
