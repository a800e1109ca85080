/*
 * dump.c: rex_dump_self(), librex's process dumper (docs/IMAGE.md, docs/RFORK.md).
 *
 * The calling process writes itself to an image while it runs, so what it
 * does while dumping must not change what it dumps:
 *   - only raw system calls (the wrappers below): no malloc, no stdio, and
 *     errno untouched (errno is state the image carries);
 *   - all bookkeeping lives in one scratch mapping that is left out of the
 *     image (clipped out of whatever VMA the kernel merged it into);
 *   - the stack below the saved stack pointer is dead in the restored copy,
 *     but the dumper's own frames live there while it is copied, so the stack
 *     and every unreadable region are read through /proc/self/mem into a
 *     buffer, and the hash and the write see the same bytes.
 */
#define _GNU_SOURCE
#include "dump.h"

#include "internal.h"
#include "rawsys.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define ARCH_GET_FS_ 0x1003
#define ARCH_GET_GS_ 0x1004
#define RSEQ_SIG_ 0x53053053u /* glibc's x86 rseq signature */

/*
 * The restorer writes struct rex_img_resume here before jumping back. It is
 * in librex's .data (not .bss) so that its page is always carried.
 */
__attribute__((aligned(64))) char rex__resume_block_anchor[sizeof(struct rex_img_resume)] = {1};

/* ------------------------------------------------------------- entry (asm) */

/*
 * rex_dump_self(fd, flags, info): saves all general registers, rflags and the
 * XSAVE area (mask XCR0) in a 64-byte aligned frame, then calls
 * rex__dump_c(fd, flags, info, regs, xsave). The offsets are those of struct
 * rex_img_regs; the XSAVE area starts at 192. The area's header (bytes
 * 512..575) is zeroed first because XRSTOR faults on garbage in its reserved
 * bytes and XSAVE does not write all of them.
 *
 * rex__resume_entry is where the restorer jumps, with every register as it
 * was at rex_dump_self's entry and rsp pointing at its return address. It
 * saves them again, lets C unmap the restorer (rex__after_restore), puts them
 * back and returns 1 to the caller as if from rex_dump_self.
 */
__asm__(".text\n"
        ".globl rex_dump_self\n"
        ".type rex_dump_self,@function\n"
        "rex_dump_self:\n"
        "  pushfq\n"
        "  push %rbp\n"
        "  mov %rsp, %rbp\n"
        "  sub $(192 + 12288), %rsp\n"
        "  and $-64, %rsp\n"
        "  mov %r15, 0(%rsp)\n"
        "  mov %r14, 8(%rsp)\n"
        "  mov %r13, 16(%rsp)\n"
        "  mov %r12, 24(%rsp)\n"
        "  mov %r11, 32(%rsp)\n"
        "  mov %r10, 40(%rsp)\n"
        "  mov %r9, 48(%rsp)\n"
        "  mov %r8, 56(%rsp)\n"
        "  mov %rdi, 64(%rsp)\n"
        "  mov %rsi, 72(%rsp)\n"
        "  mov %rbx, 88(%rsp)\n"
        "  mov %rdx, 96(%rsp)\n"
        "  mov %rcx, 104(%rsp)\n"
        "  mov %rax, 112(%rsp)\n"
        "  mov 0(%rbp), %rax\n" /* the caller's rbp */
        "  mov %rax, 80(%rsp)\n"
        "  mov 8(%rbp), %rax\n" /* rflags */
        "  mov %rax, 120(%rsp)\n"
        "  lea 16(%rbp), %rax\n" /* rsp at entry: points at the return address */
        "  mov %rax, 128(%rsp)\n"
        "  lea rex__resume_entry(%rip), %rax\n"
        "  mov %rax, 136(%rsp)\n"
        "  xor %eax, %eax\n"
        "  mov %rax, 704(%rsp)\n" /* 192 + 512: XSAVE header, 64 bytes */
        "  mov %rax, 712(%rsp)\n"
        "  mov %rax, 720(%rsp)\n"
        "  mov %rax, 728(%rsp)\n"
        "  mov %rax, 736(%rsp)\n"
        "  mov %rax, 744(%rsp)\n"
        "  mov %rax, 752(%rsp)\n"
        "  mov %rax, 760(%rsp)\n"
        "  xor %ecx, %ecx\n"
        "  xgetbv\n" /* edx:eax = XCR0, the mask for XSAVE */
        "  xsave 192(%rsp)\n"
        "  mov 64(%rsp), %rdi\n"
        "  mov 72(%rsp), %rsi\n"
        "  mov 96(%rsp), %rdx\n"
        "  mov %rsp, %rcx\n"
        "  lea 192(%rsp), %r8\n"
        "  call rex__dump_c\n"
        "  mov %rbp, %rsp\n"
        "  pop %rbp\n"
        "  popfq\n"
        "  ret\n"
        ".size rex_dump_self, .-rex_dump_self\n"
        "\n"
        ".globl rex__resume_entry\n"
        ".hidden rex__resume_entry\n"
        ".type rex__resume_entry,@function\n"
        "rex__resume_entry:\n"
        "  pushfq\n"
        "  push %rax\n"
        "  push %rbx\n"
        "  push %rcx\n"
        "  push %rdx\n"
        "  push %rsi\n"
        "  push %rdi\n"
        "  push %rbp\n"
        "  push %r8\n"
        "  push %r9\n"
        "  push %r10\n"
        "  push %r11\n"
        "  push %r12\n"
        "  push %r13\n"
        "  push %r14\n"
        "  push %r15\n"
        "  mov %rsp, %rbp\n"
        "  sub $12288, %rsp\n"
        "  and $-64, %rsp\n"
        "  xor %eax, %eax\n"
        "  mov %rax, 512(%rsp)\n"
        "  mov %rax, 520(%rsp)\n"
        "  mov %rax, 528(%rsp)\n"
        "  mov %rax, 536(%rsp)\n"
        "  mov %rax, 544(%rsp)\n"
        "  mov %rax, 552(%rsp)\n"
        "  mov %rax, 560(%rsp)\n"
        "  mov %rax, 568(%rsp)\n"
        "  mov %rdx, %rdi\n" /* info, rex_dump_self's third argument */
        "  xor %ecx, %ecx\n"
        "  xgetbv\n"
        "  xsave (%rsp)\n"
        "  call rex__after_restore\n"
        "  xor %ecx, %ecx\n"
        "  xgetbv\n"
        "  xrstor (%rsp)\n"
        "  mov %rbp, %rsp\n"
        "  pop %r15\n"
        "  pop %r14\n"
        "  pop %r13\n"
        "  pop %r12\n"
        "  pop %r11\n"
        "  pop %r10\n"
        "  pop %r9\n"
        "  pop %r8\n"
        "  pop %rbp\n"
        "  pop %rdi\n"
        "  pop %rsi\n"
        "  pop %rdx\n"
        "  pop %rcx\n"
        "  pop %rbx\n"
        "  pop %rax\n"
        "  popfq\n"
        "  mov $1, %eax\n" /* mov leaves the restored flags alone */
        "  ret\n"
        ".size rex__resume_entry, .-rex__resume_entry\n");

/* -------------------------------------------------------- raw system calls */

/* rawsys.h (shared with the restorer): sys0..sys6, r_read_all, r_write_all, r_close. */
#define SYS(n, a, b, c) sys3((n), (a), (b), (c))
#define SYS4(n, a, b, c, d) sys4((n), (a), (b), (c), (d))

static long r_open(const char *path, int flags) { return SYS(SYS_openat, AT_FDCWD, path, flags | O_CLOEXEC); }

/* -------------------------------------------------------- scratch mapping */

/*
 * One MAP_NORESERVE mapping holds everything the dumper needs; only the
 * pages it touches cost memory. Offsets of its parts:
 */
#define SCR_MAPS 0ul                                /* /proc/self/maps text, 8 MiB */
#define SCR_MAPS_CAP (8ul << 20)
#define SCR_REGIONS (SCR_MAPS + SCR_MAPS_CAP)        /* 65536 regions, 8 MiB */
#define SCR_RUNS (SCR_REGIONS + (8ul << 20))          /* 2 Mi runs, 32 MiB */
#define SCR_FDS (SCR_RUNS + (32ul << 20))             /* 4096 fds, 224 KiB -> 1 MiB */
#define SCR_STRINGS (SCR_FDS + (1ul << 20))           /* 4 MiB */
#define SCR_HEADER (SCR_STRINGS + (4ul << 20))        /* header, 64 KiB */
#define SCR_XSAVE (SCR_HEADER + (64ul << 10))         /* 16 KiB */
#define SCR_PAGEMAP (SCR_XSAVE + (16ul << 10))        /* 512 KiB of pagemap entries */
#define SCR_IO (SCR_PAGEMAP + (512ul << 10))          /* 1 MiB copy buffer */
#define SCR_TEXT (SCR_IO + (1ul << 20))               /* small reads: stat, auxv, dirents, 64 KiB */
#define SCR_WORDS (SCR_TEXT + (64ul << 10))         /* page bitmaps, 8 Mi words, 64 MiB */
#define SCR_SIZE (SCR_WORDS + (uint64_t)REX_IMG_MAX_WORDS * 8)
#define PAGEMAP_BATCH ((512ul << 10) / 8)
#define IO_CAP (1ul << 20)

struct dumper {
  int fd;
  unsigned flags;
  uint8_t *scr;
  uint64_t scr_start, scr_end;
  struct rex_img_header *h;
  struct rex_img_region *regions;
  struct rex_img_run *runs;
  uint64_t *words;
  struct rex_img_fd *fds;
  char *strings;
  uint64_t private_pages;
  uint64_t written;
};

/* ------------------------------------------------------------ small helpers */

static size_t slen(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static int starts_with(const char *s, size_t n, const char *prefix) {
  size_t k = slen(prefix);
  return n >= k && memcmp(s, prefix, k) == 0;
}

static int ends_with(const char *s, size_t n, const char *suffix) {
  size_t k = slen(suffix);
  return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static int streq_n(const char *s, size_t n, const char *lit) { return n == slen(lit) && memcmp(s, lit, n) == 0; }

/* Parses hex digits at *p; advances. */
static uint64_t parse_hex(const char **p, const char *end) {
  uint64_t v = 0;
  while (*p < end) {
    char c = **p;
    unsigned d;
    if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
    else break;
    v = v << 4 | d;
    (*p)++;
  }
  return v;
}

static uint64_t parse_dec(const char **p, const char *end) {
  uint64_t v = 0;
  while (*p < end && **p >= '0' && **p <= '9') v = v * 10 + (uint64_t)(*(*p)++ - '0');
  return v;
}

/* Adds s[0..n) to the string table (NUL-terminated); reuses an identical previous string. */
static int add_string(struct dumper *d, const char *s, size_t n, uint32_t *off, uint32_t *len) {
  struct rex_img_header *h = d->h;
  /* Libraries appear in several consecutive regions: compare with the last string only. */
  static const uint32_t none = UINT32_MAX;
  uint32_t last = none;
  if (h->nregions > 0 && d->regions[h->nregions - 1].name_len == n && n > 0) last = d->regions[h->nregions - 1].name_off;
  if (last != none && memcmp(d->strings + last, s, n) == 0) {
    *off = last;
    *len = (uint32_t)n;
    return 0;
  }
  if (h->strings_size + n + 1 > REX_IMG_MAX_STRINGS) {
    rex__set_error("rex_dump_self: more than %u bytes of paths", REX_IMG_MAX_STRINGS);
    return -E2BIG;
  }
  memcpy(d->strings + h->strings_size, s, n);
  d->strings[h->strings_size + n] = '\0';
  *off = h->strings_size;
  *len = (uint32_t)n;
  h->strings_size += (uint32_t)n + 1;
  return 0;
}

/* Reads a whole small /proc file into the text area; NUL-terminates. Length or -errno. */
static long read_small(struct dumper *d, const char *path, size_t cap) {
  long fd = r_open(path, O_RDONLY);
  if (fd < 0) return fd;
  long n = r_read_all((int)fd, d->scr + SCR_TEXT, cap - 1);
  r_close((int)fd);
  if (n >= 0) d->scr[SCR_TEXT + n] = '\0';
  return n;
}

/* ------------------------------------------------------------ process state */

static int count_threads(struct dumper *d) {
  long dfd = r_open("/proc/self/task", O_RDONLY | O_DIRECTORY);
  if (dfd < 0) return (int)dfd;
  int count = 0;
  for (;;) {
    long n = SYS(SYS_getdents64, dfd, d->scr + SCR_TEXT, 32768);
    if (n < 0) {
      r_close((int)dfd);
      return (int)n;
    }
    if (n == 0) break;
    for (long pos = 0; pos < n;) {
      const uint8_t *e = d->scr + SCR_TEXT + pos;
      uint16_t reclen;
      memcpy(&reclen, e + 16, 2);
      const char *name = (const char *)e + 19;
      if (name[0] != '.') count++;
      pos += reclen;
    }
  }
  r_close((int)dfd);
  return count;
}

/* Fields 26..28 and 45..51 of /proc/self/stat, brk, auxv. */
static int read_mm(struct dumper *d) {
  struct rex_img_mm *mm = &d->h->mm;
  long n = read_small(d, "/proc/self/stat", 4096);
  if (n < 0) return (int)n;
  const char *s = (const char *)d->scr + SCR_TEXT, *end = s + n, *p = end;
  while (p > s && p[-1] != ')') p--; /* comm may hold spaces and parentheses: skip to the last ')' */
  uint64_t f[53] = {0};
  int field = 3;
  while (p < end && field < 53) {
    while (p < end && *p == ' ') p++;
    if (p < end && *p == '-') p++;
    const char *q = p;
    f[field] = parse_dec(&p, end);
    if (p == q) while (p < end && *p != ' ') p++; /* the state letter */
    field++;
  }
  if (field < 52) {
    rex__set_error("rex_dump_self: /proc/self/stat has %d fields, expected 52", field - 1);
    return -EPROTO;
  }
  mm->start_code = f[26], mm->end_code = f[27], mm->start_stack = f[28];
  mm->start_data = f[45], mm->end_data = f[46], mm->start_brk = f[47];
  mm->arg_start = f[48], mm->arg_end = f[49], mm->env_start = f[50], mm->env_end = f[51];
  mm->brk = (uint64_t)SYS(SYS_brk, 0, 0, 0);

  n = read_small(d, "/proc/self/auxv", sizeof mm->auxv + 1);
  if (n < 0) return (int)n;
  if ((size_t)n > sizeof mm->auxv || n % 16 != 0) {
    rex__set_error("rex_dump_self: /proc/self/auxv is %ld bytes (at most %zu expected)", n, sizeof mm->auxv);
    return -E2BIG;
  }
  memcpy(mm->auxv, d->scr + SCR_TEXT, (size_t)n);
  /* The kernel reports its whole saved_auxv; keep the words up to and including AT_NULL. */
  uint32_t words = 0;
  while (words + 2 <= (uint32_t)n / 8) {
    words += 2;
    if (mm->auxv[words - 2] == 0) break;
  }
  mm->auxv_words = words;
  return 0;
}

static int read_misc(struct dumper *d) {
  struct rex_img_header *h = d->h;
  long r;
  for (unsigned sig = 1; sig <= REX_IMG_NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    r = SYS4(SYS_rt_sigaction, sig, 0, &h->sigactions[sig - 1], 8);
    if (r < 0) return (int)r;
  }
  if ((r = SYS4(SYS_rt_sigprocmask, SIG_SETMASK, 0, &h->sigmask, 8)) < 0) return (int)r;
  stack_t ss;
  if ((r = SYS(SYS_sigaltstack, 0, &ss, 0)) < 0) return (int)r;
  h->altstack_sp = (uint64_t)ss.ss_sp, h->altstack_size = ss.ss_size, h->altstack_flags = (uint32_t)ss.ss_flags;
  /* umask has no getter that does not set it: set and put back. */
  long um = SYS(SYS_umask, 022, 0, 0);
  SYS(SYS_umask, um, 0, 0);
  h->umask = (uint32_t)um;
  for (unsigned i = 0; i < REX_IMG_NRLIMIT; i++)
    if ((r = SYS4(SYS_prlimit64, 0, i, 0, &h->rlimits[i])) < 0) return (int)r;
  if ((r = SYS(SYS_arch_prctl, ARCH_GET_FS_, &h->regs.fs_base, 0)) < 0) return (int)r;
  if ((r = SYS(SYS_arch_prctl, ARCH_GET_GS_, &h->regs.gs_base, 0)) < 0) return (int)r;
  long head_len = 0;
  void *head = 0;
  if ((r = SYS(SYS_get_robust_list, 0, &head, &head_len)) < 0) return (int)r;
  h->robust_head = (uint64_t)head, h->robust_len = (uint64_t)head_len;
  /* PR_GET_TID_ADDRESS needs CONFIG_CHECKPOINT_RESTORE; without it clear_child_tid is not carried. */
  void *tidaddr = 0;
  if (SYS(SYS_prctl, PR_GET_TID_ADDRESS, &tidaddr, 0) == 0) h->clear_child_tid = (uint64_t)tidaddr;
  SYS(SYS_prctl, PR_GET_NAME, h->comm, 0);
  h->pid = (int32_t)SYS(SYS_getpid, 0, 0, 0);
  h->tid = (int32_t)SYS(SYS_gettid, 0, 0, 0);
  h->ppid = (int32_t)SYS(SYS_getppid, 0, 0, 0);
  struct timespec ts;
  SYS(SYS_clock_gettime, CLOCK_REALTIME, &ts, 0);
  h->dump_realtime_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;

  char *buf = (char *)d->scr + SCR_TEXT;
  r = SYS(SYS_getcwd, buf, 4096, 0);
  if (r < 0) return (int)r;
  if ((r = add_string(d, buf, slen(buf), &h->cwd_off, &h->cwd_len)) < 0) return (int)r;
  r = SYS(SYS_readlink, "/proc/self/exe", buf, 4095);
  if (r < 0) r = 0;
  if ((r = add_string(d, buf, (size_t)r, &h->exe_off, &h->exe_len)) < 0) return (int)r;
  return 0;
}

/*
 * rseq: glibc registers an area at the thread pointer + __rseq_offset. A
 * registration is per thread and not inherited, so the restorer registers it
 * again. Debian's glibc 2.36 says __rseq_size = 20 but registered 32 bytes;
 * the kernel answers EBUSY to a second registration with exactly the same
 * arguments, which tells which length is in force without changing anything.
 */
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));

static void read_rseq(struct dumper *d) {
  struct rex_img_header *h = d->h;
  if (&__rseq_size == NULL || &__rseq_offset == NULL || __rseq_size == 0) return;
  uint64_t addr = h->regs.fs_base + (uint64_t)__rseq_offset;
  uint32_t lens[2] = {32, __rseq_size};
  for (int i = 0; i < 2; i++) {
    if (SYS4(SYS_rseq, addr, lens[i], 0, RSEQ_SIG_) == -EBUSY) {
      h->rseq_addr = addr, h->rseq_len = lens[i], h->rseq_sig = RSEQ_SIG_;
      return;
    }
  }
}

static int read_fds(struct dumper *d, int image_fd) {
  long dfd = r_open("/proc/self/fd", O_RDONLY | O_DIRECTORY);
  if (dfd < 0) return (int)dfd;
  struct rex_img_header *h = d->h;
  uint8_t *dents = d->scr + SCR_IO; /* the copy buffer is free until the page data */
  int rc = 0;
  for (;;) {
    long n = SYS(SYS_getdents64, dfd, dents, 65536);
    if (n < 0) {
      rc = (int)n;
      goto out;
    }
    if (n == 0) break;
    for (long pos = 0; pos < n;) {
      const uint8_t *e = dents + pos;
      uint16_t reclen;
      memcpy(&reclen, e + 16, 2);
      pos += reclen;
      const char *name = (const char *)e + 19;
      if (name[0] < '0' || name[0] > '9') continue;
      const char *q = name;
      int fd = (int)parse_dec(&q, name + 16);
      if (fd == dfd) continue;
      if (h->nfds >= REX_IMG_MAX_FDS) {
        rex__set_error("rex_dump_self: more than %u open descriptors", REX_IMG_MAX_FDS);
        rc = -E2BIG;
        goto out;
      }
      struct rex_img_fd *f = &d->fds[h->nfds++];
      f->fd = fd;
      f->fd_flags = (uint32_t)SYS(SYS_fcntl, fd, F_GETFD, 0);
      f->fl_flags = (uint32_t)SYS(SYS_fcntl, fd, F_GETFL, 0);
      struct stat st;
      if (SYS(SYS_fstat, fd, &st, 0) == 0) f->mode = st.st_mode, f->dev = st.st_dev, f->ino = st.st_ino;
      long pos2 = SYS(SYS_lseek, fd, 0, SEEK_CUR);
      f->pos = pos2 < 0 ? UINT64_MAX : (uint64_t)pos2;
      f->kind = rex_img_fd_kind_of(f->mode); /* schema/image.json fdKinds */
      if (fd == image_fd) f->flags |= REX_IMG_FD_F_IMAGE;
      char link[32], *target = (char *)d->scr + SCR_TEXT;
      memcpy(link, "/proc/self/fd/", 14);
      memcpy(link + 14, name, slen(name) + 1);
      long ln = SYS(SYS_readlink, link, target, 4095);
      if (ln < 0) ln = 0;
      if ((rc = add_string(d, target, (size_t)ln, &f->path_off, &f->path_len)) < 0) goto out;
    }
  }
out:
  r_close((int)dfd);
  return rc;
}

/* ---------------------------------------------------------------- regions */

/* Appends one region [start, end) described by a maps line. */
static int add_region(struct dumper *d, uint64_t start, uint64_t end, const char *perms, uint64_t off, unsigned maj,
                      unsigned min, uint64_t ino, const char *path, size_t plen) {
  struct rex_img_header *h = d->h;
  if (h->nregions >= REX_IMG_MAX_REGIONS) {
    rex__set_error("rex_dump_self: more than %u mappings", REX_IMG_MAX_REGIONS);
    return -E2BIG;
  }
  if (start < REX_IMG_ZONE_END && end > REX_IMG_ZONE_START) {
    /* The restorer runs there; an image using it could never be restored. */
    rex__set_error("rex_dump_self: mapping %llx-%llx (%.*s) lies in 0x70000000-0x80000000, the restorer's zone",
                   (unsigned long long)start, (unsigned long long)end, (int)plen, path);
    return -EOPNOTSUPP;
  }
  struct rex_img_region r;
  memset(&r, 0, sizeof r);
  r.start = start, r.end = end, r.offset = off;
  r.prot = (perms[0] == 'r' ? REX_IMG_PROT_READ : 0) | (perms[1] == 'w' ? REX_IMG_PROT_WRITE : 0) |
           (perms[2] == 'x' ? REX_IMG_PROT_EXEC : 0);
  int shared = perms[3] == 's';

  if (plen > 0 && path[0] == '/' && ino != 0) {
    /* A file: mapped from the file again if it is still the same file, else carried whole. */
    int deleted = ends_with(path, plen, " (deleted)");
    char *p0 = (char *)d->scr + SCR_TEXT;
    memcpy(p0, path, plen);
    p0[plen] = '\0';
    struct stat st;
    memset(&st, 0, sizeof st);
    int same = !deleted && SYS(SYS_stat, p0, &st, 0) == 0 && st.st_ino == ino && major(st.st_dev) == maj &&
               minor(st.st_dev) == min && S_ISREG(st.st_mode);
    if (shared) {
      /* memfd and /dev/zero show as deleted files; /SYSV names are System V shm. */
      if (!same) {
        if (d->flags & REX_DUMP_SKIP_SHARED) {
          h->flags |= REX_IMG_F_SHARED_SKIPPED;
          return 0;
        }
        const char *what = starts_with(path, plen, "/SYSV")             ? "System V shared memory segment"
                           : starts_with(path, plen, "/dev/zero (deleted)") ? "shared anonymous mapping"
                           : starts_with(path, plen, "/memfd:")             ? "shared memfd mapping"
                                                                            : "shared mapping of a deleted or replaced file";
        rex__set_error("rex_dump_self: %s %llx-%llx (%.*s) cannot be carried; unmap it or pass REX_DUMP_SKIP_SHARED",
                       what, (unsigned long long)start, (unsigned long long)end, (int)plen, path);
        return -EOPNOTSUPP;
      }
      r.kind = REX_IMG_FILE_SHARED;
    } else {
      r.kind = same ? REX_IMG_FILE : REX_IMG_ANON_COPY;
    }
    if (same) {
      r.dev = st.st_dev, r.ino = st.st_ino, r.size = (uint64_t)st.st_size;
      r.mtime_sec = st.st_mtim.tv_sec, r.mtime_nsec = (uint32_t)st.st_mtim.tv_nsec;
    }
  } else if (shared) {
    if (d->flags & REX_DUMP_SKIP_SHARED) {
      h->flags |= REX_IMG_F_SHARED_SKIPPED;
      return 0;
    }
    rex__set_error("rex_dump_self: %s %llx-%llx (%.*s) cannot be carried; unmap it or pass REX_DUMP_SKIP_SHARED",
                   starts_with(path, plen, "/SYSV") ? "System V shared memory segment" : "shared anonymous mapping",
                   (unsigned long long)start, (unsigned long long)end, (int)plen, path);
    return -EOPNOTSUPP;
  } else if (streq_n(path, plen, "[heap]")) {
    r.kind = REX_IMG_HEAP;
  } else if (streq_n(path, plen, "[stack]")) {
    r.kind = REX_IMG_STACK;
  } else if (plen == 0 || starts_with(path, plen, "[anon:")) {
    r.kind = REX_IMG_ANON;
  } else {
    rex__set_error("rex_dump_self: mapping %llx-%llx (%.*s) is of a kind this dumper does not know",
                   (unsigned long long)start, (unsigned long long)end, (int)plen, path);
    return -EOPNOTSUPP;
  }
  int rc = add_string(d, path, plen, &r.name_off, &r.name_len);
  if (rc < 0) return rc;
  d->regions[h->nregions++] = r;
  return 0;
}

static int read_maps(struct dumper *d) {
  struct rex_img_header *h = d->h;
  long fd = r_open("/proc/self/maps", O_RDONLY);
  if (fd < 0) return (int)fd;
  long n = r_read_all((int)fd, d->scr + SCR_MAPS, SCR_MAPS_CAP);
  r_close((int)fd);
  if (n < 0) return (int)n;
  if ((size_t)n == SCR_MAPS_CAP) {
    rex__set_error("rex_dump_self: /proc/self/maps is larger than %lu bytes", SCR_MAPS_CAP);
    return -E2BIG;
  }
  const char *p = (const char *)d->scr + SCR_MAPS, *end = p + n;
  unsigned nspecial = 0;
  while (p < end) {
    const char *eol = p;
    while (eol < end && *eol != '\n') eol++;
    /* start-end perms offset maj:min inode path */
    uint64_t start = parse_hex(&p, eol);
    p++;
    uint64_t stop = parse_hex(&p, eol);
    p++;
    const char *perms = p;
    p += 5;
    uint64_t off = parse_hex(&p, eol);
    p++;
    unsigned maj = (unsigned)parse_hex(&p, eol);
    p++;
    unsigned min = (unsigned)parse_hex(&p, eol);
    p++;
    uint64_t ino = parse_dec(&p, eol);
    while (p < eol && *p == ' ') p++;
    const char *path = p;
    size_t plen = (size_t)(eol - p);
    p = eol + 1;

    if (start >= REX_IMG_USER_MAX) continue; /* [vsyscall]: fixed by the kernel, not ours to move */
    uint32_t sk = streq_n(path, plen, "[vvar]")          ? REX_IMG_SP_VVAR
                  : streq_n(path, plen, "[vvar_vclock]") ? REX_IMG_SP_VVAR_VCLOCK
                  : streq_n(path, plen, "[vdso]")        ? REX_IMG_SP_VDSO
                                                         : REX_IMG_SP_NONE;
    if (sk != REX_IMG_SP_NONE) {
      if (nspecial >= REX_IMG_NSPECIAL) {
        rex__set_error("rex_dump_self: more than %u vDSO/vvar mappings", REX_IMG_NSPECIAL);
        return -EOPNOTSUPP;
      }
      h->special[nspecial].start = start, h->special[nspecial].end = stop, h->special[nspecial].kind = sk;
      nspecial++;
      continue;
    }
    /* The scratch mapping may have been merged into a neighbour: clip it out. */
    int rc = 0;
    if (stop <= d->scr_start || start >= d->scr_end) {
      rc = add_region(d, start, stop, perms, off, maj, min, ino, path, plen);
    } else {
      if (start < d->scr_start) rc = add_region(d, start, d->scr_start, perms, off, maj, min, ino, path, plen);
      if (rc == 0 && stop > d->scr_end)
        rc = add_region(d, d->scr_end, stop, perms, off + (d->scr_end - start), maj, min, ino, path, plen);
    }
    if (rc < 0) return rc;
  }
  return 0;
}

/*
 * Which pages each region carries: pagemap bits 63 (present), 62 (swapped),
 * 61 (file page or shared). Each region's pages are listed both ways while
 * the pagemap is read, as runs at the end of the run table and as a bitmap at
 * the end of the bitmap table; then the larger listing is taken back. The
 * scratch mapping is all zeros beyond what was written, and the metadata
 * writer relies on that for its padding, so whatever is taken back is zeroed.
 */
static int find_runs(struct dumper *d) {
  struct rex_img_header *h = d->h;
  long pm = r_open("/proc/self/pagemap", O_RDONLY);
  if (pm < 0) return (int)pm;
  uint64_t *ent = (uint64_t *)(d->scr + SCR_PAGEMAP);
  int rc = 0;
  for (uint32_t i = 0; i < h->nregions; i++) {
    struct rex_img_region *r = &d->regions[i];
    r->first_run = h->nruns;
    r->first_word = h->nwords;
    if (r->kind == REX_IMG_FILE_SHARED) continue;
    uint64_t npages = (r->end - r->start) / REX_IMG_PAGE;
    uint64_t need_words = rex_img_bitmap_words(npages);
    int bitmap_fits = need_words <= REX_IMG_MAX_WORDS - h->nwords;
    uint64_t *bits = d->words + h->nwords;
    uint64_t region_runs = 0, region_pages = 0, hi_word = 0; /* hi_word: one past the last bitmap word written */
    uint64_t run_start = 0, run_len = 0;
    for (uint64_t base = 0; base < npages; base += PAGEMAP_BATCH) {
      uint64_t cnt = npages - base < PAGEMAP_BATCH ? npages - base : PAGEMAP_BATCH;
      if (r->kind != REX_IMG_ANON_COPY) {
        long got = sys6(SYS_pread64, pm, (long)ent, (long)(cnt * 8), (long)((r->start / REX_IMG_PAGE + base) * 8), 0, 0);
        if (got != (long)(cnt * 8)) {
          rex__set_error("rex_dump_self: reading /proc/self/pagemap for %llx-%llx failed",
                         (unsigned long long)r->start, (unsigned long long)r->end);
          rc = got < 0 ? (int)got : -EIO;
          goto out;
        }
      }
      for (uint64_t k = 0; k < cnt; k++) {
        int carry;
        if (r->kind == REX_IMG_ANON_COPY) {
          carry = 1;
        } else {
          uint64_t e = ent[k];
          int present = (e >> 63) & 1, swapped = (e >> 62) & 1, filepage = (e >> 61) & 1;
          /* In a private file mapping a page without bit 61 was copied on write (RELRO, .data). */
          carry = r->kind == REX_IMG_FILE ? (present && !filepage) || swapped : present || swapped;
        }
        uint64_t page = base + k;
        if (carry) {
          if (run_len == 0) run_start = r->start + page * REX_IMG_PAGE;
          run_len++;
          region_pages++;
          if (bitmap_fits) {
            bits[page >> 6] |= 1ull << (page & 63);
            hi_word = (page >> 6) + 1;
          }
        }
        if (run_len > 0 && (!carry || page + 1 == npages)) {
          /* Past the run table's end the runs are only counted: the bitmap may still do. */
          if (h->nruns + region_runs < REX_IMG_MAX_RUNS) {
            d->runs[h->nruns + region_runs].addr = run_start;
            d->runs[h->nruns + region_runs].npages = run_len;
          }
          region_runs++;
          run_len = 0;
        }
      }
    }
    uint64_t kept_runs = region_runs < REX_IMG_MAX_RUNS - h->nruns ? region_runs : REX_IMG_MAX_RUNS - h->nruns;
    if (bitmap_fits && need_words * 8 < region_runs * sizeof(struct rex_img_run)) {
      memset(d->runs + h->nruns, 0, kept_runs * sizeof(struct rex_img_run));
      r->page_map = REX_IMG_MAP_BITMAP;
      r->nwords = (uint32_t)need_words;
      h->nwords += (uint32_t)need_words;
    } else {
      if (hi_word) memset(bits, 0, hi_word * 8);
      if (region_runs > kept_runs) {
        rex__set_error("rex_dump_self: more than %u page runs (region %llx-%llx)", REX_IMG_MAX_RUNS,
                       (unsigned long long)r->start, (unsigned long long)r->end);
        rc = -E2BIG;
        goto out;
      }
      r->page_map = REX_IMG_MAP_RUNS;
      r->nruns = (uint32_t)region_runs;
      h->nruns += (uint32_t)region_runs;
    }
    h->data_pages += region_pages;
    d->private_pages += region_pages;
  }
out:
  r_close((int)pm);
  return rc;
}

/* --------------------------------------------------------------- writing */

static int put(struct dumper *d, const void *p, size_t n) {
  long r = r_write_all(d->fd, p, n);
  if (r < 0) {
    rex__set_error("rex_dump_self: writing the image to fd %d: %s", d->fd, strerror((int)-r));
    return (int)r;
  }
  d->written += n;
  return 0;
}

static int write_data(struct dumper *d, struct rex_xxh64 *xh) {
  struct rex_img_header *h = d->h;
  long mem = -1;
  int rc = 0;
  for (uint32_t i = 0; i < h->nregions && rc == 0; i++) {
    const struct rex_img_region *r = &d->regions[i];
    /* Unreadable regions and the live stack go through /proc/self/mem (it reads PROT_NONE pages too). */
    int copy = !(r->prot & REX_IMG_PROT_READ) || r->kind == REX_IMG_STACK;
    if (copy && mem < 0 && (r->nruns > 0 || r->nwords > 0)) {
      mem = r_open("/proc/self/mem", O_RDONLY);
      if (mem < 0) {
        rex__set_error("rex_dump_self: cannot open /proc/self/mem to read %llx-%llx", (unsigned long long)r->start,
                       (unsigned long long)r->end);
        return (int)mem;
      }
    }
    uint64_t cursor = 0, addr, npages;
    while (rc == 0 && rex_img_next_extent(r, d->runs, d->words, &cursor, &addr, &npages)) {
      uint64_t left = npages * REX_IMG_PAGE;
      while (left > 0 && rc == 0) {
        uint64_t n = left < IO_CAP ? left : IO_CAP;
        const uint8_t *src = (const uint8_t *)addr;
        if (copy) {
          long got = sys6(SYS_pread64, mem, (long)(d->scr + SCR_IO), (long)n, (long)addr, 0, 0);
          if (got != (long)n) {
            rex__set_error("rex_dump_self: reading %llx+%llu through /proc/self/mem failed", (unsigned long long)addr,
                           (unsigned long long)n);
            rc = got < 0 ? (int)got : -EIO;
            break;
          }
          src = d->scr + SCR_IO;
        }
        rex_xxh64_stripes(xh, src, n);
        rc = put(d, src, n);
        addr += n, left -= n;
      }
    }
  }
  if (mem >= 0) r_close((int)mem);
  return rc;
}

/*
 * Bytes of the XSAVE area up to the end of the last component in use
 * (XSTATE_BV): the rest is in its initial state, which XRSTOR restores
 * from the header alone. On a CPU with AMX the area is 11 KiB, 8 KiB of it
 * tile data that a process that never asked for AMX does not use; carrying
 * it would blow the metadata budget (docs/RFORK.md section 6).
 */
static uint32_t xsave_in_use(const struct rex_img_header *h, const uint8_t *xsave) {
  uint64_t bv;
  memcpy(&bv, xsave + 512, 8);
  uint32_t len = REX_IMG_XSAVE_MIN;
  for (unsigned i = 2; i < REX_IMG_NXCOMP; i++) {
    const struct rex_img_xcomp *c = &h->xsave_comp[i];
    if (bv >> i & 1 && (uint32_t)c->offset + c->size > len) len = (uint32_t)c->offset + c->size;
  }
  return len < h->xsave_size ? len : h->xsave_size;
}

/*
 * The standard-form layout of the components 2..15 XCR0 enables, as this
 * CPU reports it (CPUID leaf 0xD: EBX offset, EAX size). Readers of the image
 * take it from here; none assumes a vendor's table.
 */
static void xsave_layout(struct rex_img_header *h) {
  for (unsigned i = 2; i < REX_IMG_NXCOMP; i++) {
    if (!(h->xcr0 >> i & 1)) continue;
    uint32_t a, b, c, dd;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(dd) : "a"(0xd), "c"(i));
    h->xsave_comp[i].offset = (uint16_t)b;
    h->xsave_comp[i].size = (uint16_t)a;
  }
}

/*
 * Clears from in_use[] the features that `tunables` (GLIBC_TUNABLES) turns
 * off with glibc.cpu.hwcaps=-NAME, for the names glibc 2.36 honours
 * (glibc_off in the table; exact spelling, as glibc compares them). The
 * TypeScript twin is src/cpu/features.ts tunablesDisabled.
 */
static void tunables_off(struct rex_img_cpu *p, const char *tunables) {
  static const char key[] = "glibc.cpu.hwcaps=";
  for (const char *s = tunables; s && *s;) {
    const char *end = strchr(s, ':');
    if (!end) end = s + strlen(s);
    if ((size_t)(end - s) >= sizeof key - 1 && memcmp(s, key, sizeof key - 1) == 0) {
      for (const char *item = s + sizeof key - 1; item < end;) {
        const char *comma = memchr(item, ',', (size_t)(end - item));
        if (!comma) comma = end;
        if (*item == '-') {
          size_t n = (size_t)(comma - item - 1);
          for (unsigned i = 0; i < REX_IMG_NFEATURES; i++) {
            const struct rex_img_feature *f = &rex_img_features[i];
            if (f->glibc_off && strlen(f->name) == n && memcmp(f->name, item + 1, n) == 0) p->in_use[f->reg] &= ~(1u << f->bit);
          }
        }
        item = comma + (comma < end);
      }
    }
    s = *end ? end + 1 : end;
  }
}

/*
 * The dumping CPU's profile and the features the process may use: those of
 * the feature table the CPU has, less those GLIBC_TUNABLES turned off. glibc
 * reads GLIBC_TUNABLES once, at start-up; this reads the environment now, so
 * a process that changed the variable since (or a library that ignores the
 * tunables) is recorded as the variable says (docs/IMAGE.md section 2.4).
 */
static void cpu_profile(struct rex_img_header *h) {
  rex_img_cpu_read(&h->cpu);
  tunables_off(&h->cpu, getenv("GLIBC_TUNABLES"));
}

static uint32_t xsave_size(void) {
  uint32_t a, b, c, dd;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(dd) : "a"(0xd), "c"(0));
  return b;
}

static uint64_t xgetbv0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t)hi << 32 | lo;
}

static int dump(struct dumper *d, struct rex_img_regs *regs, const uint8_t *xsave) {
  int rc;
  int threads = count_threads(d);
  if (threads < 0) {
    rex__set_error("rex_dump_self: cannot list /proc/self/task: %s", strerror(-threads));
    return threads;
  }
  if (threads > 1) {
    rex__set_error("rex_dump_self: the process has %d threads; only a single-threaded process can be dumped", threads);
    return -EBUSY;
  }
  struct rex_img_header *h = d->h;
  memcpy(h->magic, REX_IMG_MAGIC, REX_IMG_MAGIC_SIZE);
  h->version = REX_IMG_VERSION;
  h->header_size = sizeof *h;
  h->arch = REX_IMG_ARCH_X86_64;
  h->page_size = REX_IMG_PAGE;
  h->xcr0 = xgetbv0();
  h->xsave_size = xsave_size();
  if (h->xsave_size > REX__XSAVE_BUF || h->xsave_size < 576) {
    rex__set_error("rex_dump_self: XSAVE area of %u bytes is not supported (at most %d)", h->xsave_size,
                   REX__XSAVE_BUF);
    return -ENOTSUP;
  }
  uint64_t bv;
  memcpy(&bv, xsave + 512, 8);
  if (bv >> REX_IMG_NXCOMP) {
    rex__set_error("rex_dump_self: XSAVE components 16 and above are in use (XSTATE_BV %#llx: AMX tiles); images do not carry them",
                   (unsigned long long)bv);
    return -ENOTSUP;
  }
  xsave_layout(h);
  const char *why;
  int bad = rex_img_check_xcomp(h, &why);
  if (bad >= 0) {
    rex__set_error("rex_dump_self: this CPU's XSAVE component %d is not one an image can describe: %s", bad, why);
    return -ENOTSUP;
  }
  cpu_profile(h);
  struct rex_img_cpu_fault cf;
  if (rex_img_check_cpu(&h->cpu, &cf)) {
    rex__set_error("rex_dump_self: this CPU's profile is not one an image can describe: cpu.%s: %s", cf.field, cf.why);
    return -ENOTSUP;
  }
  h->xsave_len = xsave_in_use(h, xsave);
  memcpy(d->scr + SCR_XSAVE, xsave, h->xsave_len);
  h->regs = *regs;
  h->resume_block = (uint64_t)(uintptr_t)rex__resume_block_anchor;

  if ((rc = read_misc(d)) < 0) {
    if (!rex_last_error()[0]) rex__set_error("rex_dump_self: reading process state: %s", strerror(-rc));
    return rc;
  }
  read_rseq(d);
  if ((rc = read_mm(d)) < 0) {
    if (!rex_last_error()[0]) rex__set_error("rex_dump_self: reading /proc/self/stat or auxv: %s", strerror(-rc));
    return rc;
  }
  if ((rc = read_fds(d, d->fd)) < 0) {
    if (!rex_last_error()[0]) rex__set_error("rex_dump_self: listing /proc/self/fd: %s", strerror(-rc));
    return rc;
  }
  if ((rc = read_maps(d)) < 0) {
    if (!rex_last_error()[0]) rex__set_error("rex_dump_self: reading /proc/self/maps: %s", strerror(-rc));
    return rc;
  }
  if ((rc = find_runs(d)) < 0) return rc;

  struct rex_img_layout l = rex_img_layout(h);
  h->meta_size = l.total;
  if (l.total > REX_IMG_MAX_META) {
    rex__set_error("rex_dump_self: %llu bytes of metadata, more than the %u a restorer accepts",
                   (unsigned long long)l.total, REX_IMG_MAX_META);
    return -E2BIG;
  }
  /*
   * Metadata parts in the order of struct rex_img_layout. The scratch is
   * zero beyond what was written, so hashing and writing each part rounded
   * up to 64 bytes emits the zero padding the layout asks for.
   */
  const struct {
    const void *p;
    uint64_t off, end;
  } parts[] = {
      {d->scr + SCR_XSAVE, l.xsave, l.regions}, {d->regions, l.regions, l.runs}, {d->runs, l.runs, l.words},
      {d->words, l.words, l.fds},               {d->fds, l.fds, l.strings},      {d->strings, l.strings, l.total},
  };
  struct rex_xxh64 xh;
  rex_xxh64_init(&xh);
  h->meta_hash = 0;
  rex_xxh64_stripes(&xh, h, sizeof *h);
  for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++) rex_xxh64_stripes(&xh, parts[i].p, parts[i].end - parts[i].off);
  h->meta_hash = rex_xxh64_final(&xh, "", 0);

  if ((rc = put(d, h, sizeof *h)) < 0) return rc;
  for (unsigned i = 0; i < sizeof parts / sizeof parts[0]; i++)
    if ((rc = put(d, parts[i].p, parts[i].end - parts[i].off)) < 0) return rc;

  rex_xxh64_init(&xh);
  if ((rc = write_data(d, &xh)) < 0) return rc;
  struct rex_img_trailer t;
  memcpy(t.magic, REX_IMG_TRAILER_MAGIC, 8);
  t.data_hash = rex_xxh64_final(&xh, "", 0);
  return put(d, &t, sizeof t);
}

/* ------------------------------------------------------------ entry points */

int rex__dump_c(int fd, unsigned flags, struct rex_dump_info *info, struct rex_img_regs *regs, uint8_t *xsave) {
  int saved_errno = errno;
  /* Buffered output would be written twice, once by each copy. */
  fflush(NULL);
  rex__clear_error();
  memset(rex__resume_block_anchor, 0, sizeof rex__resume_block_anchor);
  errno = saved_errno;

  struct dumper d;
  memset(&d, 0, sizeof d);
  d.fd = fd;
  d.flags = flags;
  long m = sys6(SYS_mmap, 0, SCR_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m < 0 && m > -4096) {
    rex__set_error("rex_dump_self: cannot map %lu bytes of scratch space: %s", SCR_SIZE, strerror((int)-m));
    errno = (int)-m;
    return -1;
  }
  d.scr = (uint8_t *)m;
  d.scr_start = (uint64_t)m, d.scr_end = (uint64_t)m + SCR_SIZE;
  d.h = (struct rex_img_header *)(d.scr + SCR_HEADER);
  d.regions = (struct rex_img_region *)(d.scr + SCR_REGIONS);
  d.runs = (struct rex_img_run *)(d.scr + SCR_RUNS);
  d.words = (uint64_t *)(d.scr + SCR_WORDS);
  d.fds = (struct rex_img_fd *)(d.scr + SCR_FDS);
  d.strings = (char *)(d.scr + SCR_STRINGS);

  int rc = dump(&d, regs, xsave);
  if (rc == 0 && info) {
    info->image_bytes = d.written;
    info->data_pages = d.h->data_pages;
    info->private_pages = d.private_pages;
    info->nregions = d.h->nregions;
    info->nfds = d.h->nfds;
  }
  SYS(SYS_munmap, d.scr, SCR_SIZE, 0);
  if (rc < 0) {
    errno = -rc;
    return -1;
  }
  errno = saved_errno;
  return 0;
}

void rex__after_restore(struct rex_dump_info *info) {
  struct rex_img_resume r;
  memcpy(&r, rex__resume_block_anchor, sizeof r);
  int saved_errno = errno;
  /* The restorer's code, stack and buffers: nothing of it is needed any more. */
  if (r.magic == REX_IMG_RESUME_MAGIC && r.zone_end > r.zone_start)
    SYS(SYS_munmap, r.zone_start, r.zone_end - r.zone_start, 0);
  if (info) {
    memset(info, 0, sizeof *info);
    info->origin_pid = r.old_pid;
    info->pid = r.new_pid;
    info->restore_start_ns = r.restore_start_ns;
    info->restore_ns = r.restore_end_ns - r.restore_start_ns;
  }
  errno = saved_errno;
}
