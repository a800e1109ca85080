/**
 * The entry-point model: what repdb knows about each function it can offer for
 * remote calls (the seed's `struct rex_entry_point_s`, plus the frame definitions).
 * Built from DWARF (fromDebugInfo) or from XML/SQL (src/gen/xml), consumed by the
 * XML/SQL writers and the code generators. Frame layout is never computed here:
 * it comes from src/runtime/frames, the one implementation.
 */
import { planEntry, type EntryPlan, type FrameDef } from '../../runtime/frames/plan.js';
import type { AggregateDesc, EntryDesc, EnumDesc, ParamDesc, Refusal, TypeDesc } from '../../runtime/frames/types.js';
import { RexError, ErrorCodes } from '../../util/errors.js';

/** A source location for messages: the XML line, or the C source line from DWARF. */
export interface Loc {
  file: string;
  line?: number;
}

/** Formats a location as "file:line" (or "file"). */
export function locString(l: Loc): string {
  return l.line === undefined ? l.file : `${l.file}:${l.line}`;
}

/** A parameter with the location it was defined at. */
export interface ParamDef extends ParamDesc {
  origin?: Loc;
  /** The direction (and string) was guessed from the C type by repdb (docs/ENTRYPOINTS.md, "Inferred directions"), not written by hand. */
  directionInferred?: boolean;
}

/** The identity of an entry point's owner (the seed's HOST.USER.PROGRAM) and its configuration name. */
export interface Owner {
  host?: string;
  user?: string;
  program?: string;
  config?: string;
}

/**
 * How an entry point's name relates to the object's dynamic symbols (docs/ENTRYPOINTS.md,
 * "Public names"). The entry point's `name` is what callers call: an exported
 * symbol's name (`pow`), `name@VERSION` for an older version (`pow@GLIBC_2.2.5`),
 * or a DWARF name for an internal function (with `internal`).
 */
export interface PublicName {
  /** The symbol's version (from .gnu.version_d); with a plain name it is the default one (`@@`). */
  version?: string;
  /** Another entry point's name at the same address (a weak alias or a second name): same function, same prototype. */
  aliasOf?: string;
  /** An STT_GNU_IFUNC symbol: the callee host's dynamic linker picks the implementation when the controller loads the object. */
  ifunc?: boolean;
  /** Not exported (hidden or local): listed only with `repdb --internal`; dlsym() cannot find it. */
  internal?: boolean;
  /** The DWARF subprogram the prototype came from, when its name differs (`__cbrt` for `cbrt`). */
  dwarfName?: string;
  /** Exported, but no prototype is known (stripped, or an IFUNC whose implementations have no DWARF): refused until a definition gives one. */
  noPrototype?: boolean;
  /** The prototype was taken from DWARF declarations of the name (DW_AT_declaration), the function having no DWARF definition (glibc's assembly IFUNCs). */
  prototypeFrom?: 'declaration';
}

/** One remote entry point: a function in an ELF object with its frame definitions. */
export interface EntryPoint extends Owner, PublicName {
  name: string;
  elfFile: string;
  address?: bigint;
  params: ParamDef[];
  returns: TypeDesc;
  variadic: boolean;
  /** The structs and unions reachable from the signature. */
  types: AggregateDesc[];
  /** The enums reachable from the signature (for constants in generated code). */
  enums: EnumDesc[];
  input: FrameDef;
  output: FrameDef;
  plan: EntryPlan;
  /** Non-empty: listed, but a remote call is refused with the first message. */
  refusals: Refusal[];
  /** Where the definition was read (XML line, or the C source from DWARF): used in messages. */
  origin: Loc;
  /** The C source location ("demo.c:15"), kept through XML round trips. */
  source?: string;
}

/** Every entry point of one ELF object, with the type definitions they share. */
export interface EntryPointSet extends Owner {
  elfFile: string;
  entries: EntryPoint[];
  types: AggregateDesc[];
  enums: EnumDesc[];
  /** Where each struct/union/enum was defined, by name (for messages). */
  typeOrigins: Map<string, Loc>;
  /** The C source location of each struct/union, kept through XML round trips. */
  typeSources: Map<string, string>;
}

/** Names of the aggregates and enums reachable from `roots` through `table`. */
export function reachable(roots: TypeDesc[], table: Map<string, AggregateDesc>): { aggs: string[]; enums: string[] } {
  const aggs = new Set<string>();
  const enums = new Set<string>();
  const visit = (t: TypeDesc): void => {
    switch (t.kind) {
      case 'pointer': return visit(t.target);
      case 'array': return visit(t.elem);
      case 'enum': enums.add(t.name); return;
      case 'struct':
      case 'union': {
        if (aggs.has(t.name)) return;
        aggs.add(t.name);
        const a = table.get(t.name);
        if (a) a.fields.forEach((f) => visit(f.type));
        return;
      }
      default:
    }
  };
  roots.forEach(visit);
  return { aggs: [...aggs], enums: [...enums] };
}

/** Input to {@link makeEntryPoint}: the signature and identity, without computed frames. */
export interface EntrySpec extends Owner, PublicName {
  name: string;
  elfFile: string;
  address?: bigint;
  params: ParamDef[];
  returns: TypeDesc;
  variadic: boolean;
  origin: Loc;
  source?: string;
}

/**
 * Builds an entry point: selects the reachable types and plans its frames with the
 * runtime's layout engine. Throws ENTRY_INVALID/FRAME_LAYOUT with `where` naming
 * the parameter or type; callers add the file:line.
 */
export function makeEntryPoint(spec: EntrySpec, table: Map<string, AggregateDesc>, enumTable: Map<string, EnumDesc>): EntryPoint {
  const { aggs, enums } = reachable([spec.returns, ...spec.params.map((p) => p.type)], table);
  const types: AggregateDesc[] = [];
  for (const n of aggs.sort()) {
    const a = table.get(n);
    if (!a) {
      throw new RexError(ErrorCodes.ENTRY_INVALID, `${spec.name}: type '${n}' is used but not defined`, { where: n, hint: `add <struct name="${n}"> (or <union>) with its fields` });
    }
    types.push(a);
  }
  const enumDescs = enums.sort().map((n) => enumTable.get(n)).filter((e): e is EnumDesc => e !== undefined);
  // The enums travel with the definition (ENTRIES, stubs) so callers show values by name.
  const desc: EntryDesc = { name: spec.name, params: spec.params.map(stripOrigin), returns: spec.returns, variadic: spec.variadic, types, ...(enumDescs.length ? { enums: enumDescs } : {}) };
  const plan = planEntry(desc);
  const ep: EntryPoint = {
    ...spec,
    types,
    enums: enumDescs,
    input: plan.input,
    output: plan.output,
    plan,
    refusals: spec.noPrototype ? [noPrototypeRefusal(spec.name), ...plan.refusals] : plan.refusals,
  };
  return ep;
}

/** Why an exported function without a prototype cannot be called yet, and how to give it one. */
export function noPrototypeRefusal(name: string): Refusal {
  return {
    where: 'prototype',
    message: `no prototype: '${name}' is exported but neither DWARF nor a definition gives its parameters`,
    hint: `write its <returns> and <param> elements in the XML (docs/ENTRYPOINTS.md, "Public names"), drop prototype="no", and offer the XML with the object (rex.rc programs NAME=OBJECT:DEFINITIONS.xml)`,
  };
}

function stripOrigin(p: ParamDef): ParamDesc {
  const out: ParamDesc = { name: p.name, type: p.type };
  if (p.direction !== undefined) out.direction = p.direction;
  if (p.sizeIs !== undefined) out.sizeIs = p.sizeIs;
  if (p.string) out.string = true;
  if (p.into !== undefined) out.into = p.into;
  return out;
}

/** The runtime description of an entry point, as generated stubs embed it. */
export function entryDesc(ep: EntryPoint): EntryDesc {
  return ep.plan.desc;
}
