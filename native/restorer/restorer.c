/*
 * rex-restore: rebuilds a process from a REX image (docs/IMAGE.md) in this
 * process and jumps into it (docs/RFORK.md, "Restore sequence").
 *
 *   rex-restore [--check] [--file ORIGINAL=LOCAL]... [--cwd DIR] [--args-fd N] IMAGE     (IMAGE "-" or absent: read fd 0)
 *
 * --file says that the caller has verified LOCAL to have the content of the
 * file the image maps from ORIGINAL (the daemons compare sha256, docs/RFORK.md
 * section 5): the restorer maps LOCAL instead and checks only its size. A path
 * without --file must be the very file of the dump (device, inode, size, mtime).
 * --cwd DIR is where the process continues when the image's working directory
 * does not exist here (ENOENT): the executor's fallback, as for a program it
 * starts (docs/RFORK.md); without it a missing cwd refuses the image (exit 4).
 *
 * Freestanding: no libc, linked at 0x70000000 (restorer.lds), its own stack
 * in .bss. It validates the whole header and metadata before it maps
 * anything; page data are hashed as they land and checked before any code of
 * the image runs.
 *
 * Exit status (the restored program's own status once it runs):
 *   0  --check: the image is valid and could be restored here
 *   2  usage, or the image cannot be opened or read
 *   3  the image is corrupt, truncated or inconsistent (message names field and offset)
 *   4  the image is valid but does not fit this host (CPU features, kernel's
 *      vDSO layout, a mapped file changed, cwd missing)
 *   5  a system call failed while rebuilding the process (after mapping began;
 *      nothing of the image has run)
 */
#include <stdarg.h>

#include "../src/image_util.h"
#include "../src/xsave.h"
#include "../src/rawsys.h"

/* ------------------------------------------------------------ libc bits */

/* gcc may emit calls to these for struct copies; -fno-tree-loop-distribute-patterns keeps them from calling themselves. */
void *memcpy(void *dst, const void *src, size_t n) {
  uint8_t *d = dst;
  const uint8_t *s = src;
  while (n--) *d++ = *s++;
  return dst;
}
void *memset(void *dst, int c, size_t n) {
  uint8_t *d = dst;
  while (n--) *d++ = (uint8_t)c;
  return dst;
}
int memcmp(const void *a, const void *b, size_t n) {
  const uint8_t *x = a, *y = b;
  for (; n; n--, x++, y++)
    if (*x != *y) return *x - *y;
  return 0;
}
static size_t slen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}
static int streq(const char *a, const char *b) { return slen(a) == slen(b) && memcmp(a, b, slen(a)) == 0; }

/* ------------------------------------------------------------- messages */

static char msgbuf[1024];
static size_t msglen;

static void out_ch(char c) {
  if (msglen < sizeof msgbuf) msgbuf[msglen++] = c;
}
static void out_str(const char *s) {
  while (*s) out_ch(*s++);
}
static void out_num(unsigned long long v, unsigned base) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  if (base == 16) out_str("0x");
  while (n) out_ch(tmp[--n]);
}

/* Minimal printf to fd 2: %s, %u and %x (unsigned long long), %d (long long). One write per message. */
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  msglen = 0;
  out_str("rex-restore: ");
  for (const char *p = fmt; *p; p++) {
    if (*p != '%') {
      out_ch(*p);
      continue;
    }
    switch (*++p) {
    case 's': out_str(va_arg(ap, const char *)); break;
    case 'u': out_num(va_arg(ap, unsigned long long), 10); break;
    case 'x': out_num(va_arg(ap, unsigned long long), 16); break;
    case 'd': {
      long long v = va_arg(ap, long long);
      if (v < 0) out_ch('-'), v = -v;
      out_num((unsigned long long)v, 10);
      break;
    }
    default: out_ch('%'), out_ch(*p);
    }
  }
  out_ch('\n');
  va_end(ap);
  sys3(NR_write, 2, msgbuf, msglen);
}

#define U(x) ((unsigned long long)(x))
#define D(x) ((long long)(x))

static const char *errname(long e) {
  switch (-e) {
  case 1: return "EPERM";
  case 2: return "ENOENT";
  case 9: return "EBADF";
  case 12: return "ENOMEM";
  case 13: return "EACCES";
  case 14: return "EFAULT";
  case 16: return "EBUSY";
  case 17: return "EEXIST";
  case 20: return "ENOTDIR";
  case 22: return "EINVAL";
  case 38: return "ENOSYS";
  default: return "errno";
  }
}

/* Exit statuses, see the top of the file. */
enum { EX_CHECK_OK = 0, EX_USAGE = 2, EX_CORRUPT = 3, EX_HOST = 4, EX_RESTORE = 5 };

/* --------------------------------------------------------------- state */

/* The restorer's own stack: the kernel's one is randomised and may sit where the image needs memory. */
#define STACK_SIZE (256u << 10)
__attribute__((aligned(64))) uint8_t restorer_stack[STACK_SIZE];

static struct rex_img_header hdr;
static uint8_t *meta;
static struct rex_img_layout lay;
static const struct rex_img_region *regions;
static const struct rex_img_run *runs;
static const uint64_t *words;
static const struct rex_img_fd *fds;
static const char *strings;
static __attribute__((aligned(64))) uint8_t xsave_area[REX_IMG_MAX_XSAVE];

static int img_fd = 0;
static const char *img_name = "<stdin>";
static uint64_t img_off; /* bytes consumed so far: the offset named in messages */
static uint64_t t_start;

/*
 * --file ORIGINAL=LOCAL pairs. They are copied out of argv: argv lives on the
 * kernel's stack, which clear_host() unmaps before the regions are mapped,
 * and the error path of map_regions() still names the file.
 */
#define MAX_FILE_MAP 4096
#define FILE_MAP_TEXT (1u << 20)
static char file_map_text[FILE_MAP_TEXT];
static size_t file_map_used;
static struct {
  const char *orig;
  size_t orig_len;
  const char *local;
} file_map[MAX_FILE_MAP];
static unsigned nfile_map;
static const char *mapped_file(const char *p, uint32_t len);

/* One open descriptor per region that is mapped from a file (-1 otherwise). */
static int region_fd[REX_IMG_MAX_REGIONS];

/* The host's special mappings and what else the kernel gave the restorer. */
static char maps_text[256u << 10];
struct span {
  uint64_t start, end;
  uint32_t kind;
};
static struct span host_special[REX_IMG_NSPECIAL];
static unsigned host_nspecial;
static struct span host_other[64];
static unsigned host_nother;

/*
 * Final register block, in pop order: r15..rax, rflags, then the new rsp.
 * It lives 64 KiB above the bottom of the .bss stack, not in .bss proper:
 * once the image's signal mask is set, a signal may arrive while rsp points
 * into this block, and the kernel then writes its signal frame below it.
 * The C code never gets that deep, and the frame needs only a few KiB.
 */
#define FINAL_BLOCK ((uint64_t *)(restorer_stack + 65536))

static uint64_t now_ns(void) {
  struct k_timespec ts = {0, 0};
  sys2(NR_clock_gettime, CLOCK_MONOTONIC_, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- input */

/* Reads exactly n bytes of what (named in the message) or exits 3 (truncated) / 2 (read error). */
static void read_exact(void *buf, uint64_t n, const char *what) {
  uint8_t *p = buf;
  uint64_t got = 0;
  while (got < n) {
    uint64_t chunk = n - got > (1u << 30) ? (1u << 30) : n - got;
    long r = sys3(NR_read, img_fd, p + got, chunk);
    if (r == -EINTR_) continue;
    if (r < 0) {
      say("%s: read error at offset %u while reading %s: %s (%d)", img_name, U(img_off + got), what, errname(r), D(-r));
      r_exit(EX_USAGE);
    }
    if (r == 0) {
      say("%s: truncated image: %s needs %u bytes at offset %u, only %u there", img_name, what, U(n), U(img_off), U(got));
      r_exit(EX_CORRUPT);
    }
    got += (uint64_t)r;
  }
  img_off += n;
}

/* --------------------------------------------------------- validation */

#define HOFF(field) U(offsetof(struct rex_img_header, field))

static _Noreturn void corrupt_hdr(const char *field, unsigned long long off, const char *why, unsigned long long v) {
  say("%s: corrupt image: header.%s at offset %u: %s (value %u)", img_name, field, off, why, v);
  r_exit(EX_CORRUPT);
}

/* A string reference must lie inside the table and end with its NUL. */
static int string_ok(uint32_t off, uint32_t len) {
  if (len == 0) return 1;
  if ((uint64_t)off + len >= hdr.strings_size) return 0;
  if (strings[off + len] != '\0') return 0;
  for (uint32_t i = 0; i < len; i++)
    if (strings[off + i] == '\0') return 0;
  return 1;
}

static uint64_t region_off(uint32_t i) { return hdr.header_size + lay.regions + (uint64_t)i * sizeof(struct rex_img_region); }
static uint64_t run_off(uint32_t i) { return hdr.header_size + lay.runs + (uint64_t)i * sizeof(struct rex_img_run); }
static uint64_t word_off(uint64_t i) { return hdr.header_size + lay.words + i * 8; }

static _Noreturn void corrupt_at(const char *what, uint32_t idx, const char *field, uint64_t off, const char *why) {
  say("%s: corrupt image: %s[%u].%s at offset %u: %s", img_name, what, U(idx), field, U(off), why);
  r_exit(EX_CORRUPT);
}

static int overlaps(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1) { return a0 < b1 && b0 < a1; }

/* Index of the region holding [addr, addr+len), or -1. */
static long find_region(uint64_t addr, uint64_t len) {
  for (uint32_t i = 0; i < hdr.nregions; i++)
    if (addr >= regions[i].start && addr + len <= regions[i].end && addr + len >= addr) return i;
  return -1;
}

static void check_header(void) {
  if (memcmp(hdr.magic, REX_IMG_MAGIC, REX_IMG_MAGIC_SIZE) != 0) {
    say("%s: not a REX image: header.magic at offset 0 is not \"REXIMG\\r\\n\"", img_name);
    r_exit(EX_CORRUPT);
  }
  if (hdr.version != REX_IMG_VERSION)
    corrupt_hdr("version", HOFF(version), "unsupported image version (this restorer reads 5; dump again with the same librex)", hdr.version);
  if (hdr.header_size != sizeof hdr) corrupt_hdr("header_size", HOFF(header_size), "does not match this version's header size", hdr.header_size);
  if (hdr.arch != REX_IMG_ARCH_X86_64) corrupt_hdr("arch", HOFF(arch), "not an x86-64 image (62)", hdr.arch);
  if (hdr.page_size != REX_IMG_PAGE) corrupt_hdr("page_size", HOFF(page_size), "page size must be 4096", hdr.page_size);
  if (hdr.flags & ~REX_IMG_F_SHARED_SKIPPED) corrupt_hdr("flags", HOFF(flags), "unknown flag bits", hdr.flags);
  if (hdr.nregions == 0 || hdr.nregions > REX_IMG_MAX_REGIONS) corrupt_hdr("nregions", HOFF(nregions), "must be 1..65536", hdr.nregions);
  if (hdr.nruns > REX_IMG_MAX_RUNS) corrupt_hdr("nruns", HOFF(nruns), "above the limit of 2097152", hdr.nruns);
  if (hdr.nwords > REX_IMG_MAX_WORDS) corrupt_hdr("nwords", HOFF(nwords), "above the limit of 8388608", hdr.nwords);
  if (hdr.nfds > REX_IMG_MAX_FDS) corrupt_hdr("nfds", HOFF(nfds), "above the limit of 4096", hdr.nfds);
  if (hdr.strings_size > REX_IMG_MAX_STRINGS) corrupt_hdr("strings_size", HOFF(strings_size), "above the limit of 4 MiB", hdr.strings_size);
  if (hdr.xsave_size < 576 || hdr.xsave_size > REX_IMG_MAX_XSAVE) corrupt_hdr("xsave_size", HOFF(xsave_size), "must be 576..16384", hdr.xsave_size);
  if (hdr.xsave_len < REX_IMG_XSAVE_MIN || hdr.xsave_len > hdr.xsave_size)
    corrupt_hdr("xsave_len", HOFF(xsave_len), "must be 576..xsave_size", hdr.xsave_len);
  const char *why;
  int bad = rex_img_check_xcomp(&hdr, &why);
  if (bad >= 0) {
    say("%s: corrupt image: header.xsave_comp[%u] at offset %u: %s (offset %u, size %u)", img_name, U(bad),
        U(HOFF(xsave_comp) + 4u * (unsigned)bad), why, U(hdr.xsave_comp[bad].offset), U(hdr.xsave_comp[bad].size));
    r_exit(EX_CORRUPT);
  }
  struct rex_img_cpu_fault cf;
  if (rex_img_check_cpu(&hdr.cpu, &cf)) {
    if (cf.index >= 0)
      say("%s: corrupt image: header.cpu.%s[%u] at offset %u: %s (value %x)", img_name, cf.field, U(cf.index), U(cf.offset), cf.why, U(cf.value));
    else
      say("%s: corrupt image: header.cpu.%s at offset %u: %s (value %x)", img_name, cf.field, U(cf.offset), cf.why, U(cf.value));
    r_exit(EX_CORRUPT);
  }
  lay = rex_img_layout(&hdr);
  if (hdr.meta_size != lay.total)
    corrupt_hdr("meta_size", HOFF(meta_size), "does not match the sizes of the tables the header announces", hdr.meta_size);
  if (hdr.meta_size > REX_IMG_MAX_META) corrupt_hdr("meta_size", HOFF(meta_size), "above the limit of 64 MiB", hdr.meta_size);
  if (hdr.data_pages > (REX_IMG_USER_MAX >> 12)) corrupt_hdr("data_pages", HOFF(data_pages), "more pages than user space holds", hdr.data_pages);
}

static void check_hash(void) {
  uint64_t want = hdr.meta_hash;
  struct rex_xxh64 xh;
  rex_xxh64_init(&xh);
  hdr.meta_hash = 0;
  rex_xxh64_stripes(&xh, &hdr, sizeof hdr);
  hdr.meta_hash = want;
  uint64_t got = rex_xxh64_final(&xh, meta, hdr.meta_size);
  if (got != want) {
    say("%s: corrupt image: header.meta_hash at offset %u: the header and metadata (offsets 0..%u) hash to %x, "
        "the image says %x",
        img_name, HOFF(meta_hash), U(hdr.header_size + hdr.meta_size), U(got), U(want));
    r_exit(EX_CORRUPT);
  }
}

static void check_regions(void) {
  uint64_t prev_end = 0, pages = 0;
  uint32_t next_run = 0, next_word = 0;
  for (uint32_t i = 0; i < hdr.nregions; i++) {
    const struct rex_img_region *r = &regions[i];
    uint64_t o = region_off(i);
#define RF(f) #f, o + offsetof(struct rex_img_region, f)
    if ((r->start | r->end) & (REX_IMG_PAGE - 1)) corrupt_at("region", i, RF(start), "start and end must be page-aligned");
    if (r->start >= r->end) corrupt_at("region", i, RF(end), "end must be above start");
    if (r->start < REX_IMG_USER_MIN || r->end > REX_IMG_USER_MAX) corrupt_at("region", i, RF(start), "outside user space");
    if (overlaps(r->start, r->end, REX_IMG_ZONE_START, REX_IMG_ZONE_END))
      corrupt_at("region", i, RF(start), "overlaps the restorer's zone 0x70000000..0x80000000");
    if (r->start < prev_end) corrupt_at("region", i, RF(start), "regions overlap or are not sorted");
    prev_end = r->end;
    if (r->prot & ~7u) corrupt_at("region", i, RF(prot), "unknown protection bits");
    if (r->kind < REX_IMG_ANON || r->kind > REX_IMG_ANON_COPY) corrupt_at("region", i, RF(kind), "unknown kind");
    if (!string_ok(r->name_off, r->name_len)) corrupt_at("region", i, RF(name_off), "name outside the string table or not NUL-terminated");
    if (r->kind == REX_IMG_FILE || r->kind == REX_IMG_FILE_SHARED) {
      if (r->name_len == 0 || strings[r->name_off] != '/') corrupt_at("region", i, RF(name_off), "a file region needs an absolute path");
      if (r->offset & (REX_IMG_PAGE - 1)) corrupt_at("region", i, RF(offset), "file offset must be page-aligned");
    }
    if (r->first_run != next_run) corrupt_at("region", i, RF(first_run), "runs must follow the region order without gaps");
    if (r->nruns > hdr.nruns - next_run) corrupt_at("region", i, RF(nruns), "more runs than the run table holds");
    if (r->first_word != next_word) corrupt_at("region", i, RF(first_word), "bitmaps must follow the region order without gaps");
    if (r->page_map == REX_IMG_MAP_RUNS) {
      if (r->nwords) corrupt_at("region", i, RF(nwords), "a region listed by runs has no bitmap words");
    } else if (r->page_map == REX_IMG_MAP_BITMAP) {
      uint64_t npages = (r->end - r->start) / REX_IMG_PAGE;
      if (r->nruns) corrupt_at("region", i, RF(nruns), "a region listed by a bitmap has no runs");
      if (r->nwords != rex_img_bitmap_words(npages)) corrupt_at("region", i, RF(nwords), "not one bit per page of the region");
      if (r->nwords > hdr.nwords - next_word) corrupt_at("region", i, RF(nwords), "more words than the bitmap table holds");
      for (uint32_t k = 0; k < r->nwords; k++) pages += rex_img_popcount64(words[next_word + k]);
      if (npages & 63 && words[next_word + r->nwords - 1] >> (npages & 63))
        corrupt_at("bitmap word", next_word + r->nwords - 1, "bits", word_off(next_word + r->nwords - 1), "bits set past the region's last page");
      next_word += r->nwords;
    } else {
      corrupt_at("region", i, RF(page_map), "unknown page map (0 runs, 1 bitmap)");
    }
    if (r->kind == REX_IMG_FILE_SHARED && (r->nruns || r->nwords)) corrupt_at("region", i, RF(nruns), "a shared file region carries no pages");
    uint64_t prev = r->start;
    for (uint32_t k = r->first_run; k < r->first_run + r->nruns; k++) {
      const struct rex_img_run *u = &runs[k];
      uint64_t ro = run_off(k);
      if (u->addr & (REX_IMG_PAGE - 1)) corrupt_at("run", k, "addr", ro, "not page-aligned");
      if (u->npages == 0) corrupt_at("run", k, "npages", ro + 8, "empty run");
      if (u->addr < prev) corrupt_at("run", k, "addr", ro, "runs of a region overlap or are not sorted");
      if (u->addr >= r->end || u->npages > (r->end - u->addr) / REX_IMG_PAGE)
        corrupt_at("run", k, "npages", ro + 8, "run extends past its region's end");
      prev = u->addr + u->npages * REX_IMG_PAGE;
      pages += u->npages;
    }
    next_run += r->nruns;
#undef RF
  }
  if (next_run != hdr.nruns) corrupt_hdr("nruns", HOFF(nruns), "runs left over that no region claims", hdr.nruns);
  if (next_word != hdr.nwords) corrupt_hdr("nwords", HOFF(nwords), "bitmap words left over that no region claims", hdr.nwords);
  if (pages != hdr.data_pages) corrupt_hdr("data_pages", HOFF(data_pages), "does not equal the pages the runs and bitmaps list", hdr.data_pages);
}

/*
 * The XSAVE area is loaded with XRSTOR at the very end, after the image's
 * memory is in place: a header XRSTOR refuses (#GP) would crash the restorer
 * there, so what XRSTOR checks is checked here first: MXCSR's reserved bits,
 * XSTATE_BV within the image's XCR0, the standard (not compacted) form, and
 * the rest of the XSAVE header zero.
 */
static void check_xsave(void) {
  const uint8_t *x = meta + lay.xsave;
  uint64_t base = hdr.header_size + lay.xsave, xstate_bv, rest;
  uint32_t mxcsr;
  memcpy(&mxcsr, x + 24, 4);
  memcpy(&xstate_bv, x + 512, 8);
  const char *why = 0, *field = 0;
  uint64_t at = 0;
  if (mxcsr >> 16) field = "mxcsr", at = base + 24, why = "reserved MXCSR bits set";
  else if (xstate_bv & ~hdr.xcr0) field = "xstate_bv", at = base + 512, why = "state components outside the image's XCR0";
  else if (xstate_bv >> REX_IMG_NXCOMP) field = "xstate_bv", at = base + 512, why = "components 16 and above in use (images do not carry them)";
  for (unsigned off = 520; !why && off < 576; off += 8) {
    memcpy(&rest, x + off, 8);
    if (rest) field = off == 520 ? "xcomp_bv" : "header", at = base + off, why = "not a standard-form XSAVE header (must be zero)";
  }
  if (why) {
    say("%s: corrupt image: xsave.%s at offset %u: %s", img_name, field, U(at), why);
    r_exit(EX_CORRUPT);
  }
  /* Every component in use must lie in the bytes stored, where the image's own layout puts it. */
  for (unsigned i = 2; i < REX_IMG_NXCOMP; i++) {
    const struct rex_img_xcomp *c = &hdr.xsave_comp[i];
    if (xstate_bv >> i & 1 && (uint32_t)c->offset + c->size > hdr.xsave_len) {
      say("%s: corrupt image: header.xsave_len at offset %u: XSAVE component %u is in use (bytes %u..%u) but only %u bytes "
          "are stored",
          img_name, HOFF(xsave_len), U(i), U(c->offset), U((uint32_t)c->offset + c->size), U(hdr.xsave_len));
      r_exit(EX_CORRUPT);
    }
  }
}

static void check_rest(void) {
  check_xsave();
  for (uint32_t i = 0; i < hdr.nfds; i++)
    if (!string_ok(fds[i].path_off, fds[i].path_len))
      corrupt_at("fd", i, "path_off", hdr.header_size + lay.fds + (uint64_t)i * sizeof(struct rex_img_fd) + offsetof(struct rex_img_fd, path_off),
                 "path outside the string table or not NUL-terminated");
  if (!string_ok(hdr.cwd_off, hdr.cwd_len) || hdr.cwd_len == 0 || strings[hdr.cwd_off] != '/')
    corrupt_hdr("cwd_off", HOFF(cwd_off), "cwd is not an absolute path inside the string table", hdr.cwd_off);
  if (!string_ok(hdr.exe_off, hdr.exe_len)) corrupt_hdr("exe_off", HOFF(exe_off), "outside the string table", hdr.exe_off);

  /* Special mappings: known kinds, each once, clear of every region and of the zone. */
  unsigned seen = 0;
  for (unsigned i = 0; i < REX_IMG_NSPECIAL; i++) {
    const struct rex_img_special *s = &hdr.special[i];
    uint64_t o = HOFF(special) + i * sizeof *s;
    if (s->kind == REX_IMG_SP_NONE) {
      if (s->start || s->end) corrupt_hdr("special", o, "an unused slot must be zero", s->start);
      continue;
    }
    if (s->kind > REX_IMG_SP_VDSO || (seen & (1u << s->kind))) corrupt_hdr("special.kind", o + 16, "unknown or repeated kind", s->kind);
    seen |= 1u << s->kind;
    if ((s->start | s->end) & (REX_IMG_PAGE - 1) || s->start >= s->end || s->start < REX_IMG_USER_MIN || s->end > REX_IMG_USER_MAX)
      corrupt_hdr("special.start", o, "not a page-aligned range in user space", s->start);
    if (overlaps(s->start, s->end, REX_IMG_ZONE_START, REX_IMG_ZONE_END))
      corrupt_hdr("special.start", o, "overlaps the restorer's zone", s->start);
    for (uint32_t k = 0; k < hdr.nregions; k++)
      if (overlaps(s->start, s->end, regions[k].start, regions[k].end))
        corrupt_hdr("special.start", o, "overlaps a memory region", s->start);
  }

  /* Where the restorer writes or jumps must be memory the image maps, with the right protection. */
  long ri = find_region(hdr.regs.rip, 1);
  if (ri < 0 || !(regions[ri].prot & REX_IMG_PROT_EXEC)) corrupt_hdr("regs.rip", HOFF(regs.rip), "not inside an executable region", hdr.regs.rip);
  ri = find_region(hdr.regs.rsp - 8, 16);
  if (ri < 0 || (regions[ri].prot & 3) != 3) corrupt_hdr("regs.rsp", HOFF(regs.rsp), "not inside a writable region", hdr.regs.rsp);
  ri = find_region(hdr.resume_block, sizeof(struct rex_img_resume));
  if (ri < 0 || (regions[ri].prot & 3) != 3)
    corrupt_hdr("resume_block", HOFF(resume_block), "not inside a writable region", hdr.resume_block);
  if (hdr.rseq_addr) {
    ri = find_region(hdr.rseq_addr, hdr.rseq_len);
    if (ri < 0 || hdr.rseq_len < 20 || hdr.rseq_len > 4096 || (hdr.rseq_addr & 31))
      corrupt_hdr("rseq_addr", HOFF(rseq_addr), "rseq area not 32-byte aligned inside a region, or bad length", hdr.rseq_addr);
  }
  if (hdr.regs.fs_base >= REX_IMG_USER_MAX) corrupt_hdr("regs.fs_base", HOFF(regs.fs_base), "outside user space", hdr.regs.fs_base);
  if (hdr.regs.gs_base >= REX_IMG_USER_MAX) corrupt_hdr("regs.gs_base", HOFF(regs.gs_base), "outside user space", hdr.regs.gs_base);

  const struct rex_img_mm *m = &hdr.mm;
  if (m->auxv_words > REX_IMG_AUXV_WORDS || (m->auxv_words & 1) || m->auxv_words == 0)
    corrupt_hdr("mm.auxv_words", HOFF(mm.auxv_words), "must be even and 2..64", m->auxv_words);
  if (m->start_code > m->end_code || m->start_data > m->end_data || m->start_brk > m->brk || m->arg_start > m->arg_end ||
      m->env_start > m->env_end || m->brk >= REX_IMG_USER_MAX || m->start_stack >= REX_IMG_USER_MAX || m->env_end >= REX_IMG_USER_MAX)
    corrupt_hdr("mm", HOFF(mm), "memory bounds out of order or outside user space", m->start_code);
  for (unsigned i = 0; i < REX_IMG_NRLIMIT; i++)
    if (hdr.rlimits[i].cur > hdr.rlimits[i].max)
      corrupt_hdr("rlimits", HOFF(rlimits) + i * 16, "soft limit above the hard limit", i);
  if (hdr.umask & ~0777u) corrupt_hdr("umask", HOFF(umask), "not a permission mask", hdr.umask);
  if (hdr.altstack_flags & ~(uint32_t)(SS_ONSTACK_ | SS_DISABLE_ | (1u << 31)))
    corrupt_hdr("altstack_flags", HOFF(altstack_flags), "unknown sigaltstack flags", hdr.altstack_flags);
}

/* ---------------------------------------------------- host compatibility */

static uint64_t host_xcr0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t)hi << 32 | lo;
}
static uint32_t host_xsave_size(void) {
  uint32_t a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xd), "c"(0));
  return b;
}

static uint64_t parse_hex(const char **p) {
  uint64_t v = 0;
  for (;; (*p)++) {
    char c = **p;
    if (c >= '0' && c <= '9') v = v << 4 | (uint64_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v = v << 4 | (uint64_t)(c - 'a' + 10);
    else return v;
  }
}

/* Sorts the restorer's own mappings into special ones (to move) and others (to unmap). */
static void read_host_maps(void) {
  long fd = r_openat("/proc/self/maps", O_RDONLY_ | O_CLOEXEC_);
  if (fd < 0) {
    say("cannot open /proc/self/maps: %s", errname(fd));
    r_exit(EX_HOST);
  }
  uint64_t n = 0;
  for (;;) {
    long r = sys3(NR_read, fd, maps_text + n, sizeof maps_text - 1 - n);
    if (r <= 0) break;
    n += (uint64_t)r;
  }
  sys1(NR_close, fd);
  maps_text[n] = '\0';
  for (const char *p = maps_text; *p;) {
    const char *line = p;
    uint64_t start = parse_hex(&p);
    p++;
    uint64_t end = parse_hex(&p);
    while (*p && *p != '\n' && *p != '[' && *p != '/') p++;
    uint32_t kind = REX_IMG_SP_NONE;
    if (*p == '[') {
      if (!memcmp(p, "[vvar]", 6)) kind = REX_IMG_SP_VVAR;
      else if (!memcmp(p, "[vvar_vclock]", 13)) kind = REX_IMG_SP_VVAR_VCLOCK;
      else if (!memcmp(p, "[vdso]", 6)) kind = REX_IMG_SP_VDSO;
    }
    while (*p && *p != '\n') p++;
    if (*p) p++;
    (void)line;
    if (start >= REX_IMG_USER_MAX) continue; /* [vsyscall] */
    if (kind != REX_IMG_SP_NONE) {
      if (host_nspecial < REX_IMG_NSPECIAL) host_special[host_nspecial++] = (struct span){start, end, kind};
    } else if (!(start >= REX_IMG_ZONE_START && end <= REX_IMG_ZONE_END)) {
      if (host_nother >= sizeof host_other / sizeof host_other[0]) {
        say("the restorer has more mappings than it expects (%u)", U(host_nother));
        r_exit(EX_HOST);
      }
      host_other[host_nother++] = (struct span){start, end, 0};
    }
  }
}

static const char *special_name(uint32_t k) {
  return k == REX_IMG_SP_VVAR ? "[vvar]" : k == REX_IMG_SP_VVAR_VCLOCK ? "[vvar_vclock]" : "[vdso]";
}

/*
 * The features the image's process may use (header.cpu.in_use: its origin
 * CPU's, less those GLIBC_TUNABLES turned off) must all be on this CPU: code
 * chosen for AVX2 at start-up would die of SIGILL here. One line names every
 * one missing, with the feature table's names.
 */
static void check_host_cpu(void) {
  struct rex_img_cpu here;
  rex_img_cpu_read(&here);
  static char names[REX_IMG_NFEATURES * 21];
  size_t n = 0, missing = 0;
  for (unsigned i = 0; i < REX_IMG_NFEATURES; i++) {
    const struct rex_img_feature *f = &rex_img_features[i];
    uint32_t bit = 1u << f->bit;
    if (!(hdr.cpu.in_use[f->reg] & bit) || (here.has[f->reg] & bit)) continue;
    if (missing++) names[n++] = ',', names[n++] = ' ';
    for (const char *c = f->name; *c && n < sizeof names - 1; c++) names[n++] = *c;
  }
  names[n] = 0;
  if (missing) {
    say("this host's CPU lacks %s (the process may use %s: its origin CPU has %s); restore on a host that has %s", names,
        missing > 1 ? "them" : "it", missing > 1 ? "them" : "it", missing > 1 ? "them" : "it");
    r_exit(EX_HOST);
  }
}

/*
 * The XSAVE area XRSTOR will load, in this CPU's layout (docs/IMAGE.md
 * section 3.1). This CPU must enable every component the image's CPU did
 * (a superset is fine: the others start in their initial state), each at the
 * same size; where a component sits may differ (vendors differ), and then the
 * area is converted (xsave.h). When every component in use sits where it sat,
 * the stored bytes are copied as they are. Either way the area is ready in
 * xsave_area (in the restorer's zone, 64-byte aligned) before anything is mapped.
 */
static struct rex_xsave_layout host_layout;
static uint64_t xrstor_mask; /* XRSTOR's requested-feature bitmap */
static int restore_timing;   /* REX_RESTORE_TIMING=1 in the environment: report the XSAVE cost on stderr */

/* "5 (AVX-512 opmask), 6 (...)" for the components of `mask`: msgbuf is say()'s, so the list has a buffer of its own. */
static const char *component_list(uint64_t mask, unsigned *count) {
  static char names[512];
  unsigned n = 0;
  *count = 0;
#define PUT(c) (n < sizeof names - 1 ? (void)(names[n++] = (c)) : (void)0)
  for (unsigned i = 0; i < REX_IMG_NXCOMP; i++) {
    if (!(mask >> i & 1)) continue;
    if ((*count)++) PUT(','), PUT(' ');
    if (i >= 10) PUT((char)('0' + i / 10));
    PUT((char)('0' + i % 10));
    const char *nm = rex_xsave_name(i);
    if (*nm) {
      PUT(' '), PUT('(');
      while (*nm) PUT(*nm++);
      PUT(')');
    }
  }
#undef PUT
  names[n] = '\0';
  return names;
}

/* Whether the image's record says the process may use feature `name` (header.cpu.in_use, the generated table's names). */
static int image_uses_feature(const char *name) {
  for (unsigned i = 0; i < REX_IMG_NFEATURES; i++) {
    const struct rex_img_feature *f = &rex_img_features[i];
    const char *a = f->name, *b = name;
    while (*a && *a == *b) a++, b++;
    if (!*a && !*b) return (int)(hdr.cpu.in_use[f->reg] >> f->bit & 1);
  }
  return 0;
}

static void check_host_xsave(void) {
  host_layout.xcr0 = host_xcr0();
  host_layout.size = host_xsave_size();
  for (unsigned i = 2; i < REX_IMG_NXCOMP; i++) {
    if (!(host_layout.xcr0 >> i & 1)) continue;
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0xd), "c"(i));
    host_layout.comp[i].offset = (uint16_t)b, host_layout.comp[i].size = (uint16_t)a;
  }
  struct rex_xsave_layout img = rex_xsave_image_layout(&hdr);
  /* Components 16 and above (AMX tiles) are never carried (the dumper refuses them in use), so only 0..15 must be here. */
  uint64_t missing = hdr.xcr0 & ~host_layout.xcr0 & 0xffffu;
  if (missing) {
    unsigned count;
    const char *names = component_list(missing, &count);
    say("this CPU's XSAVE features differ from the image's: XCR0 %x (area %u bytes) here, %x (%u bytes) in the image; "
        "this CPU lacks component%s %s; restore on a host whose CPU has %s",
        U(host_layout.xcr0), U(host_layout.size), U(hdr.xcr0), U(hdr.xsave_size), count > 1 ? "s" : "", names,
        count > 1 ? "them" : "it");
    r_exit(EX_HOST);
  }
  /*
   * More is not always fine. glibc's lazy-binding trampoline
   * (_dl_runtime_resolve_xsave/_xsavec) saves the components of its
   * STATE_SAVE_MASK into a stack buffer it sized from the origin CPU's CPUID
   * at start-up: a component of that mask this CPU enables and the image's
   * did not would be written past the buffer, and so would a standard-form
   * area reaching further than the image's where glibc saves with XSAVE
   * (XSAVEC not in use). CRIU refuses the same (its FPU cpu-cap check).
   */
  uint64_t extra = host_layout.xcr0 & ~hdr.xcr0 & REX_GLIBC_STATE_SAVE_MASK;
  if (extra) {
    unsigned count;
    const char *names = component_list(extra, &count);
    say("this CPU enables XSAVE component%s %s, which the image's CPU did not (XCR0 %x here, %x in the image): the "
        "process's glibc saves %s into stack buffers sized for the image's CPU; restore on a host with the image's XSAVE "
        "features",
        count > 1 ? "s" : "", names, U(host_layout.xcr0), U(hdr.xcr0), count > 1 ? "them" : "it");
    r_exit(EX_HOST);
  }
  uint32_t saved = rex_xsave_extent(&host_layout, REX_GLIBC_STATE_SAVE_MASK);
  if (!image_uses_feature("XSAVEC") && saved > hdr.xsave_size) {
    say("this CPU's XSAVE area reaches byte %u for the components glibc saves, the image's CPU's %u, and the process's "
        "glibc saves them with XSAVE (no XSAVEC) into stack buffers sized for the image's CPU; restore on a host with the "
        "image's XSAVE layout",
        U(saved), U(hdr.xsave_size));
    r_exit(EX_HOST);
  }
  unsigned bad;
  if (rex_xsave_compare(&img, &host_layout, hdr.xcr0 & 0xffffu, &bad) == REX_XSAVE_RESIZED) {
    say("this CPU's XSAVE component %u (%s) is %u bytes, the image's CPU's %u bytes: the same state cannot be carried over; "
        "restore on a host with the image's CPU features",
        U(bad), rex_xsave_name(bad), U(host_layout.comp[bad].size), U(hdr.xsave_comp[bad].size));
    r_exit(EX_HOST);
  }
  uint32_t need = rex_xsave_extent(&host_layout, host_layout.xcr0);
  if (need > sizeof xsave_area) {
    say("this CPU's XSAVE area (%u bytes for components 0..15) is larger than the restorer's buffer (%u bytes)", U(need),
        U(sizeof xsave_area));
    r_exit(EX_HOST);
  }
  /* Components 0..15 only: AMX (17, 18) is never in an image and stays as the kernel gave it (off). PKRU stays this
     host's default for a new process when the image's CPU had none (XRSTOR's initial value 0 would open every key). */
  xrstor_mask = host_layout.xcr0 & 0xffffu;
  if (!(hdr.xcr0 >> 9 & 1)) xrstor_mask &= ~(1ull << 9);

  uint64_t t0 = now_ns();
  const uint8_t *x = meta + lay.xsave;
  int r = rex_xsave_compare(&img, &host_layout, rex_xsave_rd64(x + 512), &bad);
  if (r == REX_XSAVE_SAME) memcpy(xsave_area, x, hdr.xsave_len); /* the rest stays zero: components in their initial state */
  else if (r == REX_XSAVE_MOVED) r = rex_xsave_convert(xsave_area, need, x, hdr.xsave_len, &img, &host_layout, &bad);
  if (r < 0) { /* check_xsave and the checks above leave nothing to fail here; kept so that nothing half-converted is loaded */
    say("cannot convert the image's XSAVE area to this CPU's layout: component %u (%s): error %d", U(bad), rex_xsave_name(bad),
        D(r));
    r_exit(EX_HOST);
  }
  uint64_t t1 = now_ns();
  if (restore_timing)
    say("timing: xsave %s %u ns (%u bytes stored, %u bytes for XRSTOR)", r == REX_XSAVE_SAME ? "copied" : "converted",
        U(t1 - t0), U(hdr.xsave_len), U(r == REX_XSAVE_SAME ? hdr.xsave_len : need));
}

/* --cwd DIR (parse_args: copied, as the arguments live on the stack that clear_host unmaps),
 * and the directory the process continues in (check_host decides). */
static char cwd_buf[4096];
static const char *cwd_fallback;
static const char *restore_cwd;

static void check_host(void) {
  check_host_cpu();
  check_host_xsave();
  read_host_maps();
  for (unsigned i = 0; i < REX_IMG_NSPECIAL; i++) {
    const struct rex_img_special *s = &hdr.special[i];
    if (s->kind == REX_IMG_SP_NONE) continue;
    unsigned k = 0;
    while (k < host_nspecial && host_special[k].kind != s->kind) k++;
    if (k == host_nspecial || host_special[k].end - host_special[k].start != s->end - s->start) {
      say("this kernel's %s differs from the image's (%u bytes there, %u here): restore on a host with the same kernel",
          special_name(s->kind), U(s->end - s->start), U(k == host_nspecial ? 0 : host_special[k].end - host_special[k].start));
      r_exit(EX_HOST);
    }
  }
  for (unsigned k = 0; k < host_nspecial; k++) {
    unsigned i = 0;
    while (i < REX_IMG_NSPECIAL && hdr.special[i].kind != host_special[k].kind) i++;
    if (i == REX_IMG_NSPECIAL) {
      say("this kernel has %s but the image has none: restore on a host with the same kernel", special_name(host_special[k].kind));
      r_exit(EX_HOST);
    }
  }
  /*
   * Files: the same file (device, inode, size, mtime), or the copy a --file
   * option names (its content verified by the caller; only the size is
   * checked here), or nothing is mapped.
   */
  for (uint32_t i = 0; i < hdr.nregions; i++) {
    const struct rex_img_region *r = &regions[i];
    region_fd[i] = -1;
    if (r->kind != REX_IMG_FILE && r->kind != REX_IMG_FILE_SHARED) continue;
    if (i > 0 && region_fd[i - 1] >= 0 && regions[i - 1].name_off == r->name_off && regions[i - 1].kind == r->kind &&
        regions[i - 1].ino == r->ino) {
      region_fd[i] = region_fd[i - 1];
      continue;
    }
    const char *path = strings + r->name_off;
    const char *local = mapped_file(path, r->name_len);
    if (local && r->kind == REX_IMG_FILE_SHARED) {
      /* A copy is not the file: the process's writes, and other writers', would no longer meet. */
      say("region %u (%x-%x): %s is mapped shared; --file cannot redirect a shared mapping to another file",
          U(i), U(r->start), U(r->end), path);
      r_exit(EX_HOST);
    }
    int wr = r->kind == REX_IMG_FILE_SHARED && (r->prot & REX_IMG_PROT_WRITE);
    long fd = r_openat(local ? local : path, (wr ? O_RDWR_ : O_RDONLY_) | O_CLOEXEC_);
    if (fd < 0) {
      if (local)
        say("region %u (%x-%x): cannot open %s (given by --file for %s): %s (%d)", U(i), U(r->start), U(r->end), local,
            path, errname(fd), D(-fd));
      else
        say("region %u (%x-%x): cannot open %s: %s (%d)", U(i), U(r->start), U(r->end), path, errname(fd), D(-fd));
      r_exit(EX_HOST);
    }
    struct k_stat st;
    memset(&st, 0, sizeof st);
    sys2(NR_fstat, fd, &st);
    if (local) {
      if ((st.st_mode & S_IFMT_) != S_IFREG_ || (uint64_t)st.st_size != r->size) {
        say("region %u (%x-%x): %s (given by --file for %s) is not a copy of it: %u bytes%s here, %u in the image",
            U(i), U(r->start), U(r->end), local, path, U(st.st_size),
            (st.st_mode & S_IFMT_) != S_IFREG_ ? " and not a regular file" : "", U(r->size));
        r_exit(EX_HOST);
      }
    } else if (st.st_dev != r->dev || st.st_ino != r->ino || (uint64_t)st.st_size != r->size || st.st_mtime_ != r->mtime_sec ||
        (uint64_t)st.st_mtime_nsec != r->mtime_nsec) {
      say("region %u (%x-%x): %s is not the file the image was taken from "
          "(device/inode/size/mtime %u/%u/%u/%d here, %u/%u/%u/%d in the image)",
          U(i), U(r->start), U(r->end), path, U(st.st_dev), U(st.st_ino), U(st.st_size), D(st.st_mtime_), U(r->dev),
          U(r->ino), U(r->size), D(r->mtime_sec));
      r_exit(EX_HOST);
    }
    region_fd[i] = (int)fd;
  }
  restore_cwd = strings + hdr.cwd_off;
  long cfd = r_openat(restore_cwd, O_RDONLY_ | O_DIRECTORY_ | O_CLOEXEC_);
  if (cfd == -2 /* ENOENT */ && cwd_fallback) {
    restore_cwd = cwd_fallback;
    cfd = r_openat(restore_cwd, O_RDONLY_ | O_DIRECTORY_ | O_CLOEXEC_);
  }
  if (cfd < 0) {
    say("the image's working directory %s%s%s: %s (%d)", strings + hdr.cwd_off, restore_cwd != strings + hdr.cwd_off ? ", and --cwd " : "",
        restore_cwd != strings + hdr.cwd_off ? restore_cwd : "", errname(cfd), D(-cfd));
    r_exit(EX_HOST);
  }
  sys1(NR_close, cfd);
}

/* ------------------------------------------------------------- restore */

static _Noreturn void fail_sys(const char *what, uint64_t a, uint64_t b, long err) {
  say("restore failed: %s %x-%x: %s (%d); nothing of the image ran", what, U(a), U(b), errname(err), D(-err));
  r_exit(EX_RESTORE);
}

static void clear_host(void) {
  for (unsigned i = 0; i < host_nother; i++) {
    long r = sys2(NR_munmap, host_other[i].start, host_other[i].end - host_other[i].start);
    if (r < 0) fail_sys("munmap of the restorer's mapping", host_other[i].start, host_other[i].end, r);
  }
}

/*
 * The vDSO and vvar pages move one mapping at a time (one mremap spanning
 * them fails on this kernel), first into the zone, then to the image's
 * addresses, which may be where another of them sits now. The image's
 * spacing is kept: the vDSO reads vvar at a fixed distance.
 */
static void move_specials(void) {
  uint64_t base = UINT64_MAX;
  for (unsigned i = 0; i < REX_IMG_NSPECIAL; i++)
    if (hdr.special[i].kind && hdr.special[i].start < base) base = hdr.special[i].start;
  for (unsigned pass = 0; pass < 2; pass++) {
    for (unsigned i = 0; i < REX_IMG_NSPECIAL; i++) {
      const struct rex_img_special *s = &hdr.special[i];
      if (!s->kind) continue;
      unsigned k = 0;
      while (host_special[k].kind != s->kind) k++;
      uint64_t len = s->end - s->start;
      uint64_t to = pass == 0 ? REX_IMG_ZONE_VDSO + (s->start - base) % (16u << 20) : s->start;
      if (pass == 0 && (s->start - base) >= (16u << 20)) fail_sys("vDSO layout wider than 16 MiB", s->start, s->end, -22);
      long r = sys5(NR_mremap, host_special[k].start, len, len, MREMAP_MAYMOVE_ | MREMAP_FIXED_, to);
      if (r < 0) fail_sys(special_name(s->kind), host_special[k].start, to, r);
      host_special[k].start = to, host_special[k].end = to + len;
    }
  }
}

static void map_regions(void) {
  struct rex_xxh64 xh;
  rex_xxh64_init(&xh);
  for (uint32_t i = 0; i < hdr.nregions; i++) {
    const struct rex_img_region *r = &regions[i];
    int fill = r->nruns > 0 || r->nwords > 0;
    int prot = fill ? PROT_READ_ | PROT_WRITE_ : (int)r->prot;
    int flags = MAP_FIXED_NOREPLACE_;
    int fd = -1;
    uint64_t off = 0;
    switch (r->kind) {
    case REX_IMG_FILE: flags |= MAP_PRIVATE_, fd = region_fd[i], off = r->offset; break;
    case REX_IMG_FILE_SHARED: flags |= MAP_SHARED_, fd = region_fd[i], off = r->offset; break;
    case REX_IMG_STACK: flags |= MAP_PRIVATE_ | MAP_ANONYMOUS_ | MAP_GROWSDOWN_; break; /* grows past the saved size */
    default: flags |= MAP_PRIVATE_ | MAP_ANONYMOUS_;
    }
    long a = r_mmap(r->start, r->end - r->start, prot, flags, fd, off);
    if (a < 0 && a > -4096 && fd >= 0 && a != -EEXIST_) {
      /* Name the file: a copy in a cache on a noexec mount fails here (EPERM) for code regions. */
      const char *path = strings + r->name_off, *local = mapped_file(path, r->name_len);
      say("restore failed: mmap %x-%x of %s: %s (%d)%s; nothing of the image ran", U(r->start), U(r->end), local ? local : path,
          errname(a), D(-a), a == -1 && (r->prot & REX_IMG_PROT_EXEC) ? " (executable mapping from a noexec mount?)" : "");
      r_exit(EX_RESTORE);
    }
    if (a < 0 && a > -4096) fail_sys(a == -EEXIST_ ? "mmap (address taken)" : "mmap", r->start, r->end, a);
    if ((uint64_t)a != r->start) fail_sys("mmap placed the region elsewhere", r->start, (uint64_t)a, -EEXIST_);
    uint64_t cursor = 0, addr, npages;
    while (rex_img_next_extent(r, runs, words, &cursor, &addr, &npages)) {
      uint64_t n = npages * REX_IMG_PAGE;
      /* Fault the extent in one call instead of one page at a time inside read(); errors only cost speed. */
      if (npages >= 16) sys3(NR_madvise, addr, n, MADV_POPULATE_WRITE_);
      read_exact((void *)addr, n, "page data");
      rex_xxh64_stripes(&xh, (const void *)addr, n);
    }
    if (fill && r->prot != (uint32_t)prot) {
      long m = sys3(NR_mprotect, r->start, r->end - r->start, r->prot);
      if (m < 0) fail_sys("mprotect", r->start, r->end, m);
    }
  }
  struct rex_img_trailer t;
  read_exact(&t, sizeof t, "trailer");
  uint64_t got = rex_xxh64_final(&xh, "", 0);
  if (memcmp(t.magic, REX_IMG_TRAILER_MAGIC, 8) != 0 || got != t.data_hash) {
    say("%s: corrupt image: trailer at offset %u: page data hash to %x, the trailer says %x; nothing of the image ran",
        img_name, U(img_off - sizeof t), U(got), U(t.data_hash));
    r_exit(EX_CORRUPT);
  }
}

static void restore_process_state(void) {
  long r;
  if ((r = sys1(NR_chdir, restore_cwd)) < 0) fail_sys("chdir", 0, 0, r);
  sys1(NR_umask, hdr.umask);
  for (unsigned i = 0; i < REX_IMG_NRLIMIT; i++) {
    /* Raising a hard limit needs privilege; the restorer's limits were inherited from the same user. */
    if ((r = sys4(NR_prlimit64, 0, i, &hdr.rlimits[i], 0)) < 0)
      say("warning: cannot restore rlimit %u (cur %u, max %u): %s", U(i), U(hdr.rlimits[i].cur), U(hdr.rlimits[i].max), errname(r));
  }
  struct k_prctl_mm_map mm = {
      .start_code = hdr.mm.start_code, .end_code = hdr.mm.end_code, .start_data = hdr.mm.start_data,
      .end_data = hdr.mm.end_data, .start_brk = hdr.mm.start_brk, .brk = hdr.mm.brk, .start_stack = hdr.mm.start_stack,
      .arg_start = hdr.mm.arg_start, .arg_end = hdr.mm.arg_end, .env_start = hdr.mm.env_start, .env_end = hdr.mm.env_end,
      .auxv = (uint64_t)hdr.mm.auxv, .auxv_size = hdr.mm.auxv_words * 8, .exe_fd = (uint32_t)-1};
  if ((r = sys5(NR_prctl, PR_SET_MM_, PR_SET_MM_MAP_, &mm, sizeof mm, 0)) < 0)
    fail_sys("prctl(PR_SET_MM_MAP) for brk", hdr.mm.start_brk, hdr.mm.brk, r);
  sys2(NR_prctl, PR_SET_NAME_, hdr.comm);
  for (unsigned sig = 1; sig <= REX_IMG_NSIG; sig++) {
    if (sig == 9 || sig == 19) continue; /* SIGKILL, SIGSTOP */
    if ((r = sys4(NR_rt_sigaction, sig, &hdr.sigactions[sig - 1], 0, 8)) < 0) fail_sys("rt_sigaction", sig, 0, r);
  }
  struct {
    uint64_t sp;
    int32_t flags, pad;
    uint64_t size;
  } ss = {hdr.altstack_sp, (int32_t)(hdr.altstack_flags & ~(uint32_t)SS_ONSTACK_), 0, hdr.altstack_size};
  if ((r = sys2(NR_sigaltstack, &ss, 0)) < 0) fail_sys("sigaltstack", hdr.altstack_sp, hdr.altstack_size, r);
  if (hdr.rseq_addr && (r = sys4(NR_rseq, hdr.rseq_addr, hdr.rseq_len, 0, hdr.rseq_sig)) < 0)
    fail_sys("rseq", hdr.rseq_addr, hdr.rseq_len, r);
  if (hdr.robust_head && (r = sys2(NR_set_robust_list, hdr.robust_head, hdr.robust_len)) < 0)
    fail_sys("set_robust_list", hdr.robust_head, hdr.robust_len, r);
  if (hdr.clear_child_tid) sys1(NR_set_tid_address, hdr.clear_child_tid);
  if ((r = sys2(NR_arch_prctl, ARCH_SET_FS_, hdr.regs.fs_base)) < 0) fail_sys("arch_prctl(ARCH_SET_FS)", hdr.regs.fs_base, 0, r);
  if (hdr.regs.gs_base && (r = sys2(NR_arch_prctl, ARCH_SET_GS_, hdr.regs.gs_base)) < 0)
    fail_sys("arch_prctl(ARCH_SET_GS)", hdr.regs.gs_base, 0, r);
}

static _Noreturn void jump(void) {
  const struct rex_img_regs *g = &hdr.regs;
  uint64_t *b = FINAL_BLOCK;
  b[0] = g->r15, b[1] = g->r14, b[2] = g->r13, b[3] = g->r12, b[4] = g->r11, b[5] = g->r10, b[6] = g->r9, b[7] = g->r8;
  b[8] = g->rdi, b[9] = g->rsi, b[10] = g->rbp, b[11] = g->rbx, b[12] = g->rdx, b[13] = g->rcx, b[14] = g->rax;
  b[15] = g->rflags;
  b[16] = g->rsp - 8;
  /* ret pops rip from the image's stack: the slot below rsp is dead (it held rex_dump_self's frame). */
  *(uint64_t *)(g->rsp - 8) = g->rip;

  struct rex_img_resume res = {REX_IMG_RESUME_MAGIC, REX_IMG_ZONE_START, REX_IMG_ZONE_END, hdr.pid,
                               (int32_t)sys0(NR_getpid), t_start, 0};
  res.restore_end_ns = now_ns();
  memcpy((void *)hdr.resume_block, &res, sizeof res);

  /* The image's signal mask last: until now every signal was blocked, so no handler ran half-restored. */
  sys4(NR_rt_sigprocmask, SIG_SETMASK_, &hdr.sigmask, 0, 8);
  __asm__ volatile("xrstor (%0)\n"
                   "mov %3, %%rsp\n"
                   "pop %%r15\n"
                   "pop %%r14\n"
                   "pop %%r13\n"
                   "pop %%r12\n"
                   "pop %%r11\n"
                   "pop %%r10\n"
                   "pop %%r9\n"
                   "pop %%r8\n"
                   "pop %%rdi\n"
                   "pop %%rsi\n"
                   "pop %%rbp\n"
                   "pop %%rbx\n"
                   "pop %%rdx\n"
                   "pop %%rcx\n"
                   "pop %%rax\n"
                   "popfq\n"
                   "pop %%rsp\n"
                   "ret\n"
                   :
                   : "r"(xsave_area), "a"((uint32_t)xrstor_mask), "d"((uint32_t)(xrstor_mask >> 32)), "r"(FINAL_BLOCK)
                   : "memory");
  __builtin_unreachable();
}

/* --------------------------------------------------------------- main */

static void usage(void) {
  say("usage: rex-restore [--check] [--file ORIGINAL=LOCAL]... [--cwd DIR] [--args-fd N] [IMAGE | -]\n"
      "  rebuilds the process saved in IMAGE (default: read from fd 0) and continues it;\n"
      "  --check validates the image and exits 0 without restoring;\n"
      "  --file maps LOCAL where the image maps ORIGINAL: the caller has verified that LOCAL has\n"
      "  the same content, the restorer checks its size only (repeatable);\n"
      "  --cwd DIR continues the process in DIR when the image's working directory is missing here;\n"
      "  --args-fd N reads further arguments from descriptor N (a 4-byte little-endian length, then\n"
      "  NUL-terminated strings), for a restorer started before its image is known.\n"
      "  exit status: 2 usage or read error, 3 corrupt image, 4 not restorable on this host,\n"
      "  5 restore failed midway; otherwise the restored program's own status");
  r_exit(EX_USAGE);
}

/*
 * One --file ORIGINAL=LOCAL: split at the first '=' (an ORIGINAL path that
 * holds '=' cannot be redirected). ORIGINAL must be absolute, as image paths are.
 */
static void add_file_map(const char *arg) {
  size_t eq = 0;
  while (arg[eq] && arg[eq] != '=') eq++;
  if (arg[0] != '/' || arg[eq] != '=' || arg[eq + 1] == '\0') {
    say("--file %s: expected ORIGINAL=LOCAL with an absolute ORIGINAL path and a non-empty LOCAL one", arg);
    r_exit(EX_USAGE);
  }
  size_t n = slen(arg) + 1;
  if (nfile_map == MAX_FILE_MAP || n > FILE_MAP_TEXT - file_map_used) {
    say("--file %s: more than %u --file options or %u bytes of them", arg, U(MAX_FILE_MAP), U(FILE_MAP_TEXT));
    r_exit(EX_USAGE);
  }
  char *copy = file_map_text + file_map_used;
  memcpy(copy, arg, n);
  file_map_used += n;
  file_map[nfile_map].orig = copy, file_map[nfile_map].orig_len = eq, file_map[nfile_map].local = copy + eq + 1;
  nfile_map++;
}

/* The LOCAL path given for ORIGINAL path p, or 0. The last --file for a path wins. */
static const char *mapped_file(const char *p, uint32_t len) {
  for (unsigned i = nfile_map; i-- > 0;)
    if (file_map[i].orig_len == len && memcmp(file_map[i].orig, p, len) == 0) return file_map[i].local;
  return 0;
}

/* What the arguments ask for. */
static int check;
static const char *path;
static int args_fd = -1;

static void parse_args(int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    if (streq(argv[i], "--check")) check = 1;
    else if (streq(argv[i], "--file")) {
      if (i + 1 == argc) usage();
      add_file_map(argv[++i]);
    } else if (argv[i][0] == '-' && argv[i][1] == '-' && !memcmp(argv[i], "--file=", 7)) add_file_map(argv[i] + 7);
    else if (streq(argv[i], "--cwd")) {
      if (i + 1 == argc || argv[i + 1][0] != '/') usage();
      const char *d = argv[++i];
      size_t n = 0;
      while (d[n] && n + 1 < sizeof cwd_buf) n++;
      if (d[n]) usage();
      memcpy(cwd_buf, d, n + 1);
      cwd_fallback = cwd_buf;
    }
    else if (streq(argv[i], "--args-fd") && args_fd < 0 && i + 1 < argc && argv[i + 1][0] >= '0' && argv[i + 1][0] <= '9') {
      args_fd = 0;
      for (const char *c = argv[++i]; *c >= '0' && *c <= '9' && args_fd < 65536; c++) args_fd = args_fd * 10 + (*c - '0');
    } else if (streq(argv[i], "--help") || streq(argv[i], "-h")) usage();
    else if (argv[i][0] == '-' && argv[i][1] != '\0') usage();
    else if (path) usage();
    else path = argv[i];
  }
}

/*
 * --args-fd N: the rest of the arguments arrive on descriptor N, as a 4-byte
 * little-endian length and that many bytes of NUL-terminated strings, so
 * that rexd can start a restorer before it knows the image (a spare, ready
 * for the next rfork). N stays open: it is the executor's greeting socket.
 */
static void read_args_fd(void) {
  static char text[65536];
  static char *more[1024];
  uint32_t len = 0;
  uint8_t *p = (uint8_t *)&len;
  for (uint64_t got = 0; got < 4;) {
    long r = sys3(NR_read, args_fd, p + got, 4 - got);
    if (r == -EINTR_) continue;
    if (r <= 0) r_exit(EX_USAGE); /* rexd went away before using this spare: nothing to say */
    got += (uint64_t)r;
  }
  if (len == 0 || len > sizeof text) {
    say("--args-fd %d: %u bytes of arguments (1..%u)", args_fd, U(len), U(sizeof text));
    r_exit(EX_USAGE);
  }
  for (uint64_t got = 0; got < len;) {
    long r = sys3(NR_read, args_fd, text + got, len - got);
    if (r == -EINTR_) continue;
    if (r <= 0) {
      say("--args-fd %d: the arguments end after %u of %u bytes", args_fd, U(got), U(len));
      r_exit(EX_USAGE);
    }
    got += (uint64_t)r;
  }
  if (text[len - 1] != '\0') {
    say("--args-fd %d: the last argument is not NUL-terminated", args_fd);
    r_exit(EX_USAGE);
  }
  int n = 0;
  for (uint32_t off = 0; off < len; off += (uint32_t)slen(text + off) + 1) {
    if (n == (int)(sizeof more / sizeof *more)) {
      say("--args-fd %d: more than %u arguments", args_fd, U(sizeof more / sizeof *more));
      r_exit(EX_USAGE);
    }
    more[n++] = text + off;
  }
  parse_args(n, more);
}

_Noreturn void restorer_main(uint64_t *sp);
_Noreturn void restorer_main(uint64_t *sp) {
  t_start = now_ns();
  uint64_t all = ~0ull;
  sys4(NR_rt_sigprocmask, SIG_SETMASK_, &all, 0, 8);

  parse_args((int)sp[0] - 1, (char **)(sp + 2));
  for (char **e = (char **)(sp + 2 + sp[0]); *e; e++)
    if (streq(*e, "REX_RESTORE_TIMING=1")) restore_timing = 1;
  if (args_fd >= 0) {
    read_args_fd();
    t_start = now_ns(); /* a spare waited for its image: the restore starts now */
  }
  if (path && !streq(path, "-")) {
    long fd = r_openat(path, O_RDONLY_ | O_CLOEXEC_);
    if (fd < 0) {
      say("cannot open image %s: %s (%d)", path, errname(fd), D(-fd));
      r_exit(EX_USAGE);
    }
    img_fd = (int)fd;
    /* argv lives on the kernel's stack, which is unmapped before the pages are read: keep a copy. */
    static char name_copy[4096];
    size_t n = slen(path) < sizeof name_copy - 1 ? slen(path) : sizeof name_copy - 1;
    memcpy(name_copy, path, n);
    img_name = name_copy;
  }

  /*
   * An image streamed through a pipe or FIFO (rexd's streamImage): a 1 MiB
   * pipe buffer (the unprivileged default maximum) instead of 64 KiB takes
   * each of rexd's 256 KiB chunks in one write, so rexd and this process do
   * not wake each other four times a chunk. A regular file refuses (EBADF or
   * EINVAL): nothing to do.
   */
  sys3(NR_fcntl, img_fd, 1031 /* F_SETPIPE_SZ */, 1u << 20);

  /* 1. Header and metadata, all checked before anything is mapped. */
  read_exact(&hdr, sizeof hdr, "the header");
  check_header();
  long m = r_mmap(REX_IMG_ZONE_META, (hdr.meta_size + REX_IMG_PAGE - 1) & ~(uint64_t)(REX_IMG_PAGE - 1),
                  PROT_READ_ | PROT_WRITE_, MAP_PRIVATE_ | MAP_ANONYMOUS_ | MAP_FIXED_NOREPLACE_, -1, 0);
  if (m < 0 && m > -4096) {
    say("cannot map %u bytes for the metadata: %s", U(hdr.meta_size), errname(m));
    r_exit(EX_RESTORE);
  }
  meta = (uint8_t *)m;
  read_exact(meta, hdr.meta_size, "the metadata");
  check_hash();
  regions = (const struct rex_img_region *)(meta + lay.regions);
  runs = (const struct rex_img_run *)(meta + lay.runs);
  words = (const uint64_t *)(meta + lay.words);
  fds = (const struct rex_img_fd *)(meta + lay.fds);
  strings = (const char *)(meta + lay.strings);
  if (hdr.strings_size == 0 || strings[hdr.strings_size - 1] != '\0')
    corrupt_hdr("strings_size", HOFF(strings_size), "the string table must end with NUL", hdr.strings_size);
  check_regions();
  check_rest();
  check_host();

  if (check) {
    /* Page data and trailer, hashed through a buffer. */
    struct rex_xxh64 xh;
    rex_xxh64_init(&xh);
    static uint8_t page[64 * REX_IMG_PAGE];
    for (uint64_t left = hdr.data_pages; left > 0;) {
      uint64_t n = left < 64 ? left : 64;
      read_exact(page, n * REX_IMG_PAGE, "page data");
      rex_xxh64_stripes(&xh, page, n * REX_IMG_PAGE);
      left -= n;
    }
    struct rex_img_trailer t;
    read_exact(&t, sizeof t, "trailer");
    uint64_t got = rex_xxh64_final(&xh, "", 0);
    if (memcmp(t.magic, REX_IMG_TRAILER_MAGIC, 8) != 0 || got != t.data_hash) {
      say("%s: corrupt image: trailer at offset %u: page data hash to %x, the trailer says %x", img_name,
          U(img_off - sizeof t), U(got), U(t.data_hash));
      r_exit(EX_CORRUPT);
    }
    say("%s: valid image of pid %d (%s): %u regions, %u runs, %u bitmap words, %u pages, %u fds, %u bytes", img_name,
        D(hdr.pid), strings + hdr.exe_off, U(hdr.nregions), U(hdr.nruns), U(hdr.nwords), U(hdr.data_pages), U(hdr.nfds),
        U(img_off));
    r_exit(EX_CHECK_OK);
  }

  /* 2. Make room: everything of the restorer outside its zone goes, the vDSO moves. */
  clear_host();
  move_specials();
  /* 3. Memory, then the trailer's hash over what landed. */
  map_regions();
  for (uint32_t i = 0; i < hdr.nregions; i++)
    if (region_fd[i] >= 0 && (i + 1 == hdr.nregions || region_fd[i + 1] != region_fd[i])) sys1(NR_close, region_fd[i]);
  if (img_fd != 0) sys1(NR_close, img_fd);
  /* 4. Kernel-side state, registers, and back into rex_dump_self. */
  restore_process_state();
  jump();
}

/*
 * Entry: rsp points at argc. Switch to the .bss stack at once; the kernel's
 * stack is unmapped later and may lie where the image needs memory.
 */
__asm__(".pushsection .text.start,\"ax\"\n"
        ".globl _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  mov %rsp, %rdi\n"
        "  lea restorer_stack+262144(%rip), %rsp\n"
        "  and $-16, %rsp\n"
        "  call restorer_main\n"
        "  hlt\n"
        ".popsection\n");
