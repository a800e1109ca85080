/*
 * rex.h: the public C interface of librex (REX: Remote EXecution Services).
 *
 * Two layers:
 *   - the user API of the 2009 design: rload() and rex_hosts() talk to the
 *     local rexd over its Unix socket (rfork(), rcall() and friends arrive in
 *     later versions);
 *   - the wire protocol v1 codec (docs/PROTOCOL.md), which rexd's C helpers
 *     and the tests use: rex_frame_decode() and rex_frame_encode() with
 *     attribute builders.
 *
 * Errors: functions of the codec return 0 or a negative code from one table
 * (REX_E*, REX_EPROTO_*), described by rex_strerror(). The user API follows
 * the seed's promise instead: it returns -1 (or -1.0) and sets errno.
 *
 * Link with: -I native/include -L native/build/lib -lrex
 */
#ifndef REX_H
#define REX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* librex is built with -fvisibility=hidden: only what is marked here is exported. */
#if defined(__GNUC__)
#define REX_EXTERN __attribute__((visibility("default")))
#else
#define REX_EXTERN
#endif

/* ------------------------------------------------------------------ protocol */

/** Protocol versions this library speaks (docs/PROTOCOL.md, section 4.1). */
#define REX_PROTO_VERSION 1
#define REX_PROTO_VERSION_MIN 1
#define REX_PROTO_VERSION_MAX 1

/** The 8 bytes the initiator sends before its first frame (section 1). */
#define REX_PROTO_PREFACE "REX!\r\n\x1a\n"
#define REX_PROTO_PREFACE_SIZE 8

/** Fixed sizes: frame header and attribute header (sections 2 and 2.1). */
#define REX_PROTO_HEADER_SIZE 12
#define REX_PROTO_ATTR_HEADER_SIZE 7

/** Limits of version 1 (section 2); LIMITS in src/protocol/constants.ts. */
#define REX_PROTO_MAX_PAYLOAD 1048576u
#define REX_PROTO_MIN_PAYLOAD 16384u
#define REX_PROTO_MAX_ATTRS 4096u
#define REX_PROTO_MAX_DEPTH 8u
#define REX_PROTO_MAX_STREAMS 1024u
#define REX_PROTO_MAX_NONCE 64u
#define REX_PROTO_MAX_PING_DATA 65536u

/** Frame flags: END marks the last frame of a request or response. */
#define REX_FLAG_END 0x0001u
#define REX_FLAGS_KNOWN REX_FLAG_END

/** Tag bit: the receiver must refuse the request if it does not know the tag. */
#define REX_TAG_CRITICAL 0x8000u

/** Message types (section 4). */
enum rex_msg_type {
  REX_MSG_HELLO = 0x0001,
  REX_MSG_ERROR = 0x0002,
  REX_MSG_GOODBYE = 0x0003,
  REX_MSG_PING = 0x0010,
  REX_MSG_PONG = 0x0011,
  REX_MSG_LOAD_GET = 0x0020,
  REX_MSG_LOAD = 0x0021,
  REX_MSG_HOSTS_GET = 0x0022,
  REX_MSG_HOSTS = 0x0023
};

/** Attribute value kinds (section 2.1). */
enum rex_kind {
  REX_KIND_UINT = 1,
  REX_KIND_INT = 2,
  REX_KIND_F64 = 3,
  REX_KIND_STRING = 4,
  REX_KIND_BYTES = 5,
  REX_KIND_LIST = 6,
  REX_KIND_BOOL = 7
};

/** HELLO roles (section 4.1). */
enum rex_role { REX_ROLE_CLIENT = 1, REX_ROLE_PEER = 2, REX_ROLE_DAEMON = 3 };

/* Attribute tags this library reads and writes (section 4). */
enum { REX_HELLO_VERSION_MIN = 1, REX_HELLO_VERSION_MAX = 2, REX_HELLO_VERSION = 3, REX_HELLO_ROLE = 4,
       REX_HELLO_HOST = 5, REX_HELLO_MAX_PAYLOAD = 6, REX_HELLO_SOFTWARE = 7 };
enum { REX_ERROR_CODE = 1, REX_ERROR_MESSAGE = 2, REX_ERROR_FATAL = 3, REX_ERROR_REF_TYPE = 4, REX_ERROR_HOST = 5 };
enum { REX_GOODBYE_REASON = 1 };
enum { REX_LOAD_HOST = 1, REX_LOAD_LOAD = 2, REX_LOAD_LOADAVG = 3, REX_LOAD_CORES = 4, REX_LOAD_JOBS = 5,
       REX_LOAD_TIME = 6, REX_LOAD_MEM_AVAILABLE = 7 };
enum { REX_HOSTS_HOST = 1 };
enum { REX_HOST_NAME = 1, REX_HOST_ADDRESS = 2, REX_HOST_PORT = 3, REX_HOST_LOAD = 4, REX_HOST_CORES = 5,
       REX_HOST_JOBS = 6, REX_HOST_REACHABLE = 7, REX_HOST_AGE_MS = 8, REX_HOST_SELF = 9, REX_HOST_ERROR = 10,
       REX_HOST_LOADAVG1 = 11 };

/* -------------------------------------------------------------------- errors */

/*
 * One table of negative codes. REX_EPROTO_* are the ERROR frame codes of
 * docs/PROTOCOL.md section 4.2, negated: the wire code of err is -err
 * (REX_EPROTO_WIRE(err)). Codes of the library itself start at -100.
 */
#define REX_EPROTO_MALFORMED (-1)    /* the frame or an attribute breaks section 2 */
#define REX_EPROTO_VERSION (-2)      /* no common protocol version */
#define REX_EPROTO_TOO_BIG (-3)      /* payload length above the receiver's limit */
#define REX_EPROTO_UNSUPPORTED (-4)  /* unknown message type or CRITICAL attribute */
#define REX_EPROTO_UNEXPECTED (-5)   /* a frame at the wrong time */
#define REX_EPROTO_NO_HOST (-6)      /* a routed request names an unknown host */
#define REX_EPROTO_UNREACHABLE (-7)  /* the named host cannot be reached now */
#define REX_EPROTO_TIMEOUT (-8)      /* the receiver gave up waiting for a host */
#define REX_EPROTO_BUSY (-9)         /* too many open streams */
#define REX_EPROTO_INTERNAL (-10)    /* a bug in the receiver */
#define REX_EPROTO_DENIED (-11)      /* not authorized */
#define REX_EPROTO_BAD_REQUEST (-12) /* attributes missing or out of range */
#define REX_EPROTO_LAST REX_EPROTO_BAD_REQUEST

#define REX_EAGAIN (-100)  /* incomplete frame: feed more bytes and call again */
#define REX_ENOSPC (-101)  /* the caller's buffer or attribute arena is too small */
#define REX_EINVAL (-102)  /* invalid argument (a caller bug) */
#define REX_ENOMEM (-103)  /* out of memory */

/** True for the protocol codes; REX_EPROTO_WIRE gives the number sent in ERROR frames. */
#define REX_IS_EPROTO(err) ((err) <= REX_EPROTO_MALFORMED && (err) >= REX_EPROTO_LAST)
#define REX_EPROTO_WIRE(err) (-(err))

/**
 * Describes an error: a negative code from the table above, or a positive errno
 * value (so rex_strerror(errno) works after rload() fails). Never NULL.
 */
REX_EXTERN const char *rex_strerror(int err);

/** Short name of a code ("MALFORMED", "EAGAIN", "ENOENT"), for logs and tests; never NULL. */
REX_EXTERN const char *rex_err_name(int err);

/**
 * Detail of the last failure of rload() or rex_hosts() in this thread, e.g.
 * "connect /home/u/.rex/run/rexd.sock: No such file or directory" or
 * "rexd answered ERROR DENIED: ..."; "" when there was none.
 */
REX_EXTERN const char *rex_last_error(void);

/* --------------------------------------------------------------------- codec */

/** "No such attribute" for the index fields of struct rex_attr. */
#define REX_ATTR_NONE UINT32_MAX

/**
 * One attribute of a frame. A frame's attributes are one flat array in
 * document order (a list is followed by its children), so a frame needs no
 * allocation per attribute: navigate with parent, next and the list's count
 * (its first child, if any, is the element right after it).
 */
struct rex_attr {
  uint16_t tag;        /* including the CRITICAL bit */
  uint8_t kind;        /* enum rex_kind */
  uint8_t depth;       /* 1 for attributes of the payload itself */
  uint32_t len;        /* value length in bytes on the wire */
  uint32_t parent;     /* index of the enclosing list, or REX_ATTR_NONE */
  uint32_t next;       /* index of the next sibling, or REX_ATTR_NONE */
  uint32_t count;      /* list: number of direct children */
  const uint8_t *data; /* string/bytes/list: the value bytes (not copied; a string is not NUL-terminated) */
  union {
    uint64_t u; /* uint */
    int64_t i;  /* int */
    double f;   /* f64 */
    int b;      /* bool: 0 or 1 */
  } v;
};

/**
 * A frame: the header fields and its attributes in a caller-provided arena
 * (rex_frame_init). Decoding fills it; the builders fill it for encoding.
 */
struct rex_frame {
  uint32_t length; /* payload length (decode: from the header; encode: computed) */
  uint16_t type;
  uint16_t flags;
  uint32_t stream;
  const uint8_t *payload; /* decode: the payload inside the input buffer */
  struct rex_attr *attrs; /* the arena */
  size_t nattrs;          /* attributes in use, all levels */
  size_t cap;             /* size of the arena */
  /* After a failed decode: where (payload offset) and why, for the ERROR message. */
  size_t err_offset;
  char err[160];
  /* Builder state: the first error (sticky, returned by rex_frame_encode), the open
     lists, and the last attribute added at each open level (to link siblings). */
  int build_err;
  unsigned nopen;
  uint32_t open[REX_PROTO_MAX_DEPTH];
  uint32_t last[REX_PROTO_MAX_DEPTH];
};

/** Attributes a payload of len bytes can hold at most: a safe arena size for it. */
#define REX_ATTRS_FOR_PAYLOAD(len)                                      \
  ((size_t)(len) / REX_PROTO_ATTR_HEADER_SIZE < REX_PROTO_MAX_ATTRS      \
       ? (size_t)(len) / REX_PROTO_ATTR_HEADER_SIZE                      \
       : (size_t)REX_PROTO_MAX_ATTRS)

/** Prepares a frame to use arena[0..cap) for its attributes; sets everything else to zero. */
REX_EXTERN void rex_frame_init(struct rex_frame *f, struct rex_attr *arena, size_t cap);

/**
 * Decodes the first frame of buf[0..len). max_payload is the receiver's limit
 * (0 means REX_PROTO_MAX_PAYLOAD); the header's length is checked against it
 * before anything else, so an oversized frame is refused from its header alone.
 * out must have been set up with rex_frame_init; an arena of
 * REX_ATTRS_FOR_PAYLOAD(max_payload) entries (or REX_PROTO_MAX_ATTRS) never
 * runs out. Returns 0 and sets *consumed to the frame's size, REX_EAGAIN when
 * more bytes are needed, REX_EPROTO_TOO_BIG or REX_EPROTO_MALFORMED (out->err
 * and out->err_offset say why and where; the connection must be closed), or
 * REX_ENOSPC when the arena is too small. String, bytes and list attributes
 * point into buf.
 */
REX_EXTERN int rex_frame_decode(const uint8_t *buf, size_t len, size_t max_payload, struct rex_frame *out,
                                size_t *consumed);

/**
 * Starts building a frame: clears the attributes, sets the header fields.
 * Then add attributes with rex_attr_*(), and serialize with rex_frame_encode().
 * Builders never fail loudly: the first error is kept in f->build_err and
 * returned by rex_frame_encode.
 */
REX_EXTERN void rex_frame_start(struct rex_frame *f, uint16_t type, uint16_t flags, uint32_t stream);
/** Adds a uint attribute in the fewest bytes (1, 2, 4 or 8) that hold v. */
REX_EXTERN int rex_attr_uint(struct rex_frame *f, uint16_t tag, uint64_t v);
/** Adds an int attribute in the fewest bytes that hold v. */
REX_EXTERN int rex_attr_int(struct rex_frame *f, uint16_t tag, int64_t v);
REX_EXTERN int rex_attr_f64(struct rex_frame *f, uint16_t tag, double v);
REX_EXTERN int rex_attr_bool(struct rex_frame *f, uint16_t tag, int v);
/** Adds a string of n bytes; it must be UTF-8 without NUL (else REX_EINVAL). s is not copied. */
REX_EXTERN int rex_attr_stringn(struct rex_frame *f, uint16_t tag, const char *s, size_t n);
/** Adds a NUL-terminated string (see rex_attr_stringn). */
REX_EXTERN int rex_attr_string(struct rex_frame *f, uint16_t tag, const char *s);
/** Adds opaque bytes; p is not copied. */
REX_EXTERN int rex_attr_bytes(struct rex_frame *f, uint16_t tag, const void *p, size_t n);
/** Opens a list: attributes added until rex_attr_list_end() go inside it. */
REX_EXTERN int rex_attr_list_begin(struct rex_frame *f, uint16_t tag);
REX_EXTERN int rex_attr_list_end(struct rex_frame *f);

/**
 * Serializes f (built, or decoded) into buf[0..cap). Integers keep the width in
 * their attribute's len, so decoding and re-encoding gives the same bytes.
 * Returns 0 and sets *len, REX_ENOSPC if cap is too small, REX_EINVAL for an
 * inconsistent frame (open lists, bad widths, bad strings, list lengths that
 * do not add up), REX_EPROTO_TOO_BIG above REX_PROTO_MAX_PAYLOAD, or the first
 * builder error.
 */
REX_EXTERN int rex_frame_encode(const struct rex_frame *f, uint8_t *buf, size_t cap, size_t *len);

/** First child of list parent (REX_ATTR_NONE for the payload level) with this tag, or NULL. */
REX_EXTERN const struct rex_attr *rex_attr_find(const struct rex_frame *f, uint32_t parent, uint16_t tag);
/** Index of the first child of parent (REX_ATTR_NONE: the payload level), or REX_ATTR_NONE. */
REX_EXTERN uint32_t rex_attr_first(const struct rex_frame *f, uint32_t parent);

/** True when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
REX_EXTERN int rex_utf8_valid(const uint8_t *s, size_t n);

/* ------------------------------------------------------------- user API */

/**
 * This host's REX load (docs/PROTOCOL.md 4.5): 0 idle, 1 every core busy.
 * Asks the local rexd. On failure returns -1.0 and sets errno: ENOENT or
 * ECONNREFUSED when no rexd runs, EPROTO on protocol errors, ETIMEDOUT.
 */
REX_EXTERN double rload(void);

/** One member of the cluster, as the local rexd sees it (HOSTS, section 4.6). */
struct rex_host {
  char name[256];
  char address[256];
  unsigned port;
  double load;     /* last known rload; -1.0 when never reached */
  double loadavg1; /* 1-minute load average; -1.0 when unknown */
  unsigned cores, jobs;
  int reachable, self;
  long long age_ms; /* -1 when never reached */
  char error[256];  /* why it is unreachable; "" when it is not */
};

/**
 * Fills hosts[0..max) with the cluster view of the local rexd and returns the
 * number of hosts in the cluster, which may exceed max (only max are filled;
 * hosts may be NULL when max is 0). On failure returns -1 and sets errno as
 * rload() does.
 */
REX_EXTERN int rex_hosts(struct rex_host *hosts, size_t max);

/* ===================================================== process images (rfork) */
/*
 * The process-migration core under rfork(): librex writes the calling process
 * to an image (docs/IMAGE.md) and the freestanding restorer `rex-restore`
 * rebuilds it in a fresh process (docs/RFORK.md). Linux x86-64 only.
 */

/** rex_dump_self flag: leave shared anonymous memory and SysV shm out of the image instead of failing. */
#define REX_DUMP_SKIP_SHARED 0x1u

/** What rex_dump_self reports. The first group is set when it returns 0, the second when it returns 1. */
struct rex_dump_info {
  uint64_t image_bytes;   /* bytes written to the image descriptor */
  uint64_t data_pages;    /* pages carried in the image */
  uint64_t private_pages; /* of those, anonymous pages present or file pages copied on write */
  uint32_t nregions, nfds;
  int origin_pid;              /* restored copy: the pid that called rex_dump_self */
  int pid;                     /* restored copy: its own pid */
  uint64_t restore_ns;         /* restored copy: restorer's first instruction to the jump back */
  uint64_t restore_start_ns;   /* restored copy: CLOCK_MONOTONIC when the restorer started */
};

/**
 * Saves the calling process to an image written on fd, like setjmp: returns 0
 * in the caller once the image is written, and 1 in the copy that rex-restore
 * builds from it, which continues from this call with the same memory,
 * registers (including FPU/SSE/AVX), TLS, signal state, mm bounds, cwd, umask
 * and rlimits. stdio is flushed first. Single-threaded processes only. info
 * may be NULL. On failure returns -1, sets errno and rex_last_error():
 * EBUSY with the thread count when more than one thread runs, EOPNOTSUPP
 * naming the mapping for shared anonymous memory or SysV shm (unless
 * REX_DUMP_SKIP_SHARED), or the errno of the failing system call.
 */
REX_EXTERN int rex_dump_self(int fd, unsigned flags, struct rex_dump_info *info);

/* ================================================= remote calls (rcall, rjump) */
/*
 * Remote entry points (docs/CALLS.md): a call controller serves the functions
 * of one program or shared library for HOST.USER.PROGRAM; callers send an
 * input frame (docs/FRAMES.md) to HOST.USER.PROGRAM.FUNCTION and receive an
 * output frame. Messages 0x0070-0x007f of docs/PROTOCOL.md section 4.7.
 */

/** Message types of remote calls (docs/PROTOCOL.md section 4.7). DEFINE/DEFINED only travel from rexd to a controller. */
enum rex_call_msg_type {
  REX_MSG_CALL = 0x0070,
  REX_MSG_RESULT = 0x0071,
  REX_MSG_ENTRIES_GET = 0x0072,
  REX_MSG_ENTRIES = 0x0073,
  REX_MSG_CANCEL = 0x0074,
  REX_MSG_CANCELLED = 0x0075,
  REX_MSG_DEFINE = 0x0076,
  REX_MSG_DEFINED = 0x0077
};

/* Attribute tags of the call messages. */
enum { REX_CALL_TARGET = 1, REX_CALL_INPUT = 2, REX_CALL_DEADLINE_MS = 3, REX_CALL_ASYNC = 4, REX_CALL_OUT_MAX = 5 };
enum { REX_RESULT_OUTPUT = 1, REX_RESULT_HOST = 2, REX_RESULT_ACCEPTED = 3 };
/* ENTRIES_GET pages (docs/PROTOCOL.md 4.7): one entry by NAME, or names AFTER a cursor, at most LIMIT; ENTRIES NEXT = the cursor of the next page. */
enum { REX_ENTRIES_GET_TARGET = 1, REX_ENTRIES_GET_NAME = 2, REX_ENTRIES_GET_MATCH = 3, REX_ENTRIES_GET_AFTER = 4, REX_ENTRIES_GET_LIMIT = 5 };
enum { REX_ENTRIES_ENTRY = 1, REX_ENTRIES_PROGRAM = 2, REX_ENTRIES_HOST = 3, REX_ENTRIES_NEXT = 4 };
enum { REX_ENTRY_NAME = 1, REX_ENTRY_INPUT_SIZE = 2, REX_ENTRY_OUTPUT_SIZE = 3, REX_ENTRY_CALLABLE = 4,
       REX_ENTRY_REFUSAL = 5, REX_ENTRY_SIGNATURE = 6, REX_ENTRY_DEFINITION = 7, REX_ENTRY_VARIABLE = 8 };
enum { REX_CANCEL_CALL = 1 };
enum { REX_CANCELLED_FOUND = 1 };
enum { REX_DEFINE_NAME = 1, REX_DEFINE_INPUT_SIZE = 2, REX_DEFINE_OUTPUT_SIZE = 3, REX_DEFINE_RETURNS = 4,
       REX_DEFINE_PARAM = 5, REX_DEFINE_SYMBOL = 6 };
enum { REX_PARAM_KIND = 1, REX_PARAM_FFI = 2, REX_PARAM_OFFSET = 3, REX_PARAM_SIZE = 4, REX_PARAM_DIRECTION = 5,
       REX_PARAM_ELEM_SIZE = 6, REX_PARAM_ALIGN = 7, REX_PARAM_STRING = 8, REX_PARAM_COUNT_KIND = 9,
       REX_PARAM_COUNT = 10, REX_PARAM_OUT_OFFSET = 11 };
enum { REX_PARAM_VALUE = 1, REX_PARAM_BUFFER = 2 };
enum { REX_DIR_IN = 1, REX_DIR_OUT = 2, REX_DIR_INOUT = 3 };
enum { REX_COUNT_ONE = 1, REX_COUNT_VALUE = 2, REX_COUNT_PARAM = 3, REX_COUNT_NUL = 4 };

/* ERROR codes of remote calls (docs/PROTOCOL.md 4.2), negated like REX_EPROTO_*. */
#define REX_EPROTO_CRASHED (-13)   /* the function killed its controller (signal or exit) */
#define REX_EPROTO_NO_ENTRY (-14)  /* no such program or function */
#define REX_EPROTO_CANCELLED (-15) /* the caller cancelled the call */
/* ERROR code of EXEC with an rfork image (docs/PROTOCOL.md 4.2): rfork() gives ENOEXEC. */
#define REX_EPROTO_INCOMPATIBLE (-16) /* the host cannot run this image (CPU features or state it lacks) */

/** Largest input or output frame a call carries (it travels in one protocol frame). */
#define REX_CALL_MAX_FRAME (REX_PROTO_MAX_PAYLOAD - 1024u)

/** rflags: do not wait for the remote function (rjump); return once the controller accepted the frame. */
#define REX_RFLAG_ASYNC 0x1u

/**
 * Calls FUNCTION of HOST.USER.PROGRAM (target: "HOST.USER.PROGRAM.FUNCTION",
 * "HOST.PROGRAM.FUNCTION" or "PROGRAM.FUNCTION"; HOST "*" or absent lets rexd
 * choose) through the local rexd: sends in[0..in_size) as the input frame and
 * waits for the output frame, copied into out[0..out_size). Returns the output
 * frame's length (at most out_size). The deadline is $REX_CALL_TIMEOUT_MS
 * (default 30000). On failure returns -1 and sets errno (rex_last_error() has
 * the detail): EINVAL (the frame does not match the entry point's definition;
 * nothing ran), ENOENT (no such program or function, or no rexd), EACCES (not
 * authorized), ETIMEDOUT (deadline passed; the controller was killed),
 * EOWNERDEAD (the function crashed its controller: the detail names the
 * function and the signal), ECANCELED, EMSGSIZE (the output frame is larger
 * than out_size), EPROTO (protocol error), ECONNREFUSED.
 */
REX_EXTERN long rcall(const char *target, const void *in, size_t in_size, void *out, size_t out_size);

/**
 * Sends in[0..in_size) to target and enters the remote function without
 * waiting for its output. With REX_RFLAG_ASYNC in rflags it returns 0 as soon
 * as the controller has checked the frame and is about to enter the code
 * (which may never return); without it, once the function has returned.
 * Errors as rcall().
 */
REX_EXTERN int rjump(const char *target, const void *in, size_t in_size, unsigned rflags);

/** A function a program serves itself: reads in_size bytes at in, writes out_size bytes at out. */
typedef void (*rex_entry_fn)(const void *in, void *out);

/**
 * Registers fn as remote entry point name of this program, with exact frame
 * sizes (frames of any other size are refused before fn runs). Call before
 * rex_serve(). Returns 0, or -1 with errno EINVAL (bad name or size) or ENOMEM.
 */
REX_EXTERN int rex_register_entry(const char *name, rex_entry_fn fn, size_t in_size, size_t out_size);

/**
 * Serves the registered entry points to rexd until rexd closes the link;
 * returns 0 then. rexd starts the program as a call controller with the link
 * on file descriptor $REX_CALL_FD; without it returns -1 with errno EBADF.
 * Calls run one at a time, on the calling thread. Up to 4096 entry points may
 * be registered: rexd reads the list page by page (docs/PROTOCOL.md 4.7).
 */
REX_EXTERN int rex_serve(void);

/* ============================================ remote execution (rexecve) */
/*
 * Running a program on another host as if it were a local child
 * (docs/EXEC.md, docs/man/rexecve.3.md). Messages 0x0040-0x0045 and the
 * per-stream credit WINDOW_UPDATE of docs/PROTOCOL.md section 4.9.
 */

/** Message types of remote execution (docs/PROTOCOL.md 3.1 and 4.9). */
enum rex_exec_msg_type {
  REX_MSG_WINDOW_UPDATE = 0x0004,
  REX_MSG_EXEC = 0x0040,
  REX_MSG_STARTED = 0x0041,
  REX_MSG_DATA = 0x0042,
  REX_MSG_SIGNAL = 0x0043,
  REX_MSG_WINSIZE = 0x0044,
  REX_MSG_EXIT = 0x0045,
  REX_MSG_FETCH = 0x0046,    /* executor to origin rexd (transfer) */
  REX_MSG_FILE = 0x0047,     /* origin rexd to executor */
  REX_MSG_PROGRESS = 0x0048, /* towards the client before STARTED: transfer progress (clients may ignore it) */
  REX_MSG_RFORK = 0x0060     /* rfork: restore a process image; its stream is EXEC's (docs/PROTOCOL.md 4.10) */
};

/* Attribute tags of the remote execution messages. */
enum { REX_WINDOW_UPDATE_INCREMENT = 1, REX_WINDOW_UPDATE_FD = 2 };
enum { REX_EXEC_PATH = 1, REX_EXEC_ARGV = 2, REX_EXEC_ENV = 3, REX_EXEC_CWD = 4, REX_EXEC_HOST = 5, REX_EXEC_PTY = 6,
       REX_EXEC_ROWS = 7, REX_EXEC_COLS = 8, REX_EXEC_WINDOW = 9, REX_EXEC_PROGRAM = 10, REX_EXEC_SHA256 = 11,
       REX_EXEC_LIBS = 14 };
/* RFORK's attributes keep the tags EXEC has for the same fields. */
enum { REX_RFORK_PATH = 1, REX_RFORK_CWD = 4, REX_RFORK_HOST = 5, REX_RFORK_WINDOW = 9, REX_RFORK_PROGRAM = 10, REX_RFORK_SHA256 = 11,
       REX_RFORK_FDS = 13, REX_RFORK_FILES = 14, REX_RFORK_IMAGE_DATA = 15, REX_RFORK_IMAGE_SIZE = 16 };
enum { REX_STARTED_HOST = 1, REX_STARTED_PID = 2, REX_STARTED_WINDOW = 3, REX_STARTED_CWD = 4, REX_STARTED_FD_WINDOW = 5 };
enum { REX_DATA_FD = 1, REX_DATA_DATA = 2, REX_DATA_EOF = 3 };
enum { REX_SIGNAL_SIGNAL = 1 };
enum { REX_WINSIZE_ROWS = 1, REX_WINSIZE_COLS = 2 };
enum { REX_EXIT_CODE = 1, REX_EXIT_SIGNAL = 2, REX_EXIT_CORE = 3, REX_EXIT_HOST = 4 };

/**
 * execve() on the cluster: runs path with argv and envp on the least-loaded
 * host (or on $REX_HOST). On success it does not return: the calling process
 * becomes the program's local stub, relaying fds 0-2 and the signals INT,
 * TERM, HUP, QUIT, USR1, USR2, WINCH, TSTP, CONT and ALRM, and it ends with
 * the remote exit code or dies of the remote program's signal, so the parent's
 * wait() sees what a local child would give. On failure before anything
 * started it returns -1 with errno set (ENOENT: no such program there;
 * EACCES: not executable or not authorized; EHOSTUNREACH: no host could run
 * it or no rexd; E2BIG; EINVAL) and the process is as it was;
 * rex_last_error() has the detail. If the host is lost while the program
 * runs, the stub prints one line on stderr and exits with status 255.
 */
REX_EXTERN int rexecve(const char *path, char *const argv[], char *const envp[]);

/** rexecve() on host (NULL: $REX_HOST, else placement); rflags must be 0 (reserved). */
REX_EXTERN int rexecve_on(const char *host, const char *path, char *const argv[], char *const envp[], unsigned rflags);

/* ============================================ rfork */
/*
 * fork() onto the cluster (docs/RFORK.md, docs/man/rfork.3.md): the child
 * continues on the least-loaded host; the parent's child is a local stub that
 * relays the child's descriptors, signals and exit status.
 */

/** rfork_on() flag: when the process cannot be moved (shared memory, threads), fork locally instead of failing. */
#define REX_RFORK_LOCAL 0x1u

/**
 * fork(2) whose child continues on the least-loaded host of the cluster (or
 * on $REX_HOST). Returns the stub's pid in the parent, 0 in the child (which
 * runs on the executor), -1 with errno in the parent when nothing was moved:
 * EOPNOTSUPP (shared memory the child cannot carry; rex_last_error() names the
 * mapping), EHOSTUNREACH (no host or no rexd), EACCES (not authorized),
 * EINVAL/ENOEXEC (the image was refused where it was sent), or the errno of a
 * failing system call. stdio buffers are flushed first, so nothing buffered
 * is written twice.
 */
REX_EXTERN pid_t rfork(void);

/** rfork() onto host (NULL: $REX_HOST, else placement), with rflags 0 or REX_RFORK_LOCAL. */
REX_EXTERN pid_t rfork_on(const char *host, unsigned rflags);

/** In an rfork()ed child: the pid of its stub on the origin (what the parent's rfork() returned); elsewhere getpid(). */
REX_EXTERN pid_t rgetpid(void);

/** In an rfork()ed child: the pid of the parent that called rfork(), on the origin; elsewhere getppid(). */
REX_EXTERN pid_t rgetppid(void);

/** In an rfork()ed child: the origin host's name (its gethostname()); elsewhere this host's. Never NULL. */
REX_EXTERN const char *rgethostname(void);

/** 1 in a process that rfork() moved to another host (or a descendant copy of it), else 0. */
REX_EXTERN int rforked(void);

#ifdef __cplusplus
}
#endif

#endif /* REX_H */
