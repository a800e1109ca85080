/* signal_after: another process (a child forked after the restore) signals the restored process. */
#include "zdtm.h"

#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t from_pid;

static void on_usr1(int sig, siginfo_t *si, void *uc) {
  (void)sig, (void)uc;
  from_pid = si->si_pid;
}

int main(int argc, char **argv) {
  ZDTM_INIT("signal_after", argc, argv);
  struct sigaction sa = {0};
  sa.sa_sigaction = on_usr1;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGUSR1, &sa, NULL);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  sigprocmask(SIG_BLOCK, &block, &old);
  zdtm_migrate(argv[1]);
  pid_t me = getpid();
  pid_t child = fork();
  if (child < 0) fail("fork: %s", strerror(errno));
  if (child == 0) {
    kill(me, SIGUSR1);
    _exit(0);
  }
  while (!from_pid) sigsuspend(&old);
  int st;
  waitpid(child, &st, 0);
  if (from_pid != child) fail("signal from %d, expected %d", (int)from_pid, (int)child);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail("child status %x", st);
  pass();
}
