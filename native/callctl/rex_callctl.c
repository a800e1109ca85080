/*
 * rex_callctl: the generic call controller (docs/CALLS.md). rexd starts it as
 *
 *     rex_callctl OBJECT          with the link on $REX_CALL_FD
 *
 * It dlopen()s OBJECT, then learns each entry point from a DEFINE frame that
 * rexd computed with the one frame layout implementation (src/runtime/frames/,
 * src/calls/define.ts): fixed-part sizes, the libffi type of every value
 * parameter and of the return value (a small type code, below), and for every
 * pointer parameter where its length word is and how its element count is
 * known. This program never parses XML and never recomputes a layout.
 *
 * Before any call it checks the frame against the definition: the exact frame
 * size, every length word against the element count the function will use
 * (a size-is parameter's value, a constant, one element), strings NUL
 * terminated inside their buffer, data sections inside the frame, the output
 * within REX_CALL_MAX_FRAME. A frame that fails is refused with BAD_REQUEST
 * and nothing runs. Then it builds the arguments for libffi: values point
 * into the frame, pointer parameters point at their data section (in, inout)
 * or at a fresh zeroed buffer (out).
 *
 * Type codes (one character per scalar, braces for a struct by value):
 *   v void  b bool  c int8  C uint8  s int16  S uint16  i int32  I uint32
 *   l int64  L uint64  f float  d double  {...} struct of the enclosed types
 * Arrays inside structs arrive repeated; unions arrive as a struct of
 * integer/floating chunks classified like the union (define.ts), which is
 * what the x86-64 SysV calling convention looks at.
 *
 * A function that crashes takes this process with it: rexd reports the
 * signal to the caller and starts a fresh controller for the next call.
 */
#define _GNU_SOURCE /* dlopen flags */
#include "callctl.h"

#include <dlfcn.h>
#include <errno.h>
#include <ffi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAMS 127
#define MAX_TYPE_DEPTH 16
#define MAX_STRUCT_ELEMS 4096

struct param {
  int kind;          /* REX_PARAM_VALUE or REX_PARAM_BUFFER */
  char code;         /* value: the type code's first character (the integer kind for size-is reads) */
  ffi_type *type;    /* value only */
  uint32_t offset;   /* value: its slot; buffer: its input length word */
  uint32_t size;     /* value: its size */
  int dir;           /* buffer: REX_DIR_* */
  uint32_t elem_size, align;
  int string;
  int count_kind;    /* REX_COUNT_* */
  uint32_t count;    /* REX_COUNT_VALUE: elements; REX_COUNT_PARAM: index of the size parameter */
  uint32_t out_offset;
  uint32_t into;     /* an out char ** returned as an offset: 1 + the index of the char * it points into; 0: none */
};

struct def {
  char *name;
  void *fn;
  uint32_t in_size, out_size;
  ffi_type *ret;
  size_t nparams;
  struct param params[MAX_PARAMS];
  ffi_type *atypes[MAX_PARAMS];
  ffi_cif cif;
};

static void *object;
static const char *object_path;

/* ------------------------------------------------------------ type codes */

static ffi_type *scalar(char c) {
  switch (c) {
  case 'b': case 'C': return &ffi_type_uint8;
  case 'c': return &ffi_type_sint8;
  case 's': return &ffi_type_sint16;
  case 'S': return &ffi_type_uint16;
  case 'i': return &ffi_type_sint32;
  case 'I': return &ffi_type_uint32;
  case 'l': return &ffi_type_sint64;
  case 'L': return &ffi_type_uint64;
  case 'f': return &ffi_type_float;
  case 'd': return &ffi_type_double;
  default: return NULL;
  }
}

/* Parses one type at *p; NULL with msg set on a bad code. Struct types live as long as the process. */
static ffi_type *parse_type(const char **p, const char *end, int depth, char *msg, size_t cap) {
  if (*p >= end) {
    snprintf(msg, cap, "type code ends early");
    return NULL;
  }
  char c = *(*p)++;
  if (c != '{') {
    ffi_type *t = scalar(c);
    if (!t) snprintf(msg, cap, "unknown type code '%c'", c);
    return t;
  }
  if (depth >= MAX_TYPE_DEPTH) {
    snprintf(msg, cap, "structs nested deeper than %d", MAX_TYPE_DEPTH);
    return NULL;
  }
  ffi_type **elems = malloc((MAX_STRUCT_ELEMS + 1) * sizeof *elems);
  ffi_type *t = calloc(1, sizeof *t);
  size_t n = 0;
  if (!elems || !t) {
    snprintf(msg, cap, "out of memory");
    goto err;
  }
  while (*p < end && **p != '}') {
    if (n == MAX_STRUCT_ELEMS) {
      snprintf(msg, cap, "a struct of more than %d elements", MAX_STRUCT_ELEMS);
      goto err;
    }
    if (!(elems[n++] = parse_type(p, end, depth + 1, msg, cap))) goto err;
  }
  if (*p >= end || n == 0) {
    snprintf(msg, cap, n ? "unterminated struct in type code" : "empty struct in type code");
    goto err;
  }
  (*p)++;
  elems[n] = NULL;
  t->type = FFI_TYPE_STRUCT;
  t->elements = elems;
  return t;
err:
  free(elems); /* nested structs already parsed leak: a bad DEFINE is a rexd bug, reported once */
  free(t);
  return NULL;
}

/* ---------------------------------------------------------------- DEFINE */

static const struct rex_attr *child(const struct rex_frame *f, uint32_t list, uint16_t tag, uint8_t kind) {
  const struct rex_attr *a = rex_attr_find(f, list, tag);
  return a && a->kind == kind ? a : NULL;
}

static uint32_t child_u32(const struct rex_frame *f, uint32_t list, uint16_t tag, uint32_t dflt) {
  const struct rex_attr *a = child(f, list, tag, REX_KIND_UINT);
  return a && a->v.u <= UINT32_MAX ? (uint32_t)a->v.u : dflt;
}

static void invoke(void *ctx, uint8_t *in, size_t in_len, struct rex__call *call);

static int define(const struct rex_frame *f, char *msg, size_t cap) {
  const struct rex_attr *name = child(f, REX_ATTR_NONE, REX_DEFINE_NAME, REX_KIND_STRING);
  const struct rex_attr *sym = child(f, REX_ATTR_NONE, REX_DEFINE_SYMBOL, REX_KIND_STRING);
  const struct rex_attr *ret = child(f, REX_ATTR_NONE, REX_DEFINE_RETURNS, REX_KIND_STRING);
  if (!name || name->len == 0 || name->len > 255 || !ret) {
    snprintf(msg, cap, "DEFINE needs a name (1..255 bytes) and a return type code");
    return REX_EPROTO_BAD_REQUEST;
  }
  if (!sym) sym = name;
  struct def *d = calloc(1, sizeof *d);
  char symbol[256];
  if (!d || !(d->name = strndup((const char *)name->data, name->len))) {
    free(d);
    snprintf(msg, cap, "out of memory");
    return REX_EPROTO_INTERNAL;
  }
  snprintf(symbol, sizeof symbol, "%.*s", (int)(sym->len > 255 ? 255 : sym->len), (const char *)sym->data);
  int err = REX_EPROTO_BAD_REQUEST;
  dlerror();
  /* NAME@VERSION is an older version of an exported symbol (pow@GLIBC_2.2.5): dlvsym() finds
     exactly that version; a plain name gets the default one. Either returns an IFUNC's
     implementation as this host's dynamic linker resolves it, not its resolver. */
  char *at = strchr(symbol, '@');
  if (at) {
    *at = '\0';
    d->fn = dlvsym(object, symbol, at + 1);
    *at = '@';
  } else {
    d->fn = dlsym(object, symbol);
  }
  if (!d->fn) {
    const char *why = dlerror();
    snprintf(msg, cap, "%s: no function '%s' in %s (%s); rebuild the definitions against this object", d->name, symbol,
             object_path, why ? why : "the symbol's value is NULL");
    err = REX_EPROTO_NO_ENTRY;
    goto fail;
  }
  d->in_size = child_u32(f, REX_ATTR_NONE, REX_DEFINE_INPUT_SIZE, UINT32_MAX);
  d->out_size = child_u32(f, REX_ATTR_NONE, REX_DEFINE_OUTPUT_SIZE, UINT32_MAX);
  if (d->in_size > REX_CALL_MAX_FRAME || d->out_size > REX_CALL_MAX_FRAME) {
    snprintf(msg, cap, "%s: frame sizes missing or above %u bytes", d->name, REX_CALL_MAX_FRAME);
    goto fail;
  }
  const char *p = (const char *)ret->data, *end = p + ret->len;
  if (ret->len == 1 && *p == 'v') d->ret = &ffi_type_void;
  else if (!(d->ret = parse_type(&p, end, 0, msg, cap)) || p != end) {
    if (d->ret) snprintf(msg, cap, "trailing characters in the return type code");
    goto fail;
  }
  for (uint32_t i = rex_attr_first(f, REX_ATTR_NONE); i != REX_ATTR_NONE; i = f->attrs[i].next) {
    if (f->attrs[i].tag != REX_DEFINE_PARAM || f->attrs[i].kind != REX_KIND_LIST) continue;
    if (d->nparams == MAX_PARAMS) {
      snprintf(msg, cap, "%s: more than %d parameters", d->name, MAX_PARAMS);
      goto fail;
    }
    struct param *q = &d->params[d->nparams];
    q->kind = (int)child_u32(f, i, REX_PARAM_KIND, 0);
    q->offset = child_u32(f, i, REX_PARAM_OFFSET, UINT32_MAX);
    q->size = child_u32(f, i, REX_PARAM_SIZE, 0);
    if (q->kind == REX_PARAM_VALUE) {
      const struct rex_attr *code = child(f, i, REX_PARAM_FFI, REX_KIND_STRING);
      if (!code) {
        snprintf(msg, cap, "%s: parameter %zu has no type code", d->name, d->nparams);
        goto fail;
      }
      const char *c = (const char *)code->data, *ce = c + code->len;
      q->code = code->len ? *c : '?';
      if (!(q->type = parse_type(&c, ce, 0, msg, cap)) || c != ce) goto fail;
      if ((uint64_t)q->offset + q->size > d->in_size || q->size == 0) {
        snprintf(msg, cap, "%s: parameter %zu (%u bytes at %u) lies outside the %u-byte fixed part", d->name, d->nparams,
                 q->size, q->offset, d->in_size);
        goto fail;
      }
      d->atypes[d->nparams] = q->type;
    } else if (q->kind == REX_PARAM_BUFFER) {
      q->dir = (int)child_u32(f, i, REX_PARAM_DIRECTION, 0);
      q->elem_size = child_u32(f, i, REX_PARAM_ELEM_SIZE, 0);
      q->align = child_u32(f, i, REX_PARAM_ALIGN, 8);
      const struct rex_attr *s = child(f, i, REX_PARAM_STRING, REX_KIND_BOOL);
      q->string = s && s->v.b;
      q->count_kind = (int)child_u32(f, i, REX_PARAM_COUNT_KIND, 0);
      q->count = child_u32(f, i, REX_PARAM_COUNT, 0);
      q->out_offset = child_u32(f, i, REX_PARAM_OUT_OFFSET, UINT32_MAX);
      q->into = child_u32(f, i, REX_PARAM_INTO, 0);
      int align_ok = q->align >= 8 && q->align <= 64 && (q->align & (q->align - 1)) == 0;
      if (q->dir < REX_DIR_IN || q->dir > REX_DIR_INOUT || q->elem_size == 0 || !align_ok ||
          q->count_kind < REX_COUNT_ONE || q->count_kind > REX_COUNT_NUL || (uint64_t)q->offset + 4 > d->in_size ||
          (q->dir != REX_DIR_IN && (uint64_t)q->out_offset + 4 > d->out_size)) {
        snprintf(msg, cap, "%s: parameter %zu: inconsistent buffer definition", d->name, d->nparams);
        goto fail;
      }
      d->atypes[d->nparams] = &ffi_type_pointer;
    } else {
      snprintf(msg, cap, "%s: parameter %zu has unknown kind %d", d->name, d->nparams, q->kind);
      goto fail;
    }
    d->nparams++;
  }
  /* An into parameter is one out pointer, into an earlier or later in/inout byte buffer. */
  for (size_t k = 0; k < d->nparams; k++) {
    const struct param *q = &d->params[k];
    if (q->kind != REX_PARAM_BUFFER || q->into == 0) continue;
    const struct param *s = q->into <= d->nparams ? &d->params[q->into - 1] : NULL;
    if (q->dir != REX_DIR_OUT || q->elem_size != sizeof(int64_t) || q->count_kind != REX_COUNT_ONE || !s || s == q ||
        s->kind != REX_PARAM_BUFFER || s->dir == REX_DIR_OUT || s->elem_size != 1) {
      snprintf(msg, cap, "%s: parameter %zu: into names parameter %u, which is not an in or inout byte buffer", d->name, k, q->into - 1);
      goto fail;
    }
  }
  /* A size-is parameter must be an integer value parameter. */
  for (size_t k = 0; k < d->nparams; k++) {
    struct param *q = &d->params[k];
    if (q->kind != REX_PARAM_BUFFER || q->count_kind != REX_COUNT_PARAM) continue;
    if (q->count >= d->nparams || d->params[q->count].kind != REX_PARAM_VALUE || !strchr("bcCsSiIlL", d->params[q->count].code)) {
      snprintf(msg, cap, "%s: parameter %zu: its size-is parameter %u is not an integer parameter", d->name, k, q->count);
      goto fail;
    }
  }
  if (ffi_prep_cif(&d->cif, FFI_DEFAULT_ABI, (unsigned)d->nparams, d->ret, d->atypes) != FFI_OK) {
    snprintf(msg, cap, "%s: libffi cannot prepare this signature", d->name);
    goto fail;
  }
  /* libffi has now laid out the structs: they must agree with the frame definition. */
  for (size_t k = 0; k < d->nparams; k++) {
    struct param *q = &d->params[k];
    if (q->kind == REX_PARAM_VALUE && q->type->size != q->size) {
      snprintf(msg, cap, "%s: parameter %zu is %u bytes in the frame but libffi lays it out in %zu", d->name, k, q->size,
               q->type->size);
      goto fail;
    }
  }
  if (d->ret != &ffi_type_void && d->ret->size > d->out_size) {
    snprintf(msg, cap, "%s: the return value (%zu bytes) does not fit the %u-byte output fixed part", d->name, d->ret->size,
             d->out_size);
    goto fail;
  }
  int rc = rex__serve_add(d->name, d->in_size, d->out_size, 1, invoke, d);
  if (rc) {
    snprintf(msg, cap, "%s: %s", d->name, rex_last_error());
    goto fail;
  }
  return 0;
fail:
  free(d->name);
  free(d);
  return err;
}

/* ------------------------------------------------------------------ calls */

static uint32_t rd_u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4); /* host order, as frames are (docs/FRAMES.md) */
  return v;
}

/* The value of integer parameter q in the frame; -1 when it is negative or does not fit 32 bits. */
static int64_t int_value(const struct param *q, const uint8_t *in) {
  const uint8_t *p = in + q->offset;
  int64_t v;
  switch (q->code) {
  case 'b': case 'C': v = *p; break;
  case 'c': v = (int8_t)*p; break;
  case 's': { int16_t x; memcpy(&x, p, 2); v = x; break; }
  case 'S': { uint16_t x; memcpy(&x, p, 2); v = x; break; }
  case 'i': { int32_t x; memcpy(&x, p, 4); v = x; break; }
  case 'I': { uint32_t x; memcpy(&x, p, 4); v = x; break; }
  case 'l': { int64_t x; memcpy(&x, p, 8); v = x; break; }
  default: { uint64_t x; memcpy(&x, p, 8); v = x > UINT32_MAX ? -1 : (int64_t)x; break; }
  }
  return v < 0 || v > UINT32_MAX ? -1 : v;
}

static size_t align_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }

static void invoke(void *ctx, uint8_t *in, size_t in_len, struct rex__call *call) {
  struct def *d = ctx;
  void *ptrs[MAX_PARAMS];
  void *avalues[MAX_PARAMS];
  uint32_t lens[MAX_PARAMS];
  void *owned[MAX_PARAMS];
  size_t nowned = 0;
  void *rbuf = NULL;
  size_t pos = d->in_size, out_total = d->out_size;

  /* 1. Check everything before any code runs. */
  for (size_t k = 0; k < d->nparams; k++) {
    const struct param *q = &d->params[k];
    if (q->kind == REX_PARAM_VALUE) continue;
    uint32_t len = rd_u32(in + q->offset);
    lens[k] = len;
    if (len % q->elem_size) {
      rex__call_fail(call, REX_EPROTO_BAD_REQUEST, "%s: parameter %zu: buffer of %u bytes is not a multiple of its %u-byte element (input frame offset %u)",
                     d->name, k, len, q->elem_size, q->offset);
      return;
    }
    uint64_t want;
    switch (q->count_kind) {
    case REX_COUNT_ONE: want = q->elem_size; break;
    case REX_COUNT_VALUE: want = (uint64_t)q->count * q->elem_size; break;
    case REX_COUNT_PARAM: {
      int64_t n = int_value(&d->params[q->count], in);
      if (n < 0) {
        rex__call_fail(call, REX_EPROTO_BAD_REQUEST, "%s: parameter %zu: its size parameter %u is negative or above 2^32", d->name, k, q->count);
        return;
      }
      want = (uint64_t)n * q->elem_size;
      break;
    }
    default: want = len; break; /* REX_COUNT_NUL: the NUL decides, checked below */
    }
    if (want != len || (q->count_kind == REX_COUNT_NUL && len == 0)) {
      rex__call_fail(call, REX_EPROTO_BAD_REQUEST,
                     "%s: parameter %zu: the frame gives a %u-byte buffer but the function will use %llu bytes (input frame offset %u); nothing was called",
                     d->name, k, len, (unsigned long long)want, q->offset);
      return;
    }
    if (q->dir != REX_DIR_IN) {
      out_total = align_up(out_total, q->align) + len;
      if (out_total > REX_CALL_MAX_FRAME) {
        rex__call_fail(call, REX_EPROTO_BAD_REQUEST, "%s: the output frame would exceed %u bytes", d->name, REX_CALL_MAX_FRAME);
        return;
      }
    }
    if (q->dir == REX_DIR_OUT) continue;
    size_t at = align_up(pos, q->align);
    if (at > in_len || in_len - at < len) {
      rex__call_fail(call, REX_EPROTO_BAD_REQUEST, "%s: parameter %zu: its %u-byte data section at offset %zu runs past the end of the %zu-byte input frame",
                     d->name, k, len, at, in_len);
      return;
    }
    ptrs[k] = in + at;
    pos = at + len;
    if (q->string && !memchr(in + at, 0, len)) {
      rex__call_fail(call, REX_EPROTO_BAD_REQUEST, "%s: parameter %zu: the string has no NUL inside its %u-byte buffer", d->name, k, len);
      return;
    }
    if (q->string && q->count_kind == REX_COUNT_NUL && in[at + len - 1] != 0) {
      rex__call_fail(call, REX_EPROTO_BAD_REQUEST, "%s: parameter %zu: the string does not end at the end of its buffer", d->name, k);
      return;
    }
  }
  if (pos != in_len) {
    rex__call_fail(call, REX_EPROTO_BAD_REQUEST, "%s: the input frame is %zu bytes, but its definition and length words make it %zu; nothing was called",
                   d->name, in_len, pos);
    return;
  }

  /* 2. Arguments. */
  for (size_t k = 0; k < d->nparams; k++) {
    const struct param *q = &d->params[k];
    if (q->kind == REX_PARAM_VALUE) {
      avalues[k] = in + q->offset;
      continue;
    }
    if (q->dir == REX_DIR_OUT) {
      ptrs[k] = calloc(1, lens[k] ? lens[k] : 1);
      if (!ptrs[k]) {
        rex__call_fail(call, REX_EPROTO_INTERNAL, "%s: out of memory for a %u-byte out buffer", d->name, lens[k]);
        goto done;
      }
      owned[nowned++] = ptrs[k];
    }
    avalues[k] = &ptrs[k];
  }
  /* libffi widens small integer returns to a full register: at least 16 bytes, aligned. */
  size_t rsize = align_up(d->ret->size > 16 ? d->ret->size : 16, 16);
  uint8_t *out = calloc(1, out_total ? out_total : 1);
  rbuf = aligned_alloc(16, rsize);
  if (!out || !rbuf) {
    free(out);
    rex__call_fail(call, REX_EPROTO_INTERNAL, "%s: out of memory for the output frame", d->name);
    goto done;
  }
  memset(rbuf, 0, rsize);

  /* 3. Enter the code. */
  rex__call_ready(call);
  ffi_call(&d->cif, FFI_FN(d->fn), rbuf, avalues);

  /* 4. The output frame: return value at offset 0, then length words and data sections. */
  if (d->ret != &ffi_type_void) memcpy(out, rbuf, d->ret->size); /* little-endian: the low bytes of a widened integer */
  for (size_t k = 0; k < d->nparams; k++) {
    /* A pointer into a string goes back as its offset there: the address means nothing to the caller. */
    const struct param *q = &d->params[k];
    if (q->kind != REX_PARAM_BUFFER || q->into == 0) continue;
    const char *p, *base = ptrs[q->into - 1];
    memcpy(&p, ptrs[k], sizeof p);
    int64_t off = p && (uintptr_t)p >= (uintptr_t)base && (uintptr_t)p - (uintptr_t)base <= lens[q->into - 1]
                      ? (int64_t)((uintptr_t)p - (uintptr_t)base)
                      : -1;
    memcpy(ptrs[k], &off, sizeof off);
  }
  size_t opos = d->out_size;
  for (size_t k = 0; k < d->nparams; k++) {
    const struct param *q = &d->params[k];
    if (q->kind != REX_PARAM_BUFFER || q->dir == REX_DIR_IN) continue;
    memcpy(out + q->out_offset, &lens[k], 4);
    size_t at = align_up(opos, q->align);
    memcpy(out + at, ptrs[k], lens[k]);
    opos = at + lens[k];
  }
  call->out = out;
  call->out_len = out_total;
done:
  free(rbuf);
  for (size_t i = 0; i < nowned; i++) free(owned[i]);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: rex_callctl OBJECT   (started by rexd with $REX_CALL_FD)\n");
    return 2;
  }
  const char *s = getenv("REX_CALL_FD");
  char *end = NULL;
  long fd = s && *s ? strtol(s, &end, 10) : -1;
  if (fd < 0 || fd > 65535 || !end || *end) {
    fprintf(stderr, "rex_callctl: $REX_CALL_FD is not set: rex_callctl is started by rexd, not by hand\n");
    return 2;
  }
  object_path = argv[1];
  /* RTLD_NOW: an unresolved symbol fails here, at start, not in the middle of a call. */
  object = dlopen(object_path, RTLD_NOW | RTLD_LOCAL);
  if (!object) {
    fprintf(stderr, "rex_callctl: cannot load %s: %s\n", object_path, dlerror());
    return 3;
  }
  int rc = rex__serve_fd((int)fd, define);
  if (rc) {
    fprintf(stderr, "rex_callctl: %s\n", rex_last_error());
    return 4;
  }
  return 0;
}
