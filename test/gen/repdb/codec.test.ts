/**
 * Frame codec: byte-exact frames for a known call, refusal messages, encode
 * errors naming the field, and a property test that random entry definitions
 * round-trip through encode → decode on both sides.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { planEntry, encodeInput, decodeInput, encodeOutput, decodeOutput, PRIMS, type TypeDesc, type AggregateDesc, type Prim } from '../../../src/runtime/frames/index.js';
import { defineEntryPoint, setTransport } from '../../../src/runtime/codegen-v1.js';
import { fromDebugInfo } from '../../../src/gen/index.js';
import type { DebugInfo } from '../../../src/gen/debuginfo.js';
import { T, entry } from './helpers.js';
import { runs } from '../../helpers/property.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('frames for a known call', () => {
  const greet = planEntry(entry('greet', [
    { name: 'name', type: T.ptr(T.p('char')), direction: 'in', string: true },
    { name: 'out', type: T.ptr(T.p('char')), direction: 'out', sizeIs: 'cap', string: true },
    { name: 'cap', type: T.p('uint32') },
  ], T.p('int32')));

  it('input: length words, scalar, then the string data 8-aligned', () => {
    const f = encodeInput(greet, { name: 'bob', cap: 16 });
    expect(hex(f)).toBe('04000000' + '10000000' + '10000000' + '00000000' + '626f6200');
    const back = decodeInput(greet, f);
    expect(back.args).toEqual({ name: 'bob', cap: 16 });
    expect(back.counts).toEqual({ name: 4, out: 16 });
  });

  it('output: return value, length word, then the out buffer', () => {
    const out = encodeOutput(greet, { return: 10, out: 'hello, bob' }, { out: 16 });
    expect(out.length).toBe(8 + 16);
    expect(decodeOutput(greet, out)).toEqual({ return: 10, out: 'hello, bob' });
  });

  it('derived size parameters are filled and checked', () => {
    const sum = planEntry(entry('sum', [{ name: 'xs', type: T.ptr(T.p('int64')), direction: 'in', sizeIs: 'n' }, { name: 'n', type: T.p('uint32') }], T.p('int64')));
    const f = encodeInput(sum, { xs: [1n, -2n, 3n] });
    expect(hex(f.subarray(0, 8))).toBe('18000000' + '03000000');
    expect(decodeInput(sum, f).args).toEqual({ xs: [1n, -2n, 3n], n: 3 });
    expect(() => encodeInput(sum, { xs: [1n], n: 2 })).toThrow(/has 1 elements but size parameter 'n' says 2/);
  });

  it('encode errors name the field and the range', () => {
    const p = planEntry(entry('f', [{ name: 'pt', type: T.s('point') }], { kind: 'void' }, [{ kind: 'struct', name: 'point', fields: [{ name: 'x', type: T.p('int16') }, { name: 'y', type: T.p('int16') }] }]));
    expect(() => encodeInput(p, { pt: { x: 1, y: 70000 } })).toThrow(/pt\.y: 70000 is out of range for int16/);
    expect(() => encodeInput(p, { pt: { x: 1 } })).toThrow(/pt\.y: member is missing/);
    expect(() => encodeInput(planEntry(entry('g', [{ name: 's', type: T.ptr(T.p('char')), direction: 'in', string: true }])), { s: 'a\0b' })).toThrow(/contains a NUL/);
  });

  it('a truncated or lying frame is a located error, not a crash', () => {
    const f = encodeInput(greet, { name: 'bob', cap: 16 });
    expect(() => decodeInput(greet, f.subarray(0, 8))).toThrow(/shorter than its 12-byte fixed part/);
    const lying = Uint8Array.from(f);
    lying[0] = 0xff;
    expect(() => decodeInput(greet, lying)).toThrow(/runs past the end/);
  });
});

describe('refusals', () => {
  it('bare pointer: the message says how to mark it, naming the likely length parameter', () => {
    const p = planEntry(entry('fill', [{ name: 'buf', type: T.ptr(T.p('uint8')) }, { name: 'len', type: T.p('uint64') }]));
    expect(p.refusals).toHaveLength(1);
    expect(p.refusals[0]!.hint).toContain('<param name="buf" direction="in|out|inout" size-is="len"/>');
    expect(() => encodeInput(p, {})).toThrow(/fill: remote call refused: parameter 'buf' is a bare pointer/);
  });

  it('function pointers, variadics, long double, pointers in structs, pointer returns, bit-fields', () => {
    const types: AggregateDesc[] = [
      { kind: 'struct', name: 'node', fields: [{ name: 'next', type: T.ptr(T.s('node')) }] },
      { kind: 'struct', name: 'bits', size: 4, align: 4, fields: [{ name: 'a', type: T.p('uint32'), bits: 3 }] },
    ];
    const msgs = (d: Parameters<typeof planEntry>[0]) => planEntry(d).refusals.map((r) => r.message).join('\n');
    expect(msgs(entry('a', [{ name: 'fn', type: { kind: 'funcptr' } }]))).toMatch(/function pointer; code addresses differ between hosts/);
    expect(msgs({ ...entry('b', []), variadic: true })).toMatch(/variadic/);
    expect(msgs(entry('c', [{ name: 'x', type: T.p('longdouble') }]))).toMatch(/long double/);
    expect(msgs(entry('d', [{ name: 'n', type: T.s('node') }], { kind: 'void' }, types))).toMatch(/parameter n\.next is a pointer inside a value/);
    expect(msgs(entry('e', [], T.ptr(T.p('char'))))).toMatch(/returns a pointer/);
    expect(msgs(entry('f', [{ name: 'b', type: T.s('bits') }], { kind: 'void' }, types))).toMatch(/bit-fields/);
    expect(msgs(entry('g', [{ name: 'pp', type: T.ptr(T.ptr(T.p('char'))), direction: 'in' }]))).toMatch(/points to a pointer/);
  });

  it('fromDebugInfo keeps refused entry points listed, with their refusals', () => {
    const info: DebugInfo = {
      file: '/x/libh.so', debugFile: '/x/libh.so', dwarfVersions: [5], diagnostics: [],
      types: [
        { kind: 'void' },
        { kind: 'base', name: 'int', size: 4, encoding: 'signed', origin: { die: 'd1' } },
        { kind: 'base', name: 'char', size: 1, encoding: 'signed_char', origin: { die: 'd2' } },
        { kind: 'const', target: 2, origin: { die: 'd3' } },
        // char * (not const char *, which would be inferred an input string): a bare pointer
        { kind: 'pointer', size: 8, target: 2, origin: { die: 'd4' } },
        { kind: 'typedef', name: 'size_t', target: 6, origin: { die: 'd5' } },
        { kind: 'base', name: 'long unsigned int', size: 8, encoding: 'unsigned', origin: { die: 'd6' } },
      ],
      functions: [
        { name: 'slen', external: true, returnType: 5, params: [{ name: 's', type: 4 }], variadic: false, address: 0x1100n, origin: { file: 'h.c', line: 3, die: 'f1' } },
        { name: 'inc', external: true, returnType: 1, params: [{ name: 'x', type: 1 }], variadic: false, address: 0x1000n, origin: { file: 'h.c', line: 2, die: 'f2' } },
      ],
    };
    const { set } = fromDebugInfo(info, { host: 'h' });
    expect(set.entries.map((e) => [e.name, e.refusals.length, e.source])).toEqual([['inc', 0, 'h.c:2'], ['slen', 1, 'h.c:3']]);
    expect(set.entries[1]!.refusals[0]!.hint).toContain('string="yes"');
    expect(set.entries[1]!.returns).toEqual({ kind: 'prim', prim: 'uint64' });
    expect(set.elfFile).toBe('libh.so');
  });

  it('fromDebugInfo skips, with the reader\'s reason, a function whose types the reader could not describe', () => {
    const info: DebugInfo = {
      file: '/x/libu.so', debugFile: '/x/libu.so', dwarfVersions: [5], diagnostics: [],
      types: [
        { kind: 'void' },
        { kind: 'base', name: 'int', size: 4, encoding: 'signed', origin: { die: 'd1' } },
        { kind: 'unsupported', what: 'C++ reference', reason: 'DW_TAG_reference_type has no C equivalent', origin: { die: '.debug_info+0x40' } },
        { kind: 'struct', name: 'holder', size: 8, declaration: false, members: [{ name: 'r', type: 2, offset: 0 }], origin: { die: '.debug_info+0x50' } },
        { kind: 'pointer', size: 8, target: 3, origin: { die: 'd4' } },
      ],
      functions: [
        { name: 'byref', external: true, returnType: 1, params: [{ name: 'r', type: 2 }], variadic: false, address: 0x1000n, origin: { die: '.debug_info+0x60' } },
        { name: 'inhold', external: true, returnType: 1, params: [{ name: 'h', type: 3 }], variadic: false, address: 0x1010n, origin: { die: '.debug_info+0x70' } },
        { name: 'ok', external: true, returnType: 1, params: [{ name: 'x', type: 1 }], variadic: false, address: 0x1020n, origin: { die: '.debug_info+0x80' } },
      ],
    };
    const { set, diagnostics } = fromDebugInfo(info, {});
    // Never read as void: the functions are left out, and the reason says why.
    expect(set.entries.map((e) => e.name)).toEqual(['ok']);
    expect(diagnostics.map((d) => d.where)).toEqual(['byref (.debug_info+0x60)', 'inhold (.debug_info+0x70)']);
    for (const d of diagnostics) expect(d.message).toMatch(/uses C\+\+ reference, which a frame cannot describe: DW_TAG_reference_type has no C equivalent; entry point skipped/);
  });
});

describe('codegen-v1 runtime entry point', () => {
  it('call without a transport goes to the local rexd (none here: says so); with one it round-trips', async () => {
    const ep = defineEntryPoint({ elfFile: 'libx.so' }, entry('add', [{ name: 'a', type: T.p('int32') }, { name: 'b', type: T.p('int32') }], T.p('int32')));
    const before = process.env.REX_SOCKET;
    process.env.REX_SOCKET = '/nonexistent/rexd.sock';
    try {
      await expect(ep.call({ a: 1, b: 2 })).rejects.toThrow(/no rexd is running/);
    } finally {
      if (before === undefined) delete process.env.REX_SOCKET;
      else process.env.REX_SOCKET = before;
    }
    setTransport(async (t, input) => {
      expect(t.name).toBe('add');
      const { args } = decodeInput(ep.plan, input);
      return encodeOutput(ep.plan, { return: (args.a as number) + (args.b as number) });
    });
    try {
      await expect(ep.call({ a: 40, b: 2 })).resolves.toEqual({ return: 42 });
    } finally {
      setTransport(undefined);
    }
  });
});

// ---- property: random entry definitions round-trip ----

const SCALARS: Prim[] = PRIMS.filter((p) => p !== 'longdouble');

function valueArb(t: TypeDesc, types: Map<string, AggregateDesc>): fc.Arbitrary<unknown> {
  switch (t.kind) {
    case 'prim': return primArb(t.prim);
    case 'array':
      if (t.elem.kind === 'prim' && ['char', 'int8', 'uint8'].includes(t.elem.prim)) return fc.uint8Array({ minLength: t.count, maxLength: t.count });
      return fc.array(valueArb(t.elem, types), { minLength: t.count, maxLength: t.count });
    case 'struct': {
      const a = types.get(t.name)!;
      return fc.record(Object.fromEntries(a.fields.map((f) => [f.name, valueArb(f.type, types)])));
    }
    default: throw new Error('unreachable');
  }
}

function primArb(p: Prim): fc.Arbitrary<unknown> {
  const bits: Record<string, [bigint, bigint]> = { int64: [-(2n ** 63n), 2n ** 63n - 1n], uint64: [0n, 2n ** 64n - 1n], int128: [-(2n ** 127n), 2n ** 127n - 1n], uint128: [0n, 2n ** 128n - 1n] };
  if (bits[p]) return fc.bigInt({ min: bits[p]![0], max: bits[p]![1] });
  switch (p) {
    case 'bool': return fc.boolean();
    case 'char': case 'int8': return fc.integer({ min: -128, max: 127 });
    case 'uint8': return fc.integer({ min: 0, max: 255 });
    case 'int16': return fc.integer({ min: -32768, max: 32767 });
    case 'uint16': return fc.integer({ min: 0, max: 65535 });
    case 'int32': return fc.integer();
    case 'uint32': return fc.integer({ min: 0, max: 2 ** 32 - 1 });
    case 'float': return fc.float({ noNaN: true, noDefaultInfinity: true }).map((x) => Math.fround(x)).filter((x) => !Object.is(x, -0));
    default: return fc.double({ noNaN: true }).filter((x) => !Object.is(x, -0));
  }
}

const scalarT = fc.constantFrom(...SCALARS).map((p): TypeDesc => ({ kind: 'prim', prim: p }));
const fieldT = fc.oneof({ weight: 3, arbitrary: scalarT }, { weight: 1, arbitrary: fc.tuple(scalarT, fc.integer({ min: 1, max: 4 })).map(([e, n]): TypeDesc => ({ kind: 'array', elem: e, count: n })) });
const structArb = fc.array(fieldT, { minLength: 1, maxLength: 5 }).map((fs): AggregateDesc => ({ kind: 'struct', name: 'S', fields: fs.map((type, i) => ({ name: `f${i}`, type })) }));

type ParamKind = { k: 'value'; t: TypeDesc } | { k: 'buf'; dir: 'in' | 'out' | 'inout'; elem: TypeDesc; counted: boolean } | { k: 'str' };
const paramArb: fc.Arbitrary<ParamKind> = fc.oneof(
  fc.oneof(scalarT, fc.constant<TypeDesc>({ kind: 'struct', name: 'S' })).map((t) => ({ k: 'value' as const, t })),
  fc.record({ k: fc.constant('buf' as const), dir: fc.constantFrom('in' as const, 'out' as const, 'inout' as const), elem: fc.oneof(scalarT, fc.constant<TypeDesc>({ kind: 'struct', name: 'S' })), counted: fc.boolean() }),
  fc.constant({ k: 'str' as const }),
);

describe('property: encode → decode round trip of random entry points', () => {
  it('inputs and outputs survive both directions', () => {
    fc.assert(
      fc.property(structArb, fc.array(paramArb, { maxLength: 6 }), fc.oneof(scalarT, fc.constant<TypeDesc>({ kind: 'void' })), fc.infiniteStream(fc.integer({ min: 0, max: 5 })), fc.context(), (S, kinds, ret, counts, ctx) => {
        const types = new Map([['S', S]]);
        const params: Parameters<typeof planEntry>[0]['params'] = [];
        kinds.forEach((k, i) => {
          const name = `p${i}`;
          if (k.k === 'value') params.push({ name, type: k.t });
          else if (k.k === 'str') params.push({ name, type: T.ptr(T.p('char')), direction: 'in', string: true });
          else {
            params.push({ name, type: T.ptr(k.elem), direction: k.dir, ...(k.counted ? { sizeIs: `${name}_n` } : {}) });
            if (k.counted) params.push({ name: `${name}_n`, type: T.p('uint32') });
          }
        });
        const plan = planEntry({ name: 'f', params, returns: ret, types: [S] });
        expect(plan.refusals).toEqual([]);
        const it = counts[Symbol.iterator]();
        const args: Record<string, unknown> = {};
        const results: Record<string, unknown> = {};
        const sample = <V>(a: fc.Arbitrary<V>): V => fc.sample(a, { numRuns: 1, seed: Number(it.next().value) * 7919 + params.length })[0]!;
        for (const p of params) {
          if (p.name.endsWith('_n')) continue;
          const t = p.type;
          if (t.kind !== 'pointer') { args[p.name] = sample(valueArb(t, types)); continue; }
          if (p.string) { args[p.name] = sample(fc.string({ maxLength: 8 }).filter((s) => !s.includes('\0'))); continue; }
          const n = p.sizeIs !== undefined ? Number(it.next().value) : 1;
          const elemArb = valueArb(t.target, types);
          const isByte = t.target.kind === 'prim' && ['char', 'int8', 'uint8'].includes(t.target.prim);
          const make = () => (isByte ? sample(fc.uint8Array({ minLength: n, maxLength: n })) : p.sizeIs !== undefined ? sample(fc.array(elemArb, { minLength: n, maxLength: n })) : sample(elemArb));
          if (p.direction !== 'in' && p.sizeIs !== undefined) args[`${p.name}_n`] = n;
          if (p.direction !== 'out') args[p.name] = make();
          if (p.direction !== 'in') results[p.name] = make();
        }
        if (ret.kind !== 'void') results.return = sample(valueArb(ret, types));
        ctx.log(JSON.stringify({ params, args }, (_, v) => (typeof v === 'bigint' ? `${v}n` : v)));
        const input = encodeInput(plan, args);
        const dec = decodeInput(plan, input);
        for (const [k, v] of Object.entries(args)) expect(dec.args[k]).toEqual(v);
        const output = encodeOutput(plan, results, dec.counts);
        expect(decodeOutput(plan, output)).toEqual(results);
      }),
      { numRuns: runs(300) },
    );
  });
});
