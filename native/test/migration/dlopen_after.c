/* dlopen_after: the dynamic loader maps a new library after the restore (zlib is part of every Debian). */
#include "zdtm.h"

#include <dlfcn.h>

int main(int argc, char **argv) {
  ZDTM_INIT("dlopen_after", argc, argv);
  zdtm_migrate(argv[1]);
  void *h = dlopen("libz.so.1", RTLD_NOW);
  if (!h) fail("dlopen: %s", dlerror());
  unsigned long (*crc32)(unsigned long, const unsigned char *, unsigned) =
      (unsigned long (*)(unsigned long, const unsigned char *, unsigned))dlsym(h, "crc32");
  if (!crc32) fail("dlsym crc32: %s", dlerror());
  unsigned long c = crc32(0, (const unsigned char *)"123456789", 9);
  if (c != 0xcbf43926ul) fail("crc32 %lx", c);
  if (dlclose(h)) fail("dlclose: %s", dlerror());
  pass();
}
