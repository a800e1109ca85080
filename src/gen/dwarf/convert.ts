/**
 * Turns DWARF DIEs into the C-level DebugInfo model (src/gen/debuginfo.ts):
 * external function definitions and the types they reach.
 *
 * Hazards this guards against, since the input is untrusted:
 * - type graphs with cycles (linked lists are legal, `typedef A A` is not): ids
 *   are assigned before recursing, and a cycle that does not pass through a
 *   pointer or function type is rejected;
 * - DW_AT_abstract_origin / DW_AT_specification chains that loop;
 * - unbounded recursion (depth limit) and unbounded work (every type DIE is
 *   converted once, origin chains are cached, every unit walked once).
 */
import type { BaseEncoding, CType, DebugInfo, Diagnostic, FunctionInfo, Member, Origin, Param, TypeId } from '../debuginfo.js';
import { dwarfFail, hex } from './cursor.js';
import { DW_AT, DW_ATE, DW_FORM, DW_OP_constu, DW_OP_plus_uconst, DW_TAG, DW_UT, tagName } from './constants.js';
import { readLineFiles } from './lines.js';
import { DieReader, readUnits, type Abbrev, type Die, type Sections, type Unit } from './units.js';
import { isRexError } from '../../util/errors.js';

/** Deepest type nesting accepted; real C headers stay far below it. */
const MAX_TYPE_DEPTH = 2000;
/** Longest abstract_origin/specification chain followed. */
const MAX_ORIGIN_HOPS = 16;
/** DW_LANG_Mips_Assembler: what GNU as writes for .S files. */
const DW_LANG_Mips_Assembler = 0x8001n;

export interface ConvertOptions {
  file: string;
  debugFile: string;
  /** Defined function symbols (name -> address) of the ELF, used to pick the real definition among -O2 clones and to fill in addresses of functions that only have DW_AT_ranges. */
  symbols?: Map<string, bigint>;
}

const VOID: TypeId = 0;

interface Candidate {
  name: string;
  die: Die;
  /** The end of the abstract_origin/specification chain: the source-level declaration. */
  chain: Die[];
  address?: bigint;
  linkageName?: string;
}

/** Builds DebugInfo from the DWARF sections of one file. */
export function convert(s: Sections, opts: ConvertOptions): DebugInfo {
  return new Converter(s, opts).run();
}

class Converter {
  private readonly r: DieReader;
  private readonly units: Unit[];
  private readonly types: CType[] = [{ kind: 'void' }];
  private readonly byKey = new Map<number | string, TypeId>();
  private readonly active = new Set<number>();
  private readonly stack: { offset: number; tag: number }[] = [];
  private readonly diagnostics: Diagnostic[] = [];
  private readonly sigs = new Map<bigint, number>();
  private readonly versions = new Set<number>();
  /** DIEs reached through DW_AT_abstract_origin/DW_AT_specification, by offset (shared by clones and parameters). */
  private readonly targets = new Map<number, Die>();

  constructor(
    private readonly s: Sections,
    private readonly opts: ConvertOptions,
  ) {
    this.units = readUnits(s);
    this.r = new DieReader(s, this.units);
  }

  run(): DebugInfo {
    if (this.s.hasTypesSection) {
      this.warn('.debug_types+0x0', 'DWARF 4 type units (.debug_types, -fdebug-types-section) are not read; types referenced from them are reported as unsupported');
    }
    for (const u of this.units) {
      if (u.typeSignature !== undefined && u.typeOffset !== undefined) this.sigs.set(u.typeSignature, u.typeOffset);
    }
    const candidates: Candidate[] = [];
    // External declarations (DW_AT_declaration) of called functions: only their offsets, decoded later by need.
    const declSites: { unit: Unit; offsets: number[] }[] = [];
    for (const u of this.units) {
      if (u.unitType !== DW_UT.compile && u.unitType !== DW_UT.partial && u.unitType !== DW_UT.skeleton) continue;
      const root = this.r.root(u);
      this.versions.add(u.version);
      if (u.unitType === DW_UT.skeleton || root.tag === DW_TAG.skeleton_unit || root.attrs.has(DW_AT.dwo_name) || root.attrs.has(DW_AT.GNU_dwo_name)) {
        const dwo = this.r.str(root, DW_AT.dwo_name) ?? this.r.str(root, DW_AT.GNU_dwo_name) ?? '?';
        this.warn(`.debug_info+${hex(u.offset)}`, `split DWARF unit (skeleton for ${dwo}) is not read: functions of that unit are missing; rebuild without -gsplit-dwarf`);
        continue;
      }
      if (root.tag !== DW_TAG.compile_unit && root.tag !== DW_TAG.partial_unit) continue;
      const assembly = this.constAttr(root, DW_AT.language) === DW_LANG_Mips_Assembler;
      const decls: number[] = [];
      this.r.forEachChild(root, (off, ab) => {
        if (ab.tag !== DW_TAG.subprogram) return;
        // Most top-level subprograms are declarations of called functions: skip them by abbreviation,
        // undecoded, noting only where the external ones are (prototypes of functions without a definition).
        if (!ab.attrs.some((a) => a === DW_AT.low_pc || a === DW_AT.ranges || a === DW_AT.entry_pc)) {
          if (!assembly && isExternalDeclaration(ab)) decls.push(off);
          return;
        }
        const c = this.candidate(this.r.read(u, off)!);
        if (!c) return;
        if (assembly) {
          // GNU as describes .S functions with a name and an address only: their signature is unknown, not empty.
          this.warn(this.where(c.die), `function ${c.name} is written in assembly: its DWARF has no signature, so it is not listed; describe it in the entry-point XML`);
          return;
        }
        candidates.push(c);
      });
      if (decls.length > 0) declSites.push({ unit: u, offsets: decls });
    }
    const functions = this.pick(candidates).map((c) => this.functionInfo(c));
    return this.finish(functions, this.declared(declSites, functions));
  }

  /**
   * The declarations, grouped by name, of the defined ELF function symbols that have no
   * DWARF definition (glibc's assembly strlen is declared by string.h in every unit that
   * calls it). Only the DIEs of external declarations are decoded, and only their name
   * first; the signature only for a wanted name.
   */
  private declared(sites: { unit: Unit; offsets: number[] }[], defined: FunctionInfo[]): FunctionInfo[][] {
    const wanted = new Set(this.opts.symbols?.keys() ?? []);
    for (const f of defined) wanted.delete(f.name);
    if (wanted.size === 0) return [];
    const groups = new Map<string, FunctionInfo[]>();
    for (const { unit, offsets } of sites) {
      for (const off of offsets) {
        const d = this.r.read(unit, off);
        // An unprototyped K&R declaration (`int f();`, no DW_AT_prototyped) says nothing of the parameters.
        if (!d || !this.flag(d, DW_AT.external) || !this.flag(d, DW_AT.declaration) || !this.flag(d, DW_AT.prototyped)) continue;
        const name = this.r.str(d, DW_AT.name);
        if (name === undefined || !wanted.has(name)) continue;
        const f = this.functionInfo({ name, die: d, chain: [d] });
        f.declaration = true;
        const l = groups.get(name);
        if (l) l.push(f);
        else groups.set(name, [f]);
      }
    }
    return [...groups.values()];
  }

  private warn(where: string, message: string): void {
    this.diagnostics.push({ severity: 'warning', where, message });
  }

  private where(d: Die): string {
    return `.debug_info+${hex(d.offset)}`;
  }

  private origin(d: Die): Origin {
    const o: Origin = { die: this.where(d) };
    const line = this.constAttr(d, DW_AT.decl_line);
    if (line !== undefined) o.line = Number(line);
    const f = this.constAttr(d, DW_AT.decl_file);
    if (f !== undefined) {
      const name = this.files(d.unit)[Number(f)];
      if (name !== undefined) o.file = name;
    }
    return o;
  }

  private files(u: Unit): (string | undefined)[] {
    if (u.files) return u.files;
    u.files = [];
    if (u.stmtList !== undefined) {
      try {
        u.files = readLineFiles(this.s, u, u.stmtList);
      } catch (e) {
        // File names only decorate messages: a broken line table must not hide the functions.
        if (!isRexError(e)) throw e;
        this.warn(`.debug_line+${hex(u.stmtList)}`, `file names not read: ${e.message}`);
      }
    }
    return u.files;
  }

  private constAttr(d: Die, at: number): bigint | undefined {
    const v = d.attrs.get(at);
    return v && v.k === 'const' ? v.v : undefined;
  }

  private flag(d: Die, at: number): boolean {
    const v = d.attrs.get(at);
    if (!v) return false;
    if (v.k === 'flag') return v.v;
    if (v.k === 'const') return v.v !== 0n;
    return false;
  }

  private deref(from: Die, at: number): Die | undefined {
    const v = from.attrs.get(at);
    if (!v) return undefined;
    if (v.k !== 'ref') {
      if (v.k === 'alt') return undefined;
      dwarfFail(this.s.file, '.debug_info', from.offset, `attribute ${hex(at)} is not a reference (form class ${v.k})`);
    }
    const hit = this.targets.get(v.v);
    if (hit) return hit;
    const u = this.r.unitAt(v.v, `DIE at .debug_info+${hex(from.offset)}`);
    const d = this.r.read(u, v.v);
    if (!d) dwarfFail(this.s.file, '.debug_info', v.v, `reference from the DIE at ${hex(from.offset)} points at a null entry`);
    this.targets.set(v.v, d);
    return d;
  }

  /** The DIE followed by its abstract_origin/specification targets, loop-checked. */
  private chain(d: Die): Die[] {
    const out = [d];
    const seen = new Set([d.offset]);
    let cur = d;
    for (;;) {
      const next = this.deref(cur, DW_AT.abstract_origin) ?? this.deref(cur, DW_AT.specification);
      if (!next) return out;
      if (seen.has(next.offset) || out.length > MAX_ORIGIN_HOPS) {
        dwarfFail(this.s.file, '.debug_info', cur.offset, `DW_AT_abstract_origin/DW_AT_specification chain from the DIE at ${hex(d.offset)} loops or is longer than ${MAX_ORIGIN_HOPS}`);
      }
      seen.add(next.offset);
      out.push(next);
      cur = next;
    }
  }

  private chainStr(chain: Die[], at: number): string | undefined {
    for (const d of chain) {
      const v = this.r.str(d, at);
      if (v !== undefined) return v;
    }
    return undefined;
  }

  private candidate(d: Die): Candidate | undefined {
    const isDefinition = d.attrs.has(DW_AT.low_pc) || d.attrs.has(DW_AT.ranges) || d.attrs.has(DW_AT.entry_pc);
    if (!isDefinition || this.flag(d, DW_AT.declaration)) return undefined;
    const chain = this.chain(d);
    if (!chain.some((x) => this.flag(x, DW_AT.external))) return undefined;
    const name = this.chainStr(chain, DW_AT.name);
    if (name === undefined) {
      this.warn(this.where(d), 'external function without DW_AT_name is skipped');
      return undefined;
    }
    const c: Candidate = { name, die: d, chain };
    const address = this.r.addr(d, DW_AT.low_pc) ?? this.r.addr(d, DW_AT.entry_pc) ?? this.opts.symbols?.get(name);
    if (address !== undefined) c.address = address;
    const ln = this.chainStr(chain, DW_AT.linkage_name) ?? this.chainStr(chain, DW_AT.MIPS_linkage_name);
    if (ln !== undefined) c.linkageName = ln;
    return c;
  }

  /**
   * One definition per name. At -O2 gcc emits clones (foo.constprop.0, foo.isra.0)
   * whose DIEs also name `foo` through DW_AT_abstract_origin; the real one is the
   * DIE whose address is the ELF symbol's.
   */
  private pick(cands: Candidate[]): Candidate[] {
    const byName = new Map<string, Candidate[]>();
    for (const c of cands) {
      const l = byName.get(c.name);
      if (l) l.push(c);
      else byName.set(c.name, [c]);
    }
    const out: Candidate[] = [];
    for (const [name, l] of byName) {
      const sym = this.opts.symbols?.get(name);
      out.push((sym !== undefined ? l.find((c) => c.address === sym) : undefined) ?? l[0]!);
    }
    return out;
  }

  private functionInfo(c: Candidate): FunctionInfo {
    const decl = c.chain[c.chain.length - 1]!;
    const paramsOf = (d: Die): Die[] => this.r.children(d).filter((x) => x.tag === DW_TAG.formal_parameter || x.tag === DW_TAG.unspecified_parameters);
    // The abstract/declaration DIE has the source-level signature; a concrete -O2
    // instance may have dropped optimised-out parameters or variadic markers.
    let list = paramsOf(decl);
    if (list.length === 0 && decl !== c.die) list = paramsOf(c.die);
    const params: Param[] = [];
    let variadic = false;
    for (const p of list) {
      if (p.tag === DW_TAG.unspecified_parameters) {
        variadic = true;
        continue;
      }
      const pc = this.chain(p);
      const param: Param = { type: this.typeOfChain(pc) };
      const pn = this.chainStr(pc, DW_AT.name);
      if (pn !== undefined) param.name = pn;
      params.push(param);
    }
    if (!variadic && decl !== c.die && this.r.children(c.die).some((x) => x.tag === DW_TAG.unspecified_parameters)) variadic = true;
    const f: FunctionInfo = {
      name: c.name,
      external: true,
      returnType: this.typeOfChain(c.chain),
      params,
      variadic,
      origin: this.origin(decl),
    };
    if (c.linkageName !== undefined && c.linkageName !== c.name) f.linkageName = c.linkageName;
    if (c.address !== undefined) f.address = c.address;
    return f;
  }

  private typeOfChain(chain: Die[]): TypeId {
    for (const d of chain) if (d.attrs.has(DW_AT.type)) return this.typeOf(d);
    return VOID;
  }

  /** The TypeId of a DIE's DW_AT_type (void when absent). */
  private typeOf(d: Die, at: number = DW_AT.type): TypeId {
    const v = d.attrs.get(at);
    if (!v) return VOID;
    switch (v.k) {
      case 'ref': {
        // A type already converted (or being converted) is known by its offset: no need to decode its DIE again.
        const hit = this.byKey.get(v.v);
        if (hit !== undefined) {
          if (this.active.has(v.v)) this.checkCycle(v.v);
          return hit;
        }
        const u = this.r.unitAt(v.v, `DW_AT_type of the DIE at .debug_info+${hex(d.offset)}`);
        const t = this.r.read(u, v.v);
        if (!t) dwarfFail(this.s.file, '.debug_info', v.v, `DW_AT_type of the DIE at ${hex(d.offset)} points at a null entry`);
        return this.convertType(t);
      }
      case 'sig': {
        const off = this.sigs.get(v.v);
        if (off !== undefined) {
          const t = this.r.read(this.r.unitAt(off, `type signature ${hex(v.v)}`), off);
          if (t) return this.convertType(t);
        }
        return this.unsupported(`sig:${v.v}`, 'DW_FORM_ref_sig8', `type unit with signature ${hex(v.v)} is not in .debug_info (DWARF 4 .debug_types is not read); rebuild without -fdebug-types-section`, { die: this.where(d) });
      }
      case 'alt':
        return this.unsupported(`alt:${v.v}`, 'DW_FORM_GNU_ref_alt', 'type is in a dwz supplementary file (.gnu_debugaltlink), which is not read', { die: this.where(d) });
      default:
        return dwarfFail(this.s.file, '.debug_info', d.offset, `DW_AT_type has form class ${v.k}, not a reference`);
    }
  }

  private unsupported(key: number | string, what: string, reason: string, origin: Origin, name?: string): TypeId {
    const hit = this.byKey.get(key);
    if (hit !== undefined) return hit;
    const id = this.types.length;
    const t: CType = { kind: 'unsupported', what, reason, origin };
    if (name !== undefined) t.name = name;
    this.types.push(t);
    this.byKey.set(key, id);
    this.warn(origin.die, `${what}${name ? ` '${name}'` : ''}: ${reason}`);
    return id;
  }

  private convertType(d: Die): TypeId {
    // With -fdebug-types-section a unit holds only a declaration stub whose
    // DW_AT_signature names the type unit with the definition.
    if (d.attrs.has(DW_AT.signature)) {
      if (this.stack.length >= MAX_TYPE_DEPTH) dwarfFail(this.s.file, '.debug_info', d.offset, `types nest deeper than ${MAX_TYPE_DEPTH} levels (DW_AT_signature chain)`);
      this.stack.push({ offset: d.offset, tag: d.tag });
      try {
        return this.typeOf(d, DW_AT.signature);
      } finally {
        this.stack.pop();
      }
    }
    const hit = this.byKey.get(d.offset);
    if (hit !== undefined) {
      if (this.active.has(d.offset)) this.checkCycle(d.offset);
      return hit;
    }
    if (this.stack.length >= MAX_TYPE_DEPTH) dwarfFail(this.s.file, '.debug_info', d.offset, `types nest deeper than ${MAX_TYPE_DEPTH} levels`);
    const id = this.types.length;
    this.types.push({ kind: 'void' }); // placeholder until built; referenced by id only
    this.byKey.set(d.offset, id);
    this.active.add(d.offset);
    this.stack.push({ offset: d.offset, tag: d.tag });
    try {
      this.types[id] = this.build(d);
    } finally {
      this.active.delete(d.offset);
      this.stack.pop();
    }
    return id;
  }

  /** A type may refer back to one being built only through a pointer or function type (a linked list); anything else has infinite size. */
  private checkCycle(offset: number): void {
    const i = this.stack.findIndex((x) => x.offset === offset);
    const path = this.stack.slice(i);
    if (path.some((x) => x.tag === DW_TAG.pointer_type || x.tag === DW_TAG.subroutine_type || x.tag === DW_TAG.ptr_to_member_type || x.tag === DW_TAG.reference_type || x.tag === DW_TAG.rvalue_reference_type)) return;
    dwarfFail(this.s.file, '.debug_info', offset, `type reference cycle: ${path.map((x) => `${tagName(x.tag)} at ${hex(x.offset)}`).join(' -> ')} -> back to ${hex(offset)} without a pointer`);
  }

  private size(d: Die): number | undefined {
    const v = this.constAttr(d, DW_AT.byte_size);
    if (v === undefined) return undefined;
    if (v > 0xffffffffn) dwarfFail(this.s.file, '.debug_info', d.offset, `DW_AT_byte_size ${v} is implausibly large`);
    return Number(v);
  }

  private build(d: Die): CType {
    const origin = this.origin(d);
    const name = this.r.str(d, DW_AT.name);
    switch (d.tag) {
      case DW_TAG.base_type: {
        const size = this.size(d);
        if (size === undefined) dwarfFail(this.s.file, '.debug_info', d.offset, `base type ${name ?? ''} has no DW_AT_byte_size`);
        if (d.attrs.has(DW_AT.bit_size) || d.attrs.has(DW_AT.data_bit_offset)) {
          return this.unsupportedType(d, 'DW_TAG_base_type with DW_AT_bit_size', 'a base type narrower than its storage (e.g. _BitInt) has no fixed C layout', origin, name);
        }
        return { kind: 'base', name: name ?? '', size, encoding: encoding(Number(this.constAttr(d, DW_AT.encoding) ?? 0n)), origin };
      }
      case DW_TAG.pointer_type:
        return { kind: 'pointer', size: this.size(d) ?? d.unit.addrSize, target: this.typeOf(d), origin };
      case DW_TAG.const_type:
        return { kind: 'const', target: this.typeOf(d), origin };
      case DW_TAG.volatile_type:
        return { kind: 'volatile', target: this.typeOf(d), origin };
      case DW_TAG.restrict_type:
        return { kind: 'restrict', target: this.typeOf(d), origin };
      case DW_TAG.atomic_type:
        return { kind: 'atomic', target: this.typeOf(d), origin };
      case DW_TAG.typedef:
        return { kind: 'typedef', name: name ?? '', target: this.typeOf(d), origin };
      case DW_TAG.array_type:
        return this.array(d, origin, name);
      case DW_TAG.structure_type:
      case DW_TAG.union_type:
      case DW_TAG.class_type:
        return this.aggregate(d, origin, name);
      case DW_TAG.enumeration_type:
        return this.enumeration(d, origin, name);
      case DW_TAG.subroutine_type: {
        const params: TypeId[] = [];
        let variadic = false;
        for (const ch of this.r.children(d)) {
          if (ch.tag === DW_TAG.formal_parameter) params.push(this.typeOf(ch));
          else if (ch.tag === DW_TAG.unspecified_parameters) variadic = true;
        }
        return { kind: 'function', returnType: this.typeOf(d), params, variadic, prototyped: this.flag(d, DW_AT.prototyped), origin };
      }
      case DW_TAG.reference_type:
      case DW_TAG.rvalue_reference_type:
        return this.unsupportedType(d, tagName(d.tag), 'C++ references are not C types', origin, name);
      case DW_TAG.ptr_to_member_type:
        return this.unsupportedType(d, tagName(d.tag), 'C++ pointers to members are not C types', origin, name);
      case DW_TAG.unspecified_type:
        return this.unsupportedType(d, tagName(d.tag), 'the producer left this type unspecified (e.g. decltype(nullptr))', origin, name);
      default:
        return this.unsupportedType(d, tagName(d.tag), 'not a C type repdb describes', origin, name);
    }
  }

  private unsupportedType(d: Die, what: string, reason: string, origin: Origin, name?: string): CType {
    this.warn(this.where(d), `${what}${name ? ` '${name}'` : ''}: ${reason}`);
    const t: CType = { kind: 'unsupported', what, reason, origin };
    if (name !== undefined) t.name = name;
    return t;
  }

  private array(d: Die, origin: Origin, name: string | undefined): CType {
    const element = this.typeOf(d);
    const ord = this.constAttr(d, DW_AT.ordering);
    if (ord === 1n) return this.unsupportedType(d, 'DW_TAG_array_type with DW_AT_ordering col_major', 'column-major arrays are not C arrays', origin, name);
    const counts: (number | null)[] = [];
    for (const sr of this.r.children(d)) {
      if (sr.tag !== DW_TAG.subrange_type) {
        if (sr.tag === DW_TAG.enumeration_type) return this.unsupportedType(d, 'array indexed by an enumeration', 'not a C array', origin, name);
        continue;
      }
      const cnt = this.bound(sr, DW_AT.count);
      if (cnt !== undefined) {
        counts.push(cnt);
        continue;
      }
      const ub = this.bound(sr, DW_AT.upper_bound);
      const lb = this.bound(sr, DW_AT.lower_bound) ?? 0;
      if (ub === undefined || ub === null || lb === null) {
        if (sr.attrs.has(DW_AT.upper_bound) || sr.attrs.has(DW_AT.count)) {
          this.warn(this.where(sr), 'array bound is not a constant (variable-length array): reported as unknown');
        }
        counts.push(null);
        continue;
      }
      const n = ub - lb + 1;
      if (n < 0) dwarfFail(this.s.file, '.debug_info', sr.offset, `array bounds [${lb}, ${ub}] give a negative count`);
      counts.push(n);
    }
    if (counts.length === 0) counts.push(null);
    return { kind: 'array', element, counts, origin };
  }

  /** A subrange bound: number, null when not a constant (VLA), undefined when absent. */
  private bound(sr: Die, at: number): number | null | undefined {
    const v = sr.attrs.get(at);
    if (!v) return undefined;
    if (v.k !== 'const') return null;
    let n = v.v;
    // gcc writes `int a[0]` as upper_bound = all-ones in an unsigned data form: that is -1.
    const bits = v.form === DW_FORM.data1 ? 8 : v.form === DW_FORM.data2 ? 16 : v.form === DW_FORM.data4 ? 32 : v.form === DW_FORM.data8 ? 64 : 0;
    if (bits > 0 && n === (1n << BigInt(bits)) - 1n) n = -1n;
    if (n < -1n || n > BigInt(Number.MAX_SAFE_INTEGER)) {
      dwarfFail(this.s.file, '.debug_info', sr.offset, `array bound ${n} is out of range`);
    }
    return Number(n);
  }

  private aggregate(d: Die, origin: Origin, name: string | undefined): CType {
    const kind = d.tag === DW_TAG.union_type ? 'union' : 'struct';
    const declaration = this.flag(d, DW_AT.declaration);
    const members: Member[] = [];
    const t: CType = { kind, declaration, members, origin };
    if (name !== undefined) t.name = name;
    const size = this.size(d);
    if (size !== undefined) t.size = size;
    for (const m of this.r.children(d)) {
      if (m.tag === DW_TAG.inheritance) return this.unsupportedType(d, `${tagName(d.tag)} with DW_TAG_inheritance`, 'C++ base classes have no C layout', origin, name);
      if (m.tag !== DW_TAG.member) continue;
      const mname = this.r.str(m, DW_AT.name);
      const loc = m.attrs.get(DW_AT.data_member_location);
      let byteOff = 0;
      if (loc) {
        if (loc.k === 'const') byteOff = Number(loc.v);
        else if (loc.k === 'block') {
          const e = simpleOffsetExpr(loc.v);
          if (e === undefined) {
            return this.unsupportedType(d, `${tagName(d.tag)} member location expression`, `member ${mname ?? '(anonymous)'} at ${this.where(m)} has a DW_AT_data_member_location expression that is not a constant offset`, origin, name);
          }
          byteOff = e;
        } else dwarfFail(this.s.file, '.debug_info', m.offset, `DW_AT_data_member_location has form class ${loc.k}`);
      }
      const mem: Member = { type: this.typeOf(m), offset: byteOff };
      if (mname !== undefined) mem.name = mname;
      const bitSize = this.constAttr(m, DW_AT.bit_size);
      if (bitSize !== undefined) {
        if (bitSize > 0xffffn) dwarfFail(this.s.file, '.debug_info', m.offset, `DW_AT_bit_size ${bitSize} is out of range`);
        const bs = Number(bitSize);
        let bitOff: number;
        const dbo = this.constAttr(m, DW_AT.data_bit_offset);
        const oldBo = this.constAttr(m, DW_AT.bit_offset);
        if (dbo !== undefined) bitOff = Number(dbo);
        else if (oldBo !== undefined) {
          // DWARF 2/3 DW_AT_bit_offset counts from the most significant bit of the
          // storage unit; on little-endian x86-64 convert to an offset from bit 0.
          const storage = this.size(m) ?? this.sizeOfType(mem.type);
          if (storage === undefined) {
            return this.unsupportedType(d, 'bit-field with DW_AT_bit_offset', `bit-field ${mname ?? '(anonymous)'} has no storage size`, origin, name);
          }
          bitOff = byteOff * 8 + storage * 8 - Number(oldBo) - bs;
          if (bitOff < 0) dwarfFail(this.s.file, '.debug_info', m.offset, `bit-field ${mname ?? ''}: DW_AT_bit_offset ${oldBo} does not fit its ${storage}-byte storage`);
        } else bitOff = byteOff * 8;
        mem.bitSize = bs;
        mem.bitOffset = bitOff;
        // Normalised so DWARF 4 (storage-unit offset) and DWARF 5 (data_bit_offset) agree.
        mem.offset = Math.floor(bitOff / 8);
      }
      members.push(mem);
    }
    return t;
  }

  /** Byte size of a converted type, following typedefs and qualifiers. */
  private sizeOfType(id: TypeId): number | undefined {
    for (let i = 0; i < 64; i++) {
      const t = this.types[id]!;
      switch (t.kind) {
        case 'base':
        case 'pointer':
        case 'enum':
          return t.size;
        case 'struct':
        case 'union':
          return t.size;
        case 'typedef':
        case 'const':
        case 'volatile':
        case 'atomic':
        case 'restrict':
          id = t.target;
          continue;
        default:
          return undefined;
      }
    }
    return undefined;
  }

  private isSigned(id: TypeId | undefined): boolean {
    for (let i = 0; i < 64 && id !== undefined; i++) {
      const t = this.types[id]!;
      if (t.kind === 'base') return t.encoding === 'signed' || t.encoding === 'signed_char';
      if (t.kind === 'typedef' || t.kind === 'const' || t.kind === 'volatile') id = t.target;
      else return false;
    }
    return false;
  }

  private enumeration(d: Die, origin: Origin, name: string | undefined): CType {
    const underlying = d.attrs.has(DW_AT.type) ? this.typeOf(d) : undefined;
    const size = this.size(d) ?? (underlying !== undefined ? this.sizeOfType(underlying) : undefined);
    if (size === undefined) {
      return this.unsupportedType(d, 'DW_TAG_enumeration_type without size', this.flag(d, DW_AT.declaration) ? 'incomplete enum (declaration only)' : 'no DW_AT_byte_size', origin, name);
    }
    const signed = this.isSigned(underlying);
    const enumerators: { name: string; value: bigint }[] = [];
    for (const e of this.r.children(d)) {
      if (e.tag !== DW_TAG.enumerator) continue;
      const v = e.attrs.get(DW_AT.const_value);
      if (!v || v.k !== 'const') dwarfFail(this.s.file, '.debug_info', e.offset, 'enumerator has no constant DW_AT_const_value');
      let value = v.v;
      // dataN forms carry no sign; gcc writes negative enumerators as sdata, so dataN is unsigned unless the underlying type says signed.
      if (signed && v.form !== DW_FORM.sdata && v.form !== DW_FORM.udata) {
        const bits = v.form === DW_FORM.data1 ? 8 : v.form === DW_FORM.data2 ? 16 : v.form === DW_FORM.data4 ? 32 : 64;
        value = BigInt.asIntN(bits, value);
      }
      enumerators.push({ name: this.r.str(e, DW_AT.name) ?? '', value });
    }
    const t: CType = { kind: 'enum', size, enumerators, origin };
    if (name !== undefined) t.name = name;
    if (underlying !== undefined) t.underlying = underlying;
    return t;
  }

  /** Resolves declarations to unique definitions, merges structurally equal types, keeps only types reachable from functions. */
  private finish(functions: FunctionInfo[], declGroups: FunctionInfo[][] = []): DebugInfo {
    const types = this.types;
    const n = types.length;
    // 1. `struct foo;` in one unit and its definition in another: use the definition when it is unique.
    const defs = new Map<string, number[]>();
    types.forEach((t, i) => {
      if ((t.kind === 'struct' || t.kind === 'union') && !t.declaration && t.name !== undefined) {
        const k = t.kind + ' ' + t.name;
        const l = defs.get(k);
        if (l) l.push(i);
        else defs.set(k, [i]);
      }
    });
    const alias = new Int32Array(n).map((_, i) => i);
    types.forEach((t, i) => {
      if ((t.kind === 'struct' || t.kind === 'union') && t.declaration && t.name !== undefined) {
        const l = defs.get(t.kind + ' ' + t.name);
        if (l && l.length === 1) alias[i] = l[0]!;
      }
    });
    // 2. Partition refinement (like DFA minimisation): types are equal when their
    // local shapes are equal and the types they refer to are equal; handles cycles.
    const succ = types.map((t) => successors(t).map((x) => alias[x]!));
    let cls = new Int32Array(n);
    {
      const ids = new Map<string, number>();
      for (let i = 0; i < n; i++) {
        const k = localKey(types[alias[i]!]!);
        let c = ids.get(k);
        if (c === undefined) ids.set(k, (c = ids.size));
        cls[i] = c;
      }
    }
    // Each round keys a type by its class and its successors' classes. Most types have
    // at most one successor (pointers, typedefs, qualifiers, arrays, base types): they
    // are keyed by small integers (one map per own class), not strings; aggregates and
    // function types by strings. A shared counter keeps the classes of the maps
    // distinct, so the partition is the one the string keys gave.
    let classes = -1;
    for (let round = 0; round < n + 1; round++) {
      const leaf = new Map<number, number>();
      const one = new Map<number, Map<number, number>>();
      const many = new Map<string, number>();
      let count = 0;
      const next = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const src = alias[i]!;
        const ss = succ[src]!;
        const own = cls[src]!;
        let c: number | undefined;
        if (ss.length === 0) {
          c = leaf.get(own);
          if (c === undefined) leaf.set(own, (c = count++));
        } else if (ss.length === 1) {
          let m = one.get(own);
          if (m === undefined) one.set(own, (m = new Map()));
          const k = cls[ss[0]!]!;
          c = m.get(k);
          if (c === undefined) m.set(k, (c = count++));
        } else {
          let k = own + ':' + cls[ss[0]!]!;
          for (let j = 1; j < ss.length; j++) k += ',' + cls[ss[j]!]!;
          c = many.get(k);
          if (c === undefined) many.set(k, (c = count++));
        }
        next[i] = c;
      }
      cls = next;
      if (count === classes) break;
      classes = count;
    }
    // 3. Representatives (lowest id per class), then keep only what functions reach.
    const rep = new Map<number, number>();
    for (let i = 0; i < n; i++) if (!rep.has(cls[i]!)) rep.set(cls[i]!, alias[i] === i ? i : alias[i]!);
    const canon = (i: number): number => rep.get(cls[i]!)!;
    const newId = new Map<number, number>([[canon(0), 0]]);
    const order: number[] = [canon(0)];
    const visit = (i: number): void => {
      const work = [canon(i)];
      while (work.length > 0) {
        const c = work.pop()!;
        if (newId.has(c)) continue;
        newId.set(c, order.length);
        order.push(c);
        for (const s of successors(types[c]!)) work.push(canon(s));
      }
    };
    const declared = declGroups.flat();
    for (const f of [...functions, ...declared]) {
      visit(f.returnType);
      for (const p of f.params) visit(p.type);
    }
    const map = (i: number): number => newId.get(canon(i))!;
    const out = order.map((i) => remap(types[i]!, map));
    for (const f of [...functions, ...declared]) {
      f.returnType = map(f.returnType);
      for (const p of f.params) p.type = map(p.type);
    }
    // A declaration gives the prototype only when every declaration of the name says the same (types merged above).
    for (const g of declGroups) {
      const sig = (f: FunctionInfo): string => `${f.returnType}(${f.params.map((p) => p.type).join(',')}${f.variadic ? ',...' : ''})`;
      const first = g[0]!;
      const other = g.find((f) => sig(f) !== sig(first));
      if (other) {
        const at = (f: FunctionInfo): string => (f.origin.file ? `${f.origin.file.replace(/^.*\//, '')}:${f.origin.line ?? '?'}` : f.origin.die);
        this.diagnostics.push({
          severity: 'warning',
          entry: true,
          where: other.origin.die,
          message: `function ${first.name} has no DWARF definition and its ${g.length} declarations disagree (${at(first)} and ${at(other)} give different types): listed with no prototype; describe it in the entry-point XML`,
        });
        continue;
      }
      functions.push(first);
    }
    functions.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return {
      file: this.opts.file,
      debugFile: this.opts.debugFile,
      dwarfVersions: [...this.versions].sort(),
      types: out,
      functions,
      diagnostics: this.diagnostics,
    };
  }
}

/** A subprogram abbreviation with DW_AT_declaration and DW_AT_external (their values are checked when decoded). */
function isExternalDeclaration(ab: Abbrev): boolean {
  return ab.attrs.includes(DW_AT.declaration) && ab.attrs.includes(DW_AT.external);
}

function encoding(ate: number): BaseEncoding {
  switch (ate) {
    case DW_ATE.signed:
      return 'signed';
    case DW_ATE.unsigned:
      return 'unsigned';
    case DW_ATE.signed_char:
      return 'signed_char';
    case DW_ATE.unsigned_char:
      return 'unsigned_char';
    case DW_ATE.boolean:
      return 'bool';
    case DW_ATE.float:
      return 'float';
    case DW_ATE.complex_float:
      return 'complex_float';
    default:
      return 'other';
  }
}

/** DW_OP_plus_uconst N or DW_OP_constu N alone: the constant offset DWARF 2 producers wrote as an expression. */
function simpleOffsetExpr(b: Buffer): number | undefined {
  if (b.length < 2 || (b[0] !== DW_OP_plus_uconst && b[0] !== DW_OP_constu)) return undefined;
  let v = 0;
  let shift = 0;
  for (let i = 1; i < b.length; i++) {
    const x = b[i]!;
    if (shift > 28) return undefined;
    v += (x & 0x7f) * 2 ** shift;
    shift += 7;
    if ((x & 0x80) === 0) return i === b.length - 1 ? v : undefined;
  }
  return undefined;
}

function successors(t: CType): TypeId[] {
  switch (t.kind) {
    case 'pointer':
    case 'const':
    case 'volatile':
    case 'restrict':
    case 'atomic':
    case 'typedef':
      return [t.target];
    case 'array':
      return [t.element];
    case 'struct':
    case 'union':
      return t.members.map((m) => m.type);
    case 'enum':
      return t.underlying === undefined ? [] : [t.underlying];
    case 'function':
      return [t.returnType, ...t.params];
    default:
      return [];
  }
}

function localKey(t: CType): string {
  switch (t.kind) {
    case 'void':
      return 'void';
    case 'base':
      return `base|${t.name}|${t.size}|${t.encoding}`;
    case 'pointer':
      return `ptr|${t.size}`;
    case 'const':
    case 'volatile':
    case 'restrict':
    case 'atomic':
      return t.kind;
    case 'typedef':
      return `typedef|${t.name}`;
    case 'array':
      return `array|${t.counts.join(',')}`;
    case 'struct':
    case 'union':
      return `${t.kind}|${t.name ?? ''}|${t.size ?? ''}|${t.declaration}|${t.members.map((m) => `${m.name ?? ''}@${m.offset}/${m.bitSize ?? ''}/${m.bitOffset ?? ''}`).join(';')}`;
    case 'enum':
      return `enum|${t.name ?? ''}|${t.size}|${t.underlying === undefined}|${t.enumerators.map((e) => `${e.name}=${e.value}`).join(';')}`;
    case 'function':
      return `fn|${t.params.length}|${t.variadic}|${t.prototyped}`;
    case 'unsupported':
      return `unsupported|${t.what}|${t.reason}|${t.name ?? ''}|${t.origin.die}`;
  }
}

function remap(t: CType, map: (i: TypeId) => TypeId): CType {
  switch (t.kind) {
    case 'pointer':
    case 'const':
    case 'volatile':
    case 'restrict':
    case 'atomic':
    case 'typedef':
      return { ...t, target: map(t.target) };
    case 'array':
      return { ...t, element: map(t.element) };
    case 'struct':
    case 'union':
      return { ...t, members: t.members.map((m) => ({ ...m, type: map(m.type) })) };
    case 'enum':
      return t.underlying === undefined ? t : { ...t, underlying: map(t.underlying) };
    case 'function':
      return { ...t, returnType: map(t.returnType), params: t.params.map(map) };
    default:
      return t;
  }
}
