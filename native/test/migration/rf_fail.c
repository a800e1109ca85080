/*
 * rf_fail: rfork() that cannot move the child returns -1 with errno and a
 * reason in the parent, and leaves no child. argv[2]: a directory to make the
 * cwd and remove before rfork (the executor cannot enter it: its restore
 * fails), or "-" for none. argv[3], optional: MiB of memory to touch first,
 * so that the image is large enough to be fetched (streamed) by the executor.
 */
#include "zdtm.h"

#include <sys/mman.h>
#include <sys/stat.h>

int main(int argc, char **argv) {
  ZDTM_INIT("rf_fail", argc, argv);
  if (argc < 3) fail("usage: rf_fail rfork DIR|-");
  if (strcmp(argv[2], "-")) {
    if (mkdir(argv[2], 0700) || chdir(argv[2]) || rmdir(argv[2])) fail("cwd setup: %s", strerror(errno));
  }
  if (argc > 3) {
    size_t n = (size_t)atoi(argv[3]) << 20;
    unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("mmap");
    for (size_t i = 0; i < n; i += 8) *(uint64_t *)(m + i) = (uint64_t)i * 0x9e3779b97f4a7c15ull;
  }
  pid_t pid = rfork();
  if (pid == 0) {
    printf("CHILD-RAN\n");
    _exit(0);
  }
  if (pid > 0) {
    waitpid(pid, NULL, 0);
    fail("rfork succeeded (pid %d)", pid);
  }
  int e = errno;
  printf("RFORK -1 %s %s\n", strerrorname_np(e) ? strerrorname_np(e) : "?", rex_last_error());
  if (waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD) printf("NO-CHILD\n");
  return 0;
}
