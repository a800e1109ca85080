/**
 * DWARF unit headers (v2-5), abbreviation tables, attribute forms and DIEs.
 *
 * DIEs are decoded on demand: the converter walks only the top level of each
 * unit and the types that functions reach, so a large library (libc) does not
 * become a million JS objects. Attribute values that depend on unit bases
 * (strx, addrx) are resolved when read, because DW_AT_str_offsets_base may come
 * after DW_AT_name in the unit DIE itself.
 */
import { Cursor, dwarfFail, dwarfUnsupported, hex, stringAt } from './cursor.js';
import { DW_AT, DW_FORM, DW_UT, formName } from './constants.js';

/** The DWARF sections of one file (absent ones are empty buffers). */
export interface Sections {
  file: string;
  info: Buffer;
  abbrev: Buffer;
  str: Buffer;
  lineStr: Buffer;
  strOffsets: Buffer;
  addr: Buffer;
  line: Buffer;
  hasTypesSection: boolean;
}

export interface Abbrev {
  code: number;
  tag: number;
  hasChildren: boolean;
  attrs: number[];
  forms: number[];
  /** Values of DW_FORM_implicit_const, indexed like attrs. */
  implicit: (bigint | undefined)[];
  /** Offset in .debug_abbrev, for messages. */
  offset: number;
  /**
   * Cache for skipping: the byte size of the attributes when every form has a fixed
   * size for the unit shape `skipShape` (offset size, address size, version class),
   * or -1 when one is variable (LEB128, inline string, block, indirect).
   */
  skipShape?: number;
  skipSize?: number;
}

export interface Unit {
  /** Offset of the unit header in .debug_info. */
  offset: number;
  /** Offset just past the unit. */
  end: number;
  version: number;
  unitType: number;
  offsetSize: 4 | 8;
  addrSize: number;
  abbrevOffset: number;
  abbrevs: Map<number, Abbrev>;
  /** Offset of the unit's first DIE. */
  firstDie: number;
  /** For type units: the type signature and absolute offset of the type DIE. */
  typeSignature?: bigint;
  typeOffset?: number;
  strOffsetsBase?: number;
  addrBase?: number;
  /** Line-table file names (index = DW_AT_decl_file), read lazily. */
  files?: (string | undefined)[];
  stmtList?: number;
  compDir?: string;
}

/** An attribute value, decoded by form class. */
export type AttrValue =
  | { k: 'const'; v: bigint; form: number }
  | { k: 'flag'; v: boolean }
  | { k: 'ref'; v: number }
  | { k: 'sig'; v: bigint }
  | { k: 'alt'; v: number; form: number }
  | { k: 'str'; v: string }
  | { k: 'strx'; v: number }
  | { k: 'addr'; v: bigint }
  | { k: 'addrx'; v: number }
  | { k: 'block'; v: Buffer; form: number }
  | { k: 'secoff'; v: number; form: number };

/**
 * A decoded DIE's attributes by DW_AT code: the abbrev's names beside the values, no
 * Map per DIE (a DIE has a handful of attributes; a libc run decodes ~100,000 DIEs).
 * As with a Map filled in order, a name given twice in an abbrev reads as its last value.
 */
export class DieAttrs {
  constructor(
    private readonly names: readonly number[],
    private readonly values: readonly (AttrValue | undefined)[],
  ) {}

  get(at: number): AttrValue | undefined {
    const i = this.names.lastIndexOf(at);
    return i < 0 ? undefined : this.values[i];
  }

  has(at: number): boolean {
    return this.get(at) !== undefined;
  }
}

export interface Die {
  offset: number;
  tag: number;
  hasChildren: boolean;
  unit: Unit;
  attrs: DieAttrs;
  /** Offset just past this DIE's attributes (where its children begin). */
  attrEnd: number;
}

/** Parses the abbreviation table at `offset` of .debug_abbrev. */
export function readAbbrevs(s: Sections, offset: number): Map<number, Abbrev> {
  return readAbbrevsFast(s.abbrev, offset) ?? readAbbrevsChecked(s, offset);
}

/**
 * The common case without a Cursor call per number: LEB128s of up to 4 bytes, no
 * implicit_const, a well-formed table. Returns undefined at anything else (and at
 * every malformation), so the checked reader parses the table and words the error.
 */
function readAbbrevsFast(buf: Buffer, offset: number): Map<number, Abbrev> | undefined {
  const end = buf.length;
  let pos = offset;
  let bad = false;
  const leb = (): number => {
    let v = 0;
    for (let shift = 0; shift < 28; shift += 7) {
      if (pos >= end) break;
      const b = buf[pos++]!;
      v |= (b & 0x7f) << shift;
      if (b < 0x80) return v;
    }
    bad = true;
    return 0;
  };
  if (offset >= end) return undefined;
  const out = new Map<number, Abbrev>();
  for (;;) {
    const at = pos;
    const code = leb();
    if (bad) return undefined;
    if (code === 0) return out;
    const tag = leb();
    if (bad || pos >= end) return undefined;
    const children = buf[pos++]!;
    if (children > 1 || out.has(code)) return undefined;
    const attrs: number[] = [];
    const forms: number[] = [];
    const implicit: (bigint | undefined)[] = [];
    for (;;) {
      const name = leb();
      const form = leb();
      if (bad) return undefined;
      if (name === 0 && form === 0) break;
      if (name === 0 || form === 0) return undefined;
      attrs.push(name);
      forms.push(form);
      if (form === DW_FORM.implicit_const) {
        // SLEB128 of up to 4 bytes (28 bits), sign-extended from its last byte.
        let v = 0;
        let shift = 0;
        let b = 0x80;
        while (shift < 28 && pos < end) {
          b = buf[pos++]!;
          v |= (b & 0x7f) << shift;
          shift += 7;
          if (b < 0x80) break;
        }
        if (b >= 0x80) return undefined;
        if (b & 0x40) v -= 2 ** shift;
        implicit.push(BigInt(v));
      } else implicit.push(undefined);
    }
    out.set(code, { code, tag, hasChildren: children === 1, attrs, forms, implicit, offset: at });
  }
}

/** The checked reader alone (every malformation is an error naming its offset); exported for tests of the fast path. */
export function readAbbrevsChecked(s: Sections, offset: number): Map<number, Abbrev> {
  const c = new Cursor(s.abbrev, '.debug_abbrev', s.file, offset);
  if (offset >= s.abbrev.length) c.fail(`abbreviation table offset ${hex(offset)} is past the end of .debug_abbrev (${hex(s.abbrev.length)} bytes)`, offset);
  const out = new Map<number, Abbrev>();
  for (;;) {
    const at = c.pos;
    const code = c.uleb('abbreviation code');
    if (code === 0) break;
    const tag = c.uleb('abbreviation tag');
    const children = c.u8('children flag');
    if (children > 1) c.fail(`abbreviation ${code}: children flag ${children} is not 0 or 1`, c.pos - 1);
    const a: Abbrev = { code, tag, hasChildren: children === 1, attrs: [], forms: [], implicit: [], offset: at };
    for (;;) {
      const name = c.uleb('attribute name');
      const form = c.uleb('attribute form');
      if (name === 0 && form === 0) break;
      if (name === 0 || form === 0) c.fail(`abbreviation ${code}: attribute ${hex(name)} with form ${hex(form)} (one is zero)`);
      a.attrs.push(name);
      a.forms.push(form);
      a.implicit.push(form === DW_FORM.implicit_const ? c.sleb('implicit_const value') : undefined);
      // Every attribute spec consumes bytes, so this loop ends with the section.
    }
    if (out.has(code)) c.fail(`abbreviation code ${code} is defined twice in the table at ${hex(offset)}`, at);
    out.set(code, a);
  }
  return out;
}

/** Reads every unit header of .debug_info. */
export function readUnits(s: Sections): Unit[] {
  const units: Unit[] = [];
  const abbrevCache = new Map<number, Map<number, Abbrev>>();
  let off = 0;
  while (off < s.info.length) {
    const c = new Cursor(s.info, '.debug_info', s.file, off);
    let len = c.u32('unit length');
    let offsetSize: 4 | 8 = 4;
    if (len === 0xffffffff) {
      len = c.u64n('64-bit unit length');
      offsetSize = 8;
    } else if (len >= 0xfffffff0) {
      c.fail(`unit length ${hex(len)} is a reserved value`, off);
    }
    const end = c.pos + len;
    if (end > s.info.length) c.fail(`unit length ${hex(len)} runs past the end of .debug_info (${hex(s.info.length)} bytes)`, off);
    c.end = end;
    const version = c.u16('unit version');
    if (version < 2 || version > 5) {
      dwarfUnsupported(s.file, '.debug_info', off + (offsetSize === 8 ? 12 : 4), `DWARF version ${version} is not supported (2-5 are)`, 'rebuild with -gdwarf-4 or -gdwarf-5');
    }
    let unitType: number = DW_UT.compile;
    let addrSize: number;
    let abbrevOffset: number;
    let typeSignature: bigint | undefined;
    let typeOffset: number | undefined;
    if (version >= 5) {
      unitType = c.u8('unit type');
      addrSize = c.u8('address size');
      abbrevOffset = c.offset(offsetSize, 'abbreviation offset');
      if (unitType === DW_UT.skeleton || unitType === DW_UT.split_compile) c.u64('dwo_id');
      else if (unitType === DW_UT.type || unitType === DW_UT.split_type) {
        typeSignature = c.u64('type signature');
        typeOffset = off + c.offset(offsetSize, 'type offset');
      } else if (unitType !== DW_UT.compile && unitType !== DW_UT.partial) {
        c.fail(`unit type ${hex(unitType)} is not a DWARF 5 unit type`, c.pos - 2 - offsetSize);
      }
    } else {
      abbrevOffset = c.offset(offsetSize, 'abbreviation offset');
      addrSize = c.u8('address size');
    }
    if (addrSize !== 8 && addrSize !== 4) c.fail(`address size ${addrSize} is not 4 or 8`);
    let abbrevs = abbrevCache.get(abbrevOffset);
    if (!abbrevs) {
      abbrevs = readAbbrevs(s, abbrevOffset);
      abbrevCache.set(abbrevOffset, abbrevs);
    }
    const u: Unit = { offset: off, end, version, unitType, offsetSize, addrSize, abbrevOffset, abbrevs, firstDie: c.pos };
    if (typeSignature !== undefined) u.typeSignature = typeSignature;
    if (typeOffset !== undefined) {
      if (typeOffset < u.firstDie || typeOffset >= end) c.fail(`type offset ${hex(typeOffset)} is outside its unit`, off);
      u.typeOffset = typeOffset;
    }
    units.push(u);
    off = end;
  }
  return units;
}

/**
 * Decodes DIEs of .debug_info. Decoded DIEs are not cached: the converter decodes a
 * type's DIE once (it keys converted types by offset) and skips the rest undecoded,
 * so a cache held ~100,000 DIEs of libc alive for a few dozen hits.
 */
export class DieReader {
  private readonly skipCursor: Cursor;
  private unitStarts: number[];
  /** Offset just past the attributes of the DIE {@link skipAttrs} last skipped. */
  skipEnd = 0;
  /** .debug_str strings by offset: libc's units repeat the same type and member names thousands of times. */
  private readonly strCache = new Map<number, string>();

  constructor(
    readonly s: Sections,
    readonly units: Unit[],
  ) {
    this.unitStarts = units.map((u) => u.offset);
    this.skipCursor = new Cursor(s.info, '.debug_info', s.file);
  }

  /** The unit containing `offset`, or a DWARF_MALFORMED error naming `from`. */
  unitAt(offset: number, from: string): Unit {
    let lo = 0;
    let hi = this.unitStarts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.unitStarts[mid]! <= offset) lo = mid + 1;
      else hi = mid - 1;
    }
    const u = this.units[hi];
    if (!u || offset < u.firstDie || offset >= u.end) {
      dwarfFail(this.s.file, '.debug_info', offset, `reference (from ${from}) does not point at a DIE inside any unit`);
    }
    return u;
  }

  /** Decodes the DIE at `offset`; returns null for a null entry (end of siblings). */
  read(unit: Unit, offset: number): Die | null {
    const c: Cursor = new Cursor(this.s.info, '.debug_info', this.s.file, offset, unit.end);
    const code = c.uleb('abbreviation code');
    if (code === 0) return null;
    const ab = unit.abbrevs.get(code);
    if (!ab) c.fail(`abbreviation code ${code} is not in the table at .debug_abbrev+${hex(unit.abbrevOffset)}`, offset);
    const values: (AttrValue | undefined)[] = new Array(ab.attrs.length);
    for (let i = 0; i < ab.attrs.length; i++) values[i] = this.readForm(c, unit, ab.forms[i]!, ab.implicit[i]);
    const attrs = new DieAttrs(ab.attrs, values);
    return { offset, tag: ab.tag, hasChildren: ab.hasChildren, unit, attrs, attrEnd: c.pos };
  }

  /**
   * Skips the DIE at `offset` without allocating: returns its abbrev (null for a null
   * entry) and leaves the offset past its attributes in {@link skipEnd}.
   */
  skipAttrs(unit: Unit, offset: number): Abbrev | null {
    // One reused cursor: skipping visits every DIE of the file, and a fresh object per DIE dominated the heap.
    const c: Cursor = this.skipCursor;
    const buf = this.s.info;
    const end = unit.end < buf.length ? unit.end : buf.length;
    c.end = end;
    let pos = offset;
    let code: number;
    // One- and two-byte codes inline (nearly all of them); longer ones through the checked reader.
    const b0 = pos < end ? buf[pos]! : 0x80;
    if (b0 < 0x80) {
      code = b0;
      pos++;
    } else if (pos + 1 < end && buf[pos + 1]! < 0x80) {
      code = (b0 & 0x7f) | (buf[pos + 1]! << 7);
      pos += 2;
    } else {
      c.pos = pos;
      code = c.uleb('abbreviation code');
      pos = c.pos;
    }
    if (code === 0) {
      this.skipEnd = pos;
      return null;
    }
    const ab = unit.abbrevs.get(code);
    if (!ab) {
      c.pos = pos;
      c.fail(`abbreviation code ${code} is not in the table at .debug_abbrev+${hex(unit.abbrevOffset)}`, offset);
    }
    const shape = unit.offsetSize | (unit.addrSize << 4) | (unit.version <= 2 ? 0x100 : 0);
    if (ab.skipShape !== shape) {
      ab.skipShape = shape;
      ab.skipSize = fixedAttrSize(ab, unit);
    }
    const size = ab.skipSize!;
    if (size >= 0 && pos + size <= end) {
      this.skipEnd = pos + size;
      return ab;
    }
    // Variable-size forms, or a DIE that runs past the unit: the checked reader, which also words the error.
    c.pos = pos;
    for (let i = 0; i < ab.forms.length; i++) this.readForm(c, unit, ab.forms[i]!, ab.implicit[i], true);
    this.skipEnd = c.pos;
    return ab;
  }

  /** Offset just past the DIE at `offset` and all its descendants. Iterative, so deep nesting cannot overflow the stack. */
  skipSubtree(unit: Unit, offset: number): number {
    let depth = 0;
    let pos = offset;
    do {
      if (pos >= unit.end) dwarfFail(this.s.file, '.debug_info', pos, `DIE children of the DIE at ${hex(offset)} are not terminated before the end of the unit at ${hex(unit.end)}`);
      const ab = this.skipAttrs(unit, pos);
      pos = this.skipEnd;
      if (ab === null) depth--;
      else if (ab.hasChildren) depth++;
    } while (depth > 0);
    return pos;
  }

  /** The direct children of a DIE, decoded. */
  children(die: Die): Die[] {
    const out: Die[] = [];
    this.forEachChild(die, (off, ab) => {
      void ab;
      out.push(this.read(die.unit, off)!);
    });
    return out;
  }

  /** Calls `fn` with the offset and abbrev of each direct child, skipping subtrees. */
  forEachChild(die: { unit: Unit; hasChildren: boolean; attrEnd: number; offset: number }, fn: (offset: number, ab: Abbrev) => void): void {
    if (!die.hasChildren) return;
    const unit = die.unit;
    let pos = die.attrEnd;
    for (;;) {
      if (pos >= unit.end) dwarfFail(this.s.file, '.debug_info', pos, `children of the DIE at ${hex(die.offset)} are not terminated before the end of the unit at ${hex(unit.end)}`);
      const ab = this.skipAttrs(unit, pos);
      if (ab === null) return;
      const end = this.skipEnd;
      fn(pos, ab);
      pos = ab.hasChildren ? this.skipSubtree(unit, pos) : end;
    }
  }

  /** The unit's root DIE (DW_TAG_compile_unit etc.), with its bases recorded on the unit. */
  root(unit: Unit): Die {
    const d = this.read(unit, unit.firstDie);
    if (!d) dwarfFail(this.s.file, '.debug_info', unit.firstDie, 'unit has no root DIE (null entry)');
    const sob = d.attrs.get(DW_AT.str_offsets_base);
    if (sob && (sob.k === 'secoff' || sob.k === 'const')) unit.strOffsetsBase = Number(sob.v);
    const ab = d.attrs.get(DW_AT.addr_base) ?? d.attrs.get(DW_AT.GNU_addr_base);
    if (ab && (ab.k === 'secoff' || ab.k === 'const')) unit.addrBase = Number(ab.v);
    const sl = d.attrs.get(DW_AT.stmt_list);
    if (sl && (sl.k === 'secoff' || sl.k === 'const')) unit.stmtList = Number(sl.v);
    return d;
  }

  /** Reads one attribute value; with `skip`, only advances the cursor. */
  private readForm(c: Cursor, u: Unit, form: number, implicit: bigint | undefined, skip = false): AttrValue | undefined {
    // DW_FORM_indirect may chain; each hop consumes a byte, so this terminates with the unit.
    for (;;) {
      const at = c.pos;
      switch (form) {
        case DW_FORM.addr:
          return skip ? void c.skip(u.addrSize, 'address') : { k: 'addr', v: c.uN(u.addrSize, 'address') };
        case DW_FORM.data1:
          return skip ? void c.skip(1, 'data1') : { k: 'const', v: smallBig(c.u8('data1')), form };
        case DW_FORM.data2:
          return skip ? void c.skip(2, 'data2') : { k: 'const', v: smallBig(c.u16('data2')), form };
        case DW_FORM.data4:
          return skip ? void c.skip(4, 'data4') : { k: 'const', v: smallBig(c.u32('data4')), form };
        case DW_FORM.data8:
          return skip ? void c.skip(8, 'data8') : { k: 'const', v: c.u64('data8'), form };
        case DW_FORM.data16:
          c.skip(16, 'data16');
          return skip ? undefined : { k: 'block', v: c.buf.subarray(at, at + 16), form };
        case DW_FORM.sdata: {
          if (skip && skipShortLeb(c)) return undefined;
          const v = c.sleb('sdata');
          return skip ? undefined : { k: 'const', v, form };
        }
        case DW_FORM.udata: {
          if (skip && skipShortLeb(c)) return undefined;
          const v = c.ulebBig('udata');
          return skip ? undefined : { k: 'const', v, form };
        }
        case DW_FORM.implicit_const:
          return skip ? undefined : { k: 'const', v: implicit ?? 0n, form };
        case DW_FORM.flag:
          return skip ? void c.skip(1, 'flag') : { k: 'flag', v: c.u8('flag') !== 0 };
        case DW_FORM.flag_present:
          return skip ? undefined : { k: 'flag', v: true };
        case DW_FORM.string: {
          if (skip) {
            const nul = c.buf.indexOf(0, c.pos);
            if (nul >= 0 && nul < c.end) {
              c.pos = nul + 1;
              return undefined;
            }
          }
          const v = c.cstr('inline string');
          return skip ? undefined : { k: 'str', v };
        }
        case DW_FORM.strp: {
          const o = c.offset(u.offsetSize, 'strp offset');
          return skip ? undefined : { k: 'str', v: this.debugStr(o, at) };
        }
        case DW_FORM.line_strp: {
          const o = c.offset(u.offsetSize, 'line_strp offset');
          return skip ? undefined : { k: 'str', v: stringAt(this.s.lineStr, '.debug_line_str', this.s.file, o, `.debug_info+${hex(at)}`) };
        }
        case DW_FORM.strx:
        case DW_FORM.GNU_str_index: {
          const v = c.uleb('strx index');
          return skip ? undefined : { k: 'strx', v };
        }
        case DW_FORM.strx1:
          return skip ? void c.skip(1, 'strx1') : { k: 'strx', v: c.u8('strx1') };
        case DW_FORM.strx2:
          return skip ? void c.skip(2, 'strx2') : { k: 'strx', v: c.u16('strx2') };
        case DW_FORM.strx3:
          return skip ? void c.skip(3, 'strx3') : { k: 'strx', v: c.u24('strx3') };
        case DW_FORM.strx4:
          return skip ? void c.skip(4, 'strx4') : { k: 'strx', v: c.u32('strx4') };
        case DW_FORM.addrx:
        case DW_FORM.GNU_addr_index: {
          const v = c.uleb('addrx index');
          return skip ? undefined : { k: 'addrx', v };
        }
        case DW_FORM.addrx1:
          return skip ? void c.skip(1, 'addrx1') : { k: 'addrx', v: c.u8('addrx1') };
        case DW_FORM.addrx2:
          return skip ? void c.skip(2, 'addrx2') : { k: 'addrx', v: c.u16('addrx2') };
        case DW_FORM.addrx3:
          return skip ? void c.skip(3, 'addrx3') : { k: 'addrx', v: c.u24('addrx3') };
        case DW_FORM.addrx4:
          return skip ? void c.skip(4, 'addrx4') : { k: 'addrx', v: c.u32('addrx4') };
        case DW_FORM.ref1:
          return skip ? void c.skip(1, 'ref1') : { k: 'ref', v: u.offset + c.u8('ref1') };
        case DW_FORM.ref2:
          return skip ? void c.skip(2, 'ref2') : { k: 'ref', v: u.offset + c.u16('ref2') };
        case DW_FORM.ref4:
          return skip ? void c.skip(4, 'ref4') : { k: 'ref', v: u.offset + c.u32('ref4') };
        case DW_FORM.ref8:
          return skip ? void c.skip(8, 'ref8') : { k: 'ref', v: u.offset + c.u64n('ref8') };
        case DW_FORM.ref_udata: {
          const v = c.uleb('ref_udata');
          return skip ? undefined : { k: 'ref', v: u.offset + v };
        }
        case DW_FORM.ref_addr: {
          // DWARF 2 wrote ref_addr with the address size; 3+ with the offset size.
          const v = u.version <= 2 ? Number(c.uN(u.addrSize, 'ref_addr')) : c.offset(u.offsetSize, 'ref_addr');
          return skip ? undefined : { k: 'ref', v };
        }
        case DW_FORM.ref_sig8:
          return skip ? void c.skip(8, 'ref_sig8') : { k: 'sig', v: c.u64('ref_sig8') };
        case DW_FORM.ref_sup4:
          return skip ? void c.skip(4, 'ref_sup4') : { k: 'alt', v: c.u32('ref_sup4'), form };
        case DW_FORM.ref_sup8:
          return skip ? void c.skip(8, 'ref_sup8') : { k: 'alt', v: c.u64n('ref_sup8'), form };
        case DW_FORM.GNU_ref_alt:
        case DW_FORM.GNU_strp_alt:
        case DW_FORM.strp_sup: {
          const v = c.offset(u.offsetSize, formName(form));
          return skip ? undefined : { k: 'alt', v, form };
        }
        case DW_FORM.sec_offset: {
          const v = c.offset(u.offsetSize, 'sec_offset');
          return skip ? undefined : { k: 'secoff', v, form };
        }
        case DW_FORM.loclistx:
        case DW_FORM.rnglistx: {
          const v = c.uleb(formName(form));
          return skip ? undefined : { k: 'secoff', v, form };
        }
        case DW_FORM.exprloc:
        case DW_FORM.block: {
          const n = c.uleb('block length');
          c.skip(n, 'block');
          return skip ? undefined : { k: 'block', v: c.buf.subarray(c.pos - n, c.pos), form };
        }
        case DW_FORM.block1: {
          const n = c.u8('block1 length');
          c.skip(n, 'block1');
          return skip ? undefined : { k: 'block', v: c.buf.subarray(c.pos - n, c.pos), form };
        }
        case DW_FORM.block2: {
          const n = c.u16('block2 length');
          c.skip(n, 'block2');
          return skip ? undefined : { k: 'block', v: c.buf.subarray(c.pos - n, c.pos), form };
        }
        case DW_FORM.block4: {
          const n = c.u32('block4 length');
          c.skip(n, 'block4');
          return skip ? undefined : { k: 'block', v: c.buf.subarray(c.pos - n, c.pos), form };
        }
        case DW_FORM.indirect:
          form = c.uleb('indirect form');
          if (form === DW_FORM.implicit_const) c.fail('DW_FORM_indirect names DW_FORM_implicit_const, which has no value in .debug_info', at);
          continue;
        default:
          return dwarfUnsupported(this.s.file, '.debug_info', at, `attribute form ${formName(form)} is not known`, 'the producer used a DWARF extension repdb does not read; rebuild with gcc or clang -gdwarf-4/-gdwarf-5');
      }
    }
  }

  /** Resolves a string-class attribute (inline, strp, line_strp, strx). */
  str(die: Die, at: number): string | undefined {
    const v = die.attrs.get(at);
    if (!v) return undefined;
    if (v.k === 'str') return v.v;
    if (v.k === 'strx') return this.strx(die.unit, v.v, die.offset);
    if (v.k === 'alt') {
      dwarfUnsupported(this.s.file, '.debug_info', die.offset, `string in a supplementary file (${formName(v.form)}, dwz) is not supported`, 'run without dwz, or decompress with `dwz -u`/rebuild the debug file');
    }
    dwarfFail(this.s.file, '.debug_info', die.offset, `attribute ${hex(at)} is not a string`);
  }

  private strx(u: Unit, index: number, from: number): string {
    // Without DW_AT_str_offsets_base, DWARF 5 consumers assume the first table (header of 8 or 16 bytes).
    const base = u.strOffsetsBase ?? (u.offsetSize === 8 ? 16 : 8);
    const o = base + index * u.offsetSize;
    if (o + u.offsetSize > this.s.strOffsets.length) {
      dwarfFail(this.s.file, '.debug_str_offsets', o, `string index ${index} (from DIE at .debug_info+${hex(from)}) is past the end of .debug_str_offsets (${hex(this.s.strOffsets.length)} bytes)`);
    }
    const so = u.offsetSize === 4 ? this.s.strOffsets.readUInt32LE(o) : Number(this.s.strOffsets.readBigUInt64LE(o));
    const hit = this.strCache.get(so);
    if (hit !== undefined) return hit;
    const v = stringAt(this.s.str, '.debug_str', this.s.file, so, `.debug_str_offsets+${hex(o)}`);
    this.strCache.set(so, v);
    return v;
  }

  /** The .debug_str string at `o` (read from the DIE attribute at `at`), cached by offset. */
  private debugStr(o: number, at: number): string {
    const hit = this.strCache.get(o);
    if (hit !== undefined) return hit;
    const v = stringAt(this.s.str, '.debug_str', this.s.file, o, `.debug_info+${hex(at)}`);
    this.strCache.set(o, v);
    return v;
  }

  /** Resolves an address-class attribute (addr, addrx). */
  addr(die: Die, at: number): bigint | undefined {
    const v = die.attrs.get(at);
    if (!v) return undefined;
    if (v.k === 'addr') return v.v;
    if (v.k === 'addrx') {
      const u = die.unit;
      const base = u.addrBase ?? 8;
      const o = base + v.v * u.addrSize;
      if (o + u.addrSize > this.s.addr.length) {
        dwarfFail(this.s.file, '.debug_addr', o, `address index ${v.v} (from DIE at .debug_info+${hex(die.offset)}) is past the end of .debug_addr (${hex(this.s.addr.length)} bytes)`);
      }
      return u.addrSize === 8 ? this.s.addr.readBigUInt64LE(o) : BigInt(this.s.addr.readUInt32LE(o));
    }
    return undefined;
  }
}

/**
 * Skips a LEB128 of at most 9 bytes (63 bits, so neither reader could reject it) and
 * returns true; otherwise leaves the cursor alone so the checked reader words the error.
 */
function skipShortLeb(c: Cursor): boolean {
  const buf = c.buf;
  const lim = Math.min(c.end, c.pos + 9);
  for (let p = c.pos; p < lim; p++) {
    if (buf[p]! < 0x80) {
      c.pos = p + 1;
      return true;
    }
  }
  return false;
}

/** Byte size of the abbrev's attributes when every form has a fixed size in `u`, else -1. */
function fixedAttrSize(ab: Abbrev, u: Unit): number {
  let n = 0;
  for (const form of ab.forms) {
    switch (form) {
      case DW_FORM.flag_present:
      case DW_FORM.implicit_const:
        break;
      case DW_FORM.data1:
      case DW_FORM.flag:
      case DW_FORM.strx1:
      case DW_FORM.addrx1:
      case DW_FORM.ref1:
        n += 1;
        break;
      case DW_FORM.data2:
      case DW_FORM.strx2:
      case DW_FORM.addrx2:
      case DW_FORM.ref2:
        n += 2;
        break;
      case DW_FORM.strx3:
      case DW_FORM.addrx3:
        n += 3;
        break;
      case DW_FORM.data4:
      case DW_FORM.strx4:
      case DW_FORM.addrx4:
      case DW_FORM.ref4:
      case DW_FORM.ref_sup4:
        n += 4;
        break;
      case DW_FORM.data8:
      case DW_FORM.ref8:
      case DW_FORM.ref_sig8:
      case DW_FORM.ref_sup8:
        n += 8;
        break;
      case DW_FORM.data16:
        n += 16;
        break;
      case DW_FORM.addr:
        n += u.addrSize;
        break;
      case DW_FORM.ref_addr:
        // 64-bit offsets are range-checked when read (too large for a JS number): not skipped blind.
        if (u.version > 2 && u.offsetSize === 8) return -1;
        n += u.version <= 2 ? u.addrSize : u.offsetSize;
        break;
      case DW_FORM.strp:
      case DW_FORM.line_strp:
      case DW_FORM.sec_offset:
      case DW_FORM.GNU_ref_alt:
      case DW_FORM.GNU_strp_alt:
      case DW_FORM.strp_sup:
        if (u.offsetSize === 8) return -1;
        n += 4;
        break;
      default:
        return -1;
    }
  }
  return n;
}

/** Shared bigints for the small constants (sizes, lines, file numbers) most DIEs carry: one allocation each instead of one per attribute. */
const SMALL_BIGS: bigint[] = Array.from({ length: 4096 }, (_, i) => BigInt(i));

function smallBig(n: number): bigint {
  return n < 4096 ? SMALL_BIGS[n]! : BigInt(n);
}
