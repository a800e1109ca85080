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
import { FEATURE_TABLE } from './features.generated.js';

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
  /** glibc 2.36 honours `-NAME` in GLIBC_TUNABLES=glibc.cpu.hwcaps for it (others it ignores). */
  glibcOff: boolean;
}

/**
 * The features, in glibc's order of leaves: schema/image-cpu.json is the one
 * description (scripts/gen-image-cpu.mjs makes this table and the C one the
 * dumper and the restorer use from it).
 */
export const FEATURES: readonly Feature[] = FEATURE_TABLE.map((x) => ({ name: x.name, leaf: x.leaf, reg: x.reg, bit: x.bit, glibcOff: x.glibcOff }));

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
 * The XSAVE state components (bits of XCR0) that code using `features` needs
 * the OS to enable: AVX and its successors the YMM upper halves (bit 2), the
 * AVX-512 subsets also the opmask and ZMM components (5, 6, 7).
 */
export function xstateFor(features: readonly string[]): bigint {
  let x = 0n;
  for (const n of features) {
    if (n.startsWith('AVX512')) x |= 0xe4n;
    else if (n.startsWith('AVX') || ['FMA', 'F16C', 'VAES', 'VPCLMULQDQ'].includes(n)) x |= 0x4n;
  }
  return x;
}

/**
 * The features glibc will not use in a process started with `tunables`
 * (GLIBC_TUNABLES, e.g. `glibc.cpu.hwcaps=-AVX512F,-AVX2`): those
 * glibc.cpu.hwcaps turns off with a leading '-', spelt exactly as glibc
 * spells them, and only those glibc 2.36 honours (Feature.glibcOff). Other
 * names glibc ignores, and so does this: the older `AVX2_Usable` spelling
 * leaves AVX2 in use (ld.so --list-diagnostics shows it still active), and
 * counting it as off would let an image that uses AVX2 go to a host without.
 * The dumper (native/src/dump.c tunables_off) applies the same rule.
 */
export function tunablesDisabled(tunables: string | undefined): string[] {
  if (!tunables) return [];
  const out: string[] = [];
  for (const part of tunables.split(':')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq) !== 'glibc.cpu.hwcaps') continue;
    for (const item of part.slice(eq + 1).split(',')) {
      if (!item.startsWith('-')) continue;
      const ft = FEATURES.find((x) => x.name === item.slice(1));
      if (ft?.glibcOff && !out.includes(ft.name)) out.push(ft.name);
    }
  }
  return FEATURES.filter((x) => out.includes(x.name)).map((x) => x.name);
}
