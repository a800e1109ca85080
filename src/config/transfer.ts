/**
 * `rex config import FROM --to TO` and `rex config export --to TO`: moving a configuration between rex.rc, its
 * XML form and a configuration database. What moves is the effective configuration's keys that are set (not
 * defaulted), each as its normalised value: reading what was written gives the same configuration back.
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseDbTarget, looksLikeDbTarget, type DbTarget } from '../db/target.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { readConfigDatabase, writeConfigDatabase } from './database.js';
import { KEY_SPECS } from './keys.js';
import { loadConfig, type LoadOptions } from './load.js';
import { normalize } from './normalize.js';
import { ConfigError, type ConfigDiagnostic, type LoadedConfig } from './types.js';

/** The set keys of a configuration as (key, rc text) rows, in the key table's order. */
export function configRows(loaded: LoadedConfig): { key: string; value: string }[] {
  return KEY_SPECS.filter((s) => loaded.sources[s.field].file !== '(default)').map((s) => ({ key: s.key, value: s.value.print(loaded.config[s.field]) }));
}

/** Rows as rc text; throws CONFIG_VALUE for a value rc syntax cannot carry (the XML form can). */
export function rowsToRc(rows: readonly { key: string; value: string }[], from: string): string {
  const lines = [`# Written by rex config from ${from.replace(/[\r\n]/g, ' ')}; see docs/CONFIG.md.`];
  for (const r of rows) {
    if (/[\r\n]|\/\*|\\$/.test(r.value) || r.value !== r.value.trim()) {
      throw new RexError(ErrorCodes.CONFIG_VALUE, `key "${r.key}": the value ${JSON.stringify(r.value)} cannot be written in rc syntax`, { hint: 'write the XML form (a .xml file) or a database instead' });
    }
    lines.push(`${r.key} : ${r.value}`);
  }
  return `${lines.join('\n')}\n`;
}

const xmlEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A configuration's set keys as an XML document valid against schema/rex.dtd. */
export function toXmlText(loaded: LoadedConfig, from: string): string {
  const out = ['<?xml version="1.0" encoding="UTF-8"?>', `<!-- Written by rex config from ${xmlEscape(from).replace(/--/g, '- -')}; see docs/CONFIG.md. -->`, '<rex-config>'];
  for (const s of KEY_SPECS) {
    if (loaded.sources[s.field].file === '(default)') continue;
    const v = loaded.config[s.field] as unknown;
    const child = s.value.list?.xml?.child;
    if (child === undefined) {
      out.push(`  <${s.key}>${xmlEscape(s.value.print(v as never))}</${s.key}>`);
      continue;
    }
    out.push(`  <${s.key}>`);
    for (const item of v as unknown[]) {
      if (typeof item === 'string') out.push(`    <${child}>${xmlEscape(item)}</${child}>`);
      else out.push(`    <${child} ${Object.entries(item as Record<string, unknown>).map(([k, x]) => `${k}="${xmlEscape(String(x))}"`).join(' ')}/>`);
    }
    out.push(`  </${s.key}>`);
  }
  out.push('</rex-config>', '');
  return out.join('\n');
}

/** Where a configuration goes or comes from: a database, or a file (rc, or XML by its .xml suffix). */
export type ConfigPlace = { kind: 'db'; target: DbTarget } | { kind: 'file'; file: string };

/** Parses a FROM/TO of `rex config import/export`. */
export function configPlace(text: string, cwd = process.cwd(), env = process.env): ConfigPlace {
  if (looksLikeDbTarget(text)) {
    const t = parseDbTarget(text, { env, cwd });
    if (typeof t === 'string') throw new RexError(ErrorCodes.USAGE, t, { hint: 'name a database as sqlite:PATH, postgresql://... or HOST.USER.DBMS.DB_NAME' });
    return { kind: 'db', target: t };
  }
  return { kind: 'file', file: text === '-' ? '-' : resolve(cwd, text) };
}

/** Loads a configuration from a place: a file as loadConfig reads it (includes, a config-database), or a database's table alone. */
export async function loadConfigFrom(place: ConfigPlace, opts: LoadOptions = {}): Promise<LoadedConfig> {
  if (place.kind === 'file') return loadConfig({ ...opts, file: place.file });
  const env = opts.env ?? process.env;
  const diags: ConfigDiagnostic[] = [];
  let defs;
  try {
    defs = await readConfigDatabase(place.target, diags);
  } catch (e) {
    if (e instanceof RexError) throw e;
    throw new RexError(ErrorCodes.CONFIG_DATABASE, (e as Error).message, { where: place.target.shown });
  }
  const loaded = normalize(defs, { user: env.USER ?? env.LOGNAME, home: opts.home ?? env.HOME }, diags);
  if (diags.length) throw new ConfigError(diags);
  return { ...loaded, files: [place.target.shown] };
}

/** Writes a configuration's set keys to a place; returns a one-line account of what was written. */
export async function writeConfigTo(loaded: LoadedConfig, place: ConfigPlace, from: string): Promise<string> {
  const rows = configRows(loaded);
  if (place.kind === 'db') {
    await writeConfigDatabase(place.target, rows);
    return `${place.target.shown}: ${rows.length} row${rows.length === 1 ? '' : 's'} written to table rex_config`;
  }
  const text = place.file.endsWith('.xml') ? toXmlText(loaded, from) : rowsToRc(rows, from);
  if (place.file === '-') process.stdout.write(text);
  else writeFileSync(place.file, text, { mode: 0o600 });
  return `${place.file === '-' ? '(stdout)' : place.file}: ${rows.length} key${rows.length === 1 ? '' : 's'} written`;
}
