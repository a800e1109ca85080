#!/usr/bin/env node
// Builds what running REX needs in native/: the Node-API addon (node-gyp, the copy
// bundled with npm), then librex (shared and static), the native front end and the
// helpers (make all). Runs as the package's `install` script, so `npm install` / `npm ci`
// on a fresh machine builds the C side with no extra step. The test-only programs
// (make test-programs) are built by the tests (test/helpers/global-setup.ts), not here.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const native = join(root, 'native');

function run(cmd, args, opts = {}) {
  console.log(`build-native: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', cwd: native, ...opts });
  if (r.error) {
    console.error(`build-native: cannot run ${cmd}: ${r.error.message}`);
    process.exit(1);
  }
  if (r.status !== 0) {
    console.error(`build-native: ${cmd} ${args.join(' ')} failed with status ${r.status}`);
    process.exit(r.status ?? 1);
  }
}

function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  ];
  for (const c of candidates) if (c && existsSync(c)) return c;
  console.error('build-native: node-gyp not found (it ships with npm); run this through `npm install`');
  process.exit(1);
}

// Every core (REX_BUILD_JOBS overrides): the build is a set of independent compilations.
const jobs = process.env.REX_BUILD_JOBS ?? String(availableParallelism());
// node-gyp first: `node-gyp rebuild` starts by deleting native/build/, which
// would take make's outputs (librex, the restorer, the C tests) with it.
const nodedir = process.env.npm_config_nodedir ?? (existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
const gypArgs = ['rebuild', `--jobs=${jobs}`];
if (nodedir) gypArgs.push(`--nodedir=${nodedir}`);
const t0 = Date.now();
run(process.execPath, [findNodeGyp(), ...gypArgs]);
const t1 = Date.now();
// REX_BUILD_NODE: the node running this build, the one the native `rex` front end (native/frontend/rex.c)
// hands other commands to by default ($REX_NODE overrides it; `node` on PATH when it is gone).
run('make', [`-j${jobs}`, 'all', `REX_BUILD_NODE=${process.execPath}`]);
console.log(`build-native: the addon took ${((t1 - t0) / 1000).toFixed(1)} s, make all ${((Date.now() - t1) / 1000).toFixed(1)} s`);
