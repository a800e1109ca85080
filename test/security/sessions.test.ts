/**
 * Limits on unauthenticated connections (issue 12 item 7), against real rexd
 * processes: the login grace time (a connection that has not authenticated is
 * closed: stalled TLS handshake, no HELLO, a session of an unknown key that may
 * only ENROLL, a local client that never says HELLO), the caps on concurrent
 * unauthenticated connections per source and in total (refused at accept while
 * other sources and authenticated peers still get in), the rate limit and
 * summary rows of denials in the transaction log, and rexd's descriptors
 * returning to their baseline after a flood. Sources are told apart by binding
 * the client socket to 127.0.0.2, 127.0.0.3, ... on the loopback.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { KeyStore, type OwnIdentity } from '../../src/keys/store.js';
import { queryLog, type LogRow } from '../../src/log/txlog.js';
import { startCluster } from '../helpers/cluster.js';
import { RawPeer } from '../helpers/raw.js';

interface Host {
  host: string;
  port: number;
  pid: number;
  logDb: string;
  socket: string;
  store: KeyStore;
  identity: string;
}

function hostOf(cluster: LocalCluster, name: string): Host {
  const h = cluster.host(name);
  return { host: h.address, port: h.port, pid: h.pid!, logDb: join(h.stateDir, 'rex-log.sqlite'), socket: h.socket, store: new KeyStore(h.stateDir), identity: h.identity };
}

/** Every denied row of `h`'s log (the log is written in batches: callers poll). */
function denials(h: Host): LogRow[] {
  return queryLog(h.logDb, { outcome: 'denied', limit: 1_000_000 });
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** A TCP connection from `localAddress`; `closed` resolves when it ends. */
function tcpFrom(h: Host, localAddress: string): Promise<{ sock: Socket; closed: Promise<void>; isClosed: () => boolean }> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: h.host, port: h.port, localAddress });
    let done = false;
    const closed = new Promise<void>((r) =>
      sock.on('close', () => {
        done = true;
        r();
      }),
    );
    sock.once('connect', () => resolve({ sock, closed, isClosed: () => done }));
    sock.once('error', reject);
    sock.on('error', () => {});
  });
}

/** A TLS 1.3 connection from `localAddress` presenting `own` (the server's key is not checked); resolves once the handshake is done. */
function tlsFrom(h: Host, localAddress: string, own?: OwnIdentity): Promise<RawPeer> {
  return new Promise((resolve, reject) => {
    const s: TLSSocket = tlsConnect({
      socket: connect({ host: h.host, port: h.port, localAddress }),
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      rejectUnauthorized: false,
      ...(own ? { key: own.keyPem, cert: own.certPem } : {}),
    });
    s.once('secureConnect', () => resolve(new RawPeer(s)));
    s.once('error', reject);
  });
}

describe('login grace time: connections that do not authenticate are closed', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let tmp: string;
  let solo: Host;

  beforeAll(async () => {
    // peer-timeout (the HELLO timeout of the old code) is long, so only login-grace-time can close these in time.
    ({ cluster, stop } = await startCluster(1, { netns: false, peerTimeout: '30s', rc: ['login-grace-time : 1s'] }));
    solo = hostOf(cluster, 'alpha');
    tmp = mkdtempSync(join(tmpdir(), 'rex-sessions-'));
  });
  afterAll(async () => {
    await stop?.();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('closes the session of an unknown key (restricted: ENROLL only) at the deadline, says why and logs it', async () => {
    const own = await new KeyStore(join(tmp, 'stranger')).create('stranger.mallory');
    const p = await tlsFrom(solo, '127.0.0.1', own);
    p.hello(1);
    const [hello] = await p.waitFrames(1);
    expect(hello).toMatchObject({ type: 'HELLO' }); // it got in as far as a restricted session
    await vi.waitFor(() => expect(p.sock.destroyed).toBe(true), { timeout: 15_000, interval: 100 });
    const msgs = await p.waitFrames(2, 100);
    expect(msgs[1]).toMatchObject({ type: 'ERROR', fatal: true });
    expect((msgs[1] as { message: string }).message).toMatch(/not authenticated within login-grace-time 1 s .*unknown key/);
    await vi.waitFor(() => expect(denials(solo).some((r) => r.kind === 'session' && r.peer_address === '127.0.0.1' && /login-grace-time 1 s .*unknown key/.test(r.reason ?? ''))).toBe(true), { timeout: 5000 });
  });

  it('closes a connection that never completes the TLS handshake, and logs it', async () => {
    const c = await tcpFrom(solo, '127.0.0.2');
    await vi.waitFor(() => expect(c.isClosed()).toBe(true), { timeout: 15_000, interval: 100 });
    await vi.waitFor(
      () => expect(denials(solo).some((r) => r.peer_address === '127.0.0.2' && /TLS handshake not completed within login-grace-time 1 s/.test(r.reason ?? ''))).toBe(true),
      { timeout: 5000 },
    );
  });

  it('closes a TLS session that never sends HELLO, and logs it', async () => {
    const p = await tlsFrom(solo, '127.0.0.3');
    await vi.waitFor(() => expect(p.sock.destroyed).toBe(true), { timeout: 15_000, interval: 100 });
    await vi.waitFor(
      () => expect(denials(solo).some((r) => r.kind === 'session' && r.peer_address === '127.0.0.3' && /login-grace-time 1 s \(waiting for HELLO/.test(r.reason ?? ''))).toBe(true),
      { timeout: 5000 },
    );
  });

  it("closes a flood of unknown-key sessions held open, and rexd's descriptor count returns to its baseline", async () => {
    const baseline = fdCount(solo.pid);
    const own = await new KeyStore(join(tmp, 'flood')).create('flood.mallory');
    const peers: RawPeer[] = [];
    for (const source of ['127.0.0.20', '127.0.0.21', '127.0.0.22']) {
      for (let i = 0; i < 8; i++) {
        const p = await tlsFrom(solo, source, own);
        p.hello(1);
        peers.push(p);
      }
    }
    // They were let in (within the per-source cap): each got rexd's HELLO.
    for (const p of peers) expect((await p.waitFrames(1))[0]).toMatchObject({ type: 'HELLO' });
    await vi.waitFor(() => expect(peers.every((p) => p.sock.destroyed)).toBe(true), { timeout: 15_000, interval: 100 });
    await vi.waitFor(() => expect(fdCount(solo.pid)).toBeLessThanOrEqual(baseline + 3), { timeout: 10_000, interval: 100 });
  });

  it('closes a local client that never sends HELLO', async () => {
    const p = await RawPeer.open({ path: solo.socket });
    await vi.waitFor(() => expect(p.sock.destroyed).toBe(true), { timeout: 15_000, interval: 100 });
    await vi.waitFor(() => expect(denials(solo).some((r) => r.kind === 'session' && r.peer_address === 'local' && /login-grace-time 1 s \(waiting for HELLO/.test(r.reason ?? ''))).toBe(true), {
      timeout: 5000,
    });
  });
});

describe('caps on unauthenticated connections, and the denial rate limit', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let beta: Host;
  let alpha: Host;
  let baseline: number;
  const held: { sock: Socket; isClosed: () => boolean }[] = [];

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2, {
      netns: false,
      rc: ['login-grace-time : 20s', 'max-startups : 12', 'per-source-max-startups : 5', 'log-denials-burst : 10', 'log-denials-interval : 2s'],
    }));
    await cluster.waitAllReachable();
    alpha = hostOf(cluster, 'alpha');
    beta = hostOf(cluster, 'beta');
    baseline = fdCount(beta.pid);
  });
  afterAll(async () => {
    for (const h of held) h.sock.destroy();
    await stop?.();
  });

  it('refuses a flood from one source at accept, while another source and an authenticated peer still get in', async () => {
    for (let i = 0; i < 5; i++) held.push(await tcpFrom(beta, '127.0.0.2'));
    const extra = [];
    for (let i = 0; i < 5; i++) extra.push(await tcpFrom(beta, '127.0.0.2'));
    await Promise.all(extra.map((e) => e.closed)); // closed at accept, long before the 20 s grace time
    expect(held.every((h) => !h.isClosed())).toBe(true);
    // Another source completes its TLS handshake and is heard (and refused for its missing key, not for the flood).
    const other = await tlsFrom(beta, '127.0.0.3');
    other.hello(1);
    expect((await other.waitFrames(1))[0]).toMatchObject({ type: 'ERROR', message: expect.stringMatching(/no client certificate/) });
    other.close();
    // An authenticated peer is served.
    const peer = await tlsFrom(beta, '127.0.0.1', alpha.store.load(alpha.identity));
    peer.hello(2, 'alpha');
    peer.send({ type: 'PING', stream: 1 });
    const msgs = await peer.waitFrames(2);
    expect(msgs[1]).toMatchObject({ type: 'PONG', host: 'beta' });
    peer.close();
    await vi.waitFor(() => expect(denials(beta).filter((r) => r.peer_address === '127.0.0.2' && /per-source-max-startups 5\); refused at accept/.test(r.reason ?? ''))).toHaveLength(5), { timeout: 5000 });
    for (const h of held.splice(0)) h.sock.destroy();
    await vi.waitFor(() => expect(fdCount(beta.pid)).toBeLessThanOrEqual(baseline + 3), { timeout: 10_000, interval: 100 }); // rexd saw them close
  });

  it('refuses connections beyond max-startups in total, from any source', async () => {
    for (let i = 0; i < 5; i++) held.push(await tcpFrom(beta, '127.0.0.4'));
    for (let i = 0; i < 5; i++) held.push(await tcpFrom(beta, '127.0.0.5'));
    for (let i = 0; i < 2; i++) held.push(await tcpFrom(beta, '127.0.0.8'));
    const refused = await tcpFrom(beta, '127.0.0.6');
    await refused.closed;
    expect(held.every((h) => !h.isClosed())).toBe(true);
    await vi.waitFor(() => expect(denials(beta).some((r) => r.peer_address === '127.0.0.6' && /max-startups 12 in total\); refused at accept/.test(r.reason ?? ''))).toBe(true), { timeout: 5000 });
    // Closing the held connections frees the slots: a new one gets its TLS handshake done.
    for (const h of held.splice(0)) h.sock.destroy();
    await vi.waitFor(async () => (await tlsFrom(beta, '127.0.0.6')).close(), { timeout: 5000, interval: 200 });
  });

  it('logs 3,000 plaintext connections in a bounded number of rows, with summaries that count them all', async () => {
    const source = '127.0.0.7';
    const started = Date.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < 3000) {
        next++;
        const c = await tcpFrom(beta, source);
        c.sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
        await c.closed;
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    /** Rows from the source: each row counts 1, a summary row the N it names. */
    const tally = (): { rows: number; denied: number; summaries: LogRow[] } => {
      const rows = denials(beta).filter((r) => r.peer_address === source);
      const summaries = rows.filter((r) => /^\d+ more denied connections from 127\.0\.0\.7 in the last \d+ s: /.test(r.reason ?? ''));
      const denied = rows.length - summaries.length + summaries.reduce((n, r) => n + Number(/^(\d+)/.exec(r.reason!)![1]), 0);
      return { rows: rows.length, denied, summaries };
    };
    await vi.waitFor(() => expect(tally().denied).toBe(3000), { timeout: 15_000, interval: 250 });
    const t = tally();
    const intervals = Math.ceil((Date.now() - started) / 2000) + 1;
    expect(t.rows).toBeLessThanOrEqual(intervals * 11); // at most 10 rows and 1 summary per 2 s interval
    expect(t.summaries.length).toBeGreaterThanOrEqual(1);
    expect(t.summaries[0]!.reason).toMatch(/not a TLS client|refused at accept/);
    // rexd's own log is bounded the same way: the rows it wrote, plus the summaries.
    const daemonLog = readFileSync(cluster.host('beta').logFile, 'utf8').split('\n').filter((l) => l.includes(source));
    expect(daemonLog.length).toBeGreaterThan(0);
    expect(daemonLog.length).toBeLessThanOrEqual(intervals * 11);
    // And rexd holds nothing of the floods.
    await vi.waitFor(() => expect(fdCount(beta.pid)).toBeLessThanOrEqual(baseline + 3), { timeout: 15_000, interval: 250 });
  });
});
