#!/usr/bin/env node
// Benchmark: rexd start-up, from the moment its process is started to the
// first connection it accepts and answers (HELLO on its Unix socket), beside
// Node's bare start (`node -e ''`, start to exit) and, when this machine has
// one, the start of a comparable daemon (`sshd -t`: OpenSSH reads its
// configuration and host keys and exits), in the same run, alternating
// (rexd, node, sshd, rexd, ...) so that a drift in the machine's speed
// touches every command alike. Prints medians and the ratio of rexd to Node's
// bare start. Target (issue 15): rexd <= 150 ms.
// Run with `npm run bench -- start` (after npm install), or `node bench/start.mjs [N]`.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, watch } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { LocalCluster } from '../dist/cluster/cluster.js';
import { KeyStore } from '../dist/keys/store.js';
import { Connection } from '../dist/protocol/connection.js';
import { distBin } from '../dist/util/paths.js';
import { record, stats, ms } from './lib.mjs';

const N = Number(process.argv[2] ?? 20);
const WARMUP = 2;
const TARGET_MS = 150;
// The file users run (package.json bin: the bundle in dist/bin/).
const rexdBin = distBin('rexd');

/** Connects to `socket` as soon as it is there and completes HELLO; resolves with the time it was answered. */
function firstAnswer(socket, deadline) {
  return new Promise((resolve, reject) => {
    let done = false;
    let trying = false;
    // The socket file appears when rexd binds: a watch on its directory wakes us then, a short poll covers a missed event.
    const w = watch(dirname(socket), () => attempt());
    const poll = setInterval(() => attempt(), 5);
    const finish = (err, t) => {
      if (done) return;
      done = true;
      w.close();
      clearInterval(poll);
      if (err) reject(err);
      else resolve(t);
    };
    function attempt() {
      if (done || trying) return;
      if (ms() > deadline) return finish(new Error(`rexd did not answer on ${socket} in time`));
      if (!existsSync(socket)) return;
      trying = true;
      const s = connect({ path: socket });
      s.once('error', () => {
        trying = false; // bound but not yet listening, or the file of an earlier run: try again
      });
      s.once('connect', async () => {
        try {
          const conn = new Connection(s, { initiator: true, local: { role: 'client', software: 'rex-bench/start' }, label: 'bench', timeoutMs: 10_000 });
          await conn.handshake();
          const t = ms();
          conn.close('bench done');
          finish(undefined, t);
        } catch (e) {
          finish(e);
        }
      });
    }
    attempt();
  });
}

/** One rexd start: milliseconds from spawn to the first HELLO answered; then stops it and waits for its exit. */
async function rexdOnce(host) {
  const t0 = ms();
  const child = spawn(process.execPath, [rexdBin, '--foreground', '--config', host.rcFile], { stdio: 'ignore', env: { ...process.env, REX_CONFIG: host.rcFile } });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    const t = await Promise.race([firstAnswer(host.socket, t0 + 30_000), exited.then(() => Promise.reject(new Error(`rexd exited during start-up (see ${host.logFile})`)))]);
    return t - t0;
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

/** Start to exit of a command, in ms (its status must be 0 unless `anyStatus`). */
function commandOnce(argv, anyStatus = false) {
  const t0 = ms();
  const r = spawnSync(argv[0], argv.slice(1), { stdio: 'ignore' });
  const t = ms() - t0;
  if (r.error) throw r.error;
  if (r.status !== 0 && !anyStatus) throw new Error(`${argv.join(' ')}: status ${r.status}`);
  return { t, status: r.status };
}

/** sshd, if installed, and whether `sshd -t` works here (it needs its host keys and configuration). */
function findSshd() {
  for (const p of ['/usr/sbin/sshd', '/usr/local/sbin/sshd', '/usr/bin/sshd']) {
    if (!existsSync(p)) continue;
    const r = spawnSync(p, ['-t'], { encoding: 'utf8' });
    return { path: p, ok: r.status === 0, why: (r.stderr || r.stdout || `status ${r.status}`).trim().split('\n')[0] };
  }
  return undefined;
}

const dir = mkdtempSync(join(tmpdir(), 'rex-bench-start-'));
try {
  const cluster = await LocalCluster.up({ dir, hosts: 1, netns: false, trust: 'none', logLevel: 'warn' });
  const host = cluster.hosts[0];
  await new KeyStore(host.stateDir).create(host.identity);
  // The socket's directory exists before the first start, so that it can be watched (rexd would make it so: private).
  mkdirSync(dirname(host.socket), { recursive: true, mode: 0o700 });
  const sshd = findSshd();
  console.log(`rexd start to first answered connection vs Node's bare start${sshd?.ok ? ' and sshd -t' : ''}: ${N} runs each (after ${WARMUP} warm-up), alternating`);
  // Whether rexd compiles its bundle with the build's code cache (docs/ARCHITECTURE.md, How rexd loads).
  const cache = spawnSync(process.execPath, [rexdBin, '--version'], { encoding: 'utf8', env: { ...process.env, REX_CODE_CACHE_REPORT: '1' } });
  console.log(`  rexd's code cache: ${/rex code cache: (\w+)/.exec(cache.stderr ?? '')?.[1] ?? 'unknown'} (used = the build's cache for this Node)`);
  const rexd = [];
  const node = [];
  const ssh = [];
  const ratios = [];
  for (let i = 0; i < WARMUP + N; i++) {
    const r = await rexdOnce(host);
    const b = commandOnce([process.execPath, '-e', '']).t;
    const s = sshd?.ok ? commandOnce([sshd.path, '-t']).t : undefined;
    if (i < WARMUP) continue;
    rexd.push(r);
    node.push(b);
    if (s !== undefined) ssh.push(s);
    ratios.push(r / b);
  }
  const fmt = (x) => `${x.toFixed(1)} ms`;
  const line = (what, xs) => {
    const s = stats(xs);
    console.log(`  ${what.padEnd(52)} median ${fmt(s.median)}  min ${fmt(s.min)}  p90 ${fmt(s.p90)}`);
  };
  line('rexd --foreground: spawn to first HELLO answered', rexd);
  line("node -e '': spawn to exit", node);
  if (sshd?.ok) line('sshd -t: spawn to exit', ssh);
  else if (sshd) console.log(`  sshd -t: not measured: ${sshd.path} -t fails here (${sshd.why})`);
  else console.log('  sshd -t: not measured: sshd is not installed on this machine');
  const rexdMedian = stats(rexd).median;
  console.log(`  ratio rexd / node bare start (median of pairs): ${stats(ratios).median.toFixed(2)}x`);
  if (ssh.length) console.log(`  ratio rexd / sshd -t (medians): ${(rexdMedian / stats(ssh).median).toFixed(2)}x`);
  console.log(`  rexd start (median): ${fmt(rexdMedian)}   target: <= ${TARGET_MS} ms   ${rexdMedian <= TARGET_MS ? 'MET' : 'NOT MET'}`);
  record({ measure: `rexd start to first HELLO answered, median (target <= ${TARGET_MS} ms: ${rexdMedian <= TARGET_MS ? 'met' : 'NOT met'})`, rex: rexdMedian, peer: stats(node).median, peerName: "node -e ''", unit: 'ms' });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
