// Inferred pointer directions and prototypes from declarations (docs/ENTRYPOINTS.md,
// "Inferred directions" and "Prototypes from declarations"). The fixture
// (test/fixtures/directions) has one function per rule, and two functions written
// in assembly that C units declare: asm_len the same way in both units (its
// prototype comes from the declarations; kr.c's unprototyped one is ignored), asm_bad differently (no prototype, and a
// warning naming both declarations).
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEntryPointsXml, validateXmlText, type EntryPoint } from '../../../src/gen/index.js';
import { inferDirection } from '../../../src/gen/model/fromdebuginfo.js';
import { formatType } from '../../../src/gen/model/typestr.js';
import { ROOT, T, repdb, tempDir } from './helpers.js';

const FIXDIR = join(ROOT, 'test/fixtures/directions');
const dir = tempDir('repdb-directions-');
let xml = '';
let stderr = '';
let byName = new Map<string, EntryPoint>();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

beforeAll(() => {
  const lib = join(dir, 'librules.so');
  execFileSync('cc', ['-g', '-O1', '-shared', '-fPIC', '-o', lib, ...['rules.c', 'other.c', 'kr.c', 'asm.S'].map((f) => join(FIXDIR, f))], { stdio: 'pipe' });
  const r = repdb(['-gx', lib]);
  expect(r.status).toBe(0);
  xml = r.stdout;
  stderr = r.stderr;
  byName = new Map(readEntryPointsXml(xml, 'librules.xml').entries.map((e) => [e.name, e]));
});

/** name:direction[:string] of each parameter, with '*' when the direction was inferred. */
function dirs(name: string): string[] {
  return byName.get(name)!.params.map((p) => `${p.name}:${p.direction ?? 'bare'}${p.string ? ':string' : ''}${p.directionInferred ? '*' : ''}`);
}

describe('inferred pointer directions from DWARF', () => {
  it('writes valid XML that marks every guessed direction', () => {
    expect(() => validateXmlText(xml, 'librules.xml')).not.toThrow();
    expect(xml).toContain('<param name="eptr" type="int32*" direction="out" direction-inferred="yes"/>');
    expect(xml).toContain('<param name="s" type="char*" direction="in" string="yes" direction-inferred="yes"/>');
  });

  it('a pointer to a non-const arithmetic scalar is an output of one element', () => {
    expect(dirs('r_frexp')).toEqual(['x:bare', 'eptr:out*']);
    expect(dirs('r_outs')).toEqual(['l:out*', 'd:out*', 'f:out*', 'u:out*']);
    expect(byName.get('r_frexp')!.params[1]!.sizeIs).toBeUndefined();
    expect(byName.get('r_frexp')!.refusals).toEqual([]);
    expect(byName.get('r_outs')!.refusals).toEqual([]);
  });

  it('const char * is an input string', () => {
    expect(dirs('r_str')).toEqual(['s:in:string*']);
    expect(byName.get('r_str')!.refusals).toEqual([]);
  });

  it('a pointer to a const scalar, enum or struct is an input of one element; typedefs are seen through', () => {
    expect(dirs('r_cin')).toEqual(['v:in*', 'p:in*', 'c:in*', 'd:in*']);
    expect(dirs('r_typedef')).toEqual(['a:in*', 'b:out*']);
    expect(byName.get('r_cin')!.refusals).toEqual([]);
    // const does not change layouts: the input frame carries one int, one struct pt, one enum and one double
    expect(formatType(byName.get('r_cin')!.params[1]!.type)).toBe('struct pt*');
  });

  it('everything else stays bare, and the entry point is refused with the usual hint', () => {
    expect(dirs('r_bare')).toEqual(['buf:bare', 'v:bare', 'cv:bare', 'pp:bare', 'mp:bare', 'ub:bare', 'argv:bare', 'bp:bare', 'ec:bare']);
    const r = byName.get('r_bare')!.refusals;
    expect(r.map((x) => x.where)).toEqual(['param buf', 'param v', 'param cv', 'param pp', 'param mp', 'param ub', 'param argv', 'param bp', 'param ec']);
    expect(r[0]!.hint).toMatch(/direction="in\|out\|inout"/);
  });

  it('a later parameter named like a count is a clue of an array: no one-element guess', () => {
    expect(dirs('r_sum')).toEqual(['xs:bare', 'n:bare']);
    expect(dirs('r_fill')).toEqual(['out:bare', 'len:bare', 'tag:in:string*']);
    expect(byName.get('r_sum')!.refusals[0]!.hint).toContain('size-is="n"');
  });

  it('a hand-written XML overrides the guess, and a guess read back from XML stays marked', () => {
    // Frames are optional in a hand-written XML (re-planned when read): drop them so the edits need no other change.
    const noFrames = xml.replace(/\s*<(input|output)\b[^>]*\/>/g, '').replace(/\s*<(input|output)\b[^>]*>[\s\S]*?<\/\1>/g, '');
    const hand = noFrames.replace('<param name="eptr" type="int32*" direction="out" direction-inferred="yes"/>', '<param name="eptr" type="int32*" direction="inout"/>');
    expect(hand).not.toBe(xml);
    const ep = readEntryPointsXml(hand, 'hand.xml').entries.find((e) => e.name === 'r_frexp')!;
    expect([ep.params[1]!.direction, ep.params[1]!.directionInferred]).toEqual(['inout', undefined]);
    expect(ep.plan.desc.params[1]!.direction).toBe('inout');
    // a bare pointer marked by hand is callable
    const bare = noFrames.replace('<param name="buf" type="char*"/>', '<param name="buf" type="char*" direction="out" size-is="16"/>');
    const b = readEntryPointsXml(bare, 'bare.xml').entries.find((e) => e.name === 'r_bare')!;
    expect(b.refusals.map((x) => x.where)).not.toContain('param buf');
    expect(byName.get('r_frexp')!.params[1]!.directionInferred).toBe(true);
  });

  it('the rules on model types', () => {
    const p = T.p;
    expect(inferDirection(T.ptr(p('char')), true)).toEqual({ direction: 'in', string: true });
    expect(inferDirection(T.ptr(p('char')), false)).toBeUndefined();
    expect(inferDirection(T.ptr(p('uint8')), false)).toBeUndefined();
    expect(inferDirection(T.ptr(p('uint8')), true)).toEqual({ direction: 'in' });
    expect(inferDirection(T.ptr(p('int32')), false)).toEqual({ direction: 'out' });
    expect(inferDirection(T.ptr(p('double')), false)).toEqual({ direction: 'out' });
    expect(inferDirection(T.ptr(p('bool')), false)).toBeUndefined();
    expect(inferDirection(T.ptr(T.s('pt')), true)).toEqual({ direction: 'in' });
    expect(inferDirection(T.ptr(T.s('pt')), false)).toBeUndefined();
    expect(inferDirection(T.ptr({ kind: 'void' }), true)).toBeUndefined();
    expect(inferDirection(T.ptr(T.ptr(p('char'))), true)).toBeUndefined();
    expect(inferDirection(T.ptr({ kind: 'opaque', size: 8, align: 8 }), true)).toBeUndefined();
    expect(inferDirection(p('int32'), true)).toBeUndefined();
    // with a count clue the one-element rules stay silent; a const char * is still a string
    expect(inferDirection(T.ptr(p('int32')), false, true)).toBeUndefined();
    expect(inferDirection(T.ptr(p('int32')), true, true)).toBeUndefined();
    expect(inferDirection(T.ptr(p('char')), true, true)).toEqual({ direction: 'in', string: true });
  });

  it('a char ** named like an end pointer, beside one input string, points into it (strtol); a cursor or two strings stay bare', () => {
    expect(dirs('r_end')).toEqual(['text:in:string*', 'endptr:out*', 'base:bare']);
    expect(byName.get('r_end')!.params[1]!.into).toBe('text');
    expect(byName.get('r_end')!.refusals).toEqual([]);
    expect(xml).toMatch(/<param name="endptr" type="char\*\*" direction="out" into="text" direction-inferred="yes"\/>/);
    expect(dirs('r_cursor')).toEqual(['text:in:string*', 'cursor:bare']);
    expect(dirs('r_two')).toEqual(['a:in:string*', 'b:in:string*', 'endptr:bare']);
    expect(byName.get('r_two')!.refusals[0]!.message).toMatch(/'endptr' is a bare pointer \(char\*\*\)/);
    // the end-pointer's value travels as an int64 offset: the plan's output buffer says so
    const ob = byName.get('r_end')!.plan.output.buffers[0]!;
    expect([ob.param, ob.into, ob.elemSize, formatType(ob.elem)]).toEqual(['endptr', 'text', 8, 'int64']);
  });
});

describe('prototypes from DWARF declarations', () => {
  it('an exported function without a DWARF definition takes the prototype its declarations agree on', () => {
    const ep = byName.get('asm_len')!;
    expect(ep.prototypeFrom).toBe('declaration');
    expect(ep.noPrototype).toBeUndefined();
    expect(`${formatType(ep.returns)}(${ep.params.map((p) => formatType(p.type)).join(', ')})`).toBe('uint64(char*)');
    expect(dirs('asm_len')).toEqual(['arg0:in:string*']);
    expect(ep.refusals).toEqual([]);
    expect(xml).toMatch(/<entry-point name="asm_len" address="0x[0-9a-f]+" prototype-from="declaration"/);
    // a definition's prototype is never marked
    expect(byName.get('r_str')!.prototypeFrom).toBeUndefined();
  });

  it('declarations that disagree give no prototype, and a warning naming both', () => {
    const ep = byName.get('asm_bad')!;
    expect(ep.noPrototype).toBe(true);
    expect(ep.prototypeFrom).toBeUndefined();
    expect(ep.refusals[0]!.message).toMatch(/^no prototype: 'asm_bad'/);
    expect(stderr).toMatch(/warning: function asm_bad has no DWARF definition and its 2 declarations disagree \((rules|other)\.c:\d+ and (rules|other)\.c:\d+ give different types\): listed with no prototype/);
  });

  it('declarations are not listed as internal functions', () => {
    const r = repdb(['-gx', '-q', '--internal', join(dir, 'librules.so')]);
    expect(r.status).toBe(0);
    const names = readEntryPointsXml(r.stdout, 'internal.xml').entries.map((e) => e.name);
    expect(names.filter((n) => n === 'asm_len')).toEqual(['asm_len']);
    expect(names.filter((n) => n === 'asm_bad')).toEqual(['asm_bad']);
  });
});
