/* rf_order: stdout and stderr of parent and moved child, in the order they were written (each waits for the other). */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("rf_order", argc, argv);
  setvbuf(stdout, NULL, _IONBF, 0);
  printf("P1\n");
  fprintf(stderr, "p-err-1\n");
  int go[2];
  if (pipe(go)) fail("pipe");
  pid_t pid = rfork();
  if (pid < 0) fail("rfork: %s", rex_last_error());
  if (pid == 0) {
    char c;
    if (read(go[0], &c, 1) != 1) fail("go");
    for (int i = 0; i < 50; i++) {
      printf("C%d\n", i);
      fprintf(stderr, "c-err-%d\n", i);
    }
    exit(0);
  }
  printf("P2\n");
  if (write(go[1], "g", 1) != 1) fail("go write");
  int st;
  waitpid(pid, &st, 0);
  printf("P3 %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  return 0;
}
