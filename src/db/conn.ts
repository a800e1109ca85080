/**
 * One small async interface over the two databases REX keeps configuration and entry points in: an SQLite
 * file (@photostructure/sqlite, synchronous underneath) or a PostgreSQL server (node-postgres, through
 * src/db/postgres.ts). SQL is written once with `?` placeholders and the portable subset both speak.
 * Schemas are versioned: each named schema's steps run once, in order, recorded in rex_schema_migrations.
 */
import { closeSync, lstatSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCodes, RexError } from '../util/errors.js';
import { openDatabase, type Database } from '../util/sqlite.js';
import type { DbTarget } from './target.js';

/** One step of a versioned schema: `version` counts from 1; `sql` may hold several statements. */
export interface SchemaStep {
  version: number;
  description: string;
  sql: string;
}

/** An open database. */
export interface DbConn {
  readonly target: DbTarget;
  all<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  run(sql: string, params?: readonly unknown[]): Promise<void>;
  /** Runs `fn` in one transaction, rolled back when it throws. */
  transaction(fn: () => Promise<void>): Promise<void>;
  /** Applies the steps of schema `name` not yet applied, each in its own transaction. */
  migrate(name: string, steps: readonly SchemaStep[]): Promise<void>;
  /** The version of schema `name` applied (0: none, or no rex_schema_migrations table). */
  version(name: string): Promise<number>;
  close(): Promise<void>;
}

/** How to open a database. */
export interface OpenDbOptions {
  /** Create the file / the tables if needed; without it, an SQLite file must exist and is opened read-only. */
  write?: boolean;
  /**
   * The database is configuration (rex.rc config-database, programs): an SQLite file must belong to this
   * user or root and be writable by nobody else, as whoever can write it decides what rexd trusts.
   */
  trusted?: boolean;
}

/** Refuses an SQLite file that someone other than its owner (this user or root) could have written. */
export function checkPrivateFile(file: string, what: string): void {
  const st = lstatSync(file);
  const uid = process.getuid?.() ?? 0;
  let why: string | undefined;
  if (st.isSymbolicLink()) why = 'it is a symbolic link';
  else if (!st.isFile()) why = 'it is not a regular file';
  else if (st.uid !== uid && st.uid !== 0) why = `it belongs to uid ${st.uid}, neither this user (uid ${uid}) nor root`;
  else if ((st.mode & 0o022) !== 0) why = `group or others can write it (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
  if (why !== undefined) {
    throw new RexError(ErrorCodes.CONFIG_DATABASE, `refusing ${what}: ${why}; whoever can write it decides what REX trusts`, {
      where: file,
      hint: `chmod 600 ${file} (and check who wrote it), or name another database`,
    });
  }
}

/** The same table as src/db/postgres.ts keeps in PostgreSQL (applied_at: ISO text, SQLite having no timestamp type). */
const MIGRATIONS_DDL = `CREATE TABLE IF NOT EXISTS rex_schema_migrations (
  schema_name TEXT    NOT NULL,
  version     INTEGER NOT NULL,
  description TEXT    NOT NULL,
  applied_at  TEXT    NOT NULL,
  PRIMARY KEY (schema_name, version)
)`;

class SqliteConn implements DbConn {
  constructor(
    readonly target: DbTarget & { dbms: 'sqlite' },
    private readonly db: Database,
  ) {}

  async all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return this.db.prepare(sql).all(...(params as never[])) as T[];
  }

  async run(sql: string, params: readonly unknown[] = []): Promise<void> {
    if (params.length === 0) this.db.exec(sql);
    else this.db.prepare(sql).run(...(params as never[]));
  }

  async transaction(fn: () => Promise<void>): Promise<void> {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      await fn();
    } catch (e) {
      this.db.exec('ROLLBACK');
      throw e;
    }
    this.db.exec('COMMIT');
  }

  async migrate(name: string, steps: readonly SchemaStep[]): Promise<void> {
    const known = Math.max(0, ...steps.map((s) => s.version));
    const have = await this.version(name);
    if (have > known) throw new RexError(ErrorCodes.CONFIG_DATABASE, `schema ${name} is at version ${have}, newer than this REX knows (${known})`, { where: this.target.shown, hint: 'upgrade REX on this host' });
    this.db.exec(MIGRATIONS_DDL);
    const done = new Set((await this.all<{ version: number }>('SELECT version FROM rex_schema_migrations WHERE schema_name = ?', [name])).map((r) => Number(r.version)));
    for (const s of [...steps].sort((a, b) => a.version - b.version)) {
      if (done.has(s.version)) continue;
      await this.transaction(async () => {
        this.db.exec(s.sql);
        await this.run('INSERT INTO rex_schema_migrations (schema_name, version, description, applied_at) VALUES (?, ?, ?, ?)', [name, s.version, s.description, new Date().toISOString()]);
      });
    }
  }

  async version(name: string): Promise<number> {
    try {
      const r = await this.all<{ v: number | null }>('SELECT max(version) AS v FROM rex_schema_migrations WHERE schema_name = ?', [name]);
      return Number(r[0]?.v ?? 0);
    } catch {
      return 0; // no migrations table: nothing applied by REX (a table made by hand, or none)
    }
  }

  async close(): Promise<void> {
    this.db.close();
  }
}

/** Opens an SQLite target; see {@link OpenDbOptions}. */
function openSqlite(target: DbTarget & { dbms: 'sqlite' }, opts: OpenDbOptions): DbConn {
  const fail = (e: unknown, hint: string): never => {
    if (e instanceof RexError) throw e;
    throw new RexError(ErrorCodes.CONFIG_DATABASE, `cannot open SQLite database: ${(e as Error).message}`, { where: target.file, hint });
  };
  let exists = true;
  try {
    lstatSync(target.file);
  } catch {
    exists = false;
  }
  if (!exists) {
    if (!opts.write) fail(new Error('it does not exist'), 'create it, e.g. with rex config import rex.rc --to sqlite:FILE or repdb -gd DB LIB.so');
    try {
      mkdirSync(dirname(target.file), { recursive: true, mode: 0o700 });
      closeSync(openSync(target.file, 'wx', 0o600)); // private from its first byte: sqlite would create it 0644
    } catch (e) {
      fail(e, 'check the directory exists and is writable');
    }
  }
  if (opts.trusted) checkPrivateFile(target.file, 'the SQLite database');
  try {
    return new SqliteConn(target, openDatabase(target.file, { readonly: !opts.write, fileMustExist: true }));
  } catch (e) {
    return fail(e, 'check that it is an SQLite database');
  }
}

/** Opens a database by target; PostgreSQL through src/db/postgres.ts. Errors name the database (its password never). */
export async function openDb(target: DbTarget, opts: OpenDbOptions = {}): Promise<DbConn> {
  if (target.dbms === 'sqlite') return openSqlite(target, opts);
  const { openPostgres } = await import('./pg-conn.js');
  return openPostgres(target, opts);
}
