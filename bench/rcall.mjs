#!/usr/bin/env node
// rcall round trip and throughput, REX against a peer in the same run: calls of
// neg32 (4-byte frames) through the protocol (a Connection to a stand-in daemon
// answering with CallManager.handle, as rexd will) into the generic controller,
// against a raw Unix-socket echo of the same 4 bytes. Prints the ratios.
// Needs `npm run build` and the native build. rexd is not wired yet, so this is
// one host; the cross-host and gRPC comparison of the issue needs rexd.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { CallManager, loadProgram, CallChannel } = await import(join(root, 'dist/calls/index.js'));
const { Connection } = await import(join(root, 'dist/protocol/connection.js'));

const dir = mkdtempSync(join(tmpdir(), 'rex-bench-rcall-'));
const src = join(dir, 'b.c');
writeFileSync(src, '#include <stdint.h>\nint32_t neg32(int32_t x) { return -x; }\n');
const lib = join(dir, 'libb.so');
execFileSync('gcc', ['-g', '-O2', '-shared', '-fPIC', '-o', lib, src]);
const { spec } = loadProgram({ name: 'b', object: lib });
const manager = new CallManager({ programs: () => spec, maxControllers: 2 });
const sock = join(dir, 'd.sock');
const server = createServer((s) => {
  const conn = new Connection(s, { initiator: false, local: { role: 'daemon', host: 'bench', software: 'bench' }, label: 'bench', onRequest: (m) => manager.handle(m, { name: 'bench', conn }) });
  conn.handshake().catch(() => {});
});
await new Promise((r) => server.listen(sock, r));
const c = new Connection(connect(sock), { initiator: true, local: { role: 'client', software: 'bench' }, label: 'bench' });
await c.handshake();
const ch = new CallChannel(c);
const frame = new Uint8Array([5, 0, 0, 0]);

const echoSock = join(dir, 'e.sock');
const echo = createServer((s) => s.pipe(s));
await new Promise((r) => echo.listen(echoSock, r));
const es = connect(echoSock);
await new Promise((r) => es.once('connect', r));
const echoOnce = () => new Promise((r) => { es.once('data', r); es.write(frame); });

const N = 2000;
for (let i = 0; i < 200; i++) { await ch.call('b.neg32', frame); await echoOnce(); }
let t = process.hrtime.bigint();
for (let i = 0; i < N; i++) await ch.call('b.neg32', frame);
const rexRtt = Number(process.hrtime.bigint() - t) / 1e3 / N;
t = process.hrtime.bigint();
for (let i = 0; i < N; i++) await echoOnce();
const echoRtt = Number(process.hrtime.bigint() - t) / 1e3 / N;
const M = 20000;
t = process.hrtime.bigint();
await Promise.all(Array.from({ length: M }, () => ch.call('b.neg32', frame)));
const rexTput = M / (Number(process.hrtime.bigint() - t) / 1e9);

console.log(`rcall round trip (TS -> protocol -> manager -> C controller): ${rexRtt.toFixed(1)} us`);
console.log(`raw Unix-socket echo of the same 4 bytes:                     ${echoRtt.toFixed(1)} us`);
console.log(`ratio rcall/echo: ${(rexRtt / echoRtt).toFixed(2)}`);
console.log(`rcall throughput, ${M} in flight on one connection, 2 controllers: ${Math.round(rexTput)} calls/s`);
c.close();
es.destroy();
await new Promise((r) => server.close(r));
await new Promise((r) => echo.close(r));
await manager.close();
rmSync(dir, { recursive: true, force: true });
