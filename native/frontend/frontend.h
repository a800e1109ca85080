/*
 * frontend.h: the parts of the native `rex` front end (rex.c) that need no
 * process of their own, kept apart so the C tests run them under ASan+UBSan
 * (native/test/test_frontend.c): the `rex run` and `rex call` argument parsers, the strict
 * rex.rc scanner that finds the socket, lexical path joining as Node's
 * path.join does, JSON string quoting as JSON.stringify does, the message
 * quoting of src/util/quote.ts, and SHA-256.
 *
 * Every "cannot be sure" answer is FE_DELEGATE: the caller then runs the Node
 * CLI with the same argv, which decides (docs/man/rex.1.md, NATIVE FRONT END).
 */
#ifndef REX_FRONTEND_H
#define REX_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

#define FE_OK 0
#define FE_DELEGATE 1

/* `rex run [--host H] [-T|--no-pty] [--socket P] [--json] [--] PROGRAM [ARGS...]` as commander parses it. */
struct fe_run {
  const char *host;   /* --host, or NULL */
  const char *socket; /* --socket, or NULL */
  int pty;            /* 0 after -T/--no-pty */
  int json;           /* --json */
  int prog;           /* index in argv of PROGRAM; its arguments follow it */
};

/* argv[1] must be "run". FE_OK and *r, or FE_DELEGATE for anything the Node CLI must judge (help, -c, usage errors...). */
int fe_parse_run(int argc, char *const argv[], struct fe_run *r);

/*
 * `rex call [--socket P] [--json] [--hex FRAME] [--timeout MS] [--] TARGET [ARGS...]` as commander parses it:
 * options anywhere among the arguments until `--`.
 */
struct fe_call {
  const char *socket;  /* --socket, or NULL */
  const char *hex;     /* --hex, or NULL */
  const char *timeout; /* --timeout as written, or NULL (the CLI's default) */
  int json;            /* --json */
  int npos;            /* TARGET and ARGS: their indexes in argv, in order, in pos[0..npos) */
  int *pos;            /* the caller's array of argc ints */
};

/* argv[1] must be "call". FE_OK and *c, or FE_DELEGATE for anything the Node CLI must judge (help, -c, usage errors...). */
int fe_parse_call(int argc, char *const argv[], struct fe_call *c);

/* The rex.rc keys src/config/keys.ts defines (test/frontend/native-rex.test.ts checks the list against it). */
extern const char *const fe_rc_keys[];

/*
 * The socket a rex.rc's text gives, as src/config/load.ts would: `socket`, else
 * `state-directory`/run/rexd.sock, else HOME/.rex/run/rexd.sock. FE_DELEGATE for
 * anything the scanner does not fully understand (#include and other directives,
 * block comments, line splicing, an unknown or repeated key, a socket or
 * state-directory value with $ or ~USER, not absolute, or too long). out: 108 bytes.
 */
int fe_rc_socket(const char *text, size_t len, const char *home, char *out, size_t cap);

/* Node's path.join(a, b) (b may be NULL): joined with '/', then '.', '..' and repeated '/' resolved lexically. */
int fe_join(const char *a, const char *b, char *out, size_t cap);

/* Appends s as JSON.stringify writes a string (quotes included) to buf[*len..cap); 0, or -1 when it does not fit. */
int fe_json_string(char *buf, size_t cap, size_t *len, const char *s);

/* src/util/quote.ts quote(s, max, keepLines) of UTF-8 text into out (cut to cap). */
void fe_quote(const char *s, size_t max, int keep_lines, char *out, size_t cap);

/* SHA-256 */
struct fe_sha256 {
  uint32_t h[8];
  uint64_t n;
  uint8_t buf[64];
  size_t fill;
};
void fe_sha256_init(struct fe_sha256 *s);
void fe_sha256_update(struct fe_sha256 *s, const void *data, size_t len);
void fe_sha256_final(struct fe_sha256 *s, uint8_t out[32]);

#endif
