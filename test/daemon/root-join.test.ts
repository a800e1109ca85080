/**
 * Joining between root installations (docs/ROOT.md section 7): three hosts on loopback, each a root rexd
 * with its host key and a host controller running as rex.rc host-user. Nobody copies a certificate: beta
 * and gamma each join through alpha with one command as root (`rex_key --join`) after alpha's root issued
 * a token bound to their name, and alpha introduces gamma to beta. Then a user's job goes from gamma to
 * beta, hosts that never exchanged anything but through the join. The attacks: a token used by another
 * host, a token used twice, a host key that asks the host controller for work, the host controller's
 * account as a local client. Root only (CI runs as root).
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../../src/cluster/cluster.js';
import { HostsFile } from '../../src/keys/hosts.js';
import { KeyStore } from '../../src/keys/store.js';
import { readablePackage } from '../helpers/readable-package.js';
import { startMonitor, stopMonitors } from '../helpers/root.js';
import { createTestUser, isRoot, notRootReason, removeTestUser, type TestUser } from '../helpers/users.js';

if (!isRoot) console.warn(`root installation join tests skipped: ${notRootReason}`);

const HOSTS = ['alpha', 'beta', 'gamma'] as const;
type Host = (typeof HOSTS)[number];
const USERS = ['rextest-rj-host', 'rextest-rj-alice'];

describe.skipIf(!isRoot)('joining between root installations: one command per host, as root', () => {
  let dir: string;
  let pkg: ReturnType<typeof readablePackage>;
  let hostUser: TestUser;
  let alice: TestUser;
  const daemons: ChildProcess[] = [];
  const logs: Record<string, string> = {};
  const rc = {} as Record<Host, string>;
  const state = {} as Record<Host, string>;
  const port = {} as Record<Host, number>;

  function run(program: string, args: string[], opts: { user?: string; input?: string; env?: Record<string, string> } = {}): { status: number | null; stdout: string; stderr: string } {
    const cmd = [process.execPath, join(pkg.root, 'dist', 'bin', `${program}.js`), ...args];
    const r = spawnSync(opts.user ? 'runuser' : cmd[0]!, opts.user ? ['-u', opts.user, '--', ...cmd] : cmd.slice(1), {
      encoding: 'utf8',
      timeout: 90_000,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/', ...opts.env },
      cwd: '/',
      ...(opts.input !== undefined ? { input: opts.input } : {}),
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  /** `rex_key --invite --join HOST` as root on `on`; returns the token line. */
  function invite(on: Host, host: string): string {
    const r = run('rex_key', ['--invite', '--join', host, '--config', rc[on]]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const token = r.stdout.split('\n').map((l) => l.trim()).find((l) => l.startsWith('rex1:'));
    expect(token, r.stdout).toBeDefined();
    return token!;
  }

  /** `rex_key --join alpha@127.0.0.1:PORT` as root on `on`, the token on stdin. */
  function join_(on: Host, token: string): { status: number | null; stdout: string; stderr: string } {
    return run('rex_key', ['--join', `alpha@127.0.0.1:${port.alpha}`, '--config', rc[on]], { input: `${token}\n` });
  }

  /** The host names a host's controller store knows keys of. */
  function knownHosts(h: Host): string[] {
    return new KeyStore(join(state[h], 'host'))
      .known()
      .map((k) => k.name)
      .sort();
  }

  beforeAll(async () => {
    pkg = readablePackage();
    for (const u of USERS) spawnSync('pkill', ['-KILL', '-u', u]);
    hostUser = createTestUser('rextest-rj-host');
    alice = createTestUser('rextest-rj-alice');
    dir = mkdtempSync(join(tmpdir(), 'rex-root-join-'));
    chmodSync(dir, 0o755);
    for (const h of HOSTS) port[h] = await freePort();
    for (const h of HOSTS) {
      state[h] = join(dir, h, 'state');
      mkdirSync(join(dir, h, 'run'), { recursive: true });
      rc[h] = join(dir, `${h}.rc`);
      // Each host names only itself: the others it learns by joining.
      writeFileSync(
        rc[h],
        [`host-name : ${h}`, 'installation : root', `host-user : ${hostUser.name}`, `servers : ${h}@127.0.0.1:${port[h]}`, `state-directory : ${state[h]}`, `socket : ${join(dir, h, 'run', 'rexd.sock')}`, 'load-interval : 500ms', ''].join('\n'),
      );
      chmodSync(rc[h], 0o644);
      const made = run('rex_key', ['--create', '--host-key', '--config', rc[h]]);
      if (made.status !== 0) throw new Error(`rex_key --create --host-key on ${h}: ${made.stderr}`);
    }
    for (const h of HOSTS) {
      logs[h] = '';
      daemons.push(await startMonitor(pkg.root, rc[h], (t) => (logs[h] += t)));
    }
  }, 180_000);

  afterAll(async () => {
    await stopMonitors(daemons);
    for (const u of USERS) {
      spawnSync('pkill', ['-KILL', '-u', u]);
      removeTestUser(u);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    pkg?.remove();
  }, 60_000);

  // claim: root.join
  it('joins beta and gamma through alpha with one command each; alpha introduces gamma to beta; files are the host user\'s', () => {
    const forBeta = invite('alpha', 'beta');
    const b = join_('beta', forBeta);
    expect(b.stderr).toBe('');
    expect(b.status).toBe(0);
    expect(b.stdout).toMatch(/Joining the cluster of alpha \(key [A-Z0-9-]+\) at alpha@127\.0\.0\.1:\d+ as beta/);

    const forGamma = invite('alpha', 'gamma');
    const g = join_('gamma', forGamma);
    expect(g.stderr).toBe('');
    expect(g.status).toBe(0);
    expect(g.stdout).toMatch(/beta: key [A-Z0-9-]+ at 127\.0\.0\.1:\d+, introduced by alpha/);

    expect(knownHosts('alpha')).toEqual(['beta', 'gamma']);
    expect(knownHosts('beta')).toEqual(['alpha', 'gamma']);
    expect(knownHosts('gamma')).toEqual(['alpha', 'beta']);
    expect(new HostsFile(join(state.beta, 'host')).read().map((m) => `${m.name} ${m.via}`).sort()).toEqual(['alpha join', 'gamma introduced-by=alpha']);
    // Everything in the host controllers' stores was written by rex.rc host-user (rex_key drops to it, as does the controller).
    for (const h of HOSTS) {
      const top = join(state[h], 'host');
      const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? [join(d, e.name), ...walk(join(d, e.name))] : [join(d, e.name)]));
      for (const f of [top, ...walk(top)]) expect(statSync(f).uid, f).toBe(hostUser.uid);
    }
    // The host controller never holds the host's private key.
    for (const h of HOSTS) expect(readdirSync(join(state[h], 'host', 'keys')).filter((f) => f.endsWith('.key'))).toEqual([]);
  }, 180_000);

  // claim: root.join-then-run
  it("runs alice's job from gamma on beta, which only the join made peers", () => {
    const rr = run('rex', ['run', '--host', 'beta', '/usr/bin/id', '-un'], { user: alice.name, env: { REX_CONFIG: rc.gamma } });
    expect(rr.stderr).toBe('');
    expect(rr.status).toBe(0);
    expect(rr.stdout.trim()).toBe(alice.name);
  }, 120_000);

  // claim: root.join-token-bound
  it("refuses a join token used by another host than the one it names, and a token used twice, and says so", () => {
    const forDelta = invite('alpha', 'delta');
    // gamma (already a member, with its own key) presents delta's token: bound to delta's name, it is refused and not spent.
    const stolen = join_('gamma', forDelta);
    expect(stolen.status).not.toBe(0);
    expect(stolen.stderr).toMatch(/join refused: the token was issued for delta, not for gamma; the token was not used/);
    const forBeta = invite('alpha', 'beta');
    expect(join_('beta', forBeta).status).toBe(0); // a member joining again with a fresh token is harmless
    const again = join_('beta', forBeta);
    expect(again.status).not.toBe(0);
    expect(again.stderr).toMatch(/join refused: the enrollment token was already used at .*; tokens are single use/);
  }, 120_000);

  // claim: root.host-controller-no-work
  it('serves a host key nothing but joining at the host controller: a member gets no work, a stranger may not introduce', async () => {
    const { connectPinned } = await import('../../src/keys/tls.js');
    const { Connection } = await import('../../src/protocol/connection.js');
    /** A connection to alpha's host controller with `own`'s key, handshaken. */
    const open = async (own: Awaited<ReturnType<KeyStore['create']>>) => {
      const { sock } = await connectPinned({ host: '127.0.0.1', port: port.alpha, own, pin: () => undefined, timeoutMs: 10_000, label: 'alpha' });
      sock.write('REX-ROUTE host\n');
      const conn = new Connection(sock, { initiator: true, local: { role: 'peer', host: own.name, software: 'test' }, label: 'alpha', timeoutMs: 30_000 });
      await conn.handshake();
      return conn;
    };
    const answer = (conn: InstanceType<typeof Connection>, m: Record<string, unknown>) =>
      conn.request(m as never, 30_000).then(
        (x) => JSON.stringify(x),
        (e: Error) => e.message,
      );
    // beta's host key is known at alpha: its host controller still runs nothing for it.
    const member = await open(new KeyStore(state.beta).load('beta'));
    expect(await answer(member, { type: 'EXEC', path: '/usr/bin/id', argv: ['id'] })).toMatch(/UNSUPPORTED: EXEC is not a request rexd serves/);
    member.close('done');
    // A host key alpha never saw may only JOIN with a token: it cannot introduce a host.
    const stranger = await new KeyStore(join(dir, 'stranger')).create('epsilon');
    const conn = await open(stranger);
    const cert = new KeyStore(join(dir, 'stranger')).load('epsilon').certPem;
    const { certInfo } = await import('../../src/keys/certs.js');
    expect(await answer(conn, { type: 'INTRODUCE', cert: certInfo(cert, 'epsilon').der, address: '127.0.0.1', port: 1 })).toMatch(/DENIED/);
    conn.close('done');
    expect(knownHosts('alpha')).toEqual(['beta', 'gamma']);
  }, 60_000);

  // claim: root.revoke-host
  it("revokes a host key with one command as root: the host's open link ends, its users' jobs are refused, no introduction brings it back", async () => {
    // alice's controller on gamma keeps a peer link to beta open through the two monitors.
    const before = run('rex', ['run', '--host', 'beta', '/usr/bin/id', '-un'], { user: alice.name, env: { REX_CONFIG: rc.gamma } });
    expect(before.status, before.stderr).toBe(0);
    const r = run('rex_key', ['--revoke', 'gamma', '--config', rc.beta]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/no longer trusted: host key gamma [A-Z0-9-]+/);
    expect(knownHosts('beta')).toEqual(['alpha']);
    expect(new HostsFile(join(state.beta, 'host')).read().map((m) => m.name)).toEqual(['alpha']);
    // The open connection from gamma ends at once (the monitor follows known/), and is logged.
    await vi.waitFor(() => expect(logs.beta).toMatch(/a host key is no longer known; its connection ends/), { timeout: 10_000, interval: 100 });
    const after = run('rex', ['run', '--host', 'beta', '/usr/bin/id', '-un'], { user: alice.name, env: { REX_CONFIG: rc.gamma } });
    expect(after.status).not.toBe(0);
    expect(after.stdout).toBe('');
    // A member's introduction does not bring it back: the revoke line stands in beta's host controller store.
    expect(readFileSync(join(state.beta, 'host', 'grants'), 'utf8')).toMatch(/^revoke [A-Z0-9-]+ name=gamma at=/m);
  }, 120_000);

  it("refuses the host controller's account as a local client", () => {
    const r = run('rex', ['hosts'], { user: hostUser.name, env: { REX_CONFIG: rc.alpha } });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/is the host controller's account \(rex\.rc host-user\), not a user of REX/);
  }, 60_000);
});
