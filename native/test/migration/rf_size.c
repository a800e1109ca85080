/*
 * rf_size: the benchmark's image-size program (bench/rfork.mjs), shaped like
 * the seed's test_rfork_1 (stdio used, rload() called, then one rfork() whose
 * child exits at once and prints nothing), optionally after touching MiB of
 * anonymous memory (argv[2], default 0).
 *
 * Just before the rfork it measures what the dumper sees in this very state:
 * a forked copy calls rex_dump_self into a memfd, as rfork()'s stub does, and
 * sends its struct rex_dump_info back. The image rfork then sends is that
 * image plus the few bytes the second fork changed; the benchmark reads the
 * bytes actually sent from the executor's log and compares. With
 * $RF_SIZE_IMAGE set, that measuring image is also copied to the path it
 * names (the benchmark reads its XSAVE bytes with readImageInfo).
 *
 * Prints "dump bytes B data_pages D private_pages P", then
 * "rfork_ns N fork_ns F" (rfork() until the child runs remotely; a local fork()
 * of the same process until it returns in the parent), and exits with the
 * rforked child's status.
 */
#include "zdtm.h"

#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

static long long now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* rex_dump_info of this process as rfork()'s stub would dump it (from a forked copy, so this one stays as it is). */
static struct rex_dump_info measure(void) {
  int p[2];
  if (pipe(p) < 0) fail("pipe: %s", strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) fail("fork: %s", strerror(errno));
  if (pid == 0) {
    close(p[0]);
    struct rex_dump_info info;
    memset(&info, 0, sizeof info);
    int img = memfd_create("rf-size-image", MFD_CLOEXEC);
    /* A copy restored from this image (nobody restores it) would continue here: never, so _exit either way. */
    if (img < 0 || rex_dump_self(img, 0, &info) != 0) info.image_bytes = 0;
    /* $RF_SIZE_IMAGE: a copy of that image for the benchmark to read (readImageInfo: the XSAVE bytes it stores). */
    const char *copy = getenv("RF_SIZE_IMAGE");
    if (info.image_bytes && copy && *copy) {
      int out = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      char buf[65536];
      ssize_t n;
      lseek(img, 0, SEEK_SET);
      while (out >= 0 && (n = read(img, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) break;
      if (out >= 0) close(out);
    }
    ssize_t w = write(p[1], &info, sizeof info);
    _exit(w == (ssize_t)sizeof info ? 0 : 1);
  }
  close(p[1]);
  struct rex_dump_info info;
  size_t got = 0;
  while (got < sizeof info) {
    ssize_t n = read(p[0], (char *)&info + got, sizeof info - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(p[0]);
  int st;
  waitpid(pid, &st, 0);
  if (got != sizeof info || info.image_bytes == 0) fail("the measuring dump failed (status 0x%x)", st);
  return info;
}

int main(int argc, char **argv) {
  ZDTM_INIT("rf_size", argc, argv);
  size_t mib = argc > 2 ? (size_t)atoi(argv[2]) : 0, n = mib << 20;
  if (n) {
    unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("mmap %zu MiB: %s", mib, strerror(errno));
    for (size_t i = 0; i < n; i += 8) *(uint64_t *)(m + i) = (uint64_t)i * 0x9e3779b97f4a7c15ull;
  }
  printf("parent %d load %g\n", (int)getpid(), rload());
  struct rex_dump_info info = measure();
  printf("dump bytes %llu data_pages %llu private_pages %llu\n", (unsigned long long)info.image_bytes,
         (unsigned long long)info.data_pages, (unsigned long long)info.private_pages);
  fflush(stdout);

  /* A local fork() of the same process, for the ratio. */
  long long t0 = now();
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  long long fork_ns = now() - t0;
  if (pid < 0) fail("fork: %s", strerror(errno));
  waitpid(pid, NULL, 0);

  t0 = now();
  pid = rfork();
  if (pid == 0) _exit(0);
  long long rfork_ns = now() - t0;
  if (pid < 0) fail("rfork: %s", rex_last_error());
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) fail("waitpid: %s", strerror(errno));
  printf("rfork_ns %lld fork_ns %lld\n", rfork_ns, fork_ns);
  if (WIFSIGNALED(st)) {
    printf("CHILD SIGNAL %d\n", WTERMSIG(st));
    return 3;
  }
  return WEXITSTATUS(st);
}
