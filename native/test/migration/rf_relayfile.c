/*
 * rf_relayfile: a regular file and a directory opened before rfork() behave
 * as files in the moved child (docs/RFORK.md 4.1): lseek, read, pread,
 * pwrite, write, fstat, statx, ftruncate, fsync, F_GETFL on the file, with
 * the offset shared with the parent as after fork(); fdopendir/readdir and
 * fstat on the directory, which lists the entries of the directory the
 * origin has open (its path names another directory by then). An mmap, a
 * dup and an fstatat of a relative path are refused with ENOTSUP, not a
 * crash. A relayed number closed and reused for a local file is the kernel's
 * again. The parent checks the content and the offset the child left.
 */
#include "zdtm.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <stdint.h>

static int has(char names[][16], int n, const char *want) {
  for (int i = 0; i < n; i++)
    if (!strcmp(names[i], want)) return 1;
  return 0;
}

int main(int argc, char **argv) {
  ZDTM_INIT("rf_relayfile", argc, argv);
  if (argc < 3) fail("usage: rf_relayfile rfork DIR");
  char path[1024], tree[1024], old[1024], p2[2048];
  snprintf(path, sizeof path, "%s/relay.data", argv[2]);
  snprintf(tree, sizeof tree, "%s/tree", argv[2]);
  snprintf(old, sizeof old, "%s/tree.old", argv[2]);
  int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (f < 0 || write(f, "0123456789abcdefghij", 20) != 20) fail("create %s", path);
  if (lseek(f, 2, SEEK_SET) != 2) fail("lseek parent");
  struct stat fst;
  if (fstat(f, &fst)) fail("fstat parent");
  /* The directory the parent opens holds a, b, c; its path then names another one holding x, y. */
  if (mkdir(tree, 0700)) fail("mkdir %s", tree);
  for (const char *e = "abc"; *e; e++) {
    snprintf(p2, sizeof p2, "%s/%c", tree, *e);
    close(open(p2, O_WRONLY | O_CREAT, 0600));
  }
  int d = open(tree, O_RDONLY | O_DIRECTORY);
  if (d < 0) fail("open %s", tree);
  struct stat dst;
  if (fstat(d, &dst)) fail("fstat dir parent");
  if (rename(tree, old) || mkdir(tree, 0700)) fail("rename");
  for (const char *e = "xy"; *e; e++) {
    snprintf(p2, sizeof p2, "%s/%c", tree, *e);
    close(open(p2, O_WRONLY | O_CREAT, 0600));
  }
  /* A bigger file, read by the child in one call. */
  snprintf(p2, sizeof p2, "%s/relay.big", argv[2]);
  int g = open(p2, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (g < 0) fail("create %s", p2);
  for (int i = 0; i < 200000; i++) {
    char c = (char)('a' + i % 26);
    if (write(g, &c, 1) != 1) fail("write big");
  }
  if (lseek(g, 0, SEEK_SET) != 0) fail("lseek big");
  printf("FD %d %d\n", f, d);
  fflush(stdout);

  pid_t pid = rfork();
  if (pid < 0) fail("rfork: %s", rex_last_error());
  if (pid == 0) {
    struct stat st;
    if (fstat(f, &st)) fail("fstat: %s", strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_size != 20 || st.st_ino != fst.st_ino) fail("fstat: mode 0%o size %lld", st.st_mode, (long long)st.st_size);
    if (lseek(f, 0, SEEK_CUR) != 2) fail("the shared offset is not 2: %s", strerror(errno));
    char b[64] = {0};
    if (read(f, b, 3) != 3 || memcmp(b, "234", 3)) fail("read: '%s'", b);
    if (lseek(f, 0, SEEK_CUR) != 5) fail("offset after read");
    memset(b, 0, sizeof b);
    if (pread(f, b, 4, 10) != 4 || memcmp(b, "abcd", 4)) fail("pread: '%s'", b);
    if (lseek(f, 0, SEEK_CUR) != 5) fail("pread moved the offset");
    if (pwrite(f, "XY", 2, 0) != 2) fail("pwrite: %s", strerror(errno));
    if (lseek(f, 0, SEEK_END) != 20) fail("lseek end");
    if (write(f, "END", 3) != 3) fail("write: %s", strerror(errno));
    if (ftruncate(f, 22)) fail("ftruncate: %s", strerror(errno));
    if (fstat(f, &st) || st.st_size != 22) fail("size after ftruncate: %lld", (long long)st.st_size);
    struct statx sx;
    if (statx(f, "", AT_EMPTY_PATH, STATX_SIZE, &sx) || sx.stx_size != 22) fail("statx: %s", strerror(errno));
    if (fsync(f) || fdatasync(f)) fail("fsync: %s", strerror(errno));
    if ((fcntl(f, F_GETFL) & O_ACCMODE) != O_RDWR) fail("F_GETFL is not O_RDWR");
    char v1[3] = {0}, v2[3] = {0};
    struct iovec iov[2] = {{v1, 2}, {v2, 2}};
    if (lseek(f, 2, SEEK_SET) != 2 || readv(f, iov, 2) != 4 || strcmp(v1, "23") || strcmp(v2, "45")) fail("readv: '%s' '%s'", v1, v2);
    if (preadv(f, iov, 2, 10) != 4 || strcmp(v1, "ab") || strcmp(v2, "cd")) fail("preadv: '%s' '%s'", v1, v2);
    /* More than one request carries (64 KiB): one read() of the whole big file. */
    static char big[300000];
    ssize_t nb = read(g, big, sizeof big);
    if (nb != 200000) fail("read of the big file: %zd (%s)", nb, strerror(errno));
    for (int i = 0; i < 200000; i++)
      if (big[i] != (char)('a' + i % 26)) fail("big file byte %d", i);
    if (lseek(f, 7, SEEK_SET) != 7) fail("lseek set");
    /* A read into a bad buffer fails with EFAULT before the origin reads: the shared offset stays. */
    volatile uintptr_t bad = 1;
    if (read(f, (void *)bad, 4) != -1 || errno != EFAULT) fail("read into a bad buffer: %s", strerror(errno));
    if (lseek(f, 0, SEEK_CUR) != 7) fail("a failed read moved the offset");

    if (fstat(d, &st) || !S_ISDIR(st.st_mode) || st.st_ino != dst.st_ino) fail("fstat dir");
    DIR *dp = fdopendir(d);
    if (!dp) fail("fdopendir: %s", strerror(errno));
    char names[16][16];
    memset(names, 0, sizeof names);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && n < 16) {
      strncpy(names[n], e->d_name, sizeof names[0] - 1);
      names[n++][sizeof names[0] - 1] = 0;
    }
    if (n != 5 || !has(names, n, "a") || !has(names, n, "b") || !has(names, n, "c") || !has(names, n, ".") || !has(names, n, ".."))
      fail("directory entries: %d (%s %s %s ...)", n, n > 0 ? names[0] : "", n > 1 ? names[1] : "", n > 2 ? names[2] : "");

    void *m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, f, 0);
    if (m != MAP_FAILED || errno != ENOTSUP) fail("mmap of a relayed file: %p, %s", m, strerror(errno));
    if (dup(f) != -1 || errno != ENOTSUP) fail("dup of a relayed file: %s", strerror(errno));
    if (fstatat(dirfd(dp), "a", &st, 0) != -1 || errno != ENOTSUP) fail("fstatat of a relative path: %s", strerror(errno));
    /* The supervisor is this process's child, named rex-fileproxy (the test checks none is left afterwards). */
    char kids[256] = {0}, cpath[64], comm[32] = {0};
    snprintf(cpath, sizeof cpath, "/proc/self/task/%d/children", (int)getpid());
    int kf = open(cpath, O_RDONLY);
    if (kf < 0 || read(kf, kids, sizeof kids - 1) <= 0) fail("no child process: the supervisor is missing");
    close(kf);
    snprintf(cpath, sizeof cpath, "/proc/%d/comm", atoi(kids));
    kf = open(cpath, O_RDONLY);
    if (kf < 0 || read(kf, comm, sizeof comm - 1) <= 0 || strcmp(comm, "rex-fileproxy\n")) fail("the child process is '%s', not rex-fileproxy", comm);
    close(kf);
    /* A relayed number closed and reused for a local file: the kernel serves it, not the origin. */
    int fnum = f;
    close(f);
    int local = open("/proc/self/stat", O_RDONLY);
    if (local != fnum) fail("the local file got %d, not %d", local, fnum);
    if (lseek(local, 0, SEEK_CUR) != 0 || read(local, b, 1) != 1 || fstat(local, &st) || S_ISREG(st.st_mode) == 0)
      fail("the local file at a reused number: %s", strerror(errno));
    pass();
  }
  int st;
  if (waitpid(pid, &st, 0) != pid) fail("waitpid");
  off_t off = lseek(f, 0, SEEK_CUR);
  char all[64] = {0};
  ssize_t got = pread(f, all, sizeof all - 1, 0);
  if (off != 7) fail("parent: offset %lld, not the 7 the child set", (long long)off);
  if (got != 22 || strcmp(all, "XY23456789abcdefghijEN")) fail("parent: content '%s'", all);
  if (!WIFEXITED(st) || WEXITSTATUS(st)) return 1;
  printf("PARENT-OK\n");
  return 0;
}
