/**
 * `rex cluster up --slurm`: a Slurm allocation becomes a REX cluster (docs/SLURM.md).
 *
 * Two sides, talking over one srun step's standard streams (Slurm's own I/O forwarding, authenticated
 * with the job's munge-signed credential):
 *
 * - the launcher (`slurmUp`, where the user types the command: the batch script's node or the salloc
 *   shell) starts ONE step, one task per allocated node, `--overlap` so the job's own steps still run;
 * - each task (`slurmNode`, the hidden `rex cluster slurm-node`) makes a node-local private state
 *   directory, creates this node's key there, and says HELLO (its node name, a free port, its
 *   certificate) on stdout; the launcher collects every node's HELLO and sends one CLUSTER line (every
 *   node's name, Slurm address, port and certificate) to all tasks on stdin; each task pins the other
 *   nodes' certificates, grants them, writes its rex.rc, starts rexd and says READY.
 *
 * No secret crosses the network: private keys never leave the node that made them, only certificates
 * (public) travel, and they travel inside the job's own step I/O. What a node trusts is exactly the
 * certificates the launcher sent it. The rexds are the step's tasks: the allocation's end (or
 * `rex cluster down --slurm`, which cancels the step) ends them, and each task removes its state
 * directory on SIGTERM.
 */
import { execFile, spawn } from 'node:child_process';
import { chmodSync, closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { isIP } from 'node:net';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { currentUser } from '../keys/identity.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { distBin, shellCommand } from '../util/paths.js';
import { processAlive } from '../util/proc.js';

/** The first word of every line of the launcher/task exchange; a new incompatible exchange gets a new word. */
export const SLURM_WIRE = 'REX-SLURM1';

/** Longest line of the exchange we read (a certificate is about 600 bytes; 64 nodes fit easily). */
export const MAX_LINE = 1 << 20;

/** What a task tells the launcher once its key exists and it has a port. */
export interface SlurmHello {
  node: string;
  port: number;
  cert: string;
  step: string;
  pid: number;
}

/** One node of the cluster, as the launcher sends it to every task. */
export interface SlurmMember {
  name: string;
  address: string;
  port: number;
  cert: string;
}

/** The CLUSTER line: everything a task needs to configure its rexd. */
export interface SlurmClusterMsg {
  job: string;
  user: string;
  members: SlurmMember[];
  /** Extra rex.rc lines (the launcher's --rc). */
  rc: string[];
}

/** A task's last word: its rexd answers (ready) or it could not start (error). */
export interface SlurmReady {
  node: string;
  socket: string;
  pid: number;
}

const NODE_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
const JOB_RE = /^[0-9]{1,12}$/;
const STEP_RE = /^[0-9]{1,12}$|^$/;
const ADDR_RE = /^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$/;
const PEM_RE = /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]{1,8000}-----END CERTIFICATE-----\n?$/;

function bad(what: string, msg: string): RexError {
  return new RexError(ErrorCodes.PROTO_MALFORMED, `${what}: ${msg}`, { hint: 'the Slurm step of `rex cluster up --slurm` sends these lines; a different REX version on the nodes, or output of something else in the step, makes them unreadable' });
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(what, 'expected a JSON object');
  return v as Record<string, unknown>;
}

function str(o: Record<string, unknown>, k: string, re: RegExp, what: string): string {
  const v = o[k];
  if (typeof v !== 'string' || !re.test(v)) throw bad(what, `field ${k}: ${typeof v === 'string' ? `${JSON.stringify(v.slice(0, 80))} is not valid` : 'missing or not a string'}`);
  return v;
}

function int(o: Record<string, unknown>, k: string, lo: number, hi: number, what: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw bad(what, `field ${k}: expected a whole number from ${lo} to ${hi}`);
  return v;
}

/** Splits `REX-SLURM1 KIND JSON`; undefined for a line that is not part of the exchange (other output of the step). */
export function splitLine(line: string): { kind: string; body: unknown; text: string } | undefined {
  if (!line.startsWith(`${SLURM_WIRE} `)) return undefined;
  if (line.length > MAX_LINE) throw bad('exchange line', `longer than ${MAX_LINE} bytes`);
  const rest = line.slice(SLURM_WIRE.length + 1);
  const sp = rest.indexOf(' ');
  const kind = sp < 0 ? rest : rest.slice(0, sp);
  const text = sp < 0 ? '' : rest.slice(sp + 1);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw bad(`${SLURM_WIRE} ${kind}`, `not JSON (${(e as Error).message})`);
  }
  return { kind, body, text };
}

/** Parses and checks a HELLO body. */
export function parseHello(body: unknown): SlurmHello {
  const w = `${SLURM_WIRE} hello`;
  const o = obj(body, w);
  return { node: str(o, 'node', NODE_RE, w), port: int(o, 'port', 1, 65535, w), cert: str(o, 'cert', PEM_RE, w), step: str(o, 'step', STEP_RE, w), pid: int(o, 'pid', 1, 2 ** 31, w) };
}

/** Parses and checks a READY body. */
export function parseReady(body: unknown): SlurmReady {
  const w = `${SLURM_WIRE} ready`;
  const o = obj(body, w);
  return { node: str(o, 'node', NODE_RE, w), socket: str(o, 'socket', /^\/[^\n\0]{1,200}$/, w), pid: int(o, 'pid', 1, 2 ** 31, w) };
}

/** Parses and checks a CLUSTER body: names unique, every field safe to write into rex.rc. */
export function parseClusterMsg(body: unknown): SlurmClusterMsg {
  const w = `${SLURM_WIRE} cluster`;
  const o = obj(body, w);
  const job = str(o, 'job', JOB_RE, w);
  const user = str(o, 'user', /^[A-Za-z0-9_-]{1,63}$/, w);
  if (!Array.isArray(o.members) || o.members.length < 1 || o.members.length > 4096) throw bad(w, 'field members: expected 1 to 4096 nodes');
  const members = o.members.map((m, i) => {
    const mo = obj(m, `${w} members[${i}]`);
    const address = str(mo, 'address', ADDR_RE, `${w} members[${i}]`);
    if (address.includes(':') && isIP(address) !== 6) throw bad(`${w} members[${i}]`, `field address: ${JSON.stringify(address)} is not valid`);
    return { name: str(mo, 'name', NODE_RE, `${w} members[${i}]`), address, port: int(mo, 'port', 1, 65535, `${w} members[${i}]`), cert: str(mo, 'cert', PEM_RE, `${w} members[${i}]`) };
  });
  const seen = new Set<string>();
  for (const m of members) {
    if (seen.has(m.name)) throw bad(w, `node ${m.name} is listed twice`);
    seen.add(m.name);
  }
  const rc = o.rc === undefined ? [] : o.rc;
  if (!Array.isArray(rc) || rc.some((l) => typeof l !== 'string' || /[\n\r\0]/.test(l) || l.length > 4096)) throw bad(w, 'field rc: expected rex.rc lines (strings without line breaks)');
  return { job, user, members, rc: rc as string[] };
}

/**
 * The per-user private directory under the node-local temporary directory ($TMPDIR, else /tmp) that holds
 * every REX-in-Slurm directory of this user on this node: `rex-slurm-UID`, 0700, owned by us. Its name is
 * predictable (so that every step of the job finds the socket), which is why it is checked, not trusted:
 * another local user who made it first, or a symbolic link, is refused with what to do.
 */
export function slurmBaseDir(env: NodeJS.ProcessEnv = process.env): string {
  const tmp = env.SLURM_JOB_TMPFS || env.TMPDIR || '/tmp';
  return join(tmp, `rex-slurm-${process.getuid?.() ?? 0}`);
}

/** Creates `dir` 0700 if missing, then checks it is a real directory of ours that nobody else can enter. */
export function ensurePrivateDir(dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `cannot create ${dir}: ${(e as Error).message}`, { where: dir, hint: 'set TMPDIR to a node-local directory you can write' });
  }
  const st = lstatSync(dir);
  const uid = process.getuid?.();
  const fix = `remove it (it is not REX's), or set TMPDIR to another node-local directory`;
  if (st.isSymbolicLink() || !st.isDirectory()) throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${dir} is not a directory (a symbolic link or a file): refusing to keep REX state there`, { where: dir, hint: fix });
  if (uid !== undefined && st.uid !== uid) throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${dir} belongs to uid ${st.uid}, not to you (uid ${uid}): another user made it first; refusing to keep REX state there`, { where: dir, hint: fix });
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** The node-local state directory of job `job`'s rexd (the same path on every node with the same TMPDIR). */
export function jobDir(job: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(slurmBaseDir(env), `job-${job}`);
}

/** The socket of job `job`'s rexd on this node: what REX_SOCKET should be inside the job. */
export function jobSocket(job: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(jobDir(job, env), 'run', 'rexd.sock');
}

function freePortAny(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '0.0.0.0', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => ok(port));
    });
  });
}

function say(kind: string, body: unknown): void {
  process.stdout.write(`${SLURM_WIRE} ${kind} ${JSON.stringify(body)}\n`);
}

/**
 * One node's task of the step (`rex cluster slurm-node`): key, HELLO, CLUSTER, rex.rc, rexd, READY; then it
 * waits, and on SIGTERM/SIGINT/SIGHUP (the step cancelled, the allocation ended) stops rexd and removes the
 * state directory. Resolves with the exit status.
 */
export async function slurmNode(): Promise<number> {
  const env = process.env;
  const job = env.SLURM_JOB_ID ?? '';
  const node = env.SLURMD_NODENAME ?? '';
  const step = env.SLURM_STEP_ID ?? '';
  const fail = (msg: string): number => {
    say('error', { node: node || '?', message: msg });
    process.stderr.write(`rex cluster slurm-node: ${node || '?'}: ${msg}\n`);
    return 1;
  };
  if (!JOB_RE.test(job) || !NODE_RE.test(node)) return fail('not a task of a Slurm step (SLURM_JOB_ID and SLURMD_NODENAME are not set): this command is run by `rex cluster up --slurm`');
  const user = currentUser(); // the USER part of the identity rexd will present
  const dir = jobDir(job);
  let rexd: ReturnType<typeof spawn> | undefined;
  let stopping = false;
  const cleanup = (): void => {
    rmSync(dir, { recursive: true, force: true });
    try {
      rmdirSync(slurmBaseDir()); // only when empty: other jobs of this user on this node keep theirs
    } catch {
      /* not empty, or gone */
    }
  };
  try {
    ensurePrivateDir(slurmBaseDir());
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return fail(`${dir} exists: a REX cluster of job ${job} already runs on ${node}, or one was killed before it could clean up; run \`rex cluster down --slurm\` (or remove ${dir})`);
      throw e;
    }
  } catch (e) {
    return fail((e as Error).message);
  }
  const onSignal = (sig: NodeJS.Signals): void => {
    stopping = true;
    if (rexd?.pid && rexd.exitCode === null && rexd.signalCode === null) rexd.kill('SIGTERM');
    else {
      cleanup();
      process.exit(sig === 'SIGTERM' ? 0 : 1);
    }
  };
  for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(s, onSignal);
  try {
    const { KeyStore } = await import('../keys/store.js');
    const { addGrant } = await import('../keys/admin.js');
    const store = new KeyStore(dir);
    const self = `${node}.${user}`;
    const own = await store.create(self);
    const port = await freePortAny();
    say('hello', { node, port, cert: own.certPem, step, pid: process.pid } satisfies SlurmHello);

    // The CLUSTER line, on stdin from the launcher's srun. Anything else on stdin is ignored.
    const msg = await new Promise<SlurmClusterMsg>((ok, no) => {
      const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
      let got = false;
      rl.on('line', (line) => {
        if (got) return;
        try {
          const p = splitLine(line);
          if (!p || p.kind !== 'cluster') return;
          got = true;
          ok(parseClusterMsg(p.body));
        } catch (e) {
          got = true;
          no(e);
        }
      });
      rl.on('close', () => {
        if (!got) no(new RexError(ErrorCodes.CONN_CLOSED, 'the launcher closed the step\'s input before sending the cluster (rex cluster up --slurm ended early)'));
      });
    });
    if (msg.job !== job) throw bad(`${SLURM_WIRE} cluster`, `for job ${msg.job}, but this task belongs to job ${job}`);
    if (msg.user !== user) throw bad(`${SLURM_WIRE} cluster`, `for user ${msg.user}, but this task runs as ${user}`);
    const me = msg.members.find((m) => m.name === node);
    if (!me) throw bad(`${SLURM_WIRE} cluster`, `node ${node} is not among the members (${msg.members.map((m) => m.name).join(', ')})`);
    if (me.cert.trim() !== own.certPem.trim() || me.port !== port) throw bad(`${SLURM_WIRE} cluster`, `the entry for ${node} does not carry this node's certificate and port`);
    for (const m of msg.members) {
      if (m === me) continue;
      const k = store.addKnown(m.cert, `rex cluster up --slurm (job ${job})`, `${SLURM_WIRE} cluster: ${m.name}`);
      if (k.name !== `${m.name}.${user}`) throw bad(`${SLURM_WIRE} cluster`, `the certificate for ${m.name} names ${k.name}, expected ${m.name}.${user}`);
      addGrant(store, k.name); // the name now has exactly this one known key
    }
    const rcFile = join(dir, 'rex.rc');
    const socket = join(dir, 'run', 'rexd.sock');
    writeFileSync(
      rcFile,
      [
        `# REX on Slurm job ${job}, node ${node}: written by \`rex cluster up --slurm\`; removed when the step ends.`,
        `host-name : ${node}`,
        `state-directory : ${dir}`,
        `socket : ${socket}`,
        `servers : ${msg.members.map((m) => `${m.name}@${m.address.includes(':') ? `[${m.address}]` : m.address}:${m.port}`).join(', ')}`,
        'load-interval : 500ms',
        'peer-timeout : 3s',
        ...msg.rc,
        '',
      ].join('\n'),
      { mode: 0o600 },
    );
    mkdirSync(join(dir, 'log'), { mode: 0o700 });
    const logFd = openSync(join(dir, 'log', 'rexd.log'), 'a', 0o600);
    rexd = spawn(process.execPath, [distBin('rexd'), '--foreground', '--config', rcFile], { stdio: ['ignore', logFd, logFd], env: { ...env, REX_CONFIG: rcFile, REX_SOCKET: socket } });
    closeSync(logFd);
    const exited = new Promise<string>((r) => rexd!.once('exit', (code, sig) => r(sig ?? `status ${code}`)));
    const { RexClient } = await import('../runtime/client.js');
    const deadline = Date.now() + 30_000;
    for (;;) {
      const why = await Promise.race([exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 50))]);
      if (why) throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `rexd exited with ${why} during start-up; its log: ${tailFile(join(dir, 'log', 'rexd.log'))}`);
      try {
        (await RexClient.connect({ socket, timeoutMs: 1000 })).close();
        break;
      } catch (e) {
        if (Date.now() > deadline) throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `rexd did not answer on ${socket} within 30 s (${(e as Error).message})`);
      }
    }
    say('ready', { node, socket, pid: rexd.pid! } satisfies SlurmReady);
    const why = await exited;
    cleanup();
    if (stopping) return 0;
    process.stderr.write(`rex cluster slurm-node: ${node}: rexd exited unasked (${why})\n`);
    return 1;
  } catch (e) {
    if (rexd?.pid && rexd.exitCode === null) rexd.kill('SIGKILL');
    cleanup();
    return fail((e as Error).message);
  }
}

function tailFile(file: string, n = 5): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join(' | ');
  } catch {
    return '(no log)';
  }
}

/** How `rex cluster up --slurm` is asked to run. */
export interface SlurmUpOptions {
  /** No allocation in the environment: request one of this many nodes (salloc --no-shell). */
  nodes?: number;
  /** The job to use (default $SLURM_JOB_ID). */
  job?: string;
  /** Extra rex.rc lines for every node. */
  rc?: string[];
  /** How long to wait for every node (default 60 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** A REX cluster on a Slurm job, as the launcher recorded it (`launch-JOB/state.json`). */
export interface SlurmCluster {
  version: 1;
  job: string;
  step: string;
  /** True when `up --nodes` requested the allocation itself (then `down` ends it). */
  allocated: boolean;
  /** The process that holds the step on the launcher's machine: the sh around srun (it ends when srun does). */
  srunPid: number;
  socket: string;
  nodes: { name: string; address: string; port: number; id: string; rexdPid: number }[];
  dir: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<{ stdout: string; stderr: string }> {
  return new Promise((ok, no) => {
    execFile(cmd, args, { env, timeout: timeoutMs, encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
        no(new RexError(ErrorCodes.USAGE, missing ? `${cmd} is not installed here (the Slurm client commands are needed)` : `${cmd} ${args.join(' ')} failed: ${(stderr || err.message).trim()}`, { hint: missing ? 'run on a node of the Slurm cluster, where salloc, srun and scontrol are on PATH' : 'check the Slurm job' }));
      } else ok({ stdout, stderr });
    });
  });
}

/** Expands a Slurm node list (`n[1-3],gpu7`) with `scontrol show hostnames`, as Slurm itself does. */
export async function expandNodeList(list: string, env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const { stdout } = await run('scontrol', ['show', 'hostnames', list], env);
  const names = stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (!NODE_RE.test(n)) throw new RexError(ErrorCodes.USAGE, `Slurm node name ${JSON.stringify(n)} (from ${list}) cannot be a REX host name (letters, digits, _ and -, at most 63)`);
  return names;
}

/** Each node's address as Slurm has it (NodeAddr), else its name. */
async function nodeAddresses(names: string[], env: NodeJS.ProcessEnv): Promise<Map<string, string>> {
  const { stdout } = await run('scontrol', ['show', 'node', '-o', names.join(',')], env);
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const name = /(?:^|\s)NodeName=(\S+)/.exec(line)?.[1];
    const addr = /(?:^|\s)NodeAddr=(\S+)/.exec(line)?.[1];
    if (name && addr && ADDR_RE.test(addr)) out.set(name, addr);
  }
  return out;
}

/** The launcher's own private directory for job `job` (srun's output, state.json). */
export function launchDir(job: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(slurmBaseDir(env), `launch-${job}`);
}

/**
 * `rex cluster up --slurm`: starts one rexd per node of the allocation in one srun step and waits until every
 * one answers. The srun is left running (detached) when this returns: it is the cluster.
 */
export async function slurmUp(opts: SlurmUpOptions = {}): Promise<SlurmCluster> {
  const env = { ...(opts.env ?? process.env) };
  let job = opts.job ?? env.SLURM_JOB_ID;
  let allocated = false;
  if (job && opts.nodes !== undefined && !opts.job) throw new RexError(ErrorCodes.USAGE, `--nodes ${opts.nodes} requests an allocation, but this shell is already in job ${job} (SLURM_JOB_ID)`, { hint: 'drop --nodes to use this allocation' });
  if (!job) {
    if (opts.nodes === undefined) throw new RexError(ErrorCodes.USAGE, 'not inside a Slurm allocation (SLURM_JOB_ID is not set)', { hint: 'run it inside salloc or an sbatch script, or add --nodes N to request an allocation' });
    const r = await run('salloc', [`--nodes=${opts.nodes}`, '--no-shell', '--job-name=rex'], env, opts.timeoutMs ?? 120_000);
    job = /Granted job allocation (\d+)/.exec(r.stderr + r.stdout)?.[1];
    if (!job) throw new RexError(ErrorCodes.USAGE, `salloc granted no allocation: ${(r.stderr + r.stdout).trim()}`);
    allocated = true;
  }
  if (!JOB_RE.test(job)) throw new RexError(ErrorCodes.USAGE, `job id ${JSON.stringify(job)} is not a Slurm job id`);
  // The allocation's nodes: SLURM_JOB_NODELIST in its own shell, else Slurm's record of the job.
  const list = job === env.SLURM_JOB_ID && env.SLURM_JOB_NODELIST ? env.SLURM_JOB_NODELIST : (await run('squeue', ['-h', '-j', job, '-o', '%N'], env)).stdout.trim();
  if (!list) throw new RexError(ErrorCodes.USAGE, `Slurm job ${job} has no nodes (is it still running? squeue -j ${job})`);
  const names = await expandNodeList(list, env);
  const addrs = await nodeAddresses(names, env);
  const base = slurmBaseDir(env);
  ensurePrivateDir(base);
  sweepLaunchDirs(env);
  const dir = launchDir(job, env);
  if (existsSync(join(dir, 'state.json'))) {
    const old = readState(dir);
    if (processAlive(old.srunPid)) throw new RexError(ErrorCodes.DAEMON_ADDRESS_IN_USE, `REX already runs on job ${job} (srun pid ${old.srunPid})`, { hint: `stop it with \`${shellCommand('rex')} cluster down --slurm\`` });
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
  const logFile = join(dir, 'srun.log');
  const logFd = openSync(logFile, 'a', 0o600);
  const n = String(names.length);
  // One task per node, --overlap so that the job's own steps still get the CPUs; one CPU per task whatever the
  // batch script's SLURM_CPUS_PER_TASK says; the step's stdin, to every task, carries the CLUSTER line. The srun gets a session of its own so that a ^C meant
  // for the shell that typed `rex cluster up --slurm` does not end the cluster. A small sh around it removes
  // this directory when srun ends, also when the allocation ends without a `down`, which signals the batch
  // script's processes (the launcher's directory is then on the batch node, whose /tmp outlives the job).
  // Only once `up` has succeeded (state.json written): before that the directory and srun's output are the
  // launcher's, which reads a failing node's error from it and removes it itself.
  const watch = [
    'd=$0; b=$1; shift',
    'clean() { [ -e "$d/state.json" ] && rm -rf "$d" && rmdir "$b" 2>/dev/null; }',
    `trap 'clean; exit 143' TERM HUP`,
    "trap '' INT",
    '"$@"; s=$?',
    'clean; exit $s',
  ].join('\n');
  const srun = spawn(
    'sh',
    ['-c', watch, dir, base, 'srun', `--jobid=${job}`, '--overlap', `--nodes=${n}`, `--ntasks=${n}`, '--ntasks-per-node=1', '--cpus-per-task=1', '--input=all', `--nodelist=${list}`, '--job-name=rexd', '--kill-on-bad-exit=0', process.execPath, distBin('rex'), 'cluster', 'slurm-node'],
    { env, stdio: ['pipe', logFd, logFd], detached: true },
  );
  closeSync(logFd);
  let srunExit: string | undefined;
  srun.once('exit', (code, sig) => (srunExit = sig ?? `status ${code}`));
  srun.once('error', (e) => (srunExit = e.message));
  srun.stdin!.on('error', () => {});
  let stepId: string | undefined;
  const fail = async (msg: string): Promise<never> => {
    // Not srun's SIGTERM: srun answers it by killing the step outright (SIGKILL), and the tasks could not remove
    // their directories. Instead: EOF on the step's stdin ends every task still waiting for the CLUSTER line, and
    // the step's SIGTERM (scancel --signal) every task whose rexd runs; each cleans up, and srun ends with them.
    srun.stdin!.end();
    if (stepId !== undefined) await run('scancel', ['--signal=TERM', `${job}.${stepId}`], env).catch(() => undefined);
    for (let i = 0; i < 300 && srunExit === undefined; i++) await new Promise((r) => setTimeout(r, 50));
    if (srun.pid && srunExit === undefined) {
      try {
        process.kill(-srun.pid, 'SIGKILL'); // srun and the sh around it: 15 s and still there
      } catch {
        /* gone */
      }
    }
    if (allocated) await run('scancel', [job!], env).catch(() => undefined);
    const out = tailFile(logFile, 15);
    rmSync(dir, { recursive: true, force: true });
    try {
      rmdirSync(base); // when empty: this user's other clusters keep it
    } catch {
      /* not empty */
    }
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `${msg}; srun's output: ${out}`, { hint: 'each node runs `rex cluster slurm-node`; its error is above' });
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  const collect = async <T>(kind: string, parse: (b: unknown) => T, nodeOf: (t: T) => string): Promise<Map<string, T>> => {
    const got = new Map<string, T>();
    for (;;) {
      const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
      for (const line of text.split('\n')) {
        let p;
        try {
          p = splitLine(line);
        } catch (e) {
          return fail((e as Error).message);
        }
        if (!p) continue;
        if (p.kind === 'error') return fail(`node ${String((p.body as { node?: unknown })?.node)}: ${String((p.body as { message?: unknown })?.message)}`);
        if (p.kind !== kind) continue;
        let t: T;
        try {
          t = parse(p.body);
        } catch (e) {
          return fail((e as Error).message);
        }
        if (!names.includes(nodeOf(t))) return fail(`a task answered as node ${nodeOf(t)}, which is not in the allocation (${names.join(',')})`);
        if (kind === 'hello') stepId ??= (t as SlurmHello).step;
        got.set(nodeOf(t), t);
      }
      if (got.size === names.length) return got;
      if (srunExit !== undefined) return fail(`srun ended (${srunExit}) before every node said ${kind} (${[...got.keys()].join(', ') || 'none did'})`);
      if (Date.now() > deadline) return fail(`not every node said ${kind} within ${(opts.timeoutMs ?? 60_000) / 1000} s (missing: ${names.filter((x) => !got.has(x)).join(', ')})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const hellos = await collect('hello', parseHello, (h) => h.node);
  const user = currentUser(); // the USER part of the identity rexd will present
  const members: SlurmMember[] = names.map((name) => ({ name, address: addrs.get(name) ?? name, port: hellos.get(name)!.port, cert: hellos.get(name)!.cert }));
  const msg: SlurmClusterMsg = { job, user, members, rc: opts.rc ?? [] };
  parseClusterMsg(JSON.parse(JSON.stringify(msg))); // the launcher's own check: what it sends, the tasks accept
  srun.stdin!.end(`${SLURM_WIRE} cluster ${JSON.stringify(msg)}\n`);
  const ready = await collect('ready', parseReady, (r) => r.node);
  const { certInfo } = await import('../keys/certs.js');
  const state: SlurmCluster = {
    version: 1,
    job,
    step: hellos.get(names[0]!)!.step,
    allocated,
    srunPid: srun.pid!,
    socket: ready.get(names[0]!)!.socket,
    nodes: members.map((m) => ({ name: m.name, address: m.address, port: m.port, id: certInfo(m.cert, m.name).id, rexdPid: ready.get(m.name)!.pid })),
    dir,
  };
  writeFileSync(join(dir, 'state.json'), JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  srun.unref();
  return state;
}

function readState(dir: string): SlurmCluster {
  const file = join(dir, 'state.json');
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as SlurmCluster;
  } catch (e) {
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `no REX cluster recorded in ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { where: file, hint: `start one with \`${shellCommand('rex')} cluster up --slurm\`` });
  }
}

/**
 * Removes the launcher directories of clusters whose srun has ended (the allocation ended under them, so no
 * `down` ran): srun.log and state.json of a finished job are of no use, and would otherwise stay.
 */
export function sweepLaunchDirs(env: NodeJS.ProcessEnv = process.env): void {
  const base = slurmBaseDir(env);
  let entries: string[] = [];
  try {
    entries = readdirSync(base).filter((f) => /^launch-\d+$/.test(f));
  } catch {
    return;
  }
  for (const f of entries) {
    const dir = join(base, f);
    let alive = false;
    try {
      alive = processAlive((JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as SlurmCluster).srunPid);
    } catch {
      /* no state: an up that failed, or one still starting (it holds srun.log only for seconds) */
      alive = existsSync(join(dir, 'srun.log')) && Date.now() - lstatSync(join(dir, 'srun.log')).mtimeMs < 120_000;
    }
    if (!alive) rmSync(dir, { recursive: true, force: true });
  }
}

/** The job whose REX cluster `down` should stop: --job, else $SLURM_JOB_ID, else the only one this user launched here. */
function pickJob(job: string | undefined, env: NodeJS.ProcessEnv): string {
  if (job) return job;
  if (env.SLURM_JOB_ID) return env.SLURM_JOB_ID;
  let launched: string[] = [];
  try {
    launched = readdirSync(slurmBaseDir(env)).filter((f) => /^launch-\d+$/.test(f)).map((f) => f.slice(7));
  } catch {
    /* none */
  }
  if (launched.length === 1) return launched[0]!;
  throw new RexError(ErrorCodes.USAGE, launched.length ? `REX runs on several Slurm jobs here (${launched.join(', ')}): say which` : 'no REX cluster on a Slurm job was started here, and SLURM_JOB_ID is not set', { hint: 'add --job JOBID' });
}

/**
 * `rex cluster down --slurm`: cancels the step that runs the rexds (each task stops its rexd and removes its
 * state directory on the SIGTERM), waits for srun to end, and ends the allocation too when `up --nodes` made it.
 */
export async function slurmDown(opts: { job?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<SlurmCluster> {
  const env = { ...(opts.env ?? process.env) };
  const job = pickJob(opts.job, env);
  if (!JOB_RE.test(job)) throw new RexError(ErrorCodes.USAGE, `job id ${JSON.stringify(job)} is not a Slurm job id`);
  const dir = launchDir(job, env);
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  if (!existsSync(join(dir, 'state.json'))) return downElsewhere(job, env, deadline);
  const state = readState(dir);
  await run('scancel', ['--signal=TERM', `${state.job}.${state.step}`], env).catch(() => undefined);
  while (processAlive(state.srunPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  // A task that did not end on SIGTERM: the step is cancelled outright (SIGKILL after Slurm's KillWait).
  if (processAlive(state.srunPid)) await run('scancel', [`${state.job}.${state.step}`], env).catch(() => undefined);
  if (state.allocated) await run('scancel', [state.job], env).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
  sweepLaunchDirs(env);
  try {
    rmdirSync(slurmBaseDir(env));
  } catch {
    /* other jobs' directories remain */
  }
  return state;
}

/**
 * `down --slurm` where `up` did not run (another node of the job, another login node): there is no launcher
 * state here, so the rexd steps are found by their name in Slurm's own records (`squeue -s`), sent SIGTERM, and
 * waited for there. The allocation is left alone: whether `up` made it is recorded only where `up` ran.
 */
async function downElsewhere(job: string, env: NodeJS.ProcessEnv, deadline: number): Promise<SlurmCluster> {
  const rows = async (): Promise<string[][]> =>
    (await run('squeue', ['-h', '-s', '-j', job, '-o', '%i %j %N'], env)).stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(([id, name]) => name === 'rexd' && id?.startsWith(`${job}.`));
  const steps = async (): Promise<string[]> => (await rows()).map(([id]) => id!);
  const first = await rows();
  const found = first.map(([id]) => id!);
  if (!found.length) {
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `REX does not run on Slurm job ${job}: it has no rexd step (squeue -s -j ${job})`, { hint: `start it with \`${shellCommand('rex')} cluster up --slurm\`` });
  }
  for (const id of found) await run('scancel', ['--signal=TERM', id], env).catch(() => undefined);
  while ((await steps()).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  for (const id of await steps()) await run('scancel', [id], env).catch(() => undefined);
  const names = first[0]?.[2] ? await expandNodeList(first[0][2], env).catch(() => []) : [];
  return { version: 1, job, step: found[0]!.slice(job.length + 1), allocated: false, srunPid: 0, socket: '', nodes: names.map((name) => ({ name, address: '', port: 0, id: '', rexdPid: 0 })), dir: '' };
}

/*
 * Join mode (`rex cluster up --slurm --join`, docs/SLURM.md section 5): where the nodes run REX's root
 * installation (docs/ROOT.md), the allocation uses it instead of starting rexds of its own. Nothing is started
 * and nothing is written: one srun step checks, on every node, that the root rexd serves this user, calls itself
 * by the Slurm node name and knows every other node of the allocation; the user's requests then carry the
 * allocation's nodes (REX_PLACE_HOSTS, EXEC/RFORK `among`) so that placement stays inside the allocation.
 */

/** Where the root installation's rexd listens (docs/ROOT.md section 2): what `--join` checks on every node. */
export const ROOT_SOCKET = '/run/rex/rexd.sock';

/** A node's answer to the join check: its root rexd serves this user and calls itself `host`. */
export interface SlurmJoined {
  node: string;
  host: string;
}

/** Parses and checks a JOINED body. */
export function parseJoined(body: unknown): SlurmJoined {
  const w = `${SLURM_WIRE} joined`;
  const o = obj(body, w);
  return { node: str(o, 'node', NODE_RE, w), host: str(o, 'host', NODE_RE, w) };
}

/**
 * One node's task of the join check (`rex cluster slurm-check`): the root rexd on `socket` must accept this
 * user (HELLO), call itself this node's Slurm name, and list and reach every other node of `nodes`. Says
 * `joined` or `error` on stdout; resolves with the exit status. Reads and writes nothing but the socket.
 */
export async function slurmCheck(socket: string, nodes: string[], timeoutMs = 20_000): Promise<number> {
  const node = process.env.SLURMD_NODENAME ?? '';
  const fail = (msg: string): number => {
    say('error', { node: node || '?', message: msg });
    process.stderr.write(`rex cluster slurm-check: ${node || '?'}: ${msg}\n`);
    return 1;
  };
  if (!NODE_RE.test(node)) return fail('not a task of a Slurm step (SLURMD_NODENAME is not set): this command is run by `rex cluster up --slurm --join`');
  const { RexClient } = await import('../runtime/client.js');
  let client: Awaited<ReturnType<typeof RexClient.connect>>;
  try {
    client = await RexClient.connect({ socket, timeoutMs: 5000 });
  } catch (e) {
    return fail(`the root installation's rexd does not serve ${currentUser()} on ${socket}: ${(e as Error).message}`);
  }
  try {
    const deadline = Date.now() + timeoutMs;
    // When each node was first seen unreachable with a reason: a peer that keeps failing for a few polls is down.
    const failingSince = new Map<string, number>();
    for (;;) {
      const hosts = await client.hosts();
      const self = hosts.find((h) => h.self);
      // The installation's host-name is how every other rexd and REX_PLACE_HOSTS name this node: it must be Slurm's.
      if (!self || self.name !== node) return fail(`the rexd on ${socket} calls itself ${self?.name ?? '(no name)'}, not ${node}: the root installation's rex.rc host-name must be the Slurm node name`);
      const known = new Map(hosts.map((h) => [h.name, h]));
      const missing = nodes.filter((n) => !known.has(n));
      if (missing.length) return fail(`the root installation on ${node} does not know ${missing.join(', ')} (not in its rex.rc servers nor joined): the allocation's nodes must be one REX cluster`);
      const unreachable = nodes.filter((n) => n !== node && !known.get(n)!.reachable);
      if (unreachable.length === 0) break;
      for (const n of nodes) if (!unreachable.includes(n) || !known.get(n)!.error) failingSince.delete(n);
      for (const n of unreachable) if (known.get(n)!.error && !failingSince.has(n)) failingSince.set(n, Date.now());
      // A session controller just started polls its peers at load-interval: they become reachable within a poll or
      // two. One that still fails with a reason after 3 s is down; one not polled yet is waited for until the deadline.
      const down = unreachable.some((n) => Date.now() - (failingSince.get(n) ?? Infinity) > 3000);
      if (down || Date.now() > deadline) {
        return fail(`the root installation on ${node} cannot reach ${unreachable.map((n) => `${n} (${known.get(n)!.error ?? 'no answer yet'})`).join(', ')} for ${currentUser()}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    say('joined', { node, host: node } satisfies SlurmJoined);
    return 0;
  } catch (e) {
    return fail(`the rexd on ${socket}: ${(e as Error).message}`);
  } finally {
    client.close();
  }
}

/** An allocation that joined the root installation: nothing runs for it; its nodes are the placement's limit. */
export interface SlurmJoin {
  version: 1;
  mode: 'join';
  job: string;
  socket: string;
  /** The allocation's nodes, in Slurm's order: REX_PLACE_HOSTS. */
  hosts: string[];
}

/** The job and its nodes: --job or $SLURM_JOB_ID, its node list expanded by Slurm. */
async function allocation(job: string | undefined, env: NodeJS.ProcessEnv): Promise<{ job: string; list: string; names: string[] }> {
  if (!job) throw new RexError(ErrorCodes.USAGE, 'not inside a Slurm allocation (SLURM_JOB_ID is not set)', { hint: 'run it inside salloc or an sbatch script, or give --job JOBID' });
  if (!JOB_RE.test(job)) throw new RexError(ErrorCodes.USAGE, `job id ${JSON.stringify(job)} is not a Slurm job id`);
  const list = job === env.SLURM_JOB_ID && env.SLURM_JOB_NODELIST ? env.SLURM_JOB_NODELIST : (await run('squeue', ['-h', '-j', job, '-o', '%N'], env)).stdout.trim();
  if (!list) throw new RexError(ErrorCodes.USAGE, `Slurm job ${job} has no nodes (is it still running? squeue -j ${job})`);
  return { job, list, names: await expandNodeList(list, env) };
}

/**
 * `rex cluster up --slurm --join`: checks in one srun step that every node of the allocation runs the root
 * installation for this user and that they form one cluster; starts nothing, writes nothing. Fails naming
 * each node that failed and why.
 */
export async function slurmJoin(opts: { job?: string; socket?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<SlurmJoin> {
  const env = { ...(opts.env ?? process.env) };
  const socket = opts.socket ?? ROOT_SOCKET;
  if (!/^\/[^\n\0]{1,200}$/.test(socket)) throw new RexError(ErrorCodes.USAGE, `--socket ${JSON.stringify(socket)}: expected an absolute path`, { hint: `the root installation's socket is ${ROOT_SOCKET} unless its rex.rc says otherwise` });
  const { job, list, names } = await allocation(opts.job ?? env.SLURM_JOB_ID, env);
  const n = String(names.length);
  const argv = ['--jobid', job, '--overlap', `--nodes=${n}`, `--ntasks=${n}`, '--ntasks-per-node=1', '--cpus-per-task=1', `--nodelist=${list}`, '--job-name=rex-join', '--kill-on-bad-exit=0', process.execPath, distBin('rex'), 'cluster', 'slurm-check', '--socket', socket, '--nodes', names.join(',')];
  const out = await new Promise<{ stdout: string; stderr: string; why?: string }>((ok) => {
    execFile('srun', argv, { env, timeout: opts.timeoutMs ?? 60_000, encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => ok({ stdout, stderr, ...(err ? { why: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'srun is not installed here' : err.message.split('\n')[0]! } : {}) }));
  });
  const joined = new Set<string>();
  const failed: string[] = [];
  for (const line of out.stdout.split('\n')) {
    const p = splitLine(line);
    if (!p) continue;
    if (p.kind === 'error') {
      const b = obj(p.body, `${SLURM_WIRE} error`);
      failed.push(`${String(b.node)}: ${String(b.message)}`);
    } else if (p.kind === 'joined') {
      const j = parseJoined(p.body);
      if (!names.includes(j.node)) throw bad(`${SLURM_WIRE} joined`, `from node ${j.node}, which is not in the allocation (${names.join(',')})`);
      joined.add(j.node);
    }
  }
  const silent = names.filter((x) => !joined.has(x) && !failed.some((f) => f.startsWith(`${x}: `)));
  if (failed.length || silent.length) {
    const why = [...failed, ...silent.map((x) => `${x}: no answer from its task${out.why ? ` (srun: ${out.why}; ${out.stderr.trim().split('\n').slice(-3).join(' | ')})` : ''}`)];
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `Slurm job ${job} cannot join the root installation: ${why.join('; ')}`, {
      hint: `every node of the allocation must run REX's root installation (docs/ROOT.md) with its Slurm name as host-name; without it, drop --join to start REX for this job alone`,
    });
  }
  return { version: 1, mode: 'join', job, socket, hosts: names };
}

/** The variable `up --slurm --join --env` exports, so that `down --slurm` in the job knows nothing is to stop. */
export const JOINED_ENV = 'REX_SLURM_JOINED';
