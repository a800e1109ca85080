/* env_cwd: environment, cwd, umask, rlimits, and the argv/env bounds of /proc/self/cmdline and environ. */
#include "zdtm.h"

#include <limits.h>
#include <sys/resource.h>
#include <sys/stat.h>

static int proc_equals(const char *path, const char *want, size_t n) {
  char buf[8192];
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t got = fread(buf, 1, sizeof buf, f);
  fclose(f);
  return got >= n && memcmp(buf, want, n) == 0;
}

int main(int argc, char **argv) {
  ZDTM_INIT("env_cwd", argc, argv);
  setenv("ZDTM_SET_BEFORE", "value with spaces", 1);
  unsetenv("ZDTM_UNSET_ME");
  if (chdir("/tmp")) fail("chdir /tmp");
  umask(0027);
  struct rlimit nofile = {256, 512}, core = {0, RLIM_INFINITY};
  getrlimit(RLIMIT_CORE, &core);
  core.rlim_cur = 0;
  if (setrlimit(RLIMIT_NOFILE, &nofile) || setrlimit(RLIMIT_CORE, &core)) fail("setrlimit");
  char cmdline[8192];
  FILE *f = fopen("/proc/self/cmdline", "r");
  size_t cmdlen = fread(cmdline, 1, sizeof cmdline, f);
  fclose(f);
  char image[PATH_MAX];
  if (!strcmp(argv[1], "rfork") || !realpath(argv[1], image)) strcpy(image, argv[1]);
  zdtm_migrate(image);
  const char *v = getenv("ZDTM_SET_BEFORE");
  if (!v || strcmp(v, "value with spaces")) fail("ZDTM_SET_BEFORE = %s", v ? v : "(unset)");
  if (getenv("ZDTM_UNSET_ME")) fail("ZDTM_UNSET_ME still set");
  if (!getenv("PATH")) fail("PATH lost");
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, "/tmp")) fail("cwd %s", cwd);
  mode_t m = umask(0);
  if (m != 0027) fail("umask %o", (unsigned)m);
  struct rlimit r;
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_cur != 256 || r.rlim_max != 512) fail("RLIMIT_NOFILE %lu/%lu", (unsigned long)r.rlim_cur, (unsigned long)r.rlim_max);
  getrlimit(RLIMIT_CORE, &r);
  if (r.rlim_cur != 0) fail("RLIMIT_CORE %lu", (unsigned long)r.rlim_cur);
  if (!proc_equals("/proc/self/cmdline", cmdline, cmdlen)) fail("/proc/self/cmdline differs (arg bounds not restored)");
  if (!proc_equals("/proc/self/environ", "", 0)) fail("/proc/self/environ unreadable");
  char comm[32] = "";
  f = fopen("/proc/self/comm", "r");
  if (f) fgets(comm, sizeof comm, f), fclose(f);
  if (strncmp(comm, "env_cwd", 7)) fail("comm %s", comm);
  pass();
}
