/*
 * rex_client_demo.c: rload() and rex_hosts() from a plain C program, linked
 * against librex.so (built as build/bin/rex_hosts_demo). Prints
 *   rload: 0.25
 *   host alpha 127.0.0.1:7801 load 0.25 cores 2 jobs 0 reachable self
 * Exit status 0, or 1 with the error on stderr. The socket comes from
 * REX_SOCKET or $HOME/.rex/run/rexd.sock, as for every librex program.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rex.h>

int main(void) {
  double load = rload();
  if (load < 0) {
    int e = errno;
    fprintf(stderr, "rload: %s (%s)\n", rex_strerror(e), rex_last_error());
    return 1;
  }
  printf("rload: %g\n", load);

  struct rex_host hosts[64];
  int n = rex_hosts(hosts, sizeof hosts / sizeof *hosts);
  if (n < 0) {
    int e = errno;
    fprintf(stderr, "rex_hosts: %s (%s)\n", rex_strerror(e), rex_last_error());
    return 1;
  }
  for (int i = 0; i < n && i < 64; i++) {
    const struct rex_host *h = &hosts[i];
    printf("host %s %s:%u", h->name, h->address, h->port);
    if (h->load >= 0) printf(" load %g", h->load);
    printf(" cores %u jobs %u %s%s", h->cores, h->jobs, h->reachable ? "reachable" : "unreachable",
           h->self ? " self" : "");
    if (h->age_ms >= 0) printf(" age %lldms", h->age_ms);
    if (h->error[0]) printf(" error: %s", h->error);
    printf("\n");
  }
  if (n > 64) printf("(%d more hosts)\n", n - 64);
  return 0;
}
