/*
 * test_xsave.c: the XSAVE layout converter (src/xsave.h) between layouts of
 * CPUs the developers do not have. Intel's standard-form offsets are those
 * Intel CPUs enumerate in CPUID leaf 0xD (Intel SDM Vol. 1, section 13.4.3 and
 * 13.5: "CPUID.(EAX=0DH,ECX=i):EBX enumerates the offset"; Skylake-SP and later:
 * AVX 576, MPX 960/1024, AVX-512 1088/1152/1664, PKRU 2688); AMD Zen 5's are
 * recorded in test/fixtures/cpu/amd-zen5-avx512.json (AVX-512 at 832/896/1408).
 * test/migration/xsave-convert.test.ts runs the same converter over every
 * recorded layout through rex_xsave_conv.
 */
#include <stdlib.h>
#include <string.h>

#include "runner.h"
#include "xsave.h"

static struct rex_xsave_layout intel(void) {
  struct rex_xsave_layout l;
  memset(&l, 0, sizeof l);
  l.xcr0 = 0x2ff, l.size = 2696;
  static const uint16_t at[][3] = {{2, 576, 256}, {3, 960, 64}, {4, 1024, 64}, {5, 1088, 64}, {6, 1152, 512}, {7, 1664, 1024}, {9, 2688, 8}};
  for (unsigned k = 0; k < sizeof at / sizeof at[0]; k++) l.comp[at[k][0]].offset = at[k][1], l.comp[at[k][0]].size = at[k][2];
  return l;
}

static struct rex_xsave_layout zen5(void) {
  struct rex_xsave_layout l;
  memset(&l, 0, sizeof l);
  l.xcr0 = 0xe7, l.size = 2432;
  static const uint16_t at[][3] = {{2, 576, 256}, {5, 832, 64}, {6, 896, 512}, {7, 1408, 1024}};
  for (unsigned k = 0; k < sizeof at / sizeof at[0]; k++) l.comp[at[k][0]].offset = at[k][1], l.comp[at[k][0]].size = at[k][2];
  return l;
}

/* A standard-form area of `l` with random bytes everywhere but the header, and XSTATE_BV = bv. */
static void fill(uint8_t *a, const struct rex_xsave_layout *l, uint64_t bv, unsigned seed) {
  srand(seed);
  for (uint32_t k = 0; k < l->size; k++) a[k] = (uint8_t)rand();
  memset(a + 512, 0, 64);
  for (unsigned k = 0; k < 8; k++) a[512 + k] = (uint8_t)(bv >> (8 * k));
}

TEST_IMPL(xsave_convert_intel_amd_round_trip) {
  struct rex_xsave_layout i = intel(), z = zen5();
  static uint8_t src[4096], mid[4096], back[4096];
  for (unsigned seed = 1; seed <= 200; seed++) {
    uint64_t bv = 3 | ((uint64_t)rand() & 0xe4); /* any of 2, 5, 6, 7 */
    fill(src, &i, bv, seed);
    unsigned bad = 99;
    ASSERT_EQ(rex_xsave_convert(mid, z.size, src, i.size, &i, &z, &bad), (bv & 0xe0) ? REX_XSAVE_MOVED : REX_XSAVE_SAME);
    ASSERT_EQ(bad, 0);
    ASSERT(memcmp(mid, src, 512) == 0);
    ASSERT_EQ(rex_xsave_rd64(mid + 512), bv);
    for (unsigned k = 520; k < 576; k++) ASSERT_EQ(mid[k], 0);
    ASSERT_EQ(rex_xsave_convert(back, i.size, mid, z.size, &z, &i, &bad), (bv & 0xe0) ? REX_XSAVE_MOVED : REX_XSAVE_SAME);
    ASSERT(memcmp(back, src, 576) == 0);
    for (unsigned c = 2; c < 16; c++) {
      const struct rex_img_xcomp *p = &i.comp[c];
      if (!(i.xcr0 >> c & 1)) continue;
      if (bv >> c & 1) {
        ASSERT(memcmp(back + p->offset, src + p->offset, p->size) == 0);
        ASSERT(memcmp(mid + z.comp[c].offset, src + p->offset, p->size) == 0);
      } else {
        for (unsigned k = 0; k < p->size; k++) ASSERT_EQ(back[p->offset + k], 0);
      }
    }
  }
}

TEST_IMPL(xsave_convert_refusals) {
  struct rex_xsave_layout i = intel(), z = zen5();
  static uint8_t src[4096], dst[4096];
  unsigned bad;
  /* MPX in use on Intel: Zen 5 has no MPX. */
  fill(src, &i, 0x1f, 7);
  memset(dst, 0xaa, sizeof dst);
  ASSERT_EQ(rex_xsave_convert(dst, z.size, src, i.size, &i, &z, &bad), REX_XSAVE_MISSING);
  ASSERT_EQ(bad, 3);
  ASSERT_EQ(dst[0], 0xaa); /* nothing written */
  /* PKRU in use: Zen 5's XCR0 here has none. */
  fill(src, &i, 0x207, 8);
  ASSERT_EQ(rex_xsave_convert(dst, z.size, src, i.size, &i, &z, &bad), REX_XSAVE_MISSING);
  ASSERT_EQ(bad, 9);
  /* Enabled but not in use on Intel: converts. */
  fill(src, &i, 0x7, 9);
  ASSERT_EQ(rex_xsave_convert(dst, z.size, src, i.size, &i, &z, &bad), REX_XSAVE_SAME);
  /* The same component at another size. */
  struct rex_xsave_layout odd = z;
  odd.comp[7].size = 512;
  fill(src, &i, 0x87, 10);
  ASSERT_EQ(rex_xsave_convert(dst, z.size, src, i.size, &i, &odd, &bad), REX_XSAVE_RESIZED);
  ASSERT_EQ(bad, 7);
  /* In use but not stored, and not in the source's XCR0. */
  ASSERT_EQ(rex_xsave_convert(dst, z.size, src, 1600, &i, &z, &bad), REX_XSAVE_SHORT);
  ASSERT_EQ(bad, 7);
  fill(src, &z, 0x1b, 11); /* MPX bits on a CPU without MPX */
  ASSERT_EQ(rex_xsave_convert(dst, i.size, src, z.size, &z, &i, &bad), REX_XSAVE_INVALID);
  ASSERT_EQ(bad, 3);
  /* AMX tile data in use (component 18): images carry 0..15. */
  struct rex_xsave_layout amx = i;
  amx.xcr0 |= 1ull << 18;
  fill(src, &amx, 3 | (1ull << 18), 12);
  ASSERT_EQ(rex_xsave_convert(dst, i.size, src, i.size, &amx, &amx, &bad), REX_XSAVE_MISSING);
  ASSERT_EQ(bad, 18);
}

TEST_IMPL(xsave_compare_superset) {
  struct rex_xsave_layout i = intel(), z = zen5(), avx;
  memset(&avx, 0, sizeof avx);
  avx.xcr0 = 7, avx.size = 832, avx.comp[2].offset = 576, avx.comp[2].size = 256;
  unsigned bad;
  /* An AVX-only image on either AVX-512 CPU: nothing moves (fast path); the other way, AVX-512 is missing. */
  ASSERT_EQ(rex_xsave_compare(&avx, &i, avx.xcr0, &bad), REX_XSAVE_SAME);
  ASSERT_EQ(rex_xsave_compare(&avx, &z, avx.xcr0, &bad), REX_XSAVE_SAME);
  ASSERT_EQ(rex_xsave_compare(&z, &avx, z.xcr0, &bad), REX_XSAVE_MISSING);
  ASSERT_EQ(bad, 5);
  ASSERT_EQ(rex_xsave_compare(&z, &i, z.xcr0, &bad), REX_XSAVE_MOVED);
  ASSERT_EQ(rex_xsave_extent(&i, i.xcr0), 2696);
  ASSERT_EQ(rex_xsave_extent(&z, 0x7), 832);
}
