#!/usr/bin/env node
// Benchmark: the local half of rfork() (docs/RFORK.md): rex_dump_self to an
// image file plus rex-restore in a fresh process, against fork()+_exit+waitpid
// of the same process in the same state, in the same run. Three subjects: the
// small program, 256 MiB touched, and 256 MiB with 10% of its pages touched.
// Prints medians, image bytes against the private pages, the metadata bytes
// (header, tables, trailer: everything but page data) against the bound of
// docs/IMAGE.md (16 KiB plus the XSAVE area the image stores, from its header
// through readImageInfo), and the ratios. Last, the cost of an XSAVE layout
// conversion in the restorer (docs/IMAGE.md section 3.1): the small program's
// image as dumped with every component in use (same layout: the plain copy)
// against the same image rewritten to a layout with this CPU's components in
// reverse order (converted), as the restorer reports it with REX_RESTORE_TIMING=1.
// Run with `npm run bench -- rfork` (after npm install) or `node bench/rfork-local.mjs`.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { record } from './lib.mjs';
import { readImageInfo } from '../dist/rfork/image.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const build = join(root, 'native', 'build');
const restorer = join(build, 'bin', 'rex-restore');
const subject = join(build, 'test', 'migration', 'bench_rfork');
execFileSync('make', ['-s', '-C', join(root, 'native'), 'restorer', 'migration-tests'], { stdio: 'inherit' });

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (ns) => `${(ns / 1e6).toFixed(2)} ms`;
const kb = (b) => `${(b / 1024).toFixed(0)} KiB`;

function once(dir, mib, percent) {
  const image = join(dir, 'bench.img');
  const d = spawnSync(subject, [image, String(mib), String(percent)], { encoding: 'utf8' });
  const m = /bytes (\d+) pages (\d+) private (\d+) dump_ns (\d+) fork_ns (\d+)/.exec(d.stdout);
  if (d.status !== 0 || !m) throw new Error(`bench_rfork failed: ${d.stdout}${d.stderr}`);
  const t0 = process.hrtime.bigint();
  const r = spawnSync(restorer, [image], { encoding: 'utf8' });
  const wall = Number(process.hrtime.bigint() - t0);
  const rm = /restore_ns (\d+)/.exec(r.stdout);
  if (r.status !== 0 || !rm) throw new Error(`restore failed: ${r.stdout}${r.stderr}`);
  const tables = pageMaps(image);
  rmSync(image);
  return {
    bytes: Number(m[1]), pages: Number(m[2]), privatePages: Number(m[3]), dump: Number(m[4]), fork: Number(m[5]),
    restore: Number(rm[1]), restoreWall: wall, ...tables,
  };
}

/** What the image's header says (readImageInfo): how the pages are listed (run entries, bitmap words) and the XSAVE bytes stored. */
function pageMaps(image) {
  const info = readImageInfo(image, { metadataOnly: true });
  return { nruns: info.nruns, nwords: info.nwords, xsave: info.xsaveLen };
}

/**
 * The image with every XSAVE component but PKRU marked in use (those that
 * were in their initial state stored as zeros, the same state), laid out as
 * this CPU does (reverse false) or as a CPU that puts this CPU's components
 * in reverse order from byte 640 would (reverse true: valid, and different
 * from this CPU's layout, so the restorer must convert it). Each component's
 * bytes move with it; the tables after the area follow; meta_hash is
 * recomputed. Offsets are docs/IMAGE.md section 2's.
 */
async function withXsaveLayout(img, reverse) {
  const { xxh64, IMAGE_HEADER_SIZE: HS } = await import('../dist/rfork/image.js');
  const a64 = (v) => (v + 63) & ~63;
  const oldLen = img.readUInt32LE(3388);
  let bv = img.readBigUInt64LE(HS + 512);
  const comps = [];
  for (let i = 2; i < 16; i++) {
    const size = img.readUInt16LE(3392 + 4 * i + 2);
    if (size) comps.push({ i, from: img.readUInt16LE(3392 + 4 * i), to: img.readUInt16LE(3392 + 4 * i), size, was: (bv >> BigInt(i)) & 1n });
  }
  let at = img.readUInt32LE(44);
  if (reverse) {
    at = 640;
    for (const c of [...comps].reverse()) (c.to = at), (at = a64(at + c.size));
  }
  const inUse = comps.filter((c) => c.i !== 9 || c.was);
  for (const c of inUse) bv |= 1n << BigInt(c.i);
  const len = Math.max(576, ...inUse.map((c) => c.to + c.size));
  const area = Buffer.alloc(a64(len));
  img.copy(area, 0, HS, HS + 576);
  area.writeBigUInt64LE(bv, 512);
  for (const c of inUse) if (c.was) img.copy(area, c.to, HS + c.from, HS + c.from + c.size);
  const metaSize = Number(img.readBigUInt64LE(48)) - a64(oldLen) + a64(len);
  const out = Buffer.concat([img.subarray(0, HS), area, img.subarray(HS + a64(oldLen))]);
  out.writeUInt32LE(len, 3388);
  out.writeUInt32LE(at, 44);
  for (const c of comps) out.writeUInt16LE(c.to, 3392 + 4 * c.i);
  out.writeBigUInt64LE(BigInt(metaSize), 48);
  out.writeBigUInt64LE(0n, 64);
  out.writeBigUInt64LE(xxh64(out.subarray(0, HS + metaSize)), 64);
  return out;
}

/** Restores an image with REX_RESTORE_TIMING=1: the restorer's XSAVE line and its start-to-jump time. */
function timedRestore(image) {
  const r = spawnSync(restorer, [image], { encoding: 'utf8', env: { ...process.env, REX_RESTORE_TIMING: '1' } });
  const x = /timing: xsave (copied|converted) (\d+) ns \((\d+) bytes stored, (\d+) bytes for XRSTOR\)/.exec(r.stderr);
  const rm = /restore_ns (\d+)/.exec(r.stdout);
  if (r.status !== 0 || !x || !rm) throw new Error(`restore failed: ${r.stdout}${r.stderr}`);
  return { how: x[1], ns: Number(x[2]), stored: Number(x[3]), loaded: Number(x[4]), restore: Number(rm[1]) };
}

async function conversionCost(dir, runs = 21) {
  const dumped = join(dir, 'xsave.img'), plain = join(dir, 'xsave-plain.img'), moved = join(dir, 'xsave-moved.img');
  const d = spawnSync(subject, [dumped, '0', '0'], { encoding: 'utf8' });
  if (d.status !== 0) throw new Error(`bench_rfork failed: ${d.stdout}${d.stderr}`);
  writeFileSync(plain, await withXsaveLayout(readFileSync(dumped), false));
  writeFileSync(moved, await withXsaveLayout(readFileSync(dumped), true));
  // bench_rfork's image is consumed by nothing: restore it as often as needed.
  const a = [], b = [];
  timedRestore(plain), timedRestore(moved); // warm
  for (let k = 0; k < runs; k++) a.push(timedRestore(plain)), b.push(timedRestore(moved));
  if (a[0].how !== 'copied' || b[0].how !== 'converted') throw new Error(`expected copied/converted, got ${a[0].how}/${b[0].how}`);
  const us = (ns) => `${(ns / 1000).toFixed(1)} us`;
  console.log(`\nXSAVE layout conversion in the restorer (small program, every component but PKRU in use, ${runs} runs each, medians; REX_RESTORE_TIMING=1)`);
  console.log(`  same layout, plain copy               ${us(median(a.map((r) => r.ns)))} (${a[0].stored} bytes); restore ${ms(median(a.map((r) => r.restore)))}`);
  console.log(`  another layout, converted             ${us(median(b.map((r) => r.ns)))} (${b[0].stored} bytes stored, ${b[0].loaded} for XRSTOR); restore ${ms(median(b.map((r) => r.restore)))}`);
  console.log('  (each figure includes one clock_gettime system call, which the restorer makes without the vDSO)');
}

const subjects = [
  { name: 'small program', mib: 0, percent: 0, runs: 21 },
  { name: '256 MiB touched', mib: 256, percent: 100, runs: 5 },
  { name: '256 MiB, 10% touched', mib: 256, percent: 10, runs: 7 },
];

const dir = mkdtempSync(join(tmpdir(), 'rex-bench-rfork-'));
try {
  for (const s of subjects) {
    once(dir, s.mib, s.percent); // warm the page cache and the binaries
    const rs = Array.from({ length: s.runs }, () => once(dir, s.mib, s.percent));
    const dump = median(rs.map((r) => r.dump));
    const restore = median(rs.map((r) => r.restore));
    const wall = median(rs.map((r) => r.restoreWall));
    const fork = median(rs.map((r) => r.fork));
    const { bytes, privatePages, pages, nruns, nwords, xsave } = rs[0];
    const priv = privatePages * 4096;
    const meta = bytes - pages * 4096;
    const mbps = (bytes / 1048576) / ((dump + wall) / 1e9);
    console.log(`\n${s.name} (${s.runs} runs, medians)`);
    console.log(`  dump (rex_dump_self to a file)        ${ms(dump)}`);
    console.log(`  restore (restorer start to jump)      ${ms(restore)}`);
    console.log(`  restore process, spawn to exit        ${ms(wall)}`);
    console.log(`  local fork()+_exit+waitpid            ${ms(fork)}`);
    console.log(`  image ${kb(bytes)}, private pages ${kb(priv)} (image/private ${(bytes / priv).toFixed(3)})`);
    console.log(`  metadata ${meta} bytes (header, XSAVE ${xsave}, ${nruns} runs, ${nwords} bitmap words, trailer): ` +
      `${meta <= 16384 + xsave ? 'within' : 'OVER'} the bound, 16 KiB + the XSAVE area stored = ${16384 + xsave} bytes`);
    console.log(`  ratio (dump + restore process) / fork ${((dump + wall) / fork).toFixed(1)}x; throughput ${mbps.toFixed(0)} MB/s`);
    record({ measure: `${s.name}: dump + restore process, on this host`, rex: (dump + wall) / 1e6, peer: fork / 1e6, peerName: 'fork()+_exit+waitpid', unit: 'ms' });
  }
  await conversionCost(dir);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
