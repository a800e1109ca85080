#!/usr/bin/env node
// Benchmark: `repdb -gx libc.so.6` (the whole command: ELF and separate DWARF read,
// entry points built, XML written and validated against rex.dtd) against
// `llvm-dwarfdump --debug-info` on libc's debug file, in the same run: wall time,
// CPU time (user+sys) and peak RSS of each, medians of several interleaved runs, and
// the ratios. Target (issue 14): repdb no worse than 1.5x the peer's time.
//
// Usage: node bench/repdb.mjs [library] [--runs N]      (npm run bench -- repdb)
// Default library: the system's libc.so.6; its debug file is found by build-id under
// /usr/lib/debug (libc6-dbg). Without it the benchmark says so and exits 0.
// The peer runs as its users run it: on the debug file, output to /dev/null. When
// llvm-dwarfdump is missing and we are root with apt-get, the llvm package is
// installed (as bench/exec.mjs does for openssh-server); otherwise the peer is
// `readelf --debug-dump=info` from binutils. Needs `npm run build` first.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { record } from './lib.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repdb = join(root, 'dist/bin/repdb.js');
if (!existsSync(repdb)) {
  console.error('bench: dist/ is missing; run `npm run build` first');
  process.exit(2);
}
const { readElf } = await import(join(root, 'dist/gen/elf/index.js'));

const args = process.argv.slice(2);
const runsAt = args.indexOf('--runs');
const runs = runsAt >= 0 ? Number(args.splice(runsAt, 2)[1]) : 5;

function which(names) {
  for (const n of names) {
    const r = spawnSync('sh', ['-c', `command -v ${n}`], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return undefined;
}

function systemLibc() {
  const r = spawnSync('gcc', ['-print-file-name=libc.so.6'], { encoding: 'utf8' });
  const viaGcc = r.status === 0 ? r.stdout.trim() : '';
  const found = ['/lib/x86_64-linux-gnu/libc.so.6', '/usr/lib/x86_64-linux-gnu/libc.so.6', '/lib64/libc.so.6', viaGcc].find((p) => p.startsWith('/') && existsSync(p));
  return found && resolve(dirname(realpathSync(found)), 'libc.so.6');
}

const lib = args[0] ?? systemLibc();
if (!lib) {
  console.log('skipped: no libc.so.6 found; give a library: node bench/repdb.mjs LIB');
  process.exit(0);
}
const id = readElf(readFileSync(lib), lib).buildId();
const debugFile = id ? join('/usr/lib/debug/.build-id', id.slice(0, 2), `${id.slice(2)}.debug`) : undefined;
if (!debugFile || !existsSync(debugFile)) {
  console.log(`skipped: ${lib} has no debug file under /usr/lib/debug/.build-id${id ? ` (build-id ${id})` : ''}; install libc6-dbg (or the distribution's debug package)`);
  process.exit(0);
}

let dwarfdump = which(['llvm-dwarfdump', 'llvm-dwarfdump-19', 'llvm-dwarfdump-18', 'llvm-dwarfdump-17', 'llvm-dwarfdump-16', 'llvm-dwarfdump-15', 'llvm-dwarfdump-14']);
if (!dwarfdump && process.getuid?.() === 0 && spawnSync('apt-get', ['--version']).status === 0) {
  console.log('(installing llvm for llvm-dwarfdump...)');
  spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'llvm'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 600_000 });
  dwarfdump = which(['llvm-dwarfdump']);
}
const peer = dwarfdump
  ? { label: `${dwarfdump.split('/').pop()} --debug-info DEBUGFILE`, cmd: [dwarfdump, '--debug-info', debugFile] }
  : { label: 'readelf --debug-dump=info DEBUGFILE', cmd: ['readelf', '--debug-dump=info', debugFile] };
if (!dwarfdump) console.log('llvm-dwarfdump not found and not installable here: the peer is readelf --debug-dump=info');

// python3's resource module gives the CPU time and peak RSS of a finished child (RUSAGE_CHILDREN).
const MEASURE = `
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
dt = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
if r.returncode != 0:
    sys.stderr.write(r.stderr.decode(errors='replace')[-2000:])
    sys.exit(r.returncode)
print(dt, ru.ru_utime + ru.ru_stime, ru.ru_maxrss)
`;

function measure(cmd) {
  const out = execFileSync('python3', ['-c', MEASURE, ...cmd], { encoding: 'utf8', maxBuffer: 1 << 20 });
  const [secs, cpu, kb] = out.trim().split(/\s+/).map(Number);
  return { secs, cpu, mb: kb / 1024 };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const dir = mkdtempSync(join(tmpdir(), 'repdb-bench-'));
const xml = join(dir, 'libc.xml');
const ours = { label: `repdb -gx ${lib.split('/').pop()} -o FILE (node)`, cmd: [process.execPath, repdb, '-q', '-gx', lib, '-o', xml] };
const node0 = { label: 'node startup only (baseline)', cmd: [process.execPath, '-e', '0'] };

// One unmeasured run of each (page cache, and repdb's summary line), then interleaved
// measured runs, so both see the same load on a shared machine.
const first = spawnSync(process.execPath, [repdb, '-gx', lib, '-o', xml], { encoding: 'utf8' });
if (first.status !== 0) {
  console.error(first.stderr);
  process.exit(1);
}
measure(peer.cmd);
const summary = /wrote .*\((.*)\)/.exec(first.stderr)?.[1] ?? '?';
const warnings = first.stderr.split('\n').filter((l) => l.includes(': warning: ')).length;
console.log(`library: ${lib}; debug file: ${debugFile} (${(statSync(debugFile).size / 1048576).toFixed(1)} MiB, compressed sections)`);
console.log(`repdb: ${summary}, ${warnings} warnings; XML ${(statSync(xml).size / 1048576).toFixed(1)} MiB, valid against rex.dtd (repdb validates what it writes)`);
console.log(`runs: ${runs} of each, interleaved (median wall and CPU time, max peak RSS)`);

const samples = new Map([ours, peer, node0].map((t) => [t, []]));
for (let i = 0; i < runs; i++) for (const t of samples.keys()) samples.get(t).push(measure(t.cmd));
rmSync(dir, { recursive: true, force: true });

const rows = [...samples].map(([t, s]) => ({ label: t.label, secs: median(s.map((x) => x.secs)), cpu: median(s.map((x) => x.cpu)), mb: Math.max(...s.map((x) => x.mb)) }));
console.log('');
console.log('| command | wall (s) | CPU user+sys (s) | peak RSS (MiB) |');
console.log('| --- | ---: | ---: | ---: |');
for (const r of rows) console.log(`| ${r.label} | ${r.secs.toFixed(3)} | ${r.cpu.toFixed(3)} | ${r.mb.toFixed(1)} |`);
const [o, p] = rows;
const wall = o.secs / p.secs;
const cpu = o.cpu / p.cpu;
console.log('');
console.log(`ratio repdb/${peer.cmd[0].split('/').pop()}: wall ${wall.toFixed(2)}x, CPU ${cpu.toFixed(2)}x, peak RSS ${(o.mb / p.mb).toFixed(2)}x`);
console.log(`target (wall time no worse than 1.5x the peer's): ${wall <= 1.5 ? 'met' : 'NOT met'}`);
record({ measure: `${o.label}, wall`, rex: o.secs, peer: p.secs, peerName: p.label, unit: 's', target: 1.5 });
console.log('(The peer prints every DIE as text; repdb decodes unit tops, the functions and the types they reach, merges the per-unit type copies, lays out frames, and writes and validates the XML.)');
