/**
 * PostgreSQL underneath the central log (src/db/postgres.ts), against a real
 * server started by the fixture (test/helpers/postgres.ts): the fixture itself,
 * URLs (parsed, checked, redacted; a property test), connection errors that
 * name the server and what to do and never the password, and versioned
 * migrations (once, in order, concurrently, refusing a newer schema).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, migrate, parsePostgresUrl, redactUrl, schemaVersion, type MigrationStep } from '../../src/db/postgres.js';
import { formatConfig } from '../../src/config/format.js';
import { loadConfig } from '../../src/config/index.js';
import { checkServerSecret } from '../../src/log/central.js';
import { RexError } from '../../src/util/errors.js';
import { distBin } from '../../src/util/paths.js';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { configureProperties, runs } from '../helpers/property.js';

configureProperties();
const why = postgresUnavailable();
if (why) console.warn(`PostgreSQL tests skipped: ${why}`);

/** The RexError a promise rejects with. */
async function failure(p: Promise<unknown>): Promise<RexError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(RexError);
    return e as RexError;
  }
  throw new Error('expected a failure');
}

describe('PostgreSQL URLs', () => {
  it('parse the libpq forms: TCP, a socket directory, percent-encoding, parameters', () => {
    expect(parsePostgresUrl('postgresql://rex_alpha:s%40cret@db.example:6543/rexlog?sslmode=verify-full&sslrootcert=/etc/rex/ca.pem')).toEqual({
      host: 'db.example', port: 6543, user: 'rex_alpha', password: 's@cret', database: 'rexlog', sslmode: 'verify-full', sslrootcert: '/etc/rex/ca.pem', connectTimeout: 10,
    });
    expect(parsePostgresUrl('postgres://u@/d?host=/run/postgresql&port=5433')).toEqual({ host: '/run/postgresql', port: 5433, user: 'u', database: 'd', sslmode: 'disable', connectTimeout: 10 });
    expect(parsePostgresUrl('postgresql://%2Frun%2Fpg/d')).toMatchObject({ host: '/run/pg', sslmode: 'disable' });
    expect(parsePostgresUrl('postgresql://[::1]:5/d?sslmode=require&connect_timeout=3')).toMatchObject({ host: '::1', port: 5, sslmode: 'require', connectTimeout: 3 });
  });

  it.each([
    ['mysql://u@h/d', /not a PostgreSQL URL/],
    ['postgresql://u@/d', /no host/],
    ['postgresql://u@h:99999/d', /port "99999"/],
    ['postgresql://u@h/d?sslmode=prefer', /falls back to an unencrypted connection/],
    ['postgresql://u@h/d?sslmode=verify-full', /needs sslrootcert/],
    ['postgresql://u@h/d?sslmode=disable&bogus=1', /unknown parameter "bogus"/],
    ['postgresql://u@/d?host=/s&sslmode=require', /no TLS on Unix sockets/],
    ['postgresql://u@h/d?sslmode=disable&sslrootcert=ca.pem', /sslrootcert must be an absolute path/],
    ['postgresql://u:p%zz@h/d', /password is not valid percent-encoding/],
    ['postgresql://u@h/d?sslmode=disable&sslcert=/c.pem', /sslcert and sslkey go together/],
  ])('%s is refused, saying why', (url, re) => {
    let err: unknown;
    try {
      parsePostgresUrl(url, 'rex.rc:7');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RexError);
    expect((err as RexError).message).toMatch(re);
    expect((err as RexError).where).toBe('rex.rc:7');
    expect((err as RexError).hint).toBeTruthy();
  });

  it('property: any string is parsed or refused with a RexError, and the password never appears in the message', () => {
    const pwArb = fc.string({ minLength: 4, maxLength: 12, unit: fc.constantFrom(...'ABCDEFGHJKMNPQRSTUVWXYZ23456789'.split('')) }).map((s) => `Pw${s}`);
    const piece = fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('@', ':', '/', '?', '&', '=', '%', '%2F', '[', ']', 'host=/s', 'sslmode=disable', 'port=1'));
    fc.assert(
      fc.property(pwArb, fc.array(piece, { maxLength: 8 }), fc.constantFrom('postgresql', 'postgres', 'pg', ''), (pw, parts, scheme) => {
        const rest = parts.join('');
        for (const url of [`${scheme}://u:${pw}@${rest}`, `${scheme}://${rest}?password=${pw}&${rest}`]) {
          try {
            const u = parsePostgresUrl(url);
            expect(u.port).toBeGreaterThanOrEqual(1);
            expect(u.port).toBeLessThanOrEqual(65535);
            expect(u.host.length).toBeGreaterThan(0);
          } catch (e) {
            expect(e).toBeInstanceOf(RexError);
            expect((e as RexError).message).not.toContain(pw);
            expect(String((e as RexError).hint)).not.toContain(pw);
          }
          expect(redactUrl(url)).not.toContain(pw);
        }
      }),
      { numRuns: runs(500) },
    );
  });

  it('property: a URL built from parts parses back to those parts', () => {
    const name = fc.string({ minLength: 1, maxLength: 16 });
    fc.assert(
      fc.property(name, fc.option(name, { nil: undefined }), name, fc.integer({ min: 1, max: 65535 }), fc.constantFrom('db.example', '10.0.0.7', '/run/pg sock'), (user, password, db, port, host) => {
        const e = encodeURIComponent;
        const url = host.startsWith('/')
          ? `postgresql://${e(user)}${password !== undefined ? `:${e(password)}` : ''}@/${e(db)}?host=${e(host)}&port=${port}`
          : `postgresql://${e(user)}${password !== undefined ? `:${e(password)}` : ''}@${host}:${port}/${e(db)}?sslmode=require`;
        const u = parsePostgresUrl(url);
        expect(u).toMatchObject({ user, database: db, port, host });
        expect(u.password).toBe(password);
      }),
      { numRuns: runs(300) },
    );
  });
});

describe.skipIf(why !== undefined)('a real PostgreSQL server', () => {
  let pg: TestPostgres;
  beforeAll(async () => {
    pg = await startPostgres();
    await pg.createRole('rex_t_alice', { password: 'alice-Secret-77' });
    await pg.createDatabase('rextest', 'rex_t_alice');
  }, 120_000);
  afterAll(async () => {
    await pg?.stop();
  });

  it('the fixture: a server in a temp dir on its own socket, psql as the superuser, roles and databases', async () => {
    expect((await pg.psql('SELECT 1 + 1')).trim()).toBe('2');
    expect((await pg.psql("SELECT current_setting('unix_socket_directories')")).trim()).toBe(pg.socketDir);
    expect((await pg.psql("SELECT current_setting('listen_addresses')")).trim()).toBe('');
    expect((await pg.psql("SELECT datname || ' ' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'rextest'")).trim()).toBe('rextest rex_t_alice');
    expect(pg.dataDir.startsWith(pg.dir)).toBe(true);
  });

  it('connects by URL with a password over the Unix socket', async () => {
    const c = await connect(pg.url('rextest', 'rex_t_alice', 'alice-Secret-77'));
    try {
      const r = await c.query<{ u: string; d: string }>('SELECT current_user AS u, current_database() AS d');
      expect(r.rows[0]).toEqual({ u: 'rex_t_alice', d: 'rextest' });
    } finally {
      await c.end();
    }
  });

  it('a wrong password: a clear error naming role and server, without the password', async () => {
    const url = pg.url('rextest', 'rex_t_alice', 'Wrong-Pass-123');
    const e = await failure(connect(url));
    expect(e.message).toContain('password authentication failed for rex_t_alice');
    expect(e.message).toContain(`rex_t_alice@${pg.socketDir}/.s.PGSQL.${pg.port}/rextest`);
    expect(e.format()).not.toContain('Wrong-Pass-123');
    expect(e.hint).toMatch(/password/);
  });

  it('no server there (a socket directory without a server, a closed TCP port): says so and what to check', async () => {
    const e1 = await failure(connect(`postgresql://rex_t_alice:Topsecret-9@/rextest?host=${pg.dir}&port=${pg.port}`));
    expect(e1.message).toMatch(/no server is listening there/);
    expect(e1.hint).toContain(`unix_socket_directories = '${pg.dir}'`);
    expect(e1.format()).not.toContain('Topsecret-9');
    const e2 = await failure(connect(`postgresql://rex_t_alice:Topsecret-9@127.0.0.1:1/rextest?sslmode=disable`));
    expect(e2.message).toMatch(/127\.0\.0\.1:1\/rextest: no server is listening there/);
    expect(e2.format()).not.toContain('Topsecret-9');
  });

  it('rex log with a log server that is not there: one clear error, the password hidden, --local suggested', () => {
    const r = spawnSync(process.execPath, [distBin('rex'), 'log', '--server', `postgresql://rex_t_alice:Topsecret-9@/rextest?host=${pg.dir}&port=${pg.port}`], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot connect to PostgreSQL at rex_t_alice@.*: no server is listening there/);
    expect(r.stderr).toContain('rex log --local');
    expect(r.stderr).not.toContain('Topsecret-9');
  });

  it('a database that does not exist', async () => {
    const e = await failure(connect(pg.url('nosuchdb', 'rex_t_alice', 'alice-Secret-77')));
    expect(e.message).toMatch(/database nosuchdb does not exist/);
    expect(e.hint).toMatch(/createdb/);
  });

  it('migrations: each step once, in order, one transaction each; a failing step leaves no trace; a newer schema is refused', async () => {
    const c = await connect(pg.url('rextest', 'rex_t_alice', 'alice-Secret-77'));
    try {
      const steps: MigrationStep[] = [
        { description: 'table t', up: 'CREATE TABLE t (a INTEGER)' },
        { description: 'column b', up: 'ALTER TABLE t ADD COLUMN b TEXT; INSERT INTO t VALUES (1, $$one$$)' },
      ];
      expect(await migrate(c, 'test-schema', steps)).toEqual([1, 2]);
      expect(await migrate(c, 'test-schema', steps)).toEqual([]);
      expect(await schemaVersion(c, 'test-schema')).toBe(2);
      const bad: MigrationStep[] = [...steps, { description: 'half done', up: 'INSERT INTO t VALUES (2, $$two$$); SELECT no_such_function()' }];
      const e = await failure(migrate(c, 'test-schema', bad));
      expect(e.message).toMatch(/migrating schema test-schema to version 3 \(half done\) failed: .*no_such_function/);
      expect(await schemaVersion(c, 'test-schema')).toBe(2);
      expect((await c.query('SELECT a, b FROM t ORDER BY a')).rows).toEqual([{ a: 1, b: 'one' }]);
      const older = await failure(migrate(c, 'test-schema', steps.slice(0, 1)));
      expect(older.message).toMatch(/at version 2, newer than this REX knows \(1\)/);
    } finally {
      await c.end();
    }
  });

  it('migrations: five clients migrating at once apply each step exactly once', async () => {
    const clients = await Promise.all(Array.from({ length: 5 }, () => connect(pg.url('rextest', 'rex_t_alice', 'alice-Secret-77'))));
    try {
      const steps: MigrationStep[] = [
        { description: 'counter', up: 'CREATE TABLE counted (n INTEGER)' },
        { description: 'count', up: 'INSERT INTO counted VALUES (1)' },
      ];
      const applied = await Promise.all(clients.map((c) => migrate(c, 'race', steps)));
      expect(applied.flat().sort()).toEqual([1, 2]);
      expect((await clients[0]!.query('SELECT count(*)::int AS n FROM counted')).rows[0]).toEqual({ n: 1 });
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  it('sslmode=verify-full against a server without TLS: refused, saying the server has no TLS', async () => {
    const tcp = await startPostgres({ tcp: true });
    try {
      await tcp.createRole('rex_t_bob', { password: 'bob-Secret-55' });
      // The CA file exists (any PEM will do: the server never gets as far as presenting a certificate).
      const url = tcp.url('postgres', 'rex_t_bob', 'bob-Secret-55', { tcp: true, params: { sslmode: 'verify-full', sslrootcert: '/etc/ssl/certs/ca-certificates.crt' } });
      const e = await failure(connect(url));
      expect(e.message).toMatch(/the server does not support TLS/);
      expect(e.hint).toMatch(/ssl = on/);
      expect(e.format()).not.toContain('bob-Secret-55');
      const ok = await connect(tcp.url('postgres', 'rex_t_bob', 'bob-Secret-55', { tcp: true, params: { sslmode: 'disable' } }));
      expect((await ok.query('SELECT current_user AS u')).rows[0]).toEqual({ u: 'rex_t_bob' });
      await ok.end();
    } finally {
      await tcp.stop();
    }
  }, 120_000);
});

describe('a rex-log-server URL with a password', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rex-pg-secret-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const URL_PW = 'postgresql://rex_alpha:Sekr3t-Value@db.example/rexlog?sslmode=require';
  const rc = (name: string, mode: number, line = `rex-log-server : ${URL_PW}`): string => {
    const f = join(dir, name);
    writeFileSync(f, `host-name : alpha\n${line}\n`, { mode });
    chmodSync(f, mode);
    return f;
  };

  it('is accepted from a rex.rc only its owner can read, and rex config show prints it as ***', async () => {
    const loaded = await loadConfig({ file: rc('private.rc', 0o600) });
    expect(loaded.config.logServer).toBe(URL_PW);
    expect(() => checkServerSecret(loaded)).not.toThrow();
    const shown = formatConfig(loaded);
    expect(shown).toContain('rex-log-server');
    expect(shown).toContain('postgresql://rex_alpha:***@db.example/rexlog?sslmode=require');
    expect(shown).not.toContain('Sekr3t-Value');
    expect(formatConfig(loaded, { json: true })).not.toContain('Sekr3t-Value');
  });

  it('is refused from a rex.rc others can read, naming file:line and what to do, without the password', async () => {
    const f = rc('open.rc', 0o644);
    const loaded = await loadConfig({ file: f });
    let err: RexError | undefined;
    try {
      checkServerSecret(loaded);
    } catch (e) {
      err = e as RexError;
    }
    expect(err).toBeInstanceOf(RexError);
    expect(err!.format()).toMatch(new RegExp(`^${f}:2: error: rex-log-server has a password, and ${f} can be read by others \\(mode 0644\\)`));
    expect(err!.hint).toMatch(/chmod 600.*pgpass/);
    expect(err!.format()).not.toContain('Sekr3t-Value');
    // rexd itself refuses to start so, before it does anything else.
    const r = spawnSync(process.execPath, [distBin('rexd'), '--foreground', '--config', f], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('rex-log-server has a password');
    expect(r.stderr).not.toContain('Sekr3t-Value');
  });

  it('is refused from the command line (--set, visible in ps), and one without a password is fine anywhere', async () => {
    const loaded = await loadConfig({ file: rc('plain.rc', 0o644, 'log-level : info'), overrides: { 'rex-log-server': URL_PW } });
    expect(() => checkServerSecret(loaded)).toThrow(/comes from \(override\), not from a private file/);
    const nopw = await loadConfig({ file: rc('nopw.rc', 0o644, 'rex-log-server : postgresql://rex_${HOST}@/rexlog?host=/run/postgresql') });
    expect(nopw.config.logServer).toBe('postgresql://rex_alpha@/rexlog?host=/run/postgresql');
    expect(() => checkServerSecret(nopw)).not.toThrow();
  });

  it('a bad URL in rex.rc is an error at its line that does not repeat the password', async () => {
    const f = rc('bad.rc', 0o600, 'rex-log-server : postgresql://rex_alpha:Sekr3t-Value@db.example/rexlog?sslmode=prefer');
    const e = await loadConfig({ file: f }).catch((x: unknown) => x as Error);
    expect(e).toBeInstanceOf(Error);
    expect((e as Error).message).toContain(`${f}:2`);
    expect((e as Error).message).toContain('sslmode=prefer falls back to an unencrypted connection');
    expect((e as Error).message).not.toContain('Sekr3t-Value');
  });
});
