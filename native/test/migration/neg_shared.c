/*
 * neg_shared: shared memory cannot be carried. argv[2] picks the kind:
 * "anon" (MAP_SHARED|MAP_ANONYMOUS), "sysv" (shmat), or "skip" (shared anon
 * with REX_DUMP_SKIP_SHARED, which must then succeed).
 */
#include "zdtm.h"

#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

int main(int argc, char **argv) {
  ZDTM_INIT("neg_shared", argc, argv);
  const char *kind = argc > 2 ? argv[2] : "anon";
  void *p;
  int shmid = -1;
  if (!strcmp(kind, "sysv")) {
    shmid = shmget(IPC_PRIVATE, 65536, IPC_CREAT | 0600);
    p = shmat(shmid, NULL, 0);
    shmctl(shmid, IPC_RMID, NULL); /* gone once detached */
  } else {
    p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  }
  printf("MAPPING %lx\n", (unsigned long)p);
  fflush(stdout);
  unsigned flags = !strcmp(kind, "skip") ? REX_DUMP_SKIP_SHARED : 0;
  if (zdtm_dump(argv[1], flags) == 1) pass();
  printf("DUMPED neg_shared\n");
  return 0;
}
