/* neg_threads: a process with a second thread is refused with EBUSY naming the count. */
#include "zdtm.h"

#include <pthread.h>

static void *sleeper(void *arg) {
  (void)arg;
  pause();
  return NULL;
}

int main(int argc, char **argv) {
  ZDTM_INIT("neg_threads", argc, argv);
  pthread_t t;
  pthread_create(&t, NULL, sleeper, NULL);
  if (zdtm_dump(argv[1], 0) == 1) pass();
  printf("DUMPED neg_threads\n");
  return 0;
}
