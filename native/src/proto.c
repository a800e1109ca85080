/*
 * proto.c: frames and attributes of wire protocol v1 (docs/PROTOCOL.md,
 * sections 2 and 2.1), the twin of src/protocol/frame.ts.
 *
 * The decoder is fed bytes from the network: it reads the header's length
 * first and refuses it before looking further, checks every length against
 * what is left of its container before reading, recurses at most
 * REX_PROTO_MAX_DEPTH levels and never allocates: attributes go into the
 * caller's arena and point into the caller's buffer. The order of its checks
 * follows frame.ts, so both give the same verdict on the same bytes
 * (test/native/codec.test.ts compares them on random input).
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

/* rex.h states the call frame limit as a number, without the protocol constants it derives from. */
_Static_assert(REX_CALL_MAX_FRAME == REX_PROTO_MAX_PAYLOAD - 1024u, "REX_CALL_MAX_FRAME in rex.h must be REX_PROTO_MAX_PAYLOAD - 1024");

/* Every message type by name, from the table wire.h's generated REX_MSG_TYPES carries (as msgTypeName of src/protocol/messages.ts). */
static const char *type_name(uint16_t type) {
  switch (type) {
#define X(name, value) \
  case REX_MSG_##name: return #name;
    REX_MSG_TYPES(X)
#undef X
  default: return NULL;
  }
}

int rex_utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    /* The ranges of the second byte exclude overlong forms (E0, F0), UTF-16
       surrogates (ED) and code points above U+10FFFF (F4), as the WHATWG
       decoder that frame.ts uses does. */
    size_t need;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else
      return 0;
    if (n - i - 1 < need) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
      if (s[i + k] < 0x80 || s[i + k] > 0xbf) return 0;
    i += need + 1;
  }
  return 1;
}

void rex_frame_init(struct rex_frame *f, struct rex_attr *arena, size_t cap) {
  memset(f, 0, sizeof *f);
  f->attrs = arena;
  f->cap = arena ? cap : 0;
  f->last[0] = REX_ATTR_NONE;
}

/* ------------------------------------------------------------------ decoding */

struct dec {
  struct rex_frame *f;
  const uint8_t *p; /* payload */
  size_t count;     /* attributes seen, all levels (the MAX_ATTRS budget) */
};

__attribute__((format(printf, 4, 5))) static int fail(struct rex_frame *f, int code, size_t off, const char *fmt,
                                                      ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->err, sizeof f->err, fmt, ap);
  va_end(ap);
  f->err_offset = off;
  return code;
}

static int decode_attrs(struct dec *d, size_t start, size_t end, unsigned depth, uint32_t parent) {
  struct rex_frame *f = d->f;
  if (depth > REX_PROTO_MAX_DEPTH)
    return fail(f, REX_EPROTO_MALFORMED, start, "lists nested deeper than %u at payload offset %zu",
                REX_PROTO_MAX_DEPTH, start);
  uint32_t prev = REX_ATTR_NONE;
  size_t off = start;
  while (off < end) {
    if (end - off < REX_PROTO_ATTR_HEADER_SIZE)
      return fail(f, REX_EPROTO_MALFORMED, off, "truncated attribute header (%zu bytes left) at payload offset %zu",
                  end - off, off);
    if (++d->count > REX_PROTO_MAX_ATTRS)
      return fail(f, REX_EPROTO_MALFORMED, off, "more than %u attributes at payload offset %zu", REX_PROTO_MAX_ATTRS,
                  off);
    const uint8_t *h = d->p + off;
    uint16_t tag = rex__rd16(h);
    uint8_t kind = h[2];
    uint32_t len = rex__rd32(h + 3);
    size_t at = off;
    off += REX_PROTO_ATTR_HEADER_SIZE;
    if (len > end - off)
      return fail(f, REX_EPROTO_MALFORMED, at,
                  "attribute %u length %u runs past its container (%zu bytes left) at payload offset %zu", tag, len,
                  end - off, at);
    if (f->nattrs >= f->cap) return fail(f, REX_ENOSPC, at, "attribute arena of %zu entries is full", f->cap);

    uint32_t idx = (uint32_t)f->nattrs++;
    struct rex_attr *a = &f->attrs[idx];
    memset(a, 0, sizeof *a);
    a->tag = tag;
    a->kind = kind;
    a->depth = (uint8_t)depth;
    a->len = len;
    a->parent = parent;
    a->next = REX_ATTR_NONE;
    a->data = d->p + off;
    if (prev != REX_ATTR_NONE) f->attrs[prev].next = idx;
    prev = idx;
    if (parent != REX_ATTR_NONE) f->attrs[parent].count++;

    const uint8_t *v = d->p + off;
    switch (kind) {
    case REX_KIND_UINT:
    case REX_KIND_INT:
      if (len != 1 && len != 2 && len != 4 && len != 8)
        return fail(f, REX_EPROTO_MALFORMED, at, "%s attribute %u has length %u (expected 1, 2, 4 or 8) at payload offset %zu",
                    kind == REX_KIND_UINT ? "uint" : "int", tag, len, at);
      {
        uint64_t u = len == 1 ? v[0] : len == 2 ? rex__rd16(v) : len == 4 ? rex__rd32(v) : rex__rd64(v);
        if (kind == REX_KIND_UINT) a->v.u = u;
        else {
          /* Sign-extend from the value's width, then reinterpret: int64_t is
             two's complement by definition, and memcpy avoids the
             implementation-defined conversion of out-of-range values. */
          unsigned bits = len * 8;
          uint64_t sign = (uint64_t)1 << (bits - 1);
          if (bits < 64 && (u & sign)) u |= ~((sign << 1) - 1);
          memcpy(&a->v.i, &u, sizeof u);
        }
      }
      break;
    case REX_KIND_F64:
      if (len != 8)
        return fail(f, REX_EPROTO_MALFORMED, at, "f64 attribute %u has length %u (expected 8) at payload offset %zu", tag,
                    len, at);
      {
        uint64_t bits = rex__rd64(v);
        memcpy(&a->v.f, &bits, sizeof bits);
      }
      break;
    case REX_KIND_STRING:
      if (memchr(v, 0, len))
        return fail(f, REX_EPROTO_MALFORMED, at, "string attribute %u contains a NUL byte at payload offset %zu", tag, at);
      if (!rex_utf8_valid(v, len))
        return fail(f, REX_EPROTO_MALFORMED, at, "string attribute %u is not valid UTF-8 at payload offset %zu", tag, at);
      break;
    case REX_KIND_BYTES:
      break;
    case REX_KIND_BOOL:
      if (len != 1 || (v[0] != 0 && v[0] != 1))
        return fail(f, REX_EPROTO_MALFORMED, at, "bool attribute %u must be one byte 0 or 1 at payload offset %zu", tag,
                    at);
      a->v.b = v[0];
      break;
    case REX_KIND_LIST: {
      int rc = decode_attrs(d, off, off + len, depth + 1, idx);
      if (rc) return rc;
      break;
    }
    default:
      return fail(f, REX_EPROTO_MALFORMED, at, "attribute %u has unknown kind %u at payload offset %zu", tag, kind, at);
    }
    off += len;
  }
  return 0;
}

int rex_frame_decode(const uint8_t *buf, size_t len, size_t max_payload, struct rex_frame *out, size_t *consumed) {
  if (!out || (!buf && len)) return REX_EINVAL;
  if (max_payload == 0) max_payload = REX_PROTO_MAX_PAYLOAD;
  out->nattrs = 0;
  out->err[0] = '\0';
  out->err_offset = 0;
  out->payload = NULL;
  if (len < REX_PROTO_HEADER_SIZE) return REX_EAGAIN;
  out->length = rex__rd32(buf);
  out->type = rex__rd16(buf + 4);
  out->flags = rex__rd16(buf + 6);
  out->stream = rex__rd32(buf + 8);
  const char *name = type_name(out->type);
  char hexname[8];
  if (!name) {
    snprintf(hexname, sizeof hexname, "0x%04x", out->type);
    name = hexname;
  }
  /* Refuse an oversized frame from its header alone, before buffering anything. */
  if (out->length > max_payload)
    return fail(out, REX_EPROTO_TOO_BIG, 0, "%s frame of %u bytes exceeds the limit of %zu", name, out->length,
                max_payload);
  if (out->flags & ~REX_FLAGS_KNOWN)
    return fail(out, REX_EPROTO_MALFORMED, 0, "reserved flag bits 0x%x set in %s frame",
                (unsigned)(out->flags & ~REX_FLAGS_KNOWN), name);
  if (len - REX_PROTO_HEADER_SIZE < out->length) return REX_EAGAIN;
  out->payload = buf + REX_PROTO_HEADER_SIZE;
  struct dec d = {out, out->payload, 0};
  int rc = decode_attrs(&d, 0, out->length, 1, REX_ATTR_NONE);
  if (rc) return rc;
  if (consumed) *consumed = REX_PROTO_HEADER_SIZE + (size_t)out->length;
  return 0;
}

/* ------------------------------------------------------------------ building */

static int build_fail(struct rex_frame *f, int err) {
  if (!f->build_err) f->build_err = err;
  return f->build_err;
}

void rex_frame_start(struct rex_frame *f, uint16_t type, uint16_t flags, uint32_t stream) {
  f->type = type;
  f->flags = flags;
  f->stream = stream;
  f->length = 0;
  f->payload = NULL;
  f->nattrs = 0;
  f->build_err = 0;
  f->nopen = 0;
  f->last[0] = REX_ATTR_NONE;
  f->err[0] = '\0';
  f->err_offset = 0;
}

/* Appends an attribute at the current level; its value is set by the caller. */
static struct rex_attr *push(struct rex_frame *f, uint16_t tag, uint8_t kind, size_t len) {
  if (f->build_err) return NULL;
  if (f->nattrs >= REX_PROTO_MAX_ATTRS) {
    build_fail(f, REX_EINVAL); /* a receiver would refuse the frame as MALFORMED */
    return NULL;
  }
  if (f->nattrs >= f->cap) {
    build_fail(f, REX_ENOSPC);
    return NULL;
  }
  size_t add = REX_PROTO_ATTR_HEADER_SIZE + len;
  if (len > REX_PROTO_MAX_PAYLOAD || f->length + add > REX_PROTO_MAX_PAYLOAD) {
    build_fail(f, REX_EPROTO_TOO_BIG);
    return NULL;
  }
  uint32_t idx = (uint32_t)f->nattrs++;
  struct rex_attr *a = &f->attrs[idx];
  memset(a, 0, sizeof *a);
  a->tag = tag;
  a->kind = kind;
  a->len = (uint32_t)len;
  a->depth = (uint8_t)(f->nopen + 1);
  a->parent = f->nopen ? f->open[f->nopen - 1] : REX_ATTR_NONE;
  a->next = REX_ATTR_NONE;
  if (f->last[f->nopen] != REX_ATTR_NONE) f->attrs[f->last[f->nopen]].next = idx;
  f->last[f->nopen] = idx;
  if (a->parent != REX_ATTR_NONE) f->attrs[a->parent].count++;
  /* Every open list grows by this attribute; bounded by the payload limit above. */
  for (unsigned k = 0; k < f->nopen; k++) f->attrs[f->open[k]].len += (uint32_t)add;
  f->length += (uint32_t)add;
  return a;
}

int rex_attr_uint(struct rex_frame *f, uint16_t tag, uint64_t v) {
  size_t w = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffu ? 4 : 8;
  struct rex_attr *a = push(f, tag, REX_KIND_UINT, w);
  if (!a) return f->build_err;
  a->v.u = v;
  return 0;
}

int rex_attr_int(struct rex_frame *f, uint16_t tag, int64_t v) {
  size_t w = (v >= INT8_MIN && v <= INT8_MAX) ? 1 : (v >= INT16_MIN && v <= INT16_MAX) ? 2
           : (v >= INT32_MIN && v <= INT32_MAX) ? 4 : 8;
  struct rex_attr *a = push(f, tag, REX_KIND_INT, w);
  if (!a) return f->build_err;
  a->v.i = v;
  return 0;
}

int rex_attr_f64(struct rex_frame *f, uint16_t tag, double v) {
  struct rex_attr *a = push(f, tag, REX_KIND_F64, 8);
  if (!a) return f->build_err;
  a->v.f = v;
  return 0;
}

int rex_attr_bool(struct rex_frame *f, uint16_t tag, int v) {
  struct rex_attr *a = push(f, tag, REX_KIND_BOOL, 1);
  if (!a) return f->build_err;
  a->v.b = v ? 1 : 0;
  return 0;
}

int rex_attr_stringn(struct rex_frame *f, uint16_t tag, const char *s, size_t n) {
  if (f->build_err) return f->build_err;
  if ((!s && n) || (n && memchr(s, 0, n)) || !rex_utf8_valid((const uint8_t *)s, n)) return build_fail(f, REX_EINVAL);
  struct rex_attr *a = push(f, tag, REX_KIND_STRING, n);
  if (!a) return f->build_err;
  a->data = (const uint8_t *)s;
  return 0;
}

int rex_attr_string(struct rex_frame *f, uint16_t tag, const char *s) {
  if (!s) return build_fail(f, REX_EINVAL);
  return rex_attr_stringn(f, tag, s, strlen(s));
}

int rex_attr_bytes(struct rex_frame *f, uint16_t tag, const void *p, size_t n) {
  if (!p && n) return build_fail(f, REX_EINVAL);
  struct rex_attr *a = push(f, tag, REX_KIND_BYTES, n);
  if (!a) return f->build_err;
  a->data = p;
  return 0;
}

int rex_attr_list_begin(struct rex_frame *f, uint16_t tag) {
  if (f->build_err) return f->build_err;
  /* A list at the deepest level would hold attributes one level too deep:
     even an empty one is refused by receivers (as frame.ts does). */
  if (f->nopen + 1 >= REX_PROTO_MAX_DEPTH) return build_fail(f, REX_EINVAL);
  struct rex_attr *a = push(f, tag, REX_KIND_LIST, 0);
  if (!a) return f->build_err;
  uint32_t idx = (uint32_t)(a - f->attrs);
  f->open[f->nopen++] = idx;
  f->last[f->nopen] = REX_ATTR_NONE;
  return 0;
}

int rex_attr_list_end(struct rex_frame *f) {
  if (f->build_err) return f->build_err;
  if (f->nopen == 0) return build_fail(f, REX_EINVAL);
  f->nopen--;
  return 0;
}

/* ------------------------------------------------------------------ encoding */

struct enc {
  const struct rex_frame *f;
  uint8_t *buf;
  size_t cap;
  size_t pos;
  size_t visited; /* guards against cycles in hand-made next links */
};

static int width_ok(uint32_t len) { return len == 1 || len == 2 || len == 4 || len == 8; }

static int encode_level(struct enc *e, uint32_t first, uint32_t parent, unsigned depth) {
  const struct rex_frame *f = e->f;
  if (depth > REX_PROTO_MAX_DEPTH) return REX_EINVAL;
  uint32_t n = 0;
  for (uint32_t i = first; i != REX_ATTR_NONE; i = f->attrs[i].next) {
    if (i >= f->nattrs || ++e->visited > f->nattrs) return REX_EINVAL;
    const struct rex_attr *a = &f->attrs[i];
    if (a->parent != parent) return REX_EINVAL;
    n++;
    if (e->cap - e->pos < REX_PROTO_ATTR_HEADER_SIZE || e->cap - e->pos - REX_PROTO_ATTR_HEADER_SIZE < a->len)
      return REX_ENOSPC;
    uint8_t *h = e->buf + e->pos;
    rex__wr16(h, a->tag);
    h[2] = a->kind;
    rex__wr32(h + 3, a->len);
    e->pos += REX_PROTO_ATTR_HEADER_SIZE;
    uint8_t *v = e->buf + e->pos;
    switch (a->kind) {
    case REX_KIND_UINT:
    case REX_KIND_INT: {
      if (!width_ok(a->len)) return REX_EINVAL;
      uint64_t u = a->v.u;
      if (a->len < 8) {
        unsigned bits = a->len * 8;
        if (a->kind == REX_KIND_UINT) {
          if (u >> bits) return REX_EINVAL;
        } else {
          int64_t lim = (int64_t)1 << (bits - 1);
          if (a->v.i < -lim || a->v.i >= lim) return REX_EINVAL;
        }
      }
      for (uint32_t k = 0; k < a->len; k++) v[k] = (uint8_t)(u >> (8 * (a->len - 1 - k)));
      break;
    }
    case REX_KIND_F64: {
      if (a->len != 8) return REX_EINVAL;
      uint64_t bits;
      memcpy(&bits, &a->v.f, sizeof bits);
      rex__wr64(v, bits);
      break;
    }
    case REX_KIND_STRING:
      if (a->len && (!a->data || memchr(a->data, 0, a->len) || !rex_utf8_valid(a->data, a->len))) return REX_EINVAL;
      if (a->len) memcpy(v, a->data, a->len);
      break;
    case REX_KIND_BYTES:
      if (a->len && !a->data) return REX_EINVAL;
      if (a->len) memcpy(v, a->data, a->len);
      break;
    case REX_KIND_BOOL:
      if (a->len != 1 || (a->v.b != 0 && a->v.b != 1)) return REX_EINVAL;
      v[0] = (uint8_t)a->v.b;
      break;
    case REX_KIND_LIST: {
      size_t start = e->pos;
      int rc = encode_level(e, a->count ? i + 1 : REX_ATTR_NONE, i, depth + 1);
      if (rc) return rc;
      if (e->pos - start != a->len) return REX_EINVAL;
      continue; /* pos already advanced by the children */
    }
    default:
      return REX_EINVAL;
    }
    e->pos += a->len;
  }
  if (parent != REX_ATTR_NONE && n != f->attrs[parent].count) return REX_EINVAL;
  return 0;
}

int rex_frame_encode(const struct rex_frame *f, uint8_t *buf, size_t cap, size_t *len) {
  if (!f || (!buf && cap)) return REX_EINVAL;
  if (f->build_err) return f->build_err;
  if (f->nopen) return REX_EINVAL;
  if (f->nattrs > f->cap || (f->nattrs && !f->attrs)) return REX_EINVAL;
  if (cap < REX_PROTO_HEADER_SIZE) return REX_ENOSPC;
  struct enc e = {f, buf, cap, REX_PROTO_HEADER_SIZE, 0};
  int rc = encode_level(&e, f->nattrs ? 0 : REX_ATTR_NONE, REX_ATTR_NONE, 1);
  if (rc) return rc;
  if (e.visited != f->nattrs) return REX_EINVAL; /* attributes not reachable from the top level */
  size_t payload = e.pos - REX_PROTO_HEADER_SIZE;
  if (payload > REX_PROTO_MAX_PAYLOAD) return REX_EPROTO_TOO_BIG;
  rex__wr32(buf, (uint32_t)payload);
  rex__wr16(buf + 4, f->type);
  rex__wr16(buf + 6, f->flags);
  rex__wr32(buf + 8, f->stream);
  if (len) *len = e.pos;
  return 0;
}

/* ------------------------------------------------------------------ reading */

uint32_t rex_attr_first(const struct rex_frame *f, uint32_t parent) {
  if (parent == REX_ATTR_NONE) return f->nattrs ? 0 : REX_ATTR_NONE;
  if (parent >= f->nattrs || f->attrs[parent].kind != REX_KIND_LIST || !f->attrs[parent].count) return REX_ATTR_NONE;
  return parent + 1;
}

const struct rex_attr *rex_attr_find(const struct rex_frame *f, uint32_t parent, uint16_t tag) {
  for (uint32_t i = rex_attr_first(f, parent); i != REX_ATTR_NONE && i < f->nattrs; i = f->attrs[i].next)
    if (f->attrs[i].tag == tag) return &f->attrs[i];
  return NULL;
}
