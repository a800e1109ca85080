/**
 * `rex cluster up --slurm --join` in a real Slurm (issue 19, item 2's second half): four Slurm nodes
 * (test/helpers/slurm.ts), each also running REX's root installation (docs/ROOT.md) in that node's network,
 * UTS and mount namespaces, with its own /etc/rex, /var/lib/rex and /run/rex (tmpfs in the node's mount
 * namespace) and host keys that know each other, as an administrator installs them. The four root rexds are one
 * REX cluster; an ordinary user's allocation gets three of the nodes (n1, n2, n3), so n4 is a node of the
 * installation outside the allocation (another user's job, say). The user joins the installation instead of
 * starting rexds, and work placed without --host must stay on n1..n3.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildDemoLibrary } from '../../src/cluster/calldemo.js';
import { KeyStore } from '../../src/keys/store.js';
import { distBin, helper } from '../../src/util/paths.js';
import { leftovers, slurmUnavailable, startSlurm, type SlurmFixture } from '../helpers/slurm.js';
import { createTestUser, removeTestUser, type TestUser } from '../helpers/users.js';

const reason = slurmUnavailable();
if (reason) console.log(`skipped: rex cluster up --slurm --join needs a private Slurm, which cannot run here: ${reason}`);

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

const REX = [process.execPath, distBin('rex')];
const ROOT_RC = '/etc/rex/rex.rc';

describe.skipIf(reason !== undefined)('rex cluster up --slurm --join: an allocation of three of four nodes joins their root installation', () => {
  let s: SlurmFixture;
  let alice: TestUser;
  let demoDir: string;
  let job: string;
  const rootd = new Map<string, ChildProcess>();
  const rootLog = new Map<string, string>();

  /** Runs argv as `u` on the login node (ctl), with the environment a login shell gives. */
  function as(u: TestUser, argv: string[], env: Record<string, string> = {}, timeout = 60_000): Ran {
    const a = s.cmd('setpriv', `--reuid=${u.uid}`, `--regid=${u.gid}`, '--init-groups', '--', ...argv);
    const r = spawnSync(a[0]!, a.slice(1), { encoding: 'utf8', timeout, cwd: '/', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: u.home, USER: u.name, LOGNAME: u.name, SLURM_CONF: s.conf, ...env } });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** What `up --slurm --join --env` exports, as a batch script's eval gives it to every step. */
  const joinedEnv = (): Record<string, string> => ({ REX_SOCKET: '/run/rex/rexd.sock', REX_PLACE_HOSTS: 'n1,n2,n3', REX_SLURM_JOINED: job });

  /** Runs argv as alice in a step of the job on `node` (srun --overlap), with the exports of join mode. */
  function onNode(node: string, argv: string[], env: Record<string, string> = joinedEnv()): Ran {
    return as(alice, ['srun', `--jobid=${job}`, '--overlap', '-N1', '-n1', '-w', node, '--export=ALL', ...argv], env);
  }

  function ok(r: Ran, what: string): string {
    if (r.status !== 0) throw new Error(`${what} failed (${r.status}):\n${r.stderr}\n${r.stdout}\n${[...rootLog].map(([n, l]) => `--- root rexd ${n}\n${l.split('\n').slice(-12).join('\n')}`).join('\n')}\n${s.logs()}`);
    return r.stdout;
  }

  /** Starts node `name`'s root rexd in its namespaces and resolves once it serves. */
  function startRoot(name: string): Promise<void> {
    const a = s.enter(name);
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REX_')));
    const d = spawn(a[0]!, [...a.slice(1), process.execPath, distBin('rexd'), '--foreground', '--config', ROOT_RC], { stdio: ['ignore', 'ignore', 'pipe'], env });
    rootd.set(name, d);
    rootLog.set(name, '');
    d.stderr!.setEncoding('utf8');
    return new Promise((resolve, reject) => {
      d.stderr!.on('data', (t: string) => {
        rootLog.set(name, rootLog.get(name)! + t);
        if (rootLog.get(name)!.includes('rexd (root installation) started')) resolve();
      });
      d.once('exit', (code) => reject(new Error(`root rexd of ${name} exited (${code}): ${rootLog.get(name)}`)));
    });
  }

  /** What down must leave as it is on a node: its root rexd's pid, its rex.rc and the host keys it knows. */
  function rootState(name: string): string {
    const r = s.fsRoot(name);
    return JSON.stringify({ pid: rootd.get(name)!.pid, alive: rootd.get(name)!.exitCode === null, rc: readFileSync(join(r, ROOT_RC), 'utf8'), known: readdirSync(join(r, 'var/lib/rex/host/known')).sort() });
  }

  beforeAll(async () => {
    s = await startSlurm(4, { rootRexDirs: true });
    alice = createTestUser('rextest-sjoin-a');
    demoDir = mkdtempSync('/var/tmp/rex-slurm-join-demo-');
    chmodSync(demoDir, 0o755);
    const { rcLine } = buildDemoLibrary(demoDir);
    // The administrator's part, on every node: a host key, the other nodes' host keys known (as `rex cluster up
    // --private-fs --root` places them), and a rex.rc whose host-name is the Slurm node name. round-robin makes
    // placement visit every candidate in turn, so that a host outside the limit would show within a few runs.
    const certs = new Map<string, string>();
    for (const n of s.nodes) certs.set(n.name, (await new KeyStore(join(s.fsRoot(n.name), 'var/lib/rex')).create(n.name)).certPem);
    const servers = s.nodes.map((n) => `${n.name}@${n.address}:7800`).join(', ');
    for (const n of s.nodes) {
      const known = new KeyStore(join(s.fsRoot(n.name), 'var/lib/rex', 'host'));
      for (const o of s.nodes) if (o !== n) known.addKnown(certs.get(o.name)!, 'test: the administrator');
      writeFileSync(
        join(s.fsRoot(n.name), ROOT_RC),
        [`host-name : ${n.name}`, 'installation : root', 'state-directory : /var/lib/rex', 'socket : /run/rex/rexd.sock', `servers : ${servers}`, 'placement-policy : round-robin', 'load-interval : 300ms', 'peer-timeout : 2s', rcLine, ''].join('\n'),
      );
    }
    await Promise.all(s.nodes.map((n) => startRoot(n.name)));
    // alice's allocation: three of the four nodes.
    const granted = as(alice, ['salloc', '-N3', '-w', 'n1,n2,n3', '--no-shell']);
    job = /Granted job allocation (\d+)/.exec(granted.stderr)?.[1] ?? '';
    expect(job, granted.stderr).toMatch(/^\d+$/);
  }, 120_000);

  afterAll(async () => {
    await s?.stop(); // ends every process in the nodes' namespaces, the root rexds too
    if (alice) removeTestUser(alice.name);
    if (demoDir) rmSync(demoDir, { recursive: true, force: true });
  }, 60_000);

  // claim: slurm.join
  it('up --slurm --join checks every node and starts nothing: the root socket, the allocation as placement limit', () => {
    const before = s.nodes.map((n) => rootState(n.name));
    const j = JSON.parse(ok(as(alice, [...REX, 'cluster', 'up', '--slurm', '--join', '--job', job, '--json']), 'up --join')) as { job: string; mode: string; socket: string; hosts: string[] };
    expect(j).toEqual({ job, mode: 'join', socket: '/run/rex/rexd.sock', hosts: ['n1', 'n2', 'n3'] });
    const env = ok(as(alice, [...REX, 'cluster', 'up', '--slurm', '--join', '--env'], { SLURM_JOB_ID: job }), 'up --join --env');
    expect(env.trim().split('\n')).toEqual(["export REX_SOCKET='/run/rex/rexd.sock'", "export REX_PLACE_HOSTS='n1,n2,n3'", `export REX_SLURM_JOINED='${job}'`]);
    // No rexd of alice's own, no step left, nothing in any node's /tmp: only the root installation serves her.
    for (const n of ['n1', 'n2', 'n3', 'n4']) {
      const l = leftovers(s, n, alice.uid);
      expect(l.tmp).toEqual([]);
      expect(l.procs.filter((p) => / rexd\.cjs --foreground/.test(p))).toEqual([]);
    }
    expect(ok(as(alice, ['squeue', '-h', '-s', '-j', job, '-o', '%j']), 'squeue').trim()).not.toContain('rexd');
    expect(s.nodes.map((n) => rootState(n.name))).toEqual(before);
  }, 60_000);

  // claim: slurm.join-placement
  it('rex run without --host lands only on the allocated nodes, never on n4; --host n4 is the user\'s explicit choice', async () => {
    // n1's controller for alice reaches all four root rexds (the installation's cluster is bigger than the job).
    await vi.waitFor(
      () => {
        const hosts = JSON.parse(ok(onNode('n1', [...REX, 'hosts', '--json']), 'rex hosts')) as { name: string; reachable: boolean; load?: number }[];
        if (hosts.length !== 4 || !hosts.every((h) => h.reachable && h.load !== undefined)) throw new Error(`not settled: ${JSON.stringify(hosts)}`);
      },
      { timeout: 20_000, interval: 300 },
    );
    const rex = REX.join(' ');
    const runs = (env: Record<string, string>): string[] => ok(onNode('n1', ['sh', '-c', `for i in 1 2 3 4 5 6 7 8; do ${rex} run hostname; done`], env), 'eight placed runs').trim().split('\n');
    // Without the limit, round-robin over the installation's four hosts reaches n4: the limit is what keeps it out.
    const free = runs({ REX_SOCKET: '/run/rex/rexd.sock' });
    expect(new Set(free)).toEqual(new Set(['n1', 'n2', 'n3', 'n4']));
    const limited = runs(joinedEnv());
    expect(new Set(limited)).toEqual(new Set(['n1', 'n2', 'n3']));
    // The node placement runs from need not be in the set; a set with no reachable host is refused, naming it.
    expect(ok(onNode('n1', [...REX, 'run', 'hostname'], { ...joinedEnv(), REX_PLACE_HOSTS: 'n3' }), 'run limited to n3').trim()).toBe('n3');
    const none = onNode('n1', [...REX, 'run', 'hostname'], { ...joinedEnv(), REX_PLACE_HOSTS: 'n9' });
    expect(none.status).not.toBe(0);
    expect(none.stderr).toMatch(/none of the hosts this request may be placed on \(n9\)/);
    const badName = onNode('n1', [...REX, 'run', 'hostname'], { ...joinedEnv(), REX_PLACE_HOSTS: 'n1;id' });
    expect(badName.status).not.toBe(0);
    expect(badName.stderr).toMatch(/REX_PLACE_HOSTS: "n1;id" is not a host name/);
    // An explicit host is the user's choice, inside the installation's trust: n4 runs it as alice.
    expect(ok(onNode('n1', [...REX, 'run', '--host', 'n4', 'sh', '-c', 'echo $(hostname) $(id -un)']), 'run --host n4').trim()).toBe(`n4 ${alice.name}`);
  }, 90_000);

  // claim: slurm.join-rfork
  it("the seed's rfork example forks on n1 and its child is placed on another allocated node (librex honours REX_PLACE_HOSTS)", () => {
    const out = ok(onNode('n1', [helper('test_rfork_1')], { ...joinedEnv(), REX_PLACE_HOSTS: 'n2,n3' }), 'test_rfork_1');
    expect(out).toMatch(/^parent \d+ runs on host n1 /m);
    const child = /^child .* runs on host (\S+) /m.exec(out)?.[1];
    expect(['n2', 'n3']).toContain(child);
  }, 60_000);

  // claim: slurm.join-call
  it('a remote call from n1 runs on n2 through the root installation; calls to * stay in the allocation', () => {
    expect(ok(onNode('n1', [...REX, 'call', 'n2.demo.fib', '20', '--json']), 'rex call')).toContain('6765');
    // Which node's root rexd ran a call: the controller's ancestors (one pid namespace: the nodes share the machine's).
    const nodeOf = (pid: number): string | undefined => {
      const roots = new Map([...rootd].map(([n, d]) => [d.pid, n]));
      for (let p = pid, i = 0; p > 1 && i < 20; i++) {
        if (roots.has(p)) return roots.get(p);
        p = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
      }
      return undefined;
    };
    const rex = REX.join(' ');
    const pids = ok(onNode('n1', ['sh', '-c', `for i in 1 2 3 4 5 6; do ${rex} call '*.demo.controller_pid' --json; done`]), 'six * calls').match(/\d+/g)!.map(Number);
    expect(pids.length).toBe(6);
    // round-robin over the nodes that offer demo and are in REX_PLACE_HOSTS: n1, n2, n3, never n4.
    expect(new Set(pids.map(nodeOf))).toEqual(new Set(['n1', 'n2', 'n3']));
  }, 60_000);

  // claim: slurm.join-down
  it('down --slurm has nothing to stop: it says so, and the root rexds run on unchanged', () => {
    const before = s.nodes.map((n) => rootState(n.name));
    const viaEnv = ok(as(alice, [...REX, 'cluster', 'down', '--slurm'], { SLURM_JOB_ID: job, REX_SLURM_JOINED: job }), 'down (joined env)');
    expect(viaEnv).toContain('nothing to stop');
    const explicit = JSON.parse(ok(as(alice, [...REX, 'cluster', 'down', '--slurm', '--join', '--job', job, '--json']), 'down --join')) as { stopped: string[] };
    expect(explicit.stopped).toEqual([]);
    expect(s.nodes.map((n) => rootState(n.name))).toEqual(before);
    expect(ok(onNode('n2', [...REX, 'run', '--host', 'n3', 'hostname']), 'run after down').trim()).toBe('n3');
  }, 60_000);

  // claim: slurm.join-absent
  it('a node whose root rexd is absent, or named other than its Slurm node, makes up --join fail naming that node', async () => {
    const d = rootd.get('n3')!;
    const gone = new Promise((r) => d.once('exit', r));
    d.kill('SIGTERM');
    await gone;
    const r = as(alice, [...REX, 'cluster', 'up', '--slurm', '--join', '--job', job]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/cannot join the root installation: .*n3: the root installation's rexd does not serve rextest-sjoin-a on \/run\/rex\/rexd\.sock/);
    // The same installation under another name on n3 (its host-name is not the Slurm node name): refused, naming both.
    const root = s.fsRoot('n3');
    await new KeyStore(join(root, 'var/lib/rex')).create('n3alias');
    writeFileSync(join(root, ROOT_RC), readFileSync(join(root, ROOT_RC), 'utf8').replace('host-name : n3', 'host-name : n3alias').replace('n3@', 'n3alias@'));
    await startRoot('n3');
    const alias = as(alice, [...REX, 'cluster', 'up', '--slurm', '--join', '--job', job]);
    expect(alias.status).not.toBe(0);
    expect(alias.stderr).toMatch(/n3: the rexd on \/run\/rex\/rexd\.sock calls itself n3alias, not n3: the root installation's rex\.rc host-name must be the Slurm node name/);
  }, 60_000);
});
