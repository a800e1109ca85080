/**
 * The CPU features a program may have chosen code for at start-up, as CPUID
 * reports them: the list glibc's cpu_features reads for its IFUNC selection
 * (sysdeps/x86/include/cpu-features.h, cpu-features.c: string functions,
 * libm, memcpy variants) and that other libraries test the same way. A process
 * that picked AVX2 code on one host crashes with SIGILL on a host without it,
 * so an rfork image may only go to a host that has every one of these its
 * origin had (docs/RFORK.md, "Hosts that differ").
 *
 * Raw CPUID words are the input everywhere (host, image, recorded tables):
 * nothing here reads the CPU, so every function is tested against the
 * recorded tables of CPUs the developers do not have (test/fixtures/cpu).
 */

/** The CPUID words a profile keeps, each as [eax, ebx, ecx, edx]. */
export interface CpuidLeaves {
  /** Leaf 0: vendor string in ebx, edx, ecx. */
  '0x0.0': readonly number[];
  /** Leaf 1: family/model/stepping in eax, features in ecx and edx. */
  '0x1.0': readonly number[];
  /** Leaf 7 subleaf 0: extended features in ebx, ecx, edx. */
  '0x7.0': readonly number[];
  /** Leaf 7 subleaf 1: more extended features in eax. */
  '0x7.1': readonly number[];
  /** Leaf 0xD subleaf 1: XSAVEOPT, XSAVEC, XSAVES in eax. */
  '0xd.1': readonly number[];
  /** Leaf 0x80000001: LAHF/SAHF, LZCNT, PREFETCHW, FMA4 in ecx. */
  '0x80000001.0': readonly number[];
}

export type CpuidKey = keyof CpuidLeaves;
type Reg = 'eax' | 'ebx' | 'ecx' | 'edx';
const REG_INDEX: Record<Reg, number> = { eax: 0, ebx: 1, ecx: 2, edx: 3 };

/** One feature: its name (as glibc spells it in GLIBC_TUNABLES glibc.cpu.hwcaps) and where CPUID reports it. */
export interface Feature {
  name: string;
  leaf: CpuidKey;
  reg: Reg;
  bit: number;
}

const f = (name: string, leaf: CpuidKey, reg: Reg, bit: number): Feature => ({ name, leaf, reg, bit });

/** The features, in glibc's order of leaves. */
export const FEATURES: readonly Feature[] = [
  f('SSE3', '0x1.0', 'ecx', 0),
  f('PCLMULQDQ', '0x1.0', 'ecx', 1),
  f('SSSE3', '0x1.0', 'ecx', 9),
  f('FMA', '0x1.0', 'ecx', 12),
  f('CMPXCHG16B', '0x1.0', 'ecx', 13),
  f('SSE4_1', '0x1.0', 'ecx', 19),
  f('SSE4_2', '0x1.0', 'ecx', 20),
  f('MOVBE', '0x1.0', 'ecx', 22),
  f('POPCNT', '0x1.0', 'ecx', 23),
  f('AES', '0x1.0', 'ecx', 25),
  f('XSAVE', '0x1.0', 'ecx', 26),
  f('OSXSAVE', '0x1.0', 'ecx', 27),
  f('AVX', '0x1.0', 'ecx', 28),
  f('F16C', '0x1.0', 'ecx', 29),
  f('RDRAND', '0x1.0', 'ecx', 30),
  f('CMOV', '0x1.0', 'edx', 15),
  f('FXSR', '0x1.0', 'edx', 24),
  f('SSE', '0x1.0', 'edx', 25),
  f('SSE2', '0x1.0', 'edx', 26),
  f('FSGSBASE', '0x7.0', 'ebx', 0),
  f('BMI1', '0x7.0', 'ebx', 3),
  f('HLE', '0x7.0', 'ebx', 4),
  f('AVX2', '0x7.0', 'ebx', 5),
  f('BMI2', '0x7.0', 'ebx', 8),
  f('ERMS', '0x7.0', 'ebx', 9),
  f('RTM', '0x7.0', 'ebx', 11),
  f('AVX512F', '0x7.0', 'ebx', 16),
  f('AVX512DQ', '0x7.0', 'ebx', 17),
  f('RDSEED', '0x7.0', 'ebx', 18),
  f('ADX', '0x7.0', 'ebx', 19),
  f('AVX512_IFMA', '0x7.0', 'ebx', 21),
  f('CLFLUSHOPT', '0x7.0', 'ebx', 23),
  f('CLWB', '0x7.0', 'ebx', 24),
  f('AVX512PF', '0x7.0', 'ebx', 26),
  f('AVX512ER', '0x7.0', 'ebx', 27),
  f('AVX512CD', '0x7.0', 'ebx', 28),
  f('SHA', '0x7.0', 'ebx', 29),
  f('AVX512BW', '0x7.0', 'ebx', 30),
  f('AVX512VL', '0x7.0', 'ebx', 31),
  f('PREFETCHWT1', '0x7.0', 'ecx', 0),
  f('AVX512_VBMI', '0x7.0', 'ecx', 1),
  f('WAITPKG', '0x7.0', 'ecx', 5),
  f('AVX512_VBMI2', '0x7.0', 'ecx', 6),
  f('GFNI', '0x7.0', 'ecx', 8),
  f('VAES', '0x7.0', 'ecx', 9),
  f('VPCLMULQDQ', '0x7.0', 'ecx', 10),
  f('AVX512_VNNI', '0x7.0', 'ecx', 11),
  f('AVX512_BITALG', '0x7.0', 'ecx', 12),
  f('AVX512_VPOPCNTDQ', '0x7.0', 'ecx', 14),
  f('RDPID', '0x7.0', 'ecx', 22),
  f('MOVDIRI', '0x7.0', 'ecx', 27),
  f('MOVDIR64B', '0x7.0', 'ecx', 28),
  f('AVX512_4VNNIW', '0x7.0', 'edx', 2),
  f('AVX512_4FMAPS', '0x7.0', 'edx', 3),
  f('FSRM', '0x7.0', 'edx', 4),
  f('AVX512_VP2INTERSECT', '0x7.0', 'edx', 8),
  f('SERIALIZE', '0x7.0', 'edx', 14),
  f('AMX_BF16', '0x7.0', 'edx', 22),
  f('AVX512_FP16', '0x7.0', 'edx', 23),
  f('AMX_TILE', '0x7.0', 'edx', 24),
  f('AMX_INT8', '0x7.0', 'edx', 25),
  f('AVX_VNNI', '0x7.1', 'eax', 4),
  f('AVX512_BF16', '0x7.1', 'eax', 5),
  f('FZLRM', '0x7.1', 'eax', 10),
  f('FSRS', '0x7.1', 'eax', 11),
  f('FSRCS', '0x7.1', 'eax', 12),
  f('XSAVEOPT', '0xd.1', 'eax', 0),
  f('XSAVEC', '0xd.1', 'eax', 1),
  f('XSAVES', '0xd.1', 'eax', 3),
  f('LAHF64_SAHF64', '0x80000001.0', 'ecx', 0),
  f('LZCNT', '0x80000001.0', 'ecx', 5),
  f('SSE4A', '0x80000001.0', 'ecx', 6),
  f('PREFETCHW', '0x80000001.0', 'ecx', 8),
  f('XOP', '0x80000001.0', 'ecx', 11),
  f('FMA4', '0x80000001.0', 'ecx', 16),
  f('TBM', '0x80000001.0', 'ecx', 21),
];

const BY_NAME = new Map(FEATURES.map((x) => [x.name, x]));

/** The named features CPUID words report, in FEATURES order. */
export function featureNames(leaves: CpuidLeaves): string[] {
  return FEATURES.filter((x) => ((leaves[x.leaf][REG_INDEX[x.reg]] ?? 0) >>> x.bit) & 1).map((x) => x.name);
}

/** The feature called `name` (glibc's spelling, any case), or undefined. */
export function feature(name: string): Feature | undefined {
  return BY_NAME.get(name.toUpperCase());
}

/** The vendor string of leaf 0 (GenuineIntel, AuthenticAMD, ...). */
export function vendorOf(leaves: CpuidLeaves): string {
  const [, b, c, d] = leaves['0x0.0'];
  const buf = Buffer.alloc(12);
  buf.writeUInt32LE((b ?? 0) >>> 0, 0);
  buf.writeUInt32LE((d ?? 0) >>> 0, 4);
  buf.writeUInt32LE((c ?? 0) >>> 0, 8);
  return buf.toString('latin1').replace(/\0+$/, '');
}

/** Family, model and stepping from leaf 1 eax, with the extended fields applied as the manuals say. */
export function signatureOf(leaves: CpuidLeaves): { family: number; model: number; stepping: number } {
  const a = (leaves['0x1.0'][0] ?? 0) >>> 0;
  const base = (a >>> 8) & 0xf;
  const family = base === 0xf ? base + ((a >>> 20) & 0xff) : base;
  const model = base === 0xf || base === 0x6 ? (((a >>> 16) & 0xf) << 4) | ((a >>> 4) & 0xf) : (a >>> 4) & 0xf;
  return { family, model, stepping: a & 0xf };
}

/**
 * The x86-64 micro-architecture level (psABI: 1 baseline, 2, 3 with AVX2, 4
 * with AVX-512) the features reach; XCR0 must enable the state the level's
 * vector registers need (AVX: 0x6, AVX-512: 0xe6).
 */
export function levelOf(features: readonly string[], xcr0: bigint): 1 | 2 | 3 | 4 {
  const has = (...n: string[]) => n.every((x) => features.includes(x));
  if (!has('CMPXCHG16B', 'LAHF64_SAHF64', 'POPCNT', 'SSE3', 'SSE4_1', 'SSE4_2', 'SSSE3')) return 1;
  if (!has('AVX', 'AVX2', 'BMI1', 'BMI2', 'F16C', 'FMA', 'LZCNT', 'MOVBE', 'OSXSAVE') || (xcr0 & 0x6n) !== 0x6n) return 2;
  if (!has('AVX512F', 'AVX512BW', 'AVX512CD', 'AVX512DQ', 'AVX512VL') || (xcr0 & 0xe6n) !== 0xe6n) return 3;
  return 4;
}

/**
 * The features glibc will not use in a process started with `tunables`
 * (GLIBC_TUNABLES, e.g. `glibc.cpu.hwcaps=-AVX512F,-AVX2_Usable`): those
 * glibc.cpu.hwcaps turns off with a leading '-'. glibc's own spellings with a
 * `_Usable` suffix name the same feature.
 */
export function tunablesDisabled(tunables: string | undefined): string[] {
  if (!tunables) return [];
  const out: string[] = [];
  for (const part of tunables.split(':')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq) !== 'glibc.cpu.hwcaps') continue;
    for (const item of part.slice(eq + 1).split(',')) {
      if (!item.startsWith('-')) continue;
      const name = item.slice(1).replace(/_Usable$/i, '');
      const ft = feature(name);
      if (ft && !out.includes(ft.name)) out.push(ft.name);
    }
  }
  return out;
}
