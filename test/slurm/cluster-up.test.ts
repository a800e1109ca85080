/**
 * `rex cluster up --slurm` in a real Slurm (issue 19): a private slurmctld and three slurmd from the
 * distribution's packages (test/helpers/slurm.ts), each node in network, UTS and mount namespaces of its own
 * with a private /tmp, so nodes share no temporary files. An ordinary user requests the allocation and brings
 * REX up with one command from the "login node" (ctl); everything after runs as that user through srun steps
 * of the job, as on a real cluster.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildDemoLibrary } from '../../src/cluster/calldemo.js';
import { KeyStore } from '../../src/keys/store.js';
import { distBin, helper } from '../../src/util/paths.js';
import { leftovers as nodeLeftovers, PACKAGE_TMP_ENTRY, untilNothingLeft, slurmUnavailable, startSlurm, type SlurmFixture } from '../helpers/slurm.js';
import { createTestUser, removeTestUser, type TestUser } from '../helpers/users.js';

const reason = slurmUnavailable();
if (reason) console.log(`skipped: rex cluster up --slurm needs a private Slurm, which cannot run here: ${reason}`);

interface Up {
  job: string;
  step: string;
  allocated: boolean;
  socket: string;
  nodes: { name: string; address: string; port: number; id: string; rexdPid: number }[];
}

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

const REX = [process.execPath, distBin('rex')];

describe.skipIf(reason !== undefined)('rex cluster up --slurm: a Slurm allocation of three nodes becomes a REX cluster', () => {
  let s: SlurmFixture;
  let alice: TestUser;
  let bob: TestUser;
  let demoDir: string;
  let rcLine: string;
  let up: Up;

  /** Runs argv as `u` on the login node (ctl), with the environment a login shell gives. */
  function as(u: TestUser, argv: string[], env: Record<string, string> = {}, timeout = 60_000): Ran {
    const a = s.cmd('setpriv', `--reuid=${u.uid}`, `--regid=${u.gid}`, '--init-groups', '--', ...argv);
    const r = spawnSync(a[0]!, a.slice(1), {
      encoding: 'utf8',
      timeout,
      cwd: '/',
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: u.home, USER: u.name, LOGNAME: u.name, SLURM_CONF: s.conf, ...env },
    });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Runs argv as `u` in a step of job `job` on node `node` (srun --overlap), with REX_SOCKET of the job's rexd. */
  function onNode(u: TestUser, job: string, node: string, argv: string[], env: Record<string, string> = {}): Ran {
    return as(u, ['srun', `--jobid=${job}`, '--overlap', '-N1', '-n1', `-w`, node, '--export=ALL', ...argv], { REX_SOCKET: up.socket, ...env });
  }

  function ok(r: Ran, what: string): string {
    if (r.status !== 0) throw new Error(`${what} failed (${r.status}):\n${r.stderr}\n${r.stdout}\n${s.logs()}`);
    return r.stdout;
  }

  const leftovers = (name: string, uid: number) => nodeLeftovers(s, name, uid);

  beforeAll(async () => {
    s = await startSlurm(3);
    alice = createTestUser('rextest-slurm-a');
    bob = createTestUser('rextest-slurm-b');
    // The demo library: software the site installed where every node reads it (not in /tmp).
    demoDir = mkdtempSync('/var/tmp/rex-slurm-demo-');
    chmodSync(demoDir, 0o755);
    rcLine = buildDemoLibrary(demoDir).rcLine;
  }, 120_000);

  afterAll(async () => {
    await s?.stop();
    if (alice) removeTestUser(alice.name);
    if (bob) removeTestUser(bob.name);
    if (demoDir) rmSync(demoDir, { recursive: true, force: true });
  }, 60_000);

  // claim: slurm.up
  it('one command, as an ordinary user, requests three nodes and starts a rexd on each, with keys made for the job', () => {
    const r = as(alice, [...REX, 'cluster', 'up', '--slurm', '--nodes', '3', '--json', '--rc', rcLine]);
    up = JSON.parse(ok(r, 'rex cluster up --slurm')) as Up;
    expect(up.allocated).toBe(true);
    expect(up.nodes.map((n) => n.name)).toEqual(['n1', 'n2', 'n3']);
    expect(up.nodes.map((n) => n.address)).toEqual(s.nodes.map((n) => n.address));
    expect(new Set(up.nodes.map((n) => n.id)).size).toBe(3);
    expect(up.socket).toBe(`/tmp/rex-slurm-${alice.uid}/job-${up.job}/run/rexd.sock`);
    // The job and its rexd step, as Slurm sees them: alice's, three nodes.
    expect(ok(as(alice, ['squeue', '-h', '-s', '-j', up.job, '-o', '%i %u %N']), 'squeue')).toContain(`${up.job}.${up.step} ${alice.name} n[1-3]`);
    // Each node's rexd runs as alice (not root), in its own node; its state lives in the node's own /tmp.
    for (const n of up.nodes) {
      const l = leftovers(n.name, alice.uid);
      expect(l.procs.some((p) => p.includes('rexd'))).toBe(true);
      expect(l.tmp).toEqual([`rex-slurm-${alice.uid}`]);
    }
  }, 90_000);

  // claim: slurm.hosts
  it('rex hosts shows the Slurm node names with their load, every node reachable', async () => {
    const hosts = await vi.waitFor(
      () => {
        const r = JSON.parse(ok(onNode(alice, up.job, 'n1', [...REX, 'hosts', '--json']), 'rex hosts')) as { name: string; reachable: boolean; load?: number }[];
        if (!r.every((h) => h.reachable && h.load !== undefined)) throw new Error(`not settled: ${JSON.stringify(r)}`);
        return r;
      },
      { timeout: 20_000, interval: 200 },
    );
    expect(hosts.map((h) => h.name).sort()).toEqual(['n1', 'n2', 'n3']);
  }, 30_000);

  // claim: slurm.run
  it('rex run from n1 runs a program on n2, and with no --host places it within the allocation', () => {
    expect(ok(onNode(alice, up.job, 'n1', [...REX, 'run', '--host', 'n2', 'sh', '-c', 'echo $(hostname) $(id -un)']), 'rex run').trim()).toBe(`n2 ${alice.name}`);
    const placed = ok(onNode(alice, up.job, 'n1', [...REX, 'run', 'hostname']), 'rex run (placed)').trim();
    expect(['n1', 'n2', 'n3']).toContain(placed);
    // Placement by REX's load figures within the allocation: three jobs started at once from n1 (each lasting a
    // moment, so that they overlap) land on the three nodes, as on any REX cluster (docs/PLACEMENT.md).
    const rex = REX.join(' ');
    const three = ok(onNode(alice, up.job, 'n1', ['sh', '-c', `for i in 1 2 3; do ${rex} run sh -c 'hostname; sleep 1' & done; wait`]), 'three placed runs');
    expect(three.trim().split('\n').sort()).toEqual(['n1', 'n2', 'n3']);
  }, 60_000);

  // claim: slurm.rfork
  it("the seed's rfork example forks on n1 and its child runs on n3", () => {
    const out = ok(onNode(alice, up.job, 'n1', [helper('test_rfork_1')], { REX_HOST: 'n3' }), 'test_rfork_1');
    // The moved child's parent is the executor's rexd: n3's.
    const parent = Number(/^child \d+ parent (\d+) /m.exec(out)?.[1]);
    expect(parent).toBe(up.nodes.find((n) => n.name === 'n3')!.rexdPid);
  }, 60_000);

  // claim: slurm.call
  it('a remote call from n1 runs on n2', () => {
    const out = ok(onNode(alice, up.job, 'n1', [...REX, 'call', 'n2.demo.fib', '20', '--json']), 'rex call');
    expect(out).toContain('6765');
  }, 60_000);

  // claim: slurm.other-job
  it("a rexd of another job of the same user is refused by the job's rexds, even holding their certificates", () => {
    const granted = as(alice, ['salloc', '-N1', '-w', 'n1', '--no-shell']);
    const j2 = /Granted job allocation (\d+)/.exec(granted.stderr)?.[1];
    expect(j2, granted.stderr).toMatch(/^\d+$/);
    const [n1, n2] = [up.nodes[0]!, up.nodes[1]!];
    // n2's certificate is public (any TLS client sees it): the other job pins it, so that the refusal seen is n2's.
    const n2cert = ok({ ...spawnSync(s.enter('n2')[0]!, [...s.enter('n2').slice(1), 'cat', `/tmp/rex-slurm-${alice.uid}/job-${up.job}/keys/n2.${alice.name.replace(/[^A-Za-z0-9_-]/g, '_')}.crt`], { encoding: 'utf8' }) }, 'read n2 cert');
    const pin = mkdtempSync(join(demoDir, 'pin-'));
    const known = new KeyStore(pin).addKnown(n2cert, 'test: a public certificate');
    const knownText = readFileSync(known.file, 'utf8');
    const rexd = `${process.execPath} ${distBin('rexd')}`;
    const rex = `${process.execPath} ${distBin('rex')}`;
    const script = [
      'd=$(mktemp -d)',
      `printf '%s\\n' 'host-name : n1' "state-directory : $d" 'servers : n1@${n1.address}:${n1.port + 1}, n2@${n2.address}:${n2.port}' 'load-interval : 300ms' > $d/rex.rc`,
      `export REX_CONFIG=$d/rex.rc; unset REX_SOCKET`,
      `${process.execPath} ${distBin('rex_key')} --create --json >/dev/null`,
      `mkdir -p $d/known && printf '%s' '${knownText}' > $d/known/${known.file.split('/').pop()}`,
      `${process.execPath} ${distBin('rex_key')} --grant n2.${alice.name.replace(/[^A-Za-z0-9_-]/g, '_')} >/dev/null`,
      `${rexd} --foreground > $d/log 2>&1 & r=$!`,
      `i=0; until ${rex} hosts >/dev/null 2>&1 || [ $i -ge 200 ]; do i=$((i+1)); sleep 0.05; done`,
      `${rex} ping n2 -n 1 >/dev/null 2>&1 && echo PING-OK || echo PING-REFUSED`,
      `${rex} hosts`,
      `${rex} run --host n2 hostname 2>/dev/null || echo RUN-REFUSED`,
      'kill $r; wait $r; rm -rf $d',
    ].join('\n');
    const out = ok(as(alice, ['srun', `--jobid=${j2!}`, '--overlap', '-N1', '-w', 'n1', 'sh', '-c', script]), 'the other job');
    as(alice, ['scancel', j2!]);
    expect(out).toContain('PING-REFUSED');
    expect(out).toContain('RUN-REFUSED');
    expect(out).not.toMatch(/^n2$/m);
    // n2 logged the refusal of a key it does not know under the name n1.
    const log = spawnSync(s.enter('n2')[0]!, [...s.enter('n2').slice(1), 'cat', `/tmp/rex-slurm-${alice.uid}/job-${up.job}/log/rexd.log`], { encoding: 'utf8' }).stdout;
    // The other job's rexd did run (it lists itself) and n2 refused its key, naming it; n2 logged the denial.
    const who = alice.name.replace(/[^A-Za-z0-9_-]/g, '_');
    const id = new RegExp(`^n2 .*DENIED: unknown key ([A-Z2-7-]{39}) \\(claims to be n1\\.${who}\\)`, 'm').exec(out)?.[1];
    expect(id, out).toBeDefined();
    expect(id).not.toBe(n1.id);
    expect(out).toMatch(/^n1 \* /m);
    const denials = log.split('\n').filter((l) => l.includes('"access denied"') && l.includes(id!));
    expect(denials.length).toBeGreaterThan(0);
  }, 60_000);

  // claim: slurm.other-user
  it("another user on the same node cannot reach the job's rexd", () => {
    const granted = as(bob, ['salloc', '-N1', '-w', 'n1', '--no-shell']);
    const j = /Granted job allocation (\d+)/.exec(granted.stderr)?.[1];
    expect(j, granted.stderr).toMatch(/^\d+$/);
    const r = as(bob, ['srun', `--jobid=${j!}`, '--overlap', '-N1', '-w', 'n1', ...REX, 'hosts'], { REX_SOCKET: up.socket });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/EACCES|permission denied/i);
    as(bob, ['scancel', j!]);
  }, 60_000);

  // claim: slurm.teardown
  it('when the allocation ends, no rexd, socket or state directory remains on any node', async () => {
    ok(as(alice, ['scancel', up.job]), 'scancel');
    await untilNothingLeft(s, s.nodes.map((n) => n.name), alice.uid);
    for (const n of s.nodes) expect(leftovers(n.name, alice.uid)).toEqual({ procs: [], tmp: [] });
    // Nor on the login node, where the launcher's srun ran: it ended with the step, and its directory with it.
    await vi.waitFor(() => expect(leftovers('ctl', alice.uid)).toEqual({ procs: [], tmp: [] }), { timeout: 30_000, interval: 200 });
    expect(readdirSync('/proc').filter((p) => /^\d+$/.test(p)).some((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('slurm-node');
      } catch {
        return false;
      }
    })).toBe(false);
  }, 60_000);
  // claim: slurm.down
  it('inside an allocation (salloc), up --slurm uses it and down --slurm stops REX but not the allocation', async () => {
    const granted = as(alice, ['salloc', '-N3', '--no-shell']);
    const j3 = /Granted job allocation (\d+)/.exec(granted.stderr)?.[1];
    expect(j3, granted.stderr).toMatch(/^\d+$/);
    // What salloc's shell has in its environment.
    const job = { SLURM_JOB_ID: j3!, SLURM_JOB_NODELIST: 'n[1-3]' };
    const c = JSON.parse(ok(as(alice, [...REX, 'cluster', 'up', '--slurm', '--json'], job), 'up --slurm in salloc')) as Up;
    expect(c).toMatchObject({ job: j3, allocated: false });
    expect(c.nodes.map((n) => n.name)).toEqual(['n1', 'n2', 'n3']);
    expect(ok(onNode(alice, j3!, 'n3', [...REX, 'run', '--host', 'n1', 'hostname'], { REX_SOCKET: c.socket }), 'rex run').trim()).toBe('n1');
    const down = JSON.parse(ok(as(alice, [...REX, 'cluster', 'down', '--slurm', '--json'], job), 'down --slurm')) as { job: string; stopped: string[] };
    expect(down).toMatchObject({ job: j3, stopped: ['n1', 'n2', 'n3'] });
    await untilNothingLeft(s, s.nodes.map((n) => n.name), alice.uid);
    // The allocation is still there, without the rexd step; the launcher's directory on the login node is gone.
    expect(ok(as(alice, ['squeue', '-h', '-j', j3!, '-o', '%i %T']), 'squeue').trim()).toBe(`${j3} RUNNING`);
    expect(ok(as(alice, ['squeue', '-h', '-s', '-j', j3!, '-o', '%i']), 'squeue -s').trim()).not.toContain(`${j3}.${c.step}`);
    expect(ok(as(alice, ['ls', '-A', '/tmp']), 'ls /tmp on ctl').split('\n').filter((e) => e && e !== PACKAGE_TMP_ENTRY)).toEqual([]);
    // Again, with what a person reads; then stopped from another node of the job, where up did not run.
    const text = ok(as(alice, [...REX, 'cluster', 'up', '--slurm'], job), 'up --slurm (text)');
    expect(text).toMatch(new RegExp(`^REX runs on Slurm job ${j3} \\(step ${j3}\\.\\d+\\)`));
    for (const n of ['n1', 'n2', 'n3']) expect(text).toMatch(new RegExp(`^  ${n} +127\\.77\\.\\d+\\.\\d+:\\d+  ID [A-Z2-7-]{39}$`, 'm'));
    expect(text).toContain(`export REX_SOCKET=${c.socket}`);
    const down2 = JSON.parse(ok(onNode(alice, j3!, 'n2', [...REX, 'cluster', 'down', '--slurm', '--json']), 'down --slurm from n2')) as { job: string; stopped: string[] };
    expect(down2).toMatchObject({ job: j3, stopped: ['n1', 'n2', 'n3'] });
    await untilNothingLeft(s, [...s.nodes.map((n) => n.name), 'ctl'], alice.uid);
    ok(as(alice, ['scancel', j3!]), 'scancel');
  }, 90_000);

  it("a node whose rexd cannot start fails the whole up with that node's reason, and leaves nothing behind", async () => {
    const granted = as(alice, ['salloc', '-N2', '-w', 'n2,n3', '--no-shell']);
    const j = /Granted job allocation (\d+)/.exec(granted.stderr)?.[1];
    expect(j, granted.stderr).toMatch(/^\d+$/);
    const r = as(alice, [...REX, 'cluster', 'up', '--slurm', '--rc', 'no-such-key : 1'], { SLURM_JOB_ID: j!, SLURM_JOB_NODELIST: 'n[2-3]' });
    expect(r.status).not.toBe(0);
    // Which node, what rexd said about its rex.rc, and where to look.
    expect(r.stderr).toMatch(/node n[23]: rexd exited with status \d+ during start-up; its log: .*no-such-key/);
    await untilNothingLeft(s, [...s.nodes.map((n) => n.name), 'ctl'], alice.uid);
    expect(ok(as(alice, ['squeue', '-h', '-s', '-j', j!, '-o', '%j']), 'squeue -s').split('\n')).not.toContain('rexd');
    ok(as(alice, ['scancel', j!]), 'scancel');
  }, 60_000);
});
