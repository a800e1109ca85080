/*
 * conn.c: librex's one connection to rexd (conn.h): connect to the local
 * socket, preface and HELLO, frames out and in within the protocol's limits,
 * waits with a deadline, and rexd's ERROR frames read for the caller to map.
 *
 * Hazards this file guards against, because it runs inside the user's
 * program: a daemon that stalls (every wait has the deadline the caller set;
 * EINTR restarts the wait, not the clock), a daemon that died (no SIGPIPE:
 * MSG_NOSIGNAL), a fork+exec in another thread (the socket is close-on-exec),
 * and a daemon that sends garbage (the decoder's limits: a payload above
 * REX_PROTO_MAX_PAYLOAD is refused from its header, before it is buffered;
 * the attribute arena is sized for the frame at hand; replies are checked
 * against the attribute tables before anything is copied).
 */
#define _GNU_SOURCE /* SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL */
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REX_SOFTWARE "librex/0.1.0"
/* Receive at least this much at a time: the stub relays streams through the buffer. */
#define READ_CHUNK 65536u

/* The root installation's local socket (rex.rc `socket` of /etc/rex/rex.rc, as installed): the default of a
   user who has no rexd of their own. A build for another layout sets it with -DREX_SYSTEM_SOCKET=... */
#ifndef REX_SYSTEM_SOCKET
#define REX_SYSTEM_SOCKET "/run/rex/rexd.sock"
#endif

_Static_assert(sizeof(((struct rex__conn *)0)->path) == sizeof(((struct sockaddr_un *)0)->sun_path),
               "rex__conn.path holds a sun_path");

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long rex__env_ms(const char *name, long dflt, long max) {
  const char *s = getenv(name);
  if (!s || !*s) return dflt;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return errno || *end || v <= 0 || v > max ? dflt : v;
}

/* Sets rex_last_error() to "WHO: message" (or "message" without a who) and returns -err. */
static int __attribute__((format(printf, 3, 4))) fail(const struct rex__conn *c, int err, const char *fmt, ...) {
  char text[480];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  rex__set_error("%s%s%s", c->who ? c->who : "", c->who ? ": " : "", text);
  return -err;
}

int rex__socket_path(char *buf, size_t cap) {
  /* A migrated child talks to the rexd of the host it runs on, not the origin's (rfork.c). */
  const char *env = rex__socket_override[0] ? rex__socket_override : getenv("REX_SOCKET");
  int n;
  if (env && *env) {
    n = snprintf(buf, cap, "%s", env);
  } else {
    const char *home = getenv("HOME");
    if (!home || !*home) {
      rex__set_error("cannot find rexd's socket: neither REX_SOCKET nor HOME is set");
      return -ENOENT;
    }
    n = snprintf(buf, cap, "%s/.rex/run/rexd.sock", home);
    /* No rexd of this user's own: the root installation's, which serves every local user (docs/ROOT.md). */
    struct stat st;
    if (n >= 0 && (size_t)n < cap && stat(buf, &st) != 0 && errno == ENOENT && stat(REX_SYSTEM_SOCKET, &st) == 0)
      n = snprintf(buf, cap, "%s", REX_SYSTEM_SOCKET);
  }
  if (n < 0 || (size_t)n >= cap) {
    rex__set_error("rexd socket path is longer than %zu bytes (set REX_SOCKET to a shorter path)", cap - 1);
    return -ENAMETOOLONG;
  }
  return 0;
}

/* Waits until c->fd is ready for events or the deadline passes. 0 or -errno. */
static int wait_fd(struct rex__conn *c, short events) {
  for (;;) {
    int ms = -1;
    if (c->deadline) {
      long long left = c->deadline - now_ms();
      if (left <= 0)
        return fail(c, ETIMEDOUT, "%s did not answer within %ld ms (%s)", c->where, c->timeout_ms, c->timeout_what);
      ms = left > 60000 ? 60000 : (int)left;
    }
    struct pollfd p = {.fd = c->fd, .events = events, .revents = 0};
    int r = poll(&p, 1, ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      return fail(c, e, "poll on %s: %s", c->path, strerror(e));
    }
    if (r > 0) return 0; /* readable, writable, or an error/hangup the next call reports */
  }
}

static void init(struct rex__conn *c, int fd, const char *who) {
  memset(c, 0, sizeof *c);
  c->fd = fd;
  c->who = who;
}

int rex__conn_open(struct rex__conn *c, const char *who, long timeout_ms, const char *timeout_what) {
  init(c, -1, who);
  c->owned = 1;
  c->timeout_ms = timeout_ms;
  c->timeout_what = timeout_what ? timeout_what : "the caller's timeout";
  if (timeout_ms > 0) c->deadline = now_ms() + timeout_ms;
  int rc = rex__socket_path(c->path, sizeof c->path);
  if (rc) return rc;
  snprintf(c->where, sizeof c->where, "rexd at %s", c->path);
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (c->fd < 0) {
    int e = errno;
    c->fd = -1;
    return fail(c, e, "socket: %s", strerror(e));
  }
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
  for (;;) {
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0) return 0;
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN) {
      /* A Unix socket whose backlog is full: poll cannot wait for room in
         someone else's backlog, so retry a few times a second until the deadline. */
      if (c->deadline && now_ms() >= c->deadline)
        return fail(c, ETIMEDOUT, "connect %s: backlog full until the timeout", c->path);
      poll(NULL, 0, 20);
      continue;
    }
    if (e == EINPROGRESS) {
      rc = wait_fd(c, POLLOUT);
      if (rc) return rc;
      socklen_t sl = sizeof e;
      if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0) e = errno;
      if (e == 0) return 0;
    }
    return fail(c, e, "connect %s: %s%s", c->path, strerror(e),
                e == ENOENT || e == ECONNREFUSED ? " (is rexd running? start it, or set REX_SOCKET)" : "");
  }
}

void rex__conn_attach(struct rex__conn *c, int fd, const char *where) {
  init(c, fd, NULL);
  snprintf(c->path, sizeof c->path, "descriptor %d", fd);
  snprintf(c->where, sizeof c->where, "%s", where);
}

void rex__conn_close(struct rex__conn *c) {
  if (c->owned && c->fd >= 0) close(c->fd);
  free(c->in);
  free(c->arena);
  free(c->out);
  c->fd = -1;
  c->in = c->out = NULL;
  c->arena = NULL;
}

/* ------------------------------------------------------------------ sending */

/* Makes room for at least need bytes in *buf (capacity *cap), doubling from `first`. */
static int grow(const struct rex__conn *c, uint8_t **buf, size_t *cap, size_t need, size_t first) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : first;
  while (n < need) n *= 2;
  uint8_t *b = realloc(*buf, n);
  if (!b) return fail(c, ENOMEM, "out of memory for %zu bytes of frames", need);
  *buf = b;
  *cap = n;
  return 0;
}

int rex__conn_queue(struct rex__conn *c, const struct rex_frame *f) {
  /* A built frame knows its payload length; one that does not encode says so below, not by overrunning. */
  int rc = grow(c, &c->out, &c->out_cap, c->out_len + REX_PROTO_HEADER_SIZE + f->length, 4096);
  if (rc) return rc;
  size_t n;
  rc = rex_frame_encode(f, c->out + c->out_len, c->out_cap - c->out_len, &n);
  if (rc) return fail(c, EINVAL, "encoding frame type 0x%04x: %s", f->type, rex_strerror(rc));
  c->out_len += n;
  return 0;
}

int rex__conn_queue_hello(struct rex__conn *c) {
  int rc = grow(c, &c->out, &c->out_cap, c->out_len + REX_PROTO_PREFACE_SIZE, 4096);
  if (rc) return rc;
  memcpy(c->out + c->out_len, REX_PROTO_PREFACE, REX_PROTO_PREFACE_SIZE);
  c->out_len += REX_PROTO_PREFACE_SIZE;
  struct rex_attr attrs[4];
  struct rex_frame f;
  rex_frame_init(&f, attrs, sizeof attrs / sizeof *attrs);
  rex_frame_start(&f, REX_MSG_HELLO, 0, 0);
  rex_attr_uint(&f, REX_HELLO_VERSION_MIN, REX_PROTO_VERSION_MIN);
  rex_attr_uint(&f, REX_HELLO_VERSION_MAX, REX_PROTO_VERSION_MAX);
  rex_attr_uint(&f, REX_HELLO_ROLE, REX_ROLE_CLIENT);
  rex_attr_string(&f, REX_HELLO_SOFTWARE, REX_SOFTWARE);
  return rex__conn_queue(c, &f);
}

int rex__conn_flush(struct rex__conn *c) {
  const uint8_t *p = c->out;
  size_t n = c->out_len;
  c->out_len = 0;
  while (n) {
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = write(c->fd, p, n); /* a pipe pair instead of a socketpair */
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        int rc = wait_fd(c, POLLOUT);
        if (rc) return rc;
        continue;
      }
      int e = errno;
      return fail(c, e, "send to %s: %s", c->where, strerror(e));
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int rex__conn_send(struct rex__conn *c, const struct rex_frame *f) {
  int rc = rex__conn_queue(c, f);
  return rc ? rc : rex__conn_flush(c);
}

/* ---------------------------------------------------------------- receiving */

size_t rex__conn_pending(const struct rex__conn *c) { return c->len - c->start; }

int rex__conn_take(struct rex__conn *c, struct rex_frame *f) {
  const uint8_t *p = c->in + c->start;
  size_t have = c->len - c->start;
  c->need = REX_PROTO_HEADER_SIZE;
  if (have < REX_PROTO_HEADER_SIZE) return 0;
  /* Size the arena for this frame before decoding it; a payload above the
     limit is refused by the decoder before any of it is buffered. */
  uint32_t plen = rex__rd32(p);
  size_t want = plen <= REX_PROTO_MAX_PAYLOAD ? REX_ATTRS_FOR_PAYLOAD(plen) : 0;
  if (want > c->arena_cap) {
    struct rex_attr *a = realloc(c->arena, want * sizeof *a);
    if (!a) return fail(c, ENOMEM, "out of memory for %zu attributes", want);
    c->arena = a;
    c->arena_cap = want;
  }
  rex_frame_init(f, c->arena, c->arena_cap);
  size_t consumed = 0;
  int rc = rex_frame_decode(p, have, REX_PROTO_MAX_PAYLOAD, f, &consumed);
  if (rc == 0) {
    c->start += consumed;
    return 1;
  }
  if (rc != REX_EAGAIN) return fail(c, EPROTO, "%s sent a bad frame: %s: %s", c->where, rex_err_name(rc), f->err);
  c->need = REX_PROTO_HEADER_SIZE + (size_t)f->length;
  return 0;
}

long rex__conn_fill(struct rex__conn *c) {
  if (c->start) {
    memmove(c->in, c->in + c->start, c->len - c->start);
    c->len -= c->start;
    c->start = 0;
  }
  /* Room for the partial frame, and a chunk more: bounded by the payload limit take() enforces. */
  size_t need = c->need > c->len + READ_CHUNK ? c->need : c->len + READ_CHUNK;
  int rc = grow(c, &c->in, &c->cap, need, READ_CHUNK);
  if (rc) return rc;
  for (;;) {
    ssize_t r = read(c->fd, c->in + c->len, c->cap - c->len);
    if (r > 0) {
      c->len += (size_t)r;
      return r;
    }
    if (r == 0) return -ECONNRESET;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    int e = errno;
    return fail(c, e, "receive from %s: %s", c->where, strerror(e));
  }
}

int rex__conn_recv(struct rex__conn *c, struct rex_frame *f) {
  for (;;) {
    int rc = rex__conn_take(c, f);
    if (rc) return rc < 0 ? rc : 0;
    long r = rex__conn_fill(c);
    if (r == -ECONNRESET)
      return fail(c, ECONNRESET, "%s closed the connection%s", c->where, c->len ? " in the middle of a frame" : "");
    if (r < 0) return (int)r;
    if (r == 0 && (rc = wait_fd(c, POLLIN))) return rc;
  }
}

/* -------------------------------------------------------------- conversation */

int rex__conn_welcome(struct rex__conn *c, struct rex_frame *f) {
  int rc = rex__conn_recv(c, f);
  if (rc) return rc;
  if (f->type == REX_MSG_ERROR) return REX__CONN_ERROR;
  if (f->type != REX_MSG_HELLO || f->stream != 0)
    return fail(c, EPROTO, "%s answered HELLO with frame type 0x%04x on stream %u", c->where, f->type, f->stream);
  static const struct rex__field hello_fields[] = {
      {REX_HELLO_VERSION, REX_KIND_UINT, 0}, {REX_HELLO_ROLE, REX_KIND_UINT, 0},
      {REX_HELLO_HOST, REX_KIND_STRING, 0},  {REX_HELLO_MAX_PAYLOAD, REX_KIND_UINT, 0},
      {REX_HELLO_SOFTWARE, REX_KIND_STRING, 0}};
  rc = rex__check_fields(f, REX_ATTR_NONE, hello_fields, sizeof hello_fields / sizeof *hello_fields, "HELLO");
  if (rc) return rc;
  const struct rex_attr *ver = rex__field(f, REX_ATTR_NONE, REX_HELLO_VERSION);
  if (!ver || ver->v.u < REX_PROTO_VERSION_MIN || ver->v.u > REX_PROTO_VERSION_MAX)
    return fail(c, EPROTO, "%s chose protocol version %llu; librex speaks %d..%d", c->where,
                ver ? (unsigned long long)ver->v.u : 0ULL, REX_PROTO_VERSION_MIN, REX_PROTO_VERSION_MAX);
  return 0;
}

int rex__conn_await(struct rex__conn *c, uint32_t stream, struct rex_frame *f) {
  for (;;) {
    int rc = rex__conn_recv(c, f);
    if (rc) return rc;
    if (f->type == REX_MSG_GOODBYE) {
      const struct rex_attr *r = rex__field(f, REX_ATTR_NONE, REX_GOODBYE_REASON);
      char reason[256] = "no reason given";
      if (r && r->kind == REX_KIND_STRING) rex__copy_str(reason, sizeof reason, r);
      return fail(c, ECONNRESET, "%s closed the connection: %s", c->where, reason);
    }
    if (f->type == REX_MSG_ERROR && (f->stream == 0 || f->stream == stream)) return REX__CONN_ERROR;
    if (f->stream == stream) return 0;
  }
}

/* The name of a wire error code. */
static const char *code_name(uint64_t code) {
  /* errors.c names every wire code of the generated table (REX_EPROTO_LAST is the last). */
  if (code >= 1 && code <= (uint64_t)-REX_EPROTO_LAST) return rex_err_name(-(int)code);
  return "UNKNOWN";
}

int rex__conn_error(const struct rex_frame *f, const struct rex__errno_map *map, struct rex__remote_error *e) {
  static const struct rex__field error_fields[] = {{REX_ERROR_CODE, REX_KIND_UINT, 0},
                                                   {REX_ERROR_MESSAGE, REX_KIND_STRING, 0},
                                                   {REX_ERROR_FATAL, REX_KIND_BOOL, 0},
                                                   {REX_ERROR_REF_TYPE, REX_KIND_UINT, 0},
                                                   {REX_ERROR_HOST, REX_KIND_STRING, 0}};
  memset(e, 0, sizeof *e);
  e->name = "MALFORMED";
  if (rex__check_fields(f, REX_ATTR_NONE, error_fields, sizeof error_fields / sizeof *error_fields, "ERROR")) {
    snprintf(e->text, sizeof e->text, "%s", rex_last_error());
    return EPROTO;
  }
  const struct rex_attr *code = rex__field(f, REX_ATTR_NONE, REX_ERROR_CODE);
  const struct rex_attr *msg = rex__field(f, REX_ATTR_NONE, REX_ERROR_MESSAGE);
  if (msg) rex__copy_str(e->text, sizeof e->text, msg);
  e->code = code ? code->v.u : 0;
  e->name = code_name(e->code);
  for (; map && map->code; map++)
    if ((uint64_t)-(int64_t)map->code == e->code) return map->err;
  return EPROTO;
}

/* ------------------------------------------------------------ reading frames */

void rex__copy_str(char *dst, size_t cap, const struct rex_attr *a) {
  size_t n = a->len;
  if (n >= cap) {
    n = cap - 1;
    while (n > 0 && (a->data[n] & 0xc0) == 0x80) n--;
  }
  memcpy(dst, a->data, n);
  dst[n] = '\0';
}

int rex__check_fields(const struct rex_frame *f, uint32_t parent, const struct rex__field *fields, size_t n,
                      const char *what) {
  uint64_t seen = 0;
  for (uint32_t i = rex_attr_first(f, parent); i != REX_ATTR_NONE; i = f->attrs[i].next) {
    const struct rex_attr *a = &f->attrs[i];
    uint16_t tag = a->tag & (uint16_t)~REX_TAG_CRITICAL;
    size_t k = 0;
    while (k < n && fields[k].tag != tag) k++;
    if (k == n) {
      if (a->tag & REX_TAG_CRITICAL) {
        rex__set_error("%s carries critical attribute %u that librex does not know (upgrade librex)", what, tag);
        return -EPROTO;
      }
      continue;
    }
    if (a->kind != fields[k].kind) {
      rex__set_error("%s attribute %u has kind %u, expected %u", what, tag, a->kind, fields[k].kind);
      return -EPROTO;
    }
    if (!fields[k].repeated) {
      if (seen & ((uint64_t)1 << k)) {
        rex__set_error("%s attribute %u repeated", what, tag);
        return -EPROTO;
      }
      seen |= (uint64_t)1 << k;
    }
  }
  return 0;
}

const struct rex_attr *rex__field(const struct rex_frame *f, uint32_t parent, uint16_t tag) {
  for (uint32_t i = rex_attr_first(f, parent); i != REX_ATTR_NONE; i = f->attrs[i].next)
    if ((f->attrs[i].tag & (uint16_t)~REX_TAG_CRITICAL) == tag) return &f->attrs[i];
  return NULL;
}
