/*
 * test_rfork_1.c : simple fork() of process to run on least-loaded host
 * (the 2009 guide's Example #1, with its typos fixed: gethostname() takes a
 * buffer, rgethostname is a call, wait(pid) is waitpid(pid, ...)).
 *
 *   cc -o test_rfork_1 test_rfork_1.c -I native/include native/build/lib/librex.a -lm
 */
#define _DEFAULT_SOURCE /* gethostname under -std=c11 */
#include <errno.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rex.h>

static const char *host(void) {
  static char name[256];
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

int main(int argc, char **argv, char **envp) {
  (void)argc, (void)argv, (void)envp;
  printf("parent %u runs on host %s - load: %g\n", (unsigned)getpid(), host(), rload());
  pid_t pid = rfork();
  if (pid == 0)
    printf("child %u parent %u origin pid %u origin parent %u origin host %s runs on host %s - REX loadavg: %g\n",
           (unsigned)getpid(), (unsigned)getppid(), (unsigned)rgetpid(), (unsigned)rgetppid(), rgethostname(), host(),
           rload());
  else if (pid > 0)
    waitpid(pid, NULL, 0);
  else {
    fprintf(stderr, "%s\n", rex_last_error()); /* "rfork: why" */
    return errno;
  }
  return 0;
}
