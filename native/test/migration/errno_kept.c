/* errno_kept: errno survives the dump in both copies (the dumper must not touch it). */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("errno_kept", argc, argv);
  int fd = zdtm_open_image(argv[1]);
  errno = EDOM;
  int r = rex_dump_self(fd, 0, &zdtm_info);
  int e = errno;
  if (r < 0) {
    printf("DUMPFAIL errno_kept: %s\n", rex_last_error());
    return 2;
  }
  if (r == 0) {
    if (e != EDOM) {
      printf("DUMPFAIL errno_kept: errno %d in the original after the dump\n", e);
      return 2;
    }
    printf("DUMPED errno_kept %llu %llu\n", (unsigned long long)zdtm_info.image_bytes, (unsigned long long)zdtm_info.data_pages);
    return 0;
  }
  if (e != EDOM) fail("errno %d, expected EDOM %d", e, EDOM);
  pass();
}
