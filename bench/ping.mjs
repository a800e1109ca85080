#!/usr/bin/env node
// Benchmark: a REX ping round trip (client -> local rexd over the Unix socket ->
// peer rexd over mutually authenticated TLS 1.3 -> back)
// against a raw TCP echo round trip between two Node processes, in the same run.
// Prints both and the ratio. Target (foundation issue): REX within 3x raw TCP.
// Run with `npm run bench` (after npm install), or `node bench/ping.mjs [N]`.
import { record, stats, tcpEchoRtts } from './lib.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../dist/cluster/cluster.js';
import { RexClient } from '../dist/runtime/client.js';
import { encodeFrame } from '../dist/protocol/frame.js';
import { messageToFrame } from '../dist/protocol/messages.js';

const N = Number(process.argv[2] ?? 3000);
const WARMUP = 300;

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

const tcpEcho = (size) => tcpEchoRtts(size, N, WARMUP);

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
record({ measure: 'routed PING client->alpha->beta->back, median', rex: rex.median, peer: tcp.median, peerName: 'raw TCP echo', unit: 'ms', target: 3 });
