// fd accounting (issue 12, item 9): short jobs of every kind — `rex run`, the
// library's spawn(), rcall, rfork — must leave the rexds that served them
// with the descriptors they had before, and no process behind. rexd used to
// keep the executor's end of each program's stdin socket (the program exited
// before the origin ended its input): one Unix socket per job, for good.
//
// N jobs of each kind, half run by alpha itself and half sent to beta, with
// N = REX_FD_JOBS for every kind. The default (60 `rex run`, 300 of each other
// kind) keeps this file under about 60 s on a loaded 2-core machine (measured:
// 37 s of tests at load average 12-16), where a `rex run` costs about
// 0.35 s of node start-up and the others 2-30 ms. The long mode of the issue
// is REX_FD_JOBS=1000.
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildDemoLibrary, demoCall } from '../../src/cluster/calldemo.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { RexClient } from '../../src/runtime/client.js';
import { spawn } from '../../src/runtime/spawn.js';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { childrenOf, fdCount, marked } from '../helpers/procscan.js';

const run = promisify(execFile);
const N_ALL = process.env.REX_FD_JOBS ? Number(process.env.REX_FD_JOBS) : undefined;
const jobsOf = (kind: string): number => N_ALL ?? (kind === 'rex run' ? 60 : 300);
/** Descriptors a rexd may hold more after the jobs than before without a leak (a log rotation, a peer link being redialled). */
const SLACK = 3;
const NATIVE = join(packageRoot(), 'native');
const MARK = `rexfdtest${randomBytes(6).toString('hex')}`;

let cluster: LocalCluster;
let stop: () => Promise<void>;
let client: RexClient;
let socket: string;
let libDir: string;

beforeAll(async () => {
  execFileSync('make', ['-s', '-C', NATIVE, 'all', 'restorer', 'migration-tests'], { stdio: 'pipe' });
  libDir = mkdtempSync(join(tmpdir(), 'rex-fds-'));
  const lib = buildDemoLibrary(libDir);
  ({ cluster, stop } = await startCluster(2, { rc: [lib.rcLine] }));
  await cluster.waitAllReachable();
  socket = cluster.host('alpha').socket;
  client = await RexClient.connect({ socket });
}, 120_000);

afterAll(async () => {
  client?.close();
  await stop?.();
  if (libDir) rmSync(libDir, { recursive: true, force: true });
});

type Job = (host: string) => Promise<unknown>;

const kinds: Record<string, Job> = {
  'rex run': (host) => run(process.execPath, [distBin('rex'), 'run', '--socket', socket, '--host', host, '/bin/echo', MARK]),
  'library spawn()': (host) =>
    new Promise<void>((resolve, reject) => {
      const p = spawn('/bin/echo', [MARK], { socket, host });
      p.stdout.resume();
      p.stderr.resume();
      p.on('error', reject);
      p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`spawn on ${host}: exit ${code}`))));
    }),
  rcall: async (host) => {
    const r = await demoCall(client, host, 'power', { x: 2, n: 10 });
    if (r.result !== '1024') throw new Error(`${r.call} on ${host}: ${r.result}`);
  },
  // One rfork() per process: test_rfork_1 forks its child to REX_HOST and waits for it.
  rfork: (host) => run(join(NATIVE, 'build', 'bin', 'test_rfork_1'), [MARK], { env: { ...process.env, REX_SOCKET: socket, REX_HOST: host, REX_FD_MARK: MARK } }),
};

function counts(): { alpha: number; beta: number } {
  return { alpha: fdCount(cluster.host('alpha').pid!), beta: fdCount(cluster.host('beta').pid!) };
}

describe(`rexd's descriptors after ${N_ALL ?? '60-300'} jobs of each kind (REX_FD_JOBS; 1000 in the long mode)`, () => {
  for (const [kind, job] of Object.entries(kinds)) {
    const N = jobsOf(kind);
    it(`${kind} x${N}: alpha's and beta's fd counts return to where they were, and nothing is left running`, async () => {
      // One job on each host first: the peer link, a call controller, the spare restorer exist from then on.
      await job('alpha');
      await job('beta');
      const children = { alpha: childrenOf(cluster.host('alpha').pid!).length, beta: childrenOf(cluster.host('beta').pid!).length };
      const before = counts();
      for (let i = 0; i < N; i++) await job(i % 2 === 0 ? 'alpha' : 'beta');
      await vi.waitFor(
        () => {
          const now = counts();
          expect(now.alpha, `alpha's rexd fds (${before.alpha} before ${N} ${kind} jobs)`).toBeLessThanOrEqual(before.alpha + SLACK);
          expect(now.beta, `beta's rexd fds (${before.beta} before ${N} ${kind} jobs)`).toBeLessThanOrEqual(before.beta + SLACK);
        },
        { timeout: 15_000, interval: 200 },
      );
      await vi.waitFor(
        () => {
          expect(marked(MARK), `processes of the ${kind} jobs still running`).toEqual([]);
          // Call controllers and the spare restorer stay (pooled); nothing else may accumulate under a rexd.
          expect(childrenOf(cluster.host('alpha').pid!).length).toBeLessThanOrEqual(children.alpha);
          expect(childrenOf(cluster.host('beta').pid!).length).toBeLessThanOrEqual(children.beta);
        },
        { timeout: 15_000, interval: 200 },
      );
    }, Math.max(120_000, 60_000 + N * (kind === 'rex run' ? 400 : 100))); // a `rex run` is a whole CLI process start: ~0.2 s each here
  }
});
