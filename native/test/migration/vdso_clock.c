/*
 * vdso_clock: the vDSO sits where the image's glibc expects it, and
 * clock_gettime through it keeps working; CLOCK_MONOTONIC never goes back.
 */
#include "zdtm.h"

#include <sys/auxv.h>
#include <sys/time.h>
#include <time.h>

static long long ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Start address of the [vdso] line in /proc/self/maps, 0 if none. */
static unsigned long vdso_in_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  unsigned long start = 0, a, b;
  while (f && fgets(line, sizeof line, f))
    if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &a, &b) == 2) start = a;
  if (f) fclose(f);
  return start;
}

int main(int argc, char **argv) {
  ZDTM_INIT("vdso_clock", argc, argv);
  long long before = ns(CLOCK_MONOTONIC);
  unsigned long vdso = getauxval(AT_SYSINFO_EHDR);
  zdtm_migrate(argv[1]);
  long long after = ns(CLOCK_MONOTONIC);
  if (after < before) fail("CLOCK_MONOTONIC went back: %lld -> %lld", before, after);
  unsigned long now = vdso_in_maps();
  if (now != vdso) fail("[vdso] at %lx, AT_SYSINFO_EHDR says %lx", now, vdso);
  long long prev = after;
  for (int i = 0; i < 200000; i++) {
    long long t = ns(CLOCK_MONOTONIC);
    if (t < prev) fail("CLOCK_MONOTONIC went back at call %d", i);
    prev = t;
  }
  struct timeval tv;
  gettimeofday(&tv, NULL);
  time_t t = time(NULL);
  if (tv.tv_sec < 1700000000 || t < 1700000000 || ns(CLOCK_REALTIME) / 1000000000ll < 1700000000) fail("realtime clocks");
  if (ns(CLOCK_BOOTTIME) <= 0 || ns(CLOCK_PROCESS_CPUTIME_ID) <= 0) fail("other clocks");
  pass();
}
