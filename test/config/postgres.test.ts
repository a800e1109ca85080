/**
 * Configuration and entry points in one real PostgreSQL (issue 20), started by the fixture in a temp dir:
 * config-database : postgresql://... read with sources named by table and row (never the password), a bad row
 * and an unreachable server refused at the directive; `repdb -gd localhost.$USER.postgresql.rex` writing REXP and
 * `repdb -d` reading it back for the stripped library; and a three-host cluster whose shared configuration is in
 * that database (the log server too), serving an entry point of the stripped library from REXP through `rex call`,
 * the calls of all three in `rex log` from that database, where a change in the table takes effect at
 * `rex config reload`, not before, and a reload that cannot read the table keeps the old.
 */
import { execFile, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { readPid } from '../../src/daemon/paths.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { writeConfigDatabase } from '../../src/config/database.js';
import { formatConfig, loadConfig } from '../../src/config/index.js';
import { configPlace, loadConfigFrom, writeConfigTo } from '../../src/config/transfer.js';
import { parseDbTarget, type DbTarget } from '../../src/db/target.js';
import { ErrorCodes } from '../../src/util/errors.js';
import { distBin } from '../../src/util/paths.js';
import { buildLibrary, tempDir, writeXml } from '../calls/helpers.js';
import { runOn, startCluster } from '../helpers/cluster.js';
import { connect } from '../../src/db/postgres.js';
import { setupLogServer } from '../../src/log/central.js';
import { postgresUnavailable, startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { configError } from './helpers.js';

const why = postgresUnavailable();
if (why) console.warn(`PostgreSQL configuration tests skipped: ${why}`);

const run = promisify(execFile);
const PASSWORD = 'pw-Kq7-secret';
const USER = process.env.USER ?? userInfo().username;
const ENV = { USER: 'tester', HOME: '/home/tester' } as NodeJS.ProcessEnv;
const HOSTS = ['alpha', 'beta', 'gamma'] as const;

let pg: TestPostgres;
let dir: string;
let cfgUrl: string;
let cfg: DbTarget;
/** What repdb and rexd need to find the server for localhost.$USER.postgresql.rex. */
let pgEnv: Record<string, string>;

function target(text: string): DbTarget {
  const t = parseDbTarget(text, { env: { ...process.env, ...pgEnv } });
  if (typeof t === 'string') throw new Error(t);
  return t;
}

async function cmd(bin: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const p = run(process.execPath, [distBin(bin), ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
    p.child.stdin?.end(); // an empty stdin: repdb reads a pipe that stays open as its input
    const r = await p;
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

beforeAll(async () => {
  if (why) return;
  dir = tempDir('rex-pgcfg-');
  pg = await startPostgres();
  await pg.createRole('rex_cfg', { password: PASSWORD });
  await pg.createDatabase('rexcfg', 'rex_cfg');
  // The role repdb -d localhost.$USER.postgresql.rex connects as: this user's name, with a password.
  await pg.createRole(USER, { password: PASSWORD });
  await pg.createDatabase('rex', USER);
  cfgUrl = pg.url('rexcfg', 'rex_cfg', PASSWORD);
  cfg = target(cfgUrl);
  pgEnv = { REX_PG_SOCKET: pg.socketDir, PGPORT: String(pg.port), PGPASSWORD: PASSWORD };
}, 120_000);

afterAll(async () => {
  await pg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(why !== undefined)('configuration in PostgreSQL', () => {
  it('config-database : postgresql://... is read where it stands; sources name table and row, never the password', async () => {
    await writeConfigDatabase(cfg, [
      { key: 'log-level', value: 'debug' },
      { key: 'servers', value: 'alpha@127.0.0.1:7801, beta@127.0.0.1:7802' },
      { key: 'placement-policy', value: 'round-robin' },
    ]);
    const rc = join(dir, 'a.rc');
    writeFileSync(rc, `host-name : alpha\nconfig-database : ${cfgUrl}\nplacement-policy : random\n`);
    const loaded = await loadConfig({ file: rc, env: ENV });
    expect(loaded.config.logLevel).toBe('debug');
    expect(loaded.config.placementPolicy).toBe('random');
    expect(loaded.config.servers.map((s) => s.name)).toEqual(['alpha', 'beta']);
    expect(loaded.sources.servers.file).toBe(`${cfg.shown} table rex_config row 2`);
    expect(cfg.shown).toContain(':***@');
    const shown = formatConfig(loaded) + formatConfig(loaded, { json: true });
    expect(shown).toContain('table rex_config row 1');
    expect(shown).not.toContain(PASSWORD);
    // The schema is versioned: rex_config at version 1, written once however often it is written.
    await writeConfigDatabase(cfg, [{ key: 'log-level', value: 'debug' }]);
    expect((await pg.psql("SELECT schema_name, version FROM rex_schema_migrations WHERE schema_name = 'rex_config'", 'rexcfg')).trim()).toBe('rex_config|1');
  });

  // claim: config.db-unreachable
  it('a bad row is refused at its table and row; an unreachable server or a wrong password at the directive, without the password', async () => {
    await writeConfigDatabase(cfg, [
      { key: 'log-level', value: 'loud' },
      { key: 'max-startups', value: '10' },
    ]);
    const rc = join(dir, 'b.rc');
    writeFileSync(rc, `config-database : ${cfgUrl}\n`);
    const e = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e.diagnostics).toHaveLength(1);
    expect(e.diagnostics[0]).toMatchObject({ code: ErrorCodes.CONFIG_VALUE, file: `${cfg.shown} table rex_config row 1`, key: 'log-level' });
    expect(e.message).not.toContain(PASSWORD);

    const gone = pg.url('rexcfg', 'rex_cfg', PASSWORD).replace(pg.socketDir, join(dir, 'no-server'));
    writeFileSync(rc, `log-level : info\nconfig-database : ${gone}\n`);
    const e2 = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e2.diagnostics[0]).toMatchObject({ code: ErrorCodes.CONFIG_DATABASE, file: rc, line: 2 });
    expect(e2.diagnostics[0]!.message).toMatch(/cannot read the configuration database postgresql:\/\/rex_cfg:\*\*\*@.*no-server/);
    expect(e2.message).not.toContain(PASSWORD);

    writeFileSync(rc, `config-database : ${pg.url('rexcfg', 'rex_cfg', 'wrong-pw-Zz9')}\n`);
    const e3 = await configError(() => loadConfig({ file: rc, env: ENV }));
    expect(e3.diagnostics[0]!.message).toMatch(/password authentication failed|authentication/i);
    expect(e3.message).not.toContain('wrong-pw-Zz9');
  });

  it('rex config import/export moves a configuration between rc and PostgreSQL unchanged', async () => {
    const rc = join(dir, 'c.rc');
    writeFileSync(rc, 'host-name : gamma\nservers : gamma@127.0.0.3:7803\nclients : localnets, 10.0.0.0/8\nlog-heartbeats : yes\n');
    const r = await cmd('rex', ['config', 'import', rc, '--to', cfgUrl]);
    expect(r.stderr).toMatch(/table rex_config/);
    expect(r.stderr).not.toContain(PASSWORD);
    expect(r.code).toBe(0);
    const back = join(dir, 'c-back.rc');
    expect((await cmd('rex', ['config', 'import', cfgUrl, '--to', back])).code).toBe(0);
    expect((await loadConfig({ file: back, env: ENV })).config).toEqual((await loadConfig({ file: rc, env: ENV })).config);
    expect((await loadConfigFrom(configPlace(cfgUrl), { env: ENV })).config.hostName).toBe('gamma');
    await writeConfigTo(await loadConfig({ file: rc, env: ENV }), configPlace(cfgUrl), rc);
  });
});

describe.skipIf(why !== undefined)('repdb -d localhost.$USER.postgresql.rex, and a cluster configured from PostgreSQL', () => {
  let lib: string;
  let stripped: string;
  let cluster: LocalCluster;
  let stop: (() => Promise<void>) | undefined;
  const saved = { ...process.env };

  beforeAll(async () => {
    if (why) return;
    lib = buildLibrary(dir);
    const xml = writeXml(dir, lib);
    // The entry points go into REXP before the library is stripped, as the seed advises.
    const w = await cmd('repdb', ['--xml', xml, '-d', `localhost.${USER}.postgresql.rex`], pgEnv);
    expect(w.stderr).toMatch(new RegExp(`^repdb: wrote \\d+ entry points of libcalltest.so to localhost\\.${USER}\\.postgresql\\.rex \\(postgresql://${USER}@/rex\\?host=.*\\) table REXP\\n$`));
    expect(w.code).toBe(0);
    mkdirSync(join(dir, 'stripped'));
    stripped = join(dir, 'stripped', 'libcalltest.so');
    copyFileSync(lib, stripped);
    spawnSync('strip', [stripped]);
  }, 120_000);

  afterAll(async () => {
    await stop?.();
    for (const k of Object.keys(pgEnv ?? {})) if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  });

  it('repdb writes REXP into the database and reads it back against the stripped library', async () => {
    const rows = await pg.psql('SELECT count(*) FROM REXP', 'rex');
    expect(Number(rows.trim())).toBeGreaterThan(5);
    expect((await pg.psql("SELECT version FROM rex_schema_migrations WHERE schema_name = 'REXP'", 'rex')).trim()).toBe('1');
    const r = await cmd('repdb', ['-d', `localhost.${USER}.postgresql.rex`, stripped], pgEnv);
    expect(r.stdout).toMatch(/^ok: libcalltest\.so: \d+ entry points, \d+ callable, symbols checked\n$/);
    expect(r.code).toBe(0);
    const x = await cmd('repdb', ['-x', '-d', `localhost.${USER}.postgresql.rex`, '--elf-file', 'libcalltest.so'], pgEnv);
    expect(x.stdout).toMatch(/<entry-point name="neg32"/);
    // Without the password the server says no, and repdb says which server and what to do.
    const noPw = await cmd('repdb', ['-d', `localhost.${USER}.postgresql.rex`, stripped], { ...pgEnv, PGPASSWORD: '' });
    expect(noPw.code).toBe(1);
    expect(noPw.stderr).toMatch(/password/i);
  });

  // claim: config.db-reload
  it('three hosts read their shared configuration from PostgreSQL and serve the stripped library from REXP; table changes wait for a reload', async () => {
    Object.assign(process.env, pgEnv); // rexd maps localhost.$USER.postgresql.rex with its environment, as repdb does
    // The log of the cluster in the same database (docs/LOG.md): one role per host, named in the shared configuration with ${HOST}.
    for (const h of HOSTS) await pg.createRole(`rex_${h}`, { password: PASSWORD });
    const admin = await connect(pg.url('rexcfg'));
    try {
      await setupLogServer(admin, HOSTS.map((h) => ({ host: h, role: `rex_${h}` })), HOSTS.map((h) => `rex_${h}`));
      // One rex_schema_migrations for every schema of the database: the role that writes the configuration records its own there.
      await admin.query('GRANT SELECT, INSERT ON rex_schema_migrations TO rex_cfg');
    } finally {
      await admin.end();
    }
    const logServer = { key: 'rex-log-server', value: `postgresql://rex_\${HOST}@/rexcfg?host=${pg.socketDir}&port=${pg.port}` };
    await writeConfigDatabase(cfg, [
      { key: 'programs', value: `calltest=${stripped}:localhost.${USER}.postgresql.rex` },
      { key: 'max-startups', value: '20' },
      logServer,
    ]);
    ({ cluster, stop } = await startCluster(3, { rc: [`config-database : ${cfgUrl}`] }));
    await cluster.waitAllReachable();
    const alpha = cluster.host('alpha');
    const rexCall = (...args: string[]) => cmd('rex', ['call', ...args, '--socket', alpha.socket]);
    for (const h of ['alpha', 'beta', 'gamma']) {
      const r = await rexCall(`${h}.calltest.neg32`, '-5');
      expect(r.stderr, h).toBe('');
      expect(r.stdout, h).toBe('5\n');
    }
    // Their transactions in the one database: `rex log` on alpha shows all three hosts' calls.
    await vi.waitFor(
      async () => {
        const shown = await runOn(cluster, 'alpha', [process.execPath, distBin('rex'), 'log', '--kind', 'transaction', '--json', '-n', '10000']);
        const rows = JSON.parse(shown.stdout) as { host: string; target: string | null }[];
        expect(new Set(rows.filter((r) => r.target?.includes('calltest.neg32')).map((r) => r.host))).toEqual(new Set(HOSTS));
      },
      { timeout: 30_000, interval: 250 },
    );
    const show = await cmd('rex', ['config', 'show', '-c', cluster.host('beta').rcFile]);
    expect(show.stdout).toMatch(/^programs +: calltest=.* \/\* postgresql:\/\/rex_cfg:\*\*\*@.* table rex_config row 1 \*\/$/m);
    expect(show.stdout).not.toContain(PASSWORD);

    // A second program in the table: not offered until the reload.
    await writeConfigDatabase(cfg, [
      { key: 'programs', value: `calltest=${stripped}:localhost.${USER}.postgresql.rex, calltest2=${lib}` },
      { key: 'max-startups', value: '20' },
      logServer,
    ]);
    expect((await rexCall('beta.calltest2.neg32', '4')).stderr).toMatch(/calltest2/);
    const reload = await cmd('rex', ['config', 'reload', '-c', cluster.host('beta').rcFile]);
    expect(reload.stderr).toBe('');
    expect(reload.stdout).toMatch(/^rexd \(pid \d+\) reloaded .*\/beta\/rex.rc, .*\/cluster.rc, postgresql:\/\/rex_cfg:\*\*\*@\/rexcfg\?host=.*\n  applied: programs\n$/);
    expect((await rexCall('beta.calltest2.neg32', '4')).stdout).toBe('-4\n');

    // The table unreadable at a reload (the role may not log in): refused, the configuration in force kept.
    await pg.psql('ALTER ROLE rex_cfg NOLOGIN');
    try {
      const refused = await cmd('rex', ['config', 'reload', '-c', cluster.host('beta').rcFile]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/cannot read the configuration database postgresql:\/\/rex_cfg:\*\*\*@/);
      expect(refused.stderr).not.toContain(PASSWORD);
      // rex config reload checks first, so beta was not even signalled; SIGHUP itself (systemctl reload) is refused by rexd.
      const log = () => readFileSync(cluster.host('beta').logFile, 'utf8').split('\n').filter((l) => l.includes('"event":"reload-refused"'));
      const seen = log().length;
      process.kill(readPid(join(dirname(cluster.host('beta').socket), 'rexd.pid'))!, 'SIGHUP');
      const ev = await vi.waitFor(
        () => {
          const all = log();
          if (all.length <= seen) throw new Error('beta logged no refused reload');
          return JSON.parse(all.at(-1)!) as { diagnostics: string[] };
        },
        { timeout: 30_000, interval: 50 },
      );
      expect(ev.diagnostics.join('\n')).toMatch(/cannot read the configuration database postgresql:\/\/rex_cfg:\*\*\*@/);
      expect((await rexCall('beta.calltest2.neg32', '6')).stdout).toBe('-6\n');
    } finally {
      await pg.psql('ALTER ROLE rex_cfg LOGIN');
    }
  }, 240_000);
});
