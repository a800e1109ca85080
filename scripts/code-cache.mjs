#!/usr/bin/env node
// Writes rexd's V8 code cache, dist/bin/rexd-main.cjs.cache, which its launcher (src/cli/launch.cts) compiles the
// bundle with (docs/ARCHITECTURE.md, How rexd loads). The cache is made by a training run: a rexd of a one-host
// scratch cluster started with REX_CODE_CACHE_OUT, asked one HELLO and stopped; at its exit it writes what V8
// compiled up to then (its start, a session, its stop), behind the SHA-256 of the bundle. The cache depends on
// the Node (V8) that made it: scripts/bundle.mjs makes it after each build, and the package's install script
// (--if-needed) for the Node that installs it.
//
// A failed training run is reported and leaves no cache: rexd then compiles its bundle at each start, slower
// and otherwise the same. Exit status 0 either way, unless --strict.
// --if-needed (the install): only when this Node does not take the cache there is (a package built by another).
//
// Usage: node scripts/code-cache.mjs [--strict] [--if-needed]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'dist', 'bin');
const launcher = join(bin, 'rexd.cjs');
const bundle = join(bin, 'rexd-main.cjs');
const strict = process.argv.includes('--strict');
const ifNeeded = process.argv.includes('--if-needed');

async function train() {
  const { LocalCluster } = await import(join(root, 'dist', 'cluster', 'cluster.js'));
  const dir = mkdtempSync(join(tmpdir(), 'rex-code-cache-'));
  const out = join(dir, 'rexd-main.cjs.cache');
  // The cluster's rexd inherits this process's environment (LocalCluster.hostEnv): it writes the cache at its exit.
  process.env.REX_CODE_CACHE_OUT = out;
  try {
    // One host with its key: up() returns once its rexd has answered HELLO on its socket; down() stops it.
    const cluster = await LocalCluster.up({ dir, hosts: 1, netns: false, trust: 'keys', logLevel: 'warn' });
    await cluster.down();
    if (!existsSync(out)) throw new Error(`rexd exited without writing its cache (see ${cluster.hosts[0].logFile})`);
    renameSync(out, `${bundle}.cache`);
  } finally {
    delete process.env.REX_CODE_CACHE_OUT;
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What rexd's launcher does with the cache there is: used, rejected (another V8), stale, absent (src/cli/launch.cts). */
function cacheState() {
  const r = spawnSync(process.execPath, [launcher, '--version'], { encoding: 'utf8', env: { ...process.env, REX_CODE_CACHE_REPORT: '1' } });
  return /rex code cache: (\w+)/.exec(r.stderr ?? '')?.[1] ?? 'unknown';
}

if (!existsSync(bundle) || !existsSync(join(root, 'dist', 'cluster', 'cluster.js'))) {
  // An install from the git repository runs before the build (npm's prepare), which trains then.
  console.log('code-cache: rexd is not built yet (npm run build makes its cache)');
} else if (ifNeeded && cacheState() === 'used') {
  console.log("code-cache: rexd's code cache is this Node's");
} else {
  rmSync(`${bundle}.cache`, { force: true });
  const t0 = Date.now();
  try {
    await train();
    console.log(`code-cache: rexd's code cache written in ${Date.now() - t0} ms (dist/bin/rexd-main.cjs.cache)`);
  } catch (e) {
    console.error(`code-cache: no code cache for rexd, which will compile its code at each start (about 25 ms slower): ${e instanceof Error ? e.message : e}`);
    if (strict) process.exitCode = 1;
  }
}
