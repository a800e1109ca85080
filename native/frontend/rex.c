/*
 * rex.c: the native `rex` front end (docs/man/rex.1.md, NATIVE FRONT END).
 * `rex run` starts like a C program: this binary speaks EXEC to the local
 * rexd itself through librex's stub (native/src/rexec.c), with the flags,
 * output, --json record and exit statuses of the Node CLI's `rex run`
 * (src/cli/commands/run.ts); `rex call` it asks the local rexd to run for it
 * (CALL_CLI, do_call below). Everything else, and whatever it cannot do
 * exactly as the Node CLI would, it hands to the Node CLI by execv() with the
 * same argv: every other subcommand, --help, --version,
 * -c/--config, usage errors, a rex.rc the strict scanner does not fully
 * understand (frontend.c), and any failure before the EXEC or CALL_CLI request
 * went out (no rexd, a refused HELLO), so those messages are Node's own.
 *
 * The Node CLI: $REX_NODE, else the node the build recorded (REX_NODE_DEFAULT),
 * else `node` on PATH, running REX_CLI: a path relative to this binary's
 * directory (/proc/self/exe) in a clone (native/build/bin/rex ->
 * ../../../dist/bin/rex.js), an absolute one in an installation
 * (LIBDIR/rex/dist/bin/rex.js, set by `make install`).
 */
#define _GNU_SOURCE /* environ, O_CLOEXEC */
#include "conn.h"
#include "frontend.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef REX_CLI
#define REX_CLI "../../../dist/bin/rex.js"
#endif
#ifndef REX_NODE_DEFAULT
#define REX_NODE_DEFAULT "node"
#endif

/* A transfer carries at most this much (src/exec/protocol.ts TRANSFER_MAX): a larger program is not offered. */
#define TRANSFER_MAX (1ull << 30)
/* The most argument strings a CALL_CLI carries (src/protocol/messages.ts CALL_CLI_MAX_ARGS). */
#define CALL_CLI_MAX_ARGS 1024
/* A rex.rc larger than this is refused by the loader (src/config/load.ts MAX_CONFIG_BYTES): Node says so. */
#define MAX_CONFIG_BYTES (1 << 20)

extern char **environ;

static void die(int status, const char *fmt, const char *a, const char *b) {
  fprintf(stderr, fmt, a, b);
  exit(status);
}

/* Runs the Node CLI with this argv; never returns. */
static void __attribute__((noreturn)) delegate(int argc, char **argv) {
  char exe[PATH_MAX], cli[PATH_MAX + sizeof REX_CLI];
  if (REX_CLI[0] == '/') {
    snprintf(cli, sizeof cli, "%s", REX_CLI);
  } else {
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) die(127, "rex: cannot find the Node CLI: readlink /proc/self/exe: %s%s\n", strerror(errno), "");
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(cli, sizeof cli, "%s/%s", exe, REX_CLI);
  }
  if (access(cli, R_OK) != 0)
    die(127, "rex: the Node CLI %s is missing (%s): run npm install (or npm run build) in the REX clone\n", cli, strerror(errno));
  const char *node = getenv("REX_NODE");
  if (!node || !*node) node = REX_NODE_DEFAULT;
  /* The node of the build may be gone (a clone moved to another machine): then node on PATH. */
  if (strchr(node, '/') && access(node, X_OK) != 0 && !(getenv("REX_NODE") && *getenv("REX_NODE"))) node = "node";
  char **nargv = calloc((size_t)argc + 2, sizeof *nargv);
  if (!nargv) die(127, "rex: out of memory%s%s\n", "", "");
  nargv[0] = (char *)node;
  nargv[1] = cli;
  for (int i = 1; i < argc; i++) nargv[i + 1] = argv[i];
  if (strchr(node, '/'))
    execv(node, nargv);
  else
    execvp(node, nargv);
  die(127, "rex: cannot run the Node CLI with %s: %s\n", node, strerror(errno));
  abort();
}

/* Reads a regular file of at most MAX_CONFIG_BYTES as the loader would; NULL when the loader would refuse it. */
static char *read_rc(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  char *buf = NULL;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= MAX_CONFIG_BYTES && (buf = malloc((size_t)st.st_size + 1))) {
    size_t n = 0;
    for (;;) {
      ssize_t r = read(fd, buf + n, (size_t)st.st_size + 1 - n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      n += (size_t)r;
      if (n > (size_t)st.st_size) break;
    }
    if (n > (size_t)st.st_size) {
      free(buf);
      buf = NULL;
    }
    *len = n;
  }
  close(fd);
  return buf;
}

static int is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/*
 * The socket the Node CLI would use (src/runtime/client.ts resolveSocket): --socket, else $REX_SOCKET,
 * else the active rex.rc's (src/config/load.ts: $REX_CONFIG, ./rex.rc, ~/rex.rc, ${REX_ROOT:-/}/etc/rex.rc,
 * ${REX_ROOT:-/}/etc/rex/rex.rc), else ~/.rex/run/rexd.sock. FE_DELEGATE where only Node can tell.
 */
static int resolve_socket(const char *opt_socket, char *out, size_t cap) {
  const char *s = opt_socket;
  if (!s || !*s) s = getenv("REX_SOCKET");
  if (s && *s) {
    if (strlen(s) >= cap) return FE_DELEGATE; /* Node's connect reports it */
    memcpy(out, s, strlen(s) + 1);
    return FE_OK;
  }
  char cwd[PATH_MAX], file[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return FE_DELEGATE;
  const char *home = getenv("HOME");
  const char *cfg = getenv("REX_CONFIG");
  const char *root = getenv("REX_ROOT");
  if (!root || !*root) root = "/";
  int found = 0;
  if (cfg && *cfg) {
    if (fe_join(cfg[0] == '/' ? NULL : cwd, cfg, file, sizeof file) || !is_file(file)) return FE_DELEGATE;
    found = 1;
  } else {
    char etc[PATH_MAX];
    const char *cands[4][2] = {{cwd, "rex.rc"}, {home && *home ? home : NULL, "rex.rc"}, {root, "etc/rex.rc"}, {root, "etc/rex/rex.rc"}};
    for (int i = 0; i < 4 && !found; i++) {
      if (!cands[i][0]) continue;
      if (fe_join(cands[i][0], cands[i][1], etc, sizeof etc) == 0 && is_file(etc)) {
        memcpy(file, etc, strlen(etc) + 1);
        found = 1;
      }
    }
  }
  if (!found) {
    if (!home || !*home || strlen(home) + sizeof "/.rex/run/rexd.sock" > 108) return FE_DELEGATE;
    snprintf(out, cap, "%s/.rex/run/rexd.sock", home);
    return FE_OK;
  }
  size_t n = strlen(file);
  if (n >= 4 && strcmp(file + n - 4, ".xml") == 0) return FE_DELEGATE; /* the XML form: Node's loader */
  size_t len = 0;
  char *text = read_rc(file, &len);
  if (!text) return FE_DELEGATE;
  int rc = fe_rc_socket(text, len, home, out, cap);
  free(text);
  return rc;
}

/*
 * The origin's copy of PROGRAM as src/exec/origin/stub.ts localProgram() finds it: the path
 * (PATH searched for a bare name) of an executable regular file of at most TRANSFER_MAX bytes,
 * and its SHA-256. 0 when there is none (the executor then searches alone).
 */
static int local_program(const char *prog, char *path, size_t cap, uint8_t sha[32]) {
  char cwd[PATH_MAX];
  const char *envpath = getenv("PATH");
  int slash = strchr(prog, '/') != NULL;
  char *dirs = strdup(slash ? "" : envpath ? envpath : "");
  if (!dirs) return 0;
  int ok = 0;
  char *save = NULL;
  for (char *d = slash ? dirs : strtok_r(dirs, ":", &save); !ok && (slash || d); d = slash ? NULL : strtok_r(NULL, ":", &save)) {
    if (slash) {
      if (prog[0] == '/')
        snprintf(path, cap, "%s", prog);
      else if (!getcwd(cwd, sizeof cwd) || fe_join(cwd, prog, path, cap))
        break;
    } else if (fe_join(d, prog, path, cap))
      continue;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) && (uint64_t)st.st_size <= TRANSFER_MAX) {
      int fd = open(path, O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        static uint8_t buf[1 << 16];
        struct fe_sha256 h;
        fe_sha256_init(&h);
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0 || (r < 0 && errno == EINTR))
          if (r > 0) fe_sha256_update(&h, buf, (size_t)r);
        if (r == 0) {
          fe_sha256_final(&h, sha);
          ok = 1;
        }
        close(fd);
      }
    }
    if (slash) break;
  }
  free(dirs);
  return ok;
}

/* What the end of the run needs to report. */
static struct {
  const struct fe_run *opt;
  const char *host; /* --host, else $REX_HOST (as set: an empty one is "") */
  char socket[108];
  struct rex__stub_report report;
} run;

static void write_all(int fd, const char *s, size_t n) {
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

/* The message of an ERROR as src/protocol/connection.ts remoteError() words it: `HOST: CODE: message`. */
static void error_message(const struct rex__stub_report *r, char *out, size_t cap) {
  char who[300], text[8192];
  if (r->error_host[0])
    fe_quote(r->error_host, 80, 0, who, sizeof who);
  else
    snprintf(who, sizeof who, "rexd at %s", run.socket);
  fe_quote(r->text, 4000, 1, text, sizeof text);
  snprintf(out, cap, "%s: %s: %s", who, r->proto, r->text[0] ? text : "(no message)");
}

/* rex run --json's record (src/cli/commands/run.ts RunRecord), one line on stdout. */
static void print_record(const char *host, uint64_t pid, int code, const char *signal, int status, const char *error) {
  static char line[65536];
  size_t n = 0;
  char num[32];
  line[0] = '\0';
  fe_json_string(line, sizeof line, &n, "host");
  n += (size_t)snprintf(line + n, sizeof line - n, ":");
  if (host) {
    fe_json_string(line, sizeof line, &n, host);
  } else
    n += (size_t)snprintf(line + n, sizeof line - n, "null");
  snprintf(num, sizeof num, "%llu", (unsigned long long)pid);
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"pid\":%s,\"code\":", pid ? num : "null");
  snprintf(num, sizeof num, "%d", code);
  n += (size_t)snprintf(line + n, sizeof line - n, "%s,\"signal\":", code >= 0 ? num : "null");
  if (signal)
    fe_json_string(line, sizeof line, &n, signal);
  else
    n += (size_t)snprintf(line + n, sizeof line - n, "null");
  n += (size_t)snprintf(line + n, sizeof line - n, ",\"status\":%d", status);
  if (error) {
    n += (size_t)snprintf(line + n, sizeof line - n, ",\"error\":");
    fe_json_string(line, sizeof line, &n, error);
  }
  if (n + 2 < sizeof line) {
    line[n++] = '}';
    line[n++] = '\n';
  }
  write_all(1, "{", 1);
  write_all(1, line, n);
}

/*
 * The transfer bar of the Node CLI (src/exec/origin/stub.ts ProgressBar, renderProgress): on stderr when it is
 * a terminal, nothing for the first REX_PROGRESS_AFTER_MS (default 300) ms, then one line redrawn in place,
 * erased when the program starts or the start fails.
 */
static struct {
  int tty;
  double after_ms;
  long long since; /* -1: no PROGRESS yet */
  int drawn;
} bar = {0, 300, -1, 0};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Number(process.env.REX_PROGRESS_AFTER_MS || 300) || 0 */
static double progress_after(void) {
  const char *s = getenv("REX_PROGRESS_AFTER_MS");
  if (!s || !*s) return 300;
  char *end;
  double v = strtod(s, &end);
  while (*end == ' ' || *end == '\t' || *end == '\n') end++;
  return end == s || *end || v != v ? 0 : v;
}

static void on_progress(void *arg, uint64_t done, uint64_t total, const char *path) {
  (void)arg;
  if (!bar.tty) return;
  long long now = now_ms();
  if (bar.since < 0) bar.since = now;
  if ((double)(now - bar.since) < bar.after_ms) return;
  struct winsize ws;
  int width = ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col ? ws.ws_col : 80;
  double all = (double)(total > done ? total : done);
  if (all < 1) all = 1;
  double frac = (double)done / all;
  if (frac > 1) frac = 1;
  const char *name = strrchr(path, '/');
  name = name && name[1] ? name + 1 : path;
  char head[64], tail[96], line[512];
  if (strlen(name) > 24)
    snprintf(head, sizeof head, "rex: sending %.23s~ ", name);
  else
    snprintf(head, sizeof head, "rex: sending %s ", name);
  snprintf(tail, sizeof tail, " %3d%% %.1f/%.1f MB", (int)floor(frac * 100), (double)done / 1e6, all / 1e6);
  int bw = width - 1 - (int)strlen(head) - (int)strlen(tail) - 2;
  if (bw > 40) bw = 40;
  if (bw < 0) bw = 0;
  int filled = (int)floor(frac * bw + 0.5);
  size_t n = (size_t)snprintf(line, sizeof line, "\r%s", head);
  if (bw > 0) {
    line[n++] = '[';
    for (int i = 0; i < bw; i++) line[n++] = i < filled ? '#' : '.';
    line[n++] = ']';
  }
  n += (size_t)snprintf(line + n, sizeof line - n, "%s", tail);
  /* The line is cut to width - 1 columns (after the leading \r). */
  size_t keep = width - 1 > 0 ? (size_t)(width - 1) + 1 : 1;
  if (n > keep) n = keep;
  memcpy(line + n, "\x1b[K", 3);
  write_all(2, line, n + 3);
  bar.drawn = 1;
}

static void progress_clear(void *arg) {
  (void)arg;
  if (bar.drawn) write_all(2, "\r\x1b[K", 4);
  bar.drawn = 0;
}

/* The stub's last word: the program ended (EXIT) or rexd was lost. */
static void on_end(void *arg, const struct rex__stub_report *r) {
  (void)arg;
  if (r->exited) {
    if (run.opt->json) {
      int sig = r->signal[0] != '\0';
      print_record(r->host[0] ? r->host : NULL, r->pid, sig ? -1 : r->code, sig ? r->signal : NULL, sig ? 128 + r->signo : r->code, NULL);
    }
    return;
  }
  char msg[9000];
  if (r->proto[0])
    error_message(r, msg, sizeof msg);
  else
    snprintf(msg, sizeof msg, "%s", r->text);
  char line[9100];
  int k = snprintf(line, sizeof line, "rex run: %s\n", msg);
  write_all(2, line, k > 0 && (size_t)k < sizeof line ? (size_t)k : sizeof line - 1);
  if (run.opt->json) print_record(r->host[0] ? r->host : NULL, r->pid, -1, NULL, 255, msg);
}

/*
 * `rex call`: one CALL_CLI to the local rexd (docs/PROTOCOL.md 4.7.1), which runs the Node CLI's own `rex call`
 * as this client and answers with the bytes to print and the exit status. Delegated, with nothing done, when
 * the flags are not all understood, the request does not fit one frame, no rexd answers HELLO, or rexd does
 * not serve CALL_CLI (UNSUPPORTED: an older rexd); once CALL_CLI went out, the answer is rexd's.
 */
static int do_call(int argc, char **argv) {
  int *pos = calloc((size_t)argc, sizeof *pos);
  if (!pos) delegate(argc, argv);
  struct fe_call opt = {.pos = pos};
  if (fe_parse_call(argc, argv, &opt) != FE_OK) delegate(argc, argv);
  /* Past CALL_CLI's limits (src/protocol/messages.ts: target 1024 bytes, CALL_CLI_MAX_ARGS arguments, timeout 64
     bytes), rexd would refuse the request itself: the Node CLI answers instead, with its own words. */
  if (strlen(argv[pos[0]]) > 1024 || opt.npos - 1 > CALL_CLI_MAX_ARGS || (opt.timeout && strlen(opt.timeout) > 64)) delegate(argc, argv);
  char sock[108];
  if (resolve_socket(opt.socket, sock, sizeof sock) != FE_OK) delegate(argc, argv);
  snprintf(rex__socket_override, sizeof rex__socket_override, "%s", sock);
  /* rexd answers within the call's deadline (the entry's lookup, then the call): this bounds a rexd that hangs. */
  long t = 30000;
  if (opt.timeout) {
    char *end;
    errno = 0;
    long v = strtol(opt.timeout, &end, 10);
    if (!errno && *end == '\0' && v > 0 && v <= 86400000L * 30) t = v;
  }
  struct rex__conn c;
  size_t cap = (size_t)opt.npos + 8;
  struct rex_attr *attrs = calloc(cap, sizeof *attrs);
  if (!attrs) delegate(argc, argv);
  struct rex_frame f;
  rex_frame_init(&f, attrs, cap);
  rex_frame_start(&f, REX_MSG_CALL_CLI, REX_FLAG_END, 1);
  rex_attr_string(&f, REX_CALL_CLI_TARGET, argv[pos[0]]);
  for (int i = 1; i < opt.npos; i++) rex_attr_string(&f, REX_CALL_CLI_ARGS, argv[pos[i]]);
  if (opt.json) rex_attr_bool(&f, REX_CALL_CLI_JSON, 1);
  if (opt.hex) rex_attr_string(&f, REX_CALL_CLI_HEX, opt.hex);
  if (opt.timeout) rex_attr_string(&f, REX_CALL_CLI_TIMEOUT, opt.timeout);
  rex_attr_string(&f, REX_CALL_CLI_SOCKET, sock);
  if (f.build_err) delegate(argc, argv);
  /* HELLO first, alone: a refused HELLO (another user, a rexd starting) is the Node CLI's to report. */
  struct rex_attr hattrs[16];
  struct rex_frame h;
  rex_frame_init(&h, hattrs, 16);
  int r = rex__conn_open(&c, NULL, 2 * t + 10000, "the call's --timeout, twice, and 10 s for rexd to answer");
  if (!r) r = rex__conn_queue_hello(&c);
  if (!r) r = rex__conn_flush(&c);
  if (!r) r = rex__conn_welcome(&c, &h);
  /* A request past the frame's limits does not encode (-EINVAL): the Node CLI says what is wrong. */
  if (!r) r = rex__conn_queue(&c, &f);
  if (r) {
    rex__conn_close(&c);
    delegate(argc, argv);
  }
  r = rex__conn_flush(&c);
  int status = -1;
  while (!r && status < 0 && !(r = rex__conn_await(&c, 1, &f))) {
    if (f.type != REX_MSG_CALL_OUTPUT) {
      fprintf(stderr, "rex: %s answered CALL_CLI with frame type 0x%04x\n", c.where, f.type);
      status = 1;
      break;
    }
    const struct rex_attr *o = rex__field(&f, REX_ATTR_NONE, REX_CALL_OUTPUT_STDOUT);
    const struct rex_attr *e = rex__field(&f, REX_ATTR_NONE, REX_CALL_OUTPUT_STDERR);
    const struct rex_attr *st = rex__field(&f, REX_ATTR_NONE, REX_CALL_OUTPUT_STATUS);
    if (o && o->kind == REX_KIND_BYTES) write_all(1, (const char *)o->data, o->len);
    if (e && e->kind == REX_KIND_BYTES) write_all(2, (const char *)e->data, e->len);
    if (f.flags & REX_FLAG_END) status = st && st->kind == REX_KIND_UINT && st->v.u <= 255 ? (int)st->v.u : 1;
  }
  if (status < 0 && r == REX__CONN_ERROR) {
    struct rex__remote_error err;
    static const struct rex__errno_map none[] = {{0, 0}};
    rex__conn_error(&f, none, &err);
    /* An older rexd: CALL_CLI was not served, nothing was done. */
    if (err.code == (uint64_t)-(int64_t)REX_EPROTO_UNSUPPORTED) {
      rex__conn_close(&c);
      delegate(argc, argv);
    }
    fprintf(stderr, "rex: %s: %s: %s\n", c.where, err.name, err.text);
    status = 1;
  } else if (status < 0) {
    /* rexd went away (or stalled past the deadline) with the call in its hands: what the Node CLI says of a lost connection. */
    fprintf(stderr, "rex: %s\n", rex_last_error()[0] ? rex_last_error() : "connection to rexd lost");
    status = 1;
  }
  rex__conn_close(&c);
  return status;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "call") == 0) return do_call(argc, argv);
  struct fe_run opt;
  if (fe_parse_run(argc, argv, &opt) != FE_OK) delegate(argc, argv);
  if (resolve_socket(opt.socket, run.socket, sizeof run.socket) != FE_OK) delegate(argc, argv);
  run.opt = &opt;
  run.host = opt.host ? opt.host : getenv("REX_HOST");
  const char *prog = argv[opt.prog];
  char path[PATH_MAX];
  uint8_t sha[32];
  int local = local_program(prog, path, sizeof path, sha);
  /* The environment as Node's process.env gives it: NAME=VALUE entries (the executor drops its deny list). */
  size_t ne = 0;
  while (environ[ne]) ne++;
  char **envp = calloc(ne + 1, sizeof *envp);
  if (!envp) die(70, "rex run: out of memory%s%s\n", "", "");
  size_t k = 0;
  for (size_t i = 0; i < ne; i++) {
    const char *eq = strchr(environ[i], '=');
    if (eq && eq != environ[i]) envp[k++] = environ[i];
  }
  /* librex finds its socket here first (rfork.c's override for a migrated child): the one Node would use. */
  snprintf(rex__socket_override, sizeof rex__socket_override, "%s", run.socket);
  struct rex__stub_req rq = {
      .who = "rex run",
      .host = run.host,
      .path = local ? path : prog,
      .argv = argv + opt.prog,
      .envp = envp,
      .pty = opt.pty && isatty(0) && isatty(1),
      .sha256 = local ? sha : NULL,
      .epipe_sigpipe = 1,
      .node_raw = 1,
      .report = &run.report,
      .on_end = on_end,
      .on_progress = on_progress,
  };
  bar.tty = isatty(2);
  bar.after_ms = progress_after();
  int e = rex__stub_exec(&rq, progress_clear, NULL);
  progress_clear(NULL);
  /* Nothing started. Before the request went out (no rexd, HELLO refused): the Node CLI's own words and status. */
  if (!run.report.sent) delegate(argc, argv);
  char msg[9000];
  if (run.report.proto[0])
    error_message(&run.report, msg, sizeof msg);
  else {
    const char *why = rex_last_error();
    if (strncmp(why, "rex run: ", 9) == 0) why += 9;
    snprintf(msg, sizeof msg, "%s", why[0] ? why : strerror(e));
  }
  fprintf(stderr, "rex run: %s\n", msg);
  int status = !strcmp(run.report.proto, "NO_ENTRY") ? 127 : !strcmp(run.report.proto, "DENIED") ? 126 : 255;
  if (opt.json) {
    fflush(stderr);
    print_record(run.host, 0, -1, NULL, status, msg);
  }
  return status;
}
