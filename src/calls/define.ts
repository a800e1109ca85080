/**
 * DEFINE messages: what the generic C controller (native/callctl/rex_callctl.c)
 * needs to check a frame and call a function through libffi, computed from the
 * frame plan of src/runtime/frames (the one layout implementation), so that C
 * never parses XML and never recomputes a layout.
 */
import type { MessageOf } from '../protocol/messages.js';
import type { EntryPlan } from '../runtime/frames/plan.js';
import type { LayoutEngine } from '../runtime/frames/layout.js';
import type { TypeDesc, Prim } from '../runtime/frames/types.js';

/** The DEFINE body for one entry point (without envelope). */
export type DefineBody = Omit<MessageOf<'DEFINE'>, 'type' | 'stream' | 'end'>;

const PRIM_CODE: Partial<Record<Prim, string>> = {
  bool: 'b', char: 'c', int8: 'c', uint8: 'C', int16: 's', uint16: 'S', int32: 'i', uint32: 'I',
  int64: 'l', uint64: 'L', float: 'f', double: 'd',
};

/** Elements a by-value struct may flatten to (arrays repeat their element); the controller's limit. */
const MAX_ELEMS = 4096;

/** Why the generic controller cannot pass a type, thrown as a plain message. */
class Unsupported extends Error {}

/**
 * The libffi type code of a value type (docs/CALLS.md): one character per
 * scalar, `{...}` for a struct; arrays inside structs are repeated; a union is
 * a struct of chunks classified as x86-64 SysV classifies the union's
 * eightbytes (libffi has no union type).
 */
export function ffiCode(engine: LayoutEngine, t: TypeDesc): string {
  const count = { n: 0 };
  const code = ffiCodeOf(engine, t, count);
  if (count.n > MAX_ELEMS) throw new Unsupported(`a value of more than ${MAX_ELEMS} scalar members cannot be passed by value`);
  return code;
}

function ffiCodeOf(engine: LayoutEngine, t: TypeDesc, count: { n: number }): string {
  switch (t.kind) {
    case 'prim':
    case 'enum': {
      const c = PRIM_CODE[t.prim];
      if (!c) throw new Unsupported(`${t.prim} values cannot be passed by value through libffi (pass them in a buffer)`);
      count.n++;
      return c;
    }
    case 'array': {
      const e = ffiCodeOf(engine, t.elem, count);
      count.n += (t.count - 1) * Math.max(1, e.length);
      if (count.n > MAX_ELEMS) throw new Unsupported(`a value of more than ${MAX_ELEMS} scalar members cannot be passed by value`);
      return e.repeat(t.count);
    }
    case 'struct': {
      const a = engine.layoutAggregate(t.name);
      const inner = a.fields.map((f) => ffiCodeOf(engine, f.type, count)).join('');
      if (inner === '') throw new Unsupported(`struct ${t.name} is empty`);
      return `{${inner}}`;
    }
    case 'union':
      return unionCode(engine, t.name, count);
    default:
      throw new Unsupported(`a ${t.kind} cannot be passed by value`);
  }
}

/** Scalar leaves of a type at their byte offsets: [offset, size, isFloat]. */
function leaves(engine: LayoutEngine, t: TypeDesc, at: number, out: [number, number, boolean][]): void {
  switch (t.kind) {
    case 'prim':
    case 'enum': {
      const size = engine.layoutOf(t).size;
      out.push([at, size, t.prim === 'float' || t.prim === 'double']);
      return;
    }
    case 'array': {
      const es = engine.layoutOf(t.elem).size;
      for (let i = 0; i < t.count; i++) leaves(engine, t.elem, at + i * es, out);
      return;
    }
    case 'struct':
    case 'union':
      for (const f of engine.layoutAggregate(t.name).fields) leaves(engine, f.type, at + f.offset, out);
      return;
    default:
      out.push([at, engine.layoutOf(t).size, false]);
  }
}

function unionCode(engine: LayoutEngine, name: string, count: { n: number }): string {
  const a = engine.layoutAggregate(name);
  if (a.align > 8) throw new Unsupported(`union ${name} is ${a.align}-aligned; libffi cannot pass it by value`);
  const ls: [number, number, boolean][] = [];
  leaves(engine, { kind: 'union', name }, 0, ls);
  let code = '';
  for (let off = 0; off < a.size; off += 8) {
    const n = Math.min(8, a.size - off);
    const touching = ls.filter(([o, s]) => o < off + 8 && o + s > off);
    // SSE only when every member bit in this eightbyte is floating point (SysV merge rule).
    const sse = touching.length > 0 && touching.every(([, , f]) => f);
    const unit = Math.min(a.align, n);
    const c = sse ? (unit === 8 ? 'd' : 'f') : ({ 1: 'C', 2: 'S', 4: 'I', 8: 'L' } as Record<number, string>)[unit]!;
    const k = n / (sse ? (unit === 8 ? 8 : 4) : unit);
    code += c.repeat(k);
    count.n += k;
  }
  return `{${code}}`;
}

/**
 * The DEFINE body of a callable entry point, or the reason the generic
 * controller cannot call it (on top of the plan's own refusals).
 */
export function defineBody(plan: EntryPlan, symbol?: string): { body: DefineBody } | { problem: string } {
  const { desc, engine, input, output } = plan;
  try {
    const returns = desc.returns.kind === 'void' ? 'v' : ffiCode(engine, desc.returns);
    const params: NonNullable<DefineBody['params']> = [];
    for (const p of desc.params) {
      if (p.type.kind !== 'pointer') {
        const slot = input.slots.find((s) => s.name === p.name && s.role === 'value')!;
        params.push({ kind: 1, ffi: ffiCode(engine, p.type), offset: slot.offset, size: slot.size });
        continue;
      }
      const b = input.buffers.find((x) => x.param === p.name)!;
      const ob = output.buffers.find((x) => x.param === p.name);
      const c = b.count;
      const countKind = 'one' in c ? 1 : 'value' in c ? 2 : 'param' in c ? 3 : 4;
      const countVal = 'value' in c ? c.value : 'param' in c ? desc.params.findIndex((q) => q.name === c.param) : 0;
      params.push({
        kind: 2,
        offset: b.lengthSlot.offset,
        direction: b.direction === 'in' ? 1 : b.direction === 'out' ? 2 : 3,
        elemSize: b.elemSize,
        align: b.align,
        string: b.string,
        countKind,
        count: countVal,
        ...(ob ? { outOffset: ob.lengthSlot.offset } : {}),
        // The index + 1 of the string parameter an out char ** points into (0, absent: none).
        ...(b.into !== undefined ? { into: desc.params.findIndex((q) => q.name === b.into) + 1 } : {}),
      });
    }
    return { body: { name: desc.name, inputSize: input.fixedSize, outputSize: output.fixedSize, returns, params, ...(symbol && symbol !== desc.name ? { symbol } : {}) } };
  } catch (e) {
    if (e instanceof Unsupported) return { problem: `${desc.name}: ${e.message}` };
    throw e;
  }
}
