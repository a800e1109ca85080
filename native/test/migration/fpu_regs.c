/*
 * fpu_regs: all sixteen YMM registers (both halves), MXCSR's rounding mode and
 * the x87 control word hold values at the very instruction that calls
 * rex_dump_self, and must hold them when it returns in the restored copy.
 * A running double-precision computation spans the migration too.
 */
#include "zdtm.h"

#include <math.h>

/* Global, not static: the assembly below names them. */
unsigned char fpu_in[16 * 32] __attribute__((aligned(32)));
unsigned char fpu_out[16 * 32] __attribute__((aligned(32)));
struct rex_dump_info fpu_info;
int fpu_fd;
unsigned fpu_mxcsr_set = 0x1f80 | (3u << 13);   /* all exceptions masked, round toward zero */
unsigned short fpu_fcw_set = 0x037f | (1u << 10); /* round down */
unsigned fpu_mxcsr_got;
unsigned short fpu_fcw_got;

int main(int argc, char **argv) {
  ZDTM_INIT("fpu_regs", argc, argv);
  for (unsigned i = 0; i < sizeof fpu_in; i++) fpu_in[i] = (unsigned char)(i * 13 + 1);
  fpu_fd = zdtm_open_image(argv[1]);

  /* A computation in progress: half the series before, half after. */
  volatile double sum = 0;
  for (int k = 1; k <= 500000; k++) sum += 1.0 / ((double)k * k);

  long ret;
  __asm__ volatile(
      "mov %%rsp, %%rbx\n" /* operands may be rsp-relative: name globals only below */
      "sub $128, %%rsp\n" /* stay clear of a red zone */
      "and $-32, %%rsp\n"
      "sub $16, %%rsp\n"
      "ldmxcsr fpu_mxcsr_set(%%rip)\n"
      "fldcw fpu_fcw_set(%%rip)\n"
      "lea fpu_in(%%rip), %%r12\n"
      "vmovdqa 0(%%r12), %%ymm0\n vmovdqa 32(%%r12), %%ymm1\n vmovdqa 64(%%r12), %%ymm2\n vmovdqa 96(%%r12), %%ymm3\n"
      "vmovdqa 128(%%r12), %%ymm4\n vmovdqa 160(%%r12), %%ymm5\n vmovdqa 192(%%r12), %%ymm6\n vmovdqa 224(%%r12), %%ymm7\n"
      "vmovdqa 256(%%r12), %%ymm8\n vmovdqa 288(%%r12), %%ymm9\n vmovdqa 320(%%r12), %%ymm10\n vmovdqa 352(%%r12), %%ymm11\n"
      "vmovdqa 384(%%r12), %%ymm12\n vmovdqa 416(%%r12), %%ymm13\n vmovdqa 448(%%r12), %%ymm14\n vmovdqa 480(%%r12), %%ymm15\n"
      "mov fpu_fd(%%rip), %%edi\n"
      "xor %%esi, %%esi\n"
      "lea fpu_info(%%rip), %%rdx\n"
      "call rex_dump_self\n"
      "lea fpu_out(%%rip), %%r12\n"
      "vmovdqa %%ymm0, 0(%%r12)\n vmovdqa %%ymm1, 32(%%r12)\n vmovdqa %%ymm2, 64(%%r12)\n vmovdqa %%ymm3, 96(%%r12)\n"
      "vmovdqa %%ymm4, 128(%%r12)\n vmovdqa %%ymm5, 160(%%r12)\n vmovdqa %%ymm6, 192(%%r12)\n vmovdqa %%ymm7, 224(%%r12)\n"
      "vmovdqa %%ymm8, 256(%%r12)\n vmovdqa %%ymm9, 288(%%r12)\n vmovdqa %%ymm10, 320(%%r12)\n vmovdqa %%ymm11, 352(%%r12)\n"
      "vmovdqa %%ymm12, 384(%%r12)\n vmovdqa %%ymm13, 416(%%r12)\n vmovdqa %%ymm14, 448(%%r12)\n vmovdqa %%ymm15, 480(%%r12)\n"
      "stmxcsr fpu_mxcsr_got(%%rip)\n"
      "fnstcw fpu_fcw_got(%%rip)\n"
      "vzeroupper\n"
      "mov %%rbx, %%rsp\n"
      : "=a"(ret)
      :
      : "rbx", "r12", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory", "cc", "xmm0", "xmm1", "xmm2",
        "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  /* Back to the default modes for the C code below. */
  unsigned mx_default = 0x1f80;
  unsigned short fcw_default = 0x037f;
  __asm__ volatile("ldmxcsr %0\n fldcw %1" : : "m"(mx_default), "m"(fcw_default));
  if ((int)ret < 0) {
    printf("DUMPFAIL fpu_regs: %s\n", rex_last_error());
    return 2;
  }
  if ((int)ret == 0) {
    printf("DUMPED fpu_regs %llu %llu\n", (unsigned long long)fpu_info.image_bytes, (unsigned long long)fpu_info.data_pages);
    return 0;
  }
  if ((int)ret != 1) fail("rex_dump_self returned %ld", ret);
  for (unsigned i = 0; i < sizeof fpu_in; i++)
    if (fpu_in[i] != fpu_out[i]) fail("ymm%u byte %u: 0x%02x, expected 0x%02x", i / 32, i % 32, fpu_out[i], fpu_in[i]);
  if (fpu_mxcsr_got != fpu_mxcsr_set) fail("mxcsr 0x%x, expected 0x%x", fpu_mxcsr_got, fpu_mxcsr_set);
  if ((fpu_fcw_got & 0x0f3f) != (fpu_fcw_set & 0x0f3f)) fail("x87 control word 0x%x, expected 0x%x", fpu_fcw_got, fpu_fcw_set);
  for (int k = 500001; k <= 1000000; k++) sum += 1.0 / ((double)k * k);
  double want = 0;
  for (int k = 1; k <= 1000000; k++) want += 1.0 / ((double)k * k);
  if (sum != want) fail("series %.17g, expected %.17g", sum, want);
  if (fabs(sum - M_PI * M_PI / 6) > 1e-5) fail("series %.17g far from pi^2/6", sum);
  pass();
}
