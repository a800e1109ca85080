/*
 * rcall.c: rcall() and rjump() (docs/CALLS.md, docs/man/rcall.3.md): one
 * conversation with the local rexd per call: preface, HELLO and the CALL on
 * stream 1 in one write, then HELLO back and the RESULT (or ERROR) of
 * stream 1. rexd routes the call to a controller for HOST.USER.PROGRAM.
 *
 * Hazards, as in client.c: every wait has a deadline (the call's own plus a
 * margin for rexd to report it), EINTR restarts the wait, not the clock; no
 * SIGPIPE (MSG_NOSIGNAL); the socket is close-on-exec; everything rexd sends
 * is checked before it is copied (the output frame must fit out_size).
 */
#define _GNU_SOURCE /* SOCK_CLOEXEC, MSG_NOSIGNAL */
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CALL_TIMEOUT_MS 30000
/* rexd answers TIMEOUT itself when the deadline passes; give it this long to say so. */
#define REPORT_MARGIN_MS 5000

struct link {
  int fd;
  long long deadline;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  uint8_t *buf;
  size_t len, cap, used;
  struct rex_attr *arena;
};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long call_timeout_ms(void) {
  const char *s = getenv("REX_CALL_TIMEOUT_MS");
  if (!s || !*s) return DEFAULT_CALL_TIMEOUT_MS;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return errno || *end || v <= 0 || v > 86400000 ? DEFAULT_CALL_TIMEOUT_MS : v;
}

static int wait_in(struct link *l) {
  for (;;) {
    long long left = l->deadline - now_ms();
    if (left <= 0) {
      rex__set_error("rexd at %s did not answer the call in time", l->path);
      return -ETIMEDOUT;
    }
    struct pollfd p = {.fd = l->fd, .events = POLLIN, .revents = 0};
    int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (r < 0 && errno != EINTR) return -errno;
    if (r > 0) return 0;
  }
}

static int link_open(struct link *l, long timeout) {
  memset(l, 0, sizeof *l);
  l->fd = -1;
  l->deadline = now_ms() + timeout + REPORT_MARGIN_MS;
  int rc = rex__socket_path(l->path, sizeof l->path);
  if (rc) return rc;
  l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l->fd < 0) return -errno;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, l->path, strlen(l->path) + 1);
  while (connect(l->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    if (errno == EINTR) continue;
    int e = errno;
    rex__set_error("connect %s: %s%s", l->path, strerror(e),
                   e == ENOENT || e == ECONNREFUSED ? " (is rexd running? start it, or set REX_SOCKET)" : "");
    return -e;
  }
  l->arena = malloc(REX_PROTO_MAX_ATTRS * sizeof *l->arena);
  return l->arena ? 0 : -ENOMEM;
}

static void link_close(struct link *l) {
  if (l->fd >= 0) close(l->fd);
  free(l->buf);
  free(l->arena);
}

/* Receives the next frame into f (valid until the next call). 0 or -errno. */
static int recv_frame(struct link *l, struct rex_frame *f) {
  if (l->used) {
    memmove(l->buf, l->buf + l->used, l->len - l->used);
    l->len -= l->used;
    l->used = 0;
  }
  for (;;) {
    rex_frame_init(f, l->arena, REX_PROTO_MAX_ATTRS);
    size_t consumed;
    int rc = l->len ? rex_frame_decode(l->buf, l->len, 0, f, &consumed) : REX_EAGAIN;
    if (rc == 0) {
      l->used = consumed;
      return 0;
    }
    if (rc != REX_EAGAIN) {
      rex__set_error("rexd at %s sent a bad frame: %s: %s", l->path, rex_err_name(rc), f->err);
      return -EPROTO;
    }
    size_t need = l->len < REX_PROTO_HEADER_SIZE ? 4096 : REX_PROTO_HEADER_SIZE + (size_t)f->length;
    if (need > l->cap) {
      size_t c = l->cap ? l->cap : 4096;
      while (c < need) c *= 2;
      uint8_t *b = realloc(l->buf, c);
      if (!b) return -ENOMEM;
      l->buf = b;
      l->cap = c;
    }
    rc = wait_in(l);
    if (rc) return rc;
    ssize_t r = recv(l->fd, l->buf + l->len, l->cap - l->len, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      int e = errno;
      rex__set_error("receive from rexd at %s: %s", l->path, strerror(e));
      return -e;
    }
    if (r == 0) {
      rex__set_error("rexd at %s closed the connection during the call", l->path);
      return -ECONNRESET;
    }
    l->len += (size_t)r;
  }
}

static const struct rex_attr *get(const struct rex_frame *f, uint16_t tag, uint8_t kind) {
  for (uint32_t i = rex_attr_first(f, REX_ATTR_NONE); i != REX_ATTR_NONE; i = f->attrs[i].next)
    if ((f->attrs[i].tag & (uint16_t)~REX_TAG_CRITICAL) == tag) return f->attrs[i].kind == kind ? &f->attrs[i] : NULL;
  return NULL;
}

/* Maps an ERROR answer to errno (docs/man/rcall.3.md) and records its message. */
static int call_error(const struct link *l, const struct rex_frame *f, const char *target) {
  const struct rex_attr *code = get(f, REX_ERROR_CODE, REX_KIND_UINT);
  const struct rex_attr *msg = get(f, REX_ERROR_MESSAGE, REX_KIND_STRING);
  uint64_t c = code ? code->v.u : 0;
  int len = msg ? (int)(msg->len > 400 ? 400 : msg->len) : 0;
  /* The message is not NUL-terminated in the frame: print exactly len bytes. */
  static const char *const names[] = {"ERROR", "MALFORMED", "VERSION", "TOO_BIG", "UNSUPPORTED", "UNEXPECTED",
                                       "NO_HOST", "UNREACHABLE", "TIMEOUT", "BUSY", "INTERNAL", "DENIED",
                                       "BAD_REQUEST", "CRASHED", "NO_ENTRY", "CANCELLED"};
  rex__set_error("%s: %s: %.*s (rexd at %s)", target, names[c <= 15 ? c : 0], len,
                 len ? (const char *)msg->data : "", l->path);
  switch ((int)-(int64_t)c) {
  case REX_EPROTO_DENIED: return -EACCES;
  case REX_EPROTO_NO_ENTRY: return -ENOENT;
  case REX_EPROTO_NO_HOST: return -EHOSTUNREACH;
  case REX_EPROTO_UNREACHABLE: return -EHOSTUNREACH;
  case REX_EPROTO_BAD_REQUEST: return -EINVAL;
  case REX_EPROTO_TIMEOUT: return -ETIMEDOUT;
  case REX_EPROTO_CRASHED: return -EOWNERDEAD;
  case REX_EPROTO_CANCELLED: return -ECANCELED;
  case REX_EPROTO_UNSUPPORTED: return -ENOSYS;
  case REX_EPROTO_BUSY: return -EAGAIN;
  default: return -EPROTO;
  }
}

/* The whole call. out may be NULL (rjump); returns the output length or -errno. */
static long do_call(const char *target, const void *in, size_t in_size, void *out, size_t out_size, int async) {
  rex__clear_error();
  size_t tlen = target ? strlen(target) : 0;
  if (tlen == 0 || tlen > 1024 || (!in && in_size) || (!out && out_size)) {
    rex__set_error("rcall: target must be a non-empty HOST.USER.PROGRAM.FUNCTION and buffers non-NULL");
    return -EINVAL;
  }
  if (in_size > REX_CALL_MAX_FRAME) {
    rex__set_error("%s: input frame of %zu bytes is above the %u-byte limit", target, in_size, REX_CALL_MAX_FRAME);
    return -EMSGSIZE;
  }
  long timeout = call_timeout_ms();
  struct link l;
  long rc = link_open(&l, timeout);
  if (rc) goto out;

  struct rex_attr attrs[8];
  struct rex_frame f;
  size_t cap = REX_PROTO_PREFACE_SIZE + 2 * REX_PROTO_HEADER_SIZE + 256 + tlen + in_size;
  uint8_t *msg = malloc(cap);
  size_t n, m;
  if (!msg) {
    rc = -ENOMEM;
    goto out;
  }
  memcpy(msg, REX_PROTO_PREFACE, REX_PROTO_PREFACE_SIZE);
  rex_frame_init(&f, attrs, 8);
  rex_frame_start(&f, REX_MSG_HELLO, 0, 0);
  rex_attr_uint(&f, REX_HELLO_VERSION_MIN, REX_PROTO_VERSION_MIN);
  rex_attr_uint(&f, REX_HELLO_VERSION_MAX, REX_PROTO_VERSION_MAX);
  rex_attr_uint(&f, REX_HELLO_ROLE, REX_ROLE_CLIENT);
  rex_attr_string(&f, REX_HELLO_SOFTWARE, "librex/0.1.0");
  int e = rex_frame_encode(&f, msg + REX_PROTO_PREFACE_SIZE, cap - REX_PROTO_PREFACE_SIZE, &n);
  if (!e) {
    rex_frame_start(&f, REX_MSG_CALL, REX_FLAG_END, 1);
    rex_attr_stringn(&f, REX_CALL_TARGET, target, tlen);
    rex_attr_bytes(&f, REX_CALL_INPUT, in_size ? in : (const void *)"", in_size);
    rex_attr_uint(&f, REX_CALL_DEADLINE_MS, (uint64_t)timeout);
    if (async) rex_attr_bool(&f, REX_CALL_ASYNC, 1);
    if (out) rex_attr_uint(&f, REX_CALL_OUT_MAX, out_size);
    n += REX_PROTO_PREFACE_SIZE;
    e = rex_frame_encode(&f, msg + n, cap - n, &m);
  }
  if (e) {
    free(msg);
    rex__set_error("%s: cannot encode the call: %s (the target must be UTF-8)", target, rex_strerror(e));
    rc = -EINVAL;
    goto out;
  }
  const uint8_t *p = msg;
  size_t left = n + m;
  while (left) {
    ssize_t w = send(l.fd, p, left, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      rex__set_error("send to rexd at %s: %s", l.path, strerror(errno));
      break;
    }
    p += w;
    left -= (size_t)w;
  }
  free(msg);
  if (rc) goto out;

  for (int hello = 0;;) {
    rc = recv_frame(&l, &f);
    if (rc) goto out;
    if (f.type == REX_MSG_ERROR && (f.stream == 0 || f.stream == 1)) {
      rc = call_error(&l, &f, target);
      goto out;
    }
    if (!hello) {
      if (f.type != REX_MSG_HELLO) {
        rex__set_error("rexd at %s answered HELLO with frame type 0x%04x", l.path, f.type);
        rc = -EPROTO;
        goto out;
      }
      hello = 1;
      continue;
    }
    if (f.stream != 1) continue;
    if (f.type == REX_MSG_GOODBYE) {
      rex__set_error("rexd at %s closed the connection during the call", l.path);
      rc = -ECONNRESET;
      goto out;
    }
    if (f.type != REX_MSG_RESULT) {
      rex__set_error("rexd at %s answered CALL with frame type 0x%04x", l.path, f.type);
      rc = -EPROTO;
      goto out;
    }
    const struct rex_attr *acc = get(&f, REX_RESULT_ACCEPTED, REX_KIND_BOOL);
    if (acc && acc->v.b) {
      if (async) {
        rc = 0;
        goto out;
      }
      continue; /* not asked for, but harmless: wait for the end */
    }
    const struct rex_attr *o = get(&f, REX_RESULT_OUTPUT, REX_KIND_BYTES);
    if (!o) {
      rex__set_error("rexd at %s sent a RESULT without an output frame", l.path);
      rc = -EPROTO;
      goto out;
    }
    if (out) {
      if (o->len > out_size) {
        rex__set_error("%s: the output frame is %u bytes, larger than the %zu-byte buffer", target, o->len, out_size);
        rc = -EMSGSIZE;
        goto out;
      }
      memcpy(out, o->data, o->len);
    }
    rc = (long)o->len;
    goto out;
  }
out:
  link_close(&l);
  return rc;
}

long rcall(const char *target, const void *in, size_t in_size, void *out, size_t out_size) {
  long rc = do_call(target, in, in_size, out, out_size, 0);
  if (rc < 0) {
    errno = (int)-rc;
    return -1;
  }
  return rc;
}

int rjump(const char *target, const void *in, size_t in_size, unsigned rflags) {
  if (rflags & ~REX_RFLAG_ASYNC) {
    rex__set_error("rjump: unknown rflags 0x%x", rflags & ~REX_RFLAG_ASYNC);
    errno = EINVAL;
    return -1;
  }
  long rc = do_call(target, in, in_size, NULL, 0, (rflags & REX_RFLAG_ASYNC) != 0);
  if (rc < 0) {
    errno = (int)-rc;
    return -1;
  }
  return 0;
}
