/**
 * A validating reader of rfork process images (docs/IMAGE.md, version 5): the
 * header and metadata, never the page data. The executor uses it before it
 * starts `rex-restore`, to learn which files the image maps (to check or fetch
 * them by content hash and pass `--file ORIGINAL=LOCAL`) and which descriptors
 * the origin stub must proxy.
 *
 * The image arrives from another host, so it is untrusted: every count, bound,
 * offset and string reference is checked as the restorer checks it, and a bad
 * image gives a RexError naming the field and its byte offset, never a
 * RangeError from Buffer. meta_hash (XXH64) catches accidents only; the
 * transport authenticates images (docs/RFORK.md section 5).
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { ErrorCodes, RexError } from '../util/errors.js';
import { CPU_REGISTERS, IMAGE_CPU, IMAGE_HEADER_BYTES, IMAGE_XSAVE_COMP, FEATURE_MASKS } from '../cpu/features.generated.js';
import { featureNames, signatureOf, vendorOf, type CpuidKey, type CpuidLeaves } from '../cpu/features.js';
import type { CpuNeeds } from '../cpu/profile.js';
import {
  FD_KINDS, IMG, IMG_FD, IMG_FD_SIZE, IMG_HEADER, IMG_MM, IMG_REGION, IMG_REGION_SIZE, IMG_REGS, IMG_RESUME_SIZE, IMG_RLIMIT,
  IMG_RLIMIT_SIZE, IMG_RUN, IMG_RUN_SIZE, IMG_SPECIAL, IMG_SPECIAL_SIZE, IMG_TRAILER_SIZE, PAGE_MAPS, REGION_KINDS, SPECIAL_KINDS, metadataLayout,
  type FdKind, type RegionKind, type SpecialKind,
} from './image-layout.generated.js';

/** The image version this reader understands (docs/IMAGE.md section 7). */
export const IMAGE_VERSION = IMG.VERSION;
/** Bytes of the version-4 header (schema/image-cpu.json: header.cpu is its last part). */
export const IMAGE_HEADER_SIZE = IMAGE_HEADER_BYTES;
/** Bytes of the trailer after the page data (magic and data_hash). */
export const IMAGE_TRAILER_SIZE = IMG_TRAILER_SIZE;
/** Page size of every image (x86-64). */
export const IMAGE_PAGE = IMG.PAGE;

// Every offset, size, kind and limit below is schema/image.json's (image-layout.generated.ts), as the restorer's are.
const USER_MIN = IMG.USER_MIN;
const USER_MAX = IMG.USER_MAX; // below 2^47: addresses are exact JavaScript numbers
const ZONE_START = IMG.ZONE_START;
const ZONE_END = IMG.ZONE_END;
const U64_MAX = (1n << 64n) - 1n;
const MiB = (n: number): string => `${n / (1 << 20)} MiB`;

/** XSAVE components the image describes (0..15; 0 and 1 are the legacy area and have no entry). */
const NXCOMP = IMAGE_XSAVE_COMP.count;

/** Header field offsets (docs/IMAGE.md section 2), with the nested fields this reader checks. */
const H = {
  ...IMG_HEADER, rsp: IMG_HEADER.regs + IMG_REGS.rsp, rip: IMG_HEADER.regs + IMG_REGS.rip, fsBase: IMG_HEADER.regs + IMG_REGS.fsBase,
  gsBase: IMG_HEADER.regs + IMG_REGS.gsBase, auxvWords: IMG_HEADER.mm + IMG_MM.auxvWords,
} as const;

/** One XSAVE state component where the dumping CPU put it (standard form, CPUID leaf 0xD). */
export interface XsaveComponent {
  index: number;
  offset: number;
  size: number;
}

/** What a memory region is and how the restorer maps it (docs/IMAGE.md section 3.2); what an open descriptor was at dump time (3.4). */
export type { FdKind, RegionKind };

/** The identity a file had at dump time; the restorer compares it unless told `--file`. */
export interface ImageFileIdentity {
  dev: bigint;
  ino: bigint;
  /** st_size: a `--file` copy must have exactly this size. */
  size: number;
  /** st_mtim in nanoseconds since the epoch. */
  mtimeNs: bigint;
}

/** One memory region of the image. */
export interface ImageRegion {
  index: number;
  start: number;
  end: number;
  /** PROT_READ 1 | PROT_WRITE 2 | PROT_EXEC 4. */
  prot: number;
  kind: RegionKind;
  /** The maps name: a path, `[heap]`, `[stack]`, `[anon:...]`; undefined when none. */
  name?: string;
  /** File regions ('file', 'file-shared'): the absolute path and offset mapped, and the file's identity. */
  path?: string;
  offset: number;
  file?: ImageFileIdentity;
  /** How the carried pages are listed, and how many there are. */
  pageMap: 'runs' | 'bitmap';
  pages: number;
  /** Hex sha256 the transfer layer put in content_hash; undefined when all zero (a local image). */
  contentHash?: string;
}

/** One file the image maps, with every region that maps it. */
export interface ImageFile extends ImageFileIdentity {
  path: string;
  /** True when some region maps it shared: such a file cannot be replaced by a copy. */
  shared: boolean;
  regions: number[];
}

/** One descriptor open at dump time, for the origin stub to proxy. */
export interface ImageFd {
  fd: number;
  /** F_GETFD (FD_CLOEXEC). */
  fdFlags: number;
  /** F_GETFL (O_ACCMODE, O_APPEND, O_NONBLOCK...). */
  flFlags: number;
  mode: number;
  /** lseek position; null when not seekable. */
  pos: number | null;
  dev: bigint;
  ino: bigint;
  /** readlink of /proc/self/fd/N: a path, `pipe:[N]`, `socket:[N]`... */
  path: string;
  kind: FdKind;
  /** True for the descriptor the image was written to (not one to proxy). */
  image: boolean;
}

/** The kernel's special mappings recorded in the image. */
export interface ImageSpecial {
  kind: SpecialKind;
  start: number;
  end: number;
}

/** The origin CPU as header.cpu records it (docs/IMAGE.md section 2.4). */
export interface ImageCpu {
  /** GenuineIntel, AuthenticAMD, ... */
  vendor: string;
  family: number;
  model: number;
  stepping: number;
  /** The features of the table (src/cpu/features.ts FEATURES) the origin CPU has, in that order. */
  features: string[];
  /** The features the process may use: `features` less those GLIBC_TUNABLES turned off at dump time. */
  inUse: string[];
  /** The raw words recorded (leaf 0, leaf 1 EAX and the feature registers; unrecorded words are 0). */
  leaves: CpuidLeaves;
}

/** Everything the header and metadata of a valid image say, as readImageInfo returns it. */
export interface ImageInfo {
  version: number;
  flags: number;
  /** REX_DUMP_SKIP_SHARED left shared memory out. */
  sharedSkipped: boolean;
  pid: number;
  tid: number;
  ppid: number;
  comm: string;
  exe: string;
  cwd: string;
  umask: number;
  xcr0: bigint;
  /** Bytes of the CPU's XSAVE area, and how many of them the image stores (up to the last component in use). */
  xsaveSize: number;
  xsaveLen: number;
  /** The dumping CPU's layout of the components XCR0 enables (2..15): vendors differ, so it comes with the image. */
  xsaveComponents: XsaveComponent[];
  /** The origin CPU and the features in use. */
  cpu: ImageCpu;
  /**
   * What a host must have to restore the image (src/cpu/profile.ts
   * missingFor): the features in use, and the image's XCR0 (components
   * 0..15), every one of which the restorer requires.
   */
  cpuNeeds: CpuNeeds;
  dumpRealtimeNs: bigint;
  nruns: number;
  nwords: number;
  dataPages: number;
  /** Bytes of header plus metadata: where the page data begin. */
  metadataEnd: number;
  /** Bytes that are not page data: header, metadata and trailer. */
  metadataBytes: number;
  /** Bytes of the whole image. */
  imageBytes: number;
  regions: ImageRegion[];
  files: ImageFile[];
  fds: ImageFd[];
  special: ImageSpecial[];
}

/** Options of readImageInfo. */
export interface ReadImageOptions {
  /** Read and check only the header and metadata; bytes after them (page data, trailer) are ignored. */
  metadataOnly?: boolean;
  /** The name used in messages (default: the path, or "<image>"). */
  name?: string;
  /**
   * Compare header.meta_hash (default true). The origin rexd reading its own
   * client's image passes false: the hash catches accidents in transit and on
   * disk, which the executor's restorer checks anyway, and it spares the
   * origin loading the hash's addon on the rfork's path. Every bound is checked regardless.
   */
  checkHash?: boolean;
}

// --------------------------------------------------------------------- XXH64

// @node-rs/xxhash's addon (prebuilt binaries from npm, docs/DEPENDENCIES.md), loaded on first use by require
// at run time: a bundle (scripts/bundle.mjs) leaves it in node_modules, and programs that never hash never load it.
const load = createRequire(import.meta.url);
let nativeXxh64: ((input: Uint8Array, seed?: bigint) => bigint) | undefined;

/** XXH64 with seed 0 (xxHash's), the hash of meta_hash and data_hash (image version 5; native/src/image_util.h). */
export function xxh64(b: Uint8Array): bigint {
  if (nativeXxh64 === undefined) {
    try {
      nativeXxh64 = (load('@node-rs/xxhash') as { xxh64: (input: Uint8Array, seed?: bigint) => bigint }).xxh64;
    } catch (e) {
      throw new RexError(ErrorCodes.NATIVE_ADDON, `@node-rs/xxhash cannot be loaded: ${(e as Error).message}`, { hint: 'reinstall the package: npm install' });
    }
  }
  return nativeXxh64(b);
}

// -------------------------------------------------------------------- layout

/** Offsets of the metadata parts from the start of the image (docs/IMAGE.md section 3). */
interface Layout { regions: number; runs: number; words: number; fds: number; strings: number; end: number }

function layoutOf(xsaveLen: number, nregions: number, nruns: number, nwords: number, nfds: number, stringsSize: number): Layout {
  const l = metadataLayout({ xsaveLen, nregions, nruns, nwords, nfds, stringsSize });
  const hs = IMAGE_HEADER_SIZE;
  return { regions: hs + l.regions, runs: hs + l.runs, words: hs + l.words, fds: hs + l.fds, strings: hs + l.strings, end: hs + l.total };
}

// -------------------------------------------------------------------- checks

const HINT = 'the image was damaged or cut short on its way, or written by another REX version: dump the process again';

function corrupt(name: string, field: string, off: number, why: string): never {
  throw new RexError(ErrorCodes.IMAGE_MALFORMED, `corrupt image: ${field} at offset ${off}: ${why}`, { where: name, hint: HINT });
}

function truncated(name: string, what: string, need: number, off: number, have: number): never {
  throw new RexError(ErrorCodes.IMAGE_TRUNCATED,
    `truncated image: ${what} needs ${need} bytes at offset ${off}, only ${Math.max(0, have)} there`, { where: name, hint: HINT });
}

/** A u64 that must be a user-space address (or 0 where allowed): returned as an exact number. */
function small(v: bigint): number {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : Number.POSITIVE_INFINITY;
}

const overlaps = (a0: number, a1: number, b0: number, b1: number): boolean => a0 < b1 && b0 < a1;

function popcount32(v: number): number {
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** The fixed-size header fields, checked as the restorer's check_header does. */
interface Header {
  nregions: number; nruns: number; nwords: number; nfds: number; stringsSize: number; xsaveSize: number; xsaveLen: number; flags: number;
  dataPages: number; layout: Layout; xsaveComponents: XsaveComponent[]; cpu: ImageCpu;
}

/**
 * header.cpu, checked as the restorer's rex_img_check_cpu does (image.h), in
 * the same order and naming the same field: leaf 0 (highest leaf at least
 * 0xd, a printable vendor), leaf 1 EAX (no reserved bits, family not 0),
 * has[0] with XSAVE and OSXSAVE, in_use[] only the table's bits and only
 * those of has[], reserved zero.
 */
function cpuProfile(b: Buffer, name: string): ImageCpu {
  const F = IMAGE_CPU.fields;
  const at = (field: keyof typeof F, i = 0): number => IMAGE_CPU.headerOffset + F[field].offset + 4 * i;
  const word = (field: keyof typeof F, i = 0): number => b.readUInt32LE(at(field, i));
  const bad = (field: keyof typeof F, i: number | undefined, why: string): never => {
    const v = word(field, i ?? 0);
    return corrupt(name, `header.cpu.${field}${i === undefined ? '' : `[${i}]`}`, at(field, i ?? 0), `${why} (value 0x${v.toString(16)})`);
  };
  const leaf0 = [0, 1, 2, 3].map((i) => word('leaf0', i));
  if (leaf0[0]! < 0xd) bad('leaf0', 0, 'highest CPUID leaf below 0xd, yet the image has an XSAVE area');
  for (let i = 1; i < 4; i++) {
    for (let k = 0; k < 32; k += 8) {
      const ch = (leaf0[i]! >>> k) & 0xff;
      if (ch < 0x20 || ch > 0x7e) bad('leaf0', i, 'vendor string not printable ASCII');
    }
  }
  const eax1 = word('leaf1_eax');
  if (eax1 & 0xf000c000 || ((eax1 >>> 8) & 0xf) === 0) bad('leaf1_eax', undefined, 'reserved bits set or family 0');
  const has = CPU_REGISTERS.map((_, i) => word('has', i));
  const inUse = CPU_REGISTERS.map((_, i) => word('in_use', i));
  if ((has[0]! & 0x0c000000) !== 0x0c000000) bad('has', 0, 'the origin CPU must have XSAVE and OSXSAVE: the image has an XSAVE area');
  for (let i = 0; i < CPU_REGISTERS.length; i++) {
    if (inUse[i]! & ~FEATURE_MASKS[i]!) bad('in_use', i, 'bits that name no feature of the table');
    if (inUse[i]! & ~has[i]!) bad('in_use', i, 'a feature in use that the origin CPU does not have');
  }
  if (word('reserved')) bad('reserved', undefined, 'must be zero');
  const leavesOf = (words: number[]): CpuidLeaves => {
    const l: Record<CpuidKey, number[]> = {
      '0x0.0': leaf0, '0x1.0': [eax1, 0, 0, 0], '0x7.0': [0, 0, 0, 0], '0x7.1': [0, 0, 0, 0], '0xd.1': [0, 0, 0, 0], '0x80000001.0': [0, 0, 0, 0],
    };
    CPU_REGISTERS.forEach((r, i) => { l[r.key][['eax', 'ebx', 'ecx', 'edx'].indexOf(r.reg)] = words[i]!; });
    return l;
  };
  const leaves = leavesOf(has);
  return { vendor: vendorOf(leaves), ...signatureOf(leaves), features: featureNames(leaves), inUse: featureNames(leavesOf(inUse)), leaves };
}

/**
 * The header's XSAVE layout, checked as the restorer's rex_img_check_xcomp
 * does: an entry for exactly the components 2..15 that XCR0 enables, each in
 * 576..xsave_size, none overlapping another.
 */
function xsaveLayout(b: Buffer, name: string, xsaveSize: number): XsaveComponent[] {
  const xcr0 = b.readBigUInt64LE(H.xcr0);
  const out: XsaveComponent[] = [];
  for (let i = 0; i < NXCOMP; i++) {
    const at = H.xsaveComp + IMAGE_XSAVE_COMP.entrySize * i;
    const offset = b.readUInt16LE(at), size = b.readUInt16LE(at + 2);
    const bad = (why: string): never => corrupt(name, `header.xsave_comp[${i}]`, at, `${why} (offset ${offset}, size ${size})`);
    const on = i >= 2 && ((xcr0 >> BigInt(i)) & 1n) === 1n;
    if (!on) {
      if (offset || size) bad(i < 2 ? "the legacy area's components have no entry (must be zero)" : "an entry for a component the image's XCR0 does not enable");
      continue;
    }
    if (size === 0 || offset < IMG.XSAVE_MIN || offset + size > xsaveSize) bad(`component outside ${IMG.XSAVE_MIN}..xsave_size, or of size 0`);
    if (out.some((c) => offset < c.offset + c.size && c.offset < offset + size)) bad('overlaps another component');
    out.push({ index: i, offset, size });
  }
  return out;
}

function checkHeader(b: Buffer, name: string): Header {
  if (b.length < IMAGE_HEADER_SIZE) truncated(name, 'the header', IMAGE_HEADER_SIZE, 0, b.length);
  if (b.toString('latin1', 0, IMG.MAGIC_SIZE) !== IMG.MAGIC) {
    throw new RexError(ErrorCodes.IMAGE_MALFORMED, 'not a REX image: header.magic at offset 0 is not "REXIMG\\r\\n"', { where: name, hint: HINT });
  }
  const u32 = (off: number): number => b.readUInt32LE(off);
  const bad = (field: string, off: number, why: string, v: number | bigint): never => corrupt(name, `header.${field}`, off, `${why} (value ${v})`);
  const version = u32(H.version);
  if (version !== IMAGE_VERSION) {
    bad('version', H.version, `unsupported image version (this reader reads ${IMAGE_VERSION}; dump again with the same librex)`, version);
  }
  if (u32(H.headerSize) !== IMAGE_HEADER_SIZE) bad('header_size', H.headerSize, 'does not match this version\'s header size', u32(H.headerSize));
  if (u32(H.arch) !== IMG.ARCH_X86_64) bad('arch', H.arch, `not an x86-64 image (${IMG.ARCH_X86_64})`, u32(H.arch));
  if (u32(H.pageSize) !== IMAGE_PAGE) bad('page_size', H.pageSize, `page size must be ${IMAGE_PAGE}`, u32(H.pageSize));
  const flags = u32(H.flags);
  if (flags & ~IMG.F_SHARED_SKIPPED) bad('flags', H.flags, 'unknown flag bits', flags);
  const nregions = u32(H.nregions), nruns = u32(H.nruns), nwords = u32(H.nwords), nfds = u32(H.nfds);
  const stringsSize = u32(H.stringsSize), xsaveSize = u32(H.xsaveSize);
  if (nregions === 0 || nregions > IMG.MAX_REGIONS) bad('nregions', H.nregions, `must be 1..${IMG.MAX_REGIONS}`, nregions);
  if (nruns > IMG.MAX_RUNS) bad('nruns', H.nruns, `above the limit of ${IMG.MAX_RUNS}`, nruns);
  if (nwords > IMG.MAX_WORDS) bad('nwords', H.nwords, `above the limit of ${IMG.MAX_WORDS}`, nwords);
  if (nfds > IMG.MAX_FDS) bad('nfds', H.nfds, `above the limit of ${IMG.MAX_FDS}`, nfds);
  if (stringsSize > IMG.MAX_STRINGS) bad('strings_size', H.stringsSize, `above the limit of ${MiB(IMG.MAX_STRINGS)}`, stringsSize);
  if (xsaveSize < IMG.XSAVE_MIN || xsaveSize > IMG.MAX_XSAVE) bad('xsave_size', H.xsaveSize, `must be ${IMG.XSAVE_MIN}..${IMG.MAX_XSAVE}`, xsaveSize);
  const xsaveLen = u32(H.xsaveLen);
  if (xsaveLen < IMG.XSAVE_MIN || xsaveLen > xsaveSize) bad('xsave_len', H.xsaveLen, `must be ${IMG.XSAVE_MIN}..xsave_size`, xsaveLen);
  const xsaveComponents = xsaveLayout(b, name, xsaveSize);
  const cpu = cpuProfile(b, name);
  const layout = layoutOf(xsaveLen, nregions, nruns, nwords, nfds, stringsSize);
  const metaSize = b.readBigUInt64LE(H.metaSize);
  if (metaSize !== BigInt(layout.end - IMAGE_HEADER_SIZE)) {
    bad('meta_size', H.metaSize, 'does not match the sizes of the tables the header announces', metaSize);
  }
  if (metaSize > BigInt(IMG.MAX_META)) bad('meta_size', H.metaSize, `above the limit of ${MiB(IMG.MAX_META)}`, metaSize);
  const dataPages = b.readBigUInt64LE(H.dataPages);
  if (dataPages > BigInt(USER_MAX / IMAGE_PAGE)) bad('data_pages', H.dataPages, 'more pages than user space holds', dataPages);
  return { nregions, nruns, nwords, nfds, stringsSize, xsaveSize, xsaveLen, flags, dataPages: Number(dataPages), layout, xsaveComponents, cpu };
}

/**
 * Bytes of header and metadata of the image whose header is given (at least
 * IMAGE_HEADER_SIZE bytes): how much of a stream to read before readImageInfo
 * with `metadataOnly`. Checks the header; throws RexError when it is bad.
 */
export function imageMetadataLength(header: Uint8Array, name = '<image>'): number {
  return checkHeader(Buffer.from(header.buffer, header.byteOffset, header.byteLength), name).layout.end;
}

function checkMetadata(b: Buffer, name: string, h: Header, checkHash: boolean): Omit<ImageInfo, 'imageBytes' | 'metadataBytes'> {
  const L = h.layout;
  if (b.length < L.end) truncated(name, 'the metadata', L.end - IMAGE_HEADER_SIZE, IMAGE_HEADER_SIZE, b.length - IMAGE_HEADER_SIZE);
  if (checkHash) {
    const meta = Buffer.from(b.subarray(0, L.end));
    const want = meta.readBigUInt64LE(H.metaHash);
    meta.writeBigUInt64LE(0n, H.metaHash);
    const got = xxh64(meta);
    if (got !== want) {
      corrupt(name, 'header.meta_hash', H.metaHash,
        `the header and metadata (offsets 0..${L.end}) hash to 0x${got.toString(16)}, the image says 0x${want.toString(16)}`);
    }
  }
  if (h.stringsSize === 0 || b[L.strings + h.stringsSize - 1] !== 0) {
    corrupt(name, 'header.strings_size', H.stringsSize, `the string table must end with NUL (value ${h.stringsSize})`);
  }
  const u32 = (off: number): number => b.readUInt32LE(off);
  const u64 = (off: number): bigint => b.readBigUInt64LE(off);

  // What XRSTOR would fault on at the end of a restore (the restorer's check_xsave).
  const x = IMAGE_HEADER_SIZE;
  if (u32(x + 24) >>> 16) corrupt(name, 'xsave.mxcsr', x + 24, 'reserved MXCSR bits set');
  if (u64(x + 512) & ~u64(H.xcr0) & U64_MAX) corrupt(name, 'xsave.xstate_bv', x + 512, 'state components outside the image\'s XCR0');
  if (u64(x + 512) >> BigInt(NXCOMP)) corrupt(name, 'xsave.xstate_bv', x + 512, 'components 16 and above in use (images do not carry them)');
  for (let off = 520; off < IMG.XSAVE_MIN; off += 8) {
    if (u64(x + off) !== 0n) corrupt(name, `xsave.${off === 520 ? 'xcomp_bv' : 'header'}`, x + off, 'not a standard-form XSAVE header (must be zero)');
  }
  // Every component in use must lie in the bytes stored, where the image's own layout puts it (no vendor's table).
  const bv = u64(x + 512);
  for (const c of h.xsaveComponents) {
    if ((bv >> BigInt(c.index)) & 1n && c.offset + c.size > h.xsaveLen) {
      corrupt(name, 'header.xsave_len', H.xsaveLen, `XSAVE component ${c.index} is in use (bytes ${c.offset}..${c.offset + c.size}) but only ${h.xsaveLen} bytes are stored`);
    }
  }
  /** The string (off, len) of the table, or undefined when the reference is bad. */
  const str = (off: number, len: number): string | undefined => {
    if (len === 0) return '';
    if (off + len >= h.stringsSize) return undefined;
    const s = b.subarray(L.strings + off, L.strings + off + len);
    if (b[L.strings + off + len] !== 0 || s.includes(0)) return undefined;
    return s.toString('utf8');
  };

  // Regions, their runs and bitmaps.
  const regions: ImageRegion[] = [];
  let prevEnd = 0, nextRun = 0, nextWord = 0, pages = 0;
  for (let i = 0; i < h.nregions; i++) {
    const o = L.regions + i * IMG_REGION_SIZE;
    const R = IMG_REGION;
    const at = (field: string, rel: number, why: string): never => corrupt(name, `region[${i}].${field}`, o + rel, why);
    const start = small(u64(o + R.start)), end = small(u64(o + R.end));
    if (start % IMAGE_PAGE || end % IMAGE_PAGE) at('start', R.start, 'start and end must be page-aligned');
    if (start >= end) at('end', R.end, 'end must be above start');
    if (start < USER_MIN || end > USER_MAX) at('start', R.start, 'outside user space');
    if (overlaps(start, end, ZONE_START, ZONE_END)) at('start', R.start, `overlaps the restorer's zone 0x${ZONE_START.toString(16)}..0x${ZONE_END.toString(16)}`);
    if (start < prevEnd) at('start', R.start, 'regions overlap or are not sorted');
    prevEnd = end;
    const prot = u32(o + R.prot), kindCode = u32(o + R.kind);
    if (prot & ~(IMG.PROT_READ | IMG.PROT_WRITE | IMG.PROT_EXEC)) at('prot', R.prot, 'unknown protection bits');
    const kind = REGION_KINDS[kindCode] ?? at('kind', R.kind, 'unknown kind');
    const nameOff = u32(o + R.nameOff), nameLen = u32(o + R.nameLen);
    const regionName = str(nameOff, nameLen);
    if (regionName === undefined) at('name_off', R.nameOff, 'name outside the string table or not NUL-terminated');
    const isFile = kind === 'file' || kind === 'file-shared';
    const offset = u64(o + R.offset);
    if (isFile) {
      if (!regionName!.startsWith('/')) at('name_off', R.nameOff, 'a file region needs an absolute path');
      if (offset % BigInt(IMAGE_PAGE)) at('offset', R.offset, 'file offset must be page-aligned');
      if (offset > BigInt(Number.MAX_SAFE_INTEGER)) at('offset', R.offset, 'file offset beyond 2^53');
    }
    const firstRun = u32(o + R.firstRun), nruns = u32(o + R.nruns), pageMapCode = u32(o + R.pageMap), firstWord = u32(o + R.firstWord), nwords = u32(o + R.nwords);
    if (firstRun !== nextRun) at('first_run', R.firstRun, 'runs must follow the region order without gaps');
    if (nruns > h.nruns - nextRun) at('nruns', R.nruns, 'more runs than the run table holds');
    if (firstWord !== nextWord) at('first_word', R.firstWord, 'bitmaps must follow the region order without gaps');
    const pageMap = PAGE_MAPS[pageMapCode] ?? at('page_map', R.pageMap, `unknown page map (${PAGE_MAPS.map((m, c) => `${c} ${m}`).join(', ')})`);
    const npages = (end - start) / IMAGE_PAGE;
    let regionPages = 0;
    if (pageMap === 'runs') {
      if (nwords) at('nwords', R.nwords, 'a region listed by runs has no bitmap words');
      let prev = start;
      for (let k = firstRun; k < firstRun + nruns; k++) {
        const ro = L.runs + k * IMG_RUN_SIZE;
        const addr = small(u64(ro + IMG_RUN.addr)), n = u64(ro + IMG_RUN.npages);
        if (addr % IMAGE_PAGE) corrupt(name, `run[${k}].addr`, ro + IMG_RUN.addr, 'not page-aligned');
        if (n === 0n) corrupt(name, `run[${k}].npages`, ro + IMG_RUN.npages, 'empty run');
        if (addr < prev) corrupt(name, `run[${k}].addr`, ro + IMG_RUN.addr, 'runs of a region overlap or are not sorted');
        if (addr >= end || n > BigInt((end - addr) / IMAGE_PAGE)) corrupt(name, `run[${k}].npages`, ro + IMG_RUN.npages, 'run extends past its region\'s end');
        prev = addr + Number(n) * IMAGE_PAGE;
        regionPages += Number(n);
      }
    } else {
      if (nruns) at('nruns', R.nruns, 'a region listed by a bitmap has no runs');
      if (nwords !== Math.ceil(npages / 64)) at('nwords', R.nwords, 'not one bit per page of the region');
      if (nwords > h.nwords - nextWord) at('nwords', R.nwords, 'more words than the bitmap table holds');
      for (let k = 0; k < nwords; k++) {
        const wo = L.words + (nextWord + k) * 8;
        regionPages += popcount32(u32(wo)) + popcount32(u32(wo + 4));
      }
      const tail = npages % 64;
      if (tail && (u64(L.words + (nextWord + nwords - 1) * 8) >> BigInt(tail)) !== 0n) {
        const k = nextWord + nwords - 1;
        corrupt(name, `bitmap word[${k}].bits`, L.words + k * 8, 'bits set past the region\'s last page');
      }
    }
    if (kind === 'file-shared' && (nruns || nwords)) at('nruns', R.nruns, 'a shared file region carries no pages');
    nextRun += nruns;
    nextWord += nwords;
    pages += regionPages;
    const hash = b.subarray(o + R.contentHash, o + IMG_REGION_SIZE);
    const region: ImageRegion = { index: i, start, end, prot, kind, offset: Number(offset), pageMap, pages: regionPages };
    if (nameLen) region.name = regionName!;
    if (isFile) {
      region.path = regionName!;
      const size = u64(o + R.size);
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) at('size', R.size, 'file size beyond 2^53');
      region.file = { dev: u64(o + R.dev), ino: u64(o + R.ino), size: Number(size), mtimeNs: b.readBigInt64LE(o + R.mtimeSec) * 1_000_000_000n + BigInt(u32(o + R.mtimeNsec)) };
    }
    if (hash.some((x) => x !== 0)) region.contentHash = hash.toString('hex');
    regions.push(region);
  }
  if (nextRun !== h.nruns) corrupt(name, 'header.nruns', H.nruns, `runs left over that no region claims (value ${h.nruns})`);
  if (nextWord !== h.nwords) corrupt(name, 'header.nwords', H.nwords, `bitmap words left over that no region claims (value ${h.nwords})`);
  if (pages !== h.dataPages) corrupt(name, 'header.data_pages', H.dataPages, `does not equal the pages the runs and bitmaps list (value ${h.dataPages})`);

  // Descriptors. The restorer does not use this table; its consumers (the stub) do, so it is checked here too.
  const fds: ImageFd[] = [];
  const seenFd = new Set<number>();
  for (let i = 0; i < h.nfds; i++) {
    const o = L.fds + i * IMG_FD_SIZE;
    const F = IMG_FD;
    const at = (field: string, rel: number, why: string): never => corrupt(name, `fd[${i}].${field}`, o + rel, why);
    const fd = b.readInt32LE(o + F.fd);
    if (fd < 0 || fd >= 1 << 20 || seenFd.has(fd)) at('fd', F.fd, 'descriptor number negative, above 2^20 or repeated');
    seenFd.add(fd);
    const path = str(u32(o + F.pathOff), u32(o + F.pathLen));
    if (path === undefined) at('path_off', F.pathOff, 'path outside the string table or not NUL-terminated');
    const flags = u32(o + F.flags);
    const kind = FD_KINDS[u32(o + F.kind)] ?? at('kind', F.kind, 'unknown kind');
    if (flags & ~IMG.FD_F_IMAGE) at('flags', F.flags, 'unknown flag bits');
    const pos = u64(o + F.pos);
    if (pos !== U64_MAX && pos > BigInt(Number.MAX_SAFE_INTEGER)) at('pos', F.pos, 'position beyond 2^53');
    fds.push({
      fd, fdFlags: u32(o + F.fdFlags), flFlags: u32(o + F.flFlags), mode: u32(o + F.mode), pos: pos === U64_MAX ? null : Number(pos),
      dev: u64(o + F.dev), ino: u64(o + F.ino), path: path!, kind, image: (flags & IMG.FD_F_IMAGE) !== 0,
    });
  }

  // Header fields that point into the tables or into memory.
  const hdrBad = (field: string, off: number, why: string, v: number | bigint): never => corrupt(name, `header.${field}`, off, `${why} (value ${v})`);
  const cwd = str(u32(H.cwdOff), u32(H.cwdLen));
  if (cwd === undefined || !cwd.startsWith('/')) hdrBad('cwd_off', H.cwdOff, 'cwd is not an absolute path inside the string table', u32(H.cwdOff));
  const exe = str(u32(H.exeOff), u32(H.exeLen));
  if (exe === undefined) hdrBad('exe_off', H.exeOff, 'outside the string table', u32(H.exeOff));

  const special: ImageSpecial[] = [];
  let seen = 0;
  for (let i = 0; i < IMG.NSPECIAL; i++) {
    const o = H.special + i * IMG_SPECIAL_SIZE;
    const s0 = small(u64(o + IMG_SPECIAL.start)), s1 = small(u64(o + IMG_SPECIAL.end)), kind = u32(o + IMG_SPECIAL.kind);
    if (kind === 0) {
      if (s0 || s1) hdrBad('special', o, 'an unused slot must be zero', s0);
      continue;
    }
    const specialKind = SPECIAL_KINDS[kind];
    if (!specialKind || seen & (1 << kind)) hdrBad('special.kind', o + IMG_SPECIAL.kind, 'unknown or repeated kind', kind);
    seen |= 1 << kind;
    if (s0 % IMAGE_PAGE || s1 % IMAGE_PAGE || s0 >= s1 || s0 < USER_MIN || s1 > USER_MAX) {
      hdrBad('special.start', o, 'not a page-aligned range in user space', s0);
    }
    if (overlaps(s0, s1, ZONE_START, ZONE_END)) hdrBad('special.start', o, 'overlaps the restorer\'s zone', s0);
    if (regions.some((r) => overlaps(s0, s1, r.start, r.end))) hdrBad('special.start', o, 'overlaps a memory region', s0);
    special.push({ kind: specialKind!, start: s0, end: s1 });
  }

  const find = (addr: number, len: number): ImageRegion | undefined => regions.find((r) => addr >= r.start && addr + len <= r.end);
  const rip = small(u64(H.rip));
  if (!((find(rip, 1)?.prot ?? 0) & 4)) hdrBad('regs.rip', H.rip, 'not inside an executable region', u64(H.rip));
  const rsp = small(u64(H.rsp));
  if (((find(rsp - 8, 16)?.prot ?? 0) & 3) !== 3) hdrBad('regs.rsp', H.rsp, 'not inside a writable region', u64(H.rsp));
  const resume = small(u64(H.resumeBlock));
  if (((find(resume, IMG_RESUME_SIZE)?.prot ?? 0) & 3) !== 3) hdrBad('resume_block', H.resumeBlock, 'not inside a writable region', u64(H.resumeBlock));
  const rseqAddr = small(u64(H.rseqAddr)), rseqLen = u32(H.rseqLen);
  if (rseqAddr && (!find(rseqAddr, rseqLen) || rseqLen < 20 || rseqLen > 4096 || rseqAddr % 32)) {
    hdrBad('rseq_addr', H.rseqAddr, 'rseq area not 32-byte aligned inside a region, or bad length', rseqAddr);
  }
  if (u64(H.fsBase) >= BigInt(USER_MAX)) hdrBad('regs.fs_base', H.fsBase, 'outside user space', u64(H.fsBase));
  if (u64(H.gsBase) >= BigInt(USER_MAX)) hdrBad('regs.gs_base', H.gsBase, 'outside user space', u64(H.gsBase));

  const auxvWords = u32(H.auxvWords);
  if (auxvWords > IMG.AUXV_WORDS || auxvWords & 1 || auxvWords === 0) hdrBad('mm.auxv_words', H.auxvWords, `must be even and 2..${IMG.AUXV_WORDS}`, auxvWords);
  const M = IMG_MM;
  const mm = [M.startCode, M.endCode, M.startData, M.endData, M.startBrk, M.brk, M.startStack, M.argStart, M.argEnd, M.envStart, M.envEnd].map((f) => u64(H.mm + f));
  const [startCode, endCode, startData, endData, startBrk, brk, startStack, argStart, argEnd, envStart, envEnd] = mm as [
    bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint];
  const top = BigInt(USER_MAX);
  if (startCode > endCode || startData > endData || startBrk > brk || argStart > argEnd || envStart > envEnd || brk >= top ||
      startStack >= top || envEnd >= top) {
    hdrBad('mm', H.mm, 'memory bounds out of order or outside user space', startCode);
  }
  for (let i = 0; i < IMG.NRLIMIT; i++) {
    const o = H.rlimits + i * IMG_RLIMIT_SIZE;
    if (u64(o + IMG_RLIMIT.cur) > u64(o + IMG_RLIMIT.max)) hdrBad('rlimits', o, 'soft limit above the hard limit', i);
  }
  const umask = u32(H.umask);
  if (umask & ~0o777) hdrBad('umask', H.umask, 'not a permission mask', umask);
  const altFlags = u32(H.altstackFlags);
  if (altFlags & ~(1 | 2 | 0x80000000)) hdrBad('altstack_flags', H.altstackFlags, 'unknown sigaltstack flags', altFlags);

  // Files: one entry per path. The restorer checks identity per region; a path with two identities cannot be given one --file copy.
  const files = new Map<string, ImageFile>();
  for (const r of regions) {
    if (!r.path || !r.file) continue;
    const f = files.get(r.path);
    if (!f) {
      files.set(r.path, { path: r.path, ...r.file, shared: r.kind === 'file-shared', regions: [r.index] });
      continue;
    }
    if (f.size !== r.file.size || f.ino !== r.file.ino || f.dev !== r.file.dev) {
      corrupt(name, `region[${r.index}].size`, L.regions + r.index * IMG_REGION_SIZE + IMG_REGION.size,
        `${r.path} has another identity than in region[${f.regions[0]}] (size ${r.file.size}, not ${f.size})`);
    }
    f.shared ||= r.kind === 'file-shared';
    f.regions.push(r.index);
  }

  const comm = b.subarray(H.comm, H.comm + 16); // char comm[16]: TASK_COMM_LEN
  const nul = comm.indexOf(0);
  return {
    version: IMAGE_VERSION, flags: h.flags, sharedSkipped: (h.flags & IMG.F_SHARED_SKIPPED) !== 0, pid: b.readInt32LE(H.pid),
    tid: b.readInt32LE(H.tid), ppid: b.readInt32LE(H.ppid), comm: comm.toString('utf8', 0, nul < 0 ? 16 : nul), exe: exe!,
    cwd: cwd!, umask, xcr0: u64(H.xcr0), xsaveSize: h.xsaveSize, xsaveLen: h.xsaveLen, xsaveComponents: h.xsaveComponents, cpu: h.cpu,
    cpuNeeds: { features: h.cpu.inUse, xcr0: u64(H.xcr0) & 0xffffn }, dumpRealtimeNs: u64(H.dumpRealtimeNs), nruns: h.nruns,
    nwords: h.nwords, dataPages: h.dataPages, metadataEnd: L.end, regions, files: [...files.values()], fds, special,
  };
}

function readPrefix(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got === length ? buf : buf.subarray(0, got);
}

/**
 * Reads and validates the header and metadata of an image, given as its bytes
 * or as a file path; unless `metadataOnly`, the source must also hold exactly
 * the page data and the trailer (whose magic is checked; data_hash is left to
 * the restorer, which hashes the pages as they land). Throws RexError
 * (IMAGE_MALFORMED, IMAGE_TRUNCATED) naming the field and byte offset.
 */
export function readImageInfo(source: Uint8Array | string, options: ReadImageOptions = {}): ImageInfo {
  let name = options.name ?? (typeof source === 'string' ? source : '<image>');
  let head: Buffer;
  let total: number;
  let tail: () => Buffer;
  if (typeof source === 'string') {
    let fd: number;
    try {
      fd = openSync(source, 'r');
    } catch (e) {
      throw new RexError(ErrorCodes.IMAGE_TRUNCATED, `cannot open the image: ${(e as Error).message}`, { where: name, cause: e });
    }
    try {
      total = fstatSync(fd).size;
      const first = readPrefix(fd, IMAGE_HEADER_SIZE, 0);
      const h = checkHeader(first, name);
      head = h.layout.end <= first.length ? first : Buffer.concat([first, readPrefix(fd, h.layout.end - first.length, first.length)]);
      const at = Math.max(0, total - IMAGE_TRAILER_SIZE);
      const trailer = readPrefix(fd, IMAGE_TRAILER_SIZE, at);
      tail = () => trailer;
    } finally {
      closeSync(fd);
    }
  } else {
    head = Buffer.from(source.buffer, source.byteOffset, source.byteLength);
    total = head.length;
    const whole = head;
    tail = () => whole.subarray(Math.max(0, total - IMAGE_TRAILER_SIZE));
  }
  name ||= '<image>';
  const h = checkHeader(head, name);
  const info = checkMetadata(head, name, h, options.checkHash ?? true);
  const imageBytes = h.layout.end + h.dataPages * IMAGE_PAGE + IMAGE_TRAILER_SIZE;
  if (!options.metadataOnly) {
    if (total < imageBytes) {
      const dataEnd = h.layout.end + h.dataPages * IMAGE_PAGE;
      if (total < dataEnd) truncated(name, 'page data', h.dataPages * IMAGE_PAGE, h.layout.end, total - h.layout.end);
      truncated(name, 'trailer', IMAGE_TRAILER_SIZE, dataEnd, total - dataEnd);
    }
    if (total > imageBytes) corrupt(name, 'trailer', imageBytes - IMAGE_TRAILER_SIZE, `${total - imageBytes} bytes follow the trailer`);
    if (tail().toString('latin1', 0, IMG.MAGIC_SIZE) !== IMG.TRAILER_MAGIC) {
      corrupt(name, 'trailer.magic', imageBytes - IMAGE_TRAILER_SIZE, 'not "REXEND\\r\\n"');
    }
  }
  return { ...info, imageBytes, metadataBytes: h.layout.end + IMAGE_TRAILER_SIZE };
}
