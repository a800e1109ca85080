/**
 * The ELF reader against binutils on the machine: symbols (readelf -s), build-id
 * (readelf -n), .gnu_debuglink, compressed sections; and clear errors for files
 * that are not ELF64 little-endian x86-64.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, readDebugInfo } from '../../../src/gen/dwarf/index.js';
import { elfSymbols, readElf } from '../../../src/gen/elf/index.js';
import { ErrorCodes, isRexError } from '../../../src/util/errors.js';
import { buildFixture, tempDir } from '../dwarf/helpers.js';

const dir = tempDir('repdb-elf-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let lib: string;
let buf: Buffer;
beforeAll(() => {
  lib = buildFixture(dir, 'fixture.c', 'libfx.so', ['-g', '-O2', '-Wl,--build-id=sha1']);
  buf = readFileSync(lib);
});

function rexError(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (e) {
    if (isRexError(e)) return e;
    throw e;
  }
  throw new Error('expected a RexError');
}

/** Defined FUNC symbols as readelf prints them: "table name value". */
function readelfFuncs(path: string): string[] {
  const out = execFileSync('readelf', ['-sW', path], { encoding: 'utf8' });
  const rows: string[] = [];
  let table = '';
  for (const line of out.split('\n')) {
    const t = /Symbol table '(\.\w+)'/.exec(line);
    if (t) table = t[1]!;
    const m = /^\s*\d+:\s+([0-9a-f]+)\s+\d+\s+(FUNC|IFUNC)\s+\w+\s+\w+\s+(\w+)\s+(\S+)/.exec(line);
    if (m && m[3] !== 'UND') rows.push(`${table} ${m[4]!.replace(/@.*$/, '')} ${BigInt('0x' + m[1]!)}`);
  }
  return rows.sort();
}

describe('ELF reader', () => {
  it('lists the same defined function symbols as readelf -s', () => {
    const ours = elfSymbols(lib).map((s) => `${s.table} ${s.name} ${s.value}`).sort();
    expect(ours).toEqual(readelfFuncs(lib));
    expect(ours).toContain(`.dynsym fx_sum ${elfSymbols(lib).find((s) => s.name === 'fx_sum')!.value}`);
    const st = elfSymbols(lib).find((s) => s.name === 'deregister_tm_clones' && s.table === '.symtab');
    expect(st?.binding).toBe('local');
  });

  it('reads section names, the build-id and the debuglink', () => {
    const elf = readElf(buf, lib);
    const names = execFileSync('readelf', ['-SW', lib], { encoding: 'utf8' })
      .split('\n')
      .map((l) => /^\s*\[\s*\d+\]\s+(\S+)/.exec(l)?.[1])
      .filter((x): x is string => x !== undefined && x !== 'NULL');
    expect(elf.sections.slice(1).map((s) => s.name)).toEqual(names);
    const id = /Build ID: ([0-9a-f]+)/.exec(execFileSync('readelf', ['-n', lib], { encoding: 'utf8' }))![1];
    expect(elf.buildId()).toBe(id);
    expect(elf.debugLink()).toBeUndefined();
    const dbg = join(dir, 'x.debug');
    execFileSync('objcopy', ['--only-keep-debug', lib, dbg]);
    const linked = join(dir, 'linked.so');
    execFileSync('objcopy', ['--strip-debug', `--add-gnu-debuglink=${dbg}`, lib, linked]);
    expect(readElf(readFileSync(linked), linked).debugLink()).toEqual({ name: 'x.debug', crc: crc32(readFileSync(dbg)) });
  });

  it('computes CRC-32 like .gnu_debuglink expects', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
  });

  it('decompresses SHF_COMPRESSED (zlib) sections to the same result', () => {
    const z = join(dir, 'z.so');
    execFileSync('objcopy', ['--compress-debug-sections=zlib', lib, z]);
    const ze = readElf(readFileSync(z), z);
    expect(ze.section('.debug_info')!.flags & 0x800n).toBe(0x800n);
    const plain = readElf(buf, lib);
    expect(ze.data(ze.section('.debug_info')!).equals(plain.data(plain.section('.debug_info')!))).toBe(true);
    const a = readDebugInfo(z);
    const b = readDebugInfo(lib);
    expect({ ...a, file: '', debugFile: '' }).toEqual({ ...b, file: '', debugFile: '' });
  });

  it('rejects non-ELF, ELF32, big-endian and non-x86-64 files with a clear message', () => {
    expect(rexError(() => readElf(Buffer.from('hello world, not elf'), 'x.txt')).message).toBe('x.txt: offset 0x0: not an ELF file (bad magic)');
    const b32 = Buffer.from(buf);
    b32[4] = 1;
    expect(rexError(() => readElf(b32, 'a.so')).message).toMatch(/^a\.so: ELF header offset 0x4: ELF class 1 is not supported: only ELF64 \(x86-64\) is/);
    const be = Buffer.from(buf);
    be[5] = 2;
    expect(rexError(() => readElf(be, 'a.so')).message).toMatch(/ELF header offset 0x5: data encoding 2 is not supported: only little-endian is/);
    const arm = Buffer.from(buf);
    arm.writeUInt16LE(183, 18);
    const e = rexError(() => readElf(arm, 'a.so'));
    expect(e.code).toBe(ErrorCodes.ELF_MALFORMED);
    expect(e.message).toMatch(/ELF header offset 0x12: machine 183 is not x86-64 \(62\)/);
  });

  it('reports a missing file as a RexError', () => {
    expect(rexError(() => elfSymbols(join(dir, 'nope.so'))).message).toMatch(/nope\.so: cannot read: ENOENT/);
  });

  it('rejects a symbol table with an out-of-range name offset, naming the table and entry', () => {
    const elf = readElf(buf, lib);
    const dynsym = elf.section('.dynsym')!;
    const b = Buffer.from(buf);
    b.writeUInt32LE(0x7fffffff, dynsym.offset + 24); // name of entry 1
    writeFileSync(join(dir, 'badsym.so'), b);
    expect(rexError(() => elfSymbols(join(dir, 'badsym.so'))).message).toMatch(/section \.dynstr offset 0x7fffffff: symbol at \.dynsym\+0x18: string offset is past the end of \.dynstr/);
  });
});
