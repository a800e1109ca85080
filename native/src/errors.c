/*
 * errors.c: the one table of librex error codes, and the per-thread detail
 * of the last user API failure.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The ERROR codes come from wire.h's generated REX_EPROTO_CODES; the library's own follow. */
#define REX_EPROTO_ENTRY(name, code, msg) X(code, #name, msg)
#define REX_ERRNO_MAP(X)                                                                                     \
  REX_EPROTO_CODES(REX_EPROTO_ENTRY)                                                                         \
  X(REX_EAGAIN, "EAGAIN", "incomplete frame: more bytes needed")                                            \
  X(REX_ENOSPC, "ENOSPC", "buffer or attribute arena too small")                                            \
  X(REX_EINVAL, "EINVAL", "invalid argument")                                                               \
  X(REX_ENOMEM, "ENOMEM", "out of memory")

const char *rex_strerror(int err) {
  if (err > 0) return strerror(err);
#define X(code, name, msg) \
  case code: return msg;
  switch (err) {
    REX_ERRNO_MAP(X)
  case 0: return "success";
  default: return "unknown REX error";
  }
#undef X
}

const char *rex_err_name(int err) {
  if (err > 0) {
    /* strerrorname_np needs glibc 2.32; the few errno values librex sets are named here. */
    switch (err) {
    case ENOENT: return "ENOENT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EPROTO: return "EPROTO";
    case EACCES: return "EACCES";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    default: return "UNKNOWN";
    }
  }
#define X(code, name, msg) \
  case code: return name;
  switch (err) {
    REX_ERRNO_MAP(X)
  case 0: return "OK";
  default: return "UNKNOWN";
  }
#undef X
}

static _Thread_local char last_error[512];

const char *rex_last_error(void) { return last_error; }

void rex__set_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
}

void rex__clear_error(void) { last_error[0] = '\0'; }
