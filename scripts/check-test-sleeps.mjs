#!/usr/bin/env node
// Fails on a bare sleep in test/: a fixed wait for an event flakes on a loaded
// machine and wastes time on a fast one. Wait for the event instead
// (vi.waitFor, test/helpers/logsync.ts for log rows). Allowed:
//   - a poll whose bound is on the same line: `for (let i = 0; i < N && !cond; i++) await sleep(50);`
//   - a line that says why the time itself is the point: `// sleep-ok: REASON`.
// Prints each offending file:line and exits 1; prints one summary line either way.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else if (/\.(ts|mts|js|mjs)$/.test(name)) yield p;
  }
}

// A timer promise used as a pause, or a sleep(N)/delay(N) helper call.
const SLEEP = /(new Promise\(\s*\(?\w*\)?\s*=>\s*setTimeout\(\s*\w+\s*,\s*[\w.]+\s*\)\s*\))|(\b(?:sleep|delay|setTimeoutP)\(\s*\d)/;
const BOUNDED = /\bfor\s*\([^;]*;[^;]*&&[^;]*;/;
const bad = [];
let checked = 0;
for (const file of files(join(root, 'test'))) {
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    if (!SLEEP.test(line)) return;
    // The definition of a sleep helper is not a use of it.
    if (/^\s*(export\s+)?const\s+\w+\s*=\s*\(ms/.test(line) || /^\s*(export\s+)?(async\s+)?function\s+\w+\(ms/.test(line)) return;
    checked++;
    if (/sleep-ok:\s*\S/.test(line) || BOUNDED.test(line)) return;
    bad.push(`${relative(root, file)}:${i + 1}: bare sleep: ${line.trim()}`);
  });
}
for (const b of bad) console.log(b);
if (bad.length) console.log('  hint: wait for the event (vi.waitFor, test/helpers/logsync.ts); if the time itself is the point, say why with `// sleep-ok: REASON`');
console.log(`test sleeps: ${checked - bad.length} justified, ${bad.length} bare`);
process.exit(bad.length ? 1 : 0);
