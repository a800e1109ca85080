/**
 * Encoding and decoding of input and output frames (docs/FRAMES.md): host byte
 * order (little-endian x86-64), no XDR, C struct layout from ./layout.ts.
 * Callers use encodeInput/decodeOutput; servers and tests use the inverse pair.
 */
import { RexError, ErrorCodes } from '../../util/errors.js';
import { alignUp, type LayoutEngine } from './layout.js';
import { isByteType, type BufferDef, type EntryPlan, type FrameDef } from './plan.js';
import type { TypeDesc, Prim } from './types.js';

/** Values by parameter name (and `return` in results), as typed stubs pass them. */
export type FrameValues = Record<string, unknown>;

/** What a server sees after decoding an input frame. */
export interface DecodedInput {
  args: FrameValues;
  /** Element count of every pointer parameter's buffer (the capacity for out buffers). */
  counts: Record<string, number>;
}

/** Frames larger than this are refused before allocation (a corrupt length must not exhaust memory). */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

const INT_RANGE: Partial<Record<Prim, [bigint, bigint]>> = {
  char: [-128n, 127n], int8: [-128n, 127n], uint8: [0n, 255n],
  int16: [-32768n, 32767n], uint16: [0n, 65535n],
  int32: [-(2n ** 31n), 2n ** 31n - 1n], uint32: [0n, 2n ** 32n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n], uint64: [0n, 2n ** 64n - 1n],
  int128: [-(2n ** 127n), 2n ** 127n - 1n], uint128: [0n, 2n ** 128n - 1n],
};

/** True for primitives carried as bigint in JavaScript (wider than 32 bits). */
export function isBigPrim(p: Prim): boolean {
  return p === 'int64' || p === 'uint64' || p === 'int128' || p === 'uint128';
}

function fail(path: string, message: string, hint?: string): never {
  throw new RexError(ErrorCodes.FRAME_ENCODE, `${path}: ${message}`, hint === undefined ? { where: path } : { where: path, hint });
}

function refuseIfNeeded(plan: EntryPlan): void {
  const r = plan.refusals[0];
  if (r) {
    throw new RexError(ErrorCodes.ENTRY_REFUSED, `${plan.desc.name}: remote call refused: ${r.message}`, { where: r.where, hint: r.hint });
  }
}

class Writer {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }
}

function writeValue(engine: LayoutEngine, w: Writer, off: number, t: TypeDesc, v: unknown, path: string): void {
  const dv = w.view;
  switch (t.kind) {
    case 'prim':
    case 'enum':
      return writePrim(dv, off, t.prim, v, path);
    case 'array': {
      if (isByteType(t.elem)) {
        if (!(v instanceof Uint8Array)) fail(path, `expected a Uint8Array of ${t.count} bytes`);
        if (v.length !== t.count) fail(path, `expected ${t.count} bytes, got ${v.length}`);
        w.bytes.set(v, off);
        return;
      }
      if (!Array.isArray(v)) fail(path, `expected an array of ${t.count} elements`);
      if (v.length !== t.count) fail(path, `expected ${t.count} elements, got ${v.length}`);
      const es = engine.layoutOf(t.elem).size;
      v.forEach((e, i) => writeValue(engine, w, off + i * es, t.elem, e, `${path}[${i}]`));
      return;
    }
    case 'struct': {
      if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array) fail(path, `expected an object for struct ${t.name}`);
      const obj = v as Record<string, unknown>;
      for (const f of engine.layoutAggregate(t.name).fields) {
        if (!(f.name in obj)) fail(`${path}.${f.name}`, 'member is missing');
        writeValue(engine, w, off + f.offset, f.type, obj[f.name], `${path}.${f.name}`);
      }
      return;
    }
    case 'union': {
      const size = engine.layoutOf(t).size;
      if (!(v instanceof Uint8Array) || v.length !== size) fail(path, `expected a Uint8Array of ${size} bytes (union ${t.name} travels as raw bytes)`);
      w.bytes.set(v, off);
      return;
    }
    default:
      fail(path, `a ${t.kind} cannot be encoded`);
  }
}

function writePrim(dv: DataView, off: number, p: Prim, v: unknown, path: string): void {
  if (p === 'bool') {
    if (typeof v !== 'boolean') fail(path, 'expected a boolean');
    dv.setUint8(off, v ? 1 : 0);
    return;
  }
  if (p === 'float' || p === 'double') {
    if (typeof v !== 'number') fail(path, 'expected a number');
    if (p === 'float') dv.setFloat32(off, v, true);
    else dv.setFloat64(off, v, true);
    return;
  }
  if (p === 'longdouble') fail(path, 'long double cannot be encoded');
  let b: bigint;
  if (typeof v === 'bigint') b = v;
  else if (typeof v === 'number' && Number.isSafeInteger(v)) b = BigInt(v);
  else fail(path, `expected an integer (${p})${typeof v === 'number' ? `, got ${v}` : ''}`);
  const [lo, hi] = INT_RANGE[p]!;
  if (b < lo || b > hi) fail(path, `${b} is out of range for ${p} (${lo}..${hi})`);
  switch (p) {
    case 'char': case 'int8': return dv.setInt8(off, Number(b));
    case 'uint8': return dv.setUint8(off, Number(b));
    case 'int16': return dv.setInt16(off, Number(b), true);
    case 'uint16': return dv.setUint16(off, Number(b), true);
    case 'int32': return dv.setInt32(off, Number(b), true);
    case 'uint32': return dv.setUint32(off, Number(b), true);
    case 'int64': return dv.setBigInt64(off, b, true);
    case 'uint64': return dv.setBigUint64(off, b, true);
    default: {
      // 128-bit: low 64 bits first (little-endian).
      dv.setBigUint64(off, BigInt.asUintN(64, b), true);
      dv.setBigUint64(off + 8, BigInt.asUintN(64, b >> 64n), true);
    }
  }
}

function readValue(engine: LayoutEngine, bytes: Uint8Array, dv: DataView, off: number, t: TypeDesc): unknown {
  switch (t.kind) {
    case 'prim':
    case 'enum':
      return readPrim(dv, off, t.prim);
    case 'array': {
      if (isByteType(t.elem)) return bytes.slice(off, off + t.count);
      const es = engine.layoutOf(t.elem).size;
      return Array.from({ length: t.count }, (_, i) => readValue(engine, bytes, dv, off + i * es, t.elem));
    }
    case 'struct': {
      const out: Record<string, unknown> = {};
      for (const f of engine.layoutAggregate(t.name).fields) out[f.name] = readValue(engine, bytes, dv, off + f.offset, f.type);
      return out;
    }
    case 'union':
      return bytes.slice(off, off + engine.layoutOf(t).size);
    default:
      throw new RexError(ErrorCodes.FRAME_ENCODE, `a ${t.kind} cannot be decoded`);
  }
}

function readPrim(dv: DataView, off: number, p: Prim): unknown {
  switch (p) {
    case 'bool': return dv.getUint8(off) !== 0;
    case 'char': case 'int8': return dv.getInt8(off);
    case 'uint8': return dv.getUint8(off);
    case 'int16': return dv.getInt16(off, true);
    case 'uint16': return dv.getUint16(off, true);
    case 'int32': return dv.getInt32(off, true);
    case 'uint32': return dv.getUint32(off, true);
    case 'int64': return dv.getBigInt64(off, true);
    case 'uint64': return dv.getBigUint64(off, true);
    case 'float': return dv.getFloat32(off, true);
    case 'double': return dv.getFloat64(off, true);
    case 'int128': case 'uint128': {
      const lo = dv.getBigUint64(off, true);
      const hi = dv.getBigUint64(off + 8, true);
      const u = (hi << 64n) | lo;
      return p === 'int128' ? BigInt.asIntN(128, u) : u;
    }
    case 'longdouble':
      throw new RexError(ErrorCodes.FRAME_ENCODE, 'long double cannot be decoded');
  }
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder('utf-8');

/** The bytes of a buffer's data section for value `v`, and its element count. */
function encodeBuffer(engine: LayoutEngine, b: BufferDef, v: unknown, path: string, capacity: number | undefined): { data: Uint8Array; count: number } {
  if (b.string) {
    if (typeof v !== 'string') fail(path, 'expected a string');
    const s = utf8.encode(v);
    if (s.includes(0)) fail(path, 'the string contains a NUL character, which would end it early in C');
    const n = capacity ?? s.length + 1;
    if (s.length + 1 > n) fail(path, `the string needs ${s.length + 1} bytes with its NUL, but the buffer holds ${n}`, 'pass a larger size');
    const data = new Uint8Array(n);
    data.set(s);
    return { data, count: n };
  }
  if (isByteType(b.elem)) {
    if (!(v instanceof Uint8Array)) fail(path, 'expected a Uint8Array');
    return { data: v, count: v.length };
  }
  const items = 'one' in b.count ? [v] : v;
  if (!Array.isArray(items)) fail(path, 'expected an array');
  const w = new Writer(items.length * b.elemSize);
  items.forEach((e, i) => writeValue(engine, w, i * b.elemSize, b.elem, e, 'one' in b.count ? path : `${path}[${i}]`));
  return { data: w.bytes, count: items.length };
}

function decodeBuffer(engine: LayoutEngine, b: BufferDef, data: Uint8Array, stringBytes = false): unknown {
  if (b.string && stringBytes) return data.slice();
  if (b.string) {
    const nul = data.indexOf(0);
    return utf8d.decode(nul < 0 ? data : data.subarray(0, nul));
  }
  if (isByteType(b.elem)) return data.slice();
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = data.length / b.elemSize;
  const items = Array.from({ length: n }, (_, i) => readValue(engine, data, dv, i * b.elemSize, b.elem));
  return 'one' in b.count ? items[0] : items;
}

function countFromParam(values: FrameValues, name: string, path: string): number {
  const v = values[name];
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 0xffffffff) fail(path, `size parameter '${name}' must be a non-negative integer, got ${String(v)}`);
  return n;
}

/** Assembles a frame from fixed values and per-buffer sections; `sections` maps param to its data (or a byte length with no data). */
function assemble(engine: LayoutEngine, frame: FrameDef, values: FrameValues, sections: Map<string, { data?: Uint8Array; bytes: number }>, label: string): Uint8Array {
  let total = frame.fixedSize;
  const placed: { at: number; data: Uint8Array }[] = [];
  for (const b of frame.buffers) {
    const s = sections.get(b.param)!;
    if (s.data === undefined) continue;
    const at = alignUp(total, b.align);
    placed.push({ at, data: s.data });
    total = at + s.data.length;
  }
  if (total > MAX_FRAME_BYTES) fail(label, `the frame would be ${total} bytes, more than the ${MAX_FRAME_BYTES}-byte limit`);
  const w = new Writer(total);
  for (const slot of frame.slots) {
    if (slot.role === 'length') {
      const bytes = sections.get(slot.name)!.bytes;
      if (bytes > 0xffffffff) fail(slot.name, 'buffer too large');
      w.view.setUint32(slot.offset, bytes, true);
    } else {
      writeValue(engine, w, slot.offset, slot.type, values[slot.name], slot.name === 'return' ? 'return' : slot.name);
    }
  }
  for (const p of placed) w.bytes.set(p.data, p.at);
  return w.bytes;
}

/** Splits a received frame into fixed values and buffer sections, checking every length against the frame size. */
function disassemble(engine: LayoutEngine, frame: FrameDef, buf: Uint8Array, label: string, dataFor: (b: BufferDef) => boolean): { values: FrameValues; sections: Map<string, { bytes: number; data?: Uint8Array }> } {
  if (buf.length < frame.fixedSize) {
    throw new RexError(ErrorCodes.FRAME_ENCODE, `${label}: frame is ${buf.length} bytes, shorter than its ${frame.fixedSize}-byte fixed part`, { where: `${label}+0` });
  }
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const values: FrameValues = {};
  const sections = new Map<string, { bytes: number; data?: Uint8Array }>();
  for (const slot of frame.slots) {
    if (slot.role === 'length') sections.set(slot.name, { bytes: dv.getUint32(slot.offset, true) });
    else values[slot.name] = readValue(engine, buf, dv, slot.offset, slot.type);
  }
  let pos = frame.fixedSize;
  for (const b of frame.buffers) {
    const s = sections.get(b.param)!;
    if (s.bytes % b.elemSize !== 0) {
      throw new RexError(ErrorCodes.FRAME_ENCODE, `${label}: buffer '${b.param}' is ${s.bytes} bytes, not a multiple of its ${b.elemSize}-byte element`, { where: `${label}+${b.lengthSlot.offset}` });
    }
    if (!dataFor(b)) continue;
    const at = alignUp(pos, b.align);
    if (at + s.bytes > buf.length) {
      throw new RexError(ErrorCodes.FRAME_ENCODE, `${label}: buffer '${b.param}' (${s.bytes} bytes at offset ${at}) runs past the end of the ${buf.length}-byte frame`, { where: `${label}+${b.lengthSlot.offset}` });
    }
    s.data = buf.subarray(at, at + s.bytes);
    pos = at + s.bytes;
  }
  return { values, sections };
}

/** Encodes a call's arguments into an input frame; size parameters of in/inout buffers are filled from the buffers when omitted. */
export function encodeInput(plan: EntryPlan, args: FrameValues): Uint8Array {
  refuseIfNeeded(plan);
  const { engine, input } = plan;
  const values: FrameValues = { ...args };
  const sections = new Map<string, { data?: Uint8Array; bytes: number }>();
  // First pass: buffers whose size is known from their value; fills derived size parameters.
  for (const b of input.buffers) {
    if (b.direction === 'out') continue;
    const fixedCap = b.string && 'param' in b.count ? countFromParam(values, b.count.param, b.param)
      : b.string && 'value' in b.count ? b.count.value : undefined;
    const { data, count } = encodeBuffer(engine, b, args[b.param], b.param, fixedCap);
    if ('value' in b.count && !b.string && count !== b.count.value) fail(b.param, `expected ${b.count.value} elements, got ${count}`);
    if ('param' in b.count && !b.string) {
      const given = values[b.count.param];
      if (given === undefined) values[b.count.param] = sizeValue(plan, b.count.param, count);
      else if (countFromParam(values, b.count.param, b.param) !== count) {
        fail(b.param, `has ${count} elements but size parameter '${b.count.param}' says ${String(given)}`, `omit '${b.count.param}' to have it filled in`);
      }
    }
    sections.set(b.param, { data, bytes: data.length });
  }
  for (const b of input.buffers) {
    if (b.direction !== 'out') continue;
    const n = 'param' in b.count ? countFromParam(values, b.count.param, b.param) : 'value' in b.count ? b.count.value : 1;
    sections.set(b.param, { bytes: n * b.elemSize });
  }
  for (const s of input.slots) {
    if (s.role === 'value' && values[s.name] === undefined) fail(s.name, 'argument is missing');
  }
  return assemble(engine, input, values, sections, `${plan.desc.name} input`);
}

function sizeValue(plan: EntryPlan, param: string, n: number): number | bigint {
  const t = plan.desc.params.find((p) => p.name === param)!.type;
  return (t.kind === 'prim' || t.kind === 'enum') && isBigPrim(t.prim) ? BigInt(n) : n;
}

/** Decodes an input frame on the executing side: argument values, plus buffer element counts. */
export function decodeInput(plan: EntryPlan, buf: Uint8Array): DecodedInput {
  refuseIfNeeded(plan);
  const { values, sections } = disassemble(plan.engine, plan.input, buf, `${plan.desc.name} input`, (b) => b.direction !== 'out');
  const counts: Record<string, number> = {};
  for (const b of plan.input.buffers) {
    const s = sections.get(b.param)!;
    counts[b.param] = s.bytes / b.elemSize;
    if (s.data) values[b.param] = decodeBuffer(plan.engine, b, s.data);
  }
  return { args: values, counts };
}

/** Encodes the results of a call (`return` and every out/inout parameter) into an output frame. */
export function encodeOutput(plan: EntryPlan, results: FrameValues, counts?: Record<string, number>): Uint8Array {
  refuseIfNeeded(plan);
  const sections = new Map<string, { data?: Uint8Array; bytes: number }>();
  for (const b of plan.output.buffers) {
    const cap = counts?.[b.param];
    const { data, count } = encodeBuffer(plan.engine, b, results[b.param], b.param, b.string ? cap : undefined);
    if (cap !== undefined && count !== cap) fail(b.param, `returns ${count} elements into a buffer of ${cap}`);
    sections.set(b.param, { data, bytes: data.length });
  }
  if (plan.desc.returns.kind !== 'void' && results.return === undefined) fail('return', 'the return value is missing');
  return assemble(plan.engine, plan.output, results, sections, `${plan.desc.name} output`);
}

/**
 * Decodes an output frame on the calling side: `return` and every out/inout
 * parameter by name. Marked strings are text up to their NUL, or, with
 * `stringBytes`, their whole data section as bytes (for `rex call --json`).
 */
export function decodeOutput(plan: EntryPlan, buf: Uint8Array, opts: { stringBytes?: boolean } = {}): FrameValues {
  refuseIfNeeded(plan);
  const { values, sections } = disassemble(plan.engine, plan.output, buf, `${plan.desc.name} output`, () => true);
  for (const b of plan.output.buffers) {
    const v = decodeBuffer(plan.engine, b, sections.get(b.param)!.data!, opts.stringBytes);
    // An offset into a string (ParamDesc.into) is at most a frame's size: a number, -1 when it points elsewhere.
    values[b.param] = b.into !== undefined ? Number(v as bigint) : v;
  }
  return values;
}
