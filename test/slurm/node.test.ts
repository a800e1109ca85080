/**
 * The task side of `rex cluster up --slurm` (`rex cluster slurm-node`) as a real process, without Slurm: the
 * environment a slurmstepd gives a task (SLURM_JOB_ID, SLURMD_NODENAME, SLURM_STEP_ID) and the step's stdin are
 * played by the test. It must refuse a bad CLUSTER line with a clear error and leave nothing behind, never hang;
 * and a good one gives a rexd that answers, and that goes, with its directory, on SIGTERM. Also the launcher's
 * usage errors outside an allocation.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SLURM_WIRE, jobDir } from '../../src/cluster/slurm.js';
import { currentUser } from '../../src/keys/identity.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'rex-slurm-node-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const user = currentUser();

/** Starts `rex cluster slurm-node` as the task of job `job` on node `node`; collects its stdout lines. */
function task(job: string, node: string): { p: ChildProcess; lines: string[]; next: (kind: string) => Promise<Record<string, unknown>>; exit: Promise<number | null> } {
  const p = spawn(process.execPath, [distBin('rex'), 'cluster', 'slurm-node'], {
    env: { ...process.env, TMPDIR: tmp, SLURM_JOB_ID: job, SLURMD_NODENAME: node, SLURM_STEP_ID: '0', REX_SOCKET: '', REX_CONFIG: '' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  p.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      for (const w of waiters.splice(0)) w();
    }
  });
  const exit = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
  void exit.then(() => {
    for (const w of waiters.splice(0)) w();
  });
  const next = async (kind: string): Promise<Record<string, unknown>> => {
    for (;;) {
      const l = lines.find((x) => x.startsWith(`${SLURM_WIRE} ${kind} `) || x.startsWith(`${SLURM_WIRE} error `));
      if (l) return { kind: l.split(' ')[1], ...(JSON.parse(l.slice(l.indexOf('{'))) as Record<string, unknown>) };
      if (p.exitCode !== null) throw new Error(`the task exited (${p.exitCode}) before saying ${kind}: ${lines.join('\n')}`);
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return { p, lines, next, exit };
}

describe('rex cluster slurm-node, the task of each node', () => {
  it('refuses a CLUSTER line that does not carry its own certificate, says why, and removes its directory', async () => {
    const t = task('101', 'n1');
    const hello = await t.next('hello');
    expect(hello).toMatchObject({ kind: 'hello', node: 'n1', step: '0' });
    expect(existsSync(jobDir('101', { TMPDIR: tmp }))).toBe(true);
    // Another node's certificate in n1's place (a swapped certificate, or a launcher of another job).
    const other = task('102', 'n1');
    const otherHello = await other.next('hello');
    other.p.stdin!.end();
    t.p.stdin!.end(`${SLURM_WIRE} cluster ${JSON.stringify({ job: '101', user, members: [{ name: 'n1', address: '127.0.0.1', port: hello.port, cert: otherHello.cert }], rc: [] })}\n`);
    const err = await t.next('error');
    expect(err).toMatchObject({ kind: 'error', node: 'n1' });
    expect(String(err.message)).toMatch(/REX-SLURM1 cluster: the entry for n1 does not carry this node's certificate and port/);
    expect(await t.exit).toBe(1);
    expect(await other.exit).toBe(1);
    expect(existsSync(jobDir('101', { TMPDIR: tmp }))).toBe(false);
    expect(existsSync(jobDir('102', { TMPDIR: tmp }))).toBe(false);
  }, 30_000);

  it('refuses a CLUSTER line for another job, and one that is not JSON, without hanging', async () => {
    for (const [line, msg] of [
      [(port: unknown, cert: unknown) => `${SLURM_WIRE} cluster ${JSON.stringify({ job: '999', user, members: [{ name: 'n1', address: '127.0.0.1', port, cert }] })}`, /for job 999, but this task belongs to job 103/],
      [() => `${SLURM_WIRE} cluster {"job": "103", `, /REX-SLURM1 cluster: not JSON/],
      [() => '', /closed the step's input before sending the cluster/],
    ] as const) {
      const t = task('103', 'n1');
      const hello = await t.next('hello');
      t.p.stdin!.end(line ? `noise from the step\n${line(hello.port, hello.cert)}\n` : '');
      const err = await t.next('error');
      expect(String(err.message)).toMatch(msg);
      expect(await t.exit).toBe(1);
      expect(existsSync(jobDir('103', { TMPDIR: tmp }))).toBe(false);
    }
  }, 60_000);

  it('refuses to run a second time for the same job on the same node', async () => {
    const a = task('104', 'n1');
    await a.next('hello');
    const b = task('104', 'n1');
    const err = await b.next('error');
    expect(String(err.message)).toMatch(/exists: a REX cluster of job 104 already runs on n1/);
    expect(await b.exit).toBe(1);
    a.p.stdin!.end();
    expect(await a.exit).toBe(1);
  }, 30_000);

  it('with a good CLUSTER line starts a rexd that answers as the node, and SIGTERM removes it and its directory', async () => {
    const t = task('105', 'n1');
    const hello = await t.next('hello');
    t.p.stdin!.end(`${SLURM_WIRE} cluster ${JSON.stringify({ job: '105', user, members: [{ name: 'n1', address: '127.0.0.1', port: hello.port, cert: hello.cert }], rc: [] })}\n`);
    const ready = await t.next('ready');
    expect(ready).toMatchObject({ kind: 'ready', node: 'n1', socket: join(jobDir('105', { TMPDIR: tmp }), 'run', 'rexd.sock') });
    const c = await RexClient.connect({ socket: String(ready.socket) });
    try {
      expect((await c.hosts()).map((h) => h.name)).toEqual(['n1']);
    } finally {
      c.close();
    }
    t.p.kill('SIGTERM');
    expect(await t.exit).toBe(0);
    expect(existsSync(jobDir('105', { TMPDIR: tmp }))).toBe(false);
    expect(existsSync(`/proc/${Number(ready.pid)}`) && !/State:\s+Z/.test(spawnSync('cat', [`/proc/${Number(ready.pid)}/status`], { encoding: 'utf8' }).stdout)).toBe(false);
    expect(readdirSync(tmp)).toEqual([]);
  }, 60_000);
});

describe('rex cluster up --slurm outside an allocation', () => {
  const rex = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SLURM_')));
    return spawnSync(process.execPath, [distBin('rex'), ...args], { encoding: 'utf8', env: { ...clean, TMPDIR: tmp, ...env } });
  };

  it('says it is not in an allocation and how to get one', () => {
    const r = rex(['cluster', 'up', '--slurm']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/not inside a Slurm allocation \(SLURM_JOB_ID is not set\)/);
    expect(r.stderr).toMatch(/run it inside salloc or an sbatch script, or add --nodes N/);
  });

  it('refuses options that belong to local clusters, and Slurm options without --slurm', () => {
    expect(rex(['cluster', 'up', '--slurm', '--netns']).stderr).toMatch(/--netns is for local clusters; --slurm runs on the allocation's nodes/);
    expect(rex(['cluster', 'up', '--nodes', '3']).stderr).toMatch(/--nodes is for Slurm: add --slurm/);
    expect(rex(['cluster', 'up', '--slurm', '--nodes', '0']).stderr).toMatch(/--nodes 0: expected a number from 1 to 4096/);
    expect(rex(['cluster', 'up', '--slurm', '--nodes', '2'], { SLURM_JOB_ID: '77' }).stderr).toMatch(/already in job 77/);
    // Join mode (docs/SLURM.md section 5): an existing allocation, the installation's rex.rc, its socket only with --join.
    expect(rex(['cluster', 'up', '--join']).stderr).toMatch(/--join is for Slurm: add --slurm/);
    expect(rex(['cluster', 'up', '--slurm', '--join', '--nodes', '3']).stderr).toMatch(/--join uses an allocation that exists: --nodes cannot go with it/);
    expect(rex(['cluster', 'up', '--slurm', '--join', '--rc', 'log-level : debug'], { SLURM_JOB_ID: '77' }).stderr).toMatch(/with --join the root installation's rex.rc applies/);
    expect(rex(['cluster', 'up', '--slurm', '--socket', '/run/rex/rexd.sock'], { SLURM_JOB_ID: '77' }).stderr).toMatch(/--socket names the root installation's socket: it goes with --join/);
    expect(rex(['cluster', 'up', '--slurm', '--join']).stderr).toMatch(/not inside a Slurm allocation \(SLURM_JOB_ID is not set\)/);
    expect(rex(['cluster', 'up', '--slurm', '--join', '--socket', 'run/rexd.sock'], { SLURM_JOB_ID: '77', SLURM_JOB_NODELIST: 'n1' }).stderr).toMatch(/--socket "run\/rexd.sock": expected an absolute path/);
  });

  it('down --slurm in a job that joined the root installation says there is nothing to stop, and touches nothing', () => {
    const r = rex(['cluster', 'down', '--slurm'], { SLURM_JOB_ID: '77', REX_SLURM_JOINED: '77' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^Slurm job 77 joined the root installation \(up --slurm --join\): REX started nothing for it, so there is nothing to stop/);
  });

  it('down --slurm with nothing started says so', () => {
    const r = rex(['cluster', 'down', '--slurm']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/no REX cluster on a Slurm job was started here, and SLURM_JOB_ID is not set/);
  });
});
