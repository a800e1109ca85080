/*
 * dump.h: librex's process dumper (rex_dump_self in rex.h), internal parts.
 *
 * rex_dump_self itself is written in assembly (dump.c, top of file): it saves
 * every register and the XSAVE area before any C code can clobber them, then
 * calls rex__dump_c. The restorer later jumps to rex__resume_entry with the
 * registers of that moment; the resume path calls rex__after_restore and
 * returns 1 to rex_dump_self's caller.
 */
#ifndef REX_DUMP_H
#define REX_DUMP_H

#include "image_util.h"
#include "rex.h"

/* Room on the stack for the XSAVE area; CPUID 0xD.0 EBX above this is refused (AMX needs ~11 KB). */
#define REX__XSAVE_BUF 12288

/* Called by the assembly entry with the registers and the XSAVE area it saved. 0, or -1 with errno. */
int rex__dump_c(int fd, unsigned flags, struct rex_dump_info *info, struct rex_img_regs *regs, uint8_t *xsave);

/* Called in the restored process, on the resume path, before rex_dump_self returns 1. */
void rex__after_restore(struct rex_dump_info *info);

#endif /* REX_DUMP_H */
