/*
 * rfork.c: rfork() (docs/RFORK.md, docs/man/rfork.3.md). fork()s; the child
 * writes itself to an image in memory (rex_dump_self into a memfd) and then
 * becomes the origin stub: it asks the local rexd to run the image on the
 * least-loaded host (RFORK, docs/PROTOCOL.md 4.10), reports to the
 * parent once the child runs there, and relays the descriptors it had (all of
 * them, at the same numbers), signals and the exit status, as rexecve's stub
 * does. The copy restored on the executor returns 0 from rfork().
 *
 * Hazards:
 * - The parent learns the outcome through a pipe, so rfork() returns only
 *   when the child runs remotely (or nothing moved, -1 with errno, and the
 *   stub has been reaped: nothing is left running).
 * - The restored copy has only the descriptors the executor gave it: the
 *   report pipe and the memfd are not among them, so it must not close them
 *   (their numbers may name something else there).
 * - stdio is flushed before fork(): buffered output would otherwise be
 *   written by the parent and again by the child.
 */
#define _GNU_SOURCE /* memfd_create, pipe2 */
#include "internal.h"
#include "fileproxy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

char rex__socket_override[108];

/* The origin's view, kept in memory so that it travels with the image. */
static int rf_migrated;
static pid_t rf_stub_pid, rf_origin_ppid;
static char rf_origin_host[256];
static char rf_here[256];

pid_t rgetpid(void) { return rf_migrated ? rf_stub_pid : getpid(); }
pid_t rgetppid(void) { return rf_migrated ? rf_origin_ppid : getppid(); }
int rforked(void) { return rf_migrated; }

const char *rgethostname(void) {
  if (rf_migrated) return rf_origin_host;
  if (gethostname(rf_here, sizeof rf_here - 1) != 0) strcpy(rf_here, "localhost");
  return rf_here;
}

/* What the stub tells the parent: 0 (the child runs remotely, or locally with REX_RFORK_LOCAL) or an errno. */
struct report {
  int32_t err;
  char msg[500];
};

static void send_report(int fd, int err) {
  struct report r;
  memset(&r, 0, sizeof r);
  r.err = err;
  if (err) snprintf(r.msg, sizeof r.msg, "%s", rex_last_error());
  ssize_t w;
  do w = write(fd, &r, sizeof r); /* <= PIPE_BUF: one atomic write */
  while (w < 0 && errno == EINTR);
  close(fd);
}

/* Most descriptors rfork proxies (the executor's limit too, src/rfork/protocol.ts MAX_PROXIED_FDS). */
#define RF_MAX_FDS 1024

/* Filled before the dump: no malloc may run between fork() and the dump, or the child's heap (and brk) would differ from the parent's. */
static int rf_fds[RF_MAX_FDS];
/* Per rf_fds[i]: 1 = a regular file or directory, served through the file channel rf_chan (docs/RFORK.md 4.1). */
static unsigned char rf_served[RF_MAX_FDS];
static int rf_chan = -1;

/*
 * Marks the regular files and directories among rf_fds[0..n) and, when there
 * are any, adds the file channel's number (one above the highest) to the
 * list. The new count, or -EMFILE.
 */
static int mark_files(int n) {
  int files = 0;
  rf_chan = -1;
  for (int i = 0; i < n; i++) {
    struct stat st;
    rf_served[i] = 0;
    if (files < (int)REX_FP_MAX_FILES && fstat(rf_fds[i], &st) == 0 && rex_img_fd_served(rex_img_fd_kind_of(st.st_mode))) {
      rf_served[i] = 1;
      files++;
    }
  }
  if (!files) return n;
  if (n == RF_MAX_FDS) {
    rex__set_error("rfork: more than %d open descriptors to proxy", RF_MAX_FDS - 1);
    return -EMFILE;
  }
  rf_chan = rf_fds[n - 1] + 1;
  rf_served[n] = 0;
  rf_fds[n] = rf_chan;
  return n + 1;
}

/* In the restored copy: the supervisor of the relayed files takes their calls (fileproxy.c). */
static void serve_files(int nfds) {
  if (rf_chan < 0) return;
  /* REX_RFORK_FILES=stream (the origin's environment, docs/man/rfork.3.md): files relayed as byte streams, as before 4.1. */
  const char *how = getenv("REX_RFORK_FILES");
  if (how && strcmp(how, "stream") == 0) {
    rex__fp_fall_back(rf_chan, 0);
    return;
  }
  static int files[REX_FP_MAX_FILES];
  size_t n = 0;
  for (int i = 0; i < nfds && n < REX_FP_MAX_FILES; i++)
    if (rf_served[i]) files[n++] = rf_fds[i];
  rex__fp_start(files, n, rf_chan);
}

/*
 * The descriptors to proxy: 0-2 always, then every open one but `skip`,
 * ascending, into rf_fds. Reads /proc/self/fd with getdents64 into a stack
 * buffer (opendir would malloc). The count, or -errno.
 */
static int list_fds(const int *skip, size_t nskip) {
  int n = 0;
  for (int i = 0; i < 3; i++) rf_fds[n++] = i;
  int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -errno;
  char buf[4096] __attribute__((aligned(8)));
  for (;;) {
    long got = syscall(SYS_getdents64, dfd, buf, sizeof buf);
    if (got < 0) {
      int e = errno;
      close(dfd);
      return -e;
    }
    if (got == 0) break;
    for (long off = 0; off < got;) {
      const struct {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[];
      } *d = (const void *)(buf + off);
      off += d->reclen;
      if (d->name[0] < '0' || d->name[0] > '9') continue;
      int fd = 0;
      for (const char *c = d->name; *c >= '0' && *c <= '9'; c++) fd = fd * 10 + (*c - '0');
      int keep = fd > 2 && fd != dfd;
      for (size_t i = 0; i < nskip && keep; i++) keep = fd != skip[i];
      if (!keep) continue;
      if (n == RF_MAX_FDS) {
        close(dfd);
        rex__set_error("rfork: more than %d open descriptors to proxy", RF_MAX_FDS);
        return -EMFILE;
      }
      /* The kernel lists them in ascending order; insertion keeps it so if it ever does not. */
      int k = n++;
      while (k > 0 && rf_fds[k - 1] > fd) {
        rf_fds[k] = rf_fds[k - 1];
        k--;
      }
      rf_fds[k] = fd;
    }
  }
  close(dfd);
  return n;
}

/*
 * In the restored copy: the executor put a socket at `fd` (one above the
 * highest proxied descriptor) carrying "REX1 <its rexd socket>\n"; the child
 * answers one byte, which is the executor's signal that it runs (STARTED).
 */
static void greet_executor(int fd) {
  char line[256];
  size_t n = 0;
  while (n < sizeof line - 1) {
    ssize_t r = read(fd, line + n, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return; /* restored by hand (rex-restore FILE): no executor */
    if (line[n++] == '\n') break;
  }
  line[n] = '\0';
  if (strncmp(line, "REX1 ", 5) == 0) {
    size_t len = strcspn(line + 5, "\n");
    if (len < sizeof rex__socket_override) {
      memcpy(rex__socket_override, line + 5, len);
      rex__socket_override[len] = '\0';
    }
  }
  ssize_t w;
  do w = write(fd, "R", 1);
  while (w < 0 && errno == EINTR);
  close(fd);
}

struct started {
  int report, image;
};

static void on_started(void *arg) {
  struct started *s = arg;
  close(s->image); /* the executor has it now */
  send_report(s->report, 0);
}

pid_t rfork_on(const char *host, unsigned rflags) {
  int saved_errno = errno; /* as fork(), a success leaves errno alone in both processes */
  rex__clear_error();
  if (rflags & ~REX_RFORK_LOCAL) {
    rex__set_error("rfork: unknown rflags 0x%x", rflags);
    errno = EINVAL;
    return -1;
  }
  if (!host) host = getenv("REX_HOST");
  fflush(NULL);
  int rep[2];
  if (pipe2(rep, O_CLOEXEC) < 0) return -1;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(rep[0]);
    close(rep[1]);
    errno = e;
    return -1;
  }
  if (pid > 0) {
    close(rep[1]);
    struct report r;
    size_t got = 0;
    while (got < sizeof r) {
      ssize_t n = read(rep[0], (char *)&r + got, sizeof r - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += (size_t)n;
    }
    close(rep[0]);
    if (got == sizeof r && r.err == 0) {
      errno = saved_errno;
      return pid;
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == sizeof r) {
      r.msg[sizeof r.msg - 1] = '\0';
      rex__set_error("%s", r.msg);
      errno = r.err;
    } else {
      rex__set_error("rfork: the stub ended before the child started (status 0x%x)", (unsigned)status);
      errno = EIO;
    }
    return -1;
  }

  /* The child: becomes the stub here, or continues as the migrated copy. */
  close(rep[0]);
  rf_stub_pid = getpid();
  rf_origin_ppid = parent;
  if (gethostname(rf_origin_host, sizeof rf_origin_host - 1) != 0) strcpy(rf_origin_host, "localhost");
  int img = memfd_create("rex-rfork-image", MFD_CLOEXEC);
  if (img < 0) {
    rex__set_error("rfork: memfd_create: %s", strerror(errno));
    send_report(rep[1], errno);
    _exit(127);
  }
  int skip[2] = {rep[1], img};
  int nfds = list_fds(skip, 2);
  if (nfds >= 0) nfds = mark_files(nfds);
  if (nfds < 0) {
    if (nfds != -EMFILE) rex__set_error("rfork: reading /proc/self/fd: %s", strerror(-nfds));
    send_report(rep[1], -nfds);
    _exit(127);
  }
  int ready_fd = rf_fds[nfds - 1] + 1; /* the executor's greeting socket sits just above the proxied descriptors */
  struct rex_dump_info info;
  errno = saved_errno;
  int r = rex_dump_self(img, 0, &info);
  if (r == 1) {
    /* The restored copy, on the executor. rep[1] and img name nothing here: leave them. */
    rf_migrated = 1;
    greet_executor(ready_fd);
    serve_files(nfds);
    errno = saved_errno;
    return 0;
  }
  if (r < 0) {
    int e = errno;
    close(img);
    if ((rflags & REX_RFORK_LOCAL) && (e == EOPNOTSUPP || e == EBUSY)) {
      send_report(rep[1], 0); /* stays here as an ordinary forked child */
      errno = saved_errno;
      return 0;
    }
    char why[400];
    snprintf(why, sizeof why, "%s", rex_last_error());
    /* The dumper's advice names its own flag; rfork's caller has another way out. */
    char *advice = e == EOPNOTSUPP ? strstr(why, "; unmap it or pass REX_DUMP_SKIP_SHARED") : NULL;
    if (advice) *advice = '\0';
    rex__set_error(advice ? "rfork: %s; unmap it, or call rfork_on(host, REX_RFORK_LOCAL) to fork locally instead" : "rfork: %s", why);
    send_report(rep[1], e);
    _exit(127);
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getpid(), img);
  struct started st = {rep[1], img};
  struct rex__stub_req rq = {.who = "rfork", .host = host, .path = path, .image = 1, .fds = rf_fds, .nfds = (size_t)nfds, .served = rf_served, .chan = rf_chan};
  int e = rex__stub_exec(&rq, on_started, &st);
  send_report(rep[1], e);
  _exit(127);
}

pid_t rfork(void) { return rfork_on(NULL, 0); }
