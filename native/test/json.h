/*
 * json.h: a minimal JSON reader for the test vectors file: enough of RFC 8259
 * for what JSON.stringify writes (objects, arrays, strings with escapes and
 * surrogate pairs, numbers kept as text, true/false/null). Test code only.
 */
#ifndef REX_TEST_JSON_H
#define REX_TEST_JSON_H

#include <stddef.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
  enum json_type type;
  int boolean;
  char *str;        /* string: UTF-8, NUL-terminated (len excludes it); number: its text */
  size_t len;
  struct json *items; /* array elements or object values */
  char **keys;        /* object keys */
  size_t n;
};

/* Parses text; returns NULL and writes the reason and offset into err on failure. */
struct json *json_parse(const char *text, char *err, size_t errcap);
/* Reads a whole file and parses it. */
struct json *json_parse_file(const char *path, char *err, size_t errcap);
void json_free(struct json *j);
/* The value of key in an object, or NULL. */
const struct json *json_get(const struct json *obj, const char *key);

#endif
