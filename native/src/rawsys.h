/*
 * rawsys.h: raw x86-64 system calls, shared by the restorer (restorer/) and
 * librex's dumper (src/dump.c).
 *
 * The restorer links against nothing (no libc, no loader), and the dumper
 * may not touch errno or malloc while the process it writes keeps running,
 * so both call the kernel directly. The header carries the few kernel ABI
 * numbers they need (with a trailing _ where libc has a macro of that name)
 * instead of including <linux/...> headers, which would tie the build to the
 * installed kernel headers. Every wrapper returns the kernel's raw result: a
 * value, or -errno. Freestanding: no libc, no errno.
 */
#ifndef REX_RAWSYS_H
#define REX_RAWSYS_H

#include <stddef.h>
#include <stdint.h>

/* x86-64 system call numbers. */
#define NR_read 0
#define NR_write 1
#define NR_close 3
#define NR_fcntl 72
#define NR_fstat 5
#define NR_lseek 8
#define NR_mmap 9
#define NR_mprotect 10
#define NR_munmap 11
#define NR_rt_sigaction 13
#define NR_rt_sigprocmask 14
#define NR_mremap 25
#define NR_madvise 28
#define NR_getpid 39
#define NR_exit_group 231
#define NR_chdir 80
#define NR_umask 95
#define NR_sigaltstack 131
#define NR_prctl 157
#define NR_arch_prctl 158
#define NR_gettid 186
#define NR_set_tid_address 218
#define NR_clock_gettime 228
#define NR_openat 257
#define NR_set_robust_list 273
#define NR_prlimit64 302
#define NR_rseq 334

#define AT_FDCWD_ (-100)
#define O_RDONLY_ 0
#define O_RDWR_ 2
#define O_DIRECTORY_ 0200000
#define O_CLOEXEC_ 02000000

#define PROT_READ_ 1
#define PROT_WRITE_ 2
#define MAP_SHARED_ 0x01
#define MAP_PRIVATE_ 0x02
#define MAP_FIXED_ 0x10
#define MAP_ANONYMOUS_ 0x20
#define MAP_GROWSDOWN_ 0x0100
#define MAP_FIXED_NOREPLACE_ 0x100000 /* EEXIST instead of silently replacing what is there */
#define MADV_POPULATE_WRITE_ 23 /* Linux 5.14+; EINVAL before, harmless */
#define MREMAP_MAYMOVE_ 1
#define MREMAP_FIXED_ 2

#define SIG_SETMASK_ 2
#define SS_ONSTACK_ 1
#define SS_DISABLE_ 2
#define PR_SET_NAME_ 15
#define PR_SET_MM_ 35
#define PR_SET_MM_MAP_ 14
#define ARCH_SET_GS_ 0x1001
#define ARCH_SET_FS_ 0x1002
#define CLOCK_MONOTONIC_ 1

#define S_IFMT_ 0170000
#define S_IFREG_ 0100000

#define EINTR_ 4
#define EIO_ 5
#define EEXIST_ 17

struct k_timespec {
  int64_t tv_sec, tv_nsec;
};

/* The kernel's struct stat on x86-64. */
struct k_stat {
  uint64_t st_dev, st_ino, st_nlink;
  uint32_t st_mode, st_uid, st_gid, pad0;
  uint64_t st_rdev;
  int64_t st_size, st_blksize, st_blocks;
  int64_t st_atime_, st_atime_nsec, st_mtime_, st_mtime_nsec, st_ctime_, st_ctime_nsec;
  int64_t reserved[3];
};

struct k_prctl_mm_map {
  uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
  uint64_t arg_start, arg_end, env_start, env_end;
  uint64_t auxv;
  uint32_t auxv_size, exe_fd;
};

static inline long sys6(long n, long a, long b, long c, long d, long e, long f) {
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}
#define sys0(n) sys6((n), 0, 0, 0, 0, 0, 0)
#define sys1(n, a) sys6((n), (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define sys5(n, a, b, c, d, e) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

static inline long r_mmap(uint64_t addr, uint64_t len, int prot, int flags, int fd, uint64_t off) {
  return sys6(NR_mmap, (long)addr, (long)len, prot, flags, fd, (long)off);
}
static inline long r_openat(const char *path, int flags) { return sys4(NR_openat, AT_FDCWD_, path, flags, 0); }
static inline void r_close(int fd) { sys1(NR_close, fd); }
static inline _Noreturn void r_exit(int status) {
  for (;;) sys1(NR_exit_group, status);
}

/* Reads until EOF or the buffer is full. Bytes read, or -errno. */
static inline long r_read_all(int fd, void *buf, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    long n = sys3(NR_read, fd, (char *)buf + got, cap - got);
    if (n == -EINTR_) continue;
    if (n < 0) return n;
    if (n == 0) break;
    got += (size_t)n;
  }
  return (long)got;
}

/* Writes all n bytes. 0, or -errno (-EIO when the kernel takes none). */
static inline long r_write_all(int fd, const void *buf, size_t n) {
  const char *p = (const char *)buf;
  while (n > 0) {
    long w = sys3(NR_write, fd, p, n);
    if (w == -EINTR_) continue;
    if (w < 0) return w;
    if (w == 0) return -EIO_;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

#endif /* REX_RAWSYS_H */
