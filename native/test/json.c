/* json.c: see json.h. Recursive descent; the vectors nest only a few levels deep. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parser {
  const char *s;
  size_t pos;
  char *err;
  size_t errcap;
  int failed;
};

static void perr(struct parser *p, const char *what) {
  if (!p->failed) snprintf(p->err, p->errcap, "%s at offset %zu", what, p->pos);
  p->failed = 1;
}

static void ws(struct parser *p) {
  while (p->s[p->pos] == ' ' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r' || p->s[p->pos] == '\t') p->pos++;
}

static void *xalloc(size_t n) {
  void *m = calloc(1, n ? n : 1);
  if (!m) abort();
  return m;
}

static void *xrealloc(void *m, size_t n) {
  m = realloc(m, n ? n : 1);
  if (!m) abort();
  return m;
}

static int hex4(struct parser *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p->s[p->pos + (size_t)i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  p->pos += 4;
  *out = v;
  return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | cp >> 12);
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | cp >> 18);
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

static char *string(struct parser *p, size_t *len) {
  p->pos++; /* opening quote */
  size_t cap = 16, n = 0;
  char *o = xalloc(cap);
  for (;;) {
    char c = p->s[p->pos];
    if (n + 5 > cap) o = xrealloc(o, cap *= 2);
    if (c == '\0') {
      perr(p, "unterminated string");
      free(o);
      return NULL;
    }
    p->pos++;
    if (c == '"') break;
    if (c != '\\') {
      o[n++] = c;
      continue;
    }
    char e = p->s[p->pos++];
    switch (e) {
    case '"': o[n++] = '"'; break;
    case '\\': o[n++] = '\\'; break;
    case '/': o[n++] = '/'; break;
    case 'b': o[n++] = '\b'; break;
    case 'f': o[n++] = '\f'; break;
    case 'n': o[n++] = '\n'; break;
    case 'r': o[n++] = '\r'; break;
    case 't': o[n++] = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (hex4(p, &cp)) goto bad;
      if (cp >= 0xd800 && cp < 0xdc00 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
        p->pos += 2;
        if (hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff) goto bad;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      }
      n += put_utf8(o + n, cp);
      break;
    }
    default:
      goto bad;
    }
  }
  o[n] = '\0';
  *len = n;
  return o;
bad:
  perr(p, "bad escape in string");
  free(o);
  return NULL;
}

static int value(struct parser *p, struct json *j, int depth);

static int value(struct parser *p, struct json *j, int depth) {
  memset(j, 0, sizeof *j);
  if (depth > 64) {
    perr(p, "nested too deeply");
    return -1;
  }
  ws(p);
  char c = p->s[p->pos];
  if (c == '{' || c == '[') {
    int obj = c == '{';
    j->type = obj ? JSON_OBJECT : JSON_ARRAY;
    p->pos++;
    size_t cap = 0;
    ws(p);
    if (p->s[p->pos] == (obj ? '}' : ']')) {
      p->pos++;
      return 0;
    }
    for (;;) {
      if (j->n == cap) {
        cap = cap ? cap * 2 : 4;
        j->items = xrealloc(j->items, cap * sizeof *j->items);
        if (obj) j->keys = xrealloc(j->keys, cap * sizeof *j->keys);
      }
      if (obj) {
        ws(p);
        if (p->s[p->pos] != '"') {
          perr(p, "expected a key");
          return -1;
        }
        size_t kl;
        char *k = string(p, &kl);
        if (!k) return -1;
        j->keys[j->n] = k;
        ws(p);
        if (p->s[p->pos++] != ':') {
          j->n++;
          memset(&j->items[j->n - 1], 0, sizeof *j->items);
          perr(p, "expected ':'");
          return -1;
        }
      }
      int rc = value(p, &j->items[j->n], depth + 1);
      j->n++;
      if (rc) return rc;
      ws(p);
      char d = p->s[p->pos++];
      if (d == ',') continue;
      if (d == (obj ? '}' : ']')) return 0;
      perr(p, "expected ',' or a closing bracket");
      return -1;
    }
  }
  if (c == '"') {
    j->type = JSON_STRING;
    j->str = string(p, &j->len);
    return j->str ? 0 : -1;
  }
  if (!strncmp(p->s + p->pos, "true", 4) || !strncmp(p->s + p->pos, "false", 5)) {
    j->type = JSON_BOOL;
    j->boolean = c == 't';
    p->pos += j->boolean ? 4 : 5;
    return 0;
  }
  if (!strncmp(p->s + p->pos, "null", 4)) {
    j->type = JSON_NULL;
    p->pos += 4;
    return 0;
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    size_t start = p->pos;
    while (strchr("+-0123456789.eE", p->s[p->pos]) && p->s[p->pos]) p->pos++;
    j->type = JSON_NUMBER;
    j->len = p->pos - start;
    j->str = xalloc(j->len + 1);
    memcpy(j->str, p->s + start, j->len);
    return 0;
  }
  perr(p, "unexpected character");
  return -1;
}

static void clear(struct json *j) {
  for (size_t i = 0; i < j->n; i++) {
    clear(&j->items[i]);
    if (j->keys) free(j->keys[i]);
  }
  free(j->items);
  free(j->keys);
  free(j->str);
}

void json_free(struct json *j) {
  if (!j) return;
  clear(j);
  free(j);
}

struct json *json_parse(const char *text, char *err, size_t errcap) {
  struct parser p = {text, 0, err, errcap, 0};
  struct json *j = xalloc(sizeof *j);
  if (value(&p, j, 0) == 0) {
    ws(&p);
    if (p.s[p.pos] == '\0') return j;
    perr(&p, "trailing characters");
  }
  json_free(j);
  return NULL;
}

struct json *json_parse_file(const char *path, char *err, size_t errcap) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errcap, "cannot open %s", path);
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = xalloc(cap);
  size_t r;
  while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += r;
    if (cap - n - 1 == 0) buf = xrealloc(buf, cap *= 2);
  }
  fclose(f);
  buf[n] = '\0';
  struct json *j = json_parse(buf, err, errcap);
  free(buf);
  return j;
}

const struct json *json_get(const struct json *obj, const char *key) {
  if (!obj || obj->type != JSON_OBJECT) return NULL;
  for (size_t i = 0; i < obj->n; i++)
    if (!strcmp(obj->keys[i], key)) return &obj->items[i];
  return NULL;
}
