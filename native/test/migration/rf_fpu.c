/*
 * rf_fpu: floating-point state in the middle of a computation moves with
 * rfork(): MXCSR (rounding down, flush-to-zero), the x87 control word
 * (64-bit precision, rounding up), a double and a long double series half done
 * before and finished after; the child's results must equal the parent's bit
 * for bit. errno set before rfork is unchanged in the child.
 */
#include "zdtm.h"

#include <immintrin.h>

#define N 200000

static double dsum(int from, int to, double s) {
  for (int k = from; k < to; k++) s += 1.0 / ((double)k * 3.0 + 1.0);
  return s;
}

static long double lsum(int from, int to, long double s) {
  for (int k = from; k < to; k++) s += 1.0L / ((long double)k * 7.0L + 3.0L);
  return s;
}

int main(int argc, char **argv) {
  ZDTM_INIT("rf_fpu", argc, argv);
  unsigned mxcsr = (_mm_getcsr() & ~0x6000u) | 0x2000u | 0x8000u; /* round down, flush to zero */
  _mm_setcsr(mxcsr);
  unsigned short cw;
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  cw = (unsigned short)((cw & ~0x0f00u) | 0x0300u | 0x0800u); /* 64-bit precision, round up */
  __asm__ volatile("fldcw %0" : : "m"(cw));
  volatile double d = dsum(1, N / 2, 0.0);
  volatile long double l = lsum(1, N / 2, 0.0L);
  int p[2];
  if (pipe(p)) fail("pipe");
  errno = EDOM;
  pid_t pid = rfork();
  int e = errno;
  if (pid < 0) fail("rfork: %s", rex_last_error());
  double dfull = dsum(N / 2, N, d);
  long double lfull = lsum(N / 2, N, l);
  if (pid > 0) {
    if (write(p[1], &dfull, sizeof dfull) != sizeof dfull || write(p[1], &lfull, sizeof lfull) != sizeof lfull) fail("write");
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
  }
  if (e != EDOM) fail("errno %d, expected EDOM", e);
  if ((_mm_getcsr() & ~0x3fu) != (mxcsr & ~0x3fu)) fail("MXCSR control bits 0x%x, expected 0x%x", _mm_getcsr() & ~0x3fu, mxcsr & ~0x3fu); /* the low 6 are sticky exception flags */
  unsigned short now;
  __asm__ volatile("fnstcw %0" : "=m"(now));
  if (now != cw) fail("x87 control word 0x%x, expected 0x%x", now, cw);
  double pd;
  long double pl;
  if (read(p[0], &pd, sizeof pd) != sizeof pd || read(p[0], &pl, sizeof pl) != sizeof pl) fail("read");
  if (memcmp(&pd, &dfull, sizeof pd)) fail("double series %.17g, the parent's %.17g", dfull, pd);
  if (memcmp(&pl, &lfull, 10)) fail("long double series %.21Lg, the parent's %.21Lg", lfull, pl);
  /* And the same from scratch here, so a wrong mode on both sides cannot agree by accident. */
  if (dsum(1, N, 0.0) == dsum(1, N, 0.0) + 0.0 && memcmp(&(double){dsum(N / 2, N, dsum(1, N / 2, 0.0))}, &dfull, sizeof dfull))
    fail("series from scratch differs");
  pass();
}
