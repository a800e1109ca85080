/*
 * mutex_held: an error-checking mutex locked before the dump is still owned
 * by the restored process (glibc keeps the old thread id in the TCB, and the
 * restorer leaves it, docs/RFORK.md), so it unlocks and relocks cleanly.
 */
#include "zdtm.h"

#include <pthread.h>

int main(int argc, char **argv) {
  ZDTM_INIT("mutex_held", argc, argv);
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
  static pthread_mutex_t m;
  pthread_mutex_init(&m, &a);
  static pthread_mutex_t plain = PTHREAD_MUTEX_INITIALIZER;
  if (pthread_mutex_lock(&m) || pthread_mutex_lock(&plain)) fail("lock before");
  zdtm_migrate(argv[1]);
  if (pthread_mutex_trylock(&plain) != EBUSY) fail("plain mutex not held after restore");
  if (zdtm_by_rfork) {
    /* As after fork(): the parent's thread owns the error-checking mutex; a plain one the child may release. */
    int r = pthread_mutex_unlock(&m);
    if (r != EPERM) fail("unlocking the parent's error-checking mutex gave %d, expected EPERM", r);
    if ((r = pthread_mutex_unlock(&plain)) || (r = pthread_mutex_lock(&plain))) fail("plain mutex: %s", strerror(r));
    pthread_mutex_unlock(&plain);
    pass();
  }
  int r = pthread_mutex_lock(&m);
  if (r != EDEADLK) fail("relocking an owned error-checking mutex gave %d, expected EDEADLK", r);
  if ((r = pthread_mutex_unlock(&m))) fail("unlock: %s", strerror(r));
  if ((r = pthread_mutex_unlock(&plain))) fail("unlock plain: %s", strerror(r));
  if ((r = pthread_mutex_lock(&m))) fail("relock: %s", strerror(r));
  pthread_mutex_unlock(&m);
  pass();
}
