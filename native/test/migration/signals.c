/*
 * signals: handlers with flags and masks, ignored and blocked signals and the
 * alternate stack come back; a raised signal then runs its handler on the
 * alternate stack.
 */
#include "zdtm.h"

#include <signal.h>
#include <stdint.h>

static char altstack[65536];
static volatile sig_atomic_t got_usr1;
static volatile uintptr_t handler_sp;

static void on_usr1(int sig, siginfo_t *si, void *uc) {
  (void)si, (void)uc;
  volatile char here;
  handler_sp = (uintptr_t)&here;
  got_usr1 = sig;
}

static void on_hup(int sig) { (void)sig; }

int main(int argc, char **argv) {
  ZDTM_INIT("signals", argc, argv);
  struct sigaction sa = {0};
  sa.sa_sigaction = on_usr1;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGUSR2);
  sigaddset(&sa.sa_mask, SIGALRM);
  if (sigaction(SIGUSR1, &sa, NULL)) fail("sigaction");
  struct sigaction hup = {0};
  hup.sa_handler = on_hup;
  hup.sa_flags = SA_RESETHAND;
  sigaction(SIGHUP, &hup, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  sigaddset(&block, SIGRTMIN + 3);
  sigprocmask(SIG_BLOCK, &block, NULL);
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
  if (sigaltstack(&ss, NULL)) fail("sigaltstack");

  zdtm_migrate(argv[1]);

  struct sigaction now;
  sigaction(SIGUSR1, NULL, &now);
  if (now.sa_sigaction != on_usr1) fail("SIGUSR1 handler %p", (void *)now.sa_sigaction);
  if ((now.sa_flags & (SA_SIGINFO | SA_ONSTACK | SA_RESTART)) != (SA_SIGINFO | SA_ONSTACK | SA_RESTART)) fail("SIGUSR1 flags %x", now.sa_flags);
  if (!sigismember(&now.sa_mask, SIGUSR2) || !sigismember(&now.sa_mask, SIGALRM) || sigismember(&now.sa_mask, SIGINT))
    fail("SIGUSR1 handler mask");
  sigaction(SIGHUP, NULL, &now);
  if (now.sa_handler != on_hup || !(now.sa_flags & SA_RESETHAND)) fail("SIGHUP handler or SA_RESETHAND");
  sigaction(SIGPIPE, NULL, &now);
  if (now.sa_handler != SIG_IGN) fail("SIGPIPE not ignored");
  sigaction(SIGTERM, NULL, &now);
  if (now.sa_handler != SIG_DFL) fail("SIGTERM not default");
  sigset_t mask;
  sigprocmask(SIG_SETMASK, NULL, &mask);
  if (!sigismember(&mask, SIGUSR2) || !sigismember(&mask, SIGRTMIN + 3) || sigismember(&mask, SIGUSR1)) fail("signal mask");
  stack_t cur;
  sigaltstack(NULL, &cur);
  if (cur.ss_sp != altstack || cur.ss_size != sizeof altstack || (cur.ss_flags & SS_DISABLE)) fail("sigaltstack %p %zu %x", cur.ss_sp, cur.ss_size, cur.ss_flags);
  raise(SIGUSR1);
  if (got_usr1 != SIGUSR1) fail("SIGUSR1 handler did not run");
  if (handler_sp < (uintptr_t)altstack || handler_sp >= (uintptr_t)altstack + sizeof altstack) fail("handler ran off the alternate stack");
  pass();
}
