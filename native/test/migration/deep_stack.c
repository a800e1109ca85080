/* deep_stack: the migration happens 20000 frames deep; every frame checks its locals on the way back. */
#include "zdtm.h"

static const char *image;

static unsigned long recurse(unsigned depth, unsigned long acc) {
  volatile unsigned long local[8];
  for (int i = 0; i < 8; i++) local[i] = acc * 31 + depth + (unsigned)i;
  unsigned long below = depth == 0 ? (zdtm_migrate(image), 1ul) : recurse(depth - 1, acc * 3 + depth);
  for (int i = 0; i < 8; i++)
    if (local[i] != acc * 31 + depth + (unsigned)i) fail("frame at depth %u lost local %d", depth, i);
  return below + local[7] % 5;
}

static unsigned long expected(unsigned depth, unsigned long acc) {
  unsigned long below = depth == 0 ? 1ul : expected(depth - 1, acc * 3 + depth);
  return below + (acc * 31 + depth + 7) % 5;
}

int main(int argc, char **argv) {
  ZDTM_INIT("deep_stack", argc, argv);
  image = argv[1];
  unsigned long want = expected(20000, 1);
  unsigned long got = recurse(20000, 1);
  if (got != want) fail("result %lu, expected %lu", got, want);
  pass();
}
