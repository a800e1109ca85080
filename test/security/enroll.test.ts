/**
 * The negative matrix of enrollment (issue 12, item 1): a token enrolls exactly
 * the one identity (and key, if named) it was issued for, once, before it
 * expires; enrollment never replaces a known key; rotation by the old key and
 * the admin's deliberate replacement work and are logged. Each refusal is
 * checked on a real two-host cluster for its message, for nothing having been
 * stored or granted, for the token being left unspent, and for its log row.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { addGrant, invite } from '../../src/keys/admin.js';
import { enrollWith } from '../../src/keys/enroll.js';
import { KeyStore, type OwnIdentity } from '../../src/keys/store.js';
import { pinKnownHost } from '../../src/keys/tls.js';
import { enrollProof, parseToken, secretHash, TokenStore } from '../../src/keys/tokens.js';
import { queryLog, type LogRow } from '../../src/log/txlog.js';
import { RexClient } from '../../src/runtime/client.js';
import { startCluster } from '../helpers/cluster.js';
import { RawPeer } from '../helpers/raw.js';
import { Outsiders, type Outsider } from '../helpers/outsiders.js';

describe('enrollment tokens bind one subject, once; enrollment never replaces a known key', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let tmp: string;
  let users: Outsiders;
  let beta: { store: KeyStore; name: string; id: string; host: string; port: number; logDb: string; entry: { name: string; address: string; port: number } };

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2, { netns: false }));
    await cluster.waitAllReachable();
    tmp = mkdtempSync(join(tmpdir(), 'rex-enroll-'));
    users = new Outsiders(tmp);
    const b = cluster.host('beta');
    const store = new KeyStore(b.stateDir);
    beta = { store, name: b.identity, id: store.load(b.identity).id, host: b.address, port: b.port, logDb: join(b.stateDir, 'rex-log.sqlite'), entry: { name: 'beta', address: b.address, port: b.port } };
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  /** A key for `name` in a store of its own that trusts beta's key (so it can pin beta). */
  function keyFor(name: string): Promise<Outsider> {
    return users.key(name, beta);
  }

  function token(subject: string, opts: { keyId?: string; replace?: boolean; ttlMs?: number } = {}): string {
    return invite(beta.store, beta.store.load(beta.name), opts.ttlMs ?? 60_000, { subject, ...(opts.keyId ? { keyId: opts.keyId } : {}), ...(opts.replace ? { replace: true } : {}) }).token;
  }

  function enroll(who: { store: KeyStore; own: OwnIdentity }, tok: string) {
    return enrollWith({ entry: beta.entry, own: who.own, store: who.store, token: parseToken(tok) });
  }

  /** Asserts that beta would still accept this token (it was not spent). */
  function expectUnspent(tok: string): void {
    expect(new TokenStore(beta.store.tokensFile).check(parseToken(tok).secret).used).toBeUndefined();
  }

  /** Beta's log rows about key `id`, polled until `want` holds for them. */
  async function rowsOf(id: string, want: (rows: LogRow[]) => boolean): Promise<LogRow[]> {
    return vi.waitFor(
      () => {
        const rows = queryLog(beta.logDb, { identity: id, limit: 1000 });
        if (!want(rows)) throw new Error(`log of ${id} does not show it yet: ${JSON.stringify(rows.map((r) => [r.kind, r.outcome, r.reason]))}`);
        return rows;
      },
      { timeout: 10_000, interval: 100 },
    );
  }
  const denied = (re: RegExp) => (rows: LogRow[]) => rows.some((r) => r.outcome === 'denied' && re.test(r.reason ?? ''));

  function connect(who: { store: KeyStore; own: OwnIdentity }): Promise<RexClient> {
    return RexClient.connectRemote({ host: beta.host, port: beta.port, own: who.own, pin: pinKnownHost(who.store, 'beta'), timeoutMs: 10_000 });
  }

  it('a new key claiming a name that has a known key is refused, even with a token for that name: the real key stays, its grants do not reach the attacker', async () => {
    // The real owner of rosa.root, enrolled and granted.
    const rosa = await keyFor('rosa.root');
    await enroll(rosa, token('rosa.root'));
    addGrant(beta.store, 'rosa.root');
    // The attacker holds a token for rosa.root (a mistaken or leaked invite) and a fresh key with that name.
    const tok = token('rosa.root');
    const evil = await keyFor('rosa.root');
    await expect(enroll(evil, tok)).rejects.toThrow(
      `DENIED: enrollment refused: rosa.root already has a known key (${rosa.own.id}), and enrollment never replaces a known key; the token was not used. To rotate, the holder of that key runs \`rex_key --create --force\` and \`rex_key --distribute\``,
    );
    expect(beta.store.knownById(rosa.own.id)?.name).toBe('rosa.root');
    expect(beta.store.knownById(evil.own.id)).toBeUndefined();
    expectUnspent(tok);
    const c = await connect(evil);
    await expect(c.ping()).rejects.toThrow(/DENIED: unknown key .* \(claims to be rosa\.root\)/);
    c.close();
    const real = await connect(rosa);
    expect((await real.ping()).host).toBe('beta');
    real.close();
    const rows = await rowsOf(evil.own.id, denied(/enrollment never replaces a known key/));
    expect(rows.find((r) => r.kind === 'auth' && /enrollment never replaces/.test(r.reason ?? ''))).toMatchObject({ identity: 'rosa.root', identity_id: evil.own.id, outcome: 'denied' });
    expect(rows.filter((r) => r.outcome === 'ok')).toEqual([]);
    expect(rows.find((r) => /enrollment never replaces/.test(r.reason ?? ''))!.reason).toContain('rex_key --invite --for rosa.root --replace');
  });

  it('a token issued for another name is refused and stays usable by the one it names', async () => {
    const tok = token('nora.root');
    const mallory = await keyFor('mallory.root');
    await expect(enroll(mallory, tok)).rejects.toThrow('DENIED: enrollment refused: the token was issued for nora.root, not for mallory.root; the token was not used');
    expect(beta.store.knownById(mallory.own.id)).toBeUndefined();
    expectUnspent(tok);
    const nora = await keyFor('nora.root');
    expect(await enroll(nora, tok)).toMatchObject({ name: 'nora.root', id: nora.own.id, already: false });
    await rowsOf(mallory.own.id, denied(/the token was issued for nora\.root, not for mallory\.root/));
    await rowsOf(nora.own.id, (rows) => rows.some((r) => r.kind === 'enroll' && r.outcome === 'ok'));
  });

  it('a used token is refused (single use), also for the name it was issued for', async () => {
    const tok = token('pat.root');
    const pat = await keyFor('pat.root');
    await enroll(pat, tok);
    const again = await keyFor('pat.root');
    await expect(enroll(again, tok)).rejects.toThrow(/DENIED: enrollment refused: the enrollment token was already used at \S+ \(by key [A-Z2-7-]+\); tokens are single use/);
    expect(beta.store.knownById(again.own.id)).toBeUndefined();
    expect(beta.store.knownById(pat.own.id)?.name).toBe('pat.root');
    await rowsOf(again.own.id, denied(/token was already used/));
    // Issuing the next token prunes the spent one; a replay stays refused.
    token('pat2.root');
    expect(readFileSync(beta.store.tokensFile, 'utf8')).not.toContain(secretHash(parseToken(tok).secret));
    await expect(enroll(again, tok)).rejects.toThrow('DENIED: enrollment refused: this host never issued that enrollment token');
    expect(beta.store.knownById(again.own.id)).toBeUndefined();
  });

  it('an expired token is refused', async () => {
    const tok = token('quin.root', { ttlMs: 1 });
    const quin = await keyFor('quin.root');
    await vi.waitFor(() => expect(new TokenStore(beta.store.tokensFile).pending().some((t) => t.binding?.subject === 'quin.root')).toBe(false));
    await expect(enroll(quin, tok)).rejects.toThrow(/DENIED: enrollment refused: the enrollment token expired at \d{4}-/);
    expect(beta.store.knownById(quin.own.id)).toBeUndefined();
    await rowsOf(quin.own.id, denied(/token expired at/));
    // Issuing the next token prunes the expired one; it stays refused.
    token('quin2.root');
    expect(readFileSync(beta.store.tokensFile, 'utf8')).not.toContain(secretHash(parseToken(tok).secret));
    await expect(enroll(quin, tok)).rejects.toThrow('DENIED: enrollment refused: this host never issued that enrollment token');
    expect(beta.store.knownById(quin.own.id)).toBeUndefined();
  });

  it('a wrong proof (made for another key) is refused and leaves the token unspent', async () => {
    const text = token('ray.root');
    const tok = parseToken(text);
    const ray = await keyFor('ray.root');
    const other = await keyFor('ray.root');
    const p = await RawPeer.openTls({ host: beta.host, port: beta.port, own: other.own });
    p.hello(1, 'ray');
    // The secret with a proof that binds it to ray's key, not to the key this connection proved.
    p.send({ type: 'ENROLL', stream: 1, secret: tok.secret, proof: enrollProof(tok.secret, ray.own.id, beta.id) });
    const ms = await p.waitFrames(2);
    p.close();
    expect(ms.find((m) => m.type === 'ERROR')).toMatchObject({ type: 'ERROR', message: 'enrollment proof does not match the token and this key; the token was not used' });
    expect(ms.some((m) => m.type === 'ENROLLED')).toBe(false);
    expect(beta.store.knownById(other.own.id)).toBeUndefined();
    expectUnspent(text);
    await rowsOf(other.own.id, denied(/enrollment proof does not match/));
    // The rightful holder's proof works.
    expect(await enroll(ray, text)).toMatchObject({ name: 'ray.root', id: ray.own.id });
  });

  it('a token bound to one key ID is refused to another key of the same name', async () => {
    const sam = await keyFor('sam.root');
    const tok = token('sam.root', { keyId: sam.own.id });
    const thief = await keyFor('sam.root');
    await expect(enroll(thief, tok)).rejects.toThrow(`DENIED: enrollment refused: the token was issued for key ${sam.own.id} of sam.root, not for key ${thief.own.id}; the token was not used`);
    expect(beta.store.knownById(thief.own.id)).toBeUndefined();
    expectUnspent(tok);
    expect(await enroll(sam, tok)).toMatchObject({ name: 'sam.root', id: sam.own.id });
    await rowsOf(thief.own.id, denied(/the token was issued for key/));
  });

  it("a token cannot enroll a key under the host's own identity", async () => {
    const own = beta.store.load(beta.name);
    const tok = new TokenStore(beta.store.tokensFile).issue(own.name, own.id, 60_000, { subject: beta.name }).token;
    const fake = await keyFor(beta.name);
    await expect(enroll(fake, tok)).rejects.toThrow(`DENIED: enrollment refused: ${beta.name} is this host's own identity; the token was not used`);
    expect(beta.store.knownById(fake.own.id)).toBeUndefined();
    await rowsOf(fake.own.id, denied(/this host's own identity/));
    expect(() => invite(beta.store, own, 60_000, { subject: beta.name })).toThrow(`--for ${beta.name} is this host's own identity`);
  });

  it("the admin's --replace token replaces a lost key: the old key's session ends, the new key works, and the log says so", async () => {
    const tess = await keyFor('tess.root');
    await enroll(tess, token('tess.root'));
    addGrant(beta.store, 'tess.root');
    const old = await connect(tess);
    expect((await old.ping()).host).toBe('beta');
    const closed = new Promise<Error>((r) => old.conn.once('close', (e: Error) => r(e)));
    // Through the command, as the host's owner runs it.
    const out = await cluster.rexKey('beta', ['--invite', '--for', 'tess.root', '--replace']);
    expect(out).toContain(`This token REPLACES the key now known for tess.root (${tess.own.id})`);
    const tok = /^ {2}(rex1:\S+)$/m.exec(out)![1]!;
    const fresh = await keyFor('tess.root');
    expect(await enroll(fresh, tok)).toMatchObject({ name: 'tess.root', id: fresh.own.id, already: false });
    expect((await closed).message).toContain(`DENIED: key replaced: replaced key ${tess.own.id} of tess.root by ${fresh.own.id}`);
    expect(beta.store.knownById(tess.own.id)).toBeUndefined();
    const c = await connect(fresh);
    expect((await c.ping()).host).toBe('beta'); // the name's grant applies to the new key
    c.close();
    const again = await connect(tess);
    await expect(again.ping()).rejects.toThrow(/DENIED: unknown key/);
    again.close();
    const rows = await rowsOf(fresh.own.id, (rs) => rs.some((r) => r.kind === 'enroll' && r.outcome === 'ok'));
    expect(rows.find((r) => r.kind === 'enroll' && r.outcome === 'ok')).toMatchObject({ identity: 'tess.root', reason: `replaced key ${tess.own.id} of tess.root by ${fresh.own.id} (a token issued with --replace)` });
    await rowsOf(tess.own.id, (rs) => rs.some((r) => r.kind === 'session' && r.outcome === 'denied' && /key replaced/.test(r.reason ?? '')));
  });

  it('rotation by the old key over an authenticated connection works and is logged', async () => {
    const uma = await keyFor('uma.root');
    await enroll(uma, token('uma.root'));
    addGrant(beta.store, 'uma.root');
    const next = await uma.store.create('uma.root', { force: true });
    expect(await enrollWith({ entry: beta.entry, own: uma.own, next, store: uma.store })).toMatchObject({ name: 'uma.root', id: next.id });
    expect(beta.store.knownById(uma.own.id)).toBeUndefined();
    expect(beta.store.knownById(next.id)?.name).toBe('uma.root');
    const rows = await rowsOf(uma.own.id, (rs) => rs.some((r) => r.kind === 'enroll' && /rotated/.test(r.reason ?? '')));
    expect(rows.find((r) => r.kind === 'enroll' && /rotated/.test(r.reason ?? ''))).toMatchObject({
      outcome: 'ok',
      identity: 'uma.root',
      reason: `rotated uma.root: key ${uma.own.id} replaced by ${next.id} over a connection authenticated by the old key`,
    });
  });

  it('issuing a token prunes the used and expired ones from the tokens file', async () => {
    const before = new TokenStore(beta.store.tokensFile);
    token('vic.root');
    const lines = readFileSync(beta.store.tokensFile, 'utf8').split('\n').filter(Boolean);
    expect(lines.every((l) => l.startsWith('token '))).toBe(true); // no `used` lines survive
    expect(lines).toHaveLength(before.pending().length);
  });
});
