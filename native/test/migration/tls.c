/* tls: __thread variables (initialised, zero, an array) and the thread pointer itself. */
#include "zdtm.h"

static __thread int tls_init = 1234;
static __thread unsigned long tls_zero;
static __thread char tls_text[64];

int main(int argc, char **argv) {
  ZDTM_INIT("tls", argc, argv);
  tls_init += 1;
  tls_zero = 0xfeedfacecafebeefull;
  strcpy(tls_text, "thread-local text");
  void *tp_before;
  __asm__("mov %%fs:0, %0" : "=r"(tp_before));
  zdtm_migrate(argv[1]);
  void *tp_after;
  __asm__("mov %%fs:0, %0" : "=r"(tp_after));
  if (tp_before != tp_after) fail("thread pointer %p, was %p", tp_after, tp_before);
  if (tls_init != 1235) fail("tls_init %d", tls_init);
  if (tls_zero != 0xfeedfacecafebeefull) fail("tls_zero %lx", tls_zero);
  if (strcmp(tls_text, "thread-local text")) fail("tls_text '%s'", tls_text);
  pass();
}
