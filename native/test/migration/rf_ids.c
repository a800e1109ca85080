/* rf_ids: rgetpid/rgetppid/rgethostname give the origin's view in the moved child; getpid/getppid are the executor's. */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("rf_ids", argc, argv);
  char origin[256];
  gethostname(origin, sizeof origin - 1);
  pid_t me = getpid();
  int p[2];
  if (pipe(p)) fail("pipe");
  errno = EDOM;
  pid_t pid = rfork();
  int e = errno;
  if (pid < 0) fail("rfork: %s", rex_last_error());
  if (pid == 0) {
    if (e != EDOM) fail("errno %d after rfork in the child", e);
    pid_t stub;
    if (read(p[0], &stub, sizeof stub) != sizeof stub) fail("read stub pid");
    if (rgetpid() != stub) fail("rgetpid %d, the parent's rfork gave %d", rgetpid(), stub);
    if (rgetppid() != me) fail("rgetppid %d, expected %d", rgetppid(), me);
    if (getpid() == stub) fail("getpid is the stub's");
    if (strcmp(rgethostname(), origin)) fail("rgethostname '%s', expected '%s'", rgethostname(), origin);
    char here[256];
    gethostname(here, sizeof here - 1);
    printf("CHILD-HOST %s PPID %d\n", here, (int)getppid());
    pass();
  }
  if (e != EDOM) fail("errno %d after rfork in the parent", e);
  if (rforked()) fail("parent thinks it moved");
  if (write(p[1], &pid, sizeof pid) != sizeof pid) fail("write");
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}
