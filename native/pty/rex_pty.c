/*
 * rex_pty: the pseudo-terminal helper of rexd's executor (docs/EXEC.md,
 * "Terminals"). Node cannot allocate a pty, so rexd starts this instead of
 * the program when EXEC asks for one:
 *
 *   rex_pty ROWS COLS PATH ARGV0 [ARGS...]
 *
 * It forkpty()s the program (a new session with the pty as controlling
 * terminal, ROWS x COLS), copies fd 0 to the pty and the pty to fd 1, reads
 * window sizes ("ROWS COLS\n") on fd 3, passes the signals it receives to
 * the terminal's foreground process group (as a terminal would), and ends as
 * the program ended: the same exit code, or death by the same signal.
 * An exec failure is reported on stderr and as status 127 (126 for EACCES).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "die.h"
#include "wire.h"

static int sigfds[2];
/* The signals a stub forwards (wire.h, from src/protocol/signals.ts); WINCH is not among those passed on: sizes come on fd 3. */
#define REX_SIGNUM(name) SIG##name,
static const int FORWARDED[] = {REX_FORWARDED_SIGNALS(REX_SIGNUM)};
#undef REX_SIGNUM

static void on_signal(int sig) {
  int e = errno;
  unsigned char b = (unsigned char)sig;
  ssize_t r = write(sigfds[1], &b, 1);
  (void)r;
  errno = e;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pf = {fd, POLLOUT, 0};
        poll(&pf, 1, 1000);
        continue;
      }
      return; /* the reader is gone: drop, as a terminal whose reader left would */
    }
    p += w;
    n -= (size_t)w;
  }
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: rex_pty ROWS COLS PATH ARGV0 [ARGS...]\n");
    return 2;
  }
  struct winsize ws = {.ws_row = (unsigned short)atoi(argv[1]), .ws_col = (unsigned short)atoi(argv[2]), .ws_xpixel = 0, .ws_ypixel = 0};
  int master;
  pid_t pid = forkpty(&master, NULL, NULL, &ws);
  if (pid < 0) {
    fprintf(stderr, "rex_pty: forkpty: %s\n", strerror(errno));
    return 126;
  }
  if (pid == 0) {
    execv(argv[3], argv + 4);
    int e = errno;
    fprintf(stderr, "rex_pty: %s: %s\n", argv[3], strerror(e));
    _exit(e == EACCES ? 126 : 127);
  }
  if (pipe2(sigfds, O_CLOEXEC | O_NONBLOCK) < 0) return 126;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof FORWARDED / sizeof *FORWARDED; i++)
    if (FORWARDED[i] != SIGWINCH) sigaction(FORWARDED[i], &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  char buf[65536];
  char line[64];
  size_t linelen = 0;
  int in_open = 1, ctl_open = fcntl(3, F_GETFD) >= 0;
  for (;;) {
    struct pollfd p[4] = {{master, POLLIN, 0}, {sigfds[0], POLLIN, 0}, {in_open ? 0 : -1, POLLIN, 0}, {ctl_open ? 3 : -1, POLLIN, 0}};
    if (poll(p, 4, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents & POLLIN) {
      unsigned char sigs[16];
      ssize_t n = read(sigfds[0], sigs, sizeof sigs);
      pid_t fg = tcgetpgrp(master);
      for (ssize_t i = 0; i < n; i++) kill(fg > 0 ? -fg : pid, sigs[i]);
    }
    if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n > 0) write_all(master, buf, (size_t)n);
      else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        /* The origin's stdin ended: the terminal's EOF character, as typing ^D would. */
        struct termios t;
        char eof = tcgetattr(master, &t) == 0 ? (char)t.c_cc[VEOF] : 4;
        write_all(master, &eof, 1);
        in_open = 0;
      }
    }
    if (p[3].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(3, line + linelen, sizeof line - 1 - linelen);
      if (n <= 0) ctl_open = 0;
      else {
        linelen += (size_t)n;
        line[linelen] = '\0';
        char *nl;
        while ((nl = strchr(line, '\n'))) {
          unsigned rows, cols;
          if (sscanf(line, "%u %u", &rows, &cols) == 2) {
            struct winsize w = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols, .ws_xpixel = 0, .ws_ypixel = 0};
            ioctl(master, TIOCSWINSZ, &w); /* the kernel sends SIGWINCH to the foreground group */
          }
          memmove(line, nl + 1, strlen(nl + 1) + 1);
          linelen = strlen(line);
        }
        if (linelen >= sizeof line - 1) linelen = 0; /* garbage without a newline: drop it */
      }
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n > 0) write_all(1, buf, (size_t)n);
      else if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      else break; /* EIO: every holder of the slave side has closed it */
    }
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status)) {
    rex__die_of(WTERMSIG(status));
    return 128 + WTERMSIG(status);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
