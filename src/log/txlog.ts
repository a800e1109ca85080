/**
 * The transaction log: every authentication attempt and every transaction a
 * rexd serves, in an embedded SQLite database (rex.rc `rex-log-database`,
 * default <state-directory>/rex-log.sqlite). The schema uses only TEXT, INTEGER
 * and REAL columns so that the same table can live in PostgreSQL later
 * (docs/LOG.md). Writes are batched (at most every 100 ms or 200 rows, in one
 * SQLite transaction) to keep them off the request path.
 *
 * The database and its -wal/-shm/-journal files are private (0600, whatever the
 * umask; one owned by another user is refused). A write that fails (a full
 * disk, a file removed or made unwritable) starts an *outage*: it is reported
 * loudly, rows wait in a bounded queue in memory, and the database is reopened
 * and the write retried with backoff; when it succeeds the queue is written
 * and a row of kind `log` says how long the outage lasted and how many rows
 * were written late or dropped. Old rows are deleted by age and by size
 * (rex.rc log-retention-days, log-max-size), at start and periodically.
 */
import { chmodSync, closeSync, constants as fsc, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, statSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { dirname } from 'node:path';
import { ErrorCodes, RexError } from '../util/errors.js';
import { openDatabase, type Database, type Statement } from '../util/sqlite.js';

/** What kind of event a row records; `log` rows are written by the log itself (an outage and its losses). */
export type EventKind = 'auth' | 'transaction' | 'enroll' | 'session' | 'log';
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

/** The files SQLite keeps beside a database. */
export const SIDE_FILES = ['-wal', '-shm', '-journal'];

/** Defaults of the rex.rc log keys (docs/LOG.md, docs/CONFIG.md). */
export const LOG_DEFAULTS = { retentionDays: 90, maxBytes: 256 * 1024 * 1024, maxQueue: 10_000 } as const;

/** Where the log reports its own trouble (rexd's logger; pino's Logger fits). */
export interface LogSink {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** How a {@link TransactionLog} behaves; every field has a default. */
export interface TxLogOptions {
  /** Warnings about the log itself. */
  logger?: LogSink;
  /** Called once when an outage starts (the old single-callback interface). */
  onError?: (e: Error) => void;
  /** Rows kept in memory while the database cannot be written (default 10,000); more are counted and dropped. */
  maxQueue?: number;
  /** Rows older than this many days are deleted; 0 keeps them forever (default 90). */
  retentionDays?: number;
  /** The database (with its WAL) is kept under this many bytes by deleting the oldest rows; 0: no bound (default 256 MiB). */
  maxBytes?: number;
  /** First retry after a failed write (default 500 ms); doubled after each failure up to retryMaxMs (default 10 s). */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** While an outage lasts, it is reported again this often (default 60 s). */
  reminderMs?: number;
  /** How often retention is enforced besides at start (default 10 min). */
  retentionCheckMs?: number;
  /** The clock (tests of retention). */
  now?: () => number;
  /** Called after every successful write (the central log's shipper sends the new rows, src/log/central.ts). */
  onWritten?: () => void;
  /**
   * The highest id already sent to the central log, while one is configured: retention keeps the rows after
   * it (by age never; by size only when the bound forces it, and then counts them as lost in a `log` row).
   */
  shippedId?: () => number | undefined;
}

const silent: LogSink = { error() {}, warn() {}, info() {} };

function logError(file: string, message: string, hint: string): RexError {
  return new RexError(ErrorCodes.LOG_DATABASE, message, { where: file, hint });
}

/**
 * Makes `file` a private file before SQLite opens it: created 0600 whatever
 * the umask; an existing one (and its -wal/-shm/-journal) must be a regular
 * file of this user, and loses any group or other bits (reported by `fixed`).
 * Opened with O_NOFOLLOW and checked by descriptor, so a symlink is refused.
 */
export function securePrivateFiles(file: string, fixed: (file: string, mode: number) => void = () => {}, create = true): void {
  const uid = process.getuid?.();
  if (!create) {
    // The database is open: its files must not be opened and closed here, because closing any descriptor of a file
    // drops every POSIX lock this process holds on it (fcntl(2)), SQLite's included. Without the shared lock on -shm,
    // another process opening the log (rex log, a reader) took itself for the first, truncated the -shm that this
    // rexd has mapped, and rexd died of SIGBUS. So the check is by path (lstat, chmod), in rexd's private directory.
    for (const f of [file, ...SIDE_FILES.map((x) => file + x)]) {
      let st;
      try {
        st = lstatSync(f);
      } catch {
        continue;
      }
      if (st.isSymbolicLink()) throw logError(f, `transaction log file ${f} is a symbolic link; refusing to follow it`, 'set rex-log-database in rex.rc to the real path, or remove the link');
      if (!st.isFile()) throw logError(f, `transaction log file ${f} is not a regular file`, 'remove it, or set rex-log-database in rex.rc to another path');
      if (uid !== undefined && st.uid !== uid) {
        throw logError(f, `transaction log file ${f} belongs to uid ${st.uid}, not to rexd's user (uid ${uid}); refusing to use it`, `run: chown ${uid} ${f}   (or set rex-log-database in rex.rc to a file of your own)`);
      }
      if ((st.mode & 0o077) !== 0) {
        chmodSync(f, st.mode & 0o700);
        fixed(f, st.mode & 0o777);
      }
    }
    return;
  }
  for (const f of [file, ...SIDE_FILES.map((x) => file + x)]) {
    let fd: number;
    let created = false;
    try {
      try {
        fd = openSync(f, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || f !== file || !create) throw e;
        fd = openSync(f, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
        created = true;
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue;
      if (code === 'ELOOP') throw logError(f, `transaction log file ${f} is a symbolic link; refusing to follow it`, 'set rex-log-database in rex.rc to the real path, or remove the link');
      throw e;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw logError(f, `transaction log file ${f} is not a regular file`, 'remove it, or set rex-log-database in rex.rc to another path');
      if (uid !== undefined && st.uid !== uid) {
        throw logError(f, `transaction log file ${f} belongs to uid ${st.uid}, not to rexd's user (uid ${uid}); refusing to use it`, `run: chown ${uid} ${f}   (or set rex-log-database in rex.rc to a file of your own)`);
      }
      // fchmod: the mode asked of open(2) was cut by the umask; an existing file loses group and other bits.
      if (created ? (st.mode & 0o777) !== 0o600 : (st.mode & 0o077) !== 0) {
        fchmodSync(fd, created ? 0o600 : st.mode & 0o700);
        if (!created) fixed(f, st.mode & 0o777);
      }
    } finally {
      closeSync(fd);
    }
  }
}

function openDb(file: string, readonly: boolean, fixed?: (file: string, mode: number) => void): Database {
  let db: Database | undefined;
  try {
    if (!readonly) {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      securePrivateFiles(file, fixed);
    }
    db = openDatabase(file, { readonly, fileMustExist: readonly });
    if (!readonly) {
      // Only takes effect on a new database; an older one is converted after retention (TransactionLog.open).
      db.pragma('auto_vacuum = INCREMENTAL');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.exec(SCHEMA);
      db.prepare('INSERT OR IGNORE INTO rex_log_meta (key, value) VALUES (?, ?)').run('schema-version', '1');
      // SQLite gives the side files the database's mode; the check also covers ones left by an older rexd.
      securePrivateFiles(file, fixed, false);
    }
    db.pragma('busy_timeout = 2000');
    return db;
  } catch (e) {
    try {
      db?.close();
    } catch {
      /* it is the open that failed */
    }
    if (e instanceof RexError && e.code === ErrorCodes.LOG_DATABASE) throw e;
    throw new RexError(ErrorCodes.LOG_DATABASE, `cannot open the transaction log ${file}: ${(e as Error).message}`, {
      where: file,
      hint: readonly ? 'no rexd has logged here yet, or rex.rc rex-log-database points elsewhere' : 'check the directory permissions and free space, or set rex-log-database in rex.rc',
    });
  }
}

/** An outage: since when the log could not be written, and what it cost. */
interface Outage {
  since: number;
  /** The error that started it, and the latest. */
  cause: string;
  error: string;
  /** Rows that waited in memory (written when the outage ends). */
  delayed: number;
  dropped: number;
  droppedBy: Map<string, number>;
  firstDrop?: number;
  lastDrop?: number;
  reminded: number;
}

type Row = unknown[];

/** Rows per INSERT statement when a batch is written (15 columns: 480 parameters, far below SQLite's limit). */
const INSERT_ROWS = 32;

/** The writer side, used by rexd. */
export class TransactionLog {
  private db: Database | undefined;
  private insert: Statement | undefined;
  private insertMany: Statement | undefined;
  private isoSecond = -1;
  private isoPrefix = '';
  private queue: Row[] = [];
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retentionTimer: NodeJS.Timeout | undefined;
  private retryDelay = 0;
  private outage: Outage | undefined;
  private closed = false;
  private closing = false;
  private converted = false;
  private readonly opts: Required<Omit<TxLogOptions, 'onError' | 'onWritten' | 'shippedId'>> & Pick<TxLogOptions, 'onError' | 'onWritten' | 'shippedId'>;
  private spool: string | undefined;

  /** Opens (creating) the database; a failure starts an outage (reported, retried) and never throws. */
  constructor(
    readonly file: string,
    private readonly host: string,
    options: TxLogOptions | ((e: Error) => void) = {},
  ) {
    const o = typeof options === 'function' ? { onError: options } : options;
    this.opts = {
      logger: o.logger ?? silent,
      maxQueue: o.maxQueue ?? LOG_DEFAULTS.maxQueue,
      retentionDays: o.retentionDays ?? LOG_DEFAULTS.retentionDays,
      maxBytes: o.maxBytes ?? LOG_DEFAULTS.maxBytes,
      retryMinMs: o.retryMinMs ?? 500,
      retryMaxMs: o.retryMaxMs ?? 10_000,
      reminderMs: o.reminderMs ?? 60_000,
      retentionCheckMs: o.retentionCheckMs ?? 600_000,
      now: o.now ?? Date.now,
      ...(o.onError ? { onError: o.onError } : {}),
      ...(o.onWritten ? { onWritten: o.onWritten } : {}),
      ...(o.shippedId ? { shippedId: o.shippedId } : {}),
    };
    try {
      this.open();
      this.enforceRetention();
    } catch (e) {
      this.startOutage(e as Error);
    }
    if (this.opts.retentionDays > 0 || this.opts.maxBytes > 0) {
      this.retentionTimer = setInterval(() => this.enforceRetention(), this.opts.retentionCheckMs);
      this.retentionTimer.unref();
    }
  }

  /** True while the last write (or open) succeeded: rex.rc log-fail-closed serves remote work only then. */
  get writable(): boolean {
    return this.outage === undefined && this.db !== undefined;
  }

  /** Rows waiting in memory. */
  get pending(): number {
    return this.queue.length;
  }

  /**
   * Writes what is queued now and says whether the log can be written: a disk
   * that filled since the last batch is noticed before the caller goes on.
   */
  writableNow(): boolean {
    if (this.outage === undefined && this.queue.length > 0) this.flush();
    return this.writable;
  }

  /** Queues one event; it reaches the database within 100 ms (or when an outage ends). */
  record(ev: LogEvent): void {
    if (this.closed) return;
    const t = ev.time ?? this.opts.now();
    const row: Row = [
      this.isoTime(t),
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
    ];
    const o = this.outage;
    if (o) {
      if (this.queue.length >= this.opts.maxQueue) {
        o.dropped += 1;
        const k = `${ev.kind} ${ev.outcome}`;
        o.droppedBy.set(k, (o.droppedBy.get(k) ?? 0) + 1);
        o.firstDrop ??= t;
        o.lastDrop = t;
        return;
      }
      o.delayed += 1;
      this.queue.push(row);
      return; // the retry timer writes it
    }
    this.queue.push(row);
    if (this.queue.length >= 200) this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), 100);
      this.timer.unref();
    }
  }

  /**
   * `new Date(t).toISOString()`, from the second's prefix made once per second
   * (the Date and its formatting were a measurable part of a request's cost).
   */
  private isoTime(t: number): string {
    if (!Number.isSafeInteger(t) || t < 0) return new Date(t).toISOString();
    const ms = t % 1000;
    const sec = t - ms;
    if (sec !== this.isoSecond) {
      this.isoSecond = sec;
      this.isoPrefix = new Date(sec).toISOString().slice(0, -4);
    }
    return `${this.isoPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z`;
  }

  /** Writes queued events now, in one SQLite transaction (during an outage the retry timer does it). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.outage || this.queue.length === 0) return;
    if (!this.write()) return;
    this.checkSize();
  }

  /** Opens the database (again) and prepares the insert. */
  private open(): void {
    this.db = openDb(this.file, false, (f, mode) =>
      this.opts.logger.warn({ file: f, mode: mode.toString(8).padStart(4, '0') }, 'transaction log file was readable by group or others; its mode is now 0600'),
    );
    const values = `(${COLUMNS.map(() => '?').join(', ')})`;
    this.insert = this.db.prepare(`INSERT INTO rex_log (${COLUMNS.join(', ')}) VALUES ${values}`);
    this.insertMany = this.db.prepare(`INSERT INTO rex_log (${COLUMNS.join(', ')}) VALUES ${Array.from({ length: INSERT_ROWS }, () => values).join(', ')}`);
    // Keep the WAL small next to the size bound: checkpoint (and truncate it) every 1/8 of it, at most 1000 pages.
    const pageSize = this.db.pragma('page_size', { simple: true }) as number;
    const walPages = this.opts.maxBytes > 0 ? Math.max(16, Math.min(1000, Math.floor(this.opts.maxBytes / pageSize / 8))) : 1000;
    this.db.pragma(`wal_autocheckpoint = ${walPages}`);
    this.db.pragma(`journal_size_limit = ${walPages * pageSize}`);
  }

  /** Writes the queue; false (and an outage) when that fails. */
  private write(): boolean {
    try {
      if (!this.db) this.open();
      const rows = this.queue;
      const ins = this.insert!;
      const many = this.insertMany!;
      this.db!.transaction(() => {
        // INSERT_ROWS rows per statement (in order; one call into SQLite per row cost more than the row), the rest one by one.
        let i = 0;
        for (; i + INSERT_ROWS <= rows.length; i += INSERT_ROWS) many.run(...rows.slice(i, i + INSERT_ROWS).flat());
        for (; i < rows.length; i++) ins.run(...rows[i]!);
      })();
      this.queue = this.queue.slice(rows.length);
      this.opts.onWritten?.();
      return true;
    } catch (e) {
      this.startOutage(e as Error);
      return false;
    }
  }

  private closeDb(): void {
    try {
      this.db?.close();
    } catch {
      /* closing a broken database is best effort */
    }
    this.db = undefined;
    this.insert = undefined;
    this.insertMany = undefined;
  }

  /** A write or open failed: report (once per outage), close the database, retry with backoff. */
  private startOutage(e: Error): void {
    this.closeDb();
    const now = this.opts.now();
    if (!this.outage) {
      this.outage = { since: now, cause: e.message, error: e.message, delayed: this.queue.length, dropped: 0, droppedBy: new Map(), reminded: now };
      this.retryDelay = this.opts.retryMinMs;
      this.opts.logger.error(
        { err: e.message, file: this.file, queued: this.queue.length, maxQueue: this.opts.maxQueue },
        `transaction log cannot be written; keeping up to ${this.opts.maxQueue} rows in memory and retrying (docs/LOG.md)`,
      );
      this.opts.onError?.(e);
    } else {
      this.outage.error = e.message;
      this.retryDelay = Math.min(this.retryDelay * 2, this.opts.retryMaxMs);
      if (now - this.outage.reminded >= this.opts.reminderMs) {
        this.outage.reminded = now;
        this.opts.logger.error(
          { err: e.message, file: this.file, since: new Date(this.outage.since).toISOString(), queued: this.queue.length, dropped: this.outage.dropped },
          'transaction log still cannot be written',
        );
      }
    }
    if (this.closing) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.retry(), this.retryDelay);
    this.retryTimer.unref();
  }

  private retry(): void {
    this.retryTimer = undefined;
    const o = this.outage;
    if (!o || !this.write()) return;
    this.outage = undefined;
    const now = this.opts.now();
    const lost = [...o.droppedBy].map(([k, n]) => `${k} ${n}`).join(', ');
    const reason =
      `the transaction log could not be written from ${new Date(o.since).toISOString()} to ${new Date(now).toISOString()} (${o.cause}); ` +
      `${o.delayed} rows were written late` +
      (o.dropped > 0 ? `, ${o.dropped} were dropped because the queue held ${this.opts.maxQueue} rows (${lost}) between ${new Date(o.firstDrop!).toISOString()} and ${new Date(o.lastDrop!).toISOString()}` : ', none was lost');
    this.record({ time: now, kind: 'log', outcome: o.dropped > 0 ? 'error' : 'ok', target: this.file, reason, durationMs: now - o.since });
    const fields = { file: this.file, since: new Date(o.since).toISOString(), delayed: o.delayed, dropped: o.dropped };
    if (o.dropped > 0) this.opts.logger.error(fields, `transaction log writable again; ${o.dropped} rows were lost`);
    else this.opts.logger.warn(fields, 'transaction log writable again; no row was lost');
    this.flush();
    this.enforceRetention();
  }

  /** After a write: a database (and WAL) over the size bound is trimmed. */
  private checkSize(): void {
    if (this.opts.maxBytes <= 0 || !this.db) return;
    if (this.sizeOnDisk() > this.opts.maxBytes) this.enforceRetention();
  }

  /** The database file and its WAL, in bytes. */
  sizeOnDisk(): number {
    let n = 0;
    for (const f of [this.file, `${this.file}-wal`]) {
      try {
        n += statSync(f).size;
      } catch {
        /* no WAL right now */
      }
    }
    return n;
  }

  /**
   * Deletes rows older than retentionDays, then the oldest rows while the
   * database is over maxBytes (down to 3/4 of it, so that this does not run on
   * every batch), in batches; frees the pages (incremental vacuum) and
   * truncates the WAL. Errors start an outage like a failed write.
   */
  enforceRetention(): void {
    const db = this.db;
    if (!db || this.outage) return;
    try {
      const { retentionDays, maxBytes } = this.opts;
      let deleted = 0;
      // With a central log, the newest row is never deleted: SQLite gives a new row max(id) + 1, and ids must only
      // grow, or rows logged after an emptied log would reuse ids the shipper has already passed.
      const shipped = this.opts.shippedId?.();
      const keep = shipped !== undefined ? 'id < (SELECT max(id) FROM rex_log) AND id <= ?' : '1 = 1';
      const keepArgs = shipped !== undefined ? [shipped] : [];
      if (retentionDays > 0) {
        const cutoff = this.opts.now() - retentionDays * 86_400_000;
        const del = db.prepare(`DELETE FROM rex_log WHERE id IN (SELECT id FROM rex_log WHERE time_ms < ? AND ${keep} ORDER BY time_ms LIMIT 5000)`);
        for (let n = 5000; n === 5000; ) {
          n = del.run(cutoff, ...keepArgs).changes;
          deleted += n;
        }
      }
      const pageSize = db.pragma('page_size', { simple: true }) as number;
      const used = (): number => ((db.pragma('page_count', { simple: true }) as number) - (db.pragma('freelist_count', { simple: true }) as number)) * pageSize;
      const over = maxBytes > 0 && (used() > maxBytes || this.sizeOnDisk() > maxBytes);
      if (over) {
        const target = Math.floor((maxBytes * 3) / 4);
        // Rows already sent to the central log go first; rows not yet sent only when the bound leaves no choice.
        const passes: [string, unknown[]][] = shipped !== undefined ? [[keep, keepArgs], ['id < (SELECT max(id) FROM rex_log)', []]] : [[keep, []]];
        const count = db.prepare('SELECT COUNT(*) AS n FROM rex_log');
        let unsent = 0;
        for (const [pass, [cond, args]] of passes.entries()) {
          const del = db.prepare(`DELETE FROM rex_log WHERE id IN (SELECT id FROM rex_log WHERE ${cond} ORDER BY id LIMIT ?)`);
          for (let round = 0; round < 100; round++) {
            const u = used();
            if (u <= target) break;
            const rows = (count.get() as { n: number }).n;
            if (rows <= (shipped !== undefined ? 1 : 0)) break;
            // Rows to delete, from the average row size; at least a few hundred so the loop ends quickly.
            const n = Math.min(rows, Math.max(500, Math.ceil(((u - target) / u) * rows)));
            const k = del.run(...args, n).changes;
            deleted += k;
            if (pass === 1) unsent += k;
            if (k === 0) break;
          }
        }
        if (unsent > 0) {
          this.opts.logger.error({ file: this.file, lost: unsent, maxBytes }, `transaction log: ${unsent} rows not yet sent to the log server were deleted to keep log-max-size`);
          this.record({ kind: 'log', outcome: 'error', target: this.file, reason: `${unsent} rows not yet sent to the log server were deleted to keep the local log under log-max-size (${maxBytes} bytes); they are lost` });
        }
      }
      const incremental = (db.pragma('auto_vacuum', { simple: true }) as number) === 2;
      if (deleted > 0 || over) {
        if (incremental) db.pragma('incremental_vacuum');
        db.pragma('wal_checkpoint(TRUNCATE)');
      }
      if (!incremental && !this.converted) this.convert(db);
      if (deleted > 0) this.opts.logger.info({ file: this.file, deleted, retentionDays, maxBytes }, 'transaction log: old rows deleted');
    } catch (e) {
      this.startOutage(e as Error);
    }
  }

  /**
   * A database made by an older rexd (auto_vacuum off) is switched to
   * incremental vacuum once, by VACUUM; a failure (no room for the copy) is
   * reported and tried again at the next start, the log goes on as it is.
   */
  private convert(db: Database): void {
    this.converted = true; // tried once per start: VACUUM copies the whole database
    try {
      db.pragma('auto_vacuum = INCREMENTAL');
      db.exec('VACUUM');
      db.pragma('wal_checkpoint(TRUNCATE)');
      this.opts.logger.info({ file: this.file }, 'transaction log converted to incremental vacuum, so deleted rows give their space back');
    } catch (e) {
      this.opts.logger.warn({ file: this.file, err: (e as Error).message }, 'cannot convert the transaction log to incremental vacuum; deleted rows free space inside the file only');
    }
  }

  /**
   * This database's spool ID: a random name made when the database is created, so that the central log tells
   * apart the rows of a log file that was removed and started again (its ids start again at 1).
   */
  spoolId(): string | undefined {
    if (!this.db) return undefined;
    if (this.spool === undefined) {
      this.db.prepare('INSERT OR IGNORE INTO rex_log_meta (key, value) VALUES (?, ?)').run('spool-id', randomUUID());
      this.spool = (this.db.prepare('SELECT value FROM rex_log_meta WHERE key = ?').get('spool-id') as { value: string }).value;
    }
    return this.spool;
  }

  /** The highest id sent to the central log `server` (0: none), kept in rex_log_meta; undefined while the database is not open. */
  shippedTo(server: string): number | undefined {
    if (!this.db || this.outage) return undefined;
    const r = this.db.prepare('SELECT value FROM rex_log_meta WHERE key = ?').get(`shipped-id ${server}`) as { value: string } | undefined;
    return r ? Number(r.value) : 0;
  }

  /** Records that every row up to `id` has been committed by the central log `server`. */
  markShipped(server: string, id: number): void {
    if (!this.db) throw new RexError(ErrorCodes.LOG_DATABASE, `transaction log ${this.file} is not open`, { where: this.file });
    this.db.prepare('INSERT INTO rex_log_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(`shipped-id ${server}`, String(id));
  }

  /** Rows after `after`, oldest first, at most `limit` (what the shipper sends next); undefined while the database is not open. */
  rowsAfter(after: number, limit: number): (LogRow & { time_ms: number })[] | undefined {
    if (!this.db || this.outage) return undefined;
    return this.db.prepare(`SELECT id, ${COLUMNS.join(', ')} FROM rex_log WHERE id > ? ORDER BY id LIMIT ?`).all(after, limit) as (LogRow & { time_ms: number })[];
  }

  /** Flushes and closes; rows that still cannot be written are reported as lost. */
  close(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    this.timer = this.retryTimer = this.retentionTimer = undefined;
    this.closing = true;
    if (this.outage) this.retry();
    else this.flush();
    this.closed = true;
    if (this.queue.length > 0 || this.outage) {
      this.opts.logger.error(
        { file: this.file, lost: this.queue.length + (this.outage?.dropped ?? 0), since: this.outage ? new Date(this.outage.since).toISOString() : undefined },
        'transaction log closed while it could not be written; its queued rows are lost',
      );
    }
    this.queue = [];
    this.closeDb();
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
