/*
 * test_client.c: rload() and rex_hosts() without a daemon, and against a
 * scripted stand-in daemon (a forked process built on the codec) that
 * answers correctly, with ERROR, with garbage, not at all, or by hanging up.
 * The real rexd is exercised by the integration test that runs
 * build/bin/rex_hosts_demo against a cluster.
 */
#define _GNU_SOURCE /* mkdtemp, setenv */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "runner.h"

enum mode { M_LOAD, M_HOSTS, M_ERROR, M_GARBAGE, M_SILENT, M_CLOSE };

struct fake {
  char dir[64];
  char path[96];
  pid_t pid;
};

static struct rex_attr arena[REX_PROTO_MAX_ATTRS];

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads one frame into f (blocking); 0, or -1 on EOF or a bad frame. */
static int read_frame(int fd, uint8_t *buf, size_t cap, size_t *have, struct rex_frame *f) {
  for (;;) {
    size_t used;
    rex_frame_init(f, arena, REX_PROTO_MAX_ATTRS);
    int rc = rex_frame_decode(buf, *have, 0, f, &used);
    if (rc == 0) {
      /* The caller looks at f before the next read; keep the bytes until then by
         compacting only on the next call (frames here are tiny and one at a time). */
      *have = 0;
      return 0;
    }
    if (rc != REX_EAGAIN || *have == cap) return -1;
    ssize_t r = read(fd, buf + *have, cap - *have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    *have += (size_t)r;
  }
}

static int send_frame(int fd, struct rex_frame *f) {
  uint8_t out[2048];
  size_t n;
  if (rex_frame_encode(f, out, sizeof out, &n)) return -1;
  return write_all(fd, out, n);
}

static int attr_is(const struct rex_frame *f, uint16_t tag, uint64_t v) {
  const struct rex_attr *a = rex_attr_find(f, REX_ATTR_NONE, tag);
  return a && a->kind == REX_KIND_UINT && a->v.u == v;
}

static void add_host(struct rex_frame *f, const char *name, unsigned port, double load, int self) {
  rex_attr_list_begin(f, REX_HOSTS_HOST);
  rex_attr_string(f, REX_HOST_NAME, name);
  rex_attr_string(f, REX_HOST_ADDRESS, "127.0.0.1");
  rex_attr_uint(f, REX_HOST_PORT, port);
  if (load >= 0) {
    rex_attr_f64(f, REX_HOST_LOAD, load);
    rex_attr_uint(f, REX_HOST_AGE_MS, 12);
    rex_attr_f64(f, REX_HOST_LOADAVG1, load * 2);
  } else
    rex_attr_string(f, REX_HOST_ERROR, "connect ECONNREFUSED 127.0.0.1:7802");
  rex_attr_uint(f, REX_HOST_CORES, 2);
  rex_attr_bool(f, REX_HOST_REACHABLE, load >= 0);
  rex_attr_bool(f, REX_HOST_SELF, self);
  rex_attr_list_end(f);
}

/* One connection of the stand-in daemon; returns its exit status contribution (0 = client behaved). */
static int serve(int fd, enum mode mode) {
  uint8_t buf[4096];
  size_t have = 0;
  struct rex_frame f, out;
  struct rex_attr oa[64];
  size_t got = 0;
  while (got < 8) {
    ssize_t r = read(fd, buf + got, 8 - got);
    if (r <= 0) return 10;
    got += (size_t)r;
  }
  if (memcmp(buf, REX_PROTO_PREFACE, 8)) return 11;
  if (read_frame(fd, buf, sizeof buf, &have, &f)) return 12;
  const struct rex_attr *sw = rex_attr_find(&f, REX_ATTR_NONE, REX_HELLO_SOFTWARE);
  if (f.type != REX_MSG_HELLO || f.stream != 0 || !attr_is(&f, REX_HELLO_VERSION_MIN, 1) ||
      !attr_is(&f, REX_HELLO_VERSION_MAX, 1) || !attr_is(&f, REX_HELLO_ROLE, REX_ROLE_CLIENT) || !sw ||
      sw->len != 12 || memcmp(sw->data, "librex/0.1.0", 12))
    return 13;

  if (mode == M_SILENT) { /* wait for the client to give up */
    while (read(fd, buf, sizeof buf) > 0) {
    }
    return 0;
  }
  rex_frame_init(&out, oa, 64);
  rex_frame_start(&out, REX_MSG_HELLO, 0, 0);
  rex_attr_uint(&out, REX_HELLO_VERSION, 1);
  rex_attr_uint(&out, REX_HELLO_ROLE, REX_ROLE_DAEMON);
  rex_attr_string(&out, REX_HELLO_HOST, "alpha");
  rex_attr_string(&out, REX_HELLO_SOFTWARE, "fake-rexd/0");
  if (send_frame(fd, &out)) return 14;
  if (mode == M_CLOSE) return 0; /* hang up right after HELLO */

  if (read_frame(fd, buf, sizeof buf, &have, &f)) return 15;
  if (f.stream != 1 || f.flags != REX_FLAG_END || f.nattrs != 0) return 16;
  uint16_t want = mode == M_HOSTS ? REX_MSG_HOSTS_GET : REX_MSG_LOAD_GET;
  if (f.type != want) return 17;

  /* A frame for another stream first: the client must skip it. */
  rex_frame_start(&out, REX_MSG_PONG, REX_FLAG_END, 3);
  if (send_frame(fd, &out)) return 18;

  switch (mode) {
  case M_LOAD:
    rex_frame_start(&out, REX_MSG_LOAD, REX_FLAG_END, 1);
    rex_attr_string(&out, REX_LOAD_HOST, "alpha");
    rex_attr_f64(&out, REX_LOAD_LOAD, 0.375);
    rex_attr_list_begin(&out, REX_LOAD_LOADAVG);
    rex_attr_f64(&out, 1, 0.5);
    rex_attr_f64(&out, 1, 0.25);
    rex_attr_f64(&out, 1, 0.125);
    rex_attr_list_end(&out);
    rex_attr_uint(&out, REX_LOAD_CORES, 2);
    rex_attr_string(&out, 99, "an attribute from a newer rexd: ignored");
    break;
  case M_HOSTS:
    rex_frame_start(&out, REX_MSG_HOSTS, REX_FLAG_END, 1);
    add_host(&out, "alpha", 7801, 0.1, 1);
    add_host(&out, "beta", 7802, -1, 0);
    add_host(&out, "gamma", 7803, 1.5, 0);
    break;
  case M_ERROR:
    rex_frame_start(&out, REX_MSG_ERROR, REX_FLAG_END, 1);
    rex_attr_uint(&out, REX_ERROR_CODE, (uint64_t)REX_EPROTO_WIRE(REX_EPROTO_BUSY));
    rex_attr_string(&out, REX_ERROR_MESSAGE, "more than 1024 requests open");
    break;
  case M_GARBAGE: {
    static const uint8_t junk[12] = {0, 0, 0, 0, 0, 0x21, 0x80, 0, 0, 0, 0, 1}; /* reserved flag bit */
    return write_all(fd, junk, sizeof junk) ? 19 : 0;
  }
  default:
    return 20;
  }
  return send_frame(fd, &out) ? 21 : 0;
}

static void fake_start(struct fake *fk, enum mode mode, int connections) {
  snprintf(fk->dir, sizeof fk->dir, "/tmp/rex-ctest-XXXXXX");
  if (!mkdtemp(fk->dir)) FAIL("mkdtemp: %s", strerror(errno));
  snprintf(fk->path, sizeof fk->path, "%s/rexd.sock", fk->dir);
  int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT(ls >= 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", fk->path);
  if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4)) FAIL("bind %s: %s", fk->path, strerror(errno));
  fk->pid = fork();
  ASSERT(fk->pid >= 0);
  if (fk->pid == 0) {
    /* If the test fails before fake_finish, nobody waits for this process:
       bound its life, and drop the runner's report pipe so that the runner
       is not kept waiting for it either. */
    alarm(20);
    for (int fd = 3; fd < 256; fd++)
      if (fd != ls) close(fd);
    int status = 0;
    for (int i = 0; i < connections && !status; i++) {
      int fd = accept(ls, NULL, NULL);
      if (fd < 0) _exit(30);
      status = serve(fd, mode);
      close(fd);
    }
    _exit(status);
  }
  close(ls);
  setenv("REX_SOCKET", fk->path, 1);
}

/* Waits for the stand-in daemon and fails the test if it saw a wrong client. */
static void fake_finish(struct fake *fk) {
  int status;
  while (waitpid(fk->pid, &status, 0) < 0 && errno == EINTR) {
  }
  unlink(fk->path);
  rmdir(fk->dir);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    FAIL("stand-in rexd: the client misbehaved (status %d, see serve() in test_client.c)", WEXITSTATUS(status));
}

TEST_IMPL(client_socket_path) {
  char p[108];
  setenv("REX_SOCKET", "/run/x/rexd.sock", 1);
  ASSERT_EQ(rex__socket_path(p, sizeof p), 0);
  ASSERT_EQ(strcmp(p, "/run/x/rexd.sock"), 0);
  unsetenv("REX_SOCKET");
  setenv("HOME", "/home/someone", 1);
  ASSERT_EQ(rex__socket_path(p, sizeof p), 0);
  ASSERT_EQ(strcmp(p, "/home/someone/.rex/run/rexd.sock"), 0);
  setenv("REX_SOCKET", "", 1); /* empty means unset */
  ASSERT_EQ(rex__socket_path(p, sizeof p), 0);
  ASSERT_EQ(strcmp(p, "/home/someone/.rex/run/rexd.sock"), 0);
  unsetenv("HOME");
  ASSERT_EQ(rex__socket_path(p, sizeof p), -ENOENT);
  char longp[300];
  memset(longp, 'a', sizeof longp - 1);
  longp[0] = '/';
  longp[sizeof longp - 1] = '\0';
  setenv("REX_SOCKET", longp, 1);
  ASSERT_EQ(rex__socket_path(p, sizeof p), -ENAMETOOLONG);
  errno = 0;
  ASSERT(rload() == -1.0);
  ASSERT_EQ(errno, ENAMETOOLONG);
  ASSERT_STR_CONTAINS(rex_last_error(), "REX_SOCKET");
}

TEST_IMPL(client_no_daemon_enoent) {
  char dir[] = "/tmp/rex-ctest-XXXXXX";
  ASSERT(mkdtemp(dir));
  unsetenv("REX_SOCKET");
  setenv("HOME", dir, 1);
  errno = 0;
  ASSERT(rload() == -1.0);
  ASSERT_EQ(errno, ENOENT);
  ASSERT_STR_CONTAINS(rex_last_error(), "/.rex/run/rexd.sock");
  ASSERT_STR_CONTAINS(rex_last_error(), "is rexd running?");
  struct rex_host h[2];
  errno = 0;
  ASSERT_EQ(rex_hosts(h, 2), -1);
  ASSERT_EQ(errno, ENOENT);
  ASSERT_EQ(rex_hosts(NULL, 1), -1);
  ASSERT_EQ(errno, EINVAL);
  rmdir(dir);
}

TEST_IMPL(client_no_daemon_econnrefused) {
  /* A socket file left behind by a rexd that died: nobody listens on it. */
  char dir[] = "/tmp/rex-ctest-XXXXXX", path[96];
  ASSERT(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/rexd.sock", dir);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  ASSERT_EQ(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
  close(s);
  setenv("REX_SOCKET", path, 1);
  errno = 0;
  ASSERT(rload() == -1.0);
  ASSERT_EQ(errno, ECONNREFUSED);
  ASSERT_STR_CONTAINS(rex_last_error(), path);
  unlink(path);
  rmdir(dir);
}

TEST_IMPL(client_rload) {
  struct fake fk;
  fake_start(&fk, M_LOAD, 1);
  double l = rload();
  if (l != 0.375) FAIL("rload() = %g (errno %d: %s)", l, errno, rex_last_error());
  ASSERT_EQ(rex_last_error()[0], '\0');
  fake_finish(&fk);
}

TEST_IMPL(client_hosts) {
  struct fake fk;
  fake_start(&fk, M_HOSTS, 2);
  struct rex_host h[2];
  memset(h, 0x55, sizeof h);
  int n = rex_hosts(h, 2);
  if (n != 3) FAIL("rex_hosts() = %d (errno %d: %s)", n, errno, rex_last_error());
  ASSERT_EQ(strcmp(h[0].name, "alpha"), 0);
  ASSERT_EQ(strcmp(h[0].address, "127.0.0.1"), 0);
  ASSERT_EQ(h[0].port, 7801);
  ASSERT(h[0].load == 0.1 && h[0].loadavg1 == 0.2);
  ASSERT_EQ(h[0].cores, 2);
  ASSERT_EQ(h[0].jobs, 0);
  ASSERT(h[0].reachable == 1 && h[0].self == 1);
  ASSERT_EQ(h[0].age_ms, 12);
  ASSERT_EQ(h[0].error[0], '\0');
  ASSERT_EQ(strcmp(h[1].name, "beta"), 0);
  ASSERT(h[1].load == -1.0 && h[1].loadavg1 == -1.0);
  ASSERT_EQ(h[1].age_ms, -1);
  ASSERT(h[1].reachable == 0 && h[1].self == 0);
  ASSERT_EQ(strcmp(h[1].error, "connect ECONNREFUSED 127.0.0.1:7802"), 0);
  /* counting only */
  ASSERT_EQ(rex_hosts(NULL, 0), 3);
  fake_finish(&fk);
}

TEST_IMPL(client_error_answer) {
  struct fake fk;
  fake_start(&fk, M_ERROR, 1);
  errno = 0;
  ASSERT(rload() == -1.0);
  ASSERT_EQ(errno, EPROTO);
  ASSERT_STR_CONTAINS(rex_last_error(), "ERROR BUSY: more than 1024 requests open");
  fake_finish(&fk);
}

TEST_IMPL(client_garbage_answer) {
  struct fake fk;
  fake_start(&fk, M_GARBAGE, 1);
  errno = 0;
  ASSERT(rload() == -1.0);
  ASSERT_EQ(errno, EPROTO);
  ASSERT_STR_CONTAINS(rex_last_error(), "MALFORMED");
  ASSERT_STR_CONTAINS(rex_last_error(), "reserved flag bits");
  fake_finish(&fk);
}

TEST_IMPL(client_timeout) {
  struct fake fk;
  fake_start(&fk, M_SILENT, 1);
  setenv("REX_TIMEOUT_MS", "200", 1);
  errno = 0;
  ASSERT(rload() == -1.0);
  ASSERT_EQ(errno, ETIMEDOUT);
  ASSERT_STR_CONTAINS(rex_last_error(), "did not answer within 200 ms");
  fake_finish(&fk);
}

TEST_IMPL(client_closed_early) {
  /* The daemon hangs up after HELLO: the client's next send must fail with
     EPIPE or the read with ECONNRESET, never raise SIGPIPE in the user's program. */
  signal(SIGPIPE, SIG_DFL);
  struct fake fk;
  fake_start(&fk, M_CLOSE, 1);
  errno = 0;
  ASSERT(rload() == -1.0);
  if (errno != EPIPE && errno != ECONNRESET) FAIL("errno %d (%s)", errno, strerror(errno));
  fake_finish(&fk);
}
