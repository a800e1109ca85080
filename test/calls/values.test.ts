// Values as users read them (docs/CALLS.md, "Values"): char arrays and marked
// strings as text with their bytes kept in --json, other bytes as hex, enums by
// name (unknown values as numbers), out-pointers by parameter name; and the
// --json forms taken back as arguments. Real frames from the runtime codec.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeInput, decodeOutput, encodeInput, encodeOutput, planEntry, type EntryDesc } from '../../src/runtime/frames/index.js';
import { fromReadableArgs, readableResults, resultJson, resultText } from '../../src/runtime/frames/values.js';
import { configureProperties, runs } from '../helpers/property.js';

configureProperties();

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const MOOD = { name: 'mood', prim: 'uint32' as const, values: [{ name: 'CALM', value: '1' }, { name: 'ANGRY', value: '2' }, { name: 'SLEEPY', value: '7' }] };
const moodT = { kind: 'enum' as const, name: 'mood', prim: 'uint32' as const };

/** struct badge { char tag[N]; uint8_t raw[N]; enum mood mood; } badge_of(enum mood m, char *out [out string size-is=cap], uint32 cap, int32 *exp [out]) */
function badgeDesc(n: number): EntryDesc {
  return {
    name: 'badge_of',
    params: [
      { name: 'm', type: moodT },
      { name: 'out', type: { kind: 'pointer', target: { kind: 'prim', prim: 'char' } }, direction: 'out', sizeIs: 'cap', string: true },
      { name: 'cap', type: { kind: 'prim', prim: 'uint32' } },
      { name: 'exp', type: { kind: 'pointer', target: { kind: 'prim', prim: 'int32' } }, direction: 'out' },
    ],
    returns: { kind: 'struct', name: 'badge' },
    types: [{
      kind: 'struct', name: 'badge', fields: [
        { name: 'tag', type: { kind: 'array', elem: { kind: 'prim', prim: 'char' }, count: n } },
        { name: 'raw', type: { kind: 'array', elem: { kind: 'prim', prim: 'uint8' }, count: n } },
        { name: 'mood', type: moodT },
      ],
    }],
    enums: [MOOD],
  };
}

/** The output frame for a result, decoded as `rex call` decodes it (marked strings as bytes). */
function roundTrip(n: number, ret: { tag: Uint8Array; raw: Uint8Array; mood: number }, out: string, cap: number, exp: number) {
  const plan = planEntry(badgeDesc(n));
  const frame = encodeOutput(plan, { return: ret, out, exp }, { out: cap, exp: 1 });
  return { plan, values: decodeOutput(plan, frame, { stringBytes: true }), plain: decodeOutput(plan, frame) };
}

describe('results in --json form', () => {
  it('any bytes of a char[N] and a uint8_t[N] come back exactly (bytes as hex), the text up to the first NUL', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 40 }).chain((n) => fc.tuple(fc.constant(n), fc.uint8Array({ minLength: n, maxLength: n }), fc.uint8Array({ minLength: n, maxLength: n }))), ([n, tag, raw]) => {
      const { plan, values } = roundTrip(n, { tag, raw, mood: 1 }, '', 1, 0);
      const j = resultJson(plan, values) as { return: { tag: { text: string; bytes: string }; raw: string } };
      expect(j.return.tag.bytes).toBe(hex(tag));
      expect(j.return.raw).toBe(hex(raw));
      const nul = tag.indexOf(0);
      expect(j.return.tag.text).toBe(new TextDecoder().decode(nul < 0 ? tag : tag.subarray(0, nul)));
      // The printed JSON, parsed again, gives the same bytes (what a script reading rex call --json sees).
      const again = JSON.parse(JSON.stringify(j)) as typeof j;
      expect(Buffer.from(again.return.tag.bytes, 'hex').equals(Buffer.from(tag))).toBe(true);
      expect(Buffer.from(again.return.raw, 'hex').equals(Buffer.from(raw))).toBe(true);
    }), { numRuns: runs(300) });
  });

  it('text without a NUL fills the array; text with one ends there; the bytes keep what follows', () => {
    fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 12 }).filter((s) => !s.includes('\0')), fc.uint8Array({ maxLength: 8 }), (s, tail) => {
      const text = new TextEncoder().encode(s);
      const full = roundTrip(text.length || 1, { tag: text.length ? text : Uint8Array.of(0), raw: new Uint8Array(text.length || 1), mood: 2 }, '', 1, 0);
      expect((resultJson(full.plan, full.values) as { return: { tag: { text: string } } }).return.tag.text).toBe(s);
      const withNul = Uint8Array.from([...text, 0, ...tail]);
      const cut = roundTrip(withNul.length, { tag: withNul, raw: new Uint8Array(withNul.length), mood: 2 }, '', 1, 0);
      const j = resultJson(cut.plan, cut.values) as { return: { tag: { text: string; bytes: string } } };
      expect(j.return.tag).toEqual({ text: s, bytes: hex(withNul) });
      expect((readableResults(cut.plan, cut.plain) as { return: { tag: string } }).return.tag).toBe(s);
    }), { numRuns: runs(200) });
  });

  it('a char * out string: text up to its NUL, bytes the whole buffer; an out-pointer by its parameter name', () => {
    const { plan, values, plain } = roundTrip(3, { tag: Uint8Array.of(0x61, 0x62, 0), raw: Uint8Array.of(0x61, 0x62, 0), mood: 7 }, 'hi', 4, -3);
    expect(resultJson(plan, values)).toEqual({
      return: { tag: { text: 'ab', bytes: '616200' }, raw: '616200', mood: { name: 'SLEEPY', value: 7 } },
      out: { text: 'hi', bytes: '68690000' },
      exp: -3,
    });
    expect(resultText(plan, values)).toBe('return = {"tag": "ab", "raw": "616200", "mood": "SLEEPY"}\nout = "hi"\nexp = -3\n');
    expect(readableResults(plan, plain)).toEqual({ return: { tag: 'ab', raw: Uint8Array.of(0x61, 0x62, 0), mood: 'SLEEPY' }, out: 'hi', exp: -3 });
  });

  it('enums: the constant name when the definition names the value, else the number', () => {
    fc.assert(fc.property(fc.oneof(fc.constantFrom(1, 2, 7), fc.integer({ min: 0, max: 0xffffffff })), (v) => {
      const { plan, values, plain } = roundTrip(1, { tag: Uint8Array.of(0), raw: Uint8Array.of(0), mood: v }, '', 1, 0);
      const known = MOOD.values.find((m) => Number(m.value) === v)?.name;
      expect((resultJson(plan, values) as { return: { mood: unknown } }).return.mood).toEqual({ name: known ?? null, value: v });
      expect((readableResults(plan, plain) as { return: { mood: unknown } }).return.mood).toBe(known ?? v);
      expect(resultText(plan, values)).toContain(`"mood": ${known ? JSON.stringify(known) : v}}`);
    }), { numRuns: runs(200) });
  });

  it('a lone return value prints alone: a number, an enum by bare name or number; 64-bit integers as digits (strings in --json)', () => {
    const f = (returns: EntryDesc['returns'], ret: unknown) => {
      const plan = planEntry({ name: 'f', params: [], returns, types: [], enums: [MOOD] });
      const values = decodeOutput(plan, encodeOutput(plan, { return: ret }), { stringBytes: true });
      return { text: resultText(plan, values), json: resultJson(plan, values) };
    };
    expect(f({ kind: 'prim', prim: 'double' }, 3)).toEqual({ text: '3\n', json: { return: 3 } });
    expect(f({ kind: 'prim', prim: 'double' }, NaN)).toEqual({ text: 'NaN\n', json: { return: 'NaN' } });
    // Text gives the digits the type guarantees (DBL_DIG, FLT_DIG); --json the exact value.
    expect(f({ kind: 'prim', prim: 'double' }, 3.0000000000000004)).toEqual({ text: '3\n', json: { return: 3.0000000000000004 } });
    expect(f({ kind: 'prim', prim: 'double' }, 0.1 + 0.2)).toEqual({ text: '0.3\n', json: { return: 0.30000000000000004 } });
    expect(f({ kind: 'prim', prim: 'double' }, -1e-300)).toEqual({ text: '-1e-300\n', json: { return: -1e-300 } });
    expect(f({ kind: 'prim', prim: 'float' }, Math.fround(1.1))).toEqual({ text: '1.1\n', json: { return: Math.fround(1.1) } });
    expect(f({ kind: 'prim', prim: 'double' }, -0).text).toBe('-0\n');
    expect(f(moodT, 2)).toEqual({ text: 'ANGRY\n', json: { return: { name: 'ANGRY', value: 2 } } });
    expect(f(moodT, 42)).toEqual({ text: '42\n', json: { return: { name: null, value: 42 } } });
    expect(f({ kind: 'prim', prim: 'int64' }, -(2n ** 63n))).toEqual({ text: '-9223372036854775808\n', json: { return: '-9223372036854775808' } });
    expect(f({ kind: 'prim', prim: 'bool' }, true)).toEqual({ text: 'true\n', json: { return: true } });
  });
});

describe('enum constants spelled as the definition has them', () => {
  it('an unsigned enum whose constant is written negative (DWARF sdata) still names its value, both ways', () => {
    const wide = { name: 'flags', prim: 'uint32' as const, values: [{ name: 'ALL', value: '-1' }, { name: 'NONE', value: '0' }] };
    const t = { kind: 'enum' as const, name: 'flags', prim: 'uint32' as const };
    const plan = planEntry({ name: 'g', params: [{ name: 'f', type: t }], returns: t, types: [], enums: [wide] });
    const values = decodeOutput(plan, encodeOutput(plan, { return: 0xffffffff }), { stringBytes: true });
    expect(resultText(plan, values)).toBe('ALL\n');
    expect(resultJson(plan, values)).toEqual({ return: { name: 'ALL', value: 0xffffffff } });
    expect(decodeInput(plan, encodeInput(plan, fromReadableArgs(plan, { f: 'ALL' }))).args.f).toBe(0xffffffff);
  });
});

describe('arguments in readable and --json form', () => {
  /** void put(struct badge b, enum mood m, enum mood *pm [in]) */
  const put = (n: number) => planEntry({
    name: 'put',
    params: [{ name: 'b', type: { kind: 'struct', name: 'badge' } }, { name: 'm', type: moodT }, { name: 'pm', type: { kind: 'pointer', target: moodT }, direction: 'in' }],
    returns: { kind: 'void' },
    types: badgeDesc(n).types,
    enums: [MOOD],
  });

  it('the --json form of any struct is taken back as an argument and gives the same bytes', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 24 }).chain((n) => fc.tuple(fc.constant(n), fc.uint8Array({ minLength: n, maxLength: n }), fc.uint8Array({ minLength: n, maxLength: n }), fc.integer({ min: 0, max: 0xffffffff }))), ([n, tag, raw, mood]) => {
      const out = roundTrip(n, { tag, raw, mood }, '', 1, 0);
      const printed = JSON.parse(JSON.stringify((resultJson(out.plan, out.values) as { return: unknown }).return)) as unknown;
      const plan = put(n);
      const { args } = decodeInput(plan, encodeInput(plan, fromReadableArgs(plan, { b: printed, m: { name: null, value: mood }, pm: mood }, { json: true })));
      expect(args.b).toEqual({ tag, raw, mood });
      expect(args.m).toBe(mood);
    }), { numRuns: runs(200) });
  });

  it('text for a char array is NUL-padded, may fill it exactly, and must fit; enum constants by name or number', () => {
    const plan = put(3);
    const enc = (b: unknown, m: unknown, pm: unknown = 1) => decodeInput(plan, encodeInput(plan, fromReadableArgs(plan, { b, m, pm }, { json: true }))).args;
    expect(enc({ tag: 'ab', raw: '010203', mood: 'CALM' }, 'SLEEPY', 'ANGRY')).toEqual({ b: { tag: Uint8Array.of(0x61, 0x62, 0), raw: Uint8Array.of(1, 2, 3), mood: 1 }, m: 7, pm: 2 });
    expect((enc({ tag: 'abc', raw: [1, 2, 3], mood: 2 }, 9).b as { tag: Uint8Array }).tag).toEqual(Uint8Array.of(0x61, 0x62, 0x63));
    expect(() => enc({ tag: 'abcd', raw: '000000', mood: 1 }, 1)).toThrow(/b\.tag: "abcd" is 4 bytes, more than the 3 of char\[3\]/);
    expect(() => enc({ tag: 'a\0b', raw: '000000', mood: 1 }, 1)).toThrow(/b\.tag: the text contains a NUL character/);
    expect(() => enc({ tag: 'a', raw: '000000', mood: 1 }, 'FURIOUS')).toThrow(expect.objectContaining({ message: "m: 'FURIOUS' is not a constant of enum mood", hint: 'use one of: CALM, ANGRY, SLEEPY, or a number' }));
    expect(() => enc({ tag: 'a', raw: 'zz', mood: 1 }, 1)).toThrow(/b\.raw: 'zz' is not hex bytes/);
  });
});
