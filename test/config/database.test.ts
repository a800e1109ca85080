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
import { formatConfig, loadConfig, parseRc, parseXmlConfig } from '../../src/config/index.js';
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
      'rex_config row 3: a configuration database cannot name another one; only a configuration file (rc or XML) names it',
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

// The XML form's <config-database target="TARGET"/> is the rc directive at the element's line: scanXml turns it into
// the same definition and the loader follows both alike (src/config/load.ts readDatabase), so only SQLite is used
// here; PostgreSQL targets go through that same code path and are covered by the rc tests (test/config/postgres.test.ts).
describe('<config-database target="..."/> in the XML form', () => {
  const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
  /** An XML configuration with `body` lines (line 1 is the declaration, line 2 <rex-config>, body from line 3). */
  function writeXml(name: string, body: string[]): string {
    const f = join(dir, name);
    writeFileSync(f, ['<?xml version="1.0" encoding="UTF-8"?>', '<rex-config>', ...body, '</rex-config>', ''].join('\n'));
    return f;
  }
  async function xmlSetup(rows: { key: string; value: string }[], before: string[] = [], after: string[] = []) {
    const db = join(dir, `xcfg${++n}.sqlite`);
    await writeConfigDatabase({ dbms: 'sqlite', file: db, shown: `sqlite:${db}` }, rows);
    const xml = writeXml(`rex${n}.xml`, [...before, `  <config-database target="${xmlEscape(`sqlite:${db}`)}"/>`, ...after]);
    return { db, xml };
  }

  // claim: config.db-xml
  it('reads the table where the element stands: an element before is overridden, one after overrides; show names the row', async () => {
    const { db, xml } = await xmlSetup(
      [
        { key: 'log-level', value: 'debug' },
        { key: 'load-interval', value: '3s' },
        { key: 'servers', value: 'alpha:7801, beta:7802' },
      ],
      ['  <log-level>error</log-level>', '  <peer-timeout>9s</peer-timeout>'],
      ['  <load-interval>5s</load-interval>'],
    );
    const loaded = await loadConfig({ file: xml, env: ENV });
    expect(loaded.config.logLevel).toBe('debug'); // the database overrides elements before <config-database>
    expect(loaded.config.loadInterval).toBe(5000); // and elements after it override the database
    expect(loaded.config.peerTimeout).toBe(9000);
    expect(loaded.config.servers.map((s) => `${s.name}:${s.port}`)).toEqual(['alpha:7801', 'beta:7802']);
    expect(loaded.sources.logLevel).toEqual({ file: `sqlite:${db} table rex_config row 1` });
    expect(loaded.sources.servers.file).toBe(`sqlite:${db} table rex_config row 3`);
    expect(loaded.sources.loadInterval).toEqual({ file: xml, line: 6 });
    expect(loaded.files).toEqual([xml, `sqlite:${db}`]);
    // The same rows and lines in rc give the same configuration.
    const rc = join(dir, `same${n}.rc`);
    writeFileSync(rc, `log-level : error\npeer-timeout : 9s\nconfig-database : sqlite:${db}\nload-interval : 5s\n`);
    expect((await loadConfig({ file: rc, env: ENV })).config).toEqual(loaded.config);

    // rex config show, the real command, names the row as the source of a value from the database.
    const r = spawnSync(process.execPath, [distBin('rex'), 'config', 'show', '-c', xml], { encoding: 'utf8', env: { PATH: process.env.PATH, USER: 'tester', HOME: dir, REX_ROOT: join(dir, 'no-root') } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^log-level +: debug +/\\* sqlite:${db} table rex_config row 1 \\*/$`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^load-interval +: 5s +/\\* ${xml}:6 \\*/$`, 'm'));
  });

  it('a row with a bad value is reported at its table and row', async () => {
    const { db, xml } = await xmlSetup([
      { key: 'log-level', value: 'info' },
      { key: 'load-interval', value: 'soon' },
    ]);
    const e = await configError(() => loadConfig({ file: xml, env: ENV }));
    expect(e.diagnostics).toHaveLength(1);
    expect(e.diagnostics[0]).toMatchObject({ file: `sqlite:${db} table rex_config row 2`, code: ErrorCodes.CONFIG_VALUE, key: 'load-interval' });
    expect(e.message).toContain(`sqlite:${db} table rex_config row 2: error: key "load-interval": "soon" is not a duration`);
  });

  it('a second element is an error at its file:line naming the first; so is one in an included file', async () => {
    const { db } = await xmlSetup([{ key: 'log-level', value: 'info' }]);
    const t = `  <config-database target="sqlite:${xmlEscape(db)}"/>`;
    const xml = writeXml('twice.xml', [t, '  <log-level>warn</log-level>', t]);
    const e = await configError(() => loadConfig({ file: xml, env: ENV }));
    expect(e.diagnostics).toEqual([{ code: ErrorCodes.CONFIG_DATABASE, file: xml, line: 5, key: 'config-database', message: `a second config-database; the first is at ${xml}:3, and a configuration reads one database` }]);
    expect(e.message).toContain(`${xml}:5: error: key "config-database": a second config-database; the first is at ${xml}:3`);
    // rc and XML count together: an rc directive and an XML element included from it are two.
    const inner = writeXml('inner.xml', [t]);
    const rc = join(dir, 'outer.rc');
    writeFileSync(rc, `config-database : sqlite:${db}\n#include "inner.xml"\n`);
    const e2 = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e2.diagnostics).toHaveLength(1);
    expect(e2.diagnostics[0]).toMatchObject({ file: inner, line: 3, message: `a second config-database; the first is at ${rc}:1, and a configuration reads one database` });
  });

  it('refuses an SQLite file others can write, and a database that cannot be read, at the element\'s file:line', async () => {
    const { db, xml } = await xmlSetup([{ key: 'log-level', value: 'info' }], ['  <log-level>warn</log-level>']);
    chmodSync(db, 0o664);
    const e = await configError(() => loadConfig({ file: xml, env: ENV }));
    expect(e.diagnostics).toHaveLength(1);
    expect(e.diagnostics[0]).toMatchObject({ code: ErrorCodes.CONFIG_DATABASE, file: xml, line: 4, key: 'config-database' });
    expect(e.diagnostics[0]!.message).toMatch(/refusing the SQLite database: group or others can write it \(mode 0664\)/);
    const missing = join(dir, 'x-missing.sqlite');
    const x2 = writeXml('x-missing.xml', [`  <config-database target="sqlite:${xmlEscape(missing)}"/>`]);
    const e2 = await configError(() => loadConfig({ file: x2, env: ENV }));
    expect(e2.diagnostics[0]).toMatchObject({ code: ErrorCodes.CONFIG_DATABASE, file: x2, line: 3 });
    expect(e2.diagnostics[0]!.message).toContain(`cannot read the configuration database sqlite:${missing}: cannot open SQLite database: it does not exist`);
  });

  // claim: config.db-unreachable
  it('rexd does not start when the database its XML configuration names cannot be read, and names the XML file:line', () => {
    const missing = join(dir, 'x-gone.sqlite');
    const xml = writeXml('rexd.xml', [`  <state-directory>${xmlEscape(join(dir, 'xrexd-state'))}</state-directory>`, `  <config-database target="sqlite:${xmlEscape(missing)}"/>`]);
    const r = spawnSync(process.execPath, [distBin('rexd'), '--foreground', '-c', xml], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, REX_CONFIG: '' } });
    expect(r.status).not.toBe(0);
    expect(r.signal).toBeNull();
    expect(r.stderr).toContain(`${xml}:4: error: key "config-database": cannot read the configuration database sqlite:${missing}: cannot open SQLite database: it does not exist`);
    expect(existsSync(join(dir, 'xrexd-state', 'run', 'rexd.pid'))).toBe(false);
  });

  it('the element is EMPTY with a required target: a missing target, content, or a bad target is an error at its line', async () => {
    const cases: [string, RegExp][] = [
      ['<config-database/>', /does not match schema\/rex\.dtd: .*config-database.*target/],
      ['<config-database target="sqlite:/x.sqlite">sqlite:/y.sqlite</config-database>', /does not match schema\/rex\.dtd: .*config-database/],
      ['<config-database target="sqlite:/x.sqlite" file="y"/>', /does not match schema\/rex\.dtd: .*file/],
      ['<config-databse target="sqlite:/x.sqlite"/>', /unknown element <config-databse>; did you mean <config-database>\?/],
      ['<config-database target=""/>', /the database name is empty; expected sqlite:PATH/],
      ['<config-database target="mysql://db/rex"/>', /expected HOST\.USER\.DBMS\.DB_NAME/],
    ];
    for (const [el, re] of cases) {
      const xml = writeXml('bad.xml', ['  <log-level>info</log-level>', `  ${el}`]);
      const e = await configError(() => loadConfig({ file: xml, env: ENV }));
      expect(e.diagnostics.length, el).toBeGreaterThan(0);
      for (const d of e.diagnostics) expect(d, el).toMatchObject({ file: xml, line: 4 });
      expect(e.diagnostics.map((d) => d.message).join('\n'), el).toMatch(re);
    }
    // On its own (no file system, no database), the XML form reports the element as parseRc does the rc line.
    const e = await configError(() => parseXmlConfig('<rex-config>\n<config-database target="sqlite:/x.sqlite"/>\n</rex-config>\n', 'p.xml', ENV));
    expect(e.diagnostics).toEqual([{ code: ErrorCodes.CONFIG_DATABASE, file: 'p.xml', line: 2, key: 'config-database', message: '<config-database> needs a database; use loadConfig() to read it' }]);
  });

  it('property: any target attribute gives the rc directive\'s result for the same text, errors at the element\'s line', async () => {
    const { db } = await xmlSetup([{ key: 'log-level', value: 'debug' }]);
    const target = fc.oneof(
      fc.string(),
      fc.string({ unit: 'grapheme' }),
      fc.constantFrom(`sqlite:${db}`, ` sqlite:${db} `, 'sqlite:relative.sqlite', 'sqlite:', 'localhost.tester.sqlite.nope', 'localhost.te$ter.sqlite.x', 'postgresql://', 'postgresql://u@/db?host=/nonexistent-dir', 'a.b.c.d.e', '~/x'),
    );
    let i = 0;
    await fc.assert(
      fc.asyncProperty(target, async (t) => {
        // XML cannot carry every character (NUL, lone surrogates, most C0 controls): those are not attributes.
        fc.pre(!/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udfff]/.test(t.replace(/[\ud800-\udbff][\udc00-\udfff]/g, '')));
        // Attribute-value normalisation turns CRLF, tab, CR and LF into one space each; rc cannot hold a newline.
        const text = t.replace(/\r\n/g, ' ').replace(/[\t\r\n]/g, ' ');
        // "/*" starts an rc comment and a final "\\" splices lines: such text means something else in rc.
        fc.pre(!text.includes('/*') && !text.trimEnd().endsWith('\\'));
        const xml = writeXml(`prop${++i}.xml`, ['  <peer-timeout>9s</peer-timeout>', `  <config-database target="${xmlEscape(t)}"/>`]);
        const rc = join(dir, `prop${i}.rc`);
        writeFileSync(rc, `peer-timeout : 9s\nconfig-database : ${text}\n`);
        /** The configuration, or the diagnostics with the file itself shown as FILE and the directive's line as AT. */
        const outcome = async (file: string, at: number) => {
          try {
            return { config: (await loadConfig({ file, env: ENV })).config };
          } catch (e) {
            const err = await configError(() => Promise.reject(e));
            return { errors: err.diagnostics.map((d) => (d.file === file ? { ...d, file: 'FILE', line: d.line === at ? 'AT' : d.line } : d)) };
          }
        };
        const fromXml = await outcome(xml, 4);
        if ('errors' in fromXml) for (const d of fromXml.errors!) expect(d).toMatchObject({ file: 'FILE', line: 'AT', key: 'config-database' });
        expect(fromXml).toEqual(await outcome(rc, 2));
      }),
      { numRuns: runs(60) },
    );
  });

  it('rex config export of an XML configuration read from a database writes the values, not the element', async () => {
    const { db, xml } = await xmlSetup([{ key: 'servers', value: 'alpha:7801' }, { key: 'log-level', value: 'debug' }], [], ['  <host-name>alpha</host-name>']);
    const loaded = await loadConfig({ file: xml, env: ENV });
    const out = join(dir, 'exported.xml');
    await writeConfigTo(loaded, configPlace(out), xml);
    const text = readFileSync(out, 'utf8');
    expect(text).not.toContain('config-database');
    expect(text).not.toContain(db);
    expect(text).toContain('<log-level>debug</log-level>');
    expect(text).toContain('<server name="alpha" address="alpha" port="7801"/>');
    const back = await loadConfig({ file: out, env: ENV });
    expect(back.config).toEqual(loaded.config);
    expect(back.files).toEqual([out]);
    const rcOut = join(dir, 'exported.rc');
    await writeConfigTo(loaded, configPlace(rcOut), xml);
    expect(readFileSync(rcOut, 'utf8')).not.toContain('config-database');
    expect((await loadConfig({ file: rcOut, env: ENV })).config).toEqual(loaded.config);
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
