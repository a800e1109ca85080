/*
 * fileproxy.c: relayed files and directories after rfork (docs/RFORK.md
 * section 4.1; wire format in fileproxy.h).
 *
 * - The origin stub parses requests from the file channel and performs them
 *   on the real descriptor (rex__fp_perform): only on descriptors the origin
 *   process had and that are regular files or directories; no request names a
 *   path.
 * - The moved child, right after its restore, starts a supervisor (a clone
 *   with no exit signal, so the program's wait() never sees it), installs a
 *   seccomp filter that sends the file system calls on those descriptors to
 *   it (SECCOMP_RET_USER_NOTIF), and hands it the listener. The supervisor
 *   forwards each call, moves the data into and out of the child with
 *   process_vm_readv/writev, checks SECCOMP_IOCTL_NOTIF_ID_VALID before it
 *   writes into the child, and answers. It never lets the kernel continue a
 *   forwarded call (SECCOMP_USER_NOTIF_FLAG_CONTINUE): only calls on a
 *   descriptor that is no longer the relay socket (closed and reused) and
 *   F_GETFD/F_SETFD (flags of the child's own descriptor) continue.
 */
#define _GNU_SOURCE /* process_vm_readv, close_range */
#include "fileproxy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

_Static_assert(sizeof(struct stat) == REX_FP_STAT_SIZE, "struct stat is the x86-64 layout");
_Static_assert(sizeof(struct statfs) == REX_FP_STATFS_SIZE, "struct statfs is the x86-64 layout");

/* ---- encoding and parsing ---- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static void wr32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v) {
  wr32(p, (uint32_t)v);
  wr32(p + 4, (uint32_t)(v >> 32));
}

void rex__fp_put_req(uint8_t *out, const struct rex_fp_req *rq) {
  memset(out, 0, REX_FP_REQ_SIZE);
  wr32(out, REX_FP_REQ_MAGIC);
  wr16(out + 4, rq->op);
  wr32(out + 8, (uint32_t)rq->fd);
  wr32(out + 12, rq->len);
  wr32(out + 16, rq->aux);
  wr64(out + 24, (uint64_t)rq->a);
  wr64(out + 32, (uint64_t)rq->b);
}

void rex__fp_put_resp(uint8_t *out, const struct rex_fp_resp *rs) {
  memset(out, 0, REX_FP_RESP_SIZE);
  wr32(out, REX_FP_RESP_MAGIC);
  wr16(out + 4, rs->op);
  wr32(out + 8, rs->len);
  wr64(out + 16, (uint64_t)rs->result);
}

#define BAD(...)                                       \
  do {                                                 \
    if (why && whylen) snprintf(why, whylen, __VA_ARGS__); \
    return -1;                                         \
  } while (0)

/* Which of a, b and aux an operation uses (the others must be 0), and whether it carries a payload. */
enum { USES_A = 1, USES_B = 2, USES_AUX = 4, PAYLOAD = 8, COUNT_B = 16 };
static const uint8_t OPS[REX_FP_OP_MAX + 1] = {
    [REX_FP_READ] = USES_B | COUNT_B,
    [REX_FP_WRITE] = PAYLOAD,
    [REX_FP_PREAD] = USES_A | USES_B | COUNT_B,
    [REX_FP_PWRITE] = USES_A | PAYLOAD,
    [REX_FP_LSEEK] = USES_A | USES_B,
    [REX_FP_FSTAT] = 0,
    [REX_FP_STATX] = USES_AUX,
    [REX_FP_FTRUNCATE] = USES_A,
    [REX_FP_FSYNC] = 0,
    [REX_FP_FDATASYNC] = 0,
    [REX_FP_GETDENTS64] = USES_B | COUNT_B,
    [REX_FP_GETFL] = 0,
    [REX_FP_SETFL] = USES_AUX,
    [REX_FP_FSTATFS] = 0,
    [REX_FP_FALLOCATE] = USES_A | USES_B | USES_AUX,
    [REX_FP_STREAM] = 0,
};

long rex__fp_parse_req(const uint8_t *buf, size_t n, struct rex_fp_req *rq, char *why, size_t whylen) {
  if (n < REX_FP_REQ_SIZE) return 0;
  if (rd32(buf) != REX_FP_REQ_MAGIC) BAD("request magic at offset 0: 0x%08x, not \"RXFQ\"", rd32(buf));
  uint16_t op = rd16(buf + 4);
  if (op == 0 || op > REX_FP_OP_MAX) BAD("request op at offset 4: %u is not an operation", op);
  if (rd16(buf + 6) != 0 || rd32(buf + 20) != 0) BAD("request reserved bytes (offsets 6, 20) are not zero");
  int32_t fd = (int32_t)rd32(buf + 8);
  if (fd < 0) BAD("request fd at offset 8: %d is negative", fd);
  uint32_t len = rd32(buf + 12);
  uint8_t u = OPS[op];
  if (len > REX_FP_MAX_IO) BAD("request len at offset 12: %u is over the %u-byte limit", len, REX_FP_MAX_IO);
  if (len && !(u & PAYLOAD)) BAD("request len at offset 12: %u, but op %u carries no data", len, op);
  uint32_t aux = rd32(buf + 16);
  int64_t a = (int64_t)rd64(buf + 24), b = (int64_t)rd64(buf + 32);
  if (aux && !(u & USES_AUX)) BAD("request aux at offset 16: op %u takes none", op);
  if (a && !(u & USES_A)) BAD("request a at offset 24: op %u takes none", op);
  if (b && !(u & USES_B)) BAD("request b at offset 32: op %u takes none", op);
  if ((u & COUNT_B) && (b < 0 || b > (int64_t)REX_FP_MAX_IO)) BAD("request count at offset 32: %lld is not in 0..%u", (long long)b, REX_FP_MAX_IO);
  if ((op == REX_FP_PREAD || op == REX_FP_PWRITE || op == REX_FP_FTRUNCATE || op == REX_FP_FALLOCATE) && a < 0)
    BAD("request offset at offset 24: %lld is negative", (long long)a);
  if (op == REX_FP_LSEEK && (b < 0 || b > 4)) BAD("request whence at offset 32: %lld is not 0..4", (long long)b);
  if (op == REX_FP_FALLOCATE && b <= 0) BAD("request length at offset 32: %lld is not positive", (long long)b);
  if (n - REX_FP_REQ_SIZE < len) return 0;
  *rq = (struct rex_fp_req){.op = op, .fd = fd, .len = len, .aux = aux, .a = a, .b = b, .data = buf + REX_FP_REQ_SIZE};
  return (long)(REX_FP_REQ_SIZE + len);
}

static uint32_t stat_size(uint16_t op) {
  return op == REX_FP_FSTAT ? REX_FP_STAT_SIZE : op == REX_FP_STATX ? REX_FP_STATX_SIZE : op == REX_FP_FSTATFS ? REX_FP_STATFS_SIZE : 0;
}

long rex__fp_parse_resp(const uint8_t *buf, size_t n, uint16_t op, uint32_t want, struct rex_fp_resp *rs, char *why,
                        size_t whylen) {
  if (n < REX_FP_RESP_SIZE) return 0;
  if (rd32(buf) != REX_FP_RESP_MAGIC) BAD("answer magic at offset 0: 0x%08x, not \"RXFR\"", rd32(buf));
  if (rd16(buf + 4) != op) BAD("answer op at offset 4: %u, the request was %u", rd16(buf + 4), op);
  if (rd16(buf + 6) != 0 || rd32(buf + 12) != 0) BAD("answer reserved bytes (offsets 6, 12) are not zero");
  uint32_t len = rd32(buf + 8);
  int64_t r = (int64_t)rd64(buf + 16);
  if (r < -4095) BAD("answer result at offset 16: %lld is not a result or -errno", (long long)r);
  if (r < 0 && len) BAD("answer len at offset 8: %u data bytes with error %lld", len, (long long)r);
  int reads = op == REX_FP_READ || op == REX_FP_PREAD || op == REX_FP_GETDENTS64;
  uint32_t st = stat_size(op);
  if (reads) {
    if (len > want) BAD("answer len at offset 8: %u bytes, %u asked for", len, want);
    if (r >= 0 && (uint64_t)r != len) BAD("answer result at offset 16: %lld with %u data bytes", (long long)r, len);
  } else if (st) {
    if (r >= 0 && (r != 0 || len != st)) BAD("answer len at offset 8: %u bytes (result %lld), a stat buffer is %u", len, (long long)r, st);
  } else {
    if (len) BAD("answer len at offset 8: %u data bytes, op %u returns none", len, op);
    if ((op == REX_FP_WRITE || op == REX_FP_PWRITE) && r > (int64_t)want) BAD("answer result at offset 16: %lld bytes written of %u", (long long)r, want);
  }
  if (n - REX_FP_RESP_SIZE < len) return 0;
  *rs = (struct rex_fp_resp){.op = op, .len = len, .result = r, .data = buf + REX_FP_RESP_SIZE};
  return (long)(REX_FP_RESP_SIZE + len);
}

/* ---- the origin stub: performing a request ---- */

size_t rex__fp_perform(const struct rex_fp_req *rq, int (*served)(void *ctx, int fd), void *ctx, uint8_t *hdr,
                       uint8_t *data) {
  long r;
  uint32_t len = 0;
  int fd = rq->fd;
  if (!served(ctx, fd)) {
    r = -EBADF;
  } else {
    switch (rq->op) {
      case REX_FP_READ: r = read(fd, data, (size_t)rq->b); break;
      case REX_FP_WRITE: r = write(fd, rq->data, rq->len); break;
      case REX_FP_PREAD: r = pread(fd, data, (size_t)rq->b, (off_t)rq->a); break;
      case REX_FP_PWRITE: r = pwrite(fd, rq->data, rq->len, (off_t)rq->a); break;
      case REX_FP_LSEEK: r = lseek(fd, (off_t)rq->a, (int)rq->b); break;
      case REX_FP_FSTAT: r = syscall(SYS_fstat, fd, data); len = REX_FP_STAT_SIZE; break;
      case REX_FP_STATX: r = syscall(SYS_statx, fd, "", AT_EMPTY_PATH | AT_STATX_SYNC_AS_STAT, rq->aux, data); len = REX_FP_STATX_SIZE; break;
      case REX_FP_FTRUNCATE: r = ftruncate(fd, (off_t)rq->a); break;
      case REX_FP_FSYNC: r = fsync(fd); break;
      case REX_FP_FDATASYNC: r = fdatasync(fd); break;
      case REX_FP_GETDENTS64: r = syscall(SYS_getdents64, fd, data, (size_t)rq->b); break;
      case REX_FP_GETFL: r = fcntl(fd, F_GETFL); break;
      case REX_FP_SETFL: r = fcntl(fd, F_SETFL, (int)rq->aux); break;
      case REX_FP_FSTATFS: r = syscall(SYS_fstatfs, fd, data); len = REX_FP_STATFS_SIZE; break;
      case REX_FP_FALLOCATE: r = fallocate(fd, (int)rq->aux, (off_t)rq->a, (off_t)rq->b); break;
      default: r = -1; errno = ENOSYS; break;
    }
    if (r < 0) r = -errno;
  }
  if (r < 0) len = 0;
  else if (rq->op == REX_FP_READ || rq->op == REX_FP_PREAD || rq->op == REX_FP_GETDENTS64) len = (uint32_t)r;
  else if (len) r = 0; /* a stat buffer */
  struct rex_fp_resp rs = {.op = rq->op, .len = len, .result = r};
  rex__fp_put_resp(hdr, &rs);
  return len;
}

/* ---- the moved child: the supervisor ---- */

struct relayed {
  int fd;
  dev_t dev;
  ino_t ino;
};

static struct relayed sv_files[REX_FP_MAX_FILES];
static size_t sv_nfiles;
static int sv_chan = -1, sv_listener = -1;
static uint8_t sv_buf[REX_FP_RESP_SIZE + REX_FP_MAX_IO];
static uint8_t sv_io[REX_FP_MAX_IO];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[300];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
  if (n > 0 && write(2, line, (size_t)n) < 0) { /* nowhere else to say it */
  }
}

static int write_full(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_full(int fd, void *p, size_t n) {
  uint8_t *b = p;
  while (n) {
    ssize_t r = read(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    b += r;
    n -= (size_t)r;
  }
  return 0;
}

/*
 * One request to the origin, its answer's data in sv_buf + REX_FP_RESP_SIZE.
 * The result (>= 0 or -errno); -EIO once the channel is broken (then for good).
 */
static int64_t rpc(uint16_t op, int fd, uint32_t aux, int64_t a, int64_t b, const void *payload, uint32_t len, uint32_t want,
                   const uint8_t **data) {
  if (sv_chan < 0) return -EIO;
  uint8_t hdr[REX_FP_REQ_SIZE];
  struct rex_fp_req rq = {.op = op, .fd = fd, .len = len, .aux = aux, .a = a, .b = b};
  rex__fp_put_req(hdr, &rq);
  struct rex_fp_resp rs;
  char why[200];
  if (write_full(sv_chan, hdr, sizeof hdr) || (len && write_full(sv_chan, payload, len))) goto broken;
  if (read_full(sv_chan, sv_buf, REX_FP_RESP_SIZE)) goto broken;
  uint32_t dlen = rd32(sv_buf + 8);
  if (dlen > REX_FP_MAX_IO || (dlen && read_full(sv_chan, sv_buf + REX_FP_RESP_SIZE, dlen))) {
    snprintf(why, sizeof why, "answer len at offset 8: %u", dlen);
    goto bad;
  }
  if (rex__fp_parse_resp(sv_buf, REX_FP_RESP_SIZE + dlen, op, (op == REX_FP_WRITE || op == REX_FP_PWRITE) ? len : want, &rs, why, sizeof why) <= 0)
    goto bad;
  if (data) *data = rs.data;
  return rs.result;
bad:
  say("rfork: bad answer from the origin on the file channel: %s; relayed files fail with EIO from now on\n", why);
  close(sv_chan);
  sv_chan = -1;
  return -EIO;
broken:
  say("rfork: lost the file channel to the origin; relayed files fail with EIO from now on\n");
  close(sv_chan);
  sv_chan = -1;
  return -EIO;
}

static int id_valid(uint64_t id) { return ioctl(sv_listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0; }

static int mem_read(pid_t pid, uint64_t addr, void *buf, size_t n) {
  struct iovec l = {buf, n}, r = {(void *)(uintptr_t)addr, n};
  return process_vm_readv(pid, &l, 1, &r, 1, 0) == (ssize_t)n ? 0 : -EFAULT;
}

static int mem_write(pid_t pid, uint64_t addr, const void *buf, size_t n) {
  struct iovec l = {(void *)buf, n}, r = {(void *)(uintptr_t)addr, n};
  return process_vm_writev(pid, &l, 1, &r, 1, 0) == (ssize_t)n ? 0 : -EFAULT;
}

/* Reads (read, pread; off < 0: at the shared offset) up to n bytes into the child's addr. */
static int64_t fwd_read(pid_t pid, uint64_t id, int fd, uint64_t addr, uint64_t n, int64_t off) {
  uint64_t done = 0;
  /* Can the caller's buffer be reached at all (a bad pointer, or ptrace refused)? Asked before the origin reads: its offset must not move for nothing. */
  char probe;
  uint64_t first = n > REX_FP_MAX_IO ? REX_FP_MAX_IO : n; /* a count beyond the buffer is the kernel's business only where data reaches it */
  if (n && (mem_read(pid, addr, &probe, 1) || mem_read(pid, addr + first - 1, &probe, 1))) return -EFAULT;
  while (done < n) {
    uint32_t chunk = n - done > REX_FP_MAX_IO ? REX_FP_MAX_IO : (uint32_t)(n - done);
    const uint8_t *d = NULL;
    int64_t r = off < 0 ? rpc(REX_FP_READ, fd, 0, 0, chunk, NULL, 0, chunk, &d) : rpc(REX_FP_PREAD, fd, 0, off + (int64_t)done, chunk, NULL, 0, chunk, &d);
    if (r < 0) return done ? (int64_t)done : r;
    if (r == 0) break;
    if (!id_valid(id)) return -EINTR; /* the caller is gone: write nothing into a process that may be another now */
    if (mem_write(pid, addr + done, d, (size_t)r)) return done ? (int64_t)done : -EFAULT;
    done += (uint64_t)r;
    if ((uint32_t)r < chunk) break;
  }
  return (int64_t)done;
}

static int64_t fwd_write(pid_t pid, uint64_t id, int fd, uint64_t addr, uint64_t n, int64_t off) {
  uint64_t done = 0;
  while (done < n) {
    uint32_t chunk = n - done > REX_FP_MAX_IO ? REX_FP_MAX_IO : (uint32_t)(n - done);
    if (mem_read(pid, addr + done, sv_io, chunk)) return done ? (int64_t)done : -EFAULT;
    if (!id_valid(id)) return -EINTR; /* what was read may not be the caller's memory any more */
    int64_t r = off < 0 ? rpc(REX_FP_WRITE, fd, 0, 0, 0, sv_io, chunk, 0, NULL) : rpc(REX_FP_PWRITE, fd, 0, off + (int64_t)done, 0, sv_io, chunk, 0, NULL);
    if (r < 0) return done ? (int64_t)done : r;
    done += (uint64_t)r;
    if ((uint32_t)r < chunk) break;
  }
  return (int64_t)done;
}

/* readv/writev and the p- forms: segment by segment, stopping at a short transfer. */
static int64_t fwd_vec(pid_t pid, uint64_t id, int fd, uint64_t iov_addr, uint64_t cnt, int64_t off, int out) {
  if (cnt > 1024) return -EINVAL;
  struct iovec iov[64];
  uint64_t total = 0;
  for (uint64_t i = 0; i < cnt; i += 64) {
    uint64_t k = cnt - i < 64 ? cnt - i : 64;
    if (mem_read(pid, iov_addr + i * sizeof *iov, iov, k * sizeof *iov)) return total ? (int64_t)total : -EFAULT;
    for (uint64_t j = 0; j < k; j++) {
      uint64_t len = iov[j].iov_len;
      if (!len) continue;
      int64_t r = out ? fwd_write(pid, id, fd, (uintptr_t)iov[j].iov_base, len, off < 0 ? -1 : off + (int64_t)total)
                      : fwd_read(pid, id, fd, (uintptr_t)iov[j].iov_base, len, off < 0 ? -1 : off + (int64_t)total);
      if (r < 0) return total ? (int64_t)total : r;
      total += (uint64_t)r;
      if ((uint64_t)r < len) return (int64_t)total;
    }
  }
  return (int64_t)total;
}

static int64_t fwd_stat(pid_t pid, uint64_t id, int fd, uint16_t op, uint32_t aux, uint64_t addr) {
  const uint8_t *d = NULL;
  uint32_t size = stat_size(op);
  int64_t r = rpc(op, fd, aux, 0, 0, NULL, 0, size, &d);
  if (r < 0) return r;
  if (!id_valid(id)) return -EINTR;
  return mem_write(pid, addr, d, size) ? -EFAULT : 0;
}

static const char *call_name(long nr) {
  switch (nr) {
    case SYS_mmap: return "mmap";
    case SYS_openat: return "openat (a path relative to it)";
    case SYS_openat2: return "openat2 (a path relative to it)";
    case SYS_newfstatat: return "fstatat of a path relative to it";
    case SYS_statx: return "statx of a path relative to it";
    case SYS_fchdir: return "fchdir";
    case SYS_dup: return "dup";
    case SYS_dup2: return "dup2";
    case SYS_dup3: return "dup3";
    case SYS_fcntl: return "this fcntl command (locks, F_DUPFD)";
    case SYS_getdents: return "getdents (use getdents64)";
    case SYS_preadv2: return "preadv2 with flags";
    case SYS_pwritev2: return "pwritev2 with flags";
    case SYS_flock: return "flock";
    default: return "this call";
  }
}

static int64_t refuse(long nr, int fd) {
  say("rfork: %s on descriptor %d is not supported: it is a file of the origin, relayed to it after rfork (ENOTSUP)\n", call_name(nr), fd);
  return -ENOTSUP;
}

/* The path argument of fstatat/statx is "" (or NULL) with AT_EMPTY_PATH: a stat of the descriptor itself. */
static int empty_path(pid_t pid, uint64_t path, uint64_t flags) {
  if (!(flags & AT_EMPTY_PATH)) return 0;
  if (!path) return 1;
  char c = 1;
  return mem_read(pid, path, &c, 1) == 0 && c == 0;
}

#define CONTINUE_CALL INT64_MIN

static int64_t handle(const struct seccomp_notif *n, uint64_t id) {
  const __u64 *x = n->data.args;
  pid_t pid = (pid_t)n->pid;
  int fd = (int)(n->data.nr == SYS_mmap ? x[4] : x[0]);
  /* Still the relay socket the child was given? A closed and reused number is a local descriptor now: the kernel does the call. */
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
  struct stat st;
  if (stat(path, &st) != 0) return CONTINUE_CALL;
  size_t i = 0;
  while (i < sv_nfiles && !(sv_files[i].fd == fd && sv_files[i].dev == st.st_dev && sv_files[i].ino == st.st_ino)) i++;
  if (i == sv_nfiles) return CONTINUE_CALL;
  switch (n->data.nr) {
    case SYS_read: return fwd_read(pid, id, fd, x[1], x[2], -1);
    case SYS_write: return fwd_write(pid, id, fd, x[1], x[2], -1);
    case SYS_pread64: return (int64_t)x[3] < 0 ? -EINVAL : fwd_read(pid, id, fd, x[1], x[2], (int64_t)x[3]);
    case SYS_pwrite64: return (int64_t)x[3] < 0 ? -EINVAL : fwd_write(pid, id, fd, x[1], x[2], (int64_t)x[3]);
    case SYS_readv: return fwd_vec(pid, id, fd, x[1], x[2], -1, 0);
    case SYS_writev: return fwd_vec(pid, id, fd, x[1], x[2], -1, 1);
    case SYS_preadv: return (int64_t)x[3] < 0 ? -EINVAL : fwd_vec(pid, id, fd, x[1], x[2], (int64_t)x[3], 0);
    case SYS_pwritev: return (int64_t)x[3] < 0 ? -EINVAL : fwd_vec(pid, id, fd, x[1], x[2], (int64_t)x[3], 1);
    case SYS_preadv2:
    case SYS_pwritev2:
      if (x[5]) return refuse(n->data.nr, fd);
      if ((int64_t)x[3] < -1) return -EINVAL;
      return fwd_vec(pid, id, fd, x[1], x[2], (int64_t)x[3], n->data.nr == SYS_pwritev2);
    case SYS_lseek: return (uint32_t)x[2] > 4 ? -EINVAL : rpc(REX_FP_LSEEK, fd, 0, (int64_t)x[1], (int64_t)(uint32_t)x[2], NULL, 0, 0, NULL);
    case SYS_fstat: return fwd_stat(pid, id, fd, REX_FP_FSTAT, 0, x[1]);
    case SYS_newfstatat:
      if (!empty_path(pid, x[1], x[3])) return refuse(n->data.nr, fd);
      return fwd_stat(pid, id, fd, REX_FP_FSTAT, 0, x[2]);
    case SYS_statx:
      if (!empty_path(pid, x[1], x[2])) return refuse(n->data.nr, fd);
      return fwd_stat(pid, id, fd, REX_FP_STATX, (uint32_t)x[3], x[4]);
    case SYS_fstatfs: return fwd_stat(pid, id, fd, REX_FP_FSTATFS, 0, x[1]);
    case SYS_ftruncate: return (int64_t)x[1] < 0 ? -EINVAL : rpc(REX_FP_FTRUNCATE, fd, 0, (int64_t)x[1], 0, NULL, 0, 0, NULL);
    case SYS_fsync: return rpc(REX_FP_FSYNC, fd, 0, 0, 0, NULL, 0, 0, NULL);
    case SYS_fdatasync: return rpc(REX_FP_FDATASYNC, fd, 0, 0, 0, NULL, 0, 0, NULL);
    case SYS_fallocate:
      if ((int64_t)x[2] < 0 || (int64_t)x[3] <= 0) return -EINVAL;
      return rpc(REX_FP_FALLOCATE, fd, (uint32_t)x[1], (int64_t)x[2], (int64_t)x[3], NULL, 0, 0, NULL);
    case SYS_fadvise64: return 0; /* advice only */
    case SYS_getdents64: {
      uint32_t want = x[2] > REX_FP_MAX_IO ? REX_FP_MAX_IO : (uint32_t)x[2];
      const uint8_t *d = NULL;
      int64_t r = rpc(REX_FP_GETDENTS64, fd, 0, 0, want, NULL, 0, want, &d);
      if (r <= 0) return r;
      if (!id_valid(id)) return -EINTR;
      return mem_write(pid, x[1], d, (size_t)r) ? -EFAULT : r;
    }
    case SYS_fcntl:
      switch ((int)x[1]) {
        case F_GETFD:
        case F_SETFD: return CONTINUE_CALL; /* close-on-exec belongs to the child's own descriptor */
        case F_GETFL: return rpc(REX_FP_GETFL, fd, 0, 0, 0, NULL, 0, 0, NULL);
        case F_SETFL: return rpc(REX_FP_SETFL, fd, (uint32_t)x[2], 0, 0, NULL, 0, 0, NULL);
        default: return refuse(n->data.nr, fd);
      }
    default: return refuse(n->data.nr, fd);
  }
}

static void __attribute__((noreturn)) supervise(int sock) {
  /* The program's handlers are not this process's: signals are ignored (KILL still ends it). */
  struct sigaction ign;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  for (int s = 1; s < 65; s++)
    if (s != SIGKILL && s != SIGSTOP) sigaction(s, &ign, NULL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  prctl(PR_SET_NAME, "rex-fileproxy");
  /* Identify the relay sockets, then keep only stderr, the channel and the socket the listener comes on: every other copy would keep the child's descriptors open after it closes them. */
  for (size_t i = 0; i < sv_nfiles; i++) {
    struct stat st;
    if (fstat(sv_files[i].fd, &st) == 0) {
      sv_files[i].dev = st.st_dev;
      sv_files[i].ino = st.st_ino;
    } else {
      sv_files[i].fd = -1;
    }
  }
  int keep[3] = {2, sock, sv_chan};
  for (int a = 0; a < 3; a++)
    for (int b = a + 1; b < 3; b++)
      if (keep[b] < keep[a]) {
        int t = keep[a];
        keep[a] = keep[b];
        keep[b] = t;
      }
  unsigned lo = 0;
  for (int k = 0; k < 3; k++) {
    if ((unsigned)keep[k] > lo) syscall(SYS_close_range, lo, (unsigned)keep[k] - 1, 0);
    if ((unsigned)keep[k] + 1 > lo) lo = (unsigned)keep[k] + 1;
  }
  syscall(SYS_close_range, lo, ~0u, 0);

  char cbuf[CMSG_SPACE(sizeof(int))];
  char one;
  struct iovec iov = {&one, 1};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
  if (recvmsg(sock, &mh, 0) != 1) _exit(0); /* the child could not install the filter: nothing to serve */
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  if (!cm || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int))) _exit(0);
  memcpy(&sv_listener, CMSG_DATA(cm), sizeof(int));
  close(sock);

  struct seccomp_notif_sizes sizes;
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0 || sizes.seccomp_notif > 256 || sizes.seccomp_notif_resp > 256) {
    say("rfork: seccomp notification sizes unknown; relayed files are not served\n");
    _exit(1);
  }
  static uint64_t nbuf[32], rbuf[32];
  for (;;) {
    struct pollfd p = {.fd = sv_listener, .events = POLLIN, .revents = 0};
    if (poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      _exit(1);
    }
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) _exit(0); /* no process left that uses the filter */
    memset(nbuf, 0, sizeof nbuf);
    struct seccomp_notif *n = (struct seccomp_notif *)nbuf;
    if (ioctl(sv_listener, SECCOMP_IOCTL_NOTIF_RECV, n) != 0) continue; /* ENOENT: the caller went away meanwhile */
    int64_t r = handle(n, n->id);
    memset(rbuf, 0, sizeof rbuf);
    struct seccomp_notif_resp *rs = (struct seccomp_notif_resp *)rbuf;
    rs->id = n->id;
    if (r == CONTINUE_CALL) {
      rs->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    } else if (r < 0) {
      rs->error = (int32_t)r;
    } else {
      rs->val = r;
    }
    ioctl(sv_listener, SECCOMP_IOCTL_NOTIF_SEND, rs); /* ENOENT: the caller was killed meanwhile */
  }
}

/* ---- the moved child: the filter ---- */

/* Calls whose first argument is the descriptor (mmap: the fifth), forwarded or refused by the supervisor. */
static const int FD_CALLS[] = {SYS_read,      SYS_write,     SYS_pread64,  SYS_pwrite64, SYS_readv,    SYS_writev,
                               SYS_preadv,    SYS_pwritev,   SYS_preadv2,  SYS_pwritev2, SYS_lseek,    SYS_fstat,
                               SYS_newfstatat, SYS_statx,    SYS_fstatfs,  SYS_ftruncate, SYS_fsync,   SYS_fdatasync,
                               SYS_fallocate, SYS_fadvise64, SYS_getdents64, SYS_getdents, SYS_fcntl,  SYS_flock,
                               SYS_openat,    SYS_openat2,   SYS_fchdir,   SYS_dup,      SYS_dup2,     SYS_dup3};
#define NCALLS (sizeof FD_CALLS / sizeof *FD_CALLS)

/* The BPF program: x86-64 only; listed calls whose descriptor argument is one of fds go to the supervisor. */
static size_t build_filter(struct sock_filter *f, const int *fds, size_t n) {
  size_t k = 0;
  f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  /* After the list: [JEQ mmap] [JA to the args[4] check] [ALLOW] [check args[0]...] [check args[4]...] */
  for (size_t i = 0; i < NCALLS; i++) {
    uint8_t to_check0 = (uint8_t)(NCALLS - 1 - i + 3); /* skip the rest of the list, the mmap test, the jump and ALLOW */
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)FD_CALLS[i], to_check0, 0);
  }
  size_t check0_len = 1 + 2 * n + 1;
  f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 0, 1);
  f[k++] = (struct sock_filter)BPF_STMT(BPF_JMP | BPF_JA, (uint32_t)(1 + check0_len)); /* a 32-bit offset: the blocks may be longer than 255 */
  f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  for (int arg = 0; arg < 2; arg++) {
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)offsetof(struct seccomp_data, args[arg ? 4 : 0]));
    for (size_t i = 0; i < n; i++) {
      f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)fds[i], 0, 1);
      f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
    }
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  }
  return k;
}

static struct sock_filter filter_prog[4 + NCALLS + 3 + 2 * (2 + 2 * REX_FP_MAX_FILES)];

/*
 * The filter cannot be had here: the child tells the stub on the channel
 * (STREAM) to relay its files as byte streams, as for pipes (docs/RFORK.md
 * 4.1), and closes its end. Returns -e.
 */
int rex__fp_fall_back(int chan, int e) {
  uint8_t hdr[REX_FP_REQ_SIZE];
  struct rex_fp_req rq = {.op = REX_FP_STREAM};
  rex__fp_put_req(hdr, &rq);
  write_full(chan, hdr, sizeof hdr);
  close(chan);
  return -e;
}

int rex__fp_start(const int *fds, size_t n, int chan) {
  if (n == 0) return 0;
  if (n > REX_FP_MAX_FILES) n = REX_FP_MAX_FILES;
  for (size_t i = 0; i < n; i++) sv_files[i] = (struct relayed){.fd = fds[i]};
  sv_nfiles = n;
  sv_chan = chan;
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
    int e = errno;
    say("rfork: relayed files: socketpair: %s; they are relayed as streams\n", strerror(e));
    return rex__fp_fall_back(chan, e);
  }
  /* A clone with no exit signal: the program's wait() and SIGCHLD never see it (only __WALL/__WCLONE would). */
  long pid = syscall(SYS_clone, 0L, 0L, 0L, 0L, 0L);
  if (pid == 0) {
    close(sp[0]);
    supervise(sp[1]);
  }
  close(sp[1]);
  if (pid < 0) {
    int e = errno;
    close(sp[0]);
    say("rfork: relayed files: cannot start their supervisor: %s; they are relayed as streams\n", strerror(e));
    return rex__fp_fall_back(chan, e);
  }
  /* Where Yama restricts ptrace to ancestors, the supervisor (a child) still needs to reach this process's memory. */
  prctl(PR_SET_PTRACER, (unsigned long)pid, 0, 0, 0);
  size_t len = build_filter(filter_prog, fds, n);
  struct sock_fprog prog = {.len = (unsigned short)len, .filter = filter_prog};
  unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
  long lfd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  if (lfd < 0 && errno == EINVAL) { /* before Linux 5.19: a signal may interrupt a forwarded call (it is then restarted) */
    flags &= ~(unsigned long)SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    lfd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  }
  if (lfd < 0 && errno == EACCES) {
    /* Without CAP_SYS_ADMIN a filter needs no_new_privs (docs/RFORK.md 4.1): set-user-ID programs this child runs no longer gain privileges. */
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    lfd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  }
  if (lfd < 0) {
    int e = errno;
    close(sp[0]); /* the supervisor reads EOF and exits */
    say("rfork: relayed files: seccomp filter refused: %s; they are relayed as streams\n", strerror(e));
    return rex__fp_fall_back(chan, e);
  }
  close(chan);
  char cbuf[CMSG_SPACE(sizeof(int))];
  memset(cbuf, 0, sizeof cbuf);
  char one = 'L';
  struct iovec iov = {&one, 1};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  int l = (int)lfd;
  memcpy(CMSG_DATA(cm), &l, sizeof l);
  ssize_t w;
  do w = sendmsg(sp[0], &mh, 0);
  while (w < 0 && errno == EINTR);
  int e = w == 1 ? 0 : errno;
  close(l);
  close(sp[0]);
  /* The filter is in place but nobody serves it: the calls it catches fail with ENOSYS from now on. */
  if (e) say("rfork: relayed files: cannot hand the filter to the supervisor: %s; calls on them fail with ENOSYS\n", strerror(e));
  return -e;
}
