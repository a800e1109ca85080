/* hello: the smallest round trip: a global, a stack variable and stdout survive. */
#include "zdtm.h"

static int counter = 41;

int main(int argc, char **argv) {
  ZDTM_INIT("hello", argc, argv);
  volatile int local = 7;
  counter++;
  zdtm_migrate(argv[1]);
  printf("hello again: pid %d, dumped by pid %d, restore took %llu us\n", getpid(), zdtm_info.origin_pid,
         (unsigned long long)zdtm_info.restore_ns / 1000);
  if (counter != 42) fail("counter %d", counter);
  if (local != 7) fail("local %d", local);
  if (zdtm_by_rfork && rgetpid() == getpid()) fail("rgetpid() is the executor's pid %d", getpid());
  if (!zdtm_by_rfork && zdtm_info.pid != getpid()) fail("info.pid %d, getpid %d", zdtm_info.pid, getpid());
  pass();
}
