import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { ownTempDirectories } from './transfer-helper.js';

const run = promisify(execFile);
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * A program whose shared library exists only on the origin. The program finds
 * it through RUNPATH $ORIGIN/lib, so on the origin (program in D, library in
 * D/lib) it loads, while on the executor, which runs the program from its
 * cache directory, $ORIGIN/lib does not hold it: the executor's dynamic loader
 * really cannot find the library unless REX provides it. The hosts of the local
 * cluster share one file system, so the executors' own checks are told that D
 * does not exist (REX_EXEC_TEST_HIDE, as for the program in transfer.test.ts).
 * The library reports the file it was loaded from (dladdr), which shows which
 * copy the loader used.
 */
describe('shared libraries the executor lacks come along with the program', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  const temps = ownTempDirectories();
  let betaState: string;
  const hidden = mkdtempSync(join(tmpdir(), 'rex-libs-only-on-origin-'));
  const prog = join(hidden, 'uses-greet');
  const lib = join(hidden, 'lib', 'libgreet.so.1');

  beforeAll(async () => {
    mkdirSync(join(hidden, 'lib'));
    writeFileSync(
      join(hidden, 'greet.c'),
      '#define _GNU_SOURCE\n#include <dlfcn.h>\nconst char *greet_from(void) { Dl_info i; return dladdr((void *)greet_from, &i) && i.dli_fname ? i.dli_fname : "?"; }\nint greet_version(void) { return 7; }\n',
    );
    execFileSync('cc', ['-shared', '-fPIC', '-Wl,-soname,libgreet.so.1', '-o', lib, join(hidden, 'greet.c')]);
    writeFileSync(
      join(hidden, 'main.c'),
      '#include <stdio.h>\nconst char *greet_from(void); int greet_version(void);\nint main(void) { printf("greet %d from %s\\n", greet_version(), greet_from()); return 0; }\n',
    );
    execFileSync('cc', ['-o', prog, join(hidden, 'main.c'), lib, "-Wl,-rpath,$ORIGIN/lib", '-Wl,--enable-new-dtags']);
    process.env.REX_EXEC_TEST_HIDE = hidden;
    ({ cluster, stop } = await startCluster(2, { rc: [temps.rc] }));
    delete process.env.REX_EXEC_TEST_HIDE;
    await cluster.waitAllReachable();
    betaState = cluster.host('beta').stateDir;
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    temps.remove();
    rmSync(hidden, { recursive: true, force: true });
  });

  const rexRun = (...args: string[]) =>
    run(process.execPath, [distBin('rex'), 'run', '--socket', cluster.host('alpha').socket, '--host', 'beta', ...args]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  const transferred = () =>
    readFileSync(cluster.host('beta').logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('program transferred from the origin'))
      .map((l) => JSON.parse(l) as { program: string; sha256: string; cached: string });

  it('runs on the origin as built (the library is found through $ORIGIN/lib)', () => {
    expect(execFileSync(prog, { encoding: 'utf8' })).toBe(`greet 7 from ${lib}\n`);
  });

  it('sends the program and its library once; the executor loads the transferred copy; the second run reuses both', async () => {
    // What a rexd that was killed left behind (its pid is gone) is swept when the next per-run directory is made.
    const stale = join(betaState, 'exec-run', '4194300-deadbeef');
    mkdirSync(stale, { recursive: true });
    const first = await rexRun(prog);
    expect(existsSync(stale)).toBe(false);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const m = /^greet 7 from (.+)\n$/.exec(first.stdout);
    expect(m).not.toBeNull();
    const loadedFrom = m![1]!;
    // Loaded through the per-run directory of beta's temp directory, under the name the program needs.
    expect(loadedFrom.startsWith(join(betaState, 'exec-run') + '/')).toBe(true);
    expect(loadedFrom.endsWith('/libgreet.so.1')).toBe(true);
    expect(existsSync(loadedFrom)).toBe(false); // the per-run directory is gone once the program ended

    const sent = transferred();
    expect(sent.map((t) => t.program).sort()).toEqual([lib, prog].sort());
    const libEntry = sent.find((t) => t.program === lib)!;
    expect(libEntry.sha256).toBe(sha(readFileSync(lib)));
    expect(sha(readFileSync(libEntry.cached))).toBe(sha(readFileSync(lib)));

    // The honest part: beta's loader cannot find the library by itself. Run the cached program the way beta
    // would without REX's directory: it fails to load libgreet (its $ORIGIN is beta's cache directory).
    const progEntry = sent.find((t) => t.program === prog)!;
    const bare = spawnSync(progEntry.cached, { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
    expect(bare.status).toBe(127);
    expect(bare.stderr).toMatch(/libgreet\.so\.1: cannot open shared object file/);

    const second = await rexRun(prog);
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/^greet 7 from .+\/libgreet\.so\.1\n$/);
    expect(transferred()).toHaveLength(2); // nothing sent again
  });

  it('a rebuilt library is sent again under its new hash, the unchanged program is not', async () => {
    writeFileSync(join(hidden, 'greet.c'), readFileSync(join(hidden, 'greet.c'), 'utf8').replace('return 7', 'return 8'));
    execFileSync('cc', ['-shared', '-fPIC', '-Wl,-soname,libgreet.so.1', '-o', lib, join(hidden, 'greet.c')]);
    const r = await rexRun(prog);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^greet 8 from /);
    const sent = transferred();
    expect(sent).toHaveLength(3);
    expect(sent[2]!.program).toBe(lib);
  });
});
