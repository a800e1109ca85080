// A second reader of the process image format (docs/IMAGE.md), independent of
// src/rfork/image.ts's checks but not of its description: every offset, size
// and limit here comes from schema/image.json (image-layout.generated.ts), as
// native/src/image.h's do, so the C dumper is checked against the one
// description. The tests use it to list the fd table and to craft images
// that are consistent except for one field.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/util/paths.js';
import { xxh64 } from '../../src/rfork/image.js';
import { CPU_REGISTERS, FEATURE_TABLE, IMAGE_CPU, IMAGE_HEADER_BYTES, IMAGE_XSAVE_COMP } from '../../src/cpu/features.generated.js';
import { IMG, IMG_FD, IMG_FD_SIZE, IMG_HEADER, IMG_REGION, IMG_REGION_SIZE, IMG_REGS, IMG_RUN_SIZE, metadataLayout } from '../../src/rfork/image-layout.generated.js';
import type { CpuidLeaves } from '../../src/cpu/features.js';

/** Where `make -C native all` puts the restorer and the fidelity programs. */
export const nativeBuild = join(packageRoot(), 'native', 'build');
export const restorer = join(nativeBuild, 'bin', 'rex-restore');
export const program = (name: string): string => join(nativeBuild, 'test', 'migration', name);

/** Header field offsets (docs/IMAGE.md, section 2; schema/image.json). */
export const H = {
  ...IMG_HEADER, rip: IMG_HEADER.regs + IMG_REGS.rip, rsp: IMG_HEADER.regs + IMG_REGS.rsp,
  xsaveComp: IMAGE_XSAVE_COMP.headerOffset, cpu: IMAGE_CPU.headerOffset, size: IMAGE_HEADER_BYTES,
} as const;
export const REGION_SIZE = IMG_REGION_SIZE;
export const RUN_SIZE = IMG_RUN_SIZE;
export const FD_SIZE = IMG_FD_SIZE;

/** XXH64 with seed 0: the one implementation, the image reader's (its C twin is native/src/image.h). */
export { xxh64 };

const align64 = (v: number): number => Math.ceil(v / IMG.META_ALIGN) * IMG.META_ALIGN;

/** Byte offsets of the metadata tables, from the start of the image. */
export function layout(img: Buffer): { xsave: number; regions: number; runs: number; words: number; fds: number; strings: number; data: number } {
  const hs = img.readUInt32LE(H.headerSize);
  const u32 = (off: number): number => img.readUInt32LE(off);
  const l = metadataLayout({
    xsaveLen: u32(H.xsaveLen), nregions: u32(H.nregions), nruns: u32(H.nruns), nwords: u32(H.nwords), nfds: u32(H.nfds), stringsSize: u32(H.stringsSize),
  });
  return { xsave: hs + l.xsave, regions: hs + l.regions, runs: hs + l.runs, words: hs + l.words, fds: hs + l.fds, strings: hs + l.strings, data: hs + l.total };
}

/**
 * The same image with `len` bytes of its XSAVE area stored (576 <= len):
 * cut, or extended with zeros (components in their initial state); the tables
 * after it move, meta_size follows, and meta_hash is recomputed. Tests build
 * XSAVE cases with it on any CPU, instead of waiting for one that has them.
 */
export function withXsaveStored(img: Buffer, len: number): Buffer {
  const old = img.readUInt32LE(H.xsaveLen);
  if (len < IMG.XSAVE_MIN || len > IMG.MAX_XSAVE) throw new Error(`withXsaveStored: ${len} is outside ${IMG.XSAVE_MIN}..${IMG.MAX_XSAVE}`);
  const hs = img.readUInt32LE(H.headerSize);
  const kept = img.subarray(hs, hs + Math.min(old, len));
  const area = Buffer.concat([kept, Buffer.alloc(align64(len) - kept.length)]);
  const out = Buffer.concat([img.subarray(0, hs), area, img.subarray(hs + align64(old))]);
  out.writeUInt32LE(len, H.xsaveLen);
  out.writeBigUInt64LE(out.readBigUInt64LE(H.metaSize) - BigInt(align64(old)) + BigInt(align64(len)), H.metaSize);
  return rehash(out);
}

/** A CPU's XSAVE layout as test/fixtures/cpu/*.json give it. */
export interface CpuLayout {
  cpu: string;
  xcr0: bigint;
  xsaveSize: number;
  components: { index: number; offset: number; size: number }[];
}

/**
 * The image as if dumped on a CPU with layout `cpu`: its XCR0, area size and
 * component table, the components `inUse` marked in use (others in their
 * initial state), and the area stored up to the last of them.
 */
export function withCpuLayout(img: Buffer, cpu: CpuLayout, inUse: number[]): Buffer {
  const comps = new Map(cpu.components.map((c) => [c.index, c]));
  const len = Math.max(IMG.XSAVE_MIN, ...inUse.map((i) => comps.get(i)!.offset + comps.get(i)!.size));
  const b = withXsaveStored(img, len);
  b.writeBigUInt64LE(cpu.xcr0, H.xcr0);
  b.writeUInt32LE(cpu.xsaveSize, H.xsaveSize);
  for (let i = 0; i < 16; i++) {
    const c = comps.get(i);
    b.writeUInt16LE(c?.offset ?? 0, H.xsaveComp + IMAGE_XSAVE_COMP.entrySize * i);
    b.writeUInt16LE(c?.size ?? 0, H.xsaveComp + IMAGE_XSAVE_COMP.entrySize * i + 2);
  }
  const bv = (b.readBigUInt64LE(XSTATE_BV) & 3n) | inUse.reduce((m, i) => m | (1n << BigInt(i)), 0n);
  b.writeBigUInt64LE(bv, XSTATE_BV);
  return rehash(b);
}

/** Byte offset in the image of header.cpu's field `field`, word `i` (schema/image-cpu.json). */
export function cpuOffset(field: keyof typeof IMAGE_CPU.fields, i = 0): number {
  return IMAGE_CPU.headerOffset + IMAGE_CPU.fields[field].offset + 4 * i;
}

/**
 * The image as if dumped on a CPU whose CPUID words are `leaves`, with the
 * features `inUse` in use (default: every feature of the table the CPU has):
 * header.cpu rewritten and meta_hash recomputed, the rest as it was. Tests
 * build images of CPUs they do not run on with it.
 */
export function withCpuProfile(img: Buffer, leaves: CpuidLeaves, inUse?: readonly string[]): Buffer {
  const b = Buffer.from(img);
  const REG = ['eax', 'ebx', 'ecx', 'edx'] as const;
  leaves['0x0.0'].forEach((w, i) => b.writeUInt32LE(w >>> 0, cpuOffset('leaf0', i)));
  b.writeUInt32LE(leaves['0x1.0'][0]! >>> 0, cpuOffset('leaf1_eax'));
  CPU_REGISTERS.forEach((r, i) => {
    const has = (leaves[r.key][REG.indexOf(r.reg)] ?? 0) >>> 0;
    let use = 0;
    for (const f of FEATURE_TABLE) {
      if (f.leaf === r.key && f.reg === r.reg && (has >>> f.bit) & 1 && (!inUse || inUse.includes(f.name))) use |= 1 << f.bit;
    }
    b.writeUInt32LE(has, cpuOffset('has', i));
    b.writeUInt32LE(use >>> 0, cpuOffset('in_use', i));
  });
  b.writeUInt32LE(0, cpuOffset('reserved'));
  return rehash(b);
}

/**
 * The image as if dumped on a CPU with layout `cpu` with the same state:
 * unlike withCpuLayout, which only relabels, each component in use moves
 * from where the image's layout puts it to where `cpu` puts it (the legacy
 * area and XSAVE header stay), the area is stored up to the last of them,
 * and the header takes `cpu`'s XCR0, size and table. Every component in use
 * must be in `cpu`'s layout.
 */
export function withXsaveLayout(img: Buffer, cpu: CpuLayout): Buffer {
  const hs = img.readUInt32LE(H.headerSize);
  const bv = img.readBigUInt64LE(XSTATE_BV);
  const oldComp = (i: number) => ({ offset: img.readUInt16LE(H.xsaveComp + IMAGE_XSAVE_COMP.entrySize * i), size: img.readUInt16LE(H.xsaveComp + IMAGE_XSAVE_COMP.entrySize * i + 2) });
  const inUse = [...Array(16).keys()].filter((i) => i >= 2 && ((bv >> BigInt(i)) & 1n) === 1n);
  const comps = new Map(cpu.components.map((c) => [c.index, c]));
  for (const i of inUse) {
    const c = comps.get(i);
    if (!c) throw new Error(`withXsaveLayout: component ${i} is in use but ${cpu.cpu} has none`);
    if (c.size !== oldComp(i).size) throw new Error(`withXsaveLayout: component ${i} is ${oldComp(i).size} bytes, ${c.size} on ${cpu.cpu}`);
  }
  const moved = inUse.map((i) => ({ at: comps.get(i)!.offset, bytes: Buffer.from(img.subarray(hs + oldComp(i).offset, hs + oldComp(i).offset + oldComp(i).size)) }));
  const b = withCpuLayout(img, cpu, inUse);
  b.fill(0, hs + IMG.XSAVE_MIN, hs + b.readUInt32LE(H.xsaveLen));
  for (const m of moved) m.bytes.copy(b, hs + m.at);
  return rehash(b);
}

/** The offset of XSTATE_BV (the XSAVE header's in-use bitmap) in an image. */
export const XSTATE_BV = H.size + 512;

/** The meta_hash the image should carry: XXH64 of header (meta_hash zeroed) and metadata. */
export function metaHash(img: Buffer): bigint {
  const l = layout(img);
  const part = Buffer.from(img.subarray(0, l.data));
  part.writeBigUInt64LE(0n, H.metaHash);
  return xxh64(part);
}

/** Recomputes meta_hash in place, so one edited field is all that is wrong. */
export function rehash(img: Buffer): Buffer {
  img.writeBigUInt64LE(metaHash(img), H.metaHash);
  return img;
}

function cstring(img: Buffer, off: number, len: number): string {
  const base = layout(img).strings;
  return img.toString('utf8', base + off, base + off + len);
}

export interface ImageFd { fd: number; flFlags: number; pos: bigint; kind: number; flags: number; path: string }
export interface ImageRegion { start: bigint; end: bigint; prot: number; kind: number; name: string; nruns: number; pageMap: number; firstWord: number; nwords: number }

export function fds(img: Buffer): ImageFd[] {
  const l = layout(img);
  const out: ImageFd[] = [];
  for (let i = 0; i < img.readUInt32LE(H.nfds); i++) {
    const o = l.fds + i * FD_SIZE;
    const F = IMG_FD;
    out.push({
      fd: img.readInt32LE(o + F.fd), flFlags: img.readUInt32LE(o + F.flFlags), pos: img.readBigUInt64LE(o + F.pos),
      path: cstring(img, img.readUInt32LE(o + F.pathOff), img.readUInt32LE(o + F.pathLen)), kind: img.readUInt32LE(o + F.kind),
      flags: img.readUInt32LE(o + F.flags),
    });
  }
  return out;
}

export function regions(img: Buffer): ImageRegion[] {
  const l = layout(img);
  const out: ImageRegion[] = [];
  for (let i = 0; i < img.readUInt32LE(H.nregions); i++) {
    const o = l.regions + i * REGION_SIZE;
    const R = IMG_REGION;
    out.push({
      start: img.readBigUInt64LE(o + R.start), end: img.readBigUInt64LE(o + R.end), prot: img.readUInt32LE(o + R.prot),
      kind: img.readUInt32LE(o + R.kind), name: cstring(img, img.readUInt32LE(o + R.nameOff), img.readUInt32LE(o + R.nameLen)),
      nruns: img.readUInt32LE(o + R.nruns), pageMap: img.readUInt32LE(o + R.pageMap), firstWord: img.readUInt32LE(o + R.firstWord),
      nwords: img.readUInt32LE(o + R.nwords),
    });
  }
  return out;
}

/** Runs a program or the restorer, capturing text output. */
export function run(cmd: string, args: string[], opts: { input?: Buffer; timeout?: number; cwd?: string } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeout ?? 60_000, input: opts.input, cwd: opts.cwd, maxBuffer: 1 << 24 });
}
