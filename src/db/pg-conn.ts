/**
 * DbConn over PostgreSQL: waits for src/db/postgres.ts (the pg driver and its connection handling, issue 20's
 * other half) to be merged. Until then a PostgreSQL target is refused with this message.
 */
import { ErrorCodes, RexError } from '../util/errors.js';
import type { DbConn, OpenDbOptions } from './conn.js';
import type { DbTarget } from './target.js';

/** Opens a PostgreSQL target. */
export async function openPostgres(target: DbTarget & { dbms: 'postgresql' }, _opts: OpenDbOptions): Promise<DbConn> {
  throw new RexError(ErrorCodes.CONFIG_DATABASE, 'PostgreSQL is not available in this build', { where: target.shown, hint: 'use an SQLite database' });
}
