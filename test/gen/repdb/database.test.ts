/**
 * `repdb -d HOST.USER.DBMS.DB_NAME` as the seed writes it (issue 20): -gd TARGET writes a library's entry points
 * into the REXP table of a database (SQLite here; PostgreSQL in test/db/postgres-config.test.ts), -d TARGET
 * reads them back, also for the stripped library; -gd alone still writes SQL text. The name parser's negative
 * cases and a round-trip property.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { looksLikeDbTarget, parseDbTarget, parseQuadName, redactUrl } from '../../../src/db/target.js';
import { readEntryPointsFrom } from '../../../src/gen/index.js';
import { distBin } from '../../../src/util/paths.js';
import { configureProperties, runs } from '../../helpers/property.js';
import { buildDemo, tempDir } from './helpers.js';

configureProperties();

let dir: string;
let lib: string;
beforeAll(() => {
  dir = tempDir('repdb-db-');
  lib = buildDemo(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function repdb(args: string[], env: NodeJS.ProcessEnv = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [distBin('repdb'), ...args], { input: '', encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('repdb -d with SQLite', () => {
  it('-gd localhost.USER.sqlite.NAME writes REXP into $REX_DB_DIR/NAME.sqlite; -d reads it back and checks a stripped copy', () => {
    const env = { REX_DB_DIR: join(dir, 'dbs') };
    const w = repdb(['-gd', 'localhost.tester.sqlite.rex', lib], env);
    expect(w.stderr).toBe(`repdb: wrote 13 entry points of libdemo.so to localhost.tester.sqlite.rex (sqlite:${join(dir, 'dbs', 'rex.sqlite')}) table REXP\n`);
    expect(w.status).toBe(0);
    expect(statSync(join(dir, 'dbs', 'rex.sqlite')).mode & 0o777).toBe(0o600);
    // Again: the library's rows are replaced, not doubled.
    expect(repdb(['-gd', 'localhost.tester.sqlite.rex', '-q', lib], env).status).toBe(0);
    const sdir = join(dir, 'stripped');
    mkdirSync(sdir, { recursive: true });
    const stripped = join(sdir, 'libdemo.so');
    copyFileSync(lib, stripped);
    spawnSync('strip', [stripped]);
    const r = repdb(['-d', 'localhost.tester.sqlite.rex', stripped], env);
    expect(r.stdout).toBe('ok: libdemo.so: 13 entry points, 5 callable, symbols checked\n'); // from DWARF alone: the pointer parameters lack marks
    expect(r.status).toBe(0);
    // The same rows as XML, from the database, by URL.
    const x = repdb(['-x', '-d', `sqlite:${join(dir, 'dbs', 'rex.sqlite')}`, '--elf-file', 'libdemo.so']);
    expect(x.stdout).toMatch(/<entry-point name="add"/);
    expect(x.stdout.match(/<entry-point /g)).toHaveLength(13);
  });

  it('-gd FILE without a database name still writes SQL text, as the seed\'s `repdb -gd < exe | sql` does', () => {
    const r = repdb(['-gd', lib]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^CREATE TABLE IF NOT EXISTS REXP/m);
    expect(repdb(['--sql', '-g', lib]).stdout).toBe(r.stdout);
  });

  it('bad database names are usage errors that say which part is wrong', () => {
    const cases: [string, RegExp][] = [
      ['remote1.tester.sqlite.rex', /an SQLite database is a file on this host, so HOST must be localhost or this host's name, not "remote1"/],
      ['localhost.tester.oracle.rex', /not a database name/], // not a DBMS REX knows: read as FILE, then "not a database name"
      ['localhost.te$ter.sqlite.rex', /USER "te\$ter" is not a user or role name/],
      ['localhost.tester.sqlite.re/x', /not a database name/],
      ['localhost.tester.postgresql.r x', /DB_NAME "r x" is not a database name/],
      ['postgresql://tester:secret@db1:5432/?sslmode=disable', /the URL names no database/],
      ['postgresql://tester:secret@db1:5432/rex?sslmode=prefer', /falls back to an unencrypted connection/],
    ];
    for (const [name, re] of cases) {
      const r = repdb(['-gd', name, lib], { REX_DB_DIR: join(dir, 'dbs') });
      expect(r.stderr, name).toMatch(re);
      expect(r.stderr).not.toContain('secret');
      expect(r.status, name).toBe(2);
    }
    const missing = repdb(['-d', 'localhost.tester.sqlite.missing', lib], { REX_DB_DIR: join(dir, 'dbs') });
    expect(missing.stderr).toMatch(/missing\.sqlite: error: cannot open SQLite database: it does not exist/);
    expect(missing.status).toBe(1);
  });
});

describe('HOST.USER.DBMS.DB_NAME', () => {
  it('maps to a file or a server as documented', () => {
    const env = { HOME: '/home/tester', REX_PG_SOCKET: '/tmp/pg sock', PGPORT: '5433' } as NodeJS.ProcessEnv;
    expect(parseQuadName('db.example.org.alice.postgresql.rex')).toEqual({ host: 'db.example.org', user: 'alice', dbms: 'postgresql', dbName: 'rex' });
    expect(parseDbTarget('localhost.root.postgresql.rex', { env })).toEqual({ dbms: 'postgresql', url: 'postgresql://root@/rex?host=%2Ftmp%2Fpg%20sock&port=5433', shown: 'localhost.root.postgresql.rex (postgresql://root@/rex?host=%2Ftmp%2Fpg%20sock&port=5433)' });
    expect(parseDbTarget('db1.rex.postgres.cluster', { env: { HOME: '/home/tester' } })).toMatchObject({ url: 'postgresql://rex@db1:5432/cluster?sslmode=verify-full&sslrootcert=%2Fhome%2Ftester%2F.postgresql%2Froot.crt' });
    expect(parseDbTarget('db1.rex.postgres.cluster', { env: { PGSSLROOTCERT: '/etc/rex/pg-ca.pem' } })).toMatchObject({ url: 'postgresql://rex@db1:5432/cluster?sslmode=verify-full&sslrootcert=%2Fetc%2Frex%2Fpg-ca.pem' });
    expect(parseDbTarget('localhost.root.sqlite.rex', { env: { REX_DB_DIR: '/srv/db' } })).toMatchObject({ dbms: 'sqlite', file: '/srv/db/rex.sqlite' });
    expect(parseDbTarget('localhost.root.sqlite.rex', { env: { HOME: '/root' } })).toMatchObject({ file: '/root/.rex/rex.sqlite' });
    expect(parseDbTarget('sqlite:rel.sqlite', { env: {} })).toMatch(/is not an absolute path/);
    expect(parseDbTarget('sqlite:rel.sqlite', { env: {}, cwd: '/w' })).toMatchObject({ file: '/w/rel.sqlite' });
    expect(redactUrl('postgresql://rex:hunter2@db1/rex?password=x&sslmode=require')).toBe('postgresql://rex:***@db1/rex?password=***&sslmode=require');
    expect(parseDbTarget('postgresql://rex:hunter2@db1/rex?sslmode=require', { env: {} })).toMatchObject({ shown: 'postgresql://rex:***@db1/rex?sslmode=require' });
    expect(parseDbTarget('postgresql://rex:hunter2@db1/rex', { env: {} })).toMatch(/^postgresql:\/\/rex:\*\*\*@db1\/rex: sslmode/);
    for (const bad of ['', 'a.b.c', '.root.sqlite.rex', 'localhost..sqlite.rex', 'localhost.root.sqlite.', 'localhost.root.mysql.rex', `${'h'.repeat(300)}.u.sqlite.d`, 'local\u0000host.root.sqlite.rex']) {
      expect(typeof parseDbTarget(bad, { env: { HOME: '/root' } }), JSON.stringify(bad)).toBe('string');
    }
  });

  it('property: any valid HOST.USER.DBMS.DB_NAME parses back to its parts; any string gives a target or a message, never a throw', () => {
    const label = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_-]{0,10}$/);
    const quad = fc.record({
      host: fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.')),
      user: fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_-]{0,15}$/),
      dbms: fc.constantFrom('sqlite', 'postgresql'),
      dbName: fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_-]{0,20}$/),
    });
    fc.assert(
      fc.property(quad, (q) => {
        const text = `${q.host}.${q.user}.${q.dbms}.${q.dbName}`;
        expect(parseQuadName(text)).toEqual(q);
        expect(looksLikeDbTarget(text)).toBe(true);
      }),
      { numRuns: runs(300) },
    );
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string().map((s) => `localhost.${s}.sqlite.x`), fc.string().map((s) => `postgresql://${s}`), fc.string().map((s) => `sqlite:${s}`)), (s) => {
        const r = parseDbTarget(s, { env: { HOME: '/root' } });
        if (typeof r !== 'string') {
          expect(['sqlite', 'postgresql']).toContain(r.dbms);
          if (r.dbms === 'sqlite') expect(r.file.startsWith('/')).toBe(true);
        }
      }),
      { numRuns: runs(500) },
    );
  });
});

describe('readEntryPointsFrom', () => {
  it('a call controller\'s SQLite definitions must be private', async () => {
    const file = join(dir, 'dbs', 'rex.sqlite');
    const t = { dbms: 'sqlite' as const, file, shown: `sqlite:${file}` };
    expect((await readEntryPointsFrom(t, 'libdemo.so', { trusted: true })).entries).toHaveLength(13);
    spawnSync('chmod', ['666', file]);
    await expect(readEntryPointsFrom(t, 'libdemo.so', { trusted: true })).rejects.toThrow(/group or others can write it \(mode 0666\)/);
  });
});
