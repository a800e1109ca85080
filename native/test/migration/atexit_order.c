/* atexit_order: handlers registered before the dump run, in reverse order, when the restored copy exits. */
#include "zdtm.h"

static int restored;
static void first(void) {
  if (restored) printf("ATEXIT first\n");
}
static void second(void) {
  if (restored) printf("ATEXIT second\n");
}

int main(int argc, char **argv) {
  ZDTM_INIT("atexit_order", argc, argv);
  atexit(first);
  atexit(second);
  zdtm_migrate(argv[1]);
  restored = 1;
  printf("PASS atexit_order (handlers follow)\n");
  exit(0);
}
