/* nested: the restored copy dumps itself again to IMAGE.2; that copy, restored in turn, sees both generations' state. */
#include "zdtm.h"

static int generation;

int main(int argc, char **argv) {
  ZDTM_INIT("nested", argc, argv);
  char second[4096];
  snprintf(second, sizeof second, "%s.2", argv[1]);
  generation = 1;
  zdtm_migrate(argv[1]);
  generation = 2;
  pid_t first_pid = zdtm_info.origin_pid, restored_pid = getpid();
  if (zdtm_dump(second, 0) == 0) {
    printf("DUMPED nested.2 %llu\n", (unsigned long long)zdtm_info.image_bytes);
    exit(0);
  }
  if (generation != 2) fail("generation %d", generation);
  if (zdtm_info.origin_pid != restored_pid) fail("origin pid %d, expected %d", zdtm_info.origin_pid, restored_pid);
  if (first_pid == restored_pid || zdtm_info.pid == restored_pid) fail("pids did not change");
  pass();
}
