/* rseq_brk: rseq is registered again (sched_getcpu is fresh) and the kernel's mm bounds are the image's. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <sched.h>
#include <stdint.h>
#include <sys/rseq.h>
#include <sys/syscall.h>

/* Fields 26-28 and 45-51 of /proc/self/stat. */
static void mm_fields(unsigned long long out[60]) {
  char buf[4096];
  FILE *f = fopen("/proc/self/stat", "r");
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')') + 2;
  memset(out, 0, 60 * sizeof out[0]);
  for (int field = 3; field < 60 && *p; field++) {
    out[field] = strtoull(p, &p, 10);
    if (*p && *p != ' ') while (*p && *p != ' ') p++;
    while (*p == ' ') p++;
  }
}

int main(int argc, char **argv) {
  ZDTM_INIT("rseq_brk", argc, argv);
  unsigned long long before[60], after[60];
  mm_fields(before);
  zdtm_migrate(argv[1]);
  mm_fields(after);
  static const int fields[] = {26, 27, 28, 45, 46, 47, 48, 49, 50, 51};
  for (unsigned i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (before[fields[i]] != after[fields[i]]) fail("/proc/self/stat field %d: %llx, was %llx", fields[i], after[fields[i]], before[fields[i]]);
  if (__rseq_size > 0) {
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    long r = syscall(SYS_rseq, rs, 32, 0, 0x53053053);
    if (!(r == -1 && errno == EBUSY)) fail("rseq area not registered after restore (rseq gave %ld errno %d)", r, errno);
    for (int i = 0; i < 1000; i++) {
      int cpu = sched_getcpu();
      if (cpu < 0 || (int)rs->cpu_id < 0) fail("sched_getcpu %d, rseq cpu_id %d", cpu, (int)rs->cpu_id);
    }
  }
  pass();
}
