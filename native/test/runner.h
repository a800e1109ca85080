/*
 * runner.h: the C test runner's interface (libuv style). Tests are declared
 * in test-list.h; each runs in its own forked process, so a crash, an abort
 * from a sanitizer or a leak fails that test only. A failing ASSERT reports
 * its reason to the runner over a pipe and ends the test process.
 */
#ifndef REX_TEST_RUNNER_H
#define REX_TEST_RUNNER_H

#include <stddef.h>
#include <stdint.h>

#define TEST_IMPL(name) void rex_test_##name(void)

/* Ends the current test as failed with a printf-style reason. */
__attribute__((noreturn, format(printf, 3, 4))) void rex_test_fail(const char *file, int line, const char *fmt, ...);

#define FAIL(...) rex_test_fail(__FILE__, __LINE__, __VA_ARGS__)
#define ASSERT(expr)                                     \
  do {                                                   \
    if (!(expr)) FAIL("assertion failed: %s", #expr);    \
  } while (0)
#define ASSERT_EQ(a, b)                                                                              \
  do {                                                                                               \
    long long a_ = (long long)(a), b_ = (long long)(b);                                              \
    if (a_ != b_) FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);                                    \
  } while (0)
#define ASSERT_STR_CONTAINS(s, sub)                                                                  \
  do {                                                                                               \
    if (!strstr((s), (sub))) FAIL("%s does not contain \"%s\": \"%s\"", #s, (sub), (s));             \
  } while (0)

/* The path of test/vectors/protocol-v1.json: $REX_VECTORS, or the path compiled in. */
const char *rex_test_vectors_path(void);

/* Hex text to bytes; returns a malloc'ed buffer (never NULL) and sets *len. */
uint8_t *rex_test_unhex(const char *hex, size_t *len);

#endif
