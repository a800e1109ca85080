/**
 * Values as users read them (docs/CALLS.md, "Values"): the frame codec gives
 * byte-exact values (char arrays as Uint8Array, enums as numbers); this module
 * turns them into what a person or a typed stub expects, and back:
 *
 * - `char[N]` and `char *` marked `string="yes"` read as text, up to the first
 *   NUL (the raw bytes stay available: `{text, bytes}` in JSON);
 * - other byte arrays and buffers (`int8_t`, `uint8_t`, `void *`) stay bytes;
 * - enums read as their enumerator's name when the definition names the value,
 *   and as the number otherwise.
 *
 * `rex call` prints with {@link resultJson} / {@link resultText}; generated
 * stubs convert with {@link readableResults} / {@link fromReadableArgs}.
 */
import { RexError, ErrorCodes } from '../../util/errors.js';
import { isBigPrim } from './codec.js';
import { primLayout, type LayoutEngine } from './layout.js';
import { isByteType, type BufferDef, type EntryPlan } from './plan.js';
import type { EnumDesc, Prim, TypeDesc } from './types.js';

/** The shape of one value of a call: a plain type, a marked string buffer, a byte buffer, or a buffer of many elements. */
type Shape = { t: TypeDesc } | { cstring: true } | { bytes: true } | { list: TypeDesc };

const utf8 = new TextEncoder();
const utf8d = new TextDecoder('utf-8');

/** True for `char` arrays (not `int8_t`/`uint8_t` ones): these read as text. */
export function isCharArray(t: TypeDesc): boolean {
  return t.kind === 'array' && t.elem.kind === 'prim' && t.elem.prim === 'char';
}

/** The text of C characters: UTF-8 up to the first NUL (all of them when there is none); invalid sequences become U+FFFD. */
export function cText(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return utf8d.decode(nul < 0 ? bytes : bytes.subarray(0, nul));
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

function bufferShape(b: BufferDef): Shape {
  if (b.string) return { cstring: true };
  if (isByteType(b.elem)) return { bytes: true };
  return 'one' in b.count ? { t: b.elem } : { list: b.elem };
}

/** The values of a call's results in order (`return`, then out/inout parameters by parameter order) with their shapes. */
function resultShapes(plan: EntryPlan): [string, Shape][] {
  const out: [string, Shape][] = [];
  if (plan.desc.returns.kind !== 'void') out.push(['return', { t: plan.desc.returns }]);
  for (const b of plan.output.buffers) out.push([b.param, bufferShape(b)]);
  return out;
}

function enumsOf(plan: EntryPlan): Map<string, EnumDesc> {
  return new Map((plan.desc.enums ?? []).map((e) => [e.name, e]));
}

/**
 * A constant's value as the enum's integer type holds it: definitions may
 * spell an unsigned enum's constant as a negative number (DWARF's sdata), so
 * both sides are wrapped to the type's width and signedness.
 */
function asPrim(prim: Prim, v: bigint): bigint {
  const bits = primLayout(prim).size * 8;
  return prim.startsWith('uint') || prim === 'bool' ? BigInt.asUintN(bits, v) : BigInt.asIntN(bits, v);
}

/** A constant's value (decimal, as definitions spell it) as the enum's type holds it. */
export function enumConstant(prim: Prim, value: string): string {
  return /^-?\d+$/.test(value) ? asPrim(prim, BigInt(value)).toString() : value;
}

/** The enumerator that names `v` in enum `name`, if the definition has one. */
function enumName(enums: Map<string, EnumDesc>, name: string, v: unknown): string | undefined {
  const e = enums.get(name);
  if (!e || (typeof v !== 'number' && typeof v !== 'bigint')) return undefined;
  const want = asPrim(e.prim, BigInt(v));
  return e.values.find((x) => /^-?\d+$/.test(x.value) && asPrim(e.prim, BigInt(x.value)) === want)?.name;
}

/* ------------------------------------------------------------------ results */

type Leaf = (t: TypeDesc, v: unknown) => unknown;

/** Walks a decoded value along its type, giving `leaf` each scalar, char array, byte array and union. */
function walk(engine: LayoutEngine, t: TypeDesc, v: unknown, leaf: Leaf): unknown {
  if (t.kind === 'array' && !isByteType(t.elem) && Array.isArray(v)) return v.map((x) => walk(engine, t.elem, x, leaf));
  if (t.kind === 'struct' && v && typeof v === 'object' && !(v instanceof Uint8Array)) {
    const o = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const f of engine.layoutAggregate(t.name).fields) out[f.name] = walk(engine, f.type, o[f.name], leaf);
    return out;
  }
  return leaf(t, v);
}

function walkShape(plan: EntryPlan, s: Shape, v: unknown, leaf: Leaf, cstring: (bytes: Uint8Array | string) => unknown, bytes: (b: Uint8Array) => unknown): unknown {
  if ('cstring' in s) return cstring(v as Uint8Array | string);
  if ('bytes' in s) return bytes(v as Uint8Array);
  if ('list' in s) return (v as unknown[]).map((x) => walk(plan.engine, s.list, x, leaf));
  return walk(plan.engine, s.t, v, leaf);
}

/**
 * Results as a typed stub gives them: char arrays as strings, enums by name
 * (a value no enumerator names stays a number); everything else as the codec
 * decoded it (bigint for 64-bit integers, Uint8Array for bytes).
 */
export function readableResults(plan: EntryPlan, values: Record<string, unknown>): Record<string, unknown> {
  const enums = enumsOf(plan);
  const leaf: Leaf = (t, v) => {
    if (isCharArray(t) && v instanceof Uint8Array) return cText(v);
    if (t.kind === 'enum') return enumName(enums, t.name, v) ?? v;
    return v;
  };
  const out: Record<string, unknown> = { ...values };
  for (const [k, s] of resultShapes(plan)) {
    if (k in values) out[k] = walkShape(plan, s, values[k], leaf, (x) => (x instanceof Uint8Array ? cText(x) : x), (b) => b);
  }
  return out;
}

function jsonNumber(v: number): number | string {
  return Number.isFinite(v) ? v : String(v);
}

/**
 * One value in `rex call --json` form (rex(1); docs/CALLS.md, "Values as users read them"):
 * 64-bit and 128-bit integers as decimal strings, non-finite floats as
 * "NaN"/"Infinity"/"-Infinity", enums as `{name, value}` (name null when no
 * enumerator names the value), char arrays and marked strings as
 * `{text, bytes}`, other bytes and unions as hex strings.
 */
function jsonLeaf(enums: Map<string, EnumDesc>): Leaf {
  return (t, v) => {
    if (isCharArray(t) && v instanceof Uint8Array) return { text: cText(v), bytes: hex(v) };
    if (v instanceof Uint8Array) return hex(v);
    if (t.kind === 'enum') return { name: enumName(enums, t.name, v) ?? null, value: typeof v === 'bigint' ? v.toString() : v };
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'number') return jsonNumber(v);
    return v;
  };
}

/** The results of a call in `rex call --json` form: `return`, then each out/inout pointer parameter by name. Needs string buffers as bytes (decodeOutput with `stringBytes`). */
export function resultJson(plan: EntryPlan, values: Record<string, unknown>): Record<string, unknown> {
  const leaf = jsonLeaf(enumsOf(plan));
  const out: Record<string, unknown> = {};
  for (const [k, s] of resultShapes(plan)) {
    out[k] = walkShape(plan, s, values[k], leaf, (x) => (x instanceof Uint8Array ? { text: cText(x), bytes: hex(x) } : { text: x, bytes: hex(utf8.encode(x)) }), hex);
  }
  return out;
}

/** A value as text: JSON, with 64-bit integers as bare digits, floats to the digits their type guarantees, NaN/Infinity bare (JSON5), enums by name (bare at the top). */
function textOf(v: unknown, top: boolean): string {
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
  if (v instanceof FloatText) return v.toString();
  if (v instanceof EnumText) return top || v.name === undefined ? String(v.name ?? v.value) : JSON.stringify(v.name);
  if (v instanceof Uint8Array) return JSON.stringify(hex(v));
  if (Array.isArray(v)) return `[${v.map((x) => textOf(x, false)).join(', ')}]`;
  if (v && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${textOf(x, false)}`).join(', ')}}`;
  return JSON.stringify(v);
}

class EnumText {
  constructor(readonly name: string | undefined, readonly value: unknown) {}
}

/** A float or double for reading: the digits its type guarantees (FLT_DIG 6, DBL_DIG 15), as C's %.6g/%.15g; --json keeps the exact value. */
class FloatText {
  constructor(readonly value: number, readonly digits: number) {}
  toString(): string {
    const v = this.value;
    if (!Number.isFinite(v)) return String(v);
    if (Object.is(v, -0)) return '-0';
    return String(Number(v.toPrecision(this.digits)));
  }
}

/**
 * The results of a call as `rex call` prints them: a lone return value alone on
 * its line (`3`); otherwise one `NAME = VALUE` line each for `return` and the
 * out/inout pointer parameters. Text in quotes, enums by name, bytes as hex,
 * a double to 15 significant digits (DBL_DIG; glibc's cbrt(27) is
 * 3.0000000000000004 and prints 3), a float to 6 (FLT_DIG).
 */
export function resultText(plan: EntryPlan, values: Record<string, unknown>): string {
  const enums = enumsOf(plan);
  const leaf: Leaf = (t, v) => {
    if (isCharArray(t) && v instanceof Uint8Array) return cText(v);
    if (t.kind === 'enum') return new EnumText(enumName(enums, t.name, v), v);
    if (t.kind === 'prim' && (t.prim === 'float' || t.prim === 'double') && typeof v === 'number') return new FloatText(v, t.prim === 'float' ? 6 : 15);
    return v;
  };
  const shapes = resultShapes(plan);
  const rendered = shapes.map(([k, s]) => [k, textOf(walkShape(plan, s, values[k], leaf, (x) => (x instanceof Uint8Array ? cText(x) : x), (b) => b), true)] as const);
  if (rendered.length === 1 && rendered[0]![0] === 'return') return `${rendered[0]![1]}\n`;
  return rendered.map(([k, r]) => `${k} = ${r}\n`).join('');
}

/* ------------------------------------------------------------------ arguments */

function bad(path: string, message: string, hint?: string): never {
  throw new RexError(ErrorCodes.FRAME_ENCODE, `${path}: ${message}`, hint === undefined ? { where: path } : { where: path, hint });
}

/** Options of {@link fromReadableArgs}: `json` also takes the forms `rex call --json` prints (hex strings for bytes, `{text, bytes}`, `{name, value}`). */
export interface ReadableArgOptions {
  json?: boolean;
}

function hexBytes(s: string, path: string): Uint8Array {
  const h = s.startsWith('hex:') ? s.slice(4) : s;
  if (!/^([0-9a-f]{2})*$/i.test(h)) bad(path, `'${s}' is not hex bytes`, 'write bytes as hex, two digits a byte: "0aff10"');
  return new Uint8Array(Buffer.from(h, 'hex'));
}

/** The bytes of a `char[count]` from text: UTF-8, NUL-padded; text that fills the array exactly has no NUL, as in a C initializer. */
export function charArrayOf(text: string, count: number, path: string): Uint8Array {
  const s = utf8.encode(text);
  if (s.includes(0)) bad(path, 'the text contains a NUL character, which would end it early in C');
  if (s.length > count) bad(path, `"${text}" is ${s.length} bytes, more than the ${count} of char[${count}]`, 'shorten it');
  const out = new Uint8Array(count);
  out.set(s);
  return out;
}

function argLeaf(enums: Map<string, EnumDesc>, opts: ReadableArgOptions) {
  return (t: TypeDesc, v: unknown, path: string): unknown => {
    if (t.kind === 'array' && isByteType(t.elem)) {
      if (v instanceof Uint8Array) return v;
      if (isCharArray(t)) {
        if (typeof v === 'string') return charArrayOf(v, t.count, path);
        if (opts.json && v && typeof v === 'object' && typeof (v as { bytes?: unknown }).bytes === 'string') return hexBytes((v as { bytes: string }).bytes, path);
        if (opts.json && v && typeof v === 'object' && typeof (v as { text?: unknown }).text === 'string') return charArrayOf((v as { text: string }).text, t.count, path);
      }
      if (opts.json && typeof v === 'string') return hexBytes(v, path);
      if (opts.json && Array.isArray(v) && v.every((x) => Number.isInteger(x))) return Uint8Array.from(v as number[]);
      return v;
    }
    if (t.kind === 'union' && opts.json && typeof v === 'string') return hexBytes(v, path);
    if (t.kind === 'enum') {
      let x = v;
      if (opts.json && x && typeof x === 'object' && 'value' in x) x = (x as { value: unknown }).value;
      else if (opts.json && x && typeof x === 'object' && typeof (x as { name?: unknown }).name === 'string') x = (x as { name: string }).name;
      if (typeof x === 'string' && !/^-?\d+$/.test(x)) {
        const e = enums.get(t.name);
        const found = e?.values.find((m) => m.name === x);
        if (!found) bad(path, `'${x}' is not a constant of enum ${t.name}`, e ? `use one of: ${e.values.map((m) => m.name).join(', ')}, or a number` : 'the definition does not name its constants; give the number');
        x = asPrim(t.prim, BigInt(found.value)).toString();
      }
      if (typeof x === 'string') return isBigPrim(t.prim) ? BigInt(x) : Number(x);
      if (typeof x === 'number' && isBigPrim(t.prim) && Number.isInteger(x)) return BigInt(x);
      return x;
    }
    if (opts.json && t.kind === 'prim' && typeof v === 'string' && /^-?\d+$/.test(v) && isBigPrim(t.prim)) return BigInt(v);
    return v;
  };
}

function walkArg(engine: LayoutEngine, t: TypeDesc, v: unknown, path: string, leaf: ReturnType<typeof argLeaf>): unknown {
  if (t.kind === 'array' && !isByteType(t.elem) && Array.isArray(v)) return v.map((x, i) => walkArg(engine, t.elem, x, `${path}[${i}]`, leaf));
  if (t.kind === 'struct' && v && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array)) {
    const o = v as Record<string, unknown>;
    const out: Record<string, unknown> = { ...o };
    for (const f of engine.layoutAggregate(t.name).fields) if (f.name in o) out[f.name] = walkArg(engine, f.type, o[f.name], `${path}.${f.name}`, leaf);
    return out;
  }
  return leaf(t, v, path);
}

/**
 * Arguments as a typed stub (or `rex call`) takes them, made ready for the
 * frame codec: text for char arrays, enum constants by name (or number);
 * Uint8Array for char arrays is still taken as is.
 */
export function fromReadableArgs(plan: EntryPlan, args: Record<string, unknown>, opts: ReadableArgOptions = {}): Record<string, unknown> {
  const leaf = argLeaf(enumsOf(plan), opts);
  const out: Record<string, unknown> = { ...args };
  const inBufs = new Map(plan.input.buffers.map((b) => [b.param, b]));
  for (const p of plan.desc.params) {
    if (!(p.name in args)) continue;
    const b = inBufs.get(p.name);
    if (!b) {
      out[p.name] = walkArg(plan.engine, p.type, args[p.name], p.name, leaf);
      continue;
    }
    if (b.direction === 'out' || b.string) continue;
    const s = bufferShape(b);
    const v = args[p.name];
    if ('bytes' in s) out[p.name] = opts.json && typeof v === 'string' ? hexBytes(v, p.name) : v;
    else if ('list' in s) out[p.name] = Array.isArray(v) ? v.map((x, i) => walkArg(plan.engine, s.list, x, `${p.name}[${i}]`, leaf)) : v;
    else if ('t' in s) out[p.name] = walkArg(plan.engine, s.t, v, p.name, leaf);
  }
  return out;
}
