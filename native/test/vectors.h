/* vectors.h: access to test/vectors/protocol-v1.json for the C tests. */
#ifndef REX_TEST_VECTORS_H
#define REX_TEST_VECTORS_H

#include <stddef.h>

#include "json.h"

/* Parses the vectors file; fails the test when it is missing or has no cases. Free with json_free. */
struct json *rex_test_load_vectors(void);
/* A case's maxPayload, or the default limit. */
size_t rex_test_max_payload(const struct json *c);

#endif
