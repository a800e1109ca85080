/**
 * A host's CPU profile: what its CPU reports through CPUID and XGETBV, read
 * from the CPU itself (never from a table), and the check of whether a
 * process that started on one CPU can go on on another (docs/RFORK.md, "Hosts
 * that differ"). rexd advertises its profile with its load; rfork places an
 * image only on hosts that can run it.
 */
import { loadAddon } from '../util/native.js';
import { FEATURES, featureNames, levelOf, signatureOf, vendorOf, type CpuidKey, type CpuidLeaves } from './features.js';

/** Where one XSAVE state component sits in the standard form (CPUID leaf 0xD subleaf i: ebx offset, eax size). */
export interface XsaveComponent {
  index: number;
  offset: number;
  size: number;
}

export interface CpuProfile {
  /** GenuineIntel, AuthenticAMD, ... */
  vendor: string;
  family: number;
  model: number;
  stepping: number;
  /** The brand string (CPUID 0x80000002..4), trimmed; '' when the CPU has none. */
  modelName: string;
  /** x86-64 micro-architecture level 1..4 (x86-64-v4: AVX-512). */
  level: 1 | 2 | 3 | 4;
  /** XCR0: the state components the OS enables. */
  xcr0: bigint;
  /** Bytes of the standard-form XSAVE area for XCR0 (CPUID 0xD.0 ebx). */
  xsaveSize: number;
  /** Components 2..63 XCR0 enables, with their standard-form place. */
  components: XsaveComponent[];
  /** Features of features.ts FEATURES the CPU has, in that order. */
  features: string[];
  /** The raw words the features come from (kept in images and advertised, so that a newer reader can decode more). */
  leaves: CpuidLeaves;
}

/** A CPUID instruction: (leaf, subleaf) -> [eax, ebx, ecx, edx]. */
export type CpuidFn = (leaf: number, subleaf: number) => readonly number[];

const KEYS: readonly [CpuidKey, number, number][] = [
  ['0x0.0', 0, 0],
  ['0x1.0', 1, 0],
  ['0x7.0', 7, 0],
  ['0x7.1', 7, 1],
  ['0xd.1', 0xd, 1],
  ['0x80000001.0', 0x80000001, 0],
];

/** The profile of a CPU given its CPUID and XCR0: the host's (hostCpuProfile) or a recorded CPU's in tests. */
export function profileFromCpuid(cpuid: CpuidFn, xcr0: bigint): CpuProfile {
  const max = cpuid(0, 0)[0]! >>> 0;
  const maxExt = cpuid(0x80000000, 0)[0]! >>> 0;
  const zero = [0, 0, 0, 0] as const;
  const leaves = {} as Record<CpuidKey, readonly number[]>;
  for (const [key, leaf, sub] of KEYS) {
    const ok = leaf >= 0x80000000 ? leaf <= maxExt : leaf <= max && (leaf !== 7 || sub <= (cpuid(7, 0)[0]! >>> 0));
    leaves[key] = ok ? cpuid(leaf, sub).map((x) => x >>> 0) : zero;
  }
  const features = featureNames(leaves);
  const components: XsaveComponent[] = [];
  let xsaveSize = 0;
  if (features.includes('XSAVE') && max >= 0xd) {
    xsaveSize = cpuid(0xd, 0)[1]! >>> 0;
    for (let i = 2; i < 64; i++) {
      if (!((xcr0 >> BigInt(i)) & 1n)) continue;
      const [size, offset] = cpuid(0xd, i);
      components.push({ index: i, offset: offset! >>> 0, size: size! >>> 0 });
    }
  }
  let modelName = '';
  if (maxExt >= 0x80000004) {
    const buf = Buffer.alloc(48);
    for (let k = 0; k < 3; k++) cpuid(0x80000002 + k, 0).forEach((w, j) => buf.writeUInt32LE(w >>> 0, k * 16 + j * 4));
    modelName = buf.toString('latin1').replace(/\0.*$/s, '').trim().replace(/\s+/g, ' ');
  }
  return { vendor: vendorOf(leaves), ...signatureOf(leaves), modelName, level: levelOf(features, xcr0), xcr0, xsaveSize, components, features, leaves };
}

let host: CpuProfile | undefined;

/** This host's profile, read once from its CPU through the native addon. */
export function hostCpuProfile(): CpuProfile {
  if (!host) {
    const addon = loadAddon();
    host = profileFromCpuid((l, s) => addon.cpuid(l, s), addon.xcr0());
  }
  return host;
}

/** What an image needs of the CPU that restores it. */
export interface CpuNeeds {
  /** Features the origin's code may have chosen (the origin CPU's, less those GLIBC_TUNABLES turned off). */
  features: readonly string[];
  /**
   * XSAVE components the restoring CPU must enable: the image's XCR0,
   * components 0..15 (the restorer requires each of them, in use or not; AMX
   * state is never carried).
   */
  xcr0: bigint;
}

/**
 * The components glibc's lazy-binding trampoline saves (STATE_SAVE_MASK: SSE,
 * AVX, MPX bounds, AVX-512 opmask, ZMM upper halves, ZMM16-31) into a stack
 * buffer sized from CPUID at the process's start: a host may not enable more
 * of them than the image's CPU did (native/src/xsave.h, the restorer's check).
 */
export const GLIBC_STATE_SAVE_MASK = (1n << 1n) | (1n << 2n) | (1n << 3n) | (1n << 5n) | (1n << 6n) | (1n << 7n);

/** XSAVE state component names (Intel SDM vol. 1, 13.1) for messages. */
const COMPONENT_NAMES: Record<number, string> = {
  2: 'AVX (YMM upper halves)',
  3: 'MPX bounds',
  4: 'MPX config',
  5: 'AVX-512 opmask',
  6: 'AVX-512 ZMM upper halves',
  7: 'AVX-512 ZMM16-31',
  9: 'PKRU',
  17: 'AMX tile config',
  18: 'AMX tile data',
};

/**
 * Why `host` cannot run an image with `needs`, one phrase per missing
 * feature or state component ("no AVX512F", "no XSAVE component 7
 * (AVX-512 ZMM16-31)") and per component of GLIBC_STATE_SAVE_MASK it
 * enables beyond the image's ("XSAVE component 5 (AVX-512 opmask) beyond
 * the origin's"); empty when it can. Offsets may differ (the restorer
 * converts the XSAVE area), and the host may have other components (PKRU,
 * AMX) and features more.
 */
export function missingFor(needs: CpuNeeds, host: Pick<CpuProfile, 'features' | 'xcr0'>): string[] {
  const out: string[] = [];
  for (const ft of FEATURES) if (needs.features.includes(ft.name) && !host.features.includes(ft.name)) out.push(`no ${ft.name}`);
  for (let i = 2; i < 64; i++) {
    const bit = 1n << BigInt(i);
    const name = `XSAVE component ${i}${COMPONENT_NAMES[i] ? ` (${COMPONENT_NAMES[i]})` : ''}`;
    if (needs.xcr0 & bit && !(host.xcr0 & bit)) out.push(`no ${name}`);
    else if (GLIBC_STATE_SAVE_MASK & bit && host.xcr0 & bit && !(needs.xcr0 & bit)) out.push(`${name} beyond the origin's (glibc's save buffers are sized for the origin's CPU)`);
  }
  return out;
}

/** One line for `rex hosts` and logs: "AMD EPYC 9R14 (AuthenticAMD 25/17, x86-64-v4, XCR0 0xe7)". */
export function describeCpu(p: Pick<CpuProfile, 'vendor' | 'family' | 'model' | 'modelName' | 'level' | 'xcr0'>): string {
  return `${p.modelName || 'unknown model'} (${p.vendor} ${p.family}/${p.model}, x86-64-v${p.level}, XCR0 0x${p.xcr0.toString(16)})`;
}
