/**
 * A private Slurm cluster for a test (issue 19, item 3): slurmctld and N slurmd, each slurmd in a network
 * namespace and a UTS namespace of its own (hostname = node name), so a step srun starts on node nX sees nX's
 * network and name. Root only.
 *
 * How it is built (findings, 2026-12-07, Debian bookworm, Slurm 22.05.8):
 * - Namespaces come from src/cluster/netns.ts (NetnsNetwork, the code `rex cluster up --netns` uses): one
 *   namespace per host joined by veth pairs to a bridge in a "switch" namespace, addresses 127.77.ID.K/24.
 *   The hosts are n1..nN plus one more, "ctl", for slurmctld: the switch namespace is not reachable from the
 *   root namespace, so slurmctld and every client command (sinfo, salloc, srun, scancel) run inside "ctl"
 *   (`fixture.cmd(...)` gives the argv, in slurmctld's namespaces: the "login node", with its own /tmp). srun
 *   listens for its steps there, and the slurmds reach it over the bridge.
 * - Each daemon (slurmd nK, and slurmctld as ctl): `nsenter --net=/run/netns/rexID-K unshare --uts --mount
 *   --propagation private -- sh -c 'echo nK > /proc/sys/kernel/hostname && mount -t tmpfs tmpfs /tmp && exec
 *   slurmd -D -f DIR/slurm.conf -N nK'`: its own network, host name and /tmp (a tmpfs in a mount namespace of its
 *   own; the rest of the file system is the machine's, as a cluster's nodes share an installed system and /home).
 *   Everything slurmd starts (slurmstepd, the job's tasks) lives in those namespaces, so a design that passes
 *   files through /tmp fails here as it would between machines. The fixture's directory is under /var/tmp, 0755
 *   (slurm.conf and munged's socket are read by ordinary users' srun). `enter(name)` joins a running daemon's
 *   namespaces (nsenter -t PID --net --uts --mount); `leftovers(s, node, uid)` lists what a user left on a node.
 *   NodeName=nK NodeHostname=nK NodeAddr=127.77.ID.K. All slurmds use the same SlurmdPort: each has its own network.
 * - Munge: a private munged as root (`munged -F --force --socket=DIR/munge/munge.sock --key-file=DIR/munge/munge.key
 *   --pid-file ... --log-file ... --seed-file ...`) with a fresh random key, and `AuthInfo=socket=DIR/munge/munge.sock`
 *   in slurm.conf; the unix socket is a file, so it works across network namespaces. A system munged is not touched.
 * - Teardown: scancel everything, SIGTERM then SIGKILL every process in the fixture's namespaces (`ip netns pids`,
 *   which also catches slurmstepd and job processes left behind: proctrack/linuxproc does not kill them when slurmd
 *   dies), kill munged, delete the namespaces, remove the scratch directory.
 * - slurmctld checks that its own hostname is the SlurmctldHost name ("This host (vm/vm) not a valid
 *   controller" otherwise), so it too gets a UTS namespace (hostname ctl): SlurmctldHost=ctl(127.77.ID.N+1).
 * - Enter with `nsenter --net=/run/netns/NS`, not `ip netns exec`: the latter remounts /sys, /sys/fs/cgroup is
 *   empty there, and slurmd 22.05 dies ("No filesystem mounted on /sys/fs/cgroup ... Unable to initialize cgroup
 *   plugin"). Consequence: /sys/class/net inside a node still lists the root namespace's links; `ip addr` is right.
 * - The 127.77.ID.K addresses are scope host, so `ip -4 addr show scope global` prints nothing: filter on the
 *   device (not lo) instead.
 * - `rootRexDirs`: each daemon's mount namespace also gets tmpfs mounts on /etc/rex, /var/lib/rex and /run/rex,
 *   so that a root installation of REX can run on each node with its own configuration, keys and socket
 *   (test/slurm/join.test.ts starts those rexds with `enter(name)` and writes their files through `fsRoot(name)`).
 * - Start to idle takes about 1.5 s for 3 nodes; the whole fixture test about 2.5 s. After the teardown a few
 *   <defunct> slurmstepd/munged entries reparented to init may show for a moment, until init reaps them.
 * - `slurmUnavailable()` says why Slurm cannot run here (not root, no `ip`/`unshare`, a binary missing), for
 *   `describe.skipIf(reason)` with the reason printed.
 */
import { vi } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { NetnsNetwork, netnsAvailable } from '../../src/cluster/netns.js';
import { freeNetnsId } from '../../src/cluster/cluster.js';
import { packageRoot } from '../../src/util/paths.js';

const shq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
/** This package's tree when it lies under /tmp (else undefined): the one thing of the host's /tmp each node sees. */
const PACKAGE_IN_TMP = /^\/tmp\/./.test(packageRoot()) ? packageRoot() : undefined;
/** The entry of a node's /tmp that is the package's tree bound back (see daemonPrefix), not something a test left. */
export const PACKAGE_TMP_ENTRY = PACKAGE_IN_TMP?.split('/')[2];

const SBIN = ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin'];

function which(name: string): string | undefined {
  for (const d of SBIN) if (existsSync(join(d, name))) return join(d, name);
  return undefined;
}

/** Why a private Slurm cannot run on this machine, or undefined when it can. */
export function slurmUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root (Slurm fixture needs network namespaces and root daemons)';
  if (!which('ip')) return 'no `ip` (iproute2) on PATH';
  if (!netnsAvailable()) return '`ip netns` does not work here';
  if (!which('unshare')) return 'no `unshare` (util-linux)';
  const missing = ['slurmctld', 'slurmd', 'munged', 'sinfo', 'salloc', 'srun', 'scancel'].filter((b) => !which(b));
  if (missing.length) return `Slurm/munge binaries missing: ${missing.join(', ')} (apt-get install slurmd slurmctld slurm-client munge)`;
  return undefined;
}

export interface SlurmNode {
  name: string;
  address: string;
  ns: string;
}

export interface SlurmFixture {
  dir: string;
  conf: string;
  nodes: SlurmNode[];
  ctl: SlurmNode;
  network: NetnsNetwork;
  /** argv prefix that runs a program in node `name`'s (or 'ctl''s) network, UTS and mount namespaces: its address, hostname and private /tmp. */
  enter(name: string): string[];
  /** Node `name`'s file system as root sees it from outside (/proc/PID/root of its slurmd): its /tmp, and with rootRexDirs its /etc/rex, /var/lib/rex, /run/rex. */
  fsRoot(name: string): string;
  /** argv that runs a Slurm client command in slurmctld's namespace with this fixture's SLURM_CONF. */
  cmd(...args: string[]): string[];
  /** Runs a client command synchronously; returns stdout, throws with stderr on failure. */
  run(args: string[], timeoutMs?: number): string;
  /** Environment for spawning `cmd(...)`. */
  env: NodeJS.ProcessEnv;
  logs(): string;
  stop(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pidsIn(ns: string): number[] {
  try {
    return execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function kill(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
}

/** Starts a private Slurm cluster of `n` nodes (n1..nN); resolves once `sinfo` shows them all idle. */
export async function startSlurm(n = 3, opts: { timeoutMs?: number; rootRexDirs?: boolean } = {}): Promise<SlurmFixture> {
  const why = slurmUnavailable();
  if (why) throw new Error(`Slurm cannot run: ${why}`);
  // Not under /tmp: every daemon has a /tmp of its own. Readable by all: ordinary users' srun and salloc read
  // slurm.conf and reach munged's socket, as on a real cluster.
  const dir = mkdtempSync(join('/var/tmp', 'rex-slurm-'));
  chmodSync(dir, 0o755);
  for (const d of ['state', 'spool', 'run', 'log', 'munge']) mkdirSync(join(dir, d), { recursive: true });
  chmodSync(join(dir, 'munge'), 0o755);
  const names = Array.from({ length: n }, (_, k) => `n${k + 1}`);
  for (const x of names) mkdirSync(join(dir, 'spool', x));
  const network = new NetnsNetwork(freeNetnsId());
  const hosts = network.create([...names, 'ctl']);
  const nodes: SlurmNode[] = hosts.slice(0, n).map((h) => ({ name: h.name, address: h.address, ns: h.ns }));
  const ctlHost = hosts[n]!;
  const ctl: SlurmNode = { name: 'ctl', address: ctlHost.address, ns: ctlHost.ns };
  const children: ChildProcess[] = [];
  const conf = join(dir, 'slurm.conf');
  const sock = join(dir, 'munge', 'munge.sock');
  const env = { ...process.env, SLURM_CONF: conf };
  const base = 20000 + network.id * 200;
  // nsenter --net rather than `ip netns exec`: the latter remounts /sys in a new mount namespace, where
  // /sys/fs/cgroup is empty and slurmd 22.05 fails ("Unable to initialize cgroup plugin"). Each daemon also gets
  // a mount namespace of its own with a private tmpfs on /tmp, as separate machines have: a design that passes
  // anything through a shared /tmp fails here. Every process a slurmd starts (slurmstepd, the job's tasks)
  // inherits its node's namespaces.
  // A package tree under /tmp (a clone there, as CI may make) would vanish under the node's tmpfs: it is bound to a
  // holding directory first and bound back at the same path on top of the tmpfs, the way a site's software is
  // visible on every node. Nothing else of the host's /tmp is.
  const keep = PACKAGE_IN_TMP;
  const hold = join(dir, 'package-hold');
  if (keep) mkdirSync(hold, { recursive: true });
  const keepBefore = keep ? `mount --bind ${shq(keep)} ${shq(hold)} && ` : '';
  const keepAfter = keep ? ` && mkdir -p ${shq(keep)} && mount --bind ${shq(hold)} ${shq(keep)}` : '';
  const daemonPrefix = (name: string): string[] => [
    'nsenter',
    `--net=${network.nsFile(name)}`,
    'unshare',
    '--uts',
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    `echo "$0" > /proc/sys/kernel/hostname && ${keepBefore}mount -t tmpfs -o mode=1777,size=256m tmpfs /tmp${keepAfter} && ` +
      // rootRexDirs: the node's own /etc/rex, /var/lib/rex and /run/rex, for a root installation of REX on it.
      (opts.rootRexDirs ? 'for d in /etc/rex /var/lib/rex /run/rex; do mount -t tmpfs -o mode=0755,size=64m tmpfs "$d"; done && ' : '') +
      'exec "$@"',
    name,
  ];
  if (opts.rootRexDirs) for (const d of ['/etc/rex', '/var/lib/rex', '/run/rex']) mkdirSync(d, { recursive: true }); // mount points
  const daemonPids = new Map<string, number>();
  // Into a running node's (or ctl's) network, UTS and mount namespaces: its name, its address, its /tmp.
  const enter = (name: string): string[] => {
    const pid = daemonPids.get(name);
    if (pid === undefined) throw new Error(`no daemon runs for ${name} yet`);
    return ['nsenter', '-t', String(pid), '--net', '--uts', '--mount'];
  };

  const stop = async (): Promise<void> => {
    try {
      spawnSync('nsenter', [`--net=${network.nsFile('ctl')}`, 'scancel', '--full', '--quiet', '--partition=debug'], { env, timeout: 5000, stdio: 'ignore' });
    } catch {
      /* best effort */
    }
    const all = (): number[] => [...nodes, ctl].flatMap((x) => pidsIn(x.ns));
    for (const p of all()) kill(p, 'SIGTERM');
    for (let i = 0; i < 30 && all().length; i++) await sleep(100);
    for (const p of all()) kill(p, 'SIGKILL');
    for (let i = 0; i < 30 && all().length; i++) await sleep(100);
    for (const c of children) if (c.exitCode === null && c.signalCode === null && c.pid) kill(c.pid, 'SIGKILL');
    let mp = 0;
    try {
      mp = Number(readFileSync(join(dir, 'munge', 'munged.pid'), 'utf8').trim());
      if (mp > 0) kill(mp, 'SIGTERM');
    } catch {
      /* not started */
    }
    const mungedAlive = (): boolean => {
      try {
        return mp > 0 && !/^State:\s+Z/m.test(readFileSync(`/proc/${mp}/status`, 'utf8'));
      } catch {
        return false; // gone
      }
    };
    for (let i = 0; i < 50 && mungedAlive(); i++) await sleep(20);
    network.destroy();
    if (!process.env.REX_KEEP_SLURM_DIR) rmSync(dir, { recursive: true, force: true });
  };

  const logs = (): string =>
    ['slurmctld.out', 'slurmctld.log', ...names.map((x) => `slurmd-${x}.log`), 'munged.log']
      .map((f) => {
        try {
          return `--- ${f}\n` + readFileSync(join(dir, 'log', f), 'utf8').split('\n').slice(-15).join('\n');
        } catch {
          return `--- ${f}: (none)`;
        }
      })
      .join('\n');

  try {
    // munge: private key, socket and daemon.
    const key = join(dir, 'munge', 'munge.key');
    writeFileSync(key, randomBytes(1024), { mode: 0o400 });
    const mr = spawnSync(
      which('munged')!,
      ['--force', `--socket=${sock}`, `--key-file=${key}`, `--pid-file=${join(dir, 'munge', 'munged.pid')}`, `--log-file=${join(dir, 'log', 'munged.log')}`, `--seed-file=${join(dir, 'munge', 'seed')}`],
      { encoding: 'utf8', timeout: 10000 },
    );
    if (mr.status !== 0) throw new Error(`munged failed (${mr.status}): ${mr.stderr}`);

    const nodeLines = nodes.map((x) => `NodeName=${x.name} NodeHostname=${x.name} NodeAddr=${x.address} CPUs=2 State=UNKNOWN`);
    writeFileSync(
      conf,
      [
        `ClusterName=rextest${network.id}`,
        `SlurmctldHost=ctl(${ctl.address})`,
        `SlurmctldPort=${base + 1}`,
        `SlurmdPort=${base + 2}`,
        `SrunPortRange=${base + 100}-${base + 199}`,
        'AuthType=auth/munge',
        'CredType=cred/munge',
        `AuthInfo=socket=${sock}`,
        'SlurmUser=root',
        'SlurmdUser=root',
        `StateSaveLocation=${dir}/state`,
        `SlurmdSpoolDir=${dir}/spool/%n`,
        `SlurmctldPidFile=${dir}/run/slurmctld.pid`,
        `SlurmdPidFile=${dir}/run/slurmd-%n.pid`,
        `SlurmctldLogFile=${dir}/log/slurmctld.log`,
        `SlurmdLogFile=${dir}/log/slurmd-%n.log`,
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_Core',
        'ReturnToService=2',
        'MpiDefault=none',
        'JobAcctGatherType=jobacct_gather/none',
        'AccountingStorageType=accounting_storage/none',
        'SlurmctldTimeout=30',
        'SlurmdTimeout=30',
        ...nodeLines,
        'PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES',
        '',
      ].join('\n'),
    );

    const spawnLogged = (name: string, argv: string[], logName: string): void => {
      const fd = openSync(join(dir, 'log', logName), 'a');
      // nsenter, unshare (without --fork) and sh -c's exec keep one pid: the daemon's.
      const c = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', fd, fd] });
      closeSync(fd);
      c.on('error', () => {});
      if (c.pid !== undefined) daemonPids.set(name, c.pid);
      children.push(c);
    };
    spawnLogged('ctl', [...daemonPrefix('ctl'), which('slurmctld')!, '-D', '-i', '-f', conf], 'slurmctld.out');
    for (const x of nodes) spawnLogged(x.name, [...daemonPrefix(x.name), which('slurmd')!, '-D', '-f', conf, '-N', x.name], `slurmd-${x.name}.out`);

    const deadline = Date.now() + (opts.timeoutMs ?? 30000);
    let last = '';
    for (;;) {
      const r = spawnSync('nsenter', [`--net=${network.nsFile('ctl')}`, 'sinfo', '-h', '-N', '-o', '%N %t'], { env, encoding: 'utf8', timeout: 5000 });
      last = (r.stdout ?? '') + (r.stderr ?? '');
      const lines = (r.stdout ?? '').trim().split('\n').filter(Boolean);
      if (lines.length === n && lines.every((l) => /\sidle$/.test(l))) break;
      if (Date.now() > deadline) throw new Error(`Slurm nodes not idle after ${opts.timeoutMs ?? 30000} ms; sinfo: ${last}\n${logs()}`);
      await sleep(300); // sleep-ok: the interval of a poll of sinfo, bounded by the deadline above
    }
  } catch (e) {
    await stop();
    throw e;
  }

  const cmd = (...args: string[]): string[] => [...enter('ctl'), ...args];
  const run = (args: string[], timeoutMs = 30000): string => {
    const a = cmd(...args);
    const r = spawnSync(a[0]!, a.slice(1), { env, encoding: 'utf8', timeout: timeoutMs });
    if (r.status !== 0) throw new Error(`${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}\n${r.stdout}`);
    return r.stdout;
  };
  const fsRoot = (name: string): string => `/proc/${enter(name)[2]}/root`;
  return { dir, conf, nodes, ctl, network, enter, fsRoot, cmd, run, env, logs, stop };
}

/**
 * What user `uid` left on node `name`: its processes in the node's namespaces (pid and command line) and the
 * entries of the node's private /tmp (as root sees them). Empty lists when the user left nothing.
 */
export function leftovers(s: SlurmFixture, name: string, uid: number): { procs: string[]; tmp: string[] } {
  const node = [...s.nodes, s.ctl].find((n) => n.name === name)!;
  const procs: string[] = [];
  for (const p of pidsIn(node.ns)) {
    try {
      const st = readFileSync(`/proc/${p}/status`, 'utf8');
      if (new RegExp(`^Uid:\\s+${uid}\\s`, 'm').test(st)) procs.push(`${p} ${readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ')}`);
    } catch {
      /* gone */
    }
  }
  const a = s.enter(name);
  const ls = spawnSync(a[0]!, [...a.slice(1), 'ls', '-A', '/tmp'], { encoding: 'utf8' });
  if (ls.status !== 0) throw new Error(`cannot list /tmp of ${name}: ${ls.stderr}`);
  return { procs, tmp: ls.stdout.split('\n').filter((e) => e && e !== PACKAGE_TMP_ENTRY) };
}

/** Waits (up to 30 s) until user `uid` has left nothing on any of the nodes `names` (leftovers() empty on each). */
export async function untilNothingLeft(s: SlurmFixture, names: readonly string[], uid: number): Promise<void> {
  await vi.waitFor(
    () => {
      for (const n of names) {
        const l = leftovers(s, n, uid);
        if (l.procs.length || l.tmp.length) throw new Error(`${n} still has ${JSON.stringify(l)}`);
      }
    },
    { timeout: 30_000, interval: 200 },
  );
}
