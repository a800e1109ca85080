/**
 * The negative matrix of peer identity (issue 12, items 2 and 6): a peer rexd
 * is exactly HOST.USER of the configuration with exactly one key, on both ends
 * of the link, and the host a request comes from is the certificate's, never
 * what HELLO says. Runs a real two-host cluster; the attackers are raw TLS
 * clients and a fake rexd listening where beta was.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { RemoteProcess } from '../../src/exec/origin/stub.js';
import { addGrant } from '../../src/keys/admin.js';
import { enrollWith } from '../../src/keys/enroll.js';
import { KeyStore, type OwnIdentity } from '../../src/keys/store.js';
import { tlsServerOptions } from '../../src/keys/tls.js';
import { queryLog, type LogRow } from '../../src/log/txlog.js';
import { Connection } from '../../src/protocol/connection.js';
import { ProtocolError } from '../../src/protocol/frame.js';
import type { Message } from '../../src/protocol/messages.js';
import { RexClient } from '../../src/runtime/client.js';
import { startCluster } from '../helpers/cluster.js';
import { RawPeer } from '../helpers/raw.js';
import { Outsiders, type Outsider } from '../helpers/outsiders.js';

describe('peers are pinned to exactly HOST.USER and one key; from_host is the certificate\'s', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let tmp: string;
  let users: Outsiders;
  let alpha: { store: KeyStore; name: string; host: string; port: number; logDb: string; entry: { name: string; address: string; port: number } };
  let user: string;

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2, { netns: false }));
    await cluster.waitAllReachable();
    tmp = mkdtempSync(join(tmpdir(), 'rex-pinning-'));
    users = new Outsiders(tmp);
    const a = cluster.host('alpha');
    alpha = { store: new KeyStore(a.stateDir), name: a.identity, host: a.address, port: a.port, logDb: join(a.stateDir, 'rex-log.sqlite'), entry: { name: 'alpha', address: a.address, port: a.port } };
    user = a.identity.split('.')[1]!;
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A key for `name`, enrolled with alpha through a token issued for that name, and granted there by name. */
  async function enrolledOnAlpha(name: string): Promise<Outsider> {
    const { store, own } = await users.enrolled(name, alpha);
    addGrant(alpha.store, name);
    return { store, own };
  }

  /** Alpha's log rows about key `id`, polled until `want` holds. */
  function rowsOf(id: string, want: (rows: LogRow[]) => boolean): Promise<LogRow[]> {
    return vi.waitFor(
      () => {
        const rows = queryLog(alpha.logDb, { identity: id, limit: 1000 });
        if (!want(rows)) throw new Error(`log of ${id} does not show it yet: ${JSON.stringify(rows.map((r) => [r.kind, r.outcome, r.from_host, r.reason]))}`);
        return rows;
      },
      { timeout: 10_000, interval: 100 },
    );
  }

  /** Opens TLS to alpha with `own`, says HELLO as `role` (1 client, 2 peer) from `host`, sends PING; returns what came back. */
  async function helloAndPing(own: OwnIdentity, role: number, host?: string): Promise<Message[]> {
    const p = await RawPeer.openTls({ host: alpha.host, port: alpha.port, own });
    p.hello(role, host);
    p.send({ type: 'PING', stream: 1 });
    const ms = await p.waitFrames(2);
    p.close();
    return ms;
  }

  it('a client-role HELLO naming another host is refused, and the log row has the certificate\'s host', async () => {
    const carl = await enrolledOnAlpha('carl.root');
    const ms = await helloAndPing(carl.own, 1, 'beta');
    expect(ms.find((m) => m.type === 'ERROR')).toMatchObject({ fatal: true, message: `HELLO says host "beta", but key ${carl.own.id} belongs to carl.root` });
    expect(ms.some((m) => m.type === 'PONG')).toBe(false);
    const rows = await rowsOf(carl.own.id, (rs) => rs.some((r) => r.kind === 'auth' && r.outcome === 'denied'));
    expect(rows.find((r) => r.kind === 'auth' && r.outcome === 'denied')).toMatchObject({ identity: 'carl.root', from_host: 'carl', reason: expect.stringContaining('HELLO says host "beta"') as unknown as string });
    expect(rows.filter((r) => r.kind === 'transaction')).toEqual([]);
    expect(rows.some((r) => r.from_host === 'beta')).toBe(false);
    // The same key with an honest HELLO (its own host, or none) is served, logged as from its certificate's host.
    for (const host of ['carl', undefined]) {
      const ok = await helloAndPing(carl.own, 1, host);
      expect(ok.find((m) => m.type === 'PONG')).toMatchObject({ host: 'alpha' });
    }
    const served = await rowsOf(carl.own.id, (rs) => rs.filter((r) => r.kind === 'transaction' && r.outcome === 'ok').length === 2);
    expect(served.filter((r) => r.kind === 'transaction').map((r) => r.from_host)).toEqual(['carl', 'carl']);
  });

  it('a peer-role HELLO naming another host is refused, and the log row has the certificate\'s host', async () => {
    const dora = await enrolledOnAlpha(`dora.${user}`);
    const ms = await helloAndPing(dora.own, 2, 'beta');
    expect(ms.find((m) => m.type === 'ERROR')).toMatchObject({ fatal: true, message: `HELLO says host "beta", but key ${dora.own.id} belongs to dora.${user}` });
    expect(ms.some((m) => m.type === 'PONG')).toBe(false);
    const rows = await rowsOf(dora.own.id, (rs) => rs.some((r) => r.kind === 'auth' && r.outcome === 'denied'));
    expect(rows.find((r) => r.kind === 'auth' && r.outcome === 'denied')).toMatchObject({ from_host: 'dora', reason: expect.stringContaining('HELLO says host "beta"') as unknown as string });
    expect(rows.some((r) => r.from_host === 'beta')).toBe(false);
  });

  it('role peer is refused to a key of another user of the peer host, and to a program key', async () => {
    // Both are enrolled and granted on alpha, and their HELLO names their certificate's host honestly.
    for (const name of ['beta.mallory', `beta.${user}.render`]) {
      const k = await enrolledOnAlpha(name);
      const ms = await helloAndPing(k.own, 2, 'beta');
      expect(ms.find((m) => m.type === 'ERROR')).toMatchObject({ fatal: true, message: `role peer is for the rexd of another host of user ${user} (HOST.${user}), not for ${name}; connect as a client` });
      expect(ms.some((m) => m.type === 'PONG')).toBe(false);
      const rows = await rowsOf(k.own.id, (rs) => rs.some((r) => r.kind === 'auth' && r.outcome === 'denied'));
      expect(rows.find((r) => r.kind === 'auth' && r.outcome === 'denied')).toMatchObject({ identity: name, from_host: 'beta', reason: expect.stringContaining('role peer is for the rexd') as unknown as string });
      expect(rows.filter((r) => r.kind === 'transaction')).toEqual([]);
    }
  });

  it('a fake beta (a key enrolled as beta.evil, listening where beta is) is not trusted: no argv or environment reaches it and nothing is placed on it', async () => {
    const evil = await enrolledOnAlpha('beta.evil');
    const b = cluster.host('beta');
    cluster.kill('beta');
    await cluster.waitExit('beta');
    // The impostor: a REX daemon speaking as host beta, advertising an idle 64-core machine.
    const seen: Message[] = [];
    let tcpConnections = 0;
    let bytes = 0;
    const fake: Server = createTlsServer(tlsServerOptions(evil.own), (sock: TLSSocket) => {
      sock.on('data', (d: Buffer) => (bytes += d.length));
      sock.on('error', () => {});
      const conn = new Connection(sock, {
        initiator: false,
        local: { role: 'daemon', host: 'beta', software: 'rexd/0.2.0' },
        label: 'fake beta',
        onRequest: (m) => {
          seen.push(m);
          if (m.type === 'LOAD_GET') return { type: 'LOAD', host: 'beta', load: 0, loadavg: [0, 0, 0], cores: 64, jobs: 0, time: Date.now() };
          throw new ProtocolError('INTERNAL', 'fake', { fatal: false });
        },
      });
      conn.handshake().catch(() => {});
    });
    fake.on('tlsClientError', () => {});
    fake.on('connection', () => tcpConnections++); // alpha's link does come here: the pin is what stops it
    await new Promise<void>((r) => fake.listen(b.port, b.address, () => r()));
    const client = await RexClient.connect({ socket: cluster.host('alpha').socket });
    try {
      // Alpha's peer link reaches the fake at TLS level and refuses its key before sending a byte of REX.
      const betaView = await vi.waitFor(
        async () => {
          const v = (await client.hosts()).find((h) => h.name === 'beta');
          if (tcpConnections === 0 || !/presented key .* \(beta\.evil\), but the key enrolled for beta\.\S+ is .*NOT trusting it/.test(v?.error ?? '')) {
            throw new Error(`alpha does not refuse the fake yet (${tcpConnections} connections): ${JSON.stringify(v)}`);
          }
          return v;
        },
        { timeout: 15_000, interval: 100 },
      );
      expect(betaView).toMatchObject({ reachable: false });
      await expect(client.ping('beta')).rejects.toThrow(/host beta presented key [A-Z2-7-]+ \(beta\.evil\), but the key enrolled for beta\.\S+ is [A-Z2-7-]+; NOT trusting it/);
      // A job for beta carrying secrets in argv and environment does not start there.
      const secret = 'S3CRET-in-argv';
      await expect(RemoteProcess.start(client.conn, { path: '/bin/echo', argv: ['/bin/echo', secret], host: 'beta', env: ['TOKEN=S3CRET-in-env'] }, (_fd, _d, done) => done())).rejects.toThrow(/beta/);
      // A placed job goes to alpha, the only trusted host, whatever load the fake would advertise.
      let out = '';
      const rp = await RemoteProcess.start(client.conn, { path: '/bin/echo', argv: ['/bin/echo', secret], env: ['TOKEN=S3CRET-in-env'] }, (_fd, d, done) => {
        if (d) out += d.toString();
        done();
      });
      rp.end();
      expect(await rp.exited).toMatchObject({ code: 0, host: 'alpha' });
      expect(out).toBe(`${secret}\n`);
      // rex_key --distribute (no token) pins the same way: alpha's key is not handed to the fake.
      const b2 = { name: 'beta', address: b.address, port: b.port };
      await expect(enrollWith({ entry: b2, own: alpha.store.load(alpha.name), store: alpha.store, timeoutMs: 5000 })).rejects.toThrow(
        /presented key [A-Z2-7-]+ \(beta\.evil\), but the key enrolled for beta\.\S+ is [A-Z2-7-]+/,
      );
      expect(seen).toEqual([]);
      expect(bytes).toBe(0);
    } finally {
      client.close();
      await new Promise<void>((r) => fake.close(() => r()));
    }
  });
});
