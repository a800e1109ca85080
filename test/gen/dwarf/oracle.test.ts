/**
 * The DWARF reader against an oracle on the machine: the C fixture is compiled
 * with gcc at -gdwarf-4/-gdwarf-5 and -O0/-O2, and what readDebugInfo returns is
 * compared with `readelf --debug-dump=info` (functions, parameter names and
 * types, struct sizes and member offsets, bit-fields, enum values), then with
 * facts known from the C source itself.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import type { CType, DebugInfo } from '../../../src/gen/debuginfo.js';
import { readDebugInfo } from '../../../src/gen/dwarf/index.js';
import { elfSymbols } from '../../../src/gen/elf/index.js';
import { buildFixture, oracleAggregates, oracleEnums, oracleFunctions, ourAggregates, ourFunctions, renderOurs, tempDir } from './helpers.js';

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const VARIANTS = [
  { dwarf: 4, opt: 'O0' },
  { dwarf: 4, opt: 'O2' },
  { dwarf: 5, opt: 'O0' },
  { dwarf: 5, opt: 'O2' },
] as const;

function fn(info: DebugInfo, name: string) {
  const f = info.functions.find((x) => x.name === name);
  if (!f) throw new Error(`function ${name} not found; have ${info.functions.map((x) => x.name).join(', ')}`);
  return f;
}

function sig(info: DebugInfo, name: string): string {
  const f = fn(info, name);
  return `${renderOurs(info, f.returnType)} ${name}(${f.params.map((p) => `${p.name}: ${renderOurs(info, p.type)}`).join(', ')}${f.variadic ? ', ...' : ''})`;
}

function named<K extends CType['kind']>(info: DebugInfo, kind: K, name: string): CType & { kind: K } {
  const t = info.types.find((x) => x.kind === kind && 'name' in x && x.name === name);
  if (!t) throw new Error(`${kind} ${name} not found`);
  return t as CType & { kind: K };
}

describe.each(VARIANTS)('fixture.c at -gdwarf-$dwarf -$opt', ({ dwarf, opt }) => {
  let lib: string;
  let info: DebugInfo;
  beforeAll(() => {
    lib = buildFixture(dir, 'fixture.c', `libfx-${dwarf}-${opt}.so`, [`-gdwarf-${dwarf}`, `-${opt}`]);
    info = readDebugInfo(lib);
  });

  it('reports the DWARF version and no diagnostics', () => {
    expect(info.dwarfVersions).toEqual([dwarf]);
    expect(info.file).toBe(lib);
    expect(info.debugFile).toBe(lib);
    expect(info.diagnostics).toEqual([]);
    expect(info.types[0]).toEqual({ kind: 'void' });
  });

  it('lists the same external functions and signatures as readelf', () => {
    const oracle = oracleFunctions(lib);
    const ours = ourFunctions(info);
    expect([...ours.keys()].sort()).toEqual([...oracle.keys()].sort());
    for (const [name, o] of oracle) expect(ours.get(name), name).toEqual(o);
    expect(oracle.size).toBeGreaterThanOrEqual(19);
  });

  it('has the same struct/union sizes and member offsets as readelf', () => {
    const oracle = oracleAggregates(lib);
    const ours = ourAggregates(info);
    expect([...ours.keys()].sort()).toEqual(["struct bits", "struct inner", "struct node", "struct ops", "struct point", "union value"]);
    for (const [name, a] of ours) expect(a, name).toEqual(oracle.get(name));
  });

  it('has the same enum values as readelf', () => {
    const oracle = oracleEnums(lib);
    for (const name of ['color', 'flags']) {
      const e = named(info, 'enum', name);
      expect(e.enumerators.map((x) => `${x.name}=${x.value}`).join(','), name).toBe(oracle.get(name));
    }
  });

  it('matches the C source: widths, floats, bool, char', () => {
    expect(sig(info, 'fx_ints')).toBe(
      'int fx_ints(a: signed char, b: unsigned char, c: short int, d: short unsigned int, e: int, f: unsigned int, g: long int, h: long unsigned int, i: long long int, j: long long unsigned int)',
    );
    expect(sig(info, 'fx_floats')).toBe('double fx_floats(a: float, b: double, c: long double, d: _Bool, e: char)');
    const sizes = Object.fromEntries(info.types.filter((t): t is Extract<CType, { kind: 'base' }> => t.kind === 'base').map((t) => [t.name, [t.size, t.encoding]]));
    expect(sizes).toMatchObject({
      'signed char': [1, 'signed_char'],
      'unsigned char': [1, 'unsigned_char'],
      'short int': [2, 'signed'],
      'long long unsigned int': [8, 'unsigned'],
      'long double': [16, 'float'],
      float: [4, 'float'],
      _Bool: [1, 'bool'],
      char: [1, 'signed_char'],
    });
  });

  it('matches the C source: pointers, const char *, arrays, typedef chains', () => {
    expect(sig(info, 'fx_strlen')).toBe('size_t=long unsigned int fx_strlen(s: ptr(const(char)))');
    expect(sig(info, 'fx_fill')).toBe('void fx_fill(out: ptr(int), n: int, values: ptr(const(int)), grid: ptr(int[4]))');
    expect(sig(info, 'fx_typedefs')).toBe(
      'my_int2=my_int=int32_t=__int32_t=int fx_typedefs(a: my_int=int32_t=__int32_t=int, b: my_int2=my_int=int32_t=__int32_t=int, c: int32_t=__int32_t=int, d: uint64_t=__uint64_t=long unsigned int)',
    );
    const rec = info.types.find((t) => t.kind === 'struct' && t.size === 112 && t.name === undefined) as CType & { kind: 'struct' };
    expect(rec.members.map((m) => `${m.name}@${m.offset} ${renderOurs(info, m.type)}`)).toEqual([
      'name@0 ptr(const(char))',
      'matrix@8 int[3][4]',
      'counter@56 volatile(unsigned int)',
      'v@64 union value',
      'col@80 enum color',
      'in@88 struct inner',
      'tail@112 int[]',
    ]);
  });

  it('matches the C source: structs by value, unions, enums, nested structs', () => {
    expect(sig(info, 'fx_midpoint')).toBe('struct point fx_midpoint(a: struct point, b: struct point)');
    expect(sig(info, 'fx_value')).toBe('union value fx_value(in: ptr(struct inner))');
    expect(sig(info, 'fx_color')).toBe('enum color fx_color(c: enum color, f: enum flags)');
    expect(named(info, 'struct', 'inner')).toMatchObject({ size: 24, members: [{ name: 'tag', offset: 0 }, { name: 's', offset: 2 }, { name: 'p', offset: 8 }] });
    expect(named(info, 'union', 'value').size).toBe(16);
    expect(named(info, 'enum', 'color').enumerators).toEqual([
      { name: 'RED', value: 0n },
      { name: 'GREEN', value: 5n },
      { name: 'BLUE', value: -3n },
      { name: 'BIG', value: 0x7fffffffn },
    ]);
    expect(named(info, 'enum', 'flags').enumerators[1]).toEqual({ name: 'F_ALL', value: 0xffffffffn });
  });

  it('matches the C source: function pointers and variadic functions', () => {
    expect(sig(info, 'fx_apply')).toBe('int fx_apply(fn: binop_fn=ptr(fn(int,int)->int), other: ptr(fn(ptr(const(char)),...)->int), a: int, b: int)');
    expect(fn(info, 'fx_sum').variadic).toBe(true);
    expect(fn(info, 'fx_apply').variadic).toBe(false);
    const ops = named(info, 'struct', 'ops');
    expect(ops.members.map((m) => renderOurs(info, m.type))).toEqual(['binop_fn=ptr(fn(int,int)->int)', 'ptr(fn(ptr(const(char)),...)->void)', 'ptr(fn(...)->double)']);
    const unproto = info.types[(info.types[ops.members[2]!.type] as { target: number }).target] as Extract<CType, { kind: 'function' }>;
    expect(unproto.prototyped).toBe(false);
    expect(sig(info, 'fx_void')).toBe('void fx_void()');
  });

  it('reports bit-fields with their bit offset and width, the same in DWARF 4 and 5', () => {
    const b = named(info, 'struct', 'bits');
    expect(b.size).toBe(16);
    expect(b.members.map((m) => [m.name, m.offset, m.bitOffset, m.bitSize])).toEqual([
      ['a', 0, 0, 3],
      ['b', 0, 3, 5],
      ['c', 1, undefined, undefined],
      ['d', 2, 16, 40],
      ['e', 8, 64, 1],
    ]);
  });

  it('handles a self-referential struct without recursing forever', () => {
    const node = named(info, 'struct', 'node');
    const nodeId = info.types.indexOf(node);
    const next = info.types[node.members[1]!.type]!;
    expect(next).toMatchObject({ kind: 'pointer', size: 8, target: nodeId });
  });

  it('lists external functions only, with inline and -O2 ones resolved through their abstract origin', () => {
    const names = info.functions.map((f) => f.name);
    expect(names).not.toContain('fx_static_helper');
    expect(names).not.toContain('fx_inline_static');
    expect(sig(info, 'fx_inline_ext')).toBe('int fx_inline_ext(x: int, why: ptr(const(char)))');
    expect(sig(info, 'fx_inlined')).toBe('int fx_inlined(x: int)');
  });

  it('gives every function the address of its ELF symbol and a source origin', () => {
    const syms = new Map(elfSymbols(lib).map((s) => [s.name, s.value]));
    for (const f of info.functions) {
      expect(f.address, f.name).toBe(syms.get(f.name));
      expect(f.origin.file).toBe('fixture.c');
      expect(f.origin.line).toBeGreaterThan(0);
      expect(f.origin.die).toMatch(/^\.debug_info\+0x[0-9a-f]+$/);
    }
  });

  if (dwarf === 5) {
    it('reads _Atomic as an atomic qualifier (DWARF 5 only)', () => {
      expect(sig(info, 'fx_atomic')).toBe('int fx_atomic(p: ptr(atomic(int)), q: restrict(ptr(int)))');
    });
  }
});

describe('type units (-fdebug-types-section)', () => {
  it('DWARF 5: type units in .debug_info are followed through DW_AT_signature, giving the same signatures', () => {
    const plain = readDebugInfo(buildFixture(dir, 'fixture.c', 'libfx-tu5-plain.so', ['-gdwarf-5', '-O0']));
    const tu = readDebugInfo(buildFixture(dir, 'fixture.c', 'libfx-tu5.so', ['-gdwarf-5', '-O0', '-fdebug-types-section']));
    expect(tu.diagnostics).toEqual([]);
    expect(ourFunctions(tu)).toEqual(ourFunctions(plain));
    expect(ourAggregates(tu)).toEqual(ourAggregates(plain));
  });

  it('DWARF 4: .debug_types is not read; its types are reported as unsupported, with warnings', () => {
    const info = readDebugInfo(buildFixture(dir, 'fixture.c', 'libfx-tu4.so', ['-gdwarf-4', '-O0', '-fdebug-types-section']));
    expect(info.diagnostics[0]!.message).toMatch(/DWARF 4 type units \(\.debug_types, -fdebug-types-section\) are not read/);
    expect(sig(info, 'fx_bits')).toBe('unsigned int fx_bits(b: unsupported(DW_FORM_ref_sig8), pb: ptr(unsupported(DW_FORM_ref_sig8)))');
    const t = info.types.find((x) => x.kind === 'unsupported')!;
    expect(t).toMatchObject({ what: 'DW_FORM_ref_sig8', reason: expect.stringMatching(/rebuild without -fdebug-types-section/) });
    expect(info.diagnostics.some((d) => /^\.debug_info\+0x[0-9a-f]+$/.test(d.where) && /DW_FORM_ref_sig8: type unit with signature 0x[0-9a-f]+ is not in \.debug_info/.test(d.message))).toBe(true);
  });
});
