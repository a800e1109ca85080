/**
 * Builds the entry-point model from the DWARF reader's C-level view (src/gen/debuginfo.ts).
 * Typedefs and qualifiers are resolved away; anonymous aggregates get deterministic
 * names; aggregates whose compiler layout REX cannot reproduce (packed, aligned)
 * become opaque so that the entry points using them are refused, not mis-encoded.
 */
import { basename } from 'node:path';
import type { CType, DebugInfo, TypeId } from '../debuginfo.js';
import type { AggregateDesc, EnumDesc, FieldDesc, Prim, TypeDesc } from '../../runtime/frames/types.js';
import { LayoutEngine, alignUp } from '../../runtime/frames/layout.js';
import { isByteType, isCountType } from '../../runtime/frames/plan.js';
import { ErrorCodes, RexError, isRexError } from '../../util/errors.js';
import { makeEntryPoint, type EntryPoint, type EntryPointSet, type Loc, type Owner, type ParamDef } from './entrypoint.js';

/** A problem found while converting, reported as a warning by repdb. */
export interface ModelDiagnostic {
  where: string;
  message: string;
}

/** The model of one ELF object, and the warnings met while building it. */
export interface FromDebugInfoResult {
  set: EntryPointSet;
  diagnostics: ModelDiagnostic[];
}

/** Options of {@link fromDebugInfo}: the owner triple, and the ELF name to record. */
export interface FromDebugInfoOptions extends Owner {
  /** Recorded as elf-file; defaults to the base name of `info.file`. */
  elfFile?: string;
}

function locOf(o: { file?: string; line?: number; die: string }): Loc {
  return o.file ? (o.line !== undefined ? { file: o.file, line: o.line } : { file: o.file }) : { file: o.die };
}

/** Builds every entry point of `info` (one per external function with a definition), sorted by name. */
export function fromDebugInfo(info: DebugInfo, opts: FromDebugInfoOptions = {}): FromDebugInfoResult {
  const conv = new Converter(info);
  const diagnostics: ModelDiagnostic[] = [];
  const elfFile = opts.elfFile ?? basename(info.file);
  const fns = [...info.functions].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const specs = fns.flatMap((f) => {
    const used = new Set<string>();
    try {
      const params: (ParamDef & { cType: TypeId })[] = f.params.map((p, i) => {
        let name = p.name ?? `arg${i}`;
        while (used.has(name)) name = `${name}_`;
        used.add(name);
        return { name, type: conv.type(p.type), cType: p.type };
      });
      return [{ f, params, returns: conv.type(f.returnType) }];
    } catch (e) {
      if (!isRexError(e)) throw e;
      diagnostics.push({ where: `${f.name} (${f.origin.die})`, message: `${e.message}; entry point skipped` });
      return [];
    }
  });

  // Aggregates whose stated offsets/size disagree with SysV rules (packed, aligned(N)) become opaque.
  const bad = new Map<string, { size: number; align: number }>();
  const engine = new LayoutEngine([...conv.aggs.values()]);
  for (const a of conv.aggs.values()) {
    try {
      engine.layoutAggregate(a.name);
    } catch (e) {
      if (!isRexError(e)) throw e;
      bad.set(a.name, { size: a.size ?? 0, align: 1 });
      diagnostics.push({ where: conv.aggOrigin.get(a.name) ?? a.name, message: `${a.kind} ${a.name}: ${e.message}; treated as opaque, so entry points passing it by value are refused` });
    }
  }
  const fix = (t: TypeDesc): TypeDesc => {
    switch (t.kind) {
      case 'struct': case 'union': {
        const b = bad.get(t.name);
        return b ? { kind: 'opaque', size: b.size, align: b.align } : t;
      }
      case 'pointer': return { kind: 'pointer', target: fix(t.target) };
      case 'array': return { kind: 'array', elem: fix(t.elem), count: t.count };
      default: return t;
    }
  };
  const table = new Map<string, AggregateDesc>();
  for (const a of conv.aggs.values()) {
    if (bad.has(a.name)) continue;
    table.set(a.name, { ...a, fields: a.fields.map((f) => ({ ...f, type: fix(f.type) })) });
  }
  const enumTable = new Map(conv.enums);

  const entries: EntryPoint[] = [];
  for (const { f, params, returns } of specs) {
    const spec = {
      name: f.name,
      elfFile,
      ...ownerOf(opts),
      ...(f.address !== undefined ? { address: f.address } : {}),
      params: withInferredInto(params.map(({ cType, ...p }, i) => withInferredDirection({ ...p, type: fix(p.type) }, info, cType, countClue(params.slice(i + 1))))),
      returns: fix(returns),
      variadic: f.variadic,
      ...(f.declaration ? { prototypeFrom: 'declaration' as const } : {}),
      origin: locOf(f.origin),
      ...(f.origin.file && f.origin.line !== undefined ? { source: `${basename(f.origin.file)}:${f.origin.line}` } : {}),
    };
    try {
      entries.push(makeEntryPoint(spec, table, enumTable));
    } catch (e) {
      if (!isRexError(e)) throw e;
      diagnostics.push({ where: `${f.name} (${f.origin.die})`, message: `${e.message}; entry point skipped` });
    }
  }
  const typeOrigins = new Map<string, Loc>();
  const typeSources = new Map<string, string>();
  for (const [n, o] of conv.aggOrigin) {
    typeOrigins.set(n, { file: o });
    typeSources.set(n, o);
  }
  return {
    set: { elfFile, ...ownerOf(opts), entries, types: [...table.values()].sort(byName), enums: [...enumTable.values()].sort(byName), typeOrigins, typeSources },
    diagnostics: [...info.diagnostics.filter((d) => d.severity === 'error' || d.entry).map((d) => ({ where: d.where, message: d.message })), ...diagnostics],
  };
}

/**
 * The direction repdb guesses for a pointer parameter from its C type when nothing else
 * says (docs/ENTRYPOINTS.md, "Inferred directions"), marked `directionInferred`:
 * - `const char *` is an input string;
 * - a pointer to a non-const arithmetic scalar (int *, long *, double *, float *; not a
 *   char type, not bool) is an output of one element (frexp's `int *eptr`);
 * - a pointer to a const scalar, enum, struct or union is an input of one element;
 * - except that a later integer parameter named like a count (n, len, size, count...) is a
 *   clue that the pointer is an array, so the two one-element rules leave it bare;
 * - anything else (void *, char *, pointers to pointers, non-const structs) stays bare,
 *   so the entry point is refused until a definition says how the buffer travels.
 * `ctype` is the parameter's DWARF type, which still has its const qualifiers; `p.type`
 * is the model's type, on which the kinds are checked (so an opaque struct is never guessed).
 */
export function withInferredDirection(p: ParamDef, info: DebugInfo, ctype: TypeId, arrayClue = false): ParamDef {
  const inferred = inferDirection(p.type, targetIsConst(info, ctype), arrayClue);
  return inferred ? { ...p, ...inferred, directionInferred: true } : p;
}

/** The rules of {@link withInferredDirection} on a model type and the constness of what it points at. */
export function inferDirection(t: TypeDesc, constTarget: boolean, arrayClue = false): Pick<ParamDef, 'direction' | 'string'> | undefined {
  if (t.kind !== 'pointer') return undefined;
  const target = t.target;
  if (constTarget && target.kind === 'prim' && target.prim === 'char') return { direction: 'in', string: true };
  // A later count parameter (`sum(const long *xs, unsigned n)`) says the pointer is an array: one element would be wrong.
  if (arrayClue) return undefined;
  if (constTarget) {
    if (target.kind === 'prim' || target.kind === 'enum' || target.kind === 'struct' || target.kind === 'union') return { direction: 'in' };
    return undefined;
  }
  if (target.kind === 'prim' && !['char', 'int8', 'uint8', 'bool'].includes(target.prim)) return { direction: 'out' };
  return undefined;
}

/** Names of a `char **` that tell it is an end pointer into a string (strtol's endptr, strtod's __endptr, endp, end). */
const END_NAME = /^_*end(ptr|p)?$/i;

/**
 * The end-pointer rule (docs/ENTRYPOINTS.md, "Inferred directions"): a bare `char **` named
 * like an end pointer (endptr, endp, end), in a function with exactly one input string, is
 * an out pointer into that string (`into`), as in strtol, strtod and strtoul. Only the name
 * tells an end pointer from an in/out cursor (strsep's `char **stringp`), so nothing else is guessed.
 */
export function withInferredInto(params: ParamDef[]): ParamDef[] {
  const strings = params.filter((q) => q.direction === 'in' && q.string);
  if (strings.length !== 1) return params;
  return params.map((p) =>
    p.direction === undefined && END_NAME.test(p.name) && p.type.kind === 'pointer' && p.type.target.kind === 'pointer' && isByteType(p.type.target.target)
      ? { ...p, direction: 'out' as const, into: strings[0]!.name, directionInferred: true }
      : p,
  );
}

/** Names of integer parameters that count elements (n, len, size, count, nmemb, cap...). */
const COUNT_NAME = /^(n|nb|nr|num|cnt|cap|nmemb|nel|nelem|nelems|nitems)$|len|size|count|num|cnt|elem|cap/i;

/** Whether one of `later` (the parameters after a pointer) is an integer named like an element count. */
export function countClue(later: ParamDef[]): boolean {
  return later.some((q) => isCountType(q.type) && COUNT_NAME.test(q.name));
}

/** Whether the DWARF pointer type `id` (through typedefs and qualifiers) points at a const-qualified type. */
function targetIsConst(info: DebugInfo, id: TypeId): boolean {
  const strip = (i: TypeId): { t: CType | undefined; isConst: boolean } => {
    let t = info.types[i];
    let isConst = false;
    for (let n = 0; n < 64 && t && (t.kind === 'const' || t.kind === 'volatile' || t.kind === 'restrict' || t.kind === 'atomic' || t.kind === 'typedef'); n++) {
      if (t.kind === 'const') isConst = true;
      t = info.types[t.target];
    }
    return { t, isConst };
  };
  const ptr = strip(id).t;
  if (!ptr || ptr.kind !== 'pointer') return false;
  return strip(ptr.target).isConst;
}

function byName<T extends { name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function ownerOf(o: Owner): Owner {
  const r: Owner = {};
  if (o.host !== undefined) r.host = o.host;
  if (o.user !== undefined) r.user = o.user;
  if (o.program !== undefined) r.program = o.program;
  if (o.config !== undefined) r.config = o.config;
  return r;
}

class Converter {
  readonly aggs = new Map<string, AggregateDesc>();
  readonly aggOrigin = new Map<string, string>();
  readonly enums = new Map<string, EnumDesc>();
  private readonly memo = new Map<TypeId, TypeDesc>();
  /** Aggregate definitions by structural key, so one struct seen in many CUs gets one name. */
  private readonly byKey = new Map<string, string>();
  private anon = 0;

  constructor(private readonly info: DebugInfo) {}

  type(id: TypeId, nameHint?: string): TypeDesc {
    const m = this.memo.get(id);
    if (m) return m;
    const t = this.info.types[id];
    if (!t) return { kind: 'void' };
    const r = this.convert(t, id, nameHint);
    this.memo.set(id, r);
    return r;
  }

  private convert(t: CType, id: TypeId, nameHint?: string): TypeDesc {
    switch (t.kind) {
      case 'void': return { kind: 'void' };
      case 'base': return this.base(t.name, t.size, t.encoding);
      case 'const': case 'volatile': case 'restrict': case 'atomic': return this.type(t.target, nameHint);
      case 'typedef': {
        // Typedef names are kept only to name anonymous aggregates (typedef struct {...} point_t).
        const target = this.info.types[t.target];
        if (target && (target.kind === 'struct' || target.kind === 'union' || target.kind === 'enum') && target.name === undefined) {
          return this.type(t.target, t.name);
        }
        return this.type(t.target);
      }
      case 'pointer': {
        const target = this.stripQualifiers(t.target);
        if (target?.kind === 'function') return { kind: 'funcptr' };
        if (target && (target.kind === 'struct' || target.kind === 'union') && (target.declaration || target.size === undefined)) {
          // An opaque handle (pointer to an incomplete type): its bytes are unknown, so it reads as void *.
          return { kind: 'pointer', target: { kind: 'void' } };
        }
        return { kind: 'pointer', target: this.type(t.target) };
      }
      case 'function': return { kind: 'funcptr' };
      case 'array': {
        let r = this.type(t.element);
        for (let i = t.counts.length - 1; i >= 0; i--) r = { kind: 'array', elem: r, count: t.counts[i] ?? 0 };
        return r;
      }
      case 'enum': {
        const name = t.name ?? nameHint ?? `anon_enum_${++this.anon}`;
        const under = t.underlying !== undefined ? this.type(t.underlying) : undefined;
        const negative = t.enumerators.some((e) => e.value < 0n);
        const prim: Prim = under && under.kind === 'prim' ? under.prim : intPrim(t.size, negative);
        if (!this.enums.has(name)) this.enums.set(name, { name, prim, values: t.enumerators.map((e) => ({ name: e.name, value: e.value.toString() })) });
        return { kind: 'enum', name, prim };
      }
      case 'struct':
      case 'union': {
        if (t.declaration || t.size === undefined) return { kind: 'opaque', size: 0, align: 1 };
        const base = t.name ?? nameHint ?? `anon_${t.kind}`;
        // Claim a provisional name first so self-references through pointers terminate.
        let name = this.uniqueName(base);
        const ref: TypeDesc = { kind: t.kind, name };
        this.memo.set(id, ref);
        let fields: FieldDesc[];
        try {
          fields = t.members.map((m, i) => {
            const f: FieldDesc = { name: m.name ?? `_${i}`, type: this.type(m.type), offset: m.offset };
            if (m.bitSize !== undefined) {
              f.bits = m.bitSize;
              if (m.bitOffset !== undefined) f.bitOffset = m.bitOffset;
            }
            return f;
          });
        } catch (e) {
          // A member the frame cannot describe makes the whole aggregate unusable; forget the provisional name.
          this.memo.delete(id);
          throw e;
        }
        const agg: AggregateDesc = { kind: t.kind, name, fields, size: t.size };
        if (fields.some((f) => f.bits !== undefined)) agg.align = this.bitfieldAlign(fields, t.size);
        const key = JSON.stringify([t.kind, base, fields, t.size]);
        const prev = this.byKey.get(key);
        if (prev) {
          name = prev;
          const r2: TypeDesc = { kind: t.kind, name };
          this.memo.set(id, r2);
          return r2;
        }
        this.byKey.set(key, name);
        this.aggs.set(name, agg);
        this.aggOrigin.set(name, t.origin.file ? `${basename(t.origin.file)}${t.origin.line !== undefined ? `:${t.origin.line}` : ''}` : t.origin.die);
        return ref;
      }
      case 'unsupported':
        // The reader could not describe this type (C++ reference, _BitInt, a member
        // offset given as an expression, ...): refusing is right, guessing is not.
        throw new RexError(ErrorCodes.DWARF_UNSUPPORTED, `uses ${t.what}${t.name ? ` ${t.name}` : ''}, which a frame cannot describe: ${t.reason}`, {
          where: t.origin.die,
          hint: 'write this entry point by hand in the XML, or leave it out',
        });
    }
    const never: never = t;
    throw new RexError(ErrorCodes.DWARF_UNSUPPORTED, `unknown type kind ${(never as CType).kind}`);
  }

  private uniqueName(base: string): string {
    if (!this.aggs.has(base) && ![...this.byKey.values()].includes(base)) return base;
    for (let i = 2; ; i++) {
      const n = `${base}_${i}`;
      if (!this.aggs.has(n) && ![...this.byKey.values()].includes(n)) return n;
    }
  }

  private bitfieldAlign(fields: FieldDesc[], size: number): number {
    let align = 1;
    const e = new LayoutEngine([...this.aggs.values()]);
    for (const f of fields) {
      try {
        align = Math.max(align, e.layoutOf(f.type).align);
      } catch {
        /* unknown member type: alignment stays as computed so far */
      }
    }
    // The size must be a multiple of the alignment; shrink if the compiler packed it.
    while (align > 1 && alignUp(size, align) !== size) align /= 2;
    return align;
  }

  private stripQualifiers(id: TypeId): CType | undefined {
    let t = this.info.types[id];
    while (t && (t.kind === 'const' || t.kind === 'volatile' || t.kind === 'restrict' || t.kind === 'atomic' || t.kind === 'typedef')) t = this.info.types[t.target];
    return t;
  }

  private base(name: string, size: number, enc: string): TypeDesc {
    switch (enc) {
      case 'bool': return size === 1 ? { kind: 'prim', prim: 'bool' } : { kind: 'opaque', size, align: size };
      case 'signed_char': case 'unsigned_char':
        if (size !== 1) break;
        if (name === 'char') return { kind: 'prim', prim: 'char' };
        return { kind: 'prim', prim: enc === 'signed_char' ? 'int8' : 'uint8' };
      case 'signed': case 'unsigned': {
        if (![1, 2, 4, 8, 16].includes(size)) break;
        return { kind: 'prim', prim: intPrim(size, enc === 'signed') };
      }
      case 'float':
        if (size === 4) return { kind: 'prim', prim: 'float' };
        if (size === 8) return { kind: 'prim', prim: 'double' };
        if (size === 16 && name === 'long double') return { kind: 'prim', prim: 'longdouble' };
        break;
      default:
    }
    return { kind: 'opaque', size, align: Math.min(16, size & -size || 1) };
  }
}

function intPrim(size: number, signed: boolean): Prim {
  const bits = size * 8;
  return `${signed ? 'int' : 'uint'}${bits}` as Prim;
}
