#!/usr/bin/env node
// Benchmark: the local half of rfork() (docs/RFORK.md): rex_dump_self to an
// image file plus rex-restore in a fresh process, against fork()+_exit+waitpid
// of the same process in the same state, in the same run. Three subjects: the
// small program, 256 MiB touched, and 256 MiB with 10% of its pages touched.
// Prints medians, image bytes against the private pages, the metadata bytes
// (header, tables, trailer: everything but page data) against the bound of
// docs/IMAGE.md (16 KiB plus the XSAVE area the image stores, from its header
// through readImageInfo), and the ratios.
// Run with `npm run bench -- rfork` (after npm install) or `node bench/rfork-local.mjs`.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
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
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
