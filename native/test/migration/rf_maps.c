/* rf_maps: prints which file the moved child's program text is mapped from ("MAPPED path"): the origin's file or a cached copy. */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("rf_maps", argc, argv);
  zdtm_migrate(argv[1]);
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) fail("maps");
  char line[4096];
  unsigned long self = (unsigned long)(void *)main;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    int at = 0;
    if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &at) < 2 || self < lo || self >= hi) continue;
    line[strcspn(line, "\n")] = '\0';
    printf("MAPPED %s\n", line + at);
    pass();
  }
  fail("main at %lx is in no mapping", self);
}
