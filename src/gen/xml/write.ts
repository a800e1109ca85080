/**
 * Writes an entry-point set as XML (docs/ENTRYPOINTS.md) and validates the text
 * against schema/rex.dtd before returning it, so repdb never emits an invalid document.
 */
import type { AggregateDesc, EnumDesc } from '../../runtime/frames/types.js';
import type { FrameDef } from '../../runtime/frames/plan.js';
import { formatType } from '../model/typestr.js';
import type { EntryPoint, EntryPointSet, Owner } from '../model/entrypoint.js';
import { validateXmlText } from './dtd.js';

/** Escapes text for an XML attribute value in double quotes. */
export function xmlAttr(s: string): string {
  // Most values (names, numbers, types) need no escaping: one test instead of six replaces.
  if (!/[&<>"\n\t]/.test(s)) return s;
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/\n/g, '&#10;').replace(/\t/g, '&#9;');
}

/** Comment text cannot contain "--" or end in "-". */
function xmlComment(s: string): string {
  return s.replace(/--+/g, (m) => m.split('').join(' ')).replace(/-$/, '- ');
}

function attrs(pairs: [string, string | number | undefined | false][]): string {
  return pairs.filter(([, v]) => v !== undefined && v !== false).map(([k, v]) => ` ${k}="${xmlAttr(String(v))}"`).join('');
}

function aggregateXml(a: AggregateDesc, size: number, align: number, source: string | undefined, ind: string): string[] {
  const lines = [`${ind}<${a.kind}${attrs([['name', a.name], ['size', size], ['align', align], ['source', source]])}>`];
  for (const f of a.fields) {
    lines.push(`${ind}  <field${attrs([['name', f.name], ['type', formatType(f.type)], ['offset', f.offset], ['bits', f.bits], ['bit-offset', f.bitOffset]])}/>`);
  }
  lines.push(`${ind}</${a.kind}>`);
  return lines;
}

function enumXml(e: EnumDesc, ind: string): string[] {
  return [
    `${ind}<enum${attrs([['name', e.name], ['type', e.prim]])}>`,
    ...e.values.map((v) => `${ind}  <enumerator${attrs([['name', v.name], ['value', v.value]])}/>`),
    `${ind}</enum>`,
  ];
}

function frameXml(tag: 'input' | 'output', f: FrameDef, ind: string): string[] {
  if (f.slots.length === 0) return [`${ind}<${tag}${attrs([['size', f.fixedSize], ['align', f.align]])}/>`];
  return [
    `${ind}<${tag}${attrs([['size', f.fixedSize], ['align', f.align]])}>`,
    ...f.slots.map((s) => `${ind}  <slot${attrs([['name', s.name], ['role', s.role], ['offset', s.offset], ['size', s.size]])}/>`),
    `${ind}</${tag}>`,
  ];
}

function ownerAttrs(o: Owner, root: Owner): [string, string | undefined][] {
  const pick = (k: keyof Owner): string | undefined => (o[k] !== undefined && o[k] !== root[k] ? o[k] : undefined);
  return [['host', pick('host')], ['user', pick('user')], ['program', pick('program')], ['config', pick('config')]];
}

/** The <entry-point> element of one entry point (also stored alone in the SQL definition column). */
export function entryPointXml(ep: EntryPoint, root: Owner, ind = '  '): string[] {
  const lines: string[] = [];
  for (const r of ep.refusals) lines.push(`${ind}<!-- ${xmlComment(`refused for remote calls: ${r.message}. To fix: ${r.hint}`)} -->`);
  lines.push(`${ind}<entry-point${attrs([
    ['name', ep.name],
    ['address', ep.address !== undefined ? `0x${ep.address.toString(16)}` : undefined],
    ['variadic', ep.variadic ? 'yes' : undefined],
    ['version', ep.version],
    ['alias-of', ep.aliasOf],
    ['ifunc', ep.ifunc ? 'yes' : undefined],
    ['internal', ep.internal ? 'yes' : undefined],
    ['dwarf-name', ep.dwarfName],
    ['prototype', ep.noPrototype ? 'no' : undefined],
    ['prototype-from', ep.prototypeFrom],
    ...ownerAttrs(ep, root),
    ['source', ep.source],
  ])}>`);
  const i2 = ind + '  ';
  if (ep.returns.kind !== 'void') lines.push(`${i2}<returns type="${xmlAttr(formatType(ep.returns))}"/>`);
  for (const p of ep.params) {
    lines.push(`${i2}<param${attrs([
      ['name', p.name],
      ['type', formatType(p.type)],
      ['direction', p.direction],
      ['size-is', p.sizeIs],
      ['string', p.string ? 'yes' : undefined],
      ['into', p.into],
      ['direction-inferred', p.directionInferred ? 'yes' : undefined],
    ])}/>`);
  }
  // No prototype: no frames either, so that writing the prototype in needs no other edit.
  if (!ep.noPrototype) lines.push(...frameXml('input', ep.input, i2), ...frameXml('output', ep.output, i2));
  lines.push(`${ind}</entry-point>`);
  return lines;
}

/** Options of {@link writeEntryPointsXml}. */
export interface WriteXmlOptions {
  /** Only these entry points (by default all of the set). */
  entries?: EntryPoint[];
  /** Name of the generating input, for the header comment. */
  from?: string;
}

/** Serialises a set (its types, then its entry points) and validates the result against the DTD. */
export function writeEntryPointsXml(set: EntryPointSet, opts: WriteXmlOptions = {}): string {
  const entries = opts.entries ?? set.entries;
  const used = new Set<string>();
  const usedEnums = new Set<string>();
  for (const ep of entries) {
    ep.types.forEach((t) => used.add(t.name));
    ep.enums.forEach((e) => usedEnums.add(e.name));
  }
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE rex-entry-points SYSTEM "rex.dtd">',
    `<!-- ${xmlComment(`Written by repdb from ${opts.from ?? set.elfFile}. Mark pointer parameters with direction, size-is and string (docs/ENTRYPOINTS.md); frame sizes are re-checked when read.`)} -->`,
    `<rex-entry-points${attrs([['version', '1'], ['elf-file', set.elfFile], ['host', set.host], ['user', set.user], ['program', set.program], ['config', set.config]])}>`,
  ];
  // Layouts come from the entry points' plans (the one layout engine), not recomputed here.
  const layouts = new Map<string, { size: number; align: number }>();
  for (const ep of entries) {
    for (const t of ep.types) {
      if (!layouts.has(t.name)) {
        const l = ep.plan.engine.layoutAggregate(t.name);
        layouts.set(t.name, { size: l.size, align: l.align });
      }
    }
  }
  // Definitions in name order, so the same definitions read from XML, SQL or DWARF write the same text.
  const byName = <T extends { name: string }>(a: T, b: T) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  for (const e of set.enums.filter((x) => usedEnums.has(x.name)).sort(byName)) lines.push(...enumXml(e, '  '));
  for (const t of set.types.filter((x) => used.has(x.name)).sort(byName)) {
    const l = layouts.get(t.name)!;
    lines.push(...aggregateXml(t, l.size, l.align, set.typeSources.get(t.name), '  '));
  }
  for (const ep of entries) lines.push(...entryPointXml(ep, set));
  lines.push('</rex-entry-points>', '');
  const text = lines.join('\n');
  validateXmlText(text, `(XML written for ${set.elfFile})`);
  return text;
}
