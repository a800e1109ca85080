/*
 * test_fileproxy.c: the file channel of rfork (native/src/fileproxy.h,
 * docs/RFORK.md 4.1): both parsers refuse every malformed field with a
 * message naming it, wait for more bytes on a prefix, never read past what
 * they are given (a deterministic fuzz loop, run under ASan by `make check`),
 * and the stub performs requests only on descriptors it serves.
 */
#define _GNU_SOURCE
#include "runner.h"
#include "fileproxy.h"

#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct rex_fp_req req(uint16_t op, int fd, int64_t a, int64_t b) {
  return (struct rex_fp_req){.op = op, .fd = fd, .a = a, .b = b};
}

/* Parses hdr[0..40) after one field was set: expects a refusal naming `field`. */
static void expect_bad_req(const uint8_t *hdr, const char *field) {
  struct rex_fp_req rq;
  char why[200] = "";
  long r = rex__fp_parse_req(hdr, REX_FP_REQ_SIZE, &rq, why, sizeof why);
  if (r != -1) FAIL("a request with a bad %s parsed (%ld)", field, r);
  ASSERT_STR_CONTAINS(why, field);
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

TEST_IMPL(fileproxy_request_fields) {
  uint8_t h[REX_FP_REQ_SIZE + 8];
  struct rex_fp_req rq = req(REX_FP_PREAD, 5, 100, 4096), got;
  rex__fp_put_req(h, &rq);
  char why[200];
  ASSERT_EQ(rex__fp_parse_req(h, REX_FP_REQ_SIZE, &got, why, sizeof why), REX_FP_REQ_SIZE);
  ASSERT_EQ(got.op, REX_FP_PREAD);
  ASSERT_EQ(got.fd, 5);
  ASSERT_EQ(got.a, 100);
  ASSERT_EQ(got.b, 4096);
  /* Every prefix: more bytes needed. */
  for (size_t n = 0; n < REX_FP_REQ_SIZE; n++) ASSERT_EQ(rex__fp_parse_req(h, n, &got, why, sizeof why), 0);
  /* A payload arrives after its header. */
  rq = (struct rex_fp_req){.op = REX_FP_WRITE, .fd = 3, .len = 8};
  rex__fp_put_req(h, &rq);
  memcpy(h + REX_FP_REQ_SIZE, "abcdefgh", 8);
  ASSERT_EQ(rex__fp_parse_req(h, REX_FP_REQ_SIZE + 7, &got, why, sizeof why), 0);
  ASSERT_EQ(rex__fp_parse_req(h, REX_FP_REQ_SIZE + 8, &got, why, sizeof why), REX_FP_REQ_SIZE + 8);
  ASSERT(memcmp(got.data, "abcdefgh", 8) == 0);

  struct {
    struct rex_fp_req rq;
    const char *field;
  } bad[] = {
      {{.op = 0}, "op at offset 4"},
      {{.op = REX_FP_OP_MAX + 1}, "op at offset 4"},
      {{.op = REX_FP_FSTAT, .fd = -1}, "fd at offset 8"},
      {{.op = REX_FP_READ, .len = 1}, "len at offset 12"},
      {{.op = REX_FP_WRITE, .len = REX_FP_MAX_IO + 1}, "len at offset 12"},
      {{.op = REX_FP_FSTAT, .aux = 1}, "aux at offset 16"},
      {{.op = REX_FP_READ, .a = 1, .b = 1}, "a at offset 24"},
      {{.op = REX_FP_FSYNC, .b = 1}, "b at offset 32"},
      {{.op = REX_FP_READ, .b = -1}, "count at offset 32"},
      {{.op = REX_FP_GETDENTS64, .b = REX_FP_MAX_IO + 1}, "count at offset 32"},
      {{.op = REX_FP_PREAD, .a = -1, .b = 1}, "offset at offset 24"},
      {{.op = REX_FP_FTRUNCATE, .a = -5}, "offset at offset 24"},
      {{.op = REX_FP_LSEEK, .b = 5}, "whence at offset 32"},
      {{.op = REX_FP_FALLOCATE, .a = 0, .b = 0}, "length at offset 32"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    rex__fp_put_req(h, &bad[i].rq);
    expect_bad_req(h, bad[i].field);
  }
  rq = req(REX_FP_FSTAT, 1, 0, 0);
  rex__fp_put_req(h, &rq);
  put32(h, 0x12345678);
  expect_bad_req(h, "magic at offset 0");
  rex__fp_put_req(h, &rq);
  h[6] = 1;
  expect_bad_req(h, "reserved");
  rex__fp_put_req(h, &rq);
  h[22] = 1;
  expect_bad_req(h, "reserved");
}

TEST_IMPL(fileproxy_answer_fields) {
  uint8_t h[REX_FP_RESP_SIZE + REX_FP_STATX_SIZE];
  struct rex_fp_resp rs = {.op = REX_FP_READ, .len = 3, .result = 3}, got;
  char why[200] = "";
  rex__fp_put_resp(h, &rs);
  memcpy(h + REX_FP_RESP_SIZE, "xyz", 3);
  ASSERT_EQ(rex__fp_parse_resp(h, REX_FP_RESP_SIZE + 2, REX_FP_READ, 10, &got, why, sizeof why), 0);
  ASSERT_EQ(rex__fp_parse_resp(h, REX_FP_RESP_SIZE + 3, REX_FP_READ, 10, &got, why, sizeof why), REX_FP_RESP_SIZE + 3);
  ASSERT_EQ(got.result, 3);
  struct {
    struct rex_fp_resp rs;
    uint16_t op;
    uint32_t want;
    const char *field;
  } bad[] = {
      {{.op = REX_FP_READ, .len = 3, .result = 3}, REX_FP_PREAD, 10, "op at offset 4"},
      {{.op = REX_FP_READ, .len = 11, .result = 11}, REX_FP_READ, 10, "len at offset 8"},
      {{.op = REX_FP_READ, .len = 2, .result = 3}, REX_FP_READ, 10, "result at offset 16"},
      {{.op = REX_FP_READ, .len = 2, .result = -5}, REX_FP_READ, 10, "len at offset 8"},
      {{.op = REX_FP_LSEEK, .len = 0, .result = -5000}, REX_FP_LSEEK, 0, "result at offset 16"},
      {{.op = REX_FP_FSTAT, .len = 100, .result = 0}, REX_FP_FSTAT, REX_FP_STAT_SIZE, "len at offset 8"},
      {{.op = REX_FP_FSTAT, .len = REX_FP_STAT_SIZE, .result = 1}, REX_FP_FSTAT, REX_FP_STAT_SIZE, "len at offset 8"},
      {{.op = REX_FP_LSEEK, .len = 4, .result = 0}, REX_FP_LSEEK, 0, "len at offset 8"},
      {{.op = REX_FP_WRITE, .len = 0, .result = 9}, REX_FP_WRITE, 8, "result at offset 16"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    rex__fp_put_resp(h, &bad[i].rs);
    memset(h + REX_FP_RESP_SIZE, 0, sizeof h - REX_FP_RESP_SIZE);
    long r = rex__fp_parse_resp(h, sizeof h, bad[i].op, bad[i].want, &got, why, sizeof why);
    if (r != -1) FAIL("bad answer %zu parsed (%ld)", i, r);
    ASSERT_STR_CONTAINS(why, bad[i].field);
  }
  rex__fp_put_resp(h, &rs);
  put32(h, 0);
  ASSERT_EQ(rex__fp_parse_resp(h, sizeof h, REX_FP_READ, 10, &got, why, sizeof why), -1);
  ASSERT_STR_CONTAINS(why, "magic at offset 0");
}

static uint64_t seed = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  seed ^= seed << 13;
  seed ^= seed >> 7;
  seed ^= seed << 17;
  return (uint32_t)(seed >> 11);
}

/* Random and mutated buffers, each in a heap block of exactly its size (ASan sees any read past it): a verdict, never a crash. */
TEST_IMPL(fileproxy_fuzz_parsers) {
  long verdicts[3] = {0, 0, 0};
  for (long it = 0; it < 200000; it++) {
    size_t n = rnd() % 96;
    uint8_t *b = malloc(n ? n : 1);
    ASSERT(b);
    if (it % 2 == 0 && n >= REX_FP_REQ_SIZE) {
      struct rex_fp_req rq = {.op = (uint16_t)(rnd() % (REX_FP_OP_MAX + 2)), .fd = (int)(rnd() % 8), .len = rnd() % 64, .aux = rnd() % 2, .a = rnd() % 3, .b = rnd() % 6};
      uint8_t h[REX_FP_REQ_SIZE];
      rex__fp_put_req(h, &rq);
      memcpy(b, h, REX_FP_REQ_SIZE);
      for (size_t i = REX_FP_REQ_SIZE; i < n; i++) b[i] = (uint8_t)rnd();
      if (rnd() % 2) b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
    } else {
      for (size_t i = 0; i < n; i++) b[i] = (uint8_t)rnd();
    }
    char why[200];
    struct rex_fp_req rq;
    long r = rex__fp_parse_req(b, n, &rq, why, sizeof why);
    ASSERT(r >= -1 && r <= (long)n);
    verdicts[r < 0 ? 0 : r == 0 ? 1 : 2]++;
    if (r > 0) ASSERT_EQ(r, REX_FP_REQ_SIZE + rq.len);
    struct rex_fp_resp rs;
    long s = rex__fp_parse_resp(b, n, (uint16_t)(1 + rnd() % REX_FP_OP_MAX), rnd() % 80, &rs, why, sizeof why);
    ASSERT(s >= -1 && s <= (long)n);
    if (s > 0) ASSERT_EQ(s, REX_FP_RESP_SIZE + rs.len);
    free(b);
  }
  if (!verdicts[0] || !verdicts[1] || !verdicts[2]) FAIL("bad/more/ok: %ld/%ld/%ld", verdicts[0], verdicts[1], verdicts[2]);
}

static int serve_only;
static int only(void *ctx, int fd) {
  (void)ctx;
  return fd == serve_only;
}

/* The stub performs a request only on a descriptor it serves (one the origin process had as a file): another is EBADF. */
TEST_IMPL(fileproxy_perform_served_only) {
  char path[] = "/tmp/rex-fp-XXXXXX";
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  unlink(path);
  ASSERT_EQ(write(fd, "hello world", 11), 11);
  int other = open("/dev/null", O_RDONLY);
  serve_only = fd;
  uint8_t hdr[REX_FP_RESP_SIZE], *data = malloc(REX_FP_MAX_IO);
  ASSERT(data);
  struct rex_fp_resp rs;
  char why[200];
  struct rex_fp_req rq = req(REX_FP_PREAD, fd, 6, 5);
  size_t n = rex__fp_perform(&rq, only, NULL, hdr, data);
  ASSERT_EQ(n, 5);
  ASSERT(memcmp(data, "world", 5) == 0);
  uint8_t whole[REX_FP_RESP_SIZE + REX_FP_STAT_SIZE];
  memcpy(whole, hdr, sizeof hdr);
  memcpy(whole + REX_FP_RESP_SIZE, data, n);
  ASSERT_EQ(rex__fp_parse_resp(whole, REX_FP_RESP_SIZE + n, REX_FP_PREAD, 5, &rs, why, sizeof why), (long)(REX_FP_RESP_SIZE + n));
  ASSERT_EQ(rs.result, 5);
  rq = req(REX_FP_FSTAT, fd, 0, 0);
  n = rex__fp_perform(&rq, only, NULL, hdr, data);
  ASSERT_EQ(n, REX_FP_STAT_SIZE);
  ASSERT_EQ(((struct stat *)data)->st_size, 11);
  rq = req(REX_FP_LSEEK, other, 0, SEEK_SET);
  n = rex__fp_perform(&rq, only, NULL, hdr, data);
  ASSERT_EQ(n, 0);
  ASSERT_EQ(rex__fp_parse_resp(hdr, sizeof hdr, REX_FP_LSEEK, 0, &rs, why, sizeof why), REX_FP_RESP_SIZE);
  ASSERT_EQ(rs.result, -EBADF);
  free(data);
  close(fd);
  close(other);
}

/*
 * The filter and the supervisor without the cluster: descriptor N of this
 * process is a socket (as in a moved child), a forked "stub" holds the real
 * file at N and answers the channel, and rex__fp_start makes lseek, read,
 * write and fstat on N act on that file. `unprivileged`: as root, the test
 * first becomes nobody (no CAP_SYS_ADMIN), so the filter needs
 * no_new_privs and the child sets it; with CAP_SYS_ADMIN it is left unset.
 */

static void stub_serve(int chan, int n) {
  static uint8_t in[REX_FP_REQ_SIZE + REX_FP_MAX_IO], out[REX_FP_RESP_SIZE + REX_FP_MAX_IO];
  size_t len = 0;
  serve_only = n;
  for (;;) {
    ssize_t r = read(chan, in + len, sizeof in - len);
    if (r <= 0) _exit(0);
    len += (size_t)r;
    for (;;) {
      struct rex_fp_req rq;
      char why[200];
      long used = rex__fp_parse_req(in, len, &rq, why, sizeof why);
      if (used < 0) _exit(3);
      if (used == 0) break;
      size_t d = rex__fp_perform(&rq, only, NULL, out, out + REX_FP_RESP_SIZE);
      if (write(chan, out, REX_FP_RESP_SIZE + d) != (ssize_t)(REX_FP_RESP_SIZE + d)) _exit(4);
      memmove(in, in + used, len - (size_t)used);
      len -= (size_t)used;
    }
  }
}

static void filter_case(int drop, int expect_nnp) {
  const int N = 40;
  char path[] = "/tmp/rex-fp-XXXXXX";
  int real = mkstemp(path);
  ASSERT(real >= 0);
  unlink(path);
  ASSERT_EQ(write(real, "0123456789", 10), 10);
  ASSERT_EQ(lseek(real, 3, SEEK_SET), 3);
  int rs[2], ch[2];
  ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, rs) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, ch) == 0);
  pid_t stub = fork();
  ASSERT(stub >= 0);
  if (stub == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); /* the test process, once nobody, may not kill it */
    dup2(real, N);
    close(ch[0]);
    stub_serve(ch[1], N);
  }
  close(real);
  close(ch[1]);
  ASSERT_EQ(dup2(rs[0], N), N);
  close(rs[0]);
  if (drop) {
    ASSERT(setgroups(0, NULL) == 0 && setresgid(65534, 65534, 65534) == 0 && setresuid(65534, 65534, 65534) == 0);
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); /* setuid made it undumpable; a process rexd starts as its user is dumpable */
  }
  ASSERT_EQ(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 0);
  ASSERT_EQ(rex__fp_start(&N, 1, ch[0]), 0);
  ASSERT_EQ(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), expect_nnp);
  ASSERT_EQ(lseek(N, 0, SEEK_CUR), 3);
  char b[8] = {0};
  ASSERT_EQ(read(N, b, 4), 4);
  ASSERT(memcmp(b, "3456", 4) == 0);
  ASSERT_EQ(write(N, "X", 1), 1);
  ASSERT_EQ(pread(N, b, 3, 6), 3);
  ASSERT(memcmp(b, "6X8", 3) == 0);
  struct stat st;
  ASSERT(fstat(N, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 10);
  close(N);
  if (!drop) {
    kill(stub, SIGKILL);
    waitpid(stub, NULL, 0);
  }
}

TEST_IMPL(fileproxy_filter_unprivileged) {
  if (geteuid() != 0) {
    filter_case(0, 1); /* already an ordinary user (without CAP_SYS_ADMIN) */
    return;
  }
  filter_case(1, 1);
}

TEST_IMPL(fileproxy_filter_privileged_keeps_credentials) {
  if (geteuid() != 0) {
    printf("# skipped: not root (no CAP_SYS_ADMIN to keep)\n");
    return;
  }
  filter_case(0, 0);
}

/* Where no filter can be installed (here: a filter already in place refuses seccomp()), the child tells the stub STREAM and its descriptors stay sockets. */
TEST_IMPL(fileproxy_filter_refused_falls_back) {
  const int N = 41;
  int rs[2], ch[2];
  ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, rs) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, ch) == 0);
  ASSERT_EQ(dup2(rs[0], N), N);
  struct sock_filter deny[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_seccomp, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = 4, .filter = deny};
  ASSERT(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
  ASSERT(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0);
  ASSERT_EQ(rex__fp_start(&N, 1, ch[0]), -EPERM);
  uint8_t b[REX_FP_REQ_SIZE];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = read(ch[1], b + got, sizeof b - got);
    ASSERT(r > 0);
    got += (size_t)r;
  }
  struct rex_fp_req rq;
  char why[200];
  ASSERT_EQ(rex__fp_parse_req(b, sizeof b, &rq, why, sizeof why), REX_FP_REQ_SIZE);
  ASSERT_EQ(rq.op, REX_FP_STREAM);
  char more;
  ASSERT_EQ(read(ch[1], &more, 1), 0); /* and the child's end of the channel is closed */
  struct stat st;
  ASSERT(fstat(N, &st) == 0 && S_ISSOCK(st.st_mode));
}
