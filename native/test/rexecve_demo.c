/*
 * rexecve_demo: the test driver of rexecve() (test/exec/rexecve.test.ts).
 * Usage: rexecve_demo HOST|- PATH [ARGV0 ARGS...]. On success the process
 * becomes the remote program's stub; on failure it prints
 * "rexecve failed: ERRNO_NAME: detail" and exits 99, showing that the process
 * survived as it was.
 */
#include "rex.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

extern char **environ;

static const char *errno_name(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case E2BIG: return "E2BIG";
    case EINVAL: return "EINVAL";
    default: return strerror(e);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: rexecve_demo HOST|- PATH [ARGV0 ARGS...]\n");
    return 2;
  }
  const char *host = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
  char *fallback[] = {argv[2], NULL};
  char **args = argc > 3 ? argv + 3 : fallback;
  rexecve_on(host, argv[2], args, environ, 0);
  int e = errno;
  printf("rexecve failed: %s: %s\n", errno_name(e), rex_last_error());
  return 99;
}
