/*
 * mem256: 256 MiB of touched memory (or the share of its pages given by
 * argv[2] in percent, for the benchmark) moves and reads back intact.
 */
#include "zdtm.h"

#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

int main(int argc, char **argv) {
  ZDTM_INIT("mem256", argc, argv);
  size_t size = 256u << 20, pages = size / 4096;
  unsigned percent = argc > 2 ? (unsigned)atoi(argv[2]) : 100;
  uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) fail("mmap");
  for (size_t p = 0; p < pages; p++)
    if (p * percent / 100 != (p + 1) * percent / 100) /* spreads the touched pages evenly */
      for (size_t k = 0; k < 4096; k += 512) *(uint64_t *)(m + p * 4096 + k) = p * 0x9e3779b97f4a7c15ull + k;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int fd = zdtm_open_image(argv[1]);
  int r = rex_dump_self(fd, 0, &zdtm_info);
  if (r < 0) {
    printf("DUMPFAIL mem256: %s\n", rex_last_error());
    return 2;
  }
  if (r == 0) {
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("DUMPED mem256 %llu %llu dump_ns %lld\n", (unsigned long long)zdtm_info.image_bytes,
           (unsigned long long)zdtm_info.data_pages,
           (t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
    return 0;
  }
  printf("RESTORED restore_ns %llu\n", (unsigned long long)zdtm_info.restore_ns);
  for (size_t p = 0; p < pages; p++) {
    int touched = p * percent / 100 != (p + 1) * percent / 100;
    for (size_t k = 0; k < 4096; k += 512) {
      uint64_t v = *(uint64_t *)(m + p * 4096 + k);
      if (v != (touched ? p * 0x9e3779b97f4a7c15ull + k : 0)) fail("page %zu offset %zu: %llx", p, k, (unsigned long long)v);
    }
  }
  pass();
}
