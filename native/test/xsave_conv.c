/*
 * rex_xsave_conv: runs the restorer's XSAVE converter (src/xsave.h) on cases
 * read from stdin, for the property tests of test/migration/xsave-convert.test.ts.
 * All numbers little-endian. Each case:
 *   from layout, to layout   each: u64 xcr0, u32 size, 16 x (u16 offset, u16 size)   (76 bytes)
 *   u32 src_len, u32 dst_size, src_len bytes of the source area
 * For each case it writes: i32 result (enum rex_xsave_result), u32 bad
 * component, then dst_size bytes of the converted area when result >= 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xsave.h"

static int get(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }

static int layout(struct rex_xsave_layout *l) {
  memset(l, 0, sizeof *l);
  if (!get(&l->xcr0, 8) || !get(&l->size, 4)) return 0;
  for (unsigned i = 0; i < REX_IMG_NXCOMP; i++)
    if (!get(&l->comp[i].offset, 2) || !get(&l->comp[i].size, 2)) return 0;
  return 1;
}

int main(void) {
  static uint8_t src[REX_IMG_MAX_XSAVE], dst[REX_IMG_MAX_XSAVE];
  struct rex_xsave_layout from, to;
  for (unsigned n = 0;; n++) {
    if (!layout(&from)) return 0; /* end of input */
    uint32_t src_len, dst_size;
    if (!layout(&to) || !get(&src_len, 4) || !get(&dst_size, 4) || src_len > sizeof src || dst_size > sizeof dst ||
        !get(src, src_len)) {
      fprintf(stderr, "rex_xsave_conv: case %u is truncated or too large\n", n);
      return 2;
    }
    unsigned bad = 0;
    int32_t r = rex_xsave_convert(dst, dst_size, src, src_len, &from, &to, &bad);
    uint32_t b = bad;
    fwrite(&r, 4, 1, stdout);
    fwrite(&b, 4, 1, stdout);
    if (r >= 0) fwrite(dst, 1, dst_size, stdout);
  }
}
