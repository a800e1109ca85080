// Containment (issue 12, item 8): a job and everything it starts end together.
// Each case runs a remote program that starts a grandchild in a session of its
// own (setsid), ignoring SIGHUP, writing nothing and holding none of the job's
// pipes (the orphan that used to live on), then ends the job one way — cancel
// (SIGINT to `rex run`), client death (`rex run` killed -9), origin death (the
// origin rexd killed -9), executor rexd killed -9 and restarted — and scans
// /proc for the job's marker (an environment string every process of the job
// inherits): nothing may be left. Both ways of containing are tested: cgroup v2
// (when rexd can create cgroups here) and process group + subreaper, forced
// with REX_CONTAINMENT=pgroup.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildDemoLibrary, demoCall } from '../../src/cluster/calldemo.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { Containment } from '../../src/exec/executor/contain.js';
import { JobRecord, processStart } from '../../src/exec/executor/jobs.js';
import { distBin } from '../../src/util/paths.js';
import { NETNS, startCluster } from '../helpers/cluster.js';
import { marked } from '../helpers/procscan.js';
import { alive } from '../helpers/proc.js';

/** The grandchild: its own session, SIGHUP ignored, stdio on /dev/null, no output ever. */
const JOB = `setsid sh -c 'trap "" HUP; exec sleep 1000' </dev/null >/dev/null 2>&1 & echo started; exec sleep 1000`;

/** Starts `rex run` of JOB on `host` through `via`'s rexd, with a fresh marker in its environment; resolves once the job says it started. */
async function startJob(cluster: LocalCluster, via: string, host: string): Promise<{ rex: ChildProcess; mark: string; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }> {
  const mark = `rexcontain${randomBytes(6).toString('hex')}`;
  const rex = spawn(process.execPath, [distBin('rex'), 'run', '--socket', cluster.host(via).socket, '--host', host, '-T', '/bin/sh', '-c', JOB], {
    env: { ...process.env, REX_CONTAIN_MARK: mark },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => rex.on('exit', (code, signal) => r({ code, signal })));
  let out = '';
  let err = '';
  rex.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    rex.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('started')) resolve();
    });
    rex.once('exit', () => reject(new Error(`rex run ended before the job started: ${err}`)));
  });
  // The program (sleep) and the setsid grandchild run, both carrying the marker.
  await vi.waitFor(() => expect(marked(mark).filter((p) => p.argv.startsWith('sleep')).length).toBe(2), { timeout: 10_000, interval: 50 });
  return { rex, mark, exited };
}

async function nothingLeft(mark: string, timeout = 15_000): Promise<void> {
  await vi.waitFor(() => expect(marked(mark), `processes of job ${mark} still running`).toEqual([]), { timeout, interval: 100 });
}

const probe = Containment.cgroupBase('probe', `/nonexistent/${process.pid}`);
const modes: { mode: 'cgroup' | 'pgroup'; skip?: string }[] = [
  'base' in probe ? { mode: 'cgroup' } : { mode: 'cgroup', skip: probe.reason },
  { mode: 'pgroup' },
];
// The probe leaves no directory behind: rexd's cgroup directory exists only while jobs run.

for (const { mode, skip } of modes) {
  if (skip) console.log(`containment.test.ts: the cgroup v2 way is not tested here: ${skip}`);
  describe.skipIf(skip !== undefined)(`jobs contained by ${mode === 'cgroup' ? 'cgroup v2' : 'process group and subreaper (REX_CONTAINMENT=pgroup)'}`, () => {
    let cluster: LocalCluster;
    let stop: () => Promise<void>;
    let libDir: string | undefined;

    beforeAll(async () => {
      libDir = mkdtempSync(join(tmpdir(), 'rex-contain-'));
      const lib = buildDemoLibrary(libDir);
      const before = process.env.REX_CONTAINMENT;
      if (mode === 'pgroup') process.env.REX_CONTAINMENT = 'pgroup';
      else delete process.env.REX_CONTAINMENT;
      try {
        // cgroup mode on loopback: `ip netns exec` gives rexd a /sys of its own, without the cgroup mounts.
        ({ cluster, stop } = await startCluster(2, { rc: [lib.rcLine], ...(mode === 'cgroup' ? { netns: false } : {}) }));
      } finally {
        if (before === undefined) delete process.env.REX_CONTAINMENT;
        else process.env.REX_CONTAINMENT = before;
      }
      await cluster.waitAllReachable();
      // Each rexd says how it contains jobs; the test checks it is the mode under test.
      for (const h of ['alpha', 'beta']) {
        await vi.waitFor(() => expect(readFileSync(cluster.host(h).logFile, 'utf8')).toMatch(new RegExp(`"containment":"${mode}"`)), { timeout: 10_000 });
      }
    }, 90_000);
    afterAll(async () => {
      await stop?.();
      if (libDir) rmSync(libDir, { recursive: true, force: true });
    });

    /** beta's job cgroups left (cgroup mode): each is removed once its job has ended. */
    function jobCgroups(): string[] {
      const base = /"cgroups":"([^"]+)"/.exec(readFileSync(cluster.host('beta').logFile, 'utf8'))?.[1];
      return base && existsSync(base) ? readdirSync(base).filter((n) => n.startsWith('job-')) : [];
    }

    it('a call controller is a contained job, and a restarted rexd reaps the controllers its killed predecessor left', async () => {
      const client = await cluster.client('alpha');
      try {
        const pid = Number((await demoCall(client, 'beta', 'controller_pid', {})).result);
        expect(alive(pid)).toBe(true);
        if (mode === 'cgroup') expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toMatch(/^0::\/.*rex-beta-.*\/job-[0-9a-f]+$/m);
        else expect(readFileSync(`/proc/${pid}/environ`, 'utf8')).toMatch(/(^|\0)REX_JOB=job-[0-9a-f]+\0/);
        cluster.kill('beta', 'SIGKILL');
        await cluster.waitExit('beta');
        expect(alive(pid)).toBe(true); // its rexd is gone; nothing has ended it yet
        await cluster.startHost(cluster.host('beta'));
        await vi.waitFor(() => expect(alive(pid)).toBe(false), { timeout: 10_000, interval: 50 });
        await cluster.waitAllReachable(30_000);
      } finally {
        client.close();
      }
    }, 90_000);

    it('cancel: SIGINT to `rex run` ends the program and its setsid, HUP-ignoring grandchild', async () => {
      const job = await startJob(cluster, 'alpha', 'beta');
      job.rex.kill('SIGINT');
      expect(await job.exited).toMatchObject({ signal: 'SIGINT' });
      await nothingLeft(job.mark);
      await vi.waitFor(() => expect(jobCgroups()).toEqual([]), { timeout: 10_000, interval: 100 });
      // The directory goes once its last job's cgroup is gone; the kernel may hold that one a moment (rexd retries).
      if (mode === 'cgroup') {
        const base = /"cgroups":"([^"]+)"/.exec(readFileSync(cluster.host('beta').logFile, 'utf8'))![1]!;
        await vi.waitFor(() => expect(existsSync(base), "beta's cgroup directory once its last job ended").toBe(false), { timeout: 5_000, interval: 50 });
      }
    }, 60_000);

    it('client death: `rex run` killed -9 ends the whole remote job', async () => {
      const job = await startJob(cluster, 'alpha', 'beta');
      job.rex.kill('SIGKILL');
      await job.exited;
      await nothingLeft(job.mark);
    }, 60_000);

    it('client death on the same host: a local job of a killed `rex run` ends whole', async () => {
      const job = await startJob(cluster, 'alpha', 'alpha');
      job.rex.kill('SIGKILL');
      await job.exited;
      await nothingLeft(job.mark);
    }, 60_000);

    it('origin death: the origin rexd killed -9 ends the job it sent to beta', async () => {
      const job = await startJob(cluster, 'alpha', 'beta');
      cluster.kill('alpha', 'SIGKILL');
      await cluster.waitExit('alpha');
      job.rex.kill('SIGKILL');
      try {
        await nothingLeft(job.mark);
      } finally {
        await cluster.startHost(cluster.host('alpha'));
        await cluster.waitAllReachable(30_000);
      }
    }, 90_000);

    // A rexd in a network namespace sees no cgroup mount, so a cut-off origin is a case of the process-group way only.
    // claim: exec.origin-cut
    if (mode === 'pgroup') it.skipIf(!NETNS)('origin cut off: a job whose origin link goes down (it writes nothing) is ended once the link is found dead', async () => {
      const job = await startJob(cluster, 'alpha', 'beta');
      cluster.cut('alpha');
      try {
        // beta closes a peer link silent for 10 s (3 peer timeouts, at least 10 s), then ends its jobs.
        await nothingLeft(job.mark, 30_000);
      } finally {
        cluster.restore('alpha');
        job.rex.kill('SIGKILL');
      }
      await cluster.waitAllReachable(30_000);
    }, 90_000);

    it('executor death: beta killed -9 leaves its job running; the restarted beta reaps it whole from its records', async () => {
      const job = await startJob(cluster, 'alpha', 'beta');
      cluster.kill('beta', 'SIGKILL');
      await cluster.waitExit('beta');
      job.rex.kill('SIGKILL');
      // Nobody ends the job now: it still runs (which is what the restart must clean up).
      expect(marked(job.mark).length).toBeGreaterThanOrEqual(1);
      await cluster.startHost(cluster.host('beta'));
      await nothingLeft(job.mark);
      expect(readFileSync(cluster.host('beta').logFile, 'utf8')).toContain('killed programs left running by a previous rexd');
      await cluster.waitAllReachable(30_000);
    }, 90_000);
  });
}

describe('job records: a recycled pid is never killed', () => {
  it("a record whose start time is not the live process's own leaves that process alone; the right one ends it", async () => {
    const state = mkdtempSync(join(tmpdir(), 'rex-jobrec-'));
    const victim = spawn('sleep', ['60'], { stdio: 'ignore', detached: true });
    try {
      const pid = victim.pid!;
      const start = processStart(pid)!;
      const rec = new JobRecord(state);
      // The same pid, started at another time: a process that merely reuses the number.
      mkdirSync(join(state, 'exec-jobs'), { recursive: true });
      writeFileSync(join(state, 'exec-jobs', String(pid)), `${JSON.stringify({ start: String(Number(start) - 1) })}\n`);
      expect(rec.reapLeftovers()).toEqual([]);
      expect(alive(pid)).toBe(true);
      // The first form of a record (the start time alone) is still read.
      writeFileSync(join(state, 'exec-jobs', String(pid)), `${start}\n`);
      expect(rec.reapLeftovers()).toContain(pid);
      await vi.waitFor(() => expect(victim.signalCode).toBe('SIGKILL'), { timeout: 5000, interval: 20 });
      expect(readdirSync(join(state, 'exec-jobs'))).toEqual([]);
    } finally {
      victim.kill('SIGKILL');
      rmSync(state, { recursive: true, force: true });
    }
  });
});
