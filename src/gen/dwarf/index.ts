/**
 * Entry point of the DWARF reader: ELF file in, DebugInfo (src/gen/debuginfo.ts) out.
 * Finds separate debug info the way gdb does when the file itself has none.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import * as zlib from 'node:zlib';
import type { DebugInfo } from '../debuginfo.js';
import { readElf, type ElfFile } from '../elf/index.js';
import { ErrorCodes, RexError, isRexError } from '../../util/errors.js';
import { convert } from './convert.js';
import type { Sections } from './units.js';

export interface ReadDebugInfoOptions {
  /** Global debug directories searched for build-id and debuglink files; default ['/usr/lib/debug']. */
  debugRoots?: string[];
}

const EMPTY = Buffer.alloc(0);
const MISSING_HINT = 'rebuild with -g, or install the -dbgsym package, or write the entry-point XML by hand';

/** Reads the functions and types of an ELF file (or its separate debug file). */
export function readDebugInfo(path: string, opts: ReadDebugInfoOptions = {}): DebugInfo {
  const elf = readElf(readFile(path), path);
  let debug = elf;
  if (!hasDebugInfo(elf)) {
    const found = findSeparateDebug(elf, path, opts.debugRoots ?? ['/usr/lib/debug']);
    if (!found) {
      const tried = [elf.buildId() ? `build-id ${elf.buildId()}` : 'no build-id note', elf.debugLink() ? `.gnu_debuglink ${elf.debugLink()!.name}` : 'no .gnu_debuglink'].join(', ');
      throw new RexError(ErrorCodes.DWARF_MISSING, `${path}: no DWARF debug information (.debug_info), and no separate debug file found (${tried})`, { where: path, hint: MISSING_HINT });
    }
    debug = found;
  }
  return fromElf(elf, debug);
}

/** Reads DebugInfo from an in-memory ELF file with embedded DWARF (no separate-debug search); for fuzzing and tests. */
export function readDebugInfoFromBuffer(buf: Buffer, name: string): DebugInfo {
  const elf = readElf(buf, name);
  if (!hasDebugInfo(elf)) throw new RexError(ErrorCodes.DWARF_MISSING, `${name}: no DWARF debug information (.debug_info)`, { where: name, hint: MISSING_HINT });
  return fromElf(elf, elf);
}

function readFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new RexError(ErrorCodes.ELF_MALFORMED, `${path}: cannot read: ${(e as Error).message}`, { where: path, cause: e, hint: 'check the path to the library' });
  }
}

function hasDebugInfo(elf: ElfFile): boolean {
  const s = elf.section('.debug_info');
  return s !== undefined && s.type !== 8 && s.size > 0;
}

function fromElf(elf: ElfFile, debug: ElfFile): DebugInfo {
  const sec = (n: string): Buffer => {
    const s = debug.section(n);
    return s ? debug.data(s) : EMPTY;
  };
  const s: Sections = {
    file: debug.name,
    info: sec('.debug_info'),
    abbrev: sec('.debug_abbrev'),
    str: sec('.debug_str'),
    lineStr: sec('.debug_line_str'),
    strOffsets: sec('.debug_str_offsets'),
    addr: sec('.debug_addr'),
    line: sec('.debug_line'),
    hasTypesSection: debug.section('.debug_types') !== undefined,
  };
  const symbols = new Map<string, bigint>();
  for (const f of [elf, debug]) {
    for (const sym of f.symbols()) {
      if ((sym.type === 'func' || sym.type === 'ifunc') && sym.shndx !== 0 && sym.name !== '' && (sym.binding === 'global' || sym.binding === 'weak')) {
        // Versioned duplicates (memcpy@GLIBC_2.2.5) share the name; the first defined wins.
        if (!symbols.has(sym.name)) symbols.set(sym.name, sym.value);
      }
    }
  }
  return convert(s, { file: elf.name, debugFile: debug.name, symbols });
}

/**
 * gdb's order: /usr/lib/debug/.build-id/xx/yyyy.debug, then the .gnu_debuglink
 * name in the file's directory, its .debug/ subdirectory, and <root>/<dir>/.
 * A build-id file must carry the same build-id; a debuglink file must match the CRC.
 */
function findSeparateDebug(elf: ElfFile, path: string, roots: string[]): ElfFile | undefined {
  const id = elf.buildId();
  if (id && id.length > 2) {
    for (const root of roots) {
      const p = join(root, '.build-id', id.slice(0, 2), id.slice(2) + '.debug');
      const f = tryDebugFile(p, (cand) => cand.buildId() === id);
      if (f) return f;
    }
  }
  const link = elf.debugLink();
  if (link) {
    const dir = dirname(resolve(path));
    const cands = [join(dir, link.name), join(dir, '.debug', link.name), ...roots.map((r) => join(r, dir, link.name))];
    for (const p of cands) {
      if (resolve(p) === resolve(path)) continue;
      const f = tryDebugFile(p, (_cand, buf) => crc32(buf) === link.crc);
      if (f) return f;
    }
  }
  return undefined;
}

function tryDebugFile(p: string, accept: (elf: ElfFile, buf: Buffer) => boolean): ElfFile | undefined {
  if (!existsSync(p) || !statSync(p).isFile()) return undefined;
  const buf = readFileSync(p);
  let elf: ElfFile;
  try {
    elf = readElf(buf, p);
  } catch (e) {
    if (isRexError(e)) return undefined; // like gdb: an unreadable candidate is skipped
    throw e;
  }
  if (!accept(elf, buf) || !hasDebugInfo(elf)) return undefined;
  return elf;
}

let table: Uint32Array | undefined;

/** CRC-32 (IEEE, as .gnu_debuglink uses); node:zlib's when present (Node >= 20.15). */
export function crc32(buf: Buffer): number {
  const native = (zlib as { crc32?: (b: Buffer) => number }).crc32;
  if (native) return native(buf) >>> 0;
  if (!table) {
    table = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[i] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = table[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

