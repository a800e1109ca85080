import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { alive } from '../helpers/proc.js';

const run = promisify(execFile);

/** `rex cluster demo ARGS` run to its exit with `env` added to this process's: its status and its output. */
async function demo(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [distBin('rex'), 'cluster', 'demo', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  return { code, out, err };
}
const tmp = mkdtempSync(join(tmpdir(), 'rex-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function waitGone(pids: number[]): Promise<void> {
  for (let i = 0; i < 100 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
}

describe('rex cluster', () => {
  it('up, status, rtop, down: a user-managed local cluster', async () => {
    const dir = join(tmp, 'c1');
    const up = await run(process.execPath, [distBin('rex'), 'cluster', 'up', '--hosts', '2', '--dir', dir]);
    expect(up.stdout).toMatch(/alpha\s+127\.0\.0\.1:\d+\s+pid \d+/);
    expect(up.stdout).toMatch(/beta\s+127\.0\.0\.1:\d+\s+pid \d+/);
    const state = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as { hosts: { name: string; pid: number; socket: string; rcFile: string }[] };
    expect(state.hosts.map((h) => h.name)).toEqual(['alpha', 'beta']);
    // Each host's rex.rc includes the generated cluster.rc.
    expect(readFileSync(state.hosts[0]!.rcFile, 'utf8')).toContain('#include "../../cluster.rc"');
    expect(readFileSync(join(dir, 'cluster.rc'), 'utf8')).toMatch(/^servers : alpha@127\.0\.0\.1:\d+, beta@127\.0\.0\.1:\d+$/m);
    try {
      // Wait until alpha has heard from beta, then check status and rtop.
      const status = await vi.waitFor(
        async () => {
          const out = (await run(process.execPath, [distBin('rex'), 'cluster', 'status', '--dir', dir])).stdout;
          if (!/^beta\s.*\sup\s/m.test(out)) throw new Error(`beta is not up yet:\n${out}`);
          return out;
        },
        { timeout: 15_000, interval: 100 },
      );
      expect(status).toMatch(/^Cluster in .*, as alpha sees it:/);
      expect(status).toMatch(/^beta\s+127\.0\.0\.1:\d+\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\s+\d+\s+up\s/m);
      const rtop = await run(process.execPath, [distBin('rtop'), '-n', '2', '-d', '0.2', '--socket', state.hosts[1]!.socket]);
      expect(rtop.stdout.match(/^rtop - .* - via beta - 2 hosts, 2 up - least loaded: (alpha|beta)$/gm)).toHaveLength(2);
      const json = JSON.parse((await run(process.execPath, [distBin('rtop'), '--once', '--json', '--socket', state.hosts[0]!.socket])).stdout);
      expect(json.via).toBe('alpha');
      // Least loaded first.
      const loads = (json.hosts as { load: number }[]).map((h) => h.load);
      expect(loads).toEqual([...loads].sort((a, b) => a - b));
      // `start --json` with every host running starts none, and lists them as up --json would.
      const started = JSON.parse((await run(process.execPath, [distBin('rex'), 'cluster', 'start', '--dir', dir, '--json'])).stdout) as { dir: string; network: string; hosts: { name: string; pid: number; socket: string }[] };
      expect(started).toMatchObject({ dir, network: 'loopback', installation: 'user' });
      expect(started.hosts.map((h) => [h.name, h.pid, h.socket])).toEqual(state.hosts.map((h) => [h.name, h.pid, h.socket]));
      // A second `up` in the same directory is refused while the first runs.
      await expect(run(process.execPath, [distBin('rex'), 'cluster', 'up', '--dir', dir])).rejects.toMatchObject({ stderr: expect.stringContaining(`a cluster is already running in ${dir}`) });
    } finally {
      const down = await run(process.execPath, [distBin('rex'), 'cluster', 'down', '--dir', dir, '--json']);
      expect(JSON.parse(down.stdout)).toEqual({ dir, stopped: ['alpha', 'beta'] });
    }
    await waitGone(state.hosts.map((h) => h.pid));
    expect(state.hosts.filter((h) => alive(h.pid))).toEqual([]);
    expect(existsSync(join(dir, 'cluster.json'))).toBe(false);
    for (const h of state.hosts) expect(existsSync(h.socket)).toBe(false);
  });

  it('status and down say clearly when there is no cluster', async () => {
    const err = await run(process.execPath, [distBin('rex'), 'cluster', 'status', '--dir', join(tmp, 'none')]).catch((e: { stderr: string; code: number }) => e);
    expect(err).toMatchObject({ code: 1 });
    expect((err as { stderr: string }).stderr).toMatch(/no local cluster in .*none \(no cluster.json\)\n\s+hint: start one with `(\/\S+\/)?rex cluster up`/);
  });

  it("hints name the clone's own program by its path when this rex is not on PATH, `rex` when it is, and the hint runs as pasted", async () => {
    const rexFile = join(packageRoot(), (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin.rex!);
    const bin = join(tmp, 'bin');
    mkdirSync(bin, { recursive: true });
    symlinkSync(rexFile, join(bin, 'rex'));
    const hint = async (PATH: string) =>
      ((await run(process.execPath, [distBin('rex'), 'cluster', 'status', '--dir', join(tmp, 'none')], { env: { ...process.env, PATH } }).catch((e: { stderr: string }) => e)) as { stderr: string }).stderr;
    const path = (process.env.PATH ?? '').split(':').filter((d) => !existsSync(join(d, 'rex'))).join(':');
    const inClone = /hint: start one with `(.+) cluster up`/.exec(await hint(path));
    expect(inClone?.[1]).toBe(rexFile);
    // Pasted as it is, the command runs this REX (here its --version).
    const v = await run(inClone![1]!, ['--version']);
    expect(v.stdout.trim()).toBe((JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version);
    expect(await hint(`${bin}:${path}`)).toMatch(/hint: start one with `rex cluster up`/);
  });

  it('rejects a bad --hosts with a usage error', async () => {
    const err = (await run(process.execPath, [distBin('rex'), 'cluster', 'up', '--hosts', '0', '--dir', join(tmp, 'bad')]).catch((e) => e)) as { stderr: string; code: number };
    expect(err.code).toBe(2);
    expect(err.stderr).toContain('--hosts 0: expected a number from 1 to 12');
  });

  it('rex hosts without a daemon says how to start one', async () => {
    const err = (await run(process.execPath, [distBin('rex'), 'hosts'], { env: { ...process.env, REX_SOCKET: join(tmp, 'nosuch.sock') } }).catch((e) => e)) as { stderr: string; code: number };
    expect(err.code).toBe(1);
    expect(err.stderr).toContain(`rex: error: no rexd is running for this user (no socket at ${join(tmp, 'nosuch.sock')})`);
    expect(err.stderr).toContain('hint: start one with `rexd`');
  });
});

describe('npm start (rex cluster demo)', () => {
  it('brings up three hosts, shows their load, runs the demo and shuts down', async () => {
    const dir = join(tmp, 'demo');
    const { stdout } = await run(process.execPath, [distBin('rex'), 'cluster', 'demo', '--dir', dir, '--watch', '1'], { timeout: 60_000 });
    expect(stdout).toContain('Starting a local REX cluster of 3 hosts');
    expect(stdout).toMatch(/^HOST\s+ADDRESS\s+RLOAD\s+LOADAVG1\s+CORES\s+JOBS\s+STATE\s+AGE\s+CPU$/m);
    for (const h of ['alpha \\*', 'beta', 'gamma']) expect(stdout).toMatch(new RegExp(`^${h}\\s+127\\.0\\.0\\.1:\\d+\\s+\\d+\\.\\d\\d\\s+\\d+\\.\\d\\d\\s+\\d+\\s+\\d+\\s+up\\s`, 'm'));
    expect(stdout).toMatch(/^beta\s+1\s+\d+\.\d+\s+\d+\.\d+$/m); // routed ping: one hop
    expect(stdout).toMatch(/^\s+t\+1s\s+alpha \d+\.\d\d/m);
    // The remote call: libdemo built with gcc -g and repdb -gx, run on beta, and on whichever host * picked.
    expect(stdout).toMatch(/^beta\.demo\.fib\(30\)\s+832040\s+beta\s+\d+\.\d+$/m);
    expect(stdout).toMatch(/^beta\.demo\.power\(1\.5, 10\)\s+57\.6650390625\s+beta\s/m);
    expect(stdout).toMatch(/^\*\.demo\.fib\(25\)\s+75025\s+(alpha|beta|gamma)\s/m);
    // rfork: the 2009 guide's example, its child forced onto beta (its parent there is beta's rexd).
    expect(stdout).toContain("forks on alpha; its child is sent to beta (REX_HOST=beta):");
    expect(stdout).toMatch(/^  parent (\d+) runs on host \S+ - load: \S+\n  child \d+ parent (\d+) origin pid \d+ origin parent \1 origin host \S+ runs on host \S+ - REX loadavg: \S+\n  The child ran on beta: its parent there is beta's rexd \(pid \2\)\.$/m);
    expect(stdout).not.toContain('FAILED');
    expect(stdout).toContain('All hosts stopped.');
    // The hints name this copy's programs by path (pasteable from anywhere), and the last line sums the steps up.
    expect(stdout).toMatch(/^Next: `(\/\S+\/)?rex cluster up` keeps a cluster running; then REX_SOCKET=\/\S+ (\/\S+\/)?rex run uname -n runs a program on the least-loaded host, and \/\S+\/test_rfork_1 rforks onto it/m);
    expect(stdout.trimEnd().split('\n').at(-1)).toBe('demo: 4 steps passed, 0 failed');
    expect(existsSync(join(dir, 'cluster.json'))).toBe(false);
  });

  it('exits non-zero when a step fails (an rfork whose image the executor damages), after stopping every host', async () => {
    const dir = join(tmp, 'demo-fail');
    // REX_TEST_CORRUPT_IMAGE: a test switch, honoured only by a rexd started with --test-mode (the demo's --test-mode).
    const { code, out, err } = await demo(['--dir', dir, '--hosts', '2', '--watch', '0', '--test-mode'], { REX_TEST_CORRUPT_IMAGE: '1' });
    expect(code, out + err).toBe(1);
    expect(out).toMatch(/^  FAILED: rfork: test_rfork_1 ended with status \d+$/m);
    expect(out).toMatch(/restore failed on beta/);
    expect(err).toContain('rex: the demo failed: rfork (the lines marked FAILED above say why)');
    // The steps after it still ran, and the hosts were stopped.
    expect(out).toMatch(/^Next: `(\/\S+\/)?rex cluster up` keeps a cluster running; then REX_SOCKET=\S+ (\/\S+\/)?rex run uname -n /m);
    expect(out).toContain('All hosts stopped.');
    expect(out.trimEnd().split('\n').at(-1)).toBe('demo: 3 steps passed, 1 failed');
    expect(existsSync(join(dir, 'cluster.json'))).toBe(false);
  });

  it('REX_DEMO_FAIL makes the step it names fail: exit 1, the others run, and the summary counts it; a step the cluster cannot show is skipped with a pasteable hint', async () => {
    const dir = join(tmp, 'demo-forced');
    const { code, out, err } = await demo(['--dir', dir, '--hosts', '1', '--watch', '0'], { REX_DEMO_FAIL: 'the round trips' });
    expect(code, out + err).toBe(1);
    expect(out).toMatch(/^  FAILED: the round trips: failed on purpose \(REX_DEMO_FAIL\)$/m);
    expect(out).toMatch(/^alpha\.demo\.fib\(30\)\s+832040\s+alpha\s/m);
    expect(out).toMatch(/^\(Skipping rfork: it moves the child to another host than alpha, and this cluster has only one; try: (\/\S+\/)?rex cluster demo --hosts 2\)$/m);
    expect(err).toContain('rex: the demo failed: the round trips (the lines marked FAILED above say why)');
    expect(out.trimEnd().split('\n').at(-1)).toBe('demo: 2 steps passed, 1 failed, 1 skipped (rfork)');
    expect(existsSync(join(dir, 'cluster.json'))).toBe(false);
  });

  it('stops every host cleanly on Ctrl-C', async () => {
    const dir = join(tmp, 'demo-int');
    const child = spawn(process.execPath, [distBin('rex'), 'cluster', 'demo', '--dir', dir, '--watch', '30'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    for (let i = 0; i < 300 && !out.includes('Live load figures'); i++) await new Promise((r) => setTimeout(r, 100));
    const state = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as { hosts: { pid: number }[] };
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    expect(code).toBe(130);
    expect(out).toContain('Interrupted: stopping the cluster');
    expect(out).toContain('All hosts stopped.');
    await waitGone(state.hosts.map((h) => h.pid));
    expect(state.hosts.filter((h) => alive(h.pid))).toEqual([]);
  });
});
