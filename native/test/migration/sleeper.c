/*
 * sleeper: the restored copy says READY and waits for its parent to kill it
 * (argv[2] "zone": map a page in the restorer's zone first, which the dump must refuse).
 */
#include "zdtm.h"

#include <sys/mman.h>

int main(int argc, char **argv) {
  ZDTM_INIT("sleeper", argc, argv);
  if (argc > 2 && !strcmp(argv[2], "zone")) {
    void *p = mmap((void *)0x71000000, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED) fail("mmap in the zone: %s", strerror(errno));
  }
  zdtm_migrate(argv[1]);
  printf("READY %d\n", getpid());
  fflush(stdout);
  for (;;) pause();
}
