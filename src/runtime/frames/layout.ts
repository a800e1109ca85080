/**
 * x86-64 SysV data layout: the size and alignment of every frame type and the
 * offsets of struct members. This is the ONE implementation of those rules in REX:
 * repdb (XML, SQL, C header), the runtime codec and the tests all call it.
 * docs/FRAMES.md is its specification.
 */
import { RexError, ErrorCodes } from '../../util/errors.js';
import type { AggregateDesc, Prim, TypeDesc } from './types.js';

/** Size and alignment of a type, in bytes. */
export interface Layout {
  size: number;
  align: number;
}

/** A laid-out struct/union member. */
export interface FieldLayout extends Layout {
  name: string;
  type: TypeDesc;
  offset: number;
  bits?: number;
}

/** A laid-out struct or union. */
export interface AggregateLayout extends Layout {
  kind: 'struct' | 'union';
  name: string;
  fields: FieldLayout[];
  /** True when the compiler's layout was taken on trust (bit-fields). */
  trusted: boolean;
}

const PRIM_LAYOUT: Record<Prim, Layout> = {
  bool: { size: 1, align: 1 },
  char: { size: 1, align: 1 },
  int8: { size: 1, align: 1 },
  uint8: { size: 1, align: 1 },
  int16: { size: 2, align: 2 },
  uint16: { size: 2, align: 2 },
  int32: { size: 4, align: 4 },
  uint32: { size: 4, align: 4 },
  int64: { size: 8, align: 8 },
  uint64: { size: 8, align: 8 },
  int128: { size: 16, align: 16 },
  uint128: { size: 16, align: 16 },
  float: { size: 4, align: 4 },
  double: { size: 8, align: 8 },
  // x87 80-bit extended precision, padded to 16 bytes by the ABI.
  longdouble: { size: 16, align: 16 },
};

/** Size and alignment of a primitive. */
export function primLayout(p: Prim): Layout {
  return PRIM_LAYOUT[p];
}

/** Rounds `n` up to a multiple of `align` (a power of two). */
export function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/**
 * Lays out types against one type table, memoising aggregates; detects a struct
 * that contains itself by value (which C forbids, but hand-written XML can say).
 */
export class LayoutEngine {
  private readonly table = new Map<string, AggregateDesc>();
  private readonly done = new Map<string, AggregateLayout>();
  private readonly busy = new Set<string>();

  constructor(types: readonly AggregateDesc[]) {
    for (const t of types) this.table.set(t.name, t);
  }

  /** The aggregate definition named `name`, or a FRAME_LAYOUT error. */
  aggregate(name: string): AggregateDesc {
    const a = this.table.get(name);
    if (!a) throw new RexError(ErrorCodes.FRAME_LAYOUT, `type '${name}' is used but not defined`, { where: name, hint: `define it with <struct name="${name}"> or <union name="${name}">` });
    return a;
  }

  /** Size and alignment of any type; `void` has none and is an error here. */
  layoutOf(t: TypeDesc): Layout {
    switch (t.kind) {
      case 'void':
        throw new RexError(ErrorCodes.FRAME_LAYOUT, 'void has no size', { hint: 'use a pointer with size-is, or a sized type' });
      case 'prim':
      case 'enum':
        return PRIM_LAYOUT[t.prim];
      case 'pointer':
      case 'funcptr':
        return { size: 8, align: 8 };
      case 'opaque':
        return { size: t.size, align: t.align };
      case 'array': {
        const e = this.layoutOf(t.elem);
        return { size: e.size * t.count, align: e.align };
      }
      case 'struct':
      case 'union': {
        const a = this.layoutAggregate(t.name);
        return { size: a.size, align: a.align };
      }
    }
  }

  /** The full layout of a struct or union: member offsets, size with tail padding. */
  layoutAggregate(name: string): AggregateLayout {
    const memo = this.done.get(name);
    if (memo) return memo;
    const def = this.aggregate(name);
    if (this.busy.has(name)) {
      throw new RexError(ErrorCodes.FRAME_LAYOUT, `${def.kind} ${name} contains itself by value`, { where: name, hint: 'a member that refers back must be a pointer' });
    }
    this.busy.add(name);
    try {
      const result = def.fields.some((f) => f.bits !== undefined) ? this.trusted(def) : this.compute(def);
      this.done.set(name, result);
      return result;
    } finally {
      this.busy.delete(name);
    }
  }

  private compute(def: AggregateDesc): AggregateLayout {
    let end = 0;
    let align = 1;
    const fields: FieldLayout[] = [];
    for (const f of def.fields) {
      const l = this.layoutOf(f.type);
      const offset = def.kind === 'union' ? 0 : alignUp(end, l.align);
      if (f.offset !== undefined && f.offset !== offset) {
        throw new RexError(ErrorCodes.FRAME_LAYOUT, `${def.kind} ${def.name}: member '${f.name}' is at offset ${f.offset}, but x86-64 SysV puts it at ${offset}`, {
          where: `${def.name}.${f.name}`,
          hint: 'packed or aligned attributes are not supported; remove the offset to use the computed one',
        });
      }
      fields.push({ name: f.name, type: f.type, offset, size: l.size, align: l.align });
      end = Math.max(end, offset + l.size);
      align = Math.max(align, l.align);
    }
    const size = alignUp(end, align);
    if (def.size !== undefined && def.size !== size) {
      throw new RexError(ErrorCodes.FRAME_LAYOUT, `${def.kind} ${def.name} is stated as ${def.size} bytes, but x86-64 SysV lays it out in ${size}`, { where: def.name, hint: 'correct the size or the members' });
    }
    if (def.align !== undefined && def.align !== align) {
      throw new RexError(ErrorCodes.FRAME_LAYOUT, `${def.kind} ${def.name} is stated as ${def.align}-aligned, but x86-64 SysV aligns it to ${align}`, { where: def.name, hint: 'correct the alignment or the members' });
    }
    return { kind: def.kind, name: def.name, size, align, fields, trusted: false };
  }

  /** Bit-field aggregates: REX does not re-derive bit-field packing, so it takes the stated layout. */
  private trusted(def: AggregateDesc): AggregateLayout {
    if (def.size === undefined || def.align === undefined) {
      throw new RexError(ErrorCodes.FRAME_LAYOUT, `${def.kind} ${def.name} has bit-fields, so its size and alignment must be stated`, { where: def.name, hint: `add size="..." align="..." to <${def.kind} name="${def.name}">` });
    }
    const fields: FieldLayout[] = def.fields.map((f) => {
      const l = this.layoutOf(f.type);
      const fl: FieldLayout = { name: f.name, type: f.type, offset: f.offset ?? 0, size: l.size, align: l.align };
      if (f.bits !== undefined) fl.bits = f.bits;
      return fl;
    });
    return { kind: def.kind, name: def.name, size: def.size, align: def.align, fields, trusted: true };
  }
}
