/**
 * The view model of the generated C header: the frame structs (fixed parts of the
 * input and output frames, laid out by the runtime's engine), the types they use,
 * size/offset assertions, and prototypes for C callers. templates/c-header.hbs lays it out.
 */
import type { FrameDef } from '../../runtime/frames/plan.js';
import type { Prim, TypeDesc } from '../../runtime/frames/types.js';
import { locString, type EntryPoint, type EntryPointSet } from '../model/entrypoint.js';
import { NameScope, escapeIdent } from './names.js';

const C_PRIM: Record<Prim, string> = {
  bool: 'bool', char: 'char', int8: 'int8_t', uint8: 'uint8_t', int16: 'int16_t', uint16: 'uint16_t',
  int32: 'int32_t', uint32: 'uint32_t', int64: 'int64_t', uint64: 'uint64_t', int128: '__int128', uint128: 'unsigned __int128',
  float: 'float', double: 'double', longdouble: 'long double',
};

/** A C declaration of `name` with type `t` (handles arrays and pointers to arrays). */
export function cDeclare(t: TypeDesc, name: string, names: Map<string, string>, exactEnums = false): string {
  switch (t.kind) {
    case 'void': return `void ${name}`.trim();
    case 'prim': return `${C_PRIM[t.prim]} ${name}`.trim();
    case 'enum': return exactEnums ? `${C_PRIM[t.prim]} ${name}`.trim() : `enum ${names.get(t.name) ?? t.name} ${name}`.trim();
    case 'struct': case 'union': return `${t.kind} ${names.get(t.name) ?? t.name} ${name}`.trim();
    case 'funcptr': return `void (*${name})(void)`;
    case 'opaque': return `_Alignas(${t.align}) unsigned char ${name}[${t.size}]`;
    case 'array': return cDeclare(t.elem, `${name}[${t.count}]`, names, exactEnums);
    case 'pointer': {
      const inner = t.target.kind === 'array' ? `(*${name})` : `*${name}`;
      return cDeclare(t.target, inner, names, exactEnums);
    }
  }
}

/** The header's view. */
export interface CHeaderView {
  header: string;
  guard: string;
  enums: { name: string; members: string[] }[];
  aggregates: { kind: string; name: string; fields: string[]; asserts: string[] }[];
  entries: { name: string; comment: string; frames: { tag: string; fields: string[]; asserts: string[]; sizeMacro: string; size: number }[]; prototype: string }[];
  refused: { name: string; message: string }[];
}

function frameFields(f: FrameDef, structName: string, ep: EntryPoint, names: Map<string, string>, where: string): { fields: string[]; asserts: string[] } {
  const scope = new NameScope('c', `frame field of ${ep.name}`);
  const fields: string[] = [];
  const asserts: string[] = [];
  for (const s of f.slots) {
    const id = scope.take(s.role === 'return' ? 'rex_return' : s.name, where);
    const decl = s.role === 'length' ? `uint32_t ${id}` : cDeclare(s.type, id, names, true);
    // Enums travel as their integer; the note names the enum whose constants the value takes.
    const en = s.role !== 'length' && s.type.kind === 'enum' ? `enum ${names.get(s.type.name) ?? s.type.name}` : undefined;
    const note = s.role === 'length' ? ` /* byte length of ${s.name}'s data section */` : s.role === 'return' ? ` /* return value${en ? ` (${en})` : ''} */` : en ? ` /* ${en} */` : '';
    fields.push(`${decl};${note}`);
    asserts.push(`REX_ASSERT_OFFSET(${structName}, ${id}, ${s.offset});`);
  }
  return { fields, asserts };
}

/** Builds the C header view for the callable entry points of `set`. */
export function cHeaderView(set: EntryPointSet, from: string, base: string): CHeaderView {
  const tags = new NameScope('c', 'tag');
  const names = new Map<string, string>();
  const where = (n: string) => { const o = set.typeOrigins.get(n); return o ? locString(o) : set.elfFile; };
  const callable = set.entries.filter((e) => e.refusals.length === 0);
  const usedAgg = new Set<string>();
  const usedEnum = new Set<string>();
  for (const ep of callable) {
    ep.types.forEach((t) => usedAgg.add(t.name));
    ep.enums.forEach((e) => usedEnum.add(e.name));
  }
  for (const t of set.types) if (usedAgg.has(t.name)) names.set(t.name, tags.take(t.name, where(t.name)));
  for (const e of set.enums) if (usedEnum.has(e.name)) names.set(e.name, tags.take(e.name, where(e.name)));
  const engineOf = new Map<string, EntryPoint>();
  for (const ep of callable) ep.types.forEach((t) => engineOf.set(t.name, ep));

  const globals = new NameScope('c', 'identifier');
  const enums = set.enums.filter((e) => usedEnum.has(e.name)).map((e) => ({
    name: names.get(e.name)!,
    members: e.values.map((v) => `${globals.take(v.name, where(e.name))} = ${v.value}`),
  }));
  // Definitions must precede use: emit aggregates in dependency order.
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = (n: string): void => {
    if (order.includes(n) || visiting.has(n)) return;
    visiting.add(n);
    const a = set.types.find((t) => t.name === n);
    const deps = (t: TypeDesc): void => {
      if (t.kind === 'struct' || t.kind === 'union') visit(t.name);
      else if (t.kind === 'array') deps(t.elem);
    };
    a?.fields.forEach((f) => deps(f.type));
    order.push(n);
  };
  [...usedAgg].sort().forEach(visit);
  const aggregates = order.map((n) => {
    const t = set.types.find((x) => x.name === n)!;
    const l = engineOf.get(n)!.plan.engine.layoutAggregate(n);
    const scope = new NameScope('c', `member of ${t.kind} ${t.name}`);
    const cname = names.get(n)!;
    const fields = t.fields.map((f) => `${cDeclare(f.type, scope.take(f.name, where(n)), names)};`);
    const asserts = [`REX_ASSERT_SIZE(${t.kind} ${cname}, ${l.size});`, ...l.fields.map((f) => `REX_ASSERT_OFFSET(${t.kind} ${cname}, ${escapeIdent(f.name, 'c')}, ${f.offset});`)];
    return { kind: t.kind, name: cname, fields, asserts };
  });

  const entries = callable.map((ep) => {
    const origin = locString(ep.origin);
    const fn = globals.take(ep.name, origin);
    const frames = (['in', 'out'] as const).map((dir) => {
      const f = dir === 'in' ? ep.input : ep.output;
      const sname = `struct rex_${fn}_${dir}`;
      const { fields, asserts } = frameFields(f, sname, ep, names, origin);
      return { tag: `rex_${fn}_${dir}`, fields, asserts: [`REX_ASSERT_SIZE(${sname}, ${f.fixedSize});`, ...asserts], sizeMacro: `REX_${fn.toUpperCase()}_${dir.toUpperCase()}_SIZE`, size: f.fixedSize };
    });
    const pscope = new NameScope('c', `parameter of ${ep.name}`);
    const params = ep.params.map((p) => {
      const id = pscope.take(p.name, p.origin ? locString(p.origin) : origin);
      const d = cDeclare(p.type, id, names);
      return p.type.kind === 'pointer' && p.direction === 'in' ? `const ${d}` : d;
    });
    return {
      name: fn,
      comment: `${ep.name} (${ep.source ?? origin})`,
      frames,
      prototype: `${cDeclare(ep.returns, '', names)} ${fn}(${params.length ? params.join(', ') : 'void'});`,
    };
  });
  const guard = `REX_${base.replace(/[^A-Za-z0-9]/g, '_').toUpperCase()}_REX_H`;
  return {
    header: `/* Code generated by repdb from ${from.replace(/\*\//g, '* /').replace(/[\r\n]/g, ' ')}. DO NOT EDIT. */`,
    guard,
    enums,
    aggregates,
    entries,
    refused: set.entries.filter((e) => e.refusals.length > 0).map((e) => ({ name: e.name, message: e.refusals[0]!.message.replace(/\*\//g, '* /') })),
  };
}
