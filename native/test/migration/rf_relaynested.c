/*
 * rf_relaynested: a file relayed twice. The parent on alpha opens it, rforks
 * to beta; that child reads from the shared offset and rforks again, to
 * alpha; the grandchild's calls go to beta's stub, whose own calls on the
 * file are forwarded to alpha's (docs/RFORK.md 4.1). All three see one
 * offset, as after two fork()s.
 */
#include "zdtm.h"

#include <sys/stat.h>

int main(int argc, char **argv) {
  ZDTM_INIT("rf_relaynested", argc, argv);
  if (argc < 3) fail("usage: rf_relaynested rfork DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/nested.data", argv[2]);
  int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (f < 0 || write(f, "0123456789", 10) != 10 || lseek(f, 1, SEEK_SET) != 1) fail("create %s", path);
  pid_t p = rfork_on("beta", 0);
  if (p < 0) fail("rfork to beta: %s", rex_last_error());
  if (p == 0) {
    char b[4] = {0};
    if (read(f, b, 2) != 2 || strcmp(b, "12")) fail("child read '%s'", b);
    pid_t q = rfork_on("alpha", 0);
    if (q < 0) fail("rfork to alpha: %s", rex_last_error());
    if (q == 0) {
      struct stat st;
      char c[4] = {0};
      if (lseek(f, 0, SEEK_CUR) != 3) fail("grandchild offset");
      if (read(f, c, 3) != 3 || strcmp(c, "345")) fail("grandchild read '%s'", c);
      if (fstat(f, &st) || !S_ISREG(st.st_mode) || st.st_size != 10) fail("grandchild fstat");
      if (lseek(f, 8, SEEK_SET) != 8) fail("grandchild lseek");
      exit(0);
    }
    int st;
    if (waitpid(q, &st, 0) != q || !WIFEXITED(st) || WEXITSTATUS(st)) fail("grandchild status 0x%x", st);
    if (lseek(f, 0, SEEK_CUR) != 8) fail("child: the grandchild's lseek did not move the offset");
    pass();
  }
  int st;
  if (waitpid(p, &st, 0) != p) fail("waitpid");
  if (lseek(f, 0, SEEK_CUR) != 8) fail("parent: offset %ld, not 8", (long)lseek(f, 0, SEEK_CUR));
  if (!WIFEXITED(st) || WEXITSTATUS(st)) return 1;
  printf("PARENT-OK\n");
  return 0;
}
