/*
 * fp_parse: runs the file channel's parsers (native/src/fileproxy.h) on
 * hex-encoded input, for the property test test/rfork/fileproxy.test.ts,
 * which compares their verdicts with a model of docs/RFORK.md 4.1.
 *   stdin, one per line:  Q HEX            a request
 *                         R OP WANT HEX    an answer to a request of OP
 *   stdout, one per line: OK USED OP FD LEN AUX A B   (requests)
 *                         OK USED RESULT LEN          (answers)
 *                         MORE | BAD WHY
 */
#include "fileproxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t unhex(const char *s, uint8_t *out, size_t cap) {
  size_t n = 0;
  while (s[0] && s[1] && n < cap) {
    unsigned v;
    if (sscanf(s, "%2x", &v) != 1) break;
    out[n++] = (uint8_t)v;
    s += 2;
  }
  return n;
}

int main(void) {
  static char line[1 << 20];
  static uint8_t buf[1 << 19];
  while (fgets(line, sizeof line, stdin)) {
    char why[200] = "";
    if (line[0] == 'Q' && line[1] == ' ') {
      size_t n = unhex(line + 2, buf, sizeof buf);
      uint8_t *exact = malloc(n ? n : 1); /* exactly n bytes: a read past them is caught under ASan */
      memcpy(exact, buf, n);
      struct rex_fp_req rq;
      long r = rex__fp_parse_req(exact, n, &rq, why, sizeof why);
      if (r > 0)
        printf("OK %ld %u %d %u %u %lld %lld\n", r, rq.op, rq.fd, rq.len, rq.aux, (long long)rq.a, (long long)rq.b);
      else
        printf(r == 0 ? "MORE\n" : "BAD %s\n", why);
      free(exact);
    } else if (line[0] == 'R' && line[1] == ' ') {
      unsigned op, want;
      int off = 0;
      if (sscanf(line + 2, "%u %u %n", &op, &want, &off) != 2) return 2;
      size_t n = unhex(line + 2 + off, buf, sizeof buf);
      uint8_t *exact = malloc(n ? n : 1);
      memcpy(exact, buf, n);
      struct rex_fp_resp rs;
      long r = rex__fp_parse_resp(exact, n, (uint16_t)op, want, &rs, why, sizeof why);
      if (r > 0)
        printf("OK %ld %lld %u\n", r, (long long)rs.result, rs.len);
      else
        printf(r == 0 ? "MORE\n" : "BAD %s\n", why);
      free(exact);
    } else {
      return 2;
    }
    fflush(stdout);
  }
  return 0;
}
