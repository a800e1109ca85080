/**
 * The negative matrix of issue 12, protocol rows: what an unauthenticated or
 * misbehaving client tries at the transport and framing level. Each row checks
 * that rexd refuses AND that its transaction log has the row, where rexd can
 * log it (a key file rexd refuses at start is reported on stderr, before any
 * log is open). Runs a two-host loopback cluster; the attempts go to beta.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ClusterHost, LocalCluster } from '../../src/cluster/cluster.js';
import { KeyStore, type OwnIdentity } from '../../src/keys/store.js';
import { HEADER_SIZE, LIMITS } from '../../src/protocol/constants.js';
import { queryLog, type LogRow } from '../../src/log/txlog.js';
import { MsgType, type Message } from '../../src/protocol/messages.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { RawPeer } from '../helpers/raw.js';

const run = promisify(execFile);
const ROOT = process.getuid?.() === 0;
if (!ROOT) console.log('test/security/protocol.test.ts: skipping "a second Unix user at rexd\'s socket": creating a second user (useradd) and running a client as it needs root');

describe('negative matrix: protocol', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let beta: ClusterHost;
  let logDb: string;
  /** alpha's key: enrolled on beta and granted there by the cluster fixture. */
  let granted: OwnIdentity;
  let tmp: string;

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2, { netns: false }));
    await cluster.waitAllReachable();
    beta = cluster.host('beta');
    logDb = join(beta.stateDir, 'rex-log.sqlite');
    granted = new KeyStore(cluster.host('alpha').stateDir).load(cluster.host('alpha').identity);
    tmp = mkdtempSync(join(tmpdir(), 'rex-sec-proto-'));
  });
  afterAll(async () => {
    await stop?.();
    rmSync(tmp, { recursive: true, force: true });
  });

  /** Waits (the log is written in batches) for a row of beta's log newer than `since` that `match` accepts. */
  async function logRow(since: number, match: (r: LogRow) => boolean): Promise<LogRow> {
    let row: LogRow | undefined;
    await vi.waitFor(
      () => {
        row = queryLog(logDb, { since, limit: 2000 }).find(match);
        expect(row, 'no matching row in beta\'s transaction log').toBeDefined();
      },
      { timeout: 5000, interval: 100 },
    );
    return row!;
  }

  /** beta still serves: a PING from its local client. */
  async function betaServes(): Promise<void> {
    const c = await RexClient.connect({ socket: beta.socket });
    try {
      expect((await c.ping()).host).toBe('beta');
    } finally {
      c.close();
    }
  }

  /** A 12-byte frame header announcing `len` payload bytes. */
  function header(len: number, type = MsgType.PING, stream = 1): Buffer {
    const h = Buffer.alloc(HEADER_SIZE);
    h.writeUInt32BE(len >>> 0, 0);
    h.writeUInt16BE(type, 4);
    h.writeUInt32BE(stream, 8);
    return h;
  }

  it('plaintext client on the TLS port: closed without a frame, logged as not a TLS client', async () => {
    const since = Date.now();
    const p = await RawPeer.open({ host: beta.address, port: beta.port });
    p.hello(1); // the REX preface and a HELLO, in the clear
    await p.closed;
    expect(p.frames).toHaveLength(0);
    const row = await logRow(since, (r) => r.kind === 'auth' && r.outcome === 'denied' && /not a TLS client/.test(r.reason ?? ''));
    expect(row).toMatchObject({ peer_address: '127.0.0.1', reason: expect.stringContaining('REX peers speak TLS 1.3') as unknown as string });
    await betaServes();
  });

  it('TLS 1.2 client: the handshake fails with a protocol-version alert, and the attempt is logged', async () => {
    const since = Date.now();
    const outcome = await new Promise<string>((resolve) => {
      const s = tlsConnect({ host: beta.address, port: beta.port, rejectUnauthorized: false, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', key: granted.keyPem, cert: granted.certPem }, () => {
        resolve(`connected with ${s.getProtocol()}`);
        s.destroy();
      });
      s.once('error', (e) => resolve(e.message));
    });
    expect(outcome).toMatch(/protocol version|alert 70/i);
    const row = await logRow(since, (r) => r.kind === 'auth' && r.outcome === 'denied' && /TLS handshake failed/.test(r.reason ?? ''));
    expect(row).toMatchObject({ peer_address: '127.0.0.1', reason: expect.stringMatching(/unsupported protocol|version/i) as unknown as string });
    await betaServes();
  });

  it('garbage after the TLS handshake, before and after HELLO: closed, logged as a session error', async () => {
    const since = Date.now();
    const before = await RawPeer.openTls({ host: beta.address, port: beta.port, own: granted });
    before.write(Buffer.from('GET / HTTP/1.1\r\nHost: beta\r\n\r\n'));
    await before.closed;
    expect(before.frames).toHaveLength(0);
    const after = await RawPeer.openTls({ host: beta.address, port: beta.port, own: granted });
    after.hello(1);
    after.write(Buffer.from('\xde\xad\xbe\xef garbage where a frame header belongs, and more of it', 'latin1'));
    await after.closed;
    const ms = await after.waitFrames(2);
    expect(ms.map((m) => m.type)).toEqual(['HELLO', 'ERROR']);
    expect(ms[1]).toMatchObject({ fatal: true });
    await logRow(since, (r) => r.kind === 'session' && r.outcome === 'error' && /did not send the REX preface/.test(r.reason ?? ''));
    await logRow(since, (r) => r.kind === 'session' && r.outcome === 'error' && r.identity === granted.name && r.reason !== null && !/preface/.test(r.reason));
    await betaServes();
  });

  it('oversized frame, over TLS after login and on the Unix socket: TOO_BIG from the header alone, logged', async () => {
    const since = Date.now();
    for (const open of [() => RawPeer.openTls({ host: beta.address, port: beta.port, own: granted }), () => RawPeer.open({ path: beta.socket })]) {
      const p = await open();
      p.hello(1);
      p.write(header(LIMITS.maxPayload + 1)); // no payload follows: rexd must not wait for (or buffer) it
      await p.closed;
      const ms = await p.waitFrames(2);
      expect(ms[0]).toMatchObject({ type: 'HELLO' });
      expect(ms[1]).toMatchObject({ type: 'ERROR', code: 3, fatal: true, message: `PING frame of ${LIMITS.maxPayload + 1} bytes exceeds the limit of ${LIMITS.maxPayload}` });
    }
    const rows = await Promise.all(
      [granted.name, cluster.host('beta').identity].map((who) => logRow(since, (r) => r.kind === 'session' && r.outcome === 'error' && r.identity === who && /exceeds the limit/.test(r.reason ?? ''))),
    );
    expect(rows.map((r) => r.peer_address)).toEqual(['127.0.0.1', 'local']);
    await betaServes();
  });

  it('unknown key (never enrolled): only ENROLL is served, every other request is DENIED, and the refusals are logged', async () => {
    const store = new KeyStore(join(tmp, 'stranger'));
    const stranger = await store.create('stranger.root');
    const since = Date.now();
    // ENROLL reaches its handler: refused there for its bogus token (and the connection closed), not for the key.
    const e = await RawPeer.openTls({ host: beta.address, port: beta.port, own: stranger });
    e.hello(1);
    e.send({ type: 'ENROLL', stream: 1, secret: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', proof: new Uint8Array(32) });
    await e.closed;
    expect((await e.waitFrames(2))[1]).toMatchObject({ type: 'ERROR', code: 11, fatal: true, message: 'enrollment proof does not match the token and this key; the token was not used' });
    // Anything else is refused as coming from an unknown key, with what to do about it.
    const requests: Message[] = [
      { type: 'PING', stream: 1 },
      { type: 'LOAD_GET', stream: 1 },
      { type: 'HOSTS_GET', stream: 1 },
      { type: 'EXEC', stream: 1, path: '/bin/true', argv: ['true'] },
      { type: 'CALL', stream: 1, target: 'beta.root.demo.add', input: new Uint8Array(8) },
      { type: 'ENTRIES_GET', stream: 1, target: 'beta.root.demo' },
    ];
    for (const m of requests) {
      const p = await RawPeer.openTls({ host: beta.address, port: beta.port, own: stranger });
      p.hello(1);
      p.send(m);
      await p.closed;
      const ms = await p.waitFrames(2);
      expect(ms.slice(1), m.type).toMatchObject([{ type: 'ERROR', code: 11, message: expect.stringContaining(`unknown key ${stranger.id} (claims to be stranger.root); beta.root has never enrolled it`) as unknown as string }]);
    }
    const row = await logRow(since, (r) => r.kind === 'auth' && r.outcome === 'denied' && r.identity_id === stranger.id && /unknown key/.test(r.reason ?? ''));
    expect(row).toMatchObject({ identity: 'stranger.root', peer_address: '127.0.0.1' });
    await logRow(since, (r) => r.outcome === 'denied' && r.identity_id === stranger.id && /enrollment proof does not match/.test(r.reason ?? ''));
    expect(queryLog(logDb, { since, identity: stranger.id }).filter((r) => r.outcome === 'ok')).toEqual([]);
    expect(new KeyStore(beta.stateDir).knownById(stranger.id)).toBeUndefined(); // nothing was stored
  });

  /** Runs `rex ping` on beta's socket as `uid`; resolves with its exit status and stderr. */
  async function pingAs(uid: number, gid: number): Promise<{ code: number; stderr: string }> {
    const r = await run(process.execPath, [distBin('rex'), 'ping', '--socket', beta.socket], { uid, gid, env: { PATH: process.env.PATH ?? '', HOME: '/tmp' } }).catch((e: { code: number; stderr: string }) => e);
    return { code: (r as { code?: number }).code ?? 0, stderr: (r as { stderr: string }).stderr };
  }

  it.skipIf(!ROOT)('a second Unix user at rexd\'s socket: kept out by the 0700 directory, and refused by SO_PEERCRED (logged) when let in', async () => {
    // A real second account, created for the test (as root, as in CI).
    const user = 'rexsecond';
    try {
      execFileSync('id', ['-u', user], { stdio: 'ignore' });
    } catch {
      execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user]);
    }
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    // 1. As installed: the socket's directory is rexd's alone.
    const locked = await pingAs(uid, gid);
    expect(locked.code).not.toBe(0);
    expect(locked.stderr).toMatch(/permission denied|EACCES/i);
    // 2. Every directory on the way opened (a careless admin): rexd itself refuses the other uid.
    const dirs: string[] = [];
    for (let d = dirname(beta.socket); d !== tmpdir() && d !== '/'; d = dirname(d)) dirs.push(d);
    const modes = dirs.map((d) => statSync(d).mode & 0o777);
    const sockMode = statSync(beta.socket).mode & 0o777;
    const since = Date.now();
    try {
      for (const d of dirs) chmodSync(d, 0o711);
      chmodSync(beta.socket, 0o777);
      const r = await pingAs(uid, gid);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`DENIED: uid ${uid} may not use this rexd: it acts only for its owner, uid 0`);
    } finally {
      dirs.forEach((d, i) => chmodSync(d, modes[i]!));
      chmodSync(beta.socket, sockMode);
    }
    const row = await logRow(since, (x) => x.kind === 'auth' && x.outcome === 'denied' && x.identity === `uid ${uid}`);
    expect(row).toMatchObject({ peer_address: 'local', reason: expect.stringContaining('acts only for its owner') as unknown as string });
    await betaServes();
  });

  it('loose key file permissions: rexd refuses to start with its key at 0644, naming the file and the fix', async () => {
    const keyFile = new KeyStore(beta.stateDir).load(beta.identity).keyFile;
    cluster.kill('beta');
    await cluster.waitExit('beta');
    chmodSync(keyFile, 0o644);
    try {
      const r = await run(process.execPath, [distBin('rexd'), '--foreground', '--config', beta.rcFile], { timeout: 15_000 }).catch((e: { code: number; stderr: string }) => e);
      expect((r as { code: number }).code).toBe(1);
      expect((r as { stderr: string }).stderr).toContain(`private key ${keyFile} is accessible by group or others (mode 0644); refusing to use it`);
      expect((r as { stderr: string }).stderr).toContain(`run: chmod 600 ${keyFile}`);
    } finally {
      chmodSync(keyFile, 0o600);
    }
    // Fixed as told, it starts and serves again.
    await cluster.startHost(beta);
    await betaServes();
  });
});
