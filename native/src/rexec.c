/*
 * rexec.c: rexecve() (docs/man/rexecve.3.md). Asks the local rexd to run a
 * program on the least-loaded host (or a named one) with EXEC, and once the
 * program runs, turns the calling process into its local stub: fds 0-2 are
 * relayed as DATA frames with per-stream credit, the usual signals are
 * forwarded as SIGNAL, and the process ends as the remote program did
 * (docs/PROTOCOL.md 4.9, docs/EXEC.md).
 *
 * Hazards: nothing the caller can see changes before STARTED (no signal
 * handler, no fd but our close-on-exec socket), so a failure returns -1 with
 * the process as it was; after STARTED there is no way back, as after
 * execve(), and the stub leaves with _exit (the caller's atexit handlers and
 * stdio buffers belong to the replaced program, they must not run). Signal
 * handlers only write the signal number to a self-pipe; everything else
 * happens in the loop. A death signal is re-raised with RLIMIT_CORE 0, so the
 * stub does not leave a core file of its own where the remote dumped one.
 */
#define _GNU_SOURCE /* pipe2 */
#include "conn.h"
#include "die.h"
#include "fileproxy.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define REXEC_WINDOW (1u << 20) /* the protocol's default credit, when STARTED names none */
/* The credit this stub grants the executor for output (EXEC window): 4 MiB keeps the two daemons and the
   TLS hop busy between credits (100 MB of stdout: 1 MiB 152, 2 MiB 195, 4 MiB 215 MB/s in one run,
   docs/PERFORMANCE.md) and still bounds what a reader that stops leaves in the daemons. */
#define REXEC_OUT_WINDOW (4u << 20)
/* Credit for the executor's DATA goes back in batches of this much (a quarter of the window, as HTTP/2 peers do):
   one WINDOW_UPDATE per MiB written instead of one per frame. Less than a batch owed leaves the executor
   three quarters of its window, so it never waits on credit held here. */
#define REXEC_CREDIT_BATCH (REXEC_OUT_WINDOW / 4)
#define REXEC_CHUNK (64u * 1024u)
#define STREAM 1u

/* Signal names on the wire (without SIG) and their numbers here. */
static const struct {
  int sig;
  const char *name;
} SIGNALS[] = {{SIGHUP, "HUP"},   {SIGINT, "INT"},   {SIGQUIT, "QUIT"}, {SIGILL, "ILL"},       {SIGTRAP, "TRAP"},
               {SIGABRT, "ABRT"}, {SIGBUS, "BUS"},   {SIGFPE, "FPE"},   {SIGKILL, "KILL"},     {SIGUSR1, "USR1"},
               {SIGSEGV, "SEGV"}, {SIGUSR2, "USR2"}, {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"},     {SIGTERM, "TERM"},
               {SIGCHLD, "CHLD"}, {SIGCONT, "CONT"}, {SIGSTOP, "STOP"}, {SIGTSTP, "TSTP"},     {SIGTTIN, "TTIN"},
               {SIGTTOU, "TTOU"}, {SIGURG, "URG"},   {SIGXCPU, "XCPU"}, {SIGXFSZ, "XFSZ"},     {SIGVTALRM, "VTALRM"},
               {SIGPROF, "PROF"}, {SIGWINCH, "WINCH"}, {SIGIO, "IO"},   {SIGPWR, "PWR"},       {SIGSYS, "SYS"}};

/* What the stub forwards (as rex run does): the table of src/protocol/signals.ts, through wire.h. */
#define REX_SIGNUM(name) SIG##name,
static const int FORWARD[] = {REX_FORWARDED_SIGNALS(REX_SIGNUM)};
#undef REX_SIGNUM

/* The request being served: its report and end hook (the native rex run's), when it asked for them. */
static const struct rex__stub_req *cur;

/* With a pseudo-terminal (stdin is a terminal, rexecve): the terminal's mode before the stub made it raw. */
static struct termios saved_tty;
static int tty_raw;

/* Puts the local terminal back as it was (every way the stub ends goes through here). */
static void tty_restore(void) {
  if (tty_raw) tcsetattr(0, TCSADRAIN, &saved_tty);
  tty_raw = 0;
}

/* Makes the local terminal raw: keys (Ctrl-C too) go to the remote terminal, whose line discipline acts on them. */
static void tty_make_raw(void) {
  struct termios t;
  if (tcgetattr(0, &t) != 0) return;
  if (!tty_raw) saved_tty = t;
  if (cur && cur->node_raw) {
    /* The native rex run: the raw mode of the Node CLI (libuv's UV_TTY_MODE_RAW), ONLCR kept, so the bytes on the terminal are the same. */
    t.c_iflag &= (tcflag_t) ~(BRKINT | ICRNL | INPCK | ISTRIP | IXON);
    t.c_oflag |= ONLCR;
    t.c_cflag |= CS8;
    t.c_lflag &= (tcflag_t) ~(ECHO | ICANON | IEXTEN | ISIG);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
  } else
    cfmakeraw(&t); /* output processing off as well: the remote terminal already turned \n into \r\n */
  if (tcsetattr(0, TCSADRAIN, &t) == 0) tty_raw = 1;
}

/* The caller's name in messages: "rexecve" or "rfork". */
static const char *who = "rexecve";

/*
 * One relayed descriptor: in = the stub reads it and sends DATA; out = DATA
 * from the remote is written to it. unacked: bytes of it sent and not yet
 * credited back, when the executor credits each descriptor on its own
 * (STARTED fd_window): a descriptor the child does not read then stops only
 * itself, never the others (docs/RFORK.md section 4).
 */
struct proxy {
  int fd;
  unsigned char in, out, in_open;
  unsigned char served; /* a file or directory: answered on the file channel, never read or written as a stream */
  uint64_t unacked;
};

/* The file channel (docs/RFORK.md 4.1): requests from the moved child's supervisor, answered here on the real descriptors. */
static int fp_chan = -1;
static int fp_broken;
static uint8_t *fp_in, *fp_out;
static size_t fp_len;

static const char *sig_name(int sig) {
  for (size_t i = 0; i < sizeof SIGNALS / sizeof *SIGNALS; i++)
    if (SIGNALS[i].sig == sig) return SIGNALS[i].name;
  return NULL;
}

static int sig_number(const struct rex_attr *a) {
  for (size_t i = 0; i < sizeof SIGNALS / sizeof *SIGNALS; i++)
    if (strlen(SIGNALS[i].name) == a->len && memcmp(SIGNALS[i].name, a->data, a->len) == 0) return SIGNALS[i].sig;
  return 0;
}

/* The stub's connection to rexd, and what STARTED granted. */
struct stub {
  struct rex__conn conn;
  uint64_t window;    /* STARTED's credit towards the executor */
  uint64_t fd_window; /* STARTED's credit per relayed descriptor (rfork); 0: one window for all */
  uint64_t owed;      /* bytes of the executor's DATA handed on and not yet credited back (owe()) */
  int pty;            /* the program has a pseudo-terminal (EXEC pty) */
};

/* Writes all of p to the local descriptor fd, waiting with poll when it is non-blocking. 0 or -errno. */
static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT, .revents = 0};
        poll(&pf, 1, 1000);
        continue;
      }
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static const struct rex_attr *attr(const struct rex_frame *f, uint16_t tag) { return rex_attr_find(f, REX_ATTR_NONE, tag); }

/* ERROR from rexd -> errno (docs/man/rexecve.3.md), with rex_last_error() set to "WHO: rexd's message". */
static int exec_error(const struct rex_frame *f) {
  static const struct rex__errno_map map[] = {
      {REX_EPROTO_NO_ENTRY, ENOENT},        {REX_EPROTO_DENIED, EACCES},      {REX_EPROTO_NO_HOST, EHOSTUNREACH},
      {REX_EPROTO_UNREACHABLE, EHOSTUNREACH}, {REX_EPROTO_TIMEOUT, EHOSTUNREACH}, {REX_EPROTO_BUSY, EAGAIN},
      {REX_EPROTO_BAD_REQUEST, EINVAL},     {REX_EPROTO_UNSUPPORTED, ENOEXEC}, {REX_EPROTO_INCOMPATIBLE, ENOEXEC},
      {0, 0}};
  struct rex__remote_error e;
  int err = rex__conn_error(f, map, &e);
  rex__set_error("%s: %s", who, e.text);
  struct rex__stub_report *r = cur ? cur->report : NULL;
  if (r) {
    snprintf(r->proto, sizeof r->proto, "%s", e.name);
    const struct rex_attr *m = rex__field(f, REX_ATTR_NONE, REX_ERROR_MESSAGE);
    const struct rex_attr *h = rex__field(f, REX_ATTR_NONE, REX_ERROR_HOST);
    if (m && m->kind == REX_KIND_STRING)
      rex__copy_str(r->text, sizeof r->text, m);
    else
      snprintf(r->text, sizeof r->text, "%s", err == EPROTO && !strcmp(e.name, "MALFORMED") ? e.text : "");
    r->error_host[0] = '\0';
    if (h && h->kind == REX_KIND_STRING) rex__copy_str(r->error_host, sizeof r->error_host, h);
  }
  return err;
}

/*
 * The request that starts the program: EXEC with path, argv, env, cwd, host,
 * window (docs/PROTOCOL.md 4.9), and for a migration image the descriptors
 * to proxy. Sizes are checked by the encoder (too big: E2BIG). 0 or an errno.
 */
/*
 * REX_PLACE_HOSTS (docs/PLACEMENT.md): without a named host, the rexd places the
 * work among these hosts only (EXEC/RFORK `among`). Names are separated by
 * commas or white space, each a REX host name (letters, digits, '_' and '-',
 * at most 63). With `f` NULL only counts and checks them; otherwise adds one
 * `tag` attribute per name (pointing into `v`, which outlives the frame).
 * The count, or -1 with the error set (naming `what`) for a bad name: placing
 * anywhere instead would defeat the limit (another user's Slurm allocation).
 * rexecve()/rfork() (EXEC/RFORK `among`) and rcall() (CALL `among`) use it.
 */
long rex__place_hosts(const char *v, struct rex_frame *f, uint16_t tag, const char *what) {
  long n = 0;
  for (const char *p = v; *p;) {
    if (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n') {
      p++;
      continue;
    }
    size_t len = strcspn(p, ", \t\n");
    int ok = len <= 63 && p[0] != '-' && p[0] != '_';
    for (size_t i = 0; ok && i < len; i++) ok = (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') || p[i] == '_' || p[i] == '-';
    if (!ok) {
      rex__set_error("%s: REX_PLACE_HOSTS: \"%.*s\" is not a host name (set it to host names separated by commas, or unset it)", what, (int)(len > 63 ? 63 : len), p);
      return -1;
    }
    if (f) rex_attr_stringn(f, tag, p, len);
    n++;
    p += len;
  }
  return n;
}

static int send_request(struct stub *s, const struct rex__stub_req *rq) {
  const char *host = rq->host, *path = rq->path;
  char *const *argv = rq->argv, *const *envp = rq->envp;
  size_t nargs = 0, nenv = 0, bytes = 0;
  for (; argv && argv[nargs]; nargs++) bytes += strlen(argv[nargs]) + 7;
  for (; envp && envp[nenv]; nenv++) bytes += strlen(envp[nenv]) + 7;
  /* A named host is the caller's choice, even outside REX_PLACE_HOSTS. */
  const char *place = host && *host && strcmp(host, "*") != 0 ? NULL : getenv("REX_PLACE_HOSTS");
  /* CRITICAL: a rexd too old to know `among` refuses (UNSUPPORTED) instead of placing anywhere. */
  const uint16_t among = (uint16_t)(REX_EXEC_AMONG | REX_TAG_CRITICAL);
  long nplace = place ? rex__place_hosts(place, NULL, among, who) : 0;
  if (nplace < 0) return EINVAL;
  if (place) bytes += strlen(place) + 7 * (size_t)nplace;
  if (nargs + nenv + (size_t)nplace + 8 > REX_PROTO_MAX_ATTRS || bytes + strlen(path) + 8192 > REX_PROTO_MAX_PAYLOAD) {
    rex__set_error("%s: argument list and environment too long for one EXEC frame", who);
    return E2BIG;
  }
  struct rex_attr *ea = calloc(nargs + nenv + (size_t)nplace + 8, sizeof *ea);
  if (!ea) return ENOMEM;
  char cwd[4096];
  struct rex_frame f;
  rex_frame_init(&f, ea, nargs + nenv + (size_t)nplace + 8);
  rex_frame_start(&f, rq->image ? REX_MSG_RFORK : REX_MSG_EXEC, 0, STREAM);
  rex_attr_string(&f, REX_EXEC_PATH, path);
  for (size_t i = 0; i < nargs; i++) rex_attr_string(&f, REX_EXEC_ARGV, argv[i]);
  for (size_t i = 0; i < nenv; i++) rex_attr_string(&f, REX_EXEC_ENV, envp[i]);
  if (getcwd(cwd, sizeof cwd)) rex_attr_string(&f, REX_EXEC_CWD, cwd);
  if (host && *host) rex_attr_string(&f, REX_EXEC_HOST, host);
  if (nplace > 0) rex__place_hosts(place, &f, among, who);
  if (rq->sha256) rex_attr_bytes(&f, REX_EXEC_SHA256, rq->sha256, 32);
  rex_attr_uint(&f, REX_EXEC_WINDOW, REXEC_OUT_WINDOW);
  struct winsize ws;
  if (rq->pty && ioctl(0, TIOCGWINSZ, &ws) == 0) {
    /* As rex run: the program gets a terminal of the same size; its stdout and stderr both arrive as fd 1. */
    rex_attr_bool(&f, REX_EXEC_PTY, 1);
    s->pty = 1;
    rex_attr_uint(&f, REX_EXEC_ROWS, ws.ws_row ? ws.ws_row : 24);
    rex_attr_uint(&f, REX_EXEC_COLS, ws.ws_col ? ws.ws_col : 80);
  }
  uint8_t *fdlist = NULL;
  if (rq->image) {
    fdlist = malloc(rq->nfds * 4 + 1);
    if (!fdlist) {
      free(ea);
      return ENOMEM;
    }
    for (size_t i = 0; i < rq->nfds; i++) rex__wr32(fdlist + 4 * i, (uint32_t)rq->fds[i]);
    rex_attr_bytes(&f, REX_RFORK_FDS, fdlist, rq->nfds * 4);
  }
  int rc = rex__conn_send(&s->conn, &f);
  free(fdlist);
  free(ea);
  return rc == -EINVAL ? E2BIG : -rc;
}

/* Connects, says HELLO, sends the request and waits for STARTED. 0, or an errno (nothing started). */
static int start(struct stub *s, const struct rex__stub_req *rq) {
  struct rex__conn *c = &s->conn;
  struct rex_frame f;
  /* No deadline: a transfer may take long, and after STARTED the link lives as long as the program. */
  int rc = rex__conn_open(c, who, 0, NULL);
  if (rc) return c->fd >= 0 && (rc == -ENOENT || rc == -ECONNREFUSED) ? EHOSTUNREACH : -rc;
  if (!(rc = rex__conn_queue_hello(c)) && !(rc = rex__conn_flush(c))) rc = rex__conn_welcome(c, &f);
  if (rc == REX__CONN_ERROR) return exec_error(&f) == EACCES ? EACCES : EHOSTUNREACH;
  if (rc) return rc == -ECONNRESET ? EHOSTUNREACH : -rc;
  if ((rc = send_request(s, rq))) return rc;
  if (rq->report) rq->report->sent = 1;
  for (;;) {
    rc = rex__conn_await(c, STREAM, &f);
    if (rc == REX__CONN_ERROR) return exec_error(&f);
    if (rc) return rc == -ECONNRESET ? EHOSTUNREACH : -rc;
    if (f.type == REX_MSG_STARTED) {
      const struct rex_attr *w = attr(&f, REX_STARTED_WINDOW);
      s->window = w && w->kind == REX_KIND_UINT ? w->v.u : REXEC_WINDOW;
      const struct rex_attr *fw = attr(&f, REX_STARTED_FD_WINDOW);
      s->fd_window = fw && fw->kind == REX_KIND_UINT ? fw->v.u : 0;
      if (rq->report) {
        const struct rex_attr *h = attr(&f, REX_STARTED_HOST), *pid = attr(&f, REX_STARTED_PID);
        if (h && h->kind == REX_KIND_STRING) rex__copy_str(rq->report->host, sizeof rq->report->host, h);
        rq->report->pid = pid && pid->kind == REX_KIND_UINT ? pid->v.u : 0;
      }
      return 0;
    }
    if (f.type == REX_MSG_PROGRESS && rq->on_progress) {
      const struct rex_attr *d = attr(&f, REX_PROGRESS_DONE), *t = attr(&f, REX_PROGRESS_TOTAL), *p = attr(&f, REX_PROGRESS_PATH);
      char path[4096];
      if (p && p->kind == REX_KIND_STRING)
        rex__copy_str(path, sizeof path, p);
      else
        snprintf(path, sizeof path, "%s", rq->path);
      rq->on_progress(rq->end_arg, d && d->kind == REX_KIND_UINT ? d->v.u : 0, t && t->kind == REX_KIND_UINT ? t->v.u : 0, path);
    }
    /* Anything else before STARTED (transfer progress, later additions) is information only. */
  }
}

static int sigpipe_fds[2] = {-1, -1};
static int epipe_sent; /* SIGPIPE sent to the program after EPIPE on fd 1 or 2 (epipe_sigpipe) */

static void on_signal(int sig) {
  int e = errno;
  unsigned char b = (unsigned char)sig;
  ssize_t r = write(sigpipe_fds[1], &b, 1);
  (void)r;
  errno = e;
}

/* Leaves like the remote program: _exit(code), or death by the same signal. */
static void __attribute__((noreturn)) end_like(int code, int sig) {
  tty_restore();
  if (cur && cur->on_end) {
    cur->on_end(cur->end_arg, cur->report);
  }
  if (sig > 0) {
    rex__die_of(sig);
    _exit(128 + sig); /* a signal whose default is to ignore (CHLD, URG, WINCH): as a shell reports it */
  }
  _exit(code);
}

static void __attribute__((noreturn)) lost(const char *why) {
  tty_restore();
  if (cur && cur->on_end && cur->report) {
    /* The caller reports it (its own message and record) and leaves with 255. */
    struct rex__stub_report *r = cur->report;
    if (why != r->text) snprintf(r->text, sizeof r->text, "%s", why);
    r->exited = 0;
    cur->on_end(cur->end_arg, r);
    _exit(255);
  }
  char line[640];
  int n = snprintf(line, sizeof line, "%s: %s\n", who, why);
  if (n > 0) write_all(2, (const uint8_t *)line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
  _exit(255);
}

static int send_simple(struct stub *c, uint16_t type, uint16_t tag, uint64_t v, const char *s, const void *bytes, size_t n,
                       int eof) {
  /* For DATA, v is the descriptor. */
  struct rex_attr a[4];
  struct rex_frame f;
  rex_frame_init(&f, a, 4);
  rex_frame_start(&f, type, 0, STREAM);
  if (type == REX_MSG_DATA) {
    rex_attr_uint(&f, REX_DATA_FD, v);
    if (n) rex_attr_bytes(&f, REX_DATA_DATA, bytes, n);
    if (eof) rex_attr_bool(&f, REX_DATA_EOF, 1);
  } else if (s)
    rex_attr_string(&f, tag, s);
  else
    rex_attr_uint(&f, tag, v);
  return rex__conn_send(&c->conn, &f);
}

static struct proxy *find_proxy(struct proxy *px, size_t n, uint64_t fd) {
  for (size_t i = 0; i < n; i++)
    if ((uint64_t)px[i].fd == fd) return &px[i];
  return NULL;
}

/*
 * The remote closed its copy of a descriptor (its socket end reached EOF: a
 * close, or a shutdown, which look the same from here). The stub stops
 * reading it on the child's behalf, so the parent's reads of a shared
 * descriptor are not taken away, tells the remote it ends there too, and
 * closes its own copy: the parent keeps its copy, as after fork(), and the
 * last close is what the other end sees. A shutdown() is never issued: it
 * would act on the socket the parent shares, not on the child's copy.
 */
static int remote_closed(struct stub *c, struct proxy *p) {
  if (p && p->served && p->fd > 2) {
    /* The child closed its last copy of a relayed file: requests on it are EBADF from now on, the parent keeps its own. */
    p->served = 0;
    close(p->fd);
    return 0;
  }
  if (!p || p->fd <= 2 || (!p->out && !p->in)) return 0; /* 0-2 stay: the stub reports on stderr */
  p->out = 0;
  p->in = 0;
  int rc = 0;
  if (p->in_open) {
    p->in_open = 0;
    rc = send_simple(c, REX_MSG_DATA, 0, (uint64_t)p->fd, NULL, NULL, 0, 1);
  }
  close(p->fd);
  return rc;
}

static struct proxy *fp_px;
static size_t fp_npx;

static int fp_served(void *ctx, int fd) {
  (void)ctx;
  struct proxy *p = find_proxy(fp_px, fp_npx, (uint64_t)fd);
  return p && p->served;
}

/*
 * Bytes from the file channel: each complete request is performed on the
 * real descriptor and answered on the channel. A malformed request ends the
 * channel (the supervisor then fails the child's calls with EIO) with a
 * message naming the field. Returns -1 when rexd is lost.
 */
static int fp_input(struct stub *c, const uint8_t *d, size_t n, uint64_t *credit) {
  if (fp_broken) return 0;
  if (!fp_in) {
    fp_in = malloc(REX_FP_REQ_SIZE + REX_FP_MAX_IO);
    fp_out = malloc(REX_FP_RESP_SIZE + REX_FP_MAX_IO);
    if (!fp_in || !fp_out) lost("out of memory");
  }
  while (n) {
    size_t take = REX_FP_REQ_SIZE + REX_FP_MAX_IO - fp_len;
    if (take > n) take = n;
    memcpy(fp_in + fp_len, d, take);
    fp_len += take;
    d += take;
    n -= take;
    for (;;) {
      struct rex_fp_req rq;
      char why[200];
      long used = rex__fp_parse_req(fp_in, fp_len, &rq, why, sizeof why);
      if (used == 0 && fp_len == REX_FP_REQ_SIZE + REX_FP_MAX_IO) {
        snprintf(why, sizeof why, "a request longer than %u bytes", REX_FP_REQ_SIZE + REX_FP_MAX_IO);
        used = -1;
      }
      if (used < 0) {
        char line[400];
        int k = snprintf(line, sizeof line, "%s: bad request on the file channel from the moved child: %s; its relayed files fail with EIO\n", who, why);
        if (k > 0) write_all(2, (const uint8_t *)line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
        fp_broken = 1;
        return send_simple(c, REX_MSG_DATA, 0, (uint64_t)fp_chan, NULL, NULL, 0, 1) ? -1 : 0;
      }
      if (used == 0) break;
      if (rq.op == REX_FP_STREAM) {
        /* The child could not install its filter: its files are relayed as byte streams from now on, as pipes are. */
        for (size_t i = 0; i < fp_npx; i++) {
          struct proxy *p = &fp_px[i];
          if (!p->served) continue;
          p->served = 0;
          int fl = fcntl(p->fd, F_GETFL);
          int acc = fl < 0 ? O_RDWR : (fl & O_ACCMODE);
          p->in = p->fd == 0 || (p->fd > 2 && (acc == O_RDONLY || acc == O_RDWR)); /* as rex__stub_exec decides for streams */
          p->in_open = p->in;
        }
        fp_broken = 1;
        return 0;
      }
      size_t dlen = rex__fp_perform(&rq, fp_served, NULL, fp_out, fp_out + REX_FP_RESP_SIZE);
      memmove(fp_in, fp_in + used, fp_len - (size_t)used);
      fp_len -= (size_t)used;
      size_t all = REX_FP_RESP_SIZE + dlen;
      /* Answers are bounded (one per request, the supervisor waits for each): they go out whatever the credit, and count against it. */
      *credit = *credit > all ? *credit - all : 0;
      if (send_simple(c, REX_MSG_DATA, 0, (uint64_t)fp_chan, NULL, fp_out, all, 0)) return -1;
    }
  }
  return 0;
}

/* The stub's signal handling: the relayed signals only write their number to a self-pipe, which the loop reads. */
static void relay_signals(void) {
  if (pipe2(sigpipe_fds, O_CLOEXEC | O_NONBLOCK) < 0) lost("cannot create the signal pipe");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigset_t fwd;
  sigemptyset(&fwd);
  for (size_t i = 0; i < sizeof FORWARD / sizeof *FORWARD; i++) {
    sigaction(FORWARD[i], &sa, NULL);
    sigaddset(&fwd, FORWARD[i]);
  }
  /* The caller may have blocked them (an rfork()ing parent's mask is the stub's too): the stub must see them to relay them. */
  sigprocmask(SIG_UNBLOCK, &fwd, NULL);
  signal(SIGPIPE, SIG_IGN);
}

/*
 * How many bytes of `p` the stub may send now: its own window's rest when the
 * executor credits each descriptor (STARTED fd_window), else the stream's.
 * With one window for all, a descriptor read ahead that the child never reads
 * (a file, a busy socket) takes all the credit, and a pipe the child waits
 * on is no longer read: the child, and the parent's wait(), hang.
 */
static uint64_t room(const struct stub *c, const struct proxy *p, uint64_t credit) {
  if (!c->fd_window) return credit;
  return p->unacked < c->fd_window ? c->fd_window - p->unacked : 0;
}

/* Credits n bytes of the executor's DATA as handed on: sent once a batch (REXEC_CREDIT_BATCH) is owed. */
static void owe(struct stub *c, uint64_t n) {
  c->owed += n;
  if (c->owed < REXEC_CREDIT_BATCH) return;
  if (send_simple(c, REX_MSG_WINDOW_UPDATE, REX_WINDOW_UPDATE_INCREMENT, c->owed, NULL, NULL, 0, 0)) lost("lost rexd");
  c->owed = 0;
}

/* The stub: relays until EXIT, then ends like the remote program. Never returns. */
static void __attribute__((noreturn)) relay(struct stub *c, struct proxy *px, size_t npx) {
  uint64_t credit = c->window ? c->window : REXEC_WINDOW;
  uint8_t *inbuf = malloc(REXEC_CHUNK);
  struct pollfd *p = calloc(npx + 2, sizeof *p);
  size_t *which = calloc(npx + 2, sizeof *which);
  if (!inbuf || !p || !which) lost("out of memory");
  struct rex_frame f;
  for (;;) {
    /* Frames already received are handled before waiting again. */
    int got;
    while ((got = rex__conn_take(&c->conn, &f)) > 0) {
      if (f.type == REX_MSG_ERROR) {
        exec_error(&f);
        if (cur && cur->report) lost(cur->report->text); /* the report keeps the ERROR's code and host */
        lost(rex_last_error() + strlen(who) + 2); /* without its "who: " prefix: lost() adds it */
      }
      if (f.type == REX_MSG_GOODBYE) lost("rexd closed the connection");
      if (f.stream != STREAM) continue;
      const struct rex_attr *a;
      switch (f.type) {
        case REX_MSG_DATA: {
          a = attr(&f, REX_DATA_FD);
          const struct rex_attr *d = attr(&f, REX_DATA_DATA);
          const struct rex_attr *eof = attr(&f, REX_DATA_EOF);
          if (!a || a->kind != REX_KIND_UINT) break;
          if (fp_chan >= 0 && a->v.u == (uint64_t)fp_chan) {
            /* The file channel: requests, not a descriptor's bytes; its end (the supervisor exited) needs nothing. */
            if (d && d->kind == REX_KIND_BYTES && d->len > 0) {
              if (fp_input(c, d->data, d->len, &credit)) lost("lost rexd");
              owe(c, d->len);
            }
            break;
          }
          struct proxy *to = find_proxy(px, npx, a->v.u);
          if (d && d->kind == REX_KIND_BYTES && d->len > 0) {
            /* EPIPE or a closed descriptor: the reader is gone; drop, keep the credit flowing. */
            if (to && to->out && write_all(to->fd, d->data, d->len) == -EPIPE && to->fd <= 2 && cur && cur->epipe_sigpipe &&
                !epipe_sent) {
              /* As rex run: the program gets the SIGPIPE a local writer would (`rex run yes | head -1`). */
              epipe_sent = 1;
              if (send_simple(c, REX_MSG_SIGNAL, REX_SIGNAL_SIGNAL, 0, "PIPE", NULL, 0, 0)) lost("lost rexd");
            }
            owe(c, d->len);
          }
          if (eof && eof->kind == REX_KIND_BOOL && eof->v.u && remote_closed(c, to)) lost("lost rexd");
          break;
        }
        case REX_MSG_WINDOW_UPDATE: {
          const struct rex_attr *on = attr(&f, REX_WINDOW_UPDATE_FD);
          if (!(a = attr(&f, REX_WINDOW_UPDATE_INCREMENT)) || a->kind != REX_KIND_UINT) break;
          struct proxy *of = c->fd_window && on && on->kind == REX_KIND_UINT ? find_proxy(px, npx, on->v.u) : NULL;
          if (of)
            of->unacked -= a->v.u < of->unacked ? a->v.u : of->unacked;
          else
            credit += a->v.u;
          break;
        }
        case REX_MSG_EXIT: {
          const struct rex_attr *s = attr(&f, REX_EXIT_SIGNAL);
          a = attr(&f, REX_EXIT_CODE);
          struct rex__stub_report *r = cur ? cur->report : NULL;
          const struct rex_attr *h = attr(&f, REX_EXIT_HOST);
          if (r) {
            r->exited = 1;
            if (h && h->kind == REX_KIND_STRING && h->len) rex__copy_str(r->host, sizeof r->host, h);
          }
          if (s && s->kind == REX_KIND_STRING) {
            int sig = sig_number(s);
            if (r) {
              rex__copy_str(r->signal, sizeof r->signal, s);
              r->signo = sig;
            }
            /* A name this host does not know: exit 128, as rex run reports it (128 + no number). */
            if (sig <= 0) end_like(128, 0);
            end_like(0, sig);
          }
          int code = a && a->kind == REX_KIND_UINT ? (int)(a->v.u & 0xff) : 0;
          if (r) r->code = code;
          end_like(code, 0);
        }
        default:
          break;
      }
    }
    if (got < 0) lost("bad frame from rexd");
    p[0] = (struct pollfd){.fd = c->conn.fd, .events = POLLIN, .revents = 0};
    p[1] = (struct pollfd){.fd = sigpipe_fds[0], .events = POLLIN, .revents = 0};
    nfds_t np = 2;
    for (size_t i = 0; i < npx; i++) {
      if (!px[i].in || !px[i].in_open || room(c, &px[i], credit) == 0) continue;
      which[np] = i;
      p[np++] = (struct pollfd){.fd = px[i].fd, .events = POLLIN, .revents = 0};
    }
    if (poll(p, np, -1) < 0) {
      if (errno == EINTR) continue;
      lost("poll failed");
    }
    if (p[1].revents & POLLIN) {
      unsigned char sigs[32];
      ssize_t n = read(sigpipe_fds[0], sigs, sizeof sigs);
      for (ssize_t i = 0; i < n; i++) {
        struct winsize ws;
        if (sigs[i] == SIGWINCH && c->pty && ioctl(0, TIOCGWINSZ, &ws) == 0) {
          /* The remote terminal takes the new size; its kernel sends the program SIGWINCH. */
          struct rex_attr a[3];
          struct rex_frame w;
          rex_frame_init(&w, a, 3);
          rex_frame_start(&w, REX_MSG_WINSIZE, 0, STREAM);
          rex_attr_uint(&w, REX_WINSIZE_ROWS, ws.ws_row);
          rex_attr_uint(&w, REX_WINSIZE_COLS, ws.ws_col);
          if (rex__conn_send(&c->conn, &w)) lost("lost rexd");
          continue;
        }
        const char *name = sig_name(sigs[i]);
        if (name && send_simple(c, REX_MSG_SIGNAL, REX_SIGNAL_SIGNAL, 0, name, NULL, 0, 0)) lost("lost rexd");
        if (sigs[i] == SIGTSTP) {
          /* Ctrl-Z stops the stub too, as it would a local child; the shell gets its terminal back as it was. */
          int was_raw = tty_raw;
          tty_restore();
          raise(SIGSTOP);
          if (was_raw) tty_make_raw();
        }
      }
    }
    for (nfds_t k = 2; k < np; k++) {
      struct proxy *in = &px[which[k]];
      uint64_t can = room(c, in, credit);
      if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) || can == 0) continue;
      size_t want = can < REXEC_CHUNK ? (size_t)can : REXEC_CHUNK;
      ssize_t n = (p[k].revents & POLLNVAL) ? 0 : read(in->fd, inbuf, want);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        in->in_open = 0;
        if (send_simple(c, REX_MSG_DATA, 0, (uint64_t)in->fd, NULL, NULL, 0, 1)) lost("lost rexd");
      } else {
        if (c->fd_window)
          in->unacked += (uint64_t)n;
        else
          credit -= (uint64_t)n;
        if (send_simple(c, REX_MSG_DATA, 0, (uint64_t)in->fd, NULL, inbuf, (size_t)n, 0)) lost("lost rexd");
      }
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      /* Read what is there; the top of the loop decodes it. */
      rex__clear_error();
      long r = rex__conn_fill(&c->conn);
      if (r < 0 && cur && cur->report) {
        /* rex run words it as the Node CLI does: end of file (closed), or the read's error by its errno name. */
        char m[300];
        const char *name = r == -ECONNRESET ? "ECONNRESET" : r == -ETIMEDOUT ? "ETIMEDOUT" : r == -EPIPE ? "EPIPE" : r == -EIO ? "EIO" : NULL;
        if (r == -ECONNRESET && !*rex_last_error())
          snprintf(m, sizeof m, "connection to %s closed", c->conn.where);
        else if (name)
          snprintf(m, sizeof m, "connection to %s failed: read %s", c->conn.where, name);
        else
          snprintf(m, sizeof m, "connection to %s failed: read: %s", c->conn.where, strerror((int)-r));
        lost(m);
      }
      if (r < 0) lost("lost the connection to rexd while the program ran");
    }
  }
}

int rex__stub_exec(const struct rex__stub_req *rq, void (*on_started)(void *arg), void *arg) {
  who = rq->who ? rq->who : "rexecve";
  cur = rq;
  size_t npx = rq->image ? rq->nfds : 3;
  struct proxy *px = calloc(npx ? npx : 1, sizeof *px);
  if (!px) return ENOMEM;
  if (!rq->image) {
    px[0] = (struct proxy){0, 1, 0, 1, 0, 0};
    px[1] = (struct proxy){1, 0, 1, 0, 0, 0};
    px[2] = (struct proxy){2, 0, 1, 0, 0, 0};
  } else {
    for (size_t i = 0; i < npx; i++) {
      int fd = rq->fds[i];
      px[i].fd = fd;
      if (fd == 0) {
        px[i].in = 1;
      } else if (fd <= 2) {
        px[i].out = 1;
      } else {
        /* Other descriptors by their access mode; a socket or O_RDWR descriptor both ways. */
        int fl = fcntl(fd, F_GETFL);
        int acc = fl < 0 ? O_RDWR : (fl & O_ACCMODE);
        px[i].in = acc == O_RDONLY || acc == O_RDWR;
        px[i].out = acc == O_WRONLY || acc == O_RDWR;
      }
      if (rq->served && rq->served[i]) {
        /* A file or directory: the child's calls on it come as requests on the file channel (docs/RFORK.md 4.1). */
        px[i].served = 1;
        px[i].in = 0; /* never read ahead: that would move the offset the parent shares */
        /* out stays: bytes written to the socket outside the filter (the restorer's warnings on a file as stderr) still reach the file */
      }
      if (fd == rq->chan) { /* the channel has no descriptor here: never read, written or closed */
        px[i].fd = -1;
        px[i].in = px[i].out = 0;
      }
      px[i].in_open = px[i].in;
    }
    fp_chan = rq->chan;
    fp_px = px;
    fp_npx = npx;
  }
  struct stub c;
  memset(&c, 0, sizeof c);
  int e = start(&c, rq);
  if (e) {
    rex__conn_close(&c.conn);
    free(px);
    return e;
  }
  /* Before the caller learns the program runs (rfork's parent may signal the stub at once), never before: a failure leaves the process as it was. */
  relay_signals();
  if (on_started) on_started(arg);
  if (c.pty) tty_make_raw();
  relay(&c, px, npx);
}

int rexecve_on(const char *host, const char *path, char *const argv[], char *const envp[], unsigned rflags) {
  rex__clear_error();
  if (!path || !*path || rflags != 0) {
    errno = path && *path ? EINVAL : ENOENT;
    return -1;
  }
  if (!host) host = getenv("REX_HOST");
  /* As rex run: a terminal on stdin gets the program a pseudo-terminal there (REX_PTY=0: plain pipes). */
  const char *want_pty = getenv("REX_PTY");
  int pty = isatty(0) && !(want_pty && strcmp(want_pty, "0") == 0);
  struct rex__stub_req rq = {.who = "rexecve", .host = host, .path = path, .argv = argv, .envp = envp, .pty = pty};
  errno = rex__stub_exec(&rq, NULL, NULL);
  return -1;
}

int rexecve(const char *path, char *const argv[], char *const envp[]) { return rexecve_on(NULL, path, argv, envp, 0); }
