/**
 * Test helpers for the DWARF reader: build the C fixture with gcc, parse the
 * oracle (`readelf --debug-dump=info`), and render types of both sides in one
 * canonical notation so they can be compared as strings.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { CType, DebugInfo, TypeId } from '../../../src/gen/debuginfo.js';

export const FIXTURE_DIR = resolve(import.meta.dirname, '../../fixtures/c');

/** A fresh temporary directory for build products. */
export function tempDir(prefix = 'repdb-dwarf-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Compiles a fixture source into a shared library and returns its path. */
export function buildFixture(dir: string, source: string, out: string, flags: string[]): string {
  const path = join(dir, out);
  execFileSync('gcc', ['-shared', '-fPIC', ...flags, '-o', path, join(FIXTURE_DIR, source)], { stdio: 'pipe' });
  return path;
}

/** One DIE as readelf prints it. */
export interface RDie {
  offset: number;
  depth: number;
  tag: string;
  attrs: Map<string, string>;
  /** Offset in .debug_info of each attribute's value, as readelf prints it. */
  attrAt: Map<string, number>;
  children: RDie[];
  parent?: RDie;
}

/** Parses `readelf --debug-dump=info` into DIE trees (all units), indexed by offset. */
export function readelfDies(path: string): { byOffset: Map<number, RDie>; roots: RDie[] } {
  const text = execFileSync('readelf', ['--debug-dump=info', '-W', path], { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
  const byOffset = new Map<number, RDie>();
  const roots: RDie[] = [];
  const stack: RDie[] = [];
  let cur: RDie | undefined;
  for (const line of text.split('\n')) {
    let m = /^\s*<(\d+)><([0-9a-f]+)>: Abbrev Number: (\d+)(?: \((\w+)\))?/.exec(line);
    if (m) {
      const depth = Number(m[1]);
      if (m[3] === '0') {
        cur = undefined;
        continue;
      }
      const die: RDie = { offset: parseInt(m[2]!, 16), depth, tag: m[4]!, attrs: new Map(), attrAt: new Map(), children: [] };
      while (stack.length > depth) stack.pop();
      const parent = stack[stack.length - 1];
      if (depth === 0) roots.push(die);
      else if (parent) {
        parent.children.push(die);
        die.parent = parent;
      }
      stack[depth] = die;
      stack.length = depth + 1;
      byOffset.set(die.offset, die);
      cur = die;
      continue;
    }
    m = /^\s*<([0-9a-f]+)>\s+(DW_AT_\w+)\s*:\s*(.*)$/.exec(line);
    if (m && cur) {
      cur.attrs.set(m[2]!, m[3]!.trim());
      cur.attrAt.set(m[2]!, parseInt(m[1]!, 16));
    }
  }
  return { byOffset, roots };
}

/** The value part of a readelf attribute: strips "(indirect string, offset: 0x..): " and the like. */
export function rval(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  // With -W readelf prefixes the form: "(strp) (offset: 0x107): double", "(data1) 8".
  const noForm = v.replace(/^\((?:\w+)\)\s*/, '');
  const m = /^\((?:offset|indirect|indexed|index)[^)]*\):\s*(.*)$/.exec(noForm);
  return (m ? m[1]! : noForm).trim();
}

export function rref(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const m = /<0x([0-9a-f]+)>/.exec(v);
  return m ? parseInt(m[1]!, 16) : undefined;
}

export function rnum(v: string | undefined): bigint | undefined {
  const s = rval(v);
  if (s === undefined) return undefined;
  const m = /^(-?)(0x[0-9a-f]+|\d+)/.exec(s);
  if (!m) return undefined;
  const n = BigInt(m[2]!);
  return m[1] ? -n : n;
}

/** Renders a DebugInfo type in the canonical test notation. */
export function renderOurs(info: DebugInfo, id: TypeId): string {
  const t: CType = info.types[id]!;
  switch (t.kind) {
    case 'void':
      return 'void';
    case 'base':
      return t.name;
    case 'pointer':
      return `ptr(${renderOurs(info, t.target)})`;
    case 'const':
    case 'volatile':
    case 'restrict':
    case 'atomic':
      return `${t.kind}(${renderOurs(info, t.target)})`;
    case 'typedef':
      return `${t.name}=${renderOurs(info, t.target)}`;
    case 'array':
      return `${renderOurs(info, t.element)}${t.counts.map((c) => `[${c ?? ''}]`).join('')}`;
    case 'struct':
    case 'union':
      return `${t.kind} ${t.name ?? `<anon ${t.size}>`}`;
    case 'enum':
      return `enum ${t.name ?? '<anon>'}`;
    case 'function':
      return `fn(${t.params.map((p) => renderOurs(info, p)).join(',')}${t.variadic ? (t.params.length ? ',...' : '...') : ''})->${renderOurs(info, t.returnType)}`;
    case 'unsupported':
      return `unsupported(${t.what})`;
  }
}

const QUAL: Record<string, string> = {
  DW_TAG_const_type: 'const',
  DW_TAG_volatile_type: 'volatile',
  DW_TAG_restrict_type: 'restrict',
  DW_TAG_atomic_type: 'atomic',
};

/** Renders the type a readelf DIE's DW_AT_type points at, in the same notation. */
export function renderOracle(dies: Map<number, RDie>, die: RDie | undefined): string {
  const ref = die ? rref(die.attrs.get('DW_AT_type')) : undefined;
  if (ref === undefined) return 'void';
  const t = dies.get(ref)!;
  const name = rval(t.attrs.get('DW_AT_name'));
  switch (t.tag) {
    case 'DW_TAG_base_type':
      return name!;
    case 'DW_TAG_pointer_type':
      return `ptr(${renderOracle(dies, t)})`;
    case 'DW_TAG_typedef':
      return `${name}=${renderOracle(dies, t)}`;
    case 'DW_TAG_array_type': {
      const dims = t.children
        .filter((c) => c.tag === 'DW_TAG_subrange_type')
        .map((c) => {
          const cnt = rnum(c.attrs.get('DW_AT_count'));
          if (cnt !== undefined) return `[${cnt}]`;
          const ub = c.attrs.get('DW_AT_upper_bound');
          if (ub === undefined) return '[]';
          let n = rnum(ub)!;
          if (n === 0xffffffffffffffffn || n === 0xffffffffn) n = -1n;
          return `[${n + 1n}]`;
        });
      return `${renderOracle(dies, t)}${dims.join('') || '[]'}`;
    }
    case 'DW_TAG_structure_type':
      return `struct ${name ?? `<anon ${rnum(t.attrs.get('DW_AT_byte_size'))}>`}`;
    case 'DW_TAG_union_type':
      return `union ${name ?? `<anon ${rnum(t.attrs.get('DW_AT_byte_size'))}>`}`;
    case 'DW_TAG_enumeration_type':
      return `enum ${name ?? '<anon>'}`;
    case 'DW_TAG_subroutine_type': {
      const ps = t.children.filter((c) => c.tag === 'DW_TAG_formal_parameter').map((c) => renderOracle(dies, c));
      const va = t.children.some((c) => c.tag === 'DW_TAG_unspecified_parameters');
      return `fn(${ps.join(',')}${va ? (ps.length ? ',...' : '...') : ''})->${renderOracle(dies, t)}`;
    }
    default:
      if (QUAL[t.tag]) return `${QUAL[t.tag]}(${renderOracle(dies, t)})`;
      return `unsupported(${t.tag})`;
  }
}

/** Follows DW_AT_abstract_origin / DW_AT_specification in the oracle tree. */
export function oracleChain(dies: Map<number, RDie>, d: RDie): RDie[] {
  const out = [d];
  for (let cur = d; ; ) {
    const next = rref(cur.attrs.get('DW_AT_abstract_origin')) ?? rref(cur.attrs.get('DW_AT_specification'));
    if (next === undefined) return out;
    cur = dies.get(next)!;
    out.push(cur);
  }
}

/** The external function definitions readelf shows: name -> signature in canonical notation. */
export function oracleFunctions(path: string): Map<string, { ret: string; params: string[]; variadic: boolean }> {
  const { byOffset, roots } = readelfDies(path);
  const out = new Map<string, { ret: string; params: string[]; variadic: boolean }>();
  for (const cu of roots) {
    for (const d of cu.children) {
      if (d.tag !== 'DW_TAG_subprogram' || !(d.attrs.has('DW_AT_low_pc') || d.attrs.has('DW_AT_ranges'))) continue;
      const chain = oracleChain(byOffset, d);
      if (!chain.some((x) => rval(x.attrs.get('DW_AT_external')) === '1')) continue;
      const name = chain.map((x) => rval(x.attrs.get('DW_AT_name'))).find((x) => x !== undefined)!;
      const decl = chain[chain.length - 1]!;
      const typed = chain.find((x) => x.attrs.has('DW_AT_type'));
      const params = decl.children
        .filter((c) => c.tag === 'DW_TAG_formal_parameter')
        .map((p) => {
          const pc = oracleChain(byOffset, p);
          const pn = pc.map((x) => rval(x.attrs.get('DW_AT_name'))).find((x) => x !== undefined);
          return `${pn ?? ''}: ${renderOracle(byOffset, pc.find((x) => x.attrs.has('DW_AT_type')))}`;
        });
      const variadic = decl.children.some((c) => c.tag === 'DW_TAG_unspecified_parameters') || d.children.some((c) => c.tag === 'DW_TAG_unspecified_parameters');
      if (!out.has(name)) out.set(name, { ret: renderOracle(byOffset, typed), params, variadic });
    }
  }
  return out;
}

/** Named, complete structs/unions readelf shows: "struct name" -> size and members. */
export function oracleAggregates(path: string): Map<string, { size: number; members: string[] }> {
  const { byOffset } = readelfDies(path);
  const out = new Map<string, { size: number; members: string[] }>();
  for (const d of byOffset.values()) {
    if (d.tag !== 'DW_TAG_structure_type' && d.tag !== 'DW_TAG_union_type') continue;
    const name = rval(d.attrs.get('DW_AT_name'));
    if (name === undefined || d.attrs.has('DW_AT_declaration')) continue;
    const kind = d.tag === 'DW_TAG_structure_type' ? 'struct' : 'union';
    const members = d.children
      .filter((m) => m.tag === 'DW_TAG_member')
      .map((m) => {
        const loc = Number(rnum(m.attrs.get('DW_AT_data_member_location')) ?? 0n);
        const bs = rnum(m.attrs.get('DW_AT_bit_size'));
        let pos = `@${loc}`;
        if (bs !== undefined) {
          const dbo = rnum(m.attrs.get('DW_AT_data_bit_offset'));
          let bit: number;
          if (dbo !== undefined) bit = Number(dbo);
          else {
            // DWARF 2/3 big-endian-style bit offset within a storage unit of DW_AT_byte_size bytes.
            const storage = Number(rnum(m.attrs.get('DW_AT_byte_size'))!);
            bit = loc * 8 + storage * 8 - Number(rnum(m.attrs.get('DW_AT_bit_offset'))!) - Number(bs);
          }
          pos = `@bit${bit}:${bs}`;
        }
        return `${rval(m.attrs.get('DW_AT_name')) ?? ''}${pos} ${renderOracle(byOffset, m)}`;
      });
    out.set(`${kind} ${name}`, { size: Number(rnum(d.attrs.get('DW_AT_byte_size'))), members });
  }
  return out;
}

/** Named enums readelf shows: name -> "A=0,B=5". */
export function oracleEnums(path: string): Map<string, string> {
  const { byOffset } = readelfDies(path);
  const out = new Map<string, string>();
  for (const d of byOffset.values()) {
    if (d.tag !== 'DW_TAG_enumeration_type') continue;
    const name = rval(d.attrs.get('DW_AT_name'));
    if (name === undefined) continue;
    out.set(
      name,
      d.children
        .filter((e) => e.tag === 'DW_TAG_enumerator')
        .map((e) => `${rval(e.attrs.get('DW_AT_name'))}=${rnum(e.attrs.get('DW_AT_const_value'))}`)
        .join(','),
    );
  }
  return out;
}

/** Our function definitions (not those taken from declarations) in the same shape as {@link oracleFunctions}. */
export function ourFunctions(info: DebugInfo): Map<string, { ret: string; params: string[]; variadic: boolean }> {
  return new Map(info.functions.filter((f) => !f.declaration).map((f) => [f.name, { ret: renderOurs(info, f.returnType), params: f.params.map((p) => `${p.name ?? ''}: ${renderOurs(info, p.type)}`), variadic: f.variadic }]));
}

/** Our named aggregates in the same shape as {@link oracleAggregates}. */
export function ourAggregates(info: DebugInfo): Map<string, { size: number; members: string[] }> {
  const out = new Map<string, { size: number; members: string[] }>();
  for (const t of info.types) {
    if ((t.kind !== 'struct' && t.kind !== 'union') || t.name === undefined || t.declaration) continue;
    out.set(`${t.kind} ${t.name}`, {
      size: t.size!,
      members: t.members.map((m) => `${m.name ?? ''}${m.bitSize !== undefined ? `@bit${m.bitOffset}:${m.bitSize}` : `@${m.offset}`} ${renderOurs(info, m.type)}`),
    });
  }
  return out;
}
