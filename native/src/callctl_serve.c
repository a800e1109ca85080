/*
 * callctl_serve.c: the serving side of remote calls (docs/CALLS.md).
 *
 * A call controller is a child process of rexd with a private link on an
 * inherited socketpair ($REX_CALL_FD): protocol v1 frames (docs/PROTOCOL.md
 * 4.7) with no preface and no HELLO, because nobody but rexd can reach the
 * descriptor. rexd sends one CALL at a time per controller and kills the
 * controller when a call overruns its deadline, so this loop is simple and
 * blocking: read a frame, serve it, answer.
 *
 * Two users: rex_register_entry()/rex_serve() for a C program that serves its
 * own functions (exact frame sizes, `void fn(const void *in, void *out)`), and
 * the generic controller native/callctl/rex_callctl.c, which adds entry points
 * from DEFINE frames and calls them through libffi.
 *
 * Hazards: everything in a frame comes from the link and is checked before
 * use (sizes against the entry point, strings as UTF-8 before they go into an
 * answer); the input is copied into a 16-byte aligned buffer before the
 * function sees it (frames are specified as received into aligned buffers,
 * and attributes are not aligned); a rexd that died gives EPIPE, not SIGPIPE.
 */
#define _GNU_SOURCE /* strdup */
#include "callctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct entry {
  char *name;
  size_t in_size, out_size;
  int variable;
  rex__invoke_fn invoke;
  void *ctx;
  rex_entry_fn fn; /* rex_register_entry only */
};

/* Entries are allocated one by one: invoke contexts point at them and must survive growth of the table. */
static struct entry **entries;
static size_t nentries, centries;

#define MAX_ENTRIES 4096
#define MAX_NAME 255

static struct entry *find(const char *name, size_t n) {
  for (size_t i = 0; i < nentries; i++)
    if (strlen(entries[i]->name) == n && memcmp(entries[i]->name, name, n) == 0) return entries[i];
  return NULL;
}

int rex__serve_add(const char *name, size_t in_size, size_t out_size, int variable, rex__invoke_fn invoke, void *ctx) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > MAX_NAME || !rex_utf8_valid((const uint8_t *)name, n) || in_size > REX_CALL_MAX_FRAME ||
      out_size > REX_CALL_MAX_FRAME || !invoke) {
    rex__set_error("entry point '%.64s': name must be 1..%d bytes of UTF-8 and frames at most %u bytes",
                   name ? name : "(null)", MAX_NAME, REX_CALL_MAX_FRAME);
    return -EINVAL;
  }
  struct entry *e = find(name, n);
  if (!e) {
    if (nentries == MAX_ENTRIES) {
      rex__set_error("more than %d entry points", MAX_ENTRIES);
      return -EINVAL;
    }
    if (nentries == centries) {
      size_t c = centries ? centries * 2 : 16;
      struct entry **t = realloc(entries, c * sizeof *t);
      if (!t) return -ENOMEM;
      entries = t;
      centries = c;
    }
    e = calloc(1, sizeof *e);
    if (!e || !(e->name = strdup(name))) {
      free(e);
      return -ENOMEM;
    }
    entries[nentries++] = e;
  }
  e->in_size = in_size;
  e->out_size = out_size;
  e->variable = variable;
  e->invoke = invoke;
  e->ctx = ctx;
  return 0;
}

void rex__call_fail(struct rex__call *call, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(call->msg, sizeof call->msg, fmt, ap);
  va_end(ap);
  call->err = err;
}

/* ------------------------------------------------------------------ sending */

/* Copies s into dst as valid UTF-8 (other bytes become '?'), so any text can go into a string attribute. */
static void utf8_clean(char *dst, size_t cap, const char *s) {
  size_t n = strlen(s);
  if (n >= cap) n = cap - 1;
  memcpy(dst, s, n);
  dst[n] = '\0';
  while (!rex_utf8_valid((const uint8_t *)dst, strlen(dst))) {
    for (size_t i = 0; dst[i]; i++)
      if ((unsigned char)dst[i] >= 0x80) dst[i] = '?';
  }
}

static int send_error(struct rex__conn *c, uint32_t stream, int err, const char *msg, uint16_t ref_type) {
  struct rex_attr attrs[4];
  struct rex_frame f;
  char text[600];
  utf8_clean(text, sizeof text, msg);
  rex_frame_init(&f, attrs, 4);
  rex_frame_start(&f, REX_MSG_ERROR, REX_FLAG_END, stream);
  rex_attr_uint(&f, REX_ERROR_CODE, (uint64_t)REX_EPROTO_WIRE(err));
  rex_attr_string(&f, REX_ERROR_MESSAGE, text);
  rex_attr_uint(&f, REX_ERROR_REF_TYPE, ref_type);
  return rex__conn_send(c, &f);
}

static int send_result(struct rex__conn *c, uint32_t stream, uint16_t flags, const uint8_t *out, size_t len, int accepted) {
  struct rex_attr attrs[2];
  struct rex_frame f;
  rex_frame_init(&f, attrs, 2);
  rex_frame_start(&f, REX_MSG_RESULT, flags, stream);
  if (accepted) rex_attr_bool(&f, REX_RESULT_ACCEPTED, 1);
  else rex_attr_bytes(&f, REX_RESULT_OUTPUT, out ? (const void *)out : (const void *)"", len);
  return rex__conn_send(c, &f);
}

void rex__call_ready(struct rex__call *call) {
  if (!call->async || call->answered) return;
  call->answered = 1;
  /* Not END: the final RESULT follows when (if) the function returns. */
  if (send_result(call->link, call->stream, 0, NULL, 0, 1) != 0) _exit(3); /* rexd is gone: nobody to serve */
}

/* ---------------------------------------------------------------- handlers */

static const struct rex_attr *attr(const struct rex_frame *f, uint16_t tag, uint8_t kind) {
  const struct rex_attr *a = rex_attr_find(f, REX_ATTR_NONE, tag);
  if (!a) a = rex_attr_find(f, REX_ATTR_NONE, (uint16_t)(tag | REX_TAG_CRITICAL));
  return a && a->kind == kind ? a : NULL;
}

static int serve_call(struct rex__conn *c, const struct rex_frame *f) {
  const struct rex_attr *t = attr(f, REX_CALL_TARGET, REX_KIND_STRING);
  const struct rex_attr *in = attr(f, REX_CALL_INPUT, REX_KIND_BYTES);
  const struct rex_attr *async = attr(f, REX_CALL_ASYNC, REX_KIND_BOOL);
  char msg[400];
  if (!t || !in) return send_error(c, f->stream, REX_EPROTO_BAD_REQUEST, "CALL needs a target and an input frame", f->type);
  const char *name = (const char *)t->data;
  size_t nlen = t->len;
  /* The function name is the last dot-separated part: rexd may pass the full target on.
     In NAME@VERSION the version may contain dots (pow@GLIBC_2.2.5): look before the '@'. */
  size_t end = t->len;
  for (size_t i = 0; i < t->len; i++)
    if (t->data[i] == '@') {
      end = i;
      break;
    }
  for (size_t i = end; i > 0; i--)
    if (t->data[i - 1] == '.') {
      name = (const char *)t->data + i;
      nlen = t->len - i;
      break;
    }
  struct entry *e = find(name, nlen);
  if (!e) {
    size_t off = (size_t)snprintf(msg, sizeof msg, "no entry point '%.*s' in this program; it serves:", (int)(nlen > 100 ? 100 : nlen), name);
    for (size_t i = 0; i < nentries && off < sizeof msg - 40; i++)
      off += (size_t)snprintf(msg + off, sizeof msg - off, " %s", entries[i]->name);
    if (nentries == 0) snprintf(msg + off, sizeof msg - off, " (nothing)");
    return send_error(c, f->stream, REX_EPROTO_NO_ENTRY, msg, f->type);
  }
  if (in->len > REX_CALL_MAX_FRAME || (!e->variable && in->len != e->in_size) || (e->variable && in->len < e->in_size)) {
    snprintf(msg, sizeof msg, "%s: the input frame is %u bytes, but the entry point's definition says %s%zu; nothing was called",
             e->name, in->len, e->variable ? "at least " : "", e->in_size);
    return send_error(c, f->stream, REX_EPROTO_BAD_REQUEST, msg, f->type);
  }
  /* C11 aligned_alloc wants a size that is a multiple of the alignment. */
  uint8_t *frame = aligned_alloc(16, ((size_t)in->len + 16) & ~(size_t)15);
  if (!frame) return send_error(c, f->stream, REX_EPROTO_INTERNAL, "out of memory for the input frame", f->type);
  memcpy(frame, in->data, in->len);
  struct rex__call call;
  memset(&call, 0, sizeof call);
  call.stream = f->stream;
  call.async = async && async->v.b;
  call.link = c;
  e->invoke(e->ctx, frame, in->len, &call);
  free(frame);
  int rc;
  if (call.err) {
    rc = send_error(c, f->stream, call.err, call.msg, f->type);
  } else if (call.out_len > REX_CALL_MAX_FRAME) {
    snprintf(msg, sizeof msg, "%s: the output frame is %zu bytes, more than the %u-byte limit", e->name, call.out_len, REX_CALL_MAX_FRAME);
    rc = send_error(c, f->stream, REX_EPROTO_INTERNAL, msg, f->type);
  } else {
    rc = send_result(c, f->stream, REX_FLAG_END, call.out, call.out_len, 0);
  }
  free(call.out);
  return rc;
}

static int by_name(const void *a, const void *b) {
  return strcmp((*(struct entry *const *)a)->name, (*(struct entry *const *)b)->name);
}

/* Wire bytes of one entry as serve_entries writes it: the list and its five attributes (uints at most 8 bytes). */
static size_t entry_wire(const struct entry *e) {
  return 6 * REX_PROTO_ATTR_HEADER_SIZE + strlen(e->name) + 8 + 8 + 1 + 1;
}

/*
 * ENTRIES, one page (docs/PROTOCOL.md 4.7): with `name` just that entry; else
 * the names after `after` in strcmp order, at most `limit` and never more than
 * one frame holds (bytes and attributes), with `next` = the last name sent
 * when more follow. `match` is not evaluated here: rexd pages through the
 * whole list once and matches itself. A request without `limit` (a rexd that
 * predates paging) gets the whole list when it fits, else BAD_REQUEST.
 */
static int serve_entries(struct rex__conn *c, const struct rex_frame *f) {
  const struct rex_attr *name = attr(f, REX_ENTRIES_GET_NAME, REX_KIND_STRING);
  const struct rex_attr *after = attr(f, REX_ENTRIES_GET_AFTER, REX_KIND_STRING);
  const struct rex_attr *limit = attr(f, REX_ENTRIES_GET_LIMIT, REX_KIND_UINT);
  char msg[400], cursor[MAX_NAME + 1] = "";
  if ((name && name->len > MAX_NAME) || (after && after->len > MAX_NAME))
    return send_error(c, f->stream, REX_EPROTO_BAD_REQUEST, "ENTRIES_GET name and after are at most 255 bytes", f->type);
  if (limit && limit->v.u == 0) return send_error(c, f->stream, REX_EPROTO_BAD_REQUEST, "ENTRIES_GET limit 0: expected 1 or more", f->type);
  struct entry **sorted = malloc((nentries ? nentries : 1) * sizeof *sorted);
  struct rex_attr *attrs = malloc(REX_PROTO_MAX_ATTRS * sizeof *attrs);
  if (!sorted || !attrs) {
    free(sorted);
    free(attrs);
    return send_error(c, f->stream, REX_EPROTO_INTERNAL, "out of memory", f->type);
  }
  size_t n = 0;
  if (name) {
    struct entry *e = find((const char *)name->data, name->len);
    if (!e) {
      free(sorted);
      free(attrs);
      snprintf(msg, sizeof msg, "no entry point '%.*s' in this program", (int)name->len, (const char *)name->data);
      return send_error(c, f->stream, REX_EPROTO_NO_ENTRY, msg, f->type);
    }
    sorted[n++] = e;
  } else {
    if (after) memcpy(cursor, after->data, after->len), cursor[after->len] = '\0';
    for (size_t i = 0; i < nentries; i++)
      if (!after || strcmp(entries[i]->name, cursor) > 0) sorted[n++] = entries[i];
    qsort(sorted, n, sizeof *sorted, by_name);
  }
  size_t budget = REX_PROTO_MAX_PAYLOAD - 1024, used = 0, take = 0, max = limit && limit->v.u < n ? (size_t)limit->v.u : n;
  size_t max_attrs = (REX_PROTO_MAX_ATTRS - 8) / 6;
  while (take < max && take < max_attrs && used + entry_wire(sorted[take]) <= budget) used += entry_wire(sorted[take++]);
  if (take < n && !limit && !name) {
    free(sorted);
    free(attrs);
    snprintf(msg, sizeof msg, "%zu entry points do not fit in one ENTRIES and this request does not page: send limit and after (docs/PROTOCOL.md 4.7)", n);
    return send_error(c, f->stream, REX_EPROTO_BAD_REQUEST, msg, f->type);
  }
  struct rex_frame out;
  rex_frame_init(&out, attrs, REX_PROTO_MAX_ATTRS);
  rex_frame_start(&out, REX_MSG_ENTRIES, REX_FLAG_END, f->stream);
  for (size_t i = 0; i < take; i++) {
    rex_attr_list_begin(&out, REX_ENTRIES_ENTRY);
    rex_attr_string(&out, REX_ENTRY_NAME, sorted[i]->name);
    rex_attr_uint(&out, REX_ENTRY_INPUT_SIZE, sorted[i]->in_size);
    rex_attr_uint(&out, REX_ENTRY_OUTPUT_SIZE, sorted[i]->out_size);
    rex_attr_bool(&out, REX_ENTRY_CALLABLE, 1);
    rex_attr_bool(&out, REX_ENTRY_VARIABLE, sorted[i]->variable);
    rex_attr_list_end(&out);
  }
  if (take < n && take > 0) rex_attr_string(&out, REX_ENTRIES_NEXT, sorted[take - 1]->name);
  int rc = rex__conn_send(c, &out);
  free(sorted);
  free(attrs);
  return rc;
}

static int serve_frame(struct rex__conn *c, const struct rex_frame *f, rex__define_fn define) {
  char msg[400];
  switch (f->type) {
  case REX_MSG_CALL: return serve_call(c, f);
  case REX_MSG_ENTRIES_GET: return serve_entries(c, f);
  case REX_MSG_DEFINE: {
    if (!define) return send_error(c, f->stream, REX_EPROTO_UNSUPPORTED, "this controller serves its own registered entry points; it takes no DEFINE", f->type);
    msg[0] = '\0';
    int err = define(f, msg, sizeof msg);
    if (err) return send_error(c, f->stream, err, msg, f->type);
    struct rex_attr a[1];
    struct rex_frame out;
    rex_frame_init(&out, a, 1);
    rex_frame_start(&out, REX_MSG_DEFINED, REX_FLAG_END, f->stream);
    return rex__conn_send(c, &out);
  }
  case REX_MSG_PING: {
    const struct rex_attr *nonce = attr(f, 1, REX_KIND_BYTES);
    struct rex_attr a[1];
    struct rex_frame out;
    rex_frame_init(&out, a, 1);
    rex_frame_start(&out, REX_MSG_PONG, REX_FLAG_END, f->stream);
    if (nonce && nonce->len <= REX_PROTO_MAX_NONCE) rex_attr_bytes(&out, 1, nonce->data, nonce->len);
    return rex__conn_send(c, &out);
  }
  default:
    snprintf(msg, sizeof msg, "a call controller does not serve message type 0x%04x", f->type);
    return send_error(c, f->stream, REX_EPROTO_UNSUPPORTED, msg, f->type);
  }
}

int rex__serve_fd(int fd, rex__define_fn define) {
  struct rex__conn c;
  rex__conn_attach(&c, fd, "rexd on the call link");
  struct rex_frame f;
  int rc;
  while ((rc = rex__conn_recv(&c, &f)) == 0 && (rc = serve_frame(&c, &f, define)) == 0 && f.type != REX_MSG_GOODBYE) {
  }
  if (rc == -ECONNRESET && rex__conn_pending(&c) == 0) {
    rex__clear_error(); /* rexd closed the link between frames: the controller's work is done */
    rc = 0;
  }
  rex__conn_close(&c);
  return rc;
}

/* ------------------------------------------------------ rex_register_entry */

static void fixed_invoke(void *ctx, uint8_t *in, size_t in_len, struct rex__call *call) {
  struct entry *e = ctx;
  (void)in_len; /* checked against e->in_size by serve_call */
  uint8_t *out = calloc(1, e->out_size ? e->out_size : 1);
  if (!out) {
    rex__call_fail(call, REX_EPROTO_INTERNAL, "%s: out of memory for the output frame", e->name);
    return;
  }
  rex__call_ready(call);
  e->fn(in, out);
  call->out = out;
  call->out_len = e->out_size;
}

int rex_register_entry(const char *name, rex_entry_fn fn, size_t in_size, size_t out_size) {
  if (!fn) {
    errno = EINVAL;
    return -1;
  }
  int rc = rex__serve_add(name, in_size, out_size, 0, fixed_invoke, NULL);
  if (rc) {
    errno = -rc;
    return -1;
  }
  struct entry *e = find(name, strlen(name));
  e->ctx = e;
  e->fn = fn;
  return 0;
}

int rex_serve(void) {
  const char *s = getenv("REX_CALL_FD");
  char *end = NULL;
  long fd = s && *s ? strtol(s, &end, 10) : -1;
  if (fd < 0 || fd > 65535 || !end || *end) {
    rex__set_error("rex_serve: this program was not started by rexd as a call controller ($REX_CALL_FD is not set)");
    errno = EBADF;
    return -1;
  }
  int rc = rex__serve_fd((int)fd, NULL);
  if (rc) {
    errno = -rc;
    return -1;
  }
  return 0;
}
