/*
 * test_vectors.c: the C decoder against test/vectors/protocol-v1.json, the
 * vectors the TypeScript decoder is tested against too (docs/PROTOCOL.md
 * section 5). Every case must decode to exactly its frames, or fail with
 * exactly its error, or report that more bytes are needed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "json.h"
#include "runner.h"
#include "vectors.h"

struct json *rex_test_load_vectors(void) {
  char err[256];
  const char *path = rex_test_vectors_path();
  struct json *root = json_parse_file(path, err, sizeof err);
  if (!root) FAIL("%s: %s (set REX_VECTORS to the vectors file)", path, err);
  const struct json *cases = json_get(root, "cases");
  if (!cases || cases->type != JSON_ARRAY || cases->n == 0) FAIL("%s: no \"cases\" array", path);
  return root;
}

static const char *kind_name(uint8_t k) {
  static const char *names[] = {NULL, "uint", "int", "f64", "string", "bytes", "list", "bool"};
  return k >= 1 && k <= 7 ? names[k] : "?";
}

/* Compares the children of parent with an expected attrs array; writes the first difference into why. */
static int same_attrs(const struct rex_frame *f, uint32_t parent, const struct json *want, char *why, size_t cap,
                      const char *path) {
  uint32_t i = rex_attr_first(f, parent);
  for (size_t k = 0; k < want->n; k++, i = f->attrs[i].next) {
    char here[256];
    snprintf(here, sizeof here, "%s[%zu]", path, k);
    if (i == REX_ATTR_NONE) {
      snprintf(why, cap, "%s: missing (decoder found fewer attributes)", here);
      return 0;
    }
    const struct rex_attr *a = &f->attrs[i];
    const struct json *w = &want->items[k];
    const struct json *tag = json_get(w, "tag"), *kind = json_get(w, "kind"), *val = json_get(w, "value");
    if (!tag || !kind || !val) {
      snprintf(why, cap, "%s: vector lacks tag/kind/value", here);
      return 0;
    }
    if (strtoul(tag->str, NULL, 10) != a->tag) {
      snprintf(why, cap, "%s: tag %u, expected %s", here, a->tag, tag->str);
      return 0;
    }
    if (strcmp(kind->str, kind_name(a->kind))) {
      snprintf(why, cap, "%s: kind %s, expected %s", here, kind_name(a->kind), kind->str);
      return 0;
    }
    int ok = 1;
    switch (a->kind) {
    case REX_KIND_UINT: ok = strtoull(val->str, NULL, 10) == a->v.u; break;
    case REX_KIND_INT: ok = strtoll(val->str, NULL, 10) == a->v.i; break;
    case REX_KIND_F64:
      if (val->type == JSON_STRING) {
        if (!strcmp(val->str, "NaN")) ok = isnan(a->v.f);
        else if (!strcmp(val->str, "Infinity")) ok = isinf(a->v.f) && a->v.f > 0;
        else if (!strcmp(val->str, "-Infinity")) ok = isinf(a->v.f) && a->v.f < 0;
        else ok = 0;
      } else
        ok = strtod(val->str, NULL) == a->v.f;
      break;
    case REX_KIND_STRING: ok = val->len == a->len && !memcmp(val->str, a->data, a->len); break;
    case REX_KIND_BYTES: {
      size_t n;
      uint8_t *b = rex_test_unhex(val->str, &n);
      ok = n == a->len && !memcmp(b, a->data, n);
      free(b);
      break;
    }
    case REX_KIND_BOOL: ok = val->type == JSON_BOOL && val->boolean == a->v.b; break;
    case REX_KIND_LIST:
      if (val->type != JSON_ARRAY) ok = 0;
      else if (!same_attrs(f, i, val, why, cap, here)) return 0;
      break;
    }
    if (!ok) {
      snprintf(why, cap, "%s: %s value differs from %s", here, kind->str, val->str ? val->str : "(structure)");
      return 0;
    }
  }
  if (i != REX_ATTR_NONE) {
    snprintf(why, cap, "%s: decoder found more attributes than the %zu expected", path, want->n);
    return 0;
  }
  return 1;
}

static int same_frame(const struct rex_frame *f, const struct json *want, char *why, size_t cap) {
  const struct json *type = json_get(want, "type"), *flags = json_get(want, "flags"), *stream = json_get(want, "stream"),
                    *attrs = json_get(want, "attrs");
  if (!type || !flags || !stream || !attrs) {
    snprintf(why, cap, "vector frame lacks type/flags/stream/attrs");
    return 0;
  }
  if (strtoul(type->str, NULL, 10) != f->type || strtoul(flags->str, NULL, 10) != f->flags ||
      strtoul(stream->str, NULL, 10) != f->stream) {
    snprintf(why, cap, "header %u/%u/%u, expected %s/%s/%s", f->type, f->flags, f->stream, type->str, flags->str,
             stream->str);
    return 0;
  }
  return same_attrs(f, REX_ATTR_NONE, attrs, why, cap, "attrs");
}

size_t rex_test_max_payload(const struct json *c) {
  const struct json *m = json_get(c, "maxPayload");
  return m ? (size_t)strtoul(m->str, NULL, 10) : REX_PROTO_MAX_PAYLOAD;
}

static struct rex_attr arena[REX_PROTO_MAX_ATTRS];

TEST_IMPL(vectors_decode) {
  struct json *root = rex_test_load_vectors();
  const struct json *cases = json_get(root, "cases");
  size_t checked = 0;
  for (size_t ci = 0; ci < cases->n; ci++) {
    const struct json *c = &cases->items[ci];
    const char *name = json_get(c, "name")->str;
    const struct json *frames = json_get(c, "frames"), *error = json_get(c, "error"),
                      *incomplete = json_get(c, "incomplete");
    size_t len;
    uint8_t *buf = rex_test_unhex(json_get(c, "hex")->str, &len);
    size_t maxp = rex_test_max_payload(c);
    struct rex_frame f;
    size_t off = 0, nframes = 0;
    int rc;
    char why[512];
    do {
      rex_frame_init(&f, arena, REX_PROTO_MAX_ATTRS);
      size_t used = 0;
      rc = rex_frame_decode(buf + off, len - off, maxp, &f, &used);
      if (rc) break;
      if (!frames || nframes >= frames->n) FAIL("%s: decoded a frame the vector does not expect", name);
      if (!same_frame(&f, &frames->items[nframes], why, sizeof why)) FAIL("%s: frame %zu: %s", name, nframes, why);
      nframes++;
      off += used;
    } while (off < len);
    if (error) {
      if (rc == 0 || rc == REX_EAGAIN) FAIL("%s: expected %s, decoder returned %s", name, error->str, rex_err_name(rc));
      if (strcmp(rex_err_name(rc), error->str)) FAIL("%s: expected %s, got %s: %s", name, error->str, rex_err_name(rc), f.err);
      if (!f.err[0]) FAIL("%s: error without a message", name);
    } else if (incomplete) {
      if (rc != REX_EAGAIN) FAIL("%s: expected incomplete, got %s", name, rex_err_name(rc));
    } else {
      if (rc != 0) FAIL("%s: expected frames, got %s: %s", name, rex_err_name(rc), f.err);
      if (nframes != frames->n) FAIL("%s: decoded %zu frames, expected %zu", name, nframes, frames->n);
    }
    free(buf);
    checked++;
  }
  ASSERT(checked >= 40);
  json_free(root);
}

TEST_IMPL(vectors_reencode) {
  /* Every valid vector, decoded and encoded again, gives its own bytes back:
     the encoder keeps each integer's width, so nothing is normalized away. */
  struct json *root = rex_test_load_vectors();
  const struct json *cases = json_get(root, "cases");
  for (size_t ci = 0; ci < cases->n; ci++) {
    const struct json *c = &cases->items[ci];
    if (!json_get(c, "frames")) continue;
    const char *name = json_get(c, "name")->str;
    size_t len;
    uint8_t *buf = rex_test_unhex(json_get(c, "hex")->str, &len);
    uint8_t *out = malloc(len + 1);
    ASSERT(out);
    size_t off = 0;
    while (off < len) {
      struct rex_frame f;
      rex_frame_init(&f, arena, REX_PROTO_MAX_ATTRS);
      size_t used, n;
      int rc = rex_frame_decode(buf + off, len - off, rex_test_max_payload(c), &f, &used);
      if (rc) FAIL("%s: decode: %s", name, rex_err_name(rc));
      rc = rex_frame_encode(&f, out, len + 1, &n);
      if (rc) FAIL("%s: encode: %s", name, rex_err_name(rc));
      if (n != used || memcmp(out, buf + off, n)) FAIL("%s: re-encoded bytes differ", name);
      off += used;
    }
    free(out);
    free(buf);
  }
  json_free(root);
}

TEST_IMPL(vectors_byte_by_byte) {
  /* A receiver sees frames arrive in pieces: every proper prefix of a valid
     frame is incomplete, never an error, and the whole frame decodes. */
  struct json *root = rex_test_load_vectors();
  const struct json *cases = json_get(root, "cases");
  for (size_t ci = 0; ci < cases->n; ci++) {
    const struct json *c = &cases->items[ci];
    if (!json_get(c, "frames")) continue;
    const char *name = json_get(c, "name")->str;
    size_t len;
    uint8_t *buf = rex_test_unhex(json_get(c, "hex")->str, &len);
    struct rex_frame f;
    rex_frame_init(&f, arena, REX_PROTO_MAX_ATTRS);
    size_t used = 0;
    ASSERT(rex_frame_decode(buf, len, rex_test_max_payload(c), &f, &used) == 0);
    /* Long frames: every prefix up to 64 bytes, then a sample. */
    for (size_t k = 0; k < used; k += k < 64 ? 1 : 997) {
      int rc = rex_frame_decode(buf, k, rex_test_max_payload(c), &f, NULL);
      if (rc != REX_EAGAIN) FAIL("%s: prefix of %zu bytes: %s", name, k, rex_err_name(rc));
    }
    free(buf);
  }
  json_free(root);
}

TEST_IMPL(vectors_entries_paging) {
  /* The paging attributes of ENTRIES_GET and ENTRIES (docs/PROTOCOL.md 4.7) sit at rex.h's tags. */
  struct json *root = rex_test_load_vectors();
  const struct json *cases = json_get(root, "cases");
  int seen = 0;
  for (size_t ci = 0; ci < cases->n; ci++) {
    const struct json *c = &cases->items[ci];
    const char *name = json_get(c, "name")->str;
    if (strcmp(name, "entries-get-name") && strcmp(name, "entries-get-page") && strcmp(name, "entries-page")) continue;
    size_t len, used;
    uint8_t *buf = rex_test_unhex(json_get(c, "hex")->str, &len);
    struct rex_frame f;
    rex_frame_init(&f, arena, REX_PROTO_MAX_ATTRS);
    ASSERT(rex_frame_decode(buf, len, REX_PROTO_MAX_PAYLOAD, &f, &used) == 0);
    const struct rex_attr *a;
    if (!strcmp(name, "entries-get-name")) {
      ASSERT(f.type == REX_MSG_ENTRIES_GET);
      a = rex_attr_find(&f, REX_ATTR_NONE, REX_ENTRIES_GET_NAME);
      ASSERT(a && a->kind == REX_KIND_STRING && a->len == 4 && !memcmp(a->data, "cbrt", 4));
    } else if (!strcmp(name, "entries-get-page")) {
      a = rex_attr_find(&f, REX_ATTR_NONE, REX_ENTRIES_GET_MATCH);
      ASSERT(a && a->kind == REX_KIND_STRING && a->len == 4 && !memcmp(a->data, "str*", 4));
      a = rex_attr_find(&f, REX_ATTR_NONE, REX_ENTRIES_GET_AFTER);
      ASSERT(a && a->kind == REX_KIND_STRING && a->len == 6 && !memcmp(a->data, "strcat", 6));
      a = rex_attr_find(&f, REX_ATTR_NONE, REX_ENTRIES_GET_LIMIT);
      ASSERT(a && a->kind == REX_KIND_UINT && a->v.u == 1000);
    } else {
      ASSERT(f.type == REX_MSG_ENTRIES);
      a = rex_attr_find(&f, REX_ATTR_NONE, REX_ENTRIES_NEXT);
      ASSERT(a && a->kind == REX_KIND_STRING && a->len == 6 && !memcmp(a->data, "strcmp", 6));
    }
    seen++;
    free(buf);
  }
  ASSERT(seen == 3);
  json_free(root);
}
