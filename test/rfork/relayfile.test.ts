// Relayed files and directories after rfork (docs/RFORK.md 4.1): the child,
// forced onto beta, seeks, reads, writes, stats, truncates and syncs a file
// and lists a directory that the origin (alpha) has open, through the
// origin stub; the parent sees the content and the offset the child left.
// Calls the stub does not perform are refused with ENOTSUP and a message
// naming the descriptor.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { packageRoot } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';

const NATIVE = join(packageRoot(), 'native');
const BIN = join(NATIVE, 'build', 'test', 'migration');

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Live (not zombie) supervisors of relayed files: processes named rex-fileproxy. */
function supervisors(): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      if (stat.includes('(rex-fileproxy)') && !/\) Z /.test(stat)) out.push(Number(e));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

let cluster: LocalCluster;
let stop: () => Promise<void>;
let env: Record<string, string>;
let dir: string;

beforeAll(async () => {
  execFileSync('make', ['-s', '-C', NATIVE, 'all', 'restorer', 'migration-tests'], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'rex-relayfile-'));
  const c = await startCluster(2);
  cluster = c.cluster;
  stop = c.stop;
  await cluster.waitAllReachable();
  env = { REX_SOCKET: cluster.host('alpha').socket, REX_HOST: 'beta' };
}, 120_000);
afterAll(async () => {
  await stop?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('a file and a directory opened before rfork behave as such on beta, with the offset shared with the parent', async () => {
  const r = await run(join(BIN, 'rf_relayfile'), ['rfork', dir], env);
  const m = /^FD (\d+) (\d+)\n/.exec(r.stdout);
  expect(m, r.stdout + r.stderr).not.toBeNull();
  expect(r.stdout.slice(m![0].length)).toBe('PASS rf_relayfile\nPARENT-OK\n');
  expect(r.code).toBe(0);
  // The refusals name the descriptor, on the child's stderr (relayed to the origin's).
  const f = m![1]!;
  expect(r.stderr).toContain(`rfork: mmap on descriptor ${f} is not supported: it is a file of the origin, relayed to it after rfork (ENOTSUP)`);
  expect(r.stderr).toContain(`rfork: dup on descriptor ${f} is not supported`);
  expect(r.stderr).toContain(`rfork: fstatat of a path relative to it on descriptor ${m![2]} is not supported`);
}, 90_000);

it('five runs in a row: each passes and no supervisor is left running after its child', async () => {
  for (let i = 0; i < 5; i++) {
    const r = await run(join(BIN, 'rf_relayfile'), ['rfork', mkdtempSync(join(dir, 'run-'))], env);
    expect(r.stdout).toMatch(/PASS rf_relayfile\nPARENT-OK\n$/);
  }
  await vi.waitFor(() => expect(supervisors()).toEqual([]), { timeout: 10_000, interval: 100 });
}, 120_000);

it('REX_RFORK_FILES=stream: the child sends STREAM, the stub relays its files as byte streams again (rf_file passes, rf_relayfile sees a socket)', async () => {
  const streamed = { ...env, REX_RFORK_FILES: 'stream' };
  const ok = await run(join(BIN, 'rf_file'), ['rfork', mkdtempSync(join(dir, 'stream-'))], streamed);
  expect(ok.stdout).toBe('PASS rf_file\nPARENT-OK\n');
  const sock = await run(join(BIN, 'rf_relayfile'), ['rfork', mkdtempSync(join(dir, 'stream-'))], streamed);
  expect(sock.stdout).toMatch(/FAIL rf_relayfile: fstat: mode 0140777 size 0/);
  expect(sock.code).not.toBe(0);
}, 90_000);

it('relayed twice: alpha to beta to alpha, the grandchild reads and seeks the file at the offset all three share', async () => {
  const r = await run(join(BIN, 'rf_relaynested'), ['rfork', mkdtempSync(join(dir, 'nested-'))], { REX_SOCKET: cluster.host('alpha').socket });
  expect(r.stdout).toBe('PASS rf_relaynested\nPARENT-OK\n');
  expect(r.code).toBe(0);
}, 90_000);
