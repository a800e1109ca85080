/* rf_nested [HOST]: the moved child rforks again (onto HOST, else where $REX_HOST or placement says); the grandchild sees its own origin (the child), the child its exit status. */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("rf_nested", argc, argv);
  pid_t top = getpid();
  pid_t pid = rfork();
  if (pid < 0) fail("rfork: %s", rex_last_error());
  if (pid == 0) {
    if (rgetppid() != top) fail("child: rgetppid %d, expected %d", rgetppid(), top);
    pid_t mid = getpid();
    pid_t g = rfork_on(argc > 2 ? argv[2] : NULL, 0);
    if (g < 0) fail("nested rfork: %s", rex_last_error());
    if (g == 0) {
      if (rgetppid() != mid) _exit(20);
      if (!rforked()) _exit(21);
      _exit(7);
    }
    int st;
    waitpid(g, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 7) fail("grandchild status 0x%x", st);
    pass();
  }
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}
