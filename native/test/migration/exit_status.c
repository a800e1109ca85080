/*
 * exit_status: the restored copy ends as the file named at dump time says:
 * "exit N" or "signal N", so one image shows every status to its parent.
 */
#include "zdtm.h"

#include <signal.h>

int main(int argc, char **argv) {
  ZDTM_INIT("exit_status", argc, argv);
  if (argc < 3) {
    fprintf(stderr, "usage: exit_status IMAGE CONTROL-FILE\n");
    return 2;
  }
  const char *control = argv[2];
  zdtm_migrate(argv[1]);
  FILE *f = fopen(control, "r");
  if (!f) fail("open %s", control);
  char what[16];
  int n;
  if (fscanf(f, "%15s %d", what, &n) != 2) fail("control file");
  fclose(f);
  if (!strcmp(what, "signal")) {
    signal(n, SIG_DFL);
    raise(n);
    fail("still alive after signal %d", n);
  }
  exit(n);
}
