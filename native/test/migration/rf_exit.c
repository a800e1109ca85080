/*
 * rf_exit: what the parent's wait() sees of rfork()ed children: every exit
 * code 0-255, and death by each fatal signal, with `batch` children at a time.
 * Prints "OK" and exits 0 when every status matched.
 */
#include "zdtm.h"

#include <signal.h>
#include <sys/resource.h>

static const int SIGS[] = {SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGUSR1, SIGSEGV,
                           SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGSYS};

int main(int argc, char **argv) {
  ZDTM_INIT("rf_exit", argc, argv);
  int batch = argc > 2 ? atoi(argv[2]) : 16;
  int ncodes = 256, nsigs = (int)(sizeof SIGS / sizeof *SIGS), total = ncodes + nsigs, bad = 0;
  for (int base = 0; base < total; base += batch) {
    pid_t pids[256];
    int n = base + batch > total ? total - base : batch;
    for (int k = 0; k < n; k++) {
      int i = base + k;
      pid_t pid = rfork();
      if (pid < 0) fail("rfork %d: %s", i, rex_last_error());
      if (pid == 0) {
        if (i < ncodes) _exit(i);
        struct rlimit no = {0, 0};
        setrlimit(RLIMIT_CORE, &no);
        signal(SIGS[i - ncodes], SIG_DFL);
        raise(SIGS[i - ncodes]);
        _exit(250);
      }
      pids[k] = pid;
    }
    for (int k = 0; k < n; k++) {
      int i = base + k, st;
      if (waitpid(pids[k], &st, 0) != pids[k]) fail("waitpid %d: %s", i, strerror(errno));
      int ok = i < ncodes ? (WIFEXITED(st) && WEXITSTATUS(st) == i) : (WIFSIGNALED(st) && WTERMSIG(st) == SIGS[i - ncodes]);
      if (!ok) {
        printf("MISMATCH child %d: status 0x%x\n", i, st);
        bad++;
      }
    }
  }
  if (bad) fail("%d statuses differ", bad);
  printf("OK %d children\n", total);
  return 0;
}
