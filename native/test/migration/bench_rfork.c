/*
 * bench_rfork: the benchmark's subject (bench/rfork-local.mjs), not a fidelity test.
 *   bench_rfork IMAGE MIB PERCENT
 * maps MIB MiB and touches PERCENT of its pages, times fork()+_exit+waitpid
 * in that state (the local baseline), then dumps itself and reports the dump
 * time; the restored copy reports the restorer's own time and exits 0.
 */
#include "zdtm.h"

#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  ZDTM_INIT("bench_rfork", argc, argv);
  size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 0;
  unsigned percent = argc > 3 ? (unsigned)atoi(argv[3]) : 100;
  size_t size = mib << 20, pages = size / 4096;
  if (size) {
    uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("mmap");
    for (size_t p = 0; p < pages; p++)
      if (p * percent / 100 != (p + 1) * percent / 100) m[p * 4096] = (uint8_t)(p | 1);
  }
  enum { FORKS = 15 };
  long long t[FORKS];
  for (int i = 0; i < FORKS; i++) {
    long long t0 = now_ns();
    pid_t c = fork();
    if (c == 0) _exit(0);
    waitpid(c, NULL, 0);
    t[i] = now_ns() - t0;
  }
  qsort(t, FORKS, sizeof t[0], cmp);
  int fd = zdtm_open_image(argv[1]);
  long long t0 = now_ns();
  int r = rex_dump_self(fd, 0, &zdtm_info);
  long long dump_ns = now_ns() - t0;
  if (r < 0) {
    printf("DUMPFAIL bench_rfork: %s\n", rex_last_error());
    return 2;
  }
  if (r == 0) {
    printf("DUMPED bench_rfork bytes %llu pages %llu private %llu dump_ns %lld fork_ns %lld\n",
           (unsigned long long)zdtm_info.image_bytes, (unsigned long long)zdtm_info.data_pages,
           (unsigned long long)zdtm_info.private_pages, dump_ns, t[FORKS / 2]);
    return 0;
  }
  long long resumed = now_ns();
  printf("RESTORED restore_ns %llu first_instruction_to_c_ns %lld\n", (unsigned long long)zdtm_info.restore_ns,
         resumed - (long long)zdtm_info.restore_start_ns);
  return 0;
}
