import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/cluster/cluster.js';
import { encodeFrame } from '../../src/protocol/frame.js';
import { PREFACE } from '../../src/protocol/constants.js';
import { localName } from '../../src/keys/identity.js';
import { KeyStore } from '../../src/keys/store.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { RawPeer } from '../helpers/raw.js';
import { settledRows } from '../helpers/logsync.js';
import { runs } from '../helpers/property.js';

const run = promisify(execFile);
const tmp = mkdtempSync(join(tmpdir(), 'rexd-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));


let seq = 0;
/** Writes a rex.rc for a single host and returns its paths. */
async function hostConfig(extra: string[] = [], port?: number) {
  const dir = join(tmp, `h${++seq}`);
  mkdirSync(dir, { recursive: true });
  const p = port ?? (await freePort());
  const rc = join(dir, 'rex.rc');
  writeFileSync(rc, [`host-name : solo${seq}`, `servers : solo${seq}@127.0.0.1:${p}`, `state-directory : ${dir}/state`, 'log-level : debug', ...extra, ''].join('\n'));
  // rexd refuses to start without its key (rex_key --create).
  const own = await new KeyStore(join(dir, 'state')).create(localName(`solo${seq}`));
  return { dir, rc, port: p, own, socket: join(dir, 'state', 'run', 'rexd.sock'), pidFile: join(dir, 'state', 'run', 'rexd.pid'), logDb: join(dir, 'state', 'rex-log.sqlite') };
}

const children: ChildProcess[] = [];
function killChildren(): void {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
}

/** Starts `rexd --foreground` and resolves once it answers on its socket. */
async function startRexd(rc: string, socket: string): Promise<{ child: ChildProcess; stderr: () => string; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, [distBin('rexd'), '--foreground', '--config', rc], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`rexd exited: ${err}`);
    try {
      (await RexClient.connect({ socket, timeoutMs: 500 })).close();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`rexd did not come up: ${err}`);
      await new Promise((r) => setTimeout(r, 50)); // sleep-ok: poll step, bounded by the deadline above
    }
  }
  return { child, stderr: () => err, exit };
}

/** Runs rexd expecting it to fail; returns its exit status and stderr. */
async function failingRexd(rc: string): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [distBin('rexd'), '--foreground', '--config', rc], { timeout: 10_000 });
  } catch (e) {
    const err = e as { code: number; stderr: string };
    return { code: err.code, stderr: err.stderr };
  }
  throw new Error('rexd should have failed');
}

describe('rexd lifecycle', () => {
  afterEach(killChildren);

  it('writes a pidfile, serves, and on SIGTERM removes socket and pidfile and exits 0', async () => {
    const h = await hostConfig();
    const d = await startRexd(h.rc, h.socket);
    expect(readFileSync(h.pidFile, 'utf8').trim()).toBe(String(d.child.pid));
    const logs = d.stderr().trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; host: string });
    expect(logs.find((l) => l.msg === 'rexd started')).toMatchObject({ host: `solo${seq}`, level: 30 });
    d.child.kill('SIGTERM');
    expect(await d.exit).toBe(0);
    expect(existsSync(h.socket)).toBe(false);
    expect(existsSync(h.pidFile)).toBe(false);
    expect(d.stderr()).toMatch(/"msg":"rexd stopped"/);
  });

  it('the socket directory is private (0700)', async () => {
    const h = await hostConfig();
    const d = await startRexd(h.rc, h.socket);
    const { statSync } = await import('node:fs');
    expect(statSync(join(h.dir, 'state', 'run')).mode & 0o777).toBe(0o700);
    d.child.kill('SIGTERM');
    await d.exit;
  });

  it('says which port is taken', async () => {
    const port = await freePort();
    const blocker: Server = await new Promise((r) => {
      const s = createServer().listen(port, '127.0.0.1', () => r(s));
    });
    try {
      const h = await hostConfig([], port);
      const r = await failingRexd(h.rc);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`rexd: rex.rc listen: error: 127.0.0.1:${port} is already in use`);
      expect(r.stderr).toMatch(/hint: another rexd or program holds it/);
      expect(existsSync(h.socket)).toBe(false); // nothing left behind
    } finally {
      blocker.close();
    }
  });

  it('refuses to start a second daemon on the same socket, naming the first one', async () => {
    const h = await hostConfig();
    const d = await startRexd(h.rc, h.socket);
    const rc2 = join(h.dir, 'second.rc');
    writeFileSync(rc2, readFileSync(h.rc, 'utf8').replace(`:${h.port}`, `:${await freePort()}`));
    const r = await failingRexd(rc2);
    expect(r.stderr).toContain(`another rexd (pid ${d.child.pid}) is already serving ${h.socket}`);
    // The first daemon is untouched.
    const c = await RexClient.connect({ socket: h.socket });
    expect((await c.ping()).hops).toBe(0);
    c.close();
  });

  it('removes a stale socket left by a daemon that crashed', async () => {
    const h = await hostConfig();
    const d = await startRexd(h.rc, h.socket);
    d.child.kill('SIGKILL');
    await d.exit;
    expect(existsSync(h.socket)).toBe(true);
    const d2 = await startRexd(h.rc, h.socket);
    expect(d2.stderr()).toMatch(/removing stale socket/);
  });

  it('listens on a non-loopback address, with TLS 1.3 and its own key', async () => {
    const port = await freePort();
    const h = await hostConfig([`listen : 0.0.0.0:${port}`]);
    const d = await startRexd(h.rc, h.socket);
    const { connect } = await import('node:tls');
    const { certInfo } = await import('../../src/keys/certs.js');
    const seen = await new Promise<{ protocol: string | null; id: string; name: string }>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, key: h.own.keyPem, cert: h.own.certPem }, () => {
        const info = certInfo(s.getPeerCertificate(true).raw, 'server');
        resolve({ protocol: s.getProtocol(), id: info.id, name: info.name });
        s.destroy();
      });
      s.once('error', reject);
    });
    expect(seen).toEqual({ protocol: 'TLSv1.3', id: h.own.id, name: h.own.name });
    // TLS 1.2 is refused.
    const tls12 = await new Promise<string>((resolve) => {
      const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, maxVersion: 'TLSv1.2' }, () => resolve('connected'));
      s.once('error', (e) => resolve(e.message));
    });
    expect(tls12).toMatch(/protocol version|alert/i);
    d.child.kill('SIGTERM');
    await d.exit;
  });

  it('refuses a TLS client whose address is not in rex.rc clients, before looking at its key', async () => {
    const h = await hostConfig(['clients : 10.99.0.0/16, 192.0.2.7']);
    const d = await startRexd(h.rc, h.socket);
    const p = await RawPeer.openTls({ host: '127.0.0.1', port: h.port, own: h.own });
    p.hello(1);
    await p.closed;
    const [m] = await p.waitFrames(1);
    expect(m).toMatchObject({ type: 'ERROR', code: 11, fatal: true, message: `address 127.0.0.1 is not in the clients list of solo${seq} (rex.rc clients: 10.99.0.0/16, 192.0.2.7)` });
    expect((await settledRows(h.socket, h.logDb, { kind: 'auth', outcome: 'denied' }))[0]).toMatchObject({ peer_address: '127.0.0.1', reason: expect.stringContaining('not in the clients list') as unknown as string });
    d.child.kill('SIGTERM');
    await d.exit;
  });

  it('refuses to start without its key and says how to make one', async () => {
    const h = await hostConfig();
    const { rmSync } = await import('node:fs');
    rmSync(h.own.keyFile);
    const r = await failingRexd(h.rc);
    expect(r.stderr).toContain(`rexd needs a key for ${h.own.name} and there is none in`);
    expect(r.stderr).toContain('rex_key --create');
  });

  it('refuses a private key that others can read, naming the file and the chmod to run', async () => {
    const h = await hostConfig();
    const { chmodSync } = await import('node:fs');
    chmodSync(h.own.keyFile, 0o644);
    const r = await failingRexd(h.rc);
    expect(r.stderr).toContain(`private key ${h.own.keyFile} is accessible by group or others (mode 0644); refusing to use it`);
    expect(r.stderr).toContain(`run: chmod 600 ${h.own.keyFile}`);
    expect(existsSync(h.socket)).toBe(false); // nothing ran
  });

  it('reports a bad rex.rc with file:line and does not start', async () => {
    const h = await hostConfig(['load-intervall : 1s']);
    const r = await failingRexd(h.rc);
    expect(r.stderr).toMatch(new RegExp(`${h.rc.replace(/[/.]/g, '\\$&')}:5: error: .*load-intervall.*did you mean "load-interval"`));
  });

  it('detaches without --foreground and is reachable when the command returns', async () => {
    const h = await hostConfig();
    const { stdout } = await run(process.execPath, [distBin('rexd'), '--config', h.rc], { timeout: 15_000 });
    expect(stdout).toMatch(/rexd: host solo\d+ started \(pid (\d+)\), socket /);
    const pid = Number(/pid (\d+)/.exec(stdout)![1]);
    const c = await RexClient.connect({ socket: h.socket });
    expect(c.host).toBe(`solo${seq}`);
    c.close();
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100 && existsSync(h.socket); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(h.socket)).toBe(false);
  });
});

describe('rexd and bad input', () => {
  let h: Awaited<ReturnType<typeof hostConfig>>;
  let d: Awaited<ReturnType<typeof startRexd>>;
  beforeAll(async () => {
    h = await hostConfig();
    d = await startRexd(h.rc, h.socket);
  });
  afterAll(killChildren);

  async function stillServing(): Promise<void> {
    const c = await RexClient.connect({ socket: h.socket });
    expect((await c.ping()).host).toBe(`solo${/\/h(\d+)\/rex\.rc$/.exec(h.rc)![1]}`);
    c.close();
    expect(d.child.exitCode).toBe(null);
  }

  it('closes on a plain TCP client that speaks no TLS, and logs the attempt', async () => {
    const p = await RawPeer.open({ host: '127.0.0.1', port: h.port });
    p.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await p.closed;
    expect(p.frames).toHaveLength(0);
    await stillServing();
    const rows = await settledRows(h.socket, h.logDb, { kind: 'auth', outcome: 'denied' });
    expect(rows.some((r) => /not a TLS client/.test(r.reason ?? '') && r.peer_address === '127.0.0.1')).toBe(true);
  });

  it('closes on a REX preface sent without TLS', async () => {
    const p = await RawPeer.open({ host: '127.0.0.1', port: h.port });
    p.hello(2, 'intruder');
    await p.closed;
    expect(p.frames).toHaveLength(0);
    await stillServing();
  });

  it('answers a frame before HELLO with a fatal UNEXPECTED and closes', async () => {
    const p = await RawPeer.open({ path: h.socket });
    p.write(PREFACE);
    p.send({ type: 'PING', stream: 1 });
    await p.closed;
    const [m] = await p.waitFrames(1);
    expect(m).toMatchObject({ type: 'ERROR', code: 5, fatal: true });
    expect((m as { message: string }).message).toMatch(/expected HELLO/);
  });

  it('refuses a version it does not speak, naming both ranges', async () => {
    const p = await RawPeer.open({ path: h.socket });
    p.write(PREFACE);
    p.send({ type: 'HELLO', stream: 0, versionMin: 2, versionMax: 3, role: 1 });
    await p.closed;
    const [m] = await p.waitFrames(1);
    expect(m).toMatchObject({ type: 'ERROR', code: 2, fatal: true, message: 'no common protocol version: peer speaks 2..3, this side 1..1' });
  });

  it('refuses an oversized frame from its header alone', async () => {
    const p = await RawPeer.open({ path: h.socket });
    p.hello();
    const header = Buffer.alloc(12);
    header.writeUInt32BE(0x7fffffff, 0);
    header.writeUInt16BE(0x10, 4);
    header.writeUInt32BE(1, 8);
    p.write(header);
    await p.closed;
    const ms = await p.waitFrames(2);
    expect(ms[0]).toMatchObject({ type: 'HELLO', version: 1 });
    expect(ms[1]).toMatchObject({ type: 'ERROR', code: 3, fatal: true });
    await stillServing();
  });

  it('answers an unknown message type with UNSUPPORTED and keeps the connection', async () => {
    const p = await RawPeer.open({ path: h.socket });
    p.hello();
    p.write(encodeFrame({ type: 0x0777, flags: 0, stream: 1, attrs: [] }));
    p.send({ type: 'LOAD_GET', stream: 3 });
    const ms = await p.waitFrames(3);
    expect(ms[1]).toMatchObject({ type: 'ERROR', stream: 1, code: 4, fatal: false });
    expect(ms[2]).toMatchObject({ type: 'LOAD', stream: 3 });
    p.close();
  });

  it('refuses a second HELLO and a request on stream 0', async () => {
    const p = await RawPeer.open({ path: h.socket });
    p.hello();
    p.send({ type: 'LOAD_GET', stream: 0 });
    const ms = await p.waitFrames(2);
    expect(ms[1]).toMatchObject({ type: 'ERROR', stream: 0, code: 5, fatal: false });
    p.send({ type: 'HELLO', stream: 0, versionMin: 1, versionMax: 1, role: 1 });
    await p.closed;
    expect((await p.waitFrames(3))[2]).toMatchObject({ type: 'ERROR', code: 5, fatal: true });
  });

  it.skipIf(process.getuid?.() !== 0)('serves only its own uid on the local socket, even when the directory lets others in (SO_PEERCRED)', async () => {
    const { chmodSync } = await import('node:fs');
    const runDir = join(h.dir, 'state', 'run');
    chmodSync(tmp, 0o711); // mkdtemp made it 0700
    chmodSync(join(h.dir, 'state'), 0o711);
    chmodSync(runDir, 0o711);
    chmodSync(h.socket, 0o777);
    try {
      const r = await run(process.execPath, [distBin('rex'), 'ping', '--socket', h.socket], { uid: 65534, gid: 65534, env: { PATH: process.env.PATH ?? '', HOME: '/tmp' } }).catch((e: { code: number; stderr: string }) => e);
      expect((r as { code: number }).code).toBe(1);
      expect((r as { stderr: string }).stderr).toContain('DENIED: uid 65534 may not use this rexd: it acts only for its owner, uid 0');
    } finally {
      chmodSync(runDir, 0o700);
      chmodSync(join(h.dir, 'state'), 0o700);
      chmodSync(tmp, 0o700);
    }
    expect((await settledRows(h.socket, h.logDb, { identity: 'uid 65534' }))[0]).toMatchObject({ kind: 'auth', outcome: 'denied', peer_address: 'local' });
    await stillServing();
  });

  it('a TLS client without a certificate is refused at HELLO', async () => {
    const p = await RawPeer.openTls({ host: '127.0.0.1', port: h.port });
    p.hello(1);
    await p.closed;
    const [m] = await p.waitFrames(1);
    expect(m).toMatchObject({ type: 'ERROR', code: 11, fatal: true });
    expect((m as { message: string }).message).toMatch(/no client certificate/);
  });

  it('survives 300 connections of random and mutated bytes', async () => {
    const hello = Buffer.concat([PREFACE, encodeFrame({ type: 1, flags: 0, stream: 0, attrs: [{ tag: 1, kind: 'uint', value: 1n }, { tag: 2, kind: 'uint', value: 1n }, { tag: 4, kind: 'uint', value: 1n }] })]);
    const load = encodeFrame({ type: 0x20, flags: 0, stream: 1, attrs: [] });
    const samples = fc.sample(
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
        fc.tuple(fc.uint8Array({ maxLength: 100 }), fc.nat()).map(([b, n]) => Buffer.concat([hello, load.subarray(0, n % (load.length + 1)), Buffer.from(b)])),
        fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([pos, v]) => {
          const x = Buffer.concat([hello, load]);
          x[pos % x.length] = v;
          return x;
        }),
      ),
      { numRuns: runs(300) },
    );
    for (const bytes of samples) {
      const p = await RawPeer.open({ path: h.socket });
      p.write(bytes);
      await new Promise((r) => setTimeout(r, 2)); // sleep-ok: lets each input arrive as its own read
      p.close();
    }
    await stillServing();
  });
});
