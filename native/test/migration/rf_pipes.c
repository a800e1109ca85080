/* rf_pipes: pipes in both directions between the parent and its rfork()ed child, and EOF when the parent closes its end. */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("rf_pipes", argc, argv);
  int down[2], up[2];
  if (pipe(down) || pipe(up)) fail("pipe");
  pid_t pid = rfork();
  if (pid < 0) fail("rfork: %s", rex_last_error());
  if (pid == 0) {
    close(down[1]);
    close(up[0]);
    char buf[64];
    size_t n = 0;
    ssize_t r;
    while ((r = read(down[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r; /* until the parent closes: EOF travels */
    buf[n] = '\0';
    if (strcmp(buf, "ping from the parent")) fail("child read '%s'", buf);
    const char *answer = "pong from the child";
    if (write(up[1], answer, strlen(answer)) != (ssize_t)strlen(answer)) fail("child write");
    close(up[1]);
    pass();
  }
  close(down[0]);
  close(up[1]);
  const char *msg = "ping from the parent";
  if (write(down[1], msg, strlen(msg)) != (ssize_t)strlen(msg)) fail("parent write");
  close(down[1]);
  char buf[64];
  size_t n = 0;
  ssize_t r;
  while ((r = read(up[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  buf[n] = '\0';
  int st;
  waitpid(pid, &st, 0);
  if (strcmp(buf, "pong from the child")) fail("parent read '%s'", buf);
  if (!WIFEXITED(st) || WEXITSTATUS(st)) fail("child status 0x%x", st);
  printf("PARENT-OK\n");
  return 0;
}
