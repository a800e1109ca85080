/*
 * test_codec.c: builders, encoder and decoder beyond the shared vectors:
 * round trips, each MALFORMED rule with its message, the limits at and one
 * past their values, and the encoder's refusals.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "runner.h"

static struct rex_attr arena[REX_PROTO_MAX_ATTRS + 8];
static struct rex_attr arena2[REX_PROTO_MAX_ATTRS + 8];

/* Builds a raw frame: header plus payload bytes (length given separately to lie on purpose). */
static size_t raw_frame(uint8_t *out, uint32_t len, uint16_t type, uint16_t flags, uint32_t stream, const void *payload,
                        size_t n) {
  rex__wr32(out, len);
  rex__wr16(out + 4, type);
  rex__wr16(out + 6, flags);
  rex__wr32(out + 8, stream);
  if (n) memcpy(out + 12, payload, n);
  return 12 + n;
}

/* Raw attribute header plus value; returns bytes written. */
static size_t raw_attr(uint8_t *out, uint16_t tag, uint8_t kind, uint32_t len, const void *v, size_t n) {
  rex__wr16(out, tag);
  out[2] = kind;
  rex__wr32(out + 3, len);
  if (n) memcpy(out + 7, v, n);
  return 7 + n;
}

static int decode(const uint8_t *b, size_t n, struct rex_frame *f) {
  rex_frame_init(f, arena2, REX_PROTO_MAX_ATTRS);
  size_t used;
  return rex_frame_decode(b, n, 0, f, &used);
}

TEST_IMPL(codec_builders_roundtrip) {
  struct rex_frame f, g;
  uint8_t buf[512];
  static const uint8_t blob[] = {0, 1, 2, 0xff};
  size_t n;
  rex_frame_init(&f, arena, 64);
  rex_frame_start(&f, REX_MSG_LOAD, REX_FLAG_END, 7);
  ASSERT_EQ(rex_attr_string(&f, 1, "alpha"), 0);
  ASSERT_EQ(rex_attr_f64(&f, 2, 0.25), 0);
  ASSERT_EQ(rex_attr_list_begin(&f, 3), 0);
  ASSERT_EQ(rex_attr_f64(&f, 1, 0.5), 0);
  ASSERT_EQ(rex_attr_f64(&f, 1, NAN), 0);
  ASSERT_EQ(rex_attr_list_begin(&f, 9), 0);
  ASSERT_EQ(rex_attr_list_end(&f), 0);
  ASSERT_EQ(rex_attr_list_end(&f), 0);
  ASSERT_EQ(rex_attr_uint(&f, 4, 70000), 0);
  ASSERT_EQ(rex_attr_int(&f, 5, -2), 0);
  ASSERT_EQ(rex_attr_int(&f, 6, INT64_MIN), 0);
  ASSERT_EQ(rex_attr_uint(&f, 7, UINT64_MAX), 0);
  ASSERT_EQ(rex_attr_bool(&f, 8, 5), 0);
  ASSERT_EQ(rex_attr_bytes(&f, 9, blob, sizeof blob), 0);
  ASSERT_EQ(rex_attr_bytes(&f, 10, NULL, 0), 0);
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), 0);
  ASSERT_EQ(n, 12 + f.length);

  ASSERT_EQ(decode(buf, n, &g), 0);
  ASSERT_EQ(g.type, REX_MSG_LOAD);
  ASSERT_EQ(g.flags, REX_FLAG_END);
  ASSERT_EQ(g.stream, 7);
  ASSERT_EQ(g.nattrs, f.nattrs);
  ASSERT_EQ(g.nattrs, 13);
  for (size_t i = 0; i < g.nattrs; i++) {
    ASSERT_EQ(g.attrs[i].tag, f.attrs[i].tag);
    ASSERT_EQ(g.attrs[i].kind, f.attrs[i].kind);
    ASSERT_EQ(g.attrs[i].len, f.attrs[i].len);
    ASSERT_EQ(g.attrs[i].parent, f.attrs[i].parent);
    ASSERT_EQ(g.attrs[i].next, f.attrs[i].next);
    ASSERT_EQ(g.attrs[i].count, f.attrs[i].count);
    ASSERT_EQ(g.attrs[i].depth, f.attrs[i].depth);
  }
  const struct rex_attr *a = rex_attr_find(&g, REX_ATTR_NONE, 1);
  ASSERT(a && a->len == 5 && !memcmp(a->data, "alpha", 5));
  ASSERT(rex_attr_find(&g, REX_ATTR_NONE, 2)->v.f == 0.25);
  const struct rex_attr *list = rex_attr_find(&g, REX_ATTR_NONE, 3);
  ASSERT(list && list->kind == REX_KIND_LIST && list->count == 3);
  uint32_t li = (uint32_t)(list - g.attrs);
  ASSERT(rex_attr_find(&g, li, 1)->v.f == 0.5);
  ASSERT(isnan(g.attrs[rex_attr_find(&g, li, 1)->next].v.f));
  ASSERT_EQ(rex_attr_find(&g, li, 9)->count, 0);
  ASSERT_EQ(rex_attr_find(&g, REX_ATTR_NONE, 4)->v.u, 70000);
  ASSERT_EQ(rex_attr_find(&g, REX_ATTR_NONE, 4)->len, 4);
  ASSERT_EQ(rex_attr_find(&g, REX_ATTR_NONE, 5)->v.i, -2);
  ASSERT(rex_attr_find(&g, REX_ATTR_NONE, 6)->v.i == INT64_MIN);
  ASSERT(rex_attr_find(&g, REX_ATTR_NONE, 7)->v.u == UINT64_MAX);
  ASSERT_EQ(rex_attr_find(&g, REX_ATTR_NONE, 8)->v.b, 1);
  ASSERT(!memcmp(rex_attr_find(&g, REX_ATTR_NONE, 9)->data, blob, sizeof blob));
  ASSERT_EQ(rex_attr_find(&g, REX_ATTR_NONE, 10)->len, 0);
  ASSERT(rex_attr_find(&g, REX_ATTR_NONE, 11) == NULL);

  /* decode -> encode gives the same bytes */
  uint8_t again[512];
  size_t m;
  ASSERT_EQ(rex_frame_encode(&g, again, sizeof again, &m), 0);
  ASSERT(m == n && !memcmp(again, buf, n));
}

TEST_IMPL(codec_minimal_widths) {
  static const struct {
    uint64_t v;
    uint32_t w;
  } u[] = {{0, 1}, {255, 1}, {256, 2}, {65535, 2}, {65536, 4}, {0xffffffffu, 4}, {0x100000000ull, 8}, {UINT64_MAX, 8}};
  static const struct {
    int64_t v;
    uint32_t w;
  } s[] = {{-128, 1}, {127, 1}, {128, 2}, {-129, 2}, {-32768, 2}, {32768, 4}, {INT32_MIN, 4},
           {(int64_t)INT32_MAX + 1, 8}, {INT64_MIN, 8}, {INT64_MAX, 8}};
  struct rex_frame f, g;
  uint8_t buf[256];
  size_t n;
  rex_frame_init(&f, arena, 32);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  for (size_t i = 0; i < sizeof u / sizeof *u; i++) rex_attr_uint(&f, (uint16_t)i, u[i].v);
  for (size_t i = 0; i < sizeof s / sizeof *s; i++) rex_attr_int(&f, (uint16_t)(100 + i), s[i].v);
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), 0);
  ASSERT_EQ(decode(buf, n, &g), 0);
  for (size_t i = 0; i < sizeof u / sizeof *u; i++) {
    const struct rex_attr *a = rex_attr_find(&g, REX_ATTR_NONE, (uint16_t)i);
    if (a->len != u[i].w || a->v.u != u[i].v) FAIL("uint %llu: width %u", (unsigned long long)u[i].v, a->len);
  }
  for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
    const struct rex_attr *a = rex_attr_find(&g, REX_ATTR_NONE, (uint16_t)(100 + i));
    if (a->len != s[i].w || a->v.i != s[i].v) FAIL("int %lld: width %u value %lld", (long long)s[i].v, a->len, (long long)a->v.i);
  }
}

/* One malformed payload, its expected message fragment and payload offset. */
struct bad_case {
  const char *name;
  uint8_t payload[64];
  size_t n;
  const char *msg;
  size_t offset;
};

TEST_IMPL(codec_malformed_rules) {
  static const struct bad_case cases[] = {
      {"unknown kind", {0, 1, 8, 0, 0, 0, 1, 0}, 8, "unknown kind 8", 0},
      {"kind zero", {0, 1, 0, 0, 0, 0, 0}, 7, "unknown kind 0", 0},
      {"uint width 3", {0, 1, 1, 0, 0, 0, 3, 1, 2, 3}, 10, "uint attribute 1 has length 3", 0},
      {"int width 0", {0, 1, 2, 0, 0, 0, 0}, 7, "int attribute 1 has length 0", 0},
      {"f64 width 7", {0, 2, 3, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}, 14, "f64 attribute 2 has length 7", 0},
      {"bool value 2", {0, 1, 7, 0, 0, 0, 1, 2}, 8, "bool attribute 1 must be one byte 0 or 1", 0},
      {"bool width 0", {0, 1, 7, 0, 0, 0, 0}, 7, "bool attribute 1 must be one byte", 0},
      {"string NUL", {0, 1, 4, 0, 0, 0, 3, 'a', 0, 'b'}, 10, "contains a NUL byte", 0},
      {"string bad UTF-8", {0, 1, 4, 0, 0, 0, 2, 0xc3, 0x28}, 9, "not valid UTF-8", 0},
      {"string above U+10FFFF", {0, 1, 4, 0, 0, 0, 4, 0xf4, 0x90, 0x80, 0x80}, 11, "not valid UTF-8", 0},
      {"string truncated sequence", {0, 1, 4, 0, 0, 0, 2, 0xe2, 0x9c}, 9, "not valid UTF-8", 0},
      {"second attribute runs past", {0, 1, 7, 0, 0, 0, 1, 1, 0, 2, 5, 0, 0, 0, 9, 1}, 16,
       "attribute 2 length 9 runs past its container (1 bytes left) at payload offset 8", 8},
      {"truncated header after one", {0, 1, 7, 0, 0, 0, 1, 1, 0, 2, 5}, 11, "truncated attribute header (3 bytes left)", 8},
      {"list child past list", {0, 1, 6, 0, 0, 0, 8, 0, 2, 5, 0, 0, 0, 2, 0, 0, 0}, 17, "attribute 2 length 2 runs past", 7},
      {"nested malformed kind", {0, 1, 6, 0, 0, 0, 7, 0, 2, 9, 0, 0, 0, 0}, 14, "attribute 2 has unknown kind 9", 7},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    uint8_t buf[128];
    struct rex_frame f;
    size_t n = raw_frame(buf, (uint32_t)cases[i].n, REX_MSG_PING, 0, 1, cases[i].payload, cases[i].n);
    int rc = decode(buf, n, &f);
    if (rc != REX_EPROTO_MALFORMED) FAIL("%s: %s instead of MALFORMED", cases[i].name, rex_err_name(rc));
    if (!strstr(f.err, cases[i].msg)) FAIL("%s: message \"%s\" lacks \"%s\"", cases[i].name, f.err, cases[i].msg);
    if (f.err_offset != cases[i].offset) FAIL("%s: offset %zu, expected %zu", cases[i].name, f.err_offset, cases[i].offset);
  }
  /* reserved flags, each bit */
  for (unsigned bit = 1; bit < 16; bit++) {
    uint8_t buf[12];
    struct rex_frame f;
    raw_frame(buf, 0, REX_MSG_PING, (uint16_t)(1u << bit), 1, NULL, 0);
    ASSERT_EQ(decode(buf, 12, &f), REX_EPROTO_MALFORMED);
    ASSERT_STR_CONTAINS(f.err, "reserved flag bits");
    ASSERT_STR_CONTAINS(f.err, "PING frame");
  }
}

TEST_IMPL(codec_error_order) {
  /* The same precedence as frame.ts: TOO_BIG before reserved flags, flags
     before waiting for the payload, so that both decoders agree on every input. */
  uint8_t buf[12];
  struct rex_frame f;
  raw_frame(buf, REX_PROTO_MAX_PAYLOAD + 1, 0x7777, 0xfffe, 1, NULL, 0);
  ASSERT_EQ(decode(buf, 12, &f), REX_EPROTO_TOO_BIG);
  ASSERT_STR_CONTAINS(f.err, "0x7777 frame of 1048577 bytes exceeds the limit of 1048576");
  raw_frame(buf, 100, REX_MSG_PING, 2, 1, NULL, 0);
  ASSERT_EQ(decode(buf, 12, &f), REX_EPROTO_MALFORMED);
  raw_frame(buf, 100, REX_MSG_PING, 1, 1, NULL, 0);
  ASSERT_EQ(decode(buf, 12, &f), REX_EAGAIN);
  ASSERT_EQ(decode(buf, 11, &f), REX_EAGAIN);
}

TEST_IMPL(codec_limit_payload) {
  size_t cap = 12 + REX_PROTO_MAX_PAYLOAD + 1;
  uint8_t *buf = calloc(1, cap);
  ASSERT(buf);
  struct rex_frame f;
  size_t used;
  /* exactly 1 MiB: one bytes attribute filling it */
  raw_attr(buf + 12, 1, REX_KIND_BYTES, REX_PROTO_MAX_PAYLOAD - 7, NULL, 0);
  raw_frame(buf, REX_PROTO_MAX_PAYLOAD, REX_MSG_PING, 0, 1, NULL, 0);
  rex_frame_init(&f, arena, REX_PROTO_MAX_ATTRS);
  ASSERT_EQ(rex_frame_decode(buf, 12 + REX_PROTO_MAX_PAYLOAD, 0, &f, &used), 0);
  ASSERT_EQ(used, 12 + REX_PROTO_MAX_PAYLOAD);
  /* one past, refused from the header before the payload is there */
  raw_frame(buf, REX_PROTO_MAX_PAYLOAD + 1, REX_MSG_PING, 0, 1, NULL, 0);
  ASSERT_EQ(rex_frame_decode(buf, 12, 0, &f, &used), REX_EPROTO_TOO_BIG);
  ASSERT_EQ(rex_frame_decode(buf, cap, 0, &f, &used), REX_EPROTO_TOO_BIG);
  /* a lowered limit (HELLO max-payload) */
  raw_frame(buf, REX_PROTO_MIN_PAYLOAD, REX_MSG_PING, 0, 1, NULL, 0);
  raw_attr(buf + 12, 1, REX_KIND_BYTES, REX_PROTO_MIN_PAYLOAD - 7, NULL, 0);
  ASSERT_EQ(rex_frame_decode(buf, 12 + REX_PROTO_MIN_PAYLOAD, REX_PROTO_MIN_PAYLOAD, &f, &used), 0);
  raw_frame(buf, REX_PROTO_MIN_PAYLOAD + 1, REX_MSG_PING, 0, 1, NULL, 0);
  ASSERT_EQ(rex_frame_decode(buf, 12, REX_PROTO_MIN_PAYLOAD, &f, &used), REX_EPROTO_TOO_BIG);
  /* the 4 GiB length a hostile header can claim */
  raw_frame(buf, 0xffffffffu, REX_MSG_PING, 0, 1, NULL, 0);
  ASSERT_EQ(rex_frame_decode(buf, 12, 0, &f, &used), REX_EPROTO_TOO_BIG);

  /* the builders refuse to go past the limit */
  rex_frame_init(&f, arena, 4);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  ASSERT_EQ(rex_attr_bytes(&f, 1, buf, REX_PROTO_MAX_PAYLOAD - 7), 0);
  ASSERT_EQ(rex_attr_bool(&f, 2, 1), REX_EPROTO_TOO_BIG);
  ASSERT_EQ(rex_frame_encode(&f, buf, cap, &used), REX_EPROTO_TOO_BIG);
  free(buf);
}

TEST_IMPL(codec_limit_attrs) {
  size_t cap = 12 + 7 * (REX_PROTO_MAX_ATTRS + 1) + 8;
  uint8_t *buf = malloc(cap);
  ASSERT(buf);
  struct rex_frame f, g;
  size_t n, used;
  rex_frame_init(&f, arena, REX_PROTO_MAX_ATTRS + 8);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  /* 4096 attributes counted over all levels: a list of 4095 empty byte strings */
  ASSERT_EQ(rex_attr_list_begin(&f, 1), 0);
  for (unsigned i = 0; i < REX_PROTO_MAX_ATTRS - 1; i++) rex_attr_bytes(&f, 2, NULL, 0);
  ASSERT_EQ(rex_attr_list_end(&f), 0);
  ASSERT_EQ(rex_frame_encode(&f, buf, cap, &n), 0);
  rex_frame_init(&g, arena2, REX_PROTO_MAX_ATTRS);
  ASSERT_EQ(rex_frame_decode(buf, n, 0, &g, &used), 0);
  ASSERT_EQ(g.nattrs, REX_PROTO_MAX_ATTRS);
  ASSERT_EQ(g.attrs[0].count, REX_PROTO_MAX_ATTRS - 1);
  /* one more, in the list: the builder refuses, and raw bytes are MALFORMED */
  ASSERT_EQ(rex_attr_bytes(&f, 3, NULL, 0), REX_EINVAL);
  memmove(buf + 12 + 7 + 7, buf + 12 + 7, n - 12 - 7);
  raw_attr(buf + 12 + 7, 2, REX_KIND_BYTES, 0, NULL, 0);
  rex__wr32(buf + 12 + 3, rex__rd32(buf + 12 + 3) + 7); /* the list grows */
  rex__wr32(buf, (uint32_t)(n - 12 + 7));
  ASSERT_EQ(rex_frame_decode(buf, n + 7, 0, &g, &used), REX_EPROTO_MALFORMED);
  ASSERT_STR_CONTAINS(g.err, "more than 4096 attributes");
  free(buf);
}

TEST_IMPL(codec_limit_depth) {
  struct rex_frame f, g;
  uint8_t buf[256];
  size_t n, used;
  rex_frame_init(&f, arena, 16);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  /* 7 nested lists hold attributes at depth 8: allowed */
  for (int d = 0; d < 7; d++) ASSERT_EQ(rex_attr_list_begin(&f, 1), 0);
  ASSERT_EQ(rex_attr_uint(&f, 1, 1), 0);
  ASSERT_EQ(f.attrs[f.nattrs - 1].depth, 8);
  /* an 8th list could only hold attributes at depth 9 */
  ASSERT_EQ(rex_attr_list_begin(&f, 1), REX_EINVAL);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  for (int d = 0; d < 7; d++) rex_attr_list_begin(&f, 1);
  rex_attr_uint(&f, 1, 1);
  for (int d = 0; d < 7; d++) rex_attr_list_end(&f);
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), 0);
  rex_frame_init(&g, arena2, 64);
  ASSERT_EQ(rex_frame_decode(buf, n, 0, &g, &used), 0);
  ASSERT_EQ(g.attrs[7].depth, 8);
  /* wrap once more by hand: depth 9, even though the innermost list is the same */
  uint8_t deeper[300];
  size_t pl = n - 12;
  raw_attr(deeper + 12, 1, REX_KIND_LIST, (uint32_t)pl, buf + 12, pl);
  raw_frame(deeper, (uint32_t)(pl + 7), REX_MSG_PING, 0, 1, NULL, 0);
  ASSERT_EQ(rex_frame_decode(deeper, pl + 19, 0, &g, &used), REX_EPROTO_MALFORMED);
  ASSERT_STR_CONTAINS(g.err, "nested deeper than 8");
  /* an empty list at depth 8 is refused too (its contents would be level 9) */
  uint8_t empty[200];
  size_t off = 12;
  for (int d = 0; d < 8; d++) off += raw_attr(empty + off, 1, REX_KIND_LIST, (uint32_t)(7 * (7 - d)), NULL, 0);
  raw_frame(empty, (uint32_t)(off - 12), REX_MSG_PING, 0, 1, NULL, 0);
  ASSERT_EQ(rex_frame_decode(empty, off, 0, &g, &used), REX_EPROTO_MALFORMED);
}

TEST_IMPL(codec_arena_too_small) {
  uint8_t buf[64];
  size_t off = 12;
  for (int i = 0; i < 3; i++) off += raw_attr(buf + off, 1, REX_KIND_BOOL, 1, "\1", 1);
  raw_frame(buf, (uint32_t)(off - 12), REX_MSG_PING, 0, 1, NULL, 0);
  struct rex_frame f;
  size_t used;
  rex_frame_init(&f, arena, 2);
  ASSERT_EQ(rex_frame_decode(buf, off, 0, &f, &used), REX_ENOSPC);
  rex_frame_init(&f, arena, REX_ATTRS_FOR_PAYLOAD(off - 12));
  ASSERT_EQ(f.cap, 3);
  ASSERT_EQ(rex_frame_decode(buf, off, 0, &f, &used), 0);
  rex_frame_init(&f, NULL, 0);
  ASSERT_EQ(rex_frame_decode(buf, off, 0, &f, &used), REX_ENOSPC);
  raw_frame(buf, 0, REX_MSG_LOAD_GET, 0, 1, NULL, 0);
  ASSERT_EQ(rex_frame_decode(buf, 12, 0, &f, &used), 0); /* no attributes need no arena */
  ASSERT_EQ(rex_frame_decode(NULL, 5, 0, &f, &used), REX_EINVAL);
}

TEST_IMPL(codec_encode_errors) {
  struct rex_frame f;
  uint8_t buf[64];
  size_t n;
  rex_frame_init(&f, arena, 8);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  rex_attr_string(&f, 1, "hello");
  ASSERT_EQ(rex_frame_encode(&f, buf, 12 + 7 + 4, &n), REX_ENOSPC);
  ASSERT_EQ(rex_frame_encode(&f, buf, 11, &n), REX_ENOSPC);
  ASSERT_EQ(rex_frame_encode(&f, buf, 12 + 7 + 5, &n), 0);
  /* bad strings are refused by the builder and the error sticks */
  ASSERT_EQ(rex_attr_stringn(&f, 2, "a\0b", 3), REX_EINVAL);
  ASSERT_EQ(rex_attr_uint(&f, 3, 1), REX_EINVAL);
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), REX_EINVAL);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  ASSERT_EQ(rex_attr_string(&f, 2, "\xc0\xaf"), REX_EINVAL);
  /* unbalanced lists */
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  ASSERT_EQ(rex_attr_list_end(&f), REX_EINVAL);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  rex_attr_list_begin(&f, 1);
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), REX_EINVAL);
  /* arena full */
  rex_frame_init(&f, arena, 1);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  ASSERT_EQ(rex_attr_bool(&f, 1, 0), 0);
  ASSERT_EQ(rex_attr_bool(&f, 2, 0), REX_ENOSPC);
  /* hand-edited attributes that do not fit their width or length */
  rex_frame_init(&f, arena, 8);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  rex_attr_uint(&f, 1, 1);
  arena[0].v.u = 300; /* does not fit its 1-byte width */
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), REX_EINVAL);
  arena[0].v.u = 1;
  arena[0].len = 3;
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), REX_EINVAL);
  rex_frame_start(&f, REX_MSG_PING, 0, 1);
  rex_attr_list_begin(&f, 1);
  rex_attr_bool(&f, 2, 1);
  rex_attr_list_end(&f);
  arena[0].len = 9; /* list length that does not add up */
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), REX_EINVAL);
  arena[0].len = 8;
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), 0);
  arena[1].next = 1; /* a cycle */
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), REX_EINVAL);
}

TEST_IMPL(codec_utf8) {
  static const struct {
    const char *s;
    int ok;
  } cases[] = {
      {"", 1}, {"plain", 1}, {"\xc3\xa9", 1}, {"\xe2\x9c\x93", 1}, {"\xf0\x9f\x9a\x80", 1}, {"\xf4\x8f\xbf\xbf", 1},
      {"\xef\xbb\xbf" "BOM kept", 1}, {"\xc0\xaf", 0}, {"\xc1\xbf", 0}, {"\xe0\x9f\xbf", 0}, {"\xed\xa0\x80", 0},
      {"\xed\xbf\xbf", 0}, {"\xf0\x8f\xbf\xbf", 0}, {"\xf4\x90\x80\x80", 0}, {"\xf5\x80\x80\x80", 0}, {"\xff", 0},
      {"\x80", 0}, {"\xc3", 0}, {"\xe2\x9c", 0}, {"\xf0\x9f\x9a", 0}, {"a\xc3(", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    if (rex_utf8_valid((const uint8_t *)cases[i].s, strlen(cases[i].s)) != cases[i].ok)
      FAIL("case %zu (%s): expected %s", i, cases[i].s, cases[i].ok ? "valid" : "invalid");
  /* A leading BOM is data: it survives a round trip (frame.ts's TextDecoder would drop it). */
  struct rex_frame f, g;
  uint8_t buf[64];
  size_t n;
  rex_frame_init(&f, arena, 4);
  rex_frame_start(&f, REX_MSG_GOODBYE, 0, 0);
  rex_attr_string(&f, 1, "\xef\xbb\xbfx");
  ASSERT_EQ(rex_frame_encode(&f, buf, sizeof buf, &n), 0);
  ASSERT_EQ(decode(buf, n, &g), 0);
  ASSERT(g.attrs[0].len == 4 && !memcmp(g.attrs[0].data, "\xef\xbb\xbfx", 4));
}

TEST_IMPL(codec_strerror) {
  /* The protocol codes are the wire codes of docs/PROTOCOL.md 4.2, negated. */
  static const char *names[] = {"MALFORMED", "VERSION", "TOO_BIG", "UNSUPPORTED", "UNEXPECTED", "NO_HOST",
                                "UNREACHABLE", "TIMEOUT", "BUSY", "INTERNAL", "DENIED", "BAD_REQUEST"};
  for (int code = 1; code <= 12; code++) {
    ASSERT(REX_IS_EPROTO(-code));
    ASSERT_EQ(REX_EPROTO_WIRE(-code), code);
    if (strcmp(rex_err_name(-code), names[code - 1])) FAIL("code %d is %s", code, rex_err_name(-code));
    ASSERT(strcmp(rex_strerror(-code), "unknown REX error") != 0);
  }
  ASSERT(!REX_IS_EPROTO(REX_EAGAIN));
  ASSERT(!REX_IS_EPROTO(0));
  ASSERT_STR_CONTAINS(rex_strerror(REX_EAGAIN), "incomplete");
  ASSERT_STR_CONTAINS(rex_strerror(REX_ENOSPC), "too small");
  ASSERT_STR_CONTAINS(rex_strerror(-999), "unknown");
  ASSERT(strlen(rex_strerror(2)) > 0); /* errno values pass through strerror */
  ASSERT_EQ(strcmp(rex_err_name(2), "ENOENT"), 0);
  ASSERT_EQ(strcmp(rex_err_name(REX_EAGAIN), "EAGAIN"), 0);
}

TEST_IMPL(codec_generated_tables) {
  /* Every ERROR code of the generated table has its name and text in errors.c. */
  int n = 0;
#define X(name, code, text)                                     \
  n++;                                                          \
  ASSERT(REX_IS_EPROTO(code));                                  \
  ASSERT_EQ(REX_EPROTO_WIRE(code), n);                          \
  ASSERT_EQ(strcmp(rex_err_name(code), #name), 0);              \
  ASSERT_EQ(strcmp(rex_strerror(code), text), 0);
  REX_EPROTO_CODES(X)
#undef X
  ASSERT_EQ(n, -REX_EPROTO_LAST);
  /* proto.c names every message type of the generated table (the name is in the decoder's errors). */
  uint8_t hdr[REX_PROTO_HEADER_SIZE] = {0, 0x10, 0, 1};
  struct rex_frame f;
  char want[64];
#define X(name, value)                                                   \
  hdr[4] = (uint8_t)((value) >> 8);                                      \
  hdr[5] = (uint8_t)((value)&0xff);                                      \
  ASSERT_EQ(decode(hdr, sizeof hdr, &f), REX_EPROTO_TOO_BIG);            \
  snprintf(want, sizeof want, "%s frame of", #name);                     \
  ASSERT_STR_CONTAINS(f.err, want);
  REX_MSG_TYPES(X)
#undef X
}
