/**
 * Opening an SQLite database (the transaction log, repdb's REXP table) with
 * @photostructure/sqlite, its native addon named by path.
 *
 * @photostructure/sqlite is Node's own `node:sqlite` API (DatabaseSync,
 * StatementSync; Node 22.5+) as an addon for Node 20, with prebuilt binaries
 * inside its npm tarball: `npm install` downloads nothing else and compiles
 * nothing (docs/DEPENDENCIES.md). Its JavaScript finds the addon with
 * node-gyp-build relative to its own file, which is wrong from a bundle (that
 * file would be a chunk in dist/bin/, docs/ARCHITECTURE.md How rexd loads),
 * so the addon is loaded here by path and its JavaScript is never imported.
 *
 * Database adds to DatabaseSync the two helpers of better-sqlite3 (the
 * binding used before) that the callers use: pragma() and transaction().
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { DatabaseSyncInstance, SqliteModule, StatementSyncInstance } from '@photostructure/sqlite';
import { ErrorCodes, RexError } from './errors.js';

const load = createRequire(import.meta.url);
let binding: SqliteModule | undefined;

/**
 * The addon, where node-gyp-build would take it from: a from-source build
 * (build/Release, made by its install script where no prebuilt binary loads),
 * else the prebuilt binary for this platform, glibc's before musl's.
 */
function sqliteBinding(): SqliteModule {
  if (binding === undefined) {
    const pkg = dirname(load.resolve('@photostructure/sqlite/package.json'));
    const tag = `${process.platform}-${process.arch}`;
    const candidates = [
      join(pkg, 'build', 'Release', 'phstr_sqlite.node'),
      join(pkg, 'prebuilds', tag, '@photostructure+sqlite.glibc.node'),
      join(pkg, 'prebuilds', tag, '@photostructure+sqlite.musl.node'),
      join(pkg, 'prebuilds', tag, '@photostructure+sqlite.node'),
    ].filter((p) => existsSync(p));
    const errors: string[] = [];
    for (const file of candidates) {
      try {
        binding = load(file) as SqliteModule;
        break;
      } catch (e) {
        errors.push(`${file}: ${(e as Error).message}`);
      }
    }
    if (binding === undefined) {
      throw new RexError(ErrorCodes.NATIVE_ADDON, `@photostructure/sqlite has no native addon that loads for ${tag}${errors.length ? ` (${errors.join('; ')})` : ''}`, {
        where: pkg,
        hint: 'reinstall it, building it from source: npm rebuild @photostructure/sqlite',
      });
    }
  }
  return binding;
}

export type Statement = StatementSyncInstance;

export interface OpenOptions {
  /** Opens read-only (writes fail). */
  readonly?: boolean;
  /** Fails when `file` does not exist, rather than creating it. */
  fileMustExist?: boolean;
}

/** An open database: DatabaseSync's prepare/exec/close, and better-sqlite3's pragma() and transaction(). */
export class Database {
  readonly #db: DatabaseSyncInstance;

  constructor(db: DatabaseSyncInstance) {
    this.#db = db;
  }

  prepare(sql: string): Statement {
    return this.#db.prepare(sql);
  }

  exec(sql: string): void {
    this.#db.exec(sql);
  }

  close(): void {
    this.#db.close();
  }

  /** Runs `PRAGMA source`: every row, or with `simple` the first column of the first row, as better-sqlite3's pragma(). */
  pragma(source: string, options: { simple?: boolean } = {}): unknown {
    const stmt = this.#db.prepare(`PRAGMA ${source}`);
    if (!options.simple) return stmt.all();
    const row = stmt.get() as Record<string, unknown> | undefined;
    return row === undefined ? undefined : Object.values(row)[0];
  }

  /**
   * `fn` wrapped in BEGIN ... COMMIT, rolled back when it throws, as
   * better-sqlite3's transaction() (a savepoint when already in one).
   */
  transaction<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void {
    return (...args: A) => {
      const nested = this.#db.isTransaction;
      const [begin, commit, rollback] = nested
        ? ['SAVEPOINT rex_tx', 'RELEASE rex_tx', 'ROLLBACK TO rex_tx; RELEASE rex_tx']
        : ['BEGIN', 'COMMIT', 'ROLLBACK'];
      this.#db.exec(begin);
      try {
        fn(...args);
      } catch (e) {
        if (nested || this.#db.isTransaction) this.#db.exec(rollback);
        throw e;
      }
      this.#db.exec(commit);
    };
  }
}

/** Opens (or, unless `readonly` or `fileMustExist`, creates) the database `file`. */
export function openDatabase(file: string, options: OpenOptions = {}): Database {
  const { DatabaseSync } = sqliteBinding();
  if ((options.fileMustExist || options.readonly) && !existsSync(file)) {
    const e = new Error(`unable to open database file: ${file} does not exist`) as NodeJS.ErrnoException;
    e.code = 'SQLITE_CANTOPEN';
    throw e;
  }
  return new Database(new DatabaseSync(file, { readOnly: options.readonly === true }));
}
