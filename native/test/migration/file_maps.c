/*
 * file_maps: a private file mapping keeps its copied-on-write pages and maps
 * the rest from the file; a shared file mapping is the file itself again.
 */
#include "zdtm.h"

#include <stdint.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
  ZDTM_INIT("file_maps", argc, argv);
  char path[4096];
  snprintf(path, sizeof path, "%s.data", argv[1]);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  uint8_t buf[4 * 4096];
  for (unsigned i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i % 251);
  if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) fail("write");
  uint8_t *priv = mmap(NULL, sizeof buf, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  uint8_t *shared = mmap(NULL, sizeof buf, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (priv == MAP_FAILED || shared == MAP_FAILED) fail("mmap");
  priv[4096 + 5] = 0xee;      /* page 1 copied on write */
  (void)*(volatile uint8_t *)(priv + 2 * 4096); /* page 2 read: stays the file's */
  close(fd);
  zdtm_migrate(argv[1]);
  if (priv[4096 + 5] != 0xee) fail("copied-on-write byte lost");
  for (unsigned i = 0; i < sizeof buf; i++)
    if (i != 4096 + 5 && priv[i] != (uint8_t)(i % 251)) fail("private byte %u = %u", i, priv[i]);
  shared[100] = 0x42;
  msync(shared, sizeof buf, MS_SYNC);
  fd = open(path, O_RDONLY);
  uint8_t b = 0;
  if (pread(fd, &b, 1, 100) != 1 || b != 0x42) fail("shared mapping is not the file (read %u)", b);
  close(fd);
  unlink(path);
  pass();
}
