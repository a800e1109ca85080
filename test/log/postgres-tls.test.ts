/**
 * TLS to the log server, against a real PostgreSQL with `ssl = on` and a
 * certificate from a CA made here: sslmode=verify-full connects when the
 * server's certificate is signed by sslrootcert and names the host in the URL,
 * and fails with a clear error when either is not so (never falling back to
 * plaintext); the rows of a local log travel over it like over a socket.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/db/postgres.js';
import { LogShipper, setupLogServer } from '../../src/log/central.js';
import { TransactionLog } from '../../src/log/txlog.js';
import { RexError } from '../../src/util/errors.js';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../helpers/postgres.js';

const why = postgresUnavailable() ?? (() => {
  try {
    execFileSync('openssl', ['version']);
    return undefined;
  } catch {
    return 'no openssl command to make the test CA (apt-get install openssl)';
  }
})();
if (why) console.warn(`PostgreSQL TLS tests skipped: ${why}`);

/** A CA and a certificate it signs for `san` (e.g. IP:127.0.0.1), as PEM files in `dir`. */
function makeCa(dir: string, name: string, san?: string): { ca: string; cert: string; key: string } {
  const f = (x: string): string => join(dir, `${name}-${x}`);
  const ossl = (...a: string[]): void => void execFileSync('openssl', a, { stdio: 'pipe' });
  ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', `/CN=${name} test CA`);
  if (san) {
    ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=rex test log server');
    writeFileSync(f('ext'), `subjectAltName=${san}\n`);
    ossl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('ext'));
  }
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

describe.skipIf(why !== undefined)('TLS to the log server', () => {
  let pg: TestPostgres;
  const dir = mkdtempSync(join(tmpdir(), 'rex-pg-tls-'));
  let good: { ca: string; cert: string; key: string };
  let other: { ca: string };
  const PW = 'tls-Alpha-Pw-5';

  beforeAll(async () => {
    good = makeCa(dir, 'good', 'IP:127.0.0.1');
    other = makeCa(dir, 'other');
    pg = await startPostgres({ tls: { cert: good.cert, key: good.key } });
    await pg.createRole('rex_alpha', { password: PW });
    await pg.createDatabase('rexlog');
    const admin = await connect(pg.url('rexlog'));
    await setupLogServer(admin, [{ host: 'alpha', role: 'rex_alpha' }], ['rex_alpha']);
    await admin.end();
  }, 120_000);
  afterAll(async () => {
    await pg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const url = (params: Record<string, string>, host = '127.0.0.1'): string =>
    pg.url('rexlog', 'rex_alpha', PW, { tcp: true, params }).replace('@127.0.0.1:', `@${host}:`);

  it('sslmode=verify-full with the right CA: connected, and the connection is TLS', async () => {
    const c = await connect(url({ sslmode: 'verify-full', sslrootcert: good.ca }));
    try {
      const r = await c.query<{ ssl: boolean; version: string }>('SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      expect(r.rows[0]).toMatchObject({ ssl: true });
      expect(r.rows[0]!.version).toMatch(/^TLSv1\.[23]$/);
    } finally {
      await c.end();
    }
  });

  // claim: log.central-tls
  it('a server certificate from another CA, or not naming the host: refused with a TLS error that says what to check', async () => {
    const e1 = (await connect(url({ sslmode: 'verify-full', sslrootcert: other.ca })).catch((x: unknown) => x)) as RexError;
    expect(e1).toBeInstanceOf(RexError);
    expect(e1.message).toMatch(/TLS: /);
    expect(e1.hint).toMatch(/sslrootcert/);
    expect(e1.format()).not.toContain(PW);
    // The certificate names 127.0.0.1, not localhost: verify-full refuses, verify-ca (chain only) accepts.
    const e2 = (await connect(url({ sslmode: 'verify-full', sslrootcert: good.ca }, 'localhost')).catch((x: unknown) => x)) as RexError;
    expect(e2).toBeInstanceOf(RexError);
    expect(e2.message).toMatch(/TLS: .*(localhost|altnames|Hostname)/i);
    const ok = await connect(url({ sslmode: 'verify-ca', sslrootcert: good.ca }, 'localhost'));
    await ok.end();
  });

  it('a server that requires TLS (hostssl only) refuses sslmode=disable', async () => {
    const e = (await connect(url({ sslmode: 'disable' })).catch((x: unknown) => x)) as RexError;
    expect(e).toBeInstanceOf(RexError);
    expect(e.message).toMatch(/refuses rex_alpha|pg_hba/);
    expect(e.format()).not.toContain(PW);
  });

  it('rows of a local log reach the server over TLS', async () => {
    const log: TransactionLog = new TransactionLog(join(dir, 'tls.sqlite'), 'alpha', { onWritten: () => ship.nudge() });
    const ship = new LogShipper(url({ sslmode: 'verify-full', sslrootcert: good.ca }), 'alpha', log, { retryMinMs: 50 });
    try {
      for (let i = 0; i < 10; i++) log.record({ kind: 'auth', outcome: 'ok', target: `tls-${i}` });
      log.flush();
      expect(await ship.drain(30_000)).toBe(true);
      expect((await pg.psql("SELECT count(*) FROM rex_log WHERE target LIKE 'tls-%'", 'rexlog')).trim()).toBe('10');
    } finally {
      ship.close();
      log.close();
    }
  });
});
