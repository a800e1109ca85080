/*
 * rf_shared: shared anonymous memory cannot move: rfork() fails with
 * EOPNOTSUPP naming the mapping and nothing runs; with REX_RFORK_LOCAL the
 * child forks locally instead and still shares the memory.
 */
#include "zdtm.h"

#include <sys/mman.h>

int main(int argc, char **argv) {
  ZDTM_INIT("rf_shared", argc, argv);
  volatile int *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) fail("mmap");
  pid_t pid = rfork();
  if (pid == 0) _exit(99); /* must not happen */
  if (pid != -1 || errno != EOPNOTSUPP) fail("rfork gave %d errno %d, expected -1 EOPNOTSUPP", pid, errno);
  printf("REFUSED %s\n", rex_last_error());
  pid = rfork_on(NULL, REX_RFORK_LOCAL);
  if (pid < 0) fail("rfork_on(REX_RFORK_LOCAL): %s", rex_last_error());
  if (pid == 0) {
    if (rforked()) _exit(5);
    *shared = 1234;
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st)) fail("local child status 0x%x", st);
  if (*shared != 1234) fail("shared memory not shared with the local child");
  pass();
}
