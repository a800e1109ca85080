/*
 * image_util.h: what the dumper (src/dump.c), the restorer (restorer/) and
 * the XSAVE converter (xsave.h) do with an rfork image: check its XSAVE
 * layout and CPU profile, read this CPU's profile, walk a region's carried
 * pages, hash with XXH64. Written by hand; the layout itself (structs,
 * constants, kinds, rex_img_layout) is image.h, generated from
 * schema/image.json.
 *
 * Freestanding, like image.h: the restorer includes it.
 */
#ifndef REX_IMAGE_UTIL_H
#define REX_IMAGE_UTIL_H

#include "image.h"

/*
 * struct rex_img_xcomp (image_cpu.h): where the dumping CPU puts one XSAVE
 * state component in the standard (non-compacted) form: CPUID.(EAX=0Dh,
 * ECX=i) EBX (offset) and EAX (size). Vendors differ (AMD's AVX-512
 * components sit lower than Intel's, with no MPX before them), so no reader
 * may assume a table of its own: each takes the layout from the image, and
 * the restorer compares it with its own CPU's.
 */

_Static_assert(sizeof(struct rex_img_cpu) == REX_IMG_CPU_SIZE, "struct rex_img_cpu as schema/image-cpu.json says");
_Static_assert(offsetof(struct rex_img_cpu, in_use) == REX_IMG_CPU_OFF_IN_USE, "cpu.in_use as schema/image-cpu.json says");
_Static_assert(offsetof(struct rex_img_cpu, reserved) == REX_IMG_CPU_OFF_RESERVED, "cpu.reserved as schema/image-cpu.json says");
_Static_assert(offsetof(struct rex_img_header, xsave_comp) == REX_IMG_OFF_XSAVE_COMP, "xsave_comp where schema/image-cpu.json says");
_Static_assert(offsetof(struct rex_img_header, cpu) == REX_IMG_OFF_CPU, "cpu where schema/image-cpu.json says");

/*
 * Checks the header's XSAVE layout against its XCR0 and xsave_size: an
 * entry for exactly the components 2..15 XCR0 enables, each inside the area
 * after the legacy region and header (576), none overlapping another.
 * Returns the first bad component index, or -1; *why says what is wrong.
 */
static inline int rex_img_check_xcomp(const struct rex_img_header *h, const char **why) {
  for (unsigned i = 0; i < REX_IMG_NXCOMP; i++) {
    const struct rex_img_xcomp *c = &h->xsave_comp[i];
    int on = i >= 2 && (h->xcr0 >> i & 1);
    if (!on) {
      if (c->offset || c->size) {
        *why = i < 2 ? "the legacy area's components have no entry (must be zero)" : "an entry for a component the image's XCR0 does not enable";
        return (int)i;
      }
      continue;
    }
    if (c->size == 0 || c->offset < 576u || (uint32_t)c->offset + c->size > h->xsave_size) {
      *why = "component outside 576..xsave_size, or of size 0";
      return (int)i;
    }
    for (unsigned j = 2; j < i; j++) {
      const struct rex_img_xcomp *d = &h->xsave_comp[j];
      if (d->size && c->offset < (uint32_t)d->offset + d->size && d->offset < (uint32_t)c->offset + c->size) {
        *why = "overlaps another component";
        return (int)i;
      }
    }
  }
  return -1;
}

/* CPUID (leaf, subleaf) into r[4] = eax, ebx, ecx, edx. */
static inline void rex_img_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
  __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(subleaf));
}

/*
 * This CPU's profile as header.cpu records it: leaf 0, leaf 1 EAX and the raw
 * feature registers (has[]). A leaf above the CPU's highest (basic, extended,
 * or leaf 7's highest subleaf) reads as zero, as src/cpu/profile.ts does.
 * in_use[] is the table's bits of has[]; the dumper then clears those
 * GLIBC_TUNABLES turned off.
 */
static inline void rex_img_cpu_read(struct rex_img_cpu *p) {
  uint32_t r[4];
  rex_img_cpuid(0, 0, p->leaf0);
  rex_img_cpuid(1, 0, r);
  p->leaf1_eax = r[0];
  uint32_t max = p->leaf0[0], max7 = 0, maxext;
  if (max >= 7) rex_img_cpuid(7, 0, r), max7 = r[0];
  rex_img_cpuid(0x80000000u, 0, r);
  maxext = r[0];
  for (unsigned i = 0; i < REX_IMG_CPU_NREGS; i++) {
    const struct rex_img_cpu_regdef *d = &rex_img_cpu_regs[i];
    int ok = d->leaf >= 0x80000000u ? d->leaf <= maxext : d->leaf <= max && (d->leaf != 7 || d->subleaf <= max7);
    if (ok) rex_img_cpuid(d->leaf, d->subleaf, r);
    p->has[i] = ok ? r[d->reg] : 0;
    p->in_use[i] = p->has[i] & rex_img_feature_mask[i];
  }
  p->reserved = 0;
}

/* What is wrong with a header.cpu: the field (index -1 when not an array), its offset in the header, why, the value. */
struct rex_img_cpu_fault {
  const char *field;
  int index;
  uint32_t offset;
  const char *why;
  uint32_t value;
};

/*
 * Checks header.cpu (docs/IMAGE.md section 2.4); the TypeScript reader checks
 * the same, in the same order, naming the same field. Returns 1 and fills *f
 * at the first fault, 0 when sound.
 */
static inline int rex_img_check_cpu(const struct rex_img_cpu *p, struct rex_img_cpu_fault *f) {
#define REX_CPU_FAULT(name, idx, off, text, v) \
  do { f->field = name, f->index = idx, f->offset = REX_IMG_OFF_CPU + (off), f->why = text, f->value = v; return 1; } while (0)
  if (p->leaf0[0] < 0xd)
    REX_CPU_FAULT("leaf0", 0, REX_IMG_CPU_OFF_LEAF0, "highest CPUID leaf below 0xd, yet the image has an XSAVE area", p->leaf0[0]);
  for (unsigned i = 1; i < 4; i++)
    for (unsigned k = 0; k < 32; k += 8) {
      uint32_t ch = p->leaf0[i] >> k & 0xff;
      if (ch < 0x20 || ch > 0x7e) REX_CPU_FAULT("leaf0", (int)i, REX_IMG_CPU_OFF_LEAF0 + 4 * i, "vendor string not printable ASCII", p->leaf0[i]);
    }
  if ((p->leaf1_eax & 0xf000c000u) || (p->leaf1_eax >> 8 & 0xf) == 0)
    REX_CPU_FAULT("leaf1_eax", -1, REX_IMG_CPU_OFF_LEAF1_EAX, "reserved bits set or family 0", p->leaf1_eax);
  if ((p->has[0] & 0x0c000000u) != 0x0c000000u) /* rex_img_cpu_regs[0] is leaf 1 ECX: XSAVE bit 26, OSXSAVE bit 27 */
    REX_CPU_FAULT("has", 0, REX_IMG_CPU_OFF_HAS, "the origin CPU must have XSAVE and OSXSAVE: the image has an XSAVE area", p->has[0]);
  for (unsigned i = 0; i < REX_IMG_CPU_NREGS; i++) {
    if (p->in_use[i] & ~rex_img_feature_mask[i])
      REX_CPU_FAULT("in_use", (int)i, REX_IMG_CPU_OFF_IN_USE + 4 * i, "bits that name no feature of the table", p->in_use[i]);
    if (p->in_use[i] & ~p->has[i])
      REX_CPU_FAULT("in_use", (int)i, REX_IMG_CPU_OFF_IN_USE + 4 * i, "a feature in use that the origin CPU does not have", p->in_use[i]);
  }
  if (p->reserved) REX_CPU_FAULT("reserved", -1, REX_IMG_CPU_OFF_RESERVED, "must be zero", p->reserved);
  return 0;
#undef REX_CPU_FAULT
}

/* Bitmap words a region of npages pages needs. */
static inline uint64_t rex_img_bitmap_words(uint64_t npages) { return (npages + 63) / 64; }

/* Index of the lowest set bit of a non-zero word (bsf/tzcnt: no libgcc call in the restorer). */
static inline unsigned rex_img_ctz64(uint64_t v) { return (unsigned)__builtin_ctzll(v); }

/* Set bits of a word; written out because __builtin_popcountll calls libgcc without -mpopcnt. */
static inline unsigned rex_img_popcount64(uint64_t v) {
  v = v - ((v >> 1) & 0x5555555555555555ull);
  v = (v & 0x3333333333333333ull) + ((v >> 2) & 0x3333333333333333ull);
  v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return (unsigned)((v * 0x0101010101010101ull) >> 56);
}

/*
 * The next extent (consecutive carried pages) of region r, in ascending
 * order, whichever way the region lists them. *cursor starts at 0 and is
 * private to this function. Returns 0 when the region has no more. The
 * tables must have been validated (indices in range, no bits past the
 * region's last page).
 */
static inline int rex_img_next_extent(const struct rex_img_region *r, const struct rex_img_run *runs, const uint64_t *words,
                                      uint64_t *cursor, uint64_t *addr, uint64_t *npages) {
  if (r->page_map == REX_IMG_MAP_RUNS) {
    if (*cursor >= r->nruns) return 0;
    const struct rex_img_run *u = &runs[r->first_run + *cursor];
    (*cursor)++;
    *addr = u->addr, *npages = u->npages;
    return 1;
  }
  const uint64_t *w = words + r->first_word;
  uint64_t n = (r->end - r->start) / REX_IMG_PAGE, k = *cursor;
  while (k < n) { /* the next set bit */
    uint64_t bits = w[k >> 6] >> (k & 63);
    if (bits) {
      k += rex_img_ctz64(bits);
      break;
    }
    k = (k | 63) + 1;
  }
  if (k >= n) {
    *cursor = n;
    return 0;
  }
  uint64_t first = k;
  while (k < n) { /* the next clear bit; the zeros shifted in from the top read as set */
    uint64_t clear = ~w[k >> 6] >> (k & 63);
    if (clear) {
      k += rex_img_ctz64(clear);
      break;
    }
    k = (k | 63) + 1;
  }
  if (k > n) k = n;
  *cursor = k;
  *addr = r->start + first * REX_IMG_PAGE, *npages = k - first;
  return 1;
}

/*
 * XXH64 (Yann Collet's xxHash, 64-bit), written from its specification,
 * with a streaming state that takes whole 32-byte stripes until the last call.
 * Both image hashes use seed 0.
 */
#define REX_XXH_P1 0x9E3779B185EBCA87ull
#define REX_XXH_P2 0xC2B2AE3D27D4EB4Full
#define REX_XXH_P3 0x165667B19E3779F9ull
#define REX_XXH_P4 0x85EBCA77C2B2AE63ull /* image version 4 had 0x85EBCA77C2B2CA63 here: not XXH64 from 8 bytes on */
#define REX_XXH_P5 0x27D4EB2F165667C5ull

struct rex_xxh64 {
  uint64_t v[4];
  uint64_t total;
};

static inline uint64_t rex_xxh_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t rex_xxh_rd64(const uint8_t *p) {
  uint64_t v;
  __builtin_memcpy(&v, p, 8);
  return v;
}
static inline uint32_t rex_xxh_rd32(const uint8_t *p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}
static inline uint64_t rex_xxh_round(uint64_t acc, uint64_t in) {
  acc += in * REX_XXH_P2;
  acc = rex_xxh_rotl(acc, 31);
  return acc * REX_XXH_P1;
}
static inline uint64_t rex_xxh_merge(uint64_t acc, uint64_t v) {
  acc ^= rex_xxh_round(0, v);
  return acc * REX_XXH_P1 + REX_XXH_P4;
}

static inline void rex_xxh64_init(struct rex_xxh64 *s) {
  s->v[0] = REX_XXH_P1 + REX_XXH_P2;
  s->v[1] = REX_XXH_P2;
  s->v[2] = 0;
  s->v[3] = 0 - REX_XXH_P1;
  s->total = 0;
}

/* n must be a multiple of 32 (the restorer and dumper feed whole pages and padded headers). */
static inline void rex_xxh64_stripes(struct rex_xxh64 *s, const void *data, uint64_t n) {
  const uint8_t *p = (const uint8_t *)data;
  uint64_t v0 = s->v[0], v1 = s->v[1], v2 = s->v[2], v3 = s->v[3];
  for (uint64_t i = 0; i + 32 <= n; i += 32) {
    v0 = rex_xxh_round(v0, rex_xxh_rd64(p + i));
    v1 = rex_xxh_round(v1, rex_xxh_rd64(p + i + 8));
    v2 = rex_xxh_round(v2, rex_xxh_rd64(p + i + 16));
    v3 = rex_xxh_round(v3, rex_xxh_rd64(p + i + 24));
  }
  s->v[0] = v0, s->v[1] = v1, s->v[2] = v2, s->v[3] = v3;
  s->total += n & ~(uint64_t)31;
}

/* Consumes the last n bytes (any length) and returns the hash. */
static inline uint64_t rex_xxh64_final(struct rex_xxh64 *s, const void *data, uint64_t n) {
  const uint8_t *p = (const uint8_t *)data;
  uint64_t whole = n & ~(uint64_t)31;
  rex_xxh64_stripes(s, p, whole);
  p += whole;
  n -= whole;
  uint64_t total = s->total + n, h;
  if (total >= 32) {
    h = rex_xxh_rotl(s->v[0], 1) + rex_xxh_rotl(s->v[1], 7) + rex_xxh_rotl(s->v[2], 12) + rex_xxh_rotl(s->v[3], 18);
    h = rex_xxh_merge(h, s->v[0]);
    h = rex_xxh_merge(h, s->v[1]);
    h = rex_xxh_merge(h, s->v[2]);
    h = rex_xxh_merge(h, s->v[3]);
  } else {
    h = s->v[2] + REX_XXH_P5; /* v[2] is the seed */
  }
  h += total;
  while (n >= 8) {
    h ^= rex_xxh_round(0, rex_xxh_rd64(p));
    h = rex_xxh_rotl(h, 27) * REX_XXH_P1 + REX_XXH_P4;
    p += 8, n -= 8;
  }
  if (n >= 4) {
    h ^= (uint64_t)rex_xxh_rd32(p) * REX_XXH_P1;
    h = rex_xxh_rotl(h, 23) * REX_XXH_P2 + REX_XXH_P3;
    p += 4, n -= 4;
  }
  while (n > 0) {
    h ^= (*p) * REX_XXH_P5;
    h = rex_xxh_rotl(h, 11) * REX_XXH_P1;
    p++, n--;
  }
  h ^= h >> 33;
  h *= REX_XXH_P2;
  h ^= h >> 29;
  h *= REX_XXH_P3;
  h ^= h >> 32;
  return h;
}

#endif /* REX_IMAGE_UTIL_H */
