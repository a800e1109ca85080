/*
 * rex.h: the public C interface of librex (REX: Remote EXecution Services).
 *
 * The user API of the 2009 design, documented in docs/man (rex(3) and the
 * pages it names): rload() and rex_hosts() ask the local rexd, rexecve() and
 * rfork() move work to another host, rcall() and rjump() call remote entry
 * points, rex_serve() serves them, rex_dump_self() writes a process image.
 * Functions return -1 (or -1.0) and set errno, the seed's promise;
 * rex_last_error() has the detail.
 *
 * The wire-protocol codec and its constants are librex's own
 * (native/src/wire.h), not part of this interface.
 *
 * Link with: $(pkg-config --cflags --libs rex), or in a checkout
 * -I native/include -L native/build/lib -lrex
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

/* The package's version (package.json "version"); `make -C native` stops when the two differ
 * (its version-check target), so a C program can test what it was built against. librex's
 * soname follows REX_VERSION_MAJOR (librex.so.0, docs/INSTALL.md). */
#define REX_VERSION "0.1.0"
#define REX_VERSION_MAJOR 0
#define REX_VERSION_MINOR 1
#define REX_VERSION_PATCH 0

/* -------------------------------------------------------------------- errors */

/**
 * Describes an error: a positive errno value (so rex_strerror(errno) works
 * after rload() fails), or one of librex's internal negative codes. Never NULL.
 */
REX_EXTERN const char *rex_strerror(int err);

/** Short name of an errno value or internal code ("ENOENT", "MALFORMED"), for logs and tests; never NULL. */
REX_EXTERN const char *rex_err_name(int err);

/**
 * Detail of the last failure of rload() or rex_hosts() in this thread, e.g.
 * "connect /home/u/.rex/run/rexd.sock: No such file or directory" or
 * "rexd answered ERROR DENIED: ..."; "" when there was none.
 */
REX_EXTERN const char *rex_last_error(void);

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

/** Largest input or output frame a call carries (it travels in one protocol frame). */
#define REX_CALL_MAX_FRAME 1047552u /* 1 MiB (the protocol's largest frame payload) less 1024 bytes for the CALL frame around it */

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

/**
 * execve() on the cluster: runs path with argv and envp on the least-loaded
 * host (or on $REX_HOST). On success it does not return: the calling process
 * becomes the program's local stub, relaying fds 0-2 and the signals INT,
 * TERM, HUP, QUIT, USR1, USR2, WINCH, TSTP, CONT and ALRM (docs/PROTOCOL.md
 * 4.9), and it ends with
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
