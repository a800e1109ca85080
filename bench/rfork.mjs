#!/usr/bin/env node
// Benchmark: rfork() across hosts (docs/RFORK.md section 6.1) against a local
// fork(), in the same run, on a 2-host local cluster (alpha, beta; network
// namespaces when root). Every program runs on alpha with REX_HOST=beta.
//   1. rfork() until the child runs its first instruction on beta (rfork
//      returns in the parent only then) and until wait() sees it exit,
//      against fork() (native/test/migration/rf_bench); target: 5 ms median.
//      For reference, rexecve() of /bin/true on beta (the same daemons' path
//      without an image) against a local /bin/true, spawn to exit.
//   2. Image bytes: what beta actually received for the image (its rexd logs
//      each file a transfer brings, 'EXEC: program transferred from the
//      origin', with the byte count, and an image up to 768 KiB as 'EXEC:
//      rfork image received inline' with its size and the deflated bytes
//      sent; an image is the /proc/PID/fd/N the stub offered), for the seed's example test_rfork_1 itself and for rf_size,
//      a program of the same shape that also dumps itself once, as rfork's
//      stub does, to learn its private pages (struct rex_dump_info). Targets:
//      the seed's claim (under 30 KB) and the issue's (at most the private
//      pages the remote cannot map from a file plus 16 KiB of metadata plus
//      the XSAVE area the image stores, read from rf_size's image with
//      readImageInfo: docs/IMAGE.md).
//   3. 256 MiB touched: rf_size 256 (rfork() wall time, bytes sent, MB/s,
//      against fork() of the same process) and rf_mem, which checks every
//      word in the child on beta, spawn to exit.
// Run: `npm run bench -- rfork` (with bench/rfork-local.mjs, the local half)
// or `node bench/rfork.mjs [N]` after `npx tsc` (it builds the native parts).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalCluster } from '../dist/cluster/cluster.js';
import { netnsAvailable } from '../dist/cluster/netns.js';
import { readImageInfo } from '../dist/rfork/image.js';
import { record, stats } from './lib.mjs';

const N = Number(process.argv[2] ?? 100);
const root = fileURLToPath(new URL('..', import.meta.url));
const native = join(root, 'native');
const bin = join(native, 'build', 'test', 'migration');
const TARGET_MS = 5;
const META = 16384;

const f2 = (x) => x.toFixed(2);
const kib = (b) => `${(b / 1024).toFixed(1)} KiB`;
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');

/** Runs a program from alpha's side; resolves with its stdout, rejecting on a non-zero exit. */
function run(cmd, args, env, timeoutMs = 120_000) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', reject);
    c.on('close', (code, signal) => {
      clearTimeout(timer);
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code === 0) resolve({ out, wallMs });
      else reject(new Error(`${cmd} ${args.join(' ')}: exit ${code ?? signal}\n${out}${err}`));
    });
  });
}

/** The numbers after `name` on its line of `out` (rf_bench, rf_size). */
function numbers(out, name) {
  const m = new RegExp(`^${name}((?: \\d+)+)$`, 'm').exec(out);
  if (!m) throw new Error(`no "${name}" line in:\n${out}`);
  return m[1].trim().split(' ').map(Number);
}

/**
 * Bytes beta received by transfer since `from` (a byte offset in its log):
 * images (the stub's /proc/PID/fd/N) and any other file (program, library)
 * it had to fetch. The count is file content, before the protocol's framing
 * and TLS.
 */
function transferred(logFile, from) {
  const text = readFileSync(logFile).subarray(from).toString('utf8');
  let image = 0;
  let sent = 0;
  let images = 0;
  let other = 0;
  for (const l of text.split('\n')) {
    // Small images come inside the EXEC ('EXEC: rfork image received inline'), larger ones by FETCH.
    // The inline line was 'EXEC: ...' before RFORK (issue 15) and is 'RFORK: ...' since: both are counted.
    if (!l.includes('EXEC: program transferred from the origin') && !/(EXEC|RFORK): rfork image received inline/.test(l)) continue;
    const e = JSON.parse(l);
    if (/^\/proc\/\d+\/fd\/\d+$/.test(e.program)) {
      image += e.bytes;
      sent += e.sent ?? e.bytes; // an inline image crosses the link deflated
      images++;
    } else other += e.bytes;
  }
  return { image, sent, images, other };
}

const logSize = (f) => readFileSync(f).length;

function row(name, nsList) {
  const s = stats(nsList.map((x) => x / 1e6));
  console.log(`${name.padEnd(42)} median ${f2(s.median).padStart(8)} ms  p90 ${f2(s.p90).padStart(8)} ms  min ${f2(s.min).padStart(8)} ms`);
  return s;
}

/**
 * Builds what this bench runs. Engineers share one tree: when librex does not
 * build at this moment (someone's edit in progress) but every binary exists,
 * the bench goes on with those and says so rather than failing.
 */
function build() {
  const bins = [join(native, 'build', 'bin', 'test_rfork_1'), join(native, 'build', 'bin', 'rex-restore'), ...['rf_bench', 'rf_size', 'rf_mem'].map((b) => join(bin, b))];
  try {
    execFileSync('make', ['-s', '-C', native, ...bins.map((b) => b.slice(native.length + 1))], { stdio: 'pipe' });
  } catch (e) {
    if (!bins.every(existsSync)) throw e;
    console.log(`(make failed, using the binaries already built: ${String(e.stderr).trim().split('\n')[0]})`);
  }
}

async function main() {
  build();
  const netns = netnsAvailable();
  const dir = mkdtempSync(join(tmpdir(), 'rex-bench-rfork-'));
  // info: beta's log must carry the transfer lines the image bytes are read from.
  const cluster = await LocalCluster.up({ dir, hosts: 2, netns, loadInterval: '200ms', logLevel: 'info' });
  try {
    await cluster.waitAllReachable();
    const env = { ...process.env, REX_SOCKET: cluster.host('alpha').socket, REX_HOST: 'beta' };
    const betaLog = cluster.host('beta').logFile;
    console.log(`2 hosts (alpha -> beta), ${netns ? 'network namespaces' : 'loopback, no namespaces (not root)'}; load average at start: ${load()}`);
    // The CPU each host advertises (docs/PLACEMENT.md, CPU compatibility): rfork places an image only where it can run.
    const viewer = await cluster.client('alpha');
    try {
      for (const h of await viewer.hosts()) console.log(`CPU of ${h.name}: ${h.cpu ? h.cpu.description : `unknown${h.cpuError ? ` (${h.cpuError})` : ''}`}`);
    } finally {
      viewer.close();
    }

    // Warm up: the first rfork may fetch nothing (same files), but pages, caches and connections warm.
    await run(join(bin, 'rf_bench'), ['rfork', '5'], env);

    console.log(`\n## rfork() to beta against a local fork() (${N} each; a child that exits at once)`);
    const { out } = await run(join(bin, 'rf_bench'), ['rfork', String(N)], env, 300_000);
    const rf = row('rfork(): until the child runs on beta', numbers(out, 'rfork_ns'));
    const fk = row('fork(): until it returns in the parent', numbers(out, 'fork_ns'));
    const rfw = row('rfork() + wait()', numbers(out, 'rfork_wait_ns'));
    const fkw = row('fork() + wait()', numbers(out, 'fork_wait_ns'));
    console.log(`ratio rfork / fork: median ${(rf.median / fk.median).toFixed(0)}x, p90 ${(rf.p90 / fk.p90).toFixed(0)}x; round trip to wait(): median ${(rfw.median / fkw.median).toFixed(0)}x`);
    record({ measure: `rfork() until the child runs on beta, median (target <= ${TARGET_MS} ms: ${rf.median <= TARGET_MS ? 'met' : 'NOT met'})`, rex: rf.median, peer: fk.median, peerName: 'local fork()', unit: 'ms' });
    console.log(`target: child running remotely within ${TARGET_MS} ms median: ${rf.median <= TARGET_MS ? 'MET' : 'NOT MET'} (${f2(rf.median)} ms)`);
    // The same daemons' path without an image, for reference: what any remote start costs here.
    const stub = join(dir, 'rexecve_demo');
    execFileSync('cc', ['-O2', '-I', join(native, 'include'), '-o', stub, join(native, 'test', 'rexecve_demo.c'), join(native, 'build', 'lib', 'librex.a'), '-lm']);
    const times = async (cmd, args) => {
      const xs = [];
      for (let i = 0; i < Math.min(N, 50) + 3; i++) {
        const { wallMs } = await run(cmd, args, env);
        if (i >= 3) xs.push(wallMs * 1e6);
      }
      return xs;
    };
    const ex = row('reference: rexecve() stub, beta /bin/true', await times(stub, ['beta', '/bin/true']));
    const lo = row('reference: local /bin/true', await times('/bin/true', []));
    console.log(`(spawn to exit from Node: the remote start of a program costs ${f2(ex.median - lo.median)} ms median here, the path rfork's image also takes)`);

    console.log("\n## image bytes sent to beta (file content received, from beta's rexd log)");
    let at = logSize(betaLog);
    await run(join(native, 'build', 'bin', 'test_rfork_1'), [], env);
    const seed = transferred(betaLog, at);
    at = logSize(betaLog);
    const smallImage = join(dir, 'rf_size.img');
    const small = await run(join(bin, 'rf_size'), ['rfork'], { ...env, RF_SIZE_IMAGE: smallImage });
    const smallSent = transferred(betaLog, at);
    const [dumpBytes, , priv] = parseDump(small.out);
    // The XSAVE bytes the image stores (up to the last component in use; more on a CPU with AVX-512): part of the bound.
    const xsave = readImageInfo(smallImage, { metadataOnly: true }).xsaveLen;
    console.log(`test_rfork_1 (the seed's example):     image ${kib(seed.image)} (${seed.image} B), sent ${kib(seed.sent)} (${seed.sent} B, deflated), other files ${seed.other} B`);
    console.log(`rf_size (same shape, child silent):    image ${kib(smallSent.image)} (${smallSent.image} B), sent ${kib(smallSent.sent)} (${smallSent.sent} B), other files ${smallSent.other} B`);
    console.log(`rf_size's own dump just before rfork:  image ${kib(dumpBytes)}, private pages ${kib(priv * 4096)} (${priv} pages)`);
    const bound = priv * 4096 + META + xsave;
    console.log(`seed's claim (< 30 KB = 30720 B sent):  ${seed.sent < 30720 ? 'MET' : 'NOT MET'} (${seed.sent} B sent, ${(seed.sent / 30720).toFixed(2)}x the claim; the image itself is ${seed.image} B)`);
    console.log(`issue's target (private pages + 16 KiB + the XSAVE area stored, ${xsave} B here = ${bound} B): rf_size's image ${smallSent.image} B: ${smallSent.image <= bound ? 'MET' : 'NOT MET'} (image - private pages ${smallSent.image - priv * 4096} B)`);

    console.log('\n## 256 MiB touched');
    at = logSize(betaLog);
    const bigImage = join(dir, 'rf_size-256.img');
    const big = await run(join(bin, 'rf_size'), ['rfork', '256'], { ...env, RF_SIZE_IMAGE: bigImage }, 300_000);
    const bigSent = transferred(betaLog, at);
    const [bigDump, , bigPriv] = parseDump(big.out);
    const bigXsave = readImageInfo(bigImage, { metadataOnly: true }).xsaveLen;
    rmSync(bigImage);
    const [rforkNs, forkNs] = parseTimes(big.out);
    const mbps = bigSent.image / 1048576 / (rforkNs / 1e9);
    console.log(`rfork() of 256 MiB until the child runs on beta: ${f2(rforkNs / 1e6)} ms; fork(): ${f2(forkNs / 1e6)} ms; ratio ${(rforkNs / forkNs).toFixed(0)}x`);
    console.log(`image sent ${(bigSent.image / 1048576).toFixed(1)} MiB (own dump ${(bigDump / 1048576).toFixed(1)} MiB, private pages ${(bigPriv * 4096 / 1048576).toFixed(1)} MiB, image - private pages ${bigSent.image - bigPriv * 4096} B: ${bigSent.image <= bigPriv * 4096 + META + bigXsave ? 'within' : 'OVER'} the target, 16 KiB + the XSAVE area stored = ${META + bigXsave} B)`);
    console.log(`migration throughput (image bytes / rfork wall time): ${mbps.toFixed(0)} MB/s`);
    record({ measure: `256 MiB rfork to beta, image MB/s (target >= 500 MB/s: ${mbps >= 500 ? 'met' : 'NOT met'})`, rex: mbps, unit: 'MB/s' });
    const mem = await run(join(bin, 'rf_mem'), ['rfork', '256'], env, 300_000);
    if (!/^PASS rf_mem$/m.test(mem.out)) throw new Error(`rf_mem did not pass:\n${mem.out}`);
    console.log(`rf_mem rfork 256 (touch, rfork, child checks every word on beta), spawn to exit: ${f2(mem.wallMs)} ms: PASS`);
    console.log(`\nload average at end: ${load()}`);
  } finally {
    await cluster.down();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** [rfork ns, fork ns] of rf_size's timing line. */
function parseTimes(out) {
  const m = /^rfork_ns (\d+) fork_ns (\d+)$/m.exec(out);
  if (!m) throw new Error(`no rfork_ns line in:\n${out}`);
  return [Number(m[1]), Number(m[2])];
}

/** [image bytes, data pages, private pages] of rf_size's own dump line. */
function parseDump(out) {
  const m = /^dump bytes (\d+) data_pages (\d+) private_pages (\d+)$/m.exec(out);
  if (!m) throw new Error(`no dump line in:\n${out}`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

await main();
