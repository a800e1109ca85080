/* malloc_after: the allocator keeps working on the restored heap (brk and mmap'd chunks alike). */
#include "zdtm.h"

#include <stdint.h>

int main(int argc, char **argv) {
  ZDTM_INIT("malloc_after", argc, argv);
  enum { N = 4096 };
  static char *before[N];
  for (int i = 0; i < N; i++) {
    before[i] = malloc((size_t)(i % 300) + 1);
    memset(before[i], i & 0xff, (size_t)(i % 300) + 1);
  }
  char *big_before = malloc(8u << 20); /* an mmap'd chunk */
  memset(big_before, 0x5a, 8u << 20);
  void *brk_before = sbrk(0);
  zdtm_migrate(argv[1]);
  if (sbrk(0) != brk_before) fail("brk %p, was %p", sbrk(0), brk_before);
  for (int i = 0; i < N; i++) {
    for (int k = 0; k <= i % 300; k++)
      if (before[i][k] != (char)(i & 0xff)) fail("block %d byte %d", i, k);
    if (i % 2) free(before[i]), before[i] = NULL;
  }
  free(big_before);
  static void *p[1000];
  for (int round = 0; round < 200; round++) {
    for (int i = 0; i < 1000; i++) {
      p[i] = realloc(p[i], (size_t)((i * 37 + round * 11) % 2000) + 1);
      if (!p[i]) fail("realloc");
      ((char *)p[i])[0] = (char)i;
    }
    for (int i = 0; i < 1000; i += 3) free(p[i]), p[i] = NULL;
  }
  char *big = malloc(50u << 20);
  if (!big) fail("malloc 50 MiB");
  memset(big, 1, 50u << 20);
  big = realloc(big, 80u << 20);
  if (!big || big[(50u << 20) - 1] != 1) fail("realloc 80 MiB");
  free(big);
  /* Heap growth past the old brk lands right after it: the brk bounds came back. */
  void *grown = sbrk(1 << 20);
  if (grown == (void *)-1) fail("sbrk after restore: %s", strerror(errno));
  memset(grown, 2, 1 << 20);
  for (int i = 0; i < N; i++) free(before[i]);
  pass();
}
