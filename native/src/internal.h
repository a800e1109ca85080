/*
 * internal.h: what librex's source files share and do not export.
 * Non-static functions here are prefixed rex__ and stay hidden
 * (the library is built with -fvisibility=hidden).
 */
#ifndef REX_INTERNAL_H
#define REX_INTERNAL_H

#include "wire.h"

#include <stdarg.h>

/* Big-endian readers and writers: the wire is network order, attributes need no alignment. */
static inline uint16_t rex__rd16(const uint8_t *p) { return (uint16_t)((unsigned)p[0] << 8 | p[1]); }
static inline uint32_t rex__rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t rex__rd64(const uint8_t *p) { return (uint64_t)rex__rd32(p) << 32 | rex__rd32(p + 4); }
static inline void rex__wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void rex__wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
static inline void rex__wr64(uint8_t *p, uint64_t v) {
  rex__wr32(p, (uint32_t)(v >> 32));
  rex__wr32(p + 4, (uint32_t)v);
}

/* Records the detail that rex_last_error() returns (this thread). */
void rex__set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* REX_PLACE_HOSTS's names as `tag` attributes of `f` (NULL: count and check only); the count, or -1 with the error set (rexec.c). */
long rex__place_hosts(const char *v, struct rex_frame *f, uint16_t tag, const char *what);
void rex__clear_error(void);

/* The Unix socket path of the local rexd: $REX_SOCKET, else $HOME/.rex/run/rexd.sock. 0 or -errno. */
int rex__socket_path(char *buf, size_t cap);

struct rex__stub_report;

/* What the origin stub (rexec.c) is asked to start: rexecve() and rfork() share it. */
struct rex__stub_req {
  const char *who;                 /* "rexecve" or "rfork": the prefix of messages */
  const char *host;                /* NULL or "" or "*": placement */
  const char *path;                /* the program, or for an image the path rexd reads it from */
  char *const *argv, *const *envp; /* programs only */
  int image;                       /* path is a migration image, sent as RFORK instead of EXEC (docs/RFORK.md) */
  int pty;                         /* ask for a pseudo-terminal of stdin's size (stdin is a terminal) */
  const int *fds;                  /* image: the descriptors to proxy, 0-2 included */
  size_t nfds;
  const unsigned char *served;     /* image: per fds[i], 1 = a file or directory answered on the file channel (NULL: none) */
  int chan;                        /* image: the file channel's number among fds, or -1 (docs/RFORK.md 4.1) */
  /* The native `rex run` (native/frontend/rex.c) asks for what the Node CLI does beyond rexecve(): */
  const uint8_t *sha256;           /* 32 bytes: the origin's copy of the program, by hash (EXEC sha256), or NULL */
  int epipe_sigpipe;               /* EPIPE on fd 1 or 2: the program gets SIGPIPE once, as a local writer would */
  int node_raw;                    /* with a pty: the local terminal's raw mode as Node's (libuv) sets it, not cfmakeraw's */
  struct rex__stub_report *report; /* filled in as the stub learns it (NULL: not wanted) */
  /* Called once just before the stub leaves (the program ended, or rexd was lost); NULL: none. */
  void (*on_end)(void *arg, const struct rex__stub_report *r);
  void *end_arg;
  /* PROGRESS before STARTED (a transfer to the executor): done and total bytes, the file's origin path; NULL: ignored. */
  void (*on_progress)(void *arg, uint64_t done, uint64_t total, const char *path);
};

/* What the stub learnt, for a caller that reports it (rex run --json, its messages). */
struct rex__stub_report {
  int sent;            /* the request went out (a failure before it changed nothing) */
  char host[256];      /* STARTED host, then EXIT host when it names one */
  uint64_t pid;        /* STARTED pid (0: none) */
  int exited;          /* EXIT arrived: code or signal below */
  int code;            /* exit code */
  char signal[32];     /* signal name without SIG, "" when it exited */
  int signo;           /* its number here, 0 when unknown */
  char proto[32];      /* an ERROR's code name (NO_ENTRY, DENIED, ...), "" for none */
  char error_host[256];/* an ERROR's host attribute, "" for none */
  char text[4096];     /* an ERROR's message, or why rexd was lost */
};

/*
 * Sends EXEC and, once the program runs, calls on_started(arg) and turns the
 * process into the stub (never returns). Returns an errno when nothing
 * started, with rex_last_error() set.
 */
int rex__stub_exec(const struct rex__stub_req *rq, void (*on_started)(void *arg), void *arg);

/* rfork.c: the executor's rexd socket inside a migrated child ("" elsewhere): librex talks to it. */
extern char rex__socket_override[108];

#endif /* REX_INTERNAL_H */
