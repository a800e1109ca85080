/**
 * The central transaction log (src/log/central.ts) against a real PostgreSQL
 * (test/helpers/postgres.ts): rows of local logs reach the server each exactly
 * once and in order, through a kill -9 of the server mid-stream and a server
 * that is away when the log starts; retention keeps rows not sent yet; a host's
 * role can write only its own host's rows; errors are clear and never show
 * the password.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { connect } from '../../src/db/postgres.js';
import { LOG_SCHEMA, LOG_STEPS, LogShipper, queryCentralLog, setupLogServer } from '../../src/log/central.js';
import { TransactionLog, type LogSink } from '../../src/log/txlog.js';
import { RexError } from '../../src/util/errors.js';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../helpers/postgres.js';

const why = postgresUnavailable();
if (why) console.warn(`PostgreSQL log tests skipped: ${why}`);

const PW = { alpha: 'alpha-Pw-3141', beta: 'beta-Pw-2718', gamma: 'gamma-Pw-1618' } as const;
type Host = keyof typeof PW;

/** A logger that keeps what it is told. */
function sink(): LogSink & { lines: { level: string; msg: string; obj: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  const at = (level: string) => (obj: object, msg: string) => lines.push({ level, msg, obj: obj as Record<string, unknown> });
  return { lines, error: at('error'), warn: at('warn'), info: at('info') };
}

describe.skipIf(why !== undefined)('the central transaction log in PostgreSQL', () => {
  let pg: TestPostgres;
  const tmp = mkdtempSync(join(tmpdir(), 'rex-pglog-'));
  const url = (h: Host, db = 'rexlog'): string => pg.url(db, `rex_${h}`, PW[h]);
  /** Every row on the server of one host, in local id order. */
  const central = async (host: string): Promise<{ local_id: number; spool: string; target: string | null; kind: string }[]> =>
    (await q(`SELECT local_id::int AS local_id, spool, target, kind FROM rex_log WHERE host = $1 ORDER BY spool, local_id`, [host])).rows;
  /** A query as the superuser on a connection of its own (the server is killed and restarted in between). */
  const q = async (sql: string, args: unknown[] = []): Promise<{ rows: any[] }> => {
    const c = await connect(pg.url('rexlog'));
    try {
      return await c.query(sql, args);
    } finally {
      await c.end();
    }
  };
  const opened: { log: TransactionLog; ship?: LogShipper }[] = [];

  /** A local log and its shipper, as rexd makes them (src/daemon/log.ts). */
  function hostLog(host: Host, file: string, o: { url?: string; logger?: LogSink; retentionDays?: number; now?: () => number } = {}): { log: TransactionLog; ship: LogShipper } {
    const ref: { ship?: LogShipper } = {};
    const log: TransactionLog = new TransactionLog(file, host, {
      ...(o.logger ? { logger: o.logger } : {}),
      ...(o.retentionDays !== undefined ? { retentionDays: o.retentionDays } : {}),
      ...(o.now ? { now: o.now } : {}),
      onWritten: () => ref.ship?.nudge(),
      shippedId: (): number | undefined => (ref.ship ? log.shippedTo(ref.ship.server) : undefined),
    });
    ref.ship = new LogShipper(o.url ?? url(host), host, log, { retryMinMs: 50, retryMaxMs: 400, ...(o.logger ? { logger: o.logger } : {}) });
    const pair = { log, ship: ref.ship };
    opened.push(pair);
    return pair;
  }

  beforeAll(async () => {
    pg = await startPostgres();
    for (const h of Object.keys(PW) as Host[]) await pg.createRole(`rex_${h}`, { password: PW[h] });
    await pg.createDatabase('rexlog');
    const admin = await connect(pg.url('rexlog'));
    await setupLogServer(
      admin,
      (Object.keys(PW) as Host[]).map((h) => ({ host: h, role: `rex_${h}` })),
      (Object.keys(PW) as Host[]).map((h) => `rex_${h}`),
    );
    await admin.end();
  }, 120_000);

  afterAll(async () => {
    for (const p of opened) {
      p.ship?.close();
      p.log.close();
    }
    await pg?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('the schema is versioned: rex_schema_migrations says rex-log is at the last step', async () => {
    const r = await q('SELECT schema_name, version FROM rex_schema_migrations ORDER BY version');
    expect(r.rows).toEqual(LOG_STEPS.map((_, i) => ({ schema_name: LOG_SCHEMA, version: i + 1 })));
    // Setting up again changes nothing.
    const admin = await connect(pg.url('rexlog'));
    await setupLogServer(admin, [{ host: 'alpha', role: 'rex_alpha' }]);
    await admin.end();
    expect((await q('SELECT count(*)::int AS n FROM rex_schema_migrations')).rows[0]).toEqual({ n: LOG_STEPS.length });
  });

  // claim: log.central-once
  it('rows of three hosts reach one database, each once, in local order, with the host of the shipper', async () => {
    const logs = (['alpha', 'beta', 'gamma'] as Host[]).map((h) => ({ h, ...hostLog(h, join(tmp, `three-${h}.sqlite`)) }));
    for (let i = 0; i < 300; i++) for (const { h, log } of logs) log.record({ kind: 'transaction', outcome: 'ok', messageType: 'PING', target: `${h}-${i}` });
    for (const { log } of logs) log.flush();
    for (const { ship } of logs) expect(await ship.drain(30_000)).toBe(true);
    for (const { h, log } of logs) {
      const rows = await central(h);
      expect(rows.map((r) => r.target)).toEqual(Array.from({ length: 300 }, (_, i) => `${h}-${i}`));
      expect(rows.map((r) => r.local_id)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
      expect(new Set(rows.map((r) => r.spool))).toEqual(new Set([log.spoolId()]));
    }
    // `rex log`'s query over the central table: the same filters, across hosts.
    const q = await queryCentralLog(url('beta'), { host: 'gamma', limit: 1000 });
    expect(q.length).toBe(300);
    expect(new Set(q.map((r) => r.host))).toEqual(new Set(['gamma']));
    const all = await queryCentralLog(url('alpha'), { kind: 'transaction', limit: 10_000 });
    expect(new Set(all.map((r) => r.host))).toEqual(new Set(['alpha', 'beta', 'gamma']));
  });

  // claim: log.central-kill
  it('kill -9 of the server while rows keep coming, then a restart: every row arrives exactly once and in order', async () => {
    const s = sink();
    const { log, ship } = hostLog('alpha', join(tmp, 'kill.sqlite'), { logger: s });
    const spool = log.spoolId()!;
    let n = 0;
    const burst = (k: number): void => {
      for (let i = 0; i < k; i++) log.record({ kind: 'transaction', outcome: 'ok', target: `k-${n++}` });
      log.flush();
    };
    burst(200);
    await vi.waitFor(() => expect(ship.sent).toBeGreaterThan(0), { timeout: 20_000 });
    burst(100);
    await pg.kill();
    // Rows keep coming while the server is dead; the shipper notices and reports it once, loudly.
    for (let round = 0; round < 5; round++) burst(100);
    await vi.waitFor(() => expect(ship.healthy).toBe(false), { timeout: 20_000 });
    await vi.waitFor(() => expect(s.lines.some((l) => l.level === 'error' && /log server cannot be reached/.test(l.msg))).toBe(true), { timeout: 20_000 });
    burst(100);
    await pg.restart();
    burst(100);
    expect(await ship.drain(60_000)).toBe(true);
    await vi.waitFor(() => expect(ship.healthy).toBe(true), { timeout: 20_000 });
    // The outage's own row (kind log) goes the same way.
    log.flush();
    expect(await ship.drain(30_000)).toBe(true);
    const rows = (await central('alpha')).filter((r) => r.spool === spool);
    const sent = rows.filter((r) => r.kind === 'transaction').map((r) => r.target);
    expect(sent).toEqual(Array.from({ length: n }, (_, i) => `k-${i}`));
    expect(rows.map((r) => r.local_id)).toEqual(Array.from({ length: rows.length }, (_, i) => i + 1));
    const outage = (await q(`SELECT reason FROM rex_log WHERE spool = $1 AND kind = 'log'`, [spool])).rows;
    expect(outage).toHaveLength(1);
    expect(outage[0].reason).toMatch(/could not be reached from .* rows were sent late from the local log, none was lost/);
    expect(JSON.stringify(s.lines)).not.toContain(PW.alpha);
  }, 180_000);

  // claim: log.central-away
  it('a server that is away when the log starts: rows wait on disk and are sent once it is up', async () => {
    await pg.shutdown();
    const { log, ship } = hostLog('beta', join(tmp, 'away.sqlite'));
    try {
      for (let i = 0; i < 50; i++) log.record({ kind: 'auth', outcome: 'denied', target: `away-${i}` });
      log.flush();
      expect(ship.healthy).toBe(false);
      expect(await ship.drain(300)).toBe(false);
    } finally {
      await pg.restart();
    }
    expect(await ship.drain(60_000)).toBe(true);
    expect(ship.healthy).toBe(true);
    const rows = (await central('beta')).filter((r) => r.spool === log.spoolId());
    expect(rows.filter((r) => r.kind === 'auth').map((r) => r.target)).toEqual(Array.from({ length: 50 }, (_, i) => `away-${i}`));
  }, 120_000);

  it('a hung server (stopped, answering nothing): the send times out, the outage is reported, and the rows arrive once it goes on', async () => {
    const s = sink();
    const file = join(tmp, 'hung.sqlite');
    const ref: { ship?: LogShipper } = {};
    const log: TransactionLog = new TransactionLog(file, 'gamma', { logger: s, onWritten: () => ref.ship?.nudge() });
    ref.ship = new LogShipper(url('gamma'), 'gamma', log, { logger: s, retryMinMs: 50, retryMaxMs: 200, queryTimeoutMs: 1000 });
    const ship = ref.ship;
    opened.push({ log, ship });
    for (let i = 0; i < 10; i++) log.record({ kind: 'transaction', outcome: 'ok', target: `h-${i}` });
    log.flush();
    expect(await ship.drain(30_000)).toBe(true);
    pg.pause();
    try {
      for (let i = 10; i < 40; i++) log.record({ kind: 'transaction', outcome: 'ok', target: `h-${i}` });
      log.flush();
      await vi.waitFor(() => expect(ship.healthy).toBe(false), { timeout: 30_000 });
      const err = s.lines.find((l) => l.level === 'error');
      expect(String(err?.obj.err)).toMatch(/did not answer in time/);
    } finally {
      pg.resume();
    }
    expect(await ship.drain(60_000)).toBe(true);
    const rows = (await central('gamma')).filter((r) => r.spool === log.spoolId() && r.kind === 'transaction');
    expect(rows.map((r) => r.target)).toEqual(Array.from({ length: 40 }, (_, i) => `h-${i}`));
  }, 120_000);

  it('a reconnect after the remote commit but before the local mark adds no duplicate', async () => {
    const { log, ship } = hostLog('gamma', join(tmp, 'dup.sqlite'));
    for (let i = 0; i < 20; i++) log.record({ kind: 'transaction', outcome: 'ok', target: `d-${i}` });
    log.flush();
    expect(await ship.drain(30_000)).toBe(true);
    // As if rexd had crashed between the server's COMMIT and the local mark: the mark goes back, the batch is sent again.
    log.markShipped(ship.server, 5);
    ship.nudge();
    expect(await ship.drain(30_000)).toBe(true);
    const rows = (await central('gamma')).filter((r) => r.spool === log.spoolId());
    expect(rows.map((r) => r.target)).toEqual(Array.from({ length: 20 }, (_, i) => `d-${i}`));
  });

  // claim: log.central-roles
  it("a host's role inserts only its own host's rows and can neither update nor delete", async () => {
    const beta = await connect(url('beta'));
    try {
      const ins = (host: string) =>
        beta.query("INSERT INTO rex_log (host, spool, local_id, time, time_ms, kind, outcome) VALUES ($1, 'forged', 1, '2026-01-01T00:00:00.000Z', 0, 'auth', 'ok')", [host]);
      await expect(ins('alpha')).rejects.toThrow(/row-level security/);
      await ins('beta');
      await expect(beta.query("UPDATE rex_log SET reason = 'x' WHERE host = 'alpha'")).rejects.toThrow(/permission denied/);
      await expect(beta.query("DELETE FROM rex_log WHERE host = 'alpha'")).rejects.toThrow(/permission denied/);
      await expect(beta.query("UPDATE rex_log_hosts SET host = 'alpha' WHERE role = 'rex_beta'")).rejects.toThrow(/permission denied/);
      await expect(beta.query('TRUNCATE rex_log')).rejects.toThrow(/permission denied/);
    } finally {
      await beta.end();
    }
    expect((await q("SELECT count(*)::int AS n FROM rex_log WHERE spool = 'forged'")).rows[0]).toEqual({ n: 1 });
    // A shipper that claims another host with beta's role is refused at connect, saying what is mapped.
    const s = sink();
    const { log, ship } = hostLog('alpha', join(tmp, 'claim.sqlite'), { url: url('beta'), logger: s });
    log.record({ kind: 'auth', outcome: 'ok' });
    log.flush();
    await vi.waitFor(() => expect(s.lines.length).toBeGreaterThan(0), { timeout: 20_000 });
    expect(String(s.lines[0]!.obj.err)).toMatch(/does not map role rex_beta to host alpha \(it maps it to beta\)/);
    expect(ship.healthy).toBe(false);
  });

  it('a wrong password, and a server that is not there: errors that say so and never show the password', async () => {
    const s = sink();
    const bad = pg.url('rexlog', 'rex_alpha', 'Not-The-Pw-99');
    const { log } = hostLog('alpha', join(tmp, 'badpw.sqlite'), { url: bad, logger: s });
    log.record({ kind: 'auth', outcome: 'ok' });
    log.flush();
    await vi.waitFor(() => expect(s.lines.length).toBeGreaterThan(0), { timeout: 20_000 });
    expect(s.lines[0]).toMatchObject({ level: 'error' });
    expect(String(s.lines[0]!.obj.err)).toMatch(/password authentication failed for rex_alpha/);
    expect(String(s.lines[0]!.obj.server)).toContain(':***@');
    expect(JSON.stringify(s.lines)).not.toContain('Not-The-Pw-99');
    const e = await queryCentralLog(`postgresql://rex_alpha:${PW.alpha}@/rexlog?host=${tmp}&port=1`).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RexError);
    expect((e as RexError).format()).toMatch(/no server is listening there/);
    expect((e as RexError).format()).not.toContain(PW.alpha);
  });

  it('retention by size deletes rows not yet sent only when the bound leaves no choice, and says how many were lost', async () => {
    const s = sink();
    const file = join(tmp, 'size.sqlite');
    const away = `postgresql://rex_alpha:${PW.alpha}@/rexlog?host=${pg.socketDir}&port=1`;
    const ref: { ship?: LogShipper } = {};
    const log: TransactionLog = new TransactionLog(file, 'alpha', {
      logger: s,
      maxBytes: 1024 * 1024,
      retentionDays: 0,
      shippedId: (): number | undefined => (ref.ship ? log.shippedTo(ref.ship.server) : undefined),
    });
    ref.ship = new LogShipper(away, 'alpha', log, { retryMinMs: 50 });
    opened.push({ log, ship: ref.ship });
    // About 3 MB of rows that cannot be sent: the 1 MiB bound forces deleting unsent ones.
    const reason = 'x'.repeat(1500);
    for (let i = 0; i < 2000; i++) log.record({ kind: 'transaction', outcome: 'ok', target: `s-${i}`, reason });
    log.flush();
    log.enforceRetention();
    log.flush(); // the row that reports the loss
    expect(log.sizeOnDisk()).toBeLessThanOrEqual(1024 * 1024);
    const left = log.rowsAfter(0, 10_000)!;
    const lost = s.lines.filter((l) => l.level === 'error' && /rows not yet sent to the log server were deleted/.test(l.msg));
    expect(lost.length).toBeGreaterThan(0);
    const counted = lost.reduce((n, l) => n + Number(l.obj.lost), 0);
    // Every row is either still in the spool or counted as lost (the loss reports are rows too, and may be lost
    // in turn); the newest transaction is kept, and so is the row reporting the last loss.
    expect(left.length + counted).toBe(2000 + lost.length);
    expect(left.some((r) => r.target === 's-1999')).toBe(true);
    const last = lost[lost.length - 1]!;
    expect(left.filter((r) => r.kind === 'log').map((r) => r.reason)).toContainEqual(expect.stringMatching(new RegExp(`^${last.obj.lost} rows not yet sent to the log server were deleted .*they are lost$`)));
  });

  // claim: log.central-retention
  it('retention by age keeps rows not yet sent; they are sent and then deleted', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const file = join(tmp, 'retain.sqlite');
    // The server is away (a port nobody listens on): nothing is sent.
    const away = `postgresql://rex_alpha:${PW.alpha}@/rexlog?host=${pg.socketDir}&port=1`;
    const { log, ship } = hostLog('alpha', file, { url: away, retentionDays: 1, now: () => now });
    for (let i = 0; i < 10; i++) log.record({ kind: 'auth', outcome: 'ok', target: `old-${i}` });
    log.flush();
    now += 3 * 86_400_000;
    log.record({ kind: 'auth', outcome: 'ok', target: 'new' });
    log.flush();
    log.enforceRetention();
    expect(log.rowsAfter(0, 100)!.map((r) => r.target)).toEqual([...Array.from({ length: 10 }, (_, i) => `old-${i}`), 'new']);
    ship.close();
    // Once they are sent (to the real server), the old ones go.
    const real = new LogShipper(url('alpha'), 'alpha', log, { retryMinMs: 50 });
    opened.push({ log, ship: real });
    expect(await real.drain(30_000)).toBe(true);
    const keep = log.shippedTo(real.server);
    expect(keep).toBe(11);
    const log2 = new TransactionLog(file, 'alpha', { retentionDays: 1, now: () => now, shippedId: () => log.shippedTo(real.server) });
    opened.push({ log: log2 });
    expect(log2.rowsAfter(0, 100)!.map((r) => r.target)).toEqual(['new']);
  });
});
