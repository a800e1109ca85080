/*
 * callctl.h: the serving side of remote calls, shared by rex_serve() (a C
 * program that serves its own functions) and the generic controller
 * native/callctl/rex_callctl.c (any shared object, through libffi).
 * Internal to librex: the functions are rex__ and hidden; rex_callctl links
 * librex.a and may call them.
 */
#ifndef REX_CALLCTL_H
#define REX_CALLCTL_H

#include "conn.h"

/* One call being served: the serve loop owns it, an invoke function fills the result. */
struct rex__call {
  uint32_t stream;
  int async;       /* rjump with REX_RFLAG_ASYNC: answer "accepted" before entering the code */
  struct rex__conn *link; /* for rex__call_ready */
  int answered;    /* the accepted RESULT was sent */
  uint8_t *out;    /* invoke: malloc'ed output frame */
  size_t out_len;
  int err;         /* invoke: a REX_EPROTO_* code when the call was refused */
  char msg[512];   /* invoke: why, when err is set */
};

/*
 * Serves one call: in[0..in_len) is a copy of the input frame in a 16-byte
 * aligned buffer the function may write to. Validates the frame, calls
 * rex__call_ready() right before entering the code, and sets call->out or
 * call->err/msg.
 */
typedef void (*rex__invoke_fn)(void *ctx, uint8_t *in, size_t in_len, struct rex__call *call);

/* Handles a DEFINE frame (generic controller only): 0, or a REX_EPROTO_* code with msg set. */
typedef int (*rex__define_fn)(const struct rex_frame *f, char *msg, size_t cap);

/* Adds (or replaces) an entry point. variable: frames carry data sections, so in_size is only the fixed part. */
int rex__serve_add(const char *name, size_t in_size, size_t out_size, int variable, rex__invoke_fn invoke, void *ctx);

/* The serve loop on fd until EOF: 0, or -1 with errno and rex_last_error() on a broken link. */
int rex__serve_fd(int fd, rex__define_fn define);

/* Tells the caller of an asynchronous call (rjump) that the frame was accepted; idempotent. */
void rex__call_ready(struct rex__call *call);

/* Sets call->err and call->msg (printf-style). */
void rex__call_fail(struct rex__call *call, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif /* REX_CALLCTL_H */
