/**
 * Opening an SQLite database with better-sqlite3 (the transaction log, repdb's
 * REXP table), its native addon named by path. better-sqlite3 would find the
 * addon with the `bindings` package, which searches a dozen places relative to
 * the file that calls it: a few ms of rexd's start-up, and wrong from a
 * bundle, where that file is a chunk in dist/bin/ (scripts/bundle.mjs bundles
 * better-sqlite3's JavaScript, docs/ARCHITECTURE.md How rexd loads).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { ErrorCodes, RexError } from './errors.js';

let addon: string | undefined;

/** better-sqlite3's addon, where its install builds it (build/Release; build/Debug for a debug build). */
function sqliteAddon(): string {
  if (addon === undefined) {
    const pkg = join(dirname(createRequire(import.meta.url).resolve('better-sqlite3')), '..');
    const found = ['Release', 'Debug'].map((b) => join(pkg, 'build', b, 'better_sqlite3.node')).find((p) => existsSync(p));
    if (!found) {
      throw new RexError(ErrorCodes.NATIVE_ADDON, `better-sqlite3's native addon is not built in ${join(pkg, 'build')}`, {
        where: pkg,
        hint: 'reinstall it: npm rebuild better-sqlite3',
      });
    }
    addon = found;
  }
  return addon;
}

/** Opens (or creates) the database `file`, as `new Database(file, options)`. */
export function openDatabase(file: string, options: Omit<Database.Options, 'nativeBinding'> = {}): Database.Database {
  return new Database(file, { ...options, nativeBinding: sqliteAddon() });
}

export type { Database };
