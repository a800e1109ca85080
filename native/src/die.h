/*
 * die.h: ending like a process that was killed by a signal, for the two
 * programs that stand in for a remote one (the stub in rexec.c and the
 * pseudo-terminal helper native/pty/rex_pty.c), so that a parent's wait()
 * sees the same death. Include after the feature macros of the file.
 */
#ifndef REX_DIE_H
#define REX_DIE_H

#include <signal.h>
#include <sys/resource.h>

/*
 * Dies of sig: its default action, unblocked, and no core file of our own
 * (the real program dumped its own). Returns only for a signal whose
 * default is to ignore it (CHLD, URG, WINCH); the caller then exits
 * 128 + sig, as a shell reports it.
 */
static inline void rex__die_of(int sig) {
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(sig);
}

#endif /* REX_DIE_H */
