/*
 * image.h: the rfork process image, shared by the dumper (src/dump.c, inside
 * librex) and the freestanding restorer (restorer/). docs/IMAGE.md is the
 * byte-exact description; change both together and bump REX_IMG_VERSION.
 *
 * This header must stay freestanding: fixed-width types only, no libc. The
 * image is native-endian (little-endian x86-64) and host-architecture
 * specific: it holds registers and an XSAVE area, so a byte-order-neutral
 * encoding would buy nothing.
 *
 * Layout of an image (all offsets from the start of the stream):
 *
 *   header        struct rex_img_header, header_size bytes
 *   metadata      meta_size bytes: xsave area, regions[], runs[], bitmap words[], fds[], strings
 *   page data     data_pages * 4096 bytes: every region's carried pages, regions in
 *                 table order, pages in ascending address order
 *   trailer       struct rex_img_trailer (XXH64 of the page data)
 *
 * meta_hash (XXH64, seed 0) covers the header with meta_hash itself zeroed,
 * followed by the metadata; the restorer checks it before it maps anything.
 * The page data are hashed separately because a pipe cannot be rewound: the
 * restorer checks the trailer after filling the pages and before any code of
 * the image runs. Neither hash is authentication: the transport layer
 * encrypts and authenticates images in transit (docs/RFORK.md).
 */
#ifndef REX_IMAGE_H
#define REX_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "image_cpu.h" /* generated from schema/image-cpu.json: struct rex_img_xcomp, struct rex_img_cpu, the feature table */

#define REX_IMG_MAGIC "REXIMG\r\n" /* 8 bytes, no NUL; \r\n catches text-mode mangling */
#define REX_IMG_MAGIC_SIZE 8
#define REX_IMG_TRAILER_MAGIC "REXEND\r\n"
#define REX_IMG_VERSION 4u /* 4: the dumping CPU's profile and the features in use (docs/IMAGE.md section 7) */
#define REX_IMG_ARCH_X86_64 62u /* EM_X86_64 */
#define REX_IMG_PAGE 4096u

/*
 * The restorer's zone: the restorer is linked at REX_IMG_ZONE_START and keeps
 * everything it maps (its metadata buffer, the vDSO's temporary home) inside
 * [ZONE_START, ZONE_END). An image whose regions touch the zone is refused;
 * the resumed process unmaps the whole zone.
 */
#define REX_IMG_ZONE_START 0x70000000ull
#define REX_IMG_ZONE_END 0x80000000ull
#define REX_IMG_ZONE_META 0x74000000ull  /* metadata buffer */
#define REX_IMG_ZONE_VDSO 0x7c000000ull  /* vDSO/vvar on their way to the image's addresses */

/* Lowest and highest user addresses an image region may use (x86-64, 4-level paging). */
#define REX_IMG_USER_MIN 0x10000ull
#define REX_IMG_USER_MAX 0x7ffffffff000ull

/* Limits the restorer enforces; the dumper refuses to write anything bigger. */
#define REX_IMG_MAX_META (64u << 20)
#define REX_IMG_MAX_REGIONS 65536u
#define REX_IMG_MAX_RUNS (2u << 20)
#define REX_IMG_MAX_WORDS (8u << 20) /* bitmap words: 64 MiB, the metadata limit */
#define REX_IMG_MAX_FDS 4096u
#define REX_IMG_MAX_STRINGS (4u << 20)
#define REX_IMG_MAX_XSAVE 16384u
#define REX_IMG_NSIG 64u
#define REX_IMG_NRLIMIT 16u
#define REX_IMG_AUXV_WORDS 64u /* the kernel keeps at most 2*(2+22+1) words (AT_VECTOR_SIZE) */
#define REX_IMG_NSPECIAL 4u

/* Header flags. */
#define REX_IMG_F_SHARED_SKIPPED 0x1u /* REX_DUMP_SKIP_SHARED left shared memory out */

/* struct rex_img_region.kind */
enum rex_img_kind {
  REX_IMG_ANON = 1,        /* anonymous private memory (also [anon:name]) */
  REX_IMG_HEAP = 2,        /* [heap]: anonymous, between start_brk and brk */
  REX_IMG_STACK = 3,       /* [stack]: anonymous, mapped MAP_GROWSDOWN */
  REX_IMG_FILE = 4,        /* private file mapping: pages copied on write are carried, the rest comes from the file */
  REX_IMG_FILE_SHARED = 5, /* shared file mapping: re-mapped MAP_SHARED from the same file, no pages carried */
  REX_IMG_ANON_COPY = 6    /* a private file mapping whose file is gone or replaced: every page is carried */
};

/*
 * struct rex_img_region.page_map: how the region's carried pages are listed.
 * The dumper picks per region whichever is smaller: runs (16 bytes per run of
 * consecutive pages) or a bitmap (one bit per page of the region), so that
 * scattered memory does not cost 16 bytes per touched page.
 */
enum rex_img_page_map { REX_IMG_MAP_RUNS = 0, REX_IMG_MAP_BITMAP = 1 };

/* struct rex_img_region.prot (same values as PROT_*) */
#define REX_IMG_PROT_READ 0x1u
#define REX_IMG_PROT_WRITE 0x2u
#define REX_IMG_PROT_EXEC 0x4u

/* struct rex_img_special.kind: the kernel's special mappings, moved with mremap */
enum rex_img_special_kind { REX_IMG_SP_NONE = 0, REX_IMG_SP_VVAR = 1, REX_IMG_SP_VVAR_VCLOCK = 2, REX_IMG_SP_VDSO = 3 };

/* struct rex_img_fd.kind */
enum rex_img_fd_kind {
  REX_IMG_FD_OTHER = 0,
  REX_IMG_FD_FILE = 1,
  REX_IMG_FD_DIR = 2,
  REX_IMG_FD_PIPE = 3,
  REX_IMG_FD_SOCKET = 4,
  REX_IMG_FD_CHR = 5,
  REX_IMG_FD_BLK = 6
};
#define REX_IMG_FD_F_IMAGE 0x1u /* the descriptor the image was written to */

/*
 * Registers at the entry of rex_dump_self(): the order is the restorer's pop
 * order (r15 first). rip is where the restorer jumps (the dumper's resume
 * entry, not the caller); rsp points at rex_dump_self's return address.
 */
struct rex_img_regs {
  uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
  uint64_t rdi, rsi, rbp, rbx, rdx, rcx, rax;
  uint64_t rflags, rsp, rip;
  uint64_t fs_base, gs_base;
};

/* The mm bounds restored with prctl(PR_SET_MM, PR_SET_MM_MAP). */
struct rex_img_mm {
  uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
  uint64_t arg_start, arg_end, env_start, env_end;
  uint32_t auxv_words; /* used words of auxv[], pairs ending with AT_NULL */
  uint32_t pad;
  uint64_t auxv[REX_IMG_AUXV_WORDS];
};

/* The kernel's struct sigaction for rt_sigaction (8-byte mask). */
struct rex_img_sigaction {
  uint64_t handler, flags, restorer, mask;
};

struct rex_img_special {
  uint64_t start, end;
  uint32_t kind;
  uint32_t pad;
};

/*
 * struct rex_img_xcomp (image_cpu.h): where the dumping CPU puts one XSAVE
 * state component in the standard (non-compacted) form: CPUID.(EAX=0Dh,
 * ECX=i) EBX (offset) and EAX (size). Vendors differ (AMD's AVX-512
 * components sit lower than Intel's, with no MPX before them), so no reader
 * may assume a table of its own: each takes the layout from the image, and
 * the restorer compares it with its own CPU's.
 */

struct rex_img_header {
  char magic[8];
  uint32_t version;
  uint32_t header_size; /* sizeof(struct rex_img_header) */
  uint32_t arch;
  uint32_t page_size;
  uint32_t flags;
  uint32_t nregions, nruns, nfds;
  uint32_t strings_size;
  uint32_t xsave_size; /* bytes of the XSAVE area (CPUID 0xD.0 EBX at dump time) */
  uint64_t meta_size;  /* bytes between the header and the page data */
  uint64_t data_pages;
  uint64_t meta_hash;
  uint64_t xcr0; /* XSAVE feature mask; the restoring CPU must have the same */

  struct rex_img_regs regs;
  struct rex_img_mm mm;

  struct rex_img_sigaction sigactions[REX_IMG_NSIG]; /* index signo-1 */
  uint64_t sigmask;
  uint64_t altstack_sp, altstack_size;
  uint32_t altstack_flags;
  uint32_t umask;

  uint64_t rseq_addr; /* 0: not registered */
  uint32_t rseq_len, rseq_sig;
  uint64_t robust_head, robust_len;
  uint64_t clear_child_tid;

  struct { uint64_t cur, max; } rlimits[REX_IMG_NRLIMIT];

  uint32_t cwd_off, cwd_len; /* into the string table */
  uint32_t exe_off, exe_len;
  char comm[16];

  int32_t pid, tid, ppid, pad0;
  uint64_t dump_realtime_ns;
  uint64_t resume_block; /* address of struct rex_img_resume in the image's memory */

  struct rex_img_special special[REX_IMG_NSPECIAL];
  uint32_t nwords;    /* u64 words in the bitmap table */
  uint32_t xsave_len; /* bytes of the XSAVE area stored: up to the last component in use, 576..xsave_size */
  struct rex_img_xcomp xsave_comp[REX_IMG_NXCOMP]; /* the layout of components 2..15; zero where XCR0 has none */
  struct rex_img_cpu cpu; /* the dumping CPU's profile and the features in use (image_cpu.h, docs/IMAGE.md section 2.4) */
};

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

/* Memory region: [start, end), page-aligned, sorted, non-overlapping. */
struct rex_img_region {
  uint64_t start, end;
  uint64_t offset; /* file offset (FILE, FILE_SHARED) */
  uint64_t dev, ino, size;
  int64_t mtime_sec;
  uint32_t mtime_nsec;
  uint32_t prot;
  uint32_t kind;
  uint32_t name_off, name_len; /* path or [heap]/[stack]/[anon:x]; name_len 0: none */
  uint32_t first_run, nruns;   /* runs[first_run .. first_run+nruns) lie in this region */
  uint32_t page_map;           /* enum rex_img_page_map */
  uint32_t first_word, nwords; /* BITMAP: words[first_word ..], bit k of the region = page start + k*4096 */
  uint8_t content_hash[32]; /* zero here; the transfer layer fills and checks it */
};

/* A run of carried pages: npages pages from addr, stored in order in the page data. */
struct rex_img_run {
  uint64_t addr, npages;
};

/* A descriptor open at dump time, for the integration to proxy (docs/RFORK.md). */
struct rex_img_fd {
  int32_t fd;
  uint32_t fd_flags; /* FD_CLOEXEC */
  uint32_t fl_flags; /* O_ACCMODE | O_APPEND | O_NONBLOCK ... */
  uint32_t mode;     /* st_mode */
  uint64_t pos;      /* lseek position; UINT64_MAX when not seekable */
  uint64_t dev, ino;
  uint32_t path_off, path_len; /* readlink of /proc/self/fd/N */
  uint32_t kind;
  uint32_t flags; /* REX_IMG_FD_F_* */
};

struct rex_img_trailer {
  char magic[8];
  uint64_t data_hash; /* XXH64 (seed 0) of all page data in run order */
};

/*
 * Written by the restorer into the resumed process's memory at
 * header.resume_block just before the jump, read by the dumper's resume path.
 */
#define REX_IMG_RESUME_MAGIC 0x5245585245535544ull /* "REXRESUD" */
struct rex_img_resume {
  uint64_t magic;
  uint64_t zone_start, zone_end; /* what the resumed process must unmap */
  int32_t old_pid, new_pid;
  uint64_t restore_start_ns; /* CLOCK_MONOTONIC at the restorer's first instruction */
  uint64_t restore_end_ns;   /* CLOCK_MONOTONIC just before the jump */
};

_Static_assert(sizeof(struct rex_img_regs) == 160, "regs layout");
_Static_assert(sizeof(struct rex_img_region) == 128, "region layout");
_Static_assert(sizeof(struct rex_img_run) == 16, "run layout");
_Static_assert(sizeof(struct rex_img_fd) == 56, "fd layout");
_Static_assert(sizeof(struct rex_img_header) % 32 == 0, "header must be a whole number of XXH64 stripes");
_Static_assert(offsetof(struct rex_img_header, xsave_comp) == REX_IMG_OFF_XSAVE_COMP, "xsave_comp where schema/image-cpu.json says");
_Static_assert(offsetof(struct rex_img_header, cpu) == REX_IMG_OFF_CPU, "cpu where schema/image-cpu.json says");
_Static_assert(sizeof(struct rex_img_cpu) == REX_IMG_CPU_SIZE, "struct rex_img_cpu as schema/image-cpu.json says");
_Static_assert(offsetof(struct rex_img_cpu, in_use) == REX_IMG_CPU_OFF_IN_USE, "cpu.in_use as schema/image-cpu.json says");
_Static_assert(offsetof(struct rex_img_cpu, reserved) == REX_IMG_CPU_OFF_RESERVED, "cpu.reserved as schema/image-cpu.json says");
_Static_assert(sizeof(struct rex_img_header) == REX_IMG_HEADER_SIZE, "header size (docs/IMAGE.md)");

/* Metadata offsets (from the end of the header), each part 64-byte aligned. */
static inline uint64_t rex_img_align64(uint64_t v) { return (v + 63) & ~(uint64_t)63; }
struct rex_img_layout {
  uint64_t xsave, regions, runs, words, fds, strings, total;
};
static inline struct rex_img_layout rex_img_layout(const struct rex_img_header *h) {
  struct rex_img_layout l;
  l.xsave = 0;
  l.regions = rex_img_align64(l.xsave + h->xsave_len);
  l.runs = rex_img_align64(l.regions + (uint64_t)h->nregions * sizeof(struct rex_img_region));
  l.words = rex_img_align64(l.runs + (uint64_t)h->nruns * sizeof(struct rex_img_run));
  l.fds = rex_img_align64(l.words + (uint64_t)h->nwords * 8);
  l.strings = rex_img_align64(l.fds + (uint64_t)h->nfds * sizeof(struct rex_img_fd));
  l.total = rex_img_align64(l.strings + h->strings_size);
  return l;
}

/* Bytes of the legacy XSAVE region and the XSAVE header: always stored. */
#define REX_IMG_XSAVE_MIN 576u

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
#define REX_XXH_P4 0x85EBCA77C2B2CA63ull
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

#endif /* REX_IMAGE_H */
