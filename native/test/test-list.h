/* test-list.h: every C test, in the order the runner runs them. */
#define REX_TEST_LIST(X)          \
  X(vectors_decode)               \
  X(vectors_reencode)             \
  X(vectors_byte_by_byte)         \
  X(vectors_entries_paging)       \
  X(codec_builders_roundtrip)     \
  X(codec_minimal_widths)         \
  X(codec_malformed_rules)        \
  X(codec_error_order)            \
  X(codec_limit_payload)          \
  X(codec_limit_attrs)            \
  X(codec_limit_depth)            \
  X(codec_arena_too_small)        \
  X(codec_encode_errors)          \
  X(codec_utf8)                   \
  X(codec_strerror)               \
  X(fuzz_random_bytes)            \
  X(fuzz_mutated_frames)          \
  X(client_socket_path)           \
  X(client_no_daemon_enoent)      \
  X(client_no_daemon_econnrefused) \
  X(client_rload)                 \
  X(client_hosts)                 \
  X(client_error_answer)          \
  X(client_garbage_answer)        \
  X(client_timeout)               \
  X(client_closed_early)          \
  X(fileproxy_request_fields)     \
  X(fileproxy_answer_fields)      \
  X(fileproxy_fuzz_parsers)       \
  X(fileproxy_perform_served_only) \
  X(fileproxy_filter_unprivileged) \
  X(fileproxy_filter_privileged_keeps_credentials) \
  X(fileproxy_filter_refused_falls_back) \
  X(xsave_convert_intel_amd_round_trip) \
  X(xsave_convert_refusals)       \
  X(xsave_compare_superset)
