/*
 * conn.h: librex's one connection to rexd (conn.c). rload()/rex_hosts()
 * (client.c), rcall()/rjump() (rcall.c), rexecve() and rfork()'s stub
 * (rexec.c) talk to the local rexd through it; the call controller's serve
 * loop (callctl_serve.c) uses it on the link rexd gave it.
 *
 * What differs between them is a parameter, not a copy: the deadline (none
 * for the stub, which waits for a transfer and then relays for the program's
 * lifetime), the prefix of messages (rexecve/rfork name themselves), whether
 * the first request goes in the same write as HELLO (rcall), and the mapping
 * of rexd's ERROR codes to errno (a table per caller, from its man page).
 *
 * Every function returns 0 (or a count) on success and -errno on failure,
 * with rex_last_error() set to the detail.
 */
#ifndef REX_CONN_H
#define REX_CONN_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

struct rex__conn {
  int fd;
  int owned;                /* rex__conn_close closes fd (not for an inherited link) */
  const char *who;          /* prefix of every message ("rexecve"), or NULL */
  long long deadline;       /* CLOCK_MONOTONIC milliseconds; 0: waits have no deadline */
  long timeout_ms;          /* what the deadline was, for the message */
  const char *timeout_what; /* what set it (an environment variable), for the message */
  char path[108];           /* the socket's path (sizeof sun_path) */
  char where[128];          /* "rexd at PATH": names the peer in messages */
  /* Received bytes: in[start..len) not yet returned as frames; need: what the partial frame there wants. */
  uint8_t *in;
  size_t len, cap, start, need;
  struct rex_attr *arena; /* sized per frame, for the frame last returned */
  size_t arena_cap;
  /* Encoded frames not yet sent (rex__conn_queue), sent by rex__conn_flush. */
  uint8_t *out;
  size_t out_len, out_cap;
};

/* rex__conn_welcome and rex__conn_await: the frame is an ERROR from rexd (rex__conn_error reads it). */
#define REX__CONN_ERROR 1

/*
 * Connects to the local rexd ($REX_SOCKET, rex__socket_path) with a
 * non-blocking, close-on-exec socket. timeout_ms bounds everything that
 * follows on c (0: no deadline); timeout_what names where it came from.
 * On failure c must still be closed; c->fd >= 0 then tells that the socket
 * path was found and connect() itself failed (rexecve maps that to
 * EHOSTUNREACH).
 */
int rex__conn_open(struct rex__conn *c, const char *who, long timeout_ms, const char *timeout_what);
/* Uses fd, which stays open after rex__conn_close (a link inherited from rexd); where names it in messages. */
void rex__conn_attach(struct rex__conn *c, int fd, const char *where);
void rex__conn_close(struct rex__conn *c);

/* Encodes f after what is queued. -EINVAL when it does not encode, -ENOMEM. */
int rex__conn_queue(struct rex__conn *c, const struct rex_frame *f);
/* Queues the preface and HELLO as a client (docs/PROTOCOL.md 4.1). */
int rex__conn_queue_hello(struct rex__conn *c);
/* Sends what is queued; no SIGPIPE (MSG_NOSIGNAL), a pipe instead of a socket works too. */
int rex__conn_flush(struct rex__conn *c);
/* rex__conn_queue and rex__conn_flush. */
int rex__conn_send(struct rex__conn *c, const struct rex_frame *f);

/*
 * The next frame from the bytes already received: 1 and f (valid until the
 * next take, fill or receive on c), 0 when more bytes are needed, or -EPROTO
 * for a frame that breaks the limits (REX_PROTO_MAX_PAYLOAD) or the format.
 */
int rex__conn_take(struct rex__conn *c, struct rex_frame *f);
/* One read of what is there, without waiting: bytes read, 0 for none now, -ECONNRESET at end of file, -errno. */
long rex__conn_fill(struct rex__conn *c);
/* Bytes received and not yet returned as frames. */
size_t rex__conn_pending(const struct rex__conn *c);
/* Waits (up to the deadline) for the next frame. -ECONNRESET when rexd closed the connection. */
int rex__conn_recv(struct rex__conn *c, struct rex_frame *f);

/* Receives rexd's HELLO and checks it (kinds, version): 0, REX__CONN_ERROR with the ERROR in f, or -errno. */
int rex__conn_welcome(struct rex__conn *c, struct rex_frame *f);
/*
 * Waits for the next frame of `stream`: 0 and f, REX__CONN_ERROR with an
 * ERROR of the stream or of the connection (stream 0) in f, -ECONNRESET on
 * GOODBYE (its reason in the message). Frames of other streams are skipped.
 */
int rex__conn_await(struct rex__conn *c, uint32_t stream, struct rex_frame *f);

/* Milliseconds from the environment variable name: 1..max, else (unset, not a number, out of range) dflt. */
long rex__env_ms(const char *name, long dflt, long max);

/* One line of a caller's mapping of rexd's ERROR codes (REX_EPROTO_*) to errno; a {0, 0} line ends it. */
struct rex__errno_map {
  int code;
  int err;
};
/* An ERROR frame read: its wire code, the code's name, the message (NUL-terminated, cut at a UTF-8 boundary). */
struct rex__remote_error {
  uint64_t code;
  const char *name;
  char text[512];
};
/*
 * Reads the ERROR frame f into e and returns the errno map gives its code
 * (EPROTO for codes map does not list, and for an ERROR frame that breaks
 * its attribute table, whose fault e->text then describes).
 */
int rex__conn_error(const struct rex_frame *f, const struct rex__errno_map *map, struct rex__remote_error *e);

/* One attribute a message may carry: its tag and kind (docs/PROTOCOL.md section 4). */
struct rex__field {
  uint16_t tag;
  uint8_t kind;
  uint8_t repeated;
};
/*
 * Checks the children of parent against a message's table: a known tag of
 * the wrong kind, a repeat of a non-repeated tag, or an unknown CRITICAL tag
 * is refused (-EPROTO, naming `what`); unknown ordinary tags are skipped
 * (newer daemons may add some). The CRITICAL bit of a known tag is ignored,
 * as messages.ts does.
 */
int rex__check_fields(const struct rex_frame *f, uint32_t parent, const struct rex__field *fields, size_t n,
                      const char *what);
/* The first child of parent whose tag (CRITICAL bit ignored) is tag, or NULL. */
const struct rex_attr *rex__field(const struct rex_frame *f, uint32_t parent, uint16_t tag);
/* Copies a string attribute into dst[0..cap), cutting at a UTF-8 character boundary. */
void rex__copy_str(char *dst, size_t cap, const struct rex_attr *a);

#endif /* REX_CONN_H */
