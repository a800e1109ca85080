import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { certInfo } from '../../src/keys/certs.js';
import { base32, keyId, parseId } from '../../src/keys/id.js';
import { parseIdentityName } from '../../src/keys/identity.js';
import { KeyStore } from '../../src/keys/store.js';
import { peerCert, tlsClientOptions, tlsServerOptions } from '../../src/keys/tls.js';
import { enrollProof, formatToken, parseToken, proofMatches, secretHash, TokenStore } from '../../src/keys/tokens.js';
import { addGrant, revokeGrants } from '../../src/keys/admin.js';
import { runs } from '../helpers/property.js';

const tmp = mkdtempSync(join(tmpdir(), 'rex-keys-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const store = () => new KeyStore(join(tmp, `s${++n}`));

describe('IDs', () => {
  it('base32 follows RFC 4648 test vectors', () => {
    for (const [inp, out] of [['', ''], ['f', 'MY'], ['fo', 'MZXQ'], ['foo', 'MZXW6'], ['foob', 'MZXW6YQ'], ['fooba', 'MZXW6YTB'], ['foobar', 'MZXW6YTBOI']]) {
      expect(base32(Buffer.from(inp!))).toBe(out);
    }
  });

  it('an ID is 160 bits of SHA-256 of the SPKI, grouped by four, and parses back however it is typed', () => {
    const id = keyId(Buffer.from('some spki bytes'));
    expect(id).toMatch(/^([A-Z2-7]{4}-){7}[A-Z2-7]{4}$/);
    expect(parseId(id.toLowerCase())).toBe(id);
    expect(parseId(id.replace(/-/g, ''))).toBe(id);
    expect(parseId(id.replace(/-/g, ' '))).toBe(id);
    expect(parseId(id.slice(0, -1))).toBeUndefined();
    expect(parseId(`${id.slice(0, -1)}1`)).toBeUndefined(); // 1 is not a base32 digit
  });

  it('identity names are HOST.USER[.PROGRAM]', () => {
    expect(parseIdentityName('alpha.alice')).toEqual({ host: 'alpha', user: 'alice' });
    expect(parseIdentityName('alpha.alice.render')).toEqual({ host: 'alpha', user: 'alice', program: 'render' });
    expect(parseIdentityName('alpha')).toMatch(/expected HOST.USER or HOST.USER.PROGRAM/);
    expect(parseIdentityName('alpha..x')).toMatch(/USER part "" must be/);
    expect(parseIdentityName('-a.b')).toMatch(/HOST part "-a"/);
  });
});

describe('key store', () => {
  it('creates an Ed25519 key (0600) and a self-signed certificate naming the identity', async () => {
    const s = store();
    const k = await s.create('alpha.alice');
    expect(statSync(k.keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(s.keysDir).mode & 0o777).toBe(0o700);
    expect(readFileSync(k.keyFile, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    const info = certInfo(readFileSync(k.certFile, 'utf8'), k.certFile);
    expect(info).toMatchObject({ id: k.id, name: 'alpha.alice' });
    expect(s.load('alpha.alice').id).toBe(k.id);
    expect(s.ownNames()).toEqual(['alpha.alice']);
  });

  it('will not overwrite a key without --force, and keeps the old one as .prev with it', async () => {
    const s = store();
    const a = await s.create('alpha.alice');
    await expect(s.create('alpha.alice')).rejects.toThrow(`alpha.alice already has a key (ID ${a.id})`);
    const b = await s.create('alpha.alice', { force: true });
    expect(b.id).not.toBe(a.id);
    expect(s.load('alpha.alice', { prev: true }).id).toBe(a.id);
  });

  it('refuses a private key readable by group or others, naming the file and the chmod to run', async () => {
    const s = store();
    const k = await s.create('alpha.alice');
    for (const mode of [0o640, 0o604, 0o644]) {
      chmodSync(k.keyFile, mode);
      expect(() => s.load('alpha.alice')).toThrow(`private key ${k.keyFile} is accessible by group or others (mode 0${mode.toString(8)}); refusing to use it`);
      try {
        s.load('alpha.alice');
      } catch (e) {
        expect((e as { hint: string }).hint).toContain(`run: chmod 600 ${k.keyFile}`);
      }
    }
    chmodSync(k.keyFile, 0o600);
    expect(s.load('alpha.alice').id).toBe(k.id);
  });

  it('refuses a certificate that does not belong to the key, and a missing key with the command to make it', async () => {
    const s = store();
    await s.create('alpha.alice');
    const other = await s.create('alpha.alice.tool');
    writeFileSync(s.certFile('alpha.alice'), other.certPem);
    expect(() => s.load('alpha.alice')).toThrow(/does not belong to the key/);
    expect(() => s.load('beta.bob.render')).toThrow(/no key for beta\.bob\.render/);
    try {
      s.load('beta.bob.render');
    } catch (e) {
      expect((e as { hint: string }).hint).toBe('create it with `rex_key --create --program render`');
    }
  });

  it('trusted keys are found by name, ID and unambiguous ID prefix', async () => {
    const s = store();
    const other = await store().create('beta.bob');
    s.addKnown(other.certPem, 'token');
    expect(s.resolve('beta.bob').map((k) => k.id)).toEqual([other.id]);
    expect(s.resolve(other.id.toLowerCase()).map((k) => k.name)).toEqual(['beta.bob']);
    expect(s.resolve(other.id.slice(0, 9)).map((k) => k.name)).toEqual(['beta.bob']);
    expect(s.knownById(other.id)).toMatchObject({ name: 'beta.bob', via: 'token' });
    expect(s.removeKnown(other.id)).toBe(true);
    expect(s.known()).toEqual([]);
  });

  it('grant and revoke edit the grants file and keep hand-written lines', async () => {
    const s = store();
    const bob = await store().create('beta.bob');
    s.addKnown(bob.certPem, 'token');
    s.ensureDirs();
    writeFileSync(s.grantsFile, '# my notes\ngrant gamma.carol from=localnets\n', { mode: 0o600 });
    addGrant(s, 'beta.bob', { program: 'render' });
    addGrant(s, 'beta.bob', { program: 'render' }); // same grant again: replaced, not duplicated
    expect(readFileSync(s.grantsFile, 'utf8')).toBe('# my notes\ngrant gamma.carol from=localnets\ngrant beta.bob program=render\n');
    const r = revokeGrants(s, 'beta.bob', { now: Date.parse('2026-01-02T03:04:05Z') });
    expect(r.removed).toEqual(['grant beta.bob program=render']);
    expect(readFileSync(s.grantsFile, 'utf8')).toBe(`# my notes\ngrant gamma.carol from=localnets\nrevoke ${bob.id} name=beta.bob at=2026-01-02T03:04:05.000Z\n`);
    addGrant(s, bob.id);
    expect(readFileSync(s.grantsFile, 'utf8')).toBe(`# my notes\ngrant gamma.carol from=localnets\ngrant ${bob.id}\n`); // re-granting lifts the revocation
    writeFileSync(s.grantsFile, 'grant beta.bob\noops\n');
    expect(() => addGrant(s, 'gamma.carol')).toThrow(/grants:2: error: |unknown word "oops"/);
  });
});

describe('enrollment tokens', () => {
  const token = `rex1:beta.bob:${'A'.repeat(32)}:${'B2'.repeat(16)}`;

  it('parse and print', () => {
    const t = parseToken(`  ${token}\n`);
    expect(t).toEqual({ server: 'beta.bob', serverId: 'AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA', secret: 'B2'.repeat(16) });
    expect(formatToken(t)).toBe(token);
  });

  it("reads a root installation's join token, whose server is a host key HOST (docs/ROOT.md section 7)", () => {
    const token = `rex1:beta:${'A'.repeat(32)}:${'B2'.repeat(16)}`;
    const t = parseToken(token);
    expect(t.server).toBe('beta');
    expect(formatToken(t)).toBe(token);
  });

  it.each([
    ['', 'it does not start with "rex1:"'],
    ['rex2:beta.bob:x:y', 'it does not start with "rex1:"'],
    ['rex1:beta.bob:AAAA', 'expected 4 parts separated by ":", found 3'],
    [`rex1:be%ta:${'A'.repeat(32)}:${'B'.repeat(32)}`, 'the server part "be%ta" is neither HOST.USER nor HOST'],
    [`rex1:beta.bob.prog:${'A'.repeat(32)}:${'B'.repeat(32)}`, 'is neither HOST.USER nor HOST'],
    [`rex1:beta.bob:${'A'.repeat(31)}:${'B'.repeat(32)}`, 'the server key ID (third part) must be 32 characters'],
    [`rex1:beta.bob:${'A'.repeat(32)}:${'b'.repeat(32)}`, 'the secret (fourth part) must be 32 characters'],
    [`rex1:beta.bob:${'A'.repeat(32)}:${'B'.repeat(500)}`, 'characters, a token has fewer than 300'],
  ])('refuses %j: %s', (text, why) => {
    expect(() => parseToken(text)).toThrow(/^not an enrollment token: /);
    expect(() => parseToken(text)).toThrow(why);
  });

  it('never throws anything but TOKEN_INVALID on arbitrary or mutated input', () => {
    const mutated = fc.tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 3 })).map(([i, x]) => {
      const p = i % (token.length + 1);
      return token.slice(0, p) + x + token.slice(p + 1);
    });
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 400 }), mutated), (t) => {
        try {
          const parsed = parseToken(t);
          expect(formatToken(parsed)).toBe(t.trim());
        } catch (e) {
          expect((e as { code: string }).code).toBe('REX_ERR_TOKEN_INVALID');
        }
      }),
      { numRuns: runs(2000) },
    );
  });

  it('are single use, expire, and are stored only as hashes', () => {
    const file = join(tmp, `tokens${++n}`);
    const ts = new TokenStore(file);
    const now = Date.parse('2026-01-01T00:00:00Z');
    const t = parseToken(ts.issue('beta.bob', 'AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA', 600_000, { subject: 'gamma.carol' }, now).token);
    expect(readFileSync(file, 'utf8')).not.toContain(t.secret);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(() => ts.consume('Z'.repeat(32), 'X', now)).toThrow('this host never issued that enrollment token');
    ts.consume(t.secret, 'CLIENTID', now + 1000);
    expect(() => ts.consume(t.secret, 'OTHER', now + 2000)).toThrow('the enrollment token was already used at 2026-01-01T00:00:01.000Z (by key CLIENTID); tokens are single use');
    const t2 = parseToken(ts.issue('beta.bob', 'AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA', 600_000, { subject: 'gamma.carol' }, now).token);
    expect(() => ts.consume(t2.secret, 'X', now + 600_000)).toThrow('the enrollment token expired at 2026-01-01T00:10:00.000Z');
    expect(ts.pending(now)).toHaveLength(1);
  });

  it('name their subject, prune used and expired tokens when issuing, and refuse a token without a subject', () => {
    const file = join(tmp, `tokens${++n}`);
    const ts = new TokenStore(file);
    const now = Date.parse('2026-01-01T00:00:00Z');
    const S = 'AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA';
    const used = parseToken(ts.issue('beta.bob', S, 600_000, { subject: 'gamma.carol' }, now).token);
    ts.issue('beta.bob', S, 1000, { subject: 'delta.dan' }, now);
    const open = parseToken(ts.issue('beta.bob', S, 600_000, { subject: 'eve.erin.render', keyId: S, replace: true }, now).token);
    expect(ts.consume(used.secret, 'CLIENTID', now + 10).binding).toEqual({ subject: 'gamma.carol' });
    expect(readFileSync(file, 'utf8').split('\n').filter(Boolean)).toHaveLength(4);
    ts.issue('beta.bob', S, 600_000, { subject: 'fox.fay' }, now + 5000);
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    expect(lines).toHaveLength(2); // the used and the expired token are gone
    expect(lines[0]).toMatch(/^token [0-9a-f]{64} expires=\S+ created=\S+ for=eve\.erin\.render key=AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA replace=yes$/);
    expect(lines[1]).toMatch(/ for=fox\.fay$/);
    expect(ts.check(open.secret, now + 6000).binding).toEqual({ subject: 'eve.erin.render', keyId: S, replace: true });
    expect(existsSync(`${file}.lock`)).toBe(false);
    // A token line from before tokens named their subject enrolls nobody.
    writeFileSync(file, `token ${secretHash('B'.repeat(32))} expires=2026-01-01T01:00:00.000Z created=2026-01-01T00:00:00.000Z\n`);
    expect(() => ts.consume('B'.repeat(32), 'X', now)).toThrow('the enrollment token was issued before tokens named the identity they enroll, so it enrolls nobody');
    expect(() => ts.issue('beta.bob', S, 1000, { subject: 'nodots' }, now)).toThrow('a token is issued for one identity: "nodots" is not an identity name');
  });

  it('the proof binds the secret to the client key and the server key', () => {
    const p = enrollProof('S', 'CLIENT', 'SERVER');
    expect(proofMatches('S', 'CLIENT', 'SERVER', p)).toBe(true);
    expect(proofMatches('S', 'OTHER', 'SERVER', p)).toBe(false);
    expect(proofMatches('S', 'CLIENT', 'OTHER', p)).toBe(false);
    expect(proofMatches('T', 'CLIENT', 'SERVER', p)).toBe(false);
    expect(proofMatches('S', 'CLIENT', 'SERVER', p.subarray(1))).toBe(false);
  });
});

describe('TLS with REX keys', () => {
  it('Ed25519 certificates work for mutual TLS 1.3 in this Node/OpenSSL, and each side sees the other\'s ID', async () => {
    const server = await store().create('alpha.alice');
    const client = await store().create('beta.bob');
    const seenByServer = new Promise<string | undefined>((resolve) => {
      const srv = createServer(tlsServerOptions(server), (s) => {
        resolve(peerCert(s)?.id);
        s.end();
        srv.close();
      }).listen(0, '127.0.0.1', () => {
        const port = (srv.address() as { port: number }).port;
        const c = connect({ ...tlsClientOptions(client), host: '127.0.0.1', port }, () => {
          expect(c.getProtocol()).toBe('TLSv1.3');
          expect(peerCert(c)?.id).toBe(server.id);
        });
        c.on('error', () => {});
      });
    });
    expect(await seenByServer).toBe(client.id);
  });
});
