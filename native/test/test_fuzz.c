/*
 * test_fuzz.c: a deterministic fuzz loop over the decoder (fixed seed, a
 * bounded number of iterations): random bytes shaped like frames, and the
 * valid vectors mutated. Under `make check` any out-of-bounds read,
 * overflow or leak aborts the test. Beyond "no crash", every verdict is
 * checked for consistency: a decoded frame re-encodes to the same bytes,
 * its shorter prefixes are incomplete, and its attributes respect the limits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "runner.h"
#include "vectors.h"

#define ITERATIONS 100000
#define MAX_INPUT 512

static uint64_t rng_state = 0x5245582176310001ull; /* "REX!v1" and a counter: fixed */

static uint64_t rng(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dull;
}

static uint32_t below(uint32_t n) { return (uint32_t)(rng() % n); }

static struct rex_attr arena[REX_PROTO_MAX_ATTRS];

/* Decodes buf and checks that the verdict is consistent; fails the test otherwise. */
static int check_one(const uint8_t *buf, size_t len, size_t max_payload, long iter) {
  struct rex_frame f;
  rex_frame_init(&f, arena, REX_PROTO_MAX_ATTRS);
  size_t used = 0;
  int rc = rex_frame_decode(buf, len, max_payload, &f, &used);
  if (rc != 0 && rc != REX_EAGAIN && rc != REX_EPROTO_MALFORMED && rc != REX_EPROTO_TOO_BIG)
    FAIL("iteration %ld: unexpected result %s", iter, rex_err_name(rc));
  if (rc == REX_EPROTO_MALFORMED || rc == REX_EPROTO_TOO_BIG) {
    if (!f.err[0]) FAIL("iteration %ld: %s without a message", iter, rex_err_name(rc));
    if (f.err_offset > len) FAIL("iteration %ld: error offset %zu past the input", iter, f.err_offset);
  }
  if (rc != 0) return rc;
  if (used != 12 + (size_t)f.length || used > len) FAIL("iteration %ld: consumed %zu of %zu", iter, used, len);
  if (f.nattrs > REX_PROTO_MAX_ATTRS) FAIL("iteration %ld: %zu attributes", iter, f.nattrs);
  for (size_t i = 0; i < f.nattrs; i++) {
    const struct rex_attr *a = &f.attrs[i];
    if (a->depth < 1 || a->depth > REX_PROTO_MAX_DEPTH) FAIL("iteration %ld: depth %u", iter, a->depth);
    if (a->data < buf || a->data + a->len > buf + used) FAIL("iteration %ld: attribute %zu points outside", iter, i);
    if (a->kind == REX_KIND_STRING && !rex_utf8_valid(a->data, a->len)) FAIL("iteration %ld: bad string passed", iter);
  }
  uint8_t out[MAX_INPUT + 64];
  size_t n;
  int erc = rex_frame_encode(&f, out, sizeof out, &n);
  if (erc) FAIL("iteration %ld: re-encoding a decoded frame: %s", iter, rex_err_name(erc));
  if (n != used || memcmp(out, buf, n)) FAIL("iteration %ld: re-encoded bytes differ", iter);
  if (used > 12) {
    size_t cut = 12 + below((uint32_t)(used - 12));
    int prc = rex_frame_decode(buf, cut, max_payload, &f, NULL);
    if (prc != REX_EAGAIN) FAIL("iteration %ld: prefix of %zu bytes gave %s", iter, cut, rex_err_name(prc));
  }
  return 0;
}

TEST_IMPL(fuzz_random_bytes) {
  uint8_t buf[MAX_INPUT];
  long results[4] = {0, 0, 0, 0};
  for (long it = 0; it < ITERATIONS; it++) {
    size_t len = below(MAX_INPUT);
    for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)rng();
    if (len >= 12 && below(4) != 0) {
      /* Mostly plausible headers, so that the attribute decoder is reached. */
      rex__wr32(buf, (uint32_t)(len - 12 - (below(4) == 0 ? below((uint32_t)len - 11) : 0)));
      rex__wr16(buf + 6, (uint16_t)(below(8) == 0 ? rng() : rng() & 1));
      /* Small kinds and lengths make attributes that nest and parse. */
      for (size_t i = 12; i + 7 <= len; i += 7 + below(6)) {
        buf[i + 2] = (uint8_t)(1 + below(8));
        rex__wr32(buf + i + 3, below(4) == 0 ? (uint32_t)rng() : below(24));
      }
    }
    int rc = check_one(buf, len, REX_PROTO_MAX_PAYLOAD, it);
    results[rc == 0 ? 0 : rc == REX_EAGAIN ? 1 : rc == REX_EPROTO_MALFORMED ? 2 : 3]++;
  }
  /* The loop must exercise every verdict, or it is not testing much. */
  if (!results[0] || !results[1] || !results[2] || !results[3])
    FAIL("verdicts ok/incomplete/malformed/too-big: %ld/%ld/%ld/%ld", results[0], results[1], results[2], results[3]);
}

TEST_IMPL(fuzz_mutated_frames) {
  struct json *root = rex_test_load_vectors();
  const struct json *cases = json_get(root, "cases");
  uint8_t *corpus[128];
  size_t sizes[128], ncorpus = 0;
  for (size_t ci = 0; ci < cases->n && ncorpus < 128; ci++) {
    size_t len;
    uint8_t *b = rex_test_unhex(json_get(&cases->items[ci], "hex")->str, &len);
    if (len == 0 || len > MAX_INPUT - 16) {
      free(b);
      continue;
    }
    corpus[ncorpus] = b;
    sizes[ncorpus++] = len;
  }
  ASSERT(ncorpus >= 20);
  uint8_t buf[MAX_INPUT];
  long ok = 0;
  for (long it = 0; it < ITERATIONS; it++) {
    size_t k = below((uint32_t)ncorpus), len = sizes[k];
    memcpy(buf, corpus[k], len);
    int nmut = 1 + (int)below(4);
    for (int m = 0; m < nmut; m++) {
      switch (below(7)) {
      case 0: buf[below((uint32_t)len)] ^= (uint8_t)(1u << below(8)); break;
      case 1: buf[below((uint32_t)len)] = (uint8_t)rng(); break;
      case 2: /* truncate */
        len = below((uint32_t)len + 1);
        break;
      case 3: /* insert a byte */
        if (len < MAX_INPUT - 1) {
          size_t at = below((uint32_t)len + 1);
          memmove(buf + at + 1, buf + at, len - at);
          buf[at] = (uint8_t)rng();
          len++;
        }
        break;
      case 4: /* delete a byte */
        if (len > 0) {
          size_t at = below((uint32_t)len);
          memmove(buf + at, buf + at + 1, len - at - 1);
          len--;
        }
        break;
      case 5: /* an interesting 32-bit value over a length field (header or attribute) */
        if (len >= 4) {
          static const uint32_t vals[] = {0, 1, 6, 7, 8, 0x7fffffff, 0xffffffffu, 0x100000, 0x100001};
          uint32_t v = vals[below(sizeof vals / sizeof *vals)];
          size_t at = below(3) == 0 ? 0 : below((uint32_t)len - 3);
          rex__wr32(buf + at, below(2) ? v : v + (uint32_t)len);
        }
        break;
      case 6: /* keep the header's length true to the (mutated) payload */
        if (len >= 12) rex__wr32(buf, (uint32_t)(len - 12));
        break;
      }
      if (len == 0) break;
    }
    if (len == 0) continue;
    if (check_one(buf, len, below(8) == 0 ? REX_PROTO_MIN_PAYLOAD : REX_PROTO_MAX_PAYLOAD, it) == 0) ok++;
  }
  for (size_t i = 0; i < ncorpus; i++) free(corpus[i]);
  json_free(root);
  if (ok < ITERATIONS / 20) FAIL("only %ld of %d mutated inputs still decoded: mutations too destructive", ok, ITERATIONS);
}
