/*
 * frontend.c: the native `rex` front end's pure parts (frontend.h): argument
 * parsing, the strict rex.rc scanner, path joining, JSON and message quoting,
 * SHA-256. No I/O here: rex.c does it, and the C tests run these under
 * ASan+UBSan.
 */
#include "frontend.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ arguments */

static int is_opt(const char *a, const char *name) { return strcmp(a, name) == 0; }

/* "--name=VALUE" -> VALUE, else NULL. */
static const char *eq_value(const char *a, const char *name) {
  size_t n = strlen(name);
  return strncmp(a, name, n) == 0 && a[n] == '=' ? a + n + 1 : NULL;
}

int fe_parse_run(int argc, char *const argv[], struct fe_run *r) {
  memset(r, 0, sizeof *r);
  r->pty = 1;
  if (argc < 3 || strcmp(argv[1], "run") != 0) return FE_DELEGATE;
  int i = 2;
  while (i < argc) {
    const char *a = argv[i], *v;
    if (is_opt(a, "--")) {
      i++;
      break;
    }
    if (a[0] != '-' || a[1] == '\0') break; /* PROGRAM: what follows is its own (passThroughOptions) */
    if (is_opt(a, "--host") || is_opt(a, "--socket")) {
      /* A value that is empty or looks like an option: commander's reading is the Node CLI's to give. */
      if (i + 1 >= argc || argv[i + 1][0] == '\0' || argv[i + 1][0] == '-') return FE_DELEGATE;
      if (a[2] == 'h')
        r->host = argv[i + 1];
      else
        r->socket = argv[i + 1];
      i += 2;
      continue;
    }
    if ((v = eq_value(a, "--host")) || (v = eq_value(a, "--socket"))) {
      if (*v == '\0') return FE_DELEGATE;
      if (a[2] == 'h')
        r->host = v;
      else
        r->socket = v;
    } else if (is_opt(a, "-T") || is_opt(a, "--no-pty")) {
      r->pty = 0;
    } else if (is_opt(a, "--json")) {
      r->json = 1;
    } else {
      return FE_DELEGATE; /* -c/--config, -h/--help, an unknown option, -T combined with others */
    }
    i++;
  }
  if (i >= argc) return FE_DELEGATE; /* no PROGRAM: commander's usage error */
  r->prog = i;
  return FE_OK;
}

/* commander's negativeNumberArg: /^-(\d+|\d*\.\d+)(e[+-]?\d+)?$/, an operand of a leaf command, not an option. */
static int negative_number(const char *a) {
  if (*a++ != '-') return 0;
  size_t whole = strspn(a, "0123456789");
  a += whole;
  if (*a == '.') {
    size_t frac = strspn(a + 1, "0123456789");
    if (!frac) return 0;
    a += 1 + frac;
  } else if (!whole)
    return 0;
  if (*a == 'e') {
    a++;
    if (*a == '+' || *a == '-') a++;
    size_t exp = strspn(a, "0123456789");
    if (!exp) return 0;
    a += exp;
  }
  return *a == '\0';
}

int fe_parse_call(int argc, char *const argv[], struct fe_call *c) {
  int *pos = c->pos;
  memset(c, 0, sizeof *c);
  c->pos = pos;
  if (argc < 3 || strcmp(argv[1], "call") != 0) return FE_DELEGATE;
  int options = 1;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v;
    if (!options || a[0] != '-' || a[1] == '\0' || negative_number(a)) {
      c->pos[c->npos++] = i; /* TARGET or an argument: "-" and -12, -1.5e3 are operands to commander too */
      continue;
    }
    if (is_opt(a, "--")) {
      options = 0;
      continue;
    }
    const char *const valued[] = {"--socket", "--hex", "--timeout"};
    const char **slot[] = {&c->socket, &c->hex, &c->timeout};
    int done = 0;
    for (int k = 0; k < 3 && !done; k++) {
      if (is_opt(a, valued[k])) {
        /* A value that is empty or looks like an option: commander's reading is the Node CLI's to give. */
        if (i + 1 >= argc || argv[i + 1][0] == '\0' || argv[i + 1][0] == '-') return FE_DELEGATE;
        *slot[k] = argv[++i];
        done = 1;
      } else if ((v = eq_value(a, valued[k]))) {
        if (*v == '\0' || *v == '-') return FE_DELEGATE;
        *slot[k] = v;
        done = 1;
      }
    }
    if (done) continue;
    if (is_opt(a, "--json")) {
      c->json = 1;
      continue;
    }
    return FE_DELEGATE; /* -c/--config, -h/--help, an unknown option, a negative number (commander refuses it) */
  }
  return c->npos >= 1 ? FE_OK : FE_DELEGATE; /* no TARGET: commander's usage error */
}

/* ------------------------------------------------------------ rex.rc */

const char *const fe_rc_keys[] = {
    /* fe_rc_keys: begin (the keys of src/config/keys.ts, in its order) */
    "host-name", "listen", "servers", "clients", "rex-temp-directory", "rex-auto-transfer", "placement-policy",
    "state-directory", "socket", "log-level", "load-interval", "peer-timeout", "rex-log-database", "log-fail-closed", "rex-log-server",
    "log-server-fail-closed", "log-heartbeats", "log-retention-days", "log-max-size", "login-grace-time", "max-startups",
    "per-source-max-startups", "log-denials-burst", "log-denials-interval", "programs", "installation",
    "permit-root", "host-user", "user-limits", "user-map",
    /* fe_rc_keys: end */
    NULL};

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'; }
static int is_word(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* [*b, *e) trimmed of ASCII white space. */
static void trim(const char **b, const char **e) {
  while (*b < *e && is_space(**b)) (*b)++;
  while (*e > *b && is_space((*e)[-1])) (*e)--;
}

static int span_is(const char *b, const char *e, const char *s) {
  size_t n = strlen(s);
  return (size_t)(e - b) == n && memcmp(b, s, n) == 0;
}

/* [b, e) starts with word w followed by a non-word character or its end. */
static int starts_word(const char *b, const char *e, const char *w) {
  size_t n = strlen(w);
  return (size_t)(e - b) >= n && memcmp(b, w, n) == 0 && (b + n == e || !is_word(b[n]));
}

static int contains(const char *b, const char *e, const char *s) {
  size_t n = strlen(s);
  for (const char *p = b; p + n <= e; p++)
    if (memcmp(p, s, n) == 0) return 1;
  return 0;
}

/* A path value as pathValue() expands it, when it needs nothing the scanner does not do: ~ and ~/ only, no $. */
static int path_value(const char *b, const char *e, const char *home, char *out, size_t cap) {
  size_t n = 0;
  if (b == e) return FE_DELEGATE;
  for (const char *p = b; p < e; p++)
    if (*p == '$' || (unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20) return FE_DELEGATE;
  if (*b == '~') {
    if (!(e - b == 1 || b[1] == '/') || !home || !*home) return FE_DELEGATE;
    n = strlen(home);
    if (n >= cap) return FE_DELEGATE;
    memcpy(out, home, n);
    b++;
  }
  if ((size_t)(e - b) + n >= cap) return FE_DELEGATE;
  memcpy(out + n, b, (size_t)(e - b));
  out[n + (size_t)(e - b)] = '\0';
  return out[0] == '/' ? FE_OK : FE_DELEGATE;
}

int fe_rc_socket(const char *text, size_t len, const char *home, char *out, size_t cap) {
  char sock[4096] = "", state[4096] = "";
  int have_sock = 0, have_state = 0;
  const char *end = text + len;
  if (memchr(text, '\0', len)) return FE_DELEGATE;
  for (const char *line = text; line < end;) {
    const char *nl = memchr(line, '\n', (size_t)(end - line));
    const char *le = nl ? nl : end, *b = line, *e = le;
    line = nl ? nl + 1 : end;
    if (e > b && e[-1] == '\r') e--;
    if (e > b && e[-1] == '\\') return FE_DELEGATE;                   /* line splicing */
    if (contains(b, e, "/*") || contains(b, e, "*/")) return FE_DELEGATE; /* block comments */
    trim(&b, &e);
    if (b == e || (e - b >= 2 && b[0] == '/' && b[1] == '/')) continue;
    if (*b == '#') {
      static const char *const directives[] = {"ifdef", "ifndef", "if", "elif", "else", "endif", "define", "undef", "pragma", "error", NULL};
      for (int k = 0; directives[k]; k++)
        if (starts_word(b + 1, e, directives[k])) return FE_DELEGATE;
      const char *p = b + 1;
      while (p < e && is_space(*p)) p++;
      if (starts_word(p, e, "include")) return FE_DELEGATE;
      continue; /* a comment */
    }
    const char *colon = memchr(b, ':', (size_t)(e - b));
    if (!colon) return FE_DELEGATE;
    const char *kb = b, *ke = colon, *vb = colon + 1, *ve = e;
    trim(&kb, &ke);
    trim(&vb, &ve);
    int known = 0;
    for (int k = 0; fe_rc_keys[k]; k++)
      if (span_is(kb, ke, fe_rc_keys[k])) known = 1;
    if (!known) return FE_DELEGATE;
    if (span_is(kb, ke, "socket")) {
      if (have_sock++ || path_value(vb, ve, home, sock, sizeof sock)) return FE_DELEGATE;
    } else if (span_is(kb, ke, "state-directory")) {
      if (have_state++ || path_value(vb, ve, home, state, sizeof state)) return FE_DELEGATE;
    }
  }
  char res[4200];
  if (have_sock) {
    snprintf(res, sizeof res, "%s", sock);
  } else if (have_state) {
    size_t n = strlen(state);
    while (n > 0 && state[n - 1] == '/') state[--n] = '\0';
    snprintf(res, sizeof res, "%s/run/rexd.sock", state);
  } else {
    if (!home || !*home) return FE_DELEGATE;
    snprintf(res, sizeof res, "%s/.rex/run/rexd.sock", home);
  }
  if (strlen(res) > 107 || strlen(res) >= cap) return FE_DELEGATE; /* the loader refuses it: its message is Node's */
  memcpy(out, res, strlen(res) + 1);
  return FE_OK;
}

/* ------------------------------------------------------------ paths */

int fe_join(const char *a, const char *b, char *out, size_t cap) {
  char tmp[8192];
  int n = b && *b ? (a && *a ? snprintf(tmp, sizeof tmp, "%s/%s", a, b) : snprintf(tmp, sizeof tmp, "%s", b))
                  : snprintf(tmp, sizeof tmp, "%s", a ? a : "");
  if (n < 0 || (size_t)n >= sizeof tmp) return -1;
  int abs = tmp[0] == '/', trailing = n > 0 && tmp[n - 1] == '/';
  /* Segments as offsets into tmp, '.' and empty ones dropped, '..' popping one unless at the start. */
  const char *seg[4096];
  size_t seglen[4096], ns = 0;
  for (char *p = tmp; *p;) {
    while (*p == '/') p++;
    if (!*p) break;
    char *s = p;
    while (*p && *p != '/') p++;
    size_t l = (size_t)(p - s);
    if (l == 1 && s[0] == '.') continue;
    if (l == 2 && s[0] == '.' && s[1] == '.') {
      if (ns > 0 && !(seglen[ns - 1] == 2 && seg[ns - 1][0] == '.' && seg[ns - 1][1] == '.')) {
        ns--;
        continue;
      }
      if (abs) continue;
    }
    if (ns == sizeof seg / sizeof *seg) return -1;
    seg[ns] = s;
    seglen[ns++] = l;
  }
  size_t o = 0;
  char res[8192];
  if (abs) res[o++] = '/';
  for (size_t i = 0; i < ns; i++) {
    if (o + seglen[i] + 2 >= sizeof res) return -1;
    if (i) res[o++] = '/';
    memcpy(res + o, seg[i], seglen[i]);
    o += seglen[i];
  }
  if (o == 0) res[o++] = '.';
  if (trailing && res[o - 1] != '/') res[o++] = '/';
  if (o >= cap) return -1;
  memcpy(out, res, o);
  out[o] = '\0';
  return 0;
}

/* ------------------------------------------------------------ JSON and quoting */

static int put(char *buf, size_t cap, size_t *len, const char *s, size_t n) {
  if (*len + n >= cap) return -1;
  memcpy(buf + *len, s, n);
  *len += n;
  buf[*len] = '\0';
  return 0;
}

int fe_json_string(char *buf, size_t cap, size_t *len, const char *s) {
  if (put(buf, cap, len, "\"", 1)) return -1;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    const char *e = NULL;
    switch (*p) {
      case '"': e = "\\\""; break;
      case '\\': e = "\\\\"; break;
      case '\b': e = "\\b"; break;
      case '\f': e = "\\f"; break;
      case '\n': e = "\\n"; break;
      case '\r': e = "\\r"; break;
      case '\t': e = "\\t"; break;
      default:
        if (*p < 0x20) {
          snprintf(esc, sizeof esc, "\\u%04x", *p);
          e = esc;
        }
    }
    if (e ? put(buf, cap, len, e, strlen(e)) : put(buf, cap, len, (const char *)p, 1)) return -1;
  }
  return put(buf, cap, len, "\"", 1);
}

/* Bytes of the UTF-8 sequence at p (1 for a byte that starts none) and its UTF-16 length. */
static size_t utf8_char(const unsigned char *p, size_t *units, unsigned *cp) {
  size_t n = 1;
  unsigned c = p[0];
  if (c >= 0xf0 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80) {
    n = 4;
    c = (c & 0x07) << 18 | (unsigned)(p[1] & 0x3f) << 12 | (unsigned)(p[2] & 0x3f) << 6 | (p[3] & 0x3f);
  } else if (c >= 0xe0 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80) {
    n = 3;
    c = (c & 0x0f) << 12 | (unsigned)(p[1] & 0x3f) << 6 | (p[2] & 0x3f);
  } else if (c >= 0xc0 && (p[1] & 0xc0) == 0x80) {
    n = 2;
    c = (c & 0x1f) << 6 | (p[1] & 0x3f);
  }
  *units = c >= 0x10000 ? 2 : 1;
  *cp = c;
  return n;
}

void fe_quote(const char *s, size_t max, int keep_lines, char *out, size_t cap) {
  size_t total = 0, bytes = strlen(s), o = 0;
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < bytes;) {
    size_t u;
    unsigned cp;
    i += utf8_char(p + i, &u, &cp);
    total += u;
  }
  if (cap == 0) return;
  out[0] = '\0';
  size_t units = 0;
  for (size_t i = 0; i < bytes;) {
    size_t u;
    unsigned cp;
    size_t n = utf8_char(p + i, &u, &cp);
    if (units + u > max) break;
    units += u;
    char esc[16];
    if ((cp < 0x20 && !(keep_lines && cp == '\n')) || cp == 0x7f)
      snprintf(esc, sizeof esc, "\\x%02x", cp);
    else if (cp == 0x2028 || cp == 0x2029)
      snprintf(esc, sizeof esc, "\\u%x", cp);
    else {
      if (o + n >= cap) break;
      memcpy(out + o, p + i, n);
      o += n;
      out[o] = '\0';
      i += n;
      continue;
    }
    size_t el = strlen(esc);
    if (o + el >= cap) break;
    memcpy(out + o, esc, el + 1);
    o += el;
    i += n;
  }
  if (total > max) snprintf(out + o, cap - o, "... (%zu bytes)", bytes);
}

/* ------------------------------------------------------------ SHA-256 (FIPS 180-4) */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, unsigned n) { return x >> n | x << (32 - n); }

static void block(struct fe_sha256 *s, const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  s->h[0] += a;
  s->h[1] += b;
  s->h[2] += c;
  s->h[3] += d;
  s->h[4] += e;
  s->h[5] += f;
  s->h[6] += g;
  s->h[7] += h;
}

void fe_sha256_init(struct fe_sha256 *s) {
  static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, H0, sizeof H0);
  s->n = 0;
  s->fill = 0;
}

void fe_sha256_update(struct fe_sha256 *s, const void *data, size_t len) {
  const uint8_t *p = data;
  s->n += len;
  if (s->fill) {
    size_t take = 64 - s->fill < len ? 64 - s->fill : len;
    memcpy(s->buf + s->fill, p, take);
    s->fill += take;
    p += take;
    len -= take;
    if (s->fill < 64) return;
    block(s, s->buf);
    s->fill = 0;
  }
  for (; len >= 64; p += 64, len -= 64) block(s, p);
  memcpy(s->buf, p, len);
  s->fill = len;
}

void fe_sha256_final(struct fe_sha256 *s, uint8_t out[32]) {
  uint64_t bits = s->n * 8;
  uint8_t pad = 0x80, zero = 0, len[8];
  fe_sha256_update(s, &pad, 1);
  while (s->fill != 56) fe_sha256_update(s, &zero, 1);
  for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i));
  fe_sha256_update(s, len, 8);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(s->h[i] >> 24);
    out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
    out[4 * i + 3] = (uint8_t)s->h[i];
  }
}
