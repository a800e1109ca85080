// Hosts that share no files (root only, as CI runs): each host of the cluster has its own network
// and mount namespace, the installed tree (make -C native install) at /usr and private /etc/rex,
// /var/lib/rex, /run/rex, /home and /tmp (rex(1) `cluster`, --private-fs). A program
// and a library built in alpha's /home exist nowhere else, so what reaches beta is what REX moved:
// rex run (auto-transfer, missing-library fetch), librex's rexecve() and rfork() of the 2009
// guide's example. Per-user mode: each rexd runs as the test's user (root), from the tree's
// launcher /usr/bin/rexd.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { MNTNS_DIR, outside } from '../../src/cluster/mountns.js';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { NETNS, runOn, startCluster } from '../helpers/cluster.js';

if (!NETNS) console.log('share-nothing.test: skipped: hosts with their own mount and network namespaces need root and iproute2 (CI runs as root)');

const run = promisify(execFile);
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe.skipIf(!NETNS)('hosts that share no files (network and mount namespaces, the installed tree)', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let dir: string;
  /** A path of alpha's private directories, seen from the machine (where the test reads alpha's files). */
  const onAlpha = (p: string) => outside(cluster.host('alpha').fs!, p);
  const betaCache = () => readdirSync(join(cluster.host('beta').stateDir, 'cache')).filter((f) => /^[0-9a-f]{64}$/.test(f));

  beforeAll(async () => {
    ({ cluster, stop, dir } = await startCluster(2, { privateFs: true }));
    await cluster.waitAllReachable();
    // The sources reach alpha only: its /home is a directory of the cluster's, not the machine's.
    mkdirSync(onAlpha('/home/u'));
    writeFileSync(onAlpha('/home/u/lib.c'), 'const char *only_alpha(void) { return "from liboa"; }\n');
    writeFileSync(onAlpha('/home/u/rf.c'), 'int rf_mark(void) { return 42; }\n');
    for (const [name, words] of [['prog', 'run'], ['prog2', "rexecve'd"]] as const) {
      writeFileSync(
        onAlpha(`/home/u/${name}.c`),
        `#include <stdio.h>\n#include <unistd.h>\nconst char *only_alpha(void);\nint main(void) { char h[64]; gethostname(h, sizeof h); printf("${words}: %s on %s\\n", only_alpha(), h); return 0; }\n`,
      );
    }
    copyFileSync(join(packageRoot(), 'native', 'test', 'rexecve_demo.c'), onAlpha('/home/u/rexecve_demo.c'));
    // Built on alpha, against the tree's rex.pc and librex.so.0, as a user of an installed REX builds.
    const build = await runOn(cluster, 'alpha', [
      'sh',
      '-ec',
      [
        'cd /home/u',
        'cc -shared -fPIC -o liboa.so lib.c',
        'cc -o prog prog.c -L. -loa -Wl,-rpath,/home/u',
        'cc -o prog2 prog2.c -L. -loa -Wl,-rpath,/home/u',
        'cc -std=c11 -o rexecve_demo rexecve_demo.c $(pkg-config --cflags --libs rex)',
        'cc -shared -fPIC -o librf.so rf.c',
        // librf.so is mapped into the process though unused (--no-as-needed): a library the image maps that beta lacks.
        'cc -std=c11 -o test_rfork_1 /usr/share/doc/rex/examples/test_rfork_1.c $(pkg-config --cflags --libs rex) -Wl,--no-as-needed -L. -lrf -Wl,-rpath,/home/u',
      ].join('\n'),
    ]);
    expect(build, build.stderr).toMatchObject({ code: 0 });
  }, 180_000);
  afterAll(async () => {
    await stop?.();
  });

  it('a file on alpha is absent on beta and on the machine, and each host has its own /etc/rex and /tmp', async () => {
    expect((await runOn(cluster, 'alpha', ['sh', '-c', 'echo alpha-only > /tmp/mark && stat -c %s /home/u/prog /tmp/mark'])).stdout).toMatch(/^\d+\n11\n$/);
    const onBeta = await runOn(cluster, 'beta', ['stat', '/home/u/prog', '/home/u/liboa.so', '/tmp/mark']);
    expect(onBeta.code).not.toBe(0);
    expect(onBeta.stderr.match(/No such file or directory/g)).toHaveLength(3);
    for (const f of ['/home/u/prog', '/tmp/mark']) expect(existsSync(f), `${f} on the machine`).toBe(false);
    expect((await runOn(cluster, 'alpha', ['grep', '^host-name', '/etc/rex/rex.rc'])).stdout).toBe('host-name : alpha\n');
    expect((await runOn(cluster, 'beta', ['grep', '^host-name', '/etc/rex/rex.rc'])).stdout).toBe('host-name : beta\n');
    // The hosts run the installed tree: its launcher, its code under /usr/lib/rex.
    expect((await runOn(cluster, 'beta', ['sh', '-c', 'command -v rexd && rex --version'])).stdout).toBe(`/usr/bin/rexd\n${JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version}\n`);
  });

  it('rex run on alpha runs a program and its library that exist only on alpha on beta, which keeps them in its cache', async () => {
    const r = await runOn(cluster, 'alpha', ['sh', '-c', 'cd /home/u && exec rex run --host beta -T /home/u/prog']);
    expect([r.code, r.stdout]).toEqual([0, 'run: from liboa on beta\n']);
    // alpha's cwd is not on beta either: the program runs in beta's fallback directory, and says so.
    expect(r.stderr).toBe('rex: beta: /home/u does not exist here; running in /var/lib/rex/tmp\n');
    expect(betaCache()).toEqual(expect.arrayContaining([sha256(onAlpha('/home/u/prog')), sha256(onAlpha('/home/u/liboa.so'))]));
    // REX moved them into its cache, not to their paths: beta still has no /home/u/prog.
    expect((await runOn(cluster, 'beta', ['stat', '/home/u/prog'])).code).not.toBe(0);
  });

  it("librex's rexecve() runs a program that exists only on alpha on beta (the origin rexd hashes it for the C client)", async () => {
    expect(betaCache()).not.toContain(sha256(onAlpha('/home/u/prog2')));
    const r = await runOn(cluster, 'alpha', ['sh', '-c', 'cd /home/u && exec ./rexecve_demo beta /home/u/prog2']);
    expect([r.code, r.stdout], r.stderr).toEqual([0, "rexecve'd: from liboa on beta\n"]);
    expect(betaCache()).toContain(sha256(onAlpha('/home/u/prog2')));
  });

  it("rfork() of the 2009 guide's example built only on alpha: beta fetches the executable and a library it maps by content, and the child continues there", async () => {
    for (const f of ['test_rfork_1', 'librf.so']) expect(betaCache()).not.toContain(sha256(onAlpha(`/home/u/${f}`)));
    const r = await runOn(cluster, 'alpha', ['sh', '-c', 'cd /home/u && exec ./test_rfork_1'], { env: { REX_HOST: 'beta' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^parent \d+ runs on host alpha - load: /m);
    expect(r.stdout).toMatch(/^child \d+ parent \d+ origin pid \d+ origin parent \d+ origin host alpha runs on host beta - REX loadavg: /m);
    // The image's cwd (/home/u) is not on beta: the child continues in the fallback a program would start in.
    expect(r.stderr).toBe('rex: beta: /home/u does not exist here; running in /var/lib/rex/tmp\n');
    // The executable and the library were matched by content: beta had no file at their paths, so it holds the fetched copies.
    for (const f of ['test_rfork_1', 'librf.so']) expect(betaCache()).toContain(sha256(onAlpha(`/home/u/${f}`)));
  });

  it('rex cluster up --private-fs --tree lays the tree out on each host; rex cluster down, from another process, releases the namespaces', async () => {
    const cliDir = join(dir, 'cli');
    const rex = (...args: string[]) => run(process.execPath, [distBin('rex'), 'cluster', ...args, '--dir', cliDir], { timeout: 120_000 });
    const up = await rex('up', '--private-fs', '--tree', join(dir, 'tree'), '--hosts', '2');
    expect(up.stdout).toContain(`(network and mount namespaces, sharing no files; installed tree ${join(dir, 'tree')} at /usr)`);
    const state = JSON.parse(readFileSync(join(cliDir, 'cluster.json'), 'utf8')) as { hosts: { name: string; socket: string; fs: { mntns: string } }[] };
    expect(state.hosts.map((h) => h.socket)).toEqual(['alpha', 'beta'].map((n) => join(cliDir, 'hosts', n, 'fs/run/rex/rexd.sock')));
    // The printed command opens a shell on alpha: its rex.rc, not beta's.
    const login = /^Or log in to it \(its files, its installed rex\):  (.*)$/m.exec(up.stdout)![1]!;
    expect((await run('sh', ['-c', `${login} -c 'grep ^host-name /etc/rex/rex.rc'`])).stdout).toBe('host-name : alpha\n');
    expect((await rex('status')).stdout).toMatch(/^Cluster in .*, as alpha sees it:/);
    for (const h of state.hosts) expect(existsSync(h.fs.mntns)).toBe(true);
    await rex('down');
    for (const h of state.hosts) expect(existsSync(h.fs.mntns)).toBe(false);
  }, 180_000);
});

describe.skipIf(!NETNS)('a share-nothing cluster that fails to start', () => {
  it('releases the mount namespaces it made, and nothing it mounted reaches the machine', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rex-test-nofs-fail-'));
    try {
      // A tree whose rexd launcher fails at once: the hosts' namespaces are made, then rexd exits.
      const tree = join(dir, 'tree');
      mkdirSync(join(tree, 'usr/lib/rex'), { recursive: true });
      mkdirSync(join(tree, 'usr/bin'), { recursive: true });
      writeFileSync(join(tree, 'usr/lib/rex/installed.json'), JSON.stringify({ version: '0', prefix: '/usr', bindir: '/usr/bin', libexecdir: '/usr/libexec/rex', sysconfdir: '/etc' }));
      writeFileSync(join(tree, 'usr/bin/rexd'), '#!/bin/sh\necho "broken rexd on $(hostname)" >&2\nexit 3\n', { mode: 0o755 });
      const before = existsSync(MNTNS_DIR) ? readdirSync(MNTNS_DIR) : [];
      await expect(LocalCluster.up({ dir: join(dir, 'c'), hosts: 2, privateFs: { dir: tree, prefix: '/usr' } })).rejects.toThrow(/rexd exited with status 3 during start-up; last log lines:\nbroken rexd on (alpha|beta)/);
      // Only share-nothing clusters hold files there, and this file starts them one at a time.
      expect(readdirSync(MNTNS_DIR).filter((n) => !before.includes(n))).toEqual([]);
      // Nothing the hosts mounted propagated to the machine.
      const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
      expect(mounts.filter((l) => l.includes(dir) || l.includes(' - overlay rex-tree '))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
