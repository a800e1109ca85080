#!/usr/bin/env node
// The per-hop profile of REX's round trips (issue 17, docs/PERFORMANCE.md): each operation is timed on the
// local host (client -> alpha's rexd) and on another (client -> alpha -> TLS -> beta), beside the floors
// of the hops it crosses, all in one run on a 2-host local cluster:
//   floors: a raw TCP echo and a TLS 1.3 echo (client certificates, as between rexds) to another Node
//           process; a local spawn of /bin/true from Node; Node's bare start;
//   REX:    PING, a 4-byte rcall (the generic C controller), EXEC of /bin/true through the in-process
//           stub (spawn()'s path), and `rex run --host beta /bin/true` (the Node CLI).
// Differences of medians give the hops: what the local rexd adds over the Unix socket, what the TLS hop
// and the remote rexd add over a TLS echo, the controller's and the executor's own time, the CLI's start.
// rfork's phases are in bench/rfork.mjs. Run: `npm run bench -- profile` (or `node bench/profile.mjs [N]`).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { record, stats, tcpEchoRtts } from './lib.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const { LocalCluster } = await import(join(root, 'dist/cluster/cluster.js'));
const { RemoteProcess } = await import(join(root, 'dist/exec/origin/stub.js'));
const { KeyStore } = await import(join(root, 'dist/keys/store.js'));

const N = Number(process.argv[2] ?? 1000);
const WARMUP = Math.min(200, N);
const CLI_N = Math.min(40, N);
const dir = mkdtempSync(join(tmpdir(), 'rex-bench-profile-'));

/** `n` timed runs of `f` (ms each) after `warmup` untimed ones. */
async function times(f, n = N, warmup = WARMUP) {
  const out = [];
  for (let i = 0; i < warmup + n; i++) {
    const t0 = process.hrtime.bigint();
    await f();
    if (i >= warmup) out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out;
}

/** A command run to its end, `n` times: spawn to exit. */
const run = (cmd, args, env) => () =>
  new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'inherit'] });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}`))));
  });

const med = {};
const row = (key, label, xs) => {
  const s = stats(xs);
  med[key] = s.median;
  console.log(`${label.padEnd(58)} median ${s.median.toFixed(3).padStart(9)} ms  p90 ${s.p90.toFixed(3).padStart(9)} ms`);
};

// The library of the rcall: one 4-byte function, offered as program b on both hosts.
writeFileSync(join(dir, 'b.c'), '#include <stdint.h>\nint32_t neg32(int32_t x) { return -x; }\n');
const lib = join(dir, 'libb.so');
execFileSync('gcc', ['-g', '-O2', '-shared', '-fPIC', '-o', lib, join(dir, 'b.c')]);
const xml = join(dir, 'libb.xml');
writeFileSync(xml, execFileSync(process.execPath, [join(root, 'dist/bin/repdb.js'), '-gx', '--program', 'b', lib], { encoding: 'utf8' }));

const cluster = await LocalCluster.up({ dir: join(dir, 'cluster'), hosts: 2, netns: false, loadInterval: '1s', logLevel: 'warn', rc: [`programs : b=${lib}:${xml}`] });
try {
  await cluster.waitAllReachable();
  const socket = cluster.host('alpha').socket;
  const env = { ...process.env, REX_SOCKET: socket };
  const c = await cluster.client('alpha');
  const frame = new Uint8Array([5, 0, 0, 0]);
  const exec = (host) => async () => {
    const rp = await RemoteProcess.start(c.conn, { path: '/bin/true', argv: ['true'], host }, (_f, _d, done) => done());
    rp.end();
    await rp.exited;
  };
  const own = await new KeyStore(join(dir, 'echo-key')).create('echo.bench');

  console.log(`## floors (${N} round trips each)`);
  row('tcp', 'TCP echo, 64 bytes, another Node process', await tcpEchoRtts(64, N, WARMUP));
  row('tls', 'TLS 1.3 echo with client certificates, 64 bytes', await tcpEchoRtts(64, N, WARMUP, { keyFile: own.keyFile, certFile: own.certFile, key: own.keyPem, cert: own.certPem }));
  row('spawn', 'spawn /bin/true from Node, to exit', await times(run('/bin/true', [], env), Math.min(N, 300), 20));
  row('node', 'node -e 0 (Node start-up)', await times(run(process.execPath, ['-e', '0'], env), CLI_N, 3));

  console.log('\n## REX, on alpha (client -> alpha) and on beta (client -> alpha -> TLS -> beta)');
  row('pingA', 'PING alpha', await times(() => c.ping()));
  row('pingB', 'PING beta', await times(() => c.ping('beta')));
  row('callA', 'rcall alpha.b.neg32 (4 bytes, C controller)', await times(() => c.call('alpha.b.neg32', frame)));
  row('callB', 'rcall beta.b.neg32', await times(() => c.call('beta.b.neg32', frame)));
  row('execA', 'EXEC /bin/true on alpha (in-process stub)', await times(exec('alpha'), Math.min(N, 300), 20));
  row('execB', 'EXEC /bin/true on beta (in-process stub)', await times(exec('beta'), Math.min(N, 300), 20));
  row('cli', 'rex run --host beta /bin/true (Node CLI)', await times(run(process.execPath, [join(root, 'dist/bin/rex.js'), 'run', '--host', 'beta', '/bin/true'], env), CLI_N, 3));
  c.close();

  const d = (a, b) => med[a] - med[b];
  const hops = [
    ['client <-> alpha rexd: Unix socket, frame codec, dispatch', med.pingA, `TCP echo ${med.tcp.toFixed(3)}`, med.pingA / med.tcp],
    ['alpha <-> beta: TLS hop and beta rexd dispatch (PING beta - PING alpha)', d('pingB', 'pingA'), `TLS echo ${med.tls.toFixed(3)}`, d('pingB', 'pingA') / med.tls],
    ['call controller: frame in, the C function, frame out (rcall alpha - PING alpha)', d('callA', 'pingA'), '', undefined],
    ['a call on another host (rcall beta - rcall alpha)', d('callB', 'callA'), `the hop above ${d('pingB', 'pingA').toFixed(3)}`, d('callB', 'callA') / d('pingB', 'pingA')],
    ['executor: spawn, relay, exit status (EXEC alpha - PING alpha)', d('execA', 'pingA'), `spawn ${med.spawn.toFixed(3)}`, d('execA', 'pingA') / med.spawn],
    ['a job on another host (EXEC beta - EXEC alpha)', d('execB', 'execA'), `the hop above ${d('pingB', 'pingA').toFixed(3)}`, d('execB', 'execA') / d('pingB', 'pingA')],
    ['rex run CLI start: Node, rex code, connect (CLI - EXEC beta)', d('cli', 'execB'), `node -e 0 ${med.node.toFixed(3)}`, d('cli', 'execB') / med.node],
  ];
  console.log('\n## per hop (differences of medians, ms)');
  for (const [name, v, peer, ratio] of hops) console.log(`${name.padEnd(82)} ${v.toFixed(3).padStart(8)}${peer ? `   peer: ${peer}  ratio ${ratio.toFixed(2)}x` : ''}`);
  record({ measure: 'profile: PING beta, median', rex: med.pingB, peer: med.tcp, peerName: 'TCP echo', unit: 'ms', target: 3 });
  console.log(`\nratio PING beta / TCP echo: ${(med.pingB / med.tcp).toFixed(2)}x (target <= 3x); PING beta / (TCP echo + TLS echo): ${(med.pingB / (med.tcp + med.tls)).toFixed(2)}x`);
} finally {
  await cluster.down();
  rmSync(dir, { recursive: true, force: true });
}
