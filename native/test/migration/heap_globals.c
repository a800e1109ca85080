/* heap_globals: malloc'd lists and blocks, initialised and zero globals, a const table. */
#include "zdtm.h"

struct node {
  struct node *next;
  unsigned value;
  char text[40];
};

static unsigned char zero_global[100000];
static int init_global[1000] = {1, 2, 3};
static const unsigned table[4] = {0xdeadbeef, 0xcafef00d, 0x12345678, 0x9abcdef0};

int main(int argc, char **argv) {
  ZDTM_INIT("heap_globals", argc, argv);
  struct node *head = NULL;
  for (unsigned i = 0; i < 5000; i++) {
    struct node *n = malloc(sizeof *n);
    n->next = head, n->value = i * 2654435761u;
    snprintf(n->text, sizeof n->text, "node %u", i);
    head = n;
  }
  size_t big = 3u << 20;
  unsigned char *block = malloc(big);
  for (size_t i = 0; i < big; i++) block[i] = (unsigned char)(i * 7 + 3);
  for (size_t i = 0; i < sizeof zero_global; i += 97) zero_global[i] = (unsigned char)i;
  for (int i = 3; i < 1000; i++) init_global[i] = i * i;

  zdtm_migrate(argv[1]);

  unsigned i = 5000;
  for (struct node *n = head; n; n = n->next) {
    i--;
    char want[40];
    snprintf(want, sizeof want, "node %u", i);
    if (n->value != i * 2654435761u || strcmp(n->text, want) != 0) fail("node %u: value %u text '%s'", i, n->value, n->text);
  }
  if (i != 0) fail("list has %u nodes too few", i);
  for (size_t k = 0; k < big; k++)
    if (block[k] != (unsigned char)(k * 7 + 3)) fail("block[%zu] = %u", k, block[k]);
  for (size_t k = 0; k < sizeof zero_global; k++)
    if (zero_global[k] != (k % 97 == 0 ? (unsigned char)k : 0)) fail("zero_global[%zu] = %u", k, zero_global[k]);
  if (init_global[0] != 1 || init_global[2] != 3) fail("init_global head");
  for (int k = 3; k < 1000; k++)
    if (init_global[k] != k * k) fail("init_global[%d] = %d", k, init_global[k]);
  if (table[0] != 0xdeadbeef || table[3] != 0x9abcdef0) fail("const table");
  free(block);
  pass();
}
