/**
 * The "done when", for the log: a three-host cluster (real rexd
 * processes) logs into one PostgreSQL started by the test; `rex log` shows the
 * transactions of all three hosts; the server killed with SIGKILL and restarted
 * while transactions keep coming loses no row and duplicates none; with
 * log-server-fail-closed a host refuses new remote work while the server is
 * away and serves again once it is back.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { connect } from '../../src/db/postgres.js';
import { queryLog } from '../../src/log/txlog.js';
import { distBin } from '../../src/util/paths.js';
import { NETNS, runOn, startCluster } from '../helpers/cluster.js';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../helpers/postgres.js';

const why = postgresUnavailable();
if (why) console.warn(`PostgreSQL cluster log tests skipped: ${why}`);

const HOSTS = ['alpha', 'beta', 'gamma'] as const;
/** The argv of `rex ARGS` (this checkout's build). */
const rex = (...args: string[]): string[] => [process.execPath, distBin('rex'), ...args];
const PW: Record<string, string> = { alpha: 'c-alpha-Pw-11', beta: 'c-beta-Pw-22', gamma: 'c-gamma-Pw-33' };

/**
 * Sets up database `db` for the hosts as an administrator would, with `rex log-server setup` (roles rex_HOST,
 * whose passwords a private ~/.pgpass-style file gives rexd).
 */
async function logServer(pg: TestPostgres, db: string, hosts: readonly string[]): Promise<string> {
  await pg.createDatabase(db);
  const out = execFileSync(process.execPath, [distBin('rex'), 'log-server', 'setup', '--server', pg.url(db), ...hosts.flatMap((h) => ['--host', `${h}=rex_${h}`, '--reader', `rex_${h}`])], { encoding: 'utf8' });
  expect(out).toBe(`schema rex-log: version 0 -> 1; ${hosts.length} host(s) mapped; ${hosts.length} reader(s)\n`);
  // One rex.rc line for every host: ${HOST} gives each its own role; the password is in the pgpass file, not in rex.rc.
  return `rex-log-server : postgresql://rex_\${HOST}@/${db}?host=${pg.socketDir}&port=${pg.port}`;
}

describe.skipIf(why !== undefined)(`a cluster's log in one PostgreSQL (${NETNS ? 'network namespaces' : 'loopback'})`, () => {
  let pg: TestPostgres;
  let cluster: LocalCluster;
  let stop: (() => Promise<void>) | undefined;
  const oldPassfile = process.env.PGPASSFILE;

  /** The rows the server has of one host, in local order. */
  async function centralRows(db: string, host: string): Promise<{ spool: string; local_id: number; kind: string; message_type: string | null }[]> {
    const c = await connect(pg.url(db));
    try {
      return (await c.query('SELECT spool, local_id::int AS local_id, kind, message_type FROM rex_log WHERE host = $1 ORDER BY spool, local_id', [host])).rows;
    } finally {
      await c.end();
    }
  }

  beforeAll(async () => {
    pg = await startPostgres();
    for (const h of HOSTS) await pg.createRole(`rex_${h}`, { password: PW[h]! });
    const passfile = join(pg.dir, 'pgpass');
    writeFileSync(passfile, HOSTS.map((h) => `*:*:*:rex_${h}:${PW[h]}`).join('\n') + '\n', { mode: 0o600 });
    // rexd inherits it (LocalCluster passes the environment on); pg reads it like libpq reads ~/.pgpass.
    process.env.PGPASSFILE = passfile;
    const rc = await logServer(pg, 'rexlog', HOSTS);
    ({ cluster, stop } = await startCluster(3, { rc: [rc] }));
  }, 180_000);

  afterAll(async () => {
    await stop?.();
    await pg?.stop();
    if (oldPassfile === undefined) delete process.env.PGPASSFILE;
    else process.env.PGPASSFILE = oldPassfile;
  });

  // claim: log.central-cluster
  it('three hosts log into one database; `rex log` on one host shows the transactions of all three', async () => {
    // Each host pings the next: a PING transaction on each side.
    const pings = await Promise.all(HOSTS.map((h, i) => runOn(cluster, h, rex('ping', HOSTS[(i + 1) % 3]!, '-n', '5'))));
    for (const p of pings) expect(p.code, p.stderr).toBe(0);
    for (const h of HOSTS) await vi.waitFor(async () => expect((await centralRows('rexlog', h)).filter((r) => r.message_type === 'PING').length).toBeGreaterThanOrEqual(5), { timeout: 30_000 });
    const shown = await runOn(cluster, 'alpha', rex('log', '--kind', 'transaction', '--json', '-n', '10000'));
    expect(shown.code, shown.stderr).toBe(0);
    const rows = JSON.parse(shown.stdout) as { host: string; message_type: string; from_host: string | null }[];
    expect(new Set(rows.filter((r) => r.message_type === 'PING').map((r) => r.host))).toEqual(new Set(HOSTS));
    // The same filters as the local log: --host matches rows logged on the host or coming from it, across the cluster.
    const gamma = JSON.parse((await runOn(cluster, 'beta', rex('log', '--host', 'gamma', '--json', '-n', '10000'))).stdout) as { host: string; from_host: string | null }[];
    expect(gamma.length).toBeGreaterThan(0);
    for (const r of gamma) expect(r.host === 'gamma' || r.from_host === 'gamma').toBe(true);
    expect(gamma.some((r) => r.host !== 'gamma')).toBe(true); // alpha's log of gamma's pings
    // The table form names each host; --local still reads the host's own file.
    const table = await runOn(cluster, 'gamma', rex('log', '--kind', 'transaction', '-n', '10000'));
    for (const h of HOSTS) expect(table.stdout).toMatch(new RegExp(`\\s${h}\\s+transaction`));
    const local = JSON.parse((await runOn(cluster, 'gamma', rex('log', '--local', '--json', '-n', '10000'))).stdout) as { host: string }[];
    expect(new Set(local.map((r) => r.host))).toEqual(new Set(['gamma']));
  }, 120_000);

  // claim: log.central-cluster-kill
  it('PostgreSQL killed with SIGKILL and restarted mid-run: every row of every host arrives, once, in order', async () => {
    // Transactions keep coming on all three hosts (each pings the next, 150 times) while the server dies and comes back.
    const load = Promise.all(HOSTS.map((h, i) => runOn(cluster, h, rex('ping', HOSTS[(i + 1) % 3]!, '-n', '150'), { timeoutMs: 120_000 })));
    const before = await centralRows('rexlog', 'alpha');
    await vi.waitFor(async () => expect((await centralRows('rexlog', 'alpha')).length).toBeGreaterThan(before.length + 20), { timeout: 30_000 });
    await pg.kill();
    // Rows go on being logged locally while the server is dead.
    const file = (h: string): string => join(cluster.host(h).stateDir, 'rex-log.sqlite');
    const localCount = (h: string): number => queryLog(file(h), { limit: 1_000_000 }).length;
    const atKill = HOSTS.map(localCount);
    await vi.waitFor(() => expect(HOSTS.map(localCount).every((n, i) => n > atKill[i]! + 10)).toBe(true), { timeout: 60_000 });
    await pg.restart();
    const results = await load;
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    // Everything each host's local log holds reaches the server: the same rows (by local id), once each, in order.
    for (const h of HOSTS) {
      await vi.waitFor(
        async () => {
          const local = queryLog(file(h), { limit: 1_000_000 }).map((r) => r.id).sort((a, b) => a - b);
          const rows = await centralRows('rexlog', h);
          // The outage is on record, on the server too (written when the host next reaches it).
          expect(rows.some((r) => r.kind === 'log')).toBe(true);
          expect(rows.map((r) => r.local_id)).toEqual(local);
        },
        { timeout: 60_000, interval: 250 },
      );
      expect(new Set((await centralRows('rexlog', h)).map((r) => r.spool)).size).toBe(1);
    }
    const c = await connect(pg.url('rexlog'));
    try {
      const dup = await c.query('SELECT host, spool, local_id, count(*) FROM rex_log GROUP BY 1, 2, 3 HAVING count(*) > 1');
      expect(dup.rows).toEqual([]);
      const reasons = (await c.query("SELECT host, reason FROM rex_log WHERE kind = 'log' ORDER BY host")).rows as { host: string; reason: string }[];
      expect(new Set(reasons.map((r) => r.host))).toEqual(new Set(HOSTS));
      for (const r of reasons) expect(r.reason).toMatch(/could not be reached from .* none was lost/);
    } finally {
      await c.end();
    }
    // What an administrator sees: every host mapped to its role, with its rows.
    const status = JSON.parse(execFileSync(process.execPath, [distBin('rex'), 'log-server', 'status', '--server', pg.url('rexlog'), '--json'], { encoding: 'utf8' })) as { version: number; hosts: { host: string; role: string; rows: number }[] };
    expect(status.version).toBe(1);
    expect(status.hosts.map((h) => [h.host, h.role])).toEqual(HOSTS.map((h) => [h, `rex_${h}`]));
    for (const h of status.hosts) expect(h.rows).toBe((await centralRows('rexlog', h.host)).length);
  }, 240_000);
});

describe.skipIf(why !== undefined)('log-server-fail-closed', () => {
  let pg: TestPostgres;
  let cluster: LocalCluster;
  let stop: (() => Promise<void>) | undefined;
  const oldPassfile = process.env.PGPASSFILE;

  beforeAll(async () => {
    pg = await startPostgres();
    for (const h of ['alpha', 'beta']) await pg.createRole(`rex_${h}`, { password: PW[h]! });
    const passfile = join(pg.dir, 'pgpass');
    writeFileSync(passfile, ['alpha', 'beta'].map((h) => `*:*:*:rex_${h}:${PW[h]}`).join('\n') + '\n', { mode: 0o600 });
    process.env.PGPASSFILE = passfile;
    const rc = await logServer(pg, 'rexlog2', ['alpha', 'beta']);
    ({ cluster, stop } = await startCluster(2, { rc: [rc, 'log-server-fail-closed : yes'] }));
  }, 180_000);

  /** Waits until beta serves alpha's remote work again (its log server reachable, fail-closed lifted). */
  async function untilBetaServes(): Promise<void> {
    await vi.waitFor(
      async () => {
        const r = await runOn(cluster, 'alpha', rex('ping', 'beta', '-n', '1'));
        expect(r.code, r.stderr).toBe(0);
      },
      { timeout: 60_000, interval: 300 },
    );
  }

  afterAll(async () => {
    await stop?.();
    await pg?.stop();
    if (oldPassfile === undefined) delete process.env.PGPASSFILE;
    else process.env.PGPASSFILE = oldPassfile;
  });

  // claim: log.central-fail-closed
  it('refuses new remote work while rows cannot be made durable on the server, and serves again once they can', async () => {
    const ok = await runOn(cluster, 'alpha', rex('ping', 'beta', '-n', '1'));
    expect(ok.code, ok.stderr).toBe(0);
    await pg.kill();
    // beta notices when it next sends rows (alpha's ping above, and this one), then refuses.
    await vi.waitFor(
      async () => {
        const r = await runOn(cluster, 'alpha', rex('ping', 'beta', '-n', '1'));
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain('beta refuses new work while its transaction log server cannot be reached (rex.rc log-server-fail-closed yes)');
      },
      { timeout: 60_000, interval: 300 },
    );
    // Local clients are still served (the owner must be able to look).
    const local = await runOn(cluster, 'beta', rex('ping', '-n', '1'));
    expect(local.code, local.stderr).toBe(0);
    await pg.restart();
    await untilBetaServes();
    // The refusals are rows too, and reached the server once it was back.
    const c = await connect(pg.url('rexlog2'));
    try {
      await vi.waitFor(async () => {
        const r = await c.query("SELECT count(*)::int AS n FROM rex_log WHERE host = 'beta' AND outcome = 'denied' AND reason LIKE '%log-server-fail-closed%'");
        expect(r.rows[0].n).toBeGreaterThan(0);
      }, { timeout: 30_000 });
    } finally {
      await c.end();
    }
  }, 240_000);

  // claim: log.central-rexd-away
  it('a rexd started while the server is away: fail-closed from its start, its rows wait on disk and arrive when the server is up', async () => {
    cluster.kill('beta');
    await cluster.waitExit('beta', 30_000);
    await pg.shutdown();
    await cluster.startHost(cluster.host('beta'));
    const refused = await runOn(cluster, 'alpha', rex('ping', 'beta', '-n', '1'));
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('beta refuses new work while its transaction log server cannot be reached');
    // Served locally, and logged locally meanwhile.
    const local = await runOn(cluster, 'beta', rex('ping', '-n', '3'));
    expect(local.code, local.stderr).toBe(0);
    const file = join(cluster.host('beta').stateDir, 'rex-log.sqlite');
    const spooled = queryLog(file, { limit: 1_000_000 }).map((r) => r.id).sort((a, b) => a - b);
    await pg.restart();
    await untilBetaServes();
    const c = await connect(pg.url('rexlog2'));
    try {
      await vi.waitFor(async () => {
        const got = (await c.query("SELECT local_id::int AS id FROM rex_log WHERE host = 'beta'")).rows.map((r: { id: number }) => r.id);
        for (const id of spooled) expect(got).toContain(id);
      }, { timeout: 30_000 });
    } finally {
      await c.end();
    }
  }, 240_000);
});
