import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { Incoming, trimCache } from '../../src/exec/executor/transfer.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { ownTempDirectories } from './transfer-helper.js';

const run = promisify(execFile);
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('executable transfer into the content-addressed cache (rex-auto-transfer)', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  const temps = ownTempDirectories();
  let prog: string;
  const hidden = mkdtempSync(join(tmpdir(), 'rex-only-on-origin-'));

  beforeAll(async () => {
    // A program built here that the executors must not see: every rexd of this cluster treats paths
    // under `hidden` as missing (a test seam: the hosts of a local cluster share one file system).
    const src = join(hidden, 'hello.c');
    writeFileSync(src, '#include <stdio.h>\nint main(int c, char **v) { printf("hello from %s with %d args\\n", v[0], c - 1); return 5; }\n');
    prog = join(hidden, 'hello');
    execFileSync('cc', ['-O1', '-o', prog, src]);
    process.env.REX_EXEC_TEST_HIDE = hidden;
    ({ cluster, stop } = await startCluster(2, { rc: [temps.rc] }));
    delete process.env.REX_EXEC_TEST_HIDE;
    await cluster.waitAllReachable();
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
  const transfers = () => readFileSync(cluster.host('beta').logFile, 'utf8').split('\n').filter((l) => l.includes('program transferred from the origin'));

  // claim: exec.transfer-cache
  it('sends a program that exists only on the origin once, verified, and reuses the cached copy', async () => {
    const first = await rexRun(prog, 'a', 'b');
    expect(first).toEqual({ code: 5, stdout: `hello from ${prog} with 2 args\n`, stderr: '' });
    const logged = transfers();
    expect(logged).toHaveLength(1);
    const cachedPath = (JSON.parse(logged[0]!) as { cached: string }).cached;
    expect(cachedPath.endsWith(`/cache/${sha(readFileSync(prog))}`)).toBe(true);
    expect(sha(readFileSync(cachedPath))).toBe(sha(readFileSync(prog)));
    const second = await rexRun(prog);
    expect(second).toEqual({ code: 5, stdout: `hello from ${prog} with 0 args\n`, stderr: '' });
    expect(transfers()).toHaveLength(1); // reused, not sent again
  });

  // claim: exec.transfer-cache
  it('a program that changed on the origin is sent again under its new hash', async () => {
    const src = join(hidden, 'hello.c');
    writeFileSync(src, '#include <stdio.h>\nint main(void) { puts("version two"); return 0; }\n');
    execFileSync('cc', ['-O1', '-o', prog, src]);
    expect(await rexRun(prog)).toEqual({ code: 0, stdout: 'version two\n', stderr: '' });
    expect(transfers()).toHaveLength(2);
  });

  it('a program missing on the origin as well is still 127, with no transfer attempted', async () => {
    const r = await rexRun(join(hidden, 'never-built'));
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/never-built: no such program on beta/);
  });
});

describe('the cache itself', () => {
  it('refuses content whose hash differs from the one asked for, and leaves nothing behind', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rex-cache-'));
    const inc = new Incoming(dir, sha('the real program'));
    inc.write(Buffer.from('a different program'));
    expect(() => inc.finish()).toThrow(/has sha256 [0-9a-f]{64}, expected [0-9a-f]{64}; not used/);
    expect(readdirSync(join(dir, 'cache'))).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('evicts least-recently-used entries down to the size limit, never the one just added', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rex-cache-'));
    const names: string[] = [];
    for (let i = 0; i < 4; i++) {
      const body = Buffer.alloc(1000, i);
      const inc = new Incoming(dir, sha(body));
      inc.write(body);
      inc.finish();
      names.push(sha(body));
      utimesSync(join(dir, 'cache', `${sha(body)}.stat`), 1000 + i, 1000 + i); // i-th oldest: the insertion record's mtime is the LRU clock
    }
    mkdirSync(join(dir, 'cache'), { recursive: true });
    expect(trimCache(dir, 2500, names[0])).toEqual([names[1], names[2]]);
    expect(readdirSync(join(dir, 'cache')).sort()).toEqual([names[0], `${names[0]}.stat`, names[3], `${names[3]}.stat`].sort());
    rmSync(dir, { recursive: true, force: true });
  });
});
