/**
 * The REXP table in a database named by the seed's HOST.USER.DBMS.DB_NAME (or sqlite:PATH, a postgresql:// URL):
 * what `repdb -gd TARGET` writes and `repdb -d TARGET` and call controllers (rex.rc programs) read. SQLite or
 * PostgreSQL alike through src/db/conn.ts; the table's schema is versioned (REXP_SCHEMA).
 */
import { openDb } from '../../db/conn.js';
import type { DbTarget } from '../../db/target.js';
import { ErrorCodes, RexError } from '../../util/errors.js';
import type { EntryPointSet } from '../model/entrypoint.js';
import { REXP_DELETE, REXP_INSERT, REXP_SCHEMA, rexpSelect, rexpValues, setFromRows, type Row } from './index.js';

/**
 * Writes a set's entry points into REXP, creating or migrating the table: this ELF object's rows for this owner
 * are replaced in one transaction (running repdb -gd again is safe). Returns how many rows were written.
 */
export async function writeEntryPointsTo(target: DbTarget, set: EntryPointSet, from = set.elfFile): Promise<number> {
  const db = await openDb(target, { write: true });
  try {
    await db.migrate('REXP', REXP_SCHEMA);
    await db.transaction(async () => {
      await db.run(REXP_DELETE, [set.elfFile, set.host ?? '', set.user ?? '', set.program ?? '']);
      for (const ep of set.entries) await db.run(REXP_INSERT, rexpValues(set, ep, from));
    });
    return set.entries.length;
  } finally {
    await db.close();
  }
}

/**
 * Reads the entry points of `elfFile` (every row when undefined) from REXP. With `trusted` (a call controller's
 * definitions) an SQLite file must be private, as any configuration.
 */
export async function readEntryPointsFrom(target: DbTarget, elfFile?: string, opts: { trusted?: boolean } = {}): Promise<EntryPointSet> {
  const db = await openDb(target, opts.trusted ? { trusted: true } : {});
  try {
    let rows: Row[];
    try {
      rows = await db.all<Row>(rexpSelect(elfFile !== undefined), elfFile !== undefined ? [elfFile] : []);
    } catch (e) {
      throw new RexError(ErrorCodes.ENTRY_INVALID, `no usable REXP table: ${(e as Error).message}`, { where: target.shown, hint: 'write it with repdb -gd TARGET LIB.so' });
    }
    return setFromRows(rows, target.shown, elfFile);
  } finally {
    await db.close();
  }
}
