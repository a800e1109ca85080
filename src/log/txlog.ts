/**
 * The transaction log: every authentication attempt and every transaction a
 * rexd serves, in an embedded SQLite database (rex.rc `rex-log-database`,
 * default <state-directory>/rex-log.sqlite). The schema uses only TEXT, INTEGER
 * and REAL columns so that the same table can live in PostgreSQL later
 * (docs/LOG.md). Writes are batched (at most every 100 ms or 200 rows, in one
 * SQLite transaction) to keep them off the request path; a failure to log is
 * reported once and never takes the daemon down.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { ErrorCodes, RexError } from '../util/errors.js';

/** What kind of event a row records. */
export type EventKind = 'auth' | 'transaction' | 'enroll' | 'session';
/** How it ended. */
export type Outcome = 'ok' | 'denied' | 'error';

/** One row of the log. */
export interface LogEvent {
  /** ms since the epoch; set by the logger when absent. */
  time?: number;
  kind: EventKind;
  /** HOST.USER[.PROGRAM] of the requester, when known. */
  identity?: string;
  identityId?: string;
  /** The REX host the request came from (HELLO host, or this host for local clients). */
  fromHost?: string;
  /** Network address of the peer, or `local`. */
  peerAddress?: string;
  messageType?: string;
  target?: string;
  outcome: Outcome;
  reason?: string;
  bytesIn?: number;
  bytesOut?: number;
  durationMs?: number;
}

/** A row as read back. */
export interface LogRow extends Required<Pick<LogEvent, 'kind' | 'outcome'>> {
  id: number;
  time: string;
  host: string;
  identity: string | null;
  identity_id: string | null;
  from_host: string | null;
  peer_address: string | null;
  message_type: string | null;
  target: string | null;
  reason: string | null;
  bytes_in: number | null;
  bytes_out: number | null;
  duration_ms: number | null;
}

/** The schema; portable SQL (docs/LOG.md). */
export const SCHEMA = `
CREATE TABLE IF NOT EXISTS rex_log (
  id            INTEGER PRIMARY KEY,
  time          TEXT    NOT NULL,
  time_ms       INTEGER NOT NULL,
  host          TEXT    NOT NULL,
  kind          TEXT    NOT NULL,
  identity      TEXT,
  identity_id   TEXT,
  from_host     TEXT,
  peer_address  TEXT,
  message_type  TEXT,
  target        TEXT,
  outcome       TEXT    NOT NULL,
  reason        TEXT,
  bytes_in      INTEGER,
  bytes_out     INTEGER,
  duration_ms   REAL
);
CREATE INDEX IF NOT EXISTS rex_log_time ON rex_log (time_ms);
CREATE INDEX IF NOT EXISTS rex_log_identity ON rex_log (identity, time_ms);
CREATE TABLE IF NOT EXISTS rex_log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

const COLUMNS = ['time', 'time_ms', 'host', 'kind', 'identity', 'identity_id', 'from_host', 'peer_address', 'message_type', 'target', 'outcome', 'reason', 'bytes_in', 'bytes_out', 'duration_ms'];

function openDb(file: string, readonly: boolean): Database.Database {
  try {
    if (!readonly) mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const db = new Database(file, { readonly, fileMustExist: readonly });
    if (!readonly) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.exec(SCHEMA);
      db.prepare('INSERT OR IGNORE INTO rex_log_meta (key, value) VALUES (?, ?)').run('schema-version', '1');
    }
    db.pragma('busy_timeout = 2000');
    return db;
  } catch (e) {
    throw new RexError(ErrorCodes.LOG_DATABASE, `cannot open the transaction log ${file}: ${(e as Error).message}`, {
      where: file,
      hint: readonly ? 'no rexd has logged here yet, or rex.rc rex-log-database points elsewhere' : 'check the directory permissions, or set rex-log-database in rex.rc',
    });
  }
}

/** The writer side, used by rexd. */
export class TransactionLog {
  private db: Database.Database | undefined;
  private insert: Database.Statement | undefined;
  private queue: unknown[][] = [];
  private timer: NodeJS.Timeout | undefined;
  private failed = false;

  /** Opens (creating) the database; on failure calls `onError` and logs nothing. */
  constructor(
    readonly file: string,
    private readonly host: string,
    private readonly onError: (e: Error) => void = () => {},
  ) {
    try {
      this.db = openDb(file, false);
      this.insert = this.db.prepare(`INSERT INTO rex_log (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map(() => '?').join(', ')})`);
    } catch (e) {
      this.fail(e as Error);
    }
  }

  /** Queues one event; it reaches the database within 100 ms. */
  record(ev: LogEvent): void {
    if (!this.db || this.failed) return;
    const t = ev.time ?? Date.now();
    this.queue.push([
      new Date(t).toISOString(),
      t,
      this.host,
      ev.kind,
      ev.identity ?? null,
      ev.identityId ?? null,
      ev.fromHost ?? null,
      ev.peerAddress ?? null,
      ev.messageType ?? null,
      ev.target ?? null,
      ev.outcome,
      ev.reason?.slice(0, 2000) ?? null,
      ev.bytesIn ?? null,
      ev.bytesOut ?? null,
      ev.durationMs === undefined ? null : Math.round(ev.durationMs * 1000) / 1000,
    ]);
    if (this.queue.length >= 200) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), 100);
      this.timer.unref();
    }
  }

  /** Writes queued events now, in one SQLite transaction. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.db || !this.insert || this.queue.length === 0) return;
    const rows = this.queue;
    this.queue = [];
    try {
      const ins = this.insert;
      this.db.transaction(() => {
        for (const r of rows) ins.run(...r);
      })();
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.onError(e);
  }

  /** Flushes and closes. */
  close(): void {
    this.flush();
    try {
      this.db?.close();
    } catch {
      /* closing is best effort */
    }
    this.db = undefined;
  }
}

/** Filters for {@link queryLog}. */
export interface LogQuery {
  /** Identity name (exact, or a HOST.USER prefix of program identities) or key ID. */
  identity?: string;
  /** Matches from_host or the logging host. */
  host?: string;
  outcome?: Outcome;
  kind?: EventKind;
  /** ms since the epoch. */
  since?: number;
  limit?: number;
}

/** Reads the log newest first. */
export function queryLog(file: string, q: LogQuery = {}): LogRow[] {
  const db = openDb(file, true);
  try {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.identity !== undefined) {
      where.push('(identity = ? OR identity LIKE ? OR identity_id = ?)');
      args.push(q.identity, `${q.identity.replace(/[%_\\]/g, '\\$&')}.%`, q.identity);
      where[where.length - 1] = "(identity = ? OR identity LIKE ? ESCAPE '\\' OR identity_id = ?)";
    }
    if (q.host !== undefined) {
      where.push('(from_host = ? OR host = ?)');
      args.push(q.host, q.host);
    }
    if (q.outcome !== undefined) {
      where.push('outcome = ?');
      args.push(q.outcome);
    }
    if (q.kind !== undefined) {
      where.push('kind = ?');
      args.push(q.kind);
    }
    if (q.since !== undefined) {
      where.push('time_ms >= ?');
      args.push(q.since);
    }
    const sql = `SELECT id, time, host, kind, identity, identity_id, from_host, peer_address, message_type, target, outcome, reason, bytes_in, bytes_out, duration_ms FROM rex_log${
      where.length ? ` WHERE ${where.join(' AND ')}` : ''
    } ORDER BY time_ms DESC, id DESC LIMIT ?`;
    args.push(q.limit ?? 100);
    return db.prepare(sql).all(...args) as LogRow[];
  } finally {
    db.close();
  }
}
