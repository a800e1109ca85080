#!/usr/bin/env node
// `npm run bench`: runs every benchmark in bench/ in turn. Each compares REX
// with its peer in the same run and prints the ratio. Extra arguments pick
// benchmarks by name: `npm run bench -- ping`, `npm run bench -- start` (rexd
// start-up beside Node's bare start).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const skip = new Set(['run.mjs', 'echo-server.mjs', 'lib.mjs']);
const want = process.argv.slice(2);
const benches = readdirSync(here).filter((f) => f.endsWith('.mjs') && !skip.has(f) && (want.length === 0 || want.some((w) => f.includes(w))));
let failed = 0;
for (const b of benches) {
  console.log(`\n### ${b}`);
  const r = spawnSync(process.execPath, [here + b], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
