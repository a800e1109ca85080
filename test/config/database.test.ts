// Configuration from a database (issue 20): rex.rc's config-database directive reads the table rex_config of an
// SQLite file where it stands; every row is checked as a rex.rc line is and named as `TARGET table rex_config
// row N`; the file must be private; a database that cannot be read stops the load; import/export move a
// configuration between rc, XML and a database and back unchanged (property).
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatConfig, loadConfig, parseRc } from '../../src/config/index.js';
import { writeConfigDatabase } from '../../src/config/database.js';
import { configPlace, configRows, loadConfigFrom, toXmlText, writeConfigTo } from '../../src/config/transfer.js';
import { ErrorCodes } from '../../src/util/errors.js';
import { openDatabase } from '../../src/util/sqlite.js';
import { distBin } from '../../src/util/paths.js';
import { configError } from './helpers.js';
import { configureProperties, runs } from '../helpers/property.js';

configureProperties();

let dir: string;
const ENV = { USER: 'tester', HOME: '/home/tester' } as NodeJS.ProcessEnv;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rex-cfgdb-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** A fresh SQLite configuration database holding `rows`, and an rc file naming it with `before`/`after` lines around the directive. */
async function setup(rows: { key: string; value: string }[], before: string[] = [], after: string[] = []) {
  const db = join(dir, `cfg${++n}.sqlite`);
  await writeConfigDatabase({ dbms: 'sqlite', file: db, shown: `sqlite:${db}` }, rows);
  const rc = join(dir, `rex${n}.rc`);
  writeFileSync(rc, [...before, `config-database : sqlite:${db}`, ...after, ''].join('\n'));
  return { db, rc };
}

describe('config-database : sqlite:PATH', () => {
  // claim: config.db-show-sources
  it('reads the table where the directive stands; show names table and row for each value', async () => {
    const { db, rc } = await setup(
      [
        { key: 'log-level', value: 'debug' },
        { key: 'load-interval', value: '3s' },
        { key: 'servers', value: 'alpha:7801, beta:7802' },
      ],
      ['log-level : error', 'peer-timeout : 9s'],
      ['load-interval : 5s'],
    );
    const loaded = await loadConfig({ file: rc, env: ENV });
    expect(loaded.config.logLevel).toBe('debug'); // the database overrides lines before the directive
    expect(loaded.config.loadInterval).toBe(5000); // and lines after it override the database
    expect(loaded.config.servers.map((s) => `${s.name}:${s.port}`)).toEqual(['alpha:7801', 'beta:7802']);
    expect(loaded.sources.logLevel).toEqual({ file: `sqlite:${db} table rex_config row 1` });
    expect(loaded.sources.servers.file).toBe(`sqlite:${db} table rex_config row 3`);
    expect(loaded.sources.peerTimeout).toEqual({ file: rc, line: 2 });
    expect(loaded.files).toEqual([rc, `sqlite:${db}`]);
    const shown = formatConfig(loaded);
    expect(shown).toMatch(new RegExp(`^log-level +: debug +/\\* sqlite:${db} table rex_config row 1 \\*/$`, 'm'));
    expect(shown).toMatch(/^load-interval +: 5s +\/\* .*rex\d+\.rc:4 \*\/$/m);
  });

  // claim: config.db-row-errors
  it('an invalid value or an unknown key in a row is reported at its table and row, with rex.rc\'s own message', async () => {
    const { db, rc } = await setup([
      { key: 'log-level', value: 'info' },
      { key: 'load-interval', value: 'soon' },
      { key: 'log-levle', value: 'debug' },
    ]);
    const e = await configError(() => loadConfig({ file: rc, env: ENV }));
    const rcErr = await configError(() => parseRc('load-interval : soon\n', 'x.rc', ENV));
    // Each row is its own origin; rex config check prints them in the order found (unknown keys first, as for rex.rc).
    expect(e.diagnostics.map((d) => [d.file, d.code, d.key]).sort()).toEqual([
      [`sqlite:${db} table rex_config row 2`, ErrorCodes.CONFIG_VALUE, 'load-interval'],
      [`sqlite:${db} table rex_config row 3`, ErrorCodes.CONFIG_UNKNOWN_KEY, 'log-levle'],
    ]);
    const at = (row: number) => e.diagnostics.find((d) => d.file.endsWith(`row ${row}`))!;
    expect(at(2).message).toBe(rcErr.diagnostics[0]!.message);
    expect(at(3).message).toMatch(/did you mean "log-level"/);
    expect(e.message).toContain(`sqlite:${db} table rex_config row 2: error: key "load-interval"`);
  });

  it('rows that are not text (NULL, a blob) and a row naming another database are refused at their row', async () => {
    const { db, rc } = await setup([{ key: 'log-level', value: 'info' }]);
    const s = openDatabase(db);
    s.exec("PRAGMA ignore_check_constraints = 1");
    // NOT NULL is the schema's; a hand-made table may lack it: make one without constraints.
    s.exec('DROP TABLE rex_config; CREATE TABLE rex_config (ordinal INTEGER PRIMARY KEY, key, value)');
    s.prepare('INSERT INTO rex_config VALUES (?, ?, ?)').run(1, 'log-level', null);
    s.prepare('INSERT INTO rex_config VALUES (?, ?, ?)').run(2, 'socket', new Uint8Array([1, 2]));
    s.prepare('INSERT INTO rex_config VALUES (?, ?, ?)').run(3, 'config-database', 'sqlite:/etc/other.sqlite');
    s.prepare('INSERT INTO rex_config VALUES (?, ?, ?)').run(4, null, 'x');
    s.prepare('INSERT INTO rex_config VALUES (?, ?, ?)').run(5, 'max-startups', 12);
    s.close();
    const e = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e.diagnostics.map((d) => `${d.file.replace(/.* table /, '')}: ${d.message}`)).toEqual([
      'rex_config row 1: the value is NULL; write it as rex.rc text',
      'rex_config row 2: the value is not text (a blob); write it as rex.rc text',
      'rex_config row 3: a configuration database cannot name another one; only rex.rc names it',
      'rex_config row 4: the key is NULL; each row needs a rex.rc key',
    ]);
  });

  // claim: config.db-unreachable
  it('a database that cannot be read stops the load, naming the directive\'s file:line and the database', async () => {
    const missing = join(dir, 'missing.sqlite');
    const rc = join(dir, 'missing.rc');
    writeFileSync(rc, `log-level : info\nconfig-database : sqlite:${missing}\n`);
    const e = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e.diagnostics).toHaveLength(1);
    expect(e.diagnostics[0]).toMatchObject({ code: ErrorCodes.CONFIG_DATABASE, file: rc, line: 2, key: 'config-database' });
    expect(e.diagnostics[0]!.message).toContain(`cannot read the configuration database sqlite:${missing}: cannot open SQLite database: it does not exist`);

    const notDb = join(dir, 'not-a-db.sqlite');
    writeFileSync(notDb, 'log-level : info\n', { mode: 0o600 });
    writeFileSync(rc, `config-database : sqlite:${notDb}\n`);
    const e2 = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e2.diagnostics[0]!.message).toMatch(/not a database|no usable rex_config table/);

    const noTable = join(dir, 'no-table.sqlite');
    openDatabase(noTable).close();
    chmodSync(noTable, 0o600);
    writeFileSync(rc, `config-database : sqlite:${noTable}\n`);
    const e3 = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e3.diagnostics[0]!.message).toMatch(/no usable rex_config table: no such table: rex_config \(create and fill it with: rex config import rex.rc --to sqlite:/);
  });

  it('property: any rows (any key, any value, any SQLite type) give a configuration or ConfigErrors located at rows, never anything else', async () => {
    const file = join(dir, 'fuzz.sqlite');
    const rc = join(dir, 'fuzz.rc');
    writeFileSync(rc, `config-database : sqlite:${file}\n`);
    await writeConfigDatabase({ dbms: 'sqlite', file, shown: `sqlite:${file}` }, []);
    const db = openDatabase(file);
    db.exec('DROP TABLE rex_config; CREATE TABLE rex_config (ordinal INTEGER PRIMARY KEY, key, value)');
    db.close();
    const key = fc.oneof(fc.constantFrom('log-level', 'servers', 'programs', 'clients', 'max-startups', 'config-database', 'socket', 'user-map'), fc.string(), fc.constant(null), fc.integer());
    const value = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constant(null), fc.integer(), fc.double(), fc.uint8Array({ maxLength: 8 }), fc.constantFrom('debug', 'a:1, b@127.0.0.1:2', 'x=/l.so:localhost.u.sqlite.d', '*.alice = alice'));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(key, value), { maxLength: 8 }), async (rows) => {
        const w = openDatabase(file);
        w.exec('DELETE FROM rex_config');
        rows.forEach(([k, v], i) => w.prepare('INSERT INTO rex_config VALUES (?, ?, ?)').run(i + 1, k as never, v as never));
        w.close();
        try {
          await loadConfig({ file: rc, env: ENV });
        } catch (e) {
          const err = await configError(() => Promise.reject(e));
          for (const d of err.diagnostics) expect(d.file).toMatch(/ table rex_config row \d+$/);
        }
      }),
      { numRuns: runs(60) },
    );
  });

  // claim: config.db-unreachable
  it('rexd does not start when its configuration database cannot be read, and says which and where', () => {
    const rc = join(dir, 'rexd.rc');
    const missing = join(dir, 'gone.sqlite');
    writeFileSync(rc, `state-directory : ${join(dir, 'rexd-state')}\nconfig-database : sqlite:${missing}\n`);
    const r = spawnSync(process.execPath, [distBin('rexd'), '--foreground', '-c', rc], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, REX_CONFIG: '' } });
    expect(r.status).not.toBe(0);
    expect(r.signal).toBeNull();
    expect(r.stderr).toContain(`${rc}:2: error: key "config-database": cannot read the configuration database sqlite:${missing}: cannot open SQLite database: it does not exist`);
    expect(existsSync(join(dir, 'rexd-state', 'run', 'rexd.pid'))).toBe(false);
  });

  // claim: config.db-private-file
  it('refuses a database file that others can write, and a second directive', async () => {
    const { db, rc } = await setup([{ key: 'log-level', value: 'info' }]);
    chmodSync(db, 0o664);
    const e = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e.diagnostics[0]!.message).toMatch(/refusing the SQLite database: group or others can write it \(mode 0664\); whoever can write it decides what REX trusts/);
    chmodSync(db, 0o600);
    writeFileSync(rc, `config-database : sqlite:${db}\nconfig-database : sqlite:${db}\n`);
    const e2 = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e2.diagnostics[0]).toMatchObject({ line: 2, message: `a second config-database; the first is at ${rc}:1, and a configuration reads one database` });
    writeFileSync(rc, 'config-database : mysql://db/rex\n');
    const e3 = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e3.diagnostics[0]).toMatchObject({ code: ErrorCodes.CONFIG_DATABASE, line: 1 });
    expect(e3.diagnostics[0]!.message).toMatch(/expected HOST\.USER\.DBMS\.DB_NAME/);
  });

  it('a change in the table is seen by the next load only (nothing is cached or watched)', async () => {
    const { db, rc } = await setup([{ key: 'log-level', value: 'info' }]);
    const first = await loadConfig({ file: rc, env: ENV });
    await writeConfigDatabase({ dbms: 'sqlite', file: db, shown: `sqlite:${db}` }, [{ key: 'log-level', value: 'warn' }]);
    expect(first.config.logLevel).toBe('info');
    expect((await loadConfig({ file: rc, env: ENV })).config.logLevel).toBe('warn');
  });
});

describe('rex config import/export places', () => {
  it('rc -> database -> XML -> rc keeps the configuration', async () => {
    const rc = join(dir, 'src.rc');
    writeFileSync(
      rc,
      [
        'host-name : alpha',
        'servers : alpha:7801, beta@10.0.0.2:7802',
        'clients : localnets, 10.1.0.0/16',
        'programs : demo=/opt/lib/libdemo.so:/opt/lib/libdemo.xml',
        'user-map : *.alice = alice, gamma.* = -',
        'user-limits : nofile=1024:4096',
        'log-level : debug',
        '',
      ].join('\n'),
    );
    const orig = await loadConfig({ file: rc, env: ENV });
    const db = configPlace(`sqlite:${join(dir, 'moved.sqlite')}`);
    await writeConfigTo(orig, db, rc);
    const fromDb = await loadConfigFrom(db, { env: ENV });
    expect(fromDb.config).toEqual(orig.config);
    const xml = join(dir, 'moved.xml');
    await writeConfigTo(fromDb, configPlace(xml), 'db');
    const fromXml = await loadConfig({ file: xml, env: ENV });
    expect(fromXml.config).toEqual(orig.config);
    const back = join(dir, 'back.rc');
    await writeConfigTo(fromXml, configPlace(back), xml);
    expect((await loadConfig({ file: back, env: ENV })).config).toEqual(orig.config);
    expect(readFileSync(back, 'utf8')).toContain('log-level : debug');
    expect(toXmlText(orig, rc)).toContain('<server name="beta" address="10.0.0.2" port="7802"/>');
  });

  // claim: config.db-round-trip
  it('property: rc -> database -> rc gives the same normalised configuration', async () => {
    const value = fc.constantFrom(
      ['log-level', ['error', 'warn', 'info', 'debug']],
      ['load-interval', ['1s', '200ms', '2m']],
      ['peer-timeout', ['5s', '1500ms']],
      ['max-startups', ['1', '10', '100']],
      ['placement-policy', ['least-loaded', 'round-robin', 'random']],
      ['servers', ['a:7801', 'a:7801, b@127.0.0.2:9000', 'h-1, h_2:1']],
      ['clients', ['localnets', '127.0.0.1, ::1', '10.0.0.0/8']],
      ['log-fail-closed', ['yes', 'no']],
      ['state-directory', ['/var/lib/rex', '~/.rex-${HOST}']],
    ) as fc.Arbitrary<[string, string[]]>;
    const line = value.chain(([k, vs]) => fc.constantFrom(...vs).map((v) => `${k} : ${v}`));
    let i = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(line, { maxLength: 12 }), async (lines) => {
        const rc = join(dir, `p${++i}.rc`);
        writeFileSync(rc, `host-name : alpha\n${lines.join('\n')}\n`);
        const orig = await loadConfig({ file: rc, env: ENV });
        const db = configPlace(`sqlite:${join(dir, `p${i}.sqlite`)}`);
        await writeConfigTo(orig, db, rc);
        const back = join(dir, `p${i}-back.rc`);
        await writeConfigTo(await loadConfigFrom(db, { env: ENV }), configPlace(back), 'db');
        const again = await loadConfig({ file: back, env: ENV });
        expect(again.config).toEqual(orig.config);
        expect(configRows(again)).toEqual(configRows(orig));
      }),
      { numRuns: runs(40) },
    );
  });
});

describe('programs NAME=OBJECT:DATABASE', () => {
  it('takes a database as the definitions of a program; show hides a URL\'s password; a bad name is located', async () => {
    const loaded = parseRc(
      'programs : demo=/opt/lib/libdemo.so:postgresql://rex:pw-Zq1@/rex?host=/run/postgresql, other=/opt/lib/libo.so:localhost.alice.sqlite.rex\n',
      'p.rc',
      ENV,
    );
    expect(loaded.config.programs).toEqual([
      { name: 'demo', object: '/opt/lib/libdemo.so', database: 'postgresql://rex:pw-Zq1@/rex?host=/run/postgresql' },
      { name: 'other', object: '/opt/lib/libo.so', database: 'localhost.alice.sqlite.rex' },
    ]);
    const shown = formatConfig(loaded) + formatConfig(loaded, { json: true });
    expect(shown).toContain('demo=/opt/lib/libdemo.so:postgresql://rex:***@/rex?host=/run/postgresql');
    expect(shown).not.toContain('pw-Zq1');
    // What rex config export writes reads back the same (the password kept: export is for moving, not showing).
    expect(parseRc(`programs : ${configRows(loaded)[0]!.value}\n`, 'q.rc', ENV).config.programs).toEqual(loaded.config.programs);
    const e = await configError(() => parseRc('programs : demo=/opt/lib/libdemo.so:localhost.te$ter.sqlite.rex\n', 'p.rc', ENV));
    expect(e.diagnostics[0]).toMatchObject({ file: 'p.rc', line: 1, key: 'programs' });
    expect(e.diagnostics[0]!.message).toMatch(/USER "te\$ter" is not a user or role name/);
  });
});
