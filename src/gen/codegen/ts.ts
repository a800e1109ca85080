/**
 * The view model of a generated TypeScript module: every decision (names, TS
 * types, which parameters are arguments and which are results) is made here;
 * templates/ts-module.hbs only lays the strings out.
 */
import { isBigPrim } from '../../runtime/frames/codec.js';
import { isByteType, type BufferDef } from '../../runtime/frames/plan.js';
import type { TypeDesc } from '../../runtime/frames/types.js';
import { enumConstant, isCharArray } from '../../runtime/frames/values.js';
import { formatType } from '../model/typestr.js';
import { locString, type EntryPoint, type EntryPointSet } from '../model/entrypoint.js';
import { NameScope } from './names.js';

/** The import path of the versioned runtime entry point generated modules use. */
export const RUNTIME_IMPORT = '@rex-cluster/rex/runtime/codegen-v1';

/** One struct rendered as an interface. */
export interface TsInterfaceView {
  name: string;
  comment: string;
  fields: { name: string; type: string; comment: string }[];
}

/** One generated function. */
export interface TsFunctionView {
  name: string;
  constName: string;
  comment: string;
  params: { name: string; type: string }[];
  /** `{ a, b: b_ }` passed to call(). */
  argsObject: string;
  resultType: string;
  /** True when the function returns out.return alone. */
  returnsValue: boolean;
  hasResult: boolean;
  desc: string;
}

/** The whole module. */
export interface TsModuleView {
  header: string;
  runtimeImport: string;
  elfFile: string;
  target: string;
  enums: { name: string; comment: string; members: { name: string; value: string }[] }[];
  interfaces: TsInterfaceView[];
  functions: TsFunctionView[];
  refused: { name: string; lines: string[] }[];
}

/** The file name of a generated module for an ELF object (libdemo.so → libdemo.rex.ts). */
export function moduleBaseName(elfFile: string): string {
  const base = elfFile.split('/').pop()!.replace(/\.so(\.[0-9.]+)?$/, '').replace(/\.[^.]*$/, '');
  return base.replace(/[^A-Za-z0-9_.-]/g, '_') || 'entrypoints';
}

class TsTypes {
  constructor(readonly structNames: Map<string, string>, readonly enumNames: Map<string, string>) {}

  value(t: TypeDesc): string {
    switch (t.kind) {
      case 'prim': return t.prim === 'bool' ? 'boolean' : isBigPrim(t.prim) ? 'bigint' : 'number';
      case 'enum': {
        // A constant's name, or the number when no constant names the value (docs/CALLS.md, "Values").
        const num = isBigPrim(t.prim) ? 'bigint' : 'number';
        const n = this.enumNames.get(t.name);
        return n ? `${n} | ${num}` : num;
      }
      case 'struct': return this.structNames.get(t.name)!;
      case 'union': return 'Uint8Array';
      case 'array': return isCharArray(t) ? 'string' : isByteType(t.elem) ? 'Uint8Array' : `${this.wrap(this.value(t.elem))}[]`;
      default: return 'never';
    }
  }

  buffer(b: BufferDef): string {
    if (b.into !== undefined) return 'number';
    if (b.string) return 'string';
    if (isByteType(b.elem)) return 'Uint8Array';
    const v = this.value(b.elem);
    return 'one' in b.count ? v : `${this.wrap(v)}[]`;
  }

  private wrap(s: string): string {
    return /^[A-Za-z0-9_]+$/.test(s) ? s : `(${s})`;
  }
}

function jsString(s: string): string {
  return JSON.stringify(s);
}

function commentSafe(s: string): string {
  return s.replace(/\*\//g, '* /');
}

function signature(ep: EntryPoint): string {
  const ps = ep.params.map((p) => {
    const marks = [p.direction, p.sizeIs !== undefined ? `size-is=${p.sizeIs}` : undefined, p.string ? 'string' : undefined, p.into !== undefined ? `into=${p.into}` : undefined].filter(Boolean).join(' ');
    return `${formatType(p.type)} ${p.name}${marks ? ` [${marks}]` : ''}`;
  });
  if (ep.variadic) ps.push('...');
  return `${formatType(ep.returns)} ${ep.name}(${ps.join(', ')})`;
}

/** Builds the view of the TypeScript module for the callable entry points of `set`. */
export function tsModuleView(set: EntryPointSet, from: string): TsModuleView {
  const values = new NameScope('ts', 'name');
  const types = new NameScope('ts', 'type name');
  const callable = set.entries.filter((e) => e.refusals.length === 0);
  const usedStructs = new Set<string>();
  const usedEnums = new Set<string>();
  for (const ep of callable) {
    ep.types.filter((t) => t.kind === 'struct').forEach((t) => usedStructs.add(t.name));
    ep.enums.forEach((e) => usedEnums.add(e.name));
  }
  const structNames = new Map<string, string>();
  const where = (n: string) => { const o = set.typeOrigins.get(n); return o ? locString(o) : set.elfFile; };
  for (const t of set.types) if (usedStructs.has(t.name)) structNames.set(t.name, types.take(t.name, where(t.name)));
  // An enum is a const object of its numbers and a type of its names, both under the enum's name.
  const enumNames = new Map<string, string>();
  for (const e of set.enums) {
    if (!usedEnums.has(e.name)) continue;
    const id = values.take(e.name, where(e.name));
    types.take(e.name, where(e.name));
    enumNames.set(e.name, id);
  }
  const tt = new TsTypes(structNames, enumNames);

  const interfaces = set.types.filter((t) => usedStructs.has(t.name)).map((t) => ({
    name: structNames.get(t.name)!,
    comment: `struct ${t.name} (${where(t.name)})`,
    fields: t.fields.map((f) => ({ name: /^[A-Za-z_][A-Za-z0-9_]*$/.test(f.name) ? f.name : jsString(f.name), type: tt.value(f.type), comment: formatType(f.type) })),
  }));
  const enums = set.enums.filter((e) => usedEnums.has(e.name)).map((e) => ({
    name: enumNames.get(e.name)!,
    comment: `enum ${e.name}: values of its ${e.prim} constants; stubs take and give a constant by name (a value no constant names comes back as its number)`,
    members: e.values.map((v) => ({ name: v.name, value: isBigPrim(e.prim) ? `${enumConstant(e.prim, v.value)}n` : enumConstant(e.prim, v.value) })),
  }));

  const functions = callable.map((ep) => {
    const origin = locString(ep.origin);
    const name = values.take(ep.name, origin);
    const local = new NameScope('ts', `parameter of ${ep.name}`);
    const plan = ep.plan;
    const derived = new Set(plan.derived.keys());
    const outBufs = new Map(plan.output.buffers.map((b) => [b.param, b]));
    const inBufs = new Map(plan.input.buffers.map((b) => [b.param, b]));
    const params: { name: string; type: string }[] = [];
    const argPairs: string[] = [];
    for (const p of ep.params) {
      if (derived.has(p.name)) continue;
      const b = inBufs.get(p.name);
      if (b && b.direction === 'out') continue;
      const id = local.take(p.name, p.origin ? locString(p.origin) : origin);
      params.push({ name: id, type: b ? tt.buffer(b) : tt.value(p.type) });
      argPairs.push(id === p.name ? id : `${/^[A-Za-z_][A-Za-z0-9_]*$/.test(p.name) ? p.name : jsString(p.name)}: ${id}`);
    }
    const resultFields: string[] = [];
    if (ep.returns.kind !== 'void') resultFields.push(`return: ${tt.value(ep.returns)}`);
    for (const [pn, b] of outBufs) resultFields.push(`${pn}: ${tt.buffer(b)}`);
    const returnsValue = outBufs.size === 0;
    const resultType = returnsValue ? (ep.returns.kind === 'void' ? 'void' : tt.value(ep.returns)) : `{ ${resultFields.join('; ')} }`;
    const derivedNote = [...plan.derived].map(([sp, bufs]) => `'${sp}' is taken from the length of ${bufs.join(', ')}`);
    const comment = [`${signature(ep)}`, `Defined at ${ep.source ?? origin}; input frame ${ep.input.fixedSize} bytes${ep.input.buffers.length ? ' + data' : ''}, output frame ${ep.output.fixedSize} bytes${ep.output.buffers.length ? ' + data' : ''}.`, ...derivedNote].map(commentSafe);
    return {
      name,
      constName: `$ep_${name}`,
      comment: comment.join('\n * '),
      params,
      argsObject: `{ ${argPairs.join(', ')} }`.replace('{  }', '{}'),
      resultType,
      returnsValue,
      hasResult: resultType !== 'void',
      desc: JSON.stringify(plan.desc),
    };
  });

  const target: Record<string, string> = { elfFile: set.elfFile };
  for (const k of ['host', 'user', 'program'] as const) if (set[k] !== undefined) target[k] = set[k]!;
  return {
    header: `// Code generated by repdb from ${from.replace(/[\r\n]/g, ' ')}. DO NOT EDIT.`,
    runtimeImport: RUNTIME_IMPORT,
    elfFile: set.elfFile,
    target: JSON.stringify(target),
    enums,
    interfaces,
    functions,
    refused: set.entries.filter((e) => e.refusals.length > 0).map((e) => ({
      name: e.name,
      lines: e.refusals.map((r) => commentSafe(`${r.message} (fix: ${r.hint})`)),
    })),
  };
}
