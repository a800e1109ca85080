/**
 * Program definitions for the call manager: what rexd's configuration names
 * (an object and its entry-point definitions, or a program that serves
 * itself) turned into a ProgramSpec. Definitions come from repdb's XML or SQL,
 * or from the object's own debug info; definitions made before the object was
 * stripped are checked against its dynamic symbols.
 */
import { readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { checkAgainstElf, entryPointsFromElf, readEntryPointsDb, readEntryPointsXml } from '../gen/index.js';
import type { ProgramSpec } from './manager.js';

/** One program as configured: a shared object with XML, SQLite or DWARF definitions, or an executable linked with librex. */
export type ProgramConfig =
  | { name: string; object: string; xml?: string; db?: string }
  | { name: string; exec: string; args?: string[] };

/** Reads a program's definitions; `warnings` lists entry points whose symbol moved or is missing in the object. */
export function loadProgram(c: ProgramConfig): { spec: ProgramSpec; warnings: string[] } {
  if ('exec' in c) return { spec: { kind: 'program', name: c.name, exec: resolve(c.exec), ...(c.args ? { args: c.args } : {}) }, warnings: [] };
  const object = resolve(c.object);
  const definitions = c.xml
    ? readEntryPointsXml(readFileSync(c.xml, 'utf8'), c.xml)
    : c.db
      ? readEntryPointsDb(c.db, basename(object))
      : entryPointsFromElf({ path: object }).set;
  const warnings = c.xml || c.db ? checkAgainstElf(definitions, { path: object }).map((w) => `${w.where}: ${w.message}`) : [];
  return { spec: { kind: 'library', name: c.name, object, definitions }, warnings };
}
