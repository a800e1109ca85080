#!/usr/bin/env node
// Benchmark: a REX ping round trip (client -> local rexd -> peer rexd -> back)
// against a raw TCP echo round trip between two Node processes, in the same run.
// Prints both and the ratio. Target (foundation issue): REX within 3x raw TCP.
// Run with `npm run bench` (after npm install), or `node bench/ping.mjs [N]`.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../dist/cluster/cluster.js';
import { RexClient } from '../dist/runtime/client.js';
import { encodeFrame } from '../dist/protocol/frame.js';
import { messageToFrame } from '../dist/protocol/messages.js';

const N = Number(process.argv[2] ?? 3000);
const WARMUP = 300;

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), p90: q(0.9), p99: q(0.99), min: s[0] };
}
const fmt = (x) => `${(x * 1000).toFixed(1)} us`;

async function rexPing() {
  const dir = mkdtempSync(join(tmpdir(), 'rex-bench-'));
  const cluster = await LocalCluster.up({ dir, hosts: 2, netns: false, loadInterval: '1s', logLevel: 'warn' });
  try {
    await cluster.waitAllReachable();
    const c = await RexClient.connect({ socket: cluster.host('alpha').socket });
    const routed = [];
    const local = [];
    for (let i = 0; i < WARMUP + N; i++) {
      const r = await c.ping('beta');
      if (i >= WARMUP) routed.push(r.rttMs);
    }
    for (let i = 0; i < WARMUP + N; i++) {
      const r = await c.ping();
      if (i >= WARMUP) local.push(r.rttMs);
    }
    c.close();
    return { routed, local };
  } finally {
    await cluster.down();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function tcpEcho(size) {
  // The echo server is a separate Node process, as rexd is.
  const server = fork(new URL('./echo-server.mjs', import.meta.url), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise((r) => server.once('message', r));
  const sock = await new Promise((r, j) => {
    const s = connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    s.once('connect', () => r(s));
    s.once('error', j);
  });
  const msg = Buffer.alloc(size, 7);
  const rtts = [];
  let pending;
  let got = 0;
  sock.on('data', (d) => {
    got += d.length;
    if (got >= size) {
      got -= size;
      pending();
    }
  });
  for (let i = 0; i < WARMUP + N; i++) {
    const t0 = process.hrtime.bigint();
    await new Promise((r) => {
      pending = r;
      sock.write(msg);
    });
    if (i >= WARMUP) rtts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  sock.destroy();
  server.kill();
  return rtts;
}

const pingBytes = encodeFrame(messageToFrame({ type: 'PING', stream: 1, nonce: new Uint8Array(8), target: 'beta' })).length;
console.log(`REX ping vs raw TCP echo: ${N} sequential round trips each (after ${WARMUP} warm-up), ${pingBytes}-byte messages`);
const both = await rexPing();
const rex = stats(both.routed);
const local = stats(both.local);
const tcp = stats(await tcpEcho(pingBytes));
console.log(`  REX ping client->alpha->beta->alpha->client   median ${fmt(rex.median)}  p90 ${fmt(rex.p90)}  p99 ${fmt(rex.p99)}`);
console.log(`  REX ping client->alpha->client (one hop)      median ${fmt(local.median)}  p90 ${fmt(local.p90)}  p99 ${fmt(local.p99)}`);
console.log(`  raw TCP echo client->server->client           median ${fmt(tcp.median)}  p90 ${fmt(tcp.p90)}  p99 ${fmt(tcp.p99)}`);
const ratio = rex.median / tcp.median;
console.log(`  ratio (median): ${ratio.toFixed(2)}x   target: <= 3x   ${ratio <= 3 ? 'MET' : 'NOT MET'}`);
