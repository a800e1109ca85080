/*
 * rcall.c: rcall() and rjump() (docs/CALLS.md, docs/man/rcall.3.md): one
 * conversation with the local rexd per call: preface, HELLO and the CALL on
 * stream 1 in one write, then HELLO back and the RESULT (or ERROR) of
 * stream 1. rexd routes the call to a controller for HOST.USER.PROGRAM.
 *
 * Hazards: the connection's are conn.c's; its deadline is the call's own
 * plus a margin for rexd to report it. The output frame must fit out_size
 * before it is copied.
 */
#include "conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CALL_TIMEOUT_MS 30000
/* rexd answers TIMEOUT itself when the deadline passes; give it this long to say so. */
#define REPORT_MARGIN_MS 5000

/* Maps an ERROR answer to -errno (docs/man/rcall.3.md) and records its message. */
static int call_error(const struct rex__conn *c, const struct rex_frame *f, const char *target) {
  static const struct rex__errno_map map[] = {
      {REX_EPROTO_DENIED, EACCES},        {REX_EPROTO_NO_ENTRY, ENOENT},   {REX_EPROTO_NO_HOST, EHOSTUNREACH},
      {REX_EPROTO_UNREACHABLE, EHOSTUNREACH}, {REX_EPROTO_BAD_REQUEST, EINVAL}, {REX_EPROTO_TIMEOUT, ETIMEDOUT},
      {REX_EPROTO_CRASHED, EOWNERDEAD},   {REX_EPROTO_CANCELLED, ECANCELED}, {REX_EPROTO_UNSUPPORTED, ENOSYS},
      {REX_EPROTO_BUSY, EAGAIN},          {0, 0}};
  struct rex__remote_error e;
  int err = rex__conn_error(f, map, &e);
  rex__set_error("%s: %s: %.400s (%s)", target, e.name, e.text, c->where);
  return -err;
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
  /* REX_PLACE_HOSTS limits placement when the target names no host (`*.P.F`, `P.F`): fewer than two dots
   * before any @VERSION, or a `*` host. A named host is the caller's choice (docs/PLACEMENT.md). */
  size_t upto = strcspn(target, "@"), dots = 0;
  for (size_t i = 0; i < upto; i++) dots += target[i] == '.';
  const char *place = dots < 2 || strncmp(target, "*.", 2) == 0 ? getenv("REX_PLACE_HOSTS") : NULL;
  const uint16_t among = (uint16_t)(REX_CALL_AMONG | REX_TAG_CRITICAL); /* an older rexd refuses it rather than placing anywhere */
  long nplace = place ? rex__place_hosts(place, NULL, among, target) : 0;
  if (nplace < 0) return -EINVAL;
  /* HELLO and the CALL go in one write: the answer to both is one round trip away. */
  struct rex_attr *attrs = calloc((size_t)nplace + 8, sizeof *attrs);
  if (!attrs) return -ENOMEM;
  long timeout = rex__env_ms("REX_CALL_TIMEOUT_MS", DEFAULT_CALL_TIMEOUT_MS, 86400000);
  struct rex__conn c;
  long rc = rex__conn_open(&c, NULL, timeout + REPORT_MARGIN_MS, "REX_CALL_TIMEOUT_MS and 5 s for rexd to report it");
  if (rc) goto out;

  struct rex_frame f;
  rex_frame_init(&f, attrs, (size_t)nplace + 8);
  rex_frame_start(&f, REX_MSG_CALL, REX_FLAG_END, 1);
  rex_attr_stringn(&f, REX_CALL_TARGET, target, tlen);
  if (nplace > 0) rex__place_hosts(place, &f, among, target);
  rex_attr_bytes(&f, REX_CALL_INPUT, in_size ? in : (const void *)"", in_size);
  rex_attr_uint(&f, REX_CALL_DEADLINE_MS, (uint64_t)timeout);
  if (async) rex_attr_bool(&f, REX_CALL_ASYNC, 1);
  if (out) rex_attr_uint(&f, REX_CALL_OUT_MAX, out_size);
  if (f.build_err) {
    rex__set_error("%s: cannot encode the call: %s (the target must be UTF-8)", target, rex_strerror(f.build_err));
    rc = -EINVAL;
    goto out;
  }
  int r = rex__conn_queue_hello(&c);
  if (!r) r = rex__conn_queue(&c, &f);
  if (!r) r = rex__conn_flush(&c);
  if (!r) r = rex__conn_welcome(&c, &f);
  while (!r && !(r = rex__conn_await(&c, 1, &f))) {
    if (f.type != REX_MSG_RESULT) {
      rex__set_error("%s answered CALL with frame type 0x%04x", c.where, f.type);
      rc = -EPROTO;
      goto out;
    }
    const struct rex_attr *acc = rex__field(&f, REX_ATTR_NONE, REX_RESULT_ACCEPTED);
    if (acc && acc->kind == REX_KIND_BOOL && acc->v.b) {
      if (async) goto out; /* rc is 0 */
      continue;            /* not asked for, but harmless: wait for the end */
    }
    const struct rex_attr *o = rex__field(&f, REX_ATTR_NONE, REX_RESULT_OUTPUT);
    if (!o || o->kind != REX_KIND_BYTES) {
      rex__set_error("%s sent a RESULT without an output frame", c.where);
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
  rc = r == REX__CONN_ERROR ? call_error(&c, &f, target) : r;
out:
  rex__conn_close(&c);
  free(attrs);
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
