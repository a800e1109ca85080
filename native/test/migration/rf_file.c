/*
 * rf_file: regular files opened before rfork(): one read-only (the child reads
 * it from the shared offset), one O_APPEND (the child's lines land in the file
 * the parent reads back after wait()).
 */
#include "zdtm.h"

int main(int argc, char **argv) {
  ZDTM_INIT("rf_file", argc, argv);
  if (argc < 3) fail("usage: rf_file rfork DIR");
  char in_path[4096], out_path[4096];
  snprintf(in_path, sizeof in_path, "%s/rf_file.in", argv[2]);
  snprintf(out_path, sizeof out_path, "%s/rf_file.out", argv[2]);
  FILE *f = fopen(in_path, "w");
  for (int i = 0; i < 20000; i++) fprintf(f, "line %d\n", i);
  fclose(f);
  int in = open(in_path, O_RDONLY);
  char skip[10];
  if (in < 0 || read(in, skip, 7) != 7) fail("open in"); /* "line 0\n": the child continues from offset 7 */
  int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
  if (out < 0 || write(out, "parent first\n", 13) != 13) fail("open out");
  pid_t pid = rfork();
  if (pid < 0) fail("rfork: %s", rex_last_error());
  if (pid == 0) {
    FILE *r = fdopen(in, "r");
    char line[64];
    for (int i = 1; i < 20000; i++) {
      char want[64];
      snprintf(want, sizeof want, "line %d\n", i);
      if (!fgets(line, sizeof line, r) || strcmp(line, want)) fail("line %d: '%s'", i, line);
    }
    if (fgets(line, sizeof line, r)) fail("more after the last line");
    for (int i = 0; i < 100; i++) {
      char l[32];
      int n = snprintf(l, sizeof l, "child %d\n", i);
      if (write(out, l, (size_t)n) != n) fail("write out %d", i);
    }
    pass();
  }
  int st;
  waitpid(pid, &st, 0);
  if (write(out, "parent last\n", 12) != 12) fail("parent write");
  close(out);
  f = fopen(out_path, "r");
  char line[64];
  if (!fgets(line, sizeof line, f) || strcmp(line, "parent first\n")) fail("out line 1 '%s'", line);
  for (int i = 0; i < 100; i++) {
    char want[32];
    snprintf(want, sizeof want, "child %d\n", i);
    if (!fgets(line, sizeof line, f) || strcmp(line, want)) fail("out child line %d '%s'", i, line);
  }
  if (!fgets(line, sizeof line, f) || strcmp(line, "parent last\n")) fail("out last '%s'", line);
  fclose(f);
  if (!WIFEXITED(st) || WEXITSTATUS(st)) return 1;
  printf("PARENT-OK\n");
  return 0;
}
