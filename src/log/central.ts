/**
 * The central transaction log of a cluster: one PostgreSQL database (rex.rc
 * `rex-log-server`) that every rexd sends its rows to, so that `rex log` sees
 * the whole cluster's transactions in one place (docs/LOG.md, "A log server
 * for a cluster").
 *
 * The local SQLite log stays the spool: every row is written there first,
 * exactly as without a server. A shipper sends the rows after the last one sent
 * (`shipped-id SERVER` in rex_log_meta), in id order, in batches of one INSERT
 * (one transaction), and moves the mark only after the server has committed.
 * The server's table has a unique key (host, spool, local_id) and the INSERT is
 * `ON CONFLICT DO NOTHING`: a crash or a lost connection between the server's
 * commit and the local mark sends the batch again, which adds nothing. So a
 * server that is away (killed, restarting, unreachable at rexd's start) costs
 * only time: the rows wait on disk and are sent, in order, when it is back.
 *
 * The `host` column is the host of rexd's own certificate (its key's
 * HOST.USER), never a value from a peer; on the server, row-level security lets
 * each host's role insert only rows of its own host, and no host role may
 * update or delete (LOG_STEPS).
 */
import { statSync, type Stats } from 'node:fs';
import type { LoadedConfig } from '../config/types.js';
import type { Client } from '../db/postgres.js';
import { abandon, connect, databaseError, describeServer, migrate, parsePostgresUrl, redactUrl, schemaVersion, type MigrationStep } from '../db/postgres.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import type { LogQuery, LogRow, LogSink, TransactionLog } from './txlog.js';

/** The schema's name in rex_schema_migrations. */
export const LOG_SCHEMA = 'rex-log';

/** The central log's schema, one step per version (src/db/postgres.ts migrate()); never edit a step, add one. */
export const LOG_STEPS: readonly MigrationStep[] = [
  {
    description: 'rex_log (one row per event, unique per host, spool and local id), rex_log_hosts (which role writes for which host), row-level security',
    up: `
CREATE TABLE rex_log (
  id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  host          TEXT    NOT NULL,
  spool         TEXT    NOT NULL,
  local_id      BIGINT  NOT NULL,
  time          TEXT    NOT NULL,
  time_ms       BIGINT  NOT NULL,
  kind          TEXT    NOT NULL,
  identity      TEXT,
  identity_id   TEXT,
  from_host     TEXT,
  peer_address  TEXT,
  message_type  TEXT,
  target        TEXT,
  outcome       TEXT    NOT NULL,
  reason        TEXT,
  bytes_in      BIGINT,
  bytes_out     BIGINT,
  duration_ms   DOUBLE PRECISION,
  received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (host, spool, local_id)
);
CREATE INDEX rex_log_time ON rex_log (time_ms);
CREATE INDEX rex_log_identity ON rex_log (identity, time_ms);
CREATE INDEX rex_log_from_host ON rex_log (from_host, time_ms);
CREATE TABLE rex_log_hosts (
  role  NAME PRIMARY KEY,
  host  TEXT NOT NULL UNIQUE
);
GRANT SELECT ON rex_log_hosts TO PUBLIC;
GRANT SELECT ON rex_schema_migrations TO PUBLIC;
ALTER TABLE rex_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY rex_log_insert_own_host ON rex_log FOR INSERT
  WITH CHECK (host = (SELECT h.host FROM rex_log_hosts h WHERE h.role = current_user));
CREATE POLICY rex_log_read ON rex_log FOR SELECT USING (true);
`,
  },
];

/** One host of the cluster and the PostgreSQL role its rexd logs in as. */
export interface LogServerHost {
  host: string;
  role: string;
}

const ident = (s: string): string => `"${s.replace(/"/g, '""')}"`;

/**
 * Sets up (or extends) a central log in the database `client` is connected to,
 * as its owner: migrates the schema, maps each host to its role (the role must
 * exist; it gets INSERT only), and lets `readers` (roles, e.g. the hosts' own
 * for `rex log`, or an auditors' group) read the log. Idempotent.
 */
export async function setupLogServer(client: Client, hosts: readonly LogServerHost[], readers: readonly string[] = []): Promise<void> {
  await migrate(client, LOG_SCHEMA, LOG_STEPS);
  for (const { host, role } of hosts) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/.test(host)) throw new RexError(ErrorCodes.USAGE, `${host}: not a REX host name`);
    await client.query('INSERT INTO rex_log_hosts (role, host) VALUES ($1, $2) ON CONFLICT (role) DO UPDATE SET host = excluded.host', [role, host]);
    await client.query(`GRANT INSERT ON rex_log TO ${ident(role)}`);
  }
  for (const r of readers) await client.query(`GRANT SELECT ON rex_log TO ${ident(r)}`);
}

const COLUMNS = ['host', 'spool', 'local_id', 'time', 'time_ms', 'kind', 'identity', 'identity_id', 'from_host', 'peer_address', 'message_type', 'target', 'outcome', 'reason', 'bytes_in', 'bytes_out', 'duration_ms'] as const;

/** What the shipper needs of the local log (TransactionLog has it). */
export type Spool = Pick<TransactionLog, 'spoolId' | 'shippedTo' | 'markShipped' | 'rowsAfter' | 'record'>;

/** How a {@link LogShipper} behaves. */
export interface ShipperOptions {
  logger?: LogSink;
  /** Rows per INSERT (default 500: 8,500 parameters, far below PostgreSQL's 65,535). */
  batch?: number;
  /** First retry after a failure (default 500 ms), doubled up to retryMaxMs (default 10 s). */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** While the server is away, it is reported again this often (default 60 s). */
  reminderMs?: number;
  /** Looks for unsent rows this often besides after each local write (default 5 s). */
  pollMs?: number;
  /** A query (a batch's INSERT) not answered within this is a failure (default 30 s): a hung server must not stall the shipper. */
  queryTimeoutMs?: number;
  /** rex.rc file:line of the URL, for errors. */
  where?: string;
  now?: () => number;
}

const silent: LogSink = { error() {}, warn() {}, info() {} };

/**
 * Sends a local log's rows to the central log, in order, each exactly once;
 * reconnects with backoff and reports an outage loudly (rexd's log, and a
 * `log` row when it ends). Never throws into its caller.
 */
export class LogShipper {
  private client: Client | undefined;
  private busy = false;
  private again = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;
  private retryDelay = 0;
  private outage: { since: number; cause: string; reminded: number; late: number } | undefined;
  private connectedOnce = false;
  private idle: (() => void)[] = [];
  /** The server's name in rex_log_meta and messages: USER@HOST:PORT/DB, never the password. */
  readonly server: string;
  private readonly o: Required<Omit<ShipperOptions, 'where'>> & Pick<ShipperOptions, 'where'>;

  /** Rows sent since start. */
  sent = 0;

  constructor(
    private readonly url: string,
    /** The host of rexd's certificate: the `host` column of every row sent. */
    readonly host: string,
    private readonly spool: Spool,
    opts: ShipperOptions = {},
  ) {
    this.server = describeServer(parsePostgresUrl(url, opts.where));
    this.o = {
      logger: opts.logger ?? silent,
      batch: opts.batch ?? 500,
      retryMinMs: opts.retryMinMs ?? 500,
      retryMaxMs: opts.retryMaxMs ?? 10_000,
      reminderMs: opts.reminderMs ?? 60_000,
      pollMs: opts.pollMs ?? 5000,
      queryTimeoutMs: opts.queryTimeoutMs ?? 30_000,
      now: opts.now ?? Date.now,
      ...(opts.where ? { where: opts.where } : {}),
    };
    this.retryDelay = this.o.retryMinMs;
    this.poll = setInterval(() => this.nudge(), this.o.pollMs);
    this.poll.unref();
    this.nudge();
  }

  /**
   * True while rows can be made durable on the server: connected, and the last
   * attempt to send succeeded (rex.rc log-server-fail-closed serves new work only then).
   */
  get healthy(): boolean {
    return this.client !== undefined && this.outage === undefined && this.connectedOnce;
  }

  /** New rows were written locally: send them (now, or when the current batch is done). */
  nudge(): void {
    if (this.closed) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    if (this.timer) return; // a retry is scheduled: the backoff decides
    void this.pump();
  }

  /** Resolves when every row written locally so far has been sent (tests, and rexd's stop); false if it gave up at `timeoutMs`. */
  async drain(timeoutMs = 10_000): Promise<boolean> {
    const until = this.o.now() + timeoutMs;
    for (;;) {
      const last = this.spool.shippedTo(this.server);
      const rows = last === undefined ? undefined : this.spool.rowsAfter(last, 1);
      if (rows !== undefined && rows.length === 0 && !this.busy) return true;
      if (this.o.now() >= until || this.closed) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.idle.push(() => {
          clearTimeout(t);
          resolve();
        });
        this.nudge();
      });
    }
  }

  private async pump(): Promise<void> {
    this.busy = true;
    try {
      do {
        this.again = false;
        for (;;) {
          if (this.closed) return;
          const spool = this.spool.spoolId();
          const last = this.spool.shippedTo(this.server);
          if (spool === undefined || last === undefined) break; // the local log is in an outage of its own: it retries, then writes, then nudges
          if (!this.client) await this.connect();
          const rows = this.spool.rowsAfter(last, this.o.batch);
          if (!rows || rows.length === 0) break;
          await this.send(spool, rows);
          // The server has committed: move the mark. A crash before this line sends the batch again, and the server keeps the first copy.
          this.spool.markShipped(this.server, rows[rows.length - 1]!.id);
          this.sent += rows.length;
          if (this.outage) this.outage.late += rows.length;
        }
      } while (this.again);
      if (this.outage && this.client) this.endOutage();
    } catch (e) {
      this.fail(e);
    } finally {
      this.busy = false;
      const waiting = this.idle;
      this.idle = [];
      for (const w of waiting) w();
    }
  }

  private async connect(): Promise<void> {
    const client = await connect(this.url, {
      queryTimeoutMs: this.o.queryTimeoutMs,
      ...(this.o.where ? { where: this.o.where } : {}),
      onError: (e) => {
        if (this.client === client) this.fail(e);
      },
    });
    try {
      const have = await schemaVersion(client, LOG_SCHEMA);
      if (have !== LOG_STEPS.length) {
        if (have > LOG_STEPS.length) throw new RexError(ErrorCodes.DATABASE, `the log server ${this.server} has schema ${LOG_SCHEMA} version ${have}, newer than this rexd knows (${LOG_STEPS.length})`, { hint: 'upgrade REX on this host' });
        // A role that owns the database may set it up; a host role cannot, and says so.
        await migrate(client, LOG_SCHEMA, LOG_STEPS);
      }
      const mine = await client.query<{ host: string }>('SELECT host FROM rex_log_hosts WHERE role = current_user');
      if (mine.rows[0]?.host !== this.host) {
        const r = await client.query<{ u: string }>('SELECT current_user AS u');
        throw new RexError(ErrorCodes.DATABASE, `the log server ${this.server} does not map role ${r.rows[0]?.u} to host ${this.host}${mine.rows[0] ? ` (it maps it to ${mine.rows[0].host})` : ''}`, {
          hint: `as the database owner: INSERT INTO rex_log_hosts (role, host) VALUES ('${r.rows[0]?.u}', '${this.host}'); GRANT INSERT ON rex_log TO ${r.rows[0]?.u}  (docs/LOG.md, "A log server for a cluster")`,
        });
      }
    } catch (e) {
      abandon(client);
      throw e;
    }
    this.client = client;
    this.connectedOnce = true;
  }

  private async send(spool: string, rows: (LogRow & { time_ms: number })[]): Promise<void> {
    const params: unknown[] = [];
    const values = rows.map((r) => {
      const v = [this.host, spool, r.id, r.time, r.time_ms, r.kind, r.identity, r.identity_id, r.from_host, r.peer_address, r.message_type, r.target, r.outcome, r.reason, r.bytes_in, r.bytes_out, r.duration_ms];
      const base = params.length;
      params.push(...v);
      return `(${v.map((_, i) => `$${base + i + 1}`).join(', ')})`;
    });
    await this.client!.query(`INSERT INTO rex_log (${COLUMNS.join(', ')}) VALUES ${values.join(', ')} ON CONFLICT (host, spool, local_id) DO NOTHING`, params);
  }

  /** A connection or send failed: report (loudly, once per outage, then reminders), drop the connection, retry with backoff. */
  private fail(e: unknown): void {
    const client = this.client;
    this.client = undefined;
    if (client) abandon(client);
    if (this.closed) return;
    const u = parsePostgresUrl(this.url, this.o.where);
    const err = e instanceof RexError ? e : databaseError(e, u, this.url, 'sending rows to the log server failed');
    const now = this.o.now();
    if (!this.outage) {
      this.outage = { since: now, cause: err.message, reminded: now, late: 0 };
      this.retryDelay = this.o.retryMinMs;
      this.o.logger.error({ err: err.message, hint: err.hint, server: redactUrl(this.url) }, 'transaction log server cannot be reached; rows stay in the local log and are sent when it is back (docs/LOG.md)');
    } else {
      this.retryDelay = Math.min(this.retryDelay * 2, this.o.retryMaxMs);
      if (now - this.outage.reminded >= this.o.reminderMs) {
        this.outage.reminded = now;
        this.o.logger.error({ err: err.message, server: redactUrl(this.url), since: new Date(this.outage.since).toISOString() }, 'transaction log server still cannot be reached');
      }
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.nudge();
    }, this.retryDelay);
    this.timer.unref();
  }

  private endOutage(): void {
    const o = this.outage!;
    this.outage = undefined;
    this.retryDelay = this.o.retryMinMs;
    const now = this.o.now();
    const reason = `the log server ${this.server} could not be reached from ${new Date(o.since).toISOString()} to ${new Date(now).toISOString()} (${o.cause}); ${o.late} rows were sent late from the local log, none was lost`;
    this.o.logger.warn({ server: redactUrl(this.url), since: new Date(o.since).toISOString(), late: o.late }, 'transaction log server reachable again; no row was lost');
    // The row goes into the local log like any other, and from there to the server.
    this.spool.record({ time: now, kind: 'log', outcome: 'ok', target: this.server, reason, durationMs: now - o.since });
  }

  /** Stops sending; rows not sent yet stay in the local log and are sent by the next start. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.poll) clearInterval(this.poll);
    this.timer = this.poll = undefined;
    const c = this.client;
    this.client = undefined;
    c?.end().catch(() => {});
  }
}

/** Reads the central log newest first, with the filters of `rex log` (queryLog's, across every host). */
export async function queryCentralLog(url: string, q: LogQuery = {}, where?: string): Promise<(LogRow & { spool: string; local_id: number })[]> {
  const client = await connect(url, where ? { where } : {});
  const u = parsePostgresUrl(url, where);
  try {
    const cond: string[] = [];
    const args: unknown[] = [];
    const p = (v: unknown): string => {
      args.push(v);
      return `$${args.length}`;
    };
    if (q.identity !== undefined) cond.push(`(identity = ${p(q.identity)} OR identity LIKE ${p(`${q.identity.replace(/[%_\\]/g, '\\$&')}.%`)} ESCAPE '\\' OR identity_id = ${p(q.identity)})`);
    if (q.host !== undefined) cond.push(`(from_host = ${p(q.host)} OR host = ${p(q.host)})`);
    if (q.outcome !== undefined) cond.push(`outcome = ${p(q.outcome)}`);
    if (q.kind !== undefined) cond.push(`kind = ${p(q.kind)}`);
    if (q.since !== undefined) cond.push(`time_ms >= ${p(q.since)}`);
    const sql = `SELECT id::float8 AS id, time, host, kind, identity, identity_id, from_host, peer_address, message_type, target, outcome, reason, bytes_in::float8 AS bytes_in, bytes_out::float8 AS bytes_out, duration_ms, spool, local_id::float8 AS local_id FROM rex_log${
      cond.length ? ` WHERE ${cond.join(' AND ')}` : ''
    } ORDER BY time_ms DESC, id DESC LIMIT ${p(q.limit ?? 100)}`;
    try {
      return (await client.query(sql, args)).rows;
    } catch (e) {
      throw databaseError(e, u, url, 'cannot read the central transaction log');
    }
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * A rex-log-server URL with a password must come from a file only its owner
 * can read (like ~/.pgpass, which libpq and pg ignore when it is not 0600), and
 * never from the command line (`--set`, visible to every user in ps). Throws a
 * RexError naming the file:line and what to do.
 */
export function checkServerSecret(loaded: Pick<LoadedConfig, 'config' | 'sources'>): void {
  const url = loaded.config.logServer;
  if (!url) return;
  let password: string | undefined;
  try {
    password = parsePostgresUrl(url).password;
  } catch {
    return; // rex.rc's reader refused it already
  }
  if (password === undefined) return;
  const src = loaded.sources.logServer;
  const where = src.line === undefined ? src.file : `${src.file}:${src.line}`;
  const hint = `chmod 600 the file, or take the password out of the URL and put it in ~/.pgpass (mode 0600) or a file named by PGPASSFILE`;
  let st: Stats;
  try {
    st = statSync(src.file);
  } catch {
    throw new RexError(ErrorCodes.CONFIG_VALUE, `rex-log-server has a password, and it comes from ${src.file}, not from a private file`, { where, hint: 'a password given with --set is visible to every user (ps); ' + hint });
  }
  if ((st.mode & 0o077) !== 0) {
    throw new RexError(ErrorCodes.CONFIG_VALUE, `rex-log-server has a password, and ${src.file} can be read by others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`, { where, hint });
  }
}
