/**
 * A small, strict ELF64 little-endian (x86-64) reader: section headers, section
 * contents (including SHF_COMPRESSED zlib sections), symbol tables, the GNU
 * build-id note and .gnu_debuglink.
 *
 * Every read is bounds-checked against the file and the section it belongs to,
 * because the input is untrusted (a library the user points repdb at, or a
 * debug file found on disk); a bad file must give a RexError that names the
 * section and offset, never a TypeError/RangeError from Buffer.
 */
import { readFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';
import { ErrorCodes, RexError } from '../../util/errors.js';

/** One section header, with its name resolved. */
export interface ElfSection {
  index: number;
  name: string;
  type: number;
  flags: bigint;
  addr: bigint;
  offset: number;
  size: number;
  link: number;
  info: number;
  entsize: number;
}

/** One symbol table entry (from .symtab or .dynsym). */
export interface ElfSymbol {
  name: string;
  value: bigint;
  size: bigint;
  binding: 'local' | 'global' | 'weak' | 'other';
  type: 'notype' | 'object' | 'func' | 'section' | 'file' | 'common' | 'tls' | 'ifunc' | 'other';
  /** Section index; 0 (SHN_UNDEF) for undefined symbols. */
  shndx: number;
  table: '.symtab' | '.dynsym';
  /** st_other's visibility (STV_*). */
  visibility: 'default' | 'internal' | 'hidden' | 'protected';
  /**
   * .dynsym only, from .gnu.version with .gnu.version_d (defined symbols) or
   * .gnu.version_r (undefined ones): the symbol's version name, absent for an
   * unversioned symbol (index 0/1, or the file's base version).
   */
  version?: string;
  /** The version is not the default one (readelf's `name@V`, as opposed to `name@@V`). */
  versionHidden?: boolean;
}

/** The .gnu_debuglink contents: a file name and the CRC-32 of that file. */
export interface DebugLink {
  name: string;
  crc: number;
}

/** A parsed ELF file; section contents are decoded on demand. */
export interface ElfFile {
  name: string;
  buf: Buffer;
  /** ET_REL, ET_EXEC, ET_DYN... */
  type: number;
  machine: number;
  sections: ElfSection[];
  /** The first section with this name, or undefined. */
  section(name: string): ElfSection | undefined;
  /** Contents of a section (decompressed if SHF_COMPRESSED); empty for SHT_NOBITS. */
  data(section: ElfSection): Buffer;
  /** Symbols of .symtab and .dynsym (empty arrays when absent). */
  symbols(): ElfSymbol[];
  /** Lower-case hex of NT_GNU_BUILD_ID, or undefined. */
  buildId(): string | undefined;
  debugLink(): DebugLink | undefined;
}

export const SHT_NOBITS = 8;
export const SHT_SYMTAB = 2;
export const SHT_DYNSYM = 11;
export const SHT_NOTE = 7;
export const SHT_GNU_VERDEF = 0x6ffffffd;
export const SHT_GNU_VERNEED = 0x6ffffffe;
export const SHT_GNU_VERSYM = 0x6fffffff;
const VER_FLG_BASE = 1;
const VERSYM_HIDDEN = 0x8000;
export const SHF_COMPRESSED = 0x800n;
const ELFCOMPRESS_ZLIB = 1;
const EM_X86_64 = 62;
/** Refuse to inflate a section beyond this: a 40-byte header must not make us allocate 16 EiB. */
const MAX_DECOMPRESSED = 1 << 30;

function fail(file: string, where: string, msg: string, hint?: string): never {
  throw new RexError(ErrorCodes.ELF_MALFORMED, `${file}: ${where}: ${msg}`, {
    where: `${file}:${where}`,
    hint: hint ?? 'the file is truncated or is not a valid ELF object; rebuild it or point repdb at the right file',
  });
}

function hex(n: number | bigint): string {
  return '0x' + n.toString(16);
}

/** Reads an ELF file from a buffer; `name` is used in error messages. */
export function readElf(buf: Buffer, name: string): ElfFile {
  if (buf.length < 16 || buf[0] !== 0x7f || buf[1] !== 0x45 || buf[2] !== 0x4c || buf[3] !== 0x46) {
    fail(name, 'offset 0x0', 'not an ELF file (bad magic)', 'repdb reads ELF shared libraries and executables');
  }
  if (buf[4] !== 2) fail(name, 'ELF header offset 0x4', `ELF class ${buf[4]} is not supported: only ELF64 (x86-64) is`, 'REX clusters are homogeneous x86-64 hosts; build the library for x86-64');
  if (buf[5] !== 1) fail(name, 'ELF header offset 0x5', `data encoding ${buf[5]} is not supported: only little-endian is`, 'REX clusters are homogeneous x86-64 hosts; build the library for x86-64');
  if (buf.length < 64) fail(name, 'ELF header', `file is ${buf.length} bytes, shorter than the 64-byte ELF64 header`);
  const type = buf.readUInt16LE(16);
  const machine = buf.readUInt16LE(18);
  if (machine !== EM_X86_64) fail(name, 'ELF header offset 0x12', `machine ${machine} is not x86-64 (62)`, 'REX clusters are homogeneous x86-64 hosts; build the library for x86-64');
  const shoff = buf.readBigUInt64LE(40);
  const shentsize = buf.readUInt16LE(58);
  let shnum = buf.readUInt16LE(60);
  let shstrndx = buf.readUInt16LE(62);
  if (shoff === 0n) fail(name, 'ELF header', 'no section header table (e_shoff is 0)', 'repdb needs section headers; do not use sstrip');
  if (shentsize !== 64) fail(name, 'ELF header offset 0x3a', `section header size ${shentsize}, expected 64`);
  if (shoff > BigInt(buf.length)) fail(name, 'ELF header offset 0x28', `section header table offset ${hex(shoff)} is past the end of the file (${hex(buf.length)} bytes)`);
  const sho = Number(shoff);
  const shdr = (i: number, what: string): number => {
    const off = sho + i * 64;
    if (off + 64 > buf.length) fail(name, `section header ${i} at offset ${hex(off)}`, `${what}: section header table runs past the end of the file (${hex(buf.length)} bytes)`);
    return off;
  };
  // Extended numbering: with >= SHN_LORESERVE sections, the real counts live in section header 0.
  if (shnum === 0) {
    const o = shdr(0, 'extended section count');
    const n = buf.readBigUInt64LE(o + 32);
    if (n > BigInt(buf.length / 64)) fail(name, `section header 0 at offset ${hex(o)}`, `section count ${n} cannot fit in the file`);
    shnum = Number(n);
  }
  if (shstrndx === 0xffff) shstrndx = buf.readUInt32LE(shdr(0, 'extended string table index') + 40);
  if (sho + shnum * 64 > buf.length) fail(name, `section header table at offset ${hex(sho)}`, `${shnum} section headers run past the end of the file (${hex(buf.length)} bytes)`);
  if (shnum > 0 && shstrndx >= shnum) fail(name, 'ELF header offset 0x3e', `section name table index ${shstrndx} is out of range (${shnum} sections)`);

  const raw: ElfSection[] = [];
  for (let i = 0; i < shnum; i++) {
    const o = sho + i * 64;
    const stype = buf.readUInt32LE(o + 4);
    const size64 = buf.readBigUInt64LE(o + 32);
    const off64 = buf.readBigUInt64LE(o + 24);
    // NOBITS sections occupy no file space, so their offset/size are not checked against the file.
    if (stype !== SHT_NOBITS && i !== 0 && off64 + size64 > BigInt(buf.length)) {
      fail(name, `section header ${i} at offset ${hex(o)}`, `section data ${hex(off64)}+${hex(size64)} runs past the end of the file (${hex(buf.length)} bytes)`);
    }
    raw.push({
      index: i,
      name: '',
      nameOffset: buf.readUInt32LE(o),
      type: stype,
      flags: buf.readBigUInt64LE(o + 8),
      addr: buf.readBigUInt64LE(o + 16),
      offset: stype === SHT_NOBITS ? 0 : Number(off64),
      size: stype === SHT_NOBITS ? Number(size64 > 0xffffffffn ? 0n : size64) : Number(size64),
      link: buf.readUInt32LE(o + 40),
      info: buf.readUInt32LE(o + 44),
      entsize: Number(buf.readBigUInt64LE(o + 56) & 0xffffffffn),
    } as ElfSection & { nameOffset: number });
  }
  if (shnum > 0) {
    const strtab = raw[shstrndx]!;
    if (strtab.type === SHT_NOBITS) fail(name, `section header ${shstrndx}`, 'the section name table has no contents (SHT_NOBITS)');
    for (const s of raw as (ElfSection & { nameOffset: number })[]) {
      s.name = cstring(buf, strtab.offset, strtab.size, s.nameOffset, name, `section ${s.index} name`, '.shstrtab');
      delete (s as { nameOffset?: number }).nameOffset;
    }
  }
  const cache = new Map<number, Buffer>();
  const file: ElfFile = {
    name,
    buf,
    type,
    machine,
    sections: raw,
    section: (n) => raw.find((s) => s.name === n),
    data: (s) => {
      let d = cache.get(s.index);
      if (!d) {
        d = sectionData(buf, s, name);
        cache.set(s.index, d);
      }
      return d;
    },
    symbols: () => [...readSymbols(file, '.symtab'), ...readSymbols(file, '.dynsym')],
    buildId: () => readBuildId(file),
    debugLink: () => readDebugLink(file),
  };
  return file;
}

/** Reads a NUL-terminated string at `off` within the string table [base, base+size). */
function cstring(buf: Buffer, base: number, size: number, off: number, file: string, what: string, table: string): string {
  if (off >= size) fail(file, `section ${table} offset ${hex(off)}`, `${what}: string offset is past the end of ${table} (${hex(size)} bytes)`);
  const start = base + off;
  const end = buf.indexOf(0, start);
  if (end < 0 || end >= base + size) fail(file, `section ${table} offset ${hex(off)}`, `${what}: string is not NUL-terminated within ${table}`);
  return buf.toString('utf8', start, end);
}

function sectionData(buf: Buffer, s: ElfSection, file: string): Buffer {
  if (s.type === SHT_NOBITS) return Buffer.alloc(0);
  const d = buf.subarray(s.offset, s.offset + s.size);
  if ((s.flags & SHF_COMPRESSED) === 0n) return d;
  // Elf64_Chdr: ch_type u32, ch_reserved u32, ch_size u64, ch_addralign u64.
  if (d.length < 24) fail(file, `section ${s.name} offset 0x0`, `compressed section is ${d.length} bytes, shorter than its 24-byte Elf64_Chdr`);
  const ctype = d.readUInt32LE(0);
  const usize = d.readBigUInt64LE(8);
  if (ctype !== ELFCOMPRESS_ZLIB) {
    fail(file, `section ${s.name} offset 0x0`, `compression type ${ctype} is not supported (only ELFCOMPRESS_ZLIB)`, 'decompress it with `objcopy --decompress-debug-sections`');
  }
  if (usize > BigInt(MAX_DECOMPRESSED)) fail(file, `section ${s.name} offset 0x8`, `declared uncompressed size ${usize} is over the 1 GiB limit`);
  let out: Buffer;
  try {
    out = inflateSync(d.subarray(24), { maxOutputLength: Number(usize) + 1 });
  } catch (e) {
    fail(file, `section ${s.name} offset 0x18`, `zlib data does not inflate: ${(e as Error).message}`);
  }
  if (out.length !== Number(usize)) fail(file, `section ${s.name} offset 0x8`, `inflated to ${out.length} bytes but the header says ${usize}`);
  return out;
}

const BINDINGS = ['local', 'global', 'weak'] as const;
const VISIBILITIES = ['default', 'internal', 'hidden', 'protected'] as const;

/**
 * Version names by version index, from .gnu.version_d (definitions: the file's
 * own versions; the base one, which names the file, reads as unversioned) and
 * .gnu.version_r (versions needed from other objects). Every entry and every
 * name is bounds-checked: a version section is as untrusted as the rest.
 */
function readVersionNames(elf: ElfFile): Map<number, string> {
  const names = new Map<number, string>();
  const strsOf = (sec: ElfSection): Buffer => {
    if (sec.link >= elf.sections.length) fail(elf.name, `section ${sec.name} header`, `string table link ${sec.link} is out of range`);
    return elf.data(elf.sections[sec.link]!);
  };
  const str = (strs: Buffer, off: number, sec: ElfSection, at: number): string =>
    cstring(strs, 0, strs.length, off, elf.name, `version name at ${sec.name}+${hex(at)}`, elf.sections[sec.link]!.name);
  const need = (d: Buffer, sec: ElfSection, o: number, n: number, what: string): void => {
    if (o < 0 || o + n > d.length) fail(elf.name, `section ${sec.name} offset ${hex(o)}`, `${what} runs past the end of the section (${hex(d.length)} bytes)`);
  };
  const def = elf.sections.find((s) => s.type === SHT_GNU_VERDEF);
  if (def) {
    const d = elf.data(def);
    const strs = strsOf(def);
    let o = 0;
    // vd_next/vn_next are unsigned, so the chain only moves forward; 0x10000 entries bound it anyway.
    for (let i = 0; i < 0x10000; i++) {
      need(d, def, o, 20, 'Elf64_Verdef');
      const flags = d.readUInt16LE(o + 2);
      const ndx = d.readUInt16LE(o + 4);
      const cnt = d.readUInt16LE(o + 6);
      const aux = d.readUInt32LE(o + 12);
      const next = d.readUInt32LE(o + 16);
      if (cnt > 0) {
        need(d, def, o + aux, 8, 'Elf64_Verdaux');
        if ((flags & VER_FLG_BASE) === 0) names.set(ndx & 0x7fff, str(strs, d.readUInt32LE(o + aux), def, o + aux));
      }
      if (next === 0) break;
      o += next;
    }
  }
  const req = elf.sections.find((s) => s.type === SHT_GNU_VERNEED);
  if (req) {
    const d = elf.data(req);
    const strs = strsOf(req);
    let o = 0;
    // vd_next/vn_next are unsigned, so the chain only moves forward; 0x10000 entries bound it anyway.
    for (let i = 0; i < 0x10000; i++) {
      need(d, req, o, 16, 'Elf64_Verneed');
      const cnt = d.readUInt16LE(o + 2);
      let a = o + d.readUInt32LE(o + 8);
      for (let k = 0; k < cnt; k++) {
        need(d, req, a, 16, 'Elf64_Vernaux');
        names.set(d.readUInt16LE(a + 6) & 0x7fff, str(strs, d.readUInt32LE(a + 8), req, a));
        const an = d.readUInt32LE(a + 12);
        if (an === 0) break;
        a += an;
      }
      const next = d.readUInt32LE(o + 12);
      if (next === 0) break;
      o += next;
    }
  }
  return names;
}
const STTYPES = ['notype', 'object', 'func', 'section', 'file', 'common', 'tls'] as const;

function readSymbols(elf: ElfFile, tableName: '.symtab' | '.dynsym'): ElfSymbol[] {
  const wanted = tableName === '.symtab' ? SHT_SYMTAB : SHT_DYNSYM;
  const sec = elf.sections.find((s) => s.type === wanted && s.name === tableName) ?? elf.sections.find((s) => s.type === wanted);
  if (!sec) return [];
  if (sec.type === SHT_NOBITS) return [];
  if (sec.link >= elf.sections.length) fail(elf.name, `section ${sec.name} header`, `string table link ${sec.link} is out of range`);
  const strsec = elf.sections[sec.link]!;
  if (strsec.type === SHT_NOBITS) return [];
  const d = elf.data(sec);
  const strs = elf.data(strsec);
  if (d.length % 24 !== 0) fail(elf.name, `section ${sec.name} offset 0x0`, `size ${hex(d.length)} is not a multiple of the 24-byte symbol entry`);
  // .gnu.version: one 16-bit index per .dynsym entry (0 local, 1 global, else a version; bit 15: not the default).
  let versym: Buffer | undefined;
  let verNames: Map<number, string> | undefined;
  if (tableName === '.dynsym') {
    const vs = elf.sections.find((s) => s.type === SHT_GNU_VERSYM);
    if (vs) {
      versym = elf.data(vs);
      if (versym.length !== (d.length / 24) * 2) fail(elf.name, `section ${vs.name} header`, `${versym.length / 2} version entries for ${d.length / 24} symbols in ${sec.name}`);
      verNames = readVersionNames(elf);
    }
  }
  const out: ElfSymbol[] = [];
  for (let o = 0; o < d.length; o += 24) {
    const nameOff = d.readUInt32LE(o);
    const info = d[o + 4]!;
    const shndx = d.readUInt16LE(o + 6);
    const bind = info >> 4;
    const t = info & 0xf;
    out.push({
      name: nameOff === 0 ? '' : cstring(strs, 0, strs.length, nameOff, elf.name, `symbol at ${sec.name}+${hex(o)}`, strsec.name),
      value: d.readBigUInt64LE(o + 8),
      size: d.readBigUInt64LE(o + 16),
      binding: BINDINGS[bind] ?? 'other',
      type: t === 10 ? 'ifunc' : (STTYPES[t] ?? 'other'),
      shndx,
      table: tableName,
      visibility: VISIBILITIES[d[o + 5]! & 3]!,
    });
    if (versym && verNames) {
      const v = versym.readUInt16LE((o / 24) * 2);
      const idx = v & 0x7fff;
      const name = idx > 1 ? verNames.get(idx) : undefined;
      if (idx > 1 && name === undefined && !isBaseIndex(elf, idx)) {
        fail(elf.name, `section .gnu.version entry ${o / 24}`, `version index ${idx} of symbol '${out[out.length - 1]!.name}' is not defined in .gnu.version_d or .gnu.version_r`);
      }
      if (name !== undefined) {
        out[out.length - 1]!.version = name;
        if (v & VERSYM_HIDDEN) out[out.length - 1]!.versionHidden = true;
      }
    }
  }
  return out;
}

/** The index of the file's base version (VER_FLG_BASE in .gnu.version_d): symbols with it are unversioned. */
function isBaseIndex(elf: ElfFile, idx: number): boolean {
  const def = elf.sections.find((s) => s.type === SHT_GNU_VERDEF);
  if (!def) return false;
  const d = elf.data(def);
  for (let o = 0, i = 0; o + 20 <= d.length && i < 0x10000; i++) {
    if ((d.readUInt16LE(o + 2) & VER_FLG_BASE) !== 0 && (d.readUInt16LE(o + 4) & 0x7fff) === idx) return true;
    const next = d.readUInt32LE(o + 16);
    if (next === 0) break;
    o += next;
  }
  return false;
}

/**
 * The functions an object exports: .dynsym symbols that are defined, global or
 * weak, STT_FUNC or STT_GNU_IFUNC, with default or protected visibility (what
 * dlsym() can find and a program can link against).
 */
export function exportedFunctions(elf: ElfFile): ElfSymbol[] {
  return readSymbols(elf, '.dynsym').filter(
    (s) => s.name !== '' && s.shndx !== 0 && (s.type === 'func' || s.type === 'ifunc') && (s.binding === 'global' || s.binding === 'weak') && (s.visibility === 'default' || s.visibility === 'protected'),
  );
}

/** The name a caller uses for an exported symbol: plain for the default (or no) version, `name@VERSION` for an older one. */
export function callableName(s: ElfSymbol): string {
  return s.version !== undefined && s.versionHidden ? `${s.name}@${s.version}` : s.name;
}

function readBuildId(elf: ElfFile): string | undefined {
  for (const s of elf.sections) {
    if (s.type !== SHT_NOTE) continue;
    const d = elf.data(s);
    let o = 0;
    while (o + 12 <= d.length) {
      const namesz = d.readUInt32LE(o);
      const descsz = d.readUInt32LE(o + 4);
      const ntype = d.readUInt32LE(o + 8);
      const nameStart = o + 12;
      const descStart = nameStart + ((namesz + 3) & ~3);
      const next = descStart + ((descsz + 3) & ~3);
      if (namesz > d.length || descsz > d.length || descStart + descsz > d.length) {
        fail(elf.name, `section ${s.name} offset ${hex(o)}`, `note (namesz ${namesz}, descsz ${descsz}) runs past the end of the section (${hex(d.length)} bytes)`);
      }
      const nm = d.toString('latin1', nameStart, nameStart + Math.max(0, namesz - 1));
      if (ntype === 3 && nm === 'GNU') return d.subarray(descStart, descStart + descsz).toString('hex'); // NT_GNU_BUILD_ID
      o = next;
    }
  }
  return undefined;
}

function readDebugLink(elf: ElfFile): DebugLink | undefined {
  const s = elf.section('.gnu_debuglink');
  if (!s || s.type === SHT_NOBITS) return undefined;
  const d = elf.data(s);
  const end = d.indexOf(0);
  if (end <= 0) fail(elf.name, `section .gnu_debuglink offset 0x0`, 'file name is empty or not NUL-terminated');
  const crcOff = (end + 4) & ~3;
  if (crcOff + 4 > d.length) fail(elf.name, `section .gnu_debuglink offset ${hex(crcOff)}`, `CRC-32 runs past the end of the section (${hex(d.length)} bytes)`);
  return { name: d.toString('utf8', 0, end), crc: d.readUInt32LE(crcOff) };
}

/** Defined function symbols (STT_FUNC/STT_GNU_IFUNC with a section) of .dynsym and .symtab, for checking entry points of stripped libraries. */
export function elfSymbols(path: string): ElfSymbol[] {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new RexError(ErrorCodes.ELF_MALFORMED, `${path}: cannot read: ${(e as Error).message}`, { where: path, cause: e });
  }
  const elf = readElf(buf, path);
  return elf.symbols().filter((s) => (s.type === 'func' || s.type === 'ifunc') && s.shndx !== 0 && s.name !== '');
}
