/**
 * An embedded local cluster: N rexd "hosts" on this machine, each with its own
 * name, port, state directory and rex.rc, all including one generated
 * cluster.rc. `npm start`, `rex cluster` and the tests use it. As root it can put
 * each host in a network namespace of its own so that a host can be cut off, and
 * (privateFs) in a mount namespace of its own with an installed tree and private
 * /etc/rex, /var/lib/rex, /run/rex, /home and /tmp, so that hosts share no files
 * (mountns.ts).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lchownSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { addGrant, invite } from '../keys/admin.js';
import { lookupAccount } from '../daemon/accounts.js';
import { localName } from '../keys/identity.js';
import { KeyStore } from '../keys/store.js';
import { RexClient } from '../runtime/client.js';
import type { HostView as HostEntry } from '../runtime/client.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { distBin, shellCommand } from '../util/paths.js';
import { NetnsNetwork, attachNetwork, hostnamePrefix, netnsAvailable, type NetnsHost } from './netns.js';
import { createHostFs, destroyHostFs, enterPrefix, outside, type HostFs, type InstalledTree } from './mountns.js';
import { processAlive } from '../util/proc.js';

/** Host names of generated clusters, in order. */
export const HOST_NAMES = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta', 'iota', 'kappa', 'lambda', 'mu'];

/** How to build a cluster. */
export interface ClusterOptions {
  /** Directory for cluster.rc, cluster.json and each host's state. */
  dir: string;
  hosts?: number;
  /** Put each host in its own network namespace (root only). 'auto' = when possible. */
  netns?: boolean | 'auto';
  logLevel?: string;
  loadInterval?: string;
  peerTimeout?: string;
  /**
   * How much of the trust set-up to do (default 'grant'): 'none' leaves every host
   * without a key (the user runs rex_key), 'keys' creates each host's key only,
   * 'enroll' also enrolls every pair of hosts with each other through invite
   * tokens, 'grant' also lets every host use every other one.
   */
  trust?: 'none' | 'keys' | 'enroll' | 'grant';
  /** More rex.rc lines for cluster.rc, which every host includes (e.g. `programs : demo=...`). */
  rc?: string[];
  /** Start each rexd with --test-mode (REX's own tests: its test switches then act). */
  testMode?: boolean;
  /**
   * Hosts that share no files (root; implies netns): each gets a mount namespace with this
   * installed tree laid out at its prefix and private /etc/rex, /var/lib/rex, /run/rex, /home
   * and /tmp, and runs the tree's rexd (mountns.ts).
   */
  privateFs?: InstalledTree;
  /**
   * 'root' (with privateFs): each host runs the root installation (docs/ROOT.md): a root rexd
   * with a host key HOST, every host's key known to the others (as an administrator places the
   * certificates), no user keys or grants; users are served by their own session controllers.
   */
  installation?: 'user' | 'root';
  /**
   * Root installation: rex.rc host-user, the account of each host's host controller (default: rex.rc's default,
   * `rex`). With trust 'keys' each host has its host key only and the hosts join with `rex_key --join`; with 'enroll'
   * or 'grant' every host's certificate is placed in the others' host controller store, as an administrator would.
   */
  hostUser?: string;
}

/** Where a host of a privateFs cluster keeps its rex.rc, state and socket, as it sees them. */
const INSIDE = { rcFile: '/etc/rex/rex.rc', stateDir: '/var/lib/rex', socket: '/run/rex/rexd.sock' } as const;

/** One host of a local cluster. */
export interface ClusterHost {
  name: string;
  address: string;
  port: number;
  rcFile: string;
  stateDir: string;
  socket: string;
  logFile: string;
  pid?: number;
  netns?: NetnsHost;
  /** HOST.USER identity of this host's rexd, and its key ID once created. */
  identity: string;
  id?: string;
  /** 'root' when the host runs the root installation (docs/ROOT.md). */
  installation?: 'root';
  /** Its private file system (privateFs clusters): rcFile, stateDir and socket are then its paths seen from the machine. */
  fs?: HostFs;
}

interface ClusterState {
  version: 1;
  created: string;
  netnsId?: number;
  testMode?: boolean;
  hosts: ClusterHost[];
}

/** A TCP port free on 127.0.0.1 now (the kernel's pick; the caller binds it next). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolvePort(port));
    });
  });
}

/** A running (or described) local cluster. */
export class LocalCluster {
  private children = new Map<string, ChildProcess>();
  /** Pids of the rexds this cluster itself has signalled (kill, down): their exit is expected. */
  private signalled = new Set<number>();
  /** Each rexd runs with --test-mode (ClusterOptions.testMode). */
  testMode = false;

  private constructor(
    readonly dir: string,
    readonly hosts: ClusterHost[],
    readonly network: NetnsNetwork | undefined,
  ) {}

  /** The file that records a cluster's hosts and pids, for `rex cluster down|status`. */
  static stateFile(dir: string): string {
    return join(dir, 'cluster.json');
  }

  /** Writes the configuration and starts every host; resolves when all answer on their sockets. */
  static async up(opts: ClusterOptions): Promise<LocalCluster> {
    const dir = resolve(opts.dir);
    const n = opts.hosts ?? 3;
    if (!Number.isInteger(n) || n < 1 || n > HOST_NAMES.length) {
      throw new RexError(ErrorCodes.USAGE, `--hosts must be 1..${HOST_NAMES.length}, got ${opts.hosts}`);
    }
    if (existsSync(LocalCluster.stateFile(dir))) {
      const old = LocalCluster.attach(dir);
      if (old.hosts.some((h) => h.pid !== undefined && processAlive(h.pid))) {
        throw new RexError(ErrorCodes.DAEMON_ADDRESS_IN_USE, `a cluster is already running in ${dir}`, { hint: `run \`${shellCommand('rex')} cluster down\` first, or use another --dir` });
      }
      old.cleanup();
    }
    const useNetns = opts.netns === true || opts.privateFs !== undefined || (opts.netns === 'auto' && netnsAvailable());
    if ((opts.netns === true || opts.privateFs) && !netnsAvailable()) {
      throw new RexError(ErrorCodes.USAGE, `${opts.privateFs ? 'hosts with private file systems need' : 'network namespaces need'} root and iproute2`, {
        hint: `run as root, or drop ${opts.privateFs ? '--private-fs' : '--netns'}`,
      });
    }
    const root = opts.installation === 'root';
    if (root && !opts.privateFs) throw new RexError(ErrorCodes.USAGE, 'a root installation cluster needs hosts with private file systems (--private-fs)', { hint: 'add --private-fs' });
    if (root && opts.testMode) throw new RexError(ErrorCodes.USAGE, 'the root installation refuses --test-mode', { hint: 'drop --test-mode' });
    const names = HOST_NAMES.slice(0, n);
    let network: NetnsNetwork | undefined;
    if (useNetns) {
      network = new NetnsNetwork(freeNetnsId());
      network.create(names);
    }
    const made: HostFs[] = [];
    let cluster: LocalCluster | undefined;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const hosts: ClusterHost[] = [];
      for (const [k, name] of names.entries()) {
        const hostDir = join(dir, 'hosts', name);
        const nsHost = network?.hosts[k];
        let fs: HostFs | undefined;
        if (opts.privateFs && nsHost) {
          fs = createHostFs(nsHost.ns, join(hostDir, 'fs'), opts.privateFs);
          made.push(fs);
        }
        hosts.push({
          name,
          address: nsHost ? nsHost.address : '127.0.0.1',
          port: nsHost ? 7800 : await freePort(),
          rcFile: fs ? outside(fs, INSIDE.rcFile) : join(hostDir, 'rex.rc'),
          stateDir: fs ? outside(fs, INSIDE.stateDir) : hostDir,
          socket: fs ? outside(fs, INSIDE.socket) : join(hostDir, 'run', 'rexd.sock'),
          logFile: join(hostDir, 'log', 'rexd.log'),
          ...(nsHost ? { netns: nsHost } : {}),
          // The root installation's rexd presents the host key HOST (docs/ROOT.md).
          identity: root ? name : localName(name),
          ...(fs ? { fs } : {}),
          ...(root ? { installation: 'root' as const } : {}),
        });
      }
      cluster = new LocalCluster(dir, hosts, network);
      cluster.testMode = opts.testMode ?? false;
      cluster.writeConfig(opts);
      const trust = opts.trust ?? 'grant';
      if (trust !== 'none') {
        for (const h of hosts) {
          // A cluster directory used before keeps its keys (npm start runs in the same .rex-cluster each time).
          const store = new KeyStore(h.stateDir);
          h.id = store.has(h.identity) ? store.load(h.identity).id : (await store.create(h.identity)).id;
        }
      }
      if (root && (trust === 'enroll' || trust === 'grant')) {
        // Each host's certificate in every other's host controller store, as an administrator places them (with
        // trust 'keys' the hosts join instead: rex_key --join, docs/ROOT.md section 7).
        const certs = hosts.map((h) => new KeyStore(h.stateDir).load(h.identity).certPem);
        const owner = lookupAccount(opts.hostUser ?? 'rex'); // rex.rc host-user's default
        for (const [i, h] of hosts.entries()) {
          const trustDir = join(h.stateDir, 'host');
          for (const [j, cert] of certs.entries()) if (i !== j) new KeyStore(trustDir).addKnown(cert, 'rex cluster up');
          if (owner) chownTree(trustDir, owner.uid, owner.gid);
        }
      } else if (trust === 'grant') {
        // Granted by name before the keys are known: a grant names who may come, enrollment says which key that is.
        for (const h of hosts) for (const o of hosts) if (o !== h) addGrant(new KeyStore(h.stateDir), o.identity);
      }
      // Without keys rexd cannot start: the user creates them (rex_key --create) and then runs `rex cluster start`.
      const c = cluster;
      if (trust !== 'none') await Promise.all(hosts.map((h) => c.startHost(h)));
      if (!root && (trust === 'enroll' || trust === 'grant')) await cluster.enrollAll();
      cluster.save();
      return cluster;
    } catch (e) {
      // A host that did start would keep its namespaces alive (and its port taken): it goes too.
      for (const h of cluster?.hosts ?? []) cluster!.kill(h.name, 'SIGKILL');
      for (const fs of made) destroyHostFs(fs);
      network?.destroy();
      throw e;
    }
  }

  /** The cluster recorded in `dir` by an earlier `up` (possibly by another process). */
  static attach(dir: string): LocalCluster {
    const file = LocalCluster.stateFile(resolve(dir));
    let state: ClusterState;
    try {
      state = JSON.parse(readFileSync(file, 'utf8')) as ClusterState;
    } catch (e) {
      throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `no local cluster in ${resolve(dir)} (${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no cluster.json' : (e as Error).message})`, {
        hint: `start one with \`${shellCommand('rex')} cluster up\``,
      });
    }
    const net = state.netnsId !== undefined ? attachNetwork(state.netnsId, state.hosts.flatMap((h) => (h.netns ? [h.netns] : []))) : undefined;
    const cluster = new LocalCluster(resolve(dir), state.hosts, net);
    cluster.testMode = state.testMode ?? false;
    return cluster;
  }

  /**
   * Enrolls every pair of hosts with each other the way users do: the first
   * issues an invite token (rex_key --invite), the second presents it
   * (rex_key --distribute --token), which also teaches the second the first's key.
   */
  async enrollAll(): Promise<void> {
    for (const [i, server] of this.hosts.entries()) {
      for (const client of this.hosts.slice(i + 1)) {
        const serverStore = new KeyStore(server.stateDir);
        const { token } = invite(serverStore, serverStore.load(server.identity), 60_000, { subject: client.identity });
        // The real command, run on the client host (inside its namespace when there is one).
        await this.rexKey(client.name, ['--distribute', '--token', token]);
      }
    }
  }

  /** Runs `rex_key ARGS` as host `name` (with its rex.rc, in its namespace); rejects with its output on failure. */
  rexKey(name: string, args: string[]): Promise<string> {
    const h = this.host(name);
    const cmd = this.command(name, [...this.program(h, 'rex_key'), '--config', this.rcInside(h), ...args]);
    return new Promise((resolveRun, reject) => {
      execFile(cmd[0]!, cmd.slice(1), { env: this.hostEnv(h), timeout: 30_000 }, (err, stdout, stderr) => {
        if (err) reject(new RexError(ErrorCodes.ENROLL_FAILED, `host ${name}: rex_key ${args.join(' ')} failed:\n${stdout}${stderr || err.message}`));
        else resolveRun(stdout);
      });
    });
  }

  /**
   * The argv that runs `argv` on host `name`: in its network namespace (and mount namespace,
   * privateFs) when it has them, with its own host name; as is on a loopback cluster.
   */
  command(name: string, argv: string[]): string[] {
    const h = this.host(name);
    if (!this.network) return argv;
    if (h.fs) return [...enterPrefix(h.fs, this.network.nsFile(name)), ...hostnamePrefix(name), ...argv];
    return [...this.network.execPrefix(name), ...argv];
  }

  /** The environment of what the cluster runs on a host: a privateFs host gets nothing that names the machine's REX. */
  hostEnv(h: ClusterHost): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, REX_CONFIG: this.rcInside(h) };
    if (h.fs) for (const k of ['REX_LIBEXEC', 'REX_ADDON', 'REX_SOCKET', 'REX_ROOT']) delete env[k];
    return env;
  }

  /**
   * A REX program as a host runs it: the installed tree's launcher on a privateFs host, else this package's.
   * REX_CLUSTER_NODE_ARGS (space-separated) goes to node before the program's rexd, for profiling
   * (`--cpu-prof --cpu-prof-dir=DIR`, which NODE_OPTIONS does not accept).
   */
  private program(h: ClusterHost, name: string): string[] {
    const nodeArgs = name === 'rexd' ? (process.env.REX_CLUSTER_NODE_ARGS ?? '').split(' ').filter(Boolean) : [];
    return h.fs ? [join(h.fs.installation.bindir, name)] : [process.execPath, ...nodeArgs, distBin(name)];
  }

  private rcInside(h: ClusterHost): string {
    return h.fs ? INSIDE.rcFile : h.rcFile;
  }

  private writeConfig(opts: ClusterOptions): void {
    const servers = this.hosts.map((h) => `${h.name}@${h.address}:${h.port}`).join(', ');
    const clusterRc = [
        `# REX local cluster: ${this.hosts.length} hosts on this machine${this.hosts[0]?.fs ? ', each in network and mount namespaces (no shared files)' : this.network ? ', each in a network namespace' : ' on loopback'}.`,
        `# Generated by \`rex cluster up\`; every host's rex.rc includes this file.`,
        `servers : ${servers}`,
        `load-interval : ${opts.loadInterval ?? '500ms'}`,
        `peer-timeout : ${opts.peerTimeout ?? '2s'}`,
        ...(opts.rc ?? []),
        '',
      ].join('\n');
    writeFileSync(join(this.dir, 'cluster.rc'), clusterRc);
    for (const h of this.hosts) {
      mkdirSync(h.stateDir, { recursive: true, mode: 0o700 });
      // A host sharing no files has its own copy of cluster.rc beside its rex.rc in /etc/rex.
      if (h.fs) writeFileSync(outside(h.fs, '/etc/rex/cluster.rc'), clusterRc);
      writeFileSync(
        h.rcFile,
        [
          `# Host ${h.name} of the local cluster in ${this.dir}.`,
          h.fs ? '#include "cluster.rc"' : `#include "../../cluster.rc"`,
          `host-name : ${h.name}`,
          `state-directory : ${h.fs ? INSIDE.stateDir : h.stateDir}`,
          ...(h.fs ? [`socket : ${INSIDE.socket}`] : []),
          ...(h.installation === 'root' ? ['installation : root', ...(opts.hostUser ? [`host-user : ${opts.hostUser}`] : [])] : []),
          `log-level : ${opts.logLevel ?? 'info'}`,
          '',
        ].join('\n'),
      );
    }
  }

  private save(): void {
    const state: ClusterState = { version: 1, created: new Date().toISOString(), hosts: this.hosts, ...(this.network ? { netnsId: this.network.id } : {}), ...(this.testMode ? { testMode: true } : {}) };
    writeFileSync(LocalCluster.stateFile(this.dir), JSON.stringify(state, null, 2) + '\n');
  }

  /** Starts (or restarts) one host's rexd and waits until it answers. */
  async startHost(h: ClusterHost): Promise<void> {
    mkdirSync(dirname(h.logFile), { recursive: true, mode: 0o700 });
    const logFd = openSync(h.logFile, 'a', 0o600);
    const cmd = this.command(h.name, [...this.program(h, 'rexd'), '--foreground', '--config', this.rcInside(h), ...(this.testMode ? ['--test-mode'] : [])]);
    const child = spawn(cmd[0]!, cmd.slice(1), { detached: true, stdio: ['ignore', logFd, logFd], env: this.hostEnv(h) });
    closeSync(logFd);
    this.children.set(h.name, child);
    if (child.pid !== undefined) h.pid = child.pid;
    const exited = new Promise<string>((r) => child.once('exit', (code, sig) => r(`exited with ${sig ?? `status ${code}`}`)));
    const deadline = Date.now() + 15_000;
    for (;;) {
      const why = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))]);
      if (why) {
        throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `host ${h.name}: rexd ${why} during start-up; last log lines:\n${tail(h.logFile)}`, { where: h.logFile });
      }
      try {
        (await RexClient.connect({ socket: h.socket, timeoutMs: 1000 })).close();
        break;
      } catch (e) {
        // A root installation answers root (this process) with DENIED unless permit-root: it is serving.
        if (h.installation === 'root' && /DENIED/.test((e as Error).message)) break;
        if (Date.now() > deadline) throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `host ${h.name}: rexd did not answer on ${h.socket} within 15 s`, { where: h.logFile });
      }
    }
    child.unref();
    // A rexd that ends without being asked to is news (a crash): say so at once, with its last log lines.
    child.once('exit', (code, sig) => {
      if (this.signalled.has(child.pid ?? -1)) return;
      process.stderr.write(`rex cluster: host ${h.name}: rexd (pid ${child.pid}) exited with ${sig ?? `status ${code}`} unasked; last log lines of ${h.logFile}:\n${tail(h.logFile)}\n`);
    });
    this.save();
  }

  /** Starts every host that is not running (after `up` with trust 'none' and rex_key --create on each). */
  async startAll(): Promise<void> {
    const stopped = this.hosts.filter((h) => h.pid === undefined || !processAlive(h.pid));
    await Promise.all(stopped.map((h) => this.startHost(h)));
    for (const h of this.hosts) {
      try {
        h.id = new KeyStore(h.stateDir).load(h.identity).id;
      } catch {
        /* startHost has already reported a missing key */
      }
    }
    this.save();
  }

  /** The host called `name`. */
  host(name: string): ClusterHost {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new RexError(ErrorCodes.HOST_UNKNOWN, `no host ${name} in the cluster in ${this.dir} (hosts: ${this.hosts.map((x) => x.name).join(', ')})`);
    return h;
  }

  /** A client connected to one host's rexd. */
  client(name: string): Promise<RexClient> {
    return RexClient.connect({ socket: this.host(name).socket });
  }

  /** Sends `signal` to one host's rexd (SIGKILL to simulate a crash). */
  kill(name: string, signal: NodeJS.Signals = 'SIGTERM'): void {
    const h = this.host(name);
    if (h.pid !== undefined && processAlive(h.pid)) {
      this.signalled.add(h.pid);
      process.kill(h.pid, signal);
    }
  }

  /** Resolves when `name`'s rexd has exited. */
  async waitExit(name: string, timeoutMs = 10_000): Promise<void> {
    const h = this.host(name);
    const deadline = Date.now() + timeoutMs;
    while (h.pid !== undefined && processAlive(h.pid)) {
      if (Date.now() > deadline) throw new RexError(ErrorCodes.CONN_TIMEOUT, `host ${name} (pid ${h.pid}) still running after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Cuts a host off the network (netns clusters only). */
  cut(name: string): void {
    this.requireNetns('cut').cut(name);
  }

  /** Reconnects a cut host. */
  restore(name: string): void {
    this.requireNetns('restore').restore(name);
  }

  private requireNetns(what: string): NetnsNetwork {
    if (!this.network) throw new RexError(ErrorCodes.USAGE, `${what} needs a cluster in network namespaces (root, --netns)`);
    return this.network;
  }

  /**
   * Waits until `cond` holds for the host view of `from` (default: every host
   * sees every other one reachable with a load figure).
   */
  async waitFor(cond: (hosts: HostEntry[], from: string) => boolean, opts: { from?: string[]; timeoutMs?: number } = {}): Promise<Map<string, HostEntry[]>> {
    const from = opts.from ?? this.hosts.map((h) => h.name);
    const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
    let last = new Map<string, HostEntry[]>();
    for (;;) {
      last = new Map();
      let ok = true;
      for (const name of from) {
        try {
          const c = await this.client(name);
          try {
            const hs = await c.hosts();
            last.set(name, hs);
            if (!cond(hs, name)) ok = false;
          } finally {
            c.close();
          }
        } catch {
          ok = false;
        }
      }
      if (ok) return last;
      if (Date.now() > deadline) {
        const view = [...last].map(([n, hs]) => `${n} sees ${hs.map((h) => `${h.name}:${h.reachable ? 'up' : 'down'}`).join(' ')}`).join('; ');
        throw new RexError(ErrorCodes.CONN_TIMEOUT, `cluster did not settle within ${opts.timeoutMs ?? 15_000} ms (${view || 'no host answered'})`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Waits until every host sees every other host reachable with a load figure. */
  waitAllReachable(timeoutMs = 15_000): Promise<Map<string, HostEntry[]>> {
    return this.waitFor((hs) => hs.length === this.hosts.length && hs.every((h) => h.reachable && h.load !== undefined), { timeoutMs });
  }

  /** Stops every host (SIGTERM, then SIGKILL after 5 s), removes namespaces and cluster.json. */
  async down(): Promise<void> {
    for (const h of this.hosts) {
      if (h.pid === undefined || !processAlive(h.pid)) continue;
      this.signalled.add(h.pid);
      process.kill(h.pid, 'SIGTERM');
    }
    const deadline = Date.now() + 5000;
    for (const h of this.hosts) {
      while (h.pid !== undefined && processAlive(h.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (h.pid !== undefined && processAlive(h.pid)) process.kill(h.pid, 'SIGKILL');
    }
    this.cleanup();
  }

  private cleanup(): void {
    for (const h of this.hosts) if (h.fs) destroyHostFs(h.fs);
    this.network?.destroy();
    rmSync(LocalCluster.stateFile(this.dir), { force: true });
  }
}

function tail(file: string, n = 5): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

/** A namespace-set id no cluster on this machine uses yet (one process may run several clusters). */
export function freeNetnsId(): number {
  const taken = new Set<number>();
  try {
    for (const f of readdirSync('/run/netns')) {
      const m = /^rex(\d+)-/.exec(f);
      if (m) taken.add(Number(m[1]));
    }
  } catch {
    /* no namespaces yet */
  }
  for (let k = 0; k < 250; k++) {
    const id = 1 + ((process.pid + k) % 250);
    if (!taken.has(id)) return id;
  }
  throw new RexError(ErrorCodes.USAGE, `all 250 network-namespace sets of local clusters are in use`, { hint: 'stop clusters with `rex cluster down`, or remove stale /run/netns/rex* entries with `ip netns del`' });
}

/** Gives a directory tree this harness just made to `uid` (no symbolic links are followed: lchown). */
function chownTree(dir: string, uid: number, gid: number): void {
  lchownSync(dir, uid, gid);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) chownTree(p, uid, gid);
    else lchownSync(p, uid, gid);
  }
}
