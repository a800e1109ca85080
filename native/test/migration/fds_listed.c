/*
 * fds_listed: descriptors open at dump time are listed in the image (the
 * test reads the table): a regular file with O_APPEND at an offset, a pipe,
 * a socket pair, a close-on-exec directory. The restored copy does not get
 * them (the integration proxies them, docs/RFORK.md): it checks fd 5 is
 * closed, then passes.
 */
#include "zdtm.h"

#include <sys/socket.h>

int main(int argc, char **argv) {
  ZDTM_INIT("fds_listed", argc, argv);
  char path[4096];
  snprintf(path, sizeof path, "%s.file", argv[1]);
  int f = open(path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND, 0600);
  if (write(f, "0123456789", 10) != 10) fail("write");
  int p[2], s[2];
  if (pipe(p) || socketpair(AF_UNIX, SOCK_STREAM, 0, s)) fail("pipe/socketpair");
  int d = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  printf("FDS file=%d pipe=%d,%d socket=%d,%d dir=%d\n", f, p[0], p[1], s[0], s[1], d);
  fflush(stdout);
  zdtm_migrate(argv[1]);
  pass();
}
