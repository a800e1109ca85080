// The npm package as a user gets it (issue 18): `npm pack` of the clone, its file list checked
// against package.json's `files`, `bin`, `exports` and `man`, then installed from the tarball into an
// empty project (which builds the native part there, as the registry's users will) and used from
// there: a rexd of the installed package serves /bin/echo run through the installed library API
// (import { spawn } from '@rex-cluster/rex') and through the installed `rex` bin
// (node_modules/.bin/rex, npm's link of bin/rex). The install compiles once per suite: a few minutes.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../../src/cluster/cluster.js';
import { packageRoot } from '../../src/util/paths.js';

const root = packageRoot();
interface Pkg {
  name: string;
  version: string;
  files: string[];
  bin: Record<string, string>;
  man: string[];
  exports: Record<string, string | Record<string, string>>;
  types: string;
}
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as Pkg;

describe('the npm package (npm pack, then npm install of the tarball into an empty project)', () => {
  let tmp: string;
  let tarball: string;
  /** The tarball's files, relative to its package/ directory. */
  let files: string[];
  /** The empty project the tarball is installed into, and the package's directory there. */
  let project: string;
  let installed: string;
  let installSecs = 0;
  let rexd: ChildProcess | undefined;
  const env = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, HOME: tmp, LANG: 'C', ...extra });

  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'rex-pack-'));
    // --ignore-scripts: the tarball of what the clone has built (dist/ by the tests' global set-up, dist/man
    // by npm install's prepare). `npm pack` would run prepare again, rewriting dist/ under the suites
    // running beside this one; the files it would pack are the same.
    const out = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: root, encoding: 'utf8', env: { ...process.env, npm_config_loglevel: 'error' } });
    const rec = (JSON.parse(out) as { filename: string; files: { path: string }[] }[])[0]!;
    tarball = join(tmp, rec.filename);
    files = rec.files.map((f) => f.path).sort();
    project = join(tmp, 'project');
    mkdirSync(project);
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'rex-pack-consumer', version: '1.0.0', private: true, type: 'commonjs' }, null, 2));
    // The user's npm as it is (HOME: ~/.npmrc, the npm cache, node-gyp's headers), without the npm_*
    // variables of an `npm test` running this suite, which describe the clone's package (local_prefix,
    // package_json...), not this project; the user's own settings among them are kept.
    const keep = /^npm_config_(nodedir|cache|registry|userconfig|globalconfig|jobs|python|.*binary_host(_mirror)?)$/i;
    const userEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) || keep.test(k)));
    const t0 = Date.now();
    const r = spawnSync('npm', ['install', tarball, '--no-audit', '--no-fund', '--loglevel=error'], { cwd: project, encoding: 'utf8', env: userEnv, timeout: 900_000 });
    installSecs = (Date.now() - t0) / 1000;
    if (r.status !== 0) throw new Error(`npm install ${tarball} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
    installed = join(project, 'node_modules', ...pkg.name.split('/'));
    console.log(`pack.test: npm install of the tarball took ${installSecs.toFixed(1)} s`);
  }, 960_000);
  afterAll(() => {
    if (rexd?.exitCode === null) rexd.kill('SIGKILL');
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  // claim: package.contents
  it('carries no keys, tests, benchmarks, cluster state or build outputs, and every file package.json names', () => {
    expect(pkg.name).toBe('@rex-cluster/rex');
    const bad = files.filter(
      (f) => /\.key$/.test(f) || /(^|\/)(test|bench)\//.test(f.replace(/^native\/test\/rex_client_demo\.c$/, '')) || /(^|\/)\.rex-cluster(\/|$)/.test(f) || /^cl\//.test(f) || f.startsWith('native/build/') || f.startsWith('node_modules/'),
    );
    expect(bad).toEqual([]);
    // native/test/ holds the C tests; only the demo program's source (npm start's rex_hosts_demo) ships.
    expect(files.filter((f) => f.startsWith('native/test/'))).toEqual(['native/test/rex_client_demo.c']);
    const targets = [
      ...Object.values(pkg.bin),
      ...pkg.man,
      pkg.types,
      ...Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e))),
      'package.json',
      'README.md',
      'LICENSE',
      'native/binding.gyp',
      'native/Makefile',
      'native/include/rex.h',
      'scripts/build-native.mjs',
      'scripts/install-node.mjs',
      'schema/rex.schema.json',
    ].map((f) => f.replace(/^\.\//, ''));
    expect(targets.filter((t) => !files.includes(t))).toEqual([]);
    // Each `files` entry that is not a negation matches something.
    for (const f of pkg.files.filter((x) => !x.startsWith('!'))) expect(files.some((p) => p === f || p.startsWith(f.endsWith('/') ? f : `${f}/`)), f).toBe(true);
    expect(files.some((f) => f.startsWith('templates/'))).toBe(true);
  });

  // claim: package.install
  it('installs from the tarball into an empty project: the native part built, every bin linked (rex too)', () => {
    for (const b of Object.keys(pkg.bin)) {
      const link = join(project, 'node_modules', '.bin', b);
      expect(existsSync(link), b).toBe(true);
      expect(readlinkSync(link), b).toBe(`../${pkg.name}/${pkg.bin[b]}`);
    }
    for (const f of ['native/build/Release/rex_addon.node', 'native/build/bin/rex', 'native/build/bin/rex-restore', 'native/build/bin/rex_pty', 'native/build/bin/test_rfork_1', 'native/build/bin/rex_hosts_demo', 'native/build/lib/librex.so']) {
      expect(existsSync(join(installed, f)), f).toBe(true);
    }
    // The test-only programs are not built at install (make test-programs).
    expect(existsSync(join(installed, 'native/build/test'))).toBe(false);
    expect(installSecs).toBeGreaterThan(0);
  });

  // claim: package.runs
  it("a rexd of the installed package serves /bin/echo through the installed library API and the installed rex bin", async () => {
    const dir = join(tmp, 'solo');
    mkdirSync(dir, { recursive: true });
    const rc = join(dir, 'rex.rc');
    const socket = join(dir, 'state', 'run', 'rexd.sock');
    const port = await freePort();
    writeFileSync(rc, ['host-name : solo', `servers : solo@127.0.0.1:${port}`, `state-directory : ${dir}/state`, ''].join('\n'));
    const bin = (b: string) => join(project, 'node_modules', '.bin', b);
    const key = spawnSync(bin('rex_key'), ['--config', rc, '--create'], { cwd: project, env: env(), encoding: 'utf8' });
    expect(key.status, key.stderr).toBe(0);
    let err = '';
    rexd = spawn(bin('rexd'), ['--foreground', '--config', rc], { cwd: project, env: env(), stdio: ['ignore', 'ignore', 'pipe'] });
    rexd.stderr!.on('data', (d) => (err += d));
    await vi.waitFor(
      () => {
        if (rexd!.exitCode !== null) throw new Error(`rexd exited: ${err}`);
        const v = spawnSync(bin('rex'), ['run', '--socket', socket, '--host', 'solo', '/bin/true'], { cwd: project, env: env(), encoding: 'utf8' });
        if (v.status !== 0) throw new Error(v.stderr);
      },
      { timeout: 30_000, interval: 200 },
    );
    // The library, as a user's ES module imports it.
    writeFileSync(
      join(project, 'echo.mjs'),
      [
        `import { spawn } from '${pkg.name}';`,
        `const child = spawn('/bin/echo', ['from the library'], { host: 'solo' });`,
        `let out = '';`,
        `child.stdout.on('data', (d) => (out += d));`,
        `child.on('close', (code, signal) => console.log(JSON.stringify({ code, signal, host: child.host, out })));`,
        '',
      ].join('\n'),
    );
    const lib = spawnSync(process.execPath, ['echo.mjs'], { cwd: project, env: env({ REX_SOCKET: socket }), encoding: 'utf8', timeout: 30_000 });
    expect([lib.status, lib.stderr]).toEqual([0, '']);
    expect(JSON.parse(lib.stdout)).toEqual({ code: 0, signal: null, host: 'solo', out: 'from the library\n' });
    // The bin: node_modules/.bin/rex is npm's link of bin/rex, which execs the native front end.
    const r = spawnSync(bin('rex'), ['run', '--socket', socket, '--host', 'solo', '/bin/echo', 'from the bin'], { cwd: project, env: env(), encoding: 'utf8', timeout: 30_000 });
    expect([r.status, r.stdout, r.stderr]).toEqual([0, 'from the bin\n', '']);
    const v = spawnSync(bin('rex'), ['--version'], { cwd: project, env: env(), encoding: 'utf8' });
    expect([v.status, v.stdout, v.stderr]).toEqual([0, `${pkg.version}\n`, '']);
    // Without the native front end (not built yet, or removed) the launcher runs the Node CLI.
    const nativeRex = join(installed, 'native/build/bin/rex');
    const saved = readFileSync(nativeRex);
    rmSync(nativeRex);
    try {
      const n = spawnSync(bin('rex'), ['run', '--socket', socket, '--host', 'solo', '/bin/echo', 'from the Node CLI'], { cwd: project, env: env(), encoding: 'utf8', timeout: 30_000 });
      expect([n.status, n.stdout, n.stderr]).toEqual([0, 'from the Node CLI\n', '']);
    } finally {
      writeFileSync(nativeRex, saved, { mode: 0o755 });
    }
    rexd.kill('SIGTERM');
  }, 120_000);

  // claim: package.require
  it('require() of the package: the module where Node can require() ES modules, else ERR_REQUIRE_ESM with a message naming import', () => {
    const js = `try { const m = require('${pkg.name}'); console.log(JSON.stringify({ loaded: typeof m.spawn })); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const req = (flags: string[]) => {
      const r = spawnSync(process.execPath, [...flags, '-e', js], { cwd: project, env: env(), encoding: 'utf8' });
      expect([r.status, r.stderr]).toEqual([0, '']);
      return JSON.parse(r.stdout) as { loaded?: string; code?: string; message?: string };
    };
    // Node 20.19+ (22.12+ on 22) loads ES modules through require(): so does the wrapper.
    const canRequireEsm = (process.features as { require_module?: boolean }).require_module === true;
    if (canRequireEsm) expect(req([])).toEqual({ loaded: 'function' });
    // Node 20.0-20.18, as --no-experimental-require-module makes this one (and what canRequireEsm false means).
    const e = req(canRequireEsm ? ['--no-experimental-require-module'] : []);
    expect(e.code).toBe('ERR_REQUIRE_ESM');
    expect(e.message).toContain(`await import('${pkg.name}')`);
    expect(e.message).toContain(`import { spawn } from '${pkg.name}'`);
  });

  // claim: package.types
  it("the types condition: TypeScript (nodenext) type-checks a user's import of the installed package", () => {
    writeFileSync(
      join(project, 'use.mts'),
      [`import { spawn, RexClient } from '${pkg.name}';`, `import * as stub from '${pkg.name}/runtime/codegen-v1';`, `const c = spawn('/bin/true', [], { host: 'solo' });`, `const h: string | undefined = c.host;`, `export { h, RexClient, stub };`, ''].join('\n'),
    );
    const r = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--types', 'node', '--typeRoots', join(root, 'node_modules/@types'), '--skipLibCheck', 'use.mts'], { cwd: project, env: env(), encoding: 'utf8' });
    expect([r.status, r.stdout, r.stderr]).toEqual([0, '', '']);
  });
});
