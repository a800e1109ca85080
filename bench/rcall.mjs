#!/usr/bin/env node
// Remote call across two hosts of a local cluster, against its peers, in the
// same run: a 4-byte neg32 call from a client of alpha's rexd to a controller
// on beta (alpha's rexd forwards it over TLS 1.3 to beta's rexd, which runs it
// in the generic C controller), from TypeScript (RexClient.call) and from C
// (rcall(), one connection per call as librex does); against @grpc/grpc-js
// unary calls of the same 4-byte payload on loopback, and a raw TCP echo.
// Round trip (sequential calls) and throughput (many in flight on one
// connection). Needs `npm run build`, the native build and the devDependency
// @grpc/grpc-js. Targets (issue 7): round trip no slower than gRPC's unary
// call, throughput at least gRPC's.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { LocalCluster } = await import(join(root, 'dist/cluster/cluster.js'));
const { CallChannel } = await import(join(root, 'dist/runtime/transport.js'));
const grpc = await import('@grpc/grpc-js');
const protoLoader = await import('@grpc/proto-loader');
const { record } = await import('./lib.mjs');

const N = Number(process.env.BENCH_N ?? 2000);
const M = Number(process.env.BENCH_INFLIGHT ?? 10000);
const dir = mkdtempSync(join(tmpdir(), 'rex-bench-rcall-'));
const us = (t0) => Number(process.hrtime.bigint() - t0) / 1e3;

// The library, offered as program b on every host.
const src = join(dir, 'b.c');
writeFileSync(src, '#include <stdint.h>\nint32_t neg32(int32_t x) { return -x; }\n');
const lib = join(dir, 'libb.so');
execFileSync('gcc', ['-g', '-O2', '-shared', '-fPIC', '-o', lib, src]);
const xml = join(dir, 'libb.xml');
writeFileSync(xml, execFileSync(process.execPath, [join(root, 'dist/bin/repdb.js'), '-gx', '--program', 'b', lib], { encoding: 'utf8' }));

const cluster = await LocalCluster.up({ dir: join(dir, 'cluster'), hosts: 2, netns: false, loadInterval: '500ms', peerTimeout: '2s', rc: [`programs : b=${lib}:${xml}`] });
const results = {};
try {
  await cluster.waitAllReachable();
  const c = await cluster.client('alpha');
  const frame = new Uint8Array([5, 0, 0, 0]);
  const call = () => c.call('beta.b.neg32', frame);
  for (let i = 0; i < 300; i++) await call();
  let t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) await call();
  results.rexTs = us(t) / N;
  // Many in flight: the runtime's channel keeps at most 512 on the connection (rexd answers BUSY above 1024).
  const ch = new CallChannel(c.conn);
  t = process.hrtime.bigint();
  await Promise.all(Array.from({ length: M }, () => ch.call('beta.b.neg32', frame)));
  results.rexTput = M / (us(t) / 1e6);
  c.close();

  // C: rcall() in a loop (each call connects to the local rexd, as librex does).
  const csrc = join(dir, 'loop.c');
  writeFileSync(
    csrc,
    `#include <stdio.h>\n#include <stdlib.h>\n#include <stdint.h>\n#include <time.h>\n#include <rex.h>\n` +
      `int main(int argc, char **argv) { int n = atoi(argv[1]); int32_t x = 5, r = 0; struct timespec a, b;\n` +
      `  for (int i = 0; i < 100; i++) if (rcall("beta.b.neg32", &x, 4, &r, 4) < 0) { fprintf(stderr, "%s\\n", rex_last_error()); return 1; }\n` +
      `  clock_gettime(CLOCK_MONOTONIC, &a); for (int i = 0; i < n; i++) if (rcall("beta.b.neg32", &x, 4, &r, 4) < 0) return 1;\n` +
      `  clock_gettime(CLOCK_MONOTONIC, &b); printf("%f\\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n); return r == -5 ? 0 : 2; }\n`,
  );
  const exe = join(dir, 'loop');
  execFileSync('gcc', ['-O2', `-I${join(root, 'native/include')}`, '-o', exe, csrc, join(root, 'native/build/lib/librex.a')]);
  results.rexC = Number(execFileSync(exe, [String(N)], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket } }));
} finally {
  await cluster.down();
}

// gRPC unary on loopback, same 4-byte payload.
const proto = join(dir, 'b.proto');
writeFileSync(proto, 'syntax = "proto3";\npackage b;\nmessage Frame { bytes data = 1; }\nservice B { rpc Neg32 (Frame) returns (Frame); }\n');
const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(proto, {}));
const server = new grpc.Server();
server.addService(pkg.b.B.service, {
  Neg32: (callObj, cb) => {
    const x = Buffer.from(callObj.request.data).readInt32LE(0);
    const out = Buffer.alloc(4);
    out.writeInt32LE(-x);
    cb(null, { data: out });
  },
});
const port = await new Promise((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
const gc = new pkg.b.B(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
const gcall = () => new Promise((res, rej) => gc.Neg32({ data: Buffer.from([5, 0, 0, 0]) }, (e, r) => (e ? rej(e) : res(r))));
for (let i = 0; i < 300; i++) await gcall();
let t = process.hrtime.bigint();
for (let i = 0; i < N; i++) await gcall();
results.grpc = us(t) / N;
t = process.hrtime.bigint();
await Promise.all(Array.from({ length: M }, gcall));
results.grpcTput = M / (us(t) / 1e6);
gc.close();
server.forceShutdown();

// Raw TCP echo of the same 4 bytes.
const echo = createServer((s) => s.pipe(s));
await new Promise((r) => echo.listen(0, '127.0.0.1', r));
const es = connect(echo.address().port, '127.0.0.1');
es.setNoDelay(true);
await new Promise((r) => es.once('connect', r));
const echoOnce = () => new Promise((r) => { es.once('data', r); es.write(Buffer.from([5, 0, 0, 0])); });
for (let i = 0; i < 300; i++) await echoOnce();
t = process.hrtime.bigint();
for (let i = 0; i < N; i++) await echoOnce();
results.echo = us(t) / N;
es.destroy();
echo.close();
rmSync(dir, { recursive: true, force: true });

const f = (x) => x.toFixed(1).padStart(8);
console.log(`remote call, 4-byte frame, alpha -> beta (TLS 1.3 between hosts), ${N} sequential calls:`);
console.log(`  REX rcall from TypeScript (RexClient.call)    ${f(results.rexTs)} us`);
console.log(`  REX rcall() from C (a connection per call)    ${f(results.rexC)} us`);
console.log(`  gRPC unary (@grpc/grpc-js, loopback, 1 hop)   ${f(results.grpc)} us`);
console.log(`  raw TCP echo (loopback)                       ${f(results.echo)} us`);
console.log(`  ratio REX(TS)/gRPC ${(results.rexTs / results.grpc).toFixed(2)}   REX(C)/gRPC ${(results.rexC / results.grpc).toFixed(2)}   REX(TS)/echo ${(results.rexTs / results.echo).toFixed(2)}   (target: REX/gRPC <= 1)`);
record({ measure: `rcall round trip, 4-byte frame, alpha -> beta, ${N} sequential, TS`, rex: results.rexTs, peer: results.grpc, peerName: 'grpc-js unary', unit: 'us', target: 1 });
record({ measure: `rcall round trip, the same from C rcall()`, rex: results.rexC, peer: results.grpc, peerName: 'grpc-js unary', unit: 'us', target: 1 });
console.log(`throughput, ${M} calls in flight on one connection:`);
console.log(`  REX ${Math.round(results.rexTput)} calls/s   gRPC ${Math.round(results.grpcTput)} calls/s   ratio REX/gRPC ${(results.rexTput / results.grpcTput).toFixed(2)}   (target: >= 1)`);
record({ measure: `rcall throughput, ${M} in flight on one connection`, rex: results.rexTput, peer: results.grpcTput, peerName: 'grpc-js', unit: 'calls/s', target: 1, better: 'higher' });
