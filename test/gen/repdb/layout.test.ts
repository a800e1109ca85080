/**
 * The one layout engine (src/runtime/frames/layout.ts) against gcc: sizeof,
 * _Alignof and offsetof of hand-picked and random aggregates must match exactly,
 * and the generated C header's frame structs must match the frames repdb plans.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { LayoutEngine, planEntry, type AggregateDesc, type TypeDesc, PRIMS } from '../../../src/runtime/frames/index.js';
import { cDeclare } from '../../../src/gen/codegen/c.js';
import { generateCHeader, readEntryPointsXml } from '../../../src/gen/index.js';
import { T, demoXml, entry, runC, tempDir } from './helpers.js';
import { runs } from '../../helpers/property.js';

let dir: string;
beforeAll(() => { dir = tempDir('repdb-layout-'); });
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A C program printing "name size align off0 off1 ..." for every aggregate. */
function layoutProgram(types: AggregateDesc[]): string {
  const names = new Map(types.map((t) => [t.name, t.name]));
  const defs = types.map((t) => `${t.kind} ${t.name} {\n${t.fields.map((f) => `  ${cDeclare(f.type, f.name, names)};`).join('\n')}\n};`).join('\n');
  const prints = types.map((t) => `  printf("${t.name} %zu %zu${t.fields.map(() => ' %zu').join('')}\\n", sizeof(${t.kind} ${t.name}), _Alignof(${t.kind} ${t.name})${t.fields.map((f) => `, offsetof(${t.kind} ${t.name}, ${f.name})`).join('')});`).join('\n');
  return `#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <stdbool.h>\n${defs}\nint main(void) {\n${prints}\n  return 0;\n}\n`;
}

function ours(types: AggregateDesc[]): string {
  const e = new LayoutEngine(types);
  return types.map((t) => {
    const l = e.layoutAggregate(t.name);
    return [t.name, l.size, l.align, ...l.fields.map((f) => f.offset)].join(' ');
  }).join('\n') + '\n';
}

const S = (name: string, fields: [string, TypeDesc][], kind: 'struct' | 'union' = 'struct'): AggregateDesc => ({ kind, name, fields: fields.map(([n, type]) => ({ name: n, type })) });

describe('x86-64 SysV layout matches gcc', () => {
  it('padding, alignment, nesting, arrays, unions, pointers, long double and int128', () => {
    const types = [
      S('pad1', [['c', T.p('char')], ['i', T.p('int32')], ['s', T.p('int16')]]),
      S('pad2', [['c', T.p('uint8')], ['d', T.p('double')], ['b', T.p('bool')]]),
      S('tail', [['i', T.p('int64')], ['c', T.p('char')]]),
      S('inner', [['a', T.p('int16')], ['b', T.p('char')]]),
      S('outer', [['c', T.p('char')], ['in', T.s('inner')], ['arr', T.arr(T.s('inner'), 3)], ['d', T.p('float')]]),
      S('arrays', [['bytes', T.arr(T.p('uint8'), 5)], ['m', T.arr(T.arr(T.p('int32'), 3), 2)], ['tail', T.p('char')]]),
      S('ptrs', [['c', T.p('char')], ['p', T.ptr(T.p('int32'))], ['pa', T.ptr(T.arr(T.p('int16'), 4))], ['fn', { kind: 'funcptr' }]]),
      S('u1', [['c', T.p('char')], ['d', T.p('double')], ['b', T.arr(T.p('uint8'), 13)]], 'union'),
      S('withu', [['c', T.p('char')], ['u', T.u('u1')], ['s', T.p('int16')]]),
      S('wide', [['c', T.p('char')], ['ld', T.p('longdouble')], ['i', T.p('int128')], ['u', T.p('uint128')]]),
      S('empty_tail', [['a', T.p('int32')], ['flex', T.arr(T.p('int32'), 0)]]),
    ];
    expect(runC(dir, layoutProgram(types))).toBe(ours(types));
  });

  it('random structs (fast-check) lay out as gcc does', () => {
    const leaf = fc.constantFrom(...PRIMS).map((p) => T.p(p));
    const types: AggregateDesc[] = [];
    const arb = fc.array(fc.tuple(fc.oneof(leaf, leaf.chain((l) => fc.integer({ min: 1, max: 5 }).map((n) => T.arr(l, n)))), fc.boolean()), { minLength: 1, maxLength: 7 });
    const samples = fc.sample(fc.tuple(arb, fc.boolean()), { numRuns: runs(40) });
    samples.forEach(([fields, union], i) => {
      const fs: [string, TypeDesc][] = fields.map(([t, nest], j) => [`f${j}`, nest && i > 0 ? { kind: types[i - 1]!.kind, name: `r${i - 1}` } : t]);
      types.push(S(`r${i}`, fs, union && i % 3 === 0 ? 'union' : 'struct'));
    });
    expect(runC(dir, layoutProgram(types))).toBe(ours(types));
  });

  it('rejects a stated offset that disagrees, and a struct containing itself', () => {
    const e = new LayoutEngine([{ kind: 'struct', name: 'p', fields: [{ name: 'c', type: T.p('char') }, { name: 'i', type: T.p('int32'), offset: 1 }] }]);
    expect(() => e.layoutAggregate('p')).toThrow(/member 'i' is at offset 1, but x86-64 SysV puts it at 4/);
    const loop = new LayoutEngine([S('a', [['b', T.s('b')]]), S('b', [['a', T.s('a')]])]);
    expect(() => loop.layoutAggregate('a')).toThrow(/contains itself by value/);
  });
});

describe('frames', () => {
  it('input frame: fixed part like a C struct, length words, then 8-aligned data sections', () => {
    const plan = planEntry(entry('f', [
      { name: 'c', type: T.p('char') },
      { name: 's', type: T.ptr(T.p('char')), direction: 'in', string: true },
      { name: 'd', type: T.p('double') },
      { name: 'xs', type: T.ptr(T.p('int16')), direction: 'inout', sizeIs: 'n' },
      { name: 'n', type: T.p('uint32') },
    ], T.p('int32')));
    expect(plan.input.slots.map((s) => [s.name, s.role, s.offset, s.size])).toEqual([
      ['c', 'value', 0, 1], ['s', 'length', 4, 4], ['d', 'value', 8, 8], ['xs', 'length', 16, 4], ['n', 'value', 20, 4],
    ]);
    expect(plan.input.fixedSize).toBe(24);
    expect(plan.output.slots.map((s) => [s.name, s.role, s.offset])).toEqual([['return', 'return', 0], ['xs', 'length', 4]]);
    expect(plan.output.fixedSize).toBe(8);
    expect([...plan.derived]).toEqual([['n', ['xs']]]);
  });

  it('the generated C header has the same frame and type layouts as the plans (gcc offsetof/sizeof)', () => {
    const set = readEntryPointsXml(demoXml(), 'demo.xml');
    writeFileSync(join(dir, 'libdemo.rex.h'), generateCHeader(set));
    const lines: string[] = [];
    const want: string[] = [];
    for (const ep of set.entries.filter((e) => e.refusals.length === 0)) {
      for (const [dir_, f] of [['in', ep.input], ['out', ep.output]] as const) {
        const st = `struct rex_${ep.name}_${dir_}`;
        lines.push(`  printf("${st} %zu${f.slots.map(() => ' %zu').join('')}\\n", sizeof(${st})${f.slots.map((s) => `, offsetof(${st}, ${s.role === 'return' ? 'rex_return' : s.name})`).join('')});`);
        want.push(`${st} ${f.fixedSize}${f.slots.map((s) => ` ${s.offset}`).join('')}`);
      }
    }
    const out = runC(dir, `#include <stdio.h>\n#include "libdemo.rex.h"\nint main(void) {\n${lines.join('\n')}\n  return 0;\n}\n`, [dir]);
    expect(out).toBe(want.join('\n') + '\n');
    expect(want.length).toBeGreaterThan(15);
  });
});
