#!/usr/bin/env node
// `npm run bench`: runs every benchmark in bench/ in turn. Each compares REX
// with its peer in the same run and prints the ratio; each headline figure it
// records (lib.mjs record()) goes into one results table, with the machine and
// the date, written into docs/PERFORMANCE.md (bench/results.mjs). Extra
// arguments pick benchmarks by name: `npm run bench -- ping`, `npm run bench
// -- start`; `--no-write` prints the table without touching the doc. Exits
// non-zero only when a benchmark could not run: a missed target is a row.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { machine, renderTable, writeResults } from './results.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const doc = join(here, '..', 'docs', 'PERFORMANCE.md');
const skip = new Set(['run.mjs', 'echo-server.mjs', 'lib.mjs', 'results.mjs']);
const args = process.argv.slice(2);
const write = !args.includes('--no-write');
const want = args.filter((a) => !a.startsWith('--'));
const benches = readdirSync(here).filter((f) => f.endsWith('.mjs') && !skip.has(f) && (want.length === 0 || want.some((w) => f.includes(w))));
const scratch = mkdtempSync(join(tmpdir(), 'rex-bench-'));
const results = join(scratch, 'results.jsonl');
const before = machine();
const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const failed = [];
try {
  for (const b of benches) {
    console.log(`\n### ${b}`);
    const r = spawnSync(process.execPath, [here + b], { stdio: 'inherit', env: { ...process.env, REX_BENCH_RESULTS: results } });
    if (r.status !== 0) failed.push({ bench: b.replace(/\.mjs$/, ''), status: r.status ?? r.signal });
  }
  let rows = [];
  try {
    rows = readFileSync(results, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  } catch {
    /* no bench recorded a figure */
  }
  const table = renderTable(rows, { date, before, after: machine(), failed, only: want });
  console.log(`\n### results\n${table}`);
  if (write) {
    writeResults(doc, table);
    console.log(`\nwritten to ${doc}`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
process.exit(failed.length ? 1 : 0);
