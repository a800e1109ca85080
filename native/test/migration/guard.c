/*
 * guard: PROT_NONE guard pages stay inaccessible, a PROT_NONE page that held
 * data keeps it (the dumper reads it through /proc/self/mem), read-only pages
 * stay read-only.
 */
#include "zdtm.h"

#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>

static sigjmp_buf jb;
static void on_segv(int sig) { siglongjmp(jb, sig); }

static int faults(volatile uint8_t *p, int write) {
  if (sigsetjmp(jb, 1)) return 1;
  if (write) *p = 1;
  else (void)*p;
  return 0;
}

int main(int argc, char **argv) {
  ZDTM_INIT("guard", argc, argv);
  signal(SIGSEGV, on_segv);
  uint8_t *m = mmap(NULL, 5 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  for (int i = 0; i < 5 * 4096; i++) m[i] = (uint8_t)(i * 3);
  mprotect(m + 4096, 4096, PROT_NONE);          /* guard with data behind it */
  mprotect(m + 2 * 4096, 4096, PROT_READ);      /* read-only data */
  uint8_t *fresh_guard = mmap(NULL, 3 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  mprotect(fresh_guard + 4096, 4096, PROT_READ | PROT_WRITE);
  fresh_guard[4096] = 77;
  zdtm_migrate(argv[1]);
  if (!faults(m + 4096, 0)) fail("guard page readable");
  if (!faults(m + 2 * 4096, 1)) fail("read-only page writable");
  if (faults(m + 2 * 4096, 0)) fail("read-only page unreadable");
  if (!faults(fresh_guard, 0) || !faults(fresh_guard + 2 * 4096, 1)) fail("fresh guard pages accessible");
  if (fresh_guard[4096] != 77) fail("page between guards");
  mprotect(m + 4096, 4096, PROT_READ);
  for (int i = 0; i < 5 * 4096; i++)
    if (m[i] != (uint8_t)(i * 3)) fail("byte %d = %u", i, m[i]);
  pass();
}
