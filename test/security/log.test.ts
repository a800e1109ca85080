/**
 * The transaction log as an adversary meets it (issue 12, item 10), on real
 * rexd processes: the log is private whatever the umask; heartbeats do not
 * flood it; a full disk (a real tmpfs, filled) does not silence it for good:
 * rows wait in memory and reach it once there is room; and with
 * `log-fail-closed yes` a host refuses new remote work while its log cannot be
 * written, keeps answering heartbeats, and serves again once it can.
 */
import { execFile } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { queryLog, TransactionLog } from '../../src/log/txlog.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { openDatabase } from '../../src/util/sqlite.js';
import { startCluster } from '../helpers/cluster.js';
import { CAN_MOUNT, mountTmpfs, NO_MOUNT_REASON, type FullDisk } from '../helpers/fulldisk.js';

const run = promisify(execFile);
const mode = (f: string): string => (statSync(f).mode & 0o777).toString(8);

/** The time and time_ms columns of the rows from `id` on. */
function queryLogTimes(file: string, id: number): [string, number][] {
  const d = openDatabase(file, { readonly: true });
  try {
    return (d.prepare('SELECT time, time_ms FROM rex_log WHERE id >= ? ORDER BY id').all(id) as { time: string; time_ms: number }[]).map((r) => [r.time, r.time_ms]);
  } finally {
    d.close();
  }
}

/** Restarts one host with a line added to its rex.rc. */
async function restartWith(cluster: LocalCluster, name: string, line: string): Promise<void> {
  const h = cluster.host(name);
  appendFileSync(h.rcFile, `${line}\n`);
  cluster.kill(name);
  await cluster.waitExit(name);
  await cluster.startHost(h);
  await cluster.waitAllReachable();
}

describe('an idle cluster started with umask 000', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  const db = (name: string) => join(cluster.host(name).stateDir, 'rex-log.sqlite');

  beforeAll(async () => {
    const old = process.umask(0);
    try {
      ({ cluster, stop } = await startCluster(2, { netns: false, loadInterval: '100ms' }));
    } finally {
      process.umask(old);
    }
    await cluster.waitAllReachable();
  });
  afterAll(async () => {
    await stop?.();
  });

  it('keeps its transaction log and its -wal and -shm files 0600', () => {
    for (const h of ['alpha', 'beta']) {
      expect(existsSync(`${db(h)}-wal`)).toBe(true);
      expect([h, mode(db(h)), mode(`${db(h)}-wal`), mode(`${db(h)}-shm`)]).toEqual([h, '600', '600', '600']);
    }
  });

  it('a forwarded PING is one row on each host, every one of a burst, in order (batched inserts)', async () => {
    const rows = (h: string) => queryLog(db(h), { kind: 'transaction', limit: 1_000_000 }).filter((r) => r.message_type === 'PING');
    const lastId = Object.fromEntries(['alpha', 'beta'].map((h) => [h, rows(h)[0]?.id ?? 0]));
    const client = await RexClient.connect({ socket: cluster.host('alpha').socket });
    const N = 100; // more than the rows of one multi-row INSERT (32), and past it in one batch
    for (let i = 0; i < N; i++) expect((await client.ping('beta')).host).toBe('beta');
    client.close();
    const added = (h: string) => rows(h).filter((r) => r.id > lastId[h]!).reverse();
    await vi.waitFor(() => expect(['alpha', 'beta'].map((h) => added(h).length)).toEqual([N, N]), { timeout: 5000, interval: 50 });
    // The origin's row: the local client, the target named; the target's row: the origin host's identity over TLS.
    expect(new Set(added('alpha').map((r) => `${r.peer_address} ${r.target} ${r.outcome}`))).toEqual(new Set(['local beta ok']));
    const beta = added('beta');
    expect(new Set(beta.map((r) => `${r.identity?.split('.')[0]} ${r.from_host} ${r.outcome}`))).toEqual(new Set(['alpha alpha ok']));
    expect(beta.every((r) => r.peer_address !== 'local')).toBe(true);
    for (const h of ['alpha', 'beta']) {
      const a = added(h);
      // In order (ids and times ascending), and each time as Date.toISOString() of its time_ms.
      for (let i = 1; i < a.length; i++) expect(a[i]!.id > a[i - 1]!.id && a[i]!.time >= a[i - 1]!.time, h).toBe(true);
      const ms = queryLogTimes(db(h), a[0]!.id);
      expect(ms.every(([t, tms]) => t === new Date(tms).toISOString()), h).toBe(true);
    }
  });

  it('logs no heartbeat (LOAD_GET) as a transaction over many load intervals, unless log-heartbeats is yes', async () => {
    const rows = (h: string) => queryLog(db(h), { limit: 1_000_000 });
    // Rows after this point: the marker, and at most connection-level rows (a peer link that reconnects under load).
    const lastId = Object.fromEntries(['alpha', 'beta'].map((h) => [h, rows(h)[0]?.id ?? 0]));
    // Alpha's view of beta is refreshed by a LOAD_GET every load-interval (100 ms): see at least 5 of them.
    const client = await RexClient.connect({ socket: cluster.host('alpha').socket });
    const refreshes = new Set<number>();
    await vi.waitFor(
      async () => {
        const beta = (await client.hosts()).find((x) => x.name === 'beta')!;
        refreshes.add(Math.round((Date.now() - beta.ageMs!) / 50));
        expect(refreshes.size).toBeGreaterThanOrEqual(10); // a refresh counts at most twice
      },
      { timeout: 20_000, interval: 25 },
    );
    client.close();
    // A marker: one local PING on each host. Rows reach the database in order, so once it is there, any heartbeat row would be too.
    for (const h of ['alpha', 'beta']) {
      const c = await RexClient.connect({ socket: cluster.host(h).socket });
      await c.ping();
      c.close();
    }
    const newest = (h: string) => rows(h)[0];
    await vi.waitFor(() => expect(['alpha', 'beta'].map((h) => `${newest(h)?.message_type} ${newest(h)?.peer_address}`)).toEqual(['PING local', 'PING local']), { timeout: 5000, interval: 50 });
    // A heartbeat served is never a row. A refused one is (a refusal is an attempt): the cluster's first polls can
    // come before its hosts have enrolled each other, and are refused as an unknown key.
    expect(['alpha', 'beta'].map((h) => rows(h).filter((r) => (r.message_type === 'LOAD_GET' || r.message_type === 'HOSTS_GET') && r.outcome !== 'denied'))).toEqual([[], []]);
    for (const h of ['alpha', 'beta']) {
      const added = rows(h).filter((r) => r.id > lastId[h]!);
      expect(added.filter((r) => r.kind === 'transaction').map((r) => `${r.message_type} ${r.peer_address}`), h).toEqual(['PING local']);
    }
    // Asked for, they are logged.
    await restartWith(cluster, 'beta', 'log-heartbeats : yes');
    await vi.waitFor(() => expect(rows('beta').filter((r) => r.message_type === 'LOAD_GET' && r.identity === 'alpha.root' && r.outcome === 'ok').length).toBeGreaterThanOrEqual(3), {
      timeout: 20_000,
      interval: 100,
    });
  });
});

describe('retention set in rex.rc', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(1, { netns: false }));
  });
  afterAll(async () => {
    await stop?.();
  });

  it('log-retention-days and log-max-size are enforced when rexd starts', async () => {
    const file = join(cluster.host('alpha').stateDir, 'rex-log.sqlite');
    const seed = new TransactionLog(file, 'alpha', { retentionDays: 0, maxBytes: 0 });
    const now = Date.now();
    for (let i = 0; i < 10; i++) seed.record({ time: now - 3 * 86_400_000, kind: 'auth', identity: 'three.days.old', outcome: 'ok' });
    for (let i = 0; i < 12_000; i++) seed.record({ time: now - 3_600_000 + i, kind: 'transaction', identity: `seed-${i}`, outcome: 'ok', reason: 'z'.repeat(200) });
    seed.close();
    expect(statSync(file).size).toBeGreaterThan(2 * 1024 * 1024);
    await restartWith(cluster, 'alpha', 'log-retention-days : 2\nlog-max-size : 1M');
    const rows = queryLog(file, { limit: 100_000 });
    expect(rows.filter((r) => r.identity === 'three.days.old')).toEqual([]);
    expect(rows.length).toBeLessThan(12_000);
    expect(rows.some((r) => r.identity === 'seed-11999')).toBe(true); // the newest are kept
    const size = statSync(file).size + (existsSync(`${file}-wal`) ? statSync(`${file}-wal`).size : 0);
    expect(size).toBeLessThanOrEqual(1024 * 1024);
    expect(readFileSync(cluster.host('alpha').logFile, 'utf8')).toContain('transaction log: old rows deleted');
  });
});

describe('a full disk under the transaction log', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let disk: FullDisk;
  let client: RexClient;
  const db = (name: string) => join(disk.dir, `${name}.sqlite`);
  const rexdLog = (name: string) => readFileSync(cluster.host(name).logFile, 'utf8');

  beforeAll(async () => {
    if (!CAN_MOUNT) {
      console.log(NO_MOUNT_REASON);
      return;
    }
    disk = mountTmpfs('8m');
    ({ cluster, stop } = await startCluster(2, { netns: false, rc: ['rex-log-database : ' + disk.dir + '/${HOST}.sqlite'] }));
    await cluster.waitAllReachable();
    client = await RexClient.connect({ socket: cluster.host('alpha').socket });
  });
  afterAll(async () => {
    client?.close();
    await stop?.();
    disk?.remove();
  });

  const pingRows = () => queryLog(db('beta'), { kind: 'transaction', identity: 'alpha.root', limit: 100_000 }).filter((r) => r.message_type === 'PING');

  it.skipIf(!CAN_MOUNT)('by default (fail-open): rexd warns, keeps serving, and the rows reach the log once there is room', async () => {
    const before = pingRows().length;
    let sent = 0;
    await client.ping('beta');
    sent++;
    disk.fill();
    await vi.waitFor(
      async () => {
        await client.ping('beta'); // served: fail-open
        sent++;
        expect(rexdLog('beta')).toContain('transaction log cannot be written');
      },
      { timeout: 20_000, interval: 50 },
    );
    for (let i = 0; i < 5; i++, sent++) await client.ping('beta');
    disk.free();
    // Every row is there in the end. (Closing the broken database frees its WAL, so on a full disk the log may
    // come back for a moment and fail again: each outage that ends writes its own `log` row.)
    await vi.waitFor(() => expect(pingRows().length).toBe(before + sent), { timeout: 30_000, interval: 100 });
    const outages = queryLog(db('beta'), { kind: 'log', limit: 1000 });
    expect(outages.length).toBeGreaterThanOrEqual(1);
    for (const o of outages) expect(o.reason).toMatch(/^the transaction log could not be written from .* \(database or disk is full\); \d+ rows were written late, none was lost$/);
    expect(rexdLog('beta')).toContain('transaction log writable again');
  });

  it.skipIf(!CAN_MOUNT)('with log-fail-closed yes: new remote work is refused while the log cannot be written, heartbeats go on, and work is served again after', async () => {
    await restartWith(cluster, 'beta', 'log-fail-closed : yes');
    await client.ping('beta');
    const rexRun = (...argv: string[]) => run(process.execPath, [distBin('rex'), 'run', '--socket', cluster.host('alpha').socket, '--host', 'beta', ...argv]);
    await expect(rexRun('/bin/true')).resolves.toMatchObject({ stderr: '' });
    const outagesBefore = queryLog(db('beta'), { kind: 'log', limit: 1000 }).length;
    disk.fill();
    const refusal = /beta refuses new work while its transaction log cannot be written \(rex\.rc log-fail-closed yes\); try again later or on another host/;
    // The first request after the disk filled may still pass (the log fails when its row is written), and the log
    // may come back for a moment (closing the broken database frees its WAL): keep the disk topped up.
    await vi.waitFor(
      async () => {
        disk.fill();
        await expect(client.ping('beta')).rejects.toThrow(refusal);
      },
      { timeout: 20_000, interval: 50 },
    );
    await vi.waitFor(
      async () => {
        disk.fill();
        await expect(rexRun('/bin/echo', 'ran')).rejects.toMatchObject({ stdout: '', stderr: expect.stringMatching(refusal) as unknown });
      },
      { timeout: 20_000, interval: 50 },
    );
    expect(rexdLog('beta')).toContain('transaction log cannot be written');
    // Heartbeats are not new work: alpha keeps a fresh load figure of beta.
    const since = Date.now();
    await cluster.waitFor((hs) => hs.some((h) => h.name === 'beta' && h.reachable && h.ageMs !== undefined && Date.now() - h.ageMs > since), { from: ['alpha'], timeoutMs: 10_000 });
    disk.free();
    await vi.waitFor(() => expect(client.ping('beta')).resolves.toMatchObject({ host: 'beta' }), { timeout: 30_000, interval: 100 });
    await expect(rexRun('/bin/echo', 'ran')).resolves.toMatchObject({ stdout: 'ran\n' });
    // The refusals are in the log, written late.
    await vi.waitFor(() => expect(queryLog(db('beta'), { kind: 'log', limit: 1000 }).length).toBeGreaterThan(outagesBefore), { timeout: 10_000, interval: 100 });
    const denied = queryLog(db('beta'), { kind: 'transaction', outcome: 'denied', limit: 1000 }).filter((r) => refusal.test(r.reason ?? ''));
    expect(denied.filter((r) => r.message_type === 'PING').length).toBeGreaterThanOrEqual(1);
    expect(denied.filter((r) => r.message_type === 'EXEC').length).toBeGreaterThanOrEqual(1);
    expect(denied.every((r) => r.identity?.startsWith('alpha.root') && r.from_host === 'alpha')).toBe(true);
  });
});
