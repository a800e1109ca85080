/* sparse1g: a 1 GiB reservation with a page touched every 16 MiB: only those pages travel. */
#include "zdtm.h"

#include <stdint.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
  ZDTM_INIT("sparse1g", argc, argv);
  size_t size = 1ul << 30, step = 16ul << 20;
  uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) fail("mmap");
  for (size_t off = 0; off < size; off += step) *(uint64_t *)(m + off) = off ^ 0xabcdef;
  zdtm_migrate(argv[1]);
  if (!zdtm_by_rfork && zdtm_info.pid == 0) fail("no restore info");
  for (size_t off = 0; off < size; off += step) {
    if (*(uint64_t *)(m + off) != (off ^ 0xabcdef)) fail("touched page at %zu", off);
    if (*(uint64_t *)(m + off + 4096) != 0) fail("untouched page at %zu not zero", off + 4096);
  }
  /* The whole reservation is still mapped and usable. */
  m[size - 1] = 1;
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  int found = 0;
  unsigned long a, b;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%lx-%lx", &a, &b) == 2 && a <= (unsigned long)m && b >= (unsigned long)m + size) found = 1;
  fclose(f);
  if (!found) fail("1 GiB mapping not found whole in /proc/self/maps");
  pass();
}
