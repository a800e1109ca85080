// The root installation on hosts that share nothing (root only, as CI runs): each host has its own
// network and mount namespace with the installed tree at /usr and private /etc/rex, /var/lib/rex,
// /run/rex, /home and /tmp, and runs one root rexd (docs/ROOT.md) for all its users. alice and bob
// build programs in their homes on alpha, which exist nowhere else; from alpha each runs them on
// beta with rex run, rexecve() and rfork(), and calls a program beta offers: every time as
// themselves (their uid on beta), with their own cache and log there.
import { createHash } from 'node:crypto';
import { chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { installTree, outside } from '../../src/cluster/mountns.js';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { buildLibrary, writeXml } from '../calls/helpers.js';
import { NETNS, runOn } from '../helpers/cluster.js';
import { createTestUser, removeTestUser, type TestUser } from '../helpers/users.js';

if (!NETNS) console.log('root-share-nothing.test: skipped: hosts with their own namespaces and test users need root and iproute2 (CI runs as root)');

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
const USERS = ['rextest-rn-alice', 'rextest-rn-bob'];

describe.skipIf(!NETNS)('the root installation on hosts that share nothing: alice and bob', () => {
  let cluster: LocalCluster;
  let dir: string;
  const users: TestUser[] = [];
  const onHost = (host: string, p: string) => outside(cluster.host(host).fs!, p);
  /** Runs a shell script as `user` on `host`. */
  const as = (user: TestUser, host: string, script: string, env: Record<string, string> = {}) => runOn(cluster, host, ['runuser', '-u', user.name, '--', 'sh', '-ec', script], { env, timeoutMs: 60_000 });

  beforeAll(async () => {
    for (const u of USERS) spawnSync('pkill', ['-KILL', '-u', u]);
    for (const u of USERS) users.push(createTestUser(u, { createHome: false }));
    dir = mkdtempSync(join(tmpdir(), 'rex-test-rootfs-'));
    // beta offers a program for remote calls; its library and definitions exist on beta only.
    const libDir = join(dir, 'calltest');
    mkdirSync(libDir);
    const lib = buildLibrary(libDir);
    const xml = writeXml(libDir, lib);
    cluster = await LocalCluster.up({
      dir,
      hosts: 2,
      installation: 'root',
      privateFs: installTree(packageRoot(), join(dir, 'tree'), '/usr'),
      loadInterval: '200ms',
      peerTimeout: '2s',
      logLevel: 'debug',
    });
    mkdirSync(onHost('beta', '/var/lib/rex/programs/calltest'), { recursive: true });
    copyFileSync(lib, onHost('beta', '/var/lib/rex/programs/calltest/libcalltest.so'));
    writeFileSync(onHost('beta', '/var/lib/rex/programs/calltest/libcalltest.xml'), readFileSync(xml, 'utf8').replaceAll(lib, '/var/lib/rex/programs/calltest/libcalltest.so'));
    writeFileSync(cluster.host('beta').rcFile, `${readFileSync(cluster.host('beta').rcFile, 'utf8')}programs : calltest=/var/lib/rex/programs/calltest/libcalltest.so:/var/lib/rex/programs/calltest/libcalltest.xml\n`);
    cluster.kill('beta', 'SIGHUP');
    // Each user's home exists on alpha only, with a program, a library it links and the rfork probe.
    for (const u of users) {
      const home = onHost('alpha', `/home/${u.name}`);
      mkdirSync(home, { mode: 0o755 });
      writeFileSync(join(home, 'lib.c'), 'const char *only_alpha(void) { return "from liboa"; }\n');
      writeFileSync(
        join(home, 'prog.c'),
        '#include <stdio.h>\n#include <unistd.h>\nconst char *only_alpha(void);\nint main(void) { char h[64]; gethostname(h, sizeof h); printf("%s on %s uid=%d\\n", only_alpha(), h, (int)getuid()); return 0; }\n',
      );
      copyFileSync(join(packageRoot(), 'native', 'test', 'rexecve_demo.c'), join(home, 'rexecve_demo.c'));
      copyFileSync(join(packageRoot(), 'test', 'fixtures', 'root', 'rfuid.c'), join(home, 'rfuid.c'));
      for (const f of ['', 'lib.c', 'prog.c', 'rexecve_demo.c', 'rfuid.c']) chownSync(join(home, f), u.uid, u.gid);
      const build = await as(
        u,
        'alpha',
        [
          `cd /home/${u.name}`,
          'cc -shared -fPIC -o liboa.so lib.c',
          `cc -o prog prog.c -L. -loa -Wl,-rpath,/home/${u.name}`,
          'cc -std=c11 -o rexecve_demo rexecve_demo.c $(pkg-config --cflags --libs rex)',
          'cc -std=c11 -o rfuid rfuid.c $(pkg-config --cflags --libs rex)',
        ].join('\n'),
      );
      expect(build, build.stderr).toMatchObject({ code: 0 });
    }
  }, 300_000);

  afterAll(async () => {
    await cluster?.down();
    for (const u of USERS) {
      spawnSync('pkill', ['-KILL', '-u', u]);
      removeTestUser(u);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  // claim: root.share-nothing
  it("rex run: each user's program and library, built on alpha only, run on beta as that user, from that user's cache there", async () => {
    for (const u of users) {
      expect(existsSync(onHost('beta', `/home/${u.name}`)), 'nothing of the home on beta').toBe(false);
      const r = await as(u, 'alpha', `exec rex run --host beta /home/${u.name}/prog`);
      expect([r.code, r.stdout], r.stderr).toEqual([0, `from liboa on beta uid=${u.uid}\n`]);
      const cache = readdirSync(onHost('beta', `/var/lib/rex/users/${u.name}/cache`));
      expect(cache).toContain(sha256(onHost('alpha', `/home/${u.name}/prog`)));
    }
    // Each user's cache is theirs: bob's program is not in alice's.
    const [alice, bob] = users as [TestUser, TestUser];
    expect(readdirSync(onHost('beta', `/var/lib/rex/users/${alice.name}/cache`))).not.toContain(sha256(onHost('alpha', `/home/${bob.name}/prog`)));
  }, 180_000);

  it('rexecve(): the C API moves each user onto beta as that user', async () => {
    for (const u of users) {
      const r = await as(u, 'alpha', `cd /home/${u.name} && exec ./rexecve_demo beta /home/${u.name}/prog`);
      expect([r.code, r.stdout], r.stderr).toEqual([0, `from liboa on beta uid=${u.uid}\n`]);
    }
  }, 180_000);

  it("rfork(): each user's process continues on beta as that user", async () => {
    for (const u of users) {
      // No REX_SOCKET, as a user runs it: librex finds the root installation's /run/rex/rexd.sock by itself.
      const r = await as(u, 'alpha', `cd /home/${u.name} && exec ./rfuid`, { REX_HOST: 'beta', REX_SOCKET: '', HOME: `/home/${u.name}` });
      expect([r.code, r.stdout], r.stderr).toEqual([0, `child uid=${u.uid} gid=${u.gid} rforked=1\nparent uid=${u.uid} child-status=0\n`]);
    }
  }, 180_000);

  it('rcall: each user calls the program beta offers, in a call controller of their own uid there', async () => {
    for (const u of users) {
      const r = await as(u, 'alpha', 'exec rex call beta.calltest.neg32 -5');
      expect([r.code, r.stdout], r.stderr).toEqual([0, '5\n']);
      const ps = spawnSync('pgrep', ['-u', String(u.uid), '-x', 'rex_callctl'], { encoding: 'utf8' });
      expect(ps.stdout.trim().split('\n').filter(Boolean).length, `call controllers of ${u.name}`).toBeGreaterThanOrEqual(1);
    }
  }, 180_000);

  it('rex cluster up --private-fs --root starts such hosts from the command line, and --root alone is a usage error', async () => {
    const run = promisify(execFile);
    const cliDir = join(dir, 'cli');
    const rex = (...args: string[]) => run(process.execPath, [distBin('rex'), 'cluster', ...args, '--dir', cliDir], { timeout: 120_000 });
    await expect(rex('up', '--root', '--hosts', '2')).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/--root runs the root installation on hosts that share nothing: add --private-fs/) });
    const up = await rex('up', '--private-fs', '--root', '--tree', join(dir, 'tree'), '--hosts', '2');
    try {
      expect(up.stdout).toContain('Each host runs the root installation (docs/ROOT.md)');
      const cli = LocalCluster.attach(cliDir);
      const [alice] = users as [TestUser];
      const r = await runOn(cli, 'alpha', ['runuser', '-u', alice.name, '--', 'rex', 'run', '--host', 'beta', '/usr/bin/id', '-u'], { timeoutMs: 60_000 });
      expect([r.code, r.stdout], r.stderr).toEqual([0, `${alice.uid}\n`]);
    } finally {
      await rex('down');
    }
  }, 240_000);
});
