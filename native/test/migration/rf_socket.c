/* rf_socket: a TCP connection to a server in the parent, opened before rfork(), keeps working from the moved child. */
#include "zdtm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
  ZDTM_INIT("rf_socket", argc, argv);
  int srv = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (srv < 0 || bind(srv, (struct sockaddr *)&a, sizeof a) || listen(srv, 1) || getsockname(srv, (struct sockaddr *)&a, &al)) fail("server");
  int cli = socket(AF_INET, SOCK_STREAM, 0);
  if (cli < 0 || connect(cli, (struct sockaddr *)&a, sizeof a)) fail("connect");
  /* The connection is made here; the parent accepts it after rfork(), so only the client end is the child's. */
  pid_t pid = rfork();
  if (pid < 0) fail("rfork: %s", rex_last_error());
  if (pid == 0) {
    close(srv);
    for (int i = 0; i < 100; i++) {
      char q[32], r[32];
      int n = snprintf(q, sizeof q, "question %d\n", i);
      if (write(cli, q, (size_t)n) != n) fail("write %d", i);
      size_t got = 0;
      while (got < (size_t)n) {
        ssize_t k = read(cli, r + got, (size_t)n - got);
        if (k <= 0) fail("read %d: %zd", i, k);
        got += (size_t)k;
      }
      if (memcmp(r, "response", 8) || memcmp(r + 8, q + 8, (size_t)n - 8)) fail("answer %d: %.*s", i, n, r);
    }
    shutdown(cli, SHUT_WR);
    char c;
    if (read(cli, &c, 1) != 0) fail("no EOF after the server closed");
    pass();
  }
  close(cli);
  int conn = accept(srv, NULL, NULL);
  if (conn < 0) fail("accept");
  /* The server: "question N\n" -> "response N\n" (same length), then EOF after the client's. */
  char buf[4096];
  size_t have = 0;
  for (;;) {
    ssize_t k = read(conn, buf + have, sizeof buf - have);
    if (k <= 0) break;
    have += (size_t)k;
    char *nl;
    while ((nl = memchr(buf, '\n', have))) {
      size_t len = (size_t)(nl - buf) + 1;
      char out[64];
      int n = snprintf(out, sizeof out, "response%.*s", (int)(len - 8), buf + 8);
      if (write(conn, out, (size_t)n) != n) fail("server write");
      memmove(buf, buf + len, have - len);
      have -= len;
    }
  }
  close(conn);
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st)) return 1;
  printf("PARENT-OK\n");
  return 0;
}
