/**
 * Frame plans: where every parameter, length word and buffer of one entry point
 * goes in its input and output frames, and why an entry point cannot be called
 * remotely (refusals). The rules are specified byte by byte in docs/FRAMES.md.
 */
import { RexError, ErrorCodes } from '../../util/errors.js';
import { LayoutEngine, alignUp } from './layout.js';
import type { EntryDesc, ParamDesc, Refusal, TypeDesc, Direction } from './types.js';

/** A fixed-position field of a frame. */
export interface Slot {
  /** Parameter name, or `return` for the return value. */
  name: string;
  /** `value`: the parameter itself; `length`: uint32 byte length of a pointer parameter's buffer; `return`: the return value. */
  role: 'value' | 'length' | 'return';
  offset: number;
  size: number;
  align: number;
  type: TypeDesc;
}

/** The variable-length data section of one pointer parameter. */
export interface BufferDef {
  param: string;
  direction: Direction;
  /** The element type (uint8 for `void *`). */
  elem: TypeDesc;
  elemSize: number;
  /** Data sections start at a multiple of this (max(8, element alignment)). */
  align: number;
  string: boolean;
  /** Element count: from a parameter, a constant, or one element when absent. */
  count: { param: string } | { value: number } | { one: true } | { nul: true };
  /** The uint32 slot in the fixed part that holds the section's byte length. */
  lengthSlot: Slot;
  /** An out `char **` returned as an int64 offset into this parameter's buffer (ParamDesc.into). */
  into?: string;
}

/** One frame: a fixed part laid out like a C struct, then data sections. */
export interface FrameDef {
  /** Size of the fixed part, rounded up to its alignment (the seed's "stack frame size"). */
  fixedSize: number;
  align: number;
  slots: Slot[];
  buffers: BufferDef[];
}

/** Frames and refusals of one entry point. */
export interface EntryPlan {
  desc: EntryDesc;
  engine: LayoutEngine;
  input: FrameDef;
  output: FrameDef;
  /** Non-empty: the entry point is listed but a remote call is refused. */
  refusals: Refusal[];
  /** Parameters whose value is derived from an in/inout buffer's length (omitted from typed stubs). */
  derived: Map<string, string[]>;
}

const INT_PRIMS = new Set(['char', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'bool']);
const BYTE_PRIMS = new Set(['char', 'int8', 'uint8']);

/** A short C-like spelling of a type for messages ("struct point", "char *"). */
export function typeName(t: TypeDesc): string {
  switch (t.kind) {
    case 'void': return 'void';
    case 'prim': return t.prim;
    case 'enum': return `enum ${t.name}`;
    case 'struct': case 'union': return `${t.kind} ${t.name}`;
    case 'array': return `${typeName(t.elem)}[${t.count}]`;
    case 'pointer': return `${typeName(t.target)}*`;
    case 'funcptr': return 'funcptr';
    case 'opaque': return `opaque(${t.size},${t.align})`;
  }
}

/** True when `t` is a byte-sized integer (carried as Uint8Array in buffers and arrays). */
export function isByteType(t: TypeDesc): boolean {
  return t.kind === 'prim' && BYTE_PRIMS.has(t.prim);
}

/** True when `t` is an integer usable as a size-is count. */
export function isCountType(t: TypeDesc): boolean {
  return (t.kind === 'prim' && INT_PRIMS.has(t.prim) && t.prim !== 'bool') || t.kind === 'enum';
}

/** The mark hint for a bare pointer; names the next integer parameter as the likely length. */
function markHint(desc: EntryDesc, p: ParamDesc): string {
  const i = desc.params.indexOf(p);
  const len = desc.params.slice(i + 1).find((q) => isCountType(q.type));
  const size = len ? len.name : 'LEN_PARAM_OR_COUNT';
  return `mark it in the XML: <param name="${p.name}" direction="in|out|inout" size-is="${size}"/> (size-is: element count, from a parameter or a constant; absent: one element)`;
}

/**
 * Why a value of type `t` cannot travel inside a frame, or undefined if it can.
 * Values travel by copy, so anything that is an address on the caller's host cannot.
 */
export function valueProblem(engine: LayoutEngine, t: TypeDesc, path: string, seen = new Set<string>()): { message: string; hint: string } | undefined {
  switch (t.kind) {
    case 'void':
      return { message: `${path} has type void`, hint: 'give it a sized type' };
    case 'prim':
      if (t.prim === 'longdouble') {
        return { message: `${path} is a long double; JavaScript has no 80-bit float, so REX would lose precision`, hint: 'use double in the remote interface' };
      }
      return undefined;
    case 'enum':
      return undefined;
    case 'array':
      return valueProblem(engine, t.elem, `${path}[]`, seen);
    case 'pointer':
      return { message: `${path} is a pointer inside a value; an address on the caller's host means nothing on another host`, hint: 'pass the pointed-to data as a separate pointer parameter marked direction= and size-is=' };
    case 'funcptr':
      return { message: `${path} is a function pointer; code addresses differ between hosts and the function may not be mapped there`, hint: 'pass an enum or name that selects the function on the remote side' };
    case 'opaque':
      return { message: `${path} has a type REX cannot encode (${t.size} bytes, e.g. a complex or vector type)`, hint: 'use plain integer or floating-point members' };
    case 'struct':
    case 'union': {
      if (seen.has(t.name)) return undefined;
      seen.add(t.name);
      const a = engine.layoutAggregate(t.name);
      if (a.trusted) {
        return { message: `${path} (${t.kind} ${t.name}) has bit-fields; REX does not encode bit-fields`, hint: 'pass the bit-field struct through a plain integer or a struct of whole members' };
      }
      for (const f of a.fields) {
        const p = valueProblem(engine, f.type, `${path}.${f.name}`, seen);
        // A union travels as raw bytes, so only addresses inside it are a problem.
        if (p && (t.kind === 'struct' || hasAddress(engine, f.type, new Set()))) return p;
      }
      return undefined;
    }
  }
}

function hasAddress(engine: LayoutEngine, t: TypeDesc, seen: Set<string>): boolean {
  if (t.kind === 'pointer' || t.kind === 'funcptr') return true;
  if (t.kind === 'array') return hasAddress(engine, t.elem, seen);
  if (t.kind === 'struct' || t.kind === 'union') {
    if (seen.has(t.name)) return false;
    seen.add(t.name);
    return engine.aggregate(t.name).fields.some((f) => hasAddress(engine, f.type, seen));
  }
  return false;
}

/** Throws ENTRY_INVALID for marks that make no sense (these are definition errors, not refusals). */
function checkMarks(desc: EntryDesc, p: ParamDesc): void {
  const where = `param ${p.name}`;
  const bad = (message: string, hint: string): never => {
    throw new RexError(ErrorCodes.ENTRY_INVALID, `${desc.name}: parameter '${p.name}': ${message}`, { where, hint });
  };
  const isPtr = p.type.kind === 'pointer';
  if (!isPtr && (p.direction !== undefined || p.sizeIs !== undefined || p.string || p.into !== undefined)) {
    bad(`direction, size-is, string and into apply only to pointer parameters, but its type is ${typeName(p.type)}`, 'remove the mark');
  }
  if (!isPtr) return;
  if (p.into !== undefined) return checkInto(desc, p, bad);
  if (p.direction === undefined && (p.sizeIs !== undefined || p.string)) {
    bad('size-is or string needs a direction', `add direction="in", "out" or "inout"`);
  }
  const target = (p.type as { target: TypeDesc }).target;
  if (p.string) {
    if (!isByteType(target)) bad(`string="yes" needs a char *, but it points to ${typeName(target)}`, 'remove string="yes" or fix the type');
    if (p.direction !== 'in' && p.sizeIs === undefined) bad(`an ${p.direction} string needs a capacity`, `add size-is="LEN" giving the buffer size in bytes`);
  }
  if (typeof p.sizeIs === 'number' && (!Number.isInteger(p.sizeIs) || p.sizeIs < 0 || p.sizeIs > 0xffffffff)) {
    bad(`size-is ${p.sizeIs} is not a count`, 'use a non-negative integer or a parameter name');
  }
  if (typeof p.sizeIs === 'string') {
    const ref = desc.params.find((q) => q.name === p.sizeIs);
    if (!ref) bad(`size-is names '${p.sizeIs}', which is not a parameter`, `use one of: ${desc.params.map((q) => q.name).join(', ')}, or a constant`);
    else if (ref === p) bad('size-is names the parameter itself', 'name the length parameter');
    else if (!isCountType(ref.type)) bad(`size-is names '${p.sizeIs}' of type ${typeName(ref.type)}, not an integer`, 'name an integer parameter');
  }
  if (target.kind === 'void' && p.direction !== undefined && p.sizeIs === undefined) {
    bad('a void * buffer needs a size', 'add size-is="LEN" giving the size in bytes');
  }
}

/**
 * The marks of an `into` parameter (strtol's `char **endptr`, docs/FRAMES.md 3.4): an out
 * `char **` of one element, pointing into an in or inout `char *` parameter of the same call.
 */
function checkInto(desc: EntryDesc, p: ParamDesc, bad: (message: string, hint: string) => never): void {
  const hint = `<param name="${p.name}" type="char**" direction="out" into="NPTR"/>, NPTR naming the string it points into`;
  const target = (p.type as { target: TypeDesc }).target;
  if (target.kind !== 'pointer' || !isByteType(target.target)) bad(`into= needs a char ** (a pointer to a char *), but its type is ${typeName(p.type)}`, hint);
  if (p.direction !== 'out') bad(`into= needs direction="out" (the function stores a pointer; the caller sends none)`, hint);
  if (p.sizeIs !== undefined || p.string) bad('into= takes no size-is or string (it is one pointer)', hint);
  const ref = desc.params.find((q) => q.name === p.into);
  if (!ref) bad(`into names '${p.into}', which is not a parameter`, `use one of: ${desc.params.filter((q) => q.type.kind === 'pointer' && q !== p).map((q) => q.name).join(', ') || '(no pointer parameter)'}`);
  const refTarget = ref!.type.kind === 'pointer' ? ref!.type.target : undefined;
  if (ref === p || !refTarget || !isByteType(refTarget) || (ref!.direction !== 'in' && ref!.direction !== 'inout')) {
    bad(`into names '${p.into}', which is not an in or inout char * parameter`, `name the string parameter the function's pointer points into, marked direction="in" string="yes"`);
  }
}

/**
 * Plans the input and output frames of an entry point and lists what makes it
 * uncallable. Throws FRAME_LAYOUT for impossible types and ENTRY_INVALID for bad marks.
 */
export function planEntry(desc: EntryDesc): EntryPlan {
  const engine = new LayoutEngine(desc.types);
  const refusals: Refusal[] = [];
  const derived = new Map<string, string[]>();
  const names = new Set<string>();
  for (const p of desc.params) {
    if (names.has(p.name)) {
      throw new RexError(ErrorCodes.ENTRY_INVALID, `${desc.name}: two parameters are named '${p.name}'`, { where: `param ${p.name}`, hint: 'rename one' });
    }
    names.add(p.name);
    checkMarks(desc, p);
  }
  if (desc.variadic) {
    refusals.push({ where: '...', message: `${desc.name} is variadic; a frame of fixed layout cannot describe arguments chosen per call`, hint: 'export a non-variadic wrapper function and call that' });
  }

  const input = new FrameBuilder();
  const output = new FrameBuilder();
  if (desc.returns.kind !== 'void') {
    if (desc.returns.kind === 'pointer') {
      refusals.push({ where: 'return', message: `${desc.name} returns a pointer; an address on the executing host means nothing to the caller`, hint: 'return the data through an out-parameter marked direction="out" size-is=...' });
    } else {
      const p = valueProblem(engine, desc.returns, 'the return value');
      if (p) refusals.push({ where: 'return', ...p });
    }
    output.slot('return', 'return', desc.returns, engine);
  }

  for (const p of desc.params) {
    const t = p.type;
    if (t.kind !== 'pointer') {
      if (t.kind === 'array') {
        refusals.push({ where: `param ${p.name}`, message: `parameter '${p.name}' is an array, which C passes as a pointer`, hint: `declare it as a pointer: <param name="${p.name}" type="${typeName(t.elem)}*" direction="in" size-is="${t.count}"/>` });
      } else {
        const prob = valueProblem(engine, t, `parameter ${p.name}`);
        if (prob) refusals.push({ where: `param ${p.name}`, ...prob });
      }
      input.slot(p.name, 'value', t, engine);
      continue;
    }
    if (p.direction === undefined) {
      const isChar = isByteType(t.target);
      refusals.push({
        where: `param ${p.name}`,
        message: `parameter '${p.name}' is a bare pointer (${typeName(t)}); REX must know which way its buffer travels and how big it is`,
        hint: isChar ? `${markHint(desc, p)}; for a NUL-terminated C string: <param name="${p.name}" direction="in" string="yes"/>` : markHint(desc, p),
      });
      // Still give the bare pointer a place so frame sizes stay defined for listing.
      input.slot(p.name, 'value', t, engine);
      continue;
    }
    let elem: TypeDesc = t.target.kind === 'void' ? { kind: 'prim', prim: 'uint8' } : t.target;
    if (p.into !== undefined) {
      // The callee's pointer comes back as an offset into the named parameter's buffer.
      elem = { kind: 'prim', prim: 'int64' };
    } else if (t.target.kind === 'pointer' || t.target.kind === 'funcptr') {
      refusals.push({ where: `param ${p.name}`, message: `parameter '${p.name}' points to a pointer (${typeName(t)}); the inner addresses cannot cross hosts`, hint: 'flatten the data into one buffer and pass that' });
      elem = { kind: 'prim', prim: 'uint8' };
    } else {
      const prob = valueProblem(engine, elem, `the buffer of '${p.name}'`);
      if (prob) refusals.push({ where: `param ${p.name}`, ...prob });
    }
    const count: BufferDef['count'] =
      p.string && p.direction === 'in' ? { nul: true }
        : typeof p.sizeIs === 'string' ? { param: p.sizeIs }
          : typeof p.sizeIs === 'number' ? { value: p.sizeIs } : { one: true };
    if ('param' in count && p.direction !== 'out' && !p.string) {
      const list = derived.get(count.param) ?? [];
      list.push(p.name);
      derived.set(count.param, list);
    }
    let el;
    try {
      el = engine.layoutOf(elem);
    } catch {
      el = { size: 1, align: 1 };
    }
    const base = { param: p.name, direction: p.direction, elem, elemSize: el.size, align: Math.max(8, el.align), string: !!p.string, count, ...(p.into !== undefined ? { into: p.into } : {}) };
    const inLen = input.slot(p.name, 'length', { kind: 'prim', prim: 'uint32' }, engine);
    input.buffers.push({ ...base, lengthSlot: inLen });
    if (p.direction !== 'in') {
      const outLen = output.slot(p.name, 'length', { kind: 'prim', prim: 'uint32' }, engine);
      output.buffers.push({ ...base, lengthSlot: outLen });
    }
  }
  return { desc, engine, input: input.finish(), output: output.finish(), refusals, derived };
}

class FrameBuilder {
  slots: Slot[] = [];
  buffers: BufferDef[] = [];
  private end = 0;
  private align = 1;

  slot(name: string, role: Slot['role'], type: TypeDesc, engine: LayoutEngine): Slot {
    let l;
    try {
      l = engine.layoutOf(type);
    } catch (e) {
      if ((e as RexError).code === ErrorCodes.FRAME_LAYOUT && type.kind === 'void') {
        throw new RexError(ErrorCodes.ENTRY_INVALID, `parameter '${name}' has type void`, { where: `param ${name}`, hint: 'remove it or give it a type' });
      }
      throw e;
    }
    const offset = alignUp(this.end, l.align);
    const s: Slot = { name, role, offset, size: l.size, align: l.align, type };
    this.slots.push(s);
    this.end = offset + l.size;
    this.align = Math.max(this.align, l.align);
    return s;
  }

  finish(): FrameDef {
    return { fixedSize: alignUp(this.end, this.align), align: this.align, slots: this.slots, buffers: this.buffers };
  }
}
