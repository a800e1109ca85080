#!/usr/bin/env node
// Writes rexd's V8 code cache, dist/bin/rexd-main.cjs.cache, which its launcher (src/cli/launch.cts) compiles the
// bundle with (docs/ARCHITECTURE.md, How rexd loads). The cache is made by a training run: a rexd of a one-host
// scratch cluster started with REX_CODE_CACHE_OUT, asked one HELLO and stopped; at its exit it writes what V8
// compiled up to then (its start, a session, its stop), behind the SHA-256 of the bundle. The cache depends on
// the Node (V8) that made it: `npm run build` makes it (after scripts/bundle.mjs) and so does the package's
// install (scripts/install-node.mjs), for the Node that will run rexd.
//
// A failed training run is reported and leaves no cache: rexd then compiles its bundle at each start, slower
// and otherwise the same. Exit status 0 either way, unless --strict.
// --if-needed (the install): only when this Node does not take the cache there is (a package built by another).
//
// Usage: node scripts/code-cache.mjs [--strict] [--if-needed]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, watch } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = join(root, 'dist', 'bin');
const launcher = join(bin, 'rexd.cjs');
const bundle = join(bin, 'rexd-main.cjs');
const strict = process.argv.includes('--strict');
const ifNeeded = process.argv.includes('--if-needed');

/** Connects to `socket` as soon as rexd listens there and completes one HELLO. */
async function hello(socket, Connection, deadline) {
  for (;;) {
    if (Date.now() > deadline) throw new Error(`rexd did not answer on ${socket} within 30 s`);
    if (existsSync(socket)) {
      const ok = await new Promise((resolve, reject) => {
        const s = connect({ path: socket });
        s.once('error', () => resolve(false)); // bound but not yet listening: again
        s.once('connect', () => {
          const conn = new Connection(s, { initiator: true, local: { role: 'client', software: 'rex/code-cache' }, label: 'code-cache', timeoutMs: 10_000 });
          conn.handshake().then(
            () => {
              conn.close('code cache trained');
              resolve(true);
            },
            (e) => reject(e),
          );
        });
      });
      if (ok) return;
    }
    await new Promise((resolve) => {
      const w = watch(dirname(socket), () => {
        w.close();
        resolve();
      });
      setTimeout(() => {
        w.close();
        resolve();
      }, 20);
    });
  }
}

async function train() {
  const { LocalCluster } = await import(join(root, 'dist', 'cluster', 'cluster.js'));
  const { KeyStore } = await import(join(root, 'dist', 'keys', 'store.js'));
  const { Connection } = await import(join(root, 'dist', 'protocol', 'connection.js'));
  const dir = mkdtempSync(join(tmpdir(), 'rex-code-cache-'));
  try {
    const cluster = await LocalCluster.up({ dir, hosts: 1, netns: false, trust: 'none', logLevel: 'warn' });
    const host = cluster.hosts[0];
    await new KeyStore(host.stateDir).create(host.identity);
    mkdirSync(dirname(host.socket), { recursive: true, mode: 0o700 });
    const out = join(dir, 'rexd-main.cjs.cache');
    const child = spawn(process.execPath, [launcher, '--foreground', '--config', host.rcFile], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, REX_CONFIG: host.rcFile, REX_CODE_CACHE_OUT: out },
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    try {
      await Promise.race([
        hello(host.socket, Connection, Date.now() + 30_000),
        exited.then(({ code, signal }) => Promise.reject(new Error(`rexd exited during its start (${signal ?? `status ${code}`}): ${stderr.trim() || `see ${host.logFile}`}`))),
      ]);
    } finally {
      child.kill('SIGTERM');
    }
    const { code, signal } = await exited;
    if (!existsSync(out)) throw new Error(`rexd exited (${signal ?? `status ${code}`}) without writing its cache: ${stderr.trim() || `see ${host.logFile}`}`);
    renameSync(out, `${bundle}.cache`);
  } finally {
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
