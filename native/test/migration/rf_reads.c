/*
 * rf_reads: blocking reads on relayed descriptors, then wait() (issue 13, item 5).
 *
 *   rf_reads rfork DIR [RUNS [DEADLINE_MS]]
 *
 * Each run opens a regular file (1.5 MiB) and a pipe before rfork(). The
 * moved child reads the file's first 64 KiB, then the parent's message on the
 * pipe, then (even runs) the rest of the file to its end or (odd runs) exits
 * leaving it unread, with the run's number mod 256 as its status. The parent
 * writes the message once the stub has read the file ahead by 1 MiB (the
 * shared offset says so), keeps the pipe's write end open (the child reads a
 * known length, as after fork()) and waits. With one credit window for all
 * descriptors, that read-ahead took all the credit and the pipe was never
 * read again: the child blocked in read() and the parent in waitpid().
 *
 * Each wait has a deadline: past it the program prints "HANG run i: ..." with
 * what was pending (the message still in the pipe, the file's offset, the
 * stub's state from /proc), kills the stub and exits 1.
 *
 * Prints per run "RUN i CHILD pid ppid host" from the child (its parent is
 * the executor's rexd), and at the end "OK RUNS n MS total SLOW k", k the
 * runs whose wait took 2 s or more: the executor used to send EXIT only after
 * its 2 s orphan check when the child left input unread (odd runs).
 */
#include "zdtm.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <time.h>

#define FILE_BYTES (3 * 512 * 1024 + 123) /* past the relay's window (1 MiB) and the socket's buffer, not a multiple of a chunk */
#define HEAD_BYTES (64 * 1024)              /* what the child reads of the file before the pipe */
#define READ_AHEAD (1024 * 1024)            /* the stub's read-ahead the parent waits for before it writes */
#define READ_AHEAD_WAIT_MS 2000             /* a relay that does not read ahead: the parent stops waiting for it */
#define SLOW_MS 2000                        /* a wait this long after the message counts as slow (the executor's orphan check) */
#define MSG "message through the pipe, written after rfork returned\n"

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Reads exactly n bytes with blocking reads; the count read (short at EOF), -1 on error. */
static ssize_t read_full(int fd, char *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* The file's bytes at [off, off + n): generated, so that the image does not carry a copy of the file. */
static void fill(char *buf, size_t off, size_t n) {
  for (size_t i = 0; i < n; i++) buf[i] = (char)('a' + ((off + i) * 7 + (off + i) / 4096) % 26);
}

/* Reads the file's [off, off + n) from fd with blocking reads and compares; the bytes that matched before the first
 * difference or the end. */
static size_t read_check(int fd, size_t off, size_t n) {
  char got[65536], want[65536];
  size_t done = 0;
  while (done < n) {
    size_t k = n - done < sizeof got ? n - done : sizeof got;
    ssize_t r = read_full(fd, got, k);
    if (r <= 0) break;
    fill(want, off + done, (size_t)r);
    if (memcmp(got, want, (size_t)r)) break;
    done += (size_t)r;
    if ((size_t)r < k) break;
  }
  return done;
}

/* One line of /proc/PID/NAME (first line), for the report of a hang. */
static void proc_line(pid_t pid, const char *name, char *out, size_t cap) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
  out[0] = '\0';
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(out, cap, "(%s)", strerror(errno));
    return;
  }
  if (!fgets(out, (int)cap, f)) out[0] = '\0';
  fclose(f);
  out[strcspn(out, "\n")] = '\0';
}

/* What was pending when the deadline passed: the message in the pipe, the file's offset, the stub's state, wait channel and descriptors. */
static void report_pending(int run, pid_t stub, int deadline_ms, int file, int pipe_in) {
  char state[256], wchan[128], sc[256];
  char stat[512];
  proc_line(stub, "stat", stat, sizeof stat);
  const char *st = strrchr(stat, ')');
  snprintf(state, sizeof state, "%.1s", st && st[1] ? st + 2 : "?");
  proc_line(stub, "wchan", wchan, sizeof wchan);
  proc_line(stub, "syscall", sc, sizeof sc);
  /* /proc/PID/syscall: "7 fds nfds ..." is poll(2); the stub's poll on 2 descriptors is its rexd socket and signal pipe only. */
  long nr = -1, nfds = -1;
  char *end = NULL;
  nr = strtol(sc, &end, 10);
  if (nr == 7 && end && *end == ' ') {
    char *q = strchr(end + 1, ' ');
    if (q) nfds = strtol(q + 1, NULL, 16);
  }
  char polling[64] = "";
  if (nfds >= 0) snprintf(polling, sizeof polling, " (in poll() on %ld descriptors)", nfds);
  int unread = -1;
  if (ioctl(pipe_in, FIONREAD, &unread) < 0) unread = -1;
  printf("HANG run %d: waitpid(stub %d) not done %d ms after the message was written: %d bytes of it still in the pipe, "
         "file offset %lld of %d; stub state %s wchan %s syscall %s%s; its descriptors:",
         run, (int)stub, deadline_ms, unread, (long long)lseek(file, 0, SEEK_CUR), FILE_BYTES, state, wchan, sc, polling);
  char dir[64];
  snprintf(dir, sizeof dir, "/proc/%d/fd", (int)stub);
  for (int fd = 0; fd < 64; fd++) {
    char p[96], target[256];
    snprintf(p, sizeof p, "%s/%d", dir, fd);
    ssize_t n = readlink(p, target, sizeof target - 1);
    if (n < 0) continue;
    target[n] = '\0';
    printf(" %d=%s", fd, target);
  }
  printf("\n");
  fflush(stdout);
  kill(stub, SIGKILL);
  waitpid(stub, NULL, 0);
}

int main(int argc, char **argv) {
  ZDTM_INIT("rf_reads", argc, argv);
  if (argc < 3) fail("usage: rf_reads rfork DIR [RUNS [DEADLINE_MS]]");
  int runs = argc > 3 ? atoi(argv[3]) : 1;
  int deadline_ms = argc > 4 ? atoi(argv[4]) : 10000;
  char path[4096];
  snprintf(path, sizeof path, "%s/rf_reads.in", argv[2]);
  int w = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  char chunk[65536];
  for (size_t off = 0; w >= 0 && off < FILE_BYTES; off += sizeof chunk) {
    size_t n = FILE_BYTES - off < sizeof chunk ? FILE_BYTES - off : sizeof chunk;
    fill(chunk, off, n);
    if (write(w, chunk, n) != (ssize_t)n) fail("write %s: %s", path, strerror(errno));
  }
  if (w < 0 || close(w)) fail("write %s: %s", path, strerror(errno));
  int read_ahead = 1, slow = 0;
  double t0 = now_ms();
  for (int run = 0; run < runs; run++) {
    int file = open(path, O_RDONLY);
    int p[2];
    if (file < 0 || pipe(p)) fail("run %d: open/pipe: %s", run, strerror(errno));
    pid_t pid = rfork();
    if (pid < 0) fail("run %d: rfork: %s", run, rex_last_error());
    if (pid == 0) {
      close(p[1]);
      size_t head = read_check(file, 0, HEAD_BYTES);
      if (head != HEAD_BYTES) fail("run %d: the file's head: %zu good bytes", run, head);
      char msg[sizeof MSG];
      ssize_t n = read_full(p[0], msg, sizeof MSG - 1);
      if (n != (ssize_t)sizeof MSG - 1 || memcmp(msg, MSG, sizeof MSG - 1)) fail("run %d: the pipe: %zd bytes", run, n);
      if (run % 2 == 0) {
        size_t rest = read_check(file, HEAD_BYTES, FILE_BYTES - HEAD_BYTES + 1); /* one byte more: ends with the EOF */
        if (rest != FILE_BYTES - HEAD_BYTES) fail("run %d: the file's rest: %zu good bytes of %d", run, rest, FILE_BYTES - HEAD_BYTES);
      }
      char host[256];
      if (gethostname(host, sizeof host)) strcpy(host, "?");
      printf("RUN %d CHILD %d %d %s\n", run, (int)getpid(), (int)getppid(), host);
      fflush(stdout);
      _exit(run % 256);
    }
    /* The stub reads the file ahead (the shared offset moves): the message comes once it has taken a window's worth. */
    if (read_ahead) {
      double give_up = now_ms() + READ_AHEAD_WAIT_MS;
      while (lseek(file, 0, SEEK_CUR) < READ_AHEAD && now_ms() < give_up) poll(NULL, 0, 1);
      if (lseek(file, 0, SEEK_CUR) < READ_AHEAD) {
        printf("NOTE run %d: the file was not read ahead (offset %lld after %d ms); the message goes at once from now on\n", run,
               (long long)lseek(file, 0, SEEK_CUR), READ_AHEAD_WAIT_MS);
        read_ahead = 0;
      }
    }
    if (write(p[1], MSG, sizeof MSG - 1) != (ssize_t)sizeof MSG - 1) fail("run %d: parent write: %s", run, strerror(errno));
    /* The write end stays open until the child has been waited for: its reads end on the length, not on EOF. */
    double written = now_ms(), until = written + deadline_ms;
    int st = 0;
    for (;;) {
      pid_t r = waitpid(pid, &st, WNOHANG);
      if (r == pid) break;
      if (r < 0 && errno != EINTR) fail("run %d: waitpid: %s", run, strerror(errno));
      if (now_ms() > until) {
        report_pending(run, pid, deadline_ms, file, p[0]);
        return 1;
      }
      poll(NULL, 0, 1); /* no wait for a child with a timeout but through a handler; 1 ms steps bound the latency */
    }
    if (now_ms() - written >= SLOW_MS) slow++;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != run % 256) fail("run %d: child status 0x%x", run, st);
    close(p[1]);
    close(p[0]);
    close(file);
  }
  printf("OK RUNS %d MS %.0f SLOW %d\n", runs, now_ms() - t0, slow);
  return 0;
}
