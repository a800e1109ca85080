/*
 * xsave.h: moving an XSAVE area from one CPU's layout to another's (docs/IMAGE.md
 * section 3.1, "Hosts with another layout"). Used by the restorer (freestanding:
 * no libc, no SSE) and by the C tests, so: static inline, fixed-width types,
 * byte loops.
 *
 * Both areas are in the standard (non-compacted) form: the dumper uses XSAVE,
 * never XSAVEC/XSAVES, so an image never holds a compacted area (its XCOMP_BV
 * is zero, which the restorer checks). A CPU's standard layout is what CPUID
 * leaf 0xD reports: subleaf i gives component i's offset (EBX) and size (EAX).
 * Components 0 and 1 (x87, SSE) are the 512-byte legacy area, the same on
 * every CPU, followed by the 64-byte XSAVE header; components 2..15 sit where
 * each CPU puts them (AMD's AVX-512 lower than Intel's, which leaves room for
 * MPX), so the same state can be at different offsets on two hosts.
 */
#ifndef REX_XSAVE_H
#define REX_XSAVE_H

#include "image_util.h"

/*
 * The components glibc's lazy-binding trampoline saves (STATE_SAVE_MASK of
 * sysdeps/x86/sysdep.h: SSE, AVX, MPX bounds, AVX-512 opmask, ZMM upper
 * halves, ZMM16-31) into a stack buffer sized from CPUID at the process's
 * start: a restoring CPU may not enable more of them than the image's did.
 */
#define REX_GLIBC_STATE_SAVE_MASK ((1ull << 1) | (1ull << 2) | (1ull << 3) | (1ull << 5) | (1ull << 6) | (1ull << 7))

/* One CPU's standard-form layout of the components its XCR0 enables. */
struct rex_xsave_layout {
  uint64_t xcr0;                             /* XGETBV(0): the components the OS enables */
  uint32_t size;                             /* CPUID.(0Dh,0).EBX: bytes of the whole area for XCR0 */
  struct rex_img_xcomp comp[REX_IMG_NXCOMP]; /* 2..15: CPUID.(0Dh,i) EBX, EAX; zero where XCR0 has none */
};

/* The image's layout, as its header records it. */
static inline struct rex_xsave_layout rex_xsave_image_layout(const struct rex_img_header *h) {
  struct rex_xsave_layout l;
  l.xcr0 = h->xcr0;
  l.size = h->xsave_size;
  for (unsigned i = 0; i < REX_IMG_NXCOMP; i++) l.comp[i] = h->xsave_comp[i];
  return l;
}

/* What rex_xsave_compare and rex_xsave_convert find. */
enum rex_xsave_result {
  REX_XSAVE_SAME = 0,     /* every component asked about is at the same offset with the same size: a plain copy does */
  REX_XSAVE_MOVED = 1,    /* the same components, the same sizes, some at other offsets: the area must be converted */
  REX_XSAVE_MISSING = -1, /* the target CPU does not have a component (or it is 16 and above: images carry 0..15) */
  REX_XSAVE_RESIZED = -2, /* the target CPU has a component at another size */
  REX_XSAVE_SHORT = -3,   /* convert: a component in use lies outside the stored bytes or the target buffer */
  REX_XSAVE_INVALID = -4  /* XSTATE_BV names a component the source's XCR0 does not enable */
};

/* A short name for user components (for messages); "" for the rest. */
static inline const char *rex_xsave_name(unsigned i) {
  switch (i) {
  case 0: return "x87";
  case 1: return "SSE";
  case 2: return "AVX";
  case 3: return "MPX bounds";
  case 4: return "MPX BNDCSR";
  case 5: return "AVX-512 opmask";
  case 6: return "AVX-512 ZMM0-15 upper halves";
  case 7: return "AVX-512 ZMM16-31";
  case 9: return "PKRU";
  case 17: return "AMX tile config";
  case 18: return "AMX tile data";
  default: return "";
  }
}

/*
 * Compares where `from` and `to` put the components of `which` (bits 2..63;
 * 0 and 1, the legacy area, are the same everywhere). The first problem, in
 * ascending component order, is returned with its index in *bad.
 */
static inline int rex_xsave_compare(const struct rex_xsave_layout *from, const struct rex_xsave_layout *to, uint64_t which,
                                    unsigned *bad) {
  int moved = 0;
  *bad = 0;
  for (unsigned i = 2; i < 64; i++) {
    if (!(which >> i & 1)) continue;
    *bad = i;
    if (!(from->xcr0 >> i & 1)) return REX_XSAVE_INVALID;
    if (i >= REX_IMG_NXCOMP || !(to->xcr0 >> i & 1)) return REX_XSAVE_MISSING;
    if (from->comp[i].size != to->comp[i].size) return REX_XSAVE_RESIZED;
    if (from->comp[i].offset != to->comp[i].offset) moved = 1;
  }
  *bad = 0;
  return moved ? REX_XSAVE_MOVED : REX_XSAVE_SAME;
}

static inline uint64_t rex_xsave_rd64(const uint8_t *p) {
  uint64_t v = 0;
  for (unsigned k = 0; k < 8; k++) v |= (uint64_t)p[k] << (8 * k);
  return v;
}

/*
 * Writes into dst (dst_size bytes, all of them written) the standard-form
 * area the `to` CPU's XRSTOR reads for the state in src (src_len bytes
 * stored, standard form, laid out as `from` says): the legacy area copied,
 * XSTATE_BV as in src, XCOMP_BV and the rest of the header zero, each
 * component in use copied from its `from` offset to its `to` offset, every
 * other byte zero (components not in use are in their initial state; XRSTOR
 * does not read them). Refused (nothing written) when a component in use is
 * missing on `to` or has another size there, lies outside src_len or dst_size,
 * or is not in `from`'s XCR0; *bad names it. Returns SAME or MOVED on success.
 */
static inline int rex_xsave_convert(uint8_t *dst, uint32_t dst_size, const uint8_t *src, uint32_t src_len,
                                    const struct rex_xsave_layout *from, const struct rex_xsave_layout *to, unsigned *bad) {
  *bad = 0;
  if (src_len < REX_IMG_XSAVE_MIN || dst_size < REX_IMG_XSAVE_MIN) return REX_XSAVE_SHORT;
  uint64_t bv = rex_xsave_rd64(src + 512);
  int r = rex_xsave_compare(from, to, bv, bad);
  if (r < 0) return r;
  for (unsigned i = 2; i < REX_IMG_NXCOMP; i++) {
    if (!(bv >> i & 1)) continue;
    if ((uint32_t)from->comp[i].offset + from->comp[i].size > src_len || (uint32_t)to->comp[i].offset + to->comp[i].size > dst_size ||
        from->comp[i].offset < REX_IMG_XSAVE_MIN || to->comp[i].offset < REX_IMG_XSAVE_MIN) {
      *bad = i;
      return REX_XSAVE_SHORT;
    }
  }
  for (uint32_t k = 0; k < dst_size; k++) dst[k] = 0;
  for (uint32_t k = 0; k < 512; k++) dst[k] = src[k];
  for (unsigned k = 0; k < 8; k++) dst[512 + k] = (uint8_t)(bv >> (8 * k));
  for (unsigned i = 2; i < REX_IMG_NXCOMP; i++) {
    if (!(bv >> i & 1)) continue;
    const uint8_t *s = src + from->comp[i].offset;
    uint8_t *d = dst + to->comp[i].offset;
    for (uint32_t k = 0; k < to->comp[i].size; k++) d[k] = s[k];
  }
  return r;
}

/* Bytes of `l`'s area up to the end of the last of the components `mask` names (at least the legacy area and header). */
static inline uint32_t rex_xsave_extent(const struct rex_xsave_layout *l, uint64_t mask) {
  uint32_t end = REX_IMG_XSAVE_MIN;
  for (unsigned i = 2; i < REX_IMG_NXCOMP; i++)
    if (mask >> i & 1 && l->xcr0 >> i & 1 && (uint32_t)l->comp[i].offset + l->comp[i].size > end)
      end = (uint32_t)l->comp[i].offset + l->comp[i].size;
  return end;
}

#endif /* REX_XSAVE_H */
