/*
 * fileproxy.h: rfork's relayed files and directories (docs/RFORK.md section
 * 4.1). A descriptor of the origin that is a regular file or a directory is
 * not relayed as a byte stream: the moved child's system calls on it are
 * caught by a seccomp filter (SECCOMP_RET_USER_NOTIF), a supervisor process
 * forwards each one as a request on the file channel (one more relayed
 * descriptor, riding the EXEC stream), and the origin stub performs it on the
 * real descriptor and answers. This header is the wire format of that channel
 * and its two parsers; both ends are x86-64 Linux, so integers are
 * little-endian and stat buffers are the kernel's own layouts.
 */
#ifndef REX_FILEPROXY_H
#define REX_FILEPROXY_H

#include <stddef.h>
#include <stdint.h>

#include "image.h" /* the fd kinds and which of them are served here: rex_img_fd_kind_of(), rex_img_fd_served() */

#define REX_FP_REQ_MAGIC 0x51465852u  /* "RXFQ" */
#define REX_FP_RESP_MAGIC 0x52465852u /* "RXFR" */
#define REX_FP_REQ_SIZE 40u
#define REX_FP_RESP_SIZE 24u
#define REX_FP_MAX_IO 65536u   /* most bytes one request moves */
#define REX_FP_MAX_FILES 256u  /* most relayed files and directories per rfork (the filter's size) */
#define REX_FP_STAT_SIZE 144u  /* struct stat, x86-64 */
#define REX_FP_STATX_SIZE 256u /* struct statx */
#define REX_FP_STATFS_SIZE 120u /* struct statfs, x86-64 */

enum rex_fp_op {
  REX_FP_READ = 1,       /* b = count; answer: the bytes */
  REX_FP_WRITE = 2,      /* payload = the bytes; answer: count written */
  REX_FP_PREAD = 3,      /* a = offset, b = count */
  REX_FP_PWRITE = 4,     /* a = offset, payload */
  REX_FP_LSEEK = 5,      /* a = offset, b = whence (0-4) */
  REX_FP_FSTAT = 6,      /* answer: struct stat */
  REX_FP_STATX = 7,      /* aux = mask; answer: struct statx */
  REX_FP_FTRUNCATE = 8,  /* a = length */
  REX_FP_FSYNC = 9,
  REX_FP_FDATASYNC = 10,
  REX_FP_GETDENTS64 = 11, /* b = count; answer: linux_dirent64 records */
  REX_FP_GETFL = 12,
  REX_FP_SETFL = 13,     /* aux = flags */
  REX_FP_FSTATFS = 14,   /* answer: struct statfs */
  REX_FP_FALLOCATE = 15, /* aux = mode, a = offset, b = length */
  REX_FP_STREAM = 16,    /* from the child itself, never answered: no filter here, relay the files as byte streams */
  REX_FP_OP_MAX = 16
};

/*
 * Request: 40 bytes, then `len` payload bytes (WRITE and PWRITE only).
 *   0 u32 magic "RXFQ"   4 u16 op   6 u16 zero   8 i32 fd   12 u32 len
 *  16 u32 aux           20 u32 zero 24 i64 a    32 i64 b
 */
struct rex_fp_req {
  uint16_t op;
  int32_t fd;
  uint32_t len, aux;
  int64_t a, b;
  const uint8_t *data; /* len bytes, inside the parsed buffer */
};

/*
 * Answer: 24 bytes, then `len` bytes of data.
 *   0 u32 magic "RXFR"   4 u16 op (the request's)   6 u16 zero   8 u32 len
 *  12 u32 zero          16 i64 result (>= 0, or -errno)
 */
struct rex_fp_resp {
  uint16_t op;
  uint32_t len;
  int64_t result;
  const uint8_t *data;
};

/*
 * Parse one request from buf[0..n). Returns the bytes it took (> 0), 0 when
 * more bytes are needed, or -1 for a malformed request, with a message naming
 * the field in why[0..whylen).
 */
long rex__fp_parse_req(const uint8_t *buf, size_t n, struct rex_fp_req *rq, char *why, size_t whylen);

/* Parse the answer to a request of operation `op` that asked for at most `want` data bytes; as above. */
long rex__fp_parse_resp(const uint8_t *buf, size_t n, uint16_t op, uint32_t want, struct rex_fp_resp *rs, char *why,
                        size_t whylen);

/* Encoders (out must hold REX_FP_REQ_SIZE / REX_FP_RESP_SIZE bytes; the payload follows separately). */
void rex__fp_put_req(uint8_t *out, const struct rex_fp_req *rq);
void rex__fp_put_resp(uint8_t *out, const struct rex_fp_resp *rs);

/*
 * The origin stub's side: performs a parsed request on the real descriptor
 * rq->fd when served(ctx, fd) says the origin process had it as a relayed
 * file or directory (else -EBADF). Writes the answer header into hdr and its
 * data into data (REX_FP_MAX_IO bytes); returns the data length.
 */
size_t rex__fp_perform(const struct rex_fp_req *rq, int (*served)(void *ctx, int fd), void *ctx, uint8_t *hdr,
                       uint8_t *data);

/*
 * The moved child's side (rfork.c, after the restore): starts the supervisor
 * and installs the filter for fds[0..n). chan is the file channel's
 * descriptor; the child's copy is closed. 0, or -errno with a message on
 * stderr (the descriptors then stay plain relay sockets).
 */
int rex__fp_start(const int *fds, size_t n, int chan);

/* Tells the stub on the channel to relay the files as byte streams (STREAM) and closes it; returns -e. */
int rex__fp_fall_back(int chan, int e);

#endif /* REX_FILEPROXY_H */
