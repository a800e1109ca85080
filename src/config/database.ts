/**
 * Configuration from a database (docs/CONFIG.md "Configuration from a database"): the rex.rc directive
 * `config-database : TARGET` (in the XML form `<config-database target="TARGET"/>`, which src/config/xml.ts turns
 * into the same definition) reads the table rex_config of an SQLite file or a PostgreSQL database where the
 * directive stands, as `#include` reads a file. Each row is one `key : value` with the same keys, types and
 * validation as rex.rc; messages and `rex config show` name `TARGET table rex_config row N` where rex.rc says
 * file:line. The table is read at start and at each reload, never in between.
 */
import { openDb, type DbConn, type SchemaStep } from '../db/conn.js';
import { parseDbTarget, type DbTarget } from '../db/target.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import type { Definition } from './normalize.js';
import { clip, type ConfigDiagnostic } from './types.js';

/** The rc directive naming the configuration database. */
export const CONFIG_DATABASE_KEY = 'config-database';

/** The table's name, in messages and SQL. */
export const CONFIG_TABLE = 'rex_config';

/** A configuration table with more rows than this is refused (a rex.rc has a few dozen lines). */
export const MAX_CONFIG_ROWS = 4096;

/** A value longer than this is refused (rex.rc's whole file is limited to 1 MiB). */
export const MAX_CONFIG_VALUE = 65536;

/** The versioned schema of rex_config (rex_schema_migrations name "rex_config"). */
export const CONFIG_SCHEMA: readonly SchemaStep[] = [
  {
    version: 1,
    description: 'rex_config: one row per rex.rc "key : value", applied in ordinal order',
    sql: `CREATE TABLE IF NOT EXISTS rex_config (
  ordinal INTEGER NOT NULL PRIMARY KEY,
  key     TEXT    NOT NULL,
  value   TEXT    NOT NULL
)`,
  },
];

/** The `file` of a row's definitions and diagnostics: what `rex config show` prints for it. */
export function rowSource(target: DbTarget, ordinal: number): string {
  return `${target.shown} table ${CONFIG_TABLE} row ${ordinal}`;
}

/** One row as stored. */
export interface ConfigRow {
  ordinal: number;
  key: string;
  value: string;
}

/** Refuses a database written by a newer REX, whose rows may not mean what this one thinks. */
async function checkSchemaVersion(db: DbConn): Promise<void> {
  const v = await db.version('rex_config');
  const known = CONFIG_SCHEMA.length;
  if (v > known) {
    throw new RexError(ErrorCodes.CONFIG_DATABASE, `${CONFIG_TABLE} is at schema version ${v}, newer than this REX reads (${known})`, { where: db.target.shown, hint: 'upgrade REX on this host' });
  }
}

/**
 * Reads the definitions of the configuration table; row problems (a NULL, a non-text key, a value too long)
 * are diagnostics at their row, while a database that cannot be read at all throws CONFIG_DATABASE.
 */
export async function readConfigDatabase(target: DbTarget, diags: ConfigDiagnostic[]): Promise<Definition[]> {
  const db = await openDb(target, { trusted: true });
  try {
    await checkSchemaVersion(db);
    let rows: Record<string, unknown>[];
    try {
      rows = await db.all(`SELECT ordinal, key, value FROM ${CONFIG_TABLE} ORDER BY ordinal LIMIT ${MAX_CONFIG_ROWS + 1}`);
    } catch (e) {
      throw new RexError(ErrorCodes.CONFIG_DATABASE, `no usable ${CONFIG_TABLE} table: ${(e as Error).message}`, {
        where: target.shown,
        hint: `create and fill it with: rex config import rex.rc --to ${target.dbms === 'sqlite' ? `sqlite:${target.file}` : 'DATABASE'}`,
      });
    }
    if (rows.length > MAX_CONFIG_ROWS) {
      throw new RexError(ErrorCodes.CONFIG_DATABASE, `${CONFIG_TABLE} has more than ${MAX_CONFIG_ROWS} rows; refusing to read it`, { where: target.shown, hint: 'one row per key is enough' });
    }
    const defs: Definition[] = [];
    for (const r of rows) {
      const ordinal = Number(r.ordinal);
      const file = rowSource(target, ordinal);
      const bad = (message: string, key?: string) => {
        const d: ConfigDiagnostic = { code: ErrorCodes.CONFIG_VALUE, file, message };
        if (key !== undefined) d.key = clip(key);
        diags.push(d);
      };
      if (typeof r.key !== 'string' || r.key.trim() === '') {
        bad(`the key is ${r.key === null ? 'NULL' : typeof r.key === 'string' ? 'empty' : `not text (${typeof r.key})`}; each row needs a rex.rc key`);
        continue;
      }
      const key = r.key.trim();
      if (key === CONFIG_DATABASE_KEY) {
        bad('a configuration database cannot name another one; only a configuration file (rc or XML) names it', key);
        continue;
      }
      const value = typeof r.value === 'number' || typeof r.value === 'bigint' ? String(r.value) : r.value;
      if (typeof value !== 'string') {
        bad(`the value is ${value === null ? 'NULL' : `not text (${value instanceof Uint8Array ? 'a blob' : typeof value})`}; write it as rex.rc text`, key);
        continue;
      }
      if (value.length > MAX_CONFIG_VALUE) {
        bad(`the value is ${value.length} characters, more than a value can be (${MAX_CONFIG_VALUE})`, key);
        continue;
      }
      defs.push({ key, value: { text: value.trim() }, file });
    }
    return defs;
  } finally {
    await db.close();
  }
}

/** Replaces the whole configuration table with `rows` (key, rc text) in one transaction, creating it if needed. */
export async function writeConfigDatabase(target: DbTarget, rows: readonly { key: string; value: string }[]): Promise<void> {
  const db = await openDb(target, { write: true });
  try {
    await db.migrate('rex_config', CONFIG_SCHEMA);
    await db.transaction(async () => {
      await db.run(`DELETE FROM ${CONFIG_TABLE}`);
      let n = 0;
      for (const r of rows) await db.run(`INSERT INTO ${CONFIG_TABLE} (ordinal, key, value) VALUES (?, ?, ?)`, [++n, r.key, r.value]);
    });
  } finally {
    await db.close();
  }
}

/** Parses a config-database value; a string on error. */
export function configDatabaseTarget(text: string, env: NodeJS.ProcessEnv): DbTarget | string {
  return parseDbTarget(text, { env });
}
