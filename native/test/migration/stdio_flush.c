/* stdio_flush: output buffered before the dump is written once, not once per copy. */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("stdio_flush", argc, argv);
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  printf("BEFORE-DUMP ");
  int fd = zdtm_open_image(argv[1]);
  int r = rex_dump_self(fd, 0, &zdtm_info);
  if (r < 0) return 2;
  if (r == 0) {
    printf("DUMPED stdio_flush\n");
    return 0;
  }
  printf("AFTER-RESTORE\n");
  pass();
}
