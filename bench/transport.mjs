#!/usr/bin/env node
// Benchmark: the authenticated transport (TLS 1.3, Ed25519 keys pinned by ID)
// against the same protocol v1 over plain TCP and against a raw TCP echo, in
// the same run, each server in a process of its own:
//   1. connection set-up: TCP connect + REX HELLO, vs TLS 1.3 handshake + key pin + REX HELLO;
//   2. steady-state round trip: PING/PONG on an open connection, plain vs TLS;
//   3. for reference, the raw TCP echo of bench/ping.mjs and a routed ping
//      through two real rexds (client -> alpha -> TLS -> beta -> back).
// Target (identity issue): TLS steady-state round trip within 1.5x of plain.
// Run: `node bench/transport.mjs [N]` (after npm run build).
import { ms, record, stats, tcpEchoRtts } from './lib.mjs';
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { createServer as tcpServer } from 'node:net';
import { createServer as tlsServer } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../dist/cluster/cluster.js';
import { createKeyMaterial, certInfo } from '../dist/keys/certs.js';
import { connectPinned, tlsServerOptions } from '../dist/keys/tls.js';
import { Connection } from '../dist/protocol/connection.js';
import { RexClient } from '../dist/runtime/client.js';
import { encodeFrame } from '../dist/protocol/frame.js';
import { messageToFrame } from '../dist/protocol/messages.js';

const N = Number(process.argv[2] === '--server' ? 0 : (process.argv[2] ?? 3000));
const HANDSHAKES = Math.max(50, Math.floor(N / 15));
const WARMUP = 300;

const us = (x) => `${(x * 1000).toFixed(1).padStart(7)} us`;
const line = (label, st) => console.log(`  ${label.padEnd(52)} median ${us(st.median)}  p90 ${us(st.p90)}  p99 ${us(st.p99)}`);

async function openPlain(port) {
  const sock = await new Promise((r, j) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => r(s));
    s.once('error', j);
  });
  const conn = new Connection(sock, { initiator: true, local: { role: 'client', software: 'bench' }, label: 'plain' });
  await conn.handshake();
  return conn;
}

async function openTls(port, own, serverId) {
  const { sock } = await connectPinned({
    host: '127.0.0.1',
    port,
    own,
    timeoutMs: 5000,
    label: 'tls',
    pin: (c) => (c && c.id === serverId ? undefined : 'wrong key'),
  });
  const conn = new Connection(sock, { initiator: true, local: { role: 'client', software: 'bench' }, label: 'tls' });
  await conn.handshake();
  return conn;
}

async function roundTrips(conn) {
  const nonce = new Uint8Array(16);
  const out = [];
  for (let i = 0; i < WARMUP + N; i++) {
    const t0 = ms();
    await conn.request({ type: 'PING', nonce });
    if (i >= WARMUP) out.push(ms() - t0);
  }
  return out;
}

async function setups(open) {
  const out = [];
  for (let i = 0; i < HANDSHAKES + 20; i++) {
    const t0 = ms();
    const c = await open();
    const dt = ms() - t0;
    c.close();
    if (i >= 20) out.push(dt);
  }
  return out;
}

const tcpEcho = (size) => tcpEchoRtts(size, N, WARMUP);

async function routed() {
  const dir = mkdtempSync(join(tmpdir(), 'rex-bench-'));
  const cluster = await LocalCluster.up({ dir, hosts: 2, netns: false, loadInterval: '1s', logLevel: 'warn' });
  try {
    await cluster.waitAllReachable();
    const c = await RexClient.connect({ socket: cluster.host('alpha').socket });
    const out = [];
    for (let i = 0; i < WARMUP + N; i++) {
      const r = await c.ping('beta');
      if (i >= WARMUP) out.push(r.rttMs);
    }
    c.close();
    return out;
  } finally {
    await cluster.down();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const server = fork(new URL(import.meta.url), ['--server'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ports = await new Promise((r) => server.once('message', r));
  const clientKey = await createKeyMaterial('bench.client');
  const own = { name: 'bench.client', ...clientKey };
  certInfo(clientKey.certPem, 'client'); // fail early on a bad key
  const pingBytes = encodeFrame(messageToFrame({ type: 'PING', stream: 1, nonce: new Uint8Array(16) })).length;
  console.log(`Transport: protocol v1 over TLS 1.3 (Ed25519, pinned) vs plain TCP vs raw TCP echo; ${N} round trips, ${HANDSHAKES} set-ups each, ${pingBytes}-byte PING`);

  const setPlain = stats(await setups(() => openPlain(ports.plain)));
  const setTls = stats(await setups(() => openTls(ports.tls, own, ports.id)));
  console.log('Connection set-up (connect + REX HELLO):');
  line('plain TCP', setPlain);
  line('TLS 1.3 handshake + key pin', setTls);
  console.log(`  ratio (median): ${(setTls.median / setPlain.median).toFixed(2)}x`);

  // Interleave the two steady-state runs so that noise from other work on the machine hits both.
  const plain = await openPlain(ports.plain);
  const tls = await openTls(ports.tls, own, ports.id);
  const rp = [];
  const rt = [];
  for (let k = 0; k < 4; k++) {
    rp.push(...(await roundTrips(plain)));
    rt.push(...(await roundTrips(tls)));
  }
  plain.close();
  tls.close();
  const sp = stats(rp);
  const st = stats(rt);
  const echo = stats(await tcpEcho(pingBytes));
  console.log('Steady-state round trip on an open connection:');
  line('raw TCP echo (bench/echo-server.mjs)', echo);
  line('REX PING over plain TCP (the foundation transport)', sp);
  line('REX PING over TLS 1.3, authenticated', st);
  server.kill();
  const rr = stats(await routed());
  line('routed: client -> alpha -> TLS -> beta -> back', rr);
  const ratio = st.median / sp.median;
  console.log(`  TLS vs plain (median): ${ratio.toFixed(2)}x   target: <= 1.5x   ${ratio <= 1.5 ? 'MET' : 'NOT MET'}`);
  record({ measure: 'PING over TLS 1.3 on an open connection, median', rex: st.median, peer: sp.median, peerName: 'PING over plain TCP', unit: 'ms', target: 1.5 });
  console.log(`  TLS vs raw TCP echo (median): ${(st.median / echo.median).toFixed(2)}x`);
}

// ---------------------------------------------------------------- server process
async function serverProcess() {
  const serverKey = await createKeyMaterial('bench.server');
  const own = { name: 'bench.server', ...serverKey };
  const serve = (sock) => {
    const conn = new Connection(sock, {
      initiator: false,
      local: { role: 'daemon', host: 'bench', software: 'bench' },
      label: 'bench client',
      onRequest: (m) => ({ type: 'PONG', ...(m.nonce ? { nonce: m.nonce } : {}), host: 'bench', hops: 0 }),
    });
    conn.handshake().catch(() => {});
    sock.on('error', () => {});
  };
  const plain = tcpServer(serve).listen(0, '127.0.0.1');
  const tls = tlsServer(tlsServerOptions(own), serve).listen(0, '127.0.0.1');
  tls.on('tlsClientError', () => {});
  await Promise.all([plain, tls].map((s) => new Promise((r) => s.once('listening', r))));
  process.send({ plain: plain.address().port, tls: tls.address().port, id: serverKey.id });
  process.on('disconnect', () => process.exit(0));
}


if (process.argv[2] === '--server') await serverProcess();
else await main();
