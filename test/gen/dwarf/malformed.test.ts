/**
 * Malformed and truncated DWARF: every failure is a RexError whose message names
 * the section and offset, never a TypeError/RangeError, a crash or a hang.
 * Corruptions are made at known places of a real gcc fixture (located with
 * readelf), then by fast-check at random places.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readDebugInfoFromBuffer } from '../../../src/gen/dwarf/index.js';
import { readElf, type ElfFile } from '../../../src/gen/elf/index.js';
import { ErrorCodes, isRexError } from '../../../src/util/errors.js';
import { buildFixture, readelfDies, rval, tempDir, type RDie } from './helpers.js';
import { runs } from '../../helpers/property.js';

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let lib5: string;
let buf5: Buffer;
let elf5: ElfFile;
let lib2: string;
let buf2: Buffer;
let elf2: ElfFile;
let zbuf: Buffer;

beforeAll(() => {
  lib5 = buildFixture(dir, 'fixture.c', 'libfx5.so', ['-gdwarf-5', '-O0']);
  buf5 = readFileSync(lib5);
  elf5 = readElf(buf5, lib5);
  lib2 = buildFixture(dir, 'fixture.c', 'libfx4o2.so', ['-gdwarf-4', '-O2']);
  buf2 = readFileSync(lib2);
  elf2 = readElf(buf2, lib2);
  const z = join(dir, 'libfxz.so');
  execFileSync('objcopy', ['--compress-debug-sections=zlib', lib5, z]);
  zbuf = readFileSync(z);
});

/** File offset of a section's contents. */
function sectionOffset(elf: ElfFile, name: string): number {
  return elf.section(name)!.offset;
}

/** File offset of a section's header field (sh_size at +32, sh_offset at +24). */
function sectionHeader(buf: Buffer, elf: ElfFile, name: string): number {
  const shoff = Number(buf.readBigUInt64LE(40));
  return shoff + elf.section(name)!.index * 64;
}

/** Runs the reader on `buf`, expecting a RexError; returns it. */
function expectRexError(buf: Buffer, name = 'bad.so'): { code: string; message: string; where?: string } {
  try {
    readDebugInfoFromBuffer(buf, name);
  } catch (e) {
    if (!isRexError(e)) throw new Error(`expected a RexError, got ${String(e)}\n${(e as Error).stack}`);
    return e;
  }
  throw new Error('expected a RexError, but the file was read');
}

function find(dies: Map<number, RDie>, pred: (d: RDie) => boolean): RDie {
  for (const d of dies.values()) if (pred(d)) return d;
  throw new Error('DIE not found');
}

describe('malformed DWARF gives a RexError naming the section and offset', () => {
  it('sanity: the unmodified fixtures read', () => {
    expect(readDebugInfoFromBuffer(buf5, 'ok.so').functions.length).toBeGreaterThan(10);
    expect(readDebugInfoFromBuffer(zbuf, 'okz.so').functions.length).toBeGreaterThan(10);
  });

  it('truncated .debug_info (sh_size cut at every 7th byte)', () => {
    const hdr = sectionHeader(buf5, elf5, '.debug_info');
    const size = Number(buf5.readBigUInt64LE(hdr + 32));
    for (let cut = 0; cut < size; cut += 7) {
      const b = Buffer.from(buf5);
      b.writeBigUInt64LE(BigInt(cut), hdr + 32);
      const e = expectRexError(b, 'cut.so');
      if (cut === 0) expect(e.code).toBe(ErrorCodes.DWARF_MISSING);
      else expect(e.message, `cut ${cut}`).toMatch(/^cut\.so: section \.debug_(info|abbrev|str|line_str|str_offsets|addr) offset 0x[0-9a-f]+: /);
    }
  });

  it('truncated files at many lengths', () => {
    for (let len = 0; len < buf5.length; len += 131) {
      const e = expectRexError(buf5.subarray(0, len), 'trunc.so');
      expect(e.message, `len ${len}`).toMatch(/^trunc\.so: (offset 0x0|ELF header|section header|section \S+ offset 0x)/);
    }
  });

  it('corrupted section headers', () => {
    let b = Buffer.from(buf5);
    b.writeBigUInt64LE(BigInt(b.length + 100), 40); // e_shoff past EOF
    expect(expectRexError(b).message).toMatch(/ELF header offset 0x28: section header table offset 0x[0-9a-f]+ is past the end of the file/);
    b = Buffer.from(buf5);
    const hdr = sectionHeader(b, elf5, '.debug_info');
    b.writeBigUInt64LE(0xffffffff0n, hdr + 24); // sh_offset far away
    expect(expectRexError(b).message).toMatch(new RegExp(`section header ${elf5.section('.debug_info')!.index} at offset 0x${hdr.toString(16)}: section data 0xffffffff0\\+0x[0-9a-f]+ runs past the end of the file`));
    b = Buffer.from(buf5);
    b.writeUInt16LE(999, 62); // e_shstrndx
    expect(expectRexError(b).message).toMatch(/ELF header offset 0x3e: section name table index 999 is out of range/);
  });

  it('bad abbreviation code', () => {
    const b = Buffer.from(buf5);
    const info = sectionOffset(elf5, '.debug_info');
    b[info + 12] = 0x7f; // first DIE of the first DWARF 5 unit (12-byte header)
    const e = expectRexError(b);
    expect(e.code).toBe(ErrorCodes.DWARF_MALFORMED);
    expect(e.message).toMatch(/section \.debug_info offset 0xc: abbreviation code 127 is not in the table at \.debug_abbrev\+0x0/);
    expect(e.where).toBe('bad.so:.debug_info+0xc');
  });

  it('ULEB128 overflow', () => {
    const b = Buffer.from(buf5);
    const info = sectionOffset(elf5, '.debug_info');
    b.fill(0x80, info + 12, info + 24);
    expect(expectRexError(b).message).toMatch(/section \.debug_info offset 0xc: abbreviation code is longer than 10 bytes \(overflow\)/);
  });

  it('out-of-range string offsets', () => {
    const b = Buffer.from(buf5);
    b.writeBigUInt64LE(4n, sectionHeader(b, elf5, '.debug_str') + 32);
    expect(expectRexError(b).message).toMatch(/section \.debug_str offset 0x[0-9a-f]+: string offset 0x[0-9a-f]+ \(from \.debug_info\+0x[0-9a-f]+\) is past the end of \.debug_str \(0x4 bytes\)/);
  });

  it('abbreviation table offset past the end of .debug_abbrev', () => {
    const b = Buffer.from(buf5);
    b.writeUInt32LE(0x7fff0000, sectionOffset(elf5, '.debug_info') + 8);
    expect(expectRexError(b).message).toMatch(/section \.debug_abbrev offset 0x7fff0000: abbreviation table offset 0x7fff0000 is past the end/);
  });

  it('unsupported DWARF version', () => {
    const b = Buffer.from(buf5);
    b.writeUInt16LE(6, sectionOffset(elf5, '.debug_info') + 4);
    const e = expectRexError(b);
    expect(e.code).toBe(ErrorCodes.DWARF_UNSUPPORTED);
    expect(e.message).toMatch(/section \.debug_info offset 0x4: DWARF version 6 is not supported/);
  });

  it('a typedef that refers to itself (reference cycle without a pointer)', () => {
    const { byOffset } = readelfDies(lib5);
    const td = find(byOffset, (d) => d.tag === 'DW_TAG_typedef' && rval(d.attrs.get('DW_AT_name')) === 'my_int');
    const b = Buffer.from(buf5);
    const at = td.attrAt.get('DW_AT_type')!;
    expect(td.attrs.get('DW_AT_type')).toMatch(/^\(ref4\)/);
    b.writeUInt32LE(td.offset, sectionOffset(elf5, '.debug_info') + at); // CU-relative ref4 to itself
    const e = expectRexError(b);
    expect(e.message).toMatch(new RegExp(`section \\.debug_info offset 0x${td.offset.toString(16)}: type reference cycle: DW_TAG_typedef at 0x${td.offset.toString(16)} -> back to 0x${td.offset.toString(16)} without a pointer`));
  });

  it('a struct that contains itself by value', () => {
    const { byOffset } = readelfDies(lib5);
    const node = find(byOffset, (d) => d.tag === 'DW_TAG_structure_type' && rval(d.attrs.get('DW_AT_name')) === 'node');
    const next = node.children.find((m) => rval(m.attrs.get('DW_AT_name')) === 'next')!;
    const b = Buffer.from(buf5);
    b.writeUInt32LE(node.offset, sectionOffset(elf5, '.debug_info') + next.attrAt.get('DW_AT_type')!);
    expect(expectRexError(b).message).toMatch(/type reference cycle: DW_TAG_structure_type at 0x[0-9a-f]+ -> back to 0x[0-9a-f]+ without a pointer/);
  });

  it('an abstract_origin that points at itself (-O2)', () => {
    const { byOffset } = readelfDies(lib2);
    const conc = find(byOffset, (d) => d.tag === 'DW_TAG_subprogram' && d.attrs.has('DW_AT_abstract_origin') && d.attrs.has('DW_AT_low_pc'));
    const b = Buffer.from(buf2);
    expect(conc.attrs.get('DW_AT_abstract_origin')).toMatch(/^\(ref4\)/);
    b.writeUInt32LE(conc.offset, sectionOffset(elf2, '.debug_info') + conc.attrAt.get('DW_AT_abstract_origin')!);
    expect(expectRexError(b).message).toMatch(/section \.debug_info offset 0x[0-9a-f]+: DW_AT_abstract_origin\/DW_AT_specification chain from the DIE at 0x[0-9a-f]+ loops/);
  });

  it('a type reference outside every unit', () => {
    const { byOffset } = readelfDies(lib5);
    const p = find(byOffset, (d) => d.tag === 'DW_TAG_formal_parameter' && d.attrs.get('DW_AT_type')?.startsWith('(ref4)') === true && d.parent?.attrs.has('DW_AT_external') === true);
    const b = Buffer.from(buf5);
    b.writeUInt32LE(0x00ffffff, sectionOffset(elf5, '.debug_info') + p.attrAt.get('DW_AT_type')!);
    expect(expectRexError(b).message).toMatch(/section \.debug_info offset 0xffffff: reference \(from DW_AT_type of the DIE at \.debug_info\+0x[0-9a-f]+\) does not point at a DIE inside any unit/);
  });

  it('compressed sections: bad zlib data and unknown compression type', () => {
    const z = readElf(zbuf, 'z.so');
    const off = sectionOffset(z, '.debug_info');
    let b = Buffer.from(zbuf);
    b.fill(0xaa, off + 24, off + 40);
    expect(expectRexError(b, 'z.so').message).toMatch(/^z\.so: section \.debug_info offset 0x18: zlib data does not inflate/);
    b = Buffer.from(zbuf);
    b.writeUInt32LE(2, off); // ELFCOMPRESS_ZSTD
    expect(expectRexError(b, 'z.so').message).toMatch(/section \.debug_info offset 0x0: compression type 2 is not supported/);
    b = Buffer.from(zbuf);
    b.writeBigUInt64LE(1n << 40n, off + 8);
    expect(expectRexError(b, 'z.so').message).toMatch(/section \.debug_info offset 0x8: declared uncompressed size \d+ is over the 1 GiB limit/);
  });
});

describe('fuzz: random mutations and truncations of a real fixture', () => {
  const check = (buf: Buffer, name: string): boolean => {
    try {
      readDebugInfoFromBuffer(buf, name);
      return true;
    } catch (e) {
      if (!isRexError(e)) throw e;
      // Every error names the file and either a section+offset or the ELF header.
      if (!e.message.startsWith(`${name}: `)) throw new Error(`message does not name the file: ${e.message}`);
      return true;
    }
  };

  const run = (label: string, get: () => { buf: Buffer; lo: number; hi: number }, cases: number) =>
    it(
      label,
      () => {
        const { buf, lo, hi } = get();
        fc.assert(
          fc.property(
            fc.array(fc.tuple(fc.integer({ min: lo, max: hi - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
            fc.option(fc.integer({ min: 0, max: buf.length }), { freq: 5 }),
            (patches, cut) => {
              const b = Buffer.from(buf);
              for (const [o, v] of patches) b[o] = v;
              return check(cut === null ? b : b.subarray(0, cut), 'fuzz.so');
            },
          ),
          { numRuns: runs(cases) },
        );
      },
      120_000,
    );

  const debugRange = (elf: ElfFile) => {
    const secs = elf.sections.filter((s) => s.name.startsWith('.debug_'));
    return { lo: Math.min(...secs.map((s) => s.offset)), hi: Math.max(...secs.map((s) => s.offset + s.size)) };
  };
  run('DWARF 5 -O0, mutations in the .debug_* sections', () => ({ buf: buf5, ...debugRange(elf5) }), 4000);
  run('DWARF 4 -O2, mutations in the .debug_* sections', () => ({ buf: buf2, ...debugRange(elf2) }), 3000);
  run('zlib-compressed sections, mutations anywhere in the file', () => ({ buf: zbuf, lo: 0, hi: zbuf.length }), 2000);
  run('section header table', () => {
    const shoff = Number(buf5.readBigUInt64LE(40));
    return { buf: buf5, lo: shoff - 64, hi: buf5.length };
  }, 1000);
});
