#!/usr/bin/env node
// Latency under load (issue 17 item 5), on a 3-host local cluster, with the library's spawn():
//   1. BURST jobs started at once from one client, each a fixed piece of CPU work: every job's time from
//      spawn() to 'close', its p50, p90, p99 and the ratio p99/p50 (target <= 3x);
//   2. JOBS such jobs, at most IN_FLIGHT at a time: the makespan against the ideal, the total work divided
//      by the cores that do it (the hosts of a local cluster share this machine's cores: os.availableParallelism()).
// The unit of work is timed here first, run locally by the same shell, so the ideal is in this run's units.
// Run: `npm run bench -- load` (or `node bench/load.mjs [BURST] [JOBS]`).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { record, stats } from './lib.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const { LocalCluster } = await import(join(root, 'dist/cluster/cluster.js'));
const { spawn } = await import(join(root, 'dist/runtime/spawn.js'));

const BURST = Number(process.argv[2] ?? 200);
const JOBS = Number(process.argv[3] ?? 1000);
const IN_FLIGHT = 32;
// A fixed piece of CPU work in the shell: a loop of LOOP iterations.
const LOOP = Number(process.env.BENCH_LOOP ?? 20000);
const WORK = ['-c', `i=0; while [ $i -lt ${LOOP} ]; do i=$((i+1)); done`];

const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

/** The unit of work run locally, sequentially: its median time, ms. */
function unitMs() {
  const xs = [];
  for (let i = 0; i < 12; i++) {
    const t0 = process.hrtime.bigint();
    spawnSync('/bin/sh', WORK);
    if (i >= 2) xs.push(ms(t0));
  }
  return stats(xs).median;
}

/** One job through the library; resolves with its time, spawn() to 'close', and where it ran. */
function job(socket) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const p = spawn('/bin/sh', WORK, { socket });
    p.stdout.resume();
    p.stderr.resume();
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve({ ms: ms(t0), host: p.host }) : reject(new Error(`job exited ${code}`))));
  });
}

const dir = mkdtempSync(join(tmpdir(), 'rex-bench-load-'));
const cluster = await LocalCluster.up({ dir, hosts: 3, netns: false, loadInterval: '200ms', logLevel: 'warn' });
try {
  await cluster.waitAllReachable();
  const socket = cluster.host('alpha').socket;
  const cores = availableParallelism();
  const unit = unitMs();
  console.log(`unit of work: /bin/sh loop of ${LOOP}, ${unit.toFixed(1)} ms run locally; ${cores} cores shared by the 3 hosts`);
  for (let i = 0; i < 20; i++) await job(socket); // warm the hosts' caches and links

  console.log(`\n## ${BURST} jobs at once from one client`);
  const t0 = process.hrtime.bigint();
  const burst = await Promise.all(Array.from({ length: BURST }, () => job(socket)));
  const wall = ms(t0);
  const s = stats(burst.map((b) => b.ms));
  const where = new Map();
  for (const b of burst) where.set(b.host, (where.get(b.host) ?? 0) + 1);
  console.log(`per job: p50 ${s.median.toFixed(0)} ms, p90 ${s.p90.toFixed(0)} ms, p99 ${s.p99.toFixed(0)} ms, max ${Math.max(...burst.map((b) => b.ms)).toFixed(0)} ms; all done in ${wall.toFixed(0)} ms`);
  console.log(`landed: ${[...where].map(([h, n]) => `${h} ${n}`).join(', ')}`);
  console.log(`ratio p99 / p50: ${(s.p99 / s.median).toFixed(2)}x (target <= 3x)`);
  record({ measure: `${BURST} jobs at once over 3 hosts: p99 job time (peer: p50 of the same burst)`, rex: s.p99, peer: s.median, peerName: 'p50', unit: 'ms', target: 3 });
  const idealBurst = (BURST * unit) / cores;
  console.log(`makespan of the burst: ${wall.toFixed(0)} ms; ideal (total work / cores) ${idealBurst.toFixed(0)} ms; ratio ${(wall / idealBurst).toFixed(2)}x`);

  console.log(`\n## ${JOBS} jobs, at most ${IN_FLIGHT} in flight`);
  let next = 0;
  const t1 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < JOBS) {
        next++;
        await job(socket);
      }
    }),
  );
  const makespan = ms(t1);
  const ideal = (JOBS * unit) / cores;
  console.log(`makespan ${makespan.toFixed(0)} ms; ideal (total work / cores) ${ideal.toFixed(0)} ms; ratio ${(makespan / ideal).toFixed(2)}x`);
  record({ measure: `makespan of ${JOBS} jobs, ${IN_FLIGHT} in flight (peer: total work / cores)`, rex: makespan, peer: ideal, peerName: 'ideal', unit: 'ms' });
} finally {
  await cluster.down();
  rmSync(dir, { recursive: true, force: true });
}
