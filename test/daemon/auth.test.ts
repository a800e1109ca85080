/**
 * Who may use a host: the refusals of the identity issue, each checked for its
 * message, for nothing having run, and for its line in the transaction log.
 * Runs a two-host loopback cluster (enrolled and granted by the fixture) and
 * talks to beta's TLS port directly with keys the tests make.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { addGrant, invite, revokeGrants } from '../../src/keys/admin.js';
import { certificateFor } from '../../src/keys/certs.js';
import { enrollWith } from '../../src/keys/enroll.js';
import { KeyStore, writeFileAtomic, type OwnIdentity } from '../../src/keys/store.js';
import { pinKnownHost } from '../../src/keys/tls.js';
import { parseToken, TokenStore } from '../../src/keys/tokens.js';
import { queryLog, type LogRow } from '../../src/log/txlog.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { RawPeer } from '../helpers/raw.js';
import { logBarrier, settledRows } from '../helpers/logsync.js';
import { Outsiders, type Outsider, type Target } from '../helpers/outsiders.js';

const run = promisify(execFile);

describe('authentication and authorization on the TLS port', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let tmp: string;
  let users: Outsiders;
  let beta: { store: KeyStore; host: string; port: number; logDb: string; entry: { name: string; address: string; port: number } };

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2, { netns: false }));
    await cluster.waitAllReachable();
    tmp = mkdtempSync(join(tmpdir(), 'rex-auth-'));
    users = new Outsiders(tmp);
    const b = cluster.host('beta');
    beta = { store: new KeyStore(b.stateDir), host: b.address, port: b.port, logDb: join(b.stateDir, 'rex-log.sqlite'), entry: { name: 'beta', address: b.address, port: b.port } };
  });
  afterAll(async () => {
    await stop?.();
    rmSync(tmp, { recursive: true, force: true });
  });

  /** Beta as the outsiders meet it. */
  const target = (): Target => ({ store: beta.store, name: cluster.host('beta').identity, entry: beta.entry });

  /** A user's key store somewhere else, with a key for `name` and beta's key trusted (so the client can pin it). */
  function outsider(name: string): Promise<Outsider> {
    return users.key(name, target());
  }

  /** Enrolls `name` with beta through a real invite token; returns its store and key. */
  async function enrolled(name: string): Promise<Outsider> {
    const { store, own, result } = await users.enrolled(name, target());
    expect(result).toMatchObject({ name, id: own.id, server: cluster.host('beta').identity, already: false });
    return { store, own };
  }

  function connect(who: { store: KeyStore; own: OwnIdentity }, program?: string): Promise<RexClient> {
    return RexClient.connectRemote({ host: beta.host, port: beta.port, own: who.own, pin: pinKnownHost(who.store, 'beta'), ...(program ? { program } : {}) });
  }

  /** Beta's log rows about key `id`, once everything beta recorded before has been written. */
  async function logOf(id: string): Promise<LogRow[]> {
    return settledRows(cluster.host('beta').socket, beta.logDb, { identity: id, limit: 1000 });
  }

  function ranNothing(rows: LogRow[]): void {
    expect(rows.filter((r) => r.kind === 'transaction' && r.outcome === 'ok')).toEqual([]);
  }

  it('an enrolled and granted key can use the host, and its transactions are logged', async () => {
    const carol = await enrolled('carol.root');
    addGrant(beta.store, 'carol.root');
    const c = await connect(carol);
    try {
      expect(await c.ping()).toMatchObject({ host: 'beta', hops: 0 });
    } finally {
      c.close();
    }
    const rows = await logOf(carol.own.id);
    expect(rows.find((r) => r.kind === 'transaction')).toMatchObject({ identity: 'carol.root', message_type: 'PING', outcome: 'ok', peer_address: '127.0.0.1' });
    expect(rows.find((r) => r.kind === 'transaction')!.bytes_in).toBeGreaterThan(12);
    expect(rows.some((r) => r.kind === 'enroll' && r.outcome === 'ok')).toBe(true);
    expect(rows.some((r) => r.kind === 'auth' && r.outcome === 'ok')).toBe(true);
  });

  it('refuses an unknown key and says how to enroll', async () => {
    const mallory = await outsider('mallory.root');
    const c = await connect(mallory);
    await expect(c.ping()).rejects.toThrow(/DENIED: unknown key [A-Z2-7-]+ \(claims to be mallory\.root\); beta\.root has never enrolled it\. Ask the owner of beta to run `rex_key --invite --for mallory\.root` there/);
    c.close();
    const rows = await logOf(mallory.own.id);
    ranNothing(rows);
    expect(rows.find((r) => r.kind === 'auth')).toMatchObject({ outcome: 'denied', identity: 'mallory.root', peer_address: '127.0.0.1' });
  });

  it('refuses an enrolled key whose certificate claims another identity\'s name', async () => {
    const carol = await enrolled('carol2.root');
    addGrant(beta.store, 'carol2.root');
    const forged = { ...carol.own, certPem: await certificateFor(carol.own.keyPem, 'alpha.root') };
    await expect(connect({ store: carol.store, own: forged })).rejects.toThrow(
      `key ${carol.own.id} is known here as carol2.root, but its certificate claims to be alpha.root; refusing the impostor`,
    );
    // The honest certificate, but HELLO claims to be host alpha.
    const p = await RawPeer.openTls({ host: beta.host, port: beta.port, own: carol.own });
    p.hello(2, 'alpha');
    p.send({ type: 'PING', stream: 1 });
    await p.closed;
    const ms = await p.waitFrames(1);
    expect(ms[0]).toMatchObject({ type: 'ERROR', code: 11, fatal: true, message: `HELLO says host "alpha", but key ${carol.own.id} belongs to carol2.root` });
    expect(ms.some((m) => m.type === 'PONG')).toBe(false);
    const rows = await logOf(carol.own.id);
    ranNothing(rows);
    expect(rows.filter((r) => r.kind === 'auth' && r.outcome === 'denied').map((r) => r.reason)).toEqual(
      expect.arrayContaining([expect.stringContaining('certificate claims to be alpha.root'), expect.stringContaining('HELLO says host "alpha"')]),
    );
  });

  it('a revoked key loses its open session at once and is refused afterwards', async () => {
    const dave = await enrolled('dave.root');
    addGrant(beta.store, 'dave.root');
    const c = await connect(dave);
    expect((await c.ping()).host).toBe('beta');
    const closed = new Promise<Error>((r) => c.conn.once('close', (e: Error) => r(e)));
    const r = revokeGrants(beta.store, 'dave.root');
    expect(r.removed).toEqual(['grant dave.root']);
    expect(r.revoked[0]).toMatch(new RegExp(`^revoke ${dave.own.id} name=dave.root at=`));
    // Mid-session: rexd notices the grants file change and closes the connection with the reason.
    expect((await closed).message).toMatch(/DENIED: access revoked: key [A-Z2-7-]+ \(dave\.root\) was revoked at/);
    const c2 = await connect(dave);
    await expect(c2.ping()).rejects.toThrow(/DENIED: key [A-Z2-7-]+ \(dave\.root\) was revoked at \S+ on beta\.root/);
    c2.close();
    const rows = await logOf(dave.own.id);
    expect(rows.filter((x) => x.kind === 'transaction' && x.outcome === 'ok')).toHaveLength(1); // only the ping before the revocation
    expect(rows.find((x) => x.kind === 'session')).toMatchObject({ outcome: 'denied', reason: expect.stringContaining('access revoked') as unknown as string });
    expect(rows.some((x) => x.kind === 'auth' && x.outcome === 'denied' && /was revoked/.test(x.reason ?? ''))).toBe(true);
  });

  it('refuses a key whose grant has expired', async () => {
    const erin = await enrolled('erin.root');
    addGrant(beta.store, 'erin.root', { expires: Date.now() - 60_000 });
    const c = await connect(erin);
    await expect(c.ping()).rejects.toThrow(/DENIED: the grant for erin\.root \(key [A-Z2-7-]+\) on beta\.root expired at \d{4}-/);
    c.close();
    const rows = await logOf(erin.own.id);
    ranNothing(rows);
    expect(rows.some((x) => x.outcome === 'denied' && /expired at/.test(x.reason ?? ''))).toBe(true);
  });

  it('refuses a program the grant does not cover, and serves the one it does', async () => {
    const fred = await enrolled('fred.root');
    addGrant(beta.store, 'fred.root', { program: 'render' });
    const bad = await connect(fred, 'mine');
    await expect(bad.ping()).rejects.toThrow('DENIED: program mine of fred.root is not granted on beta.root: its grants cover only program render');
    bad.close();
    const none = await connect(fred);
    await expect(none.ping()).rejects.toThrow('a transaction without a program of fred.root is not granted on beta.root');
    none.close();
    const good = await connect(fred, 'render');
    expect((await good.ping()).host).toBe('beta');
    good.close();
    const rows = await logOf(fred.own.id);
    expect(rows.filter((x) => x.kind === 'transaction' && x.outcome === 'ok').map((x) => x.identity)).toEqual(['fred.root.render']);
    expect(rows.filter((x) => x.outcome === 'denied').map((x) => x.identity)).toEqual(expect.arrayContaining(['fred.root.mine', 'fred.root']));
  });

  it('a program key is its own identity: granted for its program, which a HELLO cannot change', async () => {
    const olga = await enrolled('olga.root.render');
    addGrant(beta.store, 'olga.root', { program: 'render' });
    const c = await connect(olga, 'shell'); // the key says render; the HELLO claim is ignored
    expect((await c.ping()).host).toBe('beta');
    c.close();
    const rows = await logOf(olga.own.id);
    expect(rows.find((r) => r.kind === 'transaction')).toMatchObject({ identity: 'olga.root.render', outcome: 'ok' });
    // A grant for another program does not cover it.
    revokeGrants(beta.store, 'olga.root', { program: 'render' });
    addGrant(beta.store, 'olga.root', { program: 'encode' });
    const d = await connect(olga);
    await expect(d.ping()).rejects.toThrow('program render of olga.root is not granted on beta.root: its grants cover only program encode');
    d.close();
  });

  it('a token is single use: a replay is refused, and so is an expired token', async () => {
    const own = beta.store.load(cluster.host('beta').identity);
    const first = await outsider('gina.root');
    const { token } = invite(beta.store, own, 60_000, { subject: 'gina.root' });
    await enrollWith({ entry: beta.entry, own: first.own, store: first.store, token: parseToken(token) });
    const second = await outsider('gina.root');
    await expect(enrollWith({ entry: beta.entry, own: second.own, store: second.store, token: parseToken(token) })).rejects.toThrow(
      /DENIED: enrollment refused: the enrollment token was already used at \S+ \(by key [A-Z2-7-]+\); tokens are single use/,
    );
    // Issued a minute ago for a second: expired, without waiting for it to happen.
    const expired = new TokenStore(beta.store.tokensFile).issue(own.name, own.id, 1000, { subject: 'hank.root' }, Date.now() - 60_000);
    const hank = await outsider('hank.root');
    await expect(enrollWith({ entry: beta.entry, own: hank.own, store: hank.store, token: parseToken(expired.token) })).rejects.toThrow(
      /DENIED: enrollment refused: the enrollment token expired at /,
    );
    expect(beta.store.knownById(second.own.id)).toBeUndefined(); // nothing was stored
    expect(beta.store.knownById(hank.own.id)).toBeUndefined();
    const reasons = [...(await logOf(second.own.id)), ...(await logOf(hank.own.id))].filter((x) => x.outcome === 'denied').map((x) => x.reason ?? '');
    expect(reasons.some((x) => /token was already used/.test(x))).toBe(true);
    expect(reasons.some((x) => /token expired at/.test(x))).toBe(true);
  });

  it('a token for another server key is refused by the client before it sends anything', async () => {
    const alphaStore = new KeyStore(cluster.host('alpha').stateDir);
    const { token } = invite(alphaStore, alphaStore.load(cluster.host('alpha').identity), 60_000, { subject: 'ivy.root' });
    const ivy = await outsider('ivy.root');
    // Pointing alpha's token at beta: beta's key is not the one in the token.
    await expect(enrollWith({ entry: beta.entry, own: ivy.own, store: ivy.store, token: parseToken(token) })).rejects.toThrow(/but the token was issued for key .* NOT enrolling/);
  });

  it('a granted key can announce its successor; the old key is then unknown, the new one works', async () => {
    const leo = await enrolled('leo.root');
    addGrant(beta.store, 'leo.root');
    const old = leo.own;
    const next = await leo.store.create('leo.root', { force: true });
    const r = await enrollWith({ entry: beta.entry, own: old, next, store: leo.store });
    expect(r).toMatchObject({ name: 'leo.root', id: next.id, already: false });
    expect(beta.store.knownById(old.id)).toBeUndefined();
    const c = await connect({ store: leo.store, own: next });
    expect((await c.ping()).host).toBe('beta');
    c.close();
    // Someone else's key cannot be claimed by rotation.
    const mia = await enrolled('mia.root');
    addGrant(beta.store, 'mia.root');
    const alphaCert = beta.store.known().find((k) => k.name === cluster.host('alpha').identity)!;
    const stolen = { ...next, certPem: alphaCert.certPem };
    await expect(enrollWith({ entry: beta.entry, own: mia.own, next: stolen, store: mia.store })).rejects.toThrow(/key rotation refused: a rotated key must keep its name, but mia\.root sent a certificate for alpha\.root/);
  });

  it('rex_key refuses to use a private key that others can read, and sends nothing', async () => {
    const jack = await outsider('jack.root');
    chmodSync(jack.own.keyFile, 0o640);
    const rc = join(jack.store.stateDir, 'rex.rc');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(rc, `host-name : jack\nstate-directory : ${jack.store.stateDir}\nservers : beta@${beta.host}:${beta.port}\n`);
    const r = await run(process.execPath, [distBin('rex_key'), '--config', rc, '--distribute'], { env: { ...process.env, REX_USER: 'root' } }).catch((e: { code: number; stderr: string }) => e);
    expect((r as { code: number }).code).toBe(1);
    expect((r as { stderr: string }).stderr).toContain(`private key ${jack.own.keyFile} is accessible by group or others (mode 0640); refusing to use it`);
    expect((r as { stderr: string }).stderr).toContain(`run: chmod 600 ${jack.own.keyFile}`);
    expect(await logOf(jack.own.id)).toEqual([]);
  });

  it('garbage after the TLS handshake closes the connection and is logged; the daemon keeps serving', async () => {
    const kim = await enrolled('kim.root');
    addGrant(beta.store, 'kim.root');
    const p = await RawPeer.openTls({ host: beta.host, port: beta.port, own: kim.own });
    p.write(Buffer.from('this is not REX at all, just bytes \x00\x01\x02'));
    await p.closed;
    expect(p.frames).toHaveLength(0);
    const q = await RawPeer.openTls({ host: beta.host, port: beta.port, own: kim.own });
    q.hello(1);
    q.write(Buffer.from('\x00\x00\x00\x05\x00\x10\x00\x02\x00\x00\x00\x01garbage-after-hello'));
    await q.closed;
    const ms = await q.waitFrames(2);
    expect(ms[0]).toMatchObject({ type: 'HELLO' });
    expect(ms[1]).toMatchObject({ type: 'ERROR', code: 1, fatal: true });
    const rows = await logOf(kim.own.id);
    ranNothing(rows.filter((r) => r.time > rows.find((x) => x.kind === 'enroll')!.time));
    expect(rows.filter((r) => r.kind === 'session' && r.outcome === 'error').map((r) => r.reason)).toEqual(
      expect.arrayContaining([expect.stringContaining('did not send the REX preface'), expect.stringMatching(/reserved flag|MALFORMED|flags/i)]),
    );
    const c = await connect(kim);
    expect((await c.ping()).host).toBe('beta');
    c.close();
  });

  it('a grants file with a syntax error grants nothing, and the refusal names file:line', async () => {
    const nina = await enrolled('nina.root');
    addGrant(beta.store, 'nina.root');
    const { readFileSync, writeFileSync } = await import('node:fs');
    const good = readFileSync(beta.store.grantsFile, 'utf8');
    const lines = good.trimEnd().split('\n');
    writeFileAtomic(beta.store.grantsFile, `${[...lines, 'grant nina.root program=a program=b'].join('\n')}\n`, 0o600);
    try {
      const c = await connect(nina);
      await expect(c.ping()).rejects.toThrow(`DENIED: access to beta.root is refused: ${beta.store.grantsFile}:${lines.length + 1}: program= given twice; this file grants nothing until it is fixed`);
      c.close();
    } finally {
      writeFileAtomic(beta.store.grantsFile, good, 0o600);
    }
    const c = await connect(nina);
    expect((await c.ping()).host).toBe('beta');
    c.close();
  });

  it('a peer forwards its local client\'s program, and program-limited grants apply to it', async () => {
    revokeGrants(beta.store, cluster.host('alpha').identity);
    addGrant(beta.store, cluster.host('alpha').identity, { program: 'render' });
    const alphaId = cluster.host('alpha').id!;
    try {
      const render = await RexClient.connect({ socket: cluster.host('alpha').socket, program: 'render' });
      // The peer link was closed by the revocation; the forwarded request reconnects it.
      expect(await render.ping('beta')).toMatchObject({ host: 'beta', hops: 1 });
      render.close();
      const other = await RexClient.connect({ socket: cluster.host('alpha').socket, program: 'other' });
      await expect(other.ping('beta')).rejects.toThrow(`DENIED: program other of ${cluster.host('alpha').identity} is not granted on beta.root: its grants cover only program render`);
      other.close();
      const none = await RexClient.connect({ socket: cluster.host('alpha').socket });
      await expect(none.ping('beta')).rejects.toThrow('a transaction without a program of');
      none.close();
      await cluster.waitFor((hs) => hs.find((h) => h.name === 'beta')?.reachable === true, { from: ['alpha'] }); // load polls still work
      const rows = (await logOf(alphaId)).filter((r) => r.message_type === 'PING');
      expect(rows.find((r) => r.outcome === 'ok')).toMatchObject({ identity: `${cluster.host('alpha').identity}.render`, from_host: 'alpha' });
      expect(rows.find((r) => r.outcome === 'denied')).toMatchObject({ identity: cluster.host('alpha').identity });
      expect(rows.some((r) => r.identity === `${cluster.host('alpha').identity}.other` && r.outcome === 'denied')).toBe(true);
    } finally {
      revokeGrants(beta.store, cluster.host('alpha').identity);
      addGrant(beta.store, cluster.host('alpha').identity);
    }
  });

  it('rex log shows the refusals with filters, as a table and as JSON', async () => {
    // A transaction from alpha (heartbeats are not logged): a ping forwarded to beta.
    const alpha = await cluster.client('alpha');
    await alpha.ping('beta');
    alpha.close();
    await vi.waitFor(() => expect(queryLog(beta.logDb, { host: 'alpha', kind: 'transaction' }).length).toBeGreaterThan(0), { timeout: 5000, interval: 50 });
    await logBarrier(cluster.host('beta').socket, beta.logDb);
    const env = { ...process.env };
    const { stdout } = await run(process.execPath, [distBin('rex'), 'log', '--config', cluster.host('beta').rcFile, '--outcome', 'denied', '--identity', 'mallory.root']);
    expect(stdout).toMatch(/^TIME\s+HOST\s+KIND\s+IDENTITY\s+FROM\s+WHAT\s+OUTCOME\s+BYTES\s+MS\s+REASON$/m);
    expect(stdout).toMatch(/beta\s+auth\s+mallory\.root\s+.*denied.*unknown key/);
    const j = await run(process.execPath, [distBin('rex'), 'log', '--config', cluster.host('beta').rcFile, '--json', '--since', '10m', '--host', 'alpha', '--kind', 'transaction', '-n', '5'], { env });
    const rows = JSON.parse(j.stdout) as LogRow[];
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.length).toBeLessThanOrEqual(5);
    for (const r of rows) expect(r).toMatchObject({ kind: 'transaction', from_host: 'alpha', identity: expect.stringMatching(/^alpha\.root(\.|$)/) as unknown });
    const bad = await run(process.execPath, [distBin('rex'), 'log', '--config', cluster.host('beta').rcFile, '--outcome', 'maybe']).catch((e: { stderr: string; code: number }) => e);
    expect((bad as { stderr: string }).stderr).toContain('--outcome maybe: expected ok, denied or error');
  });
});
