// A lean daemon (issue 15): rexd imports only what it serves. Starting it and
// serving a first connection loads none of repdb's generator (src/gen: the
// codegen with handlebars, the XML reader with libxml2-wasm, DWARF, SQL), which
// load on first use (a program's definitions, an XML rex.rc), and runs none of
// the code of its features (exec, rfork, calls: Feature in src/daemon/dispatch.ts),
// whose modules run once rexd serves (its warm-up) or at a feature's first request.
// rexd is one CommonJS bundle (scripts/bundle.mjs, run through its code cache by
// src/cli/launch.cts): the files it reads are recorded by a module loader hook
// (node:module register) and a wrapper of CommonJS's loader, given to it by
// NODE_OPTIONS, and each file stands for the modules its source map names
// (modulesOf); a module of the bundle reached by import() runs its top level when
// esbuild's __esm initialiser is first called, which a copy of the bundle made
// here records; a wrapper of fs.writeSync marks the moment rexd logs that it
// serves ('rexd started', after every listener is up).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { KeyStore } from '../../src/keys/store.js';
import { distBin } from '../../src/util/paths.js';
import { tempDir } from '../calls/helpers.js';
import { modulesOf } from '../helpers/modules.js';

const dir = tempDir('rex-lean-');
// The traced copy of rexd's bundle, beside it in dist/bin/ (where its paths to node_modules and its worker lead).
const traced = join(dirname(distBin('rexd')), `rexd-main.traced-${process.pid}.cjs`);
let rexd: ChildProcess | undefined;

afterAll(async () => {
  if (rexd && rexd.exitCode === null && rexd.signalCode === null) {
    const exited = new Promise((r) => rexd!.once('exit', r));
    rexd.kill('SIGTERM');
    await exited;
  }
  rmSync(traced, { force: true });
  rmSync(dir, { recursive: true, force: true });
});

/** A copy of rexd's bundle whose __esm initialiser (esbuild's, around each module reached by import()) records the module it runs. */
function tracedBundle(): string {
  const bundle = readFileSync(join(dirname(distBin('rexd')), 'rexd-main.cjs'), 'utf8');
  const esm = 'var __esm=(fn,res,err)=>function(){';
  expect(bundle).toContain(esm);
  writeFileSync(
    traced,
    bundle.replace(esm, `${esm}if(fn)require("node:fs").appendFileSync(process.env.REX_TRACE_MODULES,"run "+__getOwnPropNames(fn)[0]+"\\n");`),
  );
  return traced;
}

/** The line the record has where rexd logged that it serves. */
const READY = 'READY';

/** Files that make node record every module it loads (ES modules by URL, CommonJS by path) in $REX_TRACE_MODULES. */
function tracer(): string {
  writeFileSync(
    join(dir, 'trace-hooks.mjs'),
    `import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  appendFileSync(process.env.REX_TRACE_MODULES, url + '\\n');
  return next(url, context);
}
`,
  );
  writeFileSync(
    join(dir, 'trace.mjs'),
    `import { register } from 'node:module';
import { createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
register(${JSON.stringify(pathToFileURL(join(dir, 'trace-hooks.mjs')).href)});
const require = createRequire(import.meta.url);
const Module = require('node:module');
const load = Module._load;
Module._load = function (request, parent, isMain) {
  const out = load.apply(this, arguments);
  try {
    appendFileSync(process.env.REX_TRACE_MODULES, Module._resolveFilename(request, parent, isMain) + '\\n');
  } catch {}
  return out;
};
// rexd's log (pino, synchronous) goes through fs.writeSync.
const fs = require('node:fs');
const writeSync = fs.writeSync;
let ready = false;
fs.writeSync = function (fd, data) {
  const out = writeSync.apply(this, arguments);
  if (!ready && typeof data === 'string' && data.includes('"msg":"rexd started"')) {
    ready = true;
    appendFileSync(process.env.REX_TRACE_MODULES, ${JSON.stringify(READY)} + '\\n');
  }
  return out;
};
`,
  );
  return join(dir, 'trace.mjs');
}

/** The code of rexd's features, read only once it serves (src/daemon/rexd.ts loadExec, src/calls/service.ts, src/rfork/requests.ts). */
const FEATURE_MODULES = [
  'src/exec/executor/service.ts',
  'src/exec/executor/executor.ts',
  'src/exec/executor/contain.ts',
  'src/rfork/origin.ts',
  'src/rfork/image.ts',
  'src/calls/manager.ts',
  'src/calls/router.ts',
];

/** The modules of src/ that the bundle ran (its records `run dist/X.js`), as src/X.ts. */
function ran(lines: string[]): string[] {
  return lines.filter((l) => l.startsWith('run dist/')).map((l) => l.replace(/^run dist\/(.*)\.js$/, 'src/$1.ts'));
}

describe('rexd start-up', () => {
  it("serves its first connection without loading repdb's generator, handlebars or libxml2-wasm, or running its features' code, which it runs after", async () => {
    const list = join(dir, 'modules.txt');
    writeFileSync(list, '');
    const cluster = await LocalCluster.up({ dir: join(dir, 'cluster'), hosts: 1, netns: false, trust: 'none', logLevel: 'info' });
    const host = cluster.hosts[0]!;
    await new KeyStore(host.stateDir).create(host.identity);
    mkdirSync(dirname(host.socket), { recursive: true, mode: 0o700 });
    rexd = spawn(process.execPath, ['--import', pathToFileURL(tracer()).href, tracedBundle(), '--foreground', '--config', host.rcFile], {
      stdio: 'ignore',
      env: { ...process.env, REX_CONFIG: host.rcFile, REX_TRACE_MODULES: list },
    });
    const record = () => readFileSync(list, 'utf8').split('\n').filter(Boolean);
    // Once it serves, rexd runs its features' modules in the background: wait for the last of them.
    await vi.waitFor(() => expect(ran(record())).toEqual(expect.arrayContaining(FEATURE_MODULES)), { timeout: 30_000, interval: 100 });
    const all = record();
    const mark = all.indexOf(READY);
    expect(mark).toBeGreaterThan(0);
    const atStart = ran(all.slice(0, mark));
    // The record is of rexd itself (not of the tracer alone): the daemon's module ran before it served.
    expect(atStart).toContain('src/daemon/rexd.ts');
    expect(atStart.filter((m) => FEATURE_MODULES.includes(m))).toEqual([]);
    // Every file rexd read, the bundle standing for the modules in it: no repdb generator, handlebars or libxml2-wasm.
    const heavy = modulesOf(all.filter((l) => !l.startsWith('run ') && l !== READY)).filter(
      (m) =>
        /^node_modules\/(handlebars|libxml2-wasm)\//.test(m) ||
        // The ELF reader (src/gen/elf) is not repdb's: the EXEC origin lists a program's libraries with it.
        (/^(src|dist)\/gen\//.test(m) && !/^(src|dist)\/gen\/elf\/index\.(ts|js)$/.test(m)),
    );
    expect(heavy).toEqual([]);
  }, 120_000);
});
