/**
 * A CPU profile as it travels: in LOAD and HOSTS (docs/PROTOCOL.md 4.5, 4.6,
 * attribute `cpu`) and in the JSON file of the test switch
 * REX_TEST_CPU_PROFILE. Only what cannot be derived is sent: the raw CPUID
 * words (vendor, family/model/stepping and every feature come from them, so
 * a newer receiver decodes more of the same words), XCR0, the XSAVE size and
 * components, and the brand string. Every field is checked on receipt; a bad
 * one is a MALFORMED protocol error naming it.
 */
import { ProtocolError } from '../protocol/frame.js';
import { featureNames, levelOf, signatureOf, vendorOf, type CpuidKey, type CpuidLeaves } from './features.js';
import { describeCpu, hostCpuProfile, type CpuProfile, type XsaveComponent } from './profile.js';
import { testSwitch } from '../util/testmode.js';
import { readFileSync } from 'node:fs';

/** The leaves in the order `leaves` carries them (16 bytes each: eax, ebx, ecx, edx little-endian). */
export const WIRE_LEAVES: readonly CpuidKey[] = ['0x0.0', '0x1.0', '0x7.0', '0x7.1', '0xd.1', '0x80000001.0'];

/** Largest XSAVE area a profile may state (AMX tiles need about 11 KiB). */
export const WIRE_MAX_XSAVE = 65536;

/** The `cpu` attribute's fields (messages.ts CPU_PROFILE). */
export interface CpuWire {
  leaves: Uint8Array;
  xcr0: bigint;
  xsaveSize?: number;
  components?: { index: number; offset: number; size: number }[];
  modelName?: string;
}

/** A profile in its wire form. */
export function profileToWire(p: CpuProfile): CpuWire {
  const leaves = Buffer.alloc(WIRE_LEAVES.length * 16);
  WIRE_LEAVES.forEach((k, i) => p.leaves[k].forEach((w, j) => leaves.writeUInt32LE((w ?? 0) >>> 0, i * 16 + j * 4)));
  return {
    leaves,
    xcr0: p.xcr0,
    xsaveSize: p.xsaveSize,
    components: p.components.map((c) => ({ index: c.index, offset: c.offset, size: c.size })),
    ...(p.modelName ? { modelName: p.modelName } : {}),
  };
}

function bad(where: string, msg: string): ProtocolError {
  return new ProtocolError('MALFORMED', `${where}: ${msg}`);
}

/**
 * The profile a wire form describes, checked: `where` names the message
 * ("LOAD from beta cpu"), and the error names the field. A receiver may get
 * more leaves than it knows (a newer sender): they are ignored.
 */
export function profileFromWire(w: CpuWire, where: string): CpuProfile {
  const n = w.leaves.byteLength;
  if (n < WIRE_LEAVES.length * 16 || n % 16 !== 0) throw bad(where, `leaves is ${n} bytes: must be at least ${WIRE_LEAVES.length * 16}, 16 per CPUID leaf (${WIRE_LEAVES.join(', ')})`);
  const buf = Buffer.from(w.leaves.buffer, w.leaves.byteOffset, n);
  const leaves = {} as Record<CpuidKey, readonly number[]>;
  WIRE_LEAVES.forEach((k, i) => (leaves[k] = [0, 1, 2, 3].map((j) => buf.readUInt32LE(i * 16 + j * 4))));
  const vendor = vendorOf(leaves);
  if (!/^[\x21-\x7e]{1,12}$/.test(vendor)) throw bad(where, `leaves: the vendor in CPUID leaf 0 is not 12 printable characters`);
  if ((w.xcr0 & 3n) !== 3n) throw bad(where, `xcr0 = 0x${w.xcr0.toString(16)}: x87 and SSE state (bits 0 and 1) must be enabled on x86-64`);
  const xsaveSize = w.xsaveSize ?? 0;
  if (xsaveSize > WIRE_MAX_XSAVE) throw bad(where, `xsaveSize = ${xsaveSize}: at most ${WIRE_MAX_XSAVE}`);
  if (xsaveSize !== 0 && xsaveSize < 576) throw bad(where, `xsaveSize = ${xsaveSize}: an XSAVE area has at least 576 bytes (legacy area and header)`);
  const components: XsaveComponent[] = [];
  for (const [i, c] of (w.components ?? []).entries()) {
    const at = `components[${i}]`;
    if (c.index < 2 || c.index > 63) throw bad(where, `${at}.index = ${c.index}: user state components are 2..63`);
    if (!((w.xcr0 >> BigInt(c.index)) & 1n)) throw bad(where, `${at}.index = ${c.index}: not enabled in xcr0 0x${w.xcr0.toString(16)}`);
    if (components.length > 0 && c.index <= components.at(-1)!.index) throw bad(where, `${at}.index = ${c.index}: components must be in increasing order, each once`);
    if (c.size === 0 || c.offset < 576 || c.offset + c.size > xsaveSize) {
      throw bad(where, `${at} (component ${c.index}): offset ${c.offset} size ${c.size} does not lie within the ${xsaveSize}-byte XSAVE area after its 576-byte header`);
    }
    components.push({ index: c.index, offset: c.offset, size: c.size });
  }
  for (let i = 2; i < 64; i++) {
    if ((w.xcr0 >> BigInt(i)) & 1n && !components.some((c) => c.index === i)) throw bad(where, `components: xcr0 0x${w.xcr0.toString(16)} enables component ${i}, but its place is not given`);
  }
  const modelName = w.modelName ?? '';
  // It is shown on terminals (rex hosts): printable ASCII only, as CPUID's brand string is.
  if (!/^[\x20-\x7e]*$/.test(modelName)) throw bad(where, `modelName: only printable ASCII is allowed (it is CPUID's brand string)`);
  const features = featureNames(leaves as CpuidLeaves);
  return { vendor, ...signatureOf(leaves as CpuidLeaves), modelName, level: levelOf(features, w.xcr0), xcr0: w.xcr0, xsaveSize, components, features, leaves: leaves as CpuidLeaves };
}

/** A profile as JSON (the REX_TEST_CPU_PROFILE file, recorded CPUs): xcr0 as a hex string, the leaves by key. */
export function profileToJson(p: CpuProfile): string {
  return JSON.stringify({ modelName: p.modelName, xcr0: `0x${p.xcr0.toString(16)}`, xsaveSize: p.xsaveSize, components: p.components, leaves: p.leaves }, null, 2);
}

/** Reads a profile written by profileToJson (features, level, vendor and signature are derived from the leaves). */
export function profileFromJson(text: string, file: string): CpuProfile {
  let j: { modelName?: unknown; xcr0?: unknown; xsaveSize?: unknown; components?: unknown; leaves?: Record<string, unknown> };
  try {
    j = JSON.parse(text) as typeof j;
  } catch (e) {
    throw new Error(`${file}: not JSON: ${(e as Error).message}`);
  }
  const leaves = Buffer.alloc(WIRE_LEAVES.length * 16);
  for (const [i, k] of WIRE_LEAVES.entries()) {
    const v = j.leaves?.[k];
    if (!Array.isArray(v) || v.length !== 4 || !v.every((x) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff)) throw new Error(`${file}: leaves["${k}"] must be four 32-bit words [eax, ebx, ecx, edx]`);
    v.forEach((x: number, n) => leaves.writeUInt32LE(x, i * 16 + n * 4));
  }
  if (typeof j.xcr0 !== 'string' || !/^0x[0-9a-f]+$/i.test(j.xcr0)) throw new Error(`${file}: xcr0 must be a hex string such as "0x7"`);
  const comps = j.components ?? [];
  if (!Array.isArray(comps)) throw new Error(`${file}: components must be a list of {index, offset, size}`);
  return profileFromWire(
    {
      leaves,
      xcr0: BigInt(j.xcr0),
      xsaveSize: Number(j.xsaveSize ?? 0),
      components: comps.map((c: { index?: unknown; offset?: unknown; size?: unknown }) => ({ index: Number(c.index), offset: Number(c.offset), size: Number(c.size) })),
      ...(typeof j.modelName === 'string' ? { modelName: j.modelName } : {}),
    },
    file,
  );
}

let advertised: CpuProfile | undefined;

/**
 * The profile this rexd advertises: its CPU's, or in test mode the one in
 * the file REX_TEST_CPU_PROFILE names (a recorded or synthetic CPU, so that
 * one machine can play hosts that differ). Read once.
 */
export function advertisedCpuProfile(): CpuProfile {
  if (!advertised) {
    const file = testSwitch('REX_TEST_CPU_PROFILE');
    advertised = file ? profileFromJson(readFileSync(file, 'utf8'), file) : hostCpuProfile();
  }
  return advertised;
}

/** What `rex hosts` and RexClient.hosts() show of a host's CPU. */
export interface CpuSummary {
  vendor: string;
  family: number;
  model: number;
  modelName: string;
  /** x86-64-v1 .. x86-64-v4 */
  class: string;
  xcr0: string;
  features: string[];
  /** describeCpu(): "AMD EPYC 7B13 (AuthenticAMD 25/1, x86-64-v3, XCR0 0x7)" */
  description: string;
}

export function cpuSummary(p: CpuProfile): CpuSummary {
  return { vendor: p.vendor, family: p.family, model: p.model, modelName: p.modelName, class: `x86-64-v${p.level}`, xcr0: `0x${p.xcr0.toString(16)}`, features: p.features, description: describeCpu(p) };
}
