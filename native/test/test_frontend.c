/*
 * test_frontend.c: the native rex front end's pure parts (native/frontend/frontend.c) under the
 * sanitizers: commander's reading of `rex run` and `rex call` flags, the strict rex.rc scanner (what it reads,
 * what it hands to the Node CLI), Node's path.join, JSON.stringify and quote() on strings, SHA-256.
 * The front end against a real cluster and the Node CLI: test/frontend/native-rex.test.ts.
 */
#include <stdio.h>
#include <string.h>

#include "../frontend/frontend.h"
#include "runner.h"

#define ASSERT_STR_EQ(a, b)                                                           \
  do {                                                                                \
    if (strcmp((a), (b)) != 0) FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, (a), (b)); \
  } while (0)

static int parse(struct fe_run *r, const char *const *args) {
  char *argv[32];
  int argc = 0;
  argv[argc++] = (char *)"rex";
  for (; *args; args++) argv[argc++] = (char *)*args;
  argv[argc] = NULL;
  return fe_parse_run(argc, argv, r);
}

TEST_IMPL(frontend_args) {
  struct fe_run r;
  ASSERT_EQ(parse(&r, (const char *[]){"run", "--host", "beta", "-T", "--json", "/bin/echo", "-n", "--host", NULL}), FE_OK);
  ASSERT_STR_EQ(r.host, "beta");
  ASSERT_EQ(r.pty, 0);
  ASSERT_EQ(r.json, 1);
  ASSERT_EQ(r.prog, 6);
  ASSERT_EQ(parse(&r, (const char *[]){"run", "--socket=/s", "--no-pty", "--", "-x", NULL}), FE_OK);
  ASSERT_STR_EQ(r.socket, "/s");
  ASSERT_EQ(r.prog, 5);
  ASSERT_EQ(r.pty, 0);
  ASSERT_EQ(parse(&r, (const char *[]){"run", "ls", NULL}), FE_OK);
  ASSERT_EQ(r.pty, 1);
  ASSERT(r.host == NULL && r.socket == NULL);
  /* The Node CLI's to judge: other commands, help, -c, unknown or malformed options, no PROGRAM. */
  const char *const *delegated[] = {
      (const char *[]){"call", "x", NULL},       (const char *[]){"run", NULL},
      (const char *[]){"run", "--json", NULL},   (const char *[]){"run", "--help", "ls", NULL},
      (const char *[]){"run", "-c", "rc", "ls", NULL}, (const char *[]){"run", "--bogus", "ls", NULL},
      (const char *[]){"run", "--host", NULL},   (const char *[]){"run", "--host", "", "ls", NULL},
      (const char *[]){"run", "--host", "-T", "ls", NULL}, (const char *[]){"run", "-Tx", "ls", NULL},
      (const char *[]){"run", "--host=", "ls", NULL}, (const char *[]){"--version", NULL},
      (const char *[]){"run", "--json=1", "ls", NULL}, (const char *[]){"run", "--pty", "ls", NULL},
      NULL};
  for (int i = 0; delegated[i]; i++)
    if (parse(&r, delegated[i]) != FE_DELEGATE) FAIL("case %d: not delegated", i);
}

static int parse_call(struct fe_call *c, int *pos, const char *const *args) {
  char *argv[32];
  int argc = 0;
  argv[argc++] = (char *)"rex";
  for (; *args; args++) argv[argc++] = (char *)*args;
  argv[argc] = NULL;
  c->pos = pos;
  return fe_parse_call(argc, argv, c);
}

TEST_IMPL(frontend_call_args) {
  struct fe_call c;
  int pos[32];
  /* Options anywhere among the operands, as commander reads them; negative numbers are operands. */
  ASSERT_EQ(parse_call(&c, pos, (const char *[]){"call", "beta.m.cbrt", "--json", "-27", "--timeout", "500", "--socket=/s", "-.5e1", NULL}), FE_OK);
  ASSERT_EQ(c.json, 1);
  ASSERT_STR_EQ(c.timeout, "500");
  ASSERT_STR_EQ(c.socket, "/s");
  ASSERT(c.hex == NULL);
  ASSERT_EQ(c.npos, 3);
  ASSERT_EQ(pos[0], 2);
  ASSERT_EQ(pos[1], 4);
  ASSERT_EQ(pos[2], 8);
  ASSERT_EQ(parse_call(&c, pos, (const char *[]){"call", "--hex", "0500", "--", "t.f", "--json", "-x", "-", NULL}), FE_OK);
  ASSERT_STR_EQ(c.hex, "0500");
  ASSERT_EQ(c.json, 0);
  ASSERT_EQ(c.npos, 4);
  ASSERT_EQ(pos[1], 6);
  ASSERT_EQ(parse_call(&c, pos, (const char *[]){"call", "--hex=ff", "t.f", NULL}), FE_OK);
  ASSERT_STR_EQ(c.hex, "ff");
  /* The Node CLI's to judge: help, -c, unknown or malformed options, what only looks like a number, no TARGET. */
  const char *const *delegated[] = {
      (const char *[]){"run", "x", NULL},          (const char *[]){"call", NULL},
      (const char *[]){"call", "--json", NULL},    (const char *[]){"call", "--help", "t.f", NULL},
      (const char *[]){"call", "-h", NULL},        (const char *[]){"call", "-c", "rc", "t.f", NULL},
      (const char *[]){"call", "t.f", "--bogus", NULL}, (const char *[]){"call", "t.f", "--timeout", NULL},
      (const char *[]){"call", "t.f", "--timeout", "", NULL}, (const char *[]){"call", "t.f", "--timeout", "-1", NULL},
      (const char *[]){"call", "t.f", "--hex=", NULL}, (const char *[]){"call", "t.f", "--json=1", NULL},
      (const char *[]){"call", "t.f", "-1e", NULL}, (const char *[]){"call", "t.f", "-1.", NULL},
      (const char *[]){"call", "t.f", "-0x10", NULL}, (const char *[]){"call", "t.f", "-1E5", NULL},
      (const char *[]){"call", "t.f", "--", NULL} /* no: this one is fine, checked below */,
      NULL};
  for (int i = 0; delegated[i + 1]; i++)
    if (parse_call(&c, pos, delegated[i]) != FE_DELEGATE) FAIL("case %d: not delegated", i);
  ASSERT_EQ(parse_call(&c, pos, (const char *[]){"call", "t.f", "--", NULL}), FE_OK);
  ASSERT_EQ(c.npos, 1);
}

static int rc(const char *text, const char *home, char *out) { return fe_rc_socket(text, strlen(text), home, out, 108); }

TEST_IMPL(frontend_rc_socket) {
  char s[108];
  ASSERT_EQ(rc("", "/home/u", s), FE_OK);
  ASSERT_STR_EQ(s, "/home/u/.rex/run/rexd.sock");
  ASSERT_EQ(rc("# a comment\n// another\n\nhost-name: alpha\r\nsocket : /run/x.sock \n", "/h", s), FE_OK);
  ASSERT_STR_EQ(s, "/run/x.sock");
  ASSERT_EQ(rc("state-directory: ~/st//\nservers: a b\n", "/h", s), FE_OK);
  ASSERT_STR_EQ(s, "/h/st/run/rexd.sock");
  ASSERT_EQ(rc("socket: ~\n", "/h", s), FE_OK);
  ASSERT_STR_EQ(s, "/h");
  ASSERT_EQ(rc("#comment include\n#includes are not this\n", "/h", s), FE_OK);
  static const char *const delegated[] = {
      "#include \"other.rc\"\n", "# include <x>\n", "#ifdef X\n", "socket: /a\\\n/b\n", "/* c */ socket: /a\n",
      "socket: ${HOME}/s\n", "socket: ~other/s\n", "socket: rel/s\n", "socket: /a\nsocket: /b\n",
      "bogus-key: 1\n", "no colon here\n", "socket:\n", "state-directory: /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
      ": x\n", NULL};
  for (int i = 0; delegated[i]; i++)
    if (rc(delegated[i], "/h", s) != FE_DELEGATE) FAIL("\"%s\": not delegated", delegated[i]);
  ASSERT_EQ(rc("", NULL, s), FE_DELEGATE); /* no HOME: the default is Node's to work out */
  ASSERT_EQ(fe_rc_socket("socket: /a\0b", 12, "/h", s, sizeof s), FE_DELEGATE);
}

TEST_IMPL(frontend_join) {
  char out[256];
  static const char *const cases[][3] = {{"/usr/bin", "ls", "/usr/bin/ls"},   {"/a/b/", "../c", "/a/c"},
                                         {"/", "../../x", "/x"},               {"bin", "ls", "bin/ls"},
                                         {"../x", "../../y", "../../y"},       {"/a", "./b/./c//", "/a/b/c/"},
                                         {"a", "..", "."},                     {"/w", "sub/../prog", "/w/prog"},
                                         {NULL, "/etc//rex/./rex.rc", "/etc/rex/rex.rc"}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    ASSERT_EQ(fe_join(cases[i][0], cases[i][1], out, sizeof out), 0);
    ASSERT_STR_EQ(out, cases[i][2]);
  }
  ASSERT_EQ(fe_join("/a", "bcdefgh", out, 4), -1);
}

TEST_IMPL(frontend_json_quote) {
  char buf[256];
  size_t n = 0;
  buf[0] = '\0';
  ASSERT_EQ(fe_json_string(buf, sizeof buf, &n, "a\"b\\c\n\t\x01\x1f\xc3\xa9"), 0);
  ASSERT_STR_EQ(buf, "\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\xc3\xa9\"");
  n = 0;
  ASSERT_EQ(fe_json_string(buf, 4, &n, "abcdef"), -1);
  fe_quote("a\tb\nc\x7f\xe2\x80\xa8", 80, 1, buf, sizeof buf);
  ASSERT_STR_EQ(buf, "a\\x09b\nc\\x7f\\u2028");
  fe_quote("a\nb", 80, 0, buf, sizeof buf);
  ASSERT_STR_EQ(buf, "a\\x0ab");
  fe_quote("abcdef", 3, 0, buf, sizeof buf);
  ASSERT_STR_EQ(buf, "abc... (6 bytes)");
  fe_quote("\xf0\x9f\x98\x80x", 2, 0, buf, sizeof buf); /* an astral character counts 2, as in UTF-16 */
  ASSERT_STR_EQ(buf, "\xf0\x9f\x98\x80... (5 bytes)");
}

static void hex(const uint8_t *d, char *out) {
  for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", d[i]);
}

TEST_IMPL(frontend_sha256) {
  struct fe_sha256 h;
  uint8_t d[32];
  char x[65];
  fe_sha256_init(&h);
  fe_sha256_final(&h, d);
  hex(d, x);
  ASSERT_STR_EQ(x, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  fe_sha256_init(&h);
  fe_sha256_update(&h, "abc", 3);
  fe_sha256_final(&h, d);
  hex(d, x);
  ASSERT_STR_EQ(x, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  /* One million 'a', fed in uneven pieces: block boundaries in every position. */
  static char a[1000];
  memset(a, 'a', sizeof a);
  fe_sha256_init(&h);
  for (size_t done = 0, step = 1; done < 1000000; done += step, step = step % 997 + 1) {
    if (done + step > 1000000) step = 1000000 - done;
    fe_sha256_update(&h, a, step);
  }
  fe_sha256_final(&h, d);
  hex(d, x);
  ASSERT_STR_EQ(x, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
