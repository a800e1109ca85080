/* rf_mem: MiB of touched anonymous memory (argv[2], default 256) move with rfork() and read back intact in the child. */
#include "zdtm.h"

#include <sys/mman.h>

int main(int argc, char **argv) {
  ZDTM_INIT("rf_mem", argc, argv);
  size_t mib = argc > 2 ? (size_t)atoi(argv[2]) : 256, n = mib << 20;
  unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) fail("mmap");
  for (size_t i = 0; i < n; i += 8) *(uint64_t *)(m + i) = (uint64_t)i * 0x9e3779b97f4a7c15ull;
  zdtm_migrate(argv[1]);
  for (size_t i = 0; i < n; i += 8)
    if (*(uint64_t *)(m + i) != (uint64_t)i * 0x9e3779b97f4a7c15ull) fail("word at %zu", i);
  pass();
}
