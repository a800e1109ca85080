/*
 * rex-session: starts a program as a local user, for the root rexd (docs/man/rex-session.8.md,
 * docs/ARCHITECTURE.md "Privilege separation primitives").
 *
 *   rex-session --user NAME [--allow-root] [--rlimit NAME=SOFT[:HARD]]... [--env NAME[=VALUE]]...
 *               [--keep-fd N]... [--dry-run] -- PROGRAM [ARG...]
 *
 * The root monitor runs it to start a user's session controller: it looks the user up, applies
 * the limits (as root, so hard limits may also be raised), takes the user's groups
 * (initgroups), gid and uid (setresgid, setresuid: real, effective and saved), checks that
 * exactly those are held and that root cannot be taken back, builds a clean environment,
 * closes every descriptor above 2 but the kept ones, changes to the home directory and
 * executes PROGRAM (an absolute path: no PATH search as root).
 *
 * One small C program rather than the same steps in Node: a Node process cannot drop
 * supplementary groups and uids atomically before its own threads start, and this keeps the
 * privileged steps few, in order, each checked, and readable in one file.
 *
 * Exit status, as env(1): 125 when rex-session itself fails (usage, unknown user, a failed
 * step: the message names the user and the step), 126 when PROGRAM cannot be executed, 127
 * when it does not exist.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

enum { EXIT_SETUP = 125, EXIT_CANNOT_RUN = 126, EXIT_NOT_FOUND = 127 };
enum { MAX_ENV = 256, MAX_KEEP = 256, MAX_RLIMITS = 16 };

/* The PATH of a session: the user's own shell startup files may change it. */
#define SAFE_PATH "/usr/local/bin:/usr/bin:/bin"
#define SAFE_PATH_ROOT "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char *user_name; /* for messages: every failure names the user */

static const char USAGE[] =
    "usage: rex-session --user NAME [--allow-root] [--rlimit NAME=SOFT[:HARD]]...\n"
    "                   [--env NAME[=VALUE]]... [--keep-fd N]... [--dry-run] -- PROGRAM [ARG...]\n";

__attribute__((format(printf, 2, 3), noreturn)) static void fail(int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (user_name) fprintf(stderr, "rex-session: user '%s': ", user_name);
  else fputs("rex-session: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(status);
}

__attribute__((format(printf, 1, 2), noreturn)) static void usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("rex-session: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  fputs(USAGE, stderr);
  va_end(ap);
  exit(EXIT_SETUP);
}

static const struct {
  const char *name;
  int resource;
} RLIMITS[] = {
    {"as", RLIMIT_AS},         {"core", RLIMIT_CORE},       {"cpu", RLIMIT_CPU},
    {"data", RLIMIT_DATA},     {"fsize", RLIMIT_FSIZE},     {"locks", RLIMIT_LOCKS},
    {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
    {"nofile", RLIMIT_NOFILE}, {"nproc", RLIMIT_NPROC},     {"rss", RLIMIT_RSS},
    {"rtprio", RLIMIT_RTPRIO}, {"rttime", RLIMIT_RTTIME},   {"sigpending", RLIMIT_SIGPENDING},
    {"stack", RLIMIT_STACK},
};
#define NRLIMITS (sizeof RLIMITS / sizeof RLIMITS[0])

struct rlim_req {
  unsigned which; /* index into RLIMITS */
  rlim_t soft, hard;
};

struct opts {
  const char *user;
  int allow_root, dry_run;
  struct rlim_req rl[MAX_RLIMITS];
  size_t nrl;
  const char *env[MAX_ENV]; /* NAME or NAME=VALUE, as given */
  size_t nenv;
  int keep[MAX_KEEP];
  size_t nkeep;
  char **argv; /* PROGRAM ARG... */
};

/* A limit value: decimal digits, or "unlimited"/"infinity". */
static int parse_rlim(const char *s, size_t n, rlim_t *out) {
  if ((n == 9 && !strncmp(s, "unlimited", 9)) || (n == 8 && !strncmp(s, "infinity", 8))) {
    *out = RLIM_INFINITY;
    return 0;
  }
  if (n == 0 || n > 20) return -1;
  unsigned long long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (ULLONG_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  if ((rlim_t)v != v || (rlim_t)v == RLIM_INFINITY) return -1;
  *out = (rlim_t)v;
  return 0;
}

static void parse_rlimit_arg(struct opts *o, const char *arg) {
  const char *eq = strchr(arg, '=');
  if (!eq) usage("--rlimit %s: expected NAME=SOFT[:HARD]", arg);
  size_t nlen = (size_t)(eq - arg);
  if (nlen > 7 && !strncasecmp(arg, "RLIMIT_", 7)) arg += 7, nlen -= 7;
  unsigned which = NRLIMITS;
  for (unsigned i = 0; i < NRLIMITS; i++)
    if (strlen(RLIMITS[i].name) == nlen && !strncasecmp(arg, RLIMITS[i].name, nlen)) which = i;
  if (which == NRLIMITS) usage("--rlimit: unknown limit '%.*s' (as, core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)", (int)nlen, arg);
  for (size_t i = 0; i < o->nrl; i++)
    if (o->rl[i].which == which) usage("--rlimit %s given twice", RLIMITS[which].name);
  const char *v = eq + 1, *colon = strchr(v, ':');
  struct rlim_req r = {which, 0, 0};
  if (parse_rlim(v, colon ? (size_t)(colon - v) : strlen(v), &r.soft) != 0 ||
      (colon && parse_rlim(colon + 1, strlen(colon + 1), &r.hard) != 0))
    usage("--rlimit %s: '%s' is not SOFT[:HARD] (numbers or 'unlimited')", RLIMITS[which].name, v);
  if (!colon) r.hard = r.soft;
  if (r.hard != RLIM_INFINITY && (r.soft == RLIM_INFINITY || r.soft > r.hard))
    usage("--rlimit %s: the soft limit is above the hard limit", RLIMITS[which].name);
  o->rl[o->nrl++] = r;
}

static int valid_env_name(const char *s, size_t n) {
  if (n == 0 || (s[0] >= '0' && s[0] <= '9')) return 0;
  for (size_t i = 0; i < n; i++)
    if (!(s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9'))) return 0;
  return 1;
}

/* The variables rex-session sets from the password entry: --env may not replace them. */
static int identity_var(const char *s, size_t n) {
  static const char *const ids[] = {"HOME", "USER", "LOGNAME", "SHELL"};
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
    if (strlen(ids[i]) == n && !strncmp(s, ids[i], n)) return 1;
  return 0;
}

static void parse_env_arg(struct opts *o, const char *arg) {
  const char *eq = strchr(arg, '=');
  size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
  if (!valid_env_name(arg, n) || n > 255) usage("--env %s: not a variable name (letters, digits, _)", arg);
  if (identity_var(arg, n)) usage("--env %.*s: set from the user's password entry, not from the command line", (int)n, arg);
  if (o->nenv == MAX_ENV) usage("more than %d --env", MAX_ENV);
  o->env[o->nenv++] = arg;
}

static void parse_keep_arg(struct opts *o, const char *arg) {
  char *end;
  errno = 0;
  long v = strtol(arg, &end, 10);
  if (errno || end == arg || *end || arg[0] == '-' || arg[0] == '+' || v > INT_MAX) usage("--keep-fd %s: not a descriptor number", arg);
  if (o->nkeep == MAX_KEEP) usage("more than %d --keep-fd", MAX_KEEP);
  o->keep[o->nkeep++] = (int)v;
}

static void parse(struct opts *o, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) {
      i++;
      break;
    }
    if (!strcmp(a, "--help")) {
      fputs(USAGE, stdout);
      exit(0);
    }
    if (!strcmp(a, "--allow-root")) {
      o->allow_root = 1;
      continue;
    }
    if (!strcmp(a, "--dry-run")) {
      o->dry_run = 1;
      continue;
    }
    static const char *const with_value[] = {"--user", "--rlimit", "--env", "--keep-fd"};
    const char *val = NULL;
    size_t which = 4;
    for (size_t k = 0; k < 4 && which == 4; k++) {
      size_t l = strlen(with_value[k]);
      if (!strcmp(a, with_value[k])) {
        if (i + 1 >= argc) usage("%s needs a value", a);
        val = argv[++i];
        which = k;
      } else if (!strncmp(a, with_value[k], l) && a[l] == '=') {
        val = a + l + 1;
        which = k;
      }
    }
    switch (which) {
      case 0:
        if (o->user) usage("--user given twice");
        if (!*val) usage("--user needs a name");
        o->user = val;
        break;
      case 1: parse_rlimit_arg(o, val); break;
      case 2: parse_env_arg(o, val); break;
      case 3: parse_keep_arg(o, val); break;
      default: usage("unknown option '%s' (PROGRAM comes after --)", a);
    }
  }
  if (!o->user) usage("--user NAME is required");
  if (i >= argc) usage("no PROGRAM after --");
  if (argv[i][0] != '/') usage("PROGRAM must be an absolute path, got '%s'", argv[i]);
  o->argv = argv + i;
}

/* The password entry, copied: later NSS calls may reuse getpwnam_r's buffer. */
struct account {
  char *name, *dir, *shell;
  uid_t uid;
  gid_t gid;
  gid_t *groups; /* what initgroups gives: the primary gid and every group listing the user */
  int ngroups;
};

static void lookup(const char *name, struct account *acc) {
  long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
  size_t cap = sz > 0 ? (size_t)sz : 4096;
  struct passwd pw, *res = NULL;
  char *buf = NULL;
  int rc;
  for (;;) {
    char *nb = realloc(buf, cap);
    if (!nb) fail(EXIT_SETUP, "getpwnam_r: out of memory");
    buf = nb;
    rc = getpwnam_r(name, &pw, buf, cap, &res);
    if (rc != ERANGE || cap > (1u << 20)) break;
    cap *= 2;
  }
  if (rc != 0) fail(EXIT_SETUP, "getpwnam_r: %s", strerror(rc));
  if (!res) fail(EXIT_SETUP, "no such user in the password database");
  acc->name = strdup(pw.pw_name);
  acc->dir = strdup(pw.pw_dir && *pw.pw_dir ? pw.pw_dir : "/");
  acc->shell = strdup(pw.pw_shell && *pw.pw_shell ? pw.pw_shell : "/bin/sh");
  acc->uid = pw.pw_uid;
  acc->gid = pw.pw_gid;
  free(buf);
  if (!acc->name || !acc->dir || !acc->shell) fail(EXIT_SETUP, "out of memory");
  int n = 64;
  for (;;) {
    acc->groups = realloc(acc->groups, (size_t)n * sizeof(gid_t));
    if (!acc->groups) fail(EXIT_SETUP, "getgrouplist: out of memory");
    int got = n;
    if (getgrouplist(acc->name, acc->gid, acc->groups, &got) >= 0) {
      acc->ngroups = got;
      break;
    }
    if (got <= n) n *= 2;
    else n = got;
    if (n > 65536) fail(EXIT_SETUP, "getgrouplist: too many groups");
  }
}

static int cmp_gid(const void *a, const void *b) {
  gid_t x = *(const gid_t *)a, y = *(const gid_t *)b;
  return x < y ? -1 : x > y;
}

/* Sorted without duplicates (getgrouplist may list the primary group twice). */
static int normalize(gid_t *g, int n) {
  qsort(g, (size_t)n, sizeof *g, cmp_gid);
  int m = 0;
  for (int i = 0; i < n; i++)
    if (m == 0 || g[m - 1] != g[i]) g[m++] = g[i];
  return m;
}

static void drop_privileges(const struct account *acc) {
  if (initgroups(acc->name, acc->gid) != 0) fail(EXIT_SETUP, "initgroups(%u): %s", (unsigned)acc->gid, strerror(errno));
  if (setresgid(acc->gid, acc->gid, acc->gid) != 0) fail(EXIT_SETUP, "setresgid(%u): %s", (unsigned)acc->gid, strerror(errno));
  if (setresuid(acc->uid, acc->uid, acc->uid) != 0) fail(EXIT_SETUP, "setresuid(%u): %s", (unsigned)acc->uid, strerror(errno));

  /* Check what is held, not what was asked: a partial change must never run the program. */
  uid_t r, e, s;
  gid_t rg, eg, sg;
  if (getresuid(&r, &e, &s) != 0 || r != acc->uid || e != acc->uid || s != acc->uid)
    fail(EXIT_SETUP, "after setresuid: uids are %u/%u/%u, not %u", (unsigned)r, (unsigned)e, (unsigned)s, (unsigned)acc->uid);
  if (getresgid(&rg, &eg, &sg) != 0 || rg != acc->gid || eg != acc->gid || sg != acc->gid)
    fail(EXIT_SETUP, "after setresgid: gids are %u/%u/%u, not %u", (unsigned)rg, (unsigned)eg, (unsigned)sg, (unsigned)acc->gid);
  int n = getgroups(0, NULL);
  gid_t *held = n > 0 ? malloc((size_t)n * sizeof(gid_t)) : NULL;
  if (n < 0 || (n > 0 && (!held || getgroups(n, held) != n))) fail(EXIT_SETUP, "getgroups: %s", strerror(errno));
  gid_t *want = malloc((size_t)acc->ngroups * sizeof(gid_t) + 1);
  if (!want) fail(EXIT_SETUP, "out of memory");
  memcpy(want, acc->groups, (size_t)acc->ngroups * sizeof(gid_t));
  int nw = normalize(want, acc->ngroups), nh = n > 0 ? normalize(held, n) : 0;
  if (nw != nh || (nh && memcmp(want, held, (size_t)nh * sizeof(gid_t))))
    fail(EXIT_SETUP, "after initgroups: %d supplementary groups held, not the user's %d", nh, nw);
  free(want);
  free(held);
  if (acc->uid != 0) {
    if (setuid(0) == 0 || seteuid(0) == 0) fail(EXIT_SETUP, "could become root again after setresuid: refusing to continue");
    if (acc->gid != 0 && (setgid(0) == 0 || setegid(0) == 0)) fail(EXIT_SETUP, "could take gid 0 again after setresgid: refusing to continue");
  }
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return x < y ? -1 : x > y;
}

/* Closes every descriptor from lo to hi (inclusive); close_range where the kernel has it. */
static void close_span(unsigned lo, unsigned hi) {
  if (lo > hi) return;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, lo, hi, 0) == 0) return;
#endif
  long max = sysconf(_SC_OPEN_MAX);
  unsigned top = max > 0 && (unsigned long)max - 1 < hi ? (unsigned)max - 1 : hi;
  for (unsigned fd = lo; fd <= top && fd >= lo; fd++) close((int)fd);
}

/* Every descriptor above 2 is closed except the kept ones, which lose close-on-exec. */
static void close_descriptors(struct opts *o) {
  qsort(o->keep, o->nkeep, sizeof o->keep[0], cmp_int);
  unsigned next = 3;
  for (size_t i = 0; i < o->nkeep; i++) {
    int fd = o->keep[i];
    if (fd < 3) continue;
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC) != 0) fail(EXIT_SETUP, "--keep-fd %d: %s", fd, strerror(errno));
    if ((unsigned)fd > next) close_span(next, (unsigned)fd - 1);
    next = (unsigned)fd + 1;
  }
  if (next != 0) close_span(next, ~0u);
}

/* The session's environment: the identity from the password entry, PATH, then the --env list. */
static char **build_env(const struct opts *o, const struct account *acc) {
  char **env = calloc(MAX_ENV + 6, sizeof(char *));
  size_t n = 0;
  if (!env) fail(EXIT_SETUP, "out of memory");
  const char *fixed[][2] = {{"HOME", acc->dir}, {"USER", acc->name}, {"LOGNAME", acc->name}, {"SHELL", acc->shell},
                            {"PATH", acc->uid == 0 ? SAFE_PATH_ROOT : SAFE_PATH}};
  for (size_t i = 0; i < 5; i++)
    if (asprintf(&env[n++], "%s=%s", fixed[i][0], fixed[i][1]) < 0) fail(EXIT_SETUP, "out of memory");
  for (size_t i = 0; i < o->nenv; i++) {
    const char *a = o->env[i], *eq = strchr(a, '=');
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    char *item;
    if (eq) item = strdup(a);
    else {
      char name[256];
      if (len >= sizeof name) continue;
      memcpy(name, a, len);
      name[len] = 0;
      const char *v = getenv(name);
      if (!v) continue; /* asked for but not set here: left unset */
      if (asprintf(&item, "%s=%s", name, v) < 0) item = NULL;
    }
    if (!item) fail(EXIT_SETUP, "out of memory");
    size_t j = 0;
    while (j < n && !(strncmp(env[j], item, len) == 0 && env[j][len] == '=')) j++;
    if (j < n) free(env[j]);
    else n++;
    env[j] = item;
  }
  env[n] = NULL;
  return env;
}

static void dry_run(const struct opts *o, const struct account *acc, char **env) {
  printf("user %s uid %u gid %u\ngroups", acc->name, (unsigned)acc->uid, (unsigned)acc->gid);
  for (int i = 0; i < acc->ngroups; i++) printf(" %u", (unsigned)acc->groups[i]);
  printf("\nhome %s\n", acc->dir);
  for (size_t i = 0; i < o->nrl; i++) {
    printf("rlimit %s ", RLIMITS[o->rl[i].which].name);
    if (o->rl[i].soft == RLIM_INFINITY) printf("unlimited");
    else printf("%llu", (unsigned long long)o->rl[i].soft);
    if (o->rl[i].hard == RLIM_INFINITY) printf(" unlimited\n");
    else printf(" %llu\n", (unsigned long long)o->rl[i].hard);
  }
  for (size_t i = 0; i < o->nkeep; i++) printf("keep-fd %d\n", o->keep[i]);
  for (char **e = env; *e; e++) printf("env %s\n", *e);
  for (char **a = o->argv; *a; a++) printf("%s %s\n", a == o->argv ? "program" : "arg", *a);
  exit(0);
}

int main(int argc, char **argv) {
  struct opts o;
  parse(&o, argc, argv);
  user_name = o.user;
  struct account acc = {0};
  lookup(o.user, &acc);
  if (acc.uid == 0 && !o.allow_root) fail(EXIT_SETUP, "has uid 0: refusing to start a session as root without --allow-root");
  char **env = build_env(&o, &acc);
  if (o.dry_run) dry_run(&o, &acc, env);
  if (geteuid() != 0) fail(EXIT_SETUP, "rex-session must run as root (effective uid %u)", (unsigned)geteuid());

  /* Limits first, as root: the hard limits asked for may be above the current ones. */
  for (size_t i = 0; i < o.nrl; i++) {
    struct rlimit rl = {o.rl[i].soft, o.rl[i].hard};
    if (setrlimit(RLIMITS[o.rl[i].which].resource, &rl) != 0)
      fail(EXIT_SETUP, "setrlimit %s: %s", RLIMITS[o.rl[i].which].name, strerror(errno));
  }
  drop_privileges(&acc);
  /* After every NSS call: a module may have opened descriptors of its own. */
  close_descriptors(&o);
  /* As the user: a home on a root-squashed network file system is entered with the user's rights. */
  if (chdir(acc.dir) != 0 && chdir("/") != 0) fail(EXIT_SETUP, "chdir /: %s", strerror(errno));
  execve(o.argv[0], o.argv, env);
  int e = errno;
  fail(e == ENOENT || e == ENOTDIR ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN, "execute %s: %s", o.argv[0], strerror(e));
}
