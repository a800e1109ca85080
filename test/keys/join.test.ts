/**
 * Joining a cluster (docs/KEYS.md "Joining a cluster") on real rexds: three
 * hosts with keys and no trust, each rex.rc naming only itself, so that every
 * address a host learns comes from the joins. The refusals come first (a token
 * used by another host's key, replayed, expired; an introduction by a user or
 * program key; an introduction or a join under a name that has another key);
 * then the cluster is built with exactly two `rex_key --join` commands (and
 * the two token issues), and every pair pings both ways.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster, type ClusterHost } from '../../src/cluster/cluster.js';
import { addGrant, invite } from '../../src/keys/admin.js';
import { HostsFile } from '../../src/keys/hosts.js';
import { currentUser } from '../../src/keys/identity.js';
import { KeyStore } from '../../src/keys/store.js';
import { pinKnownHost } from '../../src/keys/tls.js';
import { TokenStore } from '../../src/keys/tokens.js';
import { queryLog } from '../../src/log/txlog.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { logBarrier } from '../helpers/logsync.js';
import { runWithInput } from '../helpers/stdin.js';
import { Outsiders } from '../helpers/outsiders.js';

const exec = promisify(execFile);
const U = currentUser();
let dir: string;
let cluster: LocalCluster;
let users: Outsiders;
let A: ClusterHost;
let B: ClusterHost;
let G: ClusterHost;
/** alpha's join token for beta, first presented (and refused) with gamma's key. */
let betaToken: string;

const at = (h: ClusterHost) => `${h.name}@${h.address}:${h.port}`;
const store = (h: ClusterHost) => new KeyStore(h.stateDir);

/** `rex_key ARGS` as host `h`, with `input` on stdin; never throws. */
function rexKey(h: ClusterHost, args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return runWithInput([process.execPath, distBin('rex_key'), '--config', h.rcFile, ...args], input);
}

/** `rex_key --invite --join HOST` on `on`: the token it prints. */
async function joinToken(on: ClusterHost, host: string, ...more: string[]): Promise<string> {
  const r = await rexKey(on, ['--invite', '--join', host, ...more]);
  expect(r.code, r.stderr).toBe(0);
  return /^ {2}(rex1:\S+)$/m.exec(r.stdout)![1]!;
}

const known = (h: ClusterHost) => store(h).known().map((k) => `${k.name} ${k.id}`).sort();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rex-join-'));
  users = new Outsiders(join(dir, 'users'));
  cluster = await LocalCluster.up({ dir, hosts: 3, netns: false, trust: 'none', loadInterval: '200ms', peerTimeout: '1s', logLevel: 'debug', testMode: true });
  [A, B, G] = cluster.hosts as [ClusterHost, ClusterHost, ClusterHost];
  // No shared servers list: each host's rex.rc names only itself.
  const rc = join(dir, 'cluster.rc');
  writeFileSync(rc, readFileSync(rc, 'utf8').replace(/^servers : .*$/m, '# servers: each host names only itself; the rest comes from rex_key --join'));
  for (const h of cluster.hosts) {
    writeFileSync(h.rcFile, `${readFileSync(h.rcFile, 'utf8')}servers : ${at(h)}\n`);
    expect((await rexKey(h, ['--create'])).code).toBe(0);
  }
  await cluster.startAll();
}, 120_000);

afterAll(async () => {
  await cluster?.down();
  rmSync(dir, { recursive: true, force: true });
});

describe('rex_key --join: refusals', () => {
  it('a join token for beta presented with gamma\'s key is refused and stays unspent', async () => {
    betaToken = await joinToken(A, 'beta');
    const r = await rexKey(G, ['--join', at(A)], `${betaToken}\n`);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`join refused: the token was issued for beta.${U}, not for gamma.${U}; the token was not used`);
    expect(known(A)).toEqual([]);
    expect(new TokenStore(store(A).tokensFile).pending().some((t) => t.binding?.subject === `beta.${U}` && t.binding.join)).toBe(true);
  });

  it('an expired join token is refused', async () => {
    const a = store(A);
    const own = a.load(A.identity);
    // Issued an hour ago for ten minutes, exactly as rex_key would have written it then.
    const { token } = new TokenStore(a.tokensFile).issue(own.name, own.id, 10 * 60_000, { subject: G.identity, join: true }, Date.now() - 3_600_000);
    const r = await rexKey(G, ['--join', at(A), '--token', token]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/join refused: the enrollment token expired at \S+/);
  });

  it('an enrollment token (--invite --for) does not join, and a join token does not enroll', async () => {
    const a = store(A);
    const { token } = invite(a, a.load(A.identity), 60_000, { subject: G.identity });
    const r = await rexKey(G, ['--join', at(A), '--token', token]);
    expect(r.stderr).toContain(`join refused: the token was issued to enroll gamma.${U} (rex_key --invite --for), not to join the cluster`);
    const jt = await joinToken(A, 'gamma');
    const d = await rexKey(G, ['--distribute', '--host', at(A), '--token', jt]);
    expect(d.stdout).toContain('the token was issued for joining the cluster: run rex_key --join');
    expect(known(A)).toEqual([]);
  });

  it('--invite --join takes a host name, not this host; --join checks the token is from that host', async () => {
    expect((await rexKey(A, ['--invite', '--join', `beta.${U}`])).stderr).toContain(`--join beta.${U}: not a host name`);
    expect((await rexKey(A, ['--invite', '--join', 'alpha'])).stderr).toContain('--join alpha is this host');
    const token = await joinToken(A, 'gamma');
    expect((await rexKey(G, ['--join', at(B), '--token', token])).stderr).toContain(`the token was issued by alpha.${U}, not by a rexd of host beta`);
    expect((await rexKey(G, ['--join', at(A)], '')).stderr).toContain('needs the join token on stdin (or --token TOKEN)');
  });
});

describe('rex_key --join: a 3-host cluster in two commands', () => {
  it('beta joins through alpha; the token cannot be replayed', async () => {
    // The token refused above (presented by gamma) is still good for beta.
    const token = betaToken;
    const r = await rexKey(B, ['--join', at(A)], `${token}\n`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`alpha: now knows beta.${U} (key ${store(B).load(B.identity).id}) as a peer; server alpha.${U} key ${store(A).load(A.identity).id} verified against the token`);
    expect(r.stdout).toContain(`(alpha.${U} named no other member)`);
    const again = await rexKey(B, ['--join', at(A)], `${token}\n`);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('the enrollment token was already used');
  });

  it('a joining host cannot take an existing member\'s name', async () => {
    // Another key that calls itself beta.USER, with a genuine join token for beta.
    const token = await joinToken(A, 'beta');
    const before = known(A);
    const dirI = join(dir, 'impostor');
    writeFileSync(join(dir, 'impostor.rc'), `host-name : beta\nstate-directory : ${dirI}\nservers : beta@127.0.0.1:9\n`);
    await new KeyStore(dirI).create(B.identity);
    const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(process.execPath, [distBin('rex_key'), '--config', join(dir, 'impostor.rc'), '--join', at(A), '--token', token], (err, _o, stderr) => resolve({ code: err ? 1 : 0, stderr }));
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`join refused: beta.${U} is already a member with key ${store(B).load(B.identity).id}, and joining never replaces a member's key; the token was not used`);
    expect(known(A)).toEqual(before);
  });

  it('gamma joins through beta: every member learns it, it learns every member, and all pairs ping both ways', async () => {
    const token = await joinToken(B, 'gamma');
    const r = await rexKey(G, ['--join', at(B)], `${token}\n`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`alpha.${U}: key ${store(A).load(A.identity).id} at ${A.address}:${A.port}, introduced by beta.${U}`);
    // Each host knows the two others' rexds, and nothing else.
    for (const h of cluster.hosts) {
      expect(store(h).known().map((k) => k.name).sort()).toEqual(cluster.hosts.filter((o) => o !== h).map((o) => o.identity).sort());
      expect(new HostsFile(h.stateDir).read().map((m) => `${m.name}@${m.address}:${m.port}`).sort()).toEqual(cluster.hosts.filter((o) => o !== h).map(at).sort());
    }
    expect(readFileSync(join(A.stateDir, 'hosts'), 'utf8')).toMatch(new RegExp(`^gamma@${G.address}:${G.port} identity=gamma\\.${U} id=\\S+ via=introduced-by=beta\\.${U} added=`, 'm'));
    expect((await rexKey(A, ['--list'])).stdout).toMatch(new RegExp(`gamma +${G.address}:${G.port} +gamma\\.${U} +introduced-by=beta\\.${U}`));
    // No rexd was restarted: each linked to the members the joins named (its rex.rc names only itself).
    await cluster.waitAllReachable(30_000);
    for (const from of cluster.hosts) {
      for (const to of cluster.hosts) {
        if (to === from) continue;
        const { stdout } = await exec(process.execPath, [distBin('rex'), 'ping', '-c', from.rcFile, to.name, '-n', '1'], { timeout: 30_000 });
        expect(stdout).toMatch(new RegExp(`reply from ${to.name}: seq=1 hops=1`));
      }
    }
  }, 120_000);

  it('a user key of the joined host is known but refused until its owner grants it', async () => {
    const bob = await users.enrolled(`gamma.bob`, { store: store(A), name: A.identity, entry: { name: 'alpha', address: A.address, port: A.port } });
    const connect = () => RexClient.connectRemote({ host: A.address, port: A.port, own: bob.own, pin: pinKnownHost(bob.store, 'alpha', U) });
    const c = await connect().catch((e: Error) => e);
    const refusal = c instanceof RexClient ? await c.ping().then(() => 'answered', (e: Error) => e.message) : c.message;
    if (c instanceof RexClient) c.close();
    expect(refusal).toContain(`gamma.bob (key ${bob.own.id}) has no grant on alpha.${U}`);
    addGrant(store(A), 'gamma.bob');
    const ok = await connect();
    try {
      expect((await ok.ping()).host).toBe('alpha');
    } finally {
      ok.close();
    }
  });
});

describe('INTRODUCE', () => {
  const cert = async (name: string) => Buffer.from((await users.key(name)).own.certPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');

  it('is refused from a user key or a program key, even a granted one, and logged', async () => {
    const b = store(B);
    for (const name of [`alpha.${U}.tool`, 'alpha.mallory']) {
      const who = await users.key(name, { store: b, name: B.identity, entry: { name: 'beta', address: B.address, port: B.port } });
      b.addKnown(who.own.certPem, 'test');
      addGrant(b, name);
      const c = await RexClient.connectRemote({ host: B.address, port: B.port, own: who.own, pin: pinKnownHost(who.store, 'beta', U) });
      try {
        const e = await c.conn.request({ type: 'INTRODUCE', cert: await cert(`delta.${U}`), address: '127.0.0.1', port: 9 }).then(() => 'accepted', (x: Error) => x.message);
        expect(e).toMatch(new RegExp(`DENIED: introduction refused: ${name.replace(/\./g, '\\.')}(\\.tool)? \\(key \\S+\\) is not a member's rexd; only another host's rexd of this cluster \\(HOST\\.${U}\\) may introduce a host`));
      } finally {
        c.close();
      }
    }
    expect(b.known().some((k) => k.name === `delta.${U}`)).toBe(false);
    const db = join(B.stateDir, 'rex-log.sqlite');
    await logBarrier(B.socket, db);
    const rows = queryLog(db, { outcome: 'denied', limit: 1000 }).filter((x) => /introduction refused/.test(x.reason ?? ''));
    expect(rows.map((x) => x.identity).sort()).toEqual(expect.arrayContaining(['alpha.mallory', `alpha.${U}.tool`]));
  });

  it('from a member, never replaces a known key, and the key stays the one in use', async () => {
    const a = store(A);
    const gammaBefore = store(B).known().find((k) => k.name === G.identity)!.id;
    const c = await RexClient.connectRemote({ host: B.address, port: B.port, own: a.load(A.identity), pin: pinKnownHost(a, 'beta', U) });
    try {
      const e = await c.conn.request({ type: 'INTRODUCE', cert: await cert(G.identity), address: '127.0.0.1', port: 9 }).then(() => 'accepted', (x: Error) => x.message);
      expect(e).toMatch(new RegExp(`introduction by alpha\\.${U} refused: gamma\\.${U} already has a known key \\(${gammaBefore}\\), and an introduction never replaces a known key`));
      // A program key is never introduced, whoever introduces it.
      const p = await c.conn.request({ type: 'INTRODUCE', cert: await cert(`delta.${U}.tool`), address: '127.0.0.1', port: 9 }).then(() => 'accepted', (x: Error) => x.message);
      expect(p).toContain(`delta.${U}.tool is not a host's rexd of this cluster`);
    } finally {
      c.close();
    }
    expect(store(B).known().filter((k) => k.name === G.identity).map((k) => k.id)).toEqual([gammaBefore]);
    expect(new HostsFile(B.stateDir).read().find((m) => m.name === 'gamma')).toMatchObject({ address: G.address, port: G.port });
    const { stdout } = await exec(process.execPath, [distBin('rex'), 'ping', '-c', B.rcFile, 'gamma', '-n', '1'], { timeout: 30_000 });
    expect(stdout).toMatch(/reply from gamma/);
  });
});
