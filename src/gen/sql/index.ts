/**
 * The SQL form of entry points: the seed's REXP table (function name to input and
 * output frame sizes, with the owner HOST.USER.PROGRAM), plus a `definition`
 * column holding the entry point's full XML so the database alone is complete.
 * The text is portable SQL for SQLite and PostgreSQL (TEXT/INTEGER/BIGINT, no
 * AUTOINCREMENT, `"user"` quoted because USER is reserved in PostgreSQL).
 */
import { RexError, ErrorCodes, isRexError } from '../../util/errors.js';
import { openDatabase, type Database } from '../../util/sqlite.js';
import type { EntryPointSet } from '../model/entrypoint.js';
import { writeEntryPointsXml } from '../xml/write.js';
import { readEntryPointsXml } from '../xml/read.js';

/** The REXP table definition (idempotent). */
export const REXP_DDL = `CREATE TABLE IF NOT EXISTS REXP (
  name        TEXT    NOT NULL,
  elf_file    TEXT    NOT NULL,
  host        TEXT    NOT NULL DEFAULT '',
  "user"      TEXT    NOT NULL DEFAULT '',
  program     TEXT    NOT NULL DEFAULT '',
  config      TEXT    NOT NULL DEFAULT '',
  address     BIGINT,
  input_size  INTEGER NOT NULL,
  output_size INTEGER NOT NULL,
  callable    INTEGER NOT NULL,
  definition  TEXT    NOT NULL,
  PRIMARY KEY (name, elf_file, host, "user", program)
);`;

/** Quotes a string literal the standard way (doubling quotes; no backslash escapes, as PostgreSQL's standard_conforming_strings expects). */
export function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/**
 * The SQL script for a set: create the table if needed, then replace this ELF
 * object's rows for this owner in one transaction (re-running repdb -d is safe).
 */
export function writeEntryPointsSql(set: EntryPointSet, opts: { from?: string } = {}): string {
  const lines = [
    `-- Written by repdb from ${(opts.from ?? set.elfFile).replace(/[\r\n]/g, ' ')}: remote entry points (REXP), for SQLite and PostgreSQL.`,
    `-- input_size/output_size: fixed part of each frame in bytes (docs/FRAMES.md); definition: the entry point as XML (docs/ENTRYPOINTS.md).`,
    REXP_DDL,
    'BEGIN;',
    `DELETE FROM REXP WHERE elf_file = ${sqlString(set.elfFile)} AND host = ${sqlString(set.host ?? '')} AND "user" = ${sqlString(set.user ?? '')} AND program = ${sqlString(set.program ?? '')};`,
  ];
  for (const ep of set.entries) {
    const def = writeEntryPointsXml({ ...set, entries: [ep] }, { entries: [ep], from: opts.from ?? set.elfFile });
    const values = [
      sqlString(ep.name),
      sqlString(ep.elfFile),
      sqlString(ep.host ?? ''),
      sqlString(ep.user ?? ''),
      sqlString(ep.program ?? ''),
      sqlString(ep.config ?? ''),
      ep.address !== undefined ? ep.address.toString() : 'NULL',
      String(ep.input.fixedSize),
      String(ep.output.fixedSize),
      ep.refusals.length === 0 ? '1' : '0',
      sqlString(def),
    ];
    lines.push(`INSERT INTO REXP (name, elf_file, host, "user", program, config, address, input_size, output_size, callable, definition) VALUES (${values.join(', ')});`);
  }
  lines.push('COMMIT;', '');
  return lines.join('\n');
}

/** One REXP row as read. */
export interface Row {
  name: string;
  elf_file: string;
  host: string;
  user: string;
  program: string;
  input_size: number;
  output_size: number;
  definition: string;
}

/** The versioned schema of the REXP table (rex_schema_migrations name "REXP"); step 1 is what repdb -d SQL text creates. */
export const REXP_SCHEMA = [{ version: 1, description: 'REXP: the seed\'s remote entry points, one row per function, with its XML definition', sql: REXP_DDL }] as const;

/**
 * The entry-point set stored in REXP rows (all of one query, ordered): each definition is validated and re-checked
 * like an XML file, and the stored sizes must equal the recomputed ones. `where` names the database in messages.
 */
export function setFromRows(rows: readonly Row[], where: string, elfFile?: string): EntryPointSet {
  if (rows.length === 0) {
    throw new RexError(ErrorCodes.ENTRY_SYMBOL_MISSING, `no entry points${elfFile !== undefined ? ` for elf_file '${elfFile}'` : ''} in REXP`, { where, hint: 'run repdb -gd on the library (before stripping it) and load the SQL' });
  }
  let set: EntryPointSet | undefined;
  for (const r of rows) {
    const at = `${where}:REXP[${r.name}]`;
    if (typeof r.definition !== 'string') throw new RexError(ErrorCodes.ENTRY_INVALID, 'the definition is not text', { where: at, hint: 'regenerate the rows with repdb -d' });
    let one: EntryPointSet;
    try {
      one = readEntryPointsXml(r.definition, at);
    } catch (e) {
      if (isRexError(e)) throw e;
      throw new RexError(ErrorCodes.ENTRY_INVALID, `definition cannot be read: ${(e as Error).message}`, { where: at });
    }
    const ep = one.entries.find((x) => x.name === r.name);
    if (!ep || one.entries.length !== 1) throw new RexError(ErrorCodes.ENTRY_INVALID, `the definition must hold exactly the entry point '${r.name}'`, { where: at });
    if (ep.input.fixedSize !== Number(r.input_size) || ep.output.fixedSize !== Number(r.output_size)) {
      throw new RexError(ErrorCodes.ENTRY_INVALID, `input_size/output_size (${r.input_size}/${r.output_size}) disagree with the definition (${ep.input.fixedSize}/${ep.output.fixedSize})`, { where: at, hint: 'regenerate the rows with repdb -d' });
    }
    if (!set) {
      set = { ...one, entries: [ep], types: [...one.types], enums: [...one.enums] };
      continue;
    }
    set.entries.push(ep);
    for (const t of one.types) if (!set.types.some((x) => x.name === t.name)) set.types.push(t);
    for (const t of one.enums) if (!set.enums.some((x) => x.name === t.name)) set.enums.push(t);
    for (const [k, v] of one.typeOrigins) if (!set.typeOrigins.has(k)) set.typeOrigins.set(k, v);
    for (const [k, v] of one.typeSources) if (!set.typeSources.has(k)) set.typeSources.set(k, v);
  }
  return set!;
}

/** The query reading REXP rows, of one ELF object when `filtered`; `?` placeholders. */
export function rexpSelect(filtered: boolean): string {
  return `SELECT name, elf_file, host, "user" AS "user", program, input_size, output_size, definition FROM REXP${filtered ? ' WHERE elf_file = ?' : ''} ORDER BY elf_file, host, "user", program, name`;
}

/** One entry point of a set as the REXP row's values, in the column order of {@link REXP_INSERT}. */
export function rexpValues(set: EntryPointSet, ep: EntryPointSet['entries'][number], from: string): unknown[] {
  const def = writeEntryPointsXml({ ...set, entries: [ep] }, { entries: [ep], from });
  return [ep.name, ep.elfFile, ep.host ?? '', ep.user ?? '', ep.program ?? '', ep.config ?? '', ep.address !== undefined ? ep.address.toString() : null, ep.input.fixedSize, ep.output.fixedSize, ep.refusals.length === 0 ? 1 : 0, def];
}

/** The INSERT of one REXP row; `?` placeholders. */
export const REXP_INSERT = 'INSERT INTO REXP (name, elf_file, host, "user", program, config, address, input_size, output_size, callable, definition) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';

/** The DELETE of one ELF object's rows for one owner, before its rows are written again; `?` placeholders. */
export const REXP_DELETE = 'DELETE FROM REXP WHERE elf_file = ? AND host = ? AND "user" = ? AND program = ?';

/**
 * Reads the entry points of `elfFile` (all rows when undefined) from an SQLite
 * database with a REXP table; each definition is validated and re-checked like an
 * XML file, and the stored sizes must equal the recomputed ones.
 */
export function readEntryPointsDb(dbFile: string, elfFile?: string): EntryPointSet {
  let db: Database;
  try {
    db = openDatabase(dbFile, { readonly: true, fileMustExist: true });
  } catch (e) {
    throw new RexError(ErrorCodes.ENTRY_INVALID, `cannot open database: ${(e as Error).message}`, { where: dbFile, hint: 'create it with: repdb -gd LIB.so | sqlite3 FILE' });
  }
  try {
    let rows: Row[];
    try {
      const sql = rexpSelect(elfFile !== undefined);
      rows = (elfFile !== undefined ? db.prepare(sql).all(elfFile) : db.prepare(sql).all()) as Row[];
    } catch (e) {
      throw new RexError(ErrorCodes.ENTRY_INVALID, `no usable REXP table: ${(e as Error).message}`, { where: dbFile, hint: 'load the output of repdb -gd into it' });
    }
    return setFromRows(rows, dbFile, elfFile);
  } finally {
    db.close();
  }
}
