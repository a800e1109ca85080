// `make -C native install` into a DESTDIR (docs/INSTALL.md): the tree it lays out, librex's
// versioned soname, rex.pc building the 2009 guide's example against the installed tree (not
// native/), REX_VERSION against package.json, the systemd unit under systemd-analyze, and the
// example rex.rc under rex's own config loader; the Node programs' launchers, and an installed
// rexd that serves a job with none of the clone on its paths.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync, chmodSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { RexClient } from '../../src/runtime/client.js';
import { freePort } from '../../src/cluster/cluster.js';
import { packageRoot } from '../../src/util/paths.js';

const root = packageRoot();
const native = join(root, 'native');
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
const major = version.split('.')[0];

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}
const haveAnalyze = have('systemd-analyze');
const haveSysusers = have('systemd-sysusers');
if (!haveAnalyze) console.log('install.test: systemd-analyze not found (package systemd): the unit is not verified');
if (!haveSysusers) console.log('install.test: systemd-sysusers not found (package systemd): rex.conf is not checked');

let tmp: string;
let dest: string;
const inTree = (p: string) => join(dest, p);

function make(...args: string[]): string {
  return execFileSync('make', ['-s', '-C', native, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
}

/** pkg-config seeing only the installed tree's .pc files, with its paths moved under it. */
function pkgConfig(...args: string[]): string {
  return execFileSync('pkg-config', args, {
    encoding: 'utf8',
    env: { ...process.env, PKG_CONFIG_SYSROOT_DIR: dest, PKG_CONFIG_PATH: inTree('usr/lib/pkgconfig'), PKG_CONFIG_LIBDIR: inTree('usr/lib/pkgconfig') },
  }).trim();
}

function readelfDynamic(file: string): string {
  return execFileSync('readelf', ['-d', file], { encoding: 'utf8' });
}

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'rex-install-'));
  dest = join(tmp, 'root');
  make('install', `DESTDIR=${dest}`, 'PREFIX=/usr');
}, 300_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('make -C native install DESTDIR=... PREFIX=/usr', () => {
  it('lays out librex, rex.h, rex.pc, the helpers under libexec/rex, rex.rc and the unit', () => {
    for (const f of [
      `usr/lib/librex.so.${version}`,
      'usr/lib/librex.a',
      'usr/include/rex.h',
      'usr/lib/pkgconfig/rex.pc',
      'usr/libexec/rex/rex-restore',
      'usr/libexec/rex/rex_callctl',
      'usr/libexec/rex/rex_pty',
      'usr/libexec/rex/rex-session',
      'usr/libexec/rex/test_rfork_1',
      'usr/libexec/rex/rex_hosts_demo',
      'usr/share/doc/rex/examples/test_rfork_1.c',
      'etc/rex/rex.rc',
      'usr/lib/systemd/system/rexd.service',
      'usr/lib/sysusers.d/rex.conf',
      'usr/lib/rex/package.json',
      'usr/lib/rex/installed.json',
      'usr/lib/rex/native/build/Release/rex_addon.node',
    ]) {
      expect(existsSync(inTree(f)), `${f} missing from the installed tree`).toBe(true);
    }
    for (const f of ['rex-restore', 'rex_callctl', 'rex_pty', 'rex-session']) {
      expect(statSync(inTree(`usr/libexec/rex/${f}`)).mode & 0o111, `${f} is not executable`).not.toBe(0);
    }
    // The dev symlink and the soname link are relative, so the tree can be copied anywhere.
    expect(lstatSync(inTree(`usr/lib/librex.so.${major}`)).isSymbolicLink()).toBe(true);
    expect(readlinkSync(inTree(`usr/lib/librex.so.${major}`))).toBe(`librex.so.${version}`);
    expect(readlinkSync(inTree('usr/lib/librex.so'))).toBe(`librex.so.${major}`);
    // rex.h only: the library's own internal headers stay in native/src.
    expect(execFileSync('ls', [inTree('usr/include')], { encoding: 'utf8' }).trim().split('\n')).toEqual(['rex.h']);
  });

  // claim: install.soname
  it('installs the man pages under share/man, each in its section, and man -l renders REX.7 and rexd.8 from there', () => {
    const pages = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { man: string[] }).man.map((p) => p.split('/').pop()!);
    expect(pages).toContain('REX.7');
    for (const p of pages) expect(existsSync(inTree(`usr/share/man/man${p.split('.').pop()}/${p}`)), p).toBe(true);
    for (const p of ['man7/REX.7', 'man8/rexd.8']) {
      const r = spawnSync('man', ['--warnings', '-l', inTree(`usr/share/man/${p}`)], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MAN_KEEP_FORMATTING: '' } });
      expect([r.status, r.stderr]).toEqual([0, '']);
      expect(r.stdout).toMatch(/^NAME$/m);
    }
  });

  it(`gives librex the soname librex.so.${major}`, () => {
    expect(readelfDynamic(inTree(`usr/lib/librex.so.${version}`))).toMatch(new RegExp(`\\(SONAME\\)\\s+Library soname: \\[librex\\.so\\.${major}\\]`));
  });

  // claim: install.pkg-config-example
  it('rex.pc builds the 2009 guide\'s example against the installed tree, which then needs librex.so.0', () => {
    const flags = pkgConfig('--cflags', '--libs', 'rex');
    // Every path pkg-config gives lies in the tree, none in the checkout.
    const paths = flags.split(/\s+/).filter((f) => f.startsWith('-I') || f.startsWith('-L'));
    expect(paths.length).toBeGreaterThanOrEqual(2);
    for (const p of paths) expect(p.slice(2).startsWith(dest), `${p} is not in the installed tree`).toBe(true);
    expect(pkgConfig('--modversion', 'rex')).toBe(version);
    const exe = join(tmp, 'test_rfork_1');
    // `cc $(pkg-config --cflags --libs rex)`, as README and rex(3) say, through the shell.
    execFileSync('sh', ['-c', `cc -std=c11 -Wall -Wextra -Werror -o "$1" "$2" ${flags}`, 'sh', exe, join(native, 'examples', 'test_rfork_1.c')], {
      encoding: 'utf8',
      env: { ...process.env, CPATH: '', C_INCLUDE_PATH: '', LIBRARY_PATH: '' },
    });
    const needed = [...readelfDynamic(exe).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
    expect(needed).toContain(`librex.so.${major}`);
    // The loader resolves it in the tree.
    const ldd = execFileSync('ldd', [exe], { encoding: 'utf8', env: { ...process.env, LD_LIBRARY_PATH: inTree('usr/lib') } });
    expect(ldd).toContain(`librex.so.${major} => ${inTree(`usr/lib/librex.so.${major}`)}`);
  });

  // claim: install.version
  it("the installed rex.h's REX_VERSION equals package.json's version", () => {
    const src = join(tmp, 'version.c');
    writeFileSync(
      src,
      '#include <stdio.h>\n#include <rex.h>\nint main(void) { printf("%s %d %d %d\\n", REX_VERSION, REX_VERSION_MAJOR, REX_VERSION_MINOR, REX_VERSION_PATCH); return 0; }\n',
    );
    const exe = join(tmp, 'version');
    execFileSync('sh', ['-c', `cc -std=c11 -Wall -Wextra -Werror -o "$1" "$2" $(PKG_CONFIG_SYSROOT_DIR="$3" PKG_CONFIG_LIBDIR="$3/usr/lib/pkgconfig" pkg-config --cflags rex)`, 'sh', exe, src, dest]);
    expect(execFileSync(exe, { encoding: 'utf8' }).trim()).toBe(`${version} ${version.split('.').join(' ')}`);
  });

  it('keeps an existing /etc/rex/rex.rc', () => {
    const rc = inTree('etc/rex/rex.rc');
    writeFileSync(rc, '# the administrator\'s own\nlog-level : debug\n');
    make('install', `DESTDIR=${dest}`, 'PREFIX=/usr');
    expect(readFileSync(rc, 'utf8')).toBe('# the administrator\'s own\nlog-level : debug\n');
  });

  it("the example rex.rc parses with rex's own config loader, naming the system directories", async () => {
    const { config } = await loadConfig({ file: join(root, 'etc', 'rex.rc.example'), env: { USER: 'root', HOME: '/root', REX_ROOT: dest } as NodeJS.ProcessEnv });
    expect(config.servers.map((s) => s.name)).toEqual(['alpha', 'beta', 'gamma']);
    expect(config.listen).toEqual({ address: '0.0.0.0', port: 7800 });
    expect(config.stateDirectory).toBe('/var/lib/rex');
    expect(config.socket).toBe('/run/rex/rexd.sock');
    expect(config.logDatabase).toBe('/var/lib/rex/rex-log.sqlite');
  });

  // claim: install.unit-verifies
  it.skipIf(!haveAnalyze)('rexd.service passes systemd-analyze verify', () => {
    const unit = readFileSync(inTree('usr/lib/systemd/system/rexd.service'), 'utf8');
    expect(unit).toMatch(/^ExecStart=\/usr\/bin\/rexd /m);
    for (const line of ['Delegate=yes', 'KillMode=mixed', 'ProtectSystem=full', 'StateDirectory=rex', 'RuntimeDirectory=rex']) {
      expect(unit.split('\n')).toContain(line);
    }
    expect(unit).not.toMatch(/^NoNewPrivileges=/m);
    // verify checks that ExecStart's program exists on this machine, so the copy verified here
    // names the tree's launcher; where the tree has none (the launcher is not installed by this
    // Makefile), a stand-in executable takes its place.
    let launcher = inTree('usr/bin/rexd');
    if (!existsSync(launcher)) {
      console.log('install.test: the tree has no usr/bin/rexd; verifying the unit with a stand-in launcher');
      launcher = join(tmp, 'rexd-stand-in');
      writeFileSync(launcher, '#!/bin/sh\nexit 0\n');
      chmodSync(launcher, 0o755);
    }
    const dir = mkdtempSync(join(tmp, 'unit-'));
    writeFileSync(join(dir, 'rexd.service'), unit.replace(/^ExecStart=\/usr\/bin\/rexd /m, `ExecStart=${launcher} `));
    // --man=no: the man pages named by Documentation= are in the tree, not on this machine.
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', join(dir, 'rexd.service')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    // Unknown keys are only warnings: any output is a finding.
    expect(r.stderr.trim()).toBe('');
  });

  // claim: install.sysusers
  it.skipIf(!haveSysusers)("sysusers.d/rex.conf makes rex.rc host-user's default account, rex, a system account", () => {
    const root = mkdtempSync(join(tmp, 'sysusers-'));
    mkdirSync(join(root, 'etc'));
    const r = spawnSync('systemd-sysusers', ['--dry-run', `--root=${root}`, inTree('usr/lib/sysusers.d/rex.conf')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Creating user '?rex'? \(REX host controller\) with UID (\d+)/);
    const uid = Number(/with UID (\d+)/.exec(r.stdout + r.stderr)![1]);
    expect(uid).toBeGreaterThan(0);
    expect(uid).toBeLessThan(1000); // a system account
  });
});

// A real installation (no DESTDIR) into a prefix of its own, so that its launchers run here for
// any user: PREFIX/bin/rex is what a user's PATH finds, and nothing it loads lies in the clone.
describe('the installed Node programs (make -C native install PREFIX=...)', () => {
  const binEntries = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;
  const bins = Object.keys(binEntries);
  /** The Node programs, which get a launcher; `rex` is the native front end (bin/rex, the package's launcher of native/build/bin/rex). */
  const launched = bins.filter((b) => /\.c?js$/.test(binEntries[b]!));
  let prefix: string;
  let rexd: ChildProcess | undefined;
  /** No NODE_PATH, no clone on PATH, and a cwd outside it: only the launcher knows where REX is. */
  const env = (): NodeJS.ProcessEnv => ({ PATH: '/usr/local/bin:/usr/bin:/bin', HOME: tmp, LANG: 'C' });
  const run = (prog: string, args: string[]) => spawnSync(join(prefix, 'bin', prog), args, { encoding: 'utf8', cwd: tmp, env: env(), timeout: 60_000 });

  beforeAll(() => {
    prefix = join(tmp, 'opt');
    make('install', `PREFIX=${prefix}`, `SYSCONFDIR=${prefix}/etc`);
  }, 300_000);
  afterAll(() => {
    if (rexd?.exitCode === null) rexd.kill('SIGKILL');
  });

  // claim: install.launchers
  it("writes one launcher per Node program of package.json's bin, each a sh script exec'ing node on the installed program", () => {
    expect(launched).toEqual(bins.filter((b) => b !== 'rex'));
    for (const b of launched) {
      const text = readFileSync(join(prefix, 'bin', b), 'utf8');
      expect(text.startsWith('#!/bin/sh\n'), b).toBe(true);
      expect(text).toContain(`'${join(prefix, 'lib', 'rex')}/`);
      expect(text).not.toContain(root);
    }
    const rec = JSON.parse(readFileSync(join(prefix, 'lib/rex/installed.json'), 'utf8')) as Record<string, string>;
    expect(rec).toEqual({ version, prefix, bindir: join(prefix, 'bin'), libexecdir: join(prefix, 'libexec', 'rex'), sysconfdir: join(prefix, 'etc') });
  });

  // claim: install.native-rex
  it('installs the native front end as PREFIX/bin/rex: an ELF program that hands other commands to the installed Node CLI', () => {
    expect(binEntries.rex).toBe('bin/rex');
    expect(readFileSync(join(prefix, 'bin', 'rex')).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    // A stand-in node ($REX_NODE) shows what it would run: the installed CLI, with the same arguments.
    const fake = join(tmp, 'fake-node');
    writeFileSync(fake, '#!/bin/sh\necho "$*"\n');
    chmodSync(fake, 0o755);
    const r = spawnSync(join(prefix, 'bin', 'rex'), ['hosts', '--json'], { encoding: 'utf8', cwd: tmp, env: { ...env(), REX_NODE: fake } });
    expect([r.status, r.stdout, r.stderr]).toEqual([0, `${join(prefix, 'lib/rex/dist/bin/rex.js')} hosts --json\n`, '']);
  });

  it('PREFIX/bin/rex --version runs the installed code, and every launcher answers --help', () => {
    const r = run('rex', ['--version']);
    expect([r.status, r.stdout.trim(), r.stderr]).toEqual([0, version, '']);
    for (const b of bins) {
      const h = run(b, ['--help']);
      expect([b, h.status, h.stderr], h.stderr).toEqual([b, 0, '']);
      expect(h.stdout, b).toMatch(/^Usage: /m);
    }
  });

  it('the installed code finds its helpers under PREFIX/libexec/rex, not in native/build', () => {
    const js = `import(${JSON.stringify(join(prefix, 'lib/rex/dist/util/paths.js'))}).then((m) => console.log(m.libexecDir()))`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', js], { encoding: 'utf8', cwd: tmp, env: env() });
    expect([r.status, r.stdout.trim(), r.stderr]).toEqual([0, join(prefix, 'libexec', 'rex'), '']);
  });

  // claim: install.runs-installed
  it('an installed rexd serves a job run by the installed rex, loading nothing from the clone', async () => {
    const dir = join(tmp, 'solo');
    mkdirSync(dir, { recursive: true });
    const rc = join(dir, 'rex.rc');
    const socket = join(dir, 'state', 'run', 'rexd.sock');
    const port = await freePort();
    writeFileSync(rc, ['host-name : solo', `servers : solo@127.0.0.1:${port}`, `state-directory : ${dir}/state`, ''].join('\n'));
    const key = run('rex_key', ['--config', rc, '--create']);
    expect(key.status, key.stderr).toBe(0);
    let err = '';
    rexd = spawn(join(prefix, 'bin', 'rexd'), ['--foreground', '--config', rc], { cwd: tmp, env: env(), stdio: ['ignore', 'ignore', 'pipe'] });
    rexd.stderr!.on('data', (d) => (err += d));
    await vi.waitFor(async () => {
      if (rexd!.exitCode !== null) throw new Error(`rexd exited: ${err}`);
      (await RexClient.connect({ socket, timeoutMs: 500 })).close();
    }, { timeout: 20_000, interval: 100 });
    const r = run('rex', ['run', '--config', rc, '--host', 'solo', '-T', '/bin/echo', 'served by the installed rexd']);
    expect([r.status, r.stdout, r.stderr]).toEqual([0, 'served by the installed rexd\n', '']);
    // Without --config the native front end runs the job itself (--socket: no rex.rc to read).
    const n = run('rex', ['run', '--socket', socket, '--host', 'solo', '--json', '/bin/echo', 'natively']);
    expect([n.status, n.stdout.split('\n')[0], n.stderr]).toEqual([0, 'natively', '']);
    expect(JSON.parse(n.stdout.split('\n')[1]!)).toMatchObject({ host: 'solo', code: 0, signal: null, status: 0 });
    // The launcher exec'd node, so the child's pid is rexd's: its mappings name the installed addon.
    const maps = readFileSync(`/proc/${rexd.pid}/maps`, 'utf8');
    expect(maps).toContain(join(prefix, 'lib/rex/native/build/Release/rex_addon.node'));
    expect(maps).not.toContain(root + '/');
    rexd.kill('SIGTERM');
  }, 60_000);
});
