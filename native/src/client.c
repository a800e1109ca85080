/*
 * client.c: rload() and rex_hosts(): one short conversation with the local
 * rexd over its Unix socket (docs/PROTOCOL.md sections 1, 4.1, 4.5, 4.6):
 * preface, HELLO, one request on stream 1, its answer, close.
 *
 * Hazards this file guards against, because it runs inside the user's
 * program: a daemon that stalls (every wait has a deadline, EINTR restarts
 * the wait, not the clock), a daemon that died (no SIGPIPE: MSG_NOSIGNAL),
 * a fork+exec in another thread (the socket is close-on-exec), and a
 * daemon that sends garbage (the decoder's limits; replies are validated
 * against the attribute tables before anything is copied).
 */
#define _GNU_SOURCE /* SOCK_CLOEXEC, SOCK_NONBLOCK, MSG_NOSIGNAL */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REX_SOFTWARE "librex/0.1.0"
#define DEFAULT_TIMEOUT_MS 5000

struct conn {
  int fd;
  long long deadline; /* CLOCK_MONOTONIC milliseconds */
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  uint8_t *buf; /* received bytes: at most one frame plus what followed it */
  size_t len, cap;
  size_t used; /* bytes of buf taken by the frame last returned */
  struct rex_attr *arena;
  size_t arena_cap;
};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* REX_TIMEOUT_MS bounds the whole conversation; a bad value falls back to the default. */
static long timeout_ms(void) {
  const char *s = getenv("REX_TIMEOUT_MS");
  if (!s || !*s) return DEFAULT_TIMEOUT_MS;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v <= 0 || v > 3600000) return DEFAULT_TIMEOUT_MS;
  return v;
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
  }
  if (n < 0 || (size_t)n >= cap) {
    rex__set_error("rexd socket path is longer than %zu bytes (set REX_SOCKET to a shorter path)", cap - 1);
    return -ENAMETOOLONG;
  }
  return 0;
}

/* Waits until fd is ready for events or the deadline passes. 0 or -errno. */
static int wait_fd(struct conn *c, short events) {
  for (;;) {
    long long left = c->deadline - now_ms();
    if (left <= 0) {
      rex__set_error("rexd at %s did not answer within %ld ms (REX_TIMEOUT_MS)", c->path, timeout_ms());
      return -ETIMEDOUT;
    }
    struct pollfd p = {.fd = c->fd, .events = events, .revents = 0};
    int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      rex__set_error("poll on %s: %s", c->path, strerror(e));
      return -e;
    }
    if (r > 0) return 0; /* readable, writable, or an error/hangup the next call reports */
  }
}

static int conn_open(struct conn *c) {
  memset(c, 0, sizeof *c);
  c->fd = -1;
  c->deadline = now_ms() + timeout_ms();
  int rc = rex__socket_path(c->path, sizeof c->path);
  if (rc) return rc;
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (c->fd < 0) {
    int e = errno;
    rex__set_error("socket: %s", strerror(e));
    return -e;
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
      if (now_ms() >= c->deadline) {
        rex__set_error("connect %s: backlog full until the timeout", c->path);
        return -ETIMEDOUT;
      }
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
    rex__set_error("connect %s: %s%s", c->path, strerror(e),
                   e == ENOENT || e == ECONNREFUSED ? " (is rexd running? start it, or set REX_SOCKET)" : "");
    return -e;
  }
}

static void conn_close(struct conn *c) {
  if (c->fd >= 0) close(c->fd);
  free(c->buf);
  free(c->arena);
  c->fd = -1;
  c->buf = NULL;
  c->arena = NULL;
}

static int send_all(struct conn *c, const uint8_t *p, size_t n) {
  while (n) {
    int rc = wait_fd(c, POLLOUT);
    if (rc) return rc;
    ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      int e = errno;
      rex__set_error("send to rexd at %s: %s", c->path, strerror(e));
      return -e;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Makes room for at least need bytes in buf; need is bounded by the payload limit. */
static int grow(struct conn *c, size_t need) {
  if (need <= c->cap) return 0;
  size_t cap = c->cap ? c->cap : 4096;
  while (cap < need) cap *= 2;
  uint8_t *b = realloc(c->buf, cap);
  if (!b) {
    rex__set_error("out of memory for a %zu byte frame", need);
    return -ENOMEM;
  }
  c->buf = b;
  c->cap = cap;
  return 0;
}

/*
 * Receives the next frame into f; it stays valid (its attributes point into
 * c->buf) until the next call. 0 or -errno (EPROTO for a bad frame,
 * ECONNRESET when rexd closed the connection).
 */
static int recv_frame(struct conn *c, struct rex_frame *f) {
  if (c->used) {
    memmove(c->buf, c->buf + c->used, c->len - c->used);
    c->len -= c->used;
    c->used = 0;
  }
  for (;;) {
    if (c->len >= REX_PROTO_HEADER_SIZE) {
      /* Size the arena for this frame before decoding it; a payload above the
         limit is refused by the decoder before any of it is buffered. */
      uint32_t plen = rex__rd32(c->buf);
      size_t want = plen <= REX_PROTO_MAX_PAYLOAD ? REX_ATTRS_FOR_PAYLOAD(plen) : 0;
      if (want > c->arena_cap) {
        struct rex_attr *a = realloc(c->arena, want * sizeof *a);
        if (!a) {
          rex__set_error("out of memory for %zu attributes", want);
          return -ENOMEM;
        }
        c->arena = a;
        c->arena_cap = want;
      }
    }
    rex_frame_init(f, c->arena, c->arena_cap);
    size_t consumed = 0;
    int rc = rex_frame_decode(c->buf, c->len, REX_PROTO_MAX_PAYLOAD, f, &consumed);
    if (rc == 0) {
      c->used = consumed;
      return 0;
    }
    if (rc != REX_EAGAIN) {
      rex__set_error("rexd at %s sent a bad frame: %s: %s", c->path, rex_err_name(rc), f->err);
      return -EPROTO;
    }
    size_t need = c->len < REX_PROTO_HEADER_SIZE ? REX_PROTO_HEADER_SIZE : REX_PROTO_HEADER_SIZE + (size_t)f->length;
    rc = grow(c, need);
    if (rc) return rc;
    rc = wait_fd(c, POLLIN);
    if (rc) return rc;
    ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      int e = errno;
      rex__set_error("receive from rexd at %s: %s", c->path, strerror(e));
      return -e;
    }
    if (r == 0) {
      rex__set_error("rexd at %s closed the connection%s", c->path, c->len ? " in the middle of a frame" : "");
      return -ECONNRESET;
    }
    c->len += (size_t)r;
  }
}

/* Copies a string attribute into dst[0..cap), cutting at a UTF-8 character boundary. */
static void copy_str(char *dst, size_t cap, const struct rex_attr *a) {
  size_t n = a->len;
  if (n >= cap) {
    n = cap - 1;
    while (n > 0 && (a->data[n] & 0xc0) == 0x80) n--;
  }
  memcpy(dst, a->data, n);
  dst[n] = '\0';
}

/* One attribute a message may carry: its tag and kind (docs/PROTOCOL.md section 4). */
struct field {
  uint16_t tag;
  uint8_t kind;
  uint8_t repeated;
};

/*
 * Checks the children of parent against a message's table: a known tag of
 * the wrong kind, a repeat of a non-repeated tag, or an unknown CRITICAL tag
 * is refused; unknown ordinary tags are skipped (newer daemons may add some).
 * The CRITICAL bit of a known tag is ignored, as messages.ts does.
 */
static int check_fields(const struct rex_frame *f, uint32_t parent, const struct field *fields, size_t n,
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

/* The first child of parent whose tag (CRITICAL bit ignored) is tag, or NULL. */
static const struct rex_attr *field(const struct rex_frame *f, uint32_t parent, uint16_t tag) {
  for (uint32_t i = rex_attr_first(f, parent); i != REX_ATTR_NONE; i = f->attrs[i].next)
    if ((f->attrs[i].tag & (uint16_t)~REX_TAG_CRITICAL) == tag) return &f->attrs[i];
  return NULL;
}

static const char *proto_name(uint64_t code) {
  return code >= 1 && code <= (uint64_t)-REX_EPROTO_LAST ? rex_err_name(-(int)code) : "UNKNOWN";
}

/* Turns an ERROR frame from rexd into -errno and a rex_last_error() detail. */
static int remote_error(struct conn *c, const struct rex_frame *f) {
  static const struct field error_fields[] = {{REX_ERROR_CODE, REX_KIND_UINT, 0},
                                              {REX_ERROR_MESSAGE, REX_KIND_STRING, 0},
                                              {REX_ERROR_FATAL, REX_KIND_BOOL, 0},
                                              {REX_ERROR_REF_TYPE, REX_KIND_UINT, 0},
                                              {REX_ERROR_HOST, REX_KIND_STRING, 0}};
  if (check_fields(f, REX_ATTR_NONE, error_fields, sizeof error_fields / sizeof *error_fields, "ERROR")) return -EPROTO;
  const struct rex_attr *code = field(f, REX_ATTR_NONE, REX_ERROR_CODE);
  const struct rex_attr *msg = field(f, REX_ATTR_NONE, REX_ERROR_MESSAGE);
  char text[256] = "";
  if (msg) copy_str(text, sizeof text, msg);
  uint64_t v = code ? code->v.u : 0;
  rex__set_error("rexd at %s answered ERROR %s: %s", c->path, proto_name(v), text);
  return v == (uint64_t)-REX_EPROTO_DENIED ? -EACCES : -EPROTO;
}

/*
 * The whole conversation: connect, preface and HELLO, then `request` on
 * stream 1; on success f holds the `answer` frame (valid until conn_close).
 */
static int exchange(struct conn *c, uint16_t request, uint16_t answer, struct rex_frame *f) {
  rex__clear_error();
  int rc = conn_open(c);
  if (rc) return rc;

  struct rex_attr attrs[8];
  struct rex_frame out;
  uint8_t msg[REX_PROTO_PREFACE_SIZE + 128];
  size_t n;
  memcpy(msg, REX_PROTO_PREFACE, REX_PROTO_PREFACE_SIZE);
  rex_frame_init(&out, attrs, sizeof attrs / sizeof *attrs);
  rex_frame_start(&out, REX_MSG_HELLO, 0, 0);
  rex_attr_uint(&out, REX_HELLO_VERSION_MIN, REX_PROTO_VERSION_MIN);
  rex_attr_uint(&out, REX_HELLO_VERSION_MAX, REX_PROTO_VERSION_MAX);
  rex_attr_uint(&out, REX_HELLO_ROLE, REX_ROLE_CLIENT);
  rex_attr_string(&out, REX_HELLO_SOFTWARE, REX_SOFTWARE);
  rc = rex_frame_encode(&out, msg + REX_PROTO_PREFACE_SIZE, sizeof msg - REX_PROTO_PREFACE_SIZE, &n);
  if (rc) { /* cannot happen: fixed content; reported rather than sent half-built */
    rex__set_error("encoding HELLO: %s", rex_strerror(rc));
    return -EPROTO;
  }
  rc = send_all(c, msg, REX_PROTO_PREFACE_SIZE + n);
  if (rc) return rc;

  rc = recv_frame(c, f);
  if (rc) return rc;
  if (f->type == REX_MSG_ERROR) return remote_error(c, f);
  if (f->type != REX_MSG_HELLO || f->stream != 0) {
    rex__set_error("rexd at %s answered HELLO with frame type 0x%04x on stream %u", c->path, f->type, f->stream);
    return -EPROTO;
  }
  static const struct field hello_fields[] = {
      {REX_HELLO_VERSION, REX_KIND_UINT, 0}, {REX_HELLO_ROLE, REX_KIND_UINT, 0},
      {REX_HELLO_HOST, REX_KIND_STRING, 0},  {REX_HELLO_MAX_PAYLOAD, REX_KIND_UINT, 0},
      {REX_HELLO_SOFTWARE, REX_KIND_STRING, 0}};
  rc = check_fields(f, REX_ATTR_NONE, hello_fields, sizeof hello_fields / sizeof *hello_fields, "HELLO");
  if (rc) return rc;
  const struct rex_attr *ver = field(f, REX_ATTR_NONE, REX_HELLO_VERSION);
  if (!ver || ver->v.u < REX_PROTO_VERSION_MIN || ver->v.u > REX_PROTO_VERSION_MAX) {
    rex__set_error("rexd at %s chose protocol version %llu; librex speaks %d..%d", c->path,
                   ver ? (unsigned long long)ver->v.u : 0ULL, REX_PROTO_VERSION_MIN, REX_PROTO_VERSION_MAX);
    return -EPROTO;
  }

  rex_frame_start(&out, request, REX_FLAG_END, 1);
  rc = rex_frame_encode(&out, msg, sizeof msg, &n);
  if (rc) {
    rex__set_error("encoding request: %s", rex_strerror(rc));
    return -EPROTO;
  }
  rc = send_all(c, msg, n);
  if (rc) return rc;

  for (;;) {
    rc = recv_frame(c, f);
    if (rc) return rc;
    if (f->type == REX_MSG_GOODBYE) {
      const struct rex_attr *r = field(f, REX_ATTR_NONE, REX_GOODBYE_REASON);
      char reason[256] = "no reason given";
      if (r && r->kind == REX_KIND_STRING) copy_str(reason, sizeof reason, r);
      rex__set_error("rexd at %s closed the connection: %s", c->path, reason);
      return -ECONNRESET;
    }
    if (f->type == REX_MSG_ERROR && (f->stream == 0 || f->stream == 1)) return remote_error(c, f);
    if (f->stream != 1) continue; /* a frame for another stream: not ours to answer in v1 */
    if (f->type != answer) {
      rex__set_error("rexd at %s answered with frame type 0x%04x, expected 0x%04x", c->path, f->type, answer);
      return -EPROTO;
    }
    return 0;
  }
}

double rload(void) {
  static const struct field load_fields[] = {{REX_LOAD_HOST, REX_KIND_STRING, 0},  {REX_LOAD_LOAD, REX_KIND_F64, 0},
                                             {REX_LOAD_LOADAVG, REX_KIND_LIST, 0}, {REX_LOAD_CORES, REX_KIND_UINT, 0},
                                             {REX_LOAD_JOBS, REX_KIND_UINT, 0},    {REX_LOAD_TIME, REX_KIND_UINT, 0},
                                             {REX_LOAD_MEM_AVAILABLE, REX_KIND_UINT, 0}};
  struct conn c;
  struct rex_frame f;
  double load = -1.0;
  int rc = exchange(&c, REX_MSG_LOAD_GET, REX_MSG_LOAD, &f);
  if (rc == 0) rc = check_fields(&f, REX_ATTR_NONE, load_fields, sizeof load_fields / sizeof *load_fields, "LOAD");
  if (rc == 0) {
    const struct rex_attr *a = field(&f, REX_ATTR_NONE, REX_LOAD_LOAD);
    if (!a || isnan(a->v.f) || a->v.f < 0) {
      rex__set_error("rexd at %s sent LOAD without a valid load figure", c.path);
      rc = -EPROTO;
    } else
      load = a->v.f;
  }
  conn_close(&c);
  if (rc) {
    errno = -rc;
    return -1.0;
  }
  return load;
}

static int fill_host(const struct rex_frame *f, uint32_t entry, struct rex_host *h, int index) {
  static const struct field host_fields[] = {
      {REX_HOST_NAME, REX_KIND_STRING, 0},    {REX_HOST_ADDRESS, REX_KIND_STRING, 0}, {REX_HOST_PORT, REX_KIND_UINT, 0},
      {REX_HOST_LOAD, REX_KIND_F64, 0},       {REX_HOST_CORES, REX_KIND_UINT, 0},     {REX_HOST_JOBS, REX_KIND_UINT, 0},
      {REX_HOST_REACHABLE, REX_KIND_BOOL, 0}, {REX_HOST_AGE_MS, REX_KIND_UINT, 0},    {REX_HOST_SELF, REX_KIND_BOOL, 0},
      {REX_HOST_ERROR, REX_KIND_STRING, 0},   {REX_HOST_LOADAVG1, REX_KIND_F64, 0}};
  char what[32];
  snprintf(what, sizeof what, "HOSTS host[%d]", index);
  int rc = check_fields(f, entry, host_fields, sizeof host_fields / sizeof *host_fields, what);
  if (rc) return rc;
  const struct rex_attr *a = field(f, entry, REX_HOST_NAME);
  if (!a) {
    rex__set_error("%s has no name", what);
    return -EPROTO;
  }
  if (!h) return 0;
  memset(h, 0, sizeof *h);
  copy_str(h->name, sizeof h->name, a);
  if ((a = field(f, entry, REX_HOST_ADDRESS))) copy_str(h->address, sizeof h->address, a);
  if ((a = field(f, entry, REX_HOST_ERROR))) copy_str(h->error, sizeof h->error, a);
  h->port = (a = field(f, entry, REX_HOST_PORT)) && a->v.u <= 0xffffffffu ? (unsigned)a->v.u : 0;
  h->load = (a = field(f, entry, REX_HOST_LOAD)) ? a->v.f : -1.0;
  h->loadavg1 = (a = field(f, entry, REX_HOST_LOADAVG1)) ? a->v.f : -1.0;
  h->cores = (a = field(f, entry, REX_HOST_CORES)) && a->v.u <= 0xffffffffu ? (unsigned)a->v.u : 0;
  h->jobs = (a = field(f, entry, REX_HOST_JOBS)) && a->v.u <= 0xffffffffu ? (unsigned)a->v.u : 0;
  h->reachable = (a = field(f, entry, REX_HOST_REACHABLE)) ? a->v.b : 0;
  h->self = (a = field(f, entry, REX_HOST_SELF)) ? a->v.b : 0;
  h->age_ms = (a = field(f, entry, REX_HOST_AGE_MS)) && a->v.u <= (uint64_t)INT64_MAX ? (long long)a->v.u : -1;
  return 0;
}

int rex_hosts(struct rex_host *hosts, size_t max) {
  static const struct field hosts_fields[] = {{REX_HOSTS_HOST, REX_KIND_LIST, 1}};
  if (!hosts && max) {
    errno = EINVAL;
    return -1;
  }
  struct conn c;
  struct rex_frame f;
  int count = 0;
  int rc = exchange(&c, REX_MSG_HOSTS_GET, REX_MSG_HOSTS, &f);
  if (rc == 0) rc = check_fields(&f, REX_ATTR_NONE, hosts_fields, 1, "HOSTS");
  for (uint32_t i = rc ? REX_ATTR_NONE : rex_attr_first(&f, REX_ATTR_NONE); i != REX_ATTR_NONE; i = f.attrs[i].next) {
    if ((f.attrs[i].tag & (uint16_t)~REX_TAG_CRITICAL) != REX_HOSTS_HOST) continue;
    rc = fill_host(&f, i, (size_t)count < max ? &hosts[count] : NULL, count);
    if (rc) break;
    count++;
  }
  conn_close(&c);
  if (rc) {
    errno = -rc;
    return -1;
  }
  return count;
}
