/** `rex cluster up|down|status|demo`: an embedded local cluster for trying REX and for tests. */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
// Types only here: the cluster code (key generation, X.509 on WebCrypto) is imported by the actions
// that use it, so that registering these commands costs nothing to every other `rex` command.
import type { DemoLibrary } from '../../cluster/calldemo.js';
import type { LocalCluster } from '../../cluster/cluster.js';
import { ErrorCodes, RexError } from '../../util/errors.js';
import { helper, packageRoot, shellCommand } from '../../util/paths.js';
import { hostsTable, table, toJson } from '../format.js';
import type { SlurmCluster, SlurmJoin } from '../../cluster/slurm.js';

interface ClusterCliOpts {
  dir: string;
  hosts: string;
  keys?: string;
  netns?: boolean;
  json?: boolean;
  watch?: string;
  rc?: string[];
  testMode?: boolean;
  privateFs?: boolean;
  root?: boolean;
  tree?: string;
  prefix: string;
  slurm?: boolean;
  nodes?: string;
  job?: string;
  env?: boolean;
  join?: boolean;
  socket?: string;
}

function hostCount(s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 12) throw new RexError(ErrorCodes.USAGE, `--hosts ${s}: expected a number from 1 to 12`);
  return n;
}

const DEFAULT_DIR = '.rex-cluster';

function describe(c: LocalCluster): string {
  const lines = [
    `Local REX cluster in ${c.dir}${c.hosts[0]?.fs ? ` (network and mount namespaces, sharing no files; installed tree ${c.hosts[0].fs.tree.dir} at ${c.hosts[0].fs.tree.prefix})` : c.network ? ' (network namespaces)' : ' (loopback)'}:`,
    ...c.hosts.map((h) => `  ${h.name.padEnd(8)} ${h.address}:${h.port}  pid ${h.pid ?? '-'}  socket ${h.socket}`),
    ...(c.hosts[0]?.installation === 'root'
      ? [
          'Each host runs the root installation (docs/ROOT.md): one rexd as root serving every user through a session controller of theirs. Host keys (TLS 1.3 between hosts; each host\'s certificate placed in the others\' known/):',
          ...c.hosts.map((h) => `  ${h.identity.padEnd(16)} ID ${h.id ?? '(no key)'}`),
          `Use it as a user of this machine: log in to a host (below), then: runuser -u USER -- rex run --host ${c.hosts[1]?.name ?? c.hosts[0]!.name} /usr/bin/id`,
        ]
      : [
          'Identities (TLS 1.3 between hosts; each pinned the others\' keys by enrollment token and granted them):',
          ...c.hosts.map((h) => `  ${h.identity.padEnd(16)} ID ${h.id ?? '(no key)'}`),
          `Use a host from a shell:  export REX_SOCKET=${c.hosts[0]!.socket}   (then: ${shellCommand('rex')} hosts, ${shellCommand('rex')} ping ${c.hosts[1]?.name ?? c.hosts[0]!.name})`,
        ]),
    ...(c.hosts[0]?.fs ? [`Or log in to it (its files, its installed rex):  ${c.command(c.hosts[0].name, ['sh']).map((a) => (/^[\w./=:-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')}`] : []),
  ];
  return lines.join('\n') + '\n';
}

/** What `rex cluster up --slurm` prints: the nodes, their key IDs, and how to use the cluster from the job. */
function describeSlurm(c: SlurmCluster): string {
  const sh = (s: string): string => (/^[\w./=:@,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return [
    `REX runs on Slurm job ${c.job} (step ${c.job}.${c.step}${c.allocated ? ', an allocation requested with --nodes' : ''}): one rexd per node, keys made for this job on each node:`,
    ...c.nodes.map((n) => `  ${n.name.padEnd(12)} ${n.address}:${n.port}  ID ${n.id}`),
    `Use it from any step of the job (the same path on every node):  export REX_SOCKET=${sh(c.socket)}`,
    `  then: srun --overlap -N1 ${shellCommand('rex')} hosts;  ${shellCommand('rex')} run uname -n   (docs/SLURM.md)`,
    `It ends with the allocation, or with: ${shellCommand('rex')} cluster down --slurm${c.allocated ? ' (which also ends the allocation)' : ''}`,
    '',
  ].join('\n');
}

/** `rex cluster up|start --json`: the cluster's hosts, as describe() says them. */
function clusterJson(c: LocalCluster): string {
  return toJson({
    dir: c.dir,
    network: c.hosts[0]?.fs ? 'private-fs' : c.network ? 'netns' : 'loopback',
    installation: c.hosts[0]?.installation ?? 'user',
    hosts: c.hosts.map((h) => ({ name: h.name, address: h.address, port: h.port, pid: h.pid ?? null, socket: h.socket, rcFile: h.rcFile, identity: h.identity, id: h.id ?? null })),
  });
}

async function demo(opts: ClusterCliOpts): Promise<void> {
  const [{ buildDemoLibrary, demoCall }, { LocalCluster }] = await Promise.all([import('../../cluster/calldemo.js'), import('../../cluster/cluster.js')]);
  const out = (s: string) => process.stdout.write(s);
  const dir = resolve(opts.dir);
  const hosts = hostCount(opts.hosts);
  // Built before the hosts start: rexd reads its programs from rex.rc at start-up.
  let lib: DemoLibrary | undefined;
  let noLib = '';
  try {
    lib = buildDemoLibrary(dir);
  } catch (e) {
    noLib = ((e as { stderr?: Buffer | string }).stderr?.toString() || (e as Error).message).trim().split('\n')[0] ?? '';
  }
  out(`Starting a local REX cluster of ${opts.hosts} hosts in ${dir} ...\n`);
  const cluster = await LocalCluster.up({ dir, hosts, netns: opts.netns ?? false, ...(lib ? { rc: [lib.rcLine] } : {}), ...(opts.testMode ? { testMode: true } : {}) });
  // Each step passes, fails or is skipped. A failure is said where it happens, the demo goes on with the next
  // step, and exits non-zero at the end; the last line sums them up.
  const passed: string[] = [];
  const failed: string[] = [];
  const skipped: string[] = [];
  const step = async (name: string, body: () => Promise<void>): Promise<void> => {
    try {
      await body();
      passed.push(name);
    } catch (e) {
      failed.push(name);
      out(`  FAILED: ${name}: ${(e as Error).message}\n`);
    }
  };
  const skip = (name: string, why: string): void => {
    skipped.push(name);
    out(`\n(Skipping ${name}: ${why})\n`);
  };
  // REX_DEMO_FAIL=STEP (the name a summary gives, e.g. "the round trips"): that step fails as soon as it starts,
  // so that a test, or whoever checks what npm start does on a failure, sees one without breaking anything.
  const forced = process.env.REX_DEMO_FAIL;
  const failIfForced = (name: string): void => {
    if (forced === name) throw new Error('failed on purpose (REX_DEMO_FAIL)');
  };
  const sh = (s: string): string => (/^[A-Za-z0-9_./@+=:,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  let done = false;
  const shutdown = async (why: string) => {
    if (done) return;
    done = true;
    out(`\n${why}: stopping the cluster ...\n`);
    await cluster.down();
    out('All hosts stopped.\n');
  };
  const onSignal = () => void shutdown('Interrupted').then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    out(describe(cluster));
    out('\nWaiting for every host to see every other one ...\n');
    await step('the hosts see each other', async () => {
      failIfForced('the hosts see each other');
      await cluster.waitAllReachable(20_000);
    });
    const first = cluster.hosts[0]!.name;
    const c = await cluster.client(first);
    try {
      out(`\nThe cluster as ${first} sees it (* = itself; RLOAD = load average plus fresh REX work, per core):\n`);
      out(hostsTable(await c.hosts()));
      if (!cluster.network) out('(The hosts share this machine, so their load averages match; each counts its own REX jobs.)\n');
      out(`\nDemo: a round trip from a client through ${first}'s rexd to every host:\n`);
      await step('the round trips', async () => {
        failIfForced('the round trips');
        const rows: string[][] = [];
        for (const h of cluster.hosts) {
          const rtts: number[] = [];
          let hops = 0;
          for (let i = 0; i < 20; i++) {
            const r = await c.ping(h.name);
            rtts.push(r.rttMs);
            hops = r.hops;
          }
          rtts.sort((a, b) => a - b);
          rows.push([h.name, String(hops), rtts[0]!.toFixed(3), rtts[10]!.toFixed(3)]);
        }
        out(table(['HOST', 'HOPS', 'MIN ms', 'MEDIAN ms'], rows, new Set([1, 2, 3])));
      });
      const other = cluster.hosts[1]?.name ?? first;
      if (lib) {
        out(`\nDemo: a remote call. ${lib.object} was built with gcc -g, its entry points written with repdb -gx (${lib.xml}),\n`);
        out(`and offered as program "demo" in cluster.rc (${lib.rcLine.replace(/=.*/, '=...')}). From ${first}:\n`);
        await step('the remote calls', async () => {
          failIfForced('the remote calls');
          const calls = [await demoCall(c, other, 'fib', { n: 30 }), await demoCall(c, other, 'power', { x: 1.5, n: 10 }), await demoCall(c, '*', 'fib', { n: 25 })];
          out(table(['CALL', 'RESULT', 'RAN ON', 'ms'], calls.map((r) => [r.call, r.result, r.host, r.ms.toFixed(3)]), new Set([3])));
          out(`(${other}: the host named in the target; *: the least-loaded host offering demo. Try: REX_SOCKET=${sh(cluster.hosts[0]!.socket)} ${shellCommand('rex')} call ${other}.demo.fib 20)\n`);
        });
      } else {
        skip('the remote calls', `cannot build the demo's C library: ${noLib}`);
      }
      // rfork: the 2009 guide's example, built by npm install against rex.h and librex.so, its child forced onto
      // another host than the origin (an rfork to the origin itself would not show a migration).
      const example = helper('test_rfork_1');
      const target = cluster.hosts[1];
      if (!existsSync(example)) {
        skip('rfork', `${example} is not built; build it with: make -C ${sh(resolve(packageRoot(), 'native'))} all`);
      } else if (!target) {
        skip('rfork', `it moves the child to another host than ${first}, and this cluster has only one; try: ${shellCommand('rex')} cluster demo --hosts 2`);
      } else {
        out(`\nDemo: rfork(). The 2009 guide's test_rfork_1 (native/examples/test_rfork_1.c) forks on ${first}; its child is sent to ${target.name} (REX_HOST=${target.name}):\n`);
        await step('rfork', async () => {
          failIfForced('rfork');
          const r = await new Promise<{ text: string; stdout: string; code: number | null }>((ok) => {
            execFile(example, [], { env: { ...process.env, REX_SOCKET: cluster.hosts[0]!.socket, REX_HOST: target.name }, timeout: 20_000 }, (err, stdout, stderr) =>
              ok({ text: `${stdout}${stderr}`, stdout, code: err ? ((err as { code?: number }).code ?? 1) : 0 }),
            );
          });
          out(r.text.trimEnd().replace(/^/gm, '  ') + '\n');
          if (r.code !== 0) throw new Error(`test_rfork_1 ended with status ${r.code}`);
          // The moved child's parent is the executor's rexd: that names the host it ran on.
          const parent = Number(/^child \d+ parent (\d+) /m.exec(r.stdout)?.[1]);
          const ran = cluster.hosts.find((h) => h.pid === parent);
          if (ran?.name !== target.name) throw new Error(`the child did not run on ${target.name}: its parent is pid ${parent || '?'}${ran ? ` (${ran.name}'s rexd)` : ''}`);
          out(`  The child ran on ${target.name}: its parent there is ${target.name}'s rexd (pid ${parent}).\n`);
        });
      }
      const watch = Number(opts.watch ?? '3');
      if (watch > 0) {
        out(`\nLive load figures for ${watch} s (they refresh every 500 ms):\n`);
        for (let t = 0; t < watch; t++) {
          await new Promise((r) => setTimeout(r, 1000));
          const hs = await c.hosts();
          out(`  t+${t + 1}s  ` + hs.map((h) => `${h.name} ${h.load !== undefined ? h.load.toFixed(2) : '-'} (${h.ageMs ?? '-'}ms old)`).join('   ') + '\n');
        }
      }
      out(`\nNext: \`${shellCommand('rex')} cluster up\` keeps a cluster running; then REX_SOCKET=${sh(cluster.hosts[0]!.socket)} ${shellCommand('rex')} run uname -n runs a program on the least-loaded host, and ${sh(example)} rforks onto it (README.md, Examples).\n`);
    } finally {
      c.close();
    }
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await shutdown('Demo finished');
  }
  out(`demo: ${passed.length} steps passed, ${failed.length} failed${skipped.length ? `, ${skipped.length} skipped (${skipped.join(', ')})` : ''}\n`);
  if (failed.length > 0) {
    // npm start, and whoever runs the demo to check an installation, must see the failure in the exit status.
    process.stderr.write(`rex: the demo failed: ${failed.join(', ')} (the lines marked FAILED above say why)\n`);
    process.exitCode = 1;
  }
}

/** What `rex cluster up --slurm --join` prints: the nodes, and the two variables that make the job use them. */
function describeJoin(c: SlurmJoin): string {
  return [
    `Slurm job ${c.job} uses the root installation of REX on its nodes (${c.hosts.join(', ')}): each rexd serves you and knows the others; REX started nothing.`,
    `Work without --host is placed on these nodes only. Use it from any step of the job:`,
    ...joinExports(c).map((l) => `  ${l}`),
    `  then: srun --overlap -N1 ${shellCommand('rex')} hosts;  ${shellCommand('rex')} run uname -n   (docs/SLURM.md)`,
    `Nothing to stop: \`${shellCommand('rex')} cluster down --slurm\` says so; the root rexds stay.`,
    '',
  ].join('\n');
}

/** The exports of join mode: the root socket, the placement limit (REX_PLACE_HOSTS), and the job that joined. */
function joinExports(c: SlurmJoin): string[] {
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  return [`export REX_SOCKET=${q(c.socket)}`, `export REX_PLACE_HOSTS=${q(c.hosts.join(','))}`, `export REX_SLURM_JOINED=${q(c.job)}`];
}

async function slurmUpCommand(opts: ClusterCliOpts): Promise<void> {
  if (opts.join) {
    if (opts.nodes !== undefined) throw new RexError(ErrorCodes.USAGE, '--join uses an allocation that exists: --nodes cannot go with it', { hint: 'request the allocation with salloc or sbatch, then run `rex cluster up --slurm --join` in it (or give --job)' });
    if (opts.rc) throw new RexError(ErrorCodes.USAGE, '--rc configures rexds that --slurm starts; with --join the root installation\'s rex.rc applies', { hint: 'drop --rc' });
  } else if (opts.socket) throw new RexError(ErrorCodes.USAGE, '--socket names the root installation\'s socket: it goes with --join', { hint: 'add --join, or drop --socket' });
  for (const [bad, set] of [['--netns', opts.netns], ['--private-fs', opts.privateFs], ['--root', opts.root], ['--tree', opts.tree]] as const) {
    if (set) throw new RexError(ErrorCodes.USAGE, `${bad} is for local clusters; --slurm runs on the allocation's nodes`, { hint: `drop ${bad}` });
  }
  if (opts.env && opts.json) throw new RexError(ErrorCodes.USAGE, '--env and --json go apart: choose one output');
  if (opts.join) {
    const { slurmJoin } = await import('../../cluster/slurm.js');
    const j = await slurmJoin({ ...(opts.job ? { job: opts.job } : {}), ...(opts.socket ? { socket: opts.socket } : {}) });
    if (opts.json) process.stdout.write(toJson({ job: j.job, mode: j.mode, socket: j.socket, hosts: j.hosts }));
    else if (opts.env) process.stdout.write(joinExports(j).join('\n') + '\n');
    else process.stdout.write(describeJoin(j));
    return;
  }
  for (const [bad, set] of [['--netns', opts.netns], ['--private-fs', opts.privateFs], ['--root', opts.root], ['--tree', opts.tree]] as const) {
    if (set) throw new RexError(ErrorCodes.USAGE, `${bad} is for local clusters; --slurm runs on the allocation's nodes`, { hint: `drop ${bad}` });
  }
  if (opts.env && opts.json) throw new RexError(ErrorCodes.USAGE, '--env and --json go apart: choose one output');
  if (opts.keys && opts.keys !== 'grant') throw new RexError(ErrorCodes.USAGE, `--keys ${opts.keys}: --slurm always makes the job's keys itself (docs/SLURM.md, "Trust")`, { hint: 'drop --keys' });
  let nodes: number | undefined;
  if (opts.nodes !== undefined) {
    nodes = Number(opts.nodes);
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > 4096) throw new RexError(ErrorCodes.USAGE, `--nodes ${opts.nodes}: expected a number from 1 to 4096`);
  }
  const { slurmUp } = await import('../../cluster/slurm.js');
  const c = await slurmUp({ ...(nodes !== undefined ? { nodes } : {}), ...(opts.job ? { job: opts.job } : {}), ...(opts.rc ? { rc: opts.rc } : {}) });
  if (opts.json) process.stdout.write(toJson({ job: c.job, step: c.step, allocated: c.allocated, socket: c.socket, nodes: c.nodes }));
  else if (opts.env) process.stdout.write(`export REX_SOCKET='${c.socket.replace(/'/g, `'\\''`)}'\n`);
  else process.stdout.write(describeSlurm(c));
}

/** Registers `rex cluster ...`. */
export function registerClusterCommands(program: Command): void {
  const cluster = program.command('cluster').description('a REX cluster: several rexd hosts on this machine, or one per node of a Slurm allocation (--slurm)');
  const dirOpt = (c: Command) => c.option('-d, --dir <dir>', 'where the cluster keeps its configuration and state', DEFAULT_DIR);

  dirOpt(cluster.command('up'))
    .description('start N rexd hosts (each with its own name, port, state directory and rex.rc) and leave them running')
    .option('-n, --hosts <n>', 'number of hosts', '3')
    .option('--netns', 'put each host in a network namespace of its own (root only)')
    .option('--private-fs', 'also give each host a mount namespace of its own, with an installed tree and private /etc/rex, /var/lib/rex, /run/rex, /home and /tmp (root only; implies --netns)')
    .option('--tree <dir>', 'with --private-fs: the DESTDIR of a `make -C native install` to lay out on every host (default: install this clone into DIR/tree)')
    .option('--prefix <dir>', 'with --private-fs: the PREFIX the tree was installed with', '/usr')
    .option('--root', 'with --private-fs: each host runs the root installation (one rexd as root for all its users, docs/ROOT.md)')
    .option('--keys <how>', 'none: leave keys to you (rex_key, then `rex cluster start`); create; enroll; grant (default: everything)', 'grant')
    .option('--rc <line...>', 'extra rex.rc lines for cluster.rc, which every host includes (e.g. "programs : demo=/abs/libdemo.so:/abs/libdemo.xml")')
    .option('--json', 'print the hosts as JSON: {dir, network, installation, hosts: [{name, address, port, pid, socket, rcFile, identity, id}]}; with --slurm: {job, step, allocated, socket, nodes: [{name, address, port, id, rexdPid}]}')
    .option('--slurm', 'run on the nodes of a Slurm allocation instead: one rexd per node in one srun step, keys made for the job (docs/SLURM.md)')
    .option('--nodes <n>', 'with --slurm outside an allocation: request one of N nodes (salloc --no-shell); `down --slurm` ends it')
    .option('--job <id>', 'with --slurm: the Slurm job to use (default $SLURM_JOB_ID)')
    .option('--env', 'with --slurm: print only `export REX_SOCKET=...` (with --join also REX_PLACE_HOSTS and REX_SLURM_JOINED), for eval "$(rex cluster up --slurm --env)" in a batch script')
    .option('--join', 'with --slurm: start nothing; use the root installation the nodes run (docs/ROOT.md), checked on every node, with placement limited to the allocation (REX_PLACE_HOSTS)')
    .option('--socket <path>', 'with --slurm --join: the root installation\'s socket on the nodes (default /run/rex/rexd.sock)')
    .action(async (opts: ClusterCliOpts) => {
      if (opts.slurm) return slurmUpCommand(opts);
      if (opts.nodes !== undefined || opts.job !== undefined || opts.env || opts.join) throw new RexError(ErrorCodes.USAGE, `--${opts.nodes !== undefined ? 'nodes' : opts.job !== undefined ? 'job' : opts.env ? 'env' : 'join'} is for Slurm: add --slurm`);
      const { LocalCluster } = await import('../../cluster/cluster.js');
      const trust = opts.keys ?? 'grant';
      if (!['none', 'create', 'enroll', 'grant'].includes(trust)) throw new RexError(ErrorCodes.USAGE, `--keys ${trust}: expected none, create, enroll or grant`);
      if (opts.tree && !opts.privateFs) throw new RexError(ErrorCodes.USAGE, '--tree lays out an installed tree on hosts with --private-fs: add --private-fs');
      let privateFs: { dir: string; prefix: string } | undefined;
      if (opts.privateFs) {
        if (process.getuid?.() !== 0) throw new RexError(ErrorCodes.USAGE, 'hosts with private file systems need root and iproute2', { hint: 'run as root, or drop --private-fs' });
        const { installTree } = await import('../../cluster/mountns.js');
        privateFs = opts.tree ? { dir: resolve(opts.tree), prefix: opts.prefix } : installTree(packageRoot(), resolve(opts.dir, 'tree'), opts.prefix);
      }
      if (opts.root && !opts.privateFs) throw new RexError(ErrorCodes.USAGE, '--root runs the root installation on hosts that share nothing: add --private-fs (root only)');
      const c = await LocalCluster.up({ dir: opts.dir, hosts: hostCount(opts.hosts), netns: opts.netns ?? false, ...(privateFs ? { privateFs } : {}), ...(opts.root ? { installation: 'root' as const } : {}), trust: trust === 'create' ? 'keys' : (trust as 'none' | 'enroll' | 'grant'), ...(opts.rc ? { rc: opts.rc } : {}) });
      if (opts.json) {
        process.stdout.write(clusterJson(c));
        return;
      }
      if (trust === 'none') {
        process.stdout.write(
          [
            `Configured ${c.hosts.length} hosts in ${c.dir}; none is running yet, because none has a key.`,
            'Create each host\'s key, then start them (docs/KEYS.md walks through the rest):',
            ...c.hosts.map((h) => `  ${shellCommand('rex_key')} --config ${h.rcFile} --create`),
            `  ${shellCommand('rex')} cluster start --dir ${opts.dir}`,
            '',
          ].join('\n'),
        );
        return;
      }
      process.stdout.write(describe(c));
    });

  dirOpt(cluster.command('start'))
    .description('start the hosts of a configured cluster that are not running (e.g. after `up --keys none` and rex_key --create)')
    .option('--json', 'print the hosts as JSON, as `up --json` does')
    .action(async (opts: ClusterCliOpts) => {
      const { LocalCluster } = await import('../../cluster/cluster.js');
      const c = LocalCluster.attach(opts.dir);
      await c.startAll();
      process.stdout.write(opts.json ? clusterJson(c) : describe(c));
    });

  dirOpt(cluster.command('down'))
    .description('stop every host of the cluster and remove its namespaces')
    .option('--json', 'print {dir, stopped: [host names]}; with --slurm: {job, step, stopped: [node names]}')
    .option('--slurm', 'stop the REX cluster of a Slurm job: cancel its rexd step (and the allocation, when `up --nodes` made it)')
    .option('--job <id>', 'with --slurm: the Slurm job (default $SLURM_JOB_ID, else the only one started from here)')
    .option('--join', 'with --slurm: the job joined the root installation (up --slurm --join; also when $REX_SLURM_JOINED names the job): say that there is nothing to stop')
    .action(async (opts: ClusterCliOpts) => {
      if (opts.slurm) {
        const { slurmDown, JOINED_ENV } = await import('../../cluster/slurm.js');
        const joined = process.env[JOINED_ENV];
        if (opts.join || (joined && joined === (opts.job ?? process.env.SLURM_JOB_ID ?? joined))) {
          // Join mode started nothing: the root rexds are the administrator's, and stay exactly as they are.
          const job = opts.job ?? process.env.SLURM_JOB_ID ?? joined ?? '';
          process.stdout.write(opts.json ? toJson({ job, mode: 'join', stopped: [] }) : `Slurm job ${job || '(this job)'} joined the root installation (up --slurm --join): REX started nothing for it, so there is nothing to stop; the root rexds keep running\n`);
          return;
        }
        const s = await slurmDown(opts.job ? { job: opts.job } : {});
        process.stdout.write(opts.json ? toJson({ job: s.job, step: s.step, stopped: s.nodes.map((n) => n.name) }) : `stopped REX on Slurm job ${s.job} (step ${s.job}.${s.step}: ${s.nodes.map((n) => n.name).join(', ')})${s.allocated ? `; allocation ${s.job} ended` : ''}\n`);
        return;
      }
      const { LocalCluster } = await import('../../cluster/cluster.js');
      const c = LocalCluster.attach(opts.dir);
      await c.down();
      process.stdout.write(opts.json ? toJson({ dir: c.dir, stopped: c.hosts.map((h) => h.name) }) : `stopped ${c.hosts.length} hosts in ${c.dir}\n`);
    });

  dirOpt(cluster.command('status'))
    .description("show the cluster's hosts and their load, as the first live host sees them")
    .option('--json', 'machine-readable output')
    .action(async (opts: ClusterCliOpts) => {
      const [{ LocalCluster }, { RexClient }] = await Promise.all([import('../../cluster/cluster.js'), import('../../runtime/client.js')]);
      const c = LocalCluster.attach(opts.dir);
      let lastErr: unknown;
      for (const h of c.hosts) {
        try {
          const client = await RexClient.connect({ socket: h.socket, timeoutMs: 2000 });
          try {
            const hosts = await client.hosts();
            process.stdout.write(opts.json ? toJson({ dir: c.dir, via: h.name, hosts }) : `Cluster in ${c.dir}, as ${h.name} sees it:\n${hostsTable(hosts)}`);
            return;
          } finally {
            client.close();
          }
        } catch (e) {
          lastErr = e;
        }
      }
      throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `no host of the cluster in ${c.dir} answers (${(lastErr as Error)?.message})`, { hint: `start it with \`${shellCommand('rex')} cluster up\`` });
    });

  // The check each node of `up --slurm --join`'s step runs (src/cluster/slurm.ts); not for people.
  cluster
    .command('slurm-check', { hidden: true })
    .description('(internal) one node of `rex cluster up --slurm --join`')
    .requiredOption('--socket <path>', 'the root installation\'s socket')
    .requiredOption('--nodes <list>', 'the allocation\'s nodes, comma-separated')
    .action(async (o: { socket: string; nodes: string }) => {
      const { slurmCheck } = await import('../../cluster/slurm.js');
      process.exit(await slurmCheck(o.socket, o.nodes.split(',').filter(Boolean)));
    });

  // The task each node of `up --slurm`'s step runs (src/cluster/slurm.ts); not for people.
  cluster
    .command('slurm-node', { hidden: true })
    .description('(internal) one node of `rex cluster up --slurm`')
    .action(async () => {
      const { slurmNode } = await import('../../cluster/slurm.js');
      // Exits at once: the step's stdin (srun keeps it open) must not hold the task after rexd is gone.
      process.exit(await slurmNode());
    });

  dirOpt(cluster.command('demo'))
    .description('start a cluster, show its hosts and load, run the demo, and stop it (npm start)')
    .option('-n, --hosts <n>', 'number of hosts', '3')
    .option('--netns', 'put each host in a network namespace of its own (root only)')
    .option('--watch <seconds>', 'how long to show live load figures', '3')
    .option('--test-mode', 'start each rexd with --test-mode, which honours the test switches of rexd(8) (tests make a step fail with them)')
    .action(demo);
}
