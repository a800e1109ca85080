/**
 * Reads entry-point XML (hand-written or written by repdb): validates it against
 * schema/rex.dtd, then interprets it into the model with the line of every element,
 * so that every error is `file:line: error: ...` (RexError ENTRY_XML / ENTRY_INVALID).
 * Frame sizes and struct layouts written in the document are re-checked against
 * the runtime's layout engine.
 */
import type { XmlElement } from 'libxml2-wasm';
import { RexError, ErrorCodes, isRexError } from '../../util/errors.js';
import { PRIMS, type AggregateDesc, type EnumDesc, type FieldDesc, type Prim, type TypeDesc, type Direction } from '../../runtime/frames/types.js';
import { LayoutEngine } from '../../runtime/frames/layout.js';
import type { FrameDef } from '../../runtime/frames/plan.js';
import { parseTypeString, type TypeSyntax } from '../model/typestr.js';
import { makeEntryPoint, type EntryPoint, type EntryPointSet, type Loc, type Owner, type ParamDef, type PublicName } from '../model/entrypoint.js';
import { parseXml, validateDoc } from './dtd.js';

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** An entry point's name: a C identifier, or NAME@VERSION (an older version of an exported symbol). */
const ENTRY_NAME = /^[A-Za-z_][A-Za-z0-9_]*(@[A-Za-z0-9_.+-]+)?$/;
const VERSION_NAME = /^[A-Za-z0-9_.+-]+$/;
const INT_ENUM_PRIMS: Prim[] = ['char', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64'];

/** Options of {@link readEntryPointsXml}. */
export interface ReadXmlOptions {
  /** Line offset added to every line (for XML stored inside another file). */
  lineOffset?: number;
}

function children(el: XmlElement): XmlElement[] {
  const out: XmlElement[] = [];
  for (let n = el.firstChild; n; n = n.next) if ((n as XmlElement).attrs !== undefined && 'attrs' in n) out.push(n as XmlElement);
  return out;
}

class Reader {
  private readonly typedefs = new Map<string, { syntax: TypeSyntax; line: number }>();
  private readonly aggs = new Map<string, { el: XmlElement; desc: AggregateDesc }>();
  private readonly enums = new Map<string, { el: XmlElement; desc: EnumDesc }>();

  constructor(private readonly file: string, private readonly lineOffset: number) {}

  loc(el: XmlElement): string {
    return `${this.file}:${el.line + this.lineOffset}`;
  }

  fail(el: XmlElement, message: string, hint?: string, code: typeof ErrorCodes.ENTRY_XML | typeof ErrorCodes.ENTRY_INVALID = ErrorCodes.ENTRY_XML): never {
    throw new RexError(code, message, hint === undefined ? { where: this.loc(el) } : { where: this.loc(el), hint });
  }

  attr(el: XmlElement, name: string): string | undefined {
    return el.attr(name)?.value;
  }

  req(el: XmlElement, name: string): string {
    const v = this.attr(el, name);
    if (v === undefined) this.fail(el, `<${el.name}> needs a ${name} attribute`);
    return v;
  }

  ident(el: XmlElement, what: string): string {
    const n = this.req(el, 'name');
    if (!IDENT.test(n)) this.fail(el, `${what} name '${n}' is not a C identifier`, 'use letters, digits and _ , not starting with a digit');
    return n;
  }

  num(el: XmlElement, name: string): number | undefined {
    const v = this.attr(el, name);
    if (v === undefined) return undefined;
    if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(v.trim())) this.fail(el, `${name}="${v}" is not a non-negative integer`);
    const n = Number(v.trim());
    if (!Number.isSafeInteger(n)) this.fail(el, `${name}="${v}" is too large`);
    return n;
  }

  read(root: XmlElement): EntryPointSet {
    if (root.name !== 'rex-entry-points') this.fail(root, `the root element is <${root.name}>, expected <rex-entry-points>`, 'entry-point XML starts with <rex-entry-points elf-file="...">');
    const version = this.attr(root, 'version');
    if (version !== undefined && version !== '1') this.fail(root, `version="${version}" is not supported (this repdb reads version 1)`);
    const elfFile = this.req(root, 'elf-file');
    const owner = this.owner(root);
    const kids = children(root);
    // Definitions first (in any order in the document), then entry points.
    for (const el of kids) {
      if (el.name === 'typedef') this.typedef(el);
      else if (el.name === 'struct' || el.name === 'union') this.declareAgg(el);
      else if (el.name === 'enum') this.enumDef(el);
    }
    for (const { el, desc } of this.aggs.values()) {
      const fieldEls = children(el);
      const seen = new Set<string>();
      desc.fields = fieldEls.map((f) => {
        const name = this.ident(f, 'field');
        if (seen.has(name)) this.fail(f, `${desc.kind} ${desc.name} has two fields named '${name}'`);
        seen.add(name);
        const fd: FieldDesc = { name, type: this.type(f, this.req(f, 'type')) };
        const off = this.num(f, 'offset');
        if (off !== undefined) fd.offset = off;
        const bits = this.num(f, 'bits');
        if (bits !== undefined) fd.bits = bits;
        const bo = this.num(f, 'bit-offset');
        if (bo !== undefined) fd.bitOffset = bo;
        return fd;
      });
    }
    const table = new Map([...this.aggs].map(([k, v]) => [k, v.desc]));
    const enumTable = new Map([...this.enums].map(([k, v]) => [k, v.desc]));
    this.checkLayouts(table);
    const entries: EntryPoint[] = [];
    const names = new Map<string, XmlElement>();
    for (const el of kids) {
      if (el.name !== 'entry-point') continue;
      const ep = this.entry(el, elfFile, owner, table, enumTable);
      const key = [ep.name, ep.host ?? '', ep.user ?? '', ep.program ?? ''].join('\u0000');
      if (names.has(key)) this.fail(el, `entry point '${ep.name}' is defined twice (first at line ${names.get(key)!.line + this.lineOffset})`);
      names.set(key, el);
      entries.push(ep);
    }
    const typeOrigins = new Map<string, Loc>();
    const typeSources = new Map<string, string>();
    for (const [n, { el }] of [...this.aggs, ...this.enums]) {
      typeOrigins.set(n, { file: this.file, line: el.line + this.lineOffset });
      const src = this.attr(el, 'source');
      if (src !== undefined) typeSources.set(n, src);
    }
    return { elfFile, ...owner, entries, types: [...table.values()], enums: [...enumTable.values()], typeOrigins, typeSources };
  }

  owner(el: XmlElement): Owner {
    const o: Owner = {};
    for (const k of ['host', 'user', 'program', 'config'] as const) {
      const v = this.attr(el, k);
      if (v !== undefined) o[k] = v;
    }
    return o;
  }

  private checkNew(el: XmlElement, name: string): void {
    const prev = this.aggs.get(name)?.el ?? this.enums.get(name)?.el;
    if (prev || this.typedefs.has(name)) {
      const line = prev ? prev.line + this.lineOffset : this.typedefs.get(name)!.line;
      this.fail(el, `'${name}' is already defined at line ${line}`, 'struct, union, enum and typedef names share one namespace here');
    }
  }

  typedef(el: XmlElement): void {
    const name = this.ident(el, 'typedef');
    if ((PRIMS as readonly string[]).includes(name) || ['void', 'funcptr', 'struct', 'union', 'enum'].includes(name)) this.fail(el, `typedef name '${name}' is a built-in type name`);
    this.checkNew(el, name);
    const t = this.req(el, 'type');
    const syntax = parseTypeString(t);
    if (typeof syntax === 'string') this.fail(el, syntax);
    this.typedefs.set(name, { syntax, line: el.line + this.lineOffset });
  }

  declareAgg(el: XmlElement): void {
    const kind = el.name as 'struct' | 'union';
    const name = this.ident(el, kind);
    this.checkNew(el, name);
    const desc: AggregateDesc = { kind, name, fields: [] };
    const size = this.num(el, 'size');
    if (size !== undefined) desc.size = size;
    const align = this.num(el, 'align');
    if (align !== undefined) {
      if (align === 0 || (align & (align - 1)) !== 0) this.fail(el, `align="${align}" is not a power of two`);
      desc.align = align;
    }
    this.aggs.set(name, { el, desc });
  }

  enumDef(el: XmlElement): void {
    const name = this.ident(el, 'enum');
    this.checkNew(el, name);
    const prim = this.req(el, 'type') as Prim;
    if (!INT_ENUM_PRIMS.includes(prim)) this.fail(el, `enum ${name}: type="${prim}" is not an integer type`, `use one of ${INT_ENUM_PRIMS.join(', ')}`);
    const values = children(el).map((v) => {
      const n = this.ident(v, 'enumerator');
      const val = this.req(v, 'value');
      if (!/^-?\d+$/.test(val)) this.fail(v, `enumerator ${n}: value="${val}" is not an integer`);
      return { name: n, value: BigInt(val).toString() };
    });
    this.enums.set(name, { el, desc: { name, prim, values } });
  }

  /** Resolves a type spelling at element `el`. */
  type(el: XmlElement, text: string): TypeDesc {
    const s = parseTypeString(text);
    if (typeof s === 'string') this.fail(el, s);
    return this.resolve(el, s, new Set());
  }

  private resolve(el: XmlElement, s: TypeSyntax, busy: Set<string>): TypeDesc {
    switch (s.kind) {
      case 'void': case 'prim': case 'funcptr': case 'opaque': return s;
      case 'pointer': return { kind: 'pointer', target: this.resolve(el, s.target, busy) };
      case 'array': return { kind: 'array', elem: this.resolve(el, s.elem, busy), count: s.count };
      case 'named': {
        if (s.tag === 'typedef') {
          const td = this.typedefs.get(s.name);
          if (!td) {
            const other = this.aggs.get(s.name) ?? this.enums.get(s.name);
            const hint = other ? `write '${other.el.name} ${s.name}'` : `built-in types are ${PRIMS.join(', ')}; define others with <struct>, <union>, <enum> or <typedef>`;
            this.fail(el, `unknown type '${s.name}'`, hint);
          }
          if (busy.has(s.name)) this.fail(el, `typedef '${s.name}' refers to itself`);
          busy.add(s.name);
          const r = this.resolve(el, td.syntax, busy);
          busy.delete(s.name);
          return r;
        }
        if (s.tag === 'enum') {
          const e = this.enums.get(s.name);
          if (!e) this.fail(el, `enum ${s.name} is not defined`, `add <enum name="${s.name}" type="uint32">`);
          return { kind: 'enum', name: s.name, prim: e.desc.prim };
        }
        const a = this.aggs.get(s.name);
        if (!a) this.fail(el, `${s.tag} ${s.name} is not defined`, `add <${s.tag} name="${s.name}"> with its fields`);
        if (a.desc.kind !== s.tag) this.fail(el, `'${s.name}' is a ${a.desc.kind}, not a ${s.tag}`);
        return { kind: s.tag, name: s.name };
      }
    }
  }

  private checkLayouts(table: Map<string, AggregateDesc>): void {
    const engine = new LayoutEngine([...table.values()]);
    for (const { el, desc } of this.aggs.values()) {
      try {
        engine.layoutAggregate(desc.name);
      } catch (e) {
        if (!isRexError(e)) throw e;
        // Point at the field when the message is about one.
        const field = e.where?.startsWith(`${desc.name}.`) ? children(el).find((f) => this.attr(f, 'name') === e.where!.slice(desc.name.length + 1)) : undefined;
        throw new RexError(ErrorCodes.ENTRY_INVALID, e.message, { where: this.loc(field ?? el), ...(e.hint ? { hint: e.hint } : {}) });
      }
    }
  }

  entry(el: XmlElement, elfFile: string, rootOwner: Owner, table: Map<string, AggregateDesc>, enumTable: Map<string, EnumDesc>): EntryPoint {
    const name = this.req(el, 'name');
    // A C identifier, or NAME@VERSION for an older version of an exported symbol.
    if (!ENTRY_NAME.test(name)) this.fail(el, `entry point name '${name}' is not a C identifier (or NAME@VERSION)`, 'use letters, digits and _ , not starting with a digit; an older symbol version is written pow@GLIBC_2.2.5');
    const version = this.attr(el, 'version');
    if (version !== undefined && !VERSION_NAME.test(version)) this.fail(el, `version="${version}" is not a symbol version name`, 'write it as readelf --dyn-syms prints it after @ (GLIBC_2.29)');
    if (name.includes('@') && version !== undefined && name.slice(name.indexOf('@') + 1) !== version) {
      this.fail(el, `entry point '${name}' names version ${name.slice(name.indexOf('@') + 1)} but version="${version}"`, 'make them agree, or drop the version attribute');
    }
    const aliasOf = this.attr(el, 'alias-of');
    if (aliasOf !== undefined && !ENTRY_NAME.test(aliasOf)) this.fail(el, `alias-of="${aliasOf}" is not an entry point name`);
    const noPrototype = this.attr(el, 'prototype') === 'no';
    const kids = children(el);
    if (noPrototype && kids.some((k) => k.name === 'returns' || k.name === 'param')) {
      this.fail(el, `entry point '${name}' says prototype="no" but has <returns>/<param> elements`, 'drop prototype="no" once you have written its prototype');
    }
    const pub: PublicName = {
      ...(version !== undefined ? { version } : {}),
      ...(aliasOf !== undefined ? { aliasOf } : {}),
      ...(this.attr(el, 'ifunc') === 'yes' ? { ifunc: true } : {}),
      ...(this.attr(el, 'internal') === 'yes' ? { internal: true } : {}),
      ...(this.attr(el, 'dwarf-name') !== undefined ? { dwarfName: this.attr(el, 'dwarf-name')! } : {}),
      ...(noPrototype ? { noPrototype: true } : {}),
      ...(this.attr(el, 'prototype-from') === 'declaration' ? { prototypeFrom: 'declaration' as const } : {}),
    };
    const retEl = kids.find((k) => k.name === 'returns');
    const returns: TypeDesc = retEl ? this.type(retEl, this.req(retEl, 'type')) : { kind: 'void' };
    if (retEl && returns.kind === 'array') this.fail(retEl, 'a C function cannot return an array');
    const paramEls = kids.filter((k) => k.name === 'param');
    const params: ParamDef[] = paramEls.map((p) => {
      const pname = this.ident(p, 'parameter');
      const pd: ParamDef = { name: pname, type: this.type(p, this.req(p, 'type')), origin: { file: this.file, line: p.line + this.lineOffset } };
      const dir = this.attr(p, 'direction');
      if (dir !== undefined) pd.direction = dir as Direction;
      const size = this.attr(p, 'size-is');
      if (size !== undefined) {
        const t = size.trim();
        if (/^\d+$/.test(t)) pd.sizeIs = Number(t);
        else if (IDENT.test(t)) pd.sizeIs = t;
        else this.fail(p, `size-is="${size}" is neither a parameter name nor a count`);
      }
      if (this.attr(p, 'string') === 'yes') pd.string = true;
      const into = this.attr(p, 'into');
      if (into !== undefined) {
        if (!IDENT.test(into.trim())) this.fail(p, `into="${into}" is not a parameter name`, 'name the char * parameter the pointer points into');
        pd.into = into.trim();
      }
      if (this.attr(p, 'direction-inferred') === 'yes') pd.directionInferred = true;
      return pd;
    });
    const addr = this.attr(el, 'address');
    let address: bigint | undefined;
    if (addr !== undefined) {
      if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(addr)) this.fail(el, `address="${addr}" is not a number`, 'write it as 0x1139 or leave it out');
      address = BigInt(addr);
    }
    const spec = {
      name,
      elfFile,
      ...rootOwner,
      ...this.owner(el),
      ...(address !== undefined ? { address } : {}),
      params,
      returns,
      variadic: this.attr(el, 'variadic') === 'yes',
      origin: { file: this.file, line: el.line + this.lineOffset },
      ...(this.attr(el, 'source') !== undefined ? { source: this.attr(el, 'source')! } : {}),
      ...pub,
    };
    let ep: EntryPoint;
    try {
      ep = makeEntryPoint(spec, table, enumTable);
    } catch (e) {
      if (!isRexError(e)) throw e;
      const pEl = e.where?.startsWith('param ') ? paramEls.find((p) => this.attr(p, 'name') === e.where!.slice(6)) : undefined;
      throw new RexError(e.code === ErrorCodes.FRAME_LAYOUT ? ErrorCodes.ENTRY_INVALID : e.code, e.message, { where: this.loc(pEl ?? el), ...(e.hint ? { hint: e.hint } : {}) });
    }
    for (const k of kids) {
      if (k.name === 'input') this.checkFrame(k, 'input', ep.input, name);
      if (k.name === 'output') this.checkFrame(k, 'output', ep.output, name);
    }
    return ep;
  }

  /** A frame written in the document must equal the computed one; a hand edit that disagrees is an error at its line. */
  private checkFrame(el: XmlElement, which: string, f: FrameDef, name: string): void {
    const hint = `remove the <${which}> element to have repdb compute it, or correct the parameter types`;
    const size = this.num(el, 'size');
    if (size !== undefined && size !== f.fixedSize) this.fail(el, `${name}: ${which} frame size is stated as ${size}, but the parameters lay out in ${f.fixedSize} bytes`, hint, ErrorCodes.ENTRY_INVALID);
    const align = this.num(el, 'align');
    if (align !== undefined && align !== f.align) this.fail(el, `${name}: ${which} frame alignment is stated as ${align}, but computes to ${f.align}`, hint, ErrorCodes.ENTRY_INVALID);
    const slots = children(el);
    if (slots.length === 0) return;
    slots.forEach((s, i) => {
      const want = f.slots[i];
      const sname = this.req(s, 'name');
      const role = this.req(s, 'role');
      if (!want) this.fail(s, `${name}: ${which} frame has no slot ${i + 1} ('${sname}'); it has ${f.slots.length} slots`, hint, ErrorCodes.ENTRY_INVALID);
      if (want.name !== sname || want.role !== role) this.fail(s, `${name}: ${which} slot ${i + 1} is '${want.name}' (${want.role}), not '${sname}' (${role})`, hint, ErrorCodes.ENTRY_INVALID);
      const off = this.num(s, 'offset');
      const sz = this.num(s, 'size');
      if (off !== want.offset || sz !== want.size) this.fail(s, `${name}: ${which} slot '${sname}' is stated at offset ${off} size ${sz}, but lays out at offset ${want.offset} size ${want.size}`, hint, ErrorCodes.ENTRY_INVALID);
    });
    if (slots.length !== f.slots.length) this.fail(el, `${name}: ${which} frame lists ${slots.length} slots, but has ${f.slots.length}`, hint, ErrorCodes.ENTRY_INVALID);
  }
}

/** Reads, validates and interprets entry-point XML; `file` names the source in messages. */
export function readEntryPointsXml(text: string, file: string, opts: ReadXmlOptions = {}): EntryPointSet {
  const doc = parseXml(text, file);
  try {
    validateDoc(doc, file);
    return new Reader(file, opts.lineOffset ?? 0).read(doc.root);
  } finally {
    doc.dispose();
  }
}
