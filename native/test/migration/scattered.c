/*
 * scattered: memory touched in fine-grained patterns, which the dumper lists
 * with page bitmaps (image version 2): every tenth page of 64 MiB, every other
 * page of a read-only region (1000 pages), scattered pages behind PROT_NONE
 * (777 pages, read through /proc/self/mem), a dense block (400 pages) and
 * runs of five pages every 37 (4000 pages, executable); the neighbours'
 * protections differ, so the kernel keeps them five regions. Every page keeps its own content and
 * every untouched page stays zero.
 *   scattered IMAGE [MIB]
 */
#include "zdtm.h"

#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096u

static uint64_t tag(uint64_t region, uint64_t page) { return (region << 40) ^ (page * 0x9E3779B97F4A7C15ull) ^ 1; }

/* Writes the tag into the first and last word of each chosen page. */
static void touch(uint8_t *m, uint64_t region, uint64_t page) {
  uint64_t t = tag(region, page);
  memcpy(m + page * PAGE, &t, 8);
  memcpy(m + page * PAGE + PAGE - 8, &t, 8);
}

static void verify(const uint8_t *m, uint64_t region, uint64_t pages, int (*chosen)(uint64_t)) {
  for (uint64_t p = 0; p < pages; p++) {
    uint64_t a, b, t = chosen(p) ? tag(region, p) : 0;
    memcpy(&a, m + p * PAGE, 8);
    memcpy(&b, m + p * PAGE + PAGE - 8, 8);
    if (a != t || b != t) fail("region %llu page %llu: %llx/%llx, expected %llx", (unsigned long long)region,
                               (unsigned long long)p, (unsigned long long)a, (unsigned long long)b, (unsigned long long)t);
  }
}

static int every_tenth(uint64_t p) { return p % 10 == 3; }
static int every_other(uint64_t p) { return p % 2 == 0; }
static int primes_ish(uint64_t p) { return p % 7 == 1 || p % 13 == 5; }
static int dense(uint64_t p) { return p >= 17 && p < 17 + 300; }
/* Runs of five pages every 37: over 4000 pages some cross every position of a bitmap word, its boundary included. */
static int fives(uint64_t p) { return p % 37 < 5; }

int main(int argc, char **argv) {
  ZDTM_INIT("scattered", argc, argv);
  uint64_t mib = argc > 2 ? (uint64_t)atol(argv[2]) : 64;
  uint64_t n1 = mib << 8, n2 = 1000, n3 = 777, n4 = 400, n5 = 4000;
  uint8_t *m1 = mmap(NULL, n1 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint8_t *m2 = mmap(NULL, n2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint8_t *m3 = mmap(NULL, n3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint8_t *m4 = mmap(NULL, n4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  /* PROT_EXEC keeps it a region of its own next to its read-write neighbours. */
  uint8_t *m5 = mmap(NULL, n5 * PAGE, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m1 == MAP_FAILED || m2 == MAP_FAILED || m3 == MAP_FAILED || m4 == MAP_FAILED || m5 == MAP_FAILED) fail("mmap");
  /* The read-write ones may land next to another read-write anonymous mapping (a hole in the address space) and
     merge with it; a VMA flag of their own (not carried by the image) keeps each its own region, found by size. */
  if (madvise(m1, n1 * PAGE, MADV_DONTFORK) || madvise(m4, n4 * PAGE, MADV_DONTDUMP)) fail("madvise");
  for (uint64_t p = 0; p < n1; p++) if (every_tenth(p)) touch(m1, 1, p);
  for (uint64_t p = 0; p < n2; p++) if (every_other(p)) touch(m2, 2, p);
  for (uint64_t p = 0; p < n3; p++) if (primes_ish(p)) touch(m3, 3, p);
  for (uint64_t p = 0; p < n4; p++) if (dense(p)) touch(m4, 4, p);
  for (uint64_t p = 0; p < n5; p++) if (fives(p)) touch(m5, 5, p);
  mprotect(m2, n2 * PAGE, PROT_READ);
  mprotect(m3, n3 * PAGE, PROT_NONE);
  zdtm_migrate(argv[1]);
  verify(m1, 1, n1, every_tenth);
  verify(m2, 2, n2, every_other);
  mprotect(m3, n3 * PAGE, PROT_READ);
  verify(m3, 3, n3, primes_ish);
  verify(m4, 4, n4, dense);
  verify(m5, 5, n5, fives);
  /* The zero pages must still be fresh: writing one must not disturb its neighbours. */
  m1[PAGE * 4] = 1;
  if (m1[PAGE * 3] != (uint8_t)tag(1, 3)) fail("neighbour of a new write");
  pass();
}
