/**
 * DbConn over PostgreSQL: a node-postgres client from src/db/postgres.ts (its URL checks, its errors that name
 * the server and never the password, its versioned migrate()). `?` placeholders become `$1, $2...`.
 */
import type { DbConn, OpenDbOptions, SchemaStep } from './conn.js';
import { connect, databaseError, migrate, parsePostgresUrl, schemaVersion, type Client } from './postgres.js';
import type { DbTarget } from './target.js';

/** The longest a configuration or REXP statement may run (reading a few hundred rows takes milliseconds). */
export const STATEMENT_TIMEOUT_MS = 30_000;

/** `?` placeholders as PostgreSQL's numbered ones (REX's SQL holds no `?` inside literals). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

class PgConn implements DbConn {
  constructor(
    readonly target: DbTarget & { dbms: 'postgresql' },
    private readonly client: Client,
  ) {}

  private async query<T>(sql: string, params: readonly unknown[]): Promise<T[]> {
    try {
      return (await this.client.query(numbered(sql), params as unknown[])).rows as T[];
    } catch (e) {
      if ((e as { code?: string }).code !== undefined && /^[0-9A-Z]{5}$/.test((e as { code: string }).code) && !/^08/.test((e as { code: string }).code)) throw e; // an SQL error: the caller says what it was doing
      throw databaseError(e, parsePostgresUrl(this.target.url), this.target.url, 'PostgreSQL query failed');
    }
  }

  all<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return this.query<T>(sql, params);
  }

  async run(sql: string, params: readonly unknown[] = []): Promise<void> {
    await this.query(sql, params);
  }

  async transaction(fn: () => Promise<void>): Promise<void> {
    await this.client.query('BEGIN');
    try {
      await fn();
    } catch (e) {
      await this.client.query('ROLLBACK').catch(() => {});
      throw e;
    }
    await this.client.query('COMMIT');
  }

  async migrate(name: string, steps: readonly SchemaStep[]): Promise<void> {
    await migrate(this.client, name, [...steps].sort((a, b) => a.version - b.version).map((s) => ({ description: s.description, up: s.sql })));
  }

  async version(name: string): Promise<number> {
    return schemaVersion(this.client, name);
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => {});
  }
}

/** Opens a PostgreSQL target (the database must exist; tables are made by migrate()). */
export async function openPostgres(target: DbTarget & { dbms: 'postgresql' }, _opts: OpenDbOptions): Promise<DbConn> {
  const client = await connect(target.url, { where: target.shown });
  // A server that accepts but never answers must not hold rexd's start or reload forever: a statement that runs
  // this long is cancelled by the server, and the error says so.
  try {
    await client.query(`SET statement_timeout = ${STATEMENT_TIMEOUT_MS}`);
  } catch (e) {
    await client.end().catch(() => {});
    throw databaseError(e, parsePostgresUrl(target.url), target.url);
  }
  return new PgConn(target, client);
}
