/*
 * rf_kill: signals from the parent to the stub reach the moved child (even one
 * the parent had blocked at rfork time): USR1
 * runs the child's handler (it exits 0 after it), TERM kills it, and kill(SIGKILL)
 * of the stub ends the remote child too (the stub is gone; rexd ends its job).
 */
#include "zdtm.h"

#include <signal.h>

static volatile sig_atomic_t got;
static void on_usr1(int s) { got = s; }

static pid_t start(int *ready_rd) {
  int p[2];
  if (pipe(p)) fail("pipe");
  pid_t pid = rfork();
  if (pid < 0) fail("rfork: %s", rex_last_error());
  if (pid == 0) {
    close(p[0]); /* the stub reads what a moved child may read: a child closes the ends it does not use (docs/RFORK.md) */
    signal(SIGUSR1, on_usr1);
    sigset_t u;
    sigemptyset(&u);
    sigaddset(&u, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &u, NULL); /* the parent blocked it: the child's mask moved with it */
    pid_t me = getpid();
    if (write(p[1], &me, sizeof me) != sizeof me) _exit(9);
    for (int i = 0; i < 3000 && !got; i++) usleep(10000);
    _exit(got == SIGUSR1 ? 0 : 8);
  }
  close(p[1]);
  *ready_rd = p[0];
  return pid;
}

int main(int argc, char **argv) {
  ZDTM_INIT("rf_kill", argc, argv);
  int rd, st;
  pid_t c;
  /* With USR1 blocked in the parent, the stub (which inherits that mask) must still relay it. */
  sigset_t u;
  sigemptyset(&u);
  sigaddset(&u, SIGUSR1);
  sigprocmask(SIG_BLOCK, &u, NULL);
  signal(SIGUSR1, on_usr1); /* inherited: a USR1 sent the moment rfork() returns finds the handler in the child */
  pid_t a = start(&rd);
  if (read(rd, &c, sizeof c) != sizeof c) fail("child a never ready");
  kill(a, SIGUSR1);
  waitpid(a, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail("USR1: status 0x%x", st);
  /* At once: the stub relays signals from the moment rfork() returns in the parent. */
  pid_t d = start(&rd);
  kill(d, SIGUSR1);
  if (read(rd, &c, sizeof c) != sizeof c) fail("child d never ready");
  waitpid(d, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail("USR1 at once: status 0x%x", st);
  pid_t b = start(&rd);
  if (read(rd, &c, sizeof c) != sizeof c) fail("child b never ready");
  kill(b, SIGTERM);
  waitpid(b, &st, 0);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGTERM) fail("TERM: status 0x%x", st);
  pid_t k = start(&rd);
  if (read(rd, &c, sizeof c) != sizeof c) fail("child k never ready");
  printf("KCHILD %d\n", (int)c); /* the moved child's pid on the executor: the test checks it ends */
  kill(k, SIGKILL);
  waitpid(k, &st, 0);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) fail("KILL: status 0x%x", st);
  printf("OK\n");
  return 0;
}
