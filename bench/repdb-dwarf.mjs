#!/usr/bin/env node
// Benchmark: repdb's DWARF reader (dist/gen/dwarf) against `llvm-dwarfdump --debug-info`
// on the same file, in the same run: wall time and peak RSS of each, and the ratio.
//
// Usage: node bench/repdb-dwarf.mjs [file] [--runs N]
// Without a file it takes the largest debug file under /usr/lib/debug (libc6-dbg's
// libc is ~4 MB compressed), or builds a large generated fixture when there is none.
// Needs `npm run build` first (it runs the compiled reader, as repdb would).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { record } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const reader = join(root, 'dist/gen/dwarf/index.js');
if (!existsSync(reader)) {
  console.error('bench: dist/ is missing; run `npm run build` first');
  process.exit(2);
}

const args = process.argv.slice(2);
const runsAt = args.indexOf('--runs');
const runs = runsAt >= 0 ? Number(args.splice(runsAt, 2)[1]) : 3;

function which(names) {
  for (const n of names) {
    const r = spawnSync('sh', ['-c', `command -v ${n}`], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return undefined;
}

function largestDebugFile(dir) {
  let best;
  const walk = (d, depth) => {
    if (depth > 6) return;
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else if (e.isFile() && e.name.endsWith('.debug')) {
        const size = statSync(p).size;
        if (!best || size > best.size) best = { path: p, size };
      }
    }
  };
  walk(dir, 0);
  return best?.path;
}

/** A generated C library with many structs, enums and functions, for machines without debug packages. */
function generatedFixture() {
  const dir = mkdtempSync(join(tmpdir(), 'repdb-bench-'));
  const n = 4000;
  let src = '#include <stddef.h>\n';
  for (let i = 0; i < n; i++) {
    src += `struct s${i} { int a; double b[${(i % 7) + 1}]; struct s${i} *next; const char *name; unsigned f:${(i % 30) + 1}; };\n`;
    src += `enum e${i} { E${i}_A = ${i}, E${i}_B = -${i} };\n`;
    src += `typedef struct s${i} t${i};\n`;
    src += `int f${i}(t${i} *p, enum e${i} e, int (*cb)(const struct s${i} *, ...), size_t n, ...) { return p->a + (int)e + (int)n + (cb ? 1 : 0); }\n`;
  }
  const c = join(dir, 'big.c');
  writeFileSync(c, src);
  const so = join(dir, 'libbig.so');
  execFileSync('gcc', ['-shared', '-fPIC', '-g', '-O0', '-o', so, c]);
  return so;
}

const file = args[0] ?? largestDebugFile('/usr/lib/debug') ?? generatedFixture();
const dwarfdump = which(['llvm-dwarfdump', 'llvm-dwarfdump-14', 'llvm-dwarfdump-15', 'llvm-dwarfdump-16']);

// python3's resource module gives the peak RSS of a finished child (ru_maxrss of RUSAGE_CHILDREN).
const MEASURE = `
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
dt = time.monotonic() - t
if r.returncode != 0:
    sys.stderr.write(r.stderr.decode(errors='replace')[-2000:])
    sys.exit(r.returncode)
print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
`;

function measure(cmd) {
  const out = execFileSync('python3', ['-c', MEASURE, ...cmd], { encoding: 'utf8', maxBuffer: 1 << 20 });
  const [secs, kb] = out.trim().split(/\s+/).map(Number);
  return { secs, mb: kb / 1024 };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function bench(label, cmd) {
  const samples = [];
  for (let i = 0; i < runs; i++) samples.push(measure(cmd));
  return { label, secs: median(samples.map((s) => s.secs)), mb: Math.max(...samples.map((s) => s.mb)) };
}

const script = `
import { readDebugInfo } from ${JSON.stringify(reader)};
const info = readDebugInfo(process.argv[1]);
process.stdout.write(JSON.stringify({ functions: info.functions.length, types: info.types.length, diagnostics: info.diagnostics.length }));
`;
const summary = execFileSync(process.execPath, ['--input-type=module', '-e', script, file], { encoding: 'utf8' });
console.log(`file: ${file} (${(statSync(file).size / 1048576).toFixed(1)} MiB), runs: ${runs} (median time, max RSS)`);
console.log(`repdb reader found: ${summary}`);

const ours = bench('repdb DWARF reader (node)', [process.execPath, '--input-type=module', '-e', script, file]);
const rows = [ours];
let peer;
if (dwarfdump) {
  peer = bench(`${dwarfdump.split('/').pop()} --debug-info`, [dwarfdump, '--debug-info', file]);
  rows.push(peer);
} else {
  console.log('llvm-dwarfdump not found (apt-get install llvm): peer not measured');
}
const node0 = bench('node startup only (baseline)', [process.execPath, '-e', '0']);
rows.push(node0);

console.log('');
console.log('| tool | time (s) | peak RSS (MiB) |');
console.log('| --- | ---: | ---: |');
for (const r of rows) console.log(`| ${r.label} | ${r.secs.toFixed(3)} | ${r.mb.toFixed(1)} |`);
if (peer) {
  console.log('');
  console.log(`ratio repdb/llvm-dwarfdump: time ${(ours.secs / peer.secs).toFixed(2)}x, peak RSS ${(ours.mb / peer.mb).toFixed(2)}x`);
  record({ measure: `${ours.label}, time`, rex: ours.secs, peer: peer.secs, peerName: peer.label, unit: 's' });
  console.log('(llvm-dwarfdump prints every DIE as text; repdb decodes only the unit tops, the functions and the types they reach, and builds the model.)');
}
